//! `zs`: serve, call and benchmark zserver.

fn main() -> std::process::ExitCode {
    zs_cli::main()
}
