//! A minimal stderr subscriber for the devices' `tracing` events, so `clutch sim` shows
//! what the simulated firmware logs (garbage from the server, refused logins, missing
//! acks) without pulling a subscriber crate into the simulator. Installed only when no
//! global subscriber exists yet (the `clutch` binary may have its own).

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Debug)]
struct StderrLogger {
    max: Level,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Subscriber for StderrLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        // In tracing, more verbose levels compare greater.
        *m.level() <= self.max
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut line = Line(String::new());
        e.record(&mut line);
        eprintln!("{:<5} {}:{}", e.metadata().level(), e.metadata().target(), line.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Log device events at `level` and above to stderr (`off` for none).
pub fn install(level: &str) -> Result<(), String> {
    let max = match level.to_ascii_lowercase().as_str() {
        "off" => return Ok(()),
        "error" => Level::ERROR,
        "warn" => Level::WARN,
        "info" => Level::INFO,
        "debug" => Level::DEBUG,
        "trace" => Level::TRACE,
        other => {
            return Err(format!(
                "--log {other:?}: expected off, error, warn, info, debug or trace"
            ));
        }
    };
    // Another subscriber already installed (by the binary) wins; that is fine.
    let _ = tracing::subscriber::set_global_default(StderrLogger { max });
    Ok(())
}
