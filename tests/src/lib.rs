//! End-to-end harness: a pod is a network namespace.
//!
//! [`Mesh::new`] creates a bridge namespace; [`Mesh::pod`] adds a namespace joined to the
//! bridge by a veth pair, with an IPv4 and an IPv6 address. Inside a pod the harness runs
//! `bulwark-proxy init` (real iptables), the proxy under its own UID (via `setpriv`), apps
//! and clients. Dropping the mesh ends every process it started (by PID) and deletes its
//! namespaces. Traffic never leaves the namespaces the mesh created.
//!
//! Layout: this file has pods, the mesh, the proxy and test server launchers, [`Fault`]s and
//! [`wait_for`]; [`policy`] a mesh with a control plane and replicas; [`resources`] the
//! policy documents as typed values; [`kubernetes`] a recorded Kubernetes API and the
//! control plane following it.

use std::ffi::{OsStr, OsString};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

pub mod identity;
pub mod kubernetes;
pub mod policy;
pub mod resources;

/// UID and GID the proxy runs as in tests (the default of `bulwark-proxy`).
pub const PROXY_UID: u32 = 5102;

static MESH_SEQ: AtomicU32 = AtomicU32::new(0);

/// Where the workspace's binaries were built: next to the running test or binary.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable path");
    let mut dir = exe
        .parent()
        .expect("executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// The metric families docs/operations.md's table documents (its first column).
pub fn documented_families() -> Result<Vec<String>> {
    let doc = std::fs::read_to_string(workspace_root().join("docs/operations.md"))?;
    Ok(doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name))
        .filter(|name| name.starts_with("bulwark_") || name.starts_with("process_"))
        .map(str::to_string)
        .collect())
}

/// The workspace root (for the Python helpers under tests/py).
pub fn workspace_root() -> PathBuf {
    // Cargo names the running test's package directory (tests/ or benches/) at run time;
    // the one compiled in is only a fallback, because a build cache shared by two
    // checkouts can hand one checkout the other's library.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("a package directory has a parent")
        .to_path_buf()
}

/// The Python interpreter with grpcio, websockets and prometheus_client installed:
/// `BULWARK_TEST_PYTHON`, else the workspace's `.venv`.
pub fn python() -> PathBuf {
    std::env::var_os("BULWARK_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

/// A Python helper script under tests/py.
pub fn py_script(name: &str) -> PathBuf {
    workspace_root().join("tests/py").join(name)
}

/// The shell command that runs the helper `script` under tests/py with `args`.
pub fn py_command(script: &str, args: &str) -> String {
    format!(
        "{} {} {args}",
        python().display(),
        py_script(script).display()
    )
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok(out)
}

/// Runs `cmd`; fails with its output unless it succeeds; returns its stdout.
pub fn check(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    check(Command::new("ip").args(args))
}

/// `ip -n NS WORDS…`: one line per setup step instead of one array per step.
fn ip_in(ns: &str, words: &str) -> Result<String> {
    let mut args = vec!["-n", ns];
    args.extend(words.split_whitespace());
    ip(&args)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces left by earlier runs whose process is gone (a crashed test).
fn reap_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("bwt-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Calls `f` every 50 ms until it returns true, for at most `timeout`; an error from `f`
/// ends the wait at once. The one way tests wait for something to happen.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fault the test server injects (its module documentation has the meanings): given at
/// start with [`TestServerStart::fault`] or at run time with [`policy::PolicyMesh::fault`].
/// Setting one kind leaves the others as they are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Added to every request before it is answered (in whole milliseconds).
    Latency(Duration),
    /// This share of requests (0 to 1, spread evenly) is answered 503.
    FailRate(f64),
    /// The first `fail` of every `every` requests are answered 503.
    Burst {
        /// Requests failed at the start of each run of `every`.
        fail: u64,
        /// Length of a run.
        every: u64,
    },
    /// Ends [`Fault::Burst`].
    NoBurst,
    /// This share of requests is read whole, then the connection is closed unanswered.
    ResetRate(f64),
    /// This share of requests is held unanswered (accept-and-hang).
    HangRate(f64),
}

impl std::fmt::Display for Fault {
    /// The `key=value` the test server reads in `--fault` and `POST /_fault`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latency(d) => write!(f, "latency_ms={}", d.as_millis()),
            Self::FailRate(r) => write!(f, "fail_rate={r}"),
            Self::Burst { fail, every } => write!(f, "burst={fail}/{every}"),
            Self::NoBurst => f.write_str("burst=off"),
            Self::ResetRate(r) => write!(f, "reset_rate={r}"),
            Self::HangRate(r) => write!(f, "hang_rate={r}"),
        }
    }
}

/// setpriv's flags for a restricted container: no capability in any set, no new privileges.
const RESTRICTED: [&str; 5] = [
    "--inh-caps",
    "-all",
    "--bounding-set",
    "-all",
    "--no-new-privs",
];

/// `bulwark-proxy run` in a pod as a Kubernetes pod runs the sidecar: the proxy's UID and
/// GID, every capability dropped (bounding set too) and no new privileges. [`Mesh::proxy`]
/// starts one and waits for it; this is for a run a test drives itself.
#[derive(Debug, Clone)]
pub struct ProxyCommand {
    pod: Pod,
    cpu: Option<String>,
    flags: Vec<OsString>,
    binary: Option<PathBuf>,
    net_admin: bool,
}

impl ProxyCommand {
    /// The proxy with its defaults.
    pub fn new(pod: &Pod) -> Self {
        Self {
            pod: pod.clone(),
            cpu: None,
            flags: Vec::new(),
            binary: None,
            net_admin: false,
        }
    }

    /// Keeps CAP_NET_ADMIN, for `--verify-redirect true` (reading the rules back), the one
    /// feature that needs it.
    pub fn with_net_admin(mut self) -> Self {
        self.net_admin = true;
        self
    }

    /// Runs this build of the proxy instead of the workspace's (a benchmark comparing two).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Runs it on one CPU (`taskset -c cpu`).
    pub fn pinned_to(mut self, cpu: &str) -> Self {
        self.cpu = Some(cpu.into());
        self
    }

    /// Adds `name value` to its command line (e.g. `--shutdown-grace 10s`).
    pub fn flag(mut self, name: &str, value: impl AsRef<OsStr>) -> Self {
        self.flags.push(name.into());
        self.flags.push(value.as_ref().into());
        self
    }

    /// The command, ready to spawn or run.
    pub fn command(&self) -> Command {
        let mut c = match &self.cpu {
            Some(cpu) => {
                let mut c = self.pod.cmd("taskset");
                c.args(["-c", cpu, "setpriv"]);
                c
            }
            None => self.pod.cmd("setpriv"),
        };
        let uid = PROXY_UID.to_string();
        c.args(["--reuid", &uid, "--regid", &uid, "--clear-groups"]);
        if self.net_admin {
            c.args(["--inh-caps", "+net_admin", "--ambient-caps", "+net_admin"]);
        } else {
            c.args([
                "--inh-caps",
                "-all",
                "--bounding-set",
                "-all",
                "--no-new-privs",
            ]);
        }
        c.arg(self.binary.clone().unwrap_or_else(|| bin("bulwark-proxy")))
            .arg("run")
            .args(&self.flags);
        c
    }
}

/// A proxy about to be started by [`Mesh::proxy`].
#[derive(Debug)]
pub struct ProxyStart<'m> {
    mesh: &'m mut Mesh,
    proxy: ProxyCommand,
    init: bool,
}

impl<'m> ProxyStart<'m> {
    /// Adds `name value` to the proxy's command line.
    pub fn flag(mut self, name: &str, value: impl AsRef<OsStr>) -> Self {
        self.proxy = self.proxy.flag(name, value);
        self
    }

    /// Leaves the pod's rules as the test set them (no `bulwark-proxy init`).
    pub fn without_init(mut self) -> Self {
        self.init = false;
        self
    }

    /// Applies the rules (unless told not to), starts the proxy and waits until `/ready`
    /// answers 200.
    pub fn start(self) -> Result<ProxyPid> {
        let pod = self.proxy.pod.clone();
        let (pid, mesh) = self.launch()?;
        mesh.wait_ready(&pod, pid)?;
        Ok(ProxyPid(pid))
    }

    /// Like [`ProxyStart::start`], without waiting for `/ready` (a proxy expected never to
    /// be ready, or one the test watches become so).
    pub fn spawn(self) -> Result<ProxyPid> {
        Ok(ProxyPid(self.launch()?.0))
    }

    fn launch(self) -> Result<(u32, &'m mut Mesh)> {
        let pod = self.proxy.pod.clone();
        if self.init {
            self.mesh.init(&pod, &[])?;
        }
        let mut cmd = self.proxy.command();
        cmd.env("BULWARK_LOG", "info,bulwark_proxy=debug");
        // Hostname endpoints of example policies must not be looked up beyond the mesh:
        // 10.77.0.1 is on the pods' subnet but nobody's (a `--dns-servers` flag wins).
        cmd.env("BULWARK_DNS_SERVERS", "10.77.0.1");
        let pid = self.mesh.spawn(&pod, &format!("proxy-{}", pod.ns), cmd)?;
        Ok((pid, self.mesh))
    }
}

/// A test server about to be started by [`Mesh::testserver`].
#[derive(Debug)]
pub struct TestServerStart<'m> {
    mesh: &'m mut Mesh,
    pod: Pod,
    args: Vec<String>,
    ports: Vec<u16>,
}

impl TestServerStart<'_> {
    fn listen(mut self, flag: &str, addr: &str) -> Self {
        if let Some(port) = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
            self.ports.push(port);
        }
        self.args.extend([flag.to_string(), addr.to_string()]);
        self
    }

    /// Serves HTTP/1.1 and h2c on `addr` (e.g. `0.0.0.0:8080`, `[::]:8081`).
    pub fn http(self, addr: &str) -> Self {
        self.listen("--http", addr)
    }

    /// Serves the server-speaks-first banner service on `addr`.
    pub fn banner(self, addr: &str) -> Self {
        self.listen("--banner", addr)
    }

    /// The name it puts in its answers (`hello from NAME`).
    pub fn name(mut self, name: &str) -> Self {
        self.args.extend(["--name".into(), name.into()]);
        self
    }

    /// A fault in force from the first request.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.args.extend(["--fault".into(), fault.to_string()]);
        self
    }

    /// Starts it; returns its PID once every address it was given is listening.
    pub fn start(self) -> Result<u32> {
        let mut cmd = self.pod.cmd(bin("bulwark-testserver"));
        cmd.args(&self.args);
        let pid = self
            .mesh
            .spawn(&self.pod, &format!("testserver-{}", self.pod.ns), cmd)?;
        for port in self.ports {
            self.mesh.wait_listening(&self.pod, port)?;
        }
        Ok(pid)
    }
}

/// One series of the proxy's request latency, as `/stats` gives it (to response headers).
#[derive(Debug, Clone, Deserialize)]
pub struct Latency {
    /// `2xx`, `5xx`, …
    pub status_class: String,
    /// Requests recorded.
    pub count: u64,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, in milliseconds.
    pub p90_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
    /// The slowest, in milliseconds.
    pub max_ms: f64,
}

/// One pod: a network namespace on the mesh bridge.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Namespace name.
    pub ns: String,
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// IPv6 address.
    pub ip6: Ipv6Addr,
}

impl Pod {
    /// A command run inside the pod.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// `program` run inside the pod as `uid`/`gid` with every capability dropped (the
    /// bounding set too) and no new privileges: a container under Pod Security "restricted".
    pub fn restricted(&self, uid: u64, gid: u64, program: impl AsRef<OsStr>) -> Command {
        let mut c = self.cmd("setpriv");
        c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
            .arg("--clear-groups")
            .args(RESTRICTED)
            .arg(program);
        c
    }

    /// [`Pod::restricted`] with a read-only root filesystem as well, as
    /// `readOnlyRootFilesystem: true` gives a container: its own mount namespace where `/`
    /// is remounted read-only. The process keeps its PID through the chain of execs.
    pub fn restricted_read_only(&self, uid: u64, gid: u64, program: impl AsRef<OsStr>) -> Command {
        let mut c = self.cmd("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -o remount,bind,ro / && exec \"$0\" \"$@\"")
            .arg("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
            .arg("--clear-groups")
            .args(RESTRICTED)
            .arg(program);
        c
    }

    /// Waits up to `timeout` for a GET of `url` from inside the pod to succeed, as a
    /// kubelet's HTTP probe would.
    pub fn wait_probe(&self, url: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("{url} in {}", self.ns), timeout, || {
            Ok(self.sh(&format!("curl -sf -m 2 {url}"))?.status.success())
        })
    }

    /// Runs `sh -c script` inside the pod, bounded by `timeout` seconds; returns its output.
    pub fn sh(&self, script: &str) -> Result<Output> {
        run(self.cmd("timeout").args(["60", "sh", "-c", script]))
    }

    /// Like [`Pod::sh`] but fails unless the script succeeds; returns stdout.
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        check(self.cmd("timeout").args(["60", "sh", "-c", script]))
    }

    /// GETs `path` from this pod's proxy admin port (from inside the pod, on loopback).
    pub fn admin(&self, path: &str) -> Result<(u16, String)> {
        let out = self.sh_ok(&format!(
            "curl -s -m 5 -w '\\n%{{http_code}}' http://127.0.0.1:5191{path}"
        ))?;
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        Ok((code.parse().unwrap_or(0), body.to_string()))
    }

    /// Requests the test server on this pod's port 8080 received, by method (`"*"` for all),
    /// from its `/_stats` (asked from inside the pod, so no proxy counts the asking).
    pub fn served(&self, method: &str) -> Result<u64> {
        let out = self.sh_ok("curl -sf -m 5 http://127.0.0.1:8080/_stats")?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        if method == "*" {
            return v["requests"]
                .as_u64()
                .context("/_stats has a request count");
        }
        // A method is listed once the server has seen it.
        Ok(v["by_method"][method].as_u64().unwrap_or(0))
    }

    /// The proxy's peak resident memory (VmHWM) from `/stats`, in bytes.
    pub fn proxy_peak_rss(&self) -> Result<u64> {
        let (_, body) = self.admin("/stats")?;
        let stats: serde_json::Value = serde_json::from_str(&body)?;
        stats["process"]["peak_rss_bytes"]
            .as_u64()
            .context("/stats has no peak_rss_bytes")
    }

    /// Requests the pod's proxy recorded for one direction, authority and status class
    /// (None: not one).
    pub fn requests(&self, direction: &str, authority: &str, class: &str) -> Result<Option<f64>> {
        self.metric(&format!(
            "bulwark_request_duration_seconds_count{{direction=\"{direction}\",authority=\"{authority}\",status_class=\"{class}\"}}"
        ))
    }

    /// Requests the pod's proxy recorded in one direction, over every authority and class.
    pub fn requests_total(&self, direction: &str) -> Result<f64> {
        let (_, text) = self.admin("/metrics")?;
        let prefix = format!("bulwark_request_duration_seconds_count{{direction=\"{direction}\",");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| sample_value(l).with_context(|| format!("unreadable sample {l:?}")))
            .sum()
    }

    /// The families docs/operations.md documents that this pod's proxy does not export
    /// (by the `# TYPE` lines of its `/metrics`).
    pub fn documented_but_missing(&self) -> Result<Vec<String>> {
        let (_, text) = self.admin("/metrics")?;
        let exported: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        Ok(documented_families()?
            .into_iter()
            .filter(|f| !exported.contains(f.as_str()))
            .collect())
    }

    /// The value of one sample of the proxy's Prometheus metrics, given as its name and
    /// labels exactly as rendered; None when the proxy has no such series.
    pub fn metric(&self, name_and_labels: &str) -> Result<Option<f64>> {
        let (_, text) = self.admin("/metrics")?;
        let Some(line) = text.lines().find(|l| {
            l.strip_prefix(name_and_labels)
                .is_some_and(|rest| rest.starts_with(' '))
        }) else {
            return Ok(None);
        };
        sample_value(line)
            .map(Some)
            .with_context(|| format!("unreadable sample {line:?}"))
    }

    /// The requests of `/stats`' `bulwark_requests_total` rows that `keep` selects.
    pub fn counted(&self, keep: impl Fn(&serde_json::Value) -> bool) -> Result<u64> {
        let (_, body) = self.admin("/stats")?;
        let stats: serde_json::Value = serde_json::from_str(&body)?;
        Ok(stats["requests"]
            .as_array()
            .context("/stats has no requests rows")?
            .iter()
            .filter(|r| keep(r))
            .filter_map(|r| r["count"].as_u64())
            .sum())
    }

    /// The proxy's latency series for one direction and authority, one per status class,
    /// from `/stats` (the proxy's own histogram, not the client's clock).
    pub fn latency(&self, direction: &str, authority: &str) -> Result<Vec<Latency>> {
        let (_, body) = self.admin("/stats")?;
        let stats: serde_json::Value = serde_json::from_str(&body)?;
        stats["latency"]
            .as_array()
            .context("/stats has no latency rows")?
            .iter()
            .filter(|r| r["direction"] == direction && r["authority"] == authority)
            .map(|r| Ok(serde_json::from_value(r.clone())?))
            .collect()
    }
}

fn sample_value(line: &str) -> Option<f64> {
    line.rsplit_once(' ')?.1.trim().parse().ok()
}

/// A set of pods on one bridge, and every process started in them.
#[derive(Debug)]
pub struct Mesh {
    prefix: String,
    bridge: String,
    pods: Vec<Pod>,
    children: Vec<(String, Child)>,
}

/// A started proxy.
#[derive(Debug, Clone, Copy)]
pub struct ProxyPid(pub u32);

impl Mesh {
    /// A fresh bridge namespace. Fails early and clearly when not run as root.
    pub fn new(test: &str) -> Result<Self> {
        ensure!(
            nix_is_root(),
            "end-to-end tests create network namespaces and iptables rules: run them as root (cargo xtask test)"
        );
        reap_stale();
        let seq = MESH_SEQ.fetch_add(1, Ordering::Relaxed);
        let short: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        let prefix = format!("bwt-{}-{seq}{short}", std::process::id());
        let bridge = format!("{prefix}-br");
        ip(&["netns", "add", &bridge])?;
        let mesh = Self {
            prefix,
            bridge,
            pods: Vec::new(),
            children: Vec::new(),
        };
        ip_in(&mesh.bridge, "link set lo up")?;
        ip_in(&mesh.bridge, "link add br0 type bridge")?;
        ip_in(&mesh.bridge, "link set br0 up")?;
        Ok(mesh)
    }

    /// Adds a pod named `name` with the next free address (10.77.0.N, fd77::N).
    pub fn pod(&mut self, name: &str) -> Result<Pod> {
        let n = self.pods.len() as u8 + 2;
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        let pod = Pod {
            ns: ns.clone(),
            ip: Ipv4Addr::new(10, 77, 0, n),
            ip6: format!("fd77::{n}").parse()?,
        };
        self.pods.push(pod.clone());
        let peer = format!("vp{n}");
        let bridge = &self.bridge;
        ip_in(&ns, "link set lo up")?;
        ip_in(
            &ns,
            &format!("link add eth0 type veth peer name {peer} netns {bridge}"),
        )?;
        ip_in(bridge, &format!("link set {peer} master br0 up"))?;
        ip_in(&ns, &format!("addr add {}/24 dev eth0", pod.ip))?;
        ip_in(&ns, &format!("addr add {}/64 dev eth0 nodad", pod.ip6))?;
        ip_in(&ns, "link set eth0 up")?;
        Ok(pod)
    }

    /// Runs `bulwark-proxy init` in the pod with `extra` flags.
    pub fn init(&self, pod: &Pod, extra: &[&str]) -> Result<String> {
        check(pod.cmd(bin("bulwark-proxy")).arg("init").args(extra))
    }

    /// Starts a long-running process in the pod; it is ended when the mesh drops.
    pub fn spawn(&mut self, pod: &Pod, label: &str, cmd: Command) -> Result<u32> {
        let _ = pod;
        self.spawn_anywhere(label, cmd)
    }

    fn spawn_anywhere(&mut self, label: &str, mut cmd: Command) -> Result<u32> {
        let log = std::env::temp_dir().join(format!("{}-{label}.log", self.prefix));
        let file = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        let pid = child.id();
        self.children.push((label.to_string(), child));
        Ok(pid)
    }

    /// Ends a process this mesh started at once (SIGKILL): a crash.
    pub fn kill(&mut self, pid: u32) -> Result<()> {
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(_, c)| c.id() == pid)
            .context("not a process this mesh started")?;
        signal(pid, "KILL");
        child.wait()?;
        Ok(())
    }

    /// A pod named `name` with the test server on 8080 (HTTP/1.1 and h2c), named `name`
    /// too; its proxy is the caller's to start.
    pub fn server_pod(&mut self, name: &str) -> Result<Pod> {
        let pod = self.pod(name)?;
        self.testserver(&pod)
            .http("0.0.0.0:8080")
            .name(name)
            .start()?;
        Ok(pod)
    }

    /// The test upstream for `pod`, to be given listeners and started.
    pub fn testserver(&mut self, pod: &Pod) -> TestServerStart<'_> {
        TestServerStart {
            mesh: self,
            pod: pod.clone(),
            args: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// The proxy for `pod` (its rules applied first, then run as UID/GID 5102), to be given
    /// flags and started.
    pub fn proxy(&mut self, pod: &Pod) -> ProxyStart<'_> {
        ProxyStart {
            mesh: self,
            proxy: ProxyCommand::new(pod),
            init: true,
        }
    }

    /// Waits up to 10 s for the pod's proxy to answer `/ready` with 200.
    pub fn wait_ready(&self, pod: &Pod, pid: u32) -> Result<()> {
        let ready = wait_for("/ready", Duration::from_secs(10), || {
            ensure!(pid_alive(pid), "the proxy exited");
            Ok(matches!(pod.admin("/ready"), Ok((200, _))))
        });
        ready.with_context(|| {
            format!(
                "proxy in {} not ready: {}",
                pod.ns,
                self.log_of(&format!("proxy-{}", pod.ns))
            )
        })
    }

    /// Waits until a TCP port is listening in the pod (for apps started with [`Mesh::spawn`]).
    pub fn wait_listening(&self, pod: &Pod, port: u16) -> Result<()> {
        let what = format!("a listener on port {port} in {}", pod.ns);
        wait_for(&what, Duration::from_secs(10), || {
            let out = pod.sh_ok("ss -Htln")?;
            Ok(out.lines().any(|l| {
                l.split_whitespace()
                    .nth(3)
                    .is_some_and(|a| a.ends_with(&format!(":{port}")))
            }))
        })
    }

    /// Starts a packet capture of every TCP segment crossing the bridge (between pods, on
    /// its ports: frames bridged between pods never reach `br0` itself),
    /// bounded to 120 s; [`Capture::bytes`] ends it and reads it.
    pub fn capture(&mut self) -> Result<Capture> {
        let path = std::env::temp_dir().join(format!("{}-bridge.pcap", self.prefix));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.bridge, "timeout", "120"])
            .args([
                "tcpdump",
                "-i",
                "any",
                "--immediate-mode",
                "-U",
                "-s",
                "0",
                "-w",
            ])
            .arg(&path)
            .arg("tcp");
        let pid = self.spawn_anywhere("tcpdump", cmd)?;
        // tcpdump says "listening on any" once its socket is open.
        wait_for("tcpdump to listen", Duration::from_secs(10), || {
            Ok(self.log_of("tcpdump").contains("listening on"))
        })?;
        Ok(Capture { pid, path })
    }

    /// The log of a process started under `label`.
    pub fn log_of(&self, label: &str) -> String {
        std::fs::read_to_string(std::env::temp_dir().join(format!("{}-{label}.log", self.prefix)))
            .unwrap_or_default()
    }

    /// Sends SIGTERM to a process this mesh started and waits up to `timeout` for it to exit.
    pub fn terminate(&mut self, pid: u32, timeout: Duration) -> Result<std::process::ExitStatus> {
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(_, c)| c.id() == pid)
            .context("not a process this mesh started")?;
        signal(pid, "TERM");
        let mut status = None;
        wait_for(
            &format!("process {pid} to exit after SIGTERM"),
            timeout,
            || {
                status = child.try_wait()?;
                Ok(status.is_some())
            },
        )?;
        status.context("exited")
    }
}

/// A packet capture on the bridge, from [`Mesh::capture`].
#[derive(Debug)]
pub struct Capture {
    pid: u32,
    path: PathBuf,
}

impl Capture {
    /// Ends the capture (tcpdump writes out what it holds) and returns the file's bytes.
    pub fn bytes(self, mesh: &mut Mesh) -> Result<Vec<u8>> {
        // `timeout` passes SIGTERM on to tcpdump, which flushes and exits.
        mesh.terminate(self.pid, Duration::from_secs(10))?;
        let bytes = std::fs::read(&self.path).context("reading the capture")?;
        ensure!(
            bytes.len() > 24,
            "the capture holds no packet: {}",
            mesh.log_of("tcpdump")
        );
        let _ = std::fs::remove_file(&self.path);
        Ok(bytes)
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                signal(child.id(), "KILL");
                let _ = child.wait();
            }
        }
        for pod in &self.pods {
            let _ = ip(&["netns", "del", &pod.ns]);
        }
        let _ = ip(&["netns", "del", &self.bridge]);
        if std::thread::panicking() {
            for (label, _) in &self.children {
                eprintln!("---- log of {label} ----\n{}", self.log_of(label));
            }
        }
        for (label, _) in &self.children {
            let _ = std::fs::remove_file(
                std::env::temp_dir().join(format!("{}-{label}.log", self.prefix)),
            );
        }
    }
}
