//! Bus 0 end to end: configuration mechanism #1 and ECAM, BAR placement,
//! sizing and decoding, capabilities, MSI-X masking, INTx wiring, and a
//! fuzz run of hostile accesses.

use super::config::*;
use super::*;
use crate::devices::XorShift;
use crate::virtio::VecMemory;
use alloc::string::ToString;
use alloc::vec;

const TABLE: u64 = 0x2000;
const PBA: u64 = 0x3000;

/// A function with a 64-bit memory BAR 0 (holding an MSI-X table of 4
/// vectors), a 32-bit memory BAR 2, an I/O BAR 3 and INTA#.
struct TestDev {
    config: ConfigSpace,
    msix: Msix,
    writes: Vec<(usize, u64, u8, u64)>,
    out: Vec<MsiMessage>,
    intx: bool,
}

const TEST_IDS: PciIds = PciIds {
    vendor_id: 0x1234,
    device_id: 0x5678,
    revision_id: 3,
    class_code: 0xFF_00_00,
    subsystem_vendor_id: 0x1AF4,
    subsystem_id: 0x1100,
};

impl TestDev {
    fn new() -> Self {
        let mut config = ConfigSpace::new(TEST_IDS, 1);
        config.add_bar(0, BarSpec { kind: BarKind::Memory64 { prefetchable: false }, size: 0x4000 }).unwrap();
        config.add_bar(2, BarSpec { kind: BarKind::Memory32 { prefetchable: true }, size: 0x1000 }).unwrap();
        config.add_bar(3, BarSpec { kind: BarKind::Io, size: 0x20 }).unwrap();
        // A vendor capability before MSI-X, to walk a list of two.
        config.add_capability(0x09, &[4, 0xAA, 0xBB], &[]).unwrap();
        let msix = Msix::new(&mut config, 4, 0, TABLE as u32, 0, PBA as u32).unwrap();
        Self { config, msix, writes: Vec::new(), out: Vec::new(), intx: false }
    }

    fn raise(&mut self, vector: u16) -> bool {
        self.msix.notify(vector, &self.config, &mut self.out)
    }
}

impl PciDevice for TestDev {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
    fn config_write(&mut self, offset: u16, size: u8, value: u32, _mem: &mut dyn GuestMemory) {
        self.config.write(offset, size, value);
        self.msix.config_written(&self.config, &mut self.out);
    }
    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64 {
        match (bar, offset) {
            (0, TABLE..0x3000) => self.msix.read_table(offset - TABLE, size),
            (0, PBA..0x4000) => self.msix.read_pba(offset - PBA, size),
            _ => (bar as u64) << 56 | offset,
        }
    }
    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64, _mem: &mut dyn GuestMemory) {
        if bar == 0 && (TABLE..0x3000).contains(&offset) {
            self.msix.write_table(offset - TABLE, size, value, &self.config, &mut self.out);
        } else {
            self.writes.push((bar, offset, size, value));
        }
    }
    fn take_msi(&mut self, out: &mut Vec<MsiMessage>) {
        out.append(&mut self.out);
    }
    fn intx_asserted(&self) -> bool {
        self.intx
    }
}

fn cf8(slot: u8, reg: u8) -> u32 {
    0x8000_0000 | u32::from(slot) << 11 | u32::from(reg)
}

fn ecam(slot: u8, reg: u64) -> u64 {
    layout::ECAM_BASE + (u64::from(slot) << 15) + reg
}

struct Rig {
    bus: PciBus,
    mem: VecMemory,
}

impl Rig {
    fn new() -> Self {
        Self { bus: PciBus::new(), mem: VecMemory::new(0, 0x1000) }
    }
    fn cfg_read(&mut self, slot: u8, reg: u8, size: u8) -> u32 {
        assert!(self.bus.io_write(0xCF8, 4, cf8(slot, reg & 0xFC), &mut self.mem));
        self.bus.io_read(0xCFC + u16::from(reg & 3), size).unwrap()
    }
    fn cfg_write(&mut self, slot: u8, reg: u8, size: u8, value: u32) {
        assert!(self.bus.io_write(0xCF8, 4, cf8(slot, reg & 0xFC), &mut self.mem));
        assert!(self.bus.io_write(0xCFC + u16::from(reg & 3), size, value, &mut self.mem));
    }
    fn ecam_read(&mut self, slot: u8, reg: u64, size: u8) -> u32 {
        self.bus.mmio_read(ecam(slot, reg), size).unwrap() as u32
    }
    fn ecam_write(&mut self, slot: u8, reg: u64, size: u8, value: u32) {
        assert!(self.bus.mmio_write(ecam(slot, reg), size, u64::from(value), &mut self.mem));
    }
    fn add_test_dev(&mut self) -> PciSlot {
        self.bus.add(Box::new(TestDev::new())).unwrap()
    }
}

#[test]
fn host_bridge_through_both_mechanisms() {
    let mut r = Rig::new();
    assert_eq!(r.cfg_read(0, 0, 4), 0x29C0_8086);
    assert_eq!(r.cfg_read(0, 8, 4), 0x0600_0000);
    assert_eq!(r.cfg_read(0, 0x0E, 1), 0, "type-0 header, single function");
    assert_eq!(r.cfg_read(0, 0x2C, 4), 0x1100_1AF4);
    assert_eq!(r.cfg_read(0, 0x3D, 1), 0, "no interrupt pin");
    assert_eq!(r.ecam_read(0, 0, 4), 0x29C0_8086);
    assert_eq!(r.ecam_read(0, 0xB, 1), 0x06);
    assert_eq!(r.ecam_read(0, 2, 2), 0x29C0);
    // Sub-dword data ports.
    assert_eq!(r.cfg_read(0, 2, 2), 0x29C0);
    assert_eq!(r.cfg_read(0, 3, 1), 0x29);
    // Extended space reads 0: no extended capabilities.
    assert_eq!(r.ecam_read(0, 0x100, 4), 0);
    assert_eq!(r.ecam_read(0, 0xFFC, 4), 0);
}

#[test]
fn absent_functions_read_all_ones() {
    let mut r = Rig::new();
    assert_eq!(r.cfg_read(5, 0, 4), 0xFFFF_FFFF);
    assert_eq!(r.cfg_read(31, 0, 2), 0xFFFF);
    // Function 1 of the bridge, bus 1.
    r.bus.io_write(0xCF8, 4, 0x8000_0100, &mut r.mem);
    assert_eq!(r.bus.io_read(0xCFC, 4), Some(0xFFFF_FFFF));
    r.bus.io_write(0xCF8, 4, 0x8001_0000, &mut r.mem);
    assert_eq!(r.bus.io_read(0xCFC, 4), Some(0xFFFF_FFFF));
    // Enable bit clear: no configuration cycle.
    r.bus.io_write(0xCF8, 4, 0x0000_0000, &mut r.mem);
    assert_eq!(r.bus.io_read(0xCFC, 4), Some(0xFFFF_FFFF));
    assert!(r.bus.io_write(0xCFC, 4, 0, &mut r.mem));
    // ECAM function 1 and past the bus-0 window.
    assert_eq!(r.bus.mmio_read(layout::ECAM_BASE + 0x1000, 4), Some(0xFFFF_FFFF));
    assert_eq!(r.bus.mmio_read(layout::ECAM_BASE + layout::ECAM_SIZE, 4), None);
    assert_eq!(r.bus.mmio_read(layout::ECAM_BASE - 4, 4), None);
}

#[test]
fn config_address_register() {
    let mut r = Rig::new();
    r.bus.io_write(0xCF8, 4, 0xFFFF_FFFF, &mut r.mem);
    assert_eq!(r.bus.io_read(0xCF8, 4), Some(0x80FF_FFFC), "reserved bits read 0");
    // Linux's type-1 probe: outb(1, 0xCFB); outl(0x80000000, 0xCF8); inl.
    assert!(r.bus.io_write(0xCFB, 1, 1, &mut r.mem));
    r.bus.io_write(0xCF8, 4, 0x8000_0000, &mut r.mem);
    assert_eq!(r.bus.io_read(0xCF8, 4), Some(0x8000_0000));
    // Byte writes do not touch CONFIG_ADDRESS; the type-2 probe fails.
    assert!(r.bus.io_write(0xCF8, 1, 0, &mut r.mem));
    assert!(r.bus.io_write(0xCFA, 1, 0, &mut r.mem));
    assert_eq!(r.bus.io_read(0xCF8, 1), Some(0xFF));
    assert_eq!(r.bus.io_read(0xCFA, 1), Some(0xFF));
    assert_eq!(r.bus.io_read(0xCF8, 4), Some(0x8000_0000));
    // 0xCF9 (reset control) is left to the VMM.
    assert_eq!(r.bus.io_read(0xCF9, 1), None);
    assert!(!r.bus.io_write(0xCF9, 1, 6, &mut r.mem));
    // A data access crossing the dword.
    assert_eq!(r.bus.io_read(0xCFE, 4), Some(0xFFFF_FFFF));
    assert_eq!(r.bus.io_read(0xCFF, 2), Some(0xFFFF));
    // Unrelated ports.
    assert_eq!(r.bus.io_read(0x3F8, 1), None);
    assert!(!r.bus.io_write(0x80, 1, 0, &mut r.mem));
}

#[test]
fn bars_are_placed_in_the_window_and_decoding_enabled() {
    let mut r = Rig::new();
    let a = r.add_test_dev();
    let b = r.add_test_dev();
    assert_eq!((a, b), (PciSlot(1), PciSlot(2)));
    let ca = r.bus.config(a).unwrap().clone();
    let cb = r.bus.config(b).unwrap().clone();
    let mut seen = Vec::new();
    for c in [&ca, &cb] {
        assert_eq!(c.command() & (COMMAND_MEMORY | COMMAND_IO), COMMAND_MEMORY | COMMAND_IO);
        assert_eq!(c.command() & COMMAND_BUS_MASTER, 0);
        for i in [0, 2, 3] {
            let bar = c.bar(i).unwrap();
            assert_eq!(bar.address % bar.size, 0, "aligned to its size");
            if bar.kind.is_memory() {
                assert!(bar.address >= layout::PCI_MMIO32_BASE);
                assert!(bar.address + bar.size <= layout::PCI_MMIO32_BASE + layout::PCI_MMIO32_SIZE);
            } else {
                assert!(bar.address >= u64::from(IO_BAR_BASE) && bar.address + bar.size <= 0x1_0000);
            }
            seen.push(bar);
        }
        assert!(c.bar(1).is_none() && c.bar(4).is_none() && c.bar(5).is_none());
    }
    for (i, x) in seen.iter().enumerate() {
        for y in &seen[i + 1..] {
            if x.kind.is_memory() == y.kind.is_memory() {
                assert!(x.address + x.size <= y.address || y.address + y.size <= x.address, "{x:?} {y:?}");
            }
        }
    }
    // The largest BAR goes first, at the window's base.
    assert_eq!(ca.bar(0).unwrap().address, layout::PCI_MMIO32_BASE);
    // INTA# of device 1 is PIRQA (IRQ 10), of device 2 PIRQB (10), 3: 11.
    assert_eq!(r.cfg_read(1, 0x3C, 1), 10);
    assert_eq!(r.cfg_read(1, 0x3D, 1), 1);
    assert_eq!(r.bus.intx_irq(a), Some(10));
    let c = r.add_test_dev();
    assert_eq!(r.bus.intx_irq(c), Some(11));
    assert_eq!(r.bus.intx_irq(PciSlot(0)), None);
    assert!(r.bus.device::<TestDev>(a).is_some());
    assert!(r.bus.device::<HostBridge>(a).is_none());
    assert!(r.bus.device_mut::<HostBridge>(PciSlot(0)).is_some());
}

#[test]
fn bar_sizing_protocol() {
    let mut r = Rig::new();
    let slot = r.add_test_dev().0;
    let bar0 = r.cfg_read(slot, 0x10, 4);
    assert_eq!(bar0 & 0xF, 0b0100, "64-bit, not prefetchable");
    // 64-bit memory BAR: both halves.
    r.cfg_write(slot, 0x10, 4, 0xFFFF_FFFF);
    assert_eq!(r.cfg_read(slot, 0x10, 4), 0xFFFF_C004);
    r.cfg_write(slot, 0x14, 4, 0xFFFF_FFFF);
    assert_eq!(r.cfg_read(slot, 0x14, 4), 0xFFFF_FFFF);
    r.cfg_write(slot, 0x10, 4, 0x1234_5678);
    r.cfg_write(slot, 0x14, 4, 0x9);
    let bar = r.bus.config(PciSlot(slot)).unwrap().bar(0).unwrap();
    assert_eq!(bar.address, 0x9_1234_4000);
    // 32-bit prefetchable BAR 2.
    r.cfg_write(slot, 0x18, 4, 0xFFFF_FFFF);
    assert_eq!(r.cfg_read(slot, 0x18, 4), 0xFFFF_F008);
    // I/O BAR 3: 32 ports, upper half hardwired to 0.
    r.cfg_write(slot, 0x1C, 4, 0xFFFF_FFFF);
    assert_eq!(r.cfg_read(slot, 0x1C, 4), 0x0000_FFE1);
    // Absent BARs and the expansion ROM read 0 and stay 0.
    for reg in [0x20u8, 0x24, 0x30] {
        r.cfg_write(slot, reg, 4, 0xFFFF_FFFF);
        assert_eq!(r.cfg_read(slot, reg, 4), 0);
    }
    // Byte-wise programming of a BAR works like a dword write.
    r.ecam_write(slot, 0x18, 1, 0xFF);
    r.ecam_write(slot, 0x19, 1, 0x00);
    r.ecam_write(slot, 0x1A, 2, 0xD000);
    assert_eq!(r.ecam_read(slot, 0x18, 4), 0xD000_0008);
}

#[test]
fn decoding_follows_the_bars_and_the_command_register() {
    let mut r = Rig::new();
    let slot = r.add_test_dev();
    let s = slot.0;
    let cfg = r.bus.config(slot).unwrap();
    let bar2 = cfg.bar(2).unwrap().address;
    let io = cfg.bar(3).unwrap().address as u16;
    assert_eq!(r.bus.mmio_read(bar2 + 0x10, 8), Some(2 << 56 | 0x10));
    assert_eq!(r.bus.mmio_read(bar2 + 0x10, 4), Some(0x10));
    assert_eq!(r.bus.mmio_read(bar2 + 0xFFF, 1), Some(0xFF));
    assert_eq!(r.bus.mmio_read(bar2 + 0x1000, 4), None, "past the BAR");
    assert!(r.bus.mmio_write(bar2 + 8, 8, 0xAB, &mut r.mem));
    assert_eq!(r.bus.io_read(io + 4, 2), Some(4));
    assert!(r.bus.io_write(io + 1, 1, 7, &mut r.mem));
    assert_eq!(r.bus.device::<TestDev>(slot).unwrap().writes, [(2, 8, 8, 0xAB), (3, 1, 1, 7)]);
    assert_eq!(r.bus.io_read(io + 0x20, 1), None);

    // Memory decoding off: memory BARs vanish, I/O stays.
    let cmd = r.cfg_read(s, 4, 2);
    r.cfg_write(s, 4, 2, cmd & !u32::from(COMMAND_MEMORY));
    assert_eq!(r.bus.mmio_read(bar2, 4), None);
    assert!(!r.bus.mmio_write(bar2, 4, 0, &mut r.mem));
    assert_eq!(r.bus.io_read(io, 1), Some(0));
    r.cfg_write(s, 4, 2, cmd & !u32::from(COMMAND_IO));
    assert_eq!(r.bus.io_read(io, 1), None);
    assert_eq!(r.bus.mmio_read(bar2, 8), Some(2 << 56));

    // The guest moves BAR 2 and the I/O BAR.
    r.cfg_write(s, 4, 2, cmd);
    r.cfg_write(s, 0x18, 4, 0xE000_0000);
    r.cfg_write(s, 0x1C, 4, 0xD000);
    assert_eq!(r.bus.mmio_read(bar2, 4), None);
    assert_eq!(r.bus.mmio_read(0xE000_0004, 8), Some(2 << 56 | 4));
    assert_eq!(r.bus.io_read(io, 1), None);
    assert_eq!(r.bus.io_read(0xD01F, 1), Some(0x1F));
    // ECAM keeps priority over a BAR moved on top of it.
    r.cfg_write(s, 0x18, 4, layout::ECAM_BASE as u32);
    assert_eq!(r.bus.mmio_read(layout::ECAM_BASE, 4), Some(0x29C0_8086));
}

#[test]
fn command_status_and_read_only_registers() {
    let mut r = Rig::new();
    let s = r.add_test_dev().0;
    r.cfg_write(s, 4, 4, 0xFFFF_FFFF);
    assert_eq!(r.cfg_read(s, 4, 2), u32::from(COMMAND_WRITABLE));
    // Status: capability bit set and read-only, error bits W1C.
    assert_eq!(r.cfg_read(s, 6, 2), u32::from(STATUS_CAPABILITIES));
    r.bus.device_mut::<TestDev>(PciSlot(s)).unwrap().config.set_u16(STATUS, 0xF910);
    r.cfg_write(s, 6, 2, 1 << 15);
    assert_eq!(r.cfg_read(s, 6, 2), 0x7910);
    r.cfg_write(s, 6, 2, 0xFFFF);
    assert_eq!(r.cfg_read(s, 6, 2), 0x0010);
    // IDs, class, header type, pin, capability pointer are read-only.
    for (reg, size) in [(0u8, 4u8), (8, 4), (0x0E, 1), (0x2C, 4), (0x34, 1), (0x3D, 1)] {
        let before = r.cfg_read(s, reg, size);
        r.cfg_write(s, reg, size, !before);
        assert_eq!(r.cfg_read(s, reg, size), before, "register {reg:#x}");
    }
    // Cache line size, latency timer and interrupt line are storage.
    r.cfg_write(s, 0x0C, 2, 0x4010);
    assert_eq!(r.cfg_read(s, 0x0C, 2), 0x4010);
    r.cfg_write(s, 0x3C, 1, 0x42);
    assert_eq!(r.cfg_read(s, 0x3C, 1), 0x42);
    assert_eq!(r.bus.intx_irq(PciSlot(s)), Some(10), "the wiring is not the register");
}

#[test]
fn capability_list() {
    let mut r = Rig::new();
    let s = r.add_test_dev().0;
    let mut at = r.cfg_read(s, 0x34, 1) as u8;
    let mut ids = Vec::new();
    while at != 0 {
        assert_eq!(at % 4, 0);
        assert!(at >= 0x40);
        ids.push(r.cfg_read(s, at, 1));
        at = r.cfg_read(s, at + 1, 1) as u8;
        assert!(ids.len() < 48, "the list must end");
    }
    assert_eq!(ids, [0x09, 0x11]);
    // The vendor capability's body is read-only.
    r.cfg_write(s, 0x42, 2, 0xFFFF);
    assert_eq!(r.cfg_read(s, 0x42, 2), 0xAA04);
}

#[test]
fn msix_masking_and_pending_bits() {
    let mut r = Rig::new();
    let slot = r.add_test_dev();
    let s = slot.0;
    let base = r.bus.config(slot).unwrap().bar(0).unwrap().address;
    let cap = r.bus.device::<TestDev>(slot).unwrap().msix.capability_offset() as u8;
    // Message control: table size 3 (4 vectors), read-only; table and PBA
    // in BAR 0.
    assert_eq!(r.cfg_read(s, cap + 2, 2), 3);
    assert_eq!(r.cfg_read(s, cap + 4, 4), TABLE as u32);
    assert_eq!(r.cfg_read(s, cap + 8, 4), PBA as u32);
    // Disabled: the device falls back to INTx.
    assert!(!r.bus.device_mut::<TestDev>(slot).unwrap().raise(1));
    // Program entry 1 and enable with the function masked.
    r.bus.mmio_write(base + TABLE + 16, 4, 0xFEE0_1003, &mut r.mem);
    r.bus.mmio_write(base + TABLE + 20, 4, 0, &mut r.mem);
    r.bus.mmio_write(base + TABLE + 24, 4, 0x41, &mut r.mem);
    assert_eq!(r.bus.mmio_read(base + TABLE + 16, 8), Some(0xFEE0_1000), "low address bits read 0");
    assert_eq!(r.bus.mmio_read(base + TABLE + 28, 4), Some(1), "entries start masked");
    r.cfg_write(s, cap + 2, 2, 0xC000 | 0x7FF);
    assert_eq!(r.cfg_read(s, cap + 2, 2), 0xC003);
    let dev = r.bus.device_mut::<TestDev>(slot).unwrap();
    assert!(dev.raise(1));
    assert!(dev.raise(7), "a vector past the table is dropped");
    assert!(r.bus.take_msi().is_empty());
    assert_eq!(r.bus.mmio_read(base + PBA, 8), Some(0b10));
    // Unmasking the entry still leaves the function masked.
    r.bus.mmio_write(base + TABLE + 28, 4, 0, &mut r.mem);
    assert!(r.bus.take_msi().is_empty());
    // Clearing the function mask sends the pending message once.
    r.cfg_write(s, cap + 2, 2, 0x8000);
    let msgs = r.bus.take_msi();
    assert_eq!(msgs, [MsiMessage { address: 0xFEE0_1000, data: 0x41 }]);
    assert!(msgs[0].is_interrupt() && msgs[0].destination_id() == 1 && msgs[0].vector() == 0x41);
    assert_eq!(r.bus.mmio_read(base + PBA, 4), Some(0));
    // Unmasked: straight out.
    r.bus.device_mut::<TestDev>(slot).unwrap().raise(1);
    assert_eq!(r.bus.take_msi().len(), 1);
    // Masking the entry pends; unmasking it sends.
    r.bus.mmio_write(base + TABLE + 24, 8, 0x1_0000_0042, &mut r.mem);
    r.bus.device_mut::<TestDev>(slot).unwrap().raise(1);
    assert!(r.bus.take_msi().is_empty());
    r.bus.mmio_write(base + TABLE + 28, 4, 0xFFFF_FFFE, &mut r.mem);
    assert_eq!(r.bus.take_msi(), [MsiMessage { address: 0xFEE0_1000, data: 0x42 }]);
    assert_eq!(r.bus.mmio_read(base + TABLE + 28, 4), Some(0), "reserved bits read 0");
    // Unaligned and odd-sized table accesses: read 0, ignored.
    assert_eq!(r.bus.mmio_read(base + TABLE + 2, 4), Some(0));
    assert_eq!(r.bus.mmio_read(base + TABLE + 16, 2), Some(0));
    r.bus.mmio_write(base + TABLE + 17, 1, 0xFF, &mut r.mem);
    assert_eq!(r.bus.mmio_read(base + TABLE + 16, 4), Some(0xFEE0_1000));
    // PBA writes are ignored (read-only).
    r.bus.mmio_write(base + PBA, 8, u64::MAX, &mut r.mem);
    assert_eq!(r.bus.mmio_read(base + PBA, 8), Some(0));
}

#[test]
fn intx_lines_are_shared_and_honour_interrupt_disable() {
    let mut r = Rig::new();
    let a = r.add_test_dev();
    let b = r.add_test_dev();
    let c = r.add_test_dev();
    let line = |bus: &PciBus, irq| bus.intx_lines().into_iter().find(|l| l.irq == irq).unwrap().asserted;
    assert_eq!(r.bus.intx_lines(), [IntxLine { irq: 10, asserted: false }, IntxLine { irq: 11, asserted: false }]);
    r.bus.device_mut::<TestDev>(b).unwrap().intx = true;
    assert!(line(&r.bus, 10) && !line(&r.bus, 11));
    r.bus.device_mut::<TestDev>(a).unwrap().intx = true;
    r.bus.device_mut::<TestDev>(b).unwrap().intx = false;
    assert!(line(&r.bus, 10));
    let cmd = r.cfg_read(a.0, 4, 2);
    r.cfg_write(a.0, 4, 2, cmd | u32::from(COMMAND_INTX_DISABLE));
    assert!(!line(&r.bus, 10));
    r.bus.device_mut::<TestDev>(c).unwrap().intx = true;
    assert!(line(&r.bus, 11));
}

#[test]
fn add_errors_leave_the_bus_unchanged() {
    let mut bus = PciBus::new();
    assert!(matches!(bus.add_at(PciSlot(0), Box::new(TestDev::new())), Err(PciError::SlotOccupied(0))));
    assert!(matches!(bus.add_at(PciSlot(32), Box::new(TestDev::new())), Err(PciError::InvalidSlot(32))));
    // A BAR bigger than the window.
    let mut big = ConfigSpace::new(TEST_IDS, 0);
    big.add_bar(0, BarSpec { kind: BarKind::Memory64 { prefetchable: true }, size: 1 << 32 }).unwrap();
    struct Plain(ConfigSpace);
    impl PciDevice for Plain {
        fn config(&self) -> &ConfigSpace {
            &self.0
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.0
        }
        fn bar_read(&mut self, _: usize, _: u64, _: u8) -> u64 {
            0
        }
        fn bar_write(&mut self, _: usize, _: u64, _: u8, _: u64, _: &mut dyn GuestMemory) {}
    }
    assert_eq!(bus.add(Box::new(Plain(big))).err(), Some(PciError::NoMmioSpace { size: 1 << 32 }));
    let first = bus.add(Box::new(TestDev::new())).unwrap();
    assert_eq!(first, PciSlot(1), "the failed add took no slot");
    assert_eq!(bus.config(first).unwrap().bar(0).unwrap().address, layout::PCI_MMIO32_BASE);
    for _ in 2..SLOTS {
        bus.add(Box::new(TestDev::new())).unwrap();
    }
    assert_eq!(bus.add(Box::new(TestDev::new())).err(), Some(PciError::BusFull));
    // I/O space runs out: 0xC000-0xFFFF holds 64 BARs of 256 ports.
    let mut bus = PciBus::new();
    let mut io_big = ConfigSpace::new(TEST_IDS, 0);
    for i in 0..6 {
        io_big.add_bar(i, BarSpec { kind: BarKind::Io, size: 256 }).unwrap();
    }
    for _ in 0..10 {
        bus.add(Box::new(Plain(io_big.clone()))).unwrap();
    }
    assert_eq!(bus.add(Box::new(Plain(io_big.clone()))).err(), Some(PciError::NoIoSpace { size: 256 }));
    assert_eq!(bus.io_read(0xFBFF, 1), Some(0));
    assert_eq!(bus.io_read(0xFC00, 1), None, "the failed add placed nothing");
    assert!(PciError::NoIoSpace { size: 4 }.to_string().contains("I/O"));
}

#[test]
fn config_space_declaration_errors() {
    let mut c = ConfigSpace::new(TEST_IDS, 9);
    assert_eq!(c.interrupt_pin(), 4, "clamped to INTD#");
    let mem = |size| BarSpec { kind: BarKind::Memory32 { prefetchable: false }, size };
    let wide = BarSpec { kind: BarKind::Memory64 { prefetchable: false }, size: 0x1000 };
    assert_eq!(c.add_bar(6, mem(0x1000)), Err(ConfigError::BarIndex(6)));
    assert_eq!(c.add_bar(5, wide), Err(ConfigError::BarIndex(5)));
    assert_eq!(c.add_bar(0, mem(0x1800)), Err(ConfigError::BarSize { index: 0, size: 0x1800 }));
    assert_eq!(c.add_bar(0, mem(0x10)), Err(ConfigError::BarSize { index: 0, size: 0x10 }));
    assert!(c.add_bar(0, BarSpec { kind: BarKind::Io, size: 512 }).is_err());
    c.add_bar(1, wide).unwrap();
    assert_eq!(c.add_bar(2, mem(0x1000)), Err(ConfigError::BarInUse(2)));
    assert_eq!(c.add_bar(0, wide), Err(ConfigError::BarInUse(1)));
    c.add_bar(0, mem(0x1000)).unwrap();
    assert!(c.bar(2).is_none(), "upper half is no BAR");
    // Capabilities fill up to 0x100 and no further.
    let mut n = 0;
    while c.add_capability(0x09, &[0; 30], &[]).is_ok() {
        n += 1;
    }
    assert_eq!(n, 6);
    assert!(matches!(c.add_capability(0x09, &[0; 30], &[]), Err(ConfigError::NoCapabilitySpace { .. })));
    assert!(c.add_capability(0x09, &[0; 2], &[0; 3]).is_err(), "mask longer than body");
    // Direct accessors never panic on bad offsets.
    c.set_u32(0xFE, 0xFFFF_FFFF);
    assert_eq!(c.get_u32(0xFE), 0);
    assert_eq!(c.get_u8(4096), 0);
}

#[test]
fn fuzz_configuration_and_bars() {
    let mut rng = XorShift(0x0CF8_0CFC);
    let mut r = Rig::new();
    let slots = [r.add_test_dev(), r.add_test_dev()];
    let sizes = [1u8, 2, 4, 8, 0, 3];
    for i in 0..60_000 {
        let size = sizes[rng.below(6) as usize];
        let value = rng.next();
        match rng.below(8) {
            0 => {
                let port = 0xCF8 + rng.below(8) as u16;
                r.bus.io_write(port, size, value as u32, &mut r.mem);
            }
            1 => {
                // Mostly valid CONFIG_ADDRESS values, slots 0-3.
                let a = 0x8000_0000 | (rng.below(4) as u32) << 11 | (rng.below(64) as u32) << 2;
                let a = if rng.below(8) == 0 { value as u32 } else { a };
                r.bus.io_write(0xCF8, 4, a, &mut r.mem);
            }
            2 => {
                let port = 0xCF8 + rng.below(8) as u16;
                if let Some(v) = r.bus.io_read(port, size) {
                    assert!(!matches!(size, 1 | 2) || v < 1 << (8 * u32::from(size)));
                }
            }
            3 | 4 => {
                let gpa = layout::ECAM_BASE + (rng.below(4) << 15) + rng.below(0x1000);
                if rng.below(2) == 0 {
                    r.bus.mmio_write(gpa, size, value, &mut r.mem);
                } else {
                    r.bus.mmio_read(gpa, size);
                }
            }
            5 | 6 => {
                // Anywhere in or near the BAR window, and the I/O BARs.
                let gpa = layout::PCI_MMIO32_BASE + rng.below(0x2_0000);
                let port = 0xC000 + rng.below(0x100) as u16;
                if rng.below(2) == 0 {
                    r.bus.mmio_write(gpa, size, value, &mut r.mem);
                    r.bus.io_write(port, size, value as u32, &mut r.mem);
                } else {
                    r.bus.mmio_read(gpa, size);
                    r.bus.io_read(port, size);
                }
            }
            _ => {
                for s in slots {
                    r.bus.device_mut::<TestDev>(s).unwrap().raise(rng.below(6) as u16);
                }
                for m in r.bus.take_msi() {
                    let _ = (m.vector(), m.destination_id(), m.delivery_mode());
                }
                r.bus.intx_lines();
            }
        }
        if i % 1000 == 0 {
            // Identity registers survive whatever was written.
            for s in slots {
                let c = r.bus.config(s).unwrap();
                assert_eq!((c.get_u16(VENDOR_ID), c.get_u16(DEVICE_ID)), (0x1234, 0x5678));
                assert_eq!(c.get_u8(HEADER_TYPE), 0);
                assert_eq!(c.command() & !COMMAND_WRITABLE, 0);
            }
            let bridge = r.bus.config(PciSlot(0)).unwrap();
            assert_eq!(bridge.get_u32(VENDOR_ID), 0x29C0_8086);
        }
    }
    let _ = vec![0u8; 0];
}
