//! The ingest tier end to end: real sockets on port 0, a real PostgreSQL (one throwaway
//! cluster for this binary), the protocols crate's device encoders acting as trackers.
//! The expected ack bytes come from a second, independent codec session fed the same
//! bytes, so the test checks the server sends exactly what the protocol prescribes, and
//! only after the rows are committed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{TimeZone, Utc};
use ingest::{DeviceBatch, Ingest, IngestConfig, Registry, StoreSink, UnknownDevices, registry::add_device};
use protocols::{DecodeContext, Framing, Message, MessageKind, Position, Protocol, Transport};
use store::testing::{TestDb, test_db};
use store::{Writer, WriterConfig};
use stream::{BusConfig, InProcessBus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

struct Server {
    ingest: Ingest,
    db: TestDb,
    writer: store::WriterHandle,
}

async fn server(config: IngestConfig) -> Server {
    ingest::metrics::install();
    let db = test_db().await;
    let writer = Writer::spawn(
        db.pool.clone(),
        WriterConfig {
            max_delay: Duration::from_millis(5),
            ..WriterConfig::default()
        },
    );
    let bus: Arc<InProcessBus<DeviceBatch>> = Arc::new(InProcessBus::new(
        &BusConfig::default(),
        Arc::new(StoreSink::new(writer.clone())),
    ));
    let registry = Arc::new(Registry::new(db.pool.clone(), config.unknown_devices, "default"));
    Server {
        ingest: Ingest::new(config, registry, bus),
        db,
        writer,
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A device's messages: a login (for protocols that have one) and `n` fixes.
fn script(imei: &str, n: usize) -> Vec<Message> {
    let mut out = vec![Message::new(MessageKind::Login).with_imei(imei)];
    for i in 0..n {
        let t = Utc
            .with_ymd_and_hms(2026, 3, 1, 12, i as u32, 0)
            .single()
            .expect("time");
        let mut p = Position::new(t, 54.0 + i as f64 * 0.001, 25.0 + i as f64 * 0.001, true);
        p.speed_kmh = Some(40.0);
        p.course_deg = Some(90.0);
        p.altitude_m = Some(120.0);
        p.satellites = Some(9);
        out.push(
            Message::new(MessageKind::Position)
                .with_imei(imei)
                .with_positions(vec![p]),
        );
    }
    out
}

/// What a correct server answers to `bytes`, and how many fixes they hold, per a fresh
/// codec session of our own.
fn reference(codec: &mut dyn protocols::Codec, bytes: &[u8]) -> (Vec<u8>, usize) {
    let ctx = DecodeContext::now();
    let mut ack = Vec::new();
    let mut fixes = 0;
    let mut rest = bytes;
    while let Framing::Frame { start, end } = codec.frame(rest, true) {
        for m in codec.decode(&rest[start..end], &ctx).expect("reference decode") {
            fixes += m.positions.len();
            ack.extend(m.ack.unwrap_or_default());
        }
        rest = &rest[end..];
        if rest.is_empty() {
            break;
        }
    }
    (ack, fixes)
}

async fn read_exact_timeout(s: &mut TcpStream, n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .context("ack timed out")??;
    Ok(buf)
}

async fn count(db: &TestDb, device_id: i64) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM positions WHERE device_id = $1")
        .bind(device_id)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

/// Polls until `expected` rows are there (or 5 s pass); returns the last count.
async fn wait_count(db: &TestDb, device_id: i64, expected: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = count(db, device_id).await;
        if n >= expected || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drives one TCP device through its script; returns the fixes the server should hold.
async fn drive_tcp(protocol: Protocol, addr: SocketAddr, imei: &str, n: usize) -> Result<usize> {
    let mut dev = protocol.device_encoder(Transport::Tcp)?;
    let mut refc = protocol.codec(Transport::Tcp)?;
    let mut s = TcpStream::connect(addr).await?;
    let mut expected_fixes = 0;
    for msg in script(imei, n) {
        let bytes = match dev.encode(&msg) {
            Ok(b) => b,
            // A protocol without a login message identifies itself in every report.
            Err(_) if msg.kind == MessageKind::Login => continue,
            Err(e) => bail!("{protocol}: encoding {:?}: {e}", msg.kind),
        };
        let (ack, fixes) = reference(refc.as_mut(), &bytes);
        expected_fixes += fixes;
        s.write_all(&bytes).await?;
        if !ack.is_empty() {
            let got = read_exact_timeout(&mut s, ack.len()).await?;
            assert_eq!(
                hex::encode(&got),
                hex::encode(&ack),
                "{protocol}: ack bytes for {:?}",
                msg.kind
            );
        }
    }
    Ok(expected_fixes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_end_to_end() -> Result<()> {
    let srv = server(IngestConfig::default()).await;
    let mut covered = Vec::new();
    for protocol in Protocol::ALL {
        for &transport in protocol.transports() {
            if protocol.codec(transport).is_err() || protocol.device_encoder(transport).is_err() {
                eprintln!("{protocol}/{}: codec not landed yet, skipped", transport.as_str());
                continue;
            }
            let imei = format!("35{:013}", covered.len() * 7919 + 1);
            let device_id = add_device(&srv.db.pool, "acme", &imei, protocol).await?;
            let expected = match transport {
                Transport::Tcp => {
                    let l = srv.ingest.listen_tcp(protocol, local()).await?;
                    drive_tcp(protocol, l.addr, &imei, 3).await?
                }
                Transport::Udp => {
                    let l = srv.ingest.listen_udp(protocol, local()).await?;
                    drive_udp(protocol, l.addr, &imei, 3).await?
                }
                Transport::Http => {
                    let l = srv.ingest.listen_http(protocol, local()).await?;
                    drive_http(protocol, l.addr, &imei, 3).await?
                }
            };
            assert!(expected > 0, "{protocol}: the script produced no fixes");
            // Acked means committed; a protocol that acks nothing for some reports
            // (Meitrack AAA) gives no such signal, so wait for those rows.
            let stored = wait_count(&srv.db, device_id, expected as i64).await;
            assert_eq!(
                stored,
                expected as i64,
                "{protocol}/{}: rows in PostgreSQL",
                transport.as_str()
            );
            covered.push(format!("{protocol}/{}", transport.as_str()));
        }
    }
    eprintln!("covered: {}", covered.join(", "));
    assert!(!covered.is_empty());
    assert!(srv.ingest.shutdown().await);
    srv.writer.shutdown().await;
    Ok(())
}

async fn drive_udp(protocol: Protocol, addr: SocketAddr, imei: &str, n: usize) -> Result<usize> {
    let mut dev = protocol.device_encoder(Transport::Udp)?;
    let s = UdpSocket::bind(local()).await?;
    s.connect(addr).await?;
    let mut expected_fixes = 0;
    for msg in script(imei, n) {
        let Ok(bytes) = dev.encode(&msg) else { continue };
        let mut refc = protocol.codec(Transport::Udp)?;
        let (ack, fixes) = reference(refc.as_mut(), &bytes);
        expected_fixes += fixes;
        s.send(&bytes).await?;
        if !ack.is_empty() {
            let mut buf = vec![0u8; 2048];
            let n = tokio::time::timeout(Duration::from_secs(10), s.recv(&mut buf)).await??;
            assert_eq!(hex::encode(&buf[..n]), hex::encode(&ack), "{protocol}/udp ack");
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(expected_fixes)
}

/// An HTTP device: each encoded request target is one `GET`; `200` is the ack.
async fn drive_http(protocol: Protocol, addr: SocketAddr, imei: &str, n: usize) -> Result<usize> {
    let mut dev = protocol.device_encoder(Transport::Http)?;
    let mut expected_fixes = 0;
    for msg in script(imei, n) {
        let Ok(bytes) = dev.encode(&msg) else { continue };
        let mut refc = protocol.codec(Transport::Http)?;
        expected_fixes += reference(refc.as_mut(), &bytes).1;
        let target = String::from_utf8(bytes)?;
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: clutch\r\nConnection: close\r\n\r\n",
            target.trim()
        );
        s.write_all(req.as_bytes()).await?;
        let mut resp = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut resp)).await??;
        assert!(resp.starts_with("HTTP/1.1 200"), "{protocol}/http: {resp}");
    }
    Ok(expected_fixes)
}

/// A landed TCP protocol to run the transport-level cases with.
fn some_tcp_protocol() -> Protocol {
    Protocol::ALL
        .into_iter()
        .find(|p| p.codec(Transport::Tcp).is_ok() && p.device_encoder(Transport::Tcp).is_ok())
        .expect("at least one TCP codec")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_is_refused_and_listed() -> Result<()> {
    let srv = server(IngestConfig::default()).await;
    ingest::metrics::install();
    let protocol = some_tcp_protocol();
    let l = srv.ingest.listen_tcp(protocol, local()).await?;
    let mut dev = protocol.device_encoder(Transport::Tcp)?;
    for _ in 0..2 {
        let mut s = TcpStream::connect(l.addr).await?;
        for msg in script("359999000000001", 1) {
            if let Ok(b) = dev.encode(&msg) {
                // The server may already have closed after the first frame.
                let _ = s.write_all(&b).await;
            }
        }
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await?;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&srv.db.pool)
        .await?;
    assert_eq!(rows, 0);
    let unknown = srv.ingest.registry().unknown_devices();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].identifier, "359999000000001");
    assert_eq!(unknown[0].attempts, 2);
    let text = ingest::metrics::install().render();
    assert!(text.contains("clutch_ingest_unknown_devices"), "{text}");
    assert!(text.contains("reason=\"unknown_device\""), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_policy_auto_registers() -> Result<()> {
    let srv = server(IngestConfig {
        unknown_devices: UnknownDevices::Register,
        ..IngestConfig::default()
    })
    .await;
    let protocol = some_tcp_protocol();
    let l = srv.ingest.listen_tcp(protocol, local()).await?;
    let expected = drive_tcp(protocol, l.addr, "358888000000002", 2).await?;
    let id: i64 = sqlx::query_scalar("SELECT id FROM devices WHERE identifier = '358888000000002'")
        .fetch_one(&srv.db.pool)
        .await?;
    assert_eq!(count(&srv.db, id).await, expected as i64);
    Ok(())
}

/// Garbage, a corrupted frame, an oversized blob and a slowloris: each costs only its own
/// connection or frame; the good frames before and after are stored and acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_contained() -> Result<()> {
    let srv = server(IngestConfig {
        login_timeout_ms: 300,
        max_frame_bytes: 4096,
        ..IngestConfig::default()
    })
    .await;
    let metrics = ingest::metrics::install();
    // GT06 has both resync (start markers) and a length field to lie with.
    let protocol = Protocol::Gt06;
    let imei = "357777000000003";
    let device_id = add_device(&srv.db.pool, "acme", imei, protocol).await?;
    let l = srv.ingest.listen_tcp(protocol, local()).await?;

    // A well-behaved device connected throughout.
    let mut good = TcpStream::connect(l.addr).await?;
    let mut dev = protocol.device_encoder(Transport::Tcp)?;
    let mut refc = protocol.codec(Transport::Tcp)?;
    let msgs = script(imei, 4);
    let mut send = async |s: &mut TcpStream, m: &Message, before: &[u8]| -> Result<()> {
        let Ok(bytes) = dev.encode(m) else { return Ok(()) };
        let (ack, _) = reference(refc.as_mut(), &bytes);
        let mut wire = before.to_vec();
        wire.extend_from_slice(&bytes);
        s.write_all(&wire).await?;
        if !ack.is_empty() {
            let got = read_exact_timeout(s, ack.len()).await?;
            assert_eq!(got, ack, "ack after bad input");
        }
        Ok(())
    };
    send(&mut good, &msgs[0], b"").await?;
    send(&mut good, &msgs[1], b"").await?;

    // Garbage between frames on the same connection: resync, then the next frame is kept.
    send(&mut good, &msgs[2], b"\x00\xffgarbage\x13\x37").await?;

    // A corrupted copy of a good frame (last payload byte flipped) then a good frame.
    let mut corrupt = protocol.device_encoder(Transport::Tcp)?.encode(&msgs[0])?;
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x5a;
    send(&mut good, &msgs[3], &corrupt).await?;

    // Oversize: an extended header declaring 16 KiB (within GT06's own limit, over ours), then a flood, is cut at the
    // frame cap; that connection only.
    let mut big = TcpStream::connect(l.addr).await?;
    let mut blob = vec![0x79, 0x79, 0x40, 0x00];
    blob.resize(8 * 1024, 0x42);
    let _ = big.write_all(&blob).await;
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "oversized stream closed");

    // Slowloris: a partial frame and then silence is cut at the login timeout.
    let mut slow = TcpStream::connect(l.addr).await?;
    let partial = protocol.device_encoder(Transport::Tcp)?.encode(&msgs[0])?;
    slow.write_all(&partial[..partial.len() / 2]).await?;
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "slow sender closed at the login timeout");

    // The good connection is unaffected and still reports; all four fixes are there.
    send(&mut good, &msgs[4], b"").await?;
    assert_eq!(wait_count(&srv.db, device_id, 4).await, 4);
    let text = metrics.render();
    let has = |needle: &str| text.lines().any(|l| l.contains(needle) && !l.starts_with('#'));
    assert!(has("outcome=\"resync\"") || has("outcome=\"decode_error\""), "{text}");
    assert!(has("reason=\"login_timeout\""), "{text}");
    assert!(has("reason=\"oversize\""), "{text}");
    assert!(has("outcome=\"oversize\""), "{text}");
    Ok(())
}

/// Downlink: a command queued while the device is away goes out after its login ack; one
/// queued while it is connected goes out within a poll; the reply is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_commands_are_delivered_and_answered() -> Result<()> {
    let srv = server(IngestConfig {
        command_poll_ms: 50,
        ..IngestConfig::default()
    })
    .await;
    let protocol = Protocol::Gt06;
    let imei = "356666000000004";
    let device_id = add_device(&srv.db.pool, "acme", imei, protocol).await?;
    let first = ingest::commands::enqueue(&srv.db.pool, device_id, &protocols::Command::EngineStop).await?;
    let l = srv.ingest.listen_tcp(protocol, local()).await?;

    let reference = protocol.codec(Transport::Tcp)?;
    let ctx = DecodeContext::now();
    let mut dev = protocol.device_encoder(Transport::Tcp)?;
    let mut s = TcpStream::connect(l.addr).await?;
    let login = dev.encode(&Message::new(MessageKind::Login).with_imei(imei))?;
    let (login_ack, _) = reference_ack(protocol, &login);
    s.write_all(&login).await?;
    read_exact_timeout(&mut s, login_ack.len()).await?;
    let stop = reference.encode_command(imei, &protocols::Command::EngineStop, &ctx)?;
    assert_eq!(
        read_exact_timeout(&mut s, stop.len()).await?,
        stop,
        "queued command after login"
    );

    let second = ingest::commands::enqueue(&srv.db.pool, device_id, &protocols::Command::Locate).await?;
    let locate = reference.encode_command(imei, &protocols::Command::Locate, &ctx)?;
    assert_eq!(
        read_exact_timeout(&mut s, locate.len()).await?,
        locate,
        "command while connected"
    );

    let mut reply = Message::new(MessageKind::CommandResponse).with_imei(imei);
    reply.result = Some("Cut off the fuel supply: Success!".into());
    let bytes = dev.encode(&reply)?;
    s.write_all(&bytes).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rows: Vec<(i64, String, Option<String>)> =
            sqlx::query_as("SELECT id, status, response FROM device_commands WHERE device_id = $1 ORDER BY id")
                .bind(device_id)
                .fetch_all(&srv.db.pool)
                .await?;
        let want = vec![
            (
                first,
                "answered".to_string(),
                Some("Cut off the fuel supply: Success!".to_string()),
            ),
            (second, "sent".to_string(), None),
        ];
        if rows == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn reference_ack(protocol: Protocol, bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut c = protocol.codec(Transport::Tcp).expect("codec");
    reference(c.as_mut(), bytes)
}

/// A flood of refused logins lands in `unknown_devices` as one row with every attempt
/// counted, written in a handful of statements (not one per attempt); registering the
/// device takes it off the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_are_recorded_for_admins() -> Result<()> {
    let srv = server(IngestConfig::default()).await;
    let protocol = Protocol::Gt06;
    let l = srv.ingest.listen_tcp(protocol, local()).await?;
    let imei = "359999000000077";
    let attempts = 30;
    let started = std::time::Instant::now();
    for _ in 0..attempts {
        let mut dev = protocol.device_encoder(Transport::Tcp)?;
        let mut s = TcpStream::connect(l.addr).await?;
        s.write_all(&dev.encode(&Message::new(MessageKind::Login).with_imei(imei))?)
            .await?;
        let mut buf = Vec::new();
        // Refused: the server closes after the login frame.
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    }
    let flood = started.elapsed();
    // Shutting down writes what is still counted only in memory.
    assert!(srv.ingest.shutdown().await, "drained");
    let writes = srv.ingest.registry().unknown_writes();
    // One on first sight, at most one a second after that, one at shutdown.
    assert!(
        writes >= 1 && writes <= 2 + flood.as_secs() && writes < attempts,
        "{writes} writes for {attempts} attempts in {flood:?}"
    );
    let list = ingest::registry::list_unknown(&srv.db.pool).await?;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (list[0].protocol.as_str(), list[0].identifier.as_str(), list[0].attempts),
        ("gt06", imei, attempts)
    );
    let addr = list[0].remote_addr.as_deref().unwrap_or_default();
    assert!(addr.starts_with("127.0.0.1:"), "remote address {addr:?}");
    assert!(list[0].last_seen >= list[0].first_seen);

    add_device(&srv.db.pool, "acme", imei, protocol).await?;
    assert!(
        ingest::registry::list_unknown(&srv.db.pool).await?.is_empty(),
        "registered devices leave the list"
    );
    // A late flush of the same identifier does not bring the row back.
    srv.ingest
        .registry()
        .resolve_from(protocol, "359999000000088", None)
        .await?;
    srv.ingest.registry().flush_unknown().await?;
    let ids: Vec<String> = ingest::registry::list_unknown(&srv.db.pool)
        .await?
        .into_iter()
        .map(|u| u.identifier)
        .collect();
    assert_eq!(ids, vec!["359999000000088".to_string()]);
    Ok(())
}

async fn http_get(addr: SocketAddr, target: &str) -> Result<(String, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {target} HTTP/1.1\r\nHost: clutch\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut resp)).await??;
    let (head, body) = resp.split_once("\r\n\r\n").context("no header end")?;
    Ok((head.lines().next().unwrap_or_default().to_string(), body.to_string()))
}

/// OsmAnd has no connection to push to: a queued command rides in the body of the
/// `200` that answers the device's next report, and is marked sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osmand_gets_queued_command_in_the_response_body() -> Result<()> {
    let srv = server(IngestConfig::default()).await;
    let protocol = Protocol::Osmand;
    let id = "osmand-phone-1";
    let device_id = add_device(&srv.db.pool, "acme", id, protocol).await?;
    let l = srv.ingest.listen_http(protocol, local()).await?;
    let unsupported = ingest::commands::enqueue(&srv.db.pool, device_id, &protocols::Command::EngineStop).await?;
    let custom = ingest::commands::enqueue(
        &srv.db.pool,
        device_id,
        &protocols::Command::Custom {
            text: "setparam 1000:5".into(),
        },
    )
    .await?;
    let second = ingest::commands::enqueue(
        &srv.db.pool,
        device_id,
        &protocols::Command::Custom { text: "reboot".into() },
    )
    .await?;
    let report = |t: i64| format!("/?id={id}&timestamp={t}&lat=54.1&lon=25.2&speed=10");
    let (status, body) = http_get(l.addr, &report(1_767_225_600)).await?;
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(body, "setparam 1000:5", "oldest deliverable command in the body");
    let (status, body) = http_get(l.addr, &report(1_767_225_660)).await?;
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(body, "reboot", "one command per response, in order");
    let (_, body) = http_get(l.addr, &report(1_767_225_720)).await?;
    assert_eq!(body, "", "nothing queued, empty body");
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, status FROM device_commands WHERE device_id = $1 ORDER BY id")
            .bind(device_id)
            .fetch_all(&srv.db.pool)
            .await?;
    assert_eq!(
        rows,
        vec![
            (unsupported, "failed".to_string()),
            (custom, "sent".to_string()),
            (second, "sent".to_string())
        ]
    );
    assert_eq!(count(&srv.db, device_id).await, 3, "the reports are stored");
    Ok(())
}

/// `<id>#<payload>*<sum>` with the Freematics checksum.
fn freematics(id: &str, payload: &str) -> String {
    let body = format!("{id}#{payload}");
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("{body}*{sum:02X}")
}

/// Old Freematics firmware logs in as `0#…,ID=<real id>` and then sends data under the
/// feed id the server's reply gave it (`1#`). The device must be the real id, the data
/// must land on it, and a bare feed id must never become a device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freematics_old_firmware_is_keyed_by_its_real_id() -> Result<()> {
    let srv = server(IngestConfig {
        unknown_devices: UnknownDevices::Register,
        ..IngestConfig::default()
    })
    .await;
    let protocol = Protocol::Freematics;
    let l = srv.ingest.listen_udp(protocol, local()).await?;
    let real = "ESP32305C06C40A24";
    let dev = UdpSocket::bind(local()).await?;
    dev.connect(l.addr).await?;
    let mut buf = vec![0u8; 2048];

    let login = freematics("0", &format!("EV=1,TS=4711,ID={real}"));
    dev.send(login.as_bytes()).await?;
    let n = tokio::time::timeout(Duration::from_secs(10), dev.recv(&mut buf)).await??;
    assert_eq!(
        std::str::from_utf8(&buf[..n])?,
        freematics("1", "EV=1,RX=1,TS=4711"),
        "login ack"
    );

    for (i, t) in ["12000000", "12000500"].iter().enumerate() {
        let data = freematics(
            "1",
            &format!("0:{},11:010326,10:{t},A:54.{i}1,B:25.{i}2,C:120,D:40", 5000 + i),
        );
        dev.send(data.as_bytes()).await?;
    }
    let ids: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, identifier FROM devices WHERE protocol = 'freematics' ORDER BY id")
            .fetch_all(&srv.db.pool)
            .await?;
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids[0].1, real);
    assert_eq!(
        wait_count(&srv.db, ids[0].0, 2).await,
        2,
        "data under the feed id lands on the real device"
    );

    // The same feed id from an address that never logged in names no device.
    let stranger = UdpSocket::bind(local()).await?;
    stranger.connect(l.addr).await?;
    stranger
        .send(freematics("1", "0:9000,11:010326,10:13000000,A:54.5,B:25.5").as_bytes())
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE protocol = 'freematics'")
        .fetch_one(&srv.db.pool)
        .await?;
    assert_eq!(n, 1, "no device called `1`");
    assert_eq!(count(&srv.db, ids[0].0).await, 2);

    // Current firmware (`<devid>#` everywhere) is keyed by its prefix as before.
    let modern = UdpSocket::bind(local()).await?;
    modern.connect(l.addr).await?;
    modern
        .send(freematics("A1B2C3D4", "EV=1,TS=1,ID=A1B2C3D4").as_bytes())
        .await?;
    tokio::time::timeout(Duration::from_secs(10), modern.recv(&mut buf)).await??;
    modern
        .send(freematics("A1B2C3D4", "0:1,11:010326,10:14000000,A:54.6,B:25.6").as_bytes())
        .await?;
    let modern_id: i64 = sqlx::query_scalar("SELECT id FROM devices WHERE identifier = 'A1B2C3D4'")
        .fetch_one(&srv.db.pool)
        .await?;
    assert_eq!(wait_count(&srv.db, modern_id, 1).await, 1);
    Ok(())
}
