//! The process's logger: `BULWARK_LOG`'s filter behind a reload handle (so `/log-level`
//! on the admin port can change it), text (coloured only on a terminal) or JSON on stderr.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::admin::LogControl;

/// The log filter behind a reload handle, so the admin port can change it.
#[derive(Debug)]
pub struct ReloadableFilter(reload::Handle<EnvFilter, Registry>);

impl LogControl for ReloadableFilter {
    fn current(&self) -> String {
        self.0
            .with_current(|f| f.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let f = EnvFilter::try_new(filter).map_err(|e| format!("{filter:?}: {e}"))?;
        self.0.reload(f).map_err(|e| e.to_string())
    }
}

/// Installs the logger: `BULWARK_LOG`'s filter (reloadable), text or JSON on stderr.
pub fn init(format: &str) -> ReloadableFilter {
    let filter = EnvFilter::try_from_env("BULWARK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    // Colour only on a terminal: escapes must not reach `kubectl logs`.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    ReloadableFilter(handle)
}
