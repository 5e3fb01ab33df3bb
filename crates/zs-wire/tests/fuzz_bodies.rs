//! Runs the fuzz target bodies over the checked-in corpus and over random inputs, so the
//! decoders' no-panic and round-trip properties are exercised on stable in every test run.

use zs_wire::fuzzing;

fn inputs(target: &str, n: usize) -> Vec<Vec<u8>> {
    fuzzing::inputs(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."), target, n)
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
fn session_target() {
    for input in inputs("session", 20_000) {
        fuzzing::session(&input);
    }
}

#[test]
fn bulk_and_compressed_target() {
    for input in inputs("bulk", 20_000) {
        fuzzing::bulk_and_compressed(&input);
    }
}

#[test]
fn mux_target() {
    for input in inputs("mux", 20_000) {
        fuzzing::mux(&input);
    }
}

#[test]
fn websocket_target() {
    for input in inputs("websocket", 20_000) {
        fuzzing::websocket(&input);
    }
}
