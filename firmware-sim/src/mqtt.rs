//! What simulated devices publish over MQTT, what they subscribe to, and the JSON on those
//! topics. The client itself is `rumqttc` (see [`crate::transport::Link::connect_mqtt`]).
//!
//! | topic | who publishes | payload |
//! |---|---|---|
//! | `clutch/<id>/raw/<protocol>` | device | the protocol's own frame bytes |
//! | `clutch/<id>/telemetry` | device | [`Telemetry`]: `{"id", "seq", "positions": [...]}` |
//! | `clutch/<id>/ack` | server, once the records are durable | raw: the protocol's ack bytes; telemetry: [`DurableAck`] `{"seq", "records"}` |
//! | `clutch/<id>/commands` | server | [`CommandRequest`] `{"id", "command": <protocols::Command>}` |
//! | `clutch/<id>/responses` | device | [`CommandReply`] `{"id", "result": "<text>"}` |
//!
//! Everything is QoS 1. Devices subscribe to `ack` and `commands` right after CONNACK and
//! wait for the SUBACK before publishing, so no ack can be published before they listen.

use serde::{Deserialize, Serialize};

/// What a device publishes over MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MqttPayload {
    /// The protocol's frame, to `clutch/<id>/raw/<protocol>`.
    Raw,
    /// The positions as JSON, to `clutch/<id>/telemetry`.
    Json,
}

impl MqttPayload {
    /// The topic device `id` speaking `protocol` publishes to.
    pub fn topic(self, id: &str, protocol: protocols::Protocol) -> String {
        match self {
            MqttPayload::Raw => format!("clutch/{id}/raw/{protocol}"),
            MqttPayload::Json => format!("clutch/{id}/telemetry"),
        }
    }
}

/// When an MQTT device deletes records from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MqttAck {
    /// On the broker's PUBACK (the broker has the message; the records may not be stored).
    #[default]
    Puback,
    /// On the server's message on `clutch/<id>/ack`, published once the records are
    /// durable. Raw frames whose protocol acks nothing fall back to the PUBACK.
    Durable,
}

/// How a device talks to an MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MqttSettings {
    pub ack: MqttAck,
    /// CONNECT user name; `{id}` is replaced by the device id. Default: the device id,
    /// when a secret is given.
    pub username: Option<String>,
    /// CONNECT password; `{id}` is replaced by the device id (a per-device secret
    /// pattern such as `secret-{id}`).
    pub secret: Option<String>,
}

impl MqttSettings {
    /// The CONNECT credentials of device `id`, if any.
    pub fn credentials(&self, id: &str) -> Option<(String, String)> {
        let fill = |s: &str| s.replace("{id}", id);
        match (&self.username, &self.secret) {
            (None, None) => None,
            (u, s) => Some((
                u.as_deref().map_or_else(|| id.to_owned(), fill),
                s.as_deref().map(fill).unwrap_or_default(),
            )),
        }
    }
}

pub fn ack_topic(id: &str) -> String {
    format!("clutch/{id}/ack")
}

pub fn commands_topic(id: &str) -> String {
    format!("clutch/{id}/commands")
}

pub fn responses_topic(id: &str) -> String {
    format!("clutch/{id}/responses")
}

/// A telemetry publish.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Telemetry<P> {
    pub id: String,
    /// Per device, increasing by one with every telemetry publish (resends included),
    /// across reconnects.
    pub seq: u64,
    /// `clutch decode` position objects.
    pub positions: Vec<P>,
}

/// What the server publishes on `clutch/<id>/ack` for a telemetry publish once its
/// records are durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableAck {
    pub seq: u64,
    pub records: u64,
}

/// A downlink command on `clutch/<id>/commands`. `id` is the server's command id, any
/// JSON value (a number or a string), echoed back in the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub id: serde_json::Value,
    pub command: protocols::Command,
}

/// The device's answer on `clutch/<id>/responses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandReply {
    pub id: serde_json::Value,
    pub result: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_json_is_the_protocols_command() {
        let r: CommandRequest =
            serde_json::from_str(r#"{"id": 17, "command": {"type": "set_interval", "seconds": 30}}"#).unwrap();
        assert_eq!(r.command, protocols::Command::SetInterval { seconds: 30 });
        let reply = CommandReply {
            id: r.id,
            result: "OK".into(),
        };
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"id":17,"result":"OK"}"#);
    }

    #[test]
    fn credentials_fill_the_id() {
        let s = MqttSettings {
            secret: Some("s3cret-{id}".into()),
            ..MqttSettings::default()
        };
        assert_eq!(s.credentials("123"), Some(("123".into(), "s3cret-123".into())));
        assert_eq!(MqttSettings::default().credentials("123"), None);
        let s = MqttSettings {
            username: Some("fleet".into()),
            secret: Some("pw".into()),
            ..MqttSettings::default()
        };
        assert_eq!(s.credentials("9"), Some(("fleet".into(), "pw".into())));
    }
}
