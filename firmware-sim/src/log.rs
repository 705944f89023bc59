//! The devices' `tracing` events on stderr, through `tracing-subscriber`'s fmt layer.
//! `--log` sets the level; `RUST_LOG` directives, when set, refine it (e.g.
//! `RUST_LOG=firmware_sim::device=debug`). Installed only when no global subscriber
//! exists yet (the `clutch` binary may have its own).

use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Log device events at `level` and above to stderr (`off` for none).
pub fn install(level: &str) -> Result<(), String> {
    let level = LevelFilter::from_str(level)
        .map_err(|_| format!("--log {level:?}: expected off, error, warn, info, debug or trace"))?;
    if level == LevelFilter::OFF {
        return Ok(());
    }
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    // Another subscriber already installed (by the binary) wins; that is fine.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn levels_are_checked() {
        assert!(super::install("off").is_ok());
        assert!(super::install("loud").unwrap_err().contains("--log"));
    }
}
