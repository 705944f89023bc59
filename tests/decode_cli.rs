//! `clutch decode` end to end: the real binary, its JSON contract and its exit codes,
//! on every public vector of every protocol.

use std::process::Command;

use serde_json::Value;

fn clutch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clutch"))
}

fn vectors_dir() -> std::path::PathBuf {
    std::env::var("CLUTCH_VECTORS_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/public"))
}

fn run(args: &[&str]) -> (i32, Value, String) {
    let out = clutch().arg("decode").args(args).output().expect("run clutch");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[test]
fn teltonika_login_prints_the_contract() {
    let (code, json, stderr) = run(&["--protocol", "teltonika", "--hex", "000F313233343536373839303132333435"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(json["protocol"], "teltonika");
    let m = &json["messages"][0];
    assert_eq!(m["kind"], "login");
    assert_eq!(m["imei"], "123456789012345");
    assert_eq!(m["ack_hex"], "01");
    assert!(m["positions"].as_array().is_some_and(|p| p.is_empty()));
}

#[test]
fn bad_input_exits_2_with_a_json_error() {
    for args in [
        vec!["--protocol", "nope", "--hex", "00"],
        vec!["--protocol", "teltonika", "--hex", "zz"],
        vec!["--protocol", "osmand", "--transport", "tcp", "--text", "x"],
        // A GT06 login whose CRC was edited (correct CRC: 8cdd): must be refused, not accepted.
        vec!["--protocol", "gt06", "--hex", "78780d01012345678901234500018cde0d0a"],
    ] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, 2, "{args:?} should fail");
        let err: Value =
            serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{args:?}: stderr not JSON ({e}): {stderr}"));
        assert!(err["error"]["message"].is_string(), "{args:?}: {err}");
    }
}

#[test]
fn every_public_uplink_vector_decodes_through_the_cli() {
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(vectors_dir())
        .expect("../shared/vectors/public is missing (set CLUTCH_VECTORS_DIR)")
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let text = std::fs::read_to_string(entry.path()).expect("read vectors");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("vector json");
            if v["direction"] != "uplink" {
                continue;
            }
            let protocol = v["protocol"].as_str().expect("protocol");
            let transport = v["transport"].as_str().expect("transport");
            let frame = v["frame"].as_str().expect("frame");
            let flag = if v["encoding"] == "hex" { "--hex" } else { "--text" };
            let (code, json, stderr) = run(&["--protocol", protocol, "--transport", transport, flag, frame]);
            checked += 1;
            let bad_checksum = v["integrity"] == "checksum_mismatch_in_frame";
            match (bad_checksum, code) {
                (false, 0) => {
                    let kinds: Vec<&str> = json["messages"]
                        .as_array()
                        .map(|ms| ms.iter().filter_map(|m| m["kind"].as_str()).collect())
                        .unwrap_or_default();
                    if !kinds.contains(&v["kind"].as_str().unwrap_or("")) {
                        failures.push(format!("{protocol} {frame:.40}: kind {} not in {kinds:?}", v["kind"]));
                    }
                }
                (true, 2) => {}
                _ => failures.push(format!("{protocol} {frame:.40}: exit {code}, stderr {stderr}")),
            }
        }
    }
    assert!(checked > 300, "only {checked} vectors found");
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
