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
            auth: None,
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
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let _keep = link_tx;
        let mut codecs = HashMap::new();
        while let Ok(n) = link_rx.recv() {
            if let Some(Notification::Forward(f)) = n {
                let topic = String::from_utf8_lossy(&f.publish.topic).into_owned();
                s2.record_mqtt(&mut codecs, &topic, &f.publish.payload);
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
    TestServer { addr, seen }
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
