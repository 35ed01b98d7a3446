//! Certificates made with rcgen (`takgate certs`, and the two in-process nodes of
//! `takgate bench federation`): a CA, and server, client and federation certificates it
//! signs, with the key usages and SANs TAK peers check, written as PEM files (keys mode
//! 0600); client certificates also as PKCS#12 for ATAK and WinTAK.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TLS server (TAK streaming port): serverAuth, SANs required.
    Server,
    /// A TAK client (ATAK, WinTAK, pytak): clientAuth.
    Client,
    /// A federation endpoint, which is both: serverAuth and clientAuth, SANs required.
    Federation,
}

/// A CA that signs certificates into `dir`.
pub struct Authority {
    pub dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("ca", &self.ca).finish()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes a file; `private`: mode 0600 (keys).
pub(crate) fn write(path: &Path, data: &[u8], private: bool) -> Result<(), String> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        o.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    o.open(path).and_then(|mut f| f.write_all(data)).map_err(|e| format!("{}: {e}", path.display()))
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(days as i64);
}

impl Authority {
    /// A new CA named `cn`, valid `days`: `dir/ca.pem` and `dir/ca.key`.
    pub fn create(dir: &Path, cn: &str, days: u32) -> Result<Authority, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut p, days);
        let key = KeyPair::generate().map_err(err)?;
        let key_pem = key.serialize_pem();
        let issuer = CertifiedIssuer::self_signed(p, key).map_err(err)?;
        write(&dir.join("ca.pem"), issuer.pem().as_bytes(), false)?;
        write(&dir.join("ca.key"), key_pem.as_bytes(), true)?;
        Authority::load(dir)
    }

    /// The CA in `dir` (ca.pem and ca.key).
    pub fn load(dir: &Path) -> Result<Authority, String> {
        let ca = dir.join("ca.pem");
        let ca_pem = std::fs::read_to_string(&ca).map_err(|e| format!("{}: {e} (create the CA first: takgate certs ca --dir {})", ca.display(), dir.display()))?;
        let key_path = dir.join("ca.key");
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| format!("{}: {e}", ca.display()))?;
        Ok(Authority { dir: dir.to_owned(), ca, ca_pem, issuer })
    }

    /// A new CA in `dir` for tests and tools (ten years).
    pub fn new(dir: &Path, cn: &str) -> Result<Authority, String> {
        Authority::create(dir, cn, 3650)
    }

    /// Issues a certificate for `cn`: `dir/<cn>.pem` (the certificate, then the CA, the
    /// chain TAK peers want) and `dir/<cn>.key`.
    pub fn issue(&self, kind: Kind, cn: &str, sans: &[&str], days: u32) -> Result<(PathBuf, PathBuf), String> {
        if cn.is_empty() || cn.contains(['/', '\\']) {
            return Err(format!("{cn:?}: not usable as a certificate name"));
        }
        if kind != Kind::Client && sans.is_empty() {
            return Err("server and federation certificates need at least one SAN (the DNS names and IP addresses peers dial)".into());
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        for n in sans {
            p.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().map_err(|e| format!("SAN {n:?}: {e}"))?),
            });
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = match kind {
            Kind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Kind::Federation => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        };
        validity(&mut p, days);
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(err)?;
        let (cp, kp) = (self.dir.join(format!("{cn}.pem")), self.dir.join(format!("{cn}.key")));
        write(&cp, format!("{}{}", cert.pem(), self.ca_pem).as_bytes(), false)?;
        write(&kp, key.serialize_pem().as_bytes(), true)?;
        Ok((cp, kp))
    }

    /// Revokes the certificate in `cert` (the first in the file): its serial goes into
    /// `dir/revoked.txt` and a new `dir/crl.pem` is signed (valid `days`), listing every
    /// certificate revoked so far. Returns the CRL's path, for a link's `crl`.
    pub fn revoke(&self, cert: &Path, days: u32) -> Result<PathBuf, String> {
        let der = crate::link::tls::load_certs(cert).map_err(|e| e.to_string())?;
        let (_, x) = x509_parser::parse_x509_certificate(&der[0]).map_err(|e| format!("{}: {e}", cert.display()))?;
        let ca_der = self.issuer_der()?;
        let (_, ca) = x509_parser::parse_x509_certificate(ca_der.as_ref()).map_err(|e| format!("{}: {e}", self.ca.display()))?;
        if x.issuer().as_raw() != ca.subject().as_raw() {
            return Err(format!("{}: not issued by this CA ({})", cert.display(), ca.subject()));
        }
        let serial = hex::encode(x.raw_serial());
        let list = self.dir.join("revoked.txt");
        let mut text = std::fs::read_to_string(&list).unwrap_or_default();
        if !text.lines().any(|l| l.split_whitespace().next() == Some(serial.as_str())) {
            text.push_str(&format!("{serial} {} {}\n", time::OffsetDateTime::now_utc().unix_timestamp(), x.subject()));
            write(&list, text.as_bytes(), false)?;
        }
        self.write_crl(days)
    }

    /// Signs `dir/crl.pem` anew from `dir/revoked.txt` (valid `days`).
    pub fn write_crl(&self, days: u32) -> Result<PathBuf, String> {
        use rcgen::{CertificateRevocationListParams, RevokedCertParams, SerialNumber};
        let text = std::fs::read_to_string(self.dir.join("revoked.txt")).unwrap_or_default();
        let mut revoked = Vec::new();
        for l in text.lines() {
            let mut f = l.split_whitespace();
            let (Some(hex), Some(at)) = (f.next(), f.next()) else { continue };
            let Ok(bytes) = hex::decode(hex) else { continue };
            let at = at.parse::<i64>().ok().and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok()).unwrap_or_else(time::OffsetDateTime::now_utc);
            revoked.push(RevokedCertParams { serial_number: SerialNumber::from_slice(&bytes), revocation_time: at, reason_code: None, invalidity_date: None });
        }
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(days.max(1) as i64),
            crl_number: SerialNumber::from(now.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).map_err(err)?;
        let path = self.dir.join("crl.pem");
        write(&path, crl.pem().map_err(err)?.as_bytes(), false)?;
        Ok(path)
    }

    fn issuer_der(&self) -> Result<rustls::pki_types::CertificateDer<'static>, String> {
        crate::link::tls::load_certs(&self.ca).map_err(|e| e.to_string())?.into_iter().next().ok_or_else(|| format!("{}: empty", self.ca.display()))
    }

    /// A leaf usable as server and client (federation links are both).
    pub fn leaf(&self, cn: &str, names: &[&str]) -> Result<(PathBuf, PathBuf), String> {
        self.issue(Kind::Federation, cn, names, 3650)
    }
}

/// Writes `cert` (with its chain) and `key` as PKCS#12 to `out`, protected by `password`.
/// `legacy`: 3DES and HMAC-SHA1, which every ATAK and WinTAK version imports; otherwise
/// AES-256 and HMAC-SHA256.
pub fn export_p12(cert: &Path, key: &Path, out: &Path, password: &str, legacy: bool) -> Result<(), String> {
    use p12_keystore::{Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey, PrivateKeyChain};
    let certs = crate::link::tls::load_certs(cert).map_err(|e| e.to_string())?;
    let key_der = crate::link::tls::load_key(key).map_err(|e| e.to_string())?;
    let rustls::pki_types::PrivateKeyDer::Pkcs8(k) = key_der else { return Err(format!("{}: PKCS#8 key expected", key.display())) };
    let chain: Vec<Certificate> = certs.iter().map(|c| Certificate::from_der(c)).collect::<Result<_, _>>().map_err(err)?;
    let id = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &certs[0]);
    let entry = PrivateKeyChain::new(id.as_ref().to_vec(), PrivateKey::from_der(k.secret_pkcs8_der()).map_err(err)?, chain);
    let mut ks = KeyStore::new();
    let alias = cert.file_stem().and_then(|s| s.to_str()).unwrap_or("takgate");
    ks.add_entry(alias, KeyStoreEntry::PrivateKeyChain(entry));
    let w = ks.writer(password);
    let w = if legacy { w.encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc).mac_algorithm(MacAlgorithm::HmacSha1) } else { w.encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256).mac_algorithm(MacAlgorithm::HmacSha256) };
    let data = w.write().map_err(err)?;
    write(out, &data, true)
}

/// Writes the CA certificate(s) in `ca` as a PKCS#12 truststore (trusted certificates, no
/// key) to `out`, protected by `password`, in the legacy algorithms every ATAK imports.
pub fn export_truststore(ca: &Path, out: &Path, password: &str) -> Result<(), String> {
    use p12_keystore::{Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm};
    let certs = crate::link::tls::load_certs(ca).map_err(|e| e.to_string())?;
    let mut ks = KeyStore::new();
    for (i, c) in certs.iter().enumerate() {
        ks.add_entry(&format!("ca{i}"), KeyStoreEntry::Certificate(Certificate::from_der(c).map_err(err)?));
    }
    let data = ks.writer(password).encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc).mac_algorithm(MacAlgorithm::HmacSha1).write().map_err(err)?;
    write(out, &data, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_chains_to_the_ca_and_names_its_sans() {
        let dir = std::env::temp_dir().join(format!("takgate-certs-{}", fastrand::u64(..)));
        let a = Authority::new(&dir, "test CA").unwrap();
        let (c, k) = a.leaf("node-a", &["localhost", "127.0.0.1"]).unwrap();
        // reloaded from its files, the CA signs again
        let again = Authority::load(&dir).unwrap();
        let (cc, ck) = again.issue(Kind::Client, "alice", &[], 30).unwrap();
        assert_eq!(crate::link::tls::load_certs(&cc).unwrap().len(), 2, "leaf and CA");
        let p12 = dir.join("alice.p12");
        export_p12(&cc, &ck, &p12, "atakatak", true).unwrap();
        let ks = p12_keystore::KeyStore::from_pkcs12(&std::fs::read(&p12).unwrap(), "atakatak", p12_keystore::Pkcs12ImportPolicy::Relaxed).unwrap();
        let (_, chain) = ks.private_key_chain().unwrap();
        assert_eq!(chain.certs().len(), 2);
        assert!(again.issue(Kind::Server, "nosan", &[], 30).is_err());
        let sc = crate::link::tls::server_config(&c, &k, Some(&a.ca), true).unwrap();
        assert!(sc.alpn_protocols.is_empty());
        let cc = crate::link::tls::client_config(&a.ca, Some((&c, &k)));
        assert!(cc.is_ok());
        let der = crate::link::tls::load_certs(&c).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
        let sans = format!("{:?}", x.subject_alternative_name().unwrap().unwrap().value.general_names);
        assert!(sans.contains("DNSName(\"localhost\")") && sans.contains("IPAddress([127, 0, 0, 1])"), "{sans}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
