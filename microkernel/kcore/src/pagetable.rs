//! Building and tearing down 4-level page tables without touching hardware.
//!
//! The kernel reaches physical memory through its direct map; here that is a
//! [`TableMemory`], so the host tests run the same code over a fake memory.
//! The entry encoding is a [`PteFormat`]: [`X86_64`] for the CPU's own tables,
//! [`Npt`] for AMD nested paging (same encoding, guest-physical input) and
//! [`Ept`] for Intel extended page tables. Address spaces, the VMM's guest
//! memory and the kernel's own map are all built with [`map`] and [`unmap`].
//!
//! Only 4 KiB leaves are created; 2 MiB and 1 GiB leaves (which the boot code
//! may have made for the direct map) are understood by [`translate`] and
//! reported as [`MapError::HugePageInTheWay`] elsewhere. No function flushes
//! the TLB: the caller does, after the change and before it reuses a freed
//! frame or table.

use core::ops::Range;

/// A physical address (host-physical for the tables themselves and leaves).
pub type PhysAddr = u64;
/// The address a table translates: linear for [`X86_64`], guest-physical for
/// [`Npt`] and [`Ept`].
pub type VirtAddr = u64;

/// The only leaf size this module creates.
pub const PAGE_SIZE: u64 = 4096;
/// Entries per table at every level.
pub const ENTRIES: usize = 512;
/// Physical-address bits 51:12 of an entry: MAXPHYADDR is at most 52
/// (SDM Vol. 3A §4.5, Tables 4-15..4-20; same field in EPT, Vol. 3C §29.3.2).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const SIZE_2M: u64 = 1 << 21;
const SIZE_1G: u64 = 1 << 30;

/// Physical memory as the table code sees it. The kernel implements it over
/// its direct map (and charges the caller's budget in `alloc_table`); tests
/// implement it over a map of fake tables.
pub trait TableMemory {
    /// Entry `index` (0..512) of the table at `table`.
    fn read_entry(&self, table: PhysAddr, index: usize) -> u64;
    /// Stores one entry; a single 64-bit store, so walkers on other CPUs
    /// see the old entry or the new one.
    fn write_entry(&mut self, table: PhysAddr, index: usize, value: u64);
    /// A zeroed, 4 KiB-aligned table, or `None` when memory (or the budget
    /// paying for it) is exhausted.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// Returns a table that is no longer linked anywhere.
    fn free_table(&mut self, table: PhysAddr);
}

/// What a leaf permits. Independent of the entry format so the same request
/// builds a CPU mapping or a guest-memory mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// May be written; leave it off wherever `executable` is on (W^X).
    pub writable: bool,
    /// Reachable from ring 3 (x86 U/S); EPT has no such bit.
    pub user: bool,
    /// May be executed (x86 NX clear, EPT X set).
    pub executable: bool,
    /// Survives CR3 reloads (x86 G, with CR4.PGE); for the shared kernel half.
    pub global: bool,
    /// PCD: uncached, for MMIO.
    pub cache_disable: bool,
    /// PWT: write-through.
    pub write_through: bool,
}

impl Flags {
    /// Read-only, supervisor, not executable: the least a mapping grants.
    pub const fn read_only() -> Self {
        Self {
            writable: false,
            user: false,
            executable: false,
            global: false,
            cache_disable: false,
            write_through: false,
        }
    }
    /// Kernel text: read and execute, never written (W^X).
    pub const fn kernel_code() -> Self {
        Self { executable: true, global: true, ..Self::read_only() }
    }
    /// Kernel constants.
    pub const fn kernel_rodata() -> Self {
        Self { global: true, ..Self::read_only() }
    }
    /// Kernel data, stacks and heap: writable, never executable (W^X).
    pub const fn kernel_data() -> Self {
        Self { writable: true, global: true, ..Self::read_only() }
    }
    /// Device registers: uncached, not executable.
    pub const fn mmio() -> Self {
        Self { writable: true, cache_disable: true, write_through: true, ..Self::read_only() }
    }
    /// A process's text.
    pub const fn user_code() -> Self {
        Self { user: true, executable: true, ..Self::read_only() }
    }
    /// A process's constants.
    pub const fn user_rodata() -> Self {
        Self { user: true, ..Self::read_only() }
    }
    /// A process's data, stack and heap.
    pub const fn user_data() -> Self {
        Self { user: true, writable: true, ..Self::read_only() }
    }
    /// Guest RAM behind NPT/EPT: the guest decides its own permissions.
    pub const fn guest_ram() -> Self {
        Self { writable: true, user: true, executable: true, ..Self::read_only() }
    }
}

/// How entries are encoded, so one walker builds CPU, NPT and EPT tables.
/// All formats share the 4-level, 512-entry, 9-bits-per-level shape.
pub trait PteFormat {
    /// Bits a permission change keeps from the old leaf (accessed, dirty).
    const KEEP_ON_PROTECT: u64;
    /// Whether the tables translate `vaddr` at all.
    fn input_ok(vaddr: VirtAddr) -> bool;
    /// An entry linking a next-level table: as permissive as possible, so the
    /// leaf alone decides what is allowed.
    fn table(table: PhysAddr) -> u64;
    /// A 4 KiB leaf mapping `frame`.
    fn leaf(frame: PhysAddr, flags: Flags) -> u64;
    /// Whether the walk continues through (or ends at) this entry.
    fn is_present(entry: u64) -> bool;
    /// The page-size bit; meaningful only in PDPTEs and PDEs.
    fn is_huge(entry: u64) -> bool;
    /// The permissions a leaf grants.
    fn flags(entry: u64) -> Flags;
}

/// x86-64 long-mode paging entries, SDM Vol. 3A §4.5 (Tables 4-15..4-20).
/// Assumes IA32_EFER.NXE = 1, which the kernel sets at boot; without it bit 63
/// is reserved and a leaf without `executable` would fault.
#[derive(Clone, Copy, Debug)]
pub struct X86_64;

impl X86_64 {
    /// P: the entry is used.
    pub const PRESENT: u64 = 1 << 0;
    /// R/W: writes allowed (also from ring 0 when CR0.WP = 1).
    pub const WRITABLE: u64 = 1 << 1;
    /// U/S: ring 3 may access.
    pub const USER: u64 = 1 << 2;
    /// PWT.
    pub const WRITE_THROUGH: u64 = 1 << 3;
    /// PCD.
    pub const CACHE_DISABLE: u64 = 1 << 4;
    /// A: set by the CPU on first access.
    pub const ACCESSED: u64 = 1 << 5;
    /// D: set by the CPU on first write to a leaf.
    pub const DIRTY: u64 = 1 << 6;
    /// PS in PDPTEs and PDEs (bit 7 is PAT in a 4 KiB PTE).
    pub const HUGE: u64 = 1 << 7;
    /// G: kept across CR3 loads when CR4.PGE = 1.
    pub const GLOBAL: u64 = 1 << 8;
    /// XD, SDM Vol. 3A §4.6.2.
    pub const NO_EXECUTE: u64 = 1 << 63;
}

/// Canonical: bits 63..47 all equal (SDM Vol. 1 §3.3.7.1).
pub const fn is_canonical(vaddr: VirtAddr) -> bool {
    let top = vaddr >> 47;
    top == 0 || top == (1 << 17) - 1
}

impl PteFormat for X86_64 {
    const KEEP_ON_PROTECT: u64 = Self::ACCESSED | Self::DIRTY;

    fn input_ok(vaddr: VirtAddr) -> bool {
        is_canonical(vaddr)
    }

    fn table(table: PhysAddr) -> u64 {
        // Intermediate entries never carry XD: the leaf decides execution.
        // A is set already (as Linux does for its kernel mappings): nothing
        // reads it, and the walker then never writes the entry back.
        (table & ADDR_MASK) | Self::PRESENT | Self::WRITABLE | Self::USER | Self::ACCESSED
    }

    fn leaf(frame: PhysAddr, f: Flags) -> u64 {
        // A, and D on writable leaves, set already: as in `table`.
        let mut e = (frame & ADDR_MASK) | Self::PRESENT | Self::ACCESSED;
        e |= if f.writable { Self::WRITABLE | Self::DIRTY } else { 0 };
        e |= if f.user { Self::USER } else { 0 };
        e |= if f.write_through { Self::WRITE_THROUGH } else { 0 };
        e |= if f.cache_disable { Self::CACHE_DISABLE } else { 0 };
        e |= if f.global { Self::GLOBAL } else { 0 };
        e |= if f.executable { 0 } else { Self::NO_EXECUTE };
        e
    }

    fn is_present(entry: u64) -> bool {
        entry & Self::PRESENT != 0
    }

    fn is_huge(entry: u64) -> bool {
        entry & Self::HUGE != 0
    }

    fn flags(e: u64) -> Flags {
        Flags {
            writable: e & Self::WRITABLE != 0,
            user: e & Self::USER != 0,
            executable: e & Self::NO_EXECUTE == 0,
            global: e & Self::GLOBAL != 0,
            cache_disable: e & Self::CACHE_DISABLE != 0,
            write_through: e & Self::WRITE_THROUGH != 0,
        }
    }
}

/// AMD nested page tables: the x86-64 encoding translating guest-physical
/// addresses (APM Vol. 2 §15.25.5). Nested walks count as user accesses, so
/// every leaf gets U=1; G is meaningless there and is cleared. Input is any
/// gPA below 2^48, not a canonical address.
#[derive(Clone, Copy, Debug)]
pub struct Npt;

impl PteFormat for Npt {
    const KEEP_ON_PROTECT: u64 = X86_64::KEEP_ON_PROTECT;

    fn input_ok(gpa: VirtAddr) -> bool {
        gpa >> 48 == 0
    }

    fn table(table: PhysAddr) -> u64 {
        X86_64::table(table)
    }

    fn leaf(frame: PhysAddr, f: Flags) -> u64 {
        X86_64::leaf(frame, Flags { user: true, global: false, ..f })
    }

    fn is_present(entry: u64) -> bool {
        X86_64::is_present(entry)
    }

    fn is_huge(entry: u64) -> bool {
        X86_64::is_huge(entry)
    }

    fn flags(e: u64) -> Flags {
        X86_64::flags(e)
    }
}

/// Intel EPT entries, SDM Vol. 3C §29.3.2 (§28.3.2 in editions before 2023).
/// No present bit (an entry is present when any of R/W/X is set), no user
/// bit, and the memory type sits in the leaf (bits 5:3) instead of PCD/PWT.
/// Leaves are always readable: W without R is a misconfiguration (§29.3.3.1).
/// IPAT stays clear so the guest's PAT still combines with the EPT type.
#[derive(Clone, Copy, Debug)]
pub struct Ept;

impl Ept {
    /// Guest reads allowed; also what makes an entry present.
    pub const READ: u64 = 1 << 0;
    /// Guest writes allowed.
    pub const WRITE: u64 = 1 << 1;
    /// Guest instruction fetches allowed.
    pub const EXECUTE: u64 = 1 << 2;
    /// Where a leaf's memory type starts (bits 5:3).
    pub const MEMORY_TYPE_SHIFT: u32 = 3;
    /// A leaf's memory type field.
    pub const MEMORY_TYPE_MASK: u64 = 7 << Self::MEMORY_TYPE_SHIFT;
    /// Memory types, SDM Vol. 3A §12.3 (Table 12-2).
    pub const MT_UC: u64 = 0;
    /// Write-through.
    pub const MT_WT: u64 = 4;
    /// Write-back: ordinary RAM.
    pub const MT_WB: u64 = 6;
    /// IPAT: the EPT memory type alone decides, the guest's PAT is ignored.
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// A 2 MiB or 1 GiB leaf in a PDE or PDPTE.
    pub const HUGE: u64 = 1 << 7;
    /// Set by the CPU when accessed-and-dirty flags are enabled in the EPTP.
    pub const ACCESSED: u64 = 1 << 8;
    /// Set by the CPU on a guest write when A/D flags are enabled.
    pub const DIRTY: u64 = 1 << 9;
}

impl PteFormat for Ept {
    const KEEP_ON_PROTECT: u64 = Self::ACCESSED | Self::DIRTY;

    fn input_ok(gpa: VirtAddr) -> bool {
        gpa >> 48 == 0
    }

    fn table(table: PhysAddr) -> u64 {
        (table & ADDR_MASK) | Self::READ | Self::WRITE | Self::EXECUTE
    }

    fn leaf(frame: PhysAddr, f: Flags) -> u64 {
        let mt = if f.cache_disable {
            Self::MT_UC
        } else if f.write_through {
            Self::MT_WT
        } else {
            Self::MT_WB
        };
        let mut e = (frame & ADDR_MASK) | Self::READ | (mt << Self::MEMORY_TYPE_SHIFT);
        e |= if f.writable { Self::WRITE } else { 0 };
        e |= if f.executable { Self::EXECUTE } else { 0 };
        e
    }

    fn is_present(entry: u64) -> bool {
        entry & (Self::READ | Self::WRITE | Self::EXECUTE) != 0
    }

    fn is_huge(entry: u64) -> bool {
        entry & Self::HUGE != 0
    }

    /// `user` and `global` read back false; UC reads back as `cache_disable`
    /// alone.
    fn flags(e: u64) -> Flags {
        let mt = (e & Self::MEMORY_TYPE_MASK) >> Self::MEMORY_TYPE_SHIFT;
        Flags {
            writable: e & Self::WRITE != 0,
            user: false,
            executable: e & Self::EXECUTE != 0,
            global: false,
            cache_disable: mt == Self::MT_UC,
            write_through: mt == Self::MT_WT,
        }
    }
}

/// Why a table operation was refused; the tables are unchanged in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The virtual or physical address is not 4 KiB aligned.
    NotAligned,
    /// The virtual address is outside what the format translates.
    NonCanonical,
    /// The physical address does not fit the 52-bit address field.
    PhysOutOfRange,
    /// A 4 KiB leaf is already there; it is not replaced silently.
    AlreadyMapped,
    /// Nothing maps the address.
    NotMapped,
    /// A table allocation failed; nothing was linked.
    OutOfMemory,
    /// A 2 MiB or 1 GiB leaf covers the address; it is not split.
    HugePageInTheWay,
}

/// What [`unmap`] took out: the frame (the caller's to free) and how many
/// tables went with it, so the caller can refund whoever paid for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmapped {
    /// The frame the page mapped.
    pub frame: PhysAddr,
    /// Tables that became empty and were freed.
    pub tables_freed: usize,
}

const fn index(vaddr: VirtAddr, level: u32) -> usize {
    ((vaddr >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Walks to the leaf for `vaddr`, recording the table at each level in
/// `path[level - 1]`. Returns the leaf's level (1, or 2/3 for huge leaves)
/// and entry, or `None` when some level is not present.
fn find_leaf<F: PteFormat, M: TableMemory + ?Sized>(
    mem: &M,
    root: PhysAddr,
    vaddr: VirtAddr,
    path: &mut [PhysAddr; 4],
) -> Option<(u32, u64)> {
    let mut table = root;
    for level in (1..=4).rev() {
        path[level as usize - 1] = table;
        let e = mem.read_entry(table, index(vaddr, level));
        if !F::is_present(e) {
            return None;
        }
        if level == 1 || ((level == 2 || level == 3) && F::is_huge(e)) {
            return Some((level, e));
        }
        table = e & ADDR_MASK;
    }
    None
}

fn check_page(vaddr: VirtAddr, valid: bool) -> Result<(), MapError> {
    if !vaddr.is_multiple_of(PAGE_SIZE) {
        Err(MapError::NotAligned)
    } else if !valid {
        Err(MapError::NonCanonical)
    } else {
        Ok(())
    }
}

/// Maps the 4 KiB page at `vaddr` to `paddr`, creating the missing tables.
/// Returns how many tables were allocated. All missing tables are allocated
/// before any is linked, and the new chain is linked by one final write, so a
/// failure leaves nothing behind and no walker ever sees half a chain.
pub fn map<F: PteFormat, M: TableMemory + ?Sized>(
    mem: &mut M,
    root: PhysAddr,
    vaddr: VirtAddr,
    paddr: PhysAddr,
    flags: Flags,
) -> Result<usize, MapError> {
    check_page(vaddr, F::input_ok(vaddr))?;
    if !paddr.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::NotAligned);
    }
    if paddr & !ADDR_MASK != 0 {
        return Err(MapError::PhysOutOfRange);
    }
    // Walk what exists; `table` ends at the deepest existing table.
    let mut table = root;
    let mut level = 4;
    while level > 1 {
        let e = mem.read_entry(table, index(vaddr, level));
        if !F::is_present(e) {
            break;
        }
        if level < 4 && F::is_huge(e) {
            return Err(MapError::HugePageInTheWay);
        }
        table = e & ADDR_MASK;
        level -= 1;
    }
    let leaf = F::leaf(paddr, flags);
    if level == 1 {
        if F::is_present(mem.read_entry(table, index(vaddr, 1))) {
            return Err(MapError::AlreadyMapped);
        }
        mem.write_entry(table, index(vaddr, 1), leaf);
        return Ok(0);
    }
    // new[i] becomes the table at level `level - 1 - i`.
    let missing = (level - 1) as usize;
    let mut new = [0; 3];
    for i in 0..missing {
        match mem.alloc_table() {
            Some(t) => new[i] = t,
            None => {
                for &t in &new[..i] {
                    mem.free_table(t);
                }
                return Err(MapError::OutOfMemory);
            }
        }
    }
    for i in 0..missing - 1 {
        mem.write_entry(new[i], index(vaddr, level - 1 - i as u32), F::table(new[i + 1]));
    }
    mem.write_entry(new[missing - 1], index(vaddr, 1), leaf);
    mem.write_entry(table, index(vaddr, level), F::table(new[0]));
    Ok(missing)
}

fn table_is_empty<F: PteFormat, M: TableMemory + ?Sized>(mem: &M, table: PhysAddr) -> bool {
    // A scan, not a per-table count: it stops at the first live entry, and
    // unmapping is rarer than mapping.
    (0..ENTRIES).all(|i| !F::is_present(mem.read_entry(table, i)))
}

/// Removes the 4 KiB mapping at `vaddr` and frees the tables (never the root)
/// that it leaves empty.
pub fn unmap<F: PteFormat, M: TableMemory + ?Sized>(
    mem: &mut M,
    root: PhysAddr,
    vaddr: VirtAddr,
) -> Result<Unmapped, MapError> {
    check_page(vaddr, F::input_ok(vaddr))?;
    let mut path = [0; 4];
    let (level, e) = find_leaf::<F, M>(mem, root, vaddr, &mut path).ok_or(MapError::NotMapped)?;
    if level != 1 {
        return Err(MapError::HugePageInTheWay);
    }
    mem.write_entry(path[0], index(vaddr, 1), 0);
    let mut tables_freed = 0;
    for level in 1..4u32 {
        let table = path[level as usize - 1];
        if !table_is_empty::<F, M>(mem, table) {
            break;
        }
        // Unlink before freeing: the table may be reused at once.
        mem.write_entry(path[level as usize], index(vaddr, level + 1), 0);
        mem.free_table(table);
        tables_freed += 1;
    }
    Ok(Unmapped { frame: e & ADDR_MASK, tables_freed })
}

/// The physical address `vaddr` (any byte, not only a page start) reaches and
/// the leaf's permissions, through 4 KiB, 2 MiB and 1 GiB leaves alike.
pub fn translate<F: PteFormat, M: TableMemory + ?Sized>(
    mem: &M,
    root: PhysAddr,
    vaddr: VirtAddr,
) -> Option<(PhysAddr, Flags)> {
    if !F::input_ok(vaddr) {
        return None;
    }
    let (level, e) = find_leaf::<F, M>(mem, root, vaddr, &mut [0; 4])?;
    let size = match level {
        3 => SIZE_1G,
        2 => SIZE_2M,
        _ => PAGE_SIZE,
    };
    // Masking with the page size also drops PAT (bit 12) of huge leaves.
    let base = e & ADDR_MASK & !(size - 1);
    Some((base | (vaddr & (size - 1)), F::flags(e)))
}

/// The raw leaf entry (4 KiB, 2 MiB or 1 GiB) that maps `vaddr`, A/D bits
/// and all, as a hardware walk finds it: for diagnostics.
pub fn leaf_entry<F: PteFormat, M: TableMemory + ?Sized>(mem: &M, root: PhysAddr, vaddr: VirtAddr) -> Option<u64> {
    if !F::input_ok(vaddr) {
        return None;
    }
    find_leaf::<F, M>(mem, root, vaddr, &mut [0; 4]).map(|(_, e)| e)
}

/// Changes the permissions of the 4 KiB page at `vaddr`, keeping its frame
/// and accessed/dirty bits. Returns the old permissions, so the caller knows
/// whether a TLB shootdown is needed (only when rights were taken away).
pub fn protect<F: PteFormat, M: TableMemory + ?Sized>(
    mem: &mut M,
    root: PhysAddr,
    vaddr: VirtAddr,
    flags: Flags,
) -> Result<Flags, MapError> {
    check_page(vaddr, F::input_ok(vaddr))?;
    let mut path = [0; 4];
    let (level, e) = find_leaf::<F, M>(mem, root, vaddr, &mut path).ok_or(MapError::NotMapped)?;
    if level != 1 {
        return Err(MapError::HugePageInTheWay);
    }
    let new = F::leaf(e & ADDR_MASK, flags) | (e & F::KEEP_ON_PROTECT);
    mem.write_entry(path[0], index(vaddr, 1), new);
    Ok(F::flags(e))
}

/// Frees every table below `root` reached through the PML4 slots `slots`
/// (clamped to 0..512) and clears those slots; the root and the leaf frames
/// stay the caller's. Returns how many tables were freed. An address space
/// is destroyed with `0..256`: the kernel half (256..512) is shared by all.
pub fn destroy<F: PteFormat, M: TableMemory + ?Sized>(
    mem: &mut M,
    root: PhysAddr,
    slots: Range<usize>,
) -> usize {
    let mut freed = 0;
    for slot in slots.start.min(ENTRIES)..slots.end.min(ENTRIES) {
        let e = mem.read_entry(root, slot);
        if !F::is_present(e) {
            continue;
        }
        mem.write_entry(root, slot, 0);
        freed += free_subtree::<F, M>(mem, e & ADDR_MASK, 3);
    }
    freed
}

fn free_subtree<F: PteFormat, M: TableMemory + ?Sized>(
    mem: &mut M,
    table: PhysAddr,
    level: u32,
) -> usize {
    let mut freed = 0;
    if level > 1 {
        for i in 0..ENTRIES {
            let e = mem.read_entry(table, i);
            if F::is_present(e) && !F::is_huge(e) {
                freed += free_subtree::<F, M>(mem, e & ADDR_MASK, level - 1);
            }
        }
    }
    mem.free_table(table);
    freed + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::collections::btree_map::Entry;
    use alloc::vec::Vec;

    /// Tables in a map; panics on any access to a table that does not exist,
    /// so a use-after-free or a wild pointer in the walker fails the test.
    struct FakeMem {
        tables: BTreeMap<u64, [u64; ENTRIES]>,
        next: u64,
        /// Allocations left before `alloc_table` fails; `None` = unlimited.
        allocs_left: Option<usize>,
    }

    impl FakeMem {
        fn new() -> (Self, PhysAddr) {
            let mut m = Self { tables: BTreeMap::new(), next: 0x10_0000, allocs_left: None };
            let root = m.alloc_table().unwrap();
            (m, root)
        }
        fn count(&self) -> usize {
            self.tables.len()
        }
    }

    impl TableMemory for FakeMem {
        fn read_entry(&self, table: PhysAddr, index: usize) -> u64 {
            self.tables.get(&table).expect("read of a table that does not exist")[index]
        }
        fn write_entry(&mut self, table: PhysAddr, index: usize, value: u64) {
            self.tables.get_mut(&table).expect("write to a table that does not exist")[index] =
                value;
        }
        fn alloc_table(&mut self) -> Option<PhysAddr> {
            if let Some(n) = &mut self.allocs_left {
                if *n == 0 {
                    return None;
                }
                *n -= 1;
            }
            let t = self.next;
            self.next += PAGE_SIZE;
            self.tables.insert(t, [0; ENTRIES]);
            Some(t)
        }
        fn free_table(&mut self, table: PhysAddr) {
            self.tables.remove(&table).expect("double free of a table");
        }
    }

    /// The raw leaf entry for `vaddr` (4 KiB leaves only).
    fn raw_leaf(mem: &FakeMem, root: PhysAddr, vaddr: u64) -> u64 {
        let mut t = root;
        for level in (2..=4).rev() {
            t = mem.read_entry(t, index(vaddr, level)) & ADDR_MASK;
        }
        mem.read_entry(t, index(vaddr, 1))
    }

    #[test]
    fn map_translate_unmap_round_trip() {
        let (mut m, root) = FakeMem::new();
        let va = 0x0000_7fff_dead_b000;
        assert_eq!(map::<X86_64, _>(&mut m, root, va, 0x1234_5000, Flags::user_data()), Ok(3));
        assert_eq!(m.count(), 4);
        assert_eq!(
            translate::<X86_64, _>(&m, root, va + 0x123),
            Some((0x1234_5123, Flags::user_data()))
        );
        assert_eq!(translate::<X86_64, _>(&m, root, va + PAGE_SIZE), None);
        // A neighbour shares all three tables.
        assert_eq!(
            map::<X86_64, _>(&mut m, root, va - PAGE_SIZE, 0x9000, Flags::user_code()),
            Ok(0)
        );
        assert_eq!(
            unmap::<X86_64, _>(&mut m, root, va),
            Ok(Unmapped { frame: 0x1234_5000, tables_freed: 0 })
        );
        assert_eq!(translate::<X86_64, _>(&m, root, va), None);
        assert_eq!(
            unmap::<X86_64, _>(&mut m, root, va - PAGE_SIZE),
            Ok(Unmapped { frame: 0x9000, tables_freed: 3 })
        );
        assert_eq!(m.count(), 1);
        assert!(m.tables[&root].iter().all(|&e| e == 0));
    }

    #[test]
    fn kernel_half_addresses_map() {
        let (mut m, root) = FakeMem::new();
        let va = 0xffff_8000_0000_0000;
        map::<X86_64, _>(&mut m, root, va, 0x20_0000, Flags::kernel_data()).unwrap();
        assert_eq!(index(va, 4), 256);
        assert_eq!(translate::<X86_64, _>(&m, root, va), Some((0x20_0000, Flags::kernel_data())));
    }

    #[test]
    fn x86_entry_bits() {
        let (mut m, root) = FakeMem::new();
        let all = Flags {
            writable: true,
            user: true,
            executable: false,
            global: true,
            cache_disable: true,
            write_through: true,
        };
        map::<X86_64, _>(&mut m, root, 0x40_0000, 0x000f_ffff_ffff_f000, all).unwrap();
        assert_eq!(
            raw_leaf(&m, root, 0x40_0000),
            0x000f_ffff_ffff_f000 | 1 | 2 | 4 | 8 | 16 | 0x20 | 0x40 | 0x100 | (1 << 63)
        );
        // Intermediate entries: present + writable + user + accessed, no NX.
        let pml4e = m.read_entry(root, 0);
        assert_eq!(pml4e & !ADDR_MASK, 0x27);
        let pdpte = m.read_entry(pml4e & ADDR_MASK, 0);
        assert_eq!(pdpte & !ADDR_MASK, 0x27);
        let pde = m.read_entry(pdpte & ADDR_MASK, 2);
        assert_eq!(pde & !ADDR_MASK, 0x27);

        // W^X: code is executable and read-only, data writable and NX.
        // Every leaf is accessed already, a writable one dirty too.
        map::<X86_64, _>(&mut m, root, 0x1000, 0x5000, Flags::kernel_code()).unwrap();
        assert_eq!(raw_leaf(&m, root, 0x1000), 0x5000 | 1 | 0x20 | 0x100);
        map::<X86_64, _>(&mut m, root, 0x2000, 0x6000, Flags::kernel_data()).unwrap();
        assert_eq!(raw_leaf(&m, root, 0x2000), 0x6000 | 1 | 2 | 0x20 | 0x40 | 0x100 | (1 << 63));
        map::<X86_64, _>(&mut m, root, 0x3000, 0x7000, Flags::user_rodata()).unwrap();
        assert_eq!(raw_leaf(&m, root, 0x3000), 0x7000 | 1 | 4 | 0x20 | (1 << 63));
        for f in
            [all, Flags::kernel_code(), Flags::kernel_data(), Flags::mmio(), Flags::user_code()]
        {
            assert_eq!(X86_64::flags(X86_64::leaf(0, f)), f);
        }
    }

    #[test]
    fn error_cases() {
        let (mut m, root) = FakeMem::new();
        let f = Flags::user_data();
        assert_eq!(map::<X86_64, _>(&mut m, root, 0x1001, 0x1000, f), Err(MapError::NotAligned));
        assert_eq!(map::<X86_64, _>(&mut m, root, 0x1000, 0x1800, f), Err(MapError::NotAligned));
        assert_eq!(
            map::<X86_64, _>(&mut m, root, 0x0000_8000_0000_0000, 0x1000, f),
            Err(MapError::NonCanonical)
        );
        assert_eq!(
            map::<X86_64, _>(&mut m, root, 0xffff_7fff_ffff_f000, 0x1000, f),
            Err(MapError::NonCanonical)
        );
        assert_eq!(
            map::<X86_64, _>(&mut m, root, 0x1000, 1 << 52, f),
            Err(MapError::PhysOutOfRange)
        );
        assert_eq!(m.count(), 1);
        map::<X86_64, _>(&mut m, root, 0x1000, 0x1000, f).unwrap();
        assert_eq!(map::<X86_64, _>(&mut m, root, 0x1000, 0x2000, f), Err(MapError::AlreadyMapped));
        assert_eq!(translate::<X86_64, _>(&m, root, 0x1000), Some((0x1000, f)));
        assert_eq!(unmap::<X86_64, _>(&mut m, root, 0x2000), Err(MapError::NotMapped));
        assert_eq!(unmap::<X86_64, _>(&mut m, root, 0x1_0000_0000), Err(MapError::NotMapped));
        assert_eq!(unmap::<X86_64, _>(&mut m, root, 0x1008), Err(MapError::NotAligned));
        assert_eq!(protect::<X86_64, _>(&mut m, root, 0x2000, f), Err(MapError::NotMapped));
        assert_eq!(translate::<X86_64, _>(&m, root, 0x0000_8000_0000_0000), None);
    }

    #[test]
    fn huge_leaves() {
        let (mut m, root) = FakeMem::new();
        let pdpt = m.alloc_table().unwrap();
        let pd = m.alloc_table().unwrap();
        m.write_entry(root, 0, X86_64::table(pdpt));
        // 1 GiB leaf at 1 GiB -> 0x4000_0000 * 3, PAT bit 12 set.
        m.write_entry(pdpt, 1, 0xc000_0000 | (1 << 12) | 0x83 | (1 << 63));
        // 2 MiB leaf at 0x20_0000 -> 0x60_0000, executable, PAT bit 12 set.
        m.write_entry(pdpt, 0, X86_64::table(pd));
        m.write_entry(pd, 1, 0x60_0000 | (1 << 12) | 0x83);
        let (pa, f) = translate::<X86_64, _>(&m, root, 0x4000_0000 + 0x1234_5678).unwrap();
        assert_eq!(pa, 0xc000_0000 + 0x1234_5678);
        assert!(f.writable && !f.executable && !f.user);
        let (pa, f) = translate::<X86_64, _>(&m, root, 0x20_0000 + 0x1_2345).unwrap();
        assert_eq!(pa, 0x60_0000 + 0x1_2345);
        assert!(f.executable);
        let f = Flags::kernel_data();
        assert_eq!(
            map::<X86_64, _>(&mut m, root, 0x4000_0000, 0x1000, f),
            Err(MapError::HugePageInTheWay)
        );
        assert_eq!(
            map::<X86_64, _>(&mut m, root, 0x20_1000, 0x1000, f),
            Err(MapError::HugePageInTheWay)
        );
        assert_eq!(unmap::<X86_64, _>(&mut m, root, 0x20_0000), Err(MapError::HugePageInTheWay));
        assert_eq!(
            protect::<X86_64, _>(&mut m, root, 0x20_0000, f),
            Err(MapError::HugePageInTheWay)
        );
        // Next to the huge leaf, ordinary mapping works; destroy skips the leaf.
        assert_eq!(map::<X86_64, _>(&mut m, root, 0x40_0000, 0x1000, f), Ok(1));
        assert_eq!(destroy::<X86_64, _>(&mut m, root, 0..256), 3);
        assert_eq!(m.count(), 1);
    }

    #[test]
    fn protect_changes_flags_keeps_frame_and_dirty() {
        let (mut m, root) = FakeMem::new();
        map::<X86_64, _>(&mut m, root, 0x7000, 0xabc000, Flags::user_data()).unwrap();
        // The CPU sets accessed and dirty.
        let mut pt = root;
        for level in (2..=4).rev() {
            pt = m.read_entry(pt, index(0x7000, level)) & ADDR_MASK;
        }
        let e = m.read_entry(pt, 7);
        m.write_entry(pt, 7, e | X86_64::ACCESSED | X86_64::DIRTY);
        assert_eq!(
            protect::<X86_64, _>(&mut m, root, 0x7000, Flags::user_rodata()),
            Ok(Flags::user_data())
        );
        assert_eq!(
            translate::<X86_64, _>(&m, root, 0x7000),
            Some((0xabc000, Flags::user_rodata()))
        );
        assert_eq!(raw_leaf(&m, root, 0x7000), 0xabc000 | 1 | 4 | 0x20 | 0x40 | (1 << 63));
    }

    #[test]
    fn out_of_memory_mid_map_leaves_nothing() {
        let (mut m, root) = FakeMem::new();
        for budget in 0..3 {
            m.allocs_left = Some(budget);
            assert_eq!(
                map::<X86_64, _>(&mut m, root, 0x1234_5000, 0x1000, Flags::user_data()),
                Err(MapError::OutOfMemory)
            );
            assert_eq!(m.count(), 1);
            assert!(m.tables[&root].iter().all(|&e| e == 0));
        }
        // Part of the path exists: one more table is needed, none available.
        m.allocs_left = None;
        map::<X86_64, _>(&mut m, root, 0x1000, 0x1000, Flags::user_data()).unwrap();
        m.allocs_left = Some(0);
        assert_eq!(
            map::<X86_64, _>(&mut m, root, 0x20_0000, 0x2000, Flags::user_data()),
            Err(MapError::OutOfMemory)
        );
        assert_eq!(m.count(), 4);
        m.allocs_left = Some(1);
        assert_eq!(map::<X86_64, _>(&mut m, root, 0x20_0000, 0x2000, Flags::user_data()), Ok(1));
        assert_eq!(translate::<X86_64, _>(&m, root, 0x1000), Some((0x1000, Flags::user_data())));
        assert_eq!(translate::<X86_64, _>(&m, root, 0x20_0000), Some((0x2000, Flags::user_data())));
    }

    #[test]
    fn destroy_frees_user_half_only() {
        let (mut m, root) = FakeMem::new();
        let f = Flags::user_data();
        // Two PML4 slots, several PDs and PTs in the user half.
        for va in [0x1000, 0x2000, 0x20_0000, 0x4000_0000, 0x80_0000_0000, 0x80_0000_1000] {
            map::<X86_64, _>(&mut m, root, va, 0x1000, f).unwrap();
        }
        let kva = 0xffff_ff80_0000_0000;
        map::<X86_64, _>(&mut m, root, kva, 0x5000, Flags::kernel_data()).unwrap();
        let before = m.count();
        // User half: slot 0 = PDPT + 2 PDs + 3 PTs, slot 1 = PDPT + PD + PT.
        assert_eq!(destroy::<X86_64, _>(&mut m, root, 0..256), 9);
        assert_eq!(m.count(), before - 9);
        assert_eq!(translate::<X86_64, _>(&m, root, 0x1000), None);
        assert_eq!(translate::<X86_64, _>(&m, root, kva), Some((0x5000, Flags::kernel_data())));
        assert_eq!(destroy::<X86_64, _>(&mut m, root, 0..256), 0);
        assert_eq!(destroy::<X86_64, _>(&mut m, root, 256..10_000), 3);
        assert_eq!(m.count(), 1);
    }

    #[test]
    fn ept_entries() {
        let (mut m, root) = FakeMem::new();
        let gpa = 0x0000_8000_0000_0000; // guest-physical: above 2^47 is fine
        map::<Ept, _>(&mut m, root, gpa, 0x3000, Flags::guest_ram()).unwrap();
        assert_eq!(raw_leaf(&m, root, gpa), 0x3000 | 1 | 2 | 4 | (6 << 3));
        assert_eq!(m.read_entry(root, 256) & !ADDR_MASK, 7);
        let ro = Flags::read_only();
        map::<Ept, _>(&mut m, root, 0x1000, 0x4000, ro).unwrap();
        assert_eq!(raw_leaf(&m, root, 0x1000), 0x4000 | 1 | (6 << 3));
        map::<Ept, _>(&mut m, root, 0x2000, 0xfee0_0000, Flags::mmio()).unwrap();
        assert_eq!(raw_leaf(&m, root, 0x2000), 0xfee0_0000 | 1 | 2);
        assert_eq!(
            translate::<Ept, _>(&m, root, 0x2000),
            Some((0xfee0_0000, Flags { writable: true, cache_disable: true, ..ro }))
        );
        let wt = Flags { write_through: true, ..ro };
        assert_eq!(Ept::flags(Ept::leaf(0, wt)), wt);
        assert_eq!(map::<Ept, _>(&mut m, root, 1 << 48, 0x1000, ro), Err(MapError::NonCanonical));
        assert_eq!(translate::<Ept, _>(&m, root, gpa + 8).map(|t| t.0), Some(0x3008));
        for va in [gpa, 0x1000, 0x2000] {
            unmap::<Ept, _>(&mut m, root, va).unwrap();
        }
        assert_eq!(m.count(), 1);
    }

    #[test]
    fn npt_entries_are_user_and_take_guest_physical() {
        let (mut m, root) = FakeMem::new();
        map::<Npt, _>(&mut m, root, 0x0000_8000_0000_0000, 0x3000, Flags::kernel_data()).unwrap();
        assert_eq!(raw_leaf(&m, root, 0x0000_8000_0000_0000), 0x3000 | 1 | 2 | 4 | 0x20 | 0x40 | (1 << 63));
        assert_eq!(m.read_entry(root, 256) & !ADDR_MASK, 0x27);
        assert_eq!(
            map::<Npt, _>(&mut m, root, 1 << 48, 0x1000, Flags::guest_ram()),
            Err(MapError::NonCanonical)
        );
    }

    #[test]
    fn leaf_entry_is_the_raw_leaf_or_nothing() {
        let (mut m, root) = FakeMem::new();
        map::<Npt, _>(&mut m, root, 0x5000, 0x9000, Flags::guest_ram()).unwrap();
        assert_eq!(leaf_entry::<Npt, _>(&m, root, 0x5000), Some(0x9000 | 1 | 2 | 4 | 0x20 | 0x40));
        // Any byte of the page; the CPU's own bits come back as they are.
        let pt = {
            let mut t = root;
            for level in (2..=4).rev() {
                t = m.read_entry(t, index(0x5000, level)) & ADDR_MASK;
            }
            t
        };
        m.write_entry(pt, 5, 0x9000 | 1 | (0x5a << 52));
        assert_eq!(leaf_entry::<Npt, _>(&m, root, 0x5fff), Some(0x9000 | 1 | (0x5a << 52)));
        assert_eq!(leaf_entry::<Npt, _>(&m, root, 0x6000), None);
        assert_eq!(leaf_entry::<Npt, _>(&m, root, 0x1_0000_0000), None);
        assert_eq!(leaf_entry::<Npt, _>(&m, root, 1 << 48), None);
        assert_eq!(leaf_entry::<X86_64, _>(&m, root, 0x0000_8000_0000_0000), None);
        // A huge leaf is the leaf.
        let pdpt = m.read_entry(root, 0) & ADDR_MASK;
        m.write_entry(pdpt, 1, 0xc000_0000 | 0x83);
        assert_eq!(leaf_entry::<X86_64, _>(&m, root, 0x4000_1234), Some(0xc000_0000 | 0x83));
    }

    /// A small xorshift: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn random_sequence_against_model<F: PteFormat>(seed: u64, canonical_high: bool) {
        let (mut m, root) = FakeMem::new();
        let mut model: BTreeMap<u64, (u64, Flags)> = BTreeMap::new();
        let mut rng = Rng(seed);
        let flag_set =
            [Flags::user_data(), Flags::user_code(), Flags::user_rodata(), Flags::guest_ram()];
        // Addresses clustered so tables are shared and emptied often.
        let pick = |r: u64| {
            let pml4 = if canonical_high && r & 1 == 1 { 0xffff_8000_0000_0000 } else { 0 };
            let pdpt = ((r >> 1) & 1) << 30;
            let pd = ((r >> 2) & 3) << 21;
            let pt = ((r >> 4) & 7) << 12;
            pml4 | pdpt | pd | pt
        };
        for step in 0..4000 {
            let r = rng.next();
            let va = pick(r >> 8);
            let flags = flag_set[(r & 3) as usize];
            let flags = F::flags(F::leaf(0, flags)); // what the format can hold
            match (r >> 4) & 3 {
                0 | 1 => {
                    let pa = (r >> 20) & ADDR_MASK & 0xffff_f000;
                    let got = map::<F, _>(&mut m, root, va, pa, flags);
                    match model.entry(va) {
                        Entry::Occupied(_) => {
                            assert_eq!(got, Err(MapError::AlreadyMapped), "step {step}")
                        }
                        Entry::Vacant(e) => {
                            assert!(got.is_ok(), "step {step}");
                            e.insert((pa, flags));
                        }
                    }
                }
                2 => {
                    let got = unmap::<F, _>(&mut m, root, va);
                    match model.remove(&va) {
                        Some((pa, _)) => assert_eq!(got.map(|u| u.frame), Ok(pa), "step {step}"),
                        None => assert_eq!(got, Err(MapError::NotMapped), "step {step}"),
                    }
                }
                _ => {
                    let got = protect::<F, _>(&mut m, root, va, flags);
                    match model.get_mut(&va) {
                        Some(entry) => {
                            assert_eq!(got, Ok(entry.1), "step {step}");
                            entry.1 = flags;
                        }
                        None => assert_eq!(got, Err(MapError::NotMapped), "step {step}"),
                    }
                }
            }
            for k in 0..64 {
                let va = pick(k);
                assert_eq!(translate::<F, _>(&m, root, va), model.get(&va).copied(), "step {step}");
            }
        }
        let left: Vec<u64> = model.keys().copied().collect();
        for va in left {
            unmap::<F, _>(&mut m, root, va).unwrap();
        }
        assert_eq!(m.count(), 1);
    }

    #[test]
    fn random_map_unmap_matches_model() {
        for seed in [1, 0x9e37_79b9_7f4a_7c15, 42] {
            random_sequence_against_model::<X86_64>(seed, true);
            random_sequence_against_model::<Ept>(seed, false);
        }
    }
}
