//! The services' fuzz-target bodies (`fuzz/fuzz_targets/`), run on stable over their corpus
//! and random inputs.

#[test]
fn fuzz_targets_run_over_their_corpus_and_random_inputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    type Body = fn(&[u8]);
    let targets: [(&str, Body); 6] = [
        ("accounts_request", zs_services::fuzzing::accounts_request),
        ("db_input", zs_services::fuzzing::db_input),
        ("cluster_input", zs_services::fuzzing::cluster_input),
        ("files_request", zs_services::fuzzing::files_request),
        ("push_request", zs_services::fuzzing::push_request),
        ("xnat_input", zs_services::fuzzing::xnat_input),
    ];
    for (target, body) in targets {
        let inputs = zs_services::fuzzing::inputs(&root, target, 20_000);
        assert!(inputs.len() > 20_000, "the corpus of {target} is read");
        for input in inputs {
            body(&input);
        }
    }
}
