//! The node's network identity and its QUIC endpoint.
//!
//! Each node has a self-signed certificate created once. TLS (rustls, ring
//! provider, TLS 1.3 only) checks that each side holds the key of the
//! certificate it shows; *which* keys are trusted is the pool's membership
//! list, checked right after the handshake by fingerprint (see
//! [`fingerprint`]). A dial to a known member additionally pins the
//! expected fingerprint inside the handshake. Both directions share one
//! endpoint bound to the node's listen address, so a node is one network
//! identity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::faults::FaultSocket;
use crate::wire::proto::ALPN;

/// QUIC keep-alive interval.
pub const KEEP_ALIVE: Duration = Duration::from_millis(700);
/// A peer silent for this long is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The node's key pair and certificate.
#[derive(Clone)]
pub struct Identity {
    /// DER certificate.
    pub cert: Vec<u8>,
    /// PKCS#8 DER private key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", fingerprint(&self.cert))
    }
}

/// Errors setting up TLS or the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Cert(String),
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// Binding the UDP socket failed.
    #[error("bind {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

impl Identity {
    /// Creates a new self-signed identity for node `uuid`.
    pub fn generate(uuid: &str) -> Result<Self, NetError> {
        let ck = rcgen::generate_simple_self_signed(vec![format!("{uuid}.gsync")])
            .map_err(|e| NetError::Cert(e.to_string()))?;
        Ok(Self {
            cert: ck.cert.der().to_vec(),
            key: ck.key_pair.serialize_der(),
        })
    }

    /// Fingerprint of this identity's certificate.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }
}

/// blake3 of a DER certificate, hex: the pinned form of a node's key.
pub fn fingerprint(cert_der: &[u8]) -> String {
    blake3::hash(cert_der).to_hex().to_string()
}

/// Short form of a fingerprint for humans (like an SSH key's).
pub fn short(fp: &str) -> String {
    fp.chars().take(16).collect()
}

/// The certificate fingerprint a connection's peer presented.
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<String> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| fingerprint(c.as_ref()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // The constant is far below quinn's limit, so the conversion cannot fail.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    t.max_concurrent_bidi_streams(256u32.into());
    Arc::new(t)
}

/// Accepts any certificate whose handshake signature is valid, optionally
/// requiring one exact fingerprint.
#[derive(Debug)]
struct KeyCheck {
    provider: Arc<CryptoProvider>,
    pinned: Option<String>,
}

impl KeyCheck {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match &self.pinned {
            Some(fp) if *fp != fingerprint(cert.as_ref()) => Err(rustls::Error::General(
                "peer key does not match the pinned fingerprint".into(),
            )),
            _ => Ok(()),
        }
    }

    fn tls12(&self) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not supported".into()))
    }

    fn tls13(
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

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for KeyCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12()
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for KeyCheck {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12()
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

fn key_der(id: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.clone()))
}

/// Client configuration for dialing a peer; `pinned` is the fingerprint the
/// peer must present (`None` only for a first-contact probe).
pub fn client_config(
    id: &Identity,
    pinned: Option<String>,
) -> Result<quinn::ClientConfig, NetError> {
    let provider = provider();
    let verifier = Arc::new(KeyCheck {
        provider: provider.clone(),
        pinned,
    });
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![CertificateDer::from(id.cert.clone())], key_der(id))
        .map_err(|e| NetError::Tls(e.to_string()))?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(crypto).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

fn server_config(id: &Identity) -> Result<quinn::ServerConfig, NetError> {
    let provider = provider();
    let verifier = Arc::new(KeyCheck {
        provider: provider.clone(),
        pinned: None,
    });
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(id.cert.clone())], key_der(id))
        .map_err(|e| NetError::Tls(e.to_string()))?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(crypto).map_err(|e| NetError::Tls(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// Binds the node's endpoint on `addr`, behind a [`FaultSocket`].
pub fn bind(
    id: &Identity,
    addr: SocketAddr,
    faults: Arc<crate::faults::FaultRules>,
) -> Result<quinn::Endpoint, NetError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| NetError::Bind { addr, source })?;
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let inner = runtime
        .wrap_udp_socket(socket)
        .map_err(|source| NetError::Bind { addr, source })?;
    let socket = Arc::new(FaultSocket::new(inner, faults));
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server_config(id)?),
        socket,
        runtime,
    )
    .map_err(|source| NetError::Bind { addr, source })?;
    endpoint.set_default_client_config(client_config(id, None)?);
    Ok(endpoint)
}
