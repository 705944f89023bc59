//! The `[ingest]` config section.
//!
//! Durations carry their unit in the field name (`login_timeout_ms`), as in `[store]`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use protocols::Protocol;
use serde::{Deserialize, Serialize};

/// What happens to a device whose identifier is not in the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownDevices {
    /// Close after the login frame; counted, logged once per identifier, listed.
    #[default]
    Refuse,
    /// Auto-register into the default tenant.
    Register,
}

/// `[ingest]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Address every device listener binds.
    pub bind: IpAddr,
    pub unknown_devices: UnknownDevices,
    /// Tenant that `register` puts new devices in (created when missing).
    pub default_tenant: String,
    /// Open device connections, all protocols together. Accepting stops at the limit,
    /// so the kernel backlog (then the device's retry) absorbs the excess.
    pub max_connections: usize,
    /// A connection that has not identified itself by then is closed.
    pub login_timeout_ms: u64,
    /// A connection silent for this long is closed. Trackers send a heartbeat every few
    /// minutes; a dead NAT mapping otherwise keeps a socket forever.
    pub idle_timeout_ms: u64,
    /// Bytes buffered for one frame before the connection is closed as hostile.
    pub max_frame_bytes: usize,
    /// Frames of one connection published and awaiting durability. Bounded so a slow
    /// store stops reading the socket rather than buffering.
    pub in_flight_per_connection: usize,
    /// How often the database is asked which connected devices have queued commands.
    pub command_poll_ms: u64,
    /// On shutdown, how long connections get to receive the acks they are owed.
    pub drain_timeout_ms: u64,
    pub ports: Ports,
    pub mqtt: MqttConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            unknown_devices: UnknownDevices::Refuse,
            default_tenant: "default".into(),
            max_connections: 50_000,
            login_timeout_ms: 30_000,
            idle_timeout_ms: 30 * 60_000,
            max_frame_bytes: 64 * 1024,
            in_flight_per_connection: 64,
            command_poll_ms: 1_000,
            drain_timeout_ms: 10_000,
            ports: Ports::default(),
            mqtt: MqttConfig::default(),
        }
    }
}

impl IngestConfig {
    pub fn login_timeout(&self) -> Duration {
        Duration::from_millis(self.login_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn command_poll(&self) -> Duration {
        Duration::from_millis(self.command_poll_ms.max(10))
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// `[ingest.mqtt]`: the embedded broker, or an external one (client mode).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Port of the embedded broker (MQTT 3.1.1), on `ingest.bind`. `0` disables it.
    pub port: u16,
    /// Serve TLS on `port` instead of plain TCP, with these PEM files.
    pub tls: Option<MqttTls>,
    /// `mqtt://host:port` (or `mqtts://`) of an external broker to read devices from with
    /// a shared subscription instead of running the embedded broker. Credentials go in
    /// the URL's user info (`mqtt://clutch:secret@host:1883`).
    pub external: Option<String>,
    /// The shared-subscription group name in client mode (`$share/<group>/…`).
    pub share_group: String,
    /// Largest PUBLISH accepted, bytes.
    pub max_payload_bytes: usize,
    /// A connection must send CONNECT within this time.
    pub connect_timeout_ms: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            port: 1883,
            tls: None,
            external: None,
            share_group: "clutch".into(),
            max_payload_bytes: 256 * 1024,
            connect_timeout_ms: 10_000,
        }
    }
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The external URL may carry a password: show it redacted.
        let external = self.external.as_deref().map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***@{}", &u[..s + 3], &u[at + 1..]),
            _ => u.to_string(),
        });
        f.debug_struct("MqttConfig")
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("external", &external)
            .field("share_group", &self.share_group)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

/// `[ingest.mqtt.tls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// `[ingest.ports]`: one per protocol, `0` disables it. A protocol that runs over both
/// TCP and UDP listens on the same number for both.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ports {
    pub teltonika: u16,
    pub gt06: u16,
    pub h02: u16,
    pub tk103: u16,
    pub gps103: u16,
    pub gl200: u16,
    pub meitrack: u16,
    pub ruptela: u16,
    pub freematics: u16,
    pub osmand: u16,
}

impl Default for Ports {
    fn default() -> Self {
        let p = Protocol::default_port;
        Ports {
            teltonika: p(Protocol::Teltonika),
            gt06: p(Protocol::Gt06),
            h02: p(Protocol::H02),
            tk103: p(Protocol::Tk103),
            gps103: p(Protocol::Gps103),
            gl200: p(Protocol::Gl200),
            meitrack: p(Protocol::Meitrack),
            ruptela: p(Protocol::Ruptela),
            freematics: p(Protocol::Freematics),
            osmand: p(Protocol::Osmand),
        }
    }
}

impl Ports {
    pub fn get(&self, protocol: Protocol) -> u16 {
        match protocol {
            Protocol::Teltonika => self.teltonika,
            Protocol::Gt06 => self.gt06,
            Protocol::H02 => self.h02,
            Protocol::Tk103 => self.tk103,
            Protocol::Gps103 => self.gps103,
            Protocol::Gl200 => self.gl200,
            Protocol::Meitrack => self.meitrack,
            Protocol::Ruptela => self.ruptela,
            Protocol::Freematics => self.freematics,
            Protocol::Osmand => self.osmand,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_the_issue_table() {
        let p = Ports::default();
        assert_eq!(
            (
                p.teltonika,
                p.gt06,
                p.h02,
                p.gps103,
                p.tk103,
                p.gl200,
                p.meitrack,
                p.ruptela,
                p.freematics,
                p.osmand
            ),
            (5027, 5023, 5013, 5001, 5002, 5004, 5020, 5046, 5170, 5055)
        );
        assert_eq!(MqttConfig::default().port, 1883);
    }

    #[test]
    fn external_broker_password_is_redacted() {
        let c = MqttConfig {
            external: Some("mqtt://clutch:hunter2@broker:1883".into()),
            ..MqttConfig::default()
        };
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && d.contains("mqtt://***@broker:1883"), "{d}");
    }
}
