//! Which connections an inbound port accepts, from the MeshConfig's `mtls` section: mesh
//! TLS always; plaintext (and TLS a client originates itself) only where the port is
//! permissive.

use std::collections::BTreeMap;

use bulwark_api::policy::{Document, MtlsMode};
use serde::Serialize;

/// Each inbound port's mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Modes {
    /// The mesh's mode.
    pub default: MtlsMode,
    /// Ports that differ from it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<u16, MtlsMode>,
}

impl Modes {
    /// The modes the MeshConfig among `documents` sets (permissive everywhere without one).
    pub fn from_documents(documents: &[Document]) -> Self {
        let Some(mtls) = documents.iter().find_map(|d| match d {
            Document::MeshConfig(m) => m.spec.mtls.as_ref(),
            _ => None,
        }) else {
            return Self::default();
        };
        Self {
            default: mtls.mode.unwrap_or_default(),
            ports: mtls.ports.iter().map(|p| (p.port, p.mode)).collect(),
        }
    }

    /// The mode of `port`.
    pub fn of(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.default)
    }
}

/// What an inbound connection is, as far as admission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A ClientHello offering a Bulwark ALPN.
    MeshTls,
    /// Anything else: plaintext HTTP, opaque bytes, TLS of the client's own.
    Other,
}

/// What the inbound proxy does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Terminate mesh TLS (the client must present a certificate).
    Terminate,
    /// Forward it as it came.
    Forward,
    /// Close it: a strict port takes mesh TLS only.
    Refuse,
}

/// Decides what happens to `arrival` on a port in `mode`; `mesh` says whether this proxy
/// has mesh TLS at all. A strict port without mesh TLS refuses everything: it fails closed.
pub fn admit(mode: MtlsMode, arrival: Arrival, mesh: bool) -> Admission {
    match (arrival, mode) {
        (Arrival::MeshTls, _) if mesh => Admission::Terminate,
        (_, MtlsMode::Strict) => Admission::Refuse,
        (_, MtlsMode::Permissive) => Admission::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_takes_mesh_tls_only_and_fails_closed() {
        use Admission::*;
        use Arrival::*;
        use MtlsMode::*;
        assert_eq!(admit(Strict, MeshTls, true), Terminate);
        assert_eq!(admit(Strict, Other, true), Refuse);
        assert_eq!(admit(Strict, MeshTls, false), Refuse);
        assert_eq!(admit(Permissive, MeshTls, true), Terminate);
        assert_eq!(admit(Permissive, Other, true), Forward);
        // Without an identity a mesh ClientHello cannot be terminated: it goes to the app
        // as any other TLS would.
        assert_eq!(admit(Permissive, MeshTls, false), Forward);
    }

    #[test]
    fn a_port_override_wins_over_the_mesh_mode() {
        let yaml = "apiVersion: bulwark.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: mesh\nspec:\n  trustDomain: cluster.local\n  mtls:\n    mode: strict\n    ports:\n      - port: 9090\n        mode: permissive\n";
        let mut loaded = bulwark_api::load::Loaded::default();
        bulwark_api::load::load_str(std::path::Path::new("mesh.yaml"), yaml, &mut loaded);
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        let docs: Vec<Document> = loaded.documents.into_iter().map(|d| d.document).collect();
        let modes = Modes::from_documents(&docs);
        assert_eq!(modes.of(8080), MtlsMode::Strict);
        assert_eq!(modes.of(9090), MtlsMode::Permissive);
        assert_eq!(Modes::from_documents(&[]).of(8080), MtlsMode::Permissive);
    }
}
