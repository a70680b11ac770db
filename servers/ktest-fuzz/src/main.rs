//! ktest-fuzz: the system-call sequence fuzzer (after syzkaller), run as an
//! unprivileged server of the `fuzz` manifest. It issues seeded random
//! sequences of system calls — mostly well-formed ones on objects it created
//! (`fuzz.rs`), some garbage — checks every answer against its model of what
//! it holds (`lib.rs`), and after each batch that the kernel is alive, that
//! its kernel-memory budget is back where the batch started, and that no
//! capability or mapping survived its revocation. It reports each batch as
//! one test of the `fuzz` suite (`kcore::testproto`), with the batch's seed
//! and the command that reruns it, and ends the machine with the verdict.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod fuzz;

#[cfg(target_os = "none")]
alcove_rt::entry!(fuzz::main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("ktest-fuzz runs only on Alcove (build it for x86_64-unknown-none; `cargo xtask fuzz-syscalls`)");
}
