//! The `takgate` binary itself: `run` on a config file relays between clients and stops
//! cleanly on SIGTERM; `config check` names a bad key; `cot convert` converts.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{pli, seq_of, Client};

const BIN: &str = env!("CARGO_BIN_EXE_takgate");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_relays_and_stops_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("takgate-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gw.toml");
    std::fs::write(&cfg, format!("[node]\nid = \"bin\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:{port}\"\n")).unwrap();
    let mut child = Command::new(BIN).args(["run", "--config"]).arg(&cfg).stderr(Stdio::piped()).spawn().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(common::listening(addr, 5.0).await, "takgate run listens");
    let mut a = Client::tcp(addr).await;
    let mut b = Client::tcp(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.send(&pli("BIN-A", "A", 7)).await;
    assert_eq!(b.recv(Duration::from_secs(2)).await.and_then(|e| seq_of(&e)), Some(7));
    let t = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "takgate did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit: {status:?}");
}

#[test]
fn config_check_names_the_bad_key_and_cot_convert_converts() {
    let dir = std::env::temp_dir().join(format!("takgate-bin2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[router]\nqueue_depht = 3\n").unwrap();
    let out = Command::new(BIN).args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue_depht"));
    let out = Command::new(BIN).args(["config", "default"]).output().unwrap();
    let default = dir.join("default.toml");
    std::fs::write(&default, &out.stdout).unwrap();
    assert!(Command::new(BIN).args(["config", "check"]).arg(&default).status().unwrap().success());
    let mut child = Command::new(BIN).args(["cot", "convert", "--to", "json"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(takgate::cot::sample::ATAK_PLI.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["uid"], "ANDROID-53af0912586418dc");
    assert_eq!(v["detail"]["contact"]["callsign"], "dasuberdog");
}
