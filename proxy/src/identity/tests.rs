use super::*;

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

#[test]
fn renewal_comes_at_seventy_percent_less_jitter() {
    // A 24 h certificate received at t=1000.
    let (got, na) = (at(1000), at(1000 + 86_400));
    assert_eq!(renew_in(got, na, 0.0), Duration::from_secs(60_480));
    assert_eq!(renew_in(got, na, 0.999_999).as_secs(), 56_160);
    // Received late in its life (a slow answer, a skewed clock): 70 % of what is left.
    assert_eq!(
        renew_in(at(1000 + 86_000), na, 0.0),
        Duration::from_secs(280)
    );
    // Received expired, or a tiny certificate: soon, never at once.
    assert_eq!(renew_in(at(1000 + 90_000), na, 0.0), MIN_RENEW_WAIT);
    assert_eq!(renew_in(at(0), at(1), 0.0), MIN_RENEW_WAIT);
    // A 20 s certificate (the rotation tests) renews after 13 to 14 s.
    assert_eq!(renew_in(at(0), at(20), 0.5), Duration::from_millis(13_500));
}

#[test]
fn a_year_long_certificate_is_renewed_within_a_day() {
    assert_eq!(renew_in(at(0), at(365 * 86_400), 0.0), MAX_RENEW_WAIT);
}
