//! `bulwark-proxy`: `run` the sidecar, `init` the pod's iptables rules, or `await` readiness
//! before starting the app.

mod cli;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bulwark_proxy::init::{self, InitSpec, Ipv6Mode};
use bulwark_proxy::logging::{self, ReloadableFilter};
use clap::Parser;
use tokio::time::Instant;

use cli::{AwaitArgs, Cli, Command, InitArgs, LingerArgs, RunArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = logging::init(&cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run(*args, log),
        Command::Init(args) => init_cmd(args),
        Command::Await(args) => await_cmd(args),
        Command::Linger(args) => linger_cmd(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulwark-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs, log: ReloadableFilter) -> anyhow::Result<ExitCode> {
    let cfg = args.into_config();
    // Validated before the runtime is sized by it; app::run validates the rest again.
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads)
        .thread_name("bulwark-worker")
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        bulwark_proxy::app::run(cfg, shutdown, Some(Arc::new(log))).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn init_cmd(a: InitArgs) -> anyhow::Result<ExitCode> {
    let spec = InitSpec {
        inbound_port: a.inbound_port,
        outbound_port: a.outbound_port,
        admin_port: a.admin_port,
        proxy_uid: a.proxy_uid,
        proxy_gid: a.proxy_gid,
        skip_inbound_ports: a.skip_inbound_ports,
        skip_outbound_ports: a.skip_outbound_ports,
        skip_outbound_cidrs: a.skip_outbound_cidrs,
    };
    if a.dry_run {
        let families = match a.ipv6 {
            Ipv6Mode::Off => vec![init::Family::V4],
            _ => vec![init::Family::V4, init::Family::V6],
        };
        for f in families {
            let tool = if f == init::Family::V4 {
                "iptables-restore"
            } else {
                "ip6tables-restore"
            };
            println!("# {f:?}: input for {tool} (rules outside our chains are kept)");
            print!("{}", init::standalone(&init::render(&spec, f)));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tools = init::families(a.ipv6, a.iptables_backend)?;
    if a.check {
        return match init::check(&spec, &tools, true) {
            Ok(()) => {
                println!("redirection rules are in place");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("bulwark-proxy init --check: {e}");
                Ok(ExitCode::FAILURE)
            }
        };
    }
    init::apply(&spec, &tools).context("applying the redirection rules")?;
    init::check(&spec, &tools, true).context("the rules did not read back as written")?;
    if a.validate {
        use init::validate::{Validation, pod_address, validate};
        match a.pod_ip.or_else(|| pod_address(false)) {
            Some(ip) => match validate(&spec, ip)? {
                Validation::Verified(at) => println!(
                    "redirection verified: a connection to {at} arrived on the outbound port {}",
                    spec.outbound_port
                ),
                Validation::Skipped(why) => println!("redirection not validated: {why}"),
            },
            None => println!("redirection not validated: the pod has no IPv4 address"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One HTTP/1.0 GET of `path` on the local admin port: the whole response, head and body.
fn admin_get(addr: &std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// Polls `/stats` until no outbound connection has been open for `--quiet`: the app has
/// stopped calling out (or has exited, closing its sockets). Bounded by `--timeout`, and
/// always exits 0, so the kubelet goes on to SIGTERM and the proxy's drain.
fn linger_cmd(a: LingerArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let mut quiet_since = None;
    loop {
        let open = admin_get(&a.local.admin_addr, "/stats").map(|resp| {
            let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            serde_json::from_str::<serde_json::Value>(body).ok()?["connections_open"]["outbound"]
                .as_u64()
        });
        let now = Instant::now();
        match open {
            Err(e) => {
                println!(
                    "no proxy at {} ({e}): nothing to wait for",
                    a.local.admin_addr
                );
                break;
            }
            Ok(Some(0)) => {
                let since = *quiet_since.get_or_insert(now);
                if now - since >= a.quiet.0 {
                    println!(
                        "no outbound connection for {}: the app has stopped calling out",
                        a.quiet
                    );
                    break;
                }
            }
            Ok(open) => {
                quiet_since = None;
                if now - start >= a.timeout.0 {
                    let open = open.map_or("an unknown number of".into(), |n| n.to_string());
                    println!(
                        "gave up after {}: {open} outbound connections still open; the proxy drains them",
                        a.timeout
                    );
                    break;
                }
            }
        }
        if now - start >= a.timeout.0 + a.quiet.0 {
            println!("gave up after {}: the proxy drains what is left", a.timeout);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls `/ready` on the admin port, then replaces this process with CMD (or exits 0).
fn await_cmd(a: AwaitArgs) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let deadline = Instant::now() + a.timeout.0;
    let mut last;
    loop {
        let attempt = admin_get(&a.local.admin_addr, "/ready");
        match attempt {
            Ok(resp) if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") => {
                break;
            }
            Ok(resp) => last = resp.lines().last().unwrap_or_default().to_string(),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            bail!(
                "proxy at {} not ready after {:?}: {last}",
                a.local.admin_addr,
                a.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let Some(program) = a.cmd.first() else {
        return Ok(ExitCode::SUCCESS);
    };
    let err = std::process::Command::new(program).args(&a.cmd[1..]).exec();
    bail!("could not run {program:?}: {err}")
}
