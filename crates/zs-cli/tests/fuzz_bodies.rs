//! The CLI's fuzz-target bodies (`fuzz/fuzz_targets/`), run on stable over their corpus and
//! random inputs.

#[test]
fn fuzz_targets_run_over_their_corpus_and_random_inputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let inputs = zs::wire::fuzzing::inputs(&root, "config_file", 5_000);
    assert!(inputs.len() > 5_000, "the corpus is read");
    for input in inputs {
        zs_cli::fuzzing::config_file(&input);
    }
}

#[test]
fn the_corpus_holds_a_file_that_checks_and_one_with_every_problem_kind() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config_file");
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    assert!(zs_cli::fuzzing::checks(&read("example.toml")));
    assert!(zs_cli::fuzzing::checks(&read("small.toml")));
    assert!(!zs_cli::fuzzing::checks(&read("problems.toml")));
    assert!(!zs_cli::fuzzing::checks(&read("conflict.toml")));
}
