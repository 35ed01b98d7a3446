//! The dashboard end to end in headless Chromium (tests/browser/dashboard.mjs, playwright-core
//! with Debian's chromium): live links, a federation server added from the page connects to a
//! real federate, is tested, disabled and enabled again. The screenshot is kept as
//! target/dashboard.png.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::certs::Pki;
use common::{gateway, pli, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_adds_tests_and_disables_a_federation_server() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser/dashboard.mjs");
    assert!(root.join("tests/browser/node_modules/playwright-core").exists(), "playwright-core is missing: run the README's test command (scripts/test), which installs it into tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "{chromium} is missing: scripts/test installs Debian's chromium");
    let mut pki = Pki::new("dashboard");
    let b = gateway(&pki.fed_listener("node-b", "federation-v2", "127.0.0.1:0", "")).await;
    let token = "dashboard-token-0123456789";
    let a = gateway(&format!("[node]\nid = \"node-a\"\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{token}\"\n[[link]]\nname = \"clients\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n")).await;
    let mut x = Client::tcp(a.local_addr("clients").unwrap()).await;
    for k in 1..=3 {
        x.send(&pli("ANDROID-X", "XRAY", k)).await;
    }
    let (cert, key) = pki.leaf("node-a", false);
    let shot = root.join("target/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://{}/", a.admin_addr().unwrap());
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([url.as_str(), token, &shot.display().to_string(), "east", &b.local_addr("fed").unwrap().port().to_string(), &pki.path(&pki.ca), &cert.display().to_string(), &key.display().to_string()])
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.expect("the browser run finishes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dashboard.mjs: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(r["steps"], serde_json::json!(["links", "added and connected", "tested", "disabled", "enabled", "edit form"]), "{r}");
    assert_eq!(r["links"], serde_json::json!(["clients"]), "{r}");
    assert_eq!(r["edit_filter"], "ops-*, training");
    assert_eq!(r["edit_key_shown"], false, "the page never shows a key");
    assert!(r["queue_rows"].as_u64().unwrap() >= 1);
    // What the page did happened: the federate is connected to B, saved with its filter.
    assert!(common::eventually(5.0, || a.connection("east").is_some_and(|c| c.state == takgate::link::LinkState::Connected)).await);
    let s = a.store().server_by_name("east").unwrap().unwrap();
    assert_eq!((s.enabled, s.mission_filter.clone()), (true, Some(vec!["ops-*".to_string(), "training".to_string()])));
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "screenshot saved");
    a.shutdown().await;
    b.shutdown().await;
}
