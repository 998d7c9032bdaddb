//! `bulwark-control-plane serve`: reads policy from a directory and pushes it to proxies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bulwark_api::duration::parse as parse_duration;
use bulwark_api::wire::admin_server::AdminServer;
use bulwark_api::wire::discovery_server::DiscoveryServer;
use bulwark_control_plane::service::Service;
use bulwark_control_plane::state::State;
use bulwark_control_plane::{admin, source};
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
    /// Serve policy from a directory to proxies.
    Serve {
        /// Directory of policy YAML (searched recursively for *.yaml and *.yml).
        #[arg(long, env = "BULWARK_POLICY_DIR")]
        policy_dir: PathBuf,
        /// gRPC address (Discovery and Admin services).
        #[arg(long, env = "BULWARK_GRPC_ADDR", default_value = "0.0.0.0:5170")]
        grpc_addr: SocketAddr,
        /// HTTP admin address (/ready, /live, /metrics).
        #[arg(long, env = "BULWARK_CP_ADMIN_ADDR", default_value = "0.0.0.0:5171")]
        admin_addr: SocketAddr,
        /// How often the policy directory is checked for changes.
        #[arg(long, env = "BULWARK_POLL_INTERVAL", value_parser = parse_duration, default_value = "500ms")]
        poll_interval: Duration,
    },
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
        grpc_addr,
        admin_addr,
        poll_interval,
    } = cli.command;
    let state = Arc::new(State::new());
    if let Err(problems) = source::reload(&state, &policy_dir) {
        bail!(
            "the policy in {} is invalid; nothing to serve:\n  {}",
            policy_dir.display(),
            problems.join("\n  ")
        );
    }
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("binding the admin address {admin_addr}"))?;
    tokio::spawn(admin::serve(admin_listener, state.clone()));
    tokio::spawn(source::watch(state.clone(), policy_dir, poll_interval));
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
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(DiscoveryServer::new(service.clone()))
        .add_service(AdminServer::new(service))
        .serve_with_shutdown(grpc_addr, shutdown)
        .await
        .with_context(|| format!("serving gRPC on {grpc_addr}"))?;
    Ok(())
}
