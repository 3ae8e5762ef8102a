//! Who may call what, closed by default. Two kinds of call:
//! - admin calls (jobs, retries, lease listings, exports): an mTLS certificate for the `admin`
//!   role, or the bearer token configured with `--admin-token`; with neither configured, only
//!   loopback callers (so `facesweep up`/`run` keep working on one machine);
//! - data-plane calls (leases, Record, Detect): under mTLS only the roles that use them
//!   (`fetcher`); in plaintext, whoever the network lets in (a NetworkPolicy in the chart),
//!   and `Record` must still name a live lease.
//!
//! Refusals: UNAUTHENTICATED for a missing or wrong token, PERMISSION_DENIED for an identity
//! that may not make the call (see docs/operations.md, "Credentials").

use std::net::SocketAddr;

use tonic::{Request, Status};

/// `--admin-token`, shared by every service that serves admin calls.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AuthArgs {
    /// Bearer token that admin calls must carry (`authorization: Bearer <token>`). Without it
    /// (and without an mTLS `admin` certificate) admin calls are accepted from loopback only.
    #[arg(long = "admin-token", env = "FACESWEEP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// Admin credentials as a service uses them: plain data, from [`AuthArgs`] or an embedder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// `None` (or empty): admin calls from loopback (or an `admin` certificate) only.
    pub admin_token: Option<String>,
}

impl From<AuthArgs> for AuthConfig {
    fn from(a: AuthArgs) -> Self {
        AuthConfig { admin_token: a.admin_token }
    }
}

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Admin,
    /// Data plane: these mTLS roles (any caller in plaintext).
    Roles(&'static [&'static str]),
}

pub const FETCHER: Access = Access::Roles(&["fetcher"]);

/// Who is calling, as far as the transport says.
#[derive(Debug, Default)]
pub struct Caller {
    pub addr: Option<SocketAddr>,
    /// Roles named by the client certificate (`facesweep-<role>` DNS names); `None` without TLS.
    pub roles: Option<Vec<String>>,
    /// The bearer token presented, if any.
    pub token: Option<String>,
    /// The fetcher id a certificate is issued to (URI SAN `spiffe://facesweep/fetcher/<id>`):
    /// each pod's own identity, to which its leases are bound.
    pub fetcher_id: Option<String>,
}

impl Caller {
    pub fn of<T>(req: &Request<T>) -> Caller {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let (roles, fetcher_id) = match req.peer_certs() {
            None => (None, None),
            Some(certs) => {
                let (roles, id) = certs.first().map(|c| cert_names(c)).unwrap_or_default();
                (Some(roles), id)
            }
        };
        Caller { addr: req.remote_addr(), roles, token, fetcher_id }
    }
}

/// URI SAN prefix naming the fetcher a certificate belongs to.
pub const FETCHER_ID_URI: &str = "spiffe://facesweep/fetcher/";

/// What a certificate names, from one parse: its roles (`facesweep-<role>` DNS subject
/// alternative names) and the fetcher it was issued to (`FETCHER_ID_URI<id>`), if any.
fn cert_names(der: &[u8]) -> (Vec<String>, Option<String>) {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return (Vec::new(), None) };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return (Vec::new(), None) };
    let (mut roles, mut fetcher_id) = (Vec::new(), None);
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => roles.extend(d.strip_prefix("facesweep-").map(str::to_string)),
            GeneralName::URI(u) => {
                fetcher_id = fetcher_id.or(u.strip_prefix(FETCHER_ID_URI).map(str::to_string))
            }
            _ => {}
        }
    }
    (roles, fetcher_id)
}

#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    admin_token: Option<String>,
}

impl Authorizer {
    pub fn new(args: &AuthConfig) -> Self {
        Authorizer { admin_token: args.admin_token.clone().filter(|t| !t.is_empty()) }
    }

    /// `check(req, access)` for a call made as fetcher `id`, also refused when the caller's
    /// certificate names another fetcher: leases and their results are bound to their
    /// holder's identity. Plaintext callers and certificates without an identity cannot be
    /// told apart here (the lease secret still binds each lease to whoever was granted it).
    pub fn check_as<T>(&self, req: &Request<T>, access: Access, id: &str) -> Result<(), Status> {
        let caller = Caller::of(req);
        self.decide(&caller, access)?;
        same_fetcher(&caller, id)
    }

    /// ReleaseFetcherLeases: an admin for any fetcher, a fetcher for itself only.
    pub fn check_own_or_admin<T>(&self, req: &Request<T>, id: &str) -> Result<(), Status> {
        let caller = Caller::of(req);
        if self.decide(&caller, Access::Admin).is_ok() {
            return Ok(());
        }
        self.decide(&caller, FETCHER)?;
        same_fetcher(&caller, id)
    }

    /// Refuses `req` unless its caller may make a call needing `access`.
    pub fn check<T>(&self, req: &Request<T>, access: Access) -> Result<(), Status> {
        self.decide(&Caller::of(req), access)
    }

    pub fn decide(&self, caller: &Caller, access: Access) -> Result<(), Status> {
        let has_role = |wanted: &[&str]| {
            caller.roles.as_ref().is_some_and(|r| r.iter().any(|have| wanted.contains(&have.as_str())))
        };
        match access {
            Access::Roles(roles) => match &caller.roles {
                None => Ok(()),
                Some(_) if has_role(roles) => Ok(()),
                Some(have) => Err(Status::permission_denied(format!(
                    "certificate roles {have:?} may not make this call (needs one of {roles:?})"
                ))),
            },
            Access::Admin if has_role(&["admin"]) => Ok(()),
            Access::Admin => match (&self.admin_token, &caller.token) {
                (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()) => Ok(()),
                (Some(_), Some(_)) => Err(Status::unauthenticated("wrong admin token")),
                (Some(_), None) => Err(Status::unauthenticated("admin call without a token (authorization: Bearer …)")),
                (None, _) if caller.roles.is_some() => {
                    Err(Status::permission_denied("admin calls need a certificate for the admin role"))
                }
                (None, _) if caller.addr.is_some_and(|a| a.ip().is_loopback()) => Ok(()),
                (None, _) => Err(Status::permission_denied(
                    "admin calls from other hosts need --admin-token or mTLS (only loopback is trusted without)",
                )),
            },
        }
    }
}

/// Refuses a caller whose certificate names a fetcher other than `id`.
fn same_fetcher(caller: &Caller, id: &str) -> Result<(), Status> {
    match &caller.fetcher_id {
        Some(own) if !id.is_empty() && own != id => Err(Status::permission_denied(format!(
            "this certificate is fetcher {own:?}'s: it cannot act as fetcher {id:?}"
        ))),
        _ => Ok(()),
    }
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn caller(addr: &str, roles: Option<&[&str]>, token: Option<&str>) -> Caller {
        Caller {
            addr: Some(addr.parse().unwrap()),
            roles: roles.map(|r| r.iter().map(|s| s.to_string()).collect()),
            token: token.map(str::to_string),
            fetcher_id: None,
        }
    }

    fn code(r: Result<(), Status>) -> Code {
        r.map_or_else(|s| s.code(), |_| Code::Ok)
    }

    #[test]
    fn open_by_loopback_only_when_nothing_is_configured() {
        let open = Authorizer::default();
        assert_eq!(code(open.decide(&caller("127.0.0.1:9", None, None), Access::Admin)), Code::Ok);
        assert_eq!(code(open.decide(&caller("[::1]:9", None, None), Access::Admin)), Code::Ok);
        let remote = caller("10.1.2.3:9", None, None);
        assert_eq!(code(open.decide(&remote, Access::Admin)), Code::PermissionDenied);
        assert_eq!(code(open.decide(&remote, FETCHER)), Code::Ok, "plaintext data plane");
    }

    #[test]
    fn a_configured_token_is_required_even_from_loopback() {
        let a = Authorizer::new(&AuthConfig { admin_token: Some("s3cret".into()) });
        for (who, want) in [
            (caller("10.1.2.3:9", None, Some("s3cret")), Code::Ok),
            (caller("127.0.0.1:9", None, None), Code::Unauthenticated),
            (caller("127.0.0.1:9", None, Some("s3cre")), Code::Unauthenticated),
            (caller("10.1.2.3:9", None, Some("wrong!")), Code::Unauthenticated),
        ] {
            assert_eq!(code(a.decide(&who, Access::Admin)), want, "{who:?}");
        }
    }

    #[test]
    fn certificates_grant_their_roles_only() {
        let a = Authorizer::default();
        let fetcher = caller("10.0.0.5:9", Some(&["fetcher"]), None);
        let admin = caller("10.0.0.6:9", Some(&["admin"]), None);
        let detector = caller("127.0.0.1:9", Some(&["detector"]), None);
        assert_eq!(code(a.decide(&fetcher, FETCHER)), Code::Ok);
        assert_eq!(code(a.decide(&fetcher, Access::Admin)), Code::PermissionDenied);
        assert_eq!(code(a.decide(&admin, Access::Admin)), Code::Ok);
        assert_eq!(code(a.decide(&admin, FETCHER)), Code::PermissionDenied);
        // Under mTLS, loopback is no credential.
        assert_eq!(code(a.decide(&detector, Access::Admin)), Code::PermissionDenied);
        assert_eq!(code(a.decide(&detector, FETCHER)), Code::PermissionDenied);
    }

    #[test]
    fn a_certificate_names_its_fetcher_by_uri_san() {
        let cert = |uri: Option<String>| {
            let mut params = rcgen::CertificateParams::new(vec!["facesweep-fetcher".to_string()]).unwrap();
            if let Some(u) = uri {
                params.subject_alt_names.push(rcgen::SanType::URI(u.try_into().unwrap()));
            }
            params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec()
        };
        let own = cert(Some(format!("{FETCHER_ID_URI}fetcher-7")));
        assert_eq!(cert_names(&own), (vec!["fetcher".to_string()], Some("fetcher-7".to_string())));
        assert_eq!(cert_names(&cert(None)).1, None, "a shared certificate");
        assert_eq!(cert_names(&cert(Some("spiffe://elsewhere/fetcher/x".into()))).1, None);
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
