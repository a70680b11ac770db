//! The console process: writes what it is sent through the kernel console.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    let info = start.server("console");
    let Some(slot) = info.serves("console") else {
        log::error!("no \"console\" endpoint was granted");
        return 1;
    };
    let server = console::Console::new(alloc::boxed::Box::new(alcove_rt::print));
    alcove_rt::serve_forever(slot, server)
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("console runs only on Alcove (build it for x86_64-unknown-none)");
}
