//! Test PKI made with rcgen: a CA, a server certificate for localhost/127.0.0.1 and client
//! certificates, written as PEM files into a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};

pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("takgate-test-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = tmpdir(tag);
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, format!("takgate test CA {tag}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, issuer.pem()).unwrap();
        let mut pki = Pki { server_cert: dir.join("server.pem"), server_key: dir.join("server.key"), ca: ca_path, dir, issuer };
        let (c, k) = pki.leaf("localhost", true);
        std::fs::rename(c, &pki.server_cert).unwrap();
        std::fs::rename(k, &pki.server_key).unwrap();
        pki
    }

    /// A leaf certificate (server or client) with CN `cn`; returns (cert, key) paths.
    pub fn leaf(&mut self, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        self.issue(cn, server, None)
    }

    /// A client certificate from this CA that expired in 2021.
    pub fn leaf_expired(&mut self, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(cn, false, Some((rcgen::date_time_ymd(2020, 1, 1), rcgen::date_time_ymd(2021, 1, 1))))
    }

    fn issue(&mut self, cn: &str, server: bool, validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = if server { vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth] } else { vec![ExtendedKeyUsagePurpose::ClientAuth] };
        if let Some((from, to)) = validity {
            p.not_before = from;
            p.not_after = to;
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let (cp, kp) = (self.dir.join(format!("{cn}.pem")), self.dir.join(format!("{cn}.key")));
        std::fs::write(&cp, cert.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        (cp, kp)
    }

    /// A node with a TCP client link `c` and a federation listener `fed` on `addr` using
    /// this PKI's server certificate.
    pub fn fed_listener(&self, id: &str, transport: &str, addr: &str, extra: &str) -> String {
        format!(
            "[node]\nid = \"{id}\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
             [[link]]\nname = \"fed\"\ntransport = \"{transport}\"\nmode = \"listen\"\naddress = \"{addr}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
            self.path(&self.ca),
            self.path(&self.server_cert),
            self.path(&self.server_key)
        )
    }

    /// `cert` followed by this CA, in one file: the chain a federate presents.
    pub fn with_chain(&self, cert: &Path) -> PathBuf {
        let out = cert.with_extension("chain.pem");
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(&self.ca).unwrap());
        std::fs::write(&out, pem).unwrap();
        out
    }

    pub fn path(&self, p: &Path) -> String {
        p.display().to_string()
    }
}
