//! Tracing context as the proxy sees it. Trace headers (W3C `traceparent`, B3) pass through
//! untouched; the proxy only reads their trace id, to tie a latency sample to its trace (an
//! OpenMetrics exemplar and the access log), and gives a request without an `x-request-id`
//! one, so the hops of one request can be found in the logs. Pure, apart from the random
//! id.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::metrics::requests::TraceId;

/// `x-request-id`: the id that follows a request across hops and logs.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: &str = "traceparent";
const B3_TRACE_ID: &str = "x-b3-traceid";
const B3: &str = "b3";

/// The trace id of a request: W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), else B3's
/// `x-b3-traceid` (16 or 32 hex; a 64-bit id is the low half) or single `b3` header. An
/// all-zero or malformed id is none.
pub fn trace_id(headers: &HeaderMap) -> Option<TraceId> {
    // One pass over the fields, by length first: three lookups of names a request mostly
    // lacks cost more than reading the few fields it has.
    let (mut w3c, mut b3_id, mut b3) = (None, None, None);
    for (name, value) in headers {
        match name.as_str().len() {
            11 if name == TRACEPARENT => w3c = Some(value),
            12 if name == B3_TRACE_ID => b3_id = Some(value),
            2 if name == B3 => b3 = Some(value),
            _ => {}
        }
    }
    if let Some(v) = w3c {
        return traceparent(v).map(|t| t.trace);
    }
    let id = match b3_id {
        Some(v) => v.to_str().ok()?,
        None => b3?.to_str().ok()?.split('-').next()?,
    };
    parse_hex_id(id)
}

/// 32 or 16 hex digits (lower case as the specs write them; upper case read too), not all
/// zero.
fn parse_hex_id(s: &str) -> Option<TraceId> {
    if s.len() != 32 && s.len() != 16 {
        return None;
    }
    let mut id = [0u8; 16];
    let offset = 16 - s.len() / 2;
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok()?;
        id[offset + i] = u8::from_str_radix(digits, 16).ok()?;
    }
    (id != [0; 16]).then_some(id)
}

/// A W3C `traceparent` as the proxy reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace: TraceId,
    /// The caller's span.
    pub span: [u8; 8],
    /// Whether the caller records the trace (flags bit 0).
    pub sampled: bool,
}

/// `00-<32 hex>-<16 hex>-<2 hex>` (a later version's extra fields ignored); none when
/// malformed, version `ff`, or either id all zero.
pub fn traceparent(v: &HeaderValue) -> Option<TraceParent> {
    let mut parts = v.to_str().ok()?.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace = parse_hex_id(trace)?;
    let span: [u8; 8] = parse_hex_id(span)?[8..].try_into().ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent {
        trace,
        span,
        sampled: flags & 1 == 1,
    })
}

/// Gives the request an `x-request-id` (a random UUID, version 4) unless it has one.
/// Returns the id in force, to log.
pub fn ensure_request_id(headers: &mut HeaderMap) -> Option<&HeaderValue> {
    if !headers.contains_key(&REQUEST_ID) {
        let id = uuid_v4(crate::random::u64(), crate::random::u64());
        let mut v = HeaderValue::from_bytes(&id).expect("hex and dashes are a valid header value");
        // Never indexed by HPACK: a value no other request repeats would only push the
        // fields that do repeat out of the HTTP/2 connection's table.
        v.set_sensitive(true);
        headers.insert(REQUEST_ID.clone(), v);
    }
    headers.get(&REQUEST_ID)
}

/// A version 4 (random) UUID in its text form, from 128 random bits. Written digit by
/// digit: `format!` costs a few thousand instructions, a tenth of a whole request.
fn uuid_v4(hi: u64, lo: u64) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = (hi & !0xf000) | 0x4000; // version 4
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // variant 1
    let bits = (u128::from(hi) << 64) | u128::from(lo);
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in bits.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1; // the dash
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0xf)];
        at += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::requests::trace_hex;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_trace_id_comes_from_traceparent_then_b3() {
        let w3c = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        assert_eq!(
            trace_id(&w3c).map(|id| trace_hex(&id)).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let b3 = headers(&[("x-b3-traceid", "463ac35c9f6413ad")]);
        assert_eq!(
            trace_id(&b3).map(|id| trace_hex(&id)).as_deref(),
            Some("0000000000000000463ac35c9f6413ad")
        );
        let single = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        assert_eq!(
            trace_id(&single).map(|id| trace_hex(&id)).as_deref(),
            Some("80f198ee56343ba864fe8b2a57d3eff7")
        );
    }

    #[test]
    fn malformed_or_zero_ids_are_none() {
        for v in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(trace_id(&headers(&[("traceparent", v)])), None, "{v}");
        }
        assert_eq!(trace_id(&HeaderMap::new()), None);
    }

    #[test]
    fn a_request_id_is_added_only_when_missing() {
        let mut h = headers(&[("x-request-id", "abc")]);
        assert_eq!(
            ensure_request_id(&mut h).map(|v| v.as_bytes()),
            Some(&b"abc"[..])
        );
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .expect("an id is added");
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.as_bytes()[14], b'4', "version 4: {id}");
        assert!(
            matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{id}"
        );
        assert_eq!(&uuid_v4(0, 0), b"00000000-0000-4000-8000-000000000000");
        assert_eq!(
            &uuid_v4(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
            b"01234567-89ab-4def-bedc-ba9876543210"
        );
    }
}
