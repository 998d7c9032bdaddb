//! A request's deadlines, decided once when it arrives: the policy's request timeout, the
//! caller's own `grpc-timeout`, and the response-headers timeout, and which of them a
//! passed deadline is named after. Pure, and read from tokio's clock.

use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use super::policy::Timeouts;
use crate::error::{Error, Kind};

/// The deadlines of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The whole request, body included: the earlier of the request timeout and the
    /// caller's deadline.
    pub request: Option<Instant>,
    /// The caller's `grpc-timeout`, if it sent one.
    pub caller: Option<Instant>,
    /// Response headers, over every attempt: `request`, or the response-headers timeout
    /// if that comes first.
    pub headers: Option<Instant>,
}

impl Deadlines {
    /// The deadlines of a request that arrived at `start` with `timeouts` in force; a gRPC
    /// request's `grpc-timeout` is honoured when `grpc` is set.
    pub fn new(start: Instant, timeouts: &Timeouts, headers: &HeaderMap, grpc: bool) -> Self {
        let caller = grpc
            .then(|| parse_grpc_timeout(headers))
            .flatten()
            .map(|d| start + d);
        let request = earliest(timeouts.request.map(|d| start + d), caller);
        let headers = earliest(request, timeouts.response_headers.map(|d| start + d));
        Self {
            request,
            caller,
            headers,
        }
    }

    /// The 504 for a passed deadline, named after the limit that fired: the caller's
    /// `grpc-timeout`, the policy's request timeout, or its response-headers timeout.
    pub fn error(&self) -> Error {
        let kind = if self.headers.is_some() && self.headers == self.caller {
            Kind::CallerDeadline
        } else if self.headers.is_some() && self.headers == self.request {
            Kind::RequestTimeout
        } else {
            Kind::ResponseHeadersTimeout
        };
        kind.into()
    }

    /// Whether the response-headers deadline has passed at `now`.
    pub fn passed(&self, now: Instant) -> bool {
        self.headers.is_some_and(|d| d <= now)
    }

    /// Time left until the response-headers deadline (`None`: no limit).
    pub fn left(&self, now: Instant) -> Option<Duration> {
        self.headers.map(|d| d.saturating_duration_since(now))
    }
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a `grpc-timeout` (`<digits><H|M|S|m|u|n>`, at most 8 digits).
pub fn parse_grpc_timeout(h: &HeaderMap) -> Option<Duration> {
    let v = h.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a `grpc-timeout` with the unit that keeps it within 8 digits.
pub fn format_grpc_timeout(d: Duration) -> String {
    let us = d.as_micros();
    if us < 100_000_000 {
        format!("{}u", us.max(1))
    } else {
        format!("{}m", d.as_millis().min(99_999_999))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn a_deadline_error_names_the_limit_that_fired() {
        let t = Instant::now();
        let (early, late) = (Some(t), Some(t + Duration::from_secs(1)));
        let d = |request, headers, caller| Deadlines {
            request,
            caller,
            headers,
        };
        assert_eq!(d(early, early, early).error().kind, Kind::CallerDeadline);
        assert_eq!(d(early, early, late).error().kind, Kind::RequestTimeout);
        assert_eq!(
            d(late, early, late).error().kind,
            Kind::ResponseHeadersTimeout
        );
        assert_eq!(
            d(None, early, None).error().kind,
            Kind::ResponseHeadersTimeout
        );
    }

    #[test]
    fn the_callers_deadline_caps_the_policys() {
        let t = Instant::now();
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request: Some(Duration::from_secs(2)),
            per_try: None,
            response_headers: Some(Duration::from_secs(3)),
            idle: None,
        };
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static("500m"));
        let d = Deadlines::new(t, &timeouts, &h, true);
        assert_eq!(d.headers, Some(t + Duration::from_millis(500)));
        assert_eq!(d.error().kind, Kind::CallerDeadline);
        let d = Deadlines::new(t, &timeouts, &h, false);
        assert_eq!(d.headers, Some(t + Duration::from_secs(2)), "not gRPC");
        assert_eq!(d.error().kind, Kind::RequestTimeout);
    }

    #[test]
    fn grpc_timeout_round_trips() {
        let mut h = HeaderMap::new();
        for (v, d) in [
            ("100m", Duration::from_millis(100)),
            ("2S", Duration::from_secs(2)),
            ("1H", Duration::from_secs(3600)),
            ("5000u", Duration::from_millis(5)),
        ] {
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            assert_eq!(parse_grpc_timeout(&h), Some(d), "{v}");
        }
        for bad in ["", "m", "123456789m", "10x", "-1S", "+1S"] {
            h.insert("grpc-timeout", HeaderValue::from_static(bad));
            assert_eq!(parse_grpc_timeout(&h), None, "{bad:?}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(200)), "200000m");
        assert_eq!(format_grpc_timeout(Duration::ZERO), "1u");
    }
}
