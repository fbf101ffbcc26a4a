//! Certificates: the cluster CA, the role each certificate grants, and the
//! identity (CA + certificate + key) an endpoint presents.
//!
//! A certificate's role is its subject common name: `node:<id>`,
//! `client:<name>` or `admin:<name>`. Only certificates signed by the cluster
//! CA are accepted, so the role is as trustworthy as the CA key.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::message::Protocol;

/// The DNS name every node certificate carries and every client expects:
/// nodes are identified by the role in their certificate, not by host name.
pub const NODE_SERVER_NAME: &str = "mimeo-node";

/// What a certificate allows its holder to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A cluster node with this id: peer traffic, and client requests.
    Node(String),
    /// An application client with this name: the client protocol only.
    Client(String),
    /// An operator with this name: the admin and client protocols.
    Admin(String),
}

impl Role {
    /// Whether a holder of this role may open a connection speaking
    /// `protocol`.
    pub fn may_use(&self, protocol: Protocol) -> bool {
        matches!(
            (self, protocol),
            (Role::Node(_), Protocol::Peer | Protocol::Client)
                | (Role::Client(_), Protocol::Client)
                | (Role::Admin(_), Protocol::Admin | Protocol::Client)
        )
    }

    /// The subject common name that encodes this role.
    pub fn common_name(&self) -> String {
        match self {
            Role::Node(id) => format!("node:{id}"),
            Role::Client(name) => format!("client:{name}"),
            Role::Admin(name) => format!("admin:{name}"),
        }
    }

    /// The base name of the files holding this role's certificate and key
    /// (`node-n1` for `node-n1.pem` and `node-n1.key`).
    pub fn file_stem(&self) -> String {
        self.common_name().replacen(':', "-", 1)
    }

    /// Parses a common name written by [`Role::common_name`].
    pub fn from_common_name(cn: &str) -> Result<Role, CertError> {
        let invalid = || CertError::Invalid(format!("unknown role in certificate name '{cn}'"));
        let (kind, name) = cn.split_once(':').ok_or_else(invalid)?;
        validate_name(name).map_err(|_| invalid())?;
        match kind {
            "node" => Ok(Role::Node(name.to_string())),
            "client" => Ok(Role::Client(name.to_string())),
            "admin" => Ok(Role::Admin(name.to_string())),
            _ => Err(invalid()),
        }
    }

    /// The role granted by a DER certificate's subject common name.
    pub fn from_certificate(der: &[u8]) -> Result<Role, CertError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertError::Invalid(format!("cannot parse certificate: {e}")))?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| CertError::Invalid("certificate has no common name".into()))?;
        Role::from_common_name(cn)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.common_name())
    }
}

/// Names usable as node ids and client names: they end up in file names and
/// certificate subjects, so they are kept to `[A-Za-z0-9_-]`, 1 to 64 bytes.
pub fn validate_name(name: &str) -> Result<(), CertError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(CertError::Invalid(format!(
            "'{name}' is not a valid name: use 1 to 64 letters, digits, '-' or '_'"
        )))
    }
}

/// Errors creating or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A certificate or key is unusable.
    #[error("{0}")]
    Invalid(String),
    /// A file to be written exists already.
    #[error("{} already exists; pass --force to replace the certificates in {}", .path.display(), .path.parent().unwrap_or(Path::new(".")).display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Which certificates [`generate_certs`] writes besides the CA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertRequest {
    /// Node ids (`node-<id>.pem`).
    pub nodes: Vec<String>,
    /// Client names (`client-<name>.pem`).
    pub clients: Vec<String>,
    /// Admin names (`admin-<name>.pem`).
    pub admins: Vec<String>,
}

impl CertRequest {
    fn roles(&self) -> Vec<Role> {
        let nodes = self.nodes.iter().cloned().map(Role::Node);
        let clients = self.clients.iter().cloned().map(Role::Client);
        let admins = self.admins.iter().cloned().map(Role::Admin);
        nodes.chain(clients).chain(admins).collect()
    }
}

/// Writes a new cluster CA (`ca.pem`, `ca.key`) and one certificate and key
/// per requested role into `dir`, and returns the paths written.
///
/// Refuses to replace existing files unless `force` is set, since replacing
/// the CA locks every existing node and client out. Keys are written with
/// mode 0600.
pub fn generate_certs(
    dir: &Path,
    request: &CertRequest,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    let roles = request.roles();
    for role in &roles {
        let name = match role {
            Role::Node(n) | Role::Client(n) | Role::Admin(n) => n,
        };
        validate_name(name)?;
    }
    let mut files = vec![(dir.join("ca.pem"), false), (dir.join("ca.key"), true)];
    for role in &roles {
        files.push((dir.join(format!("{}.pem", role.file_stem())), false));
        files.push((dir.join(format!("{}.key", role.file_stem())), true));
    }
    if !force {
        if let Some((path, _)) = files.iter().find(|(path, _)| path.exists()) {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        op: "creating",
        path: dir.to_path_buf(),
        source,
    })?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name("mimeo cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut contents = vec![ca_cert.pem(), ca_key.serialize_pem()];
    for role in &roles {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![NODE_SERVER_NAME.to_string()])?;
        params.distinguished_name = distinguished_name(&role.common_name());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Node(_) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Client(_) | Role::Admin(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        if !matches!(role, Role::Node(_)) {
            params.subject_alt_names.clear();
        }
        let cert = params.signed_by(&key, &issuer)?;
        contents.push(cert.pem());
        contents.push(key.serialize_pem());
    }

    for ((path, secret), content) in files.iter().zip(&contents) {
        write_file(path, content.as_bytes(), *secret)?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "mimeo");
    name.push(DnType::CommonName, common_name);
    name
}

fn write_file(path: &Path, content: &[u8], secret: bool) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertError::Io {
        op: "writing",
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(content).map_err(io)?;
    file.sync_all().map_err(io)
}

/// What an endpoint presents and trusts: the cluster CA, its own certificate
/// chain and private key, and the role its certificate grants.
pub struct TlsIdentity {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    role: Role,
}

impl TlsIdentity {
    /// Loads the CA certificate, this endpoint's certificate (chain) and its
    /// private key from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<TlsIdentity, CertError> {
        let read = |path: &Path| {
            fs::read(path).map_err(|source| CertError::Io {
                op: "reading",
                path: path.to_path_buf(),
                source,
            })
        };
        let invalid = |path: &Path, e: &dyn fmt::Display| {
            CertError::Invalid(format!("{}: {e}", path.display()))
        };
        let ca = CertificateDer::from_pem_slice(&read(ca)?).map_err(|e| invalid(ca, &e))?;
        let chain = CertificateDer::pem_slice_iter(&read(cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(cert, &e))?;
        let leaf = chain
            .first()
            .ok_or_else(|| invalid(cert, &"no certificate in the file"))?;
        let role = Role::from_certificate(leaf).map_err(|e| invalid(cert, &e))?;
        let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| invalid(key, &e))?;
        Ok(TlsIdentity {
            ca,
            chain,
            key,
            role,
        })
    }

    /// Loads `<dir>/ca.pem`, `<dir>/<name>.pem` and `<dir>/<name>.key`, the
    /// layout [`generate_certs`] writes (`name` is for example `node-n1`).
    pub fn from_dir(dir: &Path, name: &str) -> Result<TlsIdentity, CertError> {
        TlsIdentity::load(
            &dir.join("ca.pem"),
            &dir.join(format!("{name}.pem")),
            &dir.join(format!("{name}.key")),
        )
    }

    /// The role this identity's certificate grants.
    pub fn role(&self) -> &Role {
        &self.role
    }

    pub(crate) fn ca(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain.clone()
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            role: self.role.clone(),
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("TlsIdentity")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_roundtrip_through_common_names() {
        for role in [
            Role::Node("n1".into()),
            Role::Client("bench".into()),
            Role::Admin("ops".into()),
        ] {
            assert_eq!(Role::from_common_name(&role.common_name()).unwrap(), role);
        }
        assert!(Role::from_common_name("root").is_err());
        assert!(Role::from_common_name("node:../etc").is_err());
        assert!(Role::from_common_name("king:x").is_err());
    }

    #[test]
    fn only_admins_use_the_admin_protocol() {
        assert!(Role::Admin("a".into()).may_use(Protocol::Admin));
        assert!(!Role::Client("c".into()).may_use(Protocol::Admin));
        assert!(!Role::Node("n".into()).may_use(Protocol::Admin));
        assert!(!Role::Client("c".into()).may_use(Protocol::Peer));
        assert!(Role::Node("n".into()).may_use(Protocol::Peer));
    }

    #[test]
    fn generated_certificates_load_with_their_roles() {
        let dir = tempfile::tempdir().unwrap();
        let request = CertRequest {
            nodes: vec!["n1".into()],
            clients: vec!["cli".into()],
            admins: vec!["ops".into()],
        };
        let written = generate_certs(dir.path(), &request, false).unwrap();
        assert_eq!(written.len(), 8);
        let node = TlsIdentity::from_dir(dir.path(), "node-n1").unwrap();
        assert_eq!(node.role(), &Role::Node("n1".into()));
        let admin = TlsIdentity::from_dir(dir.path(), "admin-ops").unwrap();
        assert_eq!(admin.role(), &Role::Admin("ops".into()));

        let again = generate_certs(dir.path(), &request, false);
        assert!(matches!(again, Err(CertError::Exists { .. })));
        generate_certs(dir.path(), &request, true).unwrap();
    }

    #[test]
    fn bad_names_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let request = CertRequest {
            nodes: vec!["n 1".into()],
            ..CertRequest::default()
        };
        assert!(generate_certs(dir.path(), &request, false).is_err());
        assert!(!dir.path().join("ca.pem").exists());
    }
}
