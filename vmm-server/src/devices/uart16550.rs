//! The 16550A UART: the guest's serial console (COM1, 0x3F8, IRQ 4).
//!
//! Register behaviour follows the TI/National PC16550D datasheet (SNLS378C,
//! "8.6 Register Maps" and Table 9-5 "Interrupt Control Functions").
//! Characters move at no baud rate: a byte written to THR goes straight to the
//! output sink the VMM drains with [`Uart16550::take_output`]; when the sink
//! is full the transmit FIFO fills and THRE stays clear, so the guest waits
//! instead of losing console output. Bytes from the VMM
//! ([`Uart16550::push_input`]) wait in a bounded queue whose first 16 (or 1,
//! FIFOs off) bytes are the receive FIFO.
//!
//! The interrupt output ([`Uart16550::irq_level`]) is what reaches the PIC on
//! a PC: the UART's INTR gated by OUT2 (MCR bit 3), which Linux's 8250 driver
//! sets for ISA ports ("Most PC uarts need OUT2 raised to enable interrupts").

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::{PortIoDevice, PortRange, read_bytewise, write_bytewise};

/// COM1's ports and ISA IRQ.
pub const COM1_BASE: u16 = 0x3F8;
pub const COM1_IRQ: u8 = 4;
/// The eight registers of one UART.
pub const COM1_PORTS: PortRange = PortRange::new(COM1_BASE, 8);
/// COM2's ports and ISA IRQ: the metadata port (`vm::metadata`).
pub const COM2_BASE: u16 = 0x2F8;
pub const COM2_IRQ: u8 = 3;
pub const COM2_PORTS: PortRange = PortRange::new(COM2_BASE, 8);

/// FIFO depth of the 16550A (datasheet §7.1).
pub const FIFO_SIZE: usize = 16;
/// How many output bytes wait for the VMM before THRE stays clear.
pub const OUTPUT_LIMIT: usize = 4096;
/// How many input bytes [`Uart16550::push_input`] queues at most.
pub const INPUT_LIMIT: usize = 4096;

// Register offsets (datasheet Table 8-2).
const RBR_THR_DLL: u16 = 0;
const IER_DLM: u16 = 1;
const IIR_FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const MSR: u16 = 6;
// Offset 7 is the scratch register.

// IER bits.
const IER_RDI: u8 = 0x01;
const IER_THRI: u8 = 0x02;
const IER_RLSI: u8 = 0x04;
const IER_MSI: u8 = 0x08;

// IIR values (datasheet Table 9-5), highest priority first.
const IIR_NO_INT: u8 = 0x01;
const IIR_RLSI: u8 = 0x06;
const IIR_RDI: u8 = 0x04;
const IIR_CTI: u8 = 0x0C;
const IIR_THRI: u8 = 0x02;
const IIR_MSI: u8 = 0x00;
const IIR_FIFO_ENABLED: u8 = 0xC0;

// FCR bits.
const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;
const FCR_CLEAR_TX: u8 = 0x04;

const LCR_DLAB: u8 = 0x80;

// MCR bits.
const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;

// LSR bits.
const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const LSR_ERRORS: u8 = 0x1E;

// MSR bits: deltas in the low nibble, line states in the high one.
const MSR_DCTS: u8 = 0x01;
const MSR_DDSR: u8 = 0x02;
const MSR_TERI: u8 = 0x04;
const MSR_DDCD: u8 = 0x08;
const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;
/// The modem lines of a console that is always there: CTS, DSR and DCD
/// asserted (as QEMU's serial port reports).
const MSR_LINES_CONNECTED: u8 = MSR_CTS | MSR_DSR | MSR_DCD;

/// A 16550A UART. Decodes the low three bits of the port, so it can sit at
/// any 8-aligned base (COM1 0x3F8, COM2 0x2F8, ...).
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    /// Error bits of the LSR (OE, PE, FE, BI); cleared by reading it.
    lsr_errors: u8,
    /// Modem status: line states (high nibble) and deltas (low nibble).
    msr: u8,
    scr: u8,
    divisor: u16,
    fifo_enabled: bool,
    /// Receive FIFO trigger level in bytes (FCR bits 7:6).
    rx_trigger: usize,
    /// Received bytes: the first `rx_capacity()` are in the FIFO, the rest
    /// are still "on the wire".
    rx: VecDeque<u8>,
    /// Transmit FIFO (THR when FIFOs are off): bytes the sink had no room for.
    tx: VecDeque<u8>,
    output: Vec<u8>,
    /// The THRE interrupt is pending: set when the transmitter empties or
    /// THRI is enabled while it is empty, cleared by reading IIR while it is
    /// the reported source or by writing THR (datasheet Table 9-5).
    thr_ipending: bool,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// A UART as after a master reset (datasheet Table 9-12), with the
    /// divisor for 115200 baud.
    pub fn new() -> Self {
        Self {
            ier: 0,
            lcr: 0x03,
            mcr: 0,
            lsr_errors: 0,
            msr: MSR_LINES_CONNECTED,
            scr: 0,
            divisor: 1,
            fifo_enabled: false,
            rx_trigger: 1,
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            output: Vec::new(),
            thr_ipending: false,
        }
    }

    /// The bytes the guest has sent since the last call. Draining makes room
    /// for bytes waiting in the transmit FIFO, which may raise the THRE
    /// interrupt: check [`Self::irq_level`] afterwards.
    pub fn take_output(&mut self) -> Vec<u8> {
        let out = core::mem::take(&mut self.output);
        self.drain_tx();
        out
    }

    /// Queues bytes for the guest to receive; returns how many were taken
    /// (fewer than `bytes.len()` once [`INPUT_LIMIT`] bytes wait). Check
    /// [`Self::irq_level`] afterwards.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let taken = bytes.len().min(self.input_room());
        self.rx.extend(&bytes[..taken]);
        taken
    }

    /// How many more bytes [`Self::push_input`] takes now: the VMM reads
    /// no more than this from the console, so typed input waits there
    /// (flow-controlled back to the operator) instead of being dropped
    /// while the guest does not read its serial port.
    pub fn input_room(&self) -> usize {
        INPUT_LIMIT.saturating_sub(self.rx.len())
    }

    /// The interrupt line as the PIC sees it: an interrupt is pending
    /// (IIR bit 0 clear) and OUT2 enables the IRQ driver. In loopback the
    /// OUT2 pin is forced inactive (datasheet §8.6.5), so the line is off.
    pub fn irq_level(&self) -> bool {
        self.mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2 && self.interrupt_id() != IIR_NO_INT
    }

    /// The line status register while the UART is a plain polled output:
    /// no interrupts enabled, THR (not the divisor latch) at offset 0, no
    /// loopback, nothing received, transmitter empty, no errors. Then an
    /// LSR read returns this value and a THR write only adds output, until
    /// the guest writes another register; the VMM may let the kernel buffer
    /// such writes and answer such reads (coalesced port I/O). `None`
    /// otherwise.
    pub fn polled_output_lsr(&self) -> Option<u8> {
        let lsr = self.lsr();
        let plain = self.ier == 0 && self.lcr & LCR_DLAB == 0 && !self.loopback();
        (plain && lsr == LSR_THRE | LSR_TEMT && self.output.len() < OUTPUT_LIMIT / 2).then_some(lsr)
    }

    /// The divisor latch: the baud rate is 115200 / divisor.
    pub fn divisor(&self) -> u16 {
        self.divisor
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled { FIFO_SIZE } else { 1 }
    }

    fn rx_level(&self) -> usize {
        self.rx.len().min(self.rx_capacity())
    }

    fn lsr(&self) -> u8 {
        let mut lsr = self.lsr_errors;
        if !self.rx.is_empty() {
            lsr |= LSR_DR;
        }
        // No shift register is modelled: the transmitter is empty exactly
        // when the THR/FIFO is.
        if self.tx.is_empty() {
            lsr |= LSR_THRE | LSR_TEMT;
        }
        // "Error in RCVR FIFO" (bit 7) is never set: no byte arrives with a
        // parity, framing or break error.
        lsr
    }

    /// The IIR's interrupt identification (bits 3:0) by the priorities of
    /// datasheet Table 9-5.
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RLSI != 0 && self.lsr_errors & (LSR_OE | LSR_ERRORS) != 0 {
            IIR_RLSI
        } else if self.ier & IER_RDI != 0 && !self.rx.is_empty() {
            // Below the trigger level the datasheet raises a character
            // timeout after four character times without a read; with no
            // baud-rate timing the timeout is immediate.
            if self.fifo_enabled && self.rx_level() < self.rx_trigger { IIR_CTI } else { IIR_RDI }
        } else if self.ier & IER_THRI != 0 && self.thr_ipending {
            IIR_THRI
        } else if self.ier & IER_MSI != 0 && self.msr & 0x0F != 0 {
            IIR_MSI
        } else {
            IIR_NO_INT
        }
    }

    /// Moves transmit FIFO bytes to the output sink while it has room.
    fn drain_tx(&mut self) {
        let was_empty = self.tx.is_empty();
        while self.output.len() < OUTPUT_LIMIT {
            match self.tx.pop_front() {
                Some(b) => self.output.push(b),
                None => break,
            }
        }
        if !was_empty && self.tx.is_empty() {
            self.thr_ipending = true;
        }
    }

    fn transmit(&mut self, byte: u8) {
        self.thr_ipending = false;
        if self.loopback() {
            // Loopback: the transmitter output is connected to the receiver
            // input (datasheet §8.6.5); a full FIFO overruns.
            if self.rx.len() >= self.rx_capacity() {
                self.lsr_errors |= LSR_OE;
            } else {
                self.rx.push_back(byte);
            }
            self.thr_ipending = true;
            return;
        }
        let capacity = if self.fifo_enabled { FIFO_SIZE } else { 1 };
        if self.tx.len() < capacity {
            self.tx.push_back(byte);
        }
        // A write to a full FIFO is lost, as on the chip.
        self.drain_tx();
    }

    /// Recomputes the modem status lines after an MCR or loopback change
    /// and latches the deltas (datasheet §8.6.8).
    fn update_msr(&mut self) {
        let lines = if self.loopback() {
            // DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD.
            let m = self.mcr;
            (if m & MCR_RTS != 0 { MSR_CTS } else { 0 })
                | (if m & MCR_DTR != 0 { MSR_DSR } else { 0 })
                | (if m & MCR_OUT1 != 0 { MSR_RI } else { 0 })
                | (if m & MCR_OUT2 != 0 { MSR_DCD } else { 0 })
        } else {
            MSR_LINES_CONNECTED
        };
        let old = self.msr & 0xF0;
        let changed = old ^ lines;
        let mut deltas = (changed >> 4) & (MSR_DCTS | MSR_DDSR | MSR_DDCD);
        if old & MSR_RI != 0 && lines & MSR_RI == 0 {
            deltas |= MSR_TERI; // trailing edge of RI only
        }
        self.msr = lines | (self.msr & 0x0F) | deltas;
    }

    fn read_register(&mut self, reg: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            RBR_THR_DLL if dlab => self.divisor as u8,
            RBR_THR_DLL => self.rx.pop_front().unwrap_or(0),
            IER_DLM if dlab => (self.divisor >> 8) as u8,
            IER_DLM => self.ier,
            IIR_FCR => {
                let id = self.interrupt_id();
                if id == IIR_THRI {
                    self.thr_ipending = false;
                }
                id | if self.fifo_enabled { IIR_FIFO_ENABLED } else { 0 }
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let lsr = self.lsr();
                self.lsr_errors = 0;
                lsr
            }
            MSR => {
                let msr = self.msr;
                self.msr &= 0xF0;
                msr
            }
            _ => self.scr, // SCR
        }
    }

    fn write_register(&mut self, reg: u16, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            RBR_THR_DLL if dlab => self.divisor = (self.divisor & 0xFF00) | u16::from(value),
            RBR_THR_DLL => self.transmit(value),
            IER_DLM if dlab => self.divisor = (self.divisor & 0x00FF) | u16::from(value) << 8,
            IER_DLM => {
                // Bits 7:4 are always 0 on the 16550A (Linux's autoconfig
                // tells the chip from XScale and 16750 parts by them).
                let new = value & 0x0F;
                let enabled = new & !self.ier;
                self.ier = new;
                // Enabling THRI while the transmitter is empty raises the
                // THRE interrupt even if an IIR read had cleared it: Linux's
                // serial8250_do_startup tests for exactly this and otherwise
                // marks the port UART_BUG_THRE (QEMU and Bochs agree).
                if enabled & IER_THRI != 0 && self.tx.is_empty() {
                    self.thr_ipending = true;
                }
            }
            IIR_FCR => self.write_fcr(value),
            LCR => self.lcr = value,
            MCR => {
                self.mcr = value & 0x1F;
                self.update_msr();
            }
            // LSR is for factory test and MSR is read-only on the 16550A.
            LSR | MSR => {}
            _ => self.scr = value, // SCR
        }
    }

    /// FIFO control (datasheet §8.6.3): changing FCR0 clears both FIFOs;
    /// the other bits are only programmed while FCR0 is written as 1.
    fn write_fcr(&mut self, value: u8) {
        let enable = value & FCR_ENABLE != 0;
        if enable != self.fifo_enabled {
            self.clear_rx_fifo();
            self.clear_tx_fifo();
            self.fifo_enabled = enable;
        }
        if !enable {
            return;
        }
        if value & FCR_CLEAR_RX != 0 {
            self.clear_rx_fifo();
        }
        if value & FCR_CLEAR_TX != 0 {
            self.clear_tx_fifo();
        }
        self.rx_trigger = [1, 4, 8, 14][usize::from(value >> 6)];
    }

    fn clear_rx_fifo(&mut self) {
        let n = self.rx_level();
        self.rx.drain(..n);
    }

    fn clear_tx_fifo(&mut self) {
        if !self.tx.is_empty() {
            self.tx.clear();
            self.thr_ipending = true;
        }
    }
}

impl PortIoDevice for Uart16550 {
    fn read(&mut self, port: u16, size: u8, _now_ns: u64) -> u32 {
        read_bytewise(port, size, |p| self.read_register(p & 7))
    }

    fn write(&mut self, port: u16, size: u8, value: u32, _now_ns: u64) {
        write_bytewise(port, size, value, |p, v| self.write_register(p & 7, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::XorShift;

    const BASE: u16 = COM1_BASE;

    fn inb(u: &mut Uart16550, reg: u16) -> u8 {
        u.read(BASE + reg, 1, 0) as u8
    }

    fn outb(u: &mut Uart16550, reg: u16, v: u8) {
        u.write(BASE + reg, 1, u32::from(v), 0);
    }

    /// What Linux's 8250 driver does when it opens the console port.
    fn linux_setup(u: &mut Uart16550) {
        outb(u, LCR, 0x80);
        outb(u, 0, 1);
        outb(u, 1, 0);
        outb(u, LCR, 0x03);
        outb(u, IIR_FCR, 0xC7); // enable, clear both, trigger 14
        outb(u, MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
    }

    #[test]
    fn reset_state_and_lsr_after_writes() {
        let mut u = Uart16550::new();
        assert_eq!(inb(&mut u, LSR), LSR_THRE | LSR_TEMT);
        assert_eq!(inb(&mut u, IIR_FCR), IIR_NO_INT);
        assert_eq!(inb(&mut u, LCR), 0x03);
        for &b in b"hello" {
            outb(&mut u, 0, b);
            assert_eq!(inb(&mut u, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
        }
        assert_eq!(u.take_output(), b"hello");
        assert!(u.take_output().is_empty());
        assert!(!u.irq_level());
    }

    #[test]
    fn divisor_latch_and_scratch() {
        let mut u = Uart16550::new();
        outb(&mut u, LCR, 0x83);
        outb(&mut u, 0, 0x0C);
        outb(&mut u, 1, 0x00);
        assert_eq!(inb(&mut u, 0), 0x0C);
        assert_eq!(u.divisor(), 12);
        outb(&mut u, LCR, 0x03);
        outb(&mut u, 1, 0x00);
        assert_eq!(u.divisor(), 12, "IER write with DLAB=0 leaves the divisor");
        assert!(u.take_output().is_empty(), "DLL writes are not data");
        outb(&mut u, 7, 0xA5);
        assert_eq!(inb(&mut u, 7), 0xA5);
    }

    #[test]
    fn linux_autoconfig_finds_a_16550a() {
        let mut u = Uart16550::new();
        // IER scratch test.
        outb(&mut u, IER_DLM, 0);
        assert_eq!(inb(&mut u, IER_DLM) & 0x0F, 0);
        outb(&mut u, IER_DLM, 0x0F);
        assert_eq!(inb(&mut u, IER_DLM) & 0x0F, 0x0F);
        outb(&mut u, IER_DLM, 0);
        // Loopback test: MCR = LOOP | OUT2 | RTS gives MSR 0x90.
        outb(&mut u, MCR, MCR_LOOP | 0x0A);
        assert_eq!(inb(&mut u, MSR) & 0xF0, 0x90);
        outb(&mut u, MCR, 0);
        // FIFO test: IIR bits 7:6 = 3.
        outb(&mut u, IIR_FCR, FCR_ENABLE);
        assert_eq!(inb(&mut u, IIR_FCR) >> 6, 3);
        // No EFR at LCR=0xBF (reads IIR, non-zero), no 16750 64-byte bit,
        // no XScale UUE bit.
        outb(&mut u, LCR, 0xBF);
        assert_ne!(inb(&mut u, IIR_FCR), 0);
        outb(&mut u, LCR, 0);
        outb(&mut u, IIR_FCR, FCR_ENABLE | 0x20);
        assert_eq!(inb(&mut u, IIR_FCR) & 0xE0, 0xC0);
        outb(&mut u, IER_DLM, 0x40);
        assert_eq!(inb(&mut u, IER_DLM) & 0x40, 0);
    }

    #[test]
    fn thre_interrupt_rearms_as_8250_startup_expects() {
        let mut u = Uart16550::new();
        linux_setup(&mut u);
        // UART_BUG_TXEN test: enabling THRI with TEMT set must show the
        // interrupt at once.
        outb(&mut u, IER_DLM, IER_THRI);
        let lsr = inb(&mut u, LSR);
        let iir = inb(&mut u, IIR_FCR);
        outb(&mut u, IER_DLM, 0);
        assert!(lsr & LSR_TEMT != 0 && iir & IIR_NO_INT == 0);
        // UART_BUG_THRE test: after the IIR read cleared it, toggling IER
        // re-asserts it.
        outb(&mut u, IER_DLM, IER_THRI);
        let iir1 = inb(&mut u, IIR_FCR);
        outb(&mut u, IER_DLM, 0);
        outb(&mut u, IER_DLM, IER_THRI);
        let iir2 = inb(&mut u, IIR_FCR);
        assert_eq!(iir1 & 0x0F, IIR_THRI);
        assert_eq!(iir2 & 0x0F, IIR_THRI);
        // Read once, the THRE interrupt stays quiet until the THR empties again.
        assert_eq!(inb(&mut u, IIR_FCR) & 0x0F, IIR_NO_INT);
        assert!(!u.irq_level());
        outb(&mut u, 0, b'a');
        assert!(u.irq_level(), "the byte left at once: THR empty again");
        assert_eq!(inb(&mut u, IIR_FCR), IIR_FIFO_ENABLED | IIR_THRI);
        assert!(!u.irq_level());
    }

    #[test]
    fn out2_gates_the_irq_line() {
        let mut u = Uart16550::new();
        outb(&mut u, IER_DLM, IER_THRI);
        assert_eq!(inb(&mut u, IIR_FCR) & 0x0F, IIR_THRI);
        outb(&mut u, IER_DLM, 0);
        outb(&mut u, IER_DLM, IER_THRI);
        assert!(!u.irq_level(), "OUT2 clear");
        outb(&mut u, MCR, MCR_OUT2);
        assert!(u.irq_level());
        outb(&mut u, MCR, MCR_OUT2 | MCR_LOOP);
        assert!(!u.irq_level(), "loopback forces OUT2 inactive");
    }

    #[test]
    fn receive_fifo_trigger_timeout_and_data_ready() {
        let mut u = Uart16550::new();
        linux_setup(&mut u);
        outb(&mut u, IER_DLM, IER_RDI | IER_RLSI);
        assert!(!u.irq_level());
        assert_eq!(u.push_input(b"abc"), 3);
        assert!(u.irq_level());
        assert_eq!(inb(&mut u, IIR_FCR) & 0x0F, IIR_CTI, "below trigger 14: timeout");
        assert_eq!(inb(&mut u, LSR) & LSR_DR, LSR_DR);
        let mut got = Vec::new();
        while inb(&mut u, LSR) & LSR_DR != 0 {
            got.push(inb(&mut u, 0));
        }
        assert_eq!(got, b"abc");
        assert!(!u.irq_level());
        u.push_input(&[b'x'; 20]);
        assert_eq!(inb(&mut u, IIR_FCR) & 0x0F, IIR_RDI, "16 in the FIFO, over the trigger");
        outb(&mut u, IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        let mut left = 0;
        while inb(&mut u, LSR) & LSR_DR != 0 {
            inb(&mut u, 0);
            left += 1;
        }
        assert_eq!(left, 4, "clearing drops the 16 bytes in the FIFO only");
    }

    #[test]
    fn input_queue_is_bounded() {
        let mut u = Uart16550::new();
        let big = alloc::vec![0u8; INPUT_LIMIT + 10];
        assert_eq!(u.input_room(), INPUT_LIMIT);
        assert_eq!(u.push_input(&big), INPUT_LIMIT);
        assert_eq!(u.input_room(), 0);
        assert_eq!(u.push_input(b"x"), 0);
        inb(&mut u, 0);
        assert_eq!(u.input_room(), 1);
        assert_eq!(u.push_input(b"xy"), 1);
    }

    #[test]
    fn loopback_echoes_and_overruns() {
        let mut u = Uart16550::new();
        outb(&mut u, MCR, MCR_LOOP);
        outb(&mut u, IER_DLM, IER_RLSI);
        outb(&mut u, 0, 0x42);
        assert!(u.take_output().is_empty(), "loopback sends nothing out");
        assert_eq!(inb(&mut u, LSR) & LSR_DR, LSR_DR);
        outb(&mut u, 0, 0x43); // FIFOs off: one-byte holding register overruns
        assert_eq!(inb(&mut u, IIR_FCR) & 0x0F, IIR_RLSI);
        assert_eq!(inb(&mut u, LSR) & LSR_OE, LSR_OE);
        assert_eq!(inb(&mut u, LSR) & LSR_OE, 0, "LSR read clears OE");
        assert_eq!(inb(&mut u, 0), 0x42);
        // Modem status deltas follow MCR in loopback.
        outb(&mut u, IER_DLM, IER_MSI);
        inb(&mut u, MSR);
        outb(&mut u, MCR, MCR_LOOP | MCR_RTS | MCR_OUT1);
        assert_eq!(inb(&mut u, IIR_FCR) & 0x0F, IIR_MSI);
        assert_eq!(inb(&mut u, MSR), MSR_CTS | MSR_RI | MSR_DCTS);
        outb(&mut u, MCR, MCR_LOOP | MCR_RTS);
        assert_eq!(inb(&mut u, MSR), MSR_CTS | MSR_TERI);
        assert_eq!(inb(&mut u, IIR_FCR) & 0x0F, IIR_NO_INT);
        outb(&mut u, MCR, 0);
        assert_eq!(inb(&mut u, MSR) & 0xF0, MSR_LINES_CONNECTED);
    }

    #[test]
    fn full_sink_holds_thre_until_drained() {
        let mut u = Uart16550::new();
        linux_setup(&mut u);
        outb(&mut u, IER_DLM, IER_THRI);
        inb(&mut u, IIR_FCR);
        for i in 0..OUTPUT_LIMIT {
            outb(&mut u, 0, i as u8);
        }
        inb(&mut u, IIR_FCR);
        assert_eq!(inb(&mut u, LSR) & LSR_THRE, LSR_THRE, "the sink took it all so far");
        for i in 0..FIFO_SIZE {
            outb(&mut u, 0, i as u8);
        }
        assert_eq!(inb(&mut u, LSR) & (LSR_THRE | LSR_TEMT), 0, "FIFO full, sink full");
        assert!(!u.irq_level());
        outb(&mut u, 0, 0xEE); // lost
        let out = u.take_output();
        assert_eq!(out.len(), OUTPUT_LIMIT);
        assert!(u.irq_level(), "the FIFO emptied into the sink: THRE interrupt");
        assert_eq!(u.take_output().len(), FIFO_SIZE);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x1655_0A55);
        let mut u = Uart16550::new();
        for _ in 0..200_000 {
            let port = BASE + rng.below(10) as u16;
            let size = rng.size();
            match rng.below(10) {
                0..=3 => {
                    u.read(port, size, rng.next());
                }
                4..=7 => u.write(port, size, rng.next() as u32, rng.next()),
                8 => {
                    let n = rng.below(40) as usize;
                    let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    u.push_input(&bytes);
                }
                _ => {
                    if rng.below(4) == 0 {
                        u.take_output();
                    }
                }
            }
            let _ = u.irq_level();
            assert!(u.output.len() <= OUTPUT_LIMIT && u.tx.len() <= FIFO_SIZE && u.rx.len() <= INPUT_LIMIT + FIFO_SIZE);
        }
    }
}
