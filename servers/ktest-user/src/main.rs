//! ktest-user: the microkernel's system tests, run from userspace as an
//! ordinary server of the test manifest (so it holds only what init granted
//! it). It reports in `kcore::testproto`'s format on the console and ends the
//! machine with the verdict (the manifest grants it `machine_exit`).
//! With the manifest argument `storage` it runs the `storage` suite instead
//! (storaged's block rings, `storage.rs`); with `zone` or `zone-other`, the
//! `zone` suite (the control plane at run time, `zone.rs`). The harness adds the argument
//! `expect_cpus=N`, the CPUs it gave the machine: that number chooses the
//! multi-CPU tests, and a system that sees another number online fails.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod security;
#[cfg(target_os = "none")]
mod bind;
#[cfg(target_os = "none")]
mod charging;
#[cfg(target_os = "none")]
mod configure;
#[cfg(target_os = "none")]
mod device_frames;
#[cfg(target_os = "none")]
mod fastpath;
#[cfg(target_os = "none")]
mod fpu;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod inject;
#[cfg(target_os = "none")]
mod placement;
#[cfg(target_os = "none")]
mod revocation;
#[cfg(target_os = "none")]
mod storage;
#[cfg(target_os = "none")]
mod sysret;
#[cfg(target_os = "none")]
mod tests;
#[cfg(target_os = "none")]
mod threads;
#[cfg(target_os = "none")]
mod waitlist;
#[cfg(target_os = "none")]
mod zeroing;
#[cfg(target_os = "none")]
mod zone;

#[cfg(target_os = "none")]
alcove_rt::entry!(tests::main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("ktest-user runs only on Alcove (build it for x86_64-unknown-none)");
}
