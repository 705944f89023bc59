//! Client mode against a real external broker: Debian's Mosquitto, started by this test
//! on a free port and stopped by PID. Two ingest nodes share one subscription
//! (`$share/clutch/…`); both must take part of the load, and every message must be
//! stored and acked exactly once.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{TimeZone, Utc};
use ingest::registry::add_device_named;
use ingest::{DeviceBatch, Ingest, IngestConfig, Registry, StoreSink, UnknownDevices};
use protocols::Position;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use store::testing::{TestDb, test_db};
use store::{Writer, WriterConfig};
use stream::{BusConfig, InProcessBus};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto process; killed by PID when dropped.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: tempdir::Dir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn mosquitto() -> Result<Mosquitto> {
    if !Path::new(MOSQUITTO).exists() {
        bail!("{MOSQUITTO} not found: this test needs Debian's Mosquitto (`apt-get install mosquitto`)");
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("clutch-mosquitto-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n"
        ),
    )?;
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {MOSQUITTO}"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let m = Mosquitto {
        child,
        addr,
        _dir: tempdir::Dir(dir),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("mosquitto did not listen on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(m)
}

fn node(db: &TestDb) -> Ingest {
    let writer = Writer::spawn(
        db.pool.clone(),
        WriterConfig {
            max_delay: Duration::from_millis(5),
            ..WriterConfig::default()
        },
    );
    let bus: Arc<InProcessBus<DeviceBatch>> = Arc::new(InProcessBus::new(
        &BusConfig::default(),
        Arc::new(StoreSink::new(writer)),
    ));
    let registry = Arc::new(Registry::new(db.pool.clone(), UnknownDevices::Refuse, "default"));
    Ingest::new(IngestConfig::default(), registry, bus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_an_external_broker() -> Result<()> {
    ingest::metrics::install();
    let broker = mosquitto().await?;
    let db = test_db().await;
    let devices = ["ext-1", "ext-2", "ext-3", "ext-4"];
    for d in devices {
        add_device_named(&db.pool, "acme", d, "mqtt").await?;
    }
    let url = format!("mqtt://{}", broker.addr);
    let (a, b) = (node(&db), node(&db));
    let ha = a.connect_mqtt(&url).await?;
    let hb = b.connect_mqtt(&url).await?;

    // One device-side client publishing for all four (the broker's ACL is not under test
    // here) and listening to the acks.
    let mut o = MqttOptions::new("publisher", broker.addr.ip().to_string(), broker.addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    let (c, mut ev) = AsyncClient::new(o, 256);
    c.subscribe("clutch/+/ack", QoS::AtLeastOnce).await?;
    const PER_DEVICE: u32 = 25;
    for i in 0..PER_DEVICE {
        for d in devices {
            let t =
                Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).single().expect("time") + chrono::Duration::seconds(i.into());
            let p = Position::new(t, 10.0, 20.0, true);
            let body = serde_json::json!({"id": d, "seq": i, "positions": [p]});
            c.publish(
                format!("clutch/{d}/telemetry"),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await?;
        }
    }
    let total = PER_DEVICE as usize * devices.len();
    let mut acks = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acks < total {
        let e = tokio::time::timeout_at(deadline, ev.poll())
            .await
            .with_context(|| format!("only {acks} of {total} acks"))??;
        if let Event::Incoming(Packet::Publish(p)) = e
            && p.topic.ends_with("/ack")
        {
            let v: serde_json::Value = serde_json::from_slice(&p.payload)?;
            assert_eq!(v["records"], 1, "{v}");
            acks += 1;
        }
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(rows, total as i64, "every message stored once");
    let (na, nb) = (ha.messages_stored(), hb.messages_stored());
    assert!(na > 0 && nb > 0, "both nodes take part: {na} + {nb}");
    assert_eq!(na + nb, total as u64, "no message processed twice: {na} + {nb}");
    // No stray extra acks trail behind.
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = ev.poll().await
                && p.topic.ends_with("/ack")
            {
                return p.topic;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "duplicate ack on {extra:?}");
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
