//! The fuzz smoke run of the test command: every fuzz target (src/fuzz.rs, the same bodies
//! cargo-fuzz runs) over its whole committed corpus, then over mutations of it: bit flips,
//! byte insertions and deletions, truncation, splices of two inputs, and tokens that matter
//! to the decoders (`</event>`, 0xbf, varints). Deterministic (fixed seed), a few seconds;
//! the long runs are `scripts/fuzz` (RELIABILITY.md).

use std::path::PathBuf;

const MUTATIONS_PER_TARGET: usize = 30_000;
const TOKENS: &[&[u8]] = &[b"</event>", b"<event ", b"<detail>", b"<point ", b"\xbf", b"\xbf\x01\xbf", b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80", b"<![CDATA[", b"&amp;", b"&#", b"]]>", b"<!DOCTYPE", b"\"", b"'", b"\x00", b"\n"];

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    out.sort();
    out
}

fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.usize(..seeds.len())].clone();
    for _ in 0..rng.usize(1..5) {
        match rng.u8(..7) {
            0 if !d.is_empty() => {
                let i = rng.usize(..d.len());
                d[i] ^= 1 << rng.u8(..8);
            }
            1 => {
                let i = rng.usize(..=d.len());
                d.insert(i, rng.u8(..));
            }
            2 if !d.is_empty() => {
                let i = rng.usize(..d.len());
                let n = rng.usize(1..=(d.len() - i).min(16));
                d.drain(i..i + n);
            }
            3 => d.truncate(rng.usize(..=d.len())),
            4 => {
                let other = &seeds[rng.usize(..seeds.len())];
                let at = rng.usize(..=d.len());
                let from = rng.usize(..=other.len());
                d.splice(at..at, other[from..].iter().copied());
            }
            5 => {
                let t = TOKENS[rng.usize(..TOKENS.len())];
                let i = rng.usize(..=d.len());
                d.splice(i..i, t.iter().copied());
            }
            _ if !d.is_empty() => {
                let i = rng.usize(..d.len());
                let n = rng.usize(1..=(d.len() - i).min(64));
                let chunk = d[i..i + n].to_vec();
                d.splice(i..i, chunk);
            }
            _ => {}
        }
    }
    d
}

/// Runs one input; a panic names the target and keeps the input for `cargo fuzz run`.
fn run(name: &str, body: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| body(input)).is_err() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/fuzz-smoke-crash-{name}"));
        let _ = std::fs::write(&path, input);
        panic!("fuzz target {name} failed on an input of {} bytes, kept in {} (reproduce: cargo fuzz run {name} {})", input.len(), path.display(), path.display());
    }
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_mutations_of_it() {
    for (name, body) in takgate::fuzz::TARGETS {
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "{name}: empty corpus");
        for s in &seeds {
            run(name, body, s);
        }
        let mut rng = fastrand::Rng::with_seed(0x7a6_9a7e);
        for _ in 0..MUTATIONS_PER_TARGET {
            let input = mutate(&mut rng, &seeds);
            run(name, body, &input);
        }
        eprintln!("{name}: {} corpus inputs and {MUTATIONS_PER_TARGET} mutations", seeds.len());
    }
}
