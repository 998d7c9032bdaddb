//! `bulwark-proxy init`: the nat rules that send a pod's TCP traffic through the proxy.
//!
//! Rendering is pure ([`render`], [`merge`], [`check_save`]); only [`apply`] and [`check`]
//! (in `init/tools.rs`, with the choice of binaries) run `iptables-save` / `iptables-restore`. The whole nat table is replaced in one
//! `iptables-restore` call, with every rule that is not ours kept, so the change is atomic and
//! running `init` twice leaves one set of rules.

mod tools;
pub mod validate;

use std::fmt::Write as _;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Serialize;

pub use self::tools::{Tools, apply, check, families};

/// Our chain in PREROUTING: traffic arriving at the pod.
pub const INBOUND_CHAIN: &str = "BULWARK_INBOUND";
/// Our chain in OUTPUT: traffic the pod's apps send.
pub const OUTBOUND_CHAIN: &str = "BULWARK_OUTPUT";

/// IP family of a rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

/// Whether to program IPv6 rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Ipv6Mode {
    /// When the kernel has IPv6 and ip6tables is installed.
    Auto,
    /// Always; fail if impossible.
    #[value(alias = "true")]
    On,
    /// Never.
    #[value(alias = "false")]
    Off,
}

/// Which iptables implementation writes the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Iptables {
    /// nft unless only the legacy backend holds rules already.
    Auto,
    /// `iptables-nft-*`.
    Nft,
    /// `iptables-legacy-*`.
    Legacy,
}

/// A destination port or an inclusive range, as in `8000:8010` or `8000-8010`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
        };
        let (start, end) = match s.split_once([':', '-']) {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(s)?, parse(s)?),
        };
        if start > end {
            return Err(format!("port range {s:?} ends before it starts"));
        }
        Ok(Self { start, end })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}:{}", self.start, self.end)
        }
    }
}

/// Everything the rules depend on.
#[derive(Debug, Clone, Serialize)]
pub struct InitSpec {
    /// Port the inbound listener binds.
    pub inbound_port: u16,
    /// Port the outbound listener binds.
    pub outbound_port: u16,
    /// Admin port: never redirected inbound.
    pub admin_port: u16,
    /// Traffic of this UID is the proxy's own and is not redirected.
    pub proxy_uid: u32,
    /// Traffic of this GID is the proxy's own and is not redirected.
    pub proxy_gid: u32,
    /// Inbound destination ports left alone.
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports left alone.
    pub skip_outbound_ports: Vec<PortRange>,
    /// Outbound destination networks left alone.
    pub skip_outbound_cidrs: Vec<IpNet>,
}

/// What went wrong while programming or checking the rules.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// An iptables binary is missing or could not be started.
    #[error("could not run {cmd}: {source} (is the iptables package installed?)")]
    Spawn {
        /// The command.
        cmd: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An iptables command ran and failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        /// The command.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `--ipv6 on` on a machine without IPv6 or ip6tables.
    #[error("--ipv6 on, but {0}")]
    NoIpv6(String),
    /// The rules are not (all) in place.
    #[error("redirection is not in place ({family:?}): {}", problems.join("; "))]
    Missing {
        /// Which table.
        family: Family,
        /// What is missing.
        problems: Vec<String>,
    },
}

fn multiport_chunks(ports: &[PortRange]) -> Vec<String> {
    // multiport takes at most 15 ports per rule, a range counting as two.
    let mut chunks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut weight = 0;
    for p in ports {
        let w = if p.start == p.end { 1 } else { 2 };
        if weight + w > 15 {
            chunks.push(current.join(","));
            current.clear();
            weight = 0;
        }
        current.push(p.to_string());
        weight += w;
    }
    if !current.is_empty() {
        chunks.push(current.join(","));
    }
    chunks
}

/// Our rules for one family, each line written the way `iptables-save` prints it back, so
/// that [`check_save`] can compare line by line.
pub fn render(spec: &InitSpec, family: Family) -> Vec<String> {
    let mut r = Vec::new();
    let inb = INBOUND_CHAIN;
    let out = OUTBOUND_CHAIN;
    // Inbound: the admin port and skipped ports keep their destination.
    r.push(format!(
        "-A {inb} -p tcp -m tcp --dport {} -j RETURN",
        spec.admin_port
    ));
    for chunk in multiport_chunks(&spec.skip_inbound_ports) {
        r.push(format!(
            "-A {inb} -p tcp -m multiport --dports {chunk} -j RETURN"
        ));
    }
    r.push(format!(
        "-A {inb} -p tcp -j REDIRECT --to-ports {}",
        spec.inbound_port
    ));
    // Outbound: the proxy's own traffic, loopback-addressed traffic, skipped ports and
    // networks keep their destination. Loopback traffic to the pod's own IP is redirected.
    r.push(format!(
        "-A {out} -m owner --uid-owner {} -j RETURN",
        spec.proxy_uid
    ));
    r.push(format!(
        "-A {out} -m owner --gid-owner {} -j RETURN",
        spec.proxy_gid
    ));
    let loopback = match family {
        Family::V4 => "127.0.0.0/8",
        Family::V6 => "::1/128",
    };
    r.push(format!("-A {out} -d {loopback} -o lo -j RETURN"));
    for chunk in multiport_chunks(&spec.skip_outbound_ports) {
        r.push(format!(
            "-A {out} -p tcp -m multiport --dports {chunk} -j RETURN"
        ));
    }
    for net in &spec.skip_outbound_cidrs {
        let ours = matches!(
            (family, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        );
        if ours {
            r.push(format!("-A {out} -d {} -j RETURN", net.trunc()));
        }
    }
    r.push(format!(
        "-A {out} -p tcp -j REDIRECT --to-ports {}",
        spec.outbound_port
    ));
    r.push(format!("-A PREROUTING -p tcp -j {inb}"));
    r.push(format!("-A OUTPUT -p tcp -j {out}"));
    r
}

fn is_ours(line: &str) -> bool {
    line.contains(INBOUND_CHAIN) || line.contains(OUTBOUND_CHAIN)
}

/// A standalone `iptables-restore` input holding only our rules (what `--dry-run` prints).
pub fn standalone(rules: &[String]) -> String {
    merge("", rules)
}

/// Builds the `iptables-restore` input for the nat table: every rule of `existing` (an
/// `iptables-save` output) that is not ours, then ours.
pub fn merge(existing: &str, rules: &[String]) -> String {
    let mut chains: Vec<String> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    let mut in_nat = false;
    for line in existing.lines() {
        let line = line.trim_end();
        if line.starts_with('*') {
            in_nat = line == "*nat";
            continue;
        }
        if !in_nat || line.starts_with('#') || line == "COMMIT" || line.is_empty() || is_ours(line)
        {
            continue;
        }
        if line.starts_with(':') {
            chains.push(line.to_string());
        } else {
            kept.push(line.to_string());
        }
    }
    for builtin in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
        if !chains
            .iter()
            .any(|c| c.starts_with(&format!(":{builtin} ")))
        {
            chains.push(format!(":{builtin} ACCEPT [0:0]"));
        }
    }
    let mut out = String::from("*nat\n");
    for c in &chains {
        let _ = writeln!(out, "{c}");
    }
    let _ = writeln!(out, ":{INBOUND_CHAIN} - [0:0]");
    let _ = writeln!(out, ":{OUTBOUND_CHAIN} - [0:0]");
    for l in kept.iter().chain(rules) {
        let _ = writeln!(out, "{l}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The rules without which no traffic reaches the proxy (or the proxy's own traffic loops):
/// what the running proxy verifies, since it does not know the skip lists `init` was given.
pub fn core_rules(inbound_port: u16, outbound_port: u16, proxy_uid: u32) -> Vec<String> {
    vec![
        format!("-A {INBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {inbound_port}"),
        format!("-A {OUTBOUND_CHAIN} -m owner --uid-owner {proxy_uid} -j RETURN"),
        format!("-A {OUTBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {outbound_port}"),
        format!("-A PREROUTING -p tcp -j {INBOUND_CHAIN}"),
        format!("-A OUTPUT -p tcp -j {OUTBOUND_CHAIN}"),
    ]
}

/// Compares an `iptables-save -t nat` output with the rules we expect; lists what is missing
/// or duplicated. With `exact`, our chains must hold nothing else.
pub fn check_save(save: &str, expected: &[String], exact: bool) -> Result<(), Vec<String>> {
    let lines: Vec<&str> = save.lines().map(str::trim_end).collect();
    let mut problems = Vec::new();
    for rule in expected {
        match lines.iter().filter(|l| **l == rule).count() {
            0 => problems.push(format!("missing `{rule}`")),
            1 => {}
            n => problems.push(format!("`{rule}` appears {n} times")),
        }
    }
    let ours = lines
        .iter()
        .filter(|l| l.starts_with("-A") && is_ours(l))
        .count();
    if exact && problems.is_empty() && ours != expected.len() {
        problems.push(format!(
            "{ours} rules mention our chains, expected {}",
            expected.len()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
pub(crate) mod tests;
