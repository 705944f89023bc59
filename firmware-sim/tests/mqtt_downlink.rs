//! MQTT devices against the real embedded broker (`rumqttd`) with a server side that
//! speaks the Clutch topics: durable acks on `clutch/<id>/ack`, commands on
//! `clutch/<id>/commands` answered on `clutch/<id>/responses`, broker credentials.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::{MqttOptions, start_mqtt_with};
use firmware_sim::mqtt::{MqttAck, MqttPayload, MqttSettings};
use firmware_sim::run::{Fleet, FleetConfig};
use protocols::Protocol;

fn mqtt_fleet(devices: usize, p: Protocol, payload: MqttPayload, addr: std::net::SocketAddr) -> FleetConfig {
    let mut cfg = FleetConfig::new(devices, p, addr);
    cfg.mix[0].mqtt = Some(payload);
    cfg.interval = Duration::from_millis(40);
    cfg.time_scale = 25.0;
    cfg.duration = Duration::from_millis(1200);
    cfg.drain = Duration::from_secs(5);
    cfg.batch = 3;
    cfg.ack_timeout = Duration::from_millis(800);
    cfg.heartbeat = Duration::from_secs(30);
    cfg.seed = 21;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_acks_release_the_buffer() {
    for (p, payload) in [
        (Protocol::Ruptela, MqttPayload::Json),
        (Protocol::Teltonika, MqttPayload::Raw),
        (Protocol::Gt06, MqttPayload::Raw),
    ] {
        let broker = start_mqtt_with(MqttOptions {
            durable_acks: true,
            ..MqttOptions::default()
        })
        .await;
        let mut cfg = mqtt_fleet(2, p, payload, broker.server.addr);
        cfg.mqtt.ack = MqttAck::Durable;
        let (s, _) = Fleet::start(&cfg).wait(None).await;
        assert!(s.records_generated > 20, "{p}/{payload:?}: {s}");
        assert_eq!(s.records_acked, s.records_generated, "{p}/{payload:?}: {s}");
        assert_eq!(s.garbage + s.rejected + s.self_decode_errors, 0, "{p}/{payload:?}: {s}");
        assert!(
            broker.acks_published.load(Relaxed) >= s.frames_sent.saturating_sub(s.heartbeats) / 2,
            "{p}/{payload:?}: acks came from the server: {s}"
        );
        if payload == MqttPayload::Json {
            // seq: per device, strictly increasing by one, starting at 1.
            let seqs = broker.seqs.lock().unwrap().clone();
            let mut by_device: HashMap<String, Vec<u64>> = HashMap::new();
            for (id, seq) in seqs {
                by_device.entry(id).or_default().push(seq);
            }
            assert_eq!(by_device.len(), 2);
            for (id, v) in by_device {
                let want: Vec<u64> = (1..=v.len() as u64).collect();
                assert_eq!(v, want, "{id}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_does_not_trust_the_puback() {
    // The broker PUBACKs everything, but no server ever says the records are stored.
    let broker = start_mqtt_with(MqttOptions::default()).await;
    let mut cfg = mqtt_fleet(1, Protocol::Ruptela, MqttPayload::Json, broker.server.addr);
    cfg.mqtt.ack = MqttAck::Durable;
    cfg.ack_timeout = Duration::from_millis(200);
    cfg.drain = Duration::from_secs(1);
    let (s, _) = Fleet::start(&cfg).wait(None).await;
    assert!(s.records_generated > 10, "{s}");
    assert_eq!(s.records_acked, 0, "{s}");
    assert!(s.ack_timeouts >= 2 && s.records_resent >= 1, "{s}");
    // The same fleet in PUBACK mode delivers everything.
    cfg.mqtt.ack = MqttAck::Puback;
    let (s, _) = Fleet::start(&cfg).wait(None).await;
    assert_eq!(s.records_acked, s.records_generated, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_over_mqtt_are_answered() {
    let broker = start_mqtt_with(MqttOptions {
        commands: vec![
            br#"{"id": 1, "command": {"type": "set_interval", "seconds": 30}}"#.to_vec(),
            br#"{"id": "c-2", "command": {"type": "locate"}}"#.to_vec(),
            br#"{"id": 3, "command": {"type": "output_control", "index": 2, "active": true}}"#.to_vec(),
            b"not a command".to_vec(),
        ],
        ..MqttOptions::default()
    })
    .await;
    let cfg = mqtt_fleet(2, Protocol::Teltonika, MqttPayload::Raw, broker.server.addr);
    let ids: Vec<String> = (0..2).map(|i| cfg.device_id(i)).collect();
    let (s, _) = Fleet::start(&cfg).wait(None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.commands_answered, 6, "{s}");
    assert_eq!(s.garbage, 2, "the bad payload is counted, once per device: {s}");
    assert_eq!(s.records_acked, s.records_generated, "{s}");
    let responses = broker.responses.lock().unwrap().clone();
    for id in &ids {
        let mine: Vec<&serde_json::Value> = responses.iter().filter(|(d, _)| d == id).map(|(_, v)| v).collect();
        assert_eq!(mine.len(), 3, "{id}: {responses:?}");
        assert_eq!(mine[0]["id"], 1);
        assert_eq!(mine[0]["result"], "interval set to 30 s");
        assert_eq!(mine[1]["id"], "c-2");
        assert!(mine[1]["result"].as_str().unwrap().starts_with("position "), "{mine:?}");
        assert_eq!(mine[2]["result"], "output 2 on");
    }
    // set_interval 30 s of simulated time = 1.2 s real at time scale 25: the devices
    // slowed down after the command (40 ms before).
    assert!(s.records_generated < 2 * 1200 / 40, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_credentials() {
    let cfg0 = mqtt_fleet(2, Protocol::Gt06, MqttPayload::Raw, "127.0.0.1:1".parse().unwrap());
    let auth: HashMap<String, String> = (0..2)
        .map(|i| {
            let id = cfg0.device_id(i);
            (id.clone(), format!("secret-{id}"))
        })
        .collect();
    let broker = start_mqtt_with(MqttOptions {
        auth: Some(auth),
        ..MqttOptions::default()
    })
    .await;
    let mut cfg = mqtt_fleet(2, Protocol::Gt06, MqttPayload::Raw, broker.server.addr);
    cfg.mqtt = MqttSettings {
        secret: Some("secret-{id}".into()),
        ..MqttSettings::default()
    };
    let (s, _) = Fleet::start(&cfg).wait(None).await;
    assert_eq!(s.records_acked, s.records_generated, "{s}");
    assert_eq!(s.connect_failures, 0, "{s}");

    cfg.mqtt.secret = Some("wrong".into());
    cfg.drain = Duration::from_secs(1);
    let (s, _) = Fleet::start(&cfg).wait(None).await;
    assert_eq!(s.records_acked, 0, "{s}");
    assert!(s.connect_failures >= 2, "{s}");
}
