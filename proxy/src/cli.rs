//! The command line of the `bulwark-proxy` binary (not part of the library): the
//! subcommands and every flag, with the environment variable and default of each; `run`'s
//! flags become a [`Config`].

use std::net::SocketAddr;

use bulwark_proxy::config::{self, Config, Dur};
use bulwark_proxy::init::{Iptables, Ipv6Mode, PortRange};
use clap::{ArgAction, Args, Parser, Subcommand};
use ipnet::IpNet;

#[derive(Parser, Debug)]
#[command(
    name = "bulwark-proxy",
    version,
    about = "Bulwark service-mesh sidecar proxy"
)]
pub(crate) struct Cli {
    /// Log format.
    #[arg(long, env = "BULWARK_LOG_FORMAT", default_value = "text", global = true, value_parser = ["text", "json"])]
    pub(crate) log_format: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the proxy.
    Run(Box<RunArgs>),
    /// Write the iptables rules that redirect the pod's traffic to the proxy, then exit.
    Init(InitArgs),
    /// Wait until the local proxy is ready, then run CMD in its place.
    Await(AwaitArgs),
    /// Wait until the app has stopped calling out through the local proxy (a classic
    /// sidecar's preStop hook: the proxy's SIGTERM waits for it).
    Linger(LingerArgs),
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Port of the outbound listener (bound on loopback).
    #[arg(long, env = "BULWARK_OUTBOUND_PORT", default_value_t = config::DEFAULT_OUTBOUND_PORT)]
    pub(crate) outbound_port: u16,
    /// Port of the inbound listener (bound on every address).
    #[arg(long, env = "BULWARK_INBOUND_PORT", default_value_t = config::DEFAULT_INBOUND_PORT)]
    pub(crate) inbound_port: u16,
    /// Address of the admin server.
    #[arg(long, env = "BULWARK_ADMIN_ADDR", default_value_t = config::DEFAULT_ADMIN_ADDR)]
    pub(crate) admin_addr: SocketAddr,
    /// Also listen on IPv6 ([::1] outbound, [::] inbound) and verify ip6tables rules: `on`,
    /// `off`, or `auto` (when the kernel has IPv6), the values `init --ipv6` takes; `true`
    /// and `false` still read as `on` and `off`.
    #[arg(long, env = "BULWARK_IPV6", value_enum, default_value = "off")]
    pub(crate) ipv6: Ipv6Mode,
    /// Hold /ready at 503 until the iptables rules read back as written. Needs CAP_NET_ADMIN,
    /// so it is off by default: `init` proves the rules by connecting through them, and the
    /// proxy runs with every capability dropped.
    #[arg(long, env = "BULWARK_VERIFY_REDIRECT", default_value_t = false, action = ArgAction::Set)]
    pub(crate) verify_redirect: bool,
    /// UID whose traffic the rules exempt; the proxy must run as this UID.
    #[arg(long, env = "BULWARK_PROXY_UID", default_value_t = config::DEFAULT_PROXY_UID)]
    pub(crate) proxy_uid: u32,
    /// GID whose traffic the rules exempt.
    #[arg(long, env = "BULWARK_PROXY_GID", default_value_t = config::DEFAULT_PROXY_GID)]
    pub(crate) proxy_gid: u32,
    /// The control plane's gRPC address, e.g. bulwark-control-plane:5170 (or with http://).
    /// Without it the proxy runs on its flags alone, as a transparent proxy.
    #[arg(long, env = "BULWARK_CONTROL_PLANE", value_parser = bulwark_api::endpoint::control_plane_uri)]
    pub(crate) control_plane: Option<String>,
    /// Policy YAML files or directories, read once at start, instead of a control plane
    /// (run-locally mode). Documents of the workload's namespace and the MeshConfig apply.
    #[arg(long = "policy", env = "BULWARK_POLICY", value_delimiter = ',')]
    pub(crate) policy: Vec<std::path::PathBuf>,
    /// This pod's workload as NAMESPACE/NAME; the namespace scopes the policy it receives.
    #[arg(long, env = "BULWARK_WORKLOAD", default_value = "default/unknown")]
    pub(crate) workload: String,
    /// This pod's service account.
    #[arg(long, env = "BULWARK_SERVICE_ACCOUNT", default_value = "default")]
    pub(crate) service_account: String,
    /// This pod's IPs (comma-separated), reported to the control plane.
    #[arg(long, env = "BULWARK_POD_IPS", value_delimiter = ',')]
    pub(crate) pod_ips: Vec<String>,
    /// The pod's name, reported to the control plane (shown by `bulwarkctl status`).
    #[arg(long, env = "BULWARK_POD_NAME", default_value = "")]
    pub(crate) pod_name: String,
    /// PEM bundle of the mesh's roots. Given, the control-plane channel is TLS and the
    /// control plane must prove its identity.
    #[arg(long, env = "BULWARK_TRUST_ANCHORS")]
    pub(crate) trust_anchors: Option<std::path::PathBuf>,
    /// File holding the bootstrap token that grants this pod's identity (`bulwarkctl token
    /// create`). Given with --trust-anchors, the proxy obtains a mesh certificate.
    #[arg(long, env = "BULWARK_IDENTITY_TOKEN_FILE", requires = "trust_anchors")]
    pub(crate) identity_token_file: Option<std::path::PathBuf>,
    /// The mesh's SPIFFE trust domain.
    #[arg(long, env = "BULWARK_TRUST_DOMAIN", default_value = bulwark_identity::DEFAULT_TRUST_DOMAIN)]
    pub(crate) trust_domain: String,
    /// The control plane's namespace (part of the identity it must prove).
    #[arg(long, env = "BULWARK_CONTROL_PLANE_NAMESPACE", default_value = config::DEFAULT_CONTROL_PLANE_NAMESPACE)]
    pub(crate) control_plane_namespace: String,
    /// When a request without `x-request-id` gets one (a random UUID), so one request's
    /// hops can be found in the logs: `auto` (while the access log is on), `on` or `off`.
    #[arg(long, env = "BULWARK_REQUEST_ID", value_enum, default_value_t = config::RequestId::Auto)]
    pub(crate) request_id: config::RequestId,
    /// The access log on stdout: `off`, `text` (key=value) or `json`, one line per request.
    #[arg(long, env = "BULWARK_ACCESS_LOG", value_enum, default_value_t = config::AccessLogFormat::Off)]
    pub(crate) access_log: config::AccessLogFormat,
    /// Log one request in this many (1: every request).
    #[arg(long, env = "BULWARK_ACCESS_LOG_SAMPLE", default_value_t = config::DEFAULT_ACCESS_LOG_SAMPLE)]
    pub(crate) access_log_sample: u32,
    /// Export a span of each request whose `traceparent` is sampled to this OTLP/gRPC
    /// collector (`http://otel-collector.observability:4317`); off when unset.
    #[arg(long, env = "BULWARK_OTLP_ENDPOINT")]
    pub(crate) otlp_endpoint: Option<String>,
    /// How HTTP/1 requests travel to a meshed peer: `pooled` (on pooled HTTP/1 mesh
    /// connections, one request at a time each) or `multiplexed` (as HTTP/2 streams on the
    /// one mesh connection the two proxies share, restored to HTTP/1 by the peer's proxy;
    /// upgrades stay HTTP/1).
    #[arg(long, env = "BULWARK_MESH_HTTP1", value_enum, default_value_t = config::MeshHttp1::Pooled)]
    pub(crate) mesh_http1: config::MeshHttp1,
    /// Enable POST /shutdown on the admin port (accepted from loopback only).
    #[arg(long, env = "BULWARK_ADMIN_SHUTDOWN", default_value_t = false, action = ArgAction::Set)]
    pub(crate) admin_shutdown: bool,
    /// How long to wait for a client's first bytes before forwarding as opaque TCP.
    #[arg(long, env = "BULWARK_DETECT_TIMEOUT", default_value_t = Dur(config::DEFAULT_DETECT_TIMEOUT))]
    pub(crate) detect_timeout: Dur,
    /// The app's HTTP probes as PORT:PATH (comma-separated, e.g. `8080:/healthz`): a
    /// plaintext GET or HEAD of exactly that path on that port is admitted in every mTLS
    /// mode and before authorization, so the kubelet's probes work on strict ports.
    #[arg(
        long = "inbound-probe",
        env = "BULWARK_INBOUND_PROBES",
        value_delimiter = ','
    )]
    pub(crate) inbound_probes: Vec<bulwark_proxy::config::ProbeRoute>,
    /// Destination ports forwarded as opaque TCP without detection (comma-separated).
    #[arg(
        long,
        env = "BULWARK_OPAQUE_PORTS",
        value_delimiter = ',',
        default_values_t = config::DEFAULT_OPAQUE_PORTS
    )]
    pub(crate) opaque_ports: Vec<u16>,
    /// Consecutive detection time-outs, each followed by the server speaking first, after
    /// which a port is learned as opaque (0: never).
    #[arg(long, env = "BULWARK_DETECT_LEARN_THRESHOLD", default_value_t = config::DEFAULT_DETECT_LEARN_THRESHOLD)]
    pub(crate) detect_learn_threshold: u32,
    /// How long a learned opaque port stays opaque.
    #[arg(long, env = "BULWARK_DETECT_LEARN_TTL", default_value_t = Dur(config::DEFAULT_DETECT_LEARN_TTL))]
    pub(crate) detect_learn_ttl: Dur,
    /// Upstream TCP connect timeout.
    #[arg(long, env = "BULWARK_CONNECT_TIMEOUT", default_value_t = Dur(config::DEFAULT_CONNECT_TIMEOUT))]
    pub(crate) connect_timeout: Dur,
    /// Opaque connections idle this long are closed.
    #[arg(long, env = "BULWARK_TCP_IDLE_TIMEOUT", default_value_t = Dur(config::DEFAULT_TCP_IDLE_TIMEOUT))]
    pub(crate) tcp_idle_timeout: Dur,
    /// TCP keepalive idle time on both legs.
    #[arg(long, env = "BULWARK_TCP_KEEPALIVE", default_value_t = Dur(config::DEFAULT_TCP_KEEPALIVE))]
    pub(crate) tcp_keepalive: Dur,
    /// An HTTP/1 request head must arrive within this time.
    #[arg(long, env = "BULWARK_HEADER_READ_TIMEOUT", default_value_t = Dur(config::DEFAULT_HEADER_READ_TIMEOUT))]
    pub(crate) header_read_timeout: Dur,
    /// Largest request head (HTTP/1) or header list (HTTP/2) in bytes; larger gets 431.
    #[arg(long, env = "BULWARK_MAX_HEADER_BYTES", default_value_t = config::DEFAULT_MAX_HEADER_BYTES)]
    pub(crate) max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request; more gets 431.
    #[arg(long, env = "BULWARK_MAX_HEADERS", default_value_t = config::DEFAULT_MAX_HEADERS)]
    pub(crate) max_headers: usize,
    /// Concurrent HTTP/2 streams per downstream connection.
    #[arg(long, env = "BULWARK_H2_MAX_CONCURRENT_STREAMS", default_value_t = config::DEFAULT_H2_MAX_CONCURRENT_STREAMS)]
    pub(crate) h2_max_concurrent_streams: u32,
    /// HTTP/2 streams reset by the peer before being accepted, before GOAWAY (rapid reset).
    #[arg(long, env = "BULWARK_H2_MAX_PENDING_RESETS", default_value_t = config::DEFAULT_H2_MAX_PENDING_RESETS)]
    pub(crate) h2_max_pending_resets: usize,
    /// HTTP/2 resets the proxy sends for peer errors before it closes the connection.
    #[arg(long, env = "BULWARK_H2_MAX_LOCAL_ERROR_RESETS", default_value_t = config::DEFAULT_H2_MAX_LOCAL_ERROR_RESETS)]
    pub(crate) h2_max_local_error_resets: usize,
    /// A connection with requests open and nothing of them moving for this long is closed.
    #[arg(long, env = "BULWARK_STREAM_IDLE_TIMEOUT", default_value_t = Dur(config::DEFAULT_STREAM_IDLE_TIMEOUT))]
    pub(crate) stream_idle_timeout: Dur,
    /// HTTP/2 streams a client may reset before their answer, once they are half of its
    /// recent streams, before the connection is closed (rapid reset).
    #[arg(long, env = "BULWARK_H2_MAX_PREMATURE_RESETS", default_value_t = config::DEFAULT_H2_MAX_PREMATURE_RESETS)]
    pub(crate) h2_max_premature_resets: u64,
    /// Idle upstream connections close after this long.
    #[arg(long, env = "BULWARK_POOL_IDLE_TIMEOUT", default_value_t = Dur(config::DEFAULT_POOL_IDLE_TIMEOUT))]
    pub(crate) pool_idle_timeout: Dur,
    /// Idle upstream connections kept per endpoint.
    #[arg(long, env = "BULWARK_POOL_MAX_IDLE_PER_ENDPOINT", default_value_t = config::DEFAULT_POOL_MAX_IDLE_PER_ENDPOINT)]
    pub(crate) pool_max_idle_per_endpoint: usize,
    /// Endpoints with a live connection pool (least recently used dropped beyond).
    #[arg(long, env = "BULWARK_POOL_MAX_ENDPOINTS", default_value_t = config::DEFAULT_POOL_MAX_ENDPOINTS)]
    pub(crate) pool_max_endpoints: usize,
    /// Distinct authority labels in metrics; the rest count as "other".
    #[arg(long, env = "BULWARK_METRICS_MAX_AUTHORITIES", default_value_t = config::DEFAULT_METRICS_MAX_AUTHORITIES)]
    pub(crate) metrics_max_authorities: usize,
    /// Most endpoints a policy snapshot may name, Backends together; a larger snapshot is
    /// rejected (NACKed) and the last good one kept.
    #[arg(long, env = "BULWARK_MAX_POLICY_ENDPOINTS", default_value_t = config::DEFAULT_MAX_POLICY_ENDPOINTS)]
    pub(crate) max_policy_endpoints: usize,
    /// DNS servers for hostname endpoints (comma-separated IPs, port 53); the system's
    /// resolv.conf when empty.
    #[arg(long, env = "BULWARK_DNS_SERVERS", value_delimiter = ',')]
    pub(crate) dns_servers: Vec<std::net::IpAddr>,
    /// Shortest time between two lookups of a hostname endpoint, whatever its TTL.
    #[arg(long, env = "BULWARK_DNS_MIN_REFRESH", default_value_t = Dur(config::DEFAULT_DNS_MIN_REFRESH))]
    pub(crate) dns_min_refresh: Dur,
    /// Longest time a DNS answer is used, whatever its TTL.
    #[arg(long, env = "BULWARK_DNS_MAX_REFRESH", default_value_t = Dur(config::DEFAULT_DNS_MAX_REFRESH))]
    pub(crate) dns_max_refresh: Dur,
    /// Runtime worker threads: match the pod's CPU limit (one for most sidecars).
    #[arg(long, env = "BULWARK_WORKER_THREADS", default_value_t = config::DEFAULT_WORKER_THREADS)]
    pub(crate) worker_threads: usize,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[arg(long, env = "BULWARK_SHUTDOWN_GRACE", default_value_t = Dur(config::DEFAULT_SHUTDOWN_GRACE))]
    pub(crate) shutdown_grace: Dur,
}

impl RunArgs {
    pub(crate) fn into_config(self) -> Config {
        let mut c = Config::default();
        c.outbound_addr.set_port(self.outbound_port);
        c.inbound_addr.set_port(self.inbound_port);
        c.admin_addr = self.admin_addr;
        c.ipv6 = match self.ipv6 {
            Ipv6Mode::On => true,
            Ipv6Mode::Off => false,
            Ipv6Mode::Auto => std::path::Path::new("/proc/net/if_inet6").exists(),
        };
        c.verify_redirect = self.verify_redirect;
        c.proxy_uid = self.proxy_uid;
        c.proxy_gid = self.proxy_gid;
        c.admin_shutdown = self.admin_shutdown;
        c.control_plane = self.control_plane;
        c.policy_paths = self.policy;
        c.identity = bulwark_proxy::config::IdentityConfig {
            trust_anchors: self.trust_anchors,
            token_file: self.identity_token_file,
            trust_domain: self.trust_domain,
            control_plane_namespace: self.control_plane_namespace,
        };
        let (namespace, name) = self
            .workload
            .split_once('/')
            .unwrap_or(("default", &self.workload));
        c.workload = bulwark_proxy::config::WorkloadConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            service_account: self.service_account,
            pod_ips: self.pod_ips,
            pod: self.pod_name,
        };
        c.inbound_probes = self.inbound_probes;
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
        c.http.request_id = self.request_id;
        c.http.access_log = self.access_log;
        c.http.access_log_sample = self.access_log_sample;
        c.http.otlp_endpoint = self.otlp_endpoint;
        c.http.mesh_http1 = self.mesh_http1;
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
pub(crate) struct InitArgs {
    /// Print the rules instead of applying them.
    #[arg(long, env = "BULWARK_INIT_DRY_RUN")]
    pub(crate) dry_run: bool,
    /// Verify the rules are in place; exit 1 if not.
    #[arg(long, env = "BULWARK_INIT_CHECK", conflicts_with = "dry_run")]
    pub(crate) check: bool,
    /// Inbound listener port (REDIRECT target of PREROUTING).
    #[arg(long, env = "BULWARK_INBOUND_PORT", default_value_t = config::DEFAULT_INBOUND_PORT)]
    pub(crate) inbound_port: u16,
    /// Outbound listener port (REDIRECT target of OUTPUT).
    #[arg(long, env = "BULWARK_OUTBOUND_PORT", default_value_t = config::DEFAULT_OUTBOUND_PORT)]
    pub(crate) outbound_port: u16,
    /// Admin port: never redirected.
    #[arg(long, env = "BULWARK_ADMIN_PORT", default_value_t = config::DEFAULT_ADMIN_PORT)]
    pub(crate) admin_port: u16,
    /// UID of the proxy: its traffic is not redirected.
    #[arg(long, env = "BULWARK_PROXY_UID", default_value_t = config::DEFAULT_PROXY_UID)]
    pub(crate) proxy_uid: u32,
    /// GID of the proxy: its traffic is not redirected.
    #[arg(long, env = "BULWARK_PROXY_GID", default_value_t = config::DEFAULT_PROXY_GID)]
    pub(crate) proxy_gid: u32,
    /// Inbound ports (or ranges like 8000:8010) not redirected, comma-separated.
    #[arg(long, env = "BULWARK_SKIP_INBOUND_PORTS", value_delimiter = ',')]
    pub(crate) skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports (or ranges) not redirected, comma-separated.
    #[arg(long, env = "BULWARK_SKIP_OUTBOUND_PORTS", value_delimiter = ',')]
    pub(crate) skip_outbound_ports: Vec<PortRange>,
    /// Outbound destination networks not redirected, e.g. 169.254.169.254/32,fd00::/8.
    #[arg(long, env = "BULWARK_SKIP_OUTBOUND_CIDRS", value_delimiter = ',')]
    pub(crate) skip_outbound_cidrs: Vec<IpNet>,
    /// Program IPv6 rules too.
    #[arg(long, env = "BULWARK_IPV6_MODE", value_enum, default_value = "auto")]
    pub(crate) ipv6: Ipv6Mode,
    /// iptables backend.
    #[arg(
        long,
        env = "BULWARK_IPTABLES_BACKEND",
        value_enum,
        default_value = "auto"
    )]
    pub(crate) iptables_backend: Iptables,
    /// After applying the rules, prove they redirect: connect to this pod's address on the
    /// sentinel port and see the connection arrive where the outbound rule sends it. A
    /// failure fails the init container, naming the rule.
    #[arg(long, env = "BULWARK_INIT_VALIDATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) validate: bool,
    /// The pod's IPv4 address to validate with (the downward API's status.podIP); the first
    /// address of a non-loopback interface when absent.
    #[arg(long, env = "BULWARK_POD_IP")]
    pub(crate) pod_ip: Option<std::net::IpAddr>,
}

/// Where `await` and `linger` find the local proxy.
#[derive(Args, Debug)]
pub(crate) struct LocalAdmin {
    /// The local proxy's admin address.
    #[arg(
        long,
        env = "BULWARK_AWAIT_ADMIN_ADDR",
        default_value_t = config::DEFAULT_AWAIT_ADMIN_ADDR
    )]
    pub(crate) admin_addr: SocketAddr,
}

#[derive(Args, Debug)]
pub(crate) struct LingerArgs {
    /// The local proxy.
    #[command(flatten)]
    pub(crate) local: LocalAdmin,
    /// Done once no outbound connection has been open for this long.
    #[arg(long, env = "BULWARK_LINGER_QUIET", default_value_t = Dur(config::DEFAULT_LINGER_QUIET))]
    pub(crate) quiet: Dur,
    /// Stop waiting (and exit 0: the proxy's own shutdown grace follows) after this long.
    #[arg(long, env = "BULWARK_LINGER_TIMEOUT", default_value_t = Dur(config::DEFAULT_LINGER_TIMEOUT))]
    pub(crate) timeout: Dur,
}

#[derive(Args, Debug)]
pub(crate) struct AwaitArgs {
    /// The local proxy.
    #[command(flatten)]
    pub(crate) local: LocalAdmin,
    /// Give up (exit 1 without running CMD) after this long.
    #[arg(long, env = "BULWARK_AWAIT_TIMEOUT", default_value_t = Dur(config::DEFAULT_AWAIT_TIMEOUT))]
    pub(crate) timeout: Dur,
    /// The command to run once the proxy is ready; without one, exit 0 then (a classic
    /// sidecar's postStart hook holds the app's containers back this way).
    #[arg(last = true)]
    pub(crate) cmd: Vec<String>,
}
