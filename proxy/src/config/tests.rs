use super::*;

#[test]
fn defaults_validate() {
    Config::default().validate().unwrap();
}

#[test]
fn clashing_ports_are_rejected() {
    let mut c = Config::default();
    c.admin_addr.set_port(DEFAULT_INBOUND_PORT);
    assert_eq!(
        c.validate(),
        Err(ConfigError::PortClash {
            a: "--inbound-port",
            b: "--admin-addr",
            addr: c.inbound_addr
        })
    );
}

#[test]
fn zero_bounds_are_rejected() {
    let mut c = Config::default();
    c.http.max_headers = 0;
    assert_eq!(
        c.validate(),
        Err(ConfigError::Zero {
            field: "--max-headers"
        })
    );
}

#[test]
fn an_identity_token_needs_a_control_plane() {
    let mut c = Config::default();
    c.identity.token_file = Some("/var/run/bulwark/token".into());
    assert_eq!(c.validate(), Err(ConfigError::TokenWithoutControlPlane));
    c.control_plane = Some("http://cp:5170".into());
    c.validate().unwrap();
}
