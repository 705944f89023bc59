//! `check` / `replay` against the in-test server, and bad CLI input.

mod common;

use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use common::Behaviour;
use firmware_sim::cli::{SimArgs, SimCommand, fleet_config, parse_mix};
use firmware_sim::exchange::{Format, exchange, parse_capture};
use protocols::{Message, MessageKind, Position, Protocol, Transport};

fn frames(p: Protocol) -> Vec<Vec<u8>> {
    frames_over(p, Transport::Tcp)
}

fn frames_over(p: Protocol, t: Transport) -> Vec<Vec<u8>> {
    let mut enc = p.device_encoder(t).unwrap();
    let id = "356307042441013";
    let mut out = Vec::new();
    if let Ok(f) = enc.encode(&Message::new(MessageKind::Login).with_imei(id)) {
        out.push(f);
    }
    let t = Utc::now();
    let mut pos = Position::new(
        t - chrono::Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&t))),
        54.7,
        25.3,
        true,
    );
    pos.speed_kmh = Some(40.0);
    pos.course_deg = Some(90.0);
    pos.satellites = Some(9);
    out.push(
        enc.encode(
            &Message::new(MessageKind::Position)
                .with_imei(id)
                .with_positions(vec![pos]),
        )
        .unwrap(),
    );
    out
}

#[tokio::test]
async fn check_reports_acks() {
    for p in [Protocol::Gt06, Protocol::Ruptela, Protocol::Meitrack] {
        let server = common::start(p, Transport::Tcp, Behaviour::Ack).await;
        let f = frames(p);
        let r = exchange(p, Transport::Tcp, server.addr, &f, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(r.len(), f.len());
        assert!(r.iter().all(|x| x.ok()), "{p}: {r:#?}");
        assert!(
            r.iter().any(|x| x.verdict == "acked") || p == Protocol::Meitrack,
            "{p}: {r:#?}"
        );
    }
}

#[tokio::test]
async fn check_over_udp_and_http() {
    for (p, t) in [
        (Protocol::Teltonika, Transport::Udp),
        (Protocol::Osmand, Transport::Http),
    ] {
        if p.device_encoder(t).is_err() || p.codec(t).is_err() {
            eprintln!("skip {p}: not landed");
            continue;
        }
        let server = common::start(p, t, Behaviour::Ack).await;
        let f = frames_over(p, t);
        let r = exchange(p, t, server.addr, &f, Duration::from_secs(2)).await.unwrap();
        assert!(r.iter().all(|x| x.verdict == "acked"), "{p}: {r:#?}");
    }
}

#[tokio::test]
async fn check_flags_garbage_and_silence() {
    let server = common::start(Protocol::Gt06, Transport::Tcp, Behaviour::Garbage).await;
    let r = exchange(
        Protocol::Gt06,
        Transport::Tcp,
        server.addr,
        &frames(Protocol::Gt06),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert!(r.iter().all(|x| x.verdict == "unexpected"), "{r:#?}");
    let server = common::start(Protocol::Gt06, Transport::Tcp, Behaviour::Close).await;
    let r = exchange(
        Protocol::Gt06,
        Transport::Tcp,
        server.addr,
        &frames(Protocol::Gt06),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert!(r.iter().all(|x| x.verdict == "closed"), "{r:#?}");
}

#[test]
fn capture_files_parse() {
    let f = parse_capture("# login\n78780d01035630704244101300018cdd0d0a\n", Format::Auto, b"\r\n").unwrap();
    assert_eq!(f[0][..2], [0x78, 0x78]);
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

fn run_args(args: &[&str]) -> Result<firmware_sim::run::FleetConfig, String> {
    let mut v = vec!["clutch-sim", "run"];
    v.extend_from_slice(args);
    let cli = Cli::try_parse_from(v).map_err(|e| e.to_string())?;
    let SimCommand::Run(a) = cli.sim.command else {
        unreachable!()
    };
    fleet_config(&a)
}

#[test]
fn bad_cli_input_gets_clear_messages() {
    let err = |a: &[&str]| run_args(a).unwrap_err();
    assert!(err(&["--devices", "0", "--protocol", "gt06"]).contains("--devices"));
    assert!(err(&["--protocol", "nosuch"]).contains("unknown protocol"));
    assert!(err(&["--protocol", "gt06:udp"]).contains("does not run over udp"));
    assert!(err(&["--protocol", "gt06=0"]).contains("weight"));
    assert!(err(&["--protocol", "gt06", "--bbox", "1,2,3"]).contains("four numbers"));
    assert!(err(&["--protocol", "gt06", "--bbox", "5,5,1,1"]).contains("bounding box"));
    assert!(err(&["--protocol", "gt06", "--rate", "0"]).contains("--rate"));
    assert!(err(&["--protocol", "gt06", "--duration", "5 parsecs"]).contains("duration"));
    assert!(err(&["--protocol", "gt06", "--scenario", "/nonexistent.toml"]).contains("cannot read scenario"));
    assert!(err(&["--protocol", "gt06", "--target", "no.such.host.invalid"]).contains("cannot resolve"));
}

#[test]
fn mixes_and_targets() {
    let m = parse_mix("gt06=70, meitrack=30").unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].weight, 70);
    let c = run_args(&[
        "--protocol",
        "gt06,meitrack",
        "--target",
        "127.0.0.1",
        "--rate",
        "100",
        "--devices",
        "50",
    ])
    .unwrap();
    assert_eq!(c.mix[0].target.port(), 5023);
    assert_eq!(c.mix[1].target.port(), 5020);
    assert_eq!(c.interval, Duration::from_millis(500));
    let c = run_args(&[
        "--protocol",
        "gt06,meitrack",
        "--target",
        "127.0.0.1:9000",
        "--seed",
        "3",
    ])
    .unwrap();
    assert!(c.mix.iter().all(|m| m.target.port() == 9000));
    assert_eq!(c.seed, 3);
    let c = run_args(&["--protocol", "ruptela:mqtt,gt06", "--target", "127.0.0.1"]).unwrap();
    assert_eq!(c.mix[0].target.port(), 1883);
    assert!(c.mix[0].mqtt.is_some() && c.mix[1].mqtt.is_none());
    let c = run_args(&["--protocol", "osmand:json=1,osmand=1", "--target", "127.0.0.1"]).unwrap();
    assert!(c.mix[0].osmand_json && !c.mix[1].osmand_json);
    assert_eq!(c.mix[0].target.port(), 5055);
    let c = run_args(&["--protocol", "osmand", "--osmand-json"]).unwrap();
    assert!(c.mix[0].osmand_json);
    assert!(
        run_args(&["--protocol", "gt06:json"])
            .unwrap_err()
            .contains("only osmand")
    );
    let c = run_args(&[
        "--protocol",
        "teltonika:mqtt",
        "--mqtt-ack",
        "durable",
        "--mqtt-secret",
        "s-{id}",
    ])
    .unwrap();
    assert_eq!(c.mqtt.ack, firmware_sim::mqtt::MqttAck::Durable);
    let id = c.device_id(0);
    assert_eq!(c.mqtt.credentials(&id), Some((id.clone(), format!("s-{id}"))));
    assert!(run_args(&["--protocol", "teltonika:mqtt", "--mqtt-ack", "maybe"]).is_err());
}
