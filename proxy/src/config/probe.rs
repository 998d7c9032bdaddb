//! The app probes the proxy answers for on strict ports (`--inbound-probe PORT:PATH`).

use serde::Serialize;

/// An app's HTTP probe, `PORT:PATH`: the kubelet's GET of PATH (with its query, as the
/// probe spells it) on the app's PORT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRoute {
    /// The app's port.
    pub port: u16,
    /// The request target, starting with `/`.
    pub path: String,
}

impl std::str::FromStr for ProbeRoute {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, path) = s
            .split_once(':')
            .ok_or_else(|| format!("probe {s:?}: expected PORT:PATH, e.g. 8080:/healthz"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("probe {s:?}: port {port:?} is not 1-65535"))?;
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(format!(
                "probe {s:?}: path {path:?} must start with / and hold no spaces"
            ));
        }
        Ok(Self {
            port,
            path: path.to_string(),
        })
    }
}
