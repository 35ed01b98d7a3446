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
