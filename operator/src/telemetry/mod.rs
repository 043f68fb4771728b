//! Infrastructure every role uses: logging, and the HTTP server of `/metrics`, `/healthz`
//! and `/readyz` with the health they report. Each subsystem owns its metrics
//! (`controller::metrics`, `drift::metrics`, `agent::metrics`).

mod server;

pub use server::{Endpoints, Health, StatusAnswer, serve};

/// Logs as JSON lines (or plain text for a terminal), filtered by `RUST_LOG`.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        // Colour codes only on a terminal, not in log files.
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init()
    };
}
