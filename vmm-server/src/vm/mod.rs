//! One VM, put together: the platform devices and their interrupt routing
//! ([`platform`]), the guest's CPUID table ([`cpuid`]) and direct kernel
//! boot ([`loader`]), what the VM costs in kernel memory ([`sizing`]) and
//! the guest's console output on its way out ([`console_out`]), and its
//! NICs between vm.json, netd and the PCI bus ([`nics`]). The
//! Alcove-only runtime (`src/bin/vmm-server/`) maps
//! guest memory, runs the vCPU threads and calls into these.

pub mod console_out;
pub mod cpuid;
pub mod diagnose;
pub mod exit_counts;
pub mod loader;
pub mod memory;
pub mod metadata;
pub mod nics;
pub mod platform;
pub mod port_counts;
pub mod pvclock;
pub mod sizing;

#[cfg(test)]
mod large_ram_tests;
