//! Certificates: the cluster CA, the role each certificate grants, and the
//! identity (CA + certificate + key) an endpoint presents.
//!
//! A certificate's role is its subject common name: `node:<id>`,
//! `client:<name>` or `admin:<name>`. Only certificates signed by the cluster
//! CA are accepted, so the role is as trustworthy as the CA key.
//!
//! The CA key therefore never goes where certificates are handed out:
//! [`CertificateAuthority::save`] writes `ca.pem` and `ca.key` into a CA
//! directory of their own (mode 0700), and [`CertificateAuthority::issue`]
//! writes `ca.pem` and the requested certificates and keys into the
//! directory nodes and clients are given. Certificates are valid for a
//! bounded time ([`Validity`]: a year for nodes, clients and admins, ten for
//! the CA by default); [`TlsIdentity::not_after`] says when one expires.
//!
//! Rotating: a certificate about to expire (or leaked) is replaced by
//! issuing a new one from the same CA (`mimeo certs issue`) and restarting
//! its holder; the CA itself is replaced only with every certificate it
//! signed (`mimeo certs init --force`, then restart the whole cluster),
//! since every endpoint trusts exactly one CA.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
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

/// How long generated certificates are valid, from the moment they are made
/// (an hour earlier, for clocks slightly behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Days the CA certificate is valid.
    pub ca_days: u32,
    /// Days node, client and admin certificates are valid.
    pub leaf_days: u32,
}

impl Default for Validity {
    /// Ten years for the CA, one for the certificates it signs.
    fn default() -> Self {
        Validity {
            ca_days: 3650,
            leaf_days: 365,
        }
    }
}

/// The start and end of a validity of `days` from now.
fn validity_window(days: u32) -> Result<(time::OffsetDateTime, time::OffsetDateTime), CertError> {
    if days == 0 {
        return Err(CertError::Invalid(
            "a certificate must be valid for at least one day".into(),
        ));
    }
    let now = time::OffsetDateTime::now_utc();
    Ok((
        now - time::Duration::hours(1),
        now + time::Duration::days(i64::from(days)),
    ))
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

/// The cluster CA: its certificate, and the key that signs certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    key: KeyPair,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA, valid for `days`.
    pub fn generate(days: u32) -> Result<CertificateAuthority, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("mimeo cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.not_before, params.not_after) = validity_window(days)?;
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads `<ca_dir>/ca.pem` and `<ca_dir>/ca.key`, as [`save`] wrote
    /// them.
    ///
    /// [`save`]: CertificateAuthority::save
    pub fn load(ca_dir: &Path) -> Result<CertificateAuthority, CertError> {
        let read = |name: &str| {
            let path = ca_dir.join(name);
            fs::read_to_string(&path).map_err(|source| CertError::Io {
                op: "reading",
                path,
                source,
            })
        };
        let cert_pem = read("ca.pem")?;
        let key = KeyPair::from_pem(&read("ca.key")?)
            .map_err(|e| CertError::Invalid(format!("{}: {e}", ca_dir.join("ca.key").display())))?;
        // The key must be the one the certificate was made for, or it would
        // sign certificates no endpoint accepts.
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CertError::Invalid(format!("{}: {e}", ca_dir.join("ca.pem").display())))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CertError::Invalid(format!("{}: {e}", ca_dir.join("ca.pem").display())))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertError::Invalid(format!(
                "{} is not the key of the CA certificate {}",
                ca_dir.join("ca.key").display(),
                ca_dir.join("ca.pem").display()
            )));
        }
        let ca = CertificateAuthority { cert_pem, key };
        ca.issuer()?;
        Ok(ca)
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `ca_dir` (created with
    /// mode 0700). Refuses to replace them unless `force`.
    pub fn save(&self, ca_dir: &Path, force: bool) -> Result<Vec<PathBuf>, CertError> {
        let files = [
            (ca_dir.join("ca.pem"), self.cert_pem.clone(), false),
            (ca_dir.join("ca.key"), self.key.serialize_pem(), true),
        ];
        if !force {
            if let Some((path, ..)) = files.iter().find(|(path, ..)| path.exists()) {
                return Err(CertError::Exists { path: path.clone() });
            }
        }
        create_dir(ca_dir, Some(0o700))?;
        for (path, content, secret) in &files {
            write_file(path, content.as_bytes(), *secret)?;
        }
        Ok(files.into_iter().map(|(path, ..)| path).collect())
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, CertError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(|e| {
            CertError::Invalid(format!("the CA certificate cannot sign certificates: {e}"))
        })
    }

    /// Writes `ca.pem` and one certificate and key (mode 0600) per requested
    /// role into `dir`, each valid for `days`, and returns the paths
    /// written. The CA key is not among them. Refuses to replace an
    /// existing certificate unless `force` (`ca.pem` is replaced only when
    /// it is another CA's and `force` is set).
    pub fn issue(
        &self,
        dir: &Path,
        request: &CertRequest,
        days: u32,
        force: bool,
    ) -> Result<Vec<PathBuf>, CertError> {
        let roles = request.roles();
        for role in &roles {
            let name = match role {
                Role::Node(n) | Role::Client(n) | Role::Admin(n) => n,
            };
            validate_name(name)?;
        }
        let window = validity_window(days)?;
        let ca_pem = dir.join("ca.pem");
        let same_ca = fs::read_to_string(&ca_pem).is_ok_and(|pem| pem == self.cert_pem);
        let mut files = Vec::new();
        if !same_ca {
            files.push((ca_pem, false));
        }
        for role in &roles {
            files.push((dir.join(format!("{}.pem", role.file_stem())), false));
            files.push((dir.join(format!("{}.key", role.file_stem())), true));
        }
        if !force {
            if let Some((path, _)) = files.iter().find(|(path, _)| path.exists()) {
                return Err(CertError::Exists { path: path.clone() });
            }
        }
        create_dir(dir, None)?;
        let issuer = self.issuer()?;
        let mut contents = Vec::new();
        if !same_ca {
            contents.push(self.cert_pem.clone());
        }
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
            (params.not_before, params.not_after) = window;
            let cert = params.signed_by(&key, &issuer)?;
            contents.push(cert.pem());
            contents.push(key.serialize_pem());
        }
        for ((path, secret), content) in files.iter().zip(&contents) {
            write_file(path, content.as_bytes(), *secret)?;
        }
        Ok(files.into_iter().map(|(path, _)| path).collect())
    }
}

/// Writes a new cluster CA's certificate (`ca.pem`) and one certificate and
/// key per requested role into `dir`, with the default [`Validity`], and
/// returns the paths written. The CA key is thrown away: no more
/// certificates can be signed for this cluster (tests and throw-away
/// clusters); keep a [`CertificateAuthority`] to sign more later.
///
/// Refuses to replace existing files unless `force` is set, since replacing
/// the CA locks every existing node and client out. Keys are written with
/// mode 0600.
pub fn generate_certs(
    dir: &Path,
    request: &CertRequest,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    let validity = Validity::default();
    let ca = CertificateAuthority::generate(validity.ca_days)?;
    if !force && dir.join("ca.pem").exists() {
        return Err(CertError::Exists {
            path: dir.join("ca.pem"),
        });
    }
    ca.issue(dir, request, validity.leaf_days, force)
}

/// Creates `dir` (and its parents), with `mode` when given.
fn create_dir(dir: &Path, mode: Option<u32>) -> Result<(), CertError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| CertError::Io {
        op: "creating",
        path: dir.to_path_buf(),
        source,
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    if let Some(mode) = mode {
        builder.mode(mode);
    }
    builder.create(dir).map_err(io)?;
    if let Some(mode) = mode {
        // An existing directory keeps its mode otherwise.
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    Ok(())
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

    /// When this identity's certificate expires.
    pub fn not_after(&self) -> Result<std::time::SystemTime, CertError> {
        let leaf = self
            .chain
            .first()
            .ok_or_else(|| CertError::Invalid("no certificate in the chain".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| CertError::Invalid(format!("unreadable certificate: {e}")))?;
        let seconds = cert.validity().not_after.timestamp();
        Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64))
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
        assert_eq!(written.len(), 7, "ca.pem and three pairs, no CA key");
        assert!(!dir.path().join("ca.key").exists());
        let node = TlsIdentity::from_dir(dir.path(), "node-n1").unwrap();
        assert_eq!(node.role(), &Role::Node("n1".into()));
        let admin = TlsIdentity::from_dir(dir.path(), "admin-ops").unwrap();
        assert_eq!(admin.role(), &Role::Admin("ops".into()));

        let again = generate_certs(dir.path(), &request, false);
        assert!(matches!(again, Err(CertError::Exists { .. })));
        generate_certs(dir.path(), &request, true).unwrap();
    }

    #[test]
    fn the_ca_key_stays_in_its_own_directory_and_signs_later_certificates() {
        let root = tempfile::tempdir().unwrap();
        let (ca_dir, certs) = (root.path().join("ca"), root.path().join("certs"));
        let ca = CertificateAuthority::generate(3650).unwrap();
        ca.save(&ca_dir, false).unwrap();
        let request = CertRequest {
            nodes: vec!["n1".into()],
            clients: vec!["cli".into()],
            ..CertRequest::default()
        };
        ca.issue(&certs, &request, 30, false).unwrap();
        let mut handed_out: Vec<String> = fs::read_dir(&certs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        handed_out.sort();
        assert_eq!(
            handed_out,
            [
                "ca.pem",
                "client-cli.key",
                "client-cli.pem",
                "node-n1.key",
                "node-n1.pem"
            ]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&ca_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        // Later: the saved CA signs a new client, and a node accepts it as
        // signed by the same CA (same ca.pem, kept as it was).
        let loaded = CertificateAuthority::load(&ca_dir).unwrap();
        let more = CertRequest {
            clients: vec!["alice".into()],
            ..CertRequest::default()
        };
        let written = loaded.issue(&certs, &more, 30, false).unwrap();
        assert_eq!(written.len(), 2, "{written:?}");
        let alice = TlsIdentity::from_dir(&certs, "client-alice").unwrap();
        assert_eq!(alice.role(), &Role::Client("alice".into()));
        // The same name again is refused without --force.
        assert!(matches!(
            loaded.issue(&certs, &more, 30, false),
            Err(CertError::Exists { .. })
        ));
    }

    #[test]
    fn certificates_expire_when_asked_not_in_the_year_4096() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate(3650).unwrap();
        let request = CertRequest {
            nodes: vec!["n1".into()],
            ..CertRequest::default()
        };
        ca.issue(dir.path(), &request, 30, false).unwrap();
        let node = TlsIdentity::from_dir(dir.path(), "node-n1").unwrap();
        let left = node
            .not_after()
            .unwrap()
            .duration_since(std::time::SystemTime::now())
            .unwrap();
        let day = 86_400;
        assert!(
            (29 * day..=30 * day + 60).contains(&left.as_secs()),
            "{left:?}"
        );
        // The defaults: a year for what the CA signs.
        let defaults = tempfile::tempdir().unwrap();
        generate_certs(defaults.path(), &request, false).unwrap();
        let node = TlsIdentity::from_dir(defaults.path(), "node-n1").unwrap();
        let left = node
            .not_after()
            .unwrap()
            .duration_since(std::time::SystemTime::now())
            .unwrap();
        assert!(left.as_secs() <= 365 * day + 60, "{left:?}");
        assert!(matches!(
            ca.issue(dir.path(), &request, 0, true),
            Err(CertError::Invalid(_))
        ));
    }

    #[test]
    fn a_key_that_is_not_the_cas_is_refused_at_load() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        CertificateAuthority::generate(10)
            .unwrap()
            .save(&a, false)
            .unwrap();
        CertificateAuthority::generate(10)
            .unwrap()
            .save(&b, false)
            .unwrap();
        fs::copy(b.join("ca.key"), a.join("ca.key")).unwrap();
        // rcgen builds the issuer from the certificate alone; a mismatched
        // key would sign certificates no endpoint accepts, so check it.
        let ca = CertificateAuthority::load(&a);
        assert!(ca.is_err(), "a foreign key must be refused");
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
