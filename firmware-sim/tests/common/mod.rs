//! The tests' servers: the library's own acking server, and the real embedded MQTT broker
//! (`rumqttd`) for MQTT devices.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub use firmware_sim::ack_server::*;
use rumqttd::{Broker, Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Start `rumqttd` in-process on a free loopback port. What devices publish under
/// `clutch/#` is observed through the broker's local link and decoded into `seen`
/// ([`Seen::record_mqtt`]). With [`Behaviour::DropFirstPositionAck`] devices reach the
/// broker through a proxy that withholds the first PUBACK (the first publish carries
/// positions: MQTT devices log in with CONNECT and ping with PINGREQ).
pub async fn start_mqtt(behaviour: Behaviour) -> TestServer {
    start_mqtt_with(MqttOptions {
        behaviour,
        ..MqttOptions::default()
    })
    .await
    .server
}

/// What the MQTT test broker's server side does.
#[derive(Debug, Clone)]
pub struct MqttOptions {
    pub behaviour: Behaviour,
    /// Publish the durable ack on `clutch/<id>/ack` for every raw frame or telemetry
    /// publish, as a Clutch server does once the records are stored.
    pub durable_acks: bool,
    /// After a device's first publish, send it these payloads on `clutch/<id>/commands`.
    pub commands: Vec<Vec<u8>>,
    /// CONNECT user name → password the broker requires.
    pub auth: Option<HashMap<String, String>>,
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            behaviour: Behaviour::Ack,
            durable_acks: false,
            commands: Vec::new(),
            auth: None,
        }
    }
}

/// The MQTT test broker and what its server side saw.
pub struct MqttTest {
    pub server: TestServer,
    /// (device, payload) on `clutch/<id>/responses`.
    pub responses: Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    /// (device, seq) of every telemetry publish, in arrival order.
    pub seqs: Arc<std::sync::Mutex<Vec<(String, u64)>>>,
    pub acks_published: Arc<std::sync::atomic::AtomicU64>,
}

/// [`start_mqtt`] with a server side: durable acks, commands, broker credentials.
pub async fn start_mqtt_with(opts: MqttOptions) -> MqttTest {
    let behaviour = opts.behaviour;
    // rumqttd does not take port 0: find a free port, free it, and give that to rumqttd.
    let port = {
        let l = StdListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
        l.local_addr().expect("bound address").port()
    };
    let broker_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let server = ServerSettings {
        name: "v4-test".into(),
        listen: broker_addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: opts.auth.clone(),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        router: RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            max_segment_size: 10 << 20,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4-test".to_owned(), server)])),
        ..Config::default()
    };
    let mut broker = Broker::new(config);
    let (mut link_tx, mut link_rx) = broker.link("clutch-test-observer").expect("local link");
    link_tx.subscribe("clutch/#").expect("subscribing the observer");
    std::thread::spawn(move || {
        if let Err(e) = broker.start() {
            eprintln!("rumqttd stopped: {e}");
        }
    });

    let seen = Arc::new(Seen::keeping());
    let responses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seqs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let acks_published = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (s2, r2, q2, a2) = (seen.clone(), responses.clone(), seqs.clone(), acks_published.clone());
    std::thread::spawn(move || {
        let mut link_tx = link_tx;
        let mut codecs = HashMap::new();
        let mut commanded = std::collections::HashSet::new();
        while let Ok(n) = link_rx.recv() {
            let Some(Notification::Forward(f)) = n else { continue };
            let topic = String::from_utf8_lossy(&f.publish.topic).into_owned();
            let parts: Vec<&str> = topic.split('/').collect();
            let Some(&id) = parts.get(1) else { continue };
            if parts.get(2) == Some(&"responses") {
                let v = serde_json::from_slice(&f.publish.payload).unwrap_or(serde_json::Value::Null);
                r2.lock().unwrap().push((id.to_owned(), v));
                continue;
            }
            if parts.get(2) == Some(&"telemetry") {
                let v: serde_json::Value = serde_json::from_slice(&f.publish.payload).unwrap_or_default();
                if let Some(seq) = v["seq"].as_u64() {
                    q2.lock().unwrap().push((id.to_owned(), seq));
                }
            }
            let (_, ack) = s2.record_mqtt_acking(&mut codecs, &topic, &f.publish.payload);
            if opts.durable_acks
                && let Some(ack) = ack
                && link_tx.publish(format!("clutch/{id}/ack"), ack).is_ok()
            {
                a2.fetch_add(1, Relaxed);
            }
            if matches!(parts.get(2), Some(&"raw" | &"telemetry")) && commanded.insert(id.to_owned()) {
                for c in &opts.commands {
                    let _ = link_tx.publish(format!("clutch/{id}/commands"), c.clone());
                }
            }
        }
    });

    // Ready when the port accepts.
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(broker_addr).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "rumqttd did not start on {broker_addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let addr = match behaviour {
        Behaviour::DropFirstPositionAck => withholding_proxy(broker_addr, seen.clone()).await,
        _ => broker_addr,
    };
    MqttTest {
        server: TestServer { addr, seen },
        responses,
        seqs,
        acks_published,
    }
}

/// A TCP proxy to the broker that forwards everything but the first PUBACK, framing the
/// broker's packets with rumqttc's MQTT codec.
async fn withholding_proxy(broker: SocketAddr, seen: Arc<Seen>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
    let addr = l.local_addr().expect("proxy address");
    let dropped = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            seen.connections.fetch_add(1, Relaxed);
            let Ok(upstream) = tokio::net::TcpStream::connect(broker).await else {
                continue;
            };
            let dropped = dropped.clone();
            let (mut c_rd, mut c_wr) = client.into_split();
            let (mut u_rd, mut u_wr) = upstream.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut c_rd, &mut u_wr).await;
            });
            tokio::spawn(async move {
                let mut buf = bytes::BytesMut::new();
                let mut chunk = vec![0u8; 8192];
                loop {
                    let n = match u_rd.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    loop {
                        let before = buf.clone();
                        match rumqttc::Packet::read(&mut buf, 1 << 20) {
                            Ok(packet) => {
                                let raw = &before[..before.len() - buf.len()];
                                let withhold =
                                    matches!(packet, rumqttc::Packet::PubAck(_)) && !dropped.swap(true, Relaxed);
                                if !withhold && c_wr.write_all(raw).await.is_err() {
                                    return;
                                }
                            }
                            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                            Err(_) => return,
                        }
                    }
                }
            });
        }
    });
    addr
}
