//! OBD-II (SAE J1979) shared by every protocol that carries engine data, and by the
//! simulator that has to produce it.
//!
//! What this module owns:
//! - the **mode 01 PID table** ([`spec`], [`PIDS`]): name, data length, unit, range,
//!   resolution and the J1979 formula of each PID we know;
//! - **PID values**: raw data bytes → typed [`PidValue`] ([`decode_pid`]) and back
//!   ([`encode_pid`], used by the simulator), a multi-PID mode 01 payload decoder
//!   ([`decode_mode01`]), and the mapping of a value onto the typed [`Attributes`]
//!   ([`apply`], [`apply_raw`] which also keeps the raw bytes in `io`);
//! - **DTCs** (modes 03 / 07 / 0A): the two-byte code ↔ `P0301` text ([`Dtc`]), response
//!   payload decoding with the CAN count byte and `0000` padding handled
//!   ([`decode_dtc_response`]) and encoding ([`encode_dtc_response`]);
//! - **ELM327 response text** ([`parse_elm`], [`elm_pid`], [`elm_pid_values`], [`elm_dtcs`]):
//!   prompts, `SEARCHING...`, status words (`NO DATA`, `?`, `CAN ERROR`…) as typed errors,
//!   headers off or on (11-bit `7E8 03 41 0D 32`, 29-bit `18 DA F1 10 …`, legacy
//!   J1850/ISO 9141 `48 6B 10 … cs`), ISO-TP multi-frame reassembly in both the
//!   headers-on (`10 14 …`/`21 …`) and the headers-off (`014` / `0: …`) forms; and
//!   [`format_elm`], the inverse, for the simulator.
//!
//! Everything here is pure and total: no input panics, lengths are checked before use.
//! Descriptions of generic DTCs are not here (the DTC operator owns them).

use std::fmt;
use std::str::FromStr;

use crate::error::DecodeError;
use crate::model::{Attributes, IoKey, IoValue};

/// Errors from OBD value, DTC and ELM327 handling.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObdError {
    #[error("unknown mode 01 PID 0x{0:02X}")]
    UnknownPid(u8),
    #[error("PID 0x{pid:02X} needs {expected} data bytes, {actual} given")]
    Length { pid: u8, expected: usize, actual: usize },
    #[error("value {value} is outside the range of PID 0x{pid:02X}")]
    OutOfRange { pid: u8, value: f64 },
    #[error("PID 0x{pid:02X} does not take this kind of value")]
    ValueKind { pid: u8 },
    #[error("invalid DTC {0:?} (expected a letter P/C/B/U, a digit 0-3 and three hex digits)")]
    InvalidDtc(String),
    #[error("not a {expected} response: service byte 0x{actual:02X}")]
    UnexpectedService { expected: &'static str, actual: u8 },
    #[error("negative response to service 0x{service:02X}: code 0x{code:02X}")]
    Negative { service: u8, code: u8 },
    /// `NO DATA`: the vehicle did not answer (PID unsupported or ignition off).
    #[error("NO DATA")]
    NoData,
    /// `?`: the adapter did not understand the command.
    #[error("adapter did not understand the command (?)")]
    UnknownCommand,
    /// An ELM327 status word such as `UNABLE TO CONNECT`, `CAN ERROR`, `BUFFER FULL`.
    #[error("adapter reported {0:?}")]
    Adapter(String),
    #[error("malformed response line {0:?}")]
    Syntax(String),
    /// A multi-frame response ended before its announced length.
    #[error("incomplete multi-frame response: {got} of {expected} bytes")]
    Incomplete { expected: usize, got: usize },
    /// The response had no answer for what was asked.
    #[error("no response for {0}")]
    NotInResponse(String),
    #[error("payload of {0} bytes is too long for ISO-TP (max 4095)")]
    TooLong(usize),
}

impl From<ObdError> for DecodeError {
    fn from(e: ObdError) -> Self {
        DecodeError::Invalid {
            field: "obd",
            reason: e.to_string(),
            excerpt: String::new(),
        }
    }
}

/// Physical unit of a PID value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Percent,
    Celsius,
    Kpa,
    Rpm,
    Kmh,
    GramsPerSecond,
    Seconds,
    Minutes,
    Km,
    Volts,
    LitresPerHour,
    Degrees,
    NewtonMetres,
    Count,
    /// Bit fields (supported-PID maps, monitor status).
    Bits,
}

impl Unit {
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::Celsius => "°C",
            Unit::Kpa => "kPa",
            Unit::Rpm => "rpm",
            Unit::Kmh => "km/h",
            Unit::GramsPerSecond => "g/s",
            Unit::Seconds => "s",
            Unit::Minutes => "min",
            Unit::Km => "km",
            Unit::Volts => "V",
            Unit::LitresPerHour => "L/h",
            Unit::Degrees => "°",
            Unit::NewtonMetres => "N·m",
            Unit::Count => "",
            Unit::Bits => "",
        }
    }
}

/// The J1979 formulas, written over `raw` = the data bytes read as one big-endian integer
/// (so `256A+B` is just `raw` for a two-byte PID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Formula {
    /// A·100/255 (and (256A+B)·100/255 for PID 43).
    Percent,
    /// A − 40
    Temp,
    /// A, or 256A+B
    Raw,
    /// 3A
    Times3,
    /// (256A+B)/4
    Quarter,
    /// raw / n
    Div(u32),
    /// A/2 − 64
    Timing,
    /// A − 125
    Torque,
    /// (A − 128)·100/128
    FuelTrim,
    /// A bit 7 = MIL, bits 0-6 = DTC count; B-D monitor readiness.
    MonitorStatus,
    /// Bit map of the next 32 PIDs.
    Supported,
}

/// One mode 01 PID as J1979 defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct PidSpec {
    pub pid: u8,
    pub name: &'static str,
    /// Number of data bytes after the PID byte.
    pub bytes: u8,
    pub unit: Unit,
    /// Smallest and largest value the encoding can carry, in `unit`.
    pub min: f64,
    pub max: f64,
    /// Value of one least significant bit, in `unit` (0 for bit fields).
    pub resolution: f64,
    formula: Formula,
}

impl PidSpec {
    /// Whether the value is a number (false for bit maps and monitor status).
    pub fn is_numeric(&self) -> bool {
        !matches!(self.formula, Formula::MonitorStatus | Formula::Supported)
    }

    fn to_value(&self, raw: u32) -> PidValue {
        let r = f64::from(raw);
        let v = match self.formula {
            Formula::Percent => r * 100.0 / 255.0,
            Formula::Temp => r - 40.0,
            Formula::Raw => r,
            Formula::Times3 => r * 3.0,
            Formula::Quarter => r / 4.0,
            Formula::Div(n) => r / f64::from(n),
            Formula::Timing => r / 2.0 - 64.0,
            Formula::Torque => r - 125.0,
            Formula::FuelTrim => (r - 128.0) * 100.0 / 128.0,
            Formula::MonitorStatus => return PidValue::MonitorStatus(MonitorStatus::from_raw(raw.to_be_bytes())),
            Formula::Supported => return PidValue::Supported(raw),
        };
        PidValue::Number(v)
    }

    fn to_raw(&self, v: f64) -> Option<f64> {
        Some(match self.formula {
            Formula::Percent => v * 255.0 / 100.0,
            Formula::Temp => v + 40.0,
            Formula::Raw => v,
            Formula::Times3 => v / 3.0,
            Formula::Quarter => v * 4.0,
            Formula::Div(n) => v * f64::from(n),
            Formula::Timing => (v + 64.0) * 2.0,
            Formula::Torque => v + 125.0,
            Formula::FuelTrim => v * 128.0 / 100.0 + 128.0,
            Formula::MonitorStatus | Formula::Supported => return None,
        })
    }
}

const P: f64 = 100.0 / 255.0;

macro_rules! pid {
    ($pid:expr, $name:expr, $bytes:expr, $unit:ident, $min:expr, $max:expr, $res:expr, $f:expr) => {
        PidSpec {
            pid: $pid,
            name: $name,
            bytes: $bytes,
            unit: Unit::$unit,
            min: $min,
            max: $max,
            resolution: $res,
            formula: $f,
        }
    };
}

/// The mode 01 PIDs we decode, sorted by PID.
#[rustfmt::skip]
pub static PIDS: &[PidSpec] = &[
    pid!(0x00, "PIDs supported [01-20]", 4, Bits, 0.0, 0.0, 0.0, Formula::Supported),
    pid!(0x01, "Monitor status since DTCs cleared", 4, Bits, 0.0, 0.0, 0.0, Formula::MonitorStatus),
    pid!(0x04, "Calculated engine load", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x05, "Engine coolant temperature", 1, Celsius, -40.0, 215.0, 1.0, Formula::Temp),
    pid!(0x06, "Short term fuel trim, bank 1", 1, Percent, -100.0, 99.21875, 0.78125, Formula::FuelTrim),
    pid!(0x07, "Long term fuel trim, bank 1", 1, Percent, -100.0, 99.21875, 0.78125, Formula::FuelTrim),
    pid!(0x08, "Short term fuel trim, bank 2", 1, Percent, -100.0, 99.21875, 0.78125, Formula::FuelTrim),
    pid!(0x09, "Long term fuel trim, bank 2", 1, Percent, -100.0, 99.21875, 0.78125, Formula::FuelTrim),
    pid!(0x0A, "Fuel pressure (gauge)", 1, Kpa, 0.0, 765.0, 3.0, Formula::Times3),
    pid!(0x0B, "Intake manifold absolute pressure", 1, Kpa, 0.0, 255.0, 1.0, Formula::Raw),
    pid!(0x0C, "Engine speed", 2, Rpm, 0.0, 16383.75, 0.25, Formula::Quarter),
    pid!(0x0D, "Vehicle speed", 1, Kmh, 0.0, 255.0, 1.0, Formula::Raw),
    pid!(0x0E, "Timing advance", 1, Degrees, -64.0, 63.5, 0.5, Formula::Timing),
    pid!(0x0F, "Intake air temperature", 1, Celsius, -40.0, 215.0, 1.0, Formula::Temp),
    pid!(0x10, "Mass air flow rate", 2, GramsPerSecond, 0.0, 655.35, 0.01, Formula::Div(100)),
    pid!(0x11, "Throttle position", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x1F, "Run time since engine start", 2, Seconds, 0.0, 65535.0, 1.0, Formula::Raw),
    pid!(0x20, "PIDs supported [21-40]", 4, Bits, 0.0, 0.0, 0.0, Formula::Supported),
    pid!(0x21, "Distance traveled with MIL on", 2, Km, 0.0, 65535.0, 1.0, Formula::Raw),
    pid!(0x2C, "Commanded EGR", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x2F, "Fuel tank level input", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x30, "Warm-ups since codes cleared", 1, Count, 0.0, 255.0, 1.0, Formula::Raw),
    pid!(0x31, "Distance traveled since codes cleared", 2, Km, 0.0, 65535.0, 1.0, Formula::Raw),
    pid!(0x33, "Absolute barometric pressure", 1, Kpa, 0.0, 255.0, 1.0, Formula::Raw),
    pid!(0x40, "PIDs supported [41-60]", 4, Bits, 0.0, 0.0, 0.0, Formula::Supported),
    pid!(0x42, "Control module voltage", 2, Volts, 0.0, 65.535, 0.001, Formula::Div(1000)),
    pid!(0x43, "Absolute load value", 2, Percent, 0.0, 25700.0, P, Formula::Percent),
    pid!(0x45, "Relative throttle position", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x46, "Ambient air temperature", 1, Celsius, -40.0, 215.0, 1.0, Formula::Temp),
    pid!(0x47, "Absolute throttle position B", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x49, "Accelerator pedal position D", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x4A, "Accelerator pedal position E", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x4C, "Commanded throttle actuator", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x4D, "Time run with MIL on", 2, Minutes, 0.0, 65535.0, 1.0, Formula::Raw),
    pid!(0x4E, "Time since trouble codes cleared", 2, Minutes, 0.0, 65535.0, 1.0, Formula::Raw),
    pid!(0x52, "Ethanol fuel percentage", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x5A, "Relative accelerator pedal position", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x5B, "Hybrid battery pack remaining life", 1, Percent, 0.0, 100.0, P, Formula::Percent),
    pid!(0x5C, "Engine oil temperature", 1, Celsius, -40.0, 215.0, 1.0, Formula::Temp),
    pid!(0x5E, "Engine fuel rate", 2, LitresPerHour, 0.0, 3276.75, 0.05, Formula::Div(20)),
    pid!(0x60, "PIDs supported [61-80]", 4, Bits, 0.0, 0.0, 0.0, Formula::Supported),
    pid!(0x61, "Driver's demand engine percent torque", 1, Percent, -125.0, 130.0, 1.0, Formula::Torque),
    pid!(0x62, "Actual engine percent torque", 1, Percent, -125.0, 130.0, 1.0, Formula::Torque),
    pid!(0x63, "Engine reference torque", 2, NewtonMetres, 0.0, 65535.0, 1.0, Formula::Raw),
    pid!(0x80, "PIDs supported [81-A0]", 4, Bits, 0.0, 0.0, 0.0, Formula::Supported),
    pid!(0xA0, "PIDs supported [A1-C0]", 4, Bits, 0.0, 0.0, 0.0, Formula::Supported),
    pid!(0xA6, "Odometer", 4, Km, 0.0, 429_496_729.5, 0.1, Formula::Div(10)),
    pid!(0xC0, "PIDs supported [C1-E0]", 4, Bits, 0.0, 0.0, 0.0, Formula::Supported),
];

/// The J1979 definition of a mode 01 PID, if we know it.
pub fn spec(pid: u8) -> Option<&'static PidSpec> {
    PIDS.binary_search_by_key(&pid, |s| s.pid)
        .ok()
        .and_then(|i| PIDS.get(i))
}

/// PID 01 byte A-D: malfunction indicator lamp, stored emission DTC count, readiness bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorStatus {
    /// MIL (check engine lamp) on.
    pub mil: bool,
    /// Number of emission-related DTCs stored (0-127).
    pub dtc_count: u8,
    /// The four data bytes as sent (byte A repeats `mil` and `dtc_count`).
    pub raw: [u8; 4],
}

impl MonitorStatus {
    pub fn from_raw(raw: [u8; 4]) -> Self {
        MonitorStatus {
            mil: raw[0] & 0x80 != 0,
            dtc_count: raw[0] & 0x7F,
            raw,
        }
    }

    fn to_raw(self) -> [u8; 4] {
        let mut raw = self.raw;
        raw[0] = (u8::from(self.mil) << 7) | (self.dtc_count & 0x7F);
        raw
    }
}

/// A decoded mode 01 value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PidValue {
    /// A physical value in the PID's [`PidSpec::unit`].
    Number(f64),
    MonitorStatus(MonitorStatus),
    /// Supported-PID bit map (PIDs 00, 20, 40, …): bit 31 = next PID.
    Supported(u32),
}

impl PidValue {
    pub fn as_f64(self) -> Option<f64> {
        match self {
            PidValue::Number(v) => Some(v),
            _ => None,
        }
    }
}

fn be(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
}

/// Decode the data bytes of mode 01 `pid` (the bytes after `41 <pid>`). Extra trailing
/// bytes (CAN padding) are ignored.
pub fn decode_pid(pid: u8, data: &[u8]) -> Result<PidValue, ObdError> {
    let spec = spec(pid).ok_or(ObdError::UnknownPid(pid))?;
    let n = usize::from(spec.bytes);
    let bytes = data.get(..n).ok_or(ObdError::Length {
        pid,
        expected: n,
        actual: data.len(),
    })?;
    Ok(spec.to_value(be(bytes)))
}

/// Encode a value of mode 01 `pid` into its data bytes (what an ECU puts after `41 <pid>`).
/// Numbers are rounded to the nearest step; values outside the PID's range are refused.
pub fn encode_pid(pid: u8, value: &PidValue) -> Result<Vec<u8>, ObdError> {
    let spec = spec(pid).ok_or(ObdError::UnknownPid(pid))?;
    let n = usize::from(spec.bytes);
    let raw: u32 = match (*value, spec.formula) {
        (PidValue::Number(v), _) => {
            let r = spec.to_raw(v).ok_or(ObdError::ValueKind { pid })?;
            let max = if n >= 4 {
                f64::from(u32::MAX)
            } else {
                f64::from((1u32 << (8 * n)) - 1)
            };
            let r = r.round();
            // NaN fails both comparisons' negation, so it is refused here too.
            if !(r >= 0.0 && r <= max) {
                return Err(ObdError::OutOfRange { pid, value: v });
            }
            r as u32
        }
        (PidValue::MonitorStatus(m), Formula::MonitorStatus) => u32::from_be_bytes(m.to_raw()),
        (PidValue::Supported(bits), Formula::Supported) => bits,
        _ => return Err(ObdError::ValueKind { pid }),
    };
    let all = raw.to_be_bytes();
    Ok(all.get(4 - n..).unwrap_or(&all).to_vec())
}

/// Decode a whole mode 01 response payload (`41 0C 1A F8 0D 32 …`): CAN ECUs answer a
/// request for several PIDs in one message, PID after PID.
pub fn decode_mode01(payload: &[u8]) -> Result<Vec<(u8, PidValue)>, ObdError> {
    let (&service, mut rest) = payload.split_first().ok_or(ObdError::NotInResponse("mode 01".into()))?;
    if service == 0x7F {
        return Err(negative(rest));
    }
    if service != 0x41 {
        return Err(ObdError::UnexpectedService {
            expected: "mode 01",
            actual: service,
        });
    }
    let mut out = Vec::with_capacity(rest.len() / 2);
    while let Some((&pid, tail)) = rest.split_first() {
        let spec = spec(pid).ok_or(ObdError::UnknownPid(pid))?;
        let n = usize::from(spec.bytes);
        let data = tail.get(..n).ok_or(ObdError::Length {
            pid,
            expected: n,
            actual: tail.len(),
        })?;
        out.push((pid, spec.to_value(be(data))));
        rest = tail.get(n..).unwrap_or_default();
    }
    if out.is_empty() {
        return Err(ObdError::NotInResponse("mode 01 PID".into()));
    }
    Ok(out)
}

/// Build a mode 01 response payload `41 <pid> <data>` (simulator side).
pub fn encode_mode01(values: &[(u8, PidValue)]) -> Result<Vec<u8>, ObdError> {
    let mut out = Vec::with_capacity(1 + values.len() * 5);
    out.push(0x41);
    for (pid, v) in values {
        out.push(*pid);
        out.extend_from_slice(&encode_pid(*pid, v)?);
    }
    Ok(out)
}

fn negative(rest: &[u8]) -> ObdError {
    ObdError::Negative {
        service: rest.first().copied().unwrap_or(0),
        code: rest.get(1).copied().unwrap_or(0),
    }
}

/// Put a decoded value on its typed attribute. Returns false when the PID has no typed
/// home (the caller keeps it in `io` only). Units follow the attribute names: odometer
/// PID A6 (km) becomes metres, module voltage (PID 42) becomes `power_v`.
pub fn apply(attrs: &mut Attributes, pid: u8, value: &PidValue) -> bool {
    let PidValue::Number(v) = *value else {
        return false;
    };
    if !v.is_finite() {
        return false;
    }
    let slot = match pid {
        0x04 => &mut attrs.engine_load_pct,
        0x05 => &mut attrs.coolant_c,
        0x0B => &mut attrs.map_kpa,
        0x0C => &mut attrs.rpm,
        0x0D => &mut attrs.obd_speed_kmh,
        0x0F => &mut attrs.intake_temp_c,
        0x10 => &mut attrs.maf_gs,
        0x11 => &mut attrs.throttle_pct,
        0x1F => &mut attrs.run_time_s,
        0x21 => &mut attrs.distance_mil_on_km,
        0x2F => &mut attrs.fuel_level_pct,
        0x31 => &mut attrs.distance_since_clear_km,
        0x42 => &mut attrs.power_v,
        0x46 => &mut attrs.ambient_c,
        0x5C => &mut attrs.oil_temp_c,
        0x5E => &mut attrs.fuel_rate_lph,
        0xA6 => {
            attrs.odometer_m = Some(v * 1000.0);
            return true;
        }
        _ => return false,
    };
    *slot = Some(v);
    true
}

/// Decode `data` for `pid`, set the typed attribute, and keep the raw data bytes in
/// `attrs.io` under `key` (the caller's naming: an IO id or a field name).
pub fn apply_raw(attrs: &mut Attributes, key: IoKey, pid: u8, data: &[u8]) -> Result<PidValue, ObdError> {
    let value = decode_pid(pid, data)?;
    apply(attrs, pid, &value);
    let n = spec(pid).map_or(data.len(), |s| usize::from(s.bytes));
    attrs
        .io
        .0
        .push((key, IoValue::Bytes(data.get(..n).unwrap_or(data).to_vec())));
    Ok(value)
}

// ---------------------------------------------------------------------------------------
// DTCs
// ---------------------------------------------------------------------------------------

/// A diagnostic trouble code as its two wire bytes; shown as `P0301`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dtc(pub u16);

impl Dtc {
    /// `P` powertrain, `C` chassis, `B` body, `U` network.
    pub fn system(self) -> char {
        match self.0 >> 14 {
            0 => 'P',
            1 => 'C',
            2 => 'B',
            _ => 'U',
        }
    }

    /// The text form (`P0301`).
    pub fn code(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Dtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:03X}", self.system(), (self.0 >> 12) & 0x3, self.0 & 0x0FFF)
    }
}

impl FromStr for Dtc {
    type Err = ObdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ObdError::InvalidDtc(s.to_owned());
        let b = s.trim().as_bytes();
        let [sys, d1, rest @ ..] = b else { return Err(bad()) };
        if rest.len() != 3 {
            return Err(bad());
        }
        let sys: u16 = match sys.to_ascii_uppercase() {
            b'P' => 0,
            b'C' => 1,
            b'B' => 2,
            b'U' => 3,
            _ => return Err(bad()),
        };
        let d1 = match d1 {
            b'0'..=b'3' => u16::from(d1 - b'0'),
            _ => return Err(bad()),
        };
        let mut low = 0u16;
        for c in rest {
            let v = (*c as char).to_digit(16).ok_or_else(bad)?;
            low = (low << 4) | v as u16;
        }
        Ok(Dtc((sys << 14) | (d1 << 12) | low))
    }
}

/// The three DTC services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtcMode {
    /// Mode 03: stored (confirmed) codes.
    Stored,
    /// Mode 07: pending codes.
    Pending,
    /// Mode 0A: permanent codes.
    Permanent,
}

impl DtcMode {
    pub fn request(self) -> u8 {
        match self {
            DtcMode::Stored => 0x03,
            DtcMode::Pending => 0x07,
            DtcMode::Permanent => 0x0A,
        }
    }
    pub fn response(self) -> u8 {
        self.request() | 0x40
    }
    pub fn from_response(service: u8) -> Option<Self> {
        match service {
            0x43 => Some(DtcMode::Stored),
            0x47 => Some(DtcMode::Pending),
            0x4A => Some(DtcMode::Permanent),
            _ => None,
        }
    }
}

/// Codes from a run of 2-byte pairs, `0000` padding skipped (an odd last byte is ignored).
pub fn decode_dtcs(data: &[u8]) -> Vec<Dtc> {
    data.chunks_exact(2)
        .map(|c| Dtc(u16::from_be_bytes([c[0], c[1]])))
        .filter(|d| d.0 != 0)
        .collect()
}

/// Decode a mode 03/07/0A response payload (starting with `43`/`47`/`4A`).
///
/// CAN ECUs put a count byte after the service byte (`43 02 03 01 01 33`); the legacy
/// buses send exactly three codes per frame with no count (`43 03 01 01 33 00 00`).
/// `can` says which when known; `None` decides from the length (a count byte makes it
/// odd).
pub fn decode_dtc_response(payload: &[u8], can: Option<bool>) -> Result<(DtcMode, Vec<Dtc>), ObdError> {
    let (&service, rest) = payload
        .split_first()
        .ok_or(ObdError::NotInResponse("DTC request".into()))?;
    if service == 0x7F {
        return Err(negative(rest));
    }
    let mode = DtcMode::from_response(service).ok_or(ObdError::UnexpectedService {
        expected: "DTC",
        actual: service,
    })?;
    let has_count = can.unwrap_or(!rest.len().is_multiple_of(2));
    if has_count {
        let (&count, codes) = rest.split_first().unwrap_or((&0, &[]));
        let mut dtcs = decode_dtcs(codes);
        dtcs.truncate(usize::from(count));
        Ok((mode, dtcs))
    } else {
        Ok((mode, decode_dtcs(rest)))
    }
}

/// Encode DTC response payloads, one per bus message: a single message with a count byte
/// for CAN, three codes per message (padded with `0000`) for the legacy buses.
pub fn encode_dtc_response(mode: DtcMode, dtcs: &[Dtc], can: bool) -> Vec<Vec<u8>> {
    if can {
        let mut m = Vec::with_capacity(2 + dtcs.len() * 2);
        m.push(mode.response());
        m.push(u8::try_from(dtcs.len()).unwrap_or(u8::MAX));
        for d in dtcs.iter().take(usize::from(u8::MAX)) {
            m.extend_from_slice(&d.0.to_be_bytes());
        }
        return vec![m];
    }
    if dtcs.is_empty() {
        return vec![vec![mode.response(), 0, 0, 0, 0, 0, 0]];
    }
    dtcs.chunks(3)
        .map(|chunk| {
            let mut m = Vec::with_capacity(7);
            m.push(mode.response());
            for i in 0..3 {
                m.extend_from_slice(&chunk.get(i).map_or(0, |d| d.0).to_be_bytes());
            }
            m
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// ELM327 text
// ---------------------------------------------------------------------------------------

/// One message from one ECU, with the bus framing removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcuMessage {
    /// The CAN id (`0x7E8`, `0x18DAF110`) or legacy header bytes when headers are on.
    pub header: Option<u32>,
    /// The service payload, e.g. `[0x41, 0x0D, 0x32]`.
    pub data: Vec<u8>,
    /// Whether the framing showed this came over CAN (decides the DTC count byte).
    pub can: Option<bool>,
}

fn is_response_service(b: u8) -> bool {
    (0x41..=0x4A).contains(&b) || b == 0x7F
}

fn hex_pairs(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks_exact(2) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out.push((hi * 16 + lo) as u8);
    }
    Some(out)
}

fn hex_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// What one line of adapter output is.
enum Line {
    Skip,
    Status(ObdError),
    /// Headers-off CAN multi-frame byte count (`014`).
    ByteCount(usize),
    /// Headers-off CAN multi-frame segment (`0: 49 02 01 …`).
    Segment(Vec<u8>),
    /// A CAN frame with its id; the bytes start with the ISO-TP PCI byte.
    Can(u32, Vec<u8>),
    /// A whole message (headers off, or legacy bus with header and checksum removed).
    Plain(Option<u32>, Vec<u8>),
}

fn status_word(line: &str) -> Option<Line> {
    let u = line.to_ascii_uppercase();
    let u = u.trim();
    if u.starts_with("SEARCHING") || u == "OK" || u.starts_with("BUS INIT") && !u.contains("ERROR") {
        return Some(Line::Skip);
    }
    if u == "NO DATA" || u == "NODATA" {
        return Some(Line::Status(ObdError::NoData));
    }
    if u == "?" {
        return Some(Line::Status(ObdError::UnknownCommand));
    }
    const WORDS: [&str; 16] = [
        "UNABLE TO CONNECT",
        "CAN ERROR",
        "BUS ERROR",
        "BUS BUSY",
        "BUS INIT",
        "FB ERROR",
        "DATA ERROR",
        "<DATA ERROR",
        "<RX ERROR",
        "RX ERROR",
        "BUFFER FULL",
        "STOPPED",
        "ACT ALERT",
        "LV RESET",
        "LP ALERT",
        "ERR",
    ];
    if WORDS.iter().any(|w| u.starts_with(w)) {
        return Some(Line::Status(ObdError::Adapter(u.to_owned())));
    }
    None
}

fn classify(line: &str) -> Result<Line, ObdError> {
    if let Some(s) = status_word(line) {
        return Ok(s);
    }
    let syntax = || ObdError::Syntax(line.chars().take(64).collect());
    // Headers-off multi-frame segment: one hex digit and a colon.
    if let Some((idx, rest)) = line.split_once(':') {
        let idx = idx.trim();
        if idx.len() != 1 || !idx.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(syntax());
        }
        let compact: String = rest.split_whitespace().collect();
        return hex_pairs(&compact).map(Line::Segment).ok_or_else(syntax);
    }
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let spaced = tokens.len() > 1;
    let compact: String = tokens.concat();
    if !compact.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(syntax());
    }
    // Byte count of a headers-off multi-frame response.
    if compact.len() == 3 && !spaced {
        return Ok(Line::ByteCount(
            usize::from_str_radix(&compact, 16).map_err(|_| syntax())?,
        ));
    }
    // 11-bit CAN id: three hex digits in front.
    let first_len = tokens.first().map_or(0, |t| t.len());
    if (spaced && first_len == 3) || (!spaced && !compact.len().is_multiple_of(2) && compact.len() >= 5) {
        let (id, rest) = compact.split_at(3);
        let id = hex_u32(id).ok_or_else(syntax)?;
        return Ok(Line::Can(id, hex_pairs(rest).ok_or_else(syntax)?));
    }
    if spaced && tokens.iter().any(|t| t.len() != 2) {
        return Err(syntax());
    }
    let bytes = hex_pairs(&compact).ok_or_else(syntax)?;
    // 29-bit CAN id: 18 DA F1 xx (physical response) or 18 DB …; then PCI and data.
    if let [0x18, b1 @ (0xDA | 0xDB), b2, b3, frame @ ..] = bytes.as_slice()
        && frame.first().is_some_and(|pci| pci >> 4 <= 3)
    {
        let id = u32::from_be_bytes([0x18, *b1, *b2, *b3]);
        return Ok(Line::Can(id, frame.to_vec()));
    }
    // Legacy bus with headers on: priority, target (6B for J1850/ISO 9141, F1 for KWP),
    // source, then the message and a checksum byte.
    if let [h0, h1 @ (0x6B | 0xF1), h2, body @ .., _cs] = bytes.as_slice()
        && body.first().is_some_and(|s| is_response_service(*s))
    {
        let header = u32::from_be_bytes([0, *h0, *h1, *h2]);
        return Ok(Line::Plain(Some(header), body.to_vec()));
    }
    match bytes.first() {
        Some(first) if is_response_service(*first) => Ok(Line::Plain(None, bytes)),
        // The echo of the request (ATE1), e.g. `010C`.
        Some(first) if *first < 0x40 => Ok(Line::Skip),
        _ => Err(syntax()),
    }
}

struct IsoTp {
    header: u32,
    len: usize,
    data: Vec<u8>,
    next_seq: u8,
}

/// Parse ELM327 output (one command's response, prompt included or not) into the
/// messages of each ECU that answered. When nothing answered, the adapter's status
/// (`NO DATA`, `?`, `UNABLE TO CONNECT`…) is the error.
pub fn parse_elm(text: &str) -> Result<Vec<EcuMessage>, ObdError> {
    let mut out: Vec<EcuMessage> = Vec::new();
    let mut status: Option<ObdError> = None;
    let mut isotp: Vec<IsoTp> = Vec::new();
    // Headers-off multi-frame: announced length (None until the count line) and bytes.
    let mut segments: Option<(Option<usize>, Vec<u8>)> = None;
    let mut incomplete: Option<ObdError> = None;

    for raw in text.split(['\r', '\n']) {
        let line = raw.trim_matches(|c: char| c == '>' || c.is_whitespace() || c == '\0');
        if line.is_empty() {
            continue;
        }
        match classify(line)? {
            Line::Skip => {}
            Line::Status(e) => {
                status.get_or_insert(e);
            }
            Line::ByteCount(n) => {
                if let Some((Some(want), got)) = segments.take() {
                    incomplete = Some(ObdError::Incomplete {
                        expected: want,
                        got: got.len(),
                    });
                }
                segments = Some((Some(n), Vec::with_capacity(n.min(4095))));
            }
            Line::Segment(bytes) => {
                let (want, buf) = segments.get_or_insert_with(|| (None, Vec::new()));
                buf.extend_from_slice(&bytes);
                if let Some(w) = *want
                    && buf.len() >= w
                {
                    buf.truncate(w);
                    let data = std::mem::take(buf);
                    segments = None;
                    out.push(EcuMessage {
                        header: None,
                        data,
                        can: Some(true),
                    });
                }
            }
            Line::Plain(header, data) => out.push(EcuMessage {
                header,
                data,
                can: header.map(|_| false),
            }),
            Line::Can(id, frame) => {
                let syntax = || ObdError::Syntax(line.chars().take(64).collect());
                let (&pci, rest) = frame.split_first().ok_or_else(syntax)?;
                match pci >> 4 {
                    0 => {
                        let n = usize::from(pci & 0x0F);
                        let data = rest.get(..n).ok_or_else(syntax)?.to_vec();
                        out.push(EcuMessage {
                            header: Some(id),
                            data,
                            can: Some(true),
                        });
                    }
                    1 => {
                        let (&lo, first) = rest.split_first().ok_or_else(syntax)?;
                        let len = (usize::from(pci & 0x0F) << 8) | usize::from(lo);
                        isotp.retain(|t| t.header != id);
                        let mut data = Vec::with_capacity(len);
                        data.extend_from_slice(first.get(..len.min(first.len())).unwrap_or_default());
                        isotp.push(IsoTp {
                            header: id,
                            len,
                            data,
                            next_seq: 1,
                        });
                    }
                    2 => {
                        let seq = pci & 0x0F;
                        let Some(pos) = isotp.iter().position(|t| t.header == id) else {
                            return Err(syntax());
                        };
                        let t = isotp.get_mut(pos).ok_or_else(syntax)?;
                        if seq != t.next_seq {
                            return Err(syntax());
                        }
                        t.next_seq = (seq + 1) & 0x0F;
                        t.data.extend_from_slice(rest);
                        if t.data.len() >= t.len {
                            let mut done = isotp.swap_remove(pos);
                            done.data.truncate(done.len);
                            out.push(EcuMessage {
                                header: Some(id),
                                data: done.data,
                                can: Some(true),
                            });
                        }
                    }
                    // Flow control frames are the tester's; ignore them if echoed.
                    3 => {}
                    _ => return Err(syntax()),
                }
            }
        }
    }
    match segments {
        Some((None, data)) if !data.is_empty() => out.push(EcuMessage {
            header: None,
            data,
            can: Some(true),
        }),
        Some((Some(want), got)) => {
            incomplete.get_or_insert(ObdError::Incomplete {
                expected: want,
                got: got.len(),
            });
        }
        _ => {}
    }
    if let Some(t) = isotp.first() {
        incomplete.get_or_insert(ObdError::Incomplete {
            expected: t.len,
            got: t.data.len(),
        });
    }
    if out.is_empty() {
        return Err(incomplete.or(status).unwrap_or(ObdError::NoData));
    }
    Ok(out)
}

/// Every mode 01 value in an ELM327 response, with the ECU header when shown.
pub fn elm_pid_values(text: &str) -> Result<Vec<(Option<u32>, u8, PidValue)>, ObdError> {
    let msgs = parse_elm(text)?;
    let mut out = Vec::new();
    let mut negative_reply = None;
    for m in &msgs {
        match m.data.first() {
            Some(0x41) => {
                for (pid, v) in decode_mode01(&m.data)? {
                    out.push((m.header, pid, v));
                }
            }
            Some(0x7F) => negative_reply = Some(negative(m.data.get(1..).unwrap_or_default())),
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(negative_reply.unwrap_or(ObdError::NotInResponse("mode 01".into())));
    }
    Ok(out)
}

/// The value of `pid` from an ELM327 response to `01 <pid>` (the first ECU that has it).
pub fn elm_pid(text: &str, pid: u8) -> Result<PidValue, ObdError> {
    elm_pid_values(text)?
        .into_iter()
        .find(|(_, p, _)| *p == pid)
        .map(|(_, _, v)| v)
        .ok_or_else(|| ObdError::NotInResponse(format!("PID 0x{pid:02X}")))
}

/// The DTCs in an ELM327 response to `03`, `07` or `0A`, from every ECU, without
/// duplicates, in the order received. `NO DATA` to a DTC request is an error here; the
/// caller decides whether it means "no codes".
pub fn elm_dtcs(text: &str) -> Result<Vec<Dtc>, ObdError> {
    let msgs = parse_elm(text)?;
    let mut out: Vec<Dtc> = Vec::new();
    let mut seen_response = false;
    let mut negative_reply = None;
    for m in &msgs {
        match m.data.first() {
            Some(0x43 | 0x47 | 0x4A) => {
                seen_response = true;
                let (_, dtcs) = decode_dtc_response(&m.data, m.can)?;
                for d in dtcs {
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
            }
            Some(0x7F) => negative_reply = Some(negative(m.data.get(1..).unwrap_or_default())),
            _ => {}
        }
    }
    if !seen_response {
        return Err(negative_reply.unwrap_or(ObdError::NotInResponse("DTC request".into())));
    }
    Ok(out)
}

/// Render a response payload the way an ELM327 prints it (CAN, auto-formatting on),
/// ending with the `>` prompt: with `header` (headers on) as ISO-TP frames
/// (`7E8 03 41 0D 32`), without it as `41 0D 32` or the `014` / `0: …` multi-frame form.
pub fn format_elm(data: &[u8], header: Option<u16>) -> Result<String, ObdError> {
    use std::fmt::Write;
    if data.len() > 4095 {
        return Err(ObdError::TooLong(data.len()));
    }
    let mut s = String::with_capacity(data.len() * 4 + 16);
    let bytes = |s: &mut String, b: &[u8]| {
        for x in b {
            let _ = write!(s, " {x:02X}");
        }
    };
    match header {
        Some(id) => {
            let id = id & 0x7FF;
            if data.len() <= 7 {
                let _ = write!(s, "{id:03X} {:02X}", data.len());
                bytes(&mut s, data);
                s.push('\r');
            } else {
                let (first, rest) = data.split_at(6);
                let _ = write!(s, "{id:03X} 1{:X} {:02X}", data.len() >> 8, data.len() & 0xFF);
                bytes(&mut s, first);
                s.push('\r');
                for (i, chunk) in rest.chunks(7).enumerate() {
                    let _ = write!(s, "{id:03X} 2{:X}", (i + 1) & 0x0F);
                    bytes(&mut s, chunk);
                    s.push('\r');
                }
            }
        }
        None => {
            if data.len() <= 7 {
                let mut line = String::with_capacity(data.len() * 3);
                bytes(&mut line, data);
                s.push_str(line.trim_start());
                s.push('\r');
            } else {
                let _ = write!(s, "{:03X}\r", data.len());
                let (first, rest) = data.split_at(6);
                s.push_str("0:");
                bytes(&mut s, first);
                s.push('\r');
                for (i, chunk) in rest.chunks(7).enumerate() {
                    let _ = write!(s, "{:X}:", (i + 1) & 0x0F);
                    bytes(&mut s, chunk);
                    s.push('\r');
                }
            }
        }
    }
    s.push_str("\r>");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_consistent() {
        for w in PIDS.windows(2) {
            assert!(w[0].pid < w[1].pid, "PIDS not sorted at {:02X}", w[1].pid);
        }
        for s in PIDS {
            assert!((1..=4).contains(&s.bytes));
            assert_eq!(spec(s.pid).map(|x| x.pid), Some(s.pid));
        }
    }

    #[test]
    fn j1979_examples() {
        assert_eq!(decode_pid(0x0C, &[0x1A, 0xF8]), Ok(PidValue::Number(1726.0)));
        assert_eq!(decode_pid(0x0D, &[0x32]), Ok(PidValue::Number(50.0)));
        assert_eq!(decode_pid(0x05, &[0x7B]), Ok(PidValue::Number(83.0)));
        assert_eq!(decode_pid(0x42, &[0x36, 0xB0]), Ok(PidValue::Number(14.0)));
        assert_eq!(decode_pid(0xA6, &[0, 0x01, 0xE2, 0x40]), Ok(PidValue::Number(12345.6)));
        assert_eq!(decode_pid(0x0E, &[0x00]), Ok(PidValue::Number(-64.0)));
        assert_eq!(
            decode_pid(0x0C, &[0x1A]),
            Err(ObdError::Length {
                pid: 0x0C,
                expected: 2,
                actual: 1
            })
        );
        assert_eq!(decode_pid(0x02, &[0]), Err(ObdError::UnknownPid(0x02)));
        let PidValue::MonitorStatus(m) = decode_pid(0x01, &[0x83, 0x07, 0x65, 0x04]).unwrap() else {
            panic!("monitor status")
        };
        assert!(m.mil);
        assert_eq!(m.dtc_count, 3);
    }

    #[test]
    fn encode_refuses_out_of_range() {
        assert!(matches!(
            encode_pid(0x0D, &PidValue::Number(300.0)),
            Err(ObdError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode_pid(0x0D, &PidValue::Number(f64::NAN)),
            Err(ObdError::OutOfRange { .. })
        ));
        assert_eq!(encode_pid(0x05, &PidValue::Number(-40.0)), Ok(vec![0]));
        assert_eq!(encode_pid(0x0C, &PidValue::Number(1726.0)), Ok(vec![0x1A, 0xF8]));
        assert_eq!(
            encode_pid(0x00, &PidValue::Number(1.0)),
            Err(ObdError::ValueKind { pid: 0 })
        );
    }

    #[test]
    fn apply_sets_typed_attributes() {
        let mut a = Attributes::default();
        assert!(apply(&mut a, 0xA6, &PidValue::Number(12.5)));
        assert_eq!(a.odometer_m, Some(12500.0));
        assert!(apply(&mut a, 0x42, &PidValue::Number(13.8)));
        assert_eq!(a.power_v, Some(13.8));
        assert!(!apply(&mut a, 0x33, &PidValue::Number(101.0)));
        let v = apply_raw(&mut a, IoKey::Name("pid_0c".into()), 0x0C, &[0x1A, 0xF8, 0xAA]).unwrap();
        assert_eq!(v, PidValue::Number(1726.0));
        assert_eq!(a.rpm, Some(1726.0));
        assert_eq!(a.io.get_name("pid_0c"), Some(&IoValue::Bytes(vec![0x1A, 0xF8])));
    }

    #[test]
    fn dtc_text() {
        assert_eq!(Dtc(0x0301).to_string(), "P0301");
        assert_eq!(Dtc(0x4123).to_string(), "C0123");
        assert_eq!(Dtc(0x9234).to_string(), "B1234");
        assert_eq!(Dtc(0xC15A).to_string(), "U015A");
        assert_eq!("P0301".parse::<Dtc>(), Ok(Dtc(0x0301)));
        assert_eq!("u015a".parse::<Dtc>(), Ok(Dtc(0xC15A)));
        assert!("P4301".parse::<Dtc>().is_err());
        assert!("X0301".parse::<Dtc>().is_err());
        assert!("P030".parse::<Dtc>().is_err());
        assert!("P03G1".parse::<Dtc>().is_err());
        assert!("".parse::<Dtc>().is_err());
    }

    #[test]
    fn dtc_responses() {
        // CAN: count byte.
        let (mode, d) = decode_dtc_response(&[0x43, 0x02, 0x03, 0x01, 0x01, 0x33], Some(true)).unwrap();
        assert_eq!(mode, DtcMode::Stored);
        assert_eq!(d, vec![Dtc(0x0301), Dtc(0x0133)]);
        // Legacy: three codes, padded.
        let (_, d) = decode_dtc_response(&[0x43, 0x03, 0x01, 0x00, 0x00, 0x00, 0x00], None).unwrap();
        assert_eq!(d, vec![Dtc(0x0301)]);
        // Auto: odd length means a count byte.
        let (mode, d) = decode_dtc_response(&[0x47, 0x01, 0x03, 0x01], None).unwrap();
        assert_eq!(mode, DtcMode::Pending);
        assert_eq!(d, vec![Dtc(0x0301)]);
        let (_, d) = decode_dtc_response(&[0x4A, 0x00], None).unwrap();
        assert!(d.is_empty());
        assert!(decode_dtc_response(&[0x41, 0x00], None).is_err());
        assert_eq!(
            encode_dtc_response(DtcMode::Stored, &[Dtc(0x0301)], false),
            vec![vec![0x43, 0x03, 0x01, 0, 0, 0, 0]]
        );
        assert_eq!(
            encode_dtc_response(DtcMode::Stored, &[Dtc(0x0301)], true),
            vec![vec![0x43, 0x01, 0x03, 0x01]]
        );
    }

    #[test]
    fn elm_plain_and_prompt() {
        assert_eq!(elm_pid("41 0C 1A F8 \r\r>", 0x0C), Ok(PidValue::Number(1726.0)));
        assert_eq!(elm_pid("010C\r410C1AF8\r\r>", 0x0C), Ok(PidValue::Number(1726.0)));
        assert_eq!(elm_pid("SEARCHING...\r41 0D 32\r\r>", 0x0D), Ok(PidValue::Number(50.0)));
        assert_eq!(elm_pid("NO DATA\r\r>", 0x0D), Err(ObdError::NoData));
        assert_eq!(elm_pid("?\r\r>", 0x0D), Err(ObdError::UnknownCommand));
        assert_eq!(
            elm_pid("SEARCHING...\rUNABLE TO CONNECT\r\r>", 0x0D),
            Err(ObdError::Adapter("UNABLE TO CONNECT".into()))
        );
        assert_eq!(elm_pid(">", 0x0D), Err(ObdError::NoData));
        assert!(matches!(elm_pid("41 0C ZZ", 0x0C), Err(ObdError::Syntax(_))));
        assert_eq!(
            elm_pid("7F 01 12\r\r>", 0x0C),
            Err(ObdError::Negative {
                service: 0x01,
                code: 0x12
            })
        );
    }

    #[test]
    fn elm_headers_on() {
        assert_eq!(elm_pid("7E8 03 41 0D 32\r\r>", 0x0D), Ok(PidValue::Number(50.0)));
        assert_eq!(elm_pid("7E803410D32\r>", 0x0D), Ok(PidValue::Number(50.0)));
        assert_eq!(elm_pid("18 DA F1 10 03 41 0D 32\r>", 0x0D), Ok(PidValue::Number(50.0)));
        // Two ECUs.
        let v = elm_pid_values("7E8 03 41 0D 32\r7E9 03 41 0D 33\r\r>").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1], (Some(0x7E9), 0x0D, PidValue::Number(51.0)));
        // Legacy J1850 with header and checksum.
        assert_eq!(elm_pid("48 6B 10 41 0D 32 C4\r>", 0x0D), Ok(PidValue::Number(50.0)));
        // Several PIDs in one CAN answer.
        let v = elm_pid_values("7E8 06 41 0C 1A F8 0D 32\r>").unwrap();
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn elm_multi_frame() {
        let vin_off = "014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 35\r2: 42 31 32 33 34 35 36\r\r>";
        let m = parse_elm(vin_off).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(&m[0].data[..3], &[0x49, 0x02, 0x01]);
        assert_eq!(&m[0].data[3..], b"1D4GP00R55B123456");
        let vin_on = "7E8 10 14 49 02 01 31 44 34\r7E8 21 47 50 30 30 52 35 35\r7E8 22 42 31 32 33 34 35 36\r\r>";
        let m = parse_elm(vin_on).unwrap();
        assert_eq!(m[0].header, Some(0x7E8));
        assert_eq!(&m[0].data[3..], b"1D4GP00R55B123456");
        assert!(matches!(
            parse_elm("7E8 10 14 49 02 01 31 44 34\r>"),
            Err(ObdError::Incomplete { expected: 20, got: 6 })
        ));
        assert!(matches!(parse_elm("7E8 22 42 31\r>"), Err(ObdError::Syntax(_))));
    }

    #[test]
    fn elm_dtc_lists() {
        assert_eq!(elm_dtcs("43 01 33 00 00 00 00\r>"), Ok(vec![Dtc(0x0133)]));
        assert_eq!(
            elm_dtcs("7E8 06 43 02 03 01 01 33\r>"),
            Ok(vec![Dtc(0x0301), Dtc(0x0133)])
        );
        assert_eq!(elm_dtcs("43 00\r>"), Ok(vec![]));
        assert_eq!(
            elm_dtcs("00A\r0: 43 04 01 08 01 09\r1: 01 11 01 15 00 00 00\r>"),
            Ok(vec![Dtc(0x0108), Dtc(0x0109), Dtc(0x0111), Dtc(0x0115)])
        );
    }

    #[test]
    fn format_then_parse() {
        let data: Vec<u8> = (0..20).collect();
        let mut d = vec![0x49, 0x02];
        d.extend_from_slice(&data);
        for h in [None, Some(0x7E8)] {
            let text = format_elm(&d, h).unwrap();
            let m = parse_elm(&text).unwrap();
            assert_eq!(m.len(), 1, "{text:?}");
            assert_eq!(m[0].data, d, "{text:?}");
        }
        assert_eq!(format_elm(&[0x41, 0x0D, 0x32], None).unwrap(), "41 0D 32\r\r>");
        assert_eq!(
            format_elm(&[0x41, 0x0D, 0x32], Some(0x7E8)).unwrap(),
            "7E8 03 41 0D 32\r\r>"
        );
    }
}
