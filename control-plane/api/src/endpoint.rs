//! The control plane's address as every binary takes it (`--control-plane`): a bare
//! `host:port`, as the other address flags are written, or an `http://host:port` URI.

/// The URI for `s`, or why it is not a control-plane address.
pub fn control_plane_uri(s: &str) -> Result<String, String> {
    let s = s.trim();
    let rest = match s.split_once("://") {
        None => s,
        Some(("http", rest)) => rest,
        Some((scheme, _)) => return Err(format!("{s:?}: the scheme must be http, not {scheme}")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(format!("{s:?}: an address is host:port, without a path"));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!(
            "{s:?}: needs a port, as in bulwark-control-plane:5170"
        ));
    };
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || (host.contains(':') && !bracketed) {
        return Err(format!(
            "{s:?}: needs a host before the port (an IPv6 address in brackets: [fd00::1]:5170)"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(format!("http://{host}:{p}")),
        _ => Err(format!(
            "{s:?}: the port must be a number from 1 to 65535, not {port:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::control_plane_uri;

    #[test]
    fn bare_addresses_and_http_uris_mean_the_same() {
        for (given, uri) in [
            (
                "bulwark-control-plane:5170",
                "http://bulwark-control-plane:5170",
            ),
            ("http://10.0.0.1:5170", "http://10.0.0.1:5170"),
            ("http://10.0.0.1:5170/", "http://10.0.0.1:5170"),
            ("[fd00::1]:5170", "http://[fd00::1]:5170"),
        ] {
            assert_eq!(control_plane_uri(given).as_deref(), Ok(uri), "{given}");
        }
    }

    #[test]
    fn what_is_not_an_address_says_why() {
        for (given, why) in [
            ("cp", "needs a port"),
            ("https://cp:5170", "must be http"),
            ("cp:5170/discovery", "without a path"),
            ("cp:http", "must be a number"),
            ("fd00::1:5170", "IPv6 address in brackets"),
            (":5170", "needs a host"),
        ] {
            let e = control_plane_uri(given).unwrap_err();
            assert!(e.contains(why), "{given}: {e}");
        }
    }
}
