//! TLS material: loads the configured certificate and key, or creates (once) and reuses a
//! self-signed one under `data_dir/tls/`, and builds the one rustls `ServerConfig` every
//! client connection shares. It never handles connections and never overwrites configured
//! files.
//!
//! Only TLS 1.3 and 1.2 with the ring provider; no client certificates; ALPN `xmpp-client` so
//! direct-TLS clients (XEP-0368) can connect. Federation's configs (`s2s::certs`) are built
//! from the same pieces: [`TlsMaterial::identity`], [`provider`], [`VERSIONS`], [`server_config`].

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::config::Config;

/// ALPN protocol id for client-to-server XMPP over direct TLS (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// TLS sessions kept for resumption (rustls' default is 256). Every login leaves two
/// tickets, three small allocations each, placed among the sessions' own memory: after a wave
/// of 1,000 or 10,000 logins a full cache of 256 kept 1.7–2.5 MiB of freed heap pages from
/// going back to the system (docs/PERFORMANCE.md). 64 still lets the last 32 logins resume.
pub const RESUMPTION_ENTRIES: usize = 64;

/// The TLS versions every stream speaks, client side and server side.
pub const VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto every TLS config uses: ring's.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the server needs to accept TLS connections.
pub struct TlsMaterial {
    pub config: Arc<ServerConfig>,
    /// The certificate chain and its signing key: what `config` presents, and what
    /// federation presents as a client certificate on its outgoing streams.
    pub identity: Arc<CertifiedKey>,
    /// SHA-256 of the end-entity certificate, `AB:CD:…`, for users to compare against what
    /// their client shows when it asks whether to trust a self-signed certificate.
    pub fingerprint_sha256: String,
    /// SHA-1 of the same certificate: some clients (Profanity) only show this one.
    pub fingerprint_sha1: String,
    /// True when this call created the self-signed certificate (first start): worth telling
    /// the admin, with the fingerprint.
    pub generated: bool,
}

/// [`load`] for `config`: its `[tls]` files, or the self-signed pair for its domain and the
/// room and upload domains. Start-up and every reload call this.
pub fn load_for(config: &Config) -> Result<TlsMaterial, String> {
    load(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        &config.data_dir,
        &config.domain,
        &certificate_names(config),
    )
}

/// What `hearth check` needs to know: whether [`load_for`] would succeed, found by the same
/// code but creating nothing. `Ok(None)` when the self-signed pair is still to be generated.
pub fn check(config: &Config) -> Result<Option<TlsMaterial>, String> {
    let files = Files::of(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        &config.data_dir,
    )?;
    if files.to_generate() {
        return Ok(None);
    }
    files.load(false).map(Some)
}

/// Logs both fingerprints of the certificate in use: most clients show SHA-256, some
/// (Profanity) only SHA-1.
pub fn log_fingerprints(material: &TlsMaterial) {
    log::info!(
        "TLS certificate SHA-256 fingerprint: {}",
        material.fingerprint_sha256
    );
    log::info!(
        "TLS certificate SHA-1 fingerprint: {}",
        material.fingerprint_sha1
    );
}

/// Names besides the domain a generated certificate covers: the chat-room and upload services.
fn certificate_names(config: &Config) -> Vec<String> {
    config
        .muc_domain()
        .into_iter()
        .chain(config.upload_domain())
        .collect()
}

/// Loads `cert` + `key` when configured (both or neither), otherwise the self-signed pair in
/// `data_dir/tls/`, creating it for `domain` and `extra_names` (DNS names or IP addresses)
/// when absent. Errors are one line and name the file concerned.
pub fn load(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    domain: &str,
    extra_names: &[String],
) -> Result<TlsMaterial, String> {
    let files = Files::of(cert, key, data_dir)?;
    let generated = files.to_generate();
    if let Some(dir) = files.self_signed.as_deref().filter(|_| generated) {
        generate(dir, &files.cert, &files.key, domain, extra_names)?;
    }
    files.load(generated)
}

/// The certificate and key files in use: the configured ones, or the self-signed pair.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    /// The directory of the self-signed pair, when nothing is configured.
    self_signed: Option<PathBuf>,
}

impl Files {
    fn of(cert: Option<&Path>, key: Option<&Path>, data_dir: &Path) -> Result<Files, String> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Files {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                self_signed: None,
            }),
            (Some(_), None) => Err("a TLS certificate is configured without its key".into()),
            (None, Some(_)) => Err("a TLS key is configured without its certificate".into()),
            (None, None) => {
                let dir = data_dir.join("tls");
                Ok(Files {
                    cert: dir.join("cert.pem"),
                    key: dir.join("key.pem"),
                    self_signed: Some(dir),
                })
            }
        }
    }

    /// A self-signed pair with a file missing is (re)generated; configured files never are.
    fn to_generate(&self) -> bool {
        self.self_signed.is_some() && !(self.cert.exists() && self.key.exists())
    }

    fn load(&self, generated: bool) -> Result<TlsMaterial, String> {
        let chain = read_certificates(&self.cert)?;
        let private_key = read_key(&self.key)?;
        let fingerprint_of = |algorithm| {
            chain
                .first()
                .map(|c| fingerprint(algorithm, c))
                .unwrap_or_default()
        };
        let fingerprint_sha256 = fingerprint_of(&ring::digest::SHA256);
        let fingerprint_sha1 = fingerprint_of(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        let identity = Arc::new(self.identity(chain, private_key)?);
        let mut config = server_config(&identity, WebPkiClientVerifier::no_client_auth())?;
        config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
        Ok(TlsMaterial {
            config: Arc::new(config),
            identity,
            fingerprint_sha256,
            fingerprint_sha1,
            generated,
        })
    }

    /// The chain with its key, checked to be a pair.
    fn identity(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<CertifiedKey, String> {
        CertifiedKey::from_der(chain, key, &provider()).map_err(|error| match error {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
                "TLS key {} does not match certificate {}",
                self.key.display(),
                self.cert.display()
            ),
            other => format!(
                "cannot use TLS certificate {} with key {}: {other}",
                self.cert.display(),
                self.key.display()
            ),
        })
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let invalid = |error: pem::Error| match error {
        pem::Error::Io(io) => format!("cannot read TLS certificate {}: {io}", path.display()),
        other => format!("invalid TLS certificate {}: {other}", path.display()),
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(invalid)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    if chain.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        pem::Error::Io(io) => format!("cannot read TLS key {}: {io}", path.display()),
        pem::Error::NoItemsFound => format!("no private key found in {}", path.display()),
        other => format!("invalid TLS key {}: {other}", path.display()),
    })
}

/// The server side of every stream kind: [`VERSIONS`] with ring, `identity` for every
/// name, a small resumption cache, no ALPN; `clients` decides about client certificates
/// (c2s asks for none, s2s offers to take one).
pub fn server_config(
    identity: &Arc<CertifiedKey>,
    clients: Arc<dyn ClientCertVerifier>,
) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|error| format!("TLS setup failed: {error}"))?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(identity))));
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(RESUMPTION_ENTRIES);
    Ok(config)
}

/// Creates a self-signed ECDSA P-256 certificate for `domain` and `extra_names` and writes
/// it to `cert_path`/`key_path` (key mode 0600). Each file is written under a temporary name
/// and renamed, so a crash never leaves a half-written file that would be reused.
fn generate(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    domain: &str,
    extra_names: &[String],
) -> Result<(), String> {
    let mut names = vec![domain.to_owned()];
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let failed = |error: rcgen::Error| format!("cannot generate a TLS certificate: {error}");
    let mut params = rcgen::CertificateParams::new(names).map_err(failed)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, domain);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;

    fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
    log::info!(
        "created a self-signed TLS certificate {} for {domain}",
        cert_path.display()
    );
    Ok(())
}

/// Writes `contents` to `path` via a temporary file created with `mode`, then renames it.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut temporary = PathBuf::from(path);
    temporary.set_extension("pem.tmp");
    let failed = |error: std::io::Error| format!("cannot write {}: {error}", path.display());
    // A leftover from an interrupted run may have other permissions; start afresh.
    match fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(failed(error)),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    fs::rename(&temporary, path).map_err(failed)
}

/// A digest of the certificate's DER as uppercase hex pairs joined by colons.
pub fn fingerprint(
    algorithm: &'static ring::digest::Algorithm,
    cert: &CertificateDer<'_>,
) -> String {
    let digest = ring::digest::digest(algorithm, cert.as_ref());
    let mut text = String::with_capacity(digest.as_ref().len() * 3);
    for (index, byte) in digest.as_ref().iter().enumerate() {
        if index > 0 {
            text.push(':');
        }
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02X}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, Connection, ProtocolVersion, ServerConnection};
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const DOMAIN: &str = "hearth.test";

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "hearth-tls-{name}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn load_default(dir: &TempDir, extra_names: &[String]) -> Result<TlsMaterial, String> {
        load(None, None, &dir.0, DOMAIN, extra_names)
    }

    #[test]
    fn generates_once_then_reuses() {
        let dir = TempDir::new("reuse");
        let first = load_default(&dir, &[]).unwrap();
        assert!(first.generated);
        let fingerprint = &first.fingerprint_sha256;
        assert_eq!(fingerprint.len(), 32 * 3 - 1);
        assert!(fingerprint.split(':').all(|pair| pair.len() == 2
            && pair
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())));

        let key_mode = fs::metadata(dir.0.join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);

        let second = load_default(&dir, &[]).unwrap();
        assert!(!second.generated);
        assert_eq!(&second.fingerprint_sha256, fingerprint);

        // The same files, configured explicitly, give the same certificate.
        let third = load(
            Some(&dir.0.join("tls/cert.pem")),
            Some(&dir.0.join("tls/key.pem")),
            Path::new("/nonexistent"),
            DOMAIN,
            &[],
        )
        .unwrap();
        assert!(!third.generated);
        assert_eq!(&third.fingerprint_sha256, fingerprint);
    }

    #[test]
    fn fingerprint_format() {
        let cert = CertificateDer::from(vec![1, 2, 3]);
        assert_eq!(
            fingerprint(&ring::digest::SHA256, &cert),
            "03:90:58:C6:F2:C0:CB:49:2C:53:3B:0A:4D:14:EF:77:\
             CC:0F:78:AB:CC:CE:D5:28:7D:84:A1:A2:01:1C:FB:81"
        );
    }

    #[test]
    fn missing_configured_file_names_path() {
        let dir = TempDir::new("missing");
        let cert = dir.0.join("absent-cert.pem");
        let key = dir.0.join("absent-key.pem");
        let error = load(Some(&cert), Some(&key), &dir.0, DOMAIN, &[])
            .err()
            .unwrap();
        assert!(error.contains(&cert.display().to_string()), "{error}");
        assert!(!error.contains('\n'));

        // Certificate present, key missing: the key is named.
        load_default(&dir, &[]).unwrap();
        let cert = dir.0.join("tls/cert.pem");
        let error = load(Some(&cert), Some(&key), &dir.0, DOMAIN, &[])
            .err()
            .unwrap();
        assert!(error.contains("absent-key.pem"), "{error}");
    }

    #[test]
    fn only_one_configured_is_an_error() {
        let dir = TempDir::new("half");
        let path = dir.0.join("x.pem");
        let error = load(Some(&path), None, &dir.0, DOMAIN, &[]).err().unwrap();
        assert!(error.contains("without its key"), "{error}");
        let error = load(None, Some(&path), &dir.0, DOMAIN, &[]).err().unwrap();
        assert!(error.contains("without its certificate"), "{error}");
        // Nothing was generated as a side effect.
        assert!(!dir.0.join("tls").exists());
    }

    #[test]
    fn files_without_pem_items_rejected() {
        let dir = TempDir::new("empty");
        load_default(&dir, &[]).unwrap();
        let cert = dir.0.join("tls/cert.pem");
        let key = dir.0.join("tls/key.pem");
        let junk = dir.0.join("junk.pem");
        fs::write(&junk, "not pem at all\n").unwrap();

        let error = load(Some(&junk), Some(&key), &dir.0, DOMAIN, &[])
            .err()
            .unwrap();
        assert!(error.contains("no certificate found in"), "{error}");
        // A certificate is not a key.
        let error = load(Some(&cert), Some(&cert), &dir.0, DOMAIN, &[])
            .err()
            .unwrap();
        assert!(error.contains("no private key found in"), "{error}");

        let broken = dir.0.join("broken.pem");
        fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!!\n").unwrap();
        let error = load(Some(&broken), Some(&key), &dir.0, DOMAIN, &[])
            .err()
            .unwrap();
        assert!(error.contains("invalid TLS certificate"), "{error}");
    }

    #[test]
    fn mismatched_key_rejected() {
        let one = TempDir::new("mismatch-one");
        let two = TempDir::new("mismatch-two");
        load_default(&one, &[]).unwrap();
        load_default(&two, &[]).unwrap();
        let error = load(
            Some(&one.0.join("tls/cert.pem")),
            Some(&two.0.join("tls/key.pem")),
            &one.0,
            DOMAIN,
            &[],
        )
        .err()
        .unwrap();
        assert!(error.contains("does not match"), "{error}");
    }

    #[test]
    fn regenerates_when_half_of_the_pair_is_gone() {
        let dir = TempDir::new("half-gone");
        let first = load_default(&dir, &[]).unwrap();
        fs::remove_file(dir.0.join("tls/cert.pem")).unwrap();
        let second = load_default(&dir, &[]).unwrap();
        assert!(second.generated);
        assert_ne!(second.fingerprint_sha256, first.fingerprint_sha256);
    }

    /// Sends everything `from` has queued to `to`; false when there was nothing.
    fn transfer(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut input = wire.as_slice();
        while !input.is_empty() {
            to.read_tls(&mut input).unwrap();
            to.process_new_packets()?;
        }
        Ok(!wire.is_empty())
    }

    /// Moves TLS records between the two ends until neither has anything to send.
    fn pump(client: &mut Connection, server: &mut Connection) -> Result<(), rustls::Error> {
        for _ in 0..20 {
            let sent = transfer(client, server)?;
            if !(transfer(server, client)? || sent) {
                return Ok(());
            }
        }
        panic!("handshake did not settle");
    }

    fn handshake(
        material: &TlsMaterial,
        cert_path: &Path,
        version: &'static rustls::SupportedProtocolVersion,
        server_name: &str,
    ) -> Result<(Connection, Connection), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(cert_path).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let mut client: Connection = ClientConnection::new(Arc::new(client_config), name)?.into();
        let mut server: Connection = ServerConnection::new(Arc::clone(&material.config))?.into();
        pump(&mut client, &mut server)?;
        assert!(!client.is_handshaking() && !server.is_handshaking());

        client.writer().write_all(b"<stream:stream>").unwrap();
        pump(&mut client, &mut server)?;
        let mut received = [0; 15];
        server.reader().read_exact(&mut received).unwrap();
        assert_eq!(&received, b"<stream:stream>");
        Ok((client, server))
    }

    #[test]
    fn handshake_tls13_and_tls12() {
        let dir = TempDir::new("handshake");
        let material = load_default(&dir, &["192.168.1.10".to_owned()]).unwrap();
        let cert = dir.0.join("tls/cert.pem");
        for (version, expected) in [
            (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
            (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        ] {
            let (client, server) = handshake(&material, &cert, version, DOMAIN).unwrap();
            assert_eq!(client.protocol_version(), Some(expected));
            assert_eq!(server.protocol_version(), Some(expected));
            assert_eq!(server.alpn_protocol(), Some(ALPN_XMPP_CLIENT));
        }
        // The extra name (an IP address) is covered too.
        handshake(&material, &cert, &rustls::version::TLS13, "192.168.1.10").unwrap();
    }

    #[test]
    fn handshake_rejects_other_name() {
        let dir = TempDir::new("wrong-name");
        let material = load_default(&dir, &[]).unwrap();
        let cert = dir.0.join("tls/cert.pem");
        let result = handshake(&material, &cert, &rustls::version::TLS13, "other.test");
        assert!(
            matches!(result, Err(rustls::Error::InvalidCertificate(_))),
            "{:?}",
            result.err()
        );
    }
}
