//! TLS with rustls: server and client configurations from PEM files (read in place, never
//! copied), mutual certificates, and the peer identity (subject CN and SHA-256 fingerprint)
//! for the routing policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::peer::PeerIdentity;

/// Why TLS material could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Pem { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{}: no certificate in file", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: no usable private key: {source}", path.display())]
    NoKey { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{}: no certificate revocation list (PEM `X509 CRL` or DER) in file", .0.display())]
    NoCrl(PathBuf),
    #[error("{}: {source}", path.display())]
    Rustls { path: PathBuf, source: rustls::Error },
    #[error("TLS: {0}")]
    Setup(#[from] rustls::Error),
    #[error("TLS client certificate verification: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS: {0}")]
    Missing(&'static str),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem { path: path.to_owned(), source };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path).map_err(pem)?.collect::<Result<_, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::NoKey { path: path.to_owned(), source })
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots.add(c).map_err(|source| TlsError::Rustls { path: ca.to_owned(), source })?;
    }
    Ok(roots)
}

/// Our chain: the certificate file, plus the issuing CA from `ca` when the file lacks it,
/// so peers that only know the root can build the path.
pub fn chain(cert: &Path, ca: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut chain = load_certs(cert)?;
    if let Some(ca) = ca {
        let last_issuer = x509_parser::parse_x509_certificate(chain.last().map(|c| c.as_ref()).unwrap_or_default()).ok().map(|(_, c)| c.issuer().as_raw().to_vec());
        for c in load_certs(ca)? {
            let subject = x509_parser::parse_x509_certificate(&c).ok().map(|(_, x)| x.subject().as_raw().to_vec());
            if subject.is_some() && subject == last_issuer && !chain.contains(&c) {
                chain.push(c);
            }
        }
    }
    Ok(chain)
}

/// Certificate revocation lists from PEM files (`X509 CRL` blocks) or DER files.
pub fn load_crls(paths: &[std::path::PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|source| TlsError::Read { path: p.clone(), source })?;
        let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes).collect::<Result<_, _>>().map_err(|source| TlsError::Pem { path: p.clone(), source })?;
        if pem.is_empty() {
            if bytes.first() != Some(&0x30) {
                return Err(TlsError::NoCrl(p.clone()));
            }
            out.push(CertificateRevocationListDer::from(bytes));
        } else {
            out.extend(pem);
        }
    }
    Ok(out)
}

/// A server configuration. With `ca` and `require_client_cert`, clients must present a
/// certificate that chains to it; with `ca` only, one is verified when offered.
pub fn server_config(cert: &Path, key: &Path, ca: Option<&Path>, require_client_cert: bool) -> Result<ServerConfig, TlsError> {
    server_config_with_crls(cert, key, ca, require_client_cert, &[])
}

/// [`server_config`], refusing client certificates revoked by `crls` (and those whose
/// issuer has no list there).
pub fn server_config_with_crls(cert: &Path, key: &Path, ca: Option<&Path>, require_client_cert: bool, crls: &[std::path::PathBuf]) -> Result<ServerConfig, TlsError> {
    server_config_versions(cert, key, ca, require_client_cert, crls, rustls::DEFAULT_VERSIONS)
}

/// TLS 1.3 only (QUIC has no other).
const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn server_config_versions(cert: &Path, key: &Path, ca: Option<&Path>, require_client_cert: bool, crls: &[std::path::PathBuf], versions: &[&'static rustls::SupportedProtocolVersion]) -> Result<ServerConfig, TlsError> {
    let b = ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let b = match ca {
        Some(ca) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
            let v = if crls.is_empty() { v } else { v.with_crls(load_crls(crls)?).only_check_end_entity_revocation() };
            let v = if require_client_cert { v } else { v.allow_unauthenticated() };
            b.with_client_cert_verifier(v.build()?)
        }
        None => b.with_no_client_auth(),
    };
    b.with_single_cert(chain(cert, ca)?, load_key(key)?).map_err(|source| TlsError::Rustls { path: cert.to_owned(), source })
}

/// A client configuration that trusts `ca` and presents `cert`/`key` when given.
pub fn client_config(ca: &Path, cert_key: Option<(&Path, &Path)>) -> Result<ClientConfig, TlsError> {
    client_config_with_crls(ca, cert_key, &[])
}

/// [`client_config`], refusing server certificates revoked by `crls`.
pub fn client_config_with_crls(ca: &Path, cert_key: Option<(&Path, &Path)>, crls: &[std::path::PathBuf]) -> Result<ClientConfig, TlsError> {
    client_config_versions(ca, cert_key, crls, rustls::DEFAULT_VERSIONS)
}

fn client_config_versions(ca: &Path, cert_key: Option<(&Path, &Path)>, crls: &[std::path::PathBuf], versions: &[&'static rustls::SupportedProtocolVersion]) -> Result<ClientConfig, TlsError> {
    let b = ClientConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let b = if crls.is_empty() {
        b.with_root_certificates(roots(ca)?)
    } else {
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider()).with_crls(load_crls(crls)?).only_check_end_entity_revocation().build().map_err(|e| TlsError::Missing(if matches!(e, rustls::server::VerifierBuilderError::NoRootAnchors) { "the ca file holds no usable root" } else { "the server verifier could not be built" }))?;
        b.dangerous().with_custom_certificate_verifier(v)
    };
    match cert_key {
        Some((cert, key)) => b.with_client_auth_cert(chain(cert, Some(ca))?, load_key(key)?).map_err(|source| TlsError::Rustls { path: cert.to_owned(), source }),
        None => Ok(b.with_no_client_auth()),
    }
}

/// Why a TLS handshake with a client failed, in words for the operator's log.
pub fn explain_accept_error(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error as TlsErr};
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<TlsErr>()) else { return e.to_string() };
    match err {
        TlsErr::InvalidCertificate(CertificateError::ExpiredContext { time, not_after }) => {
            format!("client certificate expired {} s ago (not valid after UNIX time {}): issue a new one", time.as_secs().saturating_sub(not_after.as_secs()), not_after.as_secs())
        }
        TlsErr::InvalidCertificate(CertificateError::Expired) => "client certificate has expired: issue a new one".into(),
        TlsErr::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => "client certificate is not valid yet: check both clocks".into(),
        TlsErr::InvalidCertificate(CertificateError::Revoked) => "client certificate is revoked (by the link's crl)".into(),
        TlsErr::InvalidCertificate(CertificateError::UnknownRevocationStatus) => "client certificate's issuer has no revocation list in the link's crl".into(),
        TlsErr::InvalidCertificate(CertificateError::UnknownIssuer) => "client certificate does not chain to the link's ca".into(),
        TlsErr::NoCertificatesPresented => "no client certificate presented, and the link requires one".into(),
        other => other.to_string(),
    }
}

/// `AA:BB:…`: SHA-256 of the DER certificate, as TAK shows fingerprints.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let hex = hex::encode_upper(d.as_ref());
    hex.as_bytes().chunks(2).map(|p| std::str::from_utf8(p).unwrap_or("")).collect::<Vec<_>>().join(":")
}

/// The identity of the end-entity certificate a peer presented.
pub fn identity(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerIdentity> {
    let chain = certs?;
    let der = chain.first()?;
    let parsed = x509_parser::parse_x509_certificate(der).ok();
    let cn_of = |n: &x509_parser::x509::X509Name<'_>| n.iter_common_name().next().and_then(|cn| cn.as_str().ok().map(str::to_owned)).unwrap_or_default();
    let cn = parsed.as_ref().map(|(_, c)| cn_of(c.subject())).unwrap_or_default();
    let issuer_cn = parsed.as_ref().map(|(_, c)| cn_of(c.issuer())).unwrap_or_default();
    Some(PeerIdentity { cn, fingerprint: fingerprint(der), issuer_cn, chain_len: chain.len(), issuers: chain.iter().skip(1).map(|c| c.to_vec()).collect() })
}

/// The server configuration of a TLS or federation listener: our chain, and client
/// certificates verified against `ca` (required when `require_client_cert`, the default
/// with a `ca`, or always for federation), revoked ones refused by the link's CRLs.
pub fn server_for(f: &crate::config::link::TlsFiles, l: &crate::config::link::TlsListen, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    server_for_required(f, l.require_client_cert.unwrap_or(f.ca.is_some()), alpn)
}

/// [`server_for`] with client certificates required or not.
pub fn server_for_required(f: &crate::config::link::TlsFiles, require_client_cert: bool, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let (Some(cert), Some(key)) = (&f.cert, &f.key) else { return Err(TlsError::Missing("a tls listener needs cert and key")) };
    let mut c = server_config_with_crls(cert, key, f.ca.as_deref(), require_client_cert, &f.crl)?;
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// The TLS 1.3 server configuration of a QUIC listener: client certificates always
/// required (as TAK Server's QUIC input), verified against `ca` and its CRLs.
pub fn server_for_quic(f: &crate::config::link::TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let (Some(cert), Some(key)) = (&f.cert, &f.key) else { return Err(TlsError::Missing("a quic listener needs cert and key")) };
    let ca = f.ca.as_deref().ok_or(TlsError::Missing("a quic listener needs ca (client certificates are required)"))?;
    let mut c = server_config_versions(cert, key, Some(ca), true, &f.crl, TLS13)?;
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// The TLS 1.3 client configuration of an outgoing QUIC link (or probe, or bench client).
pub fn client_for_quic(ca: &Path, cert_key: Option<(&Path, &Path)>, crls: &[std::path::PathBuf], alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let mut c = client_config_versions(ca, cert_key, crls, TLS13)?;
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// The client configuration of an outgoing TLS or federation link.
pub fn client_for(f: &crate::config::link::TlsFiles, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let ca = f.ca.as_deref().ok_or(TlsError::Missing("a tls connection needs ca (the CA that signed the server certificate)"))?;
    let mut c = client_config_with_crls(ca, f.cert.as_deref().zip(f.key.as_deref()), &f.crl)?;
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// How long a TLS handshake may take (default 10 s).
pub fn handshake_timeout(f: &crate::config::link::TlsFiles) -> std::time::Duration {
    crate::config::link::secs_or(f.handshake_timeout_secs, 10.0)
}

/// The name to verify in the server certificate: `server_name`, else the host of `address`.
pub fn server_name(address: &str, c: &crate::config::link::TlsConnect) -> String {
    c.server_name.clone().unwrap_or_else(|| address.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']).to_owned()).unwrap_or_default())
}
