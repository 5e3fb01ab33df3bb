//! The services' fuzz-target bodies (`fuzz/fuzz_targets/`), run on stable over their corpus
//! and random inputs.

#[test]
fn fuzz_targets_run_over_their_corpus_and_random_inputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let inputs = zs_services::fuzzing::inputs(&root, "accounts_request", 20_000);
    assert!(inputs.len() > 20_000, "the corpus is read");
    for input in inputs {
        zs_services::fuzzing::accounts_request(&input);
    }
}
