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
