//! Where log lines go and how they look: stderr, text or JSON (`TOLLGATE_LOG_FORMAT`),
//! filtered by `RUST_LOG`, coloured only when stderr is a terminal and `NO_COLOR` is unset
//! (a journal or a file gets no escape codes).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether log lines are JSON (then a fatal error is logged as one too, for collectors).
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let result = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        // Each line carries the fields of the request's span (its id, method, path), so a
        // collector can group a request's lines without parsing messages.
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging was set up already: {e}");
    }
}
