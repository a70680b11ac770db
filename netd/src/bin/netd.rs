//! The netd process: takes its start-up information from init and serves
//! its endpoint.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    let info = start.server("netd");
    let Some(slot) = info.serves("netd") else {
        log::error!("no \"netd\" endpoint was granted");
        return 1;
    };
    let server = netd::Netd::new();
    alcove_rt::serve_forever(slot, server)
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("netd runs only on Alcove (build it for x86_64-unknown-none)");
}
