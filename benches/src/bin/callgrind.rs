//! Instructions per request, the figure that repeats on a noisy machine: one Bulwark hop
//! (B: plain forwarding; B2: the upstream as a Backend under a typical policy) runs under
//! `valgrind --tool=callgrind` in network-namespace pods with real redirection, serves N
//! HTTP/1.1 (or HTTP/2) requests with 1 KiB bodies from h2load, and the instructions of a run of 16
//! requests (start-up and shutdown) are subtracted. `--proxy` measures another build of
//! the proxy the same way, so two revisions compare in one sitting. `--tool dhat` counts
//! heap allocations per request the same way (valgrind's DHAT), as repeatable.
//! `--check FILE` fails when a topology's count is over the budget FILE gives it by more
//! than its tolerance (`cargo xtask test` checks `benches/instructions.json`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bulwark_benches::b2_policy;
use bulwark_tests::{Mesh, PROXY_UID, Pod, bin};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The proxy binary to measure (a release build; default: the one beside this tool).
    #[arg(long)]
    proxy: Option<PathBuf>,
    /// Requests in the measured run.
    #[arg(long, default_value_t = 20_000)]
    requests: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    conns: u32,
    /// Topologies to measure: B, B2 or both.
    #[arg(long, value_delimiter = ',', default_value = "B,B2")]
    topologies: Vec<String>,
    /// HTTP/1.1 (`h1`) or HTTP/2 with prior knowledge (`h2`, one stream at a time per
    /// connection).
    #[arg(long, default_value = "h1", value_parser = ["h1", "h2"])]
    proto: String,
    /// Keep the outputs in this directory (callgrind_annotate, or DHAT's viewer).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// `callgrind` (instructions) or `dhat` (heap allocations and bytes allocated).
    #[arg(long, default_value = "callgrind", value_parser = ["callgrind", "dhat"])]
    tool: String,
    /// Fail when a count passes its budget in this JSON file (`{"tolerance_percent": 5,
    /// "h1": {"B": 29000, "B2": 36000}}`) by more than the tolerance.
    #[arg(long)]
    check: Option<PathBuf>,
}

/// Instruction budgets per protocol and topology, and how far a run may pass them.
#[derive(Debug, serde::Deserialize)]
struct Budgets {
    tolerance_percent: f64,
    #[serde(default)]
    h1: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    h2: std::collections::BTreeMap<String, f64>,
}

impl Budgets {
    fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Why `measured` instructions per request fail the budget of `topo`, if they do.
    fn over(&self, proto: &str, topo: &str, measured: f64) -> Option<String> {
        let budgets = if proto == "h2" { &self.h2 } else { &self.h1 };
        let budget = *budgets.get(topo)?;
        let limit = budget * (1.0 + self.tolerance_percent / 100.0);
        (measured > limit).then(|| {
            format!(
                "{topo} ({proto}) costs {measured:.0} instructions per request, over its budget of {budget:.0} by more than {}% (limit {limit:.0}); if the rise is meant, raise the budget in the same change and say why",
                self.tolerance_percent
            )
        })
    }
}

/// Requests of the run that is subtracted: start-up, connection set-up and shutdown.
const BASELINE: u32 = 16;

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        Path::new("/usr/bin/valgrind").exists() && Path::new("/usr/bin/h2load").exists(),
        "needs valgrind and h2load (apt-get install valgrind nghttp2-client)"
    );
    let proxy = args.proxy.clone().unwrap_or_else(|| bin("bulwark-proxy"));
    ensure!(proxy.exists(), "no proxy binary at {}", proxy.display());
    let dhat = args.tool == "dhat";
    let budgets = match &args.check {
        Some(path) if !dhat => Some(Budgets::read(path)?),
        Some(_) => bail!("--check compares instruction counts: it needs --tool callgrind"),
        None => None,
    };
    let mut failures = Vec::new();
    if dhat {
        println!(
            "| topology | allocations per request | bytes allocated per request |\n|---|---:|---:|"
        );
    } else {
        println!("| topology | instructions per request |\n|---|---:|");
    }
    for topo in &args.topologies {
        let policy = match topo.as_str() {
            "B" => false,
            "B2" => true,
            other => bail!("unknown topology {other} (B or B2)"),
        };
        let run = Run {
            proxy: &proxy,
            policy,
            h2: args.proto == "h2",
            keep: args.keep.as_deref(),
            dhat,
        };
        let full = run.measure(args.requests, args.conns)?;
        let base = run.measure(BASELINE, args.conns.min(BASELINE))?;
        let per =
            |i: usize| full[i].saturating_sub(base[i]) as f64 / f64::from(args.requests - BASELINE);
        if dhat {
            println!("| {topo} | {:.1} | {:.0} |", per(0), per(1));
        } else {
            println!("| {topo} | {:.0} |", per(0));
            if let Some(why) = budgets
                .as_ref()
                .and_then(|b| b.over(&args.proto, topo, per(0)))
            {
                failures.push(why);
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// One measured configuration.
#[derive(Debug, Clone, Copy)]
struct Run<'a> {
    proxy: &'a Path,
    /// B2 (the upstream as a Backend under policy) rather than B.
    policy: bool,
    h2: bool,
    keep: Option<&'a Path>,
    /// DHAT (allocations) instead of callgrind (instructions).
    dhat: bool,
}

impl Run<'_> {
    /// What the proxy did in a whole run that served `requests` requests: `[instructions]`
    /// under callgrind, `[allocations, bytes]` under DHAT.
    fn measure(&self, requests: u32, conns: u32) -> Result<[u64; 2]> {
        let Run {
            proxy,
            policy,
            h2,
            keep,
            dhat,
        } = *self;
        let started = Instant::now();
        let mut mesh = Mesh::new("callgrind")?;
        let srv = mesh.pod("srv")?;
        let mut server = srv.cmd(bin("bulwark-testserver"));
        server.args(["--http", "0.0.0.0:8080"]);
        mesh.spawn(&srv, "server", server)?;
        mesh.wait_listening(&srv, 8080)?;
        let client = mesh.pod("client")?;
        mesh.init(&client, &[])?;
        let dir = std::env::temp_dir().join(format!("bulwark-callgrind-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let out = dir.join(format!("out-{policy}-{requests}"));
        let policy_file = dir.join("policy.yaml");
        std::fs::write(&policy_file, b2_policy(&format!("{}:8080", srv.ip)))?;
        // The proxy file is read by the proxy's UID; the output is written by it.
        set_mode(&dir, 0o777)?;
        set_mode(&policy_file, 0o644)?;
        let pid = {
            let uid = PROXY_UID.to_string();
            let mut c = client.cmd("setpriv");
            c.args(["--reuid", &uid, "--regid", &uid, "--clear-groups"])
                .arg("valgrind");
            if dhat {
                // Not -q: DHAT's totals are in its summary on stderr.
                c.arg("--tool=dhat")
                    .arg(format!("--dhat-out-file={}", out.display()));
            } else {
                c.args(["--tool=callgrind", "-q"])
                    .arg(format!("--callgrind-out-file={}", out.display()));
            }
            c.arg(proxy)
                .args(["run", "--worker-threads", "1", "--verify-redirect", "false"])
                .args(["--shutdown-grace", "1s"])
                .env("BULWARK_LOG", "warn");
            if policy {
                c.arg("--policy")
                    .arg(&policy_file)
                    .args(["--workload", "bench/client"]);
            }
            mesh.spawn(&client, "proxy", c)?
        };
        wait_ready(&client, Duration::from_secs(60))?;
        let url = format!("http://{}:8080/bytes/1024", srv.ip);
        let load = client.sh_ok(&format!(
            "h2load {} -n {requests} -c {conns} -m 1 {url} | grep -E '^requests:'",
            if h2 { "" } else { "--h1" }
        ))?;
        ensure!(
            load.contains(&format!("{requests} succeeded")),
            "h2load: {load}"
        );
        mesh.terminate(pid, Duration::from_secs(60))?;
        if let Some(keep) = keep {
            std::fs::create_dir_all(keep)?;
            let name = format!(
                "{}.{}.{}.{requests}",
                if dhat { "dhat" } else { "callgrind" },
                if policy { "B2" } else { "B" },
                if h2 { "h2" } else { "h1" }
            );
            std::fs::copy(&out, keep.join(name))?;
        }
        if dhat {
            let _ = std::fs::remove_dir_all(&dir);
            return dhat_totals(&mesh.log_of("proxy"));
        }
        let text =
            std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
        let _ = std::fs::remove_dir_all(&dir);
        let total = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary: ")
                    .or_else(|| l.strip_prefix("totals: "))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no instruction total in the callgrind output")?;
        eprintln!(
            "{} requests, policy {policy}: {total} instructions ({:.0} s)",
            requests,
            started.elapsed().as_secs_f64()
        );
        Ok([total, 0])
    }
}

/// DHAT's `Total: B bytes in N blocks` line: [blocks, bytes].
fn dhat_totals(log: &str) -> Result<[u64; 2]> {
    let line = log
        .lines()
        .find_map(|l| l.split_once("Total:").map(|(_, t)| t.trim()))
        .with_context(|| format!("no DHAT total in the proxy's log: {log}"))?;
    let num = |s: &str| s.replace(',', "").parse::<u64>().ok();
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [bytes, "bytes", "in", blocks, "blocks", ..] => Ok([
            num(blocks).context("DHAT's block count")?,
            num(bytes).context("DHAT's byte count")?,
        ]),
        _ => bail!("unreadable DHAT total {line:?}"),
    }
}

fn wait_ready(pod: &Pod, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok((200, _)) = pod.admin("/ready") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the proxy under valgrind was not ready within {timeout:?}")
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
