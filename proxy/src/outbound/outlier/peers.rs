//! The judgement across peers, once per interval: success rate, failure percentage and
//! latency compared between the endpoints of a target, and the bounds that keep ejections
//! from emptying it (the ejection cap, panic mode).

use super::{OutlierPolicy, Reason, State};

/// Judges every endpoint against its peers at the end of an interval, then starts the next
/// one. Returns the indices to eject with their reason and detail (the caller applies the
/// ejection cap). Ejected endpoints are neither judged nor counted as peers.
pub fn evaluate(states: &mut [&mut State], p: &OutlierPolicy) -> Vec<(usize, Reason, String)> {
    let mut out = Vec::new();
    let judged: Vec<usize> = (0..states.len())
        .filter(|&i| !states[i].is_ejected())
        .collect();
    if let Some((threshold, volume)) = p.failure_percentage {
        for &i in &judged {
            let s = &states[i];
            if s.volume() >= volume.max(1) {
                let pct = 100.0 * s.failures as f64 / s.volume() as f64;
                if pct >= threshold as f64 {
                    out.push((
                        i,
                        Reason::FailurePercentage,
                        format!(
                            "{pct:.0}% of {} requests failed (threshold {threshold}%)",
                            s.volume()
                        ),
                    ));
                }
            }
        }
    }
    if let Some((min_hosts, volume, factor)) = p.success_rate {
        let rates: Vec<(usize, f64)> = judged
            .iter()
            .filter(|&&i| states[i].volume() >= volume.max(1))
            .map(|&i| (i, states[i].successes as f64 / states[i].volume() as f64))
            .collect();
        if rates.len() >= min_hosts as usize && rates.len() >= 2 {
            let n = rates.len() as f64;
            let mean = rates.iter().map(|r| r.1).sum::<f64>() / n;
            let stdev = (rates.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / n).sqrt();
            let floor = mean - factor * stdev;
            for (i, rate) in rates {
                if rate < floor && !out.iter().any(|o| o.0 == i) {
                    out.push((i, Reason::SuccessRate, format!("success rate {:.1}% below {:.1}% (peers' mean {:.1}% − {factor} × stdev {:.1}%)", rate * 100.0, floor * 100.0, mean * 100.0, stdev * 100.0)));
                }
            }
        }
    }
    if let Some((factor, volume)) = p.latency {
        let p90s: Vec<(usize, u32)> = judged
            .iter()
            .filter(|&&i| states[i].latency_judgeable(volume))
            .filter_map(|&i| states[i].p90().map(|v| (i, v)))
            .collect();
        for &(i, mine) in &p90s {
            let mut peers: Vec<u32> = p90s.iter().filter(|o| o.0 != i).map(|o| o.1).collect();
            if peers.is_empty() {
                continue;
            }
            peers.sort_unstable();
            let median = peers[peers.len() / 2].max(1);
            if mine as f64 > factor * median as f64 && !out.iter().any(|o| o.0 == i) {
                out.push((
                    i,
                    Reason::Latency,
                    format!(
                        "p90 {:.1} ms is {:.1}× the peers' median p90 {:.1} ms (factor {factor})",
                        mine as f64 / 1000.0,
                        mine as f64 / median as f64,
                        median as f64 / 1000.0
                    ),
                ));
            }
        }
    }
    // With latency detection off, samples are never judged: each interval drops them.
    let latency_volume = p.latency.map_or(u32::MAX, |(_, v)| v);
    for s in states.iter_mut() {
        s.new_interval(latency_volume);
    }
    out
}

/// How many endpoints may be ejected at once: the percentage of `total`, rounded down, but
/// at least one when there are two or more endpoints (so a pool of two can shed its bad one).
/// A percentage of 0 ejects nothing.
pub fn ejection_cap(total: usize, max_percent: u8) -> usize {
    let cap = total * max_percent as usize / 100;
    if total >= 2 && max_percent > 0 {
        cap.max(1)
    } else {
        cap
    }
}

/// Whether too few endpoints are healthy for ejections to be honoured.
pub fn in_panic(total: usize, healthy: usize, panic_threshold: u8) -> bool {
    total > 0 && (healthy * 100) < total * panic_threshold as usize
}
