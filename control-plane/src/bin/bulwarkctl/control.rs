//! Commands that ask a running control plane: `status` and `version`, and how to reach it
//! (its address, and the roots and identity it must prove when it serves TLS).

use std::path::PathBuf;

use super::print_doc;

/// Where the control plane is, and how to reach one that serves TLS.
#[derive(clap::Args, Debug)]
pub(crate) struct TlsArgs {
    /// The control plane's gRPC address: host:port, or with http://.
    #[arg(
        long,
        env = "BULWARK_CONTROL_PLANE",
        default_value = "127.0.0.1:5170",
        value_parser = bulwark_api::endpoint::control_plane_uri
    )]
    pub(crate) control_plane: String,
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

/// Asks the control plane at `addr` for its status.
pub(crate) fn ask_status(
    addr: &str,
    tls: &TlsArgs,
) -> anyhow::Result<bulwark_api::wire::StatusResponse> {
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
pub(crate) fn version(addr: &str, client_only: bool, tls: &TlsArgs) -> anyhow::Result<()> {
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

/// Prints the control plane's status; `Ok(false)` when some proxy is out of sync or has
/// rejected the version it was sent.
pub(crate) fn status(addr: &str, output: &str, tls: &TlsArgs) -> anyhow::Result<bool> {
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
                    "pod": (!p.pod.is_empty()).then_some(&p.pod),
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
        if !p.pod.is_empty() {
            println!("    pod {}", p.pod);
        }
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
