//! Mutual TLS: every service presents a certificate signed by the lab's CA and requires one from its
//! callers; the caller's identity is its certificate's Common Name, and [`authz`] says what each
//! identity may do. Plaintext stays the lab's default; three flags (`--tls-ca`, `--tls-cert`,
//! `--tls-key`) turn this on.
//!
//! Everything is checked at start-up, so a mistake stops the process with the file and the problem
//! named: a half-given set, an unreadable or malformed file, a key that is not the certificate's, a
//! certificate that has expired, is not valid yet, has no Common Name, or was not signed by the CA.
//!
//! Certificates rotate without a restart ([`reload`]): the files are read again, with the same checks,
//! when they change or on SIGHUP; every new connection, served or dialed, takes the configuration
//! current when it begins, and one that fails a check leaves the one in use in place.

pub mod accept;
pub mod authz;
pub mod certs;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// The ALPN protocol gRPC speaks.
const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol of `/metrics` and the dashboard.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Where a process's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA whose signature every peer's certificate must carry (PEM).
    pub ca: PathBuf,
    /// This process's certificate (PEM; the first is its own, any others the chain).
    pub cert: PathBuf,
    /// This process's private key (PEM).
    pub key: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Some of the three flags are given, not all.
    #[error("{given} given without {missing}: TLS needs --tls-ca, --tls-cert and --tls-key together")]
    Incomplete { given: String, missing: String },
    /// A file cannot be read.
    #[error("{}: cannot read it: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    /// A file is read but wrong.
    #[error("{}: {problem}", path.display())]
    Bad { path: PathBuf, problem: String },
}

fn bad(path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::Bad { path: path.to_path_buf(), problem: problem.into() }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable { path: path.to_path_buf(), source })
}

/// The PEM certificates in `path` (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| bad(path, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad(path, "holds no certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// The Common Name of a certificate's subject.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

/// Checks a certificate is valid now: not expired, not before its time.
fn check_validity(path: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| bad(path, format!("not an X.509 certificate: {e}")))?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(bad(path, format!("the certificate expired on {}", validity.not_after)));
    }
    if now < validity.not_before {
        return Err(bad(path, format!("the certificate is not valid until {}", validity.not_before)));
    }
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a file looked like (for [`reload`]'s watcher): its modification time and length (`None`: it could not be read).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What the three files look like now.
fn stamps(files: &TlsFiles) -> [Stamp; 3] {
    [stamp(&files.ca), stamp(&files.cert), stamp(&files.key)]
}

/// The configurations built from one reading of the files.
struct Loaded {
    /// gRPC: ALPN h2, a client certificate required.
    grpc: Arc<ServerConfig>,
    /// `/metrics`: ALPN http/1.1, a client certificate required.
    metrics: Arc<ServerConfig>,
    /// Pages for people's browsers (the dashboard): ALPN http/1.1, no client certificate asked for.
    web: Arc<ServerConfig>,
    /// Dialing gRPC: ALPN h2, this process's certificate presented.
    client: Arc<ClientConfig>,
    /// Dialing HTTPS (another process's `/metrics`): ALPN http/1.1, this process's certificate presented.
    http_client: Arc<ClientConfig>,
    /// NTS-KE (RFC 8915): TLS 1.3 only, ALPN `ntske/1`, no client certificate asked for.
    nts_ke: Arc<ServerConfig>,
    /// This process's own certificate (DER), the first of its chain.
    certificate: CertificateDer<'static>,
}

/// What a process's TLS shares between its clones: the files, the configurations now in use, and the
/// count of reloads.
struct Shared {
    files: TlsFiles,
    /// What the files looked like just before they were first read (the watcher's starting point).
    loaded: [Stamp; 3],
    current: RwLock<Arc<Loaded>>,
    reloaded: AtomicU64,
    failed: AtomicU64,
}

/// A process's TLS: its identity, and the configurations it serves and dials with. Clones share the
/// configurations: [`Tls::reload`] (which the watcher of [`reload`] calls when the files change or on
/// SIGHUP) swaps them for every clone at once, and every connection takes the ones current when it
/// begins, so new connections use the new certificate while those in flight finish on the old one.
#[derive(Clone)]
pub struct Tls {
    identity: Arc<str>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// How many times a process's TLS files were reloaded ([`Tls::reloads`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloads {
    /// Reloads that took effect.
    pub ok: u64,
    /// Reloads refused (a file unreadable or wrong): the configuration in use was kept.
    pub failed: u64,
}

impl Tls {
    /// From the three flags: `None` when none is given, an error when only some are.
    pub fn from_flags(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Tls>, TlsError> {
        let named = [("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)];
        let given: Vec<&str> = named.iter().filter(|(_, p)| p.is_some()).map(|(n, _)| *n).collect();
        let missing: Vec<&str> = named.iter().filter(|(_, p)| p.is_none()).map(|(n, _)| *n).collect();
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => {
                Tls::load(&TlsFiles { ca: ca.to_path_buf(), cert: cert.to_path_buf(), key: key.to_path_buf() }).map(Some)
            }
            _ => Err(TlsError::Incomplete { given: given.join(" and "), missing: missing.join(" and ") }),
        }
    }

    /// Loads and checks the files, and builds the configurations.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let stamps = stamps(files);
        let (identity, loaded) = build(files)?;
        let shared = Shared {
            files: files.clone(),
            loaded: stamps,
            current: RwLock::new(Arc::new(loaded)),
            reloaded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        };
        Ok(Tls { identity, shared: Arc::new(shared) })
    }

    /// Reads the files again with every check of [`Tls::load`], and, when they pass, makes them the
    /// configurations of every new connection. When they do not (or the certificate names another
    /// identity: authorization rests on it, so it changes only with a restart) the configurations in
    /// use stay, and the error says why. Counted in [`Tls::reloads`] and
    /// `synclab_tls_reloads_total{outcome}`.
    pub fn reload(&self) -> Result<(), TlsError> {
        let built = build(&self.shared.files).and_then(|(identity, loaded)| {
            if identity != self.identity {
                return Err(bad(
                    &self.shared.files.cert,
                    format!(
                        "names the identity '{}', not this process's '{}' (a restart changes it)",
                        crate::text::excerpt(&identity, 64),
                        self.identity
                    ),
                ));
            }
            Ok(loaded)
        });
        match built {
            Ok(loaded) => {
                *self.shared.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                self.shared.reloaded.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("synclab_tls_reloads_total", "outcome" => "ok").increment(1);
                Ok(())
            }
            Err(e) => {
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("synclab_tls_reloads_total", "outcome" => "failed").increment(1);
                Err(e)
            }
        }
    }

    /// How many reloads took effect and how many were refused.
    pub fn reloads(&self) -> Reloads {
        Reloads { ok: self.shared.reloaded.load(Ordering::Relaxed), failed: self.shared.failed.load(Ordering::Relaxed) }
    }

    /// The files this TLS reads.
    pub fn files(&self) -> &TlsFiles {
        &self.shared.files
    }

    fn current(&self) -> Arc<Loaded> {
        self.shared.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This process's identity (its certificate's Common Name).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// This process's certificate now in use (DER).
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current().certificate.clone()
    }

    /// The configuration to serve gRPC with now (client certificates required).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().grpc.clone()
    }

    /// The configuration to serve `/metrics` with now: HTTP/1.1, client certificates required.
    pub fn metrics_server_config(&self) -> Arc<ServerConfig> {
        self.current().metrics.clone()
    }

    /// The configuration to serve pages to browsers with now: HTTP/1.1, and no client certificate asked
    /// for (browsers present none unless their user installed one).
    pub fn web_server_config(&self) -> Arc<ServerConfig> {
        self.current().web.clone()
    }

    /// The configuration to serve NTS-KE with now (see [`nts_ke_server_config`]): rotates with the rest.
    pub fn nts_ke_server_config(&self) -> Arc<ServerConfig> {
        self.current().nts_ke.clone()
    }

    /// The configuration to dial gRPC with now (this process's certificate presented).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// The configuration to dial HTTPS with now (another process's `/metrics`; this process's
    /// certificate presented).
    pub fn http_client_config(&self) -> Arc<ClientConfig> {
        self.current().http_client.clone()
    }
}

/// Reads and checks the files, and builds every configuration from them.
fn build(files: &TlsFiles) -> Result<(Arc<str>, Loaded), TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for ca in certificates(&files.ca)? {
        check_validity(&files.ca, &ca)?;
        roots.add(ca).map_err(|e| bad(&files.ca, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let chain = certificates(&files.cert)?;
    check_validity(&files.cert, &chain[0])?;
    let identity: Arc<str> =
        common_name(&chain[0]).ok_or_else(|| bad(&files.cert, "the certificate has no Common Name (the identity)"))?.into();
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(&files.key, format!("not a PEM private key: {e}")))?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
        .map_err(|e| bad(&files.key, format!("not the key of the certificate in {}: {e}", files.cert.display())))?;

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| bad(&files.ca, format!("cannot verify clients with it: {e}")))?;
    // The process's own certificate must be one its peers accept.
    let intermediates = &chain[1..];
    verifier
        .verify_client_cert(&chain[0], intermediates, UnixTime::now())
        .map_err(|e| bad(&files.cert, format!("not accepted under the CA in {}: {e}", files.ca.display())))?;

    let server = |verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>, alpn: &[u8]| {
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&files.cert, e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad(&files.key, e.to_string()))?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok::<_, TlsError>(Arc::new(config))
    };
    let client = |alpn: &[u8]| {
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&files.cert, e.to_string()))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad(&files.key, e.to_string()))?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok::<_, TlsError>(Arc::new(config))
    };
    let loaded = Loaded {
        grpc: server(verifier.clone(), ALPN_H2)?,
        metrics: server(verifier, ALPN_HTTP1)?,
        web: server(rustls::server::WebPkiClientVerifier::no_client_auth(), ALPN_HTTP1)?,
        client: client(ALPN_H2)?,
        http_client: client(ALPN_HTTP1)?,
        nts_ke: nts_ke_config(chain.clone(), key.clone_key(), &files.cert, &files.key)?,
        certificate: chain[0].clone(),
    };
    Ok((identity, loaded))
}

/// NTS-KE (RFC 8915) on the server's side: this process's certificate and key (the `--tls-cert` and
/// `--tls-key` files, checked as [`Tls::load`] checks them), no client certificate asked for, TLS 1.3
/// only and ALPN `ntske/1`.
pub fn nts_ke_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert)?;
    check_validity(cert, &chain[0])?;
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(key, format!("not a PEM private key: {e}")))?;
    nts_ke_config(chain, private, cert, key)
}

fn nts_ke_config(
    chain: Vec<CertificateDer<'static>>,
    private: PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| bad(key, format!("not the key of the certificate in {}: {e}", cert.display())))?;
    config.alpn_protocols = vec![synclab_core::ntp::nts::ke::ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// NTS-KE on the client's side: servers' certificates checked against the CA in `ca`, no client
/// certificate, TLS 1.3 only and ALPN `ntske/1`.
pub fn nts_ke_client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        check_validity(ca, &cert)?;
        roots.add(cert).map_err(|e| bad(ca, format!("not a usable CA certificate: {e}")))?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(ca, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![synclab_core::ntp::nts::ke::ALPN.to_vec()];
    Ok(Arc::new(config))
}
