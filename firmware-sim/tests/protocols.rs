//! Every protocol the protocols crate encodes, over its real transports, against a
//! minimal acking server built from the same crate.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::Behaviour;
use firmware_sim::run::{Fleet, FleetConfig, MixEntry};
use protocols::{MessageKind, Protocol, Transport};

fn landed(p: Protocol, t: Transport) -> bool {
    p.device_encoder(t).is_ok() && p.codec(t).is_ok()
}

fn quick(devices: usize, p: Protocol, t: Transport, addr: std::net::SocketAddr) -> FleetConfig {
    let mut cfg = FleetConfig::new(devices, p, addr);
    cfg.mix = vec![MixEntry {
        transport: t,
        ..MixEntry::new(p, addr)
    }];
    cfg.interval = Duration::from_millis(40);
    cfg.time_scale = 25.0;
    cfg.duration = Duration::from_millis(1200);
    cfg.drain = Duration::from_secs(5);
    cfg.batch = 3;
    cfg.ack_timeout = Duration::from_secs(2);
    cfg.heartbeat = Duration::from_millis(300);
    cfg.seed = 11;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_landed_protocol_delivers_and_is_acked() {
    let mut exercised = Vec::new();
    for p in Protocol::ALL {
        for &t in p.transports() {
            if !landed(p, t) {
                eprintln!("skip {p}/{}: no device encoder or codec yet", t.as_str());
                continue;
            }
            let server = common::start(p, t, Behaviour::Ack).await;
            let cfg = quick(3, p, t, server.addr);
            let (s, _) = Fleet::start(&cfg).wait(None).await;
            // Protocols without acks: the last frame may still be in the server's socket.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let got = server.seen.positions();
            let mut uniq: Vec<(String, i64)> = got.iter().map(|(id, p)| (id.clone(), p.time.timestamp())).collect();
            uniq.sort();
            uniq.dedup();
            assert!(s.records_generated > 20, "{p}/{t:?}: {s}");
            assert_eq!(s.encode_errors, 0, "{p}/{t:?}: {s}");
            assert_eq!(s.self_decode_errors, 0, "{p}/{t:?}: {s}");
            assert_eq!(s.garbage + s.rejected, 0, "{p}/{t:?}: {s}");
            assert_eq!(server.seen.decode_errors.load(Relaxed), 0, "{p}/{t:?}");
            assert_eq!(
                s.records_acked + s.records_unacked_by_protocol,
                s.records_generated,
                "{p}/{t:?}: every record delivered: {s}"
            );
            if uniq.len() as u64 != s.records_generated {
                let mut ts: Vec<_> = got.iter().map(|(id, p)| (id.clone(), p.time)).collect();
                ts.sort();
                eprintln!("{} positions: {ts:?}", got.len());
            }
            assert_eq!(
                uniq.len() as u64,
                s.records_generated,
                "{p}/{t:?}: server saw every record once: {s}"
            );
            for (id, _) in &got {
                assert!(cfg_ids(&cfg).contains(id), "{p}: unknown device id {id:?}");
            }
            eprintln!(
                "{p}/{}: {} records, {} acked, p50 {} ms",
                t.as_str(),
                s.records_generated,
                s.records_acked,
                s.ack_latency_ms.p50
            );
            exercised.push(format!("{p}/{}", t.as_str()));
        }
    }
    eprintln!("exercised: {exercised:?}");
    assert!(exercised.len() >= 3, "gt06, meitrack and ruptela have landed at least");
}

fn cfg_ids(cfg: &FleetConfig) -> Vec<String> {
    (0..cfg.devices).map(|i| cfg.device_id(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publishing_raw_and_json() {
    use firmware_sim::mqtt::MqttPayload;
    for (p, payload) in [
        (Protocol::Teltonika, MqttPayload::Raw),
        (Protocol::Gt06, MqttPayload::Raw),
        (Protocol::Ruptela, MqttPayload::Json),
    ] {
        if !landed(p, Transport::Tcp) {
            continue;
        }
        let broker = common::start_mqtt(Behaviour::DropFirstPositionAck).await;
        let mut cfg = quick(2, p, Transport::Tcp, broker.addr);
        cfg.mix[0].mqtt = Some(payload);
        cfg.ack_timeout = Duration::from_millis(300);
        let (s, _) = Fleet::start(&cfg).wait(None).await;
        // The broker forwards to its observer after the PUBACK: give the last ones a moment.
        let t0 = std::time::Instant::now();
        while (server_uniq(&broker.seen) as u64) < s.records_generated && t0.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = server_uniq(&broker.seen);
        assert_eq!(s.records_acked, s.records_generated, "{p}/{payload:?}: {s}");
        assert!(
            s.records_resent >= 1,
            "{p}/{payload:?}: the withheld PUBACK caused a resend: {s}"
        );
        assert_eq!(got as u64, s.records_generated, "{p}/{payload:?}: {s}");
        assert_eq!(s.garbage + s.rejected + s.self_decode_errors, 0, "{p}/{payload:?}: {s}");
    }
}

fn server_uniq(seen: &common::Seen) -> usize {
    let mut uniq: Vec<(String, i64)> = seen
        .positions()
        .iter()
        .map(|(id, p)| (id.clone(), p.time.timestamp()))
        .collect();
    uniq.sort();
    uniq.dedup();
    uniq.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ack_means_resend() {
    let p = Protocol::Gt06;
    let server = common::start(p, Transport::Tcp, Behaviour::DropFirstPositionAck).await;
    let mut cfg = quick(1, p, Transport::Tcp, server.addr);
    cfg.ack_timeout = Duration::from_millis(300);
    cfg.batch = 1;
    let (s, _) = Fleet::start(&cfg).wait(None).await;
    assert!(s.ack_timeouts >= 1, "{s}");
    assert!(s.records_resent >= 1, "{s}");
    assert_eq!(s.records_acked, s.records_generated, "{s}");
    let got = server.seen.positions();
    let first = &got[0].1;
    let copies = got.iter().filter(|(_, p)| p.time == first.time).count();
    assert_eq!(copies, 2, "the unacked record reached the server twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_are_counted_and_survived() {
    for p in [Protocol::Gt06, Protocol::Ruptela] {
        let server = common::start(p, Transport::Tcp, Behaviour::Garbage).await;
        let mut cfg = quick(2, p, Transport::Tcp, server.addr);
        cfg.ack_timeout = Duration::from_millis(200);
        cfg.drain = Duration::from_millis(500);
        let (s, _) = Fleet::start(&cfg).wait(None).await;
        assert!(s.garbage > 0, "{p}: {s}");
        assert_eq!(s.records_acked, 0, "{p}: {s}");
        assert!(s.connects >= 2, "{p}: the device reconnects: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sockets_are_retried_with_backoff() {
    let server = common::start(Protocol::Meitrack, Transport::Tcp, Behaviour::Close).await;
    let mut cfg = quick(2, Protocol::Meitrack, Transport::Tcp, server.addr);
    cfg.drain = Duration::from_millis(500);
    let (s, _) = Fleet::start(&cfg).wait(None).await;
    assert!(s.disconnects >= 2, "{s}");
    assert!(server.seen.connections.load(Relaxed) >= 4, "{s}");
    // Backoff: not a reconnect storm.
    assert!(server.seen.connections.load(Relaxed) < 100, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_listening_is_a_counted_failure() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let mut cfg = quick(1, Protocol::Gt06, Transport::Tcp, addr);
    cfg.drain = Duration::from_millis(200);
    let (s, _) = Fleet::start(&cfg).wait(None).await;
    assert!(s.connect_failures >= 2, "{s}");
    assert_eq!(s.records_acked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downlink_commands_are_answered() {
    for p in [
        Protocol::Gt06,
        Protocol::Meitrack,
        Protocol::Ruptela,
        Protocol::Teltonika,
    ] {
        if !landed(p, Transport::Tcp) {
            eprintln!("skip {p}: not landed");
            continue;
        }
        let server = common::start(p, Transport::Tcp, Behaviour::Command).await;
        let cfg = quick(1, p, Transport::Tcp, server.addr);
        let (s, _) = Fleet::start(&cfg).wait(None).await;
        assert_eq!(s.commands_answered, 1, "{p}: {s}");
        assert_eq!(server.seen.kinds(MessageKind::CommandResponse), 1, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_devices_send_heartbeats() {
    for (p, mqtt) in [
        (Protocol::Gt06, false),
        (Protocol::Ruptela, false),
        (Protocol::Gt06, true),
    ] {
        let server = if mqtt {
            common::start_mqtt(Behaviour::Ack).await
        } else {
            common::start(p, Transport::Tcp, Behaviour::Ack).await
        };
        let mut cfg = quick(1, p, Transport::Tcp, server.addr);
        cfg.mix[0].mqtt = mqtt.then_some(firmware_sim::mqtt::MqttPayload::Raw);
        cfg.interval = Duration::from_secs(30);
        cfg.heartbeat = Duration::from_millis(150);
        cfg.duration = Duration::from_millis(1000);
        let (s, _) = Fleet::start(&cfg).wait(None).await;
        assert!(s.heartbeats >= 3, "{p} mqtt={mqtt}: {s}");
        assert_eq!(
            s.ack_timeouts + s.garbage + s.rejected,
            0,
            "{p} mqtt={mqtt}: heartbeats were answered: {s}"
        );
        if !mqtt {
            assert!(server.seen.kinds(MessageKind::Heartbeat) >= 3, "{p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osmand_json_posts() {
    let server = common::start(Protocol::Osmand, Transport::Http, Behaviour::Ack).await;
    let mut cfg = quick(2, Protocol::Osmand, Transport::Http, server.addr);
    cfg.mix[0].osmand_json = true;
    let (s, _) = Fleet::start(&cfg).wait(None).await;
    assert!(s.records_generated > 20, "{s}");
    assert_eq!(s.records_acked, s.records_generated, "{s}");
    assert_eq!(
        s.garbage + s.rejected + s.self_decode_errors + s.encode_errors,
        0,
        "{s}"
    );
    assert_eq!(server_uniq(&server.seen) as u64, s.records_generated, "{s}");
    // Batches of 3 records are one POST each (a `location` array), not 3 GETs.
    assert!(s.frames_sent < s.records_generated, "{s}");
    let msgs = server.seen.messages.lock().unwrap();
    assert!(
        !msgs.is_empty() && msgs.iter().all(|m| m.message_type.as_deref() == Some("json")),
        "JSON bodies, not queries"
    );
}
