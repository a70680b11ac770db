//! The boot memory map: from the firmware's list of regions (Multiboot2 mmap
//! or UEFI memory descriptors, which may overlap, be unsorted or be empty) to
//! a sorted list of page-aligned free ranges with the kernel image, the boot
//! modules and the first MiB carved out. The frame allocator starts from it.

/// What the firmware said a region is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM the OS may use.
    Usable,
    /// ACPI tables; usable once they have been read.
    AcpiReclaimable,
    /// ACPI non-volatile storage; never touch.
    AcpiNvs,
    /// Defective RAM.
    Bad,
    /// Anything else: firmware, MMIO holes, unknown types.
    Reserved,
}

/// One physical region, `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub len: u64,
    pub kind: RegionKind,
}

impl Region {
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

pub const PAGE_SIZE: u64 = 4096;

/// Regions that are free for the kernel's frame allocator, at most `N`.
#[derive(Clone, Debug)]
pub struct FreeMap<const N: usize> {
    ranges: [(u64, u64); N],
    count: usize,
    /// Free bytes that did not fit in `N` ranges (reported, never used).
    pub dropped_bytes: u64,
}

impl<const N: usize> Default for FreeMap<N> {
    fn default() -> Self {
        Self { ranges: [(0, 0); N], count: 0, dropped_bytes: 0 }
    }
}

impl<const N: usize> FreeMap<N> {
    /// Builds the free map: usable regions, page-aligned inwards, minus every
    /// region that is not usable (firmware maps overlap in the wild), minus
    /// `reserved` (kernel image, boot modules, boot information), minus the
    /// first MiB (real-mode structures, AP trampoline later).
    pub fn build(regions: &[Region], reserved: &[(u64, u64)]) -> Self {
        let mut map = Self::default();
        for r in regions.iter().filter(|r| r.kind == RegionKind::Usable) {
            let start = align_up(r.start.max(0x10_0000));
            let end = align_down(r.end());
            if start < end {
                map.insert(start, end);
            }
        }
        for r in regions.iter().filter(|r| r.kind != RegionKind::Usable) {
            map.remove(align_down(r.start), align_up(r.end()));
        }
        for &(s, e) in reserved {
            map.remove(align_down(s), align_up(e));
        }
        map
    }

    /// Free ranges as `(start, end)`, sorted and disjoint.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.count]
    }

    /// Total free bytes.
    pub fn total_bytes(&self) -> u64 {
        self.ranges().iter().map(|(s, e)| e - s).sum()
    }

    fn insert(&mut self, start: u64, end: u64) {
        // Merge with every overlapping or touching range, then insert sorted.
        let (mut s, mut e) = (start, end);
        let mut i = 0;
        while i < self.count {
            let (rs, re) = self.ranges[i];
            if rs <= e && s <= re {
                s = s.min(rs);
                e = e.max(re);
                self.delete(i);
            } else {
                i += 1;
            }
        }
        let pos = self.ranges().iter().position(|&(rs, _)| rs > s).unwrap_or(self.count);
        self.insert_at(pos, (s, e));
    }

    fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut i = 0;
        while i < self.count {
            let (rs, re) = self.ranges[i];
            if re <= start || end <= rs {
                i += 1;
                continue;
            }
            self.delete(i);
            if rs < start {
                self.insert_at(i, (rs, start));
                i += 1;
            }
            if end < re {
                self.insert_at(i, (end, re));
                i += 1;
            }
        }
    }

    fn delete(&mut self, i: usize) {
        self.ranges.copy_within(i + 1..self.count, i);
        self.count -= 1;
    }

    fn insert_at(&mut self, i: usize, r: (u64, u64)) {
        if self.count == N {
            // Keep the larger ranges: drop the smallest of the set plus `r`.
            let (mut min_i, mut min_len) = (N, r.1 - r.0);
            for (j, &(s, e)) in self.ranges().iter().enumerate() {
                if e - s < min_len {
                    min_i = j;
                    min_len = e - s;
                }
            }
            self.dropped_bytes += min_len;
            if min_i == N {
                return;
            }
            self.delete(min_i);
            let i = if min_i < i { i - 1 } else { i };
            return self.insert_at(i, r);
        }
        self.ranges.copy_within(i..self.count, i + 1);
        self.ranges[i] = r;
        self.count += 1;
    }
}

const fn align_up(x: u64) -> u64 {
    match x.checked_add(PAGE_SIZE - 1) {
        Some(v) => v & !(PAGE_SIZE - 1),
        None => !(PAGE_SIZE - 1),
    }
}

const fn align_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable(start: u64, len: u64) -> Region {
        Region { start, len, kind: RegionKind::Usable }
    }

    #[test]
    fn qemu_seabios_shape() {
        // QEMU with 512 MiB under SeaBIOS.
        let regions = [
            usable(0, 0x9fc00),
            Region { start: 0x9fc00, len: 0x400, kind: RegionKind::Reserved },
            Region { start: 0xf0000, len: 0x10000, kind: RegionKind::Reserved },
            usable(0x100000, 0x1fee0000),
            Region { start: 0x1ffe0000, len: 0x20000, kind: RegionKind::Reserved },
            Region { start: 0xfffc0000, len: 0x40000, kind: RegionKind::Reserved },
        ];
        let kernel = (0x100000, 0x180000);
        let module = (0x200000, 0x201234);
        let m = FreeMap::<8>::build(&regions, &[kernel, module]);
        assert_eq!(m.ranges(), &[(0x180000, 0x200000), (0x202000, 0x1ffe0000)]);
        assert_eq!(m.total_bytes(), 0x80000 + 0x1ffe0000 - 0x202000);
    }

    #[test]
    fn overlapping_and_unsorted_regions() {
        let regions = [
            usable(0x400000, 0x400000),
            usable(0x200000, 0x300000), // overlaps the first
            Region { start: 0x500000, len: 0x1000, kind: RegionKind::AcpiNvs },
            usable(0x900001, 0x1000), // not a whole page once aligned
        ];
        let m = FreeMap::<8>::build(&regions, &[]);
        assert_eq!(m.ranges(), &[(0x200000, 0x500000), (0x501000, 0x800000)]);
    }

    #[test]
    fn empty_and_hostile_maps() {
        assert_eq!(FreeMap::<4>::build(&[], &[]).total_bytes(), 0);
        let m = FreeMap::<4>::build(&[usable(u64::MAX - 10, 100), usable(0x100000, 0)], &[]);
        assert_eq!(m.total_bytes(), 0);
        let m = FreeMap::<4>::build(&[usable(0x100000, 0x100000)], &[(0, u64::MAX)]);
        assert_eq!(m.total_bytes(), 0);
    }

    #[test]
    fn overflowing_capacity_keeps_largest() {
        let regions: [Region; 5] =
            core::array::from_fn(|i| usable(0x1000_0000 * (i as u64 + 1), 0x1000 * (i as u64 + 1)));
        let m = FreeMap::<3>::build(&regions, &[]);
        assert_eq!(m.ranges().len(), 3);
        assert_eq!(m.total_bytes(), 0x1000 * (3 + 4 + 5));
        assert_eq!(m.dropped_bytes, 0x1000 * (1 + 2));
    }
}
