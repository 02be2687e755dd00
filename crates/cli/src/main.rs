//! The `ec1` binary: argument parsing and dispatch live in the `ec1_cli` library.

fn main() {
    std::process::exit(ec1_cli::main());
}
