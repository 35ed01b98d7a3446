//! The Python reference peers (pytak, takproto, taky) from the virtualenv the test command
//! makes. A test that needs them fails with a clear message when they are missing.

use std::path::PathBuf;

/// The virtualenv's python: $TAKGATE_PYTHON, or .venv/bin/python in the checkout.
pub fn python() -> PathBuf {
    let p = std::env::var_os("TAKGATE_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        p.exists(),
        "Python peers not installed: {} is missing. Run the test command from the README (scripts/test), which creates the virtualenv with takproto, pytak and taky.",
        p.display()
    );
    p
}

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(name)
}

/// What one run of tests/py/peer.py printed.
#[derive(Debug, Default)]
pub struct PeerRun {
    /// Every received event (JSON objects with uid, type, callsign, remarks, format).
    pub events: Vec<serde_json::Value>,
    pub done: Option<serde_json::Value>,
    pub stderr: String,
    pub status: Option<i32>,
}

impl PeerRun {
    /// The `seq=K` numbers of events received from `uid`.
    pub fn seqs_from(&self, uid: &str) -> Vec<u32> {
        self.events
            .iter()
            .filter(|e| e["uid"] == uid)
            .filter_map(|e| e["remarks"].as_str()?.strip_prefix("seq=")?.parse().ok())
            .collect()
    }
}

/// Runs tests/py/peer.py (a pytak client) with `args`; kills it after `limit_secs`.
pub async fn peer(args: Vec<String>, limit_secs: f64) -> PeerRun {
    run_script("peer.py", args, limit_secs).await
}

/// Runs a script of tests/py that prints one JSON object per line and `{"done": …}` last
/// (peer.py, quic_client.py); kills it after `limit_secs`.
pub async fn run_script(name: &str, args: Vec<String>, limit_secs: f64) -> PeerRun {
    let child = tokio::process::Command::new(python())
        .arg(script(name))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let out = match tokio::time::timeout(std::time::Duration::from_secs_f64(limit_secs), child.wait_with_output()).await {
        Ok(o) => o.unwrap_or_else(|e| panic!("{name} output: {e}")),
        Err(_) => panic!("{name} {args:?} did not finish within {limit_secs} s"),
    };
    let mut run = PeerRun { stderr: String::from_utf8_lossy(&out.stderr).into_owned(), status: out.status.code(), ..Default::default() };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v.get("done").is_some() {
            run.done = Some(v);
        } else {
            run.events.push(v);
        }
    }
    run
}

pub fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}
