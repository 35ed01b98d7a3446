//! `takgate certs`: a CA, server, client (with PKCS#12) and federation certificates from the
//! binary, used for real: pytak connects over mutual TLS with the PKCS#12 client
//! certificate, and two takgates federate over v2 with the federation certificates.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::py::{args, peer};
use common::{gateway, pli, seq_of, Client};

fn certs(a: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_takgate")).arg("certs").args(a).output().unwrap();
    assert!(out.status.success(), "takgate certs {a:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_takgate_certs_work_for_tls_clients_and_federation() {
    let dir = std::env::temp_dir().join(format!("takgate-certs-cli-{}-{}", std::process::id(), fastrand::u64(..)));
    let d = dir.display().to_string();
    certs(&["ca", "--dir", &d, "--cn", "Field CA"]);
    let again = Command::new(env!("CARGO_BIN_EXE_takgate")).args(["certs", "ca", "--dir", &d]).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("refusing to replace"), "a CA is never overwritten");
    certs(&["server", "--dir", &d, "--cn", "localhost", "--san", "localhost,127.0.0.1"]);
    certs(&["client", "--dir", &d, "--cn", "alice"]);
    certs(&["federation", "--dir", &d, "--cn", "fed-a", "--san", "localhost,127.0.0.1"]);
    certs(&["federation", "--dir", &d, "--cn", "fed-b", "--san", "localhost,127.0.0.1"]);
    let nosan = Command::new(env!("CARGO_BIN_EXE_takgate")).args(["certs", "server", "--dir", &d, "--cn", "x"]).output().unwrap();
    assert!(!nosan.status.success(), "a server certificate without SAN is refused");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for k in ["ca.key", "alice.key", "alice.p12", "fed-a.key"] {
            assert_eq!(std::fs::metadata(dir.join(k)).unwrap().permissions().mode() & 0o777, 0o600, "{k}");
        }
    }
    let p = |f: &str| dir.join(f).display().to_string();
    // Key usages as TAK peers check them.
    for (f, eku) in [("localhost.pem", "server"), ("alice.pem", "client"), ("fed-a.pem", "both")] {
        let der = takgate::link::tls::load_certs(Path::new(&p(f))).unwrap();
        assert_eq!(der.len(), 2, "{f}: leaf and CA");
        let (_, x) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
        let e = x.extended_key_usage().unwrap().unwrap().value;
        assert_eq!((e.server_auth, e.client_auth), (eku != "client", eku != "server"), "{f}");
        assert!(!x.is_ca());
    }
    // A TLS listener with the server certificate; pytak with the PKCS#12 client certificate.
    let gw = gateway(&format!(
        "[node]\nid = \"node-a\"\n[[link]]\nname = \"tls\"\ntransport = \"tls\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nrequire_client_cert = true\n\
         [[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
        p("localhost.pem"),
        p("localhost.key"),
        p("ca.pem"),
        p("fed-a.pem"),
        p("fed-a.key"),
        p("ca.pem")
    ))
    .await;
    let url = format!("tls://{}", gw.local_addr("tls").unwrap());
    let mut local = Client::tcp(gw.local_addr("c").unwrap()).await;
    let run = peer(args(&format!("--url {url} --cert {} --password atakatak --ca {} --uid ALICE --callsign ALICE --send 2 --interval 0.05 --listen 0.5", p("alice.p12"), p("ca.pem"))), 30.0).await;
    assert_eq!(run.done.as_ref().map(|d| d["sent"].clone()), Some(serde_json::json!(2)), "pytak with alice.p12: {}", run.stderr);
    let got: Vec<_> = local.drain(Duration::from_millis(500)).await.iter().filter(|e| e.uid == "ALICE").filter_map(seq_of).collect();
    assert_eq!(got, [1, 2]);
    // A second node federates with the other federation certificate.
    let b = gateway(&format!(
        "[node]\nid = \"node-b\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"connect\"\naddress = \"{}\"\nserver_name = \"localhost\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
        gw.local_addr("fed").unwrap(),
        p("fed-b.pem"),
        p("fed-b.key"),
        p("ca.pem")
    ))
    .await;
    let mut bravo = Client::tcp(b.local_addr("c").unwrap()).await;
    let ok = common::eventually(10.0, || b.connection("fed").is_some_and(|c| c.state == takgate::link::LinkState::Connected)).await;
    assert!(ok);
    tokio::time::sleep(Duration::from_millis(800)).await;
    local.send(&pli("ANDROID-A", "ALPHA", 7)).await;
    let got: Vec<_> = bravo.drain(Duration::from_millis(1500)).await.iter().filter(|e| e.uid == "ANDROID-A").filter_map(seq_of).collect();
    assert_eq!(got, [7], "federated with takgate certs");
    b.shutdown().await;
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `takgate certs package`: the zip ATAK imports. Its layout and preference keys are read
/// back with Python's zipfile and ElementTree (the manifest lists exactly what the zip
/// holds; `cot_streams` has the TLS and QUIC connections with per-stream truststore and
/// client certificate, as ATAK reads them), the truststore opens with `cryptography` as a
/// PKCS#12 holding the CA alone (no key), and pytak connects to takgate with the package's
/// client .p12 and that truststore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_package_is_what_atak_imports_and_pytak_connects_with_it() {
    let dir = std::env::temp_dir().join(format!("takgate-package-{}-{}", std::process::id(), fastrand::u64(..)));
    let d = dir.display().to_string();
    certs(&["ca", "--dir", &d, "--cn", "Field CA"]);
    certs(&["server", "--dir", &d, "--cn", "localhost", "--san", "localhost,127.0.0.1"]);
    let p = |f: &str| dir.join(f).display().to_string();
    let gw = gateway(&format!(
        "[node]\nid = \"pkg\"\n[[link]]\nname = \"tls\"\ntransport = \"tls\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nrequire_client_cert = true\n\
         [[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n",
        p("localhost.pem"),
        p("localhost.key"),
        p("ca.pem")
    ))
    .await;
    let port = gw.local_addr("tls").unwrap().port();
    certs(&["package", "--dir", &d, "--cn", "bob", "--server", "127.0.0.1", "--port", &port.to_string(), "--quic", "8090", "--out", &p("bob.zip")]);
    let out = dir.join("unpacked");
    let script = r#"
import json, sys, zipfile, xml.etree.ElementTree as ET
from cryptography.hazmat.primitives.serialization import pkcs12, Encoding
zpath, out = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(zpath)
names = z.namelist()
man = ET.fromstring(z.read("MANIFEST/manifest.xml"))
listed = [c.get("zipEntry") for c in man.iter("Content")]
params = {p.get("name"): p.get("value") for p in man.iter("Parameter")}
prefs = {}
pref_file = [n for n in names if n.endswith(".pref")][0]
for pref in ET.fromstring(z.read(pref_file)).iter("preference"):
    prefs[pref.get("name")] = {e.get("key"): [e.get("class"), e.text] for e in pref.iter("entry")}
z.extractall(out)
trust = pkcs12.load_pkcs12(z.read("certs/truststore.p12"), b"atakatak")
client = pkcs12.load_pkcs12(z.read("certs/bob.p12"), b"atakatak")
open(out + "/ca.pem", "wb").write(b"".join(c.certificate.public_bytes(Encoding.PEM) for c in trust.additional_certs))
print(json.dumps({"names": names, "listed": listed, "params": params, "prefs": prefs,
    "trust_key": trust.key is not None, "trust_certs": len(trust.additional_certs),
    "client_key": client.key is not None, "client_cn": client.cert.certificate.subject.rfc4514_string()}))
"#;
    let py = Command::new(common::py::python()).args(["-c", script, &p("bob.zip"), &out.display().to_string()]).output().unwrap();
    assert!(py.status.success(), "python could not read the package: {}", String::from_utf8_lossy(&py.stderr));
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let mut names: Vec<String> = serde_json::from_value(v["names"].clone()).unwrap();
    names.sort();
    assert_eq!(names, ["MANIFEST/manifest.xml", "certs/bob.p12", "certs/server.pref", "certs/truststore.p12"]);
    let mut listed: Vec<String> = serde_json::from_value(v["listed"].clone()).unwrap();
    listed.sort();
    assert_eq!(listed, names[1..], "the manifest lists every entry but itself");
    assert!(v["params"]["uid"].as_str().is_some_and(|u| !u.is_empty()) && v["params"]["name"].is_string());
    let streams = &v["prefs"]["cot_streams"];
    let s = |k: &str| streams[k][1].as_str().unwrap_or_default().to_owned();
    assert_eq!(streams["count"][0], "class java.lang.Integer");
    assert_eq!((s("count"), s("connectString0"), s("enabled0")), ("2".into(), format!("127.0.0.1:{port}:ssl"), "true".into()));
    assert_eq!(s("connectString1"), "127.0.0.1:8090:quic");
    assert_eq!((s("caLocation0"), s("certificateLocation0"), s("caPassword0"), s("clientPassword0")), ("cert/truststore.p12".into(), "cert/bob.p12".into(), "atakatak".into(), "atakatak".into()));
    let app = &v["prefs"]["com.atakmap.app_preferences"];
    assert_eq!(app["caLocation"][1], "cert/truststore.p12");
    assert_eq!(app["certificateLocation"][1], "cert/bob.p12");
    assert_eq!((v["trust_key"].as_bool(), v["trust_certs"].as_u64()), (Some(false), Some(1)), "the truststore holds the CA alone, no key");
    assert_eq!((v["client_key"].as_bool(), v["client_cn"].as_str()), (Some(true), Some("CN=bob")));
    // pytak, with what the package holds.
    let mut local = Client::tcp(gw.local_addr("c").unwrap()).await;
    let url = format!("tls://127.0.0.1:{port}");
    let cert = out.join("certs/bob.p12").display().to_string();
    let ca = out.join("ca.pem").display().to_string();
    let run = peer(args(&format!("--url {url} --cert {cert} --password atakatak --ca {ca} --uid BOB --callsign BOB --send 2 --interval 0.05 --listen 0.5")), 30.0).await;
    assert_eq!(run.done.as_ref().map(|d| d["sent"].clone()), Some(serde_json::json!(2)), "pytak with the package's certificates: {}", run.stderr);
    let got: Vec<_> = local.drain(Duration::from_millis(500)).await.iter().filter(|e| e.uid == "BOB").filter_map(seq_of).collect();
    assert_eq!(got, [1, 2]);
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// POST to the admin API; (status, content type, body).
async fn post(addr: std::net::SocketAddr, path: &str, token: Option<&str>, body: &serde_json::Value) -> (u16, String, Vec<u8>) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().method("POST").uri(path).header("host", addr.to_string()).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send.send_request(req.body(http_body_util::Full::new(bytes::Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, ct, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

/// The admin API makes the same package for a device (POST /api/certs/package), with the
/// CA of `[admin] certs_dir`: the token is required, the certificate is issued once and
/// reused, the CA's key is never in it, and a name that could reach other files is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_makes_connection_packages_without_the_ca_key() {
    let dir = std::env::temp_dir().join(format!("takgate-apipkg-{}-{}", std::process::id(), fastrand::u64(..)));
    let d = dir.display().to_string();
    certs(&["ca", "--dir", &d, "--cn", "Field CA"]);
    let gw = gateway(&format!("[node]\nid = \"apipkg\"\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"s3cret-s3cret-s3cret\"\ncerts_dir = \"{d}\"\n")).await;
    let addr = gw.admin_addr().unwrap();
    let req = serde_json::json!({"cn": "carol", "server": "gw.example", "port": 8089, "quic_port": 8090});
    assert_eq!(post(addr, "/api/certs/package", None, &req).await.0, 401, "the token is required");
    let (status, ct, zip) = post(addr, "/api/certs/package", Some("s3cret-s3cret-s3cret"), &req).await;
    assert_eq!((status, ct.as_str()), (200, "application/zip"), "{}", String::from_utf8_lossy(&zip));
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip.clone())).unwrap();
    let mut names: Vec<String> = z.file_names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["MANIFEST/manifest.xml", "certs/carol.p12", "certs/server.pref", "certs/truststore.p12"]);
    let mut pref = String::new();
    std::io::Read::read_to_string(&mut z.by_name("certs/server.pref").unwrap(), &mut pref).unwrap();
    assert!(pref.contains("gw.example:8089:ssl") && pref.contains("gw.example:8090:quic"), "{pref}");
    // the only key in the package is the client's own, in its .p12; the truststore has none
    let mut p12 = |name: &str| {
        let mut b = vec![];
        std::io::Read::read_to_end(&mut z.by_name(name).unwrap(), &mut b).unwrap();
        p12_keystore::KeyStore::from_pkcs12(&b, "atakatak", p12_keystore::Pkcs12ImportPolicy::Relaxed).unwrap()
    };
    assert!(p12("certs/truststore.p12").private_key_chain().is_none(), "the CA's key is not in the package");
    let client = p12("certs/carol.p12");
    let (_, chain) = client.private_key_chain().expect("the client's key and chain");
    let (_, leaf) = x509_parser::parse_x509_certificate(chain.certs()[0].as_der()).unwrap();
    assert_eq!(leaf.subject().iter_common_name().next().and_then(|c| c.as_str().ok()), Some("carol"));
    assert!(dir.join("carol.pem").exists(), "the client certificate is kept in certs_dir");
    let first = std::fs::read(dir.join("carol.pem")).unwrap();
    assert_eq!(post(addr, "/api/certs/package", Some("s3cret-s3cret-s3cret"), &req).await.0, 200);
    assert_eq!(std::fs::read(dir.join("carol.pem")).unwrap(), first, "and reused, not issued again");
    for bad in ["../ca", "ca", "a b"] {
        let (s, _, body) = post(addr, "/api/certs/package", Some("s3cret-s3cret-s3cret"), &serde_json::json!({"cn": bad, "server": "gw", "port": 8089})).await;
        assert_eq!(s, 400, "{bad:?}: {}", String::from_utf8_lossy(&body));
    }
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
