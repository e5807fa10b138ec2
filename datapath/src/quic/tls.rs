//! TLS for the QUIC driver: rustls 0.23 with the *ring* provider, TLS 1.3 only, ALPN
//! [`ALPN`].
//!
//! Server side: a PEM chain and key from files ([`ServerIdentity::from_pem_files`]) for
//! production, or a self-signed certificate generated once and kept in a state directory
//! ([`ServerIdentity::load_or_generate`]), identified by its SHA-256 [`Fingerprint`] which the
//! relay prints in its join link.
//!
//! Client side ([`ClientTrust`]): verify by name against the webpki roots plus the system's
//! native roots, or against one CA file, or pin the server certificate's SHA-256 fingerprint.
//! The pin verifier still checks the TLS 1.3 handshake signature with the *ring* provider, so a
//! peer that merely replays the pinned certificate without its key fails the handshake.
//!
//! 0-RTT is disabled on both sides: every datagram and control byte of this protocol must be
//! replay-safe, and a LAN party does not care about one saved round trip at connect time.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The ALPN protocol identifier of softlan's QUIC connections.
pub const ALPN: &[u8] = b"lanparty/1";

/// File name of the generated certificate inside a state directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the generated private key inside a state directory (mode 0600 on Unix).
pub const KEY_FILE: &str = "key.pem";

/// Errors while building TLS configurations or loading certificates and keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A PEM file could not be parsed.
    #[error("{path}: invalid pem: {reason}")]
    Pem {
        /// The file involved.
        path: PathBuf,
        /// What was wrong, from the PEM parser.
        reason: String,
    },
    /// A PEM certificate file holds no certificate.
    #[error("{path}: no certificate found")]
    NoCertificate {
        /// The file involved.
        path: PathBuf,
    },
    /// rustls refused the certificate, key or configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating the self-signed certificate failed.
    #[error("generating self-signed certificate: {0}")]
    Generate(String),
    /// A CA file held no usable trust anchor, or the system and webpki roots were empty.
    #[error("no usable trust anchors{}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    NoTrustAnchors {
        /// The CA file, or `None` for the system roots.
        path: Option<PathBuf>,
    },
    /// The crypto provider lacks the QUIC initial cipher suite (cannot happen with *ring*).
    #[error("crypto provider lacks the quic initial cipher suite")]
    NoInitialCipherSuite,
}

/// A SHA-256 fingerprint of a DER certificate, shown as upper-case hex pairs joined by colons.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The SHA-256 fingerprint of a DER-encoded certificate.
    pub fn of(cert_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Error parsing a [`Fingerprint`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha-256 fingerprint: expected 32 hex bytes, optionally separated by colons")]
pub struct FingerprintParseError;

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    /// Accepts 64 hex digits, with or without colons between the pairs, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_digits: String = s.trim().chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex::decode_to_slice(&hex_digits, &mut out).map_err(|_| FingerprintParseError)?;
        Ok(Self(out))
    }
}

/// The certificate chain and private key a server presents.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Certificate chain, end-entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The end-entity certificate's private key.
    pub key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    /// A stateless-reset key derived from the private key: stable for as long as the identity
    /// is, and useless to anyone who does not hold the key.
    pub fn reset_key(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"lanparty stateless reset key v1");
        ctx.update(self.key.secret_der());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// Loads a PEM certificate chain (end-entity first) and a PEM private key.
    ///
    /// # Errors
    ///
    /// [`TlsError::Io`], [`TlsError::Pem`] or [`TlsError::NoCertificate`], each naming the file.
    pub fn from_pem_files(chain_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let chain_pem = read(chain_path)?;
        let key_pem = read(key_path)?;
        Self::from_pem(&chain_pem, chain_path, &key_pem, key_path)
    }

    fn from_pem(
        chain_pem: &[u8],
        chain_path: &Path,
        key_pem: &[u8],
        key_path: &Path,
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(chain_path, e))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: chain_path.to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_error(key_path, e))?;
        Ok(Self { chain, key })
    }

    /// Loads `cert.pem`/`key.pem` from `state_dir`, or generates a self-signed certificate for
    /// `names` (DNS names or IP addresses) and stores it there first.
    ///
    /// The directory is created if missing. The key file is written with mode 0600 on Unix.
    /// Both files are written to temporary names and renamed, so a crash never leaves half a key.
    ///
    /// # Errors
    ///
    /// Any [`TlsError`] naming the file that failed.
    pub fn load_or_generate(state_dir: &Path, names: &[String]) -> Result<Self, TlsError> {
        let cert_path = state_dir.join(CERT_FILE);
        let key_path = state_dir.join(KEY_FILE);
        if cert_path.exists() && key_path.exists() {
            return Self::from_pem_files(&cert_path, &key_path);
        }
        fs::create_dir_all(state_dir).map_err(|source| TlsError::Io {
            path: state_dir.to_owned(),
            source,
        })?;
        let names = if names.is_empty() {
            vec!["lanparty-relay".to_owned()]
        } else {
            names.to_vec()
        };
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let cert_pem = generated.cert.pem();
        let key_pem = generated.signing_key.serialize_pem();
        write_file(&key_path, key_pem.as_bytes(), true)?;
        write_file(&cert_path, cert_pem.as_bytes(), false)?;
        Self::from_pem(
            cert_pem.as_bytes(),
            &cert_path,
            key_pem.as_bytes(),
            &key_path,
        )
    }

    /// The SHA-256 fingerprint of the end-entity certificate (what clients pin).
    pub fn fingerprint(&self) -> Fingerprint {
        // `from_pem` guarantees a non-empty chain; an empty one built by hand gets the
        // fingerprint of no bytes, which no server will ever present.
        Fingerprint::of(self.chain.first().map_or(&[][..], |c| c.as_ref()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    use std::io::Write as _;
    let io_err = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("pem.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

/// The *ring* crypto provider, shared by every configuration built here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the QUIC server crypto: TLS 1.3 only, ALPN [`ALPN`], no client certificates, no 0-RTT.
///
/// Wrap it with `quinn_proto::ServerConfig::with_crypto`; the driver sets the transport
/// parameters itself.
///
/// # Errors
///
/// [`TlsError::Rustls`] when the key does not match the certificate or is unsupported.
pub fn server_crypto(identity: ServerIdentity) -> Result<Arc<QuicServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // QUIC allows only 0 or u32::MAX here; 0 turns 0-RTT off (see the module doc).
    config.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(config).map_err(|_| TlsError::NoInitialCipherSuite)?;
    Ok(Arc::new(quic))
}

/// How a client decides to trust the server's certificate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientTrust {
    /// Verify by name against the webpki roots plus the system's native roots.
    SystemRoots,
    /// Verify by name against the CA certificates in this PEM file only.
    CaFile(PathBuf),
    /// Accept exactly the end-entity certificate with this SHA-256 fingerprint, whatever its
    /// names; the TLS 1.3 handshake signature is still verified.
    Pinned(Fingerprint),
}

/// Builds the QUIC client crypto for `trust`: TLS 1.3 only, ALPN [`ALPN`], no 0-RTT.
///
/// Wrap it with `quinn_proto::ClientConfig::new`; the driver sets the transport parameters
/// itself when connecting.
///
/// # Errors
///
/// [`TlsError::Io`]/[`TlsError::Pem`] for an unreadable CA file, [`TlsError::NoTrustAnchors`]
/// when no root could be loaded.
pub fn client_crypto(trust: &ClientTrust) -> Result<Arc<QuicClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = match trust {
        ClientTrust::SystemRoots => {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            // Errors here are per-file problems of the system store; the certificates that did
            // load are still useful, and an empty result is caught below.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(TlsError::NoTrustAnchors { path: None });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ClientTrust::CaFile(path) => {
            let pem = read(path)?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_error(path, e))?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError::NoTrustAnchors {
                    path: Some(path.clone()),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ClientTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    let quic = QuicClientConfig::try_from(config).map_err(|_| TlsError::NoInitialCipherSuite)?;
    Ok(Arc::new(quic))
}

/// [`client_crypto`] wrapped as a quinn client configuration, ready for `Driver::connect`.
///
/// # Errors
///
/// As [`client_crypto`].
pub fn client_config(trust: &ClientTrust) -> Result<quinn_proto::ClientConfig, TlsError> {
    Ok(quinn_proto::ClientConfig::new(client_crypto(trust)?))
}

/// The server presented a certificate other than the pinned one.
///
/// It reaches the connection's close reason through rustls' `invalid peer certificate` error,
/// so both fingerprints show in the driver's `Closed` event.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate fingerprint mismatch: pinned {expected}, server presented {actual}")]
pub struct PinMismatch {
    /// The fingerprint the client pinned.
    pub expected: Fingerprint,
    /// The fingerprint of the certificate the server presented.
    pub actual: Fingerprint,
}

impl fmt::Debug for PinMismatch {
    /// The same text as `Display`: rustls formats custom certificate errors with `Debug`, and
    /// this text ends up in the connection's close reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Accepts exactly one end-entity certificate, by SHA-256 fingerprint.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = Fingerprint::of(end_entity.as_ref());
        // Fingerprints are public values (printed in join links): no need for constant time.
        if actual == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    expected: self.pin,
                    actual,
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration only enables TLS 1.3, so rustls never asks; refuse if it does.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_through_text() {
        let fp = Fingerprint::of(b"not really a certificate");
        let text = fp.to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(
            text.replace(':', "").to_lowercase().parse::<Fingerprint>(),
            Ok(fp)
        );
        assert!("AB:CD".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lp-quic-tls-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn generated_identity_is_kept_and_reused_with_a_private_key_file() {
        let dir = temp_dir("gen");
        let first = ServerIdentity::load_or_generate(&dir, &["relay.test".into()]).unwrap();
        let second = ServerIdentity::load_or_generate(&dir, &[]).unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        server_crypto(first).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pem_errors_name_the_file() {
        let dir = temp_dir("pem");
        fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("chain.pem");
        let key = dir.join("key.pem");
        fs::write(&cert, "no pem here").unwrap();
        fs::write(&key, "no pem here").unwrap();
        let err = ServerIdentity::from_pem_files(&cert, &key).unwrap_err();
        assert!(err.to_string().contains("chain.pem"), "{err}");
        let missing = dir.join("missing.pem");
        let err = ServerIdentity::from_pem_files(&missing, &key).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let Err(err) = client_crypto(&ClientTrust::CaFile(cert)) else {
            panic!("a file without certificates must not make a trust store");
        };
        assert!(err.to_string().contains("chain.pem"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn client_configs_build_for_every_trust_mode() {
        client_crypto(&ClientTrust::SystemRoots).unwrap();
        client_crypto(&ClientTrust::Pinned(Fingerprint([7; 32]))).unwrap();
        let dir = temp_dir("ca");
        let identity = ServerIdentity::load_or_generate(&dir, &["ca.test".into()]).unwrap();
        drop(identity);
        client_crypto(&ClientTrust::CaFile(dir.join(CERT_FILE))).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
