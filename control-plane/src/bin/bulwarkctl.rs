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
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { paths } => validate(&paths),
    }
}

fn validate(paths: &[PathBuf]) -> ExitCode {
    let loaded = load::load_paths(paths);
    for d in &loaded.diagnostics {
        eprintln!("error: {d}");
    }
    let docs = loaded.documents.len();
    let errors = loaded.diagnostics.len();
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
