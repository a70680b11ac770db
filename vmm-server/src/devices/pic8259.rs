//! The PC's two cascaded 8259A programmable interrupt controllers, with the
//! edge/level control registers (ELCR) of the PIIX/ICH chipsets.
//!
//! Master at 0x20/0x21 (IRQ 0-7), slave at 0xA0/0xA1 (IRQ 8-15) on the
//! master's IR2; ELCR at 0x4D0 (master) and 0x4D1 (slave). Behaviour follows
//! the Intel 8259A datasheet (order no. 231468): initialization command
//! words ICW1-ICW4 ("Initialization Command Words"), operation command words
//! OCW1-OCW3 ("Operation Command Words"), priority rotation, special mask
//! mode, poll mode, and the INTA sequence ("Interrupt Sequence"), including
//! the IR7 default vector when a request goes away before it is
//! acknowledged. ELCR per the Intel PIIX4 datasheet §4.1.10 (IRQ 0, 1, 2, 8
//! and 13 are always edge).
//!
//! The VMM calls [`DualPic::set_irq`] when a device's line changes,
//! [`DualPic::pending_vector`] to see whether the INTR pin to the CPU is
//! asserted, and [`DualPic::ack`] (the INTA cycle) when it injects.

use super::{PortIoDevice, PortRange, read_bytewise, write_bytewise};

pub const MASTER_PORTS: PortRange = PortRange::new(0x20, 2);
pub const SLAVE_PORTS: PortRange = PortRange::new(0xA0, 2);
pub const ELCR_PORTS: PortRange = PortRange::new(0x4D0, 2);
/// The master's input the slave's INT output drives.
pub const CASCADE_IRQ: u8 = 2;

/// One 8259A.
#[derive(Clone, Debug, Default)]
struct Pic {
    /// Interrupt request register.
    irr: u8,
    /// In-service register.
    isr: u8,
    /// Interrupt mask register (OCW1).
    imr: u8,
    /// Input levels as last seen, for edge detection.
    lines: u8,
    /// Level-triggered inputs (ELCR).
    elcr: u8,
    /// Which ELCR bits can be set.
    elcr_mask: u8,
    /// The IR input with the lowest priority is `priority_add - 1`: the
    /// highest priority is IR `priority_add`.
    priority_add: u8,
    vector_base: u8,
    /// OCW3 RR/RIS: the command port reads ISR instead of IRR.
    read_isr: bool,
    /// OCW3 P: the next read of either port is a poll.
    poll: bool,
    special_mask: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    /// 0: operational; 1, 2, 3: expecting ICW2, ICW3, ICW4.
    init_state: u8,
    icw4_needed: bool,
    single: bool,
    is_master: bool,
}

impl Pic {
    fn new(is_master: bool) -> Self {
        Self { is_master, elcr_mask: if is_master { 0xF8 } else { 0xDE }, ..Self::default() }
    }

    /// Priority (0 = highest) of the best request in `mask`, 8 for none.
    fn priority(&self, mask: u8) -> u8 {
        (0..8).find(|p| mask & (1 << ((p + self.priority_add) & 7)) != 0).unwrap_or(8)
    }

    /// The IR input the chip would signal on INT, if any: a request that is
    /// not masked and beats everything in service (fully nested mode).
    fn requested(&self) -> Option<u8> {
        let priority = self.priority(self.irr & !self.imr);
        if priority == 8 {
            return None;
        }
        let mut in_service = self.isr;
        // Special mask mode: masked in-service levels do not inhibit others.
        if self.special_mask {
            in_service &= !self.imr;
        }
        // Special fully nested mode on the master: more requests from the
        // slave are let through while one of them is in service.
        if self.special_fully_nested && self.is_master {
            in_service &= !(1 << CASCADE_IRQ);
        }
        (priority < self.priority(in_service)).then_some((priority + self.priority_add) & 7)
    }

    fn set_input(&mut self, irq: u8, level: bool) {
        let bit = 1 << irq;
        if self.elcr & bit != 0 {
            // Level-sensitive: the request follows the line.
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.lines & bit == 0 {
            // Edge-sensitive: latch a rising edge; the request stays until
            // acknowledged even if the line falls.
            self.irr |= bit;
        }
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// The chip's part of the INTA cycle for `irq`.
    fn intack(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
        // A level-sensitive request is not cleared by the acknowledge.
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
    }

    /// ICW1 resets the chip (datasheet "Initialization Command Words"):
    /// IMR cleared, IR7 lowest priority, special mask mode off, status read
    /// of IRR, edge-sense latches cleared. The ELCR is the chipset's and
    /// stays.
    fn icw1(&mut self, value: u8) {
        let (elcr, elcr_mask, is_master) = (self.elcr, self.elcr_mask, self.is_master);
        let irr = self.irr & elcr;
        *self = Self { elcr, elcr_mask, is_master, irr, ..Self::default() };
        self.init_state = 1;
        self.icw4_needed = value & 0x01 != 0;
        self.single = value & 0x02 != 0;
        // Bit 3 (LTIM) is ignored: PC chipsets take edge/level from the ELCR.
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            self.icw1(value);
        } else if value & 0x08 != 0 {
            // OCW3.
            if value & 0x04 != 0 {
                self.poll = true;
            }
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            // OCW2: R, SL, EOI in bits 7:5, the level in bits 2:0.
            let level = value & 7;
            match value >> 5 {
                0b000 => self.rotate_on_auto_eoi = false,
                0b100 => self.rotate_on_auto_eoi = true,
                // Non-specific EOI (optionally rotating): the highest
                // priority level in service.
                cmd @ (0b001 | 0b101) => {
                    let priority = self.priority(self.isr);
                    if priority != 8 {
                        let irq = (priority + self.priority_add) & 7;
                        self.isr &= !(1 << irq);
                        if cmd == 0b101 {
                            self.priority_add = (irq + 1) & 7;
                        }
                    }
                }
                // Specific EOI.
                0b011 => self.isr &= !(1 << level),
                // Set priority: `level` becomes the lowest.
                0b110 => self.priority_add = (level + 1) & 7,
                // Rotate on specific EOI.
                0b111 => {
                    self.isr &= !(1 << level);
                    self.priority_add = (level + 1) & 7;
                }
                _ => {} // 0b010: no operation
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init_state {
            1 => {
                // ICW2: in 8086 mode T7-T3 are the vector's high bits.
                self.vector_base = value & 0xF8;
                self.init_state = if !self.single {
                    2
                } else if self.icw4_needed {
                    3
                } else {
                    0
                };
            }
            2 => {
                // ICW3: the cascade wiring is fixed on a PC.
                self.init_state = if self.icw4_needed { 3 } else { 0 };
            }
            3 => {
                // ICW4: SFNM (bit 4), AEOI (bit 1); buffered mode and
                // µPM (8086 vs 8080) do not matter here.
                self.special_fully_nested = value & 0x10 != 0;
                self.auto_eoi = value & 0x02 != 0;
                self.init_state = 0;
            }
            _ => self.imr = value, // OCW1
        }
    }

    /// A poll (OCW3 P=1): the INTA cycle without the vector; bit 7 says
    /// whether there was a request, bits 2:0 which.
    fn poll_read(&mut self) -> u8 {
        self.poll = false;
        match self.requested() {
            Some(irq) => {
                self.intack(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    fn read(&mut self, data_port: bool) -> u8 {
        if self.poll {
            return self.poll_read();
        }
        if data_port {
            self.imr
        } else if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }
}

/// The master/slave pair as wired in every PC.
#[derive(Clone, Debug)]
pub struct DualPic {
    master: Pic,
    slave: Pic,
}

impl Default for DualPic {
    fn default() -> Self {
        Self::new()
    }
}

impl DualPic {
    /// Both chips uninitialised (all unmasked, vector base 0) with all
    /// lines edge-triggered; the guest's ICW sequence sets them up.
    pub fn new() -> Self {
        Self { master: Pic::new(true), slave: Pic::new(false) }
    }

    /// A device's ISA interrupt line `line` (0-15) is at `level`. Line 2 is
    /// the cascade and not a device line on a PC; it and lines past 15 are
    /// ignored.
    pub fn set_irq(&mut self, line: u8, level: bool) {
        match line {
            0..=7 if line != CASCADE_IRQ => self.master.set_input(line, level),
            8..=15 => {
                self.slave.set_input(line - 8, level);
                self.update_cascade();
            }
            _ => {}
        }
    }

    /// The slave's INT output drives the master's IR2.
    fn update_cascade(&mut self) {
        let slave_int = self.slave.requested().is_some();
        self.master.set_input(CASCADE_IRQ, slave_int);
    }

    /// Whether the master's INT output (the CPU's INTR pin) is asserted, and
    /// with which vector the INTA cycle would answer now.
    pub fn pending_vector(&self) -> Option<u8> {
        let irq = self.master.requested()?;
        if irq == CASCADE_IRQ {
            let slave_irq = self.slave.requested().unwrap_or(7);
            Some(self.slave.vector_base | slave_irq)
        } else {
            Some(self.master.vector_base | irq)
        }
    }

    /// Whether the CPU's INTR pin is asserted.
    pub fn int_output(&self) -> bool {
        self.master.requested().is_some()
    }

    /// The INTA cycle: the vector the PIC puts on the bus, with the request
    /// moved to in-service (unless auto-EOI). With no request left (the line
    /// fell between INTR and INTA) the 8259A answers IR7's vector without
    /// setting ISR: the spurious IRQ 7 (or 15 from the slave, in which case
    /// the master does have IR2 in service) that Linux checks for in
    /// `i8259A_irq_real`.
    pub fn ack(&mut self) -> u8 {
        let vector = match self.master.requested() {
            Some(CASCADE_IRQ) => {
                let vector = match self.slave.requested() {
                    Some(irq) => {
                        self.slave.intack(irq);
                        self.slave.vector_base | irq
                    }
                    None => self.slave.vector_base | 7,
                };
                self.master.intack(CASCADE_IRQ);
                vector
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.vector_base | irq
            }
            None => self.master.vector_base | 7,
        };
        self.update_cascade();
        vector
    }

    /// Interrupt masks, slave in bits 15:8.
    pub fn imr(&self) -> u16 {
        u16::from(self.slave.imr) << 8 | u16::from(self.master.imr)
    }

    pub fn irr(&self) -> u16 {
        u16::from(self.slave.irr) << 8 | u16::from(self.master.irr)
    }

    pub fn isr(&self) -> u16 {
        u16::from(self.slave.isr) << 8 | u16::from(self.master.isr)
    }

    /// Level-triggered lines per the ELCR, slave in bits 15:8.
    pub fn elcr(&self) -> u16 {
        u16::from(self.slave.elcr) << 8 | u16::from(self.master.elcr)
    }

    /// Sets the ELCR as firmware would before the guest runs (the VMM's
    /// ACPI tables say which lines are level, e.g. the SCI).
    pub fn set_elcr(&mut self, elcr: u16) {
        self.master.elcr = elcr as u8 & self.master.elcr_mask;
        self.slave.elcr = (elcr >> 8) as u8 & self.slave.elcr_mask;
    }

    fn read_byte(&mut self, port: u16) -> u8 {
        match port {
            0x20 | 0x21 => self.master.read(port == 0x21),
            0xA0 | 0xA1 => {
                let v = self.slave.read(port == 0xA1);
                self.update_cascade();
                v
            }
            0x4D0 => self.master.elcr,
            0x4D1 => self.slave.elcr,
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, port: u16, value: u8) {
        match port {
            0x20 => self.master.write_command(value),
            0x21 => self.master.write_data(value),
            0xA0 => self.slave.write_command(value),
            0xA1 => self.slave.write_data(value),
            0x4D0 => self.master.elcr = value & self.master.elcr_mask,
            0x4D1 => self.slave.elcr = value & self.slave.elcr_mask,
            _ => return,
        }
        self.update_cascade();
    }
}

impl PortIoDevice for DualPic {
    fn read(&mut self, port: u16, size: u8, _now_ns: u64) -> u32 {
        read_bytewise(port, size, |p| self.read_byte(p))
    }

    fn write(&mut self, port: u16, size: u8, value: u32, _now_ns: u64) {
        write_bytewise(port, size, value, |p, v| self.write_byte(p, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::XorShift;

    fn outb(p: &mut DualPic, port: u16, v: u8) {
        p.write(port, 1, u32::from(v), 0);
    }

    fn inb(p: &mut DualPic, port: u16) -> u8 {
        p.read(port, 1, 0) as u8
    }

    /// arch/x86/kernel/i8259.c: probe_8259A and init_8259A(auto_eoi = 0)
    /// with ISA_IRQ_VECTOR(0) = 0x30, then everything masked but the cascade.
    fn linux_init() -> DualPic {
        let mut p = DualPic::new();
        outb(&mut p, 0xA1, 0xFF);
        outb(&mut p, 0x21, 0xFB);
        assert_eq!(inb(&mut p, 0x21), 0xFB, "probe_8259A reads back the mask");
        outb(&mut p, 0x21, 0xFF);
        outb(&mut p, 0x20, 0x11);
        outb(&mut p, 0x21, 0x30);
        outb(&mut p, 0x21, 0x04);
        outb(&mut p, 0x21, 0x01);
        outb(&mut p, 0xA0, 0x11);
        outb(&mut p, 0xA1, 0x38);
        outb(&mut p, 0xA1, 0x02);
        outb(&mut p, 0xA1, 0x01);
        outb(&mut p, 0x21, 0xFB);
        outb(&mut p, 0xA1, 0xFF);
        p
    }

    /// Linux's mask_and_ack_8259A for `irq`, after the handler ran.
    fn linux_eoi(p: &mut DualPic, irq: u8) {
        if irq >= 8 {
            outb(p, 0xA0, 0x60 | (irq & 7));
            outb(p, 0x20, 0x60 | CASCADE_IRQ);
        } else {
            outb(p, 0x20, 0x60 | irq);
        }
    }

    #[test]
    fn linux_init_sequence_and_timer_interrupt() {
        let mut p = linux_init();
        assert_eq!(p.imr(), 0xFFFB);
        p.set_irq(0, true);
        assert_eq!(p.pending_vector(), None, "masked");
        outb(&mut p, 0x21, 0xFA); // unmask IRQ 0
        assert_eq!(p.pending_vector(), Some(0x30));
        assert_eq!(p.ack(), 0x30);
        assert_eq!(p.isr(), 0x0001);
        assert_eq!(p.pending_vector(), None, "edge consumed");
        p.set_irq(0, false);
        p.set_irq(0, true);
        assert_eq!(p.pending_vector(), None, "IRQ 0 in service blocks itself");
        linux_eoi(&mut p, 0);
        assert_eq!(p.isr(), 0);
        assert_eq!(p.ack(), 0x30);
    }

    #[test]
    fn slave_cascade_priority_and_specific_eoi() {
        let mut p = linux_init();
        outb(&mut p, 0x21, 0x00);
        outb(&mut p, 0xA1, 0x00);
        p.set_irq(8, true);
        p.set_irq(4, true);
        // IRQ 8 arrives through IR2, which beats IR4.
        assert_eq!(p.pending_vector(), Some(0x38));
        assert_eq!(p.ack(), 0x38);
        assert_eq!(p.isr(), 0x0104);
        assert_eq!(p.pending_vector(), None, "IR4 is lower than IR2 in service");
        p.set_irq(1, true);
        assert_eq!(p.pending_vector(), Some(0x31), "IR1 preempts IR2");
        assert_eq!(p.ack(), 0x31);
        linux_eoi(&mut p, 1);
        linux_eoi(&mut p, 8);
        assert_eq!(p.isr(), 0);
        assert_eq!(p.ack(), 0x34);
        // Non-specific EOI clears the highest in service.
        outb(&mut p, 0x20, 0x20);
        assert_eq!(p.isr(), 0);
        // OCW3 reads.
        p.set_irq(5, true);
        outb(&mut p, 0x20, 0x0A);
        assert_eq!(inb(&mut p, 0x20), 0x20);
        outb(&mut p, 0x20, 0x0B);
        assert_eq!(inb(&mut p, 0x20), 0x00);
        p.ack();
        assert_eq!(inb(&mut p, 0x20), 0x20, "ISR");
    }

    #[test]
    fn spurious_irq7_and_irq15() {
        let mut p = linux_init();
        outb(&mut p, 0x21, 0x00);
        outb(&mut p, 0xA1, 0x00);
        p.set_elcr(0x0020 | 0x0800); // IRQ 5 and 11 level
        assert_eq!(p.elcr(), 0x0820);
        p.set_irq(5, true);
        assert_eq!(p.pending_vector(), Some(0x35));
        p.set_irq(5, false);
        assert_eq!(p.pending_vector(), None);
        assert_eq!(p.ack(), 0x37, "spurious IRQ 7");
        assert_eq!(p.isr(), 0, "and nothing in service");
        // The slave: the master latched IR2's edge, then the slave's level
        // request went away.
        p.set_irq(11, true);
        p.set_irq(11, false);
        assert_eq!(p.ack(), 0x3F, "spurious IRQ 15");
        assert_eq!(p.isr(), 0x0004, "the master did acknowledge IR2");
        outb(&mut p, 0x20, 0x62);
        assert_eq!(p.isr(), 0);
    }

    #[test]
    fn level_lines_stay_requested_until_deasserted() {
        let mut p = linux_init();
        outb(&mut p, 0x21, 0x00);
        outb(&mut p, 0x4D0, 0xFF);
        assert_eq!(inb(&mut p, 0x4D0), 0xF8, "IRQ 0-2 cannot be level");
        outb(&mut p, 0x4D1, 0xFF);
        assert_eq!(inb(&mut p, 0x4D1), 0xDE, "IRQ 8 and 13 cannot be level");
        p.set_irq(3, true);
        assert_eq!(p.ack(), 0x33);
        linux_eoi(&mut p, 3);
        assert_eq!(p.pending_vector(), Some(0x33), "still asserted: again");
        p.set_irq(3, false);
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn auto_eoi_rotation_and_poll() {
        let mut p = DualPic::new();
        outb(&mut p, 0x20, 0x13); // single, ICW4
        outb(&mut p, 0x21, 0x08);
        outb(&mut p, 0x21, 0x03); // AEOI
        outb(&mut p, 0x21, 0x00);
        p.set_irq(1, true);
        p.set_irq(3, true);
        assert_eq!(p.ack(), 0x09);
        assert_eq!(p.isr(), 0, "auto-EOI");
        // Rotate on auto-EOI: the serviced level becomes the lowest.
        outb(&mut p, 0x20, 0x80);
        p.set_irq(1, false);
        p.set_irq(1, true);
        assert_eq!(p.ack(), 0x09);
        assert_eq!(p.pending_vector(), Some(0x0B));
        // Set priority: IR5 lowest → IR6 highest.
        outb(&mut p, 0x20, 0xC5);
        p.set_irq(6, true);
        assert_eq!(p.pending_vector(), Some(0x0E));
        // Poll: bit 7 and the level; acknowledges it.
        outb(&mut p, 0x20, 0x0C);
        assert_eq!(inb(&mut p, 0x21), 0x86);
        outb(&mut p, 0x20, 0x0C);
        assert_eq!(inb(&mut p, 0x20), 0x83);
        outb(&mut p, 0x20, 0x0C);
        assert_eq!(inb(&mut p, 0x20), 0x00);
    }

    #[test]
    fn special_mask_mode_lets_lower_levels_in() {
        let mut p = linux_init();
        outb(&mut p, 0x21, 0x00);
        p.set_irq(3, true);
        assert_eq!(p.ack(), 0x33);
        p.set_irq(6, true);
        assert_eq!(p.pending_vector(), None);
        outb(&mut p, 0x21, 0x08); // mask IR3 (in service)
        outb(&mut p, 0x20, 0x68); // OCW3: set special mask
        assert_eq!(p.pending_vector(), Some(0x36));
        outb(&mut p, 0x20, 0x48); // reset special mask
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn icw1_resets_state_but_keeps_elcr() {
        let mut p = linux_init();
        p.set_elcr(0x0400);
        outb(&mut p, 0xA1, 0x00);
        outb(&mut p, 0x21, 0x00);
        p.set_irq(10, true);
        p.set_irq(9, true);
        p.ack();
        outb(&mut p, 0xA0, 0x11);
        assert_eq!(p.elcr(), 0x0400);
        assert_eq!(p.isr() & 0xFF00, 0);
        assert_eq!(p.irr() & 0xFF00, 0x0400, "level request survives, edge latch cleared");
        assert_eq!(p.imr() & 0xFF00, 0);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x8259_8259);
        let mut p = DualPic::new();
        let ports = [0x20u16, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x22, 0x4D2];
        for _ in 0..200_000 {
            let port = ports[rng.below(ports.len() as u64) as usize];
            match rng.below(8) {
                0 | 1 => {
                    p.read(port, rng.size(), rng.next());
                }
                2..=4 => p.write(port, rng.size(), rng.next() as u32, rng.next()),
                5 | 6 => p.set_irq(rng.below(20) as u8, rng.below(2) == 0),
                _ => {
                    if p.pending_vector().is_some() || rng.below(4) == 0 {
                        p.ack();
                    }
                }
            }
        }
    }
}
