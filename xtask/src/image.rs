//! `cargo xtask image`: OCI image archives of the proxy and of the control plane, built with
//! buildah (no daemon), then smoke-tested by running their binaries from the image's own
//! root filesystem.
//!
//! Each image is a root filesystem assembled here from the built binaries and exactly the
//! shared libraries `ldd` says they load, on an empty base (`FROM scratch`): no shell, no
//! package manager, nothing else to patch. The proxy image also carries iptables (the nft
//! and legacy multi-call binaries, their libraries and the xtables extensions) for the
//! `init` step. Both run as non-root users by default: the proxy as 5102, the control plane
//! as 5103; the injected init container overrides that to root for its two capabilities.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::{cargo, ensure_packages, is_root, run, target_dir};

/// Where the distribution keeps the xtables extensions (the matches and targets iptables
/// loads by name: `owner`, `multiport`, `REDIRECT`, ...).
const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// The search path in the images: the binaries, then iptables.
const IMAGE_PATH: &str = "/usr/local/bin:/usr/sbin:/usr/bin";

/// The iptables names the proxy's `init` runs, each a link to one multi-call binary.
const IPTABLES_LINKS: &[(&str, &str)] = &[
    ("iptables", "xtables-nft-multi"),
    ("iptables-save", "xtables-nft-multi"),
    ("iptables-restore", "xtables-nft-multi"),
    ("iptables-nft-save", "xtables-nft-multi"),
    ("iptables-nft-restore", "xtables-nft-multi"),
    ("ip6tables", "xtables-nft-multi"),
    ("ip6tables-save", "xtables-nft-multi"),
    ("ip6tables-restore", "xtables-nft-multi"),
    ("ip6tables-nft-save", "xtables-nft-multi"),
    ("ip6tables-nft-restore", "xtables-nft-multi"),
    ("iptables-legacy-save", "xtables-legacy-multi"),
    ("iptables-legacy-restore", "xtables-legacy-multi"),
    ("ip6tables-legacy-save", "xtables-legacy-multi"),
    ("ip6tables-legacy-restore", "xtables-legacy-multi"),
];

/// One image: its name, what goes in, and how it runs.
struct Spec {
    name: &'static str,
    binaries: Vec<(PathBuf, &'static str)>,
    uid: u32,
    entrypoint: &'static str,
    cmd: &'static str,
    iptables: bool,
}

/// buildah with its own storage under the build directory (vfs: no overlay mount needed),
/// so nothing is left in the machine's container storage.
fn buildah(work: &Path) -> Command {
    let mut c = Command::new("buildah");
    c.arg("--storage-driver=vfs")
        .arg("--root")
        .arg(work.join("storage"))
        .arg("--runroot")
        .arg(work.join("run"));
    c
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    ensure!(
        out.status.success(),
        "{shown} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The shared libraries `bin` loads, as absolute paths (the dynamic loader included).
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim().split(' ').next().unwrap_or_default(),
            None => line.trim().split(' ').next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Copies `src` to `rootfs/dest` (the file's content, following links), making parents.
fn put(rootfs: &Path, src: &Path, dest: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let to = rootfs.join(dest.trim_start_matches('/'));
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(src, &to).with_context(|| format!("copying {}", src.display()))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies an executable or a shared object with every library it loads.
fn put_with_libraries(rootfs: &Path, src: &Path, dest: &str, mode: u32) -> Result<()> {
    put(rootfs, src, dest, mode)?;
    for lib in libraries(src)? {
        let dest = lib.display().to_string();
        if !rootfs.join(dest.trim_start_matches('/')).exists() {
            put(rootfs, &lib, &dest, 0o755)?;
        }
    }
    Ok(())
}

fn assemble(spec: &Spec, rootfs: &Path) -> Result<()> {
    if rootfs.exists() {
        std::fs::remove_dir_all(rootfs)?;
    }
    // Mount points a container runtime fills (/dev, /proc, /sys), and /etc.
    for dir in ["etc", "dev", "proc", "sys"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    for (src, dest) in &spec.binaries {
        put_with_libraries(rootfs, src, dest, 0o755)?;
        // Symbols and debug information stay with the build, not in the image.
        let copied = rootfs.join(dest.trim_start_matches('/'));
        if Command::new("strip").arg("--version").output().is_ok() {
            run(Command::new("strip").arg(&copied))?;
        }
    }
    if spec.iptables {
        for multi in ["xtables-nft-multi", "xtables-legacy-multi"] {
            let src = Path::new("/usr/sbin").join(multi);
            put_with_libraries(rootfs, &src, &format!("/usr/sbin/{multi}"), 0o755)?;
        }
        for (link, target) in IPTABLES_LINKS {
            std::os::unix::fs::symlink(target, rootfs.join("usr/sbin").join(link))?;
        }
        for entry in std::fs::read_dir(XTABLES_DIR).context(XTABLES_DIR)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "so") {
                let dest = path.display().to_string();
                put_with_libraries(rootfs, &path, &dest, 0o644)?;
            }
        }
    }
    // Names for the users, so `ps` and logs on the node show them (nothing reads them).
    std::fs::write(
        rootfs.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/:/sbin/nologin\nbulwark:x:{0}:{0}:bulwark:/:/sbin/nologin\n",
            spec.uid
        ),
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        format!("root:x:0:\nbulwark:x:{}:\n", spec.uid),
    )?;
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| dir_size(&e.path()))
            .sum()
    } else {
        meta.len()
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Builds both images into `out` (`target/images` by default); `release` picks the
/// binaries' profile (the dev profile is what the test suite's smoke run uses, being built
/// already).
pub fn image(release: bool, out: Option<PathBuf>, smoke: bool) -> Result<()> {
    ensure!(
        is_root(),
        "cargo xtask image needs root (buildah's storage, chroot, netns)"
    );
    ensure_packages(&["buildah", "iptables", "iproute2"])?;
    let mut build = cargo();
    build.args([
        "build",
        "-p",
        "bulwark-proxy",
        "-p",
        "bulwark-control-plane",
        "--bins",
    ]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let target = target_dir();
    let bins = target.join(if release { "release" } else { "debug" });
    let out = out.unwrap_or_else(|| target.join("images"));
    let work = target.join("image-build");
    std::fs::create_dir_all(&out)?;
    std::fs::create_dir_all(&work)?;
    let version = env!("CARGO_PKG_VERSION");
    let specs = [
        Spec {
            name: "bulwark-proxy",
            binaries: vec![(bins.join("bulwark-proxy"), "/usr/local/bin/bulwark-proxy")],
            uid: 5102,
            entrypoint: "/usr/local/bin/bulwark-proxy",
            cmd: "run",
            iptables: true,
        },
        Spec {
            name: "bulwark-control-plane",
            binaries: vec![
                (
                    bins.join("bulwark-control-plane"),
                    "/usr/local/bin/bulwark-control-plane",
                ),
                (bins.join("bulwarkctl"), "/usr/local/bin/bulwarkctl"),
            ],
            uid: 5103,
            entrypoint: "/usr/local/bin/bulwark-control-plane",
            cmd: "serve",
            iptables: false,
        },
    ];
    let mut made = Vec::new();
    for spec in &specs {
        let rootfs = work.join(format!("{}-rootfs", spec.name));
        println!("assembling {} from {}", spec.name, bins.display());
        assemble(spec, &rootfs)?;
        let archive = out.join(format!("{}-{version}.oci.tar", spec.name));
        let _ = std::fs::remove_file(&archive);
        let ctr = output(buildah(&work).args(["from", "scratch"]))?;
        let result = (|| -> Result<()> {
            run(buildah(&work)
                .args(["copy", &ctr])
                .arg(format!("{}/", rootfs.display()))
                .arg("/"))?;
            run(buildah(&work)
                .arg("config")
                .arg(format!("--user={0}:{0}", spec.uid))
                .arg(format!("--entrypoint=[\"{}\"]", spec.entrypoint))
                .arg(format!("--cmd={}", spec.cmd))
                .arg(format!("--env=PATH={IMAGE_PATH}"))
                .arg(format!("--label=org.opencontainers.image.title={}", spec.name))
                .arg(format!("--label=org.opencontainers.image.version={version}"))
                .arg("--label=org.opencontainers.image.source=https://github.com/bulwark-mesh/bulwark")
                .arg(&ctr))?;
            run(buildah(&work)
                .args(["commit", "--rm", "-q", &ctr])
                .arg(format!(
                    "oci-archive:{}:ghcr.io/bulwark-mesh/{}:{version}",
                    archive.display(),
                    spec.name
                )))
        })();
        if result.is_err() {
            let _ = output(buildah(&work).args(["rm", &ctr]));
        }
        result?;
        let size = std::fs::metadata(&archive)?.len();
        println!(
            "{}: {} ({} root filesystem, UID {})",
            archive.display(),
            mib(size),
            mib(dir_size(&rootfs)),
            spec.uid
        );
        made.push((spec, archive, size));
        std::fs::remove_dir_all(&rootfs)?;
    }
    if smoke {
        for (spec, archive, _) in &made {
            smoke_test(&work, spec, archive)
                .with_context(|| format!("smoke test of {}", spec.name))?;
        }
    }
    for (spec, archive, size) in &made {
        println!(
            "image {}: {} ({})",
            spec.name,
            archive.display(),
            mib(*size)
        );
    }
    Ok(())
}

/// Runs the image's own binaries from its own root filesystem: each one's `--version` as
/// the image's user, and for the proxy `init` writing real rules in a network namespace
/// with the image's iptables, then `init --check` proving them.
fn smoke_test(work: &Path, spec: &Spec, archive: &Path) -> Result<()> {
    let ctr = output(
        buildah(work)
            .arg("from")
            .arg(format!("oci-archive:{}", archive.display())),
    )?;
    let ns = format!("bulwark-image-{}", std::process::id());
    let mut mounted: Vec<String> = Vec::new();
    let result = (|| -> Result<()> {
        let mnt = output(buildah(work).args(["mount", &ctr]))?;
        // What a container runtime provides: /dev (the proxy's children get /dev/null as
        // stdin) and /proc.
        run(Command::new("mount")
            .args(["--bind", "/dev"])
            .arg(format!("{mnt}/dev")))?;
        mounted.push(format!("{mnt}/dev"));
        run(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(format!("{mnt}/proc")))?;
        mounted.push(format!("{mnt}/proc"));
        let user = format!("--userspec={0}:{0}", spec.uid);
        for (_, bin) in &spec.binaries {
            let v = output(
                Command::new("chroot")
                    .arg(&user)
                    .arg(&mnt)
                    .args([bin, "--version"]),
            )?;
            println!("  {} {bin} --version as UID {}: {v}", spec.name, spec.uid);
        }
        if spec.iptables {
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            // The image's PATH, as a container runtime would set it from the image config.
            let in_ns = |args: &[&str]| {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns])
                    .args(args)
                    .env("PATH", IMAGE_PATH);
                c
            };
            run(&mut in_ns(&["ip", "link", "set", "lo", "up"]))?;
            // A pod's address on a veth, both ends inside the namespace: nothing leaves it.
            run(&mut in_ns(&[
                "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
            ]))?;
            run(&mut in_ns(&["ip", "link", "set", "eth1", "up"]))?;
            run(&mut in_ns(&[
                "ip",
                "addr",
                "add",
                "10.254.0.2/24",
                "dev",
                "eth0",
            ]))?;
            run(&mut in_ns(&["ip", "link", "set", "eth0", "up"]))?;
            output(&mut in_ns(&[
                "chroot",
                &mnt,
                "/usr/local/bin/bulwark-proxy",
                "init",
                "--pod-ip",
                "10.254.0.2",
            ]))?;
            println!(
                "  bulwark-proxy init in a network namespace, with the image's iptables: rules applied and proven by a connection through them"
            );
            output(&mut in_ns(&[
                "chroot",
                &mnt,
                "/usr/local/bin/bulwark-proxy",
                "init",
                "--check",
            ]))?;
            let rules = output(&mut in_ns(&[
                "chroot",
                &mnt,
                "/usr/sbin/iptables-save",
                "-t",
                "nat",
            ]))?;
            let ours = rules.lines().filter(|l| l.contains("BULWARK")).count();
            if ours == 0 {
                bail!("no BULWARK rules after init:\n{rules}");
            }
            println!("  init --check passed; {ours} nat lines name BULWARK chains");
        }
        Ok(())
    })();
    for m in mounted.iter().rev() {
        let _ = Command::new("umount").arg(m).status();
    }
    if spec.iptables {
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
    let _ = output(buildah(work).args(["umount", &ctr]));
    let _ = output(buildah(work).args(["rm", &ctr]));
    result
}
