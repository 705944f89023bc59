//! What simulated devices publish over MQTT, and where. The client itself is `rumqttc`
//! (see [`crate::transport::Link::connect_mqtt`]).

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
