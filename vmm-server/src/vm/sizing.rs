//! What a VM costs in kernel memory: the budget its vmm-server process
//! needs, computed in this one place for the VMM (which checks its budget
//! before it creates anything and names a shortfall) and for whoever
//! writes its manifest (`cargo xtask run --vm` and the Linux tests, in
//! `ci/src/vm.rs`).
//!
//! The kernel charges a process's budget for every object it creates and
//! every page table its mappings need (`microkernel/src/kernel`: `cost`,
//! `create_vcpu`, `map`, `guest_map`). For one VM that is:
//!
//! * guest RAM itself, and the page tables that map it twice: the nested
//!   tables (guest-physical, [`layout::ram_blocks`]) and the VMM's own view
//!   (from [`VMM_RAM_VA`]), 4 KiB leaves: one table per 2 MiB, one
//!   directory per GiB, one PDPT per 512 GiB;
//! * per vCPU ([`PER_VCPU_BYTES`]): its run page, the vCPU object (a
//!   VMCB or VMCS page, an MSR page, bookkeeping), its thread with the
//!   thread's stack and IPC buffer, and a page table for those mappings;
//! * per disk ([`PER_DISK_BYTES`]): the page tables mapping storaged's
//!   block ring (the ring's frame is storaged's);
//! * fixed ([`FIXED_BYTES`]): the process (its 1024 capability slots), the
//!   page tables of its image, stack and IPC buffer, the guest's root
//!   table, three notifications and the timer thread; plus the page
//!   tables mapping each boot file (`vm.json`, kernel, initrd);
//! * one range-map entry ([`MAP_ENTRY`], the kernel's `cost::RANGE_ENTRY`)
//!   per mapping: each 4 MiB RAM frame twice (guest and VMM), each vCPU's
//!   run page, stack and IPC buffer, each ring, each boot file, and the
//!   image's own ([`FIXED_MAPPINGS`]).
//!
//! Measured under QEMU (`ALCOVE-BENCH vmm_overhead_kib`, which adds the
//! 512 KiB heap that is part of the image): 80 KiB more per vCPU (16 → 32
//! vCPUs: 3093 → 4373 KiB), which [`PER_VCPU_BYTES`] bounds; 16853 KiB
//! charged beyond RAM for 4 GiB and 2 vCPUs, against 16897 KiB counted
//! here before [`SLACK`].

use alloc::format;
use alloc::string::String;
use core::fmt;

use crate::boot::layout;

const KIB: u64 = 1024;
const PAGE: u64 = 4096;

/// Where the VMM maps guest RAM in its own address space: the blocks of
/// [`layout::ram_blocks`] one after the other from here (16 TiB, clear of
/// everything else the process maps; room for the largest guest, 1 TiB).
pub const VMM_RAM_VA: u64 = 0x1000_0000_0000;
/// Pages of each VMM thread's stack (vCPU threads and the timer thread).
pub const THREAD_STACK_PAGES: u64 = 16;

/// The kernel's charges this module counts (see the module comment).
const RUN_PAGE: u64 = PAGE;
const VCPU_OBJECT: u64 = 2 * PAGE + KIB;
const THREAD_OBJECT: u64 = KIB;
const NOTIFICATION: u64 = 128;
/// The process object with its capability table (`abi::CSPACE_SLOTS`
/// slots of 64 + 32 bytes).
const PROCESS: u64 = PAGE + 512 + abi::CSPACE_SLOTS as u64 * 96;
/// Page tables of the image, stack and IPC buffer mappings (they sit in a
/// few 2 MiB regions at both ends of the address space), with room.
const IMAGE_TABLES: u64 = 16 * PAGE;

/// One mapping's range-map entry (the kernel's `cost::RANGE_ENTRY`).
pub const MAP_ENTRY: u64 = 128;
/// Guest RAM comes in frames of this size (the runtime's `FRAME_PAGES`),
/// each mapped into the guest and into the VMM.
const RAM_FRAME_BYTES: u64 = 4 << 20;
/// Mappings whatever the VM's size (image segments, stacks, IPC buffers,
/// the timer thread's), with room.
const FIXED_MAPPINGS: u64 = 32;
/// Mappings each vCPU adds: run page, stack, IPC buffer.
const VCPU_MAPPINGS: u64 = 3;

/// Each VMM thread's own IPC buffer (`alcove_rt::Thread`).
const IPC_BUFFER: u64 = PAGE;
/// Kernel memory each vCPU adds: run page, vCPU object, thread, stack, IPC
/// buffer and one page table for those mappings.
pub const PER_VCPU_BYTES: u64 = RUN_PAGE + VCPU_OBJECT + THREAD_OBJECT + THREAD_STACK_PAGES * PAGE + IPC_BUFFER + PAGE;
/// Kernel memory each disk adds: the page tables mapping its block ring
/// (a table, a directory and a PDPT at most). A NIC's frame ring (netd's
/// frame, at most 1 MiB) costs the same and is counted as a disk.
pub const PER_DISK_BYTES: u64 = 3 * PAGE;
/// Room for what the parts above do not itemise (kernel bookkeeping that
/// changes with the code): the measured figures stay 44 to 100 KiB below
/// the sum without it (4 GiB, 2 vCPUs; 256 MiB, 32 vCPUs).
const SLACK: u64 = 64 * KIB;
/// What a VM costs whatever its size: process, image tables, the guest's
/// root table, the notifications and the timer thread, and [`SLACK`].
pub const FIXED_BYTES: u64 = PROCESS
    + IMAGE_TABLES
    + PAGE
    + 3 * NOTIFICATION
    + THREAD_OBJECT
    + THREAD_STACK_PAGES * PAGE
    + IPC_BUFFER
    + PAGE
    + SLACK;

/// Page tables (4 KiB leaves) that map `len` bytes from `addr`: the tables,
/// directories and PDPTs the range touches (an upper bound when ranges
/// share one).
pub fn page_table_bytes(addr: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    let last = addr.saturating_add(len - 1);
    let count = |shift: u32| (last >> shift) - (addr >> shift) + 1;
    (count(21) + count(30) + count(39)) * PAGE
}

/// The kernel memory one VM needs, by part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelMemory {
    pub ram_bytes: u64,
    /// Nested tables and the VMM's own tables for guest RAM.
    pub ram_tables: u64,
    pub vcpus: u32,
    pub disks: u32,
    /// Tables mapping the boot files.
    pub boot_file_tables: u64,
    /// The range-map entries of every mapping ([`MAP_ENTRY`] each).
    pub map_entries: u64,
    /// A `bootrom` VM's copy of its firmware image (frames the guest may
    /// execute, which a read-only boot file is not), the tables that map
    /// it in the guest and in the VMM, and those mappings' range-map
    /// entries ([`Self::with_firmware`]).
    pub firmware_bytes: u64,
}

impl KernelMemory {
    /// A VM of `ram_bytes`, `vcpus` and `disks`, whose boot files are
    /// `boot_files` bytes long (each mapped in its own region).
    pub fn for_vm(ram_bytes: u64, vcpus: u32, disks: u32, boot_files: &[u64]) -> Self {
        let nested: u64 = layout::ram_blocks(ram_bytes).iter().map(|b| page_table_bytes(b.gpa, b.len)).sum();
        let own = page_table_bytes(VMM_RAM_VA, ram_bytes);
        let boot_file_tables = boot_files.iter().map(|&len| page_table_bytes(0, len.max(1))).sum();
        let ram_frames: u64 = layout::ram_blocks(ram_bytes).iter().map(|b| b.len.div_ceil(RAM_FRAME_BYTES)).sum();
        let mappings = 2 * ram_frames
            + u64::from(vcpus) * VCPU_MAPPINGS
            + u64::from(disks)
            + boot_files.len() as u64
            + FIXED_MAPPINGS;
        Self { ram_bytes, ram_tables: nested + own, vcpus, disks, boot_file_tables, map_entries: mappings * MAP_ENTRY, firmware_bytes: 0 }
    }

    /// The same VM booting a firmware image of `image_bytes`.
    pub fn with_firmware(self, image_bytes: u64) -> Self {
        let len = image_bytes.next_multiple_of(PAGE);
        let at = layout::FOUR_GIB.saturating_sub(len);
        // Two mappings of the copy: in the guest and in the VMM.
        Self { firmware_bytes: len + page_table_bytes(at, len) + page_table_bytes(0, len) + 2 * MAP_ENTRY, ..self }
    }

    /// Everything beyond guest RAM.
    pub fn overhead(&self) -> u64 {
        self.ram_tables
            + u64::from(self.vcpus) * PER_VCPU_BYTES
            + u64::from(self.disks) * PER_DISK_BYTES
            + FIXED_BYTES
            + self.boot_file_tables
            + self.map_entries
            + self.firmware_bytes
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> u64 {
        self.ram_bytes.saturating_add(self.overhead())
    }

    /// The whole budget in KiB, rounded up (a manifest's `budget_kib`).
    pub fn total_kib(&self) -> u64 {
        self.total().div_ceil(KIB)
    }

    /// The parts, for messages: `256 MiB RAM + 1040 KiB page tables + 2
    /// vCPUs x 86 KiB + 1 disk x 12 KiB + 172 KiB fixed + 52 KiB boot files`.
    pub fn breakdown(&self) -> String {
        format!(
            "{} MiB RAM + {} KiB its page tables + {} vCPUs x {} KiB + {} disks x {} KiB + {} KiB fixed + {} KiB boot-file page tables + {} KiB mapping entries{}",
            self.ram_bytes >> 20,
            self.ram_tables / KIB,
            self.vcpus,
            PER_VCPU_BYTES / KIB,
            self.disks,
            PER_DISK_BYTES / KIB,
            FIXED_BYTES / KIB,
            self.boot_file_tables / KIB,
            self.map_entries.div_ceil(KIB),
            if self.firmware_bytes > 0 { format!(" + {} KiB firmware", self.firmware_bytes / KIB) } else { String::new() },
        )
    }
}

/// A budget too small for the VM: what it needs, what the budget holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub needed: KernelMemory,
    /// The budget's limit in bytes.
    pub limit: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel-memory budget too small: the VM needs {} KiB ({}), the budget is {} KiB ({} KiB short)",
            self.needed.total_kib(),
            self.needed.breakdown(),
            self.limit / KIB,
            self.needed.total().saturating_sub(self.limit).div_ceil(KIB),
        )
    }
}

/// Checks a budget of `limit` bytes against `needed`.
pub fn check_budget(needed: KernelMemory, limit: u64) -> Result<(), Shortfall> {
    if needed.total() <= limit { Ok(()) } else { Err(Shortfall { needed, limit }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn page_tables_count_every_level_a_range_touches() {
        assert_eq!(page_table_bytes(0, 0), 0);
        assert_eq!(page_table_bytes(0, 1), 3 * PAGE);
        assert_eq!(page_table_bytes(0, 2 * MIB), 3 * PAGE);
        assert_eq!(page_table_bytes(0, 2 * MIB + 1), 4 * PAGE);
        // Straddling a 2 MiB boundary needs both tables.
        assert_eq!(page_table_bytes(2 * MIB - 4096, 8192), 4 * PAGE);
        // 4 GiB from 4 GiB: 2048 tables, 4 directories, 1 PDPT.
        assert_eq!(page_table_bytes(4 * GIB, 4 * GIB), (2048 + 4 + 1) * PAGE);
        assert_eq!(page_table_bytes(u64::MAX - 10, 100), 3 * PAGE);
    }

    /// The figures the driver writes into a manifest, worked by hand.
    #[test]
    fn a_small_vm_costs_its_ram_and_a_little_more() {
        let k = KernelMemory::for_vm(256 * MIB, 2, 1, &[200, 14 * MIB, 2 * MIB]);
        // Nested and own tables: 128 tables + 1 directory + 1 PDPT each.
        assert_eq!(k.ram_tables, 2 * 130 * PAGE);
        assert_eq!(PER_VCPU_BYTES, 86 * KIB);
        assert_eq!(k.boot_file_tables, (3 + 9 + 3) * PAGE);
        // 64 RAM frames twice, 2 vCPUs, 1 disk, 3 boot files, the fixed ones.
        assert_eq!(k.map_entries, (128 + 6 + 1 + 3 + 32) * MAP_ENTRY);
        assert_eq!(k.total(), 256 * MIB + 1040 * KIB + 172 * KIB + 12 * KIB + FIXED_BYTES + 60 * KIB + k.map_entries);
        // Far below the old "RAM + 16 MiB".
        assert!(k.overhead() < 2 * MIB, "{}", k.breakdown());
    }

    /// The per-vCPU part grows with the vCPUs, nothing else does.
    #[test]
    fn each_vcpu_adds_the_same() {
        let a = KernelMemory::for_vm(256 * MIB, 4, 0, &[]);
        let b = KernelMemory::for_vm(256 * MIB, 32, 0, &[]);
        assert_eq!(b.total() - a.total(), 28 * (PER_VCPU_BYTES + VCPU_MAPPINGS * MAP_ENTRY));
    }

    /// RAM above the PCI hole is mapped at 4 GiB in the guest and right
    /// after the low block in the VMM: both sets of tables are counted.
    #[test]
    fn large_ram_counts_the_tables_of_both_blocks() {
        let k = KernelMemory::for_vm(4 * GIB, 1, 0, &[]);
        let low = layout::LOW_RAM_END;
        let nested = page_table_bytes(0, low) + page_table_bytes(4 * GIB, 4 * GIB - low);
        assert_eq!(k.ram_tables, nested + page_table_bytes(VMM_RAM_VA, 4 * GIB));
        // About 2 x 8 MiB of tables for 4 GiB.
        assert!((16 * MIB..17 * MIB).contains(&k.ram_tables), "{}", k.ram_tables);
        // 1 TiB: no overflow, and more than 1 TiB.
        let t = KernelMemory::for_vm(1 << 40, 255, 4, &[64 * MIB]);
        assert!(t.total() > 1 << 40 && t.total_kib() < u64::from(u32::MAX));
    }

    #[test]
    fn a_shortfall_names_both_figures() {
        let k = KernelMemory::for_vm(256 * MIB, 16, 0, &[]);
        assert_eq!(check_budget(k, k.total()), Ok(()));
        let e = check_budget(k, k.total() - 1).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("kernel-memory budget too small: the VM needs "), "{msg}");
        assert!(msg.contains(&format!("{} KiB (256 MiB RAM", k.total_kib())), "{msg}");
        assert!(msg.contains("16 vCPUs x 86 KiB"), "{msg}");
        assert!(msg.ends_with("(1 KiB short)"), "{msg}");
    }
}
