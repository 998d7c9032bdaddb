//! The process's own resource use (memory, file descriptors, CPU), read from /proc for
//! `/stats` and `/metrics`.

use std::fmt::Write as _;

use serde::Serialize;

use super::encode::header;

/// The process's own resource use, read from /proc.
#[derive(Debug, Default, Serialize)]
pub struct ProcessStats {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size in bytes.
    pub peak_rss_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// User + system CPU time in seconds.
    pub cpu_seconds: f64,
    /// Worker threads of the runtime that serves traffic (`--worker-threads`).
    pub runtime_workers: usize,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads the current values; missing files leave zeros. Called on the runtime.
    pub fn read() -> Self {
        let mut s = Self::default();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            s.runtime_workers = rt.metrics().num_workers();
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let kb = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                        * 1024
                };
                if line.starts_with("VmRSS:") {
                    s.rss_bytes = kb(line);
                } else if line.starts_with("VmHWM:") {
                    s.peak_rss_bytes = kb(line);
                }
            }
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // utime and stime are fields 14 and 15 of stat; 11 and 12 after the name and state.
            let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .unwrap_or(100) as f64;
            s.cpu_seconds = (ticks(11) + ticks(12)) as f64 / hz;
            // starttime (field 22) counts ticks since boot; /proc/stat's btime is the boot.
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
            });
            if let Some(boot) = boot {
                s.start_time_seconds = boot as f64 + ticks(19) as f64 / hz;
            }
        }
        s
    }

    pub(super) fn render(&self, o: &mut String) {
        header(
            o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(o, "process_resident_memory_bytes {}", self.rss_bytes);
        header(
            o,
            "process_resident_memory_peak_bytes",
            "gauge",
            "Peak resident memory size in bytes.",
        );
        let _ = writeln!(
            o,
            "process_resident_memory_peak_bytes {}",
            self.peak_rss_bytes
        );
        header(o, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(o, "process_open_fds {}", self.open_fds);
        header(
            o,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time in seconds.",
        );
        let _ = writeln!(o, "process_cpu_seconds_total {}", self.cpu_seconds);
        header(
            o,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        let _ = writeln!(o, "process_start_time_seconds {}", self.start_time_seconds);
        header(
            o,
            "bulwark_build_info",
            "gauge",
            "1, labelled with the proxy's version.",
        );
        let _ = writeln!(
            o,
            "bulwark_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
    }
}
