//! BAR sizing that leaves the machine's memory map alone.
//!
//! `virtio-drivers` sizes a BAR each time it needs one's size: `PciRoot::bars`
//! once per BAR, `PciTransport::new` once per virtio capability (four or five,
//! mostly in the same BAR). Each sizing turns the function's decoding off and
//! on again around an all-ones write (PCI Local Bus 3.0 §6.2.5.1), and each of
//! those two command writes moves the function's BARs in or out of the
//! physical address space: about fourteen memory-map changes per driver start.
//!
//! That costs little on hardware but is a hazard under QEMU before 8.2 with
//! one thread per vCPU: a memory-map change (`tcg_commit`) swaps every other
//! vCPU's dispatch table while that vCPU may be in the middle of an MMIO access
//! through a TLB entry filled against the old one, and QEMU dereferences a
//! section that is no longer there (a NULL `MemoryRegion` in
//! `memory_region_dispatch_read`/`write`: QEMU itself segfaults; fixed upstream
//! by "softmmu: Use async_run_on_cpu in tcg_commit"). Alcove's other CPUs are
//! always doing MMIO (the local APIC, other drivers' devices), so fewer changes
//! is fewer chances.
//!
//! [`Shadowed`] wraps a configuration access and sizes all of a type-0
//! function's BARs once, inside one decoding-off window, the first time any of
//! them is sized; every later sizing is answered from what it learnt, and the
//! command write that would have turned decoding off around it is held back
//! and dropped when the caller turns decoding back on. One driver start now
//! changes the memory map twice per function. Everything else passes through:
//! a write that moves a BAR, a command write that changes more than decoding,
//! any other register (a held command write is made before it).

use alloc::collections::BTreeMap;

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

/// The command register (low half; the status half above it is
/// write-1-to-clear).
const COMMAND: u8 = 0x04;
/// Header type (bits 16..23 of this word; bit 7 is "multi-function").
const HEADER: u8 = 0x0c;
/// The six BAR registers of a type-0 header.
const BAR0: u8 = 0x10;
const BARS: usize = 6;
/// I/O space and memory space decoding (command bits 0 and 1).
const DECODE: u32 = 0b11;

type Key = (u8, u8, u8);

fn key(df: DeviceFunction) -> Key {
    (df.bus, df.device, df.function)
}

fn bar_index(register_offset: u8) -> Option<usize> {
    let i = register_offset.checked_sub(BAR0)?;
    (i % 4 == 0 && usize::from(i / 4) < BARS).then_some(usize::from(i / 4))
}

/// A configuration access that sizes each BAR in hardware at most once.
pub struct Shadowed<C: ConfigurationAccess> {
    inner: C,
    /// What each BAR register read back after all ones were written to it.
    masks: BTreeMap<Key, [Option<u32>; BARS]>,
    /// A command write that only turned decoding off, not made yet.
    held: Option<(DeviceFunction, u32)>,
    /// The BAR register the caller last wrote all ones to, answered from
    /// `masks` until it writes that register again.
    sizing: Option<(DeviceFunction, u8)>,
    /// BAR registers sized in hardware (for tests and logs).
    hardware_sizings: u32,
}

impl<C: ConfigurationAccess> Shadowed<C> {
    pub fn new(inner: C) -> Self {
        Self { inner, masks: BTreeMap::new(), held: None, sizing: None, hardware_sizings: 0 }
    }

    /// BAR registers sized in hardware so far (each an all-ones write).
    pub fn hardware_sizings(&self) -> u32 {
        self.hardware_sizings
    }

    /// Makes a held command write.
    fn flush(&mut self) {
        if let Some((df, command)) = self.held.take() {
            self.inner.write_word(df, COMMAND, command);
        }
    }

    /// Sizes `register`, and every other BAR of `df` if it has a type-0
    /// header (a bridge's header has two BARs and bus numbers after them),
    /// restoring each; decoding is off if the caller turned it off.
    fn learn(&mut self, df: DeviceFunction, register: u8) {
        self.flush();
        let type0 = (self.inner.read_word(df, HEADER) >> 16) & 0x7f == 0;
        let entry = self.masks.entry(key(df)).or_insert([None; BARS]);
        for (i, slot) in entry.iter_mut().enumerate() {
            let offset = BAR0 + 4 * i as u8;
            if slot.is_some() || (!type0 && offset != register) {
                continue;
            }
            let original = self.inner.read_word(df, offset);
            self.inner.write_word(df, offset, u32::MAX);
            *slot = Some(self.inner.read_word(df, offset));
            self.inner.write_word(df, offset, original);
            self.hardware_sizings += 1;
        }
    }

    fn mask(&self, df: DeviceFunction, register: u8) -> Option<u32> {
        let i = bar_index(register)?;
        self.masks.get(&key(df)).and_then(|m| m[i])
    }
}

impl<C: ConfigurationAccess> ConfigurationAccess for Shadowed<C> {
    fn read_word(&self, df: DeviceFunction, register_offset: u8) -> u32 {
        if self.sizing == Some((df, register_offset))
            && let Some(mask) = self.mask(df, register_offset)
        {
            return mask;
        }
        let word = self.inner.read_word(df, register_offset);
        match self.held {
            Some((held_df, command)) if held_df == df && register_offset == COMMAND => (word & 0xffff_0000) | (command & 0xffff),
            _ => word,
        }
    }

    fn write_word(&mut self, df: DeviceFunction, register_offset: u8, data: u32) {
        if register_offset == COMMAND && data >> 16 == 0 {
            if self.held.is_some_and(|(held_df, _)| held_df != df) {
                self.flush();
            }
            let now = self.inner.read_word(df, COMMAND) & 0xffff;
            if data == now {
                // Decoding back as it is: the held write never happened.
                self.held = None;
            } else if (data ^ now) & !DECODE == 0 && data & DECODE & !now == 0 {
                // Only turns decoding off: wait for what it is for.
                self.held = Some((df, data));
            } else {
                self.held = None;
                self.inner.write_word(df, COMMAND, data);
            }
            return;
        }
        if bar_index(register_offset).is_some() {
            if data == u32::MAX {
                if self.mask(df, register_offset).is_none() {
                    self.learn(df, register_offset);
                }
                self.sizing = Some((df, register_offset));
                return;
            }
            if self.sizing == Some((df, register_offset)) {
                self.sizing = None;
            }
            if self.inner.read_word(df, register_offset) == data {
                return;
            }
        }
        self.flush();
        self.inner.write_word(df, register_offset, data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        // SAFETY: the caller's contract (`ConfigurationAccess::unsafe_clone`)
        // is passed on; the clone holds no command write back and is sizing
        // nothing, so dropping it makes no write.
        let inner = unsafe { self.inner.unsafe_clone() };
        Self { inner, masks: self.masks.clone(), held: None, sizing: None, hardware_sizings: 0 }
    }
}

impl<C: ConfigurationAccess> Drop for Shadowed<C> {
    fn drop(&mut self) {
        // A caller that turned decoding off and never needed a BAR sized
        // meant it: make the write.
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use alloc::rc::Rc;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    use virtio_drivers::transport::pci::bus::{BarInfo, PciRoot};

    use super::*;

    const DF: DeviceFunction = DeviceFunction { bus: 0, device: 4, function: 0 };

    /// One function's configuration space as QEMU keeps it, counting the
    /// changes of what it decodes (QEMU's memory-map changes).
    #[derive(Default)]
    struct Device {
        header_type: u8,
        command: u32,
        /// Read-only bits of each BAR register (the size, the flags).
        read_only: [u32; BARS],
        bars: [u32; BARS],
        other: BTreeMap<u8, u32>,
        map_changes: u32,
        writes: Vec<(u8, u32)>,
    }

    impl Device {
        /// A modern virtio function: BAR0 I/O (32 ports), BAR1 4 KiB
        /// memory (the MSI-X table), BAR4+5 a 64-bit 16 KiB memory BAR.
        fn virtio() -> Self {
            Self {
                command: 0b111,
                read_only: [0x1f, 0xfff, u32::MAX, u32::MAX, 0x3fff, 0],
                bars: [0xc001, 0xfebd_1000, 0, 0, 0xfe00_000c, 0x0000_0001],
                ..Self::default()
            }
        }

        /// What the function decodes: (BAR, address) pairs.
        fn decoded(&self) -> Vec<(usize, u64)> {
            let mut out = Vec::new();
            let mut i = 0;
            while i < BARS {
                let value = self.bars[i];
                let io = value & 1 == 1;
                let wide = !io && value & 0b110 == 0b100;
                let enabled = if io { self.command & 1 != 0 } else { self.command & 2 != 0 };
                let mut address = u64::from(value & if io { !0b11 } else { !0b1111 });
                if wide && i + 1 < BARS {
                    address |= u64::from(self.bars[i + 1]) << 32;
                }
                if enabled && self.read_only[i] != u32::MAX {
                    out.push((i, address));
                }
                i += if wide { 2 } else { 1 };
            }
            out
        }
    }

    #[derive(Clone)]
    struct Fake(Rc<RefCell<Device>>);

    impl ConfigurationAccess for Fake {
        fn read_word(&self, df: DeviceFunction, register_offset: u8) -> u32 {
            let d = self.0.borrow();
            if df != DF {
                return u32::MAX;
            }
            match register_offset {
                0x00 => 0x1041_1af4,
                COMMAND => d.command,
                HEADER => u32::from(d.header_type) << 16,
                r => match bar_index(r) {
                    Some(i) => d.bars[i],
                    None => d.other.get(&r).copied().unwrap_or(0),
                },
            }
        }

        fn write_word(&mut self, df: DeviceFunction, register_offset: u8, data: u32) {
            assert_eq!(df, DF);
            let mut d = self.0.borrow_mut();
            let before = d.decoded();
            d.writes.push((register_offset, data));
            match register_offset {
                COMMAND => d.command = data & 0xffff,
                r => match bar_index(r) {
                    Some(i) => d.bars[i] = (d.bars[i] & d.read_only[i]) | (data & !d.read_only[i]),
                    None => {
                        d.other.insert(r, data);
                    }
                },
            }
            if d.decoded() != before {
                d.map_changes += 1;
            }
        }

        unsafe fn unsafe_clone(&self) -> Self {
            self.clone()
        }
    }

    fn device(d: Device) -> (Fake, Rc<RefCell<Device>>) {
        let state = Rc::new(RefCell::new(d));
        (Fake(state.clone()), state)
    }

    /// What a driver start asks of the BARs: every BAR, then the BAR of
    /// each virtio capability (common, notify, ISR, device: all BAR4).
    fn driver_start<C: ConfigurationAccess>(root: &mut PciRoot<C>) -> (Vec<Option<BarInfo>>, Vec<Option<BarInfo>>) {
        let bars = root.bars(DF).unwrap().to_vec();
        let caps = (0..4).map(|_| root.bar_info(DF, 4).unwrap()).collect();
        (bars, caps)
    }

    #[test]
    fn a_driver_start_sizes_each_bar_once_and_changes_the_memory_map_twice() {
        let (plain, plain_state) = device(Device::virtio());
        let mut root = PciRoot::new(plain);
        let expected = driver_start(&mut root);
        let plain_changes = plain_state.borrow().map_changes;
        assert!(plain_changes > 2, "the model counts the changes of sizing done plainly: {plain_changes}");

        let (fake, state) = device(Device::virtio());
        let before = state.borrow().decoded();
        let mut root = PciRoot::new(Shadowed::new(fake));
        assert_eq!(driver_start(&mut root), expected, "the same sizes and addresses as sizing in hardware each time");
        let d = state.borrow();
        assert_eq!(d.map_changes, 2, "decoding off once, on once (sizing plainly: {plain_changes})");
        assert_eq!(d.decoded(), before, "every BAR back where it was, decoded");
        assert_eq!(d.command, 0b111);
        let all_ones = d.writes.iter().filter(|&&(r, v)| bar_index(r).is_some() && v == u32::MAX).count();
        assert_eq!(all_ones, BARS, "each BAR register sized in hardware once");
        assert_eq!(expected.0[4], Some(BarInfo::Memory {
            address_type: virtio_drivers::transport::pci::bus::MemoryBarType::Width64,
            prefetchable: true,
            address: 0x1_fe00_0000,
            size: 0x4000,
        }));
    }

    #[test]
    fn a_bar_the_caller_moves_moves() {
        let (fake, state) = device(Device::virtio());
        let mut cam = Shadowed::new(fake);
        cam.write_word(DF, COMMAND, 0b101);
        cam.write_word(DF, BAR0 + 4, u32::MAX);
        assert_eq!(cam.read_word(DF, BAR0 + 4), 0xffff_f000);
        cam.write_word(DF, BAR0 + 4, 0xfebd_1000);
        assert_eq!(state.borrow().command, 0b101, "decoding is off before the BAR is written");
        cam.write_word(DF, BAR0 + 4, 0xfebd_8000);
        cam.write_word(DF, COMMAND, 0b111);
        assert_eq!(state.borrow().bars[1], 0xfebd_8000);
        assert_eq!(cam.read_word(DF, BAR0 + 4), 0xfebd_8000, "a BAR no longer being sized reads the hardware");
        assert!(state.borrow().decoded().contains(&(1, 0xfebd_8000)));
    }

    #[test]
    fn decoding_turned_off_for_good_is_turned_off() {
        let (fake, state) = device(Device::virtio());
        let mut cam = Shadowed::new(fake);
        cam.write_word(DF, COMMAND, 0b100);
        assert_eq!(cam.read_word(DF, COMMAND) & 0xffff, 0b100, "the caller reads what it wrote");
        cam.write_word(DF, 0x3c, 0x0000_010b);
        assert_eq!(state.borrow().command, 0b100, "made before any other register is written");

        let (fake, state) = device(Device::virtio());
        let mut cam = Shadowed::new(fake);
        cam.write_word(DF, COMMAND, 0b001);
        drop(cam);
        assert_eq!(state.borrow().command, 0b001, "made when the access is dropped");
    }

    #[test]
    fn a_command_write_that_does_more_than_decoding_goes_through() {
        let (fake, state) = device(Device::virtio());
        let mut cam = Shadowed::new(fake);
        cam.write_word(DF, COMMAND, 0b011);
        assert_eq!(state.borrow().command, 0b011, "bus mastering off is made at once");
        cam.write_word(DF, COMMAND, 0b111);
        assert_eq!(state.borrow().command, 0b111);
        cam.write_word(DF, COMMAND, 0x0100_0000 | 0b111);
        assert_eq!(state.borrow().writes.last(), Some(&(COMMAND, 0x0100_0000 | 0b111)), "a status write goes through");
    }

    #[test]
    fn a_bridge_has_only_the_bars_asked_for_sized() {
        let mut d = Device::virtio();
        d.header_type = 1;
        d.read_only = [0xfff, u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX];
        d.bars = [0xfeb0_0000, 0, 0x0001_0100, 0, 0, 0];
        let (fake, state) = device(d);
        let mut root = PciRoot::new(Shadowed::new(fake));
        let info = root.bar_info(DF, 0).unwrap();
        assert!(matches!(info, Some(BarInfo::Memory { address: 0xfeb0_0000, size: 0x1000, .. })));
        let d = state.borrow();
        assert!(
            d.writes.iter().all(|&(r, _)| r == COMMAND || r == BAR0),
            "bus numbers and windows after a bridge's BARs are never written: {:?}",
            d.writes
        );
        assert_eq!(d.bars[2], 0x0001_0100);
    }
}
