//! init, the root task. The kernel starts it with the boot archive mapped and
//! capabilities to everything (`abi::INIT_SLOT_*`); init reads the system
//! manifest and, for every server in it, builds a process: its ELF segments,
//! stack, IPC buffer and start-up information, and exactly the capabilities
//! the manifest grants (endpoints it serves and may call, IRQ lines, I/O-port
//! ranges). Then it watches them and restarts one that exits or faults, as
//! many times as its restart policy allows, as SMF would.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

#[cfg(target_os = "none")]
mod init;
#[allow(dead_code)]
mod instances;
#[allow(dead_code)]
mod pci;
#[allow(dead_code)]
mod svcadm;
#[cfg(target_os = "none")]
mod worker;

#[cfg(target_os = "none")]
alcove_rt::entry!(init::main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("init runs only on Alcove (build it for x86_64-unknown-none)");
}
