//! The microkernel's portable logic: plain Rust with no hardware access, built
//! into the kernel and tested on the host with `cargo test`.
//!
//! Hardware glue lives in `microkernel/src/arch`; anything that can be decided
//! from values alone (capability tables and revocation, budgets, scheduling
//! policy, page-table building, frame allocation, how the boot memory map
//! becomes free memory, how the command line reads, how a system test reports)
//! lives here.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod asid;
pub mod budget;
pub mod cap;
pub mod cmdline;
pub mod deadlines;
pub mod frames;
pub mod idalloc;
pub mod inject;
pub mod insn;
pub mod memmap;
pub mod pagetable;
pub mod rangemap;
pub mod sched;
pub mod slab;
pub mod testproto;
pub mod tsc;
pub mod vcpu_cpu;
pub mod vcpu_halt;
pub mod waitlist;
pub mod wallclock;
pub mod vlapic;
