//! Runs the `secure` fuzz target's body over its corpus and derived inputs on stable.

use std::path::Path;

#[test]
fn secure_channel_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for input in zs::wire::fuzzing::inputs(&root, "secure", 3_000) {
        zs::secure::fuzzing::secure_channel(&input);
    }
}
