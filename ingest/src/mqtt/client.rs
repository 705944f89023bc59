//! Client mode: read devices from an external broker (Mosquitto, EMQX…) with shared
//! subscriptions, so several `clutch` nodes split the load.
//!
//! Authentication and the topic ACL are the external broker's job here (see the
//! README for a Mosquitto ACL). Incoming QoS 1 messages are PUBACKed by hand, only once
//! durable (or refused as bad input), so a node that dies with messages in flight
//! leaves them unacknowledged for the broker to redeliver to a session that resumes.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::{Core, MqttHandle, Outbound, topics};
use crate::Shared;
use crate::error::{IngestError, Result};

/// `mqtt://[user[:password]@]host[:port]` (also `tcp://`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

pub(crate) fn parse_url(url: &str) -> std::result::Result<BrokerUrl, String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| "expected mqtt://host[:port] (TLS to an external broker is not supported yet)".to_string())?;
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let credentials = userinfo.map(|u| match u.split_once(':') {
        Some((user, pass)) => (user.to_string(), pass.to_string()),
        None => (u.to_string(), String::new()),
    });
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or("unbalanced [ in host")?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = if port.is_empty() {
        1883
    } else {
        port.parse().map_err(|_| format!("bad port {port:?}"))?
    };
    Ok(BrokerUrl {
        host,
        port,
        credentials,
    })
}

pub(crate) async fn start(shared: Arc<Shared>, url: &str) -> Result<MqttHandle> {
    let cfg = shared.config.mqtt.clone();
    let u = parse_url(url).map_err(|e| IngestError::Mqtt(format!("ingest.mqtt.external: {e}")))?;
    let client_id = format!("clutch-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let mut options = MqttOptions::new(client_id.clone(), u.host.clone(), u.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_manual_acks(true)
        .set_max_packet_size(cfg.max_payload_bytes + 1024, cfg.max_payload_bytes + 1024);
    if let Some((user, pass)) = &u.credentials {
        options.set_credentials(user.clone(), pass.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 1024);
    // Client mode cannot see device subscriptions: a device that published in the last
    // ten minutes counts as online for command delivery.
    let core = Core::new(
        shared.clone(),
        Outbound::Client(client.clone()),
        Some(Duration::from_secs(600)),
    );
    let filters: Vec<String> = topics::INGEST_FILTERS
        .iter()
        .map(|f| format!("$share/{}/{f}", cfg.share_group))
        .collect();

    // Fail start-up when the broker cannot be reached at all, rather than retrying
    // silently forever from the first second.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    return if a.code == rumqttc::ConnectReturnCode::Success {
                        Ok(())
                    } else {
                        Err(format!("broker refused the connection: {:?}", a.code))
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| IngestError::Mqtt(format!("no answer from {}:{} within 10 s", u.host, u.port)))?;
    first.map_err(|e| IngestError::Mqtt(format!("connecting to {}:{}: {e}", u.host, u.port)))?;
    for f in &filters {
        client
            .subscribe(f.clone(), QoS::AtLeastOnce)
            .await
            .map_err(|e| IngestError::Mqtt(e.to_string()))?;
    }

    let cancel = shared.cancel.clone();
    let loop_core = core.clone();
    let host = format!("{}:{}", u.host, u.port);
    shared.tracker.spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = client.disconnect().await;
                    // Let the DISCONNECT go out.
                    let _ = tokio::time::timeout(Duration::from_millis(500), events.poll()).await;
                    return;
                }
                ev = events.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = p.topic.clone();
                    let payload = p.payload.clone();
                    loop_core.message(&topic, payload, Some(p)).await;
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    MqttHandle::set_connected(&loop_core, true);
                    // A clean session forgets subscriptions: renew them after a reconnect.
                    tracing::info!(broker = host, "connected to the external MQTT broker");
                    for f in &filters {
                        let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    MqttHandle::set_connected(&loop_core, false);
                    tracing::warn!(broker = host, %error, "external MQTT broker connection lost; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    });
    tracing::info!(broker = %format!("{}:{}", u.host, u.port), client_id, "reading MQTT from an external broker");
    let mut h = core.handle();
    h.external = Some(format!("{}:{}", u.host, u.port));
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        assert_eq!(
            parse_url("mqtt://u:p@host:1884").unwrap(),
            BrokerUrl {
                host: "host".into(),
                port: 1884,
                credentials: Some(("u".into(), "p".into()))
            }
        );
        assert_eq!(parse_url("tcp://127.0.0.1").unwrap().port, 1883);
        assert_eq!(parse_url("mqtt://[::1]:99").unwrap().host, "::1");
        assert!(parse_url("mqtts://h").is_err());
        assert!(parse_url("mqtt://h:x").is_err());
        assert!(parse_url("mqtt://").is_err());
    }
}
