//! Just enough MQTT 3.1.1 for a device that publishes: CONNECT/CONNACK, PUBLISH at QoS 1
//! and its PUBACK, PINGREQ/PINGRESP.
//!
//! Hand-rolled rather than a client crate because the device loop owns its socket and its
//! ack bookkeeping (send, wait for exactly these bytes, resend on timeout) for every
//! protocol; a QoS 1 PUBACK is just one more ack of known bytes. Topics follow the Clutch
//! layout: `clutch/<id>/raw/<protocol>` carries the protocol's own frame bytes and
//! `clutch/<id>/telemetry` carries the positions as JSON.

/// What a device publishes over MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MqttPayload {
    /// The protocol's frame, to `clutch/<id>/raw/<protocol>`.
    Raw,
    /// The positions as JSON, to `clutch/<id>/telemetry`.
    Json,
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&s[..s.len().min(u16::MAX as usize)]);
}

/// CONNECT with a clean session.
pub fn connect(client_id: &str, keep_alive_s: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + client_id.len());
    push_str(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    push_str(&mut body, client_id.as_bytes());
    let mut out = vec![0x10];
    push_varint(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// CONNACK accepting a clean session.
pub const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const PINGRESP: [u8; 2] = [0xD0, 0x00];

/// PUBLISH at QoS 1 (`dup` on a resend).
pub fn publish(topic: &str, pid: u16, payload: &[u8], dup: bool) -> Vec<u8> {
    let mut out = vec![if dup { 0x3A } else { 0x32 }];
    push_varint(&mut out, 2 + topic.len() + 2 + payload.len());
    push_str(&mut out, topic.as_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn puback(pid: u16) -> [u8; 4] {
    let p = pid.to_be_bytes();
    [0x40, 0x02, p[0], p[1]]
}

/// One whole packet at the start of `buf`: (first byte, body range end, body start).
/// `None` when incomplete; `Some(Err)` for a length that is not MQTT.
#[allow(clippy::type_complexity)]
pub fn packet(buf: &[u8]) -> Option<Result<(u8, usize, usize), ()>> {
    let first = *buf.first()?;
    let mut len = 0usize;
    let mut mult = 1usize;
    for i in 1..=4 {
        let b = *buf.get(i)?;
        len += usize::from(b & 0x7F) * mult;
        mult *= 128;
        if b & 0x80 == 0 {
            let start = i + 1;
            return if buf.len() >= start + len {
                Some(Ok((first, start + len, start)))
            } else {
                None
            };
        }
    }
    Some(Err(()))
}

/// A PUBLISH body: topic, packet id (QoS > 0), payload.
pub fn parse_publish(first: u8, body: &[u8]) -> Option<(String, Option<u16>, Vec<u8>)> {
    let tlen = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = String::from_utf8(body.get(2..2 + tlen)?.to_vec()).ok()?;
    let qos = (first >> 1) & 3;
    let mut at = 2 + tlen;
    let pid = if qos > 0 {
        let p = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
        at += 2;
        Some(p)
    } else {
        None
    };
    Some((topic, pid, body.get(at..)?.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trip() {
        let big = vec![7u8; 300];
        let p = publish("clutch/1/raw/gt06", 9, &big, false);
        let Some(Ok((first, end, start))) = packet(&p) else {
            panic!()
        };
        assert_eq!(end, p.len());
        let (topic, pid, payload) = parse_publish(first, &p[start..end]).unwrap();
        assert_eq!((topic.as_str(), pid, payload), ("clutch/1/raw/gt06", Some(9), big));
        assert!(packet(&p[..3]).is_none());
        assert_eq!(packet(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]), Some(Err(())));
    }
}
