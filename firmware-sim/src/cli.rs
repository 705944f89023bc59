//! `clutch sim run | replay | check`: the argument structs (the root binary embeds
//! [`SimArgs`]) and the commands behind them. Bad input gets one clear line on stderr
//! and exit code 2; a run that delivered nothing exits 1.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Subcommand};
use protocols::{Protocol, Transport};

use crate::exchange::{Format, exchange, parse_capture};
use crate::route::{BBox, RouteSpec};
use crate::run::{Fleet, FleetConfig, MixEntry, write_truth};
use crate::scenario::{Scenario, parse_duration};
use crate::track::TrackConfig;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Device log level on stderr: off, error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run N simulated devices against a server and print a summary.
    Run(Box<RunArgs>),
    /// Send a capture file (hex or text frames, one a line) and print each answer.
    Replay(ReplayArgs),
    /// Send one frame or a capture and check that the server acks it as the protocol requires.
    Check(CheckArgs),
}

fn dur(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Number of devices.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// Protocol mix: `teltonika`, or `gt06=70,teltonika:udp=30,ruptela:mqtt=10,osmand:json=5`
    /// (name[:tcp|udp|http|mqtt|json][=weight]; mqtt publishes to a broker at --target;
    /// osmand:json POSTs JSON bodies instead of GET query strings).
    #[arg(long, default_value = "teltonika")]
    pub protocol: String,
    /// Server address, `host:port`; with `host` alone each protocol uses its default port.
    #[arg(long, default_value = "127.0.0.1")]
    pub target: String,
    /// How long devices produce records (real time), e.g. 60s, 5m.
    #[arg(long, default_value = "60s", value_parser = dur)]
    pub duration: Duration,
    /// Time between one device's fixes (real time).
    #[arg(long, default_value = "10s", value_parser = dur)]
    pub interval: Duration,
    /// Offer a fixed total positions/s instead (sets each device's interval to devices/rate).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Records collected before sending; also the most one frame carries.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Simulated seconds per real second (60 = drive an hour in a minute).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Scenario TOML (vehicle, noise, route, geofences, injected events).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// GeoJSON LineString to drive (overrides the scenario's route).
    #[arg(long)]
    pub route: Option<PathBuf>,
    /// Bounding box for random routes: min_lat,min_lon,max_lat,max_lon.
    #[arg(long)]
    pub bbox: Option<String>,
    /// Write the ground truth (JSON lines) here.
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
    /// Seed (printed on every run; reuse it to reproduce).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value = "10s", value_parser = dur)]
    pub ack_timeout: Duration,
    #[arg(long, default_value = "60s", value_parser = dur)]
    pub heartbeat: Duration,
    /// After --duration, how long devices keep delivering their backlog.
    #[arg(long, default_value = "10s", value_parser = dur)]
    pub drain: Duration,
    /// Spread device logins over this long (default: 1 s per 1000 devices, at most 30 s).
    #[arg(long, value_parser = dur)]
    pub ramp: Option<Duration>,
    /// Source addresses: `auto` (spread over 127.0.0.x for big loopback runs), `none`, or a list.
    #[arg(long, default_value = "auto")]
    pub source_ips: String,
    /// What `:mqtt` devices publish: raw frames to clutch/<id>/raw/<protocol>, or JSON to
    /// clutch/<id>/telemetry.
    #[arg(long, value_enum, default_value = "raw")]
    pub mqtt_payload: crate::mqtt::MqttPayload,
    /// When `:mqtt` devices delete records from their buffer: on the broker's PUBACK, or on
    /// the server's durable ack on clutch/<id>/ack (the records are stored).
    #[arg(long, value_enum, default_value = "puback")]
    pub mqtt_ack: crate::mqtt::MqttAck,
    /// MQTT CONNECT user name (`{id}` = the device id; default: the device id when a
    /// secret is given).
    #[arg(long)]
    pub mqtt_username: Option<String>,
    /// MQTT CONNECT password; `{id}` is replaced by the device id, so `secret-{id}` gives
    /// each device its own.
    #[arg(long)]
    pub mqtt_secret: Option<String>,
    /// OsmAnd devices POST JSON bodies instead of GET query strings (as `osmand:json`).
    #[arg(long)]
    pub osmand_json: bool,
    /// Print the device ids (IMEIs) this seed gives, one a line, and exit (to register them).
    #[arg(long)]
    pub list_ids: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (nor the periodic progress line when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[arg(long)]
    pub protocol: Protocol,
    /// tcp, udp or http (default: the protocol's usual one).
    #[arg(long)]
    pub transport: Option<Transport>,
    /// Server `host:port` (default port: the protocol's).
    #[arg(long)]
    pub target: String,
    /// Capture file: one frame a line, hex or text; `#` comments.
    #[arg(long)]
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// How long to wait for each answer.
    #[arg(long, default_value = "3s", value_parser = dur)]
    pub wait: Duration,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(long)]
    pub protocol: Protocol,
    #[arg(long)]
    pub transport: Option<Transport>,
    #[arg(long)]
    pub target: String,
    /// One frame as hex.
    #[arg(long, conflicts_with_all = ["text", "file"])]
    pub hex: Option<String>,
    /// One frame as text (CR LF appended unless the transport is HTTP).
    #[arg(long, conflicts_with = "file")]
    pub text: Option<String>,
    /// A capture file (as for replay).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[arg(long, default_value = "3s", value_parser = dur)]
    pub wait: Duration,
}

/// Run `clutch sim …`.
pub fn main(args: SimArgs) -> ExitCode {
    if let Err(e) = crate::log::install(&args.log) {
        return fail(&e);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let r = rt.block_on(async {
        match args.command {
            SimCommand::Run(a) => run_cmd(*a).await,
            SimCommand::Replay(a) => replay_cmd(a).await,
            SimCommand::Check(a) => check_cmd(a).await,
        }
    });
    r.unwrap_or_else(|e| fail(&e))
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("clutch sim: {msg}");
    ExitCode::from(2)
}

/// One entry of a parsed `--protocol` mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixSpec {
    pub protocol: Protocol,
    pub transport: Transport,
    pub weight: u32,
    /// Publish to an MQTT broker instead of `transport`.
    pub mqtt: bool,
    /// OsmAnd JSON bodies (`osmand:json`).
    pub osmand_json: bool,
}

/// Parse a protocol mix.
pub fn parse_mix(s: &str) -> Result<Vec<MixSpec>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (spec, weight) = match part.split_once('=') {
            Some((a, w)) => (
                a,
                w.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&w| w > 0)
                    .ok_or_else(|| format!("bad weight in {part:?}: expected a positive integer"))?,
            ),
            None => (part, 1),
        };
        let (name, variant) = match spec.split_once(':') {
            Some((n, t)) => (n.trim(), Some(t.trim().to_ascii_lowercase())),
            None => (spec.trim(), None),
        };
        let p: Protocol = name.parse()?;
        let (transport, mqtt, osmand_json) = match variant.as_deref() {
            None => (None, false, false),
            Some("mqtt") => (None, true, false),
            Some("json") if p == Protocol::Osmand => (Some(Transport::Http), false, true),
            Some("json") => return Err(format!("{part:?}: only osmand has a json variant")),
            Some(t) => (
                Some(
                    t.parse::<Transport>()
                        .map_err(|e| format!("{e}, mqtt or json (osmand)"))?,
                ),
                false,
                false,
            ),
        };
        let t = transport.unwrap_or(p.transports()[0]);
        if !p.transports().contains(&t) {
            return Err(format!("{p} does not run over {}", t.as_str()));
        }
        if p.device_encoder(t).is_err() || p.codec(t).is_err() {
            return Err(format!("{p} over {} has no codec in this build yet", t.as_str()));
        }
        out.push(MixSpec {
            protocol: p,
            transport: t,
            weight,
            mqtt,
            osmand_json,
        });
    }
    if out.is_empty() {
        return Err("--protocol is empty".into());
    }
    Ok(out)
}

/// Resolve `host[:port]`, falling back to `default_port`.
pub fn resolve(target: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = target.parse::<SocketAddr>() {
        return Ok(a);
    }
    let with_port = if target.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        target.to_owned()
    } else {
        format!("{target}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve target {target:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("target {target:?} resolves to no address"))
}

fn has_port(target: &str) -> bool {
    target.parse::<SocketAddr>().is_ok() || target.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
}

fn read(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// Build a fleet from `run` arguments (public so tests can check the validation).
pub fn fleet_config(a: &RunArgs) -> Result<FleetConfig, String> {
    if a.devices == 0 {
        return Err("--devices must be at least 1".into());
    }
    if !(a.time_scale.is_finite() && a.time_scale > 0.0 && a.time_scale <= 3600.0) {
        return Err("--time-scale must be in (0, 3600]".into());
    }
    if a.batch == 0 || a.batch > 255 {
        return Err("--batch must be in 1..=255".into());
    }
    let mix = parse_mix(&a.protocol)?;
    let scenario = match &a.scenario {
        Some(p) => Scenario::from_toml(&read(p, "scenario")?).map_err(|e| format!("{}: {e}", p.display()))?,
        None => Scenario::default(),
    };
    let seed = a.seed.or(scenario.seed).unwrap_or_else(|| {
        let t = Utc::now();
        (t.timestamp() as u64).wrapping_mul(1_000_003) ^ u64::from(t.timestamp_subsec_nanos())
    });
    let route = if let Some(p) = &a.route {
        RouteSpec::from_geojson(&read(p, "route")?).map_err(|e| format!("{}: {e}", p.display()))?
    } else if let Some(b) = &a.bbox {
        let v: Vec<f64> = b
            .split(',')
            .map(|x| x.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("--bbox {b:?}: expected min_lat,min_lon,max_lat,max_lon"))?;
        let [min_lat, min_lon, max_lat, max_lon] = v[..] else {
            return Err(format!("--bbox {b:?}: expected four numbers"));
        };
        let bbox = BBox {
            min_lat,
            min_lon,
            max_lat,
            max_lon,
        };
        bbox.validate()?;
        RouteSpec::Random(bbox)
    } else {
        scenario.route_spec(a.scenario.as_deref().and_then(Path::parent))?
    };
    let interval = match a.rate {
        Some(r) if r.is_finite() && r > 0.0 => Duration::from_secs_f64(a.devices as f64 / r),
        Some(r) => return Err(format!("--rate must be a positive number of positions/s, got {r}")),
        None => a.interval,
    };
    if interval < Duration::from_millis(1) {
        return Err("the report interval is under 1 ms; use fewer positions/s or more devices".into());
    }
    const MQTT_PORT: u16 = 1883;
    let port_of = |p: Protocol, mqtt: bool| if mqtt { MQTT_PORT } else { p.default_port() };
    let first_target = resolve(&a.target, port_of(mix[0].protocol, mix[0].mqtt))?;
    let mut entries = Vec::new();
    for m in mix {
        let target = if has_port(&a.target) {
            first_target
        } else {
            resolve(&a.target, port_of(m.protocol, m.mqtt))?
        };
        entries.push(MixEntry {
            protocol: m.protocol,
            transport: m.transport,
            weight: m.weight,
            target,
            mqtt: m.mqtt.then_some(a.mqtt_payload),
            osmand_json: m.osmand_json || (a.osmand_json && m.protocol == Protocol::Osmand && !m.mqtt),
        });
    }
    if a.mqtt_username.as_deref().is_some_and(str::is_empty) {
        return Err("--mqtt-username is empty".into());
    }
    let source_ips = match a.source_ips.as_str() {
        "auto" if first_target.ip().is_loopback() && first_target.is_ipv4() => FleetConfig::loopback_sources(a.devices),
        "auto" | "none" => Vec::new(),
        list => list
            .split(',')
            .map(|s| s.trim().parse().map_err(|_| format!("--source-ips: bad address {s:?}")))
            .collect::<Result<_, _>>()?,
    };
    let mut cfg = FleetConfig::new(a.devices, entries[0].protocol, first_target);
    cfg.mix = entries;
    cfg.interval = interval;
    cfg.duration = a.duration;
    cfg.drain = a.drain;
    cfg.time_scale = a.time_scale;
    cfg.batch = a.batch;
    cfg.ack_timeout = a.ack_timeout;
    cfg.heartbeat = a.heartbeat;
    cfg.seed = seed;
    cfg.start = scenario.start.unwrap_or_else(Utc::now);
    cfg.ramp = a
        .ramp
        .unwrap_or_else(|| Duration::from_secs_f64((a.devices as f64 / 1000.0).min(30.0)));
    cfg.source_ips = source_ips;
    cfg.mqtt = crate::mqtt::MqttSettings {
        ack: a.mqtt_ack,
        username: a.mqtt_username.clone(),
        secret: a.mqtt_secret.clone(),
    };
    cfg.track = Arc::new(TrackConfig {
        vehicle: scenario.vehicle,
        noise: scenario.noise,
        route,
        events: scenario.events,
        geofences: scenario.geofences,
        speed_zones: scenario.speed_zones,
    });
    Ok(cfg)
}

async fn run_cmd(a: RunArgs) -> Result<ExitCode, String> {
    let cfg = fleet_config(&a)?;
    if a.list_ids {
        for i in 0..cfg.devices {
            println!("{}", cfg.device_id(i));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let wanted = (a.devices as u64) * 2 + 256;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => eprintln!(
            "warning: open-file limit is {got}, {} devices need about {wanted}; raise it with `ulimit -n`",
            a.devices
        ),
        Err(e) => eprintln!("warning: cannot raise the open-file limit: {e}"),
        _ => {}
    }
    let mix: Vec<String> = cfg
        .mix
        .iter()
        .map(|m| {
            let t = match (m.mqtt.is_some(), m.osmand_json) {
                (true, _) => "mqtt",
                (false, true) => "http+json",
                _ => m.transport.as_str(),
            };
            format!("{}/{t}→{} ×{}", m.protocol, m.target, m.weight)
        })
        .collect();
    eprintln!(
        "clutch sim: seed {} (reproduce with --seed {}), {} devices, {}, interval {:?}, duration {:?}",
        cfg.seed,
        cfg.seed,
        cfg.devices,
        mix.join(", "),
        cfg.interval,
        cfg.duration
    );
    let fleet = Fleet::start(&cfg);
    // No bar under --json: its output is for machines.
    let progress = (!a.no_progress && !a.json).then_some(cfg.ramp + cfg.duration);
    let (summary, truth) = fleet.wait(progress).await;
    if let Some(p) = &a.ground_truth {
        write_truth(p, &truth).map_err(|e| format!("cannot write ground truth {}: {e}", p.display()))?;
        eprintln!("ground truth: {} events → {}", truth.len(), p.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    } else {
        println!("{summary}");
    }
    let delivered = summary.records_acked + summary.records_unacked_by_protocol;
    Ok(if delivered == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn transport_for(p: Protocol, t: Option<Transport>) -> Result<Transport, String> {
    let t = t.unwrap_or(p.transports()[0]);
    if !p.transports().contains(&t) {
        return Err(format!("{p} does not run over {}", t.as_str()));
    }
    if p.codec(t).is_err() {
        return Err(format!("{p} over {} has no codec in this build yet", t.as_str()));
    }
    Ok(t)
}

fn line_ending(t: Transport) -> &'static [u8] {
    if t == Transport::Http { b"" } else { b"\r\n" }
}

async fn replay_cmd(a: ReplayArgs) -> Result<ExitCode, String> {
    let t = transport_for(a.protocol, a.transport)?;
    let target = resolve(&a.target, a.protocol.default_port())?;
    let frames = parse_capture(&read(&a.file, "capture")?, a.format, line_ending(t))
        .map_err(|e| format!("{}: {e}", a.file.display()))?;
    let results = exchange(a.protocol, t, target, &frames, a.wait).await?;
    for r in &results {
        if a.json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            println!("> #{} {} [{}]", r.index + 1, r.sent_hex, r.decoded.join(","));
            match (&r.received_text, r.received_hex.is_empty()) {
                (_, true) => println!("< (nothing) {}", r.verdict),
                (Some(t), _) => println!("< {} {:?} {}", r.received_hex, t, r.verdict),
                (None, _) => println!("< {} {}", r.received_hex, r.verdict),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn check_cmd(a: CheckArgs) -> Result<ExitCode, String> {
    let t = transport_for(a.protocol, a.transport)?;
    let target = resolve(&a.target, a.protocol.default_port())?;
    let frames = match (&a.hex, &a.text, &a.file) {
        (Some(h), _, _) => {
            let compact: String = h.chars().filter(|c| !c.is_whitespace()).collect();
            vec![hex::decode(compact).map_err(|e| format!("--hex is not hex: {e}"))?]
        }
        (_, Some(text), _) => {
            let mut f = text.as_bytes().to_vec();
            f.extend_from_slice(line_ending(t));
            vec![f]
        }
        (_, _, Some(p)) => parse_capture(&read(p, "capture")?, Format::Auto, line_ending(t))
            .map_err(|e| format!("{}: {e}", p.display()))?,
        _ => return Err("give the frame with --hex, --text or --file".into()),
    };
    let results = exchange(a.protocol, t, target, &frames, a.wait).await?;
    let failed = results.iter().filter(|r| !r.ok()).count();
    for r in &results {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    }
    println!(
        "{}",
        serde_json::json!({ "protocol": a.protocol.name(), "frames": results.len(), "ok": results.len() - failed, "failed": failed })
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
