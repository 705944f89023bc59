//! The normalised records every protocol decodes into.
//!
//! Units are fixed here once so no caller ever guesses: UTC times, degrees, km/h,
//! metres, litres, volts, °C. Values a protocol cannot express stay `None`; what the
//! device sent that has no typed home is kept in [`Attributes::io`] so nothing is lost.

use chrono::{DateTime, Utc};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// What a decoded message is, in the `clutch decode` contract's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Login,
    Position,
    Heartbeat,
    Alarm,
    Obd,
    CommandResponse,
    Other,
}

impl MessageKind {
    pub const ALL: [MessageKind; 7] = [
        MessageKind::Login,
        MessageKind::Position,
        MessageKind::Heartbeat,
        MessageKind::Alarm,
        MessageKind::Obd,
        MessageKind::CommandResponse,
        MessageKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Login => "login",
            MessageKind::Position => "position",
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::Alarm => "alarm",
            MessageKind::Obd => "obd",
            MessageKind::CommandResponse => "command_response",
            MessageKind::Other => "other",
        }
    }
}

/// One decoded unit of meaning from a frame. A frame yields one or more messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub kind: MessageKind,
    /// The device identifier when the frame (or the session's login) carries it:
    /// an IMEI for most trackers, a vendor id for some (H02, Freematics, OsmAnd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    /// The protocol's own name for the message type (`"8E"`, `"GTFRI"`, `"BR00"`, `"0x12"`),
    /// kept for logs and for debugging a device integration.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    /// Zero or more fixes. A login or heartbeat usually has none.
    pub positions: Vec<Position>,
    /// Message-level values that belong to no fix (a heartbeat's battery, a login's
    /// firmware version, a command response's raw fields).
    #[serde(skip_serializing_if = "Attributes::is_empty")]
    pub attributes: Attributes,
    /// Text of a command response, when this is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Bytes the server must send back once this message is durable. `None` when the
    /// protocol sends nothing for it. Shown as `ack_hex` (and `ack_text` when printable).
    #[serde(skip)]
    pub ack: Option<Vec<u8>>,
}

impl Message {
    pub fn new(kind: MessageKind) -> Self {
        Message {
            kind,
            imei: None,
            message_type: None,
            positions: Vec::new(),
            attributes: Attributes::default(),
            result: None,
            ack: None,
        }
    }

    pub fn with_imei(mut self, imei: impl Into<String>) -> Self {
        self.imei = Some(imei.into());
        self
    }

    pub fn with_type(mut self, t: impl Into<String>) -> Self {
        self.message_type = Some(t.into());
        self
    }

    pub fn with_ack(mut self, ack: Vec<u8>) -> Self {
        self.ack = Some(ack);
        self
    }

    pub fn with_positions(mut self, positions: Vec<Position>) -> Self {
        self.positions = positions;
        self
    }
}

/// One fix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Position {
    /// Fix time, UTC.
    pub time: DateTime<Utc>,
    /// Degrees, WGS84, north positive.
    pub latitude: f64,
    /// Degrees, WGS84, east positive.
    pub longitude: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub altitude_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub course_deg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub satellites: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdop: Option<f64>,
    /// Whether the device says this is a real GNSS fix (not last-known or cell-based).
    pub valid: bool,
    pub attributes: Attributes,
}

impl Position {
    /// A fix with only time and coordinates; the rest filled in by the decoder.
    pub fn new(time: DateTime<Utc>, latitude: f64, longitude: f64, valid: bool) -> Self {
        Position {
            time,
            latitude,
            longitude,
            altitude_m: None,
            speed_kmh: None,
            course_deg: None,
            satellites: None,
            hdop: None,
            valid,
            attributes: Attributes::default(),
        }
    }
}

/// Conversion used by protocols that report knots.
pub const KMH_PER_KNOT: f64 = 1.852;

/// Alarms a device can raise, named once for every protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alarm {
    General,
    Sos,
    Overspeed,
    LowSpeed,
    HardAcceleration,
    HardBraking,
    HardCornering,
    Accident,
    Vibration,
    Movement,
    Tow,
    Idle,
    PowerCut,
    PowerRestored,
    PowerOn,
    PowerOff,
    LowBattery,
    LowPower,
    GeofenceEnter,
    GeofenceExit,
    Geofence,
    Jamming,
    Tampering,
    Removing,
    Door,
    Temperature,
    Fatigue,
    FallDown,
    GpsAntennaCut,
    FuelLeak,
    Fault,
    /// A vendor alarm code with no common name, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

/// A raw value as the device sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum IoValue {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Text(String),
    /// Opaque bytes; shown as lower-case hex.
    Bytes(Vec<u8>),
}

impl Serialize for IoValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IoValue::U64(v) => s.serialize_u64(*v),
            IoValue::I64(v) => s.serialize_i64(*v),
            IoValue::F64(v) => s.serialize_f64(*v),
            IoValue::Bool(v) => s.serialize_bool(*v),
            IoValue::Text(v) => s.serialize_str(v),
            IoValue::Bytes(v) => s.serialize_str(&hex::encode(v)),
        }
    }
}

/// The key of a raw value: a numeric IO element id (Teltonika, Ruptela, Meitrack…) or a
/// protocol field name (text protocols).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IoKey {
    Id(u32),
    Name(String),
}

impl std::fmt::Display for IoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoKey::Id(id) => write!(f, "{id}"),
            IoKey::Name(n) => f.write_str(n),
        }
    }
}

/// The raw IO map, in the order the device sent it. A `Vec` rather than a map: it is
/// built once per record on the hot path and read rarely, and keeping wire order
/// helps debugging. Serialised as a JSON object (`{"239": 1}`); a key sent twice keeps
/// both entries here and the last one in JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IoMap(pub Vec<(IoKey, IoValue)>);

impl IoMap {
    pub fn with_capacity(n: usize) -> Self {
        IoMap(Vec::with_capacity(n))
    }
    pub fn push_id(&mut self, id: u32, v: IoValue) {
        self.0.push((IoKey::Id(id), v));
    }
    pub fn push_name(&mut self, name: impl Into<String>, v: IoValue) {
        self.0.push((IoKey::Name(name.into()), v));
    }
    pub fn get_id(&self, id: u32) -> Option<&IoValue> {
        self.0.iter().rev().find(|(k, _)| *k == IoKey::Id(id)).map(|(_, v)| v)
    }
    pub fn get_name(&self, name: &str) -> Option<&IoValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, IoKey::Name(n) if n == name))
            .map(|(_, v)| v)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Serialize for IoMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Keep the last value of a repeated key, like a JSON object would.
        let mut seen: Vec<&IoKey> = Vec::with_capacity(self.0.len());
        let mut entries: Vec<(&IoKey, &IoValue)> = Vec::with_capacity(self.0.len());
        for (k, v) in self.0.iter().rev() {
            if !seen.contains(&k) {
                seen.push(k);
                entries.push((k, v));
            }
        }
        entries.reverse();
        let mut m = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            m.serialize_entry(&k.to_string(), v)?;
        }
        m.end()
    }
}

/// Typed common attributes plus the raw IO map. Every protocol maps what it can onto the
/// typed fields (in the units their names give) and also keeps the raw value in `io`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Attributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignition: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motion: Option<bool>,
    /// Total distance, metres (device or vehicle odometer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odometer_m: Option<f64>,
    /// Trip distance, metres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trip_odometer_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_level_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_level_l: Option<f64>,
    /// Cumulative fuel used, litres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_used_l: Option<f64>,
    /// Instant fuel rate, litres per hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_rate_lph: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<f64>,
    /// Vehicle speed from the engine bus (OBD/CAN), km/h.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub obd_speed_kmh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_load_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coolant_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intake_temp_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ambient_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oil_temp_c: Option<f64>,
    /// Intake manifold absolute pressure, kPa.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_kpa: Option<f64>,
    /// Mass air flow, g/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maf_gs: Option<f64>,
    /// Engine run time since start, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_time_s: Option<f64>,
    /// Total engine hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_hours: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_mil_on_km: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_since_clear_km: Option<f64>,
    /// Device (backup) battery, volts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_v: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<f64>,
    /// External / vehicle supply, volts (OBD module voltage lands here too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_v: Option<f64>,
    /// Diagnostic trouble codes, e.g. `P0301`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dtcs: Vec<String>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        rename = "alarm",
        serialize_with = "ser_alarms"
    )]
    pub alarms: Vec<Alarm>,
    /// Accelerometer x, y, z in milli-g.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel_mg: Option<[i32; 3]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<String>,
    /// GSM signal as the device reports it (scale is protocol-specific; see `io`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i32>,
    /// Device event or report code (Meitrack event, Teltonika event IO id…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<u32>,
    /// Everything the device sent, raw, keyed by IO id or field name.
    #[serde(skip_serializing_if = "IoMap::is_empty")]
    pub io: IoMap,
}

fn ser_alarms<S: Serializer>(alarms: &[Alarm], s: S) -> Result<S::Ok, S::Error> {
    // One alarm is by far the common case: a plain string reads better for it.
    if alarms.len() == 1 {
        alarms[0].serialize(s)
    } else {
        alarms.serialize(s)
    }
}

impl Attributes {
    pub fn is_empty(&self) -> bool {
        *self == Attributes::default()
    }

    /// Add an alarm once.
    pub fn raise(&mut self, alarm: Alarm) {
        if !self.alarms.contains(&alarm) {
            self.alarms.push(alarm);
        }
    }
}

/// Commands the server can send to a device (downlink).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Cut the engine (relay on).
    EngineStop,
    /// Allow the engine again (relay off).
    EngineResume,
    /// Ask for a position now.
    Locate,
    /// Set the reporting interval.
    SetInterval {
        seconds: u32,
    },
    /// Reboot the device.
    Reboot,
    /// Switch a digital output (1-based index).
    OutputControl {
        index: u8,
        active: bool,
    },
    /// Arm / disarm the device's alarm.
    AlarmArm,
    AlarmDisarm,
    /// Ask for a photo from an attached camera.
    RequestPhoto,
    /// Protocol-specific text, sent as the protocol wraps free text.
    Custom {
        text: String,
    },
}
