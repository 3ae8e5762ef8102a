//! Optional mutual TLS between services (rustls). One certificate per service serves both
//! sides: servers require a client certificate from the CA; clients check that a server's
//! certificate names its role (`facesweep-<role>` as a DNS SAN), not the address dialled,
//! since discovered addresses are pod IPs that no certificate can list ahead of time.

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// `--tls-cert`, `--tls-key` and `--tls-ca` together switch mTLS on; none leaves plaintext.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate (chain) this service presents as server and as client.
    #[arg(long = "tls-cert", env = "FACESWEEP_TLS_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", env = "FACESWEEP_TLS_KEY")]
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s) that every peer's certificate must chain to.
    #[arg(long = "tls-ca", env = "FACESWEEP_TLS_CA")]
    pub ca: Option<PathBuf>,
    /// Also serve grpc.health.v1 alone, without TLS, here: for kubelet probes and Consul checks,
    /// which cannot present a client certificate.
    #[arg(long = "plaintext-health-listen", env = "FACESWEEP_PLAINTEXT_HEALTH_LISTEN")]
    pub plaintext_health_listen: Option<std::net::SocketAddr>,
}

/// mTLS settings as a service uses them: plain data, from [`TlsArgs`] or built by an embedder.
/// All three files switch mTLS on; none leaves plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub plaintext_health_listen: Option<std::net::SocketAddr>,
}

impl From<TlsArgs> for TlsConfig {
    fn from(a: TlsArgs) -> Self {
        let TlsArgs { cert, key, ca, plaintext_health_listen } = a;
        TlsConfig { cert, key, ca, plaintext_health_listen }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert, --tls-key and --tls-ca go together (got only {0})")]
    Partial(&'static str),
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// Loaded mTLS material.
#[derive(Clone, Debug)]
pub struct Tls {
    identity: Identity,
    ca: Certificate,
}

impl TlsConfig {
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|source| TlsError::Read { path: p.clone(), source });
        match (&self.cert, &self.key, &self.ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(Tls {
                identity: Identity::from_pem(read(cert)?, read(key)?),
                ca: Certificate::from_pem(read(ca)?),
            })),
            (c, k, _) => Err(TlsError::Partial(match (c, k) {
                (Some(_), Some(_)) => "--tls-cert and --tls-key",
                (Some(_), None) => "--tls-cert",
                (None, Some(_)) => "--tls-key",
                (None, None) => "--tls-ca",
            })),
        }
    }
}

impl Tls {
    /// Server side: present our certificate, require one from the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone()).client_ca_root(self.ca.clone())
    }

    /// Client side towards a `role` server (`delegator`, `detector`, `results`, `fetcher`).
    pub fn client(&self, role: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(server_name(role))
    }
}

/// The DNS name a `role` server's certificate must carry.
pub fn server_name(role: &str) -> String {
    format!("facesweep-{role}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_files_or_none() {
        assert!(TlsConfig::default().load().unwrap().is_none());
        let partial =
            TlsConfig { cert: Some("c.pem".into()), key: Some("k.pem".into()), ..Default::default() };
        let err = partial.load().unwrap_err().to_string();
        assert!(err.contains("go together") && err.contains("--tls-cert and --tls-key"), "{err}");
        let missing = TlsConfig {
            cert: Some("/nonexistent.pem".into()),
            key: Some("k".into()),
            ca: Some("ca".into()),
            ..Default::default()
        };
        assert!(missing.load().unwrap_err().to_string().contains("/nonexistent.pem"));
    }
}
