//! Log output: human-readable on a terminal or in the journal, JSON lines
//! otherwise or when asked. Fields are structured; secrets never appear.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::builder().parse_lossy(&config.level);
    let terminal = std::io::stderr().is_terminal();
    // journald timestamps every line itself and shows JSON poorly.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !terminal && !journal,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else if journal && !terminal {
        builder.with_ansi(false).without_time().init();
    } else {
        builder.with_ansi(terminal).init();
    }
}
