//! The vmm-server process. Started with a VM description among its boot
//! files (the manifest's `files`, see `runtime`), it is that VM's monitor
//! and ends with it; started without one it is the idle instance that
//! answers `status` for zone-server.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod runtime;

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    let main_ns = alcove_rt::clock_ns();
    let info = start.server("vmm-server");
    match runtime::VmSpec::from_start(&info) {
        Ok(Some(spec)) => {
            let mut stages = runtime::Stages::new(&info.name, main_ns);
            stages.mark("parsed");
            return runtime::run(&spec, stages);
        }
        Ok(None) => {}
        Err(e) => {
            log::error!("{e}");
            let ending = runtime::Ending::Error(e);
            runtime::announce_end(&info.name, &ending);
            if info.args.iter().any(|a| a == "exit-machine") {
                let _ = libipc::sys::machine_exit(alcove_rt::start::SLOT_CONSOLE, ending.machine_status());
            }
            return 2;
        }
    }
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
