//! Access to the shared corpus of real CoT messages (../shared/corpus beside the checkout,
//! or $TAKGATE_CORPUS).

use std::path::PathBuf;

pub fn corpus_dir() -> PathBuf {
    let dir = std::env::var_os("TAKGATE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    assert!(dir.join("xml").is_dir(), "corpus not found at {} (set TAKGATE_CORPUS)", dir.display());
    dir
}

/// (file name, bytes) of every XML corpus message, sorted by name.
pub fn xml_files() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(corpus_dir().join("xml"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    assert!(v.len() >= 70, "corpus looks incomplete: {} files", v.len());
    v
}

/// (file name, bytes) of every protobuf vector (hex files decoded).
pub fn proto_files() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(corpus_dir().join("proto"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .map(|p| {
            let hex = std::fs::read_to_string(&p).unwrap();
            let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
            let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    v.sort();
    v
}
