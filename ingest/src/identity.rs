//! Which identifier a message names its device by, where that is not simply
//! `Message.imei`.
//!
//! Freematics (PROTOCOLS.md §7, protocols/src/freematics.rs): current firmware puts its
//! device id before `#` in every datagram, but old firmware puts a hub "feed id" there —
//! `0` before login, then the id the server's reply assigned (`1` from us, as from
//! Traccar) — and names itself only in its events' `ID=` (or `VIN=`). So an event's
//! `ID`/`VIN` wins over the prefix (as in Traccar), and over UDP the data datagrams of
//! such a device, which carry only the feed id, are matched to it by the address its
//! last event came from ([`FeedIds`]). A bare feed id is never taken for a device: with
//! `register` it would otherwise create a device called `1`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use protocols::{IoValue, Message, Protocol};

/// The identifier `m` names its device by, `None` when it names none.
pub(crate) fn identity(protocol: Protocol, m: &Message) -> Option<String> {
    if protocol == Protocol::Freematics {
        let id = match m.attributes.io.get_name("ID") {
            Some(IoValue::Text(t)) => Some(t.trim().to_owned()),
            Some(IoValue::U64(n)) => Some(n.to_string()),
            _ => None,
        }
        .filter(|t| !t.is_empty());
        if let Some(id) = id.or_else(|| m.attributes.vin.clone().filter(|v| !v.is_empty())) {
            return Some(id);
        }
        return m.imei.clone().filter(|i| !is_feed_id(i));
    }
    m.imei.clone()
}

/// A Freematics hub feed id (what old firmware puts before `#`): a small number.
/// Device ids on current firmware are chip ids such as `ESP32305C06C40A24`.
pub(crate) fn is_feed_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 4 && id.bytes().all(|b| b.is_ascii_digit())
}

/// Old-firmware Freematics peers over UDP: source address → the identity its last event
/// named, for the data datagrams that carry only a feed id.
#[derive(Debug, Default)]
pub(crate) struct FeedIds {
    by_peer: Mutex<HashMap<SocketAddr, (String, Instant)>>,
}

/// A NAT mapping rarely outlives this; the device's next ping (`EV=7` carries `ID`)
/// renews it anyway.
const FEED_ID_TTL: Duration = Duration::from_secs(3600);
const MAX_PEERS: usize = 100_000;

impl FeedIds {
    /// Resolves the identifier of a datagram's messages from `peer`, learning from events
    /// that name their device.
    pub(crate) fn identify(&self, protocol: Protocol, messages: &[Message], peer: SocketAddr) -> Option<String> {
        if protocol != Protocol::Freematics {
            return messages.iter().find_map(|m| m.imei.clone());
        }
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        for m in messages {
            let named = identity(protocol, m);
            if let Some(id) = &named
                && m.imei.as_deref() != Some(id.as_str())
            {
                // An event naming a device other than its prefix: old firmware.
                if by_peer.len() >= MAX_PEERS {
                    by_peer.retain(|_, (_, at)| at.elapsed() < FEED_ID_TTL);
                    if by_peer.len() >= MAX_PEERS {
                        by_peer.clear();
                    }
                }
                by_peer.insert(peer, (id.clone(), Instant::now()));
                return named;
            }
            if m.imei.as_deref().is_some_and(is_feed_id)
                && let Some((id, at)) = by_peer.get(&peer)
                && at.elapsed() < FEED_ID_TTL
            {
                return Some(id.clone());
            }
            if named.is_some() {
                return named;
            }
        }
        None
    }
}
