//! Every configuration in examples/ passes `takgate config check` (the binary, as an operator
//! runs it), with the files it names made real in a scratch directory: certificates and keys
//! from `takgate certs`' own code, a CRL, the hub's policy (examples/hub-policy.json, which
//! `takgate hub check` also accepts). A recipe that stops validating fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> Vec<PathBuf> {
    let mut out = vec![];
    for dir in ["examples", "examples/bench"] {
        for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The quoted absolute paths under /etc/takgate or /var/lib/takgate in a config.
fn paths(text: &str) -> Vec<String> {
    let mut out = vec![];
    for part in text.split('"').skip(1).step_by(2) {
        if part.starts_with("/etc/takgate/") || part.starts_with("/var/lib/takgate/") {
            out.push(part.to_owned());
        }
    }
    out
}

fn check(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_takgate")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "takgate {args:?}: {text}");
    text
}

#[test]
fn every_example_config_passes_config_check() {
    let root = std::env::temp_dir().join(format!("takgate-examples-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ca = takgate::certs::Authority::new(&root.join("pki"), "examples CA").unwrap();
    let (cert, key) = ca.leaf("examples", &["localhost"]).unwrap();
    let crl = ca.write_crl(30).unwrap();
    let both = format!("{}{}", std::fs::read_to_string(&cert).unwrap(), std::fs::read_to_string(&key).unwrap());
    let all = examples();
    assert!(all.len() >= 9, "the recipes are there: {all:?}");
    for ex in all {
        let text = std::fs::read_to_string(&ex).unwrap();
        let mut local = text.clone();
        for p in paths(&text) {
            let here = root.join("files").join(p.trim_start_matches('/'));
            std::fs::create_dir_all(here.parent().unwrap()).unwrap();
            let name = here.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".db") {
                // A store path: only its directory needs to exist.
            } else if name.ends_with(".key") {
                std::fs::copy(&key, &here).unwrap();
            } else if name.starts_with("crl") {
                std::fs::copy(&crl, &here).unwrap();
            } else if name.ends_with(".json") {
                std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hub-policy.json"), &here).unwrap();
            } else if name.contains("ca") || name.contains("truststore") {
                std::fs::copy(&ca.ca, &here).unwrap();
            } else if name.contains("admin") {
                std::fs::write(&here, &both).unwrap();
            } else {
                std::fs::copy(&cert, &here).unwrap();
            }
            local = local.replace(&format!("\"{p}\""), &format!("\"{}\"", here.display()));
        }
        let copy = root.join(ex.file_name().unwrap());
        std::fs::write(&copy, local).unwrap();
        let said = check(&["config", "check", &copy.display().to_string()]);
        assert!(said.contains("ok"), "{}: {said}", ex.display());
    }
    check(&["hub", "check", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hub-policy.json")]);
    let _ = std::fs::remove_dir_all(&root);
}
