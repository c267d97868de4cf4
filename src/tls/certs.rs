//! A lab CA and the certificates it signs, for `synclab certs`: `DIR/ca.pem` and `DIR/ca.key`, and for
//! each name `DIR/NAME.pem` and `DIR/NAME.key`. Each certificate's Common Name is its name; its subject
//! alternative names are the name, `localhost` and `127.0.0.1`, so the same files serve in compose and
//! on loopback. An existing CA is kept (and signs the new certificates) unless a new one is asked for.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// Every compose service, and `observer` (a read-only identity for people, grpcurl and the CLI), `lab`
/// (the fault lab's identity) and `prometheus` (it scrapes every `/metrics` over HTTPS).
pub const COMPOSE_NAMES: &[&str] = &[
    "time-server",
    "mobile",
    "laptop",
    "berkeley-master",
    "kmc",
    "mit",
    "tapmi",
    "sols",
    "node-1",
    "node-2",
    "node-3",
    "node-4",
    "node-5",
    "dashboard",
    "observer",
    "lab",
    "prometheus",
];

/// How long a generated certificate is valid.
const VALID_DAYS: i64 = 825;

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A name that cannot be a file name and a DNS name.
    #[error("invalid name {0:?}: use letters, digits, '-' and '.'")]
    BadName(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The existing CA could not be used.
    #[error("{}: {problem}", path.display())]
    BadCa { path: PathBuf, problem: String },
    /// Generation failed.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What [`make`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Made {
    /// Whether the CA was created (false: an existing one was used).
    pub new_ca: bool,
    /// The certificates written, by name.
    pub names: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io { path: path.to_path_buf(), source }
}

/// Writes a private key readable by its owner only.
fn write_key(path: &Path, pem: &str) -> Result<(), CertsError> {
    std::fs::write(path, pem).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALID_DAYS);
}

/// Makes (or reuses) the CA in `dir` and a certificate for each of `names` (the compose names when
/// empty). `new_ca` replaces an existing CA.
pub fn make(dir: &Path, names: &[String], new_ca: bool) -> Result<Made, CertsError> {
    let names: Vec<String> = if names.is_empty() { COMPOSE_NAMES.iter().map(|n| n.to_string()).collect() } else { names.to_vec() };
    for name in &names {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !name.starts_with(['-', '.']);
        if !ok {
            return Err(CertsError::BadName(name.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (ca_pem_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let mut made = Made::default();
    let issuer = if !new_ca && ca_pem_path.exists() {
        let key_pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertsError::BadCa { path: ca_key_path.clone(), problem: e.to_string() })?;
        let cert_pem = std::fs::read_to_string(&ca_pem_path).map_err(io(&ca_pem_path))?;
        Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CertsError::BadCa { path: ca_pem_path.clone(), problem: e.to_string() })?
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "synclab lab CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params);
        let cert = params.self_signed(&key)?;
        std::fs::write(&ca_pem_path, cert.pem()).map_err(io(&ca_pem_path))?;
        write_key(&ca_key_path, &key.serialize_pem())?;
        made.new_ca = true;
        Issuer::new(params, key)
    };
    for name in &names {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.clone(), "localhost".to_string()])?;
        params.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name.as_str());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params);
        let cert = params.signed_by(&key, &issuer)?;
        let (pem_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&pem_path, cert.pem()).map_err(io(&pem_path))?;
        write_key(&key_path, &key.serialize_pem())?;
        made.names.push(name.clone());
    }
    Ok(made)
}
