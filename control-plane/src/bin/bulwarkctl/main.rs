//! `bulwarkctl`: the operator's command line. Commands on files (`validate`, `inject`) are in
//! [`files`], commands that ask a running control plane (`status`, `version`) in [`control`];
//! this file holds the flags and the dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod control;
mod files;

use control::TlsArgs;

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
        /// Injection settings as the webhook reads them (`--inject-config`); the image and
        /// control plane flags, when given, win over the file's.
        #[arg(long, env = "BULWARK_INJECT_CONFIG")]
        config: Option<PathBuf>,
        /// `classic` for clusters older than 1.29 (no native sidecars).
        #[arg(long, value_parser = ["native", "classic"])]
        sidecar: Option<String>,
    },
    /// Take the sidecar back out of manifests `inject` (or the webhook) produced.
    Uninject {
        /// Manifest files; `-` reads standard input.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
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
    /// Print the shell completion script for SHELL, e.g. `source <(bulwarkctl completion
    /// bash)` or, for zsh, `bulwarkctl completion zsh > "${fpath[1]}/_bulwarkctl"`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
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

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "bulwarkctl",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Validate { paths, output } => files::validate(&paths, &output),
        Command::Inject {
            paths,
            proxy_image,
            control_plane,
            config,
            sidecar,
        } => {
            use bulwark_control_plane::inject::{Settings, SidecarMode};
            let mut settings = match config.as_deref().map(Settings::from_file).transpose() {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => {
                    eprintln!("bulwarkctl inject: {}", said_once(&e));
                    return ExitCode::FAILURE;
                }
            };
            let defaults = Settings::default();
            if config.is_none() || proxy_image != defaults.proxy_image {
                settings.proxy_image = proxy_image;
            }
            if config.is_none() || control_plane != defaults.control_plane {
                settings.control_plane = control_plane;
            }
            match sidecar.as_deref() {
                Some("classic") => settings.sidecar = SidecarMode::Classic,
                Some(_) => settings.sidecar = SidecarMode::Native,
                None => {}
            }
            match files::inject(&paths, &settings) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bulwarkctl inject: {}", said_once(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Uninject { paths } => match files::uninject(&paths) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bulwarkctl uninject: {}", said_once(&e));
                ExitCode::FAILURE
            }
        },
        Command::Version { client, tls } => {
            match control::version(&tls.control_plane, client, &tls) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bulwarkctl version: {}", said_once(&e));
                    ExitCode::FAILURE
                }
            }
        }
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
                    eprintln!("bulwarkctl token create: {}", said_once(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { output, tls } => match control::status(&tls.control_plane, &output, &tls)
        {
            Ok(true) => ExitCode::SUCCESS,
            // Reached, but some proxy is behind or refused its policy: a deploy gate fails.
            Ok(false) => ExitCode::from(3),
            Err(e) => {
                eprintln!("bulwarkctl status: {}", said_once(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// An error and its causes, `outer: inner: …`, each said once: libraries often wrap an
/// error in one that displays the same words ("tcp connect error: tcp connect error").
fn said_once(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Prints `doc` as `output` (`json` or `yaml`) on standard output.
pub(crate) fn print_doc(doc: &serde_json::Value, output: &str) -> anyhow::Result<()> {
    match output {
        "yaml" => print!("{}", serde_saphyr::to_string(doc)?),
        _ => println!("{}", serde_json::to_string_pretty(doc)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = anyhow::Error::new(inner)
            .context("tcp connect error")
            .context("tcp connect error")
            .context("transport error: tcp connect error")
            .context("cannot reach the control plane");
        assert_eq!(
            said_once(&e),
            "cannot reach the control plane: transport error: tcp connect error: refused"
        );
    }
}
