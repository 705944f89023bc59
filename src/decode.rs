//! `clutch decode`: decode frames given on the command line and print one JSON object.
//!
//! The output shape is a stable contract (see ARCHITECTURE.md): field names are never
//! renamed, only added. Exit 0 when every frame decoded, 2 with `{"error": …}` on
//! stderr otherwise (frames that did decode are still printed on stdout).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use protocols::{DecodeContext, Protocol, Transport, decode_all};
use serde_json::{Value, json};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["hex", "text", "file"]))]
pub struct DecodeArgs {
    /// Protocol name: teltonika, gt06, h02, tk103, gps103, gl200, meitrack, ruptela, freematics, osmand.
    #[arg(long, short = 'p')]
    protocol: String,
    /// tcp, udp or http (default: the protocol's usual transport).
    #[arg(long, short = 't')]
    transport: Option<String>,
    /// Frame bytes as hex (spaces, `:` and a `0x` prefix are allowed).
    #[arg(long)]
    hex: Option<String>,
    /// Frame as text, used byte for byte (for text protocols and OsmAnd requests).
    #[arg(long)]
    text: Option<String>,
    /// Read the frame bytes from a file (raw bytes, not hex).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
}

fn fail(message: String) -> ExitCode {
    let body = json!({ "error": { "message": message } });
    let _ = writeln!(std::io::stderr(), "{body}");
    ExitCode::from(2)
}

/// Parse hex leniently: whitespace, `:` separators and a `0x` prefix are common in
/// captures pasted from tools.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let cleaned: String = s.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    hex::decode(&cleaned).map_err(|e| format!("invalid hex input: {e}"))
}

pub fn run(args: DecodeArgs) -> ExitCode {
    let protocol: Protocol = match args.protocol.parse() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let transport = match args.transport.as_deref() {
        Some(t) => match t.parse::<Transport>() {
            Ok(t) => t,
            Err(e) => return fail(e),
        },
        None => protocol.transports()[0],
    };
    let input = if let Some(h) = &args.hex {
        match parse_hex(h) {
            Ok(b) => b,
            Err(e) => return fail(e),
        }
    } else if let Some(t) = &args.text {
        t.clone().into_bytes()
    } else if let Some(f) = &args.file {
        match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot read {}: {e}", f.display())),
        }
    } else {
        return fail("one of --hex, --text or --file is required".into());
    };
    if input.is_empty() {
        return fail("empty input".into());
    }
    let mut codec = match protocol.codec(transport) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let ctx = DecodeContext::now();
    let (messages, errors) = decode_all(codec.as_mut(), &input, &ctx);

    let out = json!({
        "protocol": protocol.name(),
        "transport": transport.as_str(),
        "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
        "errors": errors.iter().map(|e| json!({"kind": e.label(), "message": e.to_string()})).collect::<Vec<_>>(),
    });
    println!("{out}");
    if let Some(first) = errors.first() {
        let extra = if errors.len() > 1 {
            format!(" (and {} more errors)", errors.len() - 1)
        } else {
            String::new()
        };
        return fail(format!("{first}{extra}"));
    }
    if messages.is_empty() {
        return fail("no frame found in the input".into());
    }
    ExitCode::SUCCESS
}

/// A message as the contract shows it: the serialised record plus `ack_hex` (and
/// `ack_text` when the ack is printable text).
pub fn message_json(m: &protocols::Message) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or_else(|e| json!({ "serialize_error": e.to_string() }));
    if let (Some(ack), Some(obj)) = (&m.ack, v.as_object_mut()) {
        obj.insert("ack_hex".into(), Value::String(hex::encode(ack)));
        if let Ok(text) = std::str::from_utf8(ack)
            && text.chars().all(|c| !c.is_control() || c == '\r' || c == '\n')
        {
            obj.insert("ack_text".into(), Value::String(text.to_owned()));
        }
    }
    v
}
