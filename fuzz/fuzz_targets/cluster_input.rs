#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| zs_services::fuzzing::cluster_input(data));
