//! ktest-vmm: the virtualization system tests. It runs the test guest
//! (`images/testguest`, handed over by init as a file) once per guest test on
//! the kernel's vCPU interface and checks each result against
//! `testguest::protocol`, reporting in `kcore::testproto`'s format.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod vmm;

#[cfg(target_os = "none")]
alcove_rt::entry!(vmm::main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("ktest-vmm runs only on Alcove (build it for x86_64-unknown-none)");
}
