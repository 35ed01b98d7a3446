//! Certificates made with rcgen: a CA and leaf certificates signed by it, written as PEM
//! files. Used by `takgate bench federation` for its two in-process nodes.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// A CA that signs leaf certificates into `dir`.
pub struct Authority {
    pub dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("ca", &self.ca).finish()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Authority {
    /// A new CA named `cn`; its certificate is written to `dir/ca.pem`.
    pub fn new(dir: &Path, cn: &str) -> Result<Authority, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().map_err(err)?).map_err(err)?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, issuer.pem()).map_err(|e| format!("{}: {e}", ca.display()))?;
        Ok(Authority { dir: dir.to_owned(), ca, issuer })
    }

    /// A leaf certificate for `cn` with DNS/IP SANs `names`, usable as server and client
    /// (federation links are both); returns (certificate, key) paths.
    pub fn leaf(&self, cn: &str, names: &[&str]) -> Result<(PathBuf, PathBuf), String> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        for n in names {
            p.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().map_err(err)?),
            });
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(err)?;
        let (cp, kp) = (self.dir.join(format!("{cn}.pem")), self.dir.join(format!("{cn}.key")));
        std::fs::write(&cp, cert.pem()).map_err(|e| format!("{}: {e}", cp.display()))?;
        std::fs::write(&kp, key.serialize_pem()).map_err(|e| format!("{}: {e}", kp.display()))?;
        Ok((cp, kp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_chains_to_the_ca_and_names_its_sans() {
        let dir = std::env::temp_dir().join(format!("takgate-certs-{}", fastrand::u64(..)));
        let a = Authority::new(&dir, "test CA").unwrap();
        let (c, k) = a.leaf("node-a", &["localhost", "127.0.0.1"]).unwrap();
        let sc = crate::transport::tls::server_config(&c, &k, Some(&a.ca), true).unwrap();
        assert!(sc.alpn_protocols.is_empty());
        let cc = crate::transport::tls::client_config(&a.ca, Some((&c, &k)));
        assert!(cc.is_ok());
        let der = crate::transport::tls::load_certs(&c).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
        let sans = format!("{:?}", x.subject_alternative_name().unwrap().unwrap().value.general_names);
        assert!(sans.contains("DNSName(\"localhost\")") && sans.contains("IPAddress([127, 0, 0, 1])"), "{sans}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
