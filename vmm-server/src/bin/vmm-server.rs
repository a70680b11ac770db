//! The vmm-server process: takes its start-up information from init and serves
//! its endpoint.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    let info = start.server("vmm-server");
    let Some(slot) = info.serves("vmm-server") else {
        log::error!("no \"vmm-server\" endpoint was granted");
        return 1;
    };
    let server = vmm_server::VmmServer::new();
    alcove_rt::serve_forever(slot, server)
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("vmm-server runs only on Alcove (build it for x86_64-unknown-none)");
}
