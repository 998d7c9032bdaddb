//! The README's demo runs end to end and shows the fault being absorbed.

use anyhow::Result;
use bulwark_tests::bin;

#[test]
fn the_demo_shows_the_injected_fault_absorbed() -> Result<()> {
    let out = std::process::Command::new(bin("bulwark-demo"))
        .args(["--requests", "600"])
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let phase = |n: &str| {
        text.split(&format!("\n[{n}]"))
            .nth(1)
            .and_then(|s| s.lines().find(|l| l.trim_start().starts_with("requests:")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        phase("4").contains("400 succeeded, 200 failed"),
        "without resilience a third fails: {text}"
    );
    assert!(
        phase("6").contains("600 succeeded, 0 failed"),
        "with resilience none does: {text}"
    );
    assert!(
        text.contains("ejected") && text.contains("consecutive_5xx"),
        "{text}"
    );
    assert!(
        text.contains("balanced by the caller's proxy over the slice: 300 of 300 succeeded; web-0 100, web-1 100, web-2 100")
            && text.contains("300 more: 300 of 300 succeeded; web-0 150, web-1 0, web-2 150")
            && text.contains("Accepted=True"),
        "cluster mode balances the EndpointSlice and drains the terminating pod: {text}"
    );
    assert!(
        text.contains("two Content-Lengths: HTTP/1.1 400"),
        "the smuggling-shaped head is refused: {text}"
    );
    assert!(
        text.contains("before its proxy cut it off (")
            && text.contains("reason=\"premature_resets\"} 1"),
        "the rapid reset is cut off and counted: {text}"
    );
    assert!(
        text.contains(
            "client proxy is spiffe://cluster.local/ns/shop/sa/frontend (GET /identity: valid"
        ) && text.contains(
            "identity spiffe://cluster.local/ns/shop/sa/checkout (certificate expires in"
        ),
        "every proxy has its identity, and bulwarkctl shows it: {text}"
    );
    assert!(
        text.contains("plaintext 'X-Card' or 'GET /' seen: false"),
        "{text}"
    );
    assert!(
        text.contains("40 succeeded, 0 failed")
            && text.contains("its ClientHellos offered bulwark.dev/h2 only: true")
            && text.contains("checkout's app received HTTP/1.1"),
        "ads's HTTP/1 rode one HTTP/2 mesh connection: {text}"
    );
    assert!(
        text.contains("ads (shop/ads, meshed):          403 x-bulwark-error: unauthorized")
            && text.contains("client (shop/frontend, meshed):  200")
            && text.contains("outsider (no proxy, plaintext):  000"),
        "{text}"
    );
    assert!(
        text.contains("explains the 403: client spiffe://cluster.local/ns/shop/sa/ads"),
        "{text}"
    );
    assert!(
        text.contains(
            "client proxy process: UID 5102, effective capabilities 0000000000000000, NoNewPrivs 1"
        ),
        "{text}"
    );
    assert!(text.contains("done in"), "{text}");
    Ok(())
}
