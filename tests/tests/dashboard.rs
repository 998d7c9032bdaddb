//! The admin port's live page in a real browser: headless Chromium in the client pod loads
//! it from the proxy, its script polls the proxy's JSON and metrics, and the test reads what
//! the page drew (the DOM) and keeps a screenshot of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_tests::resources::{Backend, Policy};
use bulwark_tests::{Mesh, Pod, check, wait_for, workspace_root};

/// The proxy's admin port as the pod's own processes reach it (what [`Pod::admin`] asks).
const ADMIN: &str = "http://127.0.0.1:5191";

/// Requests the test sends that succeed.
const OK: u64 = 20;
/// Requests the test sends that the server answers 503.
const FAILED: u64 = 5;

/// A client pod whose proxy knows the server as the Backend `shop/web` (so `/outliers` has
/// an endpoint), and a server pod with the test server on 8080 behind its own proxy.
fn two_pods(mesh: &mut Mesh, policy_dir: &Path) -> Result<(Pod, Pod)> {
    let client = mesh.pod("client")?;
    let server = mesh.server_pod("server")?;
    mesh.proxy(&server).start()?;
    let policy = Policy::new().with(Backend::new("web").endpoint(format!("{}:8080", server.ip)));
    std::fs::write(policy_dir.join("web.yaml"), policy.to_yaml(&[])?)?;
    mesh.proxy(&client)
        .flag("--policy", policy_dir)
        .flag("--workload", "shop/client")
        .start()?;
    Ok((client, server))
}

/// A private Chromium profile (and home), removed when dropped.
struct Profile(PathBuf);

impl Profile {
    fn new(name: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("bulwark-chromium-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// Headless Chromium in `pod` with this profile, bounded to 60 s; returns its stdout.
    /// `--virtual-time-budget` lets the page's timers run for that long (in virtual time,
    /// which stands still while a fetch is out) before the DOM is dumped or the shot taken.
    fn run(&self, pod: &Pod, args: &[&str], url: &str) -> Result<String> {
        let mut cmd = pod.cmd("timeout");
        cmd.args(["-k", "5", "60", "chromium"])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-crash-reporter",
                "--hide-scrollbars",
                "--virtual-time-budget=8000",
            ])
            .arg(format!(
                "--user-data-dir={}",
                self.0.join("profile").display()
            ))
            .arg(format!(
                "--disk-cache-dir={}",
                self.0.join("cache").display()
            ))
            .args(args)
            .arg(url)
            .env("HOME", &self.0)
            .env("XDG_CONFIG_HOME", self.0.join("config"))
            .env("XDG_CACHE_HOME", self.0.join("cache"));
        check(&mut cmd)
            .context("running chromium (apt-get install chromium; it is in xtask's APT_PACKAGES)")
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_live_page_in_a_browser_shows_the_traffic_sent_and_the_endpoint() -> Result<()> {
    let mut mesh = Mesh::new("dashboard")?;
    let dir = bulwark_tests::policy::policy_dir("dashboard")?;
    let (client, server) = two_pods(&mut mesh, &dir)?;
    let url = format!("http://{}:8080", server.ip);
    let authority = format!("{}:8080", server.ip);
    client.sh_ok(&format!(
        "for i in $(seq {OK}); do curl -s -o /dev/null -m 5 {url}/; done; \
         for i in $(seq {FAILED}); do curl -s -o /dev/null -m 5 {url}/status/503; done"
    ))?;
    wait_for(
        "the client proxy to count every request",
        Duration::from_secs(5),
        || {
            Ok(
                client.requests("outbound", &authority, "2xx")? == Some(OK as f64)
                    && client.requests("outbound", &authority, "5xx")? == Some(FAILED as f64),
            )
        },
    )?;

    let page = served_page(&client)?;
    for outside in ["http://", "https://", "src=", "href=", "url(", "@import"] {
        ensure!(
            !page.contains(outside),
            "the page loads nothing from elsewhere: {outside}"
        );
    }

    let profile = Profile::new("dashboard")?;
    let dom = profile.run(&client, &["--dump-dom"], &format!("{ADMIN}/"))?;
    check_dom(&dom, &authority, &server).with_context(|| format!("the page drew:\n{dom}"))?;

    let shot = artifact_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    std::fs::create_dir_all(artifact_dir())?;
    let arg = format!("--screenshot={}", shot.display());
    profile.run(
        &client,
        &[&arg, "--window-size=1280,1000"],
        &format!("{ADMIN}/dashboard"),
    )?;
    let png = std::fs::read(&shot).with_context(|| format!("reading {}", shot.display()))?;
    ensure!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );
    ensure!(
        png.len() > 10_000,
        "{} is only {} bytes: a blank page?",
        shot.display(),
        png.len()
    );
    println!("screenshot of the live page: {}", shot.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The page at `/` and `/dashboard`, checking both answer the same with its headers.
fn served_page(client: &Pod) -> Result<String> {
    let mut bodies = Vec::new();
    for path in ["/", "/dashboard"] {
        let out = client.sh_ok(&format!("curl -s -m 5 -D - {ADMIN}{path}"))?;
        let (head, body) = out.split_once("\r\n\r\n").context("a response head")?;
        let head = head.to_ascii_lowercase();
        ensure!(head.starts_with("http/1.1 200"), "{path}: {head}");
        ensure!(
            head.contains("\r\ncontent-type: text/html; charset=utf-8\r\n"),
            "{path}: {head}"
        );
        ensure!(
            head.contains("\r\ncache-control: no-store\r\n"),
            "{path}: {head}"
        );
        bodies.push(body.to_string());
    }
    ensure!(
        bodies[0] == bodies[1],
        "/ and /dashboard serve the same page"
    );
    ensure!(bodies[0].contains("<script>"), "{}", bodies[0]);
    Ok(bodies.remove(0))
}

/// What the page must show after polling: the figures of the traffic sent, its histogram,
/// the endpoint, the process, a fresh "updated" line and no error.
fn check_dom(dom: &str, authority: &str, server: &Pod) -> Result<()> {
    let updated = text_of(dom, "id=\"updated\"").context("an updated line")?;
    let clock = updated
        .strip_prefix("updated ")
        .context("the page polled")?;
    let fields: Vec<&str> = clock.split(':').collect();
    ensure!(
        fields.len() == 3
            && fields
                .iter()
                .all(|f| f.len() == 2 && f.parse::<u8>().is_ok()),
        "updated HH:MM:SS, not {updated:?}"
    );
    let error = text_of(dom, "id=\"error\"").context("an error line")?;
    ensure!(error.is_empty(), "no fetch failed: {error}");
    check_series(dom, authority)?;
    check_endpoint(dom, server)?;
    let rss = text_of(dom, "data-field=\"rss\"").unwrap_or("");
    ensure!(rss.ends_with(" MiB"), "the process's RSS: {rss:?}");
    let open = text_of(dom, "data-field=\"conns-outbound\"").unwrap_or("");
    ensure!(
        open.parse::<u64>().is_ok(),
        "open outbound connections: {open:?}"
    );
    Ok(())
}

/// The client's requests to `authority`: counts, success rate, percentiles and histogram.
fn check_series(dom: &str, authority: &str) -> Result<()> {
    let series = [
        ("data-direction", "outbound"),
        ("data-authority", authority),
    ];
    let group = element(dom, "tr", &[&series[..], &[("class", "group")]].concat())
        .context("a row for the client's requests to the server")?;
    let total = (OK + FAILED).to_string();
    ensure!(field(group, "requests") == Some(total.as_str()), "{group}");
    // The 503s are failures whether counted by status class or by classification.
    let success = format!("{:.1} %", OK as f64 * 100.0 / (OK + FAILED) as f64);
    ensure!(field(group, "success") == Some(success.as_str()), "{group}");
    for (class, n) in [("2xx", OK), ("5xx", FAILED)] {
        let row = element(
            dom,
            "tr",
            &[&series[..], &[("data-status-class", class)]].concat(),
        )
        .with_context(|| format!("a {class} row"))?;
        ensure!(
            field(row, "requests") == Some(n.to_string().as_str()),
            "{row}"
        );
        let ms = |f| -> Result<f64> {
            field(row, f)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{f} in {row}"))
        };
        let (p50, p99, max) = (ms("p50")?, ms("p99")?, ms("max")?);
        ensure!(0.0 < p50 && p50 <= p99 && p99 <= max, "{row}");
    }

    let hist = element(dom, "figure", &series).context("a histogram for the server")?;
    let drawn: u64 = hist
        .split("data-count=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse::<u64>().ok())
        .sum();
    ensure!(
        drawn == OK + FAILED,
        "the histogram holds every request: {hist}"
    );
    Ok(())
}

/// The server as the endpoint of the Backend, with every request sent to it.
fn check_endpoint(dom: &str, server: &Pod) -> Result<()> {
    let endpoint = format!("{}:8080", server.ip);
    let row = element(
        dom,
        "tr",
        &[
            ("data-target", "Backend/shop/web"),
            ("data-address", &endpoint),
        ],
    )
    .context("an endpoint row for the Backend")?;
    let state = field(row, "state").unwrap_or("");
    ensure!(
        ["healthy", "probation", "ejected"]
            .iter()
            .any(|s| state.starts_with(s)),
        "{row}"
    );
    let total = (OK + FAILED).to_string();
    ensure!(field(row, "requests") == Some(total.as_str()), "{row}");
    Ok(())
}

/// The first `<tag …>…</tag>` of `dom` whose start tag has every `name="value"` of `attrs`
/// (the page nests no element in one of its own kind).
fn element<'a>(dom: &'a str, tag: &str, attrs: &[(&str, &str)]) -> Option<&'a str> {
    let open = format!("<{tag} ");
    let close = format!("</{tag}>");
    dom.match_indices(&open).find_map(|(at, _)| {
        let rest = &dom[at..];
        let start_tag = &rest[..rest.find('>')?];
        if !attrs
            .iter()
            .all(|(k, v)| start_tag.contains(&format!("{k}=\"{v}\"")))
        {
            return None;
        }
        Some(&rest[..rest.find(&close)? + close.len()])
    })
}

/// The text right inside the start tag holding `marker`, up to the next tag.
fn text_of<'a>(fragment: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &fragment[fragment.find(marker)?..];
    let text = &rest[rest.find('>')? + 1..];
    Some(&text[..text.find('<')?])
}

/// The text of the cell marked `data-field="name"` in `fragment`.
fn field<'a>(fragment: &'a str, name: &str) -> Option<&'a str> {
    text_of(fragment, &format!("data-field=\"{name}\""))
}

/// Where test artifacts are kept: `test-artifacts/` in cargo's target directory.
fn artifact_dir() -> PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| root.join(t))
        .unwrap_or_else(|| root.join("target"))
        .join("test-artifacts")
}
