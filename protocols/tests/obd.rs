//! Property tests of the OBD-II module: every PID encodes and decodes back within its
//! resolution, every byte pattern decodes and re-encodes to itself, DTC text and ELM327
//! text round-trip, and no input makes the ELM327 parser panic.

use proptest::prelude::*;
use protocols::obd::{self, Dtc, DtcMode, PIDS, PidValue};

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Physical value → bytes → value, for every numeric PID of the table.
    #[test]
    fn value_round_trip(idx in 0..PIDS.len(), t in 0.0f64..=1.0) {
        let spec = &PIDS[idx];
        prop_assume!(spec.is_numeric());
        let v = spec.min + (spec.max - spec.min) * t;
        let bytes = obd::encode_pid(spec.pid, &PidValue::Number(v)).unwrap();
        prop_assert_eq!(bytes.len(), usize::from(spec.bytes));
        let back = obd::decode_pid(spec.pid, &bytes).unwrap().as_f64().unwrap();
        prop_assert!((back - v).abs() <= spec.resolution / 2.0 + 1e-9,
            "PID {:02X}: {} -> {:02X?} -> {}", spec.pid, v, bytes, back);
    }

    /// Bytes → value → bytes is exact for every PID (numeric, bit maps, monitor status).
    #[test]
    fn bytes_round_trip(idx in 0..PIDS.len(), raw in any::<[u8; 4]>()) {
        let spec = &PIDS[idx];
        let data = &raw[..usize::from(spec.bytes)];
        let v = obd::decode_pid(spec.pid, data).unwrap();
        prop_assert_eq!(obd::encode_pid(spec.pid, &v).unwrap(), data.to_vec(), "PID {:02X}", spec.pid);
    }

    #[test]
    fn dtc_round_trip(code in any::<u16>()) {
        let d = Dtc(code);
        let text = d.to_string();
        prop_assert_eq!(text.len(), 5);
        prop_assert_eq!(text.parse::<Dtc>().unwrap(), d);
    }

    #[test]
    fn dtc_responses_round_trip(codes in proptest::collection::vec(1u16..=u16::MAX, 0..20), can in any::<bool>()) {
        let dtcs: Vec<Dtc> = codes.into_iter().map(Dtc).collect();
        for mode in [DtcMode::Stored, DtcMode::Pending, DtcMode::Permanent] {
            let mut got = Vec::new();
            for payload in obd::encode_dtc_response(mode, &dtcs, can) {
                let (m, d) = obd::decode_dtc_response(&payload, Some(can)).unwrap();
                prop_assert_eq!(m, mode);
                got.extend(d);
            }
            prop_assert_eq!(&got, &dtcs);
        }
    }

    /// Simulator-side ELM327 text parses back to the same payload, headers on or off.
    #[test]
    fn elm_text_round_trip(payload in proptest::collection::vec(any::<u8>(), 1..120), header in any::<bool>()) {
        let mut data = vec![0x49, 0x02];
        data.extend(payload);
        let text = obd::format_elm(&data, header.then_some(0x7E8)).unwrap();
        let msgs = obd::parse_elm(&text).unwrap();
        prop_assert_eq!(msgs.len(), 1, "{:?}", text);
        prop_assert_eq!(&msgs[0].data, &data);
    }

    /// Several PIDs in one response, through ELM327 text.
    #[test]
    fn elm_mode01_round_trip(picks in proptest::collection::vec((0..PIDS.len(), any::<[u8; 4]>()), 1..4), header in any::<bool>()) {
        let mut values = Vec::new();
        for (idx, raw) in picks {
            let spec = &PIDS[idx];
            values.push((spec.pid, obd::decode_pid(spec.pid, &raw[..usize::from(spec.bytes)]).unwrap()));
        }
        let payload = obd::encode_mode01(&values).unwrap();
        let text = obd::format_elm(&payload, header.then_some(0x7E8)).unwrap();
        let got: Vec<(u8, PidValue)> = obd::elm_pid_values(&text).unwrap().into_iter().map(|(_, p, v)| (p, v)).collect();
        prop_assert_eq!(got, values);
    }

    #[test]
    fn elm_parser_is_total(text in "[0-9A-Fa-f :>\\r\\n.?NODATSERCHIG]{0,200}") {
        let _ = obd::parse_elm(&text);
        let _ = obd::elm_dtcs(&text);
        let _ = obd::elm_pid(&text, 0x0C);
    }

    #[test]
    fn elm_parser_is_total_on_any_text(text in any::<String>()) {
        let _ = obd::parse_elm(&text);
        let _ = obd::elm_pid_values(&text);
    }

    #[test]
    fn decoders_are_total(pid in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..8)) {
        let _ = obd::decode_pid(pid, &data);
        let _ = obd::decode_mode01(&data);
        let _ = obd::decode_dtc_response(&data, None);
        let _ = obd::encode_pid(pid, &PidValue::Number(f64::from(data.first().copied().unwrap_or(0))));
    }
}

#[test]
fn every_pid_the_brief_names_is_in_the_table() {
    for pid in [
        0x01, 0x04, 0x05, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x1F, 0x21, 0x2F, 0x31, 0x33, 0x42, 0x46,
        0x5A, 0x5C, 0x5E, 0x61, 0x62, 0x63, 0xA6,
    ] {
        assert!(obd::spec(pid).is_some(), "PID {pid:02X} missing");
    }
}
