//! The Clutch MQTT topic layout and the per-device ACL, as pure functions.
//!
//! ```text
//! device → server   clutch/<id>/telemetry        JSON positions / OBD
//!                   clutch/<id>/raw/<protocol>   binary frames of a tracker protocol
//!                   clutch/<id>/responses        {"id": <command id>, "result": "..."}
//! server → device   clutch/<id>/ack              durable: protocol ack bytes or {"seq", "records"}
//!                   clutch/<id>/commands         {"id": <command id>, "command": {...}}
//!                   clutch/<id>/commands/raw     the command encoded in the device's protocol
//! ```

use protocols::Protocol;

/// What a device publishes, parsed from its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    Telemetry { id: &'a str },
    Raw { id: &'a str, protocol: Protocol },
    Responses { id: &'a str },
}

/// Why a topic is not one the server reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    NotClutch,
    UnknownProtocol(String),
    Unknown,
}

pub fn parse(topic: &str) -> Result<Inbound<'_>, TopicError> {
    let mut parts = topic.split('/');
    if parts.next() != Some("clutch") {
        return Err(TopicError::NotClutch);
    }
    let id = parts.next().filter(|s| !s.is_empty()).ok_or(TopicError::Unknown)?;
    let kind = parts.next();
    let sub = parts.next();
    if parts.next().is_some() {
        return Err(TopicError::Unknown);
    }
    match (kind, sub) {
        (Some("telemetry"), None) => Ok(Inbound::Telemetry { id }),
        (Some("responses"), None) => Ok(Inbound::Responses { id }),
        (Some("raw"), Some(p)) => p
            .parse::<Protocol>()
            .map(|protocol| Inbound::Raw { id, protocol })
            .map_err(|_| TopicError::UnknownProtocol(p.to_string())),
        _ => Err(TopicError::Unknown),
    }
}

pub fn ack(id: &str) -> String {
    format!("clutch/{id}/ack")
}
pub fn commands(id: &str) -> String {
    format!("clutch/{id}/commands")
}
pub fn commands_raw(id: &str) -> String {
    format!("clutch/{id}/commands/raw")
}

/// The filters the ingest side subscribes to (prefixed with `$share/<group>/` in client
/// mode).
pub const INGEST_FILTERS: [&str; 3] = ["clutch/+/telemetry", "clutch/+/raw/+", "clutch/+/responses"];

/// The device id a topic or filter is about: its second level under `clutch/`.
fn owner(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("clutch/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Whether a device that `owns` ids may publish to `topic`: only under its own
/// `clutch/<id>/`, never to the server's topics there (ack, commands), never a wildcard.
pub fn may_publish(topic: &str, owns: impl Fn(&str) -> bool) -> bool {
    if topic.contains(['+', '#', '\0']) {
        return false;
    }
    let Some(id) = owner(topic) else { return false };
    if !owns(id) {
        return false;
    }
    let rest = &topic["clutch/".len() + id.len()..];
    !(rest == "/ack" || rest == "/commands" || rest.starts_with("/commands/") || rest.starts_with("/ack/"))
}

/// Whether a device may subscribe to `filter`: only below its own `clutch/<id>/` (so
/// `clutch/<id>/#` is fine, `clutch/+/…`, `#` and shared subscriptions are not).
pub fn may_subscribe(filter: &str, owns: impl Fn(&str) -> bool) -> bool {
    match owner(filter) {
        Some(id) if !id.contains(['+', '#']) => owns(id) && filter.len() > "clutch/".len() + id.len(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_layout() {
        assert_eq!(parse("clutch/A/telemetry"), Ok(Inbound::Telemetry { id: "A" }));
        assert_eq!(
            parse("clutch/356307042441013/raw/teltonika"),
            Ok(Inbound::Raw {
                id: "356307042441013",
                protocol: Protocol::Teltonika
            })
        );
        assert_eq!(parse("clutch/A/responses"), Ok(Inbound::Responses { id: "A" }));
        assert_eq!(
            parse("clutch/A/raw/nope"),
            Err(TopicError::UnknownProtocol("nope".into()))
        );
        assert_eq!(parse("clutch//telemetry"), Err(TopicError::Unknown));
        assert_eq!(parse("clutch/A/telemetry/x"), Err(TopicError::Unknown));
        assert_eq!(parse("other/A/telemetry"), Err(TopicError::NotClutch));
    }

    #[test]
    fn acl_keeps_devices_in_their_own_tree() {
        let a = |id: &str| id == "A";
        assert!(may_publish("clutch/A/telemetry", a));
        assert!(may_publish("clutch/A/raw/gt06", a));
        assert!(may_publish("clutch/A/responses", a));
        assert!(!may_publish("clutch/B/telemetry", a));
        assert!(!may_publish("clutch/AB/telemetry", a));
        assert!(!may_publish("clutch/A/ack", a));
        assert!(!may_publish("clutch/A/commands", a));
        assert!(!may_publish("clutch/A/commands/raw", a));
        assert!(!may_publish("elsewhere", a));
        assert!(!may_publish("clutch/+/telemetry", a));

        assert!(may_subscribe("clutch/A/ack", a));
        assert!(may_subscribe("clutch/A/#", a));
        assert!(may_subscribe("clutch/A/commands/+", a));
        assert!(!may_subscribe("clutch/A", a));
        assert!(!may_subscribe("clutch/B/commands", a));
        assert!(!may_subscribe("clutch/+/commands", a));
        assert!(!may_subscribe("clutch/#", a));
        assert!(!may_subscribe("#", a));
        assert!(!may_subscribe("$share/g/clutch/A/ack", a));
    }
}
