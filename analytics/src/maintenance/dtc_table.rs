//! Descriptions of the generic (SAE J2012 / ISO 15031-6) diagnostic trouble codes, written
//! for this project from the public code definitions. Codes whose second character is 1
//! (and P2/P3 ranges reserved to manufacturers) mean what each maker says; they get the
//! system and subsystem only.

/// The exact generic codes we describe, sorted by code (binary search).
static CODES: &[(&str, &str)] = &[
    ("B0001", "Driver frontal stage 1 deployment control"),
    ("B0002", "Driver frontal stage 2 deployment control"),
    ("B0010", "Passenger frontal stage 1 deployment control"),
    ("B0020", "Left side airbag deployment control"),
    ("B0028", "Right side airbag deployment control"),
    ("B0051", "Deployment commanded"),
    ("B0081", "Occupant classification system fault"),
    ("C0035", "Left front wheel speed sensor circuit"),
    ("C0040", "Right front wheel speed sensor circuit"),
    ("C0045", "Left rear wheel speed sensor circuit"),
    ("C0050", "Right rear wheel speed sensor circuit"),
    ("C0060", "Left front ABS solenoid 1 circuit"),
    ("C0110", "Pump motor circuit"),
    ("C0121", "Valve relay circuit"),
    ("C0161", "ABS/TCS brake switch circuit"),
    ("C0196", "Yaw rate sensor circuit"),
    ("C0455", "Steering wheel position sensor circuit"),
    ("P0010", "Intake camshaft position actuator circuit (bank 1)"),
    (
        "P0011",
        "Intake camshaft position timing over-advanced or system performance (bank 1)",
    ),
    ("P0012", "Intake camshaft position timing over-retarded (bank 1)"),
    ("P0013", "Exhaust camshaft position actuator circuit (bank 1)"),
    (
        "P0014",
        "Exhaust camshaft position timing over-advanced or system performance (bank 1)",
    ),
    (
        "P0016",
        "Crankshaft position / camshaft position correlation (bank 1 sensor A)",
    ),
    (
        "P0017",
        "Crankshaft position / camshaft position correlation (bank 1 sensor B)",
    ),
    ("P0020", "Intake camshaft position actuator circuit (bank 2)"),
    (
        "P0021",
        "Intake camshaft position timing over-advanced or system performance (bank 2)",
    ),
    ("P0030", "HO2S heater control circuit (bank 1 sensor 1)"),
    ("P0036", "HO2S heater control circuit (bank 1 sensor 2)"),
    ("P0087", "Fuel rail / system pressure too low"),
    ("P0088", "Fuel rail / system pressure too high"),
    ("P0090", "Fuel pressure regulator control circuit"),
    ("P0093", "Fuel system leak detected, large leak"),
    ("P0100", "Mass or volume air flow circuit malfunction"),
    ("P0101", "Mass or volume air flow circuit range/performance"),
    ("P0102", "Mass or volume air flow circuit low input"),
    ("P0103", "Mass or volume air flow circuit high input"),
    ("P0104", "Mass or volume air flow circuit intermittent"),
    (
        "P0105",
        "Manifold absolute pressure / barometric pressure circuit malfunction",
    ),
    (
        "P0106",
        "Manifold absolute pressure / barometric pressure circuit range/performance",
    ),
    (
        "P0107",
        "Manifold absolute pressure / barometric pressure circuit low input",
    ),
    (
        "P0108",
        "Manifold absolute pressure / barometric pressure circuit high input",
    ),
    ("P0110", "Intake air temperature circuit malfunction"),
    ("P0111", "Intake air temperature circuit range/performance"),
    ("P0112", "Intake air temperature circuit low input"),
    ("P0113", "Intake air temperature circuit high input"),
    ("P0115", "Engine coolant temperature circuit malfunction"),
    ("P0116", "Engine coolant temperature circuit range/performance"),
    ("P0117", "Engine coolant temperature circuit low input"),
    ("P0118", "Engine coolant temperature circuit high input"),
    ("P0120", "Throttle/pedal position sensor/switch A circuit malfunction"),
    (
        "P0121",
        "Throttle/pedal position sensor/switch A circuit range/performance",
    ),
    ("P0122", "Throttle/pedal position sensor/switch A circuit low input"),
    ("P0123", "Throttle/pedal position sensor/switch A circuit high input"),
    ("P0125", "Insufficient coolant temperature for closed loop fuel control"),
    (
        "P0128",
        "Coolant thermostat (coolant temperature below thermostat regulating temperature)",
    ),
    ("P0130", "O2 sensor circuit malfunction (bank 1 sensor 1)"),
    ("P0131", "O2 sensor circuit low voltage (bank 1 sensor 1)"),
    ("P0132", "O2 sensor circuit high voltage (bank 1 sensor 1)"),
    ("P0133", "O2 sensor circuit slow response (bank 1 sensor 1)"),
    ("P0134", "O2 sensor circuit no activity detected (bank 1 sensor 1)"),
    ("P0135", "O2 sensor heater circuit malfunction (bank 1 sensor 1)"),
    ("P0136", "O2 sensor circuit malfunction (bank 1 sensor 2)"),
    ("P0137", "O2 sensor circuit low voltage (bank 1 sensor 2)"),
    ("P0138", "O2 sensor circuit high voltage (bank 1 sensor 2)"),
    ("P0140", "O2 sensor circuit no activity detected (bank 1 sensor 2)"),
    ("P0141", "O2 sensor heater circuit malfunction (bank 1 sensor 2)"),
    ("P0150", "O2 sensor circuit malfunction (bank 2 sensor 1)"),
    ("P0151", "O2 sensor circuit low voltage (bank 2 sensor 1)"),
    ("P0152", "O2 sensor circuit high voltage (bank 2 sensor 1)"),
    ("P0155", "O2 sensor heater circuit malfunction (bank 2 sensor 1)"),
    ("P0156", "O2 sensor circuit malfunction (bank 2 sensor 2)"),
    ("P0161", "O2 sensor heater circuit malfunction (bank 2 sensor 2)"),
    ("P0169", "Incorrect fuel composition"),
    ("P0170", "Fuel trim malfunction (bank 1)"),
    ("P0171", "System too lean (bank 1)"),
    ("P0172", "System too rich (bank 1)"),
    ("P0173", "Fuel trim malfunction (bank 2)"),
    ("P0174", "System too lean (bank 2)"),
    ("P0175", "System too rich (bank 2)"),
    ("P0176", "Fuel composition sensor circuit malfunction"),
    ("P0180", "Fuel temperature sensor A circuit malfunction"),
    ("P0190", "Fuel rail pressure sensor circuit malfunction"),
    ("P0191", "Fuel rail pressure sensor circuit range/performance"),
    ("P0192", "Fuel rail pressure sensor circuit low input"),
    ("P0193", "Fuel rail pressure sensor circuit high input"),
    ("P0200", "Injector circuit malfunction"),
    ("P0201", "Injector circuit malfunction, cylinder 1"),
    ("P0202", "Injector circuit malfunction, cylinder 2"),
    ("P0203", "Injector circuit malfunction, cylinder 3"),
    ("P0204", "Injector circuit malfunction, cylinder 4"),
    ("P0205", "Injector circuit malfunction, cylinder 5"),
    ("P0206", "Injector circuit malfunction, cylinder 6"),
    ("P0207", "Injector circuit malfunction, cylinder 7"),
    ("P0208", "Injector circuit malfunction, cylinder 8"),
    ("P0217", "Engine overtemperature condition"),
    ("P0218", "Transmission over temperature condition"),
    ("P0219", "Engine overspeed condition"),
    ("P0220", "Throttle/pedal position sensor/switch B circuit malfunction"),
    ("P0230", "Fuel pump primary circuit malfunction"),
    ("P0234", "Engine overboost condition"),
    ("P0235", "Turbocharger boost sensor A circuit malfunction"),
    ("P0299", "Turbocharger/supercharger underboost"),
    ("P0300", "Random/multiple cylinder misfire detected"),
    ("P0301", "Cylinder 1 misfire detected"),
    ("P0302", "Cylinder 2 misfire detected"),
    ("P0303", "Cylinder 3 misfire detected"),
    ("P0304", "Cylinder 4 misfire detected"),
    ("P0305", "Cylinder 5 misfire detected"),
    ("P0306", "Cylinder 6 misfire detected"),
    ("P0307", "Cylinder 7 misfire detected"),
    ("P0308", "Cylinder 8 misfire detected"),
    ("P0309", "Cylinder 9 misfire detected"),
    ("P0310", "Cylinder 10 misfire detected"),
    ("P0311", "Cylinder 11 misfire detected"),
    ("P0312", "Cylinder 12 misfire detected"),
    ("P0313", "Misfire detected with low fuel"),
    ("P0314", "Single cylinder misfire (cylinder not specified)"),
    ("P0320", "Ignition/distributor engine speed input circuit malfunction"),
    ("P0325", "Knock sensor 1 circuit malfunction (bank 1 or single sensor)"),
    (
        "P0326",
        "Knock sensor 1 circuit range/performance (bank 1 or single sensor)",
    ),
    ("P0327", "Knock sensor 1 circuit low input (bank 1 or single sensor)"),
    ("P0328", "Knock sensor 1 circuit high input (bank 1 or single sensor)"),
    ("P0330", "Knock sensor 2 circuit malfunction (bank 2)"),
    ("P0335", "Crankshaft position sensor A circuit malfunction"),
    ("P0336", "Crankshaft position sensor A circuit range/performance"),
    ("P0337", "Crankshaft position sensor A circuit low input"),
    ("P0338", "Crankshaft position sensor A circuit high input"),
    ("P0339", "Crankshaft position sensor A circuit intermittent"),
    ("P0340", "Camshaft position sensor circuit malfunction"),
    ("P0341", "Camshaft position sensor circuit range/performance"),
    ("P0342", "Camshaft position sensor circuit low input"),
    ("P0343", "Camshaft position sensor circuit high input"),
    ("P0350", "Ignition coil primary/secondary circuit malfunction"),
    ("P0351", "Ignition coil A primary/secondary circuit malfunction"),
    ("P0352", "Ignition coil B primary/secondary circuit malfunction"),
    ("P0353", "Ignition coil C primary/secondary circuit malfunction"),
    ("P0354", "Ignition coil D primary/secondary circuit malfunction"),
    ("P0380", "Glow plug/heater circuit A malfunction"),
    ("P0400", "Exhaust gas recirculation flow malfunction"),
    ("P0401", "Exhaust gas recirculation flow insufficient detected"),
    ("P0402", "Exhaust gas recirculation flow excessive detected"),
    ("P0403", "Exhaust gas recirculation circuit malfunction"),
    ("P0404", "Exhaust gas recirculation circuit range/performance"),
    ("P0405", "Exhaust gas recirculation sensor A circuit low"),
    ("P0406", "Exhaust gas recirculation sensor A circuit high"),
    ("P0410", "Secondary air injection system malfunction"),
    ("P0411", "Secondary air injection system incorrect flow detected"),
    ("P0420", "Catalyst system efficiency below threshold (bank 1)"),
    ("P0421", "Warm up catalyst efficiency below threshold (bank 1)"),
    ("P0430", "Catalyst system efficiency below threshold (bank 2)"),
    ("P0440", "Evaporative emission control system malfunction"),
    ("P0441", "Evaporative emission control system incorrect purge flow"),
    (
        "P0442",
        "Evaporative emission control system leak detected (small leak)",
    ),
    (
        "P0443",
        "Evaporative emission control system purge control valve circuit malfunction",
    ),
    (
        "P0446",
        "Evaporative emission control system vent control circuit malfunction",
    ),
    (
        "P0449",
        "Evaporative emission control system vent valve/solenoid circuit malfunction",
    ),
    (
        "P0451",
        "Evaporative emission control system pressure sensor range/performance",
    ),
    ("P0452", "Evaporative emission control system pressure sensor low input"),
    (
        "P0453",
        "Evaporative emission control system pressure sensor high input",
    ),
    (
        "P0455",
        "Evaporative emission control system leak detected (gross leak)",
    ),
    (
        "P0456",
        "Evaporative emission control system leak detected (very small leak)",
    ),
    ("P0460", "Fuel level sensor circuit malfunction"),
    ("P0461", "Fuel level sensor circuit range/performance"),
    ("P0462", "Fuel level sensor circuit low input"),
    ("P0463", "Fuel level sensor circuit high input"),
    ("P0480", "Cooling fan 1 control circuit malfunction"),
    ("P0500", "Vehicle speed sensor malfunction"),
    ("P0501", "Vehicle speed sensor range/performance"),
    ("P0502", "Vehicle speed sensor circuit low input"),
    ("P0503", "Vehicle speed sensor intermittent/erratic/high"),
    ("P0505", "Idle control system malfunction"),
    ("P0506", "Idle control system RPM lower than expected"),
    ("P0507", "Idle control system RPM higher than expected"),
    ("P0520", "Engine oil pressure sensor/switch circuit malfunction"),
    ("P0521", "Engine oil pressure sensor/switch circuit range/performance"),
    ("P0530", "A/C refrigerant pressure sensor circuit malfunction"),
    ("P0560", "System voltage malfunction"),
    ("P0561", "System voltage unstable"),
    ("P0562", "System voltage low"),
    ("P0563", "System voltage high"),
    ("P0571", "Cruise control/brake switch A circuit malfunction"),
    ("P0600", "Serial communication link malfunction"),
    ("P0601", "Internal control module memory check sum error"),
    ("P0602", "Control module programming error"),
    ("P0603", "Internal control module keep alive memory (KAM) error"),
    ("P0604", "Internal control module random access memory (RAM) error"),
    ("P0605", "Internal control module read only memory (ROM) error"),
    ("P0606", "Control module processor fault"),
    ("P0607", "Control module performance"),
    ("P0620", "Generator control circuit malfunction"),
    ("P0627", "Fuel pump control circuit / open"),
    ("P0700", "Transmission control system malfunction (MIL request)"),
    ("P0705", "Transmission range sensor circuit malfunction (PRNDL input)"),
    ("P0706", "Transmission range sensor circuit range/performance"),
    ("P0710", "Transmission fluid temperature sensor circuit malfunction"),
    (
        "P0711",
        "Transmission fluid temperature sensor circuit range/performance",
    ),
    ("P0715", "Input/turbine speed sensor circuit malfunction"),
    ("P0717", "Input/turbine speed sensor circuit no signal"),
    ("P0720", "Output speed sensor circuit malfunction"),
    ("P0725", "Engine speed input circuit malfunction"),
    ("P0730", "Incorrect gear ratio"),
    ("P0731", "Gear 1 incorrect ratio"),
    ("P0732", "Gear 2 incorrect ratio"),
    ("P0733", "Gear 3 incorrect ratio"),
    ("P0734", "Gear 4 incorrect ratio"),
    ("P0735", "Gear 5 incorrect ratio"),
    ("P0740", "Torque converter clutch circuit malfunction"),
    ("P0741", "Torque converter clutch circuit performance or stuck off"),
    ("P0743", "Torque converter clutch circuit electrical"),
    ("P0750", "Shift solenoid A malfunction"),
    ("P0755", "Shift solenoid B malfunction"),
    ("P0760", "Shift solenoid C malfunction"),
    ("P0765", "Shift solenoid D malfunction"),
    ("P0770", "Shift solenoid E malfunction"),
    ("P0780", "Shift malfunction"),
    ("U0001", "High speed CAN communication bus"),
    ("U0073", "Control module communication bus A off"),
    ("U0100", "Lost communication with ECM/PCM A"),
    ("U0101", "Lost communication with TCM"),
    (
        "U0121",
        "Lost communication with anti-lock brake system (ABS) control module",
    ),
    ("U0140", "Lost communication with body control module"),
    ("U0151", "Lost communication with restraints control module"),
    (
        "U0155",
        "Lost communication with instrument panel cluster (IPC) control module",
    ),
];

/// The description of a generic code, or its system and subsystem when the exact code is
/// not in the table (manufacturer-specific codes, rare generic ones). `None` for a string
/// that is not a DTC.
pub fn dtc_description(code: &str) -> Option<String> {
    let code = super::normalize_dtc(code)?;
    if let Ok(i) = CODES.binary_search_by(|(c, _)| c.cmp(&code.as_str())) {
        return Some(CODES[i].1.to_owned());
    }
    let b = code.as_bytes();
    // Second character 0: generic in every system; P2xxx and P34xx–P39xx are generic too.
    let generic = b[1] == b'0' || (b[0] == b'P' && (b[1] == b'2' || (b[1] == b'3' && b[2] >= b'4')));
    let sub = subsystem(b[0], b[2]);
    Some(match (generic, sub) {
        (true, Some(s)) => format!("{} ({}, generic code)", s, dtc_system(&code)?),
        (false, Some(s)) => format!("{} ({}, manufacturer-specific code)", s, dtc_system(&code)?),
        (true, None) => format!("{}, generic code", dtc_system(&code)?),
        (false, None) => format!("{}, manufacturer-specific code", dtc_system(&code)?),
    })
}

/// `powertrain`, `chassis`, `body` or `network` from the first letter.
pub fn dtc_system(code: &str) -> Option<&'static str> {
    match code.trim().as_bytes().first()?.to_ascii_uppercase() {
        b'P' => Some("powertrain"),
        b'C' => Some("chassis"),
        b'B' => Some("body"),
        b'U' => Some("network"),
        _ => None,
    }
}

/// The SAE area of the third character for powertrain codes.
fn subsystem(system: u8, third: u8) -> Option<&'static str> {
    if system != b'P' {
        return None;
    }
    Some(match third {
        b'0' => "Fuel and air metering and auxiliary emission controls",
        b'1' | b'2' => "Fuel and air metering",
        b'3' => "Ignition system or misfire",
        b'4' => "Auxiliary emission controls",
        b'5' => "Vehicle speed, idle control and auxiliary inputs",
        b'6' => "Computer and output circuits",
        b'7' | b'8' | b'9' => "Transmission",
        b'A' | b'B' | b'C' => "Hybrid propulsion",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in CODES.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        for (c, _) in CODES {
            assert_eq!(super::super::normalize_dtc(c).as_deref(), Some(*c));
        }
    }

    #[test]
    fn exact_range_and_unknown() {
        assert_eq!(dtc_description("p0301").unwrap(), "Cylinder 1 misfire detected");
        assert_eq!(
            dtc_description("P0420").unwrap(),
            "Catalyst system efficiency below threshold (bank 1)"
        );
        assert!(dtc_description("P0199").unwrap().starts_with("Fuel and air metering"));
        assert!(dtc_description("P1234").unwrap().contains("manufacturer-specific"));
        assert!(
            dtc_description("P0399")
                .unwrap()
                .starts_with("Ignition system or misfire")
        );
        assert!(dtc_description("P0799").unwrap().starts_with("Transmission"));
        assert_eq!(dtc_description("U0999").unwrap(), "network, generic code");
        assert_eq!(dtc_description("X0301"), None);
        assert_eq!(dtc_description("P03"), None);
        for n in 300..=312 {
            let d = dtc_description(&format!("P0{n}")).unwrap();
            assert!(d.contains("misfire"), "{d}");
        }
    }
}
