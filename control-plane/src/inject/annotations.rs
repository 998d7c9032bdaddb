//! Per-pod settings: the `config.bulwark.dev/*` annotations a pod (or its template) carries.
//! Every value is checked here, so a typo or a bad value refuses the pod with the
//! annotation's name and the reason instead of starting a sidecar configured otherwise.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::InjectError;

/// The prefix of every per-pod setting.
pub const PREFIX: &str = "config.bulwark.dev/";

/// The annotations understood, with what each sets (the table in docs/kubernetes.md).
pub const KNOWN: [&str; 17] = [
    "skip-inbound-ports",
    "skip-outbound-ports",
    "skip-outbound-cidrs",
    "opaque-ports",
    "inbound-port",
    "outbound-port",
    "admin-port",
    "log-level",
    "access-log",
    "access-log-sample",
    "mesh-http1",
    "detect-timeout",
    "shutdown-grace",
    "proxy-cpu-request",
    "proxy-cpu-limit",
    "proxy-memory-request",
    "proxy-memory-limit",
];

/// A pod's overrides: each a value for the init container's or the proxy's environment
/// (or its resources), already checked. `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `BULWARK_SKIP_INBOUND_PORTS` of the init container.
    pub skip_inbound_ports: Option<String>,
    /// `BULWARK_SKIP_OUTBOUND_PORTS` of the init container.
    pub skip_outbound_ports: Option<String>,
    /// `BULWARK_SKIP_OUTBOUND_CIDRS` of the init container.
    pub skip_outbound_cidrs: Option<String>,
    /// `BULWARK_OPAQUE_PORTS` of the proxy.
    pub opaque_ports: Option<String>,
    /// The proxy's inbound listener port (both containers).
    pub inbound_port: Option<u16>,
    /// The proxy's outbound listener port (both containers).
    pub outbound_port: Option<u16>,
    /// The proxy's admin port (both containers, and the probes).
    pub admin_port: Option<u16>,
    /// `BULWARK_LOG` of the proxy.
    pub log_level: Option<String>,
    /// `BULWARK_ACCESS_LOG` of the proxy.
    pub access_log: Option<super::AccessLog>,
    /// `BULWARK_ACCESS_LOG_SAMPLE` of the proxy.
    pub access_log_sample: Option<String>,
    /// `BULWARK_MESH_HTTP1` of the proxy.
    pub mesh_http1: Option<super::MeshHttp1>,
    /// `BULWARK_DETECT_TIMEOUT` of the proxy.
    pub detect_timeout: Option<String>,
    /// `BULWARK_SHUTDOWN_GRACE` of the proxy.
    pub shutdown_grace: Option<String>,
    /// Resource requests and limits of the proxy: (`requests`|`limits`, `cpu`|`memory`) →
    /// quantity.
    pub resources: BTreeMap<(&'static str, &'static str), String>,
}

fn bad(key: &str, value: &str, reason: impl Into<String>) -> InjectError {
    InjectError::Annotation {
        key: format!("{PREFIX}{key}"),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A port: 1–65535.
fn port(key: &str, v: &str) -> Result<u16, InjectError> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(key, v, "must be a port, 1 to 65535")),
    }
}

/// A comma-separated list of ports, or of ports and `low:high` ranges when `ranges`.
fn ports(key: &str, v: &str, ranges: bool) -> Result<String, InjectError> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once([':', '-']) {
            Some((lo, hi)) if ranges => {
                let (lo, hi) = (port(key, lo)?, port(key, hi)?);
                if lo > hi {
                    return Err(bad(key, v, format!("range {item} is empty (low > high)")));
                }
                out.push(format!("{lo}:{hi}"));
            }
            Some(_) => return Err(bad(key, v, "must list single ports, not ranges")),
            None => out.push(
                port(key, item)
                    .map_err(|_| bad(key, v, format!("{item:?} is not a port (1 to 65535)")))?
                    .to_string(),
            ),
        }
    }
    if out.is_empty() {
        return Err(bad(key, v, "lists no port"));
    }
    Ok(out.join(","))
}

/// A comma-separated list of networks (`10.0.0.0/8`, `fd00::/8`; a bare address is one host).
fn cidrs(key: &str, v: &str) -> Result<String, InjectError> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok = match item.split_once('/') {
            Some((addr, len)) => match (addr.parse::<IpAddr>(), len.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
                (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
                _ => false,
            },
            None => item.parse::<IpAddr>().is_ok(),
        };
        if !ok {
            return Err(bad(
                key,
                v,
                format!("{item:?} is not a network like 10.0.0.0/8"),
            ));
        }
        out.push(match item.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => format!("{a}/32"),
            Ok(IpAddr::V6(a)) => format!("{a}/128"),
            Err(_) => item.to_string(),
        });
    }
    if out.is_empty() {
        return Err(bad(key, v, "lists no network"));
    }
    Ok(out.join(","))
}

/// A Kubernetes quantity as a container's resources take it (`100m`, `0.5`, `64Mi`, `1G`).
fn quantity(key: &str, v: &str) -> Result<String, InjectError> {
    let v = v.trim();
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &v[digits.len()..];
    let number = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.matches('.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit());
    let suffixes = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    if number && suffixes.contains(&suffix) {
        Ok(v.to_string())
    } else {
        Err(bad(
            key,
            v,
            "must be a Kubernetes quantity such as 100m, 0.5, 64Mi or 1Gi",
        ))
    }
}

/// A duration as the proxy's flags take it (`500ms`, `10s`, `1m`).
fn duration(key: &str, v: &str) -> Result<String, InjectError> {
    bulwark_api::duration::parse(v.trim())
        .map(|_| v.trim().to_string())
        .map_err(|e| bad(key, v, e.to_string()))
}

/// A log filter (`info`, `warn,bulwark_proxy=debug`): the characters a tracing filter uses.
fn log_level(key: &str, v: &str) -> Result<String, InjectError> {
    let ok = !v.trim().is_empty()
        && v.trim()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_=,:.-".contains(c));
    if ok {
        Ok(v.trim().to_string())
    } else {
        Err(bad(
            key,
            v,
            "must be a level (error, warn, info, debug, trace) or a filter like warn,bulwark_proxy=debug",
        ))
    }
}

fn access_log(key: &str, v: &str) -> Result<super::AccessLog, InjectError> {
    match v.trim() {
        "off" => Ok(super::AccessLog::Off),
        "text" => Ok(super::AccessLog::Text),
        "json" => Ok(super::AccessLog::Json),
        _ => Err(bad(key, v, "must be off, text or json")),
    }
}

fn mesh_http1(key: &str, v: &str) -> Result<super::MeshHttp1, InjectError> {
    match v.trim() {
        "pooled" => Ok(super::MeshHttp1::Pooled),
        "multiplexed" => Ok(super::MeshHttp1::Multiplexed),
        _ => Err(bad(key, v, "must be pooled or multiplexed")),
    }
}

fn sample(key: &str, v: &str) -> Result<String, InjectError> {
    match v.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n.to_string()),
        _ => Err(bad(
            key,
            v,
            "must be a whole number, 1 or more (1: every request)",
        )),
    }
}

/// The known name nearest to an unknown one, for the error message.
fn nearest(name: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .copied()
        .map(|k| (strsim(name, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance (short names only).
fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Reads and checks the `config.bulwark.dev/*` annotations of a pod's metadata.
pub fn parse(meta: &Value) -> Result<Overrides, InjectError> {
    let mut o = Overrides::default();
    let Some(annotations) = meta["annotations"].as_object() else {
        return Ok(o);
    };
    for (full, value) in annotations {
        let Some(key) = full.strip_prefix(PREFIX) else {
            continue;
        };
        let v = value.as_str().unwrap_or_default();
        match key {
            "skip-inbound-ports" => o.skip_inbound_ports = Some(ports(key, v, true)?),
            "skip-outbound-ports" => o.skip_outbound_ports = Some(ports(key, v, true)?),
            "skip-outbound-cidrs" => o.skip_outbound_cidrs = Some(cidrs(key, v)?),
            "opaque-ports" => o.opaque_ports = Some(ports(key, v, false)?),
            "inbound-port" => o.inbound_port = Some(port(key, v)?),
            "outbound-port" => o.outbound_port = Some(port(key, v)?),
            "admin-port" => o.admin_port = Some(port(key, v)?),
            "log-level" => o.log_level = Some(log_level(key, v)?),
            "access-log" => o.access_log = Some(access_log(key, v)?),
            "access-log-sample" => o.access_log_sample = Some(sample(key, v)?),
            "mesh-http1" => o.mesh_http1 = Some(mesh_http1(key, v)?),
            "detect-timeout" => o.detect_timeout = Some(duration(key, v)?),
            "shutdown-grace" => o.shutdown_grace = Some(duration(key, v)?),
            "proxy-cpu-request" => {
                o.resources.insert(("requests", "cpu"), quantity(key, v)?);
            }
            "proxy-cpu-limit" => {
                o.resources.insert(("limits", "cpu"), quantity(key, v)?);
            }
            "proxy-memory-request" => {
                o.resources
                    .insert(("requests", "memory"), quantity(key, v)?);
            }
            "proxy-memory-limit" => {
                o.resources.insert(("limits", "memory"), quantity(key, v)?);
            }
            other => {
                let hint = nearest(other)
                    .map_or(String::new(), |n| format!(" (did you mean {PREFIX}{n}?)"));
                return Err(bad(
                    other,
                    v,
                    format!(
                        "is not a Bulwark setting{hint}; known: {}",
                        KNOWN.join(", ")
                    ),
                ));
            }
        }
    }
    let mine = [
        ("inbound-port", o.inbound_port),
        ("outbound-port", o.outbound_port),
        ("admin-port", o.admin_port),
    ];
    let resolved = [
        o.inbound_port.unwrap_or(super::INBOUND_PORT),
        o.outbound_port.unwrap_or(super::OUTBOUND_PORT),
        o.admin_port.unwrap_or(super::ADMIN_PORT),
    ];
    for (i, (key, p)) in mine.iter().enumerate() {
        if let Some(p) = p
            && resolved.iter().enumerate().any(|(j, q)| j != i && q == p)
        {
            return Err(bad(key, &p.to_string(), "is another of the proxy's ports"));
        }
    }
    Ok(o)
}
