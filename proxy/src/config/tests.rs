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
