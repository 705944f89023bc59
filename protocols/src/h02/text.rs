//! Field helpers shared by the comma-separated text protocols (H02, TK103, GPS103).
//!
//! These decoders follow Traccar's regular expressions field by field without a regex
//! engine: every helper checks the exact character class the pattern allows before
//! converting, so `"1e5"`, `"inf"` or a stray sign never slip through `str::parse`.
//! Dates are built leniently (like `java.util.Calendar`, which Traccar uses): a month 13
//! rolls into the next year instead of failing, so frames Traccar accepts decode here too.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};

use crate::model::{IoMap, IoValue};

/// Bytes that may sit between frames on a text stream.
pub(crate) fn is_filler(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0)
}

pub(crate) fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn all_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Exactly `n` decimal digits.
pub(crate) fn digits_n(s: &str, n: usize) -> bool {
    s.len() == n && all_digits(s)
}

/// A decimal integer that fits in u64 (at most 19 digits, so no overflow).
pub(crate) fn uint(s: &str) -> Option<u64> {
    if !all_digits(s) || s.len() > 19 {
        return None;
    }
    s.parse().ok()
}

/// A hexadecimal integer that fits in u64.
pub(crate) fn hex_uint(s: &str) -> Option<u64> {
    if !all_hex(s) || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// `-?d+`.
pub(crate) fn int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if !all_digits(body) || body.len() > 18 {
        return None;
    }
    let v: i64 = body.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// `d+(.d*)?` — an unsigned decimal as devices print it (`"0"`, `"0.25"`, `"000.80"`, `"4."`).
pub(crate) fn udec(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int_len == 0 || int_len > 15 {
        return None;
    }
    match b.get(int_len) {
        None => {}
        Some(b'.') => {
            let frac = &b[int_len + 1..];
            if frac.len() > 15 || !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
        }
        Some(_) => return None,
    }
    s.parse().ok()
}

/// `[-+]?d+(.d*)?`.
pub(crate) fn sdec(s: &str) -> Option<f64> {
    match s.as_bytes().first() {
        Some(b'-') => udec(&s[1..]).map(|v| -v),
        Some(b'+') => udec(&s[1..]),
        _ => udec(s),
    }
}

/// `d+.d+` — a decimal that must carry a fraction.
pub(crate) fn dec_with_point(s: &str) -> Option<f64> {
    if !s.contains('.') || s.ends_with('.') {
        return None;
    }
    udec(s)
}

/// Two ASCII digits at `s[i..i + 2]`.
pub(crate) fn two(s: &[u8], i: usize) -> Option<i64> {
    match (s.get(i), s.get(i + 1)) {
        (Some(a), Some(b)) if a.is_ascii_digit() && b.is_ascii_digit() => Some(i64::from((a - b'0') * 10 + (b - b'0'))),
        _ => None,
    }
}

/// Six digits `aabbcc` as three numbers.
pub(crate) fn triple(s: &str) -> Option<(i64, i64, i64)> {
    if !digits_n(s, 6) {
        return None;
    }
    let b = s.as_bytes();
    Some((two(b, 0)?, two(b, 2)?, two(b, 4)?))
}

/// A date and time built the way `java.util.Calendar` (lenient) builds it: two-digit
/// years are 20xx, out-of-range months, days, hours, minutes and seconds roll over into
/// the next larger unit. `None` only when the result is outside chrono's range.
pub(crate) fn lenient_datetime(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
) -> Option<DateTime<Utc>> {
    let year = if (0..100).contains(&year) { year + 2000 } else { year };
    let months = year.checked_mul(12)?.checked_add(month.checked_sub(1)?)?;
    let y = i32::try_from(months.div_euclid(12)).ok()?;
    let m = u32::try_from(months.rem_euclid(12) + 1).ok()?;
    let first = NaiveDate::from_ymd_opt(y, m, 1)?;
    let offset = Duration::try_days(day.checked_sub(1)?)?
        .checked_add(&Duration::try_hours(hour)?)?
        .checked_add(&Duration::try_minutes(minute)?)?
        .checked_add(&Duration::try_seconds(second)?)?;
    let naive: NaiveDateTime = first.and_hms_opt(0, 0, 0)?.checked_add_signed(offset)?;
    Some(naive.and_utc())
}

/// The time of day `hh:mm:ss` placed on the day (yesterday, today or tomorrow) that
/// puts it closest to `now`: for frames that carry a time but no usable date.
pub(crate) fn nearest_day(now: DateTime<Utc>, hour: i64, minute: i64, second: i64) -> Option<DateTime<Utc>> {
    let midnight = now.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
    let t = midnight.checked_add_signed(
        Duration::try_hours(hour)?
            .checked_add(&Duration::try_minutes(minute)?)?
            .checked_add(&Duration::try_seconds(second)?)?,
    )?;
    let day = Duration::try_days(1)?;
    let diff = t.signed_duration_since(now);
    if diff > Duration::try_hours(12)? {
        t.checked_sub_signed(day)
    } else if diff < -Duration::try_hours(12)? {
        t.checked_add_signed(day)
    } else {
        Some(t)
    }
}

/// Degrees from degrees + decimal minutes and a hemisphere letter (`S`/`W` negative).
pub(crate) fn dm(degrees: f64, minutes: f64, hemisphere: Option<u8>) -> f64 {
    let v = degrees + minutes / 60.0;
    match hemisphere {
        Some(b'S' | b'W' | b's' | b'w') => -v,
        _ => v,
    }
}

/// `(d*)(dd.d+)`: degrees are whatever digits precede the two minute digits (possibly
/// none). Returns (degrees, minutes).
pub(crate) fn split_deg_min(s: &str, min_degree_digits: usize) -> Option<(f64, f64)> {
    if !s.is_ascii() {
        return None;
    }
    let dot = s.find('.')?;
    if dot < 2 + min_degree_digits || dot + 1 >= s.len() {
        return None;
    }
    let (deg, min) = s.split_at(dot - 2);
    if !deg.bytes().all(|b| b.is_ascii_digit()) || deg.len() > 3 {
        return None;
    }
    if !min.as_bytes()[..2].iter().all(u8::is_ascii_digit) || !min.as_bytes()[3..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let degrees = if deg.is_empty() { 0.0 } else { deg.parse().ok()? };
    Some((degrees, min.parse().ok()?))
}

/// Formats `value` (degrees, sign ignored) as `D…DMM.mmmm` with `deg_width` degree
/// digits and `decimals` minute decimals, carrying a rounded 60' into the degrees.
pub(crate) fn format_deg_min(value: f64, deg_width: usize, decimals: u32) -> String {
    let scale = 10u64.pow(decimals);
    let per_degree = 60 * scale;
    // Saturating float→int cast; coordinates are at most 180° so this never saturates.
    let total = (value.abs() * per_degree as f64).round() as u64;
    let deg = total / per_degree;
    let min = total % per_degree;
    format!(
        "{deg:0dw$}{:02}.{:0dec$}",
        min / scale,
        min % scale,
        dw = deg_width,
        dec = decimals as usize
    )
}

/// Keeps the fields of a frame the decoder has no typed home for.
pub(crate) fn push_text(io: &mut IoMap, name: &str, value: &str) {
    io.push_name(name, IoValue::Text(value.to_owned()));
}

/// The RFC 3339 form used for report times of messages that carry no fix.
pub(crate) fn push_time(io: &mut IoMap, time: DateTime<Utc>) {
    io.push_name(
        "time",
        IoValue::Text(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn lenient_dates_roll_over_like_calendar() {
        let t = |y, mo, d, h, mi, s| lenient_datetime(y, mo, d, h, mi, s).unwrap();
        assert_eq!(
            t(15, 10, 24, 5, 51, 48),
            Utc.with_ymd_and_hms(2015, 10, 24, 5, 51, 48).unwrap()
        );
        assert_eq!(
            t(6, 18, 30, 0, 0, 0),
            Utc.with_ymd_and_hms(2007, 6, 30, 0, 0, 0).unwrap()
        );
        assert_eq!(
            t(0, 0, 0, 0, 0, 0),
            Utc.with_ymd_and_hms(1999, 11, 30, 0, 0, 0).unwrap()
        );
        assert_eq!(
            t(13, 2, 27, 23, 40 - 641, 52),
            Utc.with_ymd_and_hms(2013, 2, 27, 12, 59, 52).unwrap()
        );
    }

    #[test]
    fn numbers_are_strict() {
        assert_eq!(udec("000.80"), Some(0.8));
        assert_eq!(udec("4."), Some(4.0));
        assert_eq!(udec("1e5"), None);
        assert_eq!(udec("inf"), None);
        assert_eq!(udec(""), None);
        assert_eq!(sdec("-0.10"), Some(-0.1));
        assert_eq!(dec_with_point("12"), None);
        assert_eq!(int("+11"), Some(11));
        assert_eq!(hex_uint("FFFFFBFF"), Some(0xFFFF_FBFF));
    }

    #[test]
    fn degree_minutes() {
        assert_eq!(split_deg_min("5238.26259", 0), Some((52.0, 38.26259)));
        assert_eq!(split_deg_min("38.6508", 0), Some((0.0, 38.6508)));
        assert_eq!(split_deg_min("38.6508", 1), None);
        assert_eq!(split_deg_min("2608.9437", 1), Some((26.0, 8.9437)));
        assert_eq!(format_deg_min(-25.92255, 2, 4), "2555.3530");
        assert_eq!(format_deg_min(7.999999999, 3, 4), "00800.0000");
    }
}
