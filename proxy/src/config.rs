//! Typed proxy configuration: every default in one place, cross-field validation, and a
//! serialisable form so `/config_dump` shows exactly what runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

/// Port the outbound listener binds on loopback; the OUTPUT chain redirects here.
pub const DEFAULT_OUTBOUND_PORT: u16 = 5140;
/// Port the inbound listener binds on every address; the PREROUTING chain redirects here.
pub const DEFAULT_INBOUND_PORT: u16 = 5143;
/// Admin port (metrics, readiness). Never redirected.
pub const DEFAULT_ADMIN_PORT: u16 = 5191;
/// Admin listener: every address, so kubelet probes and Prometheus reach it.
pub const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_ADMIN_PORT);
/// Where `await` finds the local proxy's admin port.
pub const DEFAULT_AWAIT_ADMIN_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_ADMIN_PORT);
/// Longest a classic sidecar's `linger` (its preStop hook) holds the proxy's SIGTERM back;
/// with the default shutdown grace it stays inside the pod's default 30 s termination grace.
pub const DEFAULT_LINGER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the app must have had no outbound connection through the proxy for `linger`
/// to take it as done.
pub const DEFAULT_LINGER_QUIET: Duration = Duration::from_secs(2);
/// How long `await` waits for the proxy to be ready.
pub const DEFAULT_AWAIT_TIMEOUT: Duration = Duration::from_secs(120);
/// UID the proxy runs as; its own traffic is exempt from redirection by owner match.
pub const DEFAULT_PROXY_UID: u32 = 5102;
/// GID the proxy runs as.
pub const DEFAULT_PROXY_GID: u32 = 5102;
/// How long to wait for a client's first bytes before forwarding the connection as opaque
/// TCP. Linkerd waits 10 s; a short wait bounds the stall of server-speaks-first protocols.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive connections to a destination port whose detection timed out and whose
/// server then spoke first, after which that port is treated as opaque without waiting.
pub const DEFAULT_DETECT_LEARN_THRESHOLD: u32 = 2;
/// How long a learned opaque port stays opaque before detection is tried again.
pub const DEFAULT_DETECT_LEARN_TTL: Duration = Duration::from_secs(600);
/// Ports whose protocols speak first or are known not to be HTTP (Linkerd's list).
pub const DEFAULT_OPAQUE_PORTS: [u16; 8] = [25, 587, 3306, 4444, 5432, 6379, 9300, 11211];
/// Upstream TCP connect timeout (Linkerd 1 s, Envoy 5 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Opaque TCP connections with no bytes in either direction for this long are closed.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// TCP keepalive idle time on both legs of a proxied connection.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// HTTP/1 request head must arrive within this time (slowloris bound).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP/1 request head in bytes, and the HTTP/2 header list size. Larger → 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most header fields in one HTTP/1 request. More → 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// A downstream connection with requests open and nothing of them moving for this long is
/// closed (Envoy's `stream_idle_timeout`, 5 min).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Idle upstream connections are closed after this long in the pool.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream endpoint.
pub const DEFAULT_POOL_MAX_IDLE_PER_ENDPOINT: usize = 32;
/// Upstream endpoints with a live pool; the least recently used pool is dropped beyond this.
pub const DEFAULT_POOL_MAX_ENDPOINTS: usize = 1024;
/// Distinct authority label values in metrics; the rest are counted under `other`.
pub const DEFAULT_METRICS_MAX_AUTHORITIES: usize = 256;
/// Endpoints one policy snapshot may name. Each costs run-time state (latency, outlier
/// state), a connection pool when used, and metric series; 10,000 is far beyond what one
/// workload calls, and bounds what a mistaken policy generator can make a proxy hold.
pub const DEFAULT_MAX_POLICY_ENDPOINTS: usize = 10_000;
/// Shortest time between two DNS lookups of a hostname endpoint, whatever its TTL.
pub const DEFAULT_DNS_MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest time a DNS answer is used, whatever its TTL.
pub const DEFAULT_DNS_MAX_REFRESH: Duration = Duration::from_secs(300);
/// Runtime worker threads. A sidecar gets a CPU limit of one core or less; each worker
/// beyond the cores it may use only adds contention.
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// On SIGTERM, in-flight requests and connections get this long to finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Everything `bulwark-proxy run` needs, already parsed and validated.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Where the outbound listener binds (loopback: only the pod's own apps may use it).
    pub outbound_addr: SocketAddr,
    /// Where the inbound listener binds.
    pub inbound_addr: SocketAddr,
    /// Where the admin server binds.
    pub admin_addr: SocketAddr,
    /// Also bind IPv6 listeners (`[::1]` outbound, `[::]` inbound).
    pub ipv6: bool,
    /// Require the iptables rules to be verified before `/ready` answers 200.
    pub verify_redirect: bool,
    /// The UID and GID whose traffic is exempt from redirection (used by the check).
    pub proxy_uid: u32,
    /// See `proxy_uid`.
    pub proxy_gid: u32,
    /// Enable `POST /shutdown` on the admin port (loopback peers only).
    pub admin_shutdown: bool,
    /// The control plane's gRPC endpoint (`http://host:5170`); none runs on flags alone.
    pub control_plane: Option<String>,
    /// Policy files or directories read once at start instead of a control plane (the
    /// run-locally mode).
    pub policy_paths: Vec<std::path::PathBuf>,
    /// What the proxy tells the control plane about itself.
    pub workload: WorkloadConfig,
    /// Protocol detection settings.
    pub detect: DetectConfig,
    /// Connection-level settings for both legs.
    pub tcp: TcpConfig,
    /// HTTP server and client limits.
    pub http: HttpConfig,
    /// Bound on distinct authority labels in metrics.
    pub metrics_max_authorities: usize,
    /// Most endpoints a policy snapshot may name; a larger one is rejected (NACKed).
    pub max_policy_endpoints: usize,
    /// Resolving hostname endpoints of Backends.
    pub dns: DnsConfig,
    /// Grace period for in-flight work on shutdown.
    #[serde(with = "duration_str")]
    pub shutdown_grace: Duration,
    /// Runtime worker threads.
    pub worker_threads: usize,
    /// Mesh identity and TLS.
    pub identity: IdentityConfig,
    /// The app's HTTP probes, admitted in plaintext on their ports whatever the mTLS mode.
    pub inbound_probes: Vec<ProbeRoute>,
}

/// The workload this proxy serves.
#[derive(Debug, Clone, Serialize, Default)]
pub struct WorkloadConfig {
    /// Namespace; scopes the policy the proxy receives.
    pub namespace: String,
    /// Workload name.
    pub name: String,
    /// Service account.
    pub service_account: String,
    /// The pod's IPs.
    pub pod_ips: Vec<String>,
    /// The pod's name (empty outside Kubernetes).
    pub pod: String,
}

/// Protocol detection.
#[derive(Debug, Clone, Serialize)]
pub struct DetectConfig {
    /// Time to wait for the client's first bytes.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Destination ports never detected: forwarded as opaque TCP at once.
    pub opaque_ports: Vec<u16>,
    /// Consecutive time-outs before a port is learned as opaque; 0 turns learning off.
    pub learn_threshold: u32,
    /// How long a learned port stays opaque.
    #[serde(with = "duration_str")]
    pub learn_ttl: Duration,
}

/// TCP settings.
#[derive(Debug, Clone, Serialize)]
pub struct TcpConfig {
    /// Upstream connect timeout.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// Idle timeout for opaque connections.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// TCP keepalive idle time.
    #[serde(with = "duration_str")]
    pub keepalive: Duration,
}

/// HTTP limits.
#[derive(Debug, Clone, Serialize)]
pub struct HttpConfig {
    /// Request head read timeout (HTTP/1).
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// Request head size limit in bytes.
    pub max_header_bytes: usize,
    /// Header field count limit (HTTP/1).
    pub max_headers: usize,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 pending-reset bound.
    pub h2_max_pending_resets: usize,
    /// HTTP/2 local-error-reset bound.
    pub h2_max_local_error_resets: usize,
    /// HTTP/2 flood bounds the proxy keeps itself.
    pub h2_flood: H2Limits,
    /// Requests open with nothing moving: the connection is closed.
    #[serde(with = "duration_str")]
    pub stream_idle_timeout: Duration,
    /// Pool idle timeout.
    #[serde(with = "duration_str")]
    pub pool_idle_timeout: Duration,
    /// Idle connections per endpoint.
    pub pool_max_idle_per_endpoint: usize,
    /// Endpoints with a live pool.
    pub pool_max_endpoints: usize,
    /// When a request without `x-request-id` gets one.
    pub request_id: RequestId,
    /// The access log: off, or its format.
    pub access_log: AccessLogFormat,
    /// One access-log line per this many requests.
    pub access_log_sample: u32,
    /// The OTLP/gRPC collector spans go to (`http://host:4317`); none: no spans.
    pub otlp_endpoint: Option<String>,
    /// How HTTP/1 requests travel to meshed peers.
    pub mesh_http1: MeshHttp1,
}

/// DNS for hostname endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct DnsConfig {
    /// Name servers (port 53); empty means the system's (`/etc/resolv.conf`).
    pub servers: Vec<IpAddr>,
    /// Floor on the time between lookups of one name.
    #[serde(with = "duration_str")]
    pub min_refresh: Duration,
    /// Ceiling on the time an answer is used.
    #[serde(with = "duration_str")]
    pub max_refresh: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            outbound_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_OUTBOUND_PORT)),
            inbound_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_INBOUND_PORT)),
            admin_addr: DEFAULT_ADMIN_ADDR,
            ipv6: false,
            verify_redirect: false,
            proxy_uid: DEFAULT_PROXY_UID,
            proxy_gid: DEFAULT_PROXY_GID,
            admin_shutdown: false,
            control_plane: None,
            policy_paths: Vec::new(),
            identity: IdentityConfig::default(),
            inbound_probes: Vec::new(),
            workload: WorkloadConfig {
                namespace: "default".into(),
                ..Default::default()
            },
            detect: DetectConfig {
                timeout: DEFAULT_DETECT_TIMEOUT,
                opaque_ports: DEFAULT_OPAQUE_PORTS.to_vec(),
                learn_threshold: DEFAULT_DETECT_LEARN_THRESHOLD,
                learn_ttl: DEFAULT_DETECT_LEARN_TTL,
            },
            tcp: TcpConfig {
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
                keepalive: DEFAULT_TCP_KEEPALIVE,
            },
            http: HttpConfig {
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
                max_headers: DEFAULT_MAX_HEADERS,
                h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
                h2_max_pending_resets: DEFAULT_H2_MAX_PENDING_RESETS,
                h2_max_local_error_resets: DEFAULT_H2_MAX_LOCAL_ERROR_RESETS,
                h2_flood: H2Limits::default(),
                stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
                pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
                pool_max_idle_per_endpoint: DEFAULT_POOL_MAX_IDLE_PER_ENDPOINT,
                pool_max_endpoints: DEFAULT_POOL_MAX_ENDPOINTS,
                request_id: RequestId::Auto,
                access_log: AccessLogFormat::Off,
                access_log_sample: DEFAULT_ACCESS_LOG_SAMPLE,
                otlp_endpoint: None,
                mesh_http1: MeshHttp1::Pooled,
            },
            metrics_max_authorities: DEFAULT_METRICS_MAX_AUTHORITIES,
            max_policy_endpoints: DEFAULT_MAX_POLICY_ENDPOINTS,
            dns: DnsConfig {
                servers: Vec::new(),
                min_refresh: DEFAULT_DNS_MIN_REFRESH,
                max_refresh: DEFAULT_DNS_MAX_REFRESH,
            },
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            worker_threads: DEFAULT_WORKER_THREADS,
        }
    }
}

impl Config {
    /// Checks the rules no single flag can: distinct listener ports and non-zero bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listeners = [
            ("--outbound-port", self.outbound_addr),
            ("--inbound-port", self.inbound_addr),
            ("--admin-addr", self.admin_addr),
        ];
        for (i, (a, x)) in listeners.iter().enumerate() {
            for (b, y) in &listeners[i + 1..] {
                if x.port() == y.port() && x.port() != 0 {
                    return Err(ConfigError::PortClash { a, b, addr: *x });
                }
            }
        }
        let nonzero = [
            ("--detect-timeout", self.detect.timeout.is_zero()),
            ("--connect-timeout", self.tcp.connect_timeout.is_zero()),
            (
                "--header-read-timeout",
                self.http.header_read_timeout.is_zero(),
            ),
            ("--max-header-bytes", self.http.max_header_bytes == 0),
            (
                "--stream-idle-timeout",
                self.http.stream_idle_timeout.is_zero(),
            ),
            ("--max-headers", self.http.max_headers == 0),
            (
                "--h2-max-concurrent-streams",
                self.http.h2_max_concurrent_streams == 0,
            ),
            (
                "--h2-max-premature-resets",
                self.http.h2_flood.max_premature_resets == 0,
            ),
            ("--pool-max-endpoints", self.http.pool_max_endpoints == 0),
            ("--access-log-sample", self.http.access_log_sample == 0),
            (
                "--metrics-max-authorities",
                self.metrics_max_authorities == 0,
            ),
            ("--max-policy-endpoints", self.max_policy_endpoints == 0),
            ("--worker-threads", self.worker_threads == 0),
        ];
        if self.control_plane.is_some() && !self.policy_paths.is_empty() {
            return Err(ConfigError::TwoPolicySources);
        }
        if self.identity.token_file.is_some() && self.control_plane.is_none() {
            return Err(ConfigError::TokenWithoutControlPlane);
        }
        match nonzero.into_iter().find(|(_, zero)| *zero) {
            Some((field, _)) => Err(ConfigError::Zero { field }),
            None => Ok(()),
        }
    }
}

mod duration;
mod error;
mod h2;
mod identity;
mod observe;
mod probe;

use self::duration::duration_str;
pub use self::duration::{Dur, format_duration, parse_duration};
pub use self::error::ConfigError;
pub use self::h2::{
    DEFAULT_H2_MAX_CONCURRENT_STREAMS, DEFAULT_H2_MAX_LOCAL_ERROR_RESETS,
    DEFAULT_H2_MAX_PENDING_RESETS, DEFAULT_H2_MAX_PREMATURE_RESETS, H2_MAX_EMPTY_FRAMES,
    H2_MAX_PRIORITY_PER_STREAM, H2_MAX_WINDOW_UPDATES_PER_DATA_FRAME, H2Limits,
};
pub use self::identity::{
    CONTROL_PLANE_SERVICE_ACCOUNT, DEFAULT_CONTROL_PLANE_NAMESPACE, IdentityConfig, MeshHttp1,
};
pub use self::observe::{ACCESS_LOG_QUEUE, AccessLogFormat, DEFAULT_ACCESS_LOG_SAMPLE, RequestId};
pub use self::probe::ProbeRoute;

#[cfg(test)]
mod tests;
