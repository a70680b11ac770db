//! The host's `imgadm`: SmartOS's verbs, sent to Alcove's HTTP API
//! (`ALCOVE_URL`, `ALCOVE_TOKEN`); see `alcove_api::cli`.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(alcove_api::cli::main("imgadm", &args));
}
