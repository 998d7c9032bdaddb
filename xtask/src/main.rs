//! Project automation. `cargo xtask test` installs what the tests need on a fresh Debian 12
//! machine and runs every check CI runs; `cargo xtask demo` runs the local mesh demo.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};

mod image;
mod values;

#[derive(Parser, Debug)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install test dependencies, then run fmt, clippy, unit and end-to-end tests.
    Test {
        /// Skip apt-get and the Python venv (when they are known to be in place).
        #[arg(long)]
        no_install: bool,
    },
    /// Benchmarks: Bulwark against a direct connection, HAProxy and nginx (needs root).
    Bench {
        /// One short round with debug binaries, to prove the harness works (part of `test`).
        #[arg(long)]
        smoke: bool,
        /// Instructions per request under callgrind (B and B2) instead of the timed run; the
        /// extra arguments go to bulwark-callgrind (e.g. --proxy OTHER-BUILD).
        #[arg(long, conflicts_with = "smoke")]
        callgrind: bool,
        /// Extra arguments for bulwark-bench (e.g. --rounds 5 --seconds 10).
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Regenerate files derived from the Rust types (the CRDs in charts/bulwark/crds/).
    Codegen {
        /// Only check that the files are current; exit 1 if not.
        #[arg(long)]
        check: bool,
    },
    /// Fuzz the parsers and decisions (proxy/fuzz) with libFuzzer on the stable toolchain,
    /// each target over a copy of its committed seed corpus.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// OCI image archives of the proxy (with iptables for init) and the control plane, built
    /// with buildah without a daemon and smoke-tested from their own root filesystems (needs
    /// root).
    Image {
        /// Use the dev profile's binaries (what `test` does: they are built already).
        #[arg(long)]
        debug: bool,
        /// Directory for the archives (default: <target dir>/images).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Skip running the images' binaries.
        #[arg(long)]
        no_smoke: bool,
    },
    /// The local mesh demo (builds release binaries, needs root).
    Demo {
        /// Requests per load phase.
        #[arg(long, default_value_t = 20_000)]
        requests: u32,
    },
}

/// Debian packages the tests and the demo drive: iptables and iproute2 for the pods, curl
/// and nghttp2-client (nghttp, h2load) as clients, python3-venv for grpcio and websockets,
/// util-linux for setpriv, procps for process checks, openssl for the TLS passthrough and identity tests,
/// tcpdump for the capture that proves mesh traffic is encrypted, g++ for libFuzzer (built
/// from source by the fuzz targets' libfuzzer-sys), buildah for the images, chromium to load
/// the admin port's live page headless and check what its script draws.
const APT_PACKAGES: &[&str] = &[
    "iptables",
    "iproute2",
    "curl",
    "nghttp2-client",
    "python3-venv",
    "util-linux",
    "procps",
    "ca-certificates",
    "openssl",
    "tcpdump",
    "g++",
    "buildah",
    "chromium",
];

/// The workspace root. `cargo run` (which `cargo xtask` is) names the package's directory
/// at run time; the one compiled in is only a fallback, because a build cache shared by two
/// checkouts can hand one checkout the other's binary.
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    println!("$ {}", shown.replace('"', ""));
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    ensure!(status.success(), "{shown} failed: {status}");
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn ensure_packages(extra: &[&str]) -> Result<()> {
    let wanted: Vec<&str> = if extra.is_empty() {
        APT_PACKAGES.to_vec()
    } else {
        extra.to_vec()
    };
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        println!("apt packages present: {}", wanted.join(" "));
        return Ok(());
    }
    ensure!(
        is_root(),
        "missing packages {missing:?}: run as root, or install them first"
    );
    println!("installing {}", missing.join(" "));
    // Servers such as nginx start a system service on install; we only want the binaries,
    // run by the benchmark in its own namespaces. policy-rc.d tells the installer not to.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let guard = !policy.exists() && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok();
    if guard {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755));
    }
    let result = run(Command::new("apt-get").args(["update", "-qq"])).and_then(|()| {
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if guard {
        let _ = std::fs::remove_file(policy);
    }
    result
}

/// The venv with the Python test clients; created and filled from tests/py/requirements.txt.
fn ensure_venv() -> Result<PathBuf> {
    let venv = std::env::var_os("BULWARK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    let python = venv.join("bin/python");
    if !python.exists() {
        // Debian's interpreter, where it exists, so python3-venv's ensurepip is the one used.
        let base = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        run(Command::new(base).args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(root().join("tests/py/requirements.txt")))?;
    Ok(python)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn test(no_install: bool) -> Result<()> {
    let t0 = Instant::now();
    let python = if no_install {
        std::env::var_os("BULWARK_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join(".venv/bin/python"))
    } else {
        ensure_packages(&[])?;
        ensure_venv()?
    };
    ensure!(
        is_root(),
        "the end-to-end tests create network namespaces and iptables rules: run as root"
    );
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    let mut t = cargo();
    if has_nextest() {
        t.args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--test-threads",
            "4",
        ]);
    } else {
        t.args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "--test-threads",
            "4",
        ]);
    }
    run(t.env("BULWARK_TEST_PYTHON", &python))?;
    fuzz(FUZZ_SMOKE_SECONDS, &[])?;
    bench(true, &[])?;
    instruction_budget()?;
    image::image(false, None, true)?;
    println!("all checks passed in {:.0}s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SMOKE_SECONDS: u64 = 15;
/// The fuzz targets, as proxy/fuzz/Cargo.toml names them.
const FUZZ_TARGETS: [&str; 7] = [
    "detect",
    "http_head",
    "grpc_timeout",
    "route",
    "policy_yaml",
    "snapshot",
    "h2_frames",
];

/// Builds the fuzz targets with libFuzzer's coverage instrumentation (what cargo-fuzz
/// passes, minus the sanitizer, which needs a nightly compiler) and runs each for
/// `seconds` over a scratch copy of its seeds, so a run never writes into the checkout. A
/// crash fails the run and leaves its input under the scratch directory, named.
fn fuzz(seconds: u64, only: &[String]) -> Result<()> {
    let dir = root().join("proxy/fuzz");
    let host = String::from_utf8(Command::new("rustc").arg("-vV").output()?.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV names the host")?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("fuzz");
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ];
    // --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
    run(cargo()
        .args([
            "build",
            "--release",
            "--bins",
            "--target",
            &host,
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", flags.join(" ")))?;
    let targets: Vec<&str> = if only.is_empty() {
        FUZZ_TARGETS.to_vec()
    } else {
        only.iter().map(String::as_str).collect()
    };
    let scratch = std::env::temp_dir().join(format!("bulwark-fuzz-{}", std::process::id()));
    for (i, t) in targets.iter().enumerate() {
        ensure!(
            FUZZ_TARGETS.contains(t),
            "no fuzz target {t:?}: {FUZZ_TARGETS:?}"
        );
        println!("fuzz {}/{}: {t} for {seconds}s", i + 1, targets.len());
        let corpus = scratch.join(t);
        std::fs::create_dir_all(&corpus)?;
        for seed in std::fs::read_dir(dir.join("corpus").join(t))
            .with_context(|| format!("seeds of {t} in proxy/fuzz/corpus/{t}"))?
        {
            let seed = seed?.path();
            std::fs::copy(&seed, corpus.join(seed.file_name().context("a seed file")?))?;
        }
        let artifacts = scratch.join(format!("{t}-crash-"));
        let log_path = scratch.join(format!("{t}.log"));
        let status = Command::new(target_dir.join(&host).join("release").join(t))
            .arg(&corpus)
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}", artifacts.display()))
            .args(["-print_final_stats=1", "-max_len=16384"])
            .stderr(std::fs::File::create(&log_path)?)
            .status()?;
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
            bail!(
                "fuzz target {t} failed ({status}): its input is at {}*",
                artifacts.display()
            );
        }
        let stat = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| "?".into())
        };
        println!(
            "  {} runs, {} new inputs, {} MB peak",
            stat("stat::number_of_executed_units:"),
            stat("stat::new_units_added:"),
            stat("stat::peak_rss_mb:")
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn codegen(check: bool) -> Result<()> {
    let dir = root().join("charts/bulwark/crds");
    std::fs::create_dir_all(&dir)?;
    let mut stale = Vec::new();
    for (file, manifest) in bulwark_api::crd::all() {
        let path = dir.join(&file);
        let text = bulwark_api::crd::to_yaml(&manifest);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::write(&path, text)?;
            println!("wrote {}", path.display());
        }
    }
    let path = root().join("charts/bulwark/values.schema.json");
    let text = values::schema();
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::write(&path, text)?;
            println!("wrote {}", path.display());
        }
    }
    ensure!(
        stale.is_empty(),
        "out of date with the Rust types (run cargo xtask codegen): {}",
        stale.join(", ")
    );
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn bench(smoke: bool, rest: &[String]) -> Result<()> {
    ensure!(
        is_root(),
        "the benchmark creates network namespaces and iptables rules: run it as root"
    );
    ensure_packages(&[])?;
    if smoke {
        run(cargo().args(["build", "--workspace", "--bins"]))?;
        run(Command::new(target_dir().join("debug/bulwark-bench"))
            .args(["--smoke", "--out"])
            .arg(target_dir().join("bench-smoke.md")))?;
        return run(
            Command::new(target_dir().join("debug/bulwark-cp-bench")).args([
                "--streams",
                "50",
                "--changes",
                "1",
            ]),
        );
    }
    // The references: HAProxy and nginx from Debian, run as one-hop reverse proxies.
    ensure_packages(&["haproxy", "nginx"])?;
    run(cargo().args(["build", "--release", "--bins"]))?;
    run(Command::new(target_dir().join("release/bulwark-bench"))
        .args(["--out"])
        .arg(target_dir().join("bench-report.md"))
        .args(rest))?;
    run(&mut Command::new(
        target_dir().join("release/bulwark-cp-bench"),
    ))
}

/// `bulwark-callgrind` on release binaries: the repeatable figure (instructions per
/// request), unlike times on a shared machine.
fn bench_callgrind(rest: &[String]) -> Result<()> {
    ensure!(
        is_root(),
        "the benchmark creates network namespaces and iptables rules: run it as root"
    );
    ensure_packages(&[])?;
    ensure_packages(&["valgrind"])?;
    run(cargo().args(["build", "--release", "--bins"]))?;
    run(Command::new(target_dir().join("release/bulwark-callgrind")).args(rest))
}

/// The instruction counts of plain forwarding and the policy path against their budgets
/// in benches/instructions.json: a change that makes a request dearer fails here, on any
/// machine (counts, unlike times, repeat).
fn instruction_budget() -> Result<()> {
    ensure_packages(&["valgrind"])?;
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "bulwark-proxy",
        "-p",
        "bulwark-tests",
        "-p",
        "bulwark-benches",
        "--bins",
    ]))?;
    let budgets = root().join("benches/instructions.json");
    let tool = target_dir().join("release/bulwark-callgrind");
    run(Command::new(&tool).arg("--check").arg(&budgets))?;
    run(Command::new(&tool)
        .args(["--proto", "h2", "--requests", "10000", "--check"])
        .arg(&budgets))
}

fn demo(requests: u32) -> Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and iptables rules: run it as root");
    }
    ensure_packages(&[])?;
    let python = ensure_venv()?;
    run(cargo().args(["build", "--release", "--bins"]))?;
    run(Command::new(target_dir().join("release/bulwark-demo"))
        .args(["--requests", &requests.to_string()])
        .env("BULWARK_TEST_PYTHON", python))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Test { no_install } => test(no_install),
        Cmd::Demo { requests } => demo(requests),
        Cmd::Bench {
            smoke,
            callgrind,
            rest,
        } => {
            if callgrind {
                bench_callgrind(&rest)
            } else {
                bench(smoke, &rest)
            }
        }
        Cmd::Codegen { check } => codegen(check),
        Cmd::Image {
            debug,
            out,
            no_smoke,
        } => image::image(!debug, out, !no_smoke),
        Cmd::Fuzz { seconds, targets } => fuzz(seconds, &targets),
    }
}
