//! `bulwark-proxy`: `run` the sidecar, `init` the pod's iptables rules, or `await` readiness
//! before starting the app.

use std::sync::Arc;

use bulwark_proxy::admin::LogControl;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use tokio::time::Instant;

use anyhow::{Context, bail};
use bulwark_proxy::config::{self, Config, Dur};
use bulwark_proxy::init::{self, InitSpec, Iptables, Ipv6Mode, PortRange};
use clap::{ArgAction, Args, Parser, Subcommand};
use ipnet::IpNet;

#[derive(Parser, Debug)]
#[command(
    name = "bulwark-proxy",
    version,
    about = "Bulwark service-mesh sidecar proxy"
)]
struct Cli {
    /// Log format.
    #[arg(long, env = "BULWARK_LOG_FORMAT", default_value = "text", global = true, value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy.
    Run(Box<RunArgs>),
    /// Write the iptables rules that redirect the pod's traffic to the proxy, then exit.
    Init(InitArgs),
    /// Wait until the local proxy is ready, then run CMD in its place.
    Await(AwaitArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Port of the outbound listener (bound on loopback).
    #[arg(long, env = "BULWARK_OUTBOUND_PORT", default_value_t = config::DEFAULT_OUTBOUND_PORT)]
    outbound_port: u16,
    /// Port of the inbound listener (bound on every address).
    #[arg(long, env = "BULWARK_INBOUND_PORT", default_value_t = config::DEFAULT_INBOUND_PORT)]
    inbound_port: u16,
    /// Address of the admin server.
    #[arg(long, env = "BULWARK_ADMIN_ADDR", default_value_t = config::DEFAULT_ADMIN_ADDR)]
    admin_addr: SocketAddr,
    /// Also listen on IPv6 ([::1] outbound, [::] inbound) and verify ip6tables rules.
    #[arg(long, env = "BULWARK_IPV6", default_value_t = false, action = ArgAction::Set)]
    ipv6: bool,
    /// Hold /ready at 503 until the iptables rules are verified (needs CAP_NET_ADMIN to read them).
    #[arg(long, env = "BULWARK_VERIFY_REDIRECT", default_value_t = true, action = ArgAction::Set)]
    verify_redirect: bool,
    /// UID whose traffic the rules exempt; the proxy must run as this UID.
    #[arg(long, env = "BULWARK_PROXY_UID", default_value_t = config::DEFAULT_PROXY_UID)]
    proxy_uid: u32,
    /// GID whose traffic the rules exempt.
    #[arg(long, env = "BULWARK_PROXY_GID", default_value_t = config::DEFAULT_PROXY_GID)]
    proxy_gid: u32,
    /// The control plane's gRPC address, e.g. bulwark-control-plane:5170 (or with http://).
    /// Without it the proxy runs on its flags alone, as a transparent proxy.
    #[arg(long, env = "BULWARK_CONTROL_PLANE", value_parser = bulwark_api::endpoint::control_plane_uri)]
    control_plane: Option<String>,
    /// Policy YAML files or directories, read once at start, instead of a control plane
    /// (run-locally mode). Documents of the workload's namespace and the MeshConfig apply.
    #[arg(long = "policy", env = "BULWARK_POLICY", value_delimiter = ',')]
    policy: Vec<std::path::PathBuf>,
    /// This pod's workload as NAMESPACE/NAME; the namespace scopes the policy it receives.
    #[arg(long, env = "BULWARK_WORKLOAD", default_value = "default/unknown")]
    workload: String,
    /// This pod's service account.
    #[arg(long, env = "BULWARK_SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// This pod's IPs (comma-separated), reported to the control plane.
    #[arg(long, env = "BULWARK_POD_IPS", value_delimiter = ',')]
    pod_ips: Vec<String>,
    /// Enable POST /shutdown on the admin port (accepted from loopback only).
    #[arg(long, env = "BULWARK_ADMIN_SHUTDOWN", default_value_t = false, action = ArgAction::Set)]
    admin_shutdown: bool,
    /// How long to wait for a client's first bytes before forwarding as opaque TCP.
    #[arg(long, env = "BULWARK_DETECT_TIMEOUT", default_value_t = Dur(config::DEFAULT_DETECT_TIMEOUT))]
    detect_timeout: Dur,
    /// Destination ports forwarded as opaque TCP without detection (comma-separated).
    #[arg(
        long,
        env = "BULWARK_OPAQUE_PORTS",
        value_delimiter = ',',
        default_values_t = config::DEFAULT_OPAQUE_PORTS
    )]
    opaque_ports: Vec<u16>,
    /// Consecutive detection time-outs, each followed by the server speaking first, after
    /// which a port is learned as opaque (0: never).
    #[arg(long, env = "BULWARK_DETECT_LEARN_THRESHOLD", default_value_t = config::DEFAULT_DETECT_LEARN_THRESHOLD)]
    detect_learn_threshold: u32,
    /// How long a learned opaque port stays opaque.
    #[arg(long, env = "BULWARK_DETECT_LEARN_TTL", default_value_t = Dur(config::DEFAULT_DETECT_LEARN_TTL))]
    detect_learn_ttl: Dur,
    /// Upstream TCP connect timeout.
    #[arg(long, env = "BULWARK_CONNECT_TIMEOUT", default_value_t = Dur(config::DEFAULT_CONNECT_TIMEOUT))]
    connect_timeout: Dur,
    /// Opaque connections idle this long are closed.
    #[arg(long, env = "BULWARK_TCP_IDLE_TIMEOUT", default_value_t = Dur(config::DEFAULT_TCP_IDLE_TIMEOUT))]
    tcp_idle_timeout: Dur,
    /// TCP keepalive idle time on both legs.
    #[arg(long, env = "BULWARK_TCP_KEEPALIVE", default_value_t = Dur(config::DEFAULT_TCP_KEEPALIVE))]
    tcp_keepalive: Dur,
    /// An HTTP/1 request head must arrive within this time.
    #[arg(long, env = "BULWARK_HEADER_READ_TIMEOUT", default_value_t = Dur(config::DEFAULT_HEADER_READ_TIMEOUT))]
    header_read_timeout: Dur,
    /// Largest request head (HTTP/1) or header list (HTTP/2) in bytes; larger gets 431.
    #[arg(long, env = "BULWARK_MAX_HEADER_BYTES", default_value_t = config::DEFAULT_MAX_HEADER_BYTES)]
    max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request; more gets 431.
    #[arg(long, env = "BULWARK_MAX_HEADERS", default_value_t = config::DEFAULT_MAX_HEADERS)]
    max_headers: usize,
    /// Concurrent HTTP/2 streams per downstream connection.
    #[arg(long, env = "BULWARK_H2_MAX_CONCURRENT_STREAMS", default_value_t = config::DEFAULT_H2_MAX_CONCURRENT_STREAMS)]
    h2_max_concurrent_streams: u32,
    /// HTTP/2 streams reset by the peer before being accepted, before GOAWAY (rapid reset).
    #[arg(long, env = "BULWARK_H2_MAX_PENDING_RESETS", default_value_t = config::DEFAULT_H2_MAX_PENDING_RESETS)]
    h2_max_pending_resets: usize,
    /// HTTP/2 resets the proxy sends for peer errors before it closes the connection.
    #[arg(long, env = "BULWARK_H2_MAX_LOCAL_ERROR_RESETS", default_value_t = config::DEFAULT_H2_MAX_LOCAL_ERROR_RESETS)]
    h2_max_local_error_resets: usize,
    /// A connection with requests open and nothing of them moving for this long is closed.
    #[arg(long, env = "BULWARK_STREAM_IDLE_TIMEOUT", default_value_t = Dur(config::DEFAULT_STREAM_IDLE_TIMEOUT))]
    stream_idle_timeout: Dur,
    /// HTTP/2 streams a client may reset before their answer, once they are half of its
    /// recent streams, before the connection is closed (rapid reset).
    #[arg(long, env = "BULWARK_H2_MAX_PREMATURE_RESETS", default_value_t = config::DEFAULT_H2_MAX_PREMATURE_RESETS)]
    h2_max_premature_resets: u64,
    /// Idle upstream connections close after this long.
    #[arg(long, env = "BULWARK_POOL_IDLE_TIMEOUT", default_value_t = Dur(config::DEFAULT_POOL_IDLE_TIMEOUT))]
    pool_idle_timeout: Dur,
    /// Idle upstream connections kept per endpoint.
    #[arg(long, env = "BULWARK_POOL_MAX_IDLE_PER_ENDPOINT", default_value_t = config::DEFAULT_POOL_MAX_IDLE_PER_ENDPOINT)]
    pool_max_idle_per_endpoint: usize,
    /// Endpoints with a live connection pool (least recently used dropped beyond).
    #[arg(long, env = "BULWARK_POOL_MAX_ENDPOINTS", default_value_t = config::DEFAULT_POOL_MAX_ENDPOINTS)]
    pool_max_endpoints: usize,
    /// Distinct authority labels in metrics; the rest count as "other".
    #[arg(long, env = "BULWARK_METRICS_MAX_AUTHORITIES", default_value_t = config::DEFAULT_METRICS_MAX_AUTHORITIES)]
    metrics_max_authorities: usize,
    /// Most endpoints a policy snapshot may name, Backends together; a larger snapshot is
    /// rejected (NACKed) and the last good one kept.
    #[arg(long, env = "BULWARK_MAX_POLICY_ENDPOINTS", default_value_t = config::DEFAULT_MAX_POLICY_ENDPOINTS)]
    max_policy_endpoints: usize,
    /// DNS servers for hostname endpoints (comma-separated IPs, port 53); the system's
    /// resolv.conf when empty.
    #[arg(long, env = "BULWARK_DNS_SERVERS", value_delimiter = ',')]
    dns_servers: Vec<std::net::IpAddr>,
    /// Shortest time between two lookups of a hostname endpoint, whatever its TTL.
    #[arg(long, env = "BULWARK_DNS_MIN_REFRESH", default_value_t = Dur(config::DEFAULT_DNS_MIN_REFRESH))]
    dns_min_refresh: Dur,
    /// Longest time a DNS answer is used, whatever its TTL.
    #[arg(long, env = "BULWARK_DNS_MAX_REFRESH", default_value_t = Dur(config::DEFAULT_DNS_MAX_REFRESH))]
    dns_max_refresh: Dur,
    /// Runtime worker threads: match the pod's CPU limit (one for most sidecars).
    #[arg(long, env = "BULWARK_WORKER_THREADS", default_value_t = config::DEFAULT_WORKER_THREADS)]
    worker_threads: usize,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[arg(long, env = "BULWARK_SHUTDOWN_GRACE", default_value_t = Dur(config::DEFAULT_SHUTDOWN_GRACE))]
    shutdown_grace: Dur,
}

impl RunArgs {
    fn into_config(self) -> Config {
        let mut c = Config::default();
        c.outbound_addr.set_port(self.outbound_port);
        c.inbound_addr.set_port(self.inbound_port);
        c.admin_addr = self.admin_addr;
        c.ipv6 = self.ipv6;
        c.verify_redirect = self.verify_redirect;
        c.proxy_uid = self.proxy_uid;
        c.proxy_gid = self.proxy_gid;
        c.admin_shutdown = self.admin_shutdown;
        c.control_plane = self.control_plane;
        c.policy_paths = self.policy;
        let (namespace, name) = self
            .workload
            .split_once('/')
            .unwrap_or(("default", &self.workload));
        c.workload = bulwark_proxy::config::WorkloadConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            service_account: self.service_account,
            pod_ips: self.pod_ips,
        };
        c.detect.timeout = self.detect_timeout.0;
        c.detect.opaque_ports = self.opaque_ports;
        c.detect.learn_threshold = self.detect_learn_threshold;
        c.detect.learn_ttl = self.detect_learn_ttl.0;
        c.tcp.connect_timeout = self.connect_timeout.0;
        c.tcp.idle_timeout = self.tcp_idle_timeout.0;
        c.tcp.keepalive = self.tcp_keepalive.0;
        c.http.header_read_timeout = self.header_read_timeout.0;
        c.http.max_header_bytes = self.max_header_bytes;
        c.http.max_headers = self.max_headers;
        c.http.h2_max_concurrent_streams = self.h2_max_concurrent_streams;
        c.http.h2_max_pending_resets = self.h2_max_pending_resets;
        c.http.h2_max_local_error_resets = self.h2_max_local_error_resets;
        c.http.h2_flood.max_premature_resets = self.h2_max_premature_resets;
        c.http.stream_idle_timeout = self.stream_idle_timeout.0;
        c.worker_threads = self.worker_threads;
        c.http.pool_idle_timeout = self.pool_idle_timeout.0;
        c.http.pool_max_idle_per_endpoint = self.pool_max_idle_per_endpoint;
        c.http.pool_max_endpoints = self.pool_max_endpoints;
        c.metrics_max_authorities = self.metrics_max_authorities;
        c.max_policy_endpoints = self.max_policy_endpoints;
        c.dns.servers = self.dns_servers;
        c.dns.min_refresh = self.dns_min_refresh.0;
        c.dns.max_refresh = self.dns_max_refresh.0;
        c.shutdown_grace = self.shutdown_grace.0;
        c
    }
}

#[derive(Args, Debug)]
struct InitArgs {
    /// Print the rules instead of applying them.
    #[arg(long, env = "BULWARK_INIT_DRY_RUN")]
    dry_run: bool,
    /// Verify the rules are in place; exit 1 if not.
    #[arg(long, env = "BULWARK_INIT_CHECK", conflicts_with = "dry_run")]
    check: bool,
    /// Inbound listener port (REDIRECT target of PREROUTING).
    #[arg(long, env = "BULWARK_INBOUND_PORT", default_value_t = config::DEFAULT_INBOUND_PORT)]
    inbound_port: u16,
    /// Outbound listener port (REDIRECT target of OUTPUT).
    #[arg(long, env = "BULWARK_OUTBOUND_PORT", default_value_t = config::DEFAULT_OUTBOUND_PORT)]
    outbound_port: u16,
    /// Admin port: never redirected.
    #[arg(long, env = "BULWARK_ADMIN_PORT", default_value_t = config::DEFAULT_ADMIN_PORT)]
    admin_port: u16,
    /// UID of the proxy: its traffic is not redirected.
    #[arg(long, env = "BULWARK_PROXY_UID", default_value_t = config::DEFAULT_PROXY_UID)]
    proxy_uid: u32,
    /// GID of the proxy: its traffic is not redirected.
    #[arg(long, env = "BULWARK_PROXY_GID", default_value_t = config::DEFAULT_PROXY_GID)]
    proxy_gid: u32,
    /// Inbound ports (or ranges like 8000:8010) not redirected, comma-separated.
    #[arg(long, env = "BULWARK_SKIP_INBOUND_PORTS", value_delimiter = ',')]
    skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports (or ranges) not redirected, comma-separated.
    #[arg(long, env = "BULWARK_SKIP_OUTBOUND_PORTS", value_delimiter = ',')]
    skip_outbound_ports: Vec<PortRange>,
    /// Outbound destination networks not redirected, e.g. 169.254.169.254/32,fd00::/8.
    #[arg(long, env = "BULWARK_SKIP_OUTBOUND_CIDRS", value_delimiter = ',')]
    skip_outbound_cidrs: Vec<IpNet>,
    /// Program IPv6 rules too.
    #[arg(long, env = "BULWARK_IPV6_MODE", value_enum, default_value = "auto")]
    ipv6: Ipv6Mode,
    /// iptables backend.
    #[arg(
        long,
        env = "BULWARK_IPTABLES_BACKEND",
        value_enum,
        default_value = "auto"
    )]
    iptables_backend: Iptables,
}

#[derive(Args, Debug)]
struct AwaitArgs {
    /// The local proxy's admin address.
    #[arg(
        long,
        env = "BULWARK_AWAIT_ADMIN_ADDR",
        default_value_t = config::DEFAULT_AWAIT_ADMIN_ADDR
    )]
    admin_addr: SocketAddr,
    /// Give up (exit 1 without running CMD) after this long.
    #[arg(long, env = "BULWARK_AWAIT_TIMEOUT", default_value_t = Dur(config::DEFAULT_AWAIT_TIMEOUT))]
    timeout: Dur,
    /// The command to run once the proxy is ready.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

/// The log filter behind a reload handle, so the admin port can change it.
#[derive(Debug)]
struct ReloadableFilter(reload::Handle<EnvFilter, Registry>);

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
fn init_logging(format: &str) -> ReloadableFilter {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = init_logging(&cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run(*args, log),
        Command::Init(args) => init_cmd(args),
        Command::Await(args) => await_cmd(args),
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
    Ok(ExitCode::SUCCESS)
}

/// Polls `/ready` on the admin port, then replaces this process with CMD.
fn await_cmd(a: AwaitArgs) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let deadline = Instant::now() + a.timeout.0;
    let mut last;
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s =
                std::net::TcpStream::connect_timeout(&a.admin_addr, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        })();
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
                a.admin_addr,
                a.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = std::process::Command::new(&a.cmd[0])
        .args(&a.cmd[1..])
        .exec();
    bail!("could not run {:?}: {err}", a.cmd[0])
}
