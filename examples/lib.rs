//! Examples of zserver, one capability per program: `cargo run -p zs-examples --example NAME`.
