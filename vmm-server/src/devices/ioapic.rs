//! The I/O APIC: 24 interrupt pins routed to the vCPUs' local APICs.
//!
//! Modelled on the Intel 82093AA datasheet (order no. 290566): the
//! indirect register window IOREGSEL/IOWIN (§3.0), the ID, version and
//! arbitration registers (§3.2.1-3.2.3) and the redirection table (§3.2.4).
//! Version 0x11 has no EOI register: remote IRR of a level-triggered pin is
//! cleared by the local APIC's EOI broadcast, which the VMM hands to
//! [`IoApic::eoi`], and (as QEMU and KVM do, and Linux's
//! `__eoi_ioapic_pin` relies on for old I/O APICs) by rewriting the entry as
//! edge-triggered.
//!
//! `level` in [`IoApic::set_irq`] is whether the device asserts its line;
//! the polarity bit only records what the guest programmed, since the VMM's
//! own ACPI tables describe the wiring and the guest programs to match (as
//! in QEMU and KVM). The model never delivers anything itself: every entry
//! point returns the interrupts to send for the VMM to route to local APICs.

use alloc::vec::Vec;

use super::MmioDevice;

/// Where firmware puts the I/O APIC, and the page it decodes.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
pub const IOAPIC_MMIO_SIZE: u64 = 0x1000;
pub const IOAPIC_PINS: usize = 24;
/// Version register: version 0x11, maximum redirection entry 23 (§3.2.2).
pub const IOAPIC_VERSION: u32 = 0x11 | ((IOAPIC_PINS as u32 - 1) << 16);

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;

const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
const REG_REDIRECTION: u8 = 0x10;

// Redirection entry bits (§3.2.4).
const VECTOR: u64 = 0xFF;
const DEST_LOGICAL: u64 = 1 << 11;
const DELIVERY_STATUS: u64 = 1 << 12;
const REMOTE_IRR: u64 = 1 << 14;
const TRIGGER_LEVEL: u64 = 1 << 15;
const MASKED: u64 = 1 << 16;
const READ_ONLY: u64 = DELIVERY_STATUS | REMOTE_IRR;
/// Bits 17-55 are reserved.
const WRITABLE: u64 = 0xFF00_0000_0001_FFFF & !READ_ONLY;

/// How the interrupt is delivered (§3.2.4, bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    /// The vector comes from the 8259A's INTA cycle.
    ExtInt,
    /// 0b011 or 0b110: reserved; the VMM should drop it.
    Reserved(u8),
}

impl DeliveryMode {
    fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            7 => Self::ExtInt,
            other => Self::Reserved(other),
        }
    }
}

/// How `destination` is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationMode {
    /// An APIC ID (0xFF: all).
    Physical,
    /// A logical destination matched against LDR/DFR.
    Logical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerMode {
    Edge,
    /// The local APIC sets the vector's TMR bit and broadcasts its EOI.
    Level,
}

/// One interrupt message for the VMM to route to local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicInterrupt {
    pub destination: u8,
    pub destination_mode: DestinationMode,
    pub vector: u8,
    pub delivery_mode: DeliveryMode,
    pub trigger: TriggerMode,
}

/// The 82093AA I/O APIC.
#[derive(Clone, Debug)]
pub struct IoApic {
    id: u8,
    ioregsel: u8,
    redirection: [u64; IOAPIC_PINS],
    /// Which pins' devices assert their line.
    lines: u32,
    /// Interrupts raised by register writes (unmasking an asserted
    /// level-triggered pin), waiting for [`IoApic::take_interrupts`].
    outbox: Vec<IoApicInterrupt>,
}

impl IoApic {
    /// An I/O APIC with APIC ID `id` and every pin masked (§3.2.4: the mask
    /// bit is set at reset).
    pub fn new(id: u8) -> Self {
        Self { id: id & 0x0F, ioregsel: 0, redirection: [MASKED; IOAPIC_PINS], lines: 0, outbox: Vec::new() }
    }

    /// Device line `pin` is asserted (`true`) or not. Returns what to
    /// deliver now: an edge-triggered pin sends on the rising edge, a
    /// level-triggered one while asserted and remote IRR is clear. Asserting
    /// a masked pin sends nothing; an edge on a masked pin is lost, a level
    /// is sent when unmasked (§3.2.4, "Interrupt Mask"). Pins past 23 are
    /// ignored.
    pub fn set_irq(&mut self, pin: u8, level: bool) -> Vec<IoApicInterrupt> {
        let pin = usize::from(pin);
        if pin < IOAPIC_PINS {
            let bit = 1u32 << pin;
            let rising = level && self.lines & bit == 0;
            if level {
                self.lines |= bit;
            } else {
                self.lines &= !bit;
            }
            let entry = self.redirection[pin];
            if entry & TRIGGER_LEVEL == 0 {
                if rising && entry & MASKED == 0 {
                    let interrupt = Self::message(entry);
                    self.outbox.push(interrupt);
                }
            } else {
                self.service_level(pin);
            }
        }
        core::mem::take(&mut self.outbox)
    }

    /// A local APIC broadcast the EOI of `vector`: remote IRR clears on
    /// every level-triggered pin with that vector, and a pin still asserted
    /// sends again. Returns what to deliver.
    pub fn eoi(&mut self, vector: u8) -> Vec<IoApicInterrupt> {
        for pin in 0..IOAPIC_PINS {
            let entry = self.redirection[pin];
            if entry & TRIGGER_LEVEL != 0 && entry & REMOTE_IRR != 0 && (entry & VECTOR) as u8 == vector {
                self.redirection[pin] &= !REMOTE_IRR;
                self.service_level(pin);
            }
        }
        core::mem::take(&mut self.outbox)
    }

    /// Interrupts raised by the guest's own register writes (unmasking or
    /// re-arming an asserted level-triggered pin). The VMM collects them
    /// after each MMIO write.
    pub fn take_interrupts(&mut self) -> Vec<IoApicInterrupt> {
        core::mem::take(&mut self.outbox)
    }

    /// Redirection entry `pin` as the guest programmed it.
    pub fn redirection_entry(&self, pin: usize) -> Option<u64> {
        self.redirection.get(pin).copied()
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    /// Sends a level-triggered pin's interrupt if it is asserted, unmasked
    /// and not already waiting for its EOI.
    fn service_level(&mut self, pin: usize) {
        let entry = self.redirection[pin];
        let asserted = self.lines & (1 << pin) != 0;
        if entry & TRIGGER_LEVEL != 0 && asserted && entry & (MASKED | REMOTE_IRR) == 0 {
            self.redirection[pin] |= REMOTE_IRR;
            self.outbox.push(Self::message(entry));
        }
    }

    fn message(entry: u64) -> IoApicInterrupt {
        IoApicInterrupt {
            destination: (entry >> 56) as u8,
            destination_mode: if entry & DEST_LOGICAL != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            vector: (entry & VECTOR) as u8,
            delivery_mode: DeliveryMode::from_bits((entry >> 8) as u8),
            trigger: if entry & TRIGGER_LEVEL != 0 { TriggerMode::Level } else { TriggerMode::Edge },
        }
    }

    fn read_register(&self) -> u32 {
        match self.ioregsel {
            REG_ID => u32::from(self.id) << 24,
            REG_VERSION => IOAPIC_VERSION,
            // The arbitration ID is loaded from the APIC ID (§3.2.3).
            REG_ARBITRATION => u32::from(self.id) << 24,
            index => match Self::redirection_index(index) {
                Some((pin, high)) => {
                    let entry = self.redirection[pin];
                    if high { (entry >> 32) as u32 } else { entry as u32 }
                }
                None => 0,
            },
        }
    }

    fn write_register(&mut self, value: u32) {
        match self.ioregsel {
            REG_ID => self.id = ((value >> 24) & 0x0F) as u8,
            REG_VERSION | REG_ARBITRATION => {}
            index => {
                let Some((pin, high)) = Self::redirection_index(index) else { return };
                let old = self.redirection[pin];
                let written = if high {
                    (old & 0xFFFF_FFFF) | u64::from(value) << 32
                } else {
                    (old & !0xFFFF_FFFF) | u64::from(value)
                };
                let mut entry = (written & WRITABLE) | (old & READ_ONLY);
                // An entry written as edge-triggered has no remote IRR.
                if entry & TRIGGER_LEVEL == 0 {
                    entry &= !REMOTE_IRR;
                }
                self.redirection[pin] = entry;
                self.service_level(pin);
            }
        }
    }

    fn redirection_index(index: u8) -> Option<(usize, bool)> {
        let offset = usize::from(index.checked_sub(REG_REDIRECTION)?);
        let pin = offset / 2;
        (pin < IOAPIC_PINS).then_some((pin, offset % 2 == 1))
    }
}

impl MmioDevice for IoApic {
    /// Only aligned 32-bit accesses to IOREGSEL and IOWIN do anything; all
    /// else reads 0 and is ignored (§3.0: the registers are 32 bits wide).
    fn read(&mut self, offset: u64, size: u8, _now_ns: u64) -> u64 {
        match (offset, size) {
            (IOREGSEL, 4) => u64::from(self.ioregsel),
            (IOWIN, 4) => u64::from(self.read_register()),
            _ => 0,
        }
    }

    fn write(&mut self, offset: u64, size: u8, value: u64, _now_ns: u64) {
        match (offset, size) {
            (IOREGSEL, 4) => self.ioregsel = value as u8,
            (IOWIN, 4) => self.write_register(value as u32),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::XorShift;

    fn read_reg(io: &mut IoApic, reg: u8) -> u32 {
        io.write(IOREGSEL, 4, u64::from(reg), 0);
        io.read(IOWIN, 4, 0) as u32
    }

    fn write_reg(io: &mut IoApic, reg: u8, value: u32) {
        io.write(IOREGSEL, 4, u64::from(reg), 0);
        io.write(IOWIN, 4, u64::from(value), 0);
    }

    fn program(io: &mut IoApic, pin: u8, low: u32, dest: u8) {
        write_reg(io, 0x11 + 2 * pin, u32::from(dest) << 24);
        write_reg(io, 0x10 + 2 * pin, low);
    }

    #[test]
    fn id_version_arbitration() {
        let mut io = IoApic::new(0);
        assert_eq!(read_reg(&mut io, 1), 0x0017_0011);
        assert_eq!((read_reg(&mut io, 1) >> 16) & 0xFF, 23, "24 entries");
        write_reg(&mut io, 0, 0x0200_0000);
        assert_eq!(read_reg(&mut io, 0), 0x0200_0000);
        assert_eq!(read_reg(&mut io, 2), 0x0200_0000);
        write_reg(&mut io, 1, 0);
        assert_eq!(read_reg(&mut io, 1), 0x0017_0011, "read-only");
        assert_eq!(io.read(IOREGSEL, 4, 0), 1);
        assert_eq!(read_reg(&mut io, 0x40), 0, "past the table");
        assert_eq!(read_reg(&mut io, 0x03), 0);
        for pin in 0..24 {
            assert_eq!(read_reg(&mut io, 0x10 + 2 * pin) & 0x1_0000, 0x1_0000, "masked at reset");
        }
    }

    #[test]
    fn edge_pin_delivers_on_rising_edges() {
        let mut io = IoApic::new(0);
        // Linux's timer pin: vector 0x30, fixed, physical, edge, to APIC 1.
        program(&mut io, 2, 0x0000_0030, 1);
        let sent = io.set_irq(2, true);
        assert_eq!(
            sent,
            [IoApicInterrupt {
                destination: 1,
                destination_mode: DestinationMode::Physical,
                vector: 0x30,
                delivery_mode: DeliveryMode::Fixed,
                trigger: TriggerMode::Edge,
            }]
        );
        assert!(io.set_irq(2, true).is_empty(), "no edge");
        assert!(io.set_irq(2, false).is_empty());
        assert_eq!(io.set_irq(2, true).len(), 1);
        io.set_irq(2, false);
        write_reg(&mut io, 0x14, 0x0001_0030);
        assert!(io.set_irq(2, true).is_empty(), "masked");
        io.set_irq(2, false);
        write_reg(&mut io, 0x14, 0x0000_0030);
        assert!(io.take_interrupts().is_empty(), "the edge while masked is lost");
        assert!(io.eoi(0x30).is_empty(), "edge pins ignore EOI");
    }

    #[test]
    fn level_pin_remote_irr_and_eoi() {
        let mut io = IoApic::new(0);
        // Level, active low, logical, lowest priority, vector 0x41.
        program(&mut io, 9, 0x0000_A941, 0x03);
        let sent = io.set_irq(9, true);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].trigger, TriggerMode::Level);
        assert_eq!(sent[0].delivery_mode, DeliveryMode::LowestPriority);
        assert_eq!(sent[0].destination_mode, DestinationMode::Logical);
        assert_eq!(sent[0].destination, 3);
        assert_eq!(read_reg(&mut io, 0x22) & (1 << 14), 1 << 14, "remote IRR");
        assert!(io.set_irq(9, true).is_empty(), "waits for the EOI");
        assert!(io.eoi(0x42).is_empty(), "other vector");
        assert_eq!(io.eoi(0x41).len(), 1, "still asserted: sent again");
        io.set_irq(9, false);
        assert!(io.eoi(0x41).is_empty());
        assert_eq!(read_reg(&mut io, 0x22) & (1 << 14), 0);
        // Remote IRR is read-only.
        io.set_irq(9, true);
        write_reg(&mut io, 0x22, 0x0000_A941 & !(1 << 14));
        assert_eq!(read_reg(&mut io, 0x22) & (1 << 14), 1 << 14);
        // Rewriting the entry as edge clears it (the old-IOAPIC EOI trick),
        // back to level sends again since the line is asserted.
        write_reg(&mut io, 0x22, 0x0000_2941);
        assert_eq!(read_reg(&mut io, 0x22) & (1 << 14), 0);
        assert!(io.take_interrupts().is_empty());
        write_reg(&mut io, 0x22, 0x0000_A941);
        assert_eq!(io.take_interrupts().len(), 1);
    }

    #[test]
    fn unmasking_an_asserted_level_pin_delivers() {
        let mut io = IoApic::new(0);
        program(&mut io, 11, 0x0001_8050, 0);
        assert!(io.set_irq(11, true).is_empty());
        write_reg(&mut io, 0x26, 0x0000_8050);
        let sent = io.take_interrupts();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].vector, 0x50);
        assert!(io.take_interrupts().is_empty());
    }

    #[test]
    fn delivery_modes_and_reserved_bits() {
        let mut io = IoApic::new(0);
        for (bits, mode) in [
            (0, DeliveryMode::Fixed),
            (2, DeliveryMode::Smi),
            (4, DeliveryMode::Nmi),
            (5, DeliveryMode::Init),
            (7, DeliveryMode::ExtInt),
            (3, DeliveryMode::Reserved(3)),
        ] {
            program(&mut io, 0, bits << 8, 0);
            assert_eq!(io.set_irq(0, true)[0].delivery_mode, mode);
            io.set_irq(0, false);
        }
        write_reg(&mut io, 0x10, 0xFFFF_FFFF);
        assert_eq!(read_reg(&mut io, 0x10), 0x0001_AFFF, "reserved and read-only bits read 0");
        write_reg(&mut io, 0x11, 0xFFFF_FFFF);
        assert_eq!(read_reg(&mut io, 0x11), 0xFF00_0000);
    }

    #[test]
    fn only_aligned_dword_accesses_count() {
        let mut io = IoApic::new(0);
        io.write(IOREGSEL, 1, 0x01, 0);
        assert_eq!(io.read(IOREGSEL, 4, 0), 0);
        io.write(IOREGSEL, 4, 0x01, 0);
        assert_eq!(io.read(IOWIN, 2, 0), 0);
        assert_eq!(io.read(IOWIN, 8, 0), 0);
        assert_eq!(io.read(IOWIN + 1, 4, 0), 0);
        assert_eq!(io.read(0x20, 4, 0), 0);
        assert_eq!(io.read(IOWIN, 4, 0), 0x0017_0011);
        assert!(io.set_irq(24, true).is_empty());
        assert!(io.set_irq(255, true).is_empty());
        assert_eq!(io.redirection_entry(24), None);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x0FEC_0000_1234);
        let mut io = IoApic::new(0);
        for _ in 0..200_000 {
            match rng.below(8) {
                0 => io.write(IOREGSEL, 4, rng.below(0x40), 0),
                1 => io.write(IOWIN, 4, rng.next(), 0),
                2 => {
                    io.read(rng.below(0x1010), rng.size(), 0);
                }
                3 => io.write(rng.next(), rng.size(), rng.next(), rng.next()),
                4 | 5 => {
                    io.set_irq(rng.below(30) as u8, rng.below(2) == 0);
                }
                6 => {
                    io.eoi(rng.next() as u8);
                }
                _ => {
                    io.take_interrupts();
                }
            }
        }
    }
}
