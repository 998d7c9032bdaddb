//! The iptables binaries of each family and backend (nft or legacy), and the two calls that
//! touch the kernel: [`apply`] (one `iptables-restore` of the whole nat table) and [`check`]
//! (`iptables-save` compared with the rules we expect).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{
    Family, InitError, InitSpec, Iptables, Ipv6Mode, check_save, core_rules, merge, render,
};

/// The binaries one family and backend use.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Family the tools act on.
    pub family: Family,
    save: String,
    restore: String,
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(bin).is_file())
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InitError> {
    let display = format!("{cmd} {}", args.join(" "));
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| InitError::Spawn {
            cmd: display.clone(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| InitError::Spawn {
                cmd: display.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| InitError::Spawn {
            cmd: display.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(InitError::Failed {
            cmd: display,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Tools {
    /// Picks the binaries for `family` and `backend`. With `Auto`, the legacy backend is used
    /// only when it already holds rules and nft holds none (the node's other rules live there).
    pub fn pick(family: Family, backend: Iptables) -> Self {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let named = |kind: &str| Self {
            family,
            save: format!("{base}-{kind}-save"),
            restore: format!("{base}-{kind}-restore"),
        };
        let plain = Self {
            family,
            save: format!("{base}-save"),
            restore: format!("{base}-restore"),
        };
        match backend {
            Iptables::Nft => named("nft"),
            Iptables::Legacy => named("legacy"),
            Iptables::Auto => {
                let nft = named("nft");
                let legacy = named("legacy");
                if !on_path(&nft.restore) {
                    return if on_path(&legacy.restore) {
                        legacy
                    } else {
                        plain
                    };
                }
                let count = |t: &Tools| {
                    t.save()
                        .map(|s| s.lines().filter(|l| l.starts_with("-A")).count())
                        .unwrap_or(0)
                };
                if on_path(&legacy.save) && count(&legacy) > 0 && count(&nft) == 0 {
                    legacy
                } else {
                    nft
                }
            }
        }
    }

    /// Whether this family's restore binary is installed.
    pub fn installed(&self) -> bool {
        on_path(&self.restore)
    }

    /// The current nat table.
    pub fn save(&self) -> Result<String, InitError> {
        run(&self.save, &["-t", "nat"], None)
    }

    fn restore(&self, input: &str) -> Result<(), InitError> {
        run(&self.restore, &["-w", "5"], Some(input)).map(|_| ())
    }
}

/// The families to program for `mode`.
pub fn families(mode: Ipv6Mode, backend: Iptables) -> Result<Vec<Tools>, InitError> {
    let mut tools = vec![Tools::pick(Family::V4, backend)];
    let v6 = Tools::pick(Family::V6, backend);
    let kernel_v6 = Path::new("/proc/net/if_inet6").exists();
    match mode {
        Ipv6Mode::Off => {}
        Ipv6Mode::Auto if kernel_v6 && v6.installed() => tools.push(v6),
        Ipv6Mode::Auto => {}
        Ipv6Mode::On if !kernel_v6 => {
            return Err(InitError::NoIpv6("the kernel has no IPv6".into()));
        }
        Ipv6Mode::On if !v6.installed() => {
            return Err(InitError::NoIpv6(format!(
                "{} is not installed",
                v6.restore
            )));
        }
        Ipv6Mode::On => tools.push(v6),
    }
    Ok(tools)
}

/// Writes our rules for every family, replacing any earlier set.
pub fn apply(spec: &InitSpec, tools: &[Tools]) -> Result<(), InitError> {
    for t in tools {
        let rules = render(spec, t.family);
        let input = merge(&t.save()?, &rules);
        t.restore(&input)?;
        tracing::info!(family = ?t.family, rules = rules.len(), restore = %t.restore, "redirection rules applied");
    }
    Ok(())
}

/// Verifies our rules for every family: exactly the rendered set when `exact`, else the
/// [`core_rules`].
pub fn check(spec: &InitSpec, tools: &[Tools], exact: bool) -> Result<(), InitError> {
    for t in tools {
        let expected = if exact {
            render(spec, t.family)
        } else {
            core_rules(spec.inbound_port, spec.outbound_port, spec.proxy_uid)
        };
        check_save(&t.save()?, &expected, exact).map_err(|problems| InitError::Missing {
            family: t.family,
            problems,
        })?;
    }
    Ok(())
}
