//! How TAK's Federation Hub names who connects (../shared/specs/tak-fedhub.md §2): CA group
//! ids from the CA certificates a federate itself presents in its TLS chain (index ≥ 1), and
//! federate ids from the v2 `Identity`. Both must match TAK's byte for byte: a policy drawn
//! in TAK's hub UI names them.

use x509_parser::prelude::*;

/// SHA-256 of `der`, lower-case hex without separators (TAK's `FederationUtils.getBytesHash`).
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// The CA group id of a CA certificate: its issuer DN in RFC 2253 form (as Java's
/// `X500Principal.getName()` prints it), `-`, SHA-256 of the certificate.
pub fn ca_group_id(der: &[u8]) -> Result<String, String> {
    let (_, c) = X509Certificate::from_der(der).map_err(|e| format!("not a certificate: {e}"))?;
    Ok(format!("{}-{}", rfc2253(c.issuer()), sha256_hex(der)))
}

/// The CA group ids of the CA certificates a peer presented after its leaf.
pub fn ca_groups(issuers: &[Vec<u8>]) -> Vec<String> {
    issuers.iter().filter_map(|c| ca_group_id(c).ok()).collect()
}

/// The federate id of a v2 federate: `Identity.name`-`leaf fingerprint` (lower-case hex)-
/// `serverId` (TAK's `GuardedStreamHolder`; an empty serverId makes a new id per session
/// there, here the session serial).
pub fn federate_id(name: &str, fingerprint: &str, server_id: &str, session: u64) -> String {
    let sid = if server_id.is_empty() { session.to_string() } else { server_id.to_owned() };
    format!("{name}-{fingerprint}-{sid}")
}

fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, ch) in v.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';') || (i == 0 && (ch == '#' || ch == ' ')) || (i + 1 == n && ch == ' ');
        if special {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A distinguished name as RFC 2253 writes it: the most specific RDN first, `,` between
/// RDNs, `+` inside one, known keywords, other attributes as `OID=#hex`.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    let oid = a.attr_type().to_id_string();
                    match (keyword(&oid), a.as_str()) {
                        (Some(k), Ok(v)) => format!("{k}={}", escape(v)),
                        _ => {
                            let v = a.attr_value();
                            let mut der = vec![v.tag().0 as u8];
                            let data = v.data;
                            if data.len() < 128 {
                                der.push(data.len() as u8);
                            } else {
                                let len = (data.len() as u32).to_be_bytes();
                                let skip = len.iter().take_while(|b| **b == 0).count();
                                der.push(0x80 | (4 - skip) as u8);
                                der.extend_from_slice(&len[skip..]);
                            }
                            der.extend_from_slice(data);
                            format!("{oid}=#{}", hex::encode(der))
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_group_ids_as_tak_writes_them() {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CountryName, "US");
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "Org, A");
        p.distinguished_name.push(rcgen::DnType::CommonName, "CA-A");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = p.self_signed(&key).unwrap();
        let id = ca_group_id(ca.der()).unwrap();
        // Self-signed: the issuer is the subject, most specific first, commas escaped.
        assert_eq!(id, format!("CN=CA-A,O=Org\\, A,C=US-{}", sha256_hex(ca.der())));
        assert_eq!(sha256_hex(b"").len(), 64);
        assert_eq!(ca_groups(&[vec![1, 2], ca.der().to_vec()]), [id], "what does not parse is no group");
        assert!(federate_id("tak-a", "ab12", "", 7).ends_with("-7"));
    }
}
