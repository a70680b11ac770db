//! What Alcove's drivers share: storaged drives the machine's disks and
//! netd its NICs with the same discipline, and this crate is that
//! discipline written once.
//!
//! * [`table`] — the bookkeeping, plain Rust that runs under `cargo test`:
//!   which DMA frames and device-memory windows a process has mapped, how
//!   an address translates inside them, which bounce frames are kept for
//!   reuse, which capability slots are free.
//! * [`cfgshadow`] — BAR sizing that changes the memory map twice per
//!   function and driver start instead of twice per sizing (host-tested).
//! * `dma` (on Alcove) — DMA frames made and mapped through the kernel,
//!   the device-memory windows (the manifest's `device_memory` and
//!   `pci_bars`), volatile register access inside them, frames shared with
//!   another process ([`dma::SharedFrame`]), and `virtio-drivers`' `Hal`.
//! * `pci` (on Alcove) — configuration space through mechanism #1 (ports
//!   0xCF8/0xCFC, `libipc::pio`) as `virtio-drivers`' `ConfigurationAccess`,
//!   mapping a function's BARs and turning its decoding and bus mastering
//!   on and off.
//!
//! **This crate is where the drivers' `unsafe` code lives**: turning
//! addresses of mappings made here into pointers and slices, volatile
//! accesses to device registers, string moves into shared frames, and the
//! `Hal` contract. Every block says why it holds; storaged and netd
//! themselves need none of it.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

#[cfg(target_os = "none")]
pub mod dma;
#[cfg(target_os = "none")]
pub mod pci;
pub mod cfgshadow;
pub mod table;
