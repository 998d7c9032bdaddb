//! `bulwark-control-plane serve`: reads policy from a directory or the Kubernetes API and
//! pushes it to proxies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bulwark_api::duration::parse as parse_duration;
use bulwark_api::identity_wire::identity_server::IdentityServer;
use bulwark_api::wire::admin_server::AdminServer;
use bulwark_control_plane::ca::Ca;
use bulwark_control_plane::identity::{Authenticator, IdentityService};
use bulwark_control_plane::inject::Settings;
use bulwark_control_plane::service::Service;
use bulwark_control_plane::state::State;
use bulwark_control_plane::stream::DiscoveryRoute;
use bulwark_control_plane::token_review::TokenReviewer;
use bulwark_control_plane::webhook::{self, Webhook};
use bulwark_control_plane::{admin, kubernetes, source, tls};
use bulwark_identity::SpiffeId;
use bulwark_identity::tls::CertStore;
use bulwark_identity::token::TokenKey;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bulwark-control-plane",
    version,
    about = "Bulwark control plane"
)]
struct Cli {
    /// Log format: `text` (coloured only on a terminal) or `json`, one object per line.
    #[arg(long, env = "BULWARK_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve policy, from a directory or from the Kubernetes API, to proxies.
    Serve {
        /// Directory of policy YAML (searched recursively for *.yaml and *.yml).
        #[arg(
            long,
            env = "BULWARK_POLICY_DIR",
            required_unless_present = "kubernetes",
            conflicts_with = "kubernetes"
        )]
        policy_dir: Option<PathBuf>,
        /// Read policy from the cluster instead: the Bulwark CRDs, Services with their
        /// EndpointSlices, and Pods (in-cluster configuration, KUBECONFIG or --kubeconfig).
        #[arg(long, env = "BULWARK_KUBERNETES", default_value_t = false, action = clap::ArgAction::Set)]
        kubernetes: bool,
        /// With --kubernetes: write each policy object's status (Accepted, and the proxies
        /// it concerns), from the one replica holding the Lease bulwark-control-plane in
        /// --namespace.
        #[arg(long, env = "BULWARK_WRITE_STATUS", default_value_t = true, action = clap::ArgAction::Set)]
        write_status: bool,
        /// gRPC address (Discovery and Admin services).
        #[arg(long, env = "BULWARK_GRPC_ADDR", default_value = "0.0.0.0:5170")]
        grpc_addr: SocketAddr,
        /// HTTP admin address (/ready, /live, /metrics).
        #[arg(long, env = "BULWARK_CP_ADMIN_ADDR", default_value = "0.0.0.0:5171")]
        admin_addr: SocketAddr,
        /// How often the policy directory is checked for changes.
        #[arg(long, env = "BULWARK_POLL_INTERVAL", value_parser = parse_duration, default_value = "500ms")]
        poll_interval: Duration,
        #[command(flatten)]
        identity: IdentityArgs,
        #[command(flatten)]
        webhook: WebhookArgs,
    },
}

/// The admission webhooks (sidecar injection, policy validation). Served only when a
/// certificate is given.
#[derive(clap::Args, Debug)]
struct WebhookArgs {
    /// HTTPS address of the webhooks (`POST /inject`, `POST /validate`).
    #[arg(long, env = "BULWARK_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,
    /// PEM certificate chain the webhooks present (re-read when it changes).
    #[arg(long, env = "BULWARK_WEBHOOK_CERT", requires = "webhook_key")]
    webhook_cert: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#1, PKCS#8 or SEC1).
    #[arg(long, env = "BULWARK_WEBHOOK_KEY", requires = "webhook_cert")]
    webhook_key: Option<PathBuf>,
    /// YAML file of injection settings (proxy image, control plane address, sidecar mode,
    /// resources, log level, excluded namespaces); built-in defaults when absent.
    #[arg(long, env = "BULWARK_INJECT_CONFIG")]
    inject_config: Option<PathBuf>,
}

/// Starts the webhooks if a certificate is given.
async fn webhooks(args: &WebhookArgs, namespace: &str) -> anyhow::Result<Option<Arc<Webhook>>> {
    let (Some(cert), Some(key)) = (&args.webhook_cert, &args.webhook_key) else {
        return Ok(None);
    };
    let settings = match &args.inject_config {
        Some(p) => Settings::from_file(p)?,
        None => Settings::default(),
    };
    let certs = Arc::new(webhook::CertFiles::new(cert.clone(), key.clone())?);
    let tls = webhook::acceptor(certs)?;
    let listener = tokio::net::TcpListener::bind(args.webhook_addr)
        .await
        .with_context(|| format!("binding the webhook address {}", args.webhook_addr))?;
    tracing::info!(addr = %args.webhook_addr, proxy_image = settings.proxy_image, sidecar = ?settings.sidecar, "serving the admission webhooks");
    let hook = Arc::new(Webhook::new(settings, namespace.to_string()));
    tokio::spawn(webhook::serve(listener, tls, hook.clone()));
    Ok(Some(hook))
}

/// The certificate authority and who may ask it for what. With none of the CA flags and no
/// state directory, the control plane issues no identities and serves plaintext gRPC.
#[derive(clap::Args, Debug)]
struct IdentityArgs {
    /// The mesh's SPIFFE trust domain.
    #[arg(long, env = "BULWARK_TRUST_DOMAIN", default_value = bulwark_identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// PEM bundle of the roots proxies trust (more than one while a root is rotated).
    #[arg(long, env = "BULWARK_TRUST_ANCHORS", requires_all = ["issuer_cert", "issuer_key"])]
    trust_anchors: Option<PathBuf>,
    /// PEM certificate of the issuer (an intermediate under one of the trust anchors).
    #[arg(long, env = "BULWARK_ISSUER_CERT", requires_all = ["trust_anchors", "issuer_key"])]
    issuer_cert: Option<PathBuf>,
    /// PEM PKCS#8 key of the issuer.
    #[arg(long, env = "BULWARK_ISSUER_KEY", requires_all = ["trust_anchors", "issuer_cert"])]
    issuer_key: Option<PathBuf>,
    /// PEM PKCS#8 ECDSA P-256 key bootstrap tokens are signed with (`bulwarkctl token
    /// create --key`). Without it, and without a state directory, tokens are refused.
    #[arg(long, env = "BULWARK_TOKEN_KEY")]
    token_key: Option<PathBuf>,
    /// For a local mesh only: a directory where a root, an issuer and a token key are made
    /// on first start and reused after. Ignored for the CA when the CA files are given.
    #[arg(long, env = "BULWARK_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Lifetime of workload certificates.
    #[arg(long, env = "BULWARK_CERT_LIFETIME", value_parser = parse_duration, default_value = "24h")]
    cert_lifetime: Duration,
    /// The namespace the control plane runs in: its own identity is
    /// spiffe://<trust-domain>/ns/<namespace>/sa/bulwark-control-plane.
    #[arg(long, env = "BULWARK_NAMESPACE", default_value = "bulwark")]
    namespace: String,
    /// Grant identities to Kubernetes service-account tokens, checked with a TokenReview
    /// (in-cluster configuration, or KUBECONFIG): the projected token of an injected pod.
    #[arg(long, env = "BULWARK_TOKEN_REVIEW", default_value_t = false, action = clap::ArgAction::Set)]
    token_review: bool,
    /// The API server (for the Kubernetes source and TokenReview), as a kubeconfig file
    /// (for development); without it, KUBECONFIG or the in-cluster configuration.
    #[arg(long, env = "BULWARK_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The audience a service-account token must be for.
    #[arg(long, env = "BULWARK_TOKEN_AUDIENCE", default_value = bulwark_control_plane::token_review::AUDIENCE)]
    token_audience: String,
}

/// The API server's client: from `kubeconfig` if given, else KUBECONFIG or in-cluster.
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "--kubernetes and --token-review need the API server: no in-cluster configuration or kubeconfig",
        )?,
    };
    kube::Client::try_from(config).context("a client for the API server")
}

/// Who this replica is in the status Lease: the pod's name (HOSTNAME in a pod) and the
/// process, so a restarted container is a new holder.
fn holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "bulwark-control-plane".into());
    format!("{host}_{}", std::process::id())
}

/// The service account the control plane's own certificate names.
const SERVICE_ACCOUNT: &str = "bulwark-control-plane";

/// The CA and token key the flags ask for, if any.
fn certificate_authority(
    args: &IdentityArgs,
) -> anyhow::Result<Option<(Arc<Ca>, Option<TokenKey>)>> {
    let ca = match (
        &args.trust_anchors,
        &args.issuer_cert,
        &args.issuer_key,
        &args.state_dir,
    ) {
        (Some(a), Some(c), Some(k), _) => {
            Ca::from_files(a, c, k, &args.trust_domain, args.cert_lifetime)?
        }
        (_, _, _, Some(dir)) => {
            let (ca, made) = Ca::generate_into(dir, &args.trust_domain, args.cert_lifetime)?;
            let anchors = dir.join(bulwark_control_plane::ca::ROOT_CERT);
            if made {
                tracing::warn!(dir = %dir.display(), anchors = %anchors.display(), "GENERATED A LOCAL ROOT AND ISSUER: for a local mesh only; production takes --trust-anchors, --issuer-cert and --issuer-key");
            } else {
                tracing::warn!(dir = %dir.display(), "using the local root and issuer kept in the state directory: for a local mesh only");
            }
            ca
        }
        _ => return Ok(None),
    };
    let token_path = match (&args.token_key, &args.state_dir) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(dir)) => {
            let (p, made) = bulwark_control_plane::ca::token_key_in(dir)?;
            if made {
                tracing::warn!(key = %p.display(), "generated a bootstrap token key");
            }
            Some(p)
        }
        (None, None) => None,
    };
    let tokens = token_path
        .map(|p| bulwark_identity::token::read_key(&p))
        .transpose()?;
    Ok(Some((Arc::new(ca), tokens)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logger = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BULWARK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logger.json().init();
    } else {
        logger.init();
    }
    let Command::Serve {
        policy_dir,
        kubernetes,
        write_status,
        grpc_addr,
        admin_addr,
        poll_interval,
        identity,
        webhook,
    } = cli.command;
    let ca = certificate_authority(&identity)?;
    let state = Arc::new(State::new());
    let client = match kubernetes || identity.token_review {
        true => Some(kube_client(identity.kubeconfig.as_deref()).await?),
        false => None,
    };
    if let Some(dir) = &policy_dir
        && let Err(problems) = source::reload(&state, dir)
    {
        bail!(
            "the policy in {} is invalid; nothing to serve:\n  {}",
            dir.display(),
            problems.join("\n  ")
        );
    }
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("binding the admin address {admin_addr}"))?;
    let hook = webhooks(&webhook, &identity.namespace).await?;
    tokio::spawn(admin::serve(admin_listener, state.clone(), hook));
    match (policy_dir, &client) {
        (Some(dir), _) => {
            tokio::spawn(source::watch(state.clone(), dir, poll_interval));
        }
        (None, Some(client)) => {
            // Meshed pods are told to callers only when this control plane issues their
            // identities; otherwise a caller would demand mesh TLS nobody can offer.
            let td = identity.trust_domain.clone();
            let pods_meshed = ca.is_some();
            let elector = write_status.then(|| {
                kubernetes::status::Elector::new(client.clone(), &identity.namespace, holder())
            });
            tokio::spawn(kubernetes::run(
                state.clone(),
                client.clone(),
                td,
                pods_meshed,
                elector,
            ));
        }
        (None, None) => unreachable!("clap requires --policy-dir or --kubernetes"),
    }
    let service = Service::new(state.clone());
    tracing::info!(%grpc_addr, %admin_addr, "serving");
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: streams end, proxies keep their last snapshot");
        state.close_streams();
    };
    // Pings find proxies that vanished without closing their stream (a node lost), so
    // they leave `connected_proxies` and the status instead of lingering there.
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(DiscoveryRoute::new(state.clone()))
        .add_service(AdminServer::new(service));
    let Some((ca, tokens)) = ca else {
        tracing::warn!(
            "no certificate authority configured: no identities are issued and gRPC is plaintext"
        );
        return router
            .serve_with_shutdown(grpc_addr, shutdown)
            .await
            .with_context(|| format!("serving gRPC on {grpc_addr}"));
    };
    let own = SpiffeId::new(&identity.trust_domain, &identity.namespace, SERVICE_ACCOUNT)
        .context("the control plane's own identity (--trust-domain, --namespace)")?;
    let certs = Arc::new(CertStore::default());
    let (key, _) = tls::own_certificate(&ca, &own).map_err(anyhow::Error::msg)?;
    certs.store(key);
    tokio::spawn(tls::keep_own_certificate(
        ca.clone(),
        own.clone(),
        certs.clone(),
    ));
    let bundle = Arc::new(arc_swap::ArcSwap::from_pointee(ca.bundle().clone()));
    // A client certificate is optional: a proxy asks for its first one without.
    let config =
        bulwark_identity::tls::server_config(bundle, certs, false, &[bulwark_identity::ALPN_GRPC]);
    let listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC address {grpc_addr}"))?;
    tracing::info!(identity = %own, trust_anchors = ?ca.bundle().fingerprints(), tokens = tokens.is_some(), "serving gRPC over TLS; issuing identities");
    let counters = state.issue_counters();
    let reviewer = match (identity.token_review, client) {
        (true, Some(client)) => {
            tracing::info!(
                audience = identity.token_audience,
                "service-account tokens checked with TokenReview"
            );
            Some(TokenReviewer::new(client, identity.token_audience.clone()))
        }
        _ => None,
    };
    router
        .add_service(IdentityServer::new(IdentityService::new(
            ca,
            Authenticator { tokens, reviewer },
            counters,
        )))
        .serve_with_incoming_shutdown(tls::incoming(listener, tls::acceptor(config)), shutdown)
        .await
        .with_context(|| format!("serving gRPC on {grpc_addr}"))
}
