//! `bulwarkctl`: the operator's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_api::load;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "bulwarkctl", version, about = "Operate a Bulwark mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check policy files or directories (searched for *.yaml and *.yml). Prints every
    /// problem as FILE:LINE:COLUMN: FIELD: REASON and exits 1 if there is any.
    Validate {
        /// Files or directories; `-` reads standard input.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `text` for people (problems on standard error), `json` or `yaml` for scripts (one
        /// document on standard output; the schema is in docs/configuration.md).
        #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json", "yaml"])]
        output: String,
    },
    /// Show the policy being served, the last rejected change, and every connected proxy
    /// with the versions it was sent and acknowledged and why it rejected one.
    Status {
        /// `text` for people, `json` or `yaml` for scripts (the schema is in
        /// docs/configuration.md).
        #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json", "yaml"])]
        output: String,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Add the sidecar to the pods of Kubernetes manifests (Pods, Deployments, StatefulSets,
    /// DaemonSets, ReplicaSets, Jobs, CronJobs, Lists; several documents per file) and print
    /// them. Injection is idempotent, and `bulwark.dev/inject: disabled` opts a pod out.
    Inject {
        /// Manifest files; `-` reads standard input.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The proxy image (it runs both the init container and the sidecar).
        #[arg(long, env = "BULWARK_PROXY_IMAGE", default_value = bulwark_control_plane::inject::DEFAULT_PROXY_IMAGE)]
        proxy_image: String,
        /// The control plane's address, as the sidecar dials it.
        #[arg(long, env = "BULWARK_INJECT_CONTROL_PLANE", default_value = bulwark_control_plane::inject::DEFAULT_CONTROL_PLANE)]
        control_plane: String,
    },
    /// Print this CLI's version and the control plane's.
    Version {
        /// Only this CLI's version; the control plane is not asked.
        #[arg(long)]
        client: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Bootstrap tokens, which let a proxy outside Kubernetes obtain its identity.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Print a token granting one namespace and service account, signed with the control
    /// plane's token key. Anyone holding it can obtain that identity until it expires: treat
    /// it as a secret.
    Create {
        /// Namespace of the identity.
        #[arg(long)]
        namespace: String,
        /// Service account of the identity.
        #[arg(long)]
        service_account: String,
        /// How long the token is accepted (the proxy presents it again at every renewal
        /// until it has a certificate to renew with).
        #[arg(long, value_parser = bulwark_api::duration::parse, default_value = "8760h")]
        ttl: std::time::Duration,
        /// The control plane's token key (PEM PKCS#8), `token.key` in its state directory.
        #[arg(long, env = "BULWARK_TOKEN_KEY")]
        key: PathBuf,
    },
}

/// Where the control plane is, and how to reach one that serves TLS.
#[derive(clap::Args, Debug)]
struct TlsArgs {
    /// The control plane's gRPC address: host:port, or with http://.
    #[arg(
        long,
        env = "BULWARK_CONTROL_PLANE",
        default_value = "127.0.0.1:5170",
        value_parser = bulwark_api::endpoint::control_plane_uri
    )]
    control_plane: String,
    /// PEM bundle of the mesh's roots; given, the connection is TLS and the control plane
    /// must prove its identity.
    #[arg(long, env = "BULWARK_TRUST_ANCHORS")]
    trust_anchors: Option<PathBuf>,
    /// The mesh's trust domain.
    #[arg(long, env = "BULWARK_TRUST_DOMAIN", default_value = bulwark_identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The control plane's namespace (its identity is .../ns/<namespace>/sa/bulwark-control-plane).
    #[arg(
        long,
        env = "BULWARK_CONTROL_PLANE_NAMESPACE",
        default_value = "bulwark"
    )]
    control_plane_namespace: String,
}

impl TlsArgs {
    fn client_config(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        use anyhow::Context;
        let Some(path) = &self.trust_anchors else {
            return Ok(None);
        };
        let bundle = bulwark_identity::verify::TrustBundle::from_file(path)?;
        let expected = bulwark_identity::SpiffeId::new(
            &self.trust_domain,
            &self.control_plane_namespace,
            "bulwark-control-plane",
        )
        .context("the control plane's identity")?;
        Ok(Some(bulwark_identity::tls::client_config(
            std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(bundle)),
            expected,
            std::sync::Arc::default(),
            &[bulwark_identity::ALPN_GRPC],
        )))
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { paths, output } => validate(&paths, &output),
        Command::Inject {
            paths,
            proxy_image,
            control_plane,
        } => {
            let settings = bulwark_control_plane::inject::Settings {
                proxy_image,
                control_plane,
            };
            match inject(&paths, &settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bulwarkctl inject: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Version { client, tls } => match version(&tls.control_plane, client, &tls) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bulwarkctl version: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Token {
            command:
                TokenCommand::Create {
                    namespace,
                    service_account,
                    ttl,
                    key,
                },
        } => {
            let made = bulwark_identity::token::read_key(&key)
                .map_err(anyhow::Error::from)
                .and_then(|k| {
                    Ok(k.create(
                        &namespace,
                        &service_account,
                        ttl,
                        std::time::SystemTime::now(),
                    )?)
                });
            match made {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bulwarkctl token create: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { output, tls } => match status(&tls.control_plane, &output, &tls) {
            Ok(true) => ExitCode::SUCCESS,
            // Reached, but some proxy is behind or refused its policy: a deploy gate fails.
            Ok(false) => ExitCode::from(3),
            Err(e) => {
                eprintln!("bulwarkctl status: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `bulwarkctl inject`: every document of every file, injected, as YAML on standard output;
/// a count of what was done on standard error.
fn inject(
    paths: &[PathBuf],
    settings: &bulwark_control_plane::inject::Settings,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use bulwark_control_plane::inject::{Change, manifest};
    let mut docs = Vec::new();
    for path in paths {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let values: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("{} is not YAML", path.display()))?;
        docs.extend(values.into_iter().filter(|v| !v.is_null()));
    }
    anyhow::ensure!(!docs.is_empty(), "no manifests in the input");
    let mut counts = [0usize; 3];
    let mut out = String::new();
    for (i, doc) in docs.iter_mut().enumerate() {
        let changes = manifest(doc, settings).with_context(|| format!("document {}", i + 1))?;
        for c in changes {
            counts[match c {
                Change::Injected => 0,
                Change::AlreadyInjected => 1,
                Change::OptedOut => 2,
            }] += 1;
        }
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(doc)?);
    }
    print!("{out}");
    eprintln!(
        "injected {} pod templates ({} already injected, {} opted out)",
        counts[0], counts[1], counts[2]
    );
    Ok(())
}

/// Prints `doc` as `output` (`json` or `yaml`) on standard output.
fn print_doc(doc: &serde_json::Value, output: &str) -> anyhow::Result<()> {
    match output {
        "yaml" => print!("{}", serde_saphyr::to_string(doc)?),
        _ => println!("{}", serde_json::to_string_pretty(doc)?),
    }
    Ok(())
}

/// `validate -o json|yaml`: the files read, the valid documents, and every problem with its
/// file, line, column, field and reason.
fn validate_doc(loaded: &load::Loaded, paths: &[PathBuf]) -> serde_json::Value {
    let mut diagnostics: Vec<serde_json::Value> = loaded
        .diagnostics
        .iter()
        .map(|d| {
            serde_json::json!({
                "file": d.file.display().to_string(),
                "line": d.position.map(|p| p.line),
                "column": d.position.map(|p| p.column),
                "path": d.path,
                "reason": d.reason,
            })
        })
        .collect();
    if diagnostics.is_empty() && loaded.documents.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        diagnostics.push(serde_json::json!({
            "file": named.join(", "),
            "line": null,
            "column": null,
            "path": "",
            "reason": "no policy documents",
        }));
    }
    serde_json::json!({
        "files": loaded.files,
        "documents": loaded.documents.len(),
        "valid": diagnostics.is_empty(),
        "diagnostics": diagnostics,
    })
}

fn validate(paths: &[PathBuf], output: &str) -> ExitCode {
    let loaded = load::load_paths(paths);
    if output != "text" {
        let doc = validate_doc(&loaded, paths);
        let valid = doc["valid"] == true;
        if let Err(e) = print_doc(&doc, output) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        return if valid {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    for d in &loaded.diagnostics {
        eprintln!("error: {d}");
    }
    let docs = loaded.documents.len();
    let errors = loaded.diagnostics.len();
    if errors == 0 && docs == 0 {
        // Nothing to check is not a pass: a wrong path or an empty pipe would go unnoticed.
        eprintln!(
            "error: no policy documents in {} ({} files read)",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            loaded.files
        );
        return ExitCode::FAILURE;
    }
    if errors == 0 {
        println!("{} files, {docs} documents: valid", loaded.files);
        ExitCode::SUCCESS
    } else {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        eprintln!(
            "{}, {}, {}",
            plural(loaded.files, "file"),
            plural(docs, "valid document"),
            plural(errors, "error")
        );
        ExitCode::FAILURE
    }
}

/// Prints the control plane's status; `Ok(false)` when some proxy is out of sync or has
/// rejected the version it was sent.
/// Asks the control plane at `addr` for its status.
fn ask_status(addr: &str, tls: &TlsArgs) -> anyhow::Result<bulwark_api::wire::StatusResponse> {
    use anyhow::Context;
    use bulwark_api::wire::{StatusRequest, admin_client::AdminClient};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let config = tls.client_config()?;
    let st = rt.block_on(async {
        let options = bulwark_identity::channel::ChannelOptions {
            connect_timeout: std::time::Duration::from_secs(5),
            keepalive: None,
        };
        let channel = bulwark_identity::channel::connect(addr, config, &options)
            .await
            .with_context(|| format!("cannot reach the control plane at {addr}"))?;
        let hint = if tls.trust_anchors.is_none() {
            " (a control plane with a CA serves TLS: pass --trust-anchors)"
        } else {
            ""
        };
        anyhow::Ok(
            AdminClient::new(channel)
                .status(StatusRequest {})
                .await
                .with_context(|| format!("asking {addr} for its status{hint}"))?
                .into_inner(),
        )
    })?;
    Ok(st)
}

/// Prints this CLI's version and, unless `client_only`, the control plane's.
fn version(addr: &str, client_only: bool, tls: &TlsArgs) -> anyhow::Result<()> {
    println!("bulwarkctl {}", env!("CARGO_PKG_VERSION"));
    if !client_only {
        let st = ask_status(addr, tls)?;
        let v = if st.control_plane_version.is_empty() {
            "unknown (a release that does not report it)"
        } else {
            &st.control_plane_version
        };
        println!("control plane {v} at {addr}");
    }
    Ok(())
}

fn status(addr: &str, output: &str, tls: &TlsArgs) -> anyhow::Result<bool> {
    let st = ask_status(addr, tls)?;
    let refused = |p: &bulwark_api::wire::ProxyStatus| {
        p.nacked_version != 0 && p.nacked_version == p.sent_version
    };
    let healthy = st.proxies.iter().all(|p| p.in_sync && !refused(p));
    if output != "text" {
        let proxies: Vec<serde_json::Value> = st
            .proxies
            .iter()
            .map(|p| {
                serde_json::json!({
                    "workload": p.workload,
                    "namespace": p.namespace,
                    "pod_ips": p.pod_ips,
                    "proxy_version": p.proxy_version,
                    "sent_version": p.sent_version,
                    "acked_version": p.acked_version,
                    "nacked_version": (p.nacked_version != 0).then_some(p.nacked_version),
                    "nack_reason": (!p.nack_reason.is_empty()).then_some(&p.nack_reason),
                    "connected_seconds": p.connected_seconds,
                    "identity": (!p.identity.is_empty()).then_some(&p.identity),
                    "certificate_expires_unix": (p.cert_not_after_unix != 0).then_some(p.cert_not_after_unix),
                    "in_sync": p.in_sync,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "policy": (st.policy_version != 0).then(|| serde_json::json!({
                "version": st.policy_version,
                "age_seconds": st.policy_age_seconds,
            })),
            "rejected_change": (!st.rejected_reason.is_empty()).then(|| serde_json::json!({
                "reason": st.rejected_reason,
                "age_seconds": st.rejected_age_seconds,
            })),
            "proxies": proxies,
            "healthy": healthy,
            "control_plane_version": st.control_plane_version,
        });
        print_doc(&doc, output)?;
        return Ok(healthy);
    }
    if st.policy_version == 0 {
        println!("policy: none loaded");
    } else {
        println!(
            "policy: version {}, loaded {}s ago",
            st.policy_version, st.policy_age_seconds
        );
    }
    if !st.rejected_reason.is_empty() {
        println!(
            "last change REJECTED {}s ago (the version above stays in force):",
            st.rejected_age_seconds
        );
        for line in st.rejected_reason.lines() {
            println!("  {line}");
        }
    }
    println!("proxies: {}", st.proxies.len());
    if !st.proxies.is_empty() {
        println!(
            "  {:<24} {:<16} {:>14} {:>14} {:>14} {:>7} {:>9}  NACK REASON",
            "WORKLOAD", "IPS", "SENT", "ACKED", "NACKED", "IN SYNC", "CONNECTED"
        );
    }
    for p in &st.proxies {
        let nacked = if p.nacked_version == 0 {
            "-".to_string()
        } else {
            p.nacked_version.to_string()
        };
        println!(
            "  {:<24} {:<16} {:>14} {:>14} {:>14} {:>7} {:>8}s  {}",
            p.workload,
            p.pod_ips.join(","),
            p.sent_version,
            p.acked_version,
            nacked,
            if p.in_sync { "yes" } else { "no" },
            p.connected_seconds,
            p.nack_reason
        );
        if !p.identity.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let left = p.cert_not_after_unix - now;
            let expiry = if left <= 0 {
                format!("certificate EXPIRED {}s ago", -left)
            } else {
                format!(
                    "certificate expires in {}h{:02}m{:02}s",
                    left / 3600,
                    (left % 3600) / 60,
                    left % 60
                )
            };
            println!("    identity {} ({expiry})", p.identity);
        }
    }
    Ok(healthy)
}
