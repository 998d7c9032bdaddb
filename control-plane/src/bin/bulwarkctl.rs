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
    },
    /// Show the policy being served, the last rejected change, and every connected proxy
    /// with the versions it was sent and acknowledged and why it rejected one.
    Status {
        /// The control plane's gRPC address: host:port, or with http://.
        #[arg(
            long,
            env = "BULWARK_CONTROL_PLANE",
            default_value = "127.0.0.1:5170",
            value_parser = bulwark_api::endpoint::control_plane_uri
        )]
        control_plane: String,
        /// `text` for people, `json` for scripts (the schema is in docs/configuration.md).
        #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { paths } => validate(&paths),
        Command::Status {
            control_plane,
            output,
        } => match status(&control_plane, &output) {
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

fn validate(paths: &[PathBuf]) -> ExitCode {
    let loaded = load::load_paths(paths);
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
fn status(addr: &str, output: &str) -> anyhow::Result<bool> {
    use anyhow::Context;
    use bulwark_api::wire::{StatusRequest, admin_client::AdminClient};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let st = rt.block_on(async {
        let connect = AdminClient::connect(addr.to_string());
        let mut client = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .context("timed out connecting")?
            .with_context(|| format!("cannot reach the control plane at {addr}"))?;
        anyhow::Ok(client.status(StatusRequest {}).await?.into_inner())
    })?;
    let refused = |p: &bulwark_api::wire::ProxyStatus| {
        p.nacked_version != 0 && p.nacked_version == p.sent_version
    };
    let healthy = st.proxies.iter().all(|p| p.in_sync && !refused(p));
    if output == "json" {
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
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
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
    }
    Ok(healthy)
}
