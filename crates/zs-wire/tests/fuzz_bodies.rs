//! Runs the fuzz target bodies over the checked-in corpus and over random inputs, so the
//! decoders' no-panic and round-trip properties are exercised on stable in every test run.

use rand::{Rng, RngCore, SeedableRng};
use zs_wire::fuzzing;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display())) {
        out.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(!out.is_empty(), "corpus {} is empty", dir.display());
    out
}

/// Random inputs plus mutations (bit flips, truncations) of every corpus entry.
fn inputs(target: &str, n: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5A5A);
    let seeds = corpus(target);
    let mut out = seeds.clone();
    for i in 0..n {
        let mut v = if i % 2 == 0 {
            let mut v = vec![0u8; rng.random_range(0..256)];
            rng.fill_bytes(&mut v);
            v
        } else {
            seeds[i % seeds.len()].clone()
        };
        if !v.is_empty() {
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..v.len());
                v[at] ^= 1 << rng.random_range(0..8);
            }
            if rng.random_bool(0.3) {
                v.truncate(rng.random_range(0..v.len()));
            }
        }
        out.push(v);
    }
    out
}

#[test]
fn frame_stream_target() {
    for input in inputs("frame", 20_000) {
        fuzzing::frame_stream(&input);
    }
}

#[test]
fn dataframe_target() {
    for input in inputs("dataframe", 20_000) {
        fuzzing::dataframe(&input);
    }
}

#[test]
fn bulk_and_compressed_target() {
    for input in inputs("bulk", 20_000) {
        fuzzing::bulk_and_compressed(&input);
    }
}
