//! The PC platform of one VM: the legacy devices on their ports, the I/O
//! APIC, the ACPI power-management block, and how their interrupt lines
//! reach the vCPUs.
//!
//! The runtime holds one [`Platform`] behind a lock and calls it from every
//! vCPU thread's exit handler ([`Platform::io_read`], [`Platform::io_write`],
//! the [`MmioBus`] methods) and from its timer thread ([`Platform::tick`] at
//! [`Platform::next_event`]). After each call it takes the interrupts to
//! deliver ([`Platform::take_interrupts`]) and hands each to the vCPUs it
//! names, and it looks at [`Platform::power_event`].
//!
//! Interrupt lines are levels sampled after every access: a change goes to
//! the 8259 pair (so its registers read true) and to the I/O APIC, pin =
//! ISA IRQ except the PIT, whose IRQ 0 arrives on pin 2 (the MADT's
//! interrupt source override). Only the I/O APIC path delivers: a guest
//! that runs its interrupts through the 8259 (ExtINT) gets none — Linux
//! with the MADT's I/O APIC never does.

use alloc::vec::Vec;

use crate::boot::acpi::{AcpiPm, Requested, SCI_IRQ};
use crate::devices::i8042::{AUX_IRQ, I8042, I8042_PORTS, KEYBOARD_IRQ};
use crate::devices::ioapic::{
    DeliveryMode, DestinationMode, IOAPIC_BASE, IOAPIC_MMIO_SIZE, IoApic, IoApicInterrupt, TriggerMode,
};
use crate::devices::pic8259::{DualPic, ELCR_PORTS, MASTER_PORTS, SLAVE_PORTS};
use crate::devices::pit::{PIT_PORTS, PORT_B, Pit};
use crate::devices::rtc::{RTC_IRQ, RTC_PORTS, Rtc};
use crate::devices::uart16550::{COM1_IRQ, COM1_PORTS, COM2_IRQ, COM2_PORTS, Uart16550};
use crate::devices::{DeviceId, MmioDevice, PortBus, all_ones};
use crate::firmware::fw_cfg::FwCfg;
use crate::firmware::{DEBUGCON_PORT, DEBUGCON_READBACK};
use crate::pci::PciBus;
use crate::virtio::GuestMemory;

/// The I/O APIC pin of the PIT's IRQ 0 (MADT interrupt source override).
pub const PIT_GSI: u8 = 2;
/// Port 0x80, the POST code port Linux writes to for I/O delays.
pub const POST_PORT: u16 = 0x80;

/// See [`Platform::firmware_pio_rules`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwarePioRules {
    /// Byte OUTs the kernel may buffer.
    pub buffered: [u16; 2],
    /// Byte INs the kernel may answer: (port, value).
    pub constant: [(u16, u8); 2],
}

/// An interrupt for the local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    pub vector: u8,
    pub target: Target,
    /// Level-triggered: the guest's EOI must come back ([`Platform::eoi`]).
    pub level: bool,
}

/// Which local APICs an interrupt message names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Physical destination mode: the APIC with this ID (0xFF: all).
    Physical(u8),
    /// Logical destination mode: a flat-model bit mask. Linux's flat mode
    /// gives CPU n the logical ID 1 << n, and vCPU n has APIC ID n, so
    /// bit n names vCPU n.
    Logical(u8),
    /// Lowest priority among the named APICs: the runtime picks the first.
    LowestOf(u8),
}

impl Target {
    /// Whether vCPU `index` (APIC ID `index`) is named; for lowest priority,
    /// only the first named vCPU below `vcpus` is.
    pub fn names(self, index: u32, vcpus: u32) -> bool {
        match self {
            Target::Physical(0xFF) => index < vcpus,
            Target::Physical(id) => u32::from(id) == index,
            Target::Logical(mask) => index < 8 && mask & (1 << index) != 0,
            Target::LowestOf(mask) => {
                let first = (0..vcpus.min(8)).find(|i| mask & (1 << i) != 0);
                first == Some(index)
            }
        }
    }
}

/// How the guest asked to end or restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerEvent {
    /// ACPI S5 (SLP_TYP 5 with SLP_EN).
    PowerOff,
    /// The reset register 0xCF9 or the 8042's reset line.
    Reboot,
}

/// The legacy PC devices and the I/O APIC of one VM.
pub struct Platform {
    ports: PortBus,
    uart: DeviceId,
    /// COM2, the metadata port (`vm::metadata` answers what the guest
    /// writes to it).
    com2: DeviceId,
    pic: DeviceId,
    pit: DeviceId,
    rtc: DeviceId,
    i8042: DeviceId,
    pm: AcpiPm,
    ioapic: IoApic,
    /// PCI bus 0 (config ports 0xCF8-0xCFF, ECAM, BARs) with the VM's
    /// virtio devices.
    pci: PciBus,
    /// INTx levels as last passed to the I/O APIC (bit n = GSI n).
    intx: u32,
    /// ISA lines as last sampled (bit n = IRQ n), PIT excluded.
    lines: u16,
    interrupts: Vec<Interrupt>,
    power: Option<PowerEvent>,
    /// Accesses to ports and addresses no device answers.
    pub unclaimed_accesses: u64,
    /// Firmware boot only ([`Self::attach_firmware`]): fw_cfg, and what
    /// the firmware wrote to the debug console (port 0x402).
    fw_cfg: Option<FwCfg>,
    debugcon: Vec<u8>,
}

impl Platform {
    /// The devices at power-on; the RTC starts at `unix_seconds` at VM time
    /// `now_ns`.
    pub fn new(unix_seconds: i64, now_ns: u64) -> Self {
        let mut ports = PortBus::new();
        // The ranges are the fixed PC ones and cannot overlap.
        let uart = ports.add(Uart16550::new(), &[COM1_PORTS]).expect("COM1 ports");
        let com2 = ports.add(Uart16550::new(), &[COM2_PORTS]).expect("COM2 ports");
        let pic = ports.add(DualPic::new(), &[MASTER_PORTS, SLAVE_PORTS, ELCR_PORTS]).expect("PIC ports");
        let pit = ports.add(Pit::new(), &[PIT_PORTS, PORT_B]).expect("PIT ports");
        let rtc = ports.add(Rtc::new(unix_seconds, now_ns), &[RTC_PORTS]).expect("RTC ports");
        let i8042 = ports.add(I8042::new(), &I8042_PORTS).expect("i8042 ports");
        Self {
            ports,
            uart,
            com2,
            pic,
            pit,
            rtc,
            i8042,
            pm: AcpiPm::new(),
            ioapic: IoApic::new(0),
            pci: PciBus::new(),
            intx: 0,
            lines: 0,
            interrupts: Vec::new(),
            power: None,
            unclaimed_accesses: 0,
            fw_cfg: None,
            debugcon: Vec::new(),
        }
    }

    /// Makes this a firmware-booted machine ([`crate::firmware`]): the
    /// fw_cfg device on its ports, the debug console on 0x402 (its output
    /// is [`Self::take_debug_output`]), and the CMOS bytes that describe
    /// memory and vCPUs.
    pub fn attach_firmware(&mut self, fw_cfg: FwCfg, cmos: &[(u8, u8)]) {
        self.fw_cfg = Some(fw_cfg);
        self.pm.treat_slp_typ_0_as_off();
        // A PS/2 keyboard, as on QEMU's machines: OVMF waits a second
        // for every keyboard ACK that does not come.
        if let Some(k) = self.ports.device_mut::<I8042>(self.i8042) {
            *k = I8042::with_keyboard();
        }
        if let Some(rtc) = self.ports.device_mut::<Rtc>(self.rtc) {
            for &(i, v) in cmos {
                rtc.set_nvram(i, v);
            }
        }
    }

    /// The fw_cfg device, if attached.
    pub fn fw_cfg(&self) -> Option<&FwCfg> {
        self.fw_cfg.as_ref()
    }

    /// The PCI bus, to add devices and reach them.
    pub fn pci(&mut self) -> &mut PciBus {
        &mut self.pci
    }

    /// An `in` of `size` bytes; ports nobody decodes read all ones.
    pub fn io_read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        let v = if is_pci_config(port, size) {
            self.pci.io_read(port, size).unwrap_or_else(|| all_ones(size))
        } else if AcpiPm::claims(port) {
            self.pm.read(port, size, now_ns)
        } else if port == POST_PORT {
            all_ones(size)
        } else if let Some(f) = self.fw_cfg.as_mut().filter(|_| FwCfg::claims(port)) {
            f.io_read(port, size)
        } else if port == DEBUGCON_PORT && self.fw_cfg.is_some() && size == 1 {
            u32::from(DEBUGCON_READBACK)
        } else {
            match self.ports.read(port, size, now_ns).or_else(|| self.pci.io_read(port, size)) {
                Some(v) => v,
                None => {
                    self.unclaimed_accesses += 1;
                    all_ones(size)
                }
            }
        };
        self.sample(now_ns);
        v
    }

    /// An `out` of `size` bytes; ports nobody decodes ignore it. `mem` is
    /// guest RAM, for the device work a write may set off (a virtqueue
    /// notification through an I/O BAR).
    pub fn io_write(&mut self, port: u16, size: u8, value: u32, now_ns: u64, mem: &mut dyn GuestMemory) {
        if is_pci_config(port, size) {
            self.pci.io_write(port, size, value, mem);
        } else if AcpiPm::claims(port) {
            match self.pm.write(port, size, value) {
                Some(Requested::PowerOff) => self.power = self.power.or(Some(PowerEvent::PowerOff)),
                Some(Requested::Reboot) => self.power = self.power.or(Some(PowerEvent::Reboot)),
                None => {}
            }
        } else if let Some(f) = self.fw_cfg.as_mut().filter(|_| FwCfg::claims(port)) {
            f.io_write(port, size, value, mem);
        } else if port == DEBUGCON_PORT && self.fw_cfg.is_some() {
            // Bounded like the UART's FIFO: a guest that writes without
            // end loses the excess, the VMM's memory does not grow.
            if size == 1 && self.debugcon.len() < DEBUGCON_LIMIT {
                self.debugcon.push(value as u8);
            }
        } else if port != POST_PORT
            && !self.ports.write(port, size, value, now_ns)
            && !self.pci.io_write(port, size, value, mem)
        {
            self.unclaimed_accesses += 1;
        }
        if self.ports.device::<I8042>(self.i8042).is_some_and(I8042::reset_requested) {
            self.power = self.power.or(Some(PowerEvent::Reboot));
        }
        self.sample(now_ns);
    }

    /// Whether a write to `port` may change when the timers fire (the
    /// runtime then wakes its timer thread).
    pub fn reprograms_timers(port: u16) -> bool {
        PIT_PORTS.contains(port) || PORT_B.contains(port) || RTC_PORTS.contains(port)
    }

    /// When a timer next needs [`Self::tick`].
    pub fn next_event(&mut self, now_ns: u64) -> Option<u64> {
        let pit = self.ports.device::<Pit>(self.pit).and_then(|p| p.next_event(now_ns));
        let rtc = self.ports.device::<Rtc>(self.rtc).and_then(|r| r.next_event(now_ns));
        match (pit, rtc) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Lets time pass: timer interrupts up to `now_ns`.
    pub fn tick(&mut self, now_ns: u64) {
        self.sample(now_ns);
    }

    /// What the guest wrote to its serial console since the last call.
    pub fn take_console_output(&mut self) -> Vec<u8> {
        self.ports.device_mut::<Uart16550>(self.uart).map(Uart16550::take_output).unwrap_or_default()
    }

    /// What the guest wrote to its metadata port (COM2) since the last call.
    pub fn take_metadata_output(&mut self) -> Vec<u8> {
        self.ports.device_mut::<Uart16550>(self.com2).map(Uart16550::take_output).unwrap_or_default()
    }

    /// Answers for the guest on its metadata port; returns how many bytes
    /// fitted.
    pub fn push_metadata_input(&mut self, bytes: &[u8], now_ns: u64) -> usize {
        let n = self.ports.device_mut::<Uart16550>(self.com2).map_or(0, |u| u.push_input(bytes));
        self.sample(now_ns);
        n
    }

    /// What the firmware wrote to its debug console (port 0x402) since
    /// the last call.
    pub fn take_debug_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.debugcon)
    }

    /// Coalescing the serial console allows (see
    /// `Uart16550::polled_output_lsr`): the port whose byte writes may be
    /// buffered (THR) and the port whose byte reads may be answered (LSR)
    /// with the value; `None` while the UART is in any other state.
    pub fn serial_coalescing(&self) -> Option<(u16, u16, u8)> {
        let lsr = self.ports.device::<Uart16550>(self.uart)?.polled_output_lsr()?;
        Some((COM1_PORTS.base, COM1_PORTS.base + 5, lsr))
    }

    /// The port rules a firmware VM's vCPUs hand the kernel besides the
    /// serial port's (`None` for a direct-boot VM): OUTs to the firmware's
    /// debug console (0x402) and to the POST port (0x80, ignored) are
    /// buffered and replayed in order at the next exit, and INs whose
    /// answer never changes are answered without an exit: the CMOS index
    /// register 0x70 (write-only, reads 0xFF) and port 0x92 (not decoded
    /// here, reads 0xFF), which SeaBIOS reads on every switch between real
    /// and protected mode (some 2,300 exits per boot).
    pub fn firmware_pio_rules(&self) -> Option<FirmwarePioRules> {
        self.fw_cfg.as_ref()?;
        Some(FirmwarePioRules { buffered: [DEBUGCON_PORT, POST_PORT], constant: [(0x70, 0xFF), (0x92, 0xFF)] })
    }

    /// How many typed bytes the guest's serial console takes now
    /// ([`Uart16550::input_room`]).
    pub fn console_input_room(&self) -> usize {
        self.ports.device::<Uart16550>(self.uart).map_or(0, Uart16550::input_room)
    }

    /// Typed input for the guest's serial console; returns how many bytes
    /// fitted.
    pub fn push_console_input(&mut self, bytes: &[u8], now_ns: u64) -> usize {
        let n = self.ports.device_mut::<Uart16550>(self.uart).map_or(0, |u| u.push_input(bytes));
        self.sample(now_ns);
        n
    }

    /// Asks the guest to power off (the ACPI power button).
    pub fn press_power_button(&mut self, now_ns: u64) {
        self.pm.press_power_button();
        self.sample(now_ns);
    }

    /// The interrupts raised since the last call.
    pub fn take_interrupts(&mut self) -> Vec<Interrupt> {
        core::mem::take(&mut self.interrupts)
    }

    /// A power-off or reboot the guest asked for (stays set).
    pub fn power_event(&self) -> Option<PowerEvent> {
        self.power
    }

    /// A vCPU's local APIC ended level-triggered `vector` (its EOI
    /// broadcast): the I/O APIC clears remote IRR and sends the interrupt
    /// again if the line is still asserted.
    pub fn eoi(&mut self, vector: u8, now_ns: u64) {
        let out = self.ioapic.eoi(vector);
        self.route(out);
        self.sample(now_ns);
    }

    /// Passes on what the PCI devices raised: MSI messages straight to the
    /// APICs, INTx levels to the I/O APIC.
    fn collect_pci(&mut self) {
        for m in self.pci.take_msi() {
            if !m.is_interrupt() || !matches!(m.delivery_mode(), 0 | 1) {
                continue; // a stray write, or SMI/NMI/INIT/ExtINT: not delivered
            }
            let dest = m.destination_id();
            let target = match (m.logical_destination(), m.delivery_mode()) {
                (false, _) => Target::Physical(dest),
                (true, 1) => Target::LowestOf(dest),
                (true, _) => Target::Logical(dest),
            };
            self.interrupts.push(Interrupt { vector: m.vector(), target, level: m.level_triggered() });
        }
        let mut levels = 0u32;
        for line in self.pci.intx_lines() {
            if line.asserted && line.irq < 32 {
                levels |= 1 << line.irq;
            }
        }
        let changed = levels ^ self.intx;
        self.intx = levels;
        for gsi in (0..32u8).filter(|g| changed & (1 << g) != 0) {
            let out = self.ioapic.set_irq(gsi, levels & (1 << gsi) != 0);
            self.route(out);
        }
    }

    fn route(&mut self, out: Vec<IoApicInterrupt>) {
        for i in out {
            let target = match (i.destination_mode, i.delivery_mode) {
                (DestinationMode::Physical, _) => Target::Physical(i.destination),
                (DestinationMode::Logical, DeliveryMode::LowestPriority) => Target::LowestOf(i.destination),
                (DestinationMode::Logical, _) => Target::Logical(i.destination),
            };
            // Only fixed and lowest-priority interrupts carry a vector the
            // APIC accepts this way; SMI/NMI/INIT/ExtINT routes are ignored.
            if matches!(i.delivery_mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) {
                let level = i.trigger == TriggerMode::Level;
                self.interrupts.push(Interrupt { vector: i.vector, target, level });
            }
        }
    }

    /// Samples every interrupt line and passes changes on.
    fn sample(&mut self, now_ns: u64) {
        self.collect_pci();
        let edges = self.ports.device_mut::<Pit>(self.pit).map_or(0, |p| p.irq_edges(now_ns));
        if edges > 0 {
            // However many periods passed, one interrupt (as a late timer
            // tick on hardware); the guest's clock reads the counters.
            if let Some(pic) = self.ports.device_mut::<DualPic>(self.pic) {
                pic.set_irq(0, true);
                pic.set_irq(0, false);
            }
            let mut out = self.ioapic.set_irq(PIT_GSI, true);
            out.extend(self.ioapic.set_irq(PIT_GSI, false));
            self.route(out);
        }
        let mut lines = 0u16;
        if self.ports.device::<Uart16550>(self.uart).is_some_and(Uart16550::irq_level) {
            lines |= 1 << COM1_IRQ;
        }
        if self.ports.device::<Uart16550>(self.com2).is_some_and(Uart16550::irq_level) {
            lines |= 1 << COM2_IRQ;
        }
        if self.ports.device_mut::<Rtc>(self.rtc).is_some_and(|r| r.irq_level(now_ns)) {
            lines |= 1 << RTC_IRQ;
        }
        if let Some(k) = self.ports.device::<I8042>(self.i8042) {
            if k.irq1_level() {
                lines |= 1 << KEYBOARD_IRQ;
            }
            if k.irq12_level() {
                lines |= 1 << AUX_IRQ;
            }
        }
        if self.pm.sci_level() {
            lines |= 1 << SCI_IRQ;
        }
        let changed = lines ^ self.lines;
        self.lines = lines;
        for irq in (1..16u8).filter(|i| changed & (1 << i) != 0) {
            let level = lines & (1 << irq) != 0;
            if let Some(pic) = self.ports.device_mut::<DualPic>(self.pic) {
                pic.set_irq(irq, level);
            }
            let out = self.ioapic.set_irq(irq, level);
            self.route(out);
        }
    }

    /// Whether `gpa` is the I/O APIC's page.
    fn is_ioapic(gpa: u64) -> bool {
        gpa.wrapping_sub(IOAPIC_BASE) < IOAPIC_MMIO_SIZE
    }

    /// An MMIO read (the I/O APIC, ECAM, a BAR); nothing there reads all
    /// ones.
    pub fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        let v = if Self::is_ioapic(gpa) {
            Some(self.ioapic.read(gpa - IOAPIC_BASE, size, 0))
        } else {
            self.pci.mmio_read(gpa, size)
        };
        self.collect_pci();
        v.unwrap_or_else(|| {
            self.unclaimed_accesses += 1;
            u64::MAX >> (64 - 8 * u32::from(size.clamp(1, 8)))
        })
    }

    /// An MMIO write; `mem` is guest RAM for the device work it may set off
    /// (a virtqueue notification).
    pub fn mmio_write(&mut self, gpa: u64, size: u8, value: u64, mem: &mut dyn GuestMemory) {
        if Self::is_ioapic(gpa) {
            self.ioapic.write(gpa - IOAPIC_BASE, size, value, 0);
            let out = self.ioapic.take_interrupts();
            self.route(out);
        } else if !self.pci.mmio_write(gpa, size, value, mem) {
            self.unclaimed_accesses += 1;
        }
        self.collect_pci();
    }
}

/// The most debug-console bytes held between two takes.
const DEBUGCON_LIMIT: usize = 16 * 1024;

/// Port 0xCF9, the reset control register, inside the PCI config range
/// (byte accesses only).
const RESET_CONTROL: u16 = 0xCF9;

/// An access to the PCI configuration ports 0xCF8-0xCFF, which enclose the
/// reset control register's byte at 0xCF9.
fn is_pci_config(port: u16, size: u8) -> bool {
    (0xCF8..=0xCFF).contains(&port) && !(port == RESET_CONTROL && size == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::VecMemory;

    fn mem() -> VecMemory {
        VecMemory::new(0, 0x1000)
    }

    /// Programs redirection entry `pin` through the MMIO window.
    fn redirect(p: &mut Platform, pin: u8, entry: u64) {
        let m = &mut mem();
        p.mmio_write(IOAPIC_BASE, 4, u64::from(0x10 + 2 * pin), m);
        p.mmio_write(IOAPIC_BASE + 0x10, 4, entry & 0xffff_ffff, m);
        p.mmio_write(IOAPIC_BASE, 4, u64::from(0x11 + 2 * pin), m);
        p.mmio_write(IOAPIC_BASE + 0x10, 4, entry >> 32, m);
    }

    #[test]
    fn uart_interrupt_reaches_the_ioapic_route() {
        let mut p = Platform::new(0, 0);
        redirect(&mut p, COM1_IRQ, 0x31 | (1 << 56)); // vector 0x31, APIC 1, edge
        // Enable the THR-empty interrupt and OUT2 (the ISA IRQ gate).
        p.io_write(0x3F8 + 4, 1, 0x08, 0, &mut mem());
        p.io_write(0x3F8 + 1, 1, 0x02, 0, &mut mem());
        assert_eq!(p.take_interrupts(), [Interrupt { vector: 0x31, target: Target::Physical(1), level: false }]);
        p.io_write(0x3F8, 1, u32::from(b'A'), 1, &mut mem());
        assert_eq!(p.take_console_output(), b"A");
    }

    #[test]
    fn pit_ticks_arrive_on_pin_2() {
        let mut p = Platform::new(0, 0);
        redirect(&mut p, PIT_GSI, 0x30 | (0x1 << 56) | (1 << 11)); // logical, mask 1
        // Channel 0, mode 2, lobyte/hibyte, 1193 counts (~1 ms).
        p.io_write(0x43, 1, 0x34, 0, &mut mem());
        p.io_write(0x40, 1, 1193 & 0xff, 0, &mut mem());
        p.io_write(0x40, 1, 1193 >> 8, 0, &mut mem());
        let next = p.next_event(0).expect("the PIT is running");
        assert!((900_000..1_100_000).contains(&next), "{next}");
        p.tick(next);
        let got = p.take_interrupts();
        assert_eq!(got, [Interrupt { vector: 0x30, target: Target::Logical(1), level: false }]);
        assert!(got[0].target.names(0, 2) && !got[0].target.names(1, 2));
        // Masked: nothing.
        redirect(&mut p, PIT_GSI, 0x30 | (1 << 16));
        p.tick(next + 5_000_000);
        assert!(p.take_interrupts().is_empty());
    }

    #[test]
    fn a_level_triggered_sci_is_sent_again_until_its_status_is_cleared() {
        let mut p = Platform::new(0, 0);
        redirect(&mut p, SCI_IRQ, 0x39 | (1 << 15)); // level, APIC 0
        p.io_write(0x602, 2, 1 << 8, 0, &mut mem()); // PWRBTN_EN
        p.press_power_button(0);
        let sci = Interrupt { vector: 0x39, target: Target::Physical(0), level: true };
        assert_eq!(p.take_interrupts(), [sci]);
        p.tick(1);
        assert!(p.take_interrupts().is_empty(), "remote IRR holds it until the EOI");
        p.eoi(0x39, 2);
        assert_eq!(p.take_interrupts(), [sci], "still asserted: sent again");
        p.io_write(0x600, 2, 1 << 8, 3, &mut mem()); // clear PWRBTN_STS
        p.eoi(0x39, 4);
        assert!(p.take_interrupts().is_empty());
        p.eoi(0x77, 5);
        assert!(p.take_interrupts().is_empty(), "an EOI of another vector");
    }

    #[test]
    fn poweroff_and_reset_are_reported() {
        let mut p = Platform::new(0, 0);
        assert_eq!(p.power_event(), None);
        p.io_write(0x604, 2, (5 << 10) | (1 << 13), 0, &mut mem());
        assert_eq!(p.power_event(), Some(PowerEvent::PowerOff));
        let mut p = Platform::new(0, 0);
        p.io_write(0xCF9, 1, 0x06, 0, &mut mem());
        assert_eq!(p.power_event(), Some(PowerEvent::Reboot));
        let mut p = Platform::new(0, 0);
        p.io_write(0x64, 1, 0xFE, 0, &mut mem());
        assert_eq!(p.power_event(), Some(PowerEvent::Reboot));
    }

    #[test]
    fn targets_name_the_right_vcpus() {
        assert!(Target::Physical(0xFF).names(3, 4));
        assert!(!Target::Physical(0xFF).names(4, 4));
        assert!(Target::LowestOf(0b110).names(1, 4));
        assert!(!Target::LowestOf(0b110).names(2, 4));
        assert!(!Target::Logical(0xFF).names(9, 16));
    }

    #[test]
    fn unclaimed_accesses_read_ones_and_never_panic() {
        let mut p = Platform::new(0, 0);
        let mut rng = crate::devices::XorShift(0x1234_5678);
        for i in 0..20_000u64 {
            let port = rng.below(0x1_0000) as u16;
            let size = rng.size();
            if rng.below(2) == 0 {
                p.io_write(port, size, rng.next() as u32, i * 1000, &mut mem());
            } else {
                let _ = p.io_read(port, size, i * 1000);
            }
            let gpa = IOAPIC_BASE + rng.below(0x1100);
            let _ = p.mmio_read(gpa, [1, 2, 4, 8][rng.below(4) as usize]);
            p.mmio_write(gpa, 4, rng.next(), &mut mem());
            let _ = p.next_event(i * 1000);
            let _ = p.take_interrupts();
        }
        // COM3 (0x3E8): no device (COM2 is the metadata port).
        assert_eq!(p.io_read(0x3E8, 1, 0), 0xFF);
    }

    #[test]
    fn serial_coalescing_only_for_a_plain_polled_uart() {
        let mut p = Platform::new(0, 0);
        assert_eq!(p.serial_coalescing(), Some((0x3F8, 0x3FD, 0x60)));
        p.io_write(0x3F8 + 1, 1, 0x02, 0, &mut mem()); // THRI on
        assert_eq!(p.serial_coalescing(), None);
        p.io_write(0x3F8 + 1, 1, 0, 0, &mut mem());
        p.io_write(0x3F8 + 3, 1, 0x83, 0, &mut mem()); // DLAB
        assert_eq!(p.serial_coalescing(), None);
        p.io_write(0x3F8 + 3, 1, 0x03, 0, &mut mem());
        p.push_console_input(b"x", 0);
        assert_eq!(p.serial_coalescing(), None, "input waits");
        assert_eq!(p.io_read(0x3F8, 1, 0), u32::from(b'x'));
        assert!(p.serial_coalescing().is_some());
        p.io_write(0x3F8 + 4, 1, 0x10, 0, &mut mem()); // loopback
        assert_eq!(p.serial_coalescing(), None);
    }

    #[test]
    fn ovmf_reset_system_shutdown_powers_a_firmware_vm_off() {
        // OVMF's ResetShutdown: SLP_TYP := 0 (bits 10-13 cleared), then
        // SLP_EN, on PM1a_CNT (0x604).
        let shutdown = |p: &mut Platform| {
            let v = p.io_read(0x604, 2, 0) & !(0xF << 10);
            p.io_write(0x604, 2, v, 0, &mut mem());
            let v = p.io_read(0x604, 2, 0);
            p.io_write(0x604, 2, v | (1 << 13), 0, &mut mem());
        };
        let mut direct = Platform::new(0, 0);
        shutdown(&mut direct);
        assert_eq!(direct.power_event(), None, "direct boot: only the DSDT's S5 value");
        let mut fw = Platform::new(0, 0);
        fw.attach_firmware(crate::firmware::fw_cfg_for_vm(256 << 20, 2, None).unwrap(), &[]);
        shutdown(&mut fw);
        assert_eq!(fw.power_event(), Some(PowerEvent::PowerOff));
        // The DSDT's value works on both.
        direct.io_write(0x604, 2, 0x3400, 0, &mut mem());
        assert_eq!(direct.power_event(), Some(PowerEvent::PowerOff));
    }

    #[test]
    fn a_firmware_vm_has_a_ps2_keyboard_a_direct_boot_vm_none() {
        // OVMF's keyboard check: enable (0xF4), then wait for the ACK.
        let answer = |p: &mut Platform| {
            p.io_write(0x60, 1, 0xF4, 0, &mut mem());
            (p.io_read(0x64, 1, 0) as u8 & 0x41, p.io_read(0x60, 1, 0) as u8)
        };
        let mut direct = Platform::new(0, 0);
        assert_eq!(answer(&mut direct), (0x41, 0xFE), "direct boot: no keyboard, timeout");
        let mut fw = Platform::new(0, 0);
        fw.attach_firmware(crate::firmware::fw_cfg_for_vm(256 << 20, 2, None).unwrap(), &[]);
        assert_eq!(answer(&mut fw), (0x01, 0xFA), "firmware VM: the keyboard's ACK");
    }

    /// The kernel finishing a firmware VM's rule ports itself must be
    /// invisible to the guest: each constant is what the platform answers
    /// whatever was written before, and buffered OUTs replayed give the
    /// same debug output.
    #[test]
    fn firmware_pio_rules_answer_as_the_platform_would() {
        assert_eq!(Platform::new(0, 0).firmware_pio_rules(), None, "direct boot: no rules");
        let mut fw = Platform::new(0, 0);
        fw.attach_firmware(crate::firmware::fw_cfg_for_vm(256 << 20, 2, None).unwrap(), &[]);
        let rules = fw.firmware_pio_rules().unwrap();
        let mut run = abi::VcpuRun::ZERO;
        run.pio_buffered_ports[1..3].copy_from_slice(&rules.buffered);
        for (i, &(port, value)) in rules.constant.iter().enumerate() {
            run.pio_constant_ports[1 + i] = port;
            run.pio_constant_values[1 + i] = value;
        }
        // What SeaBIOS writes around its mode switches and CMOS reads.
        for &(port, value) in &[(0x70u16, 0x8Fu8), (0x71, 0x00), (0x92, 0x02), (0x70, 0x0D), (0x92, 0xFD), (0x70, 0x80)] {
            fw.io_write(port, 1, u32::from(value), 0, &mut mem());
            for &(p, v) in &rules.constant {
                assert_eq!(run.coalesce_pio(p, 1, false, 0), Some(Some(v)));
                assert_eq!(fw.io_read(p, 1, 0), u32::from(v), "port {p:#x} after {value:#x} to {port:#x}");
            }
        }
        // Debug-console bytes through the ring come out as written.
        for &b in b"SeaBIOS\n" {
            assert_eq!(run.coalesce_pio(DEBUGCON_PORT, 1, true, b), Some(None));
        }
        assert_eq!(run.coalesce_pio(POST_PORT, 1, true, 0x12), Some(None));
        for i in 0..run.pio_pending() {
            let e = run.pio_ring[i as usize];
            fw.io_write(e.port, 1, u32::from(e.value), 0, &mut mem());
        }
        assert_eq!(fw.take_debug_output(), b"SeaBIOS\n");
    }

    #[test]
    fn firmware_devices_answer_only_when_attached() {
        let mut p = Platform::new(0, 0);
        p.io_write(0x510, 2, 0, 0, &mut mem());
        assert_eq!(p.io_read(0x511, 1, 0), 0xFF, "no fw_cfg on a direct-boot VM");
        assert_eq!(p.io_read(DEBUGCON_PORT, 1, 0), 0xFF);
        let before = p.unclaimed_accesses;
        let fw = crate::firmware::fw_cfg_for_vm(256 << 20, 2, None).unwrap();
        p.attach_firmware(fw, &crate::firmware::chipset::cmos_bytes(256 << 20, 2));
        p.io_write(0x510, 2, 0, 0, &mut mem());
        let sig: Vec<u8> = (0..4).map(|_| p.io_read(0x511, 1, 0) as u8).collect();
        assert_eq!(sig, b"QEMU");
        assert_eq!(p.io_read(DEBUGCON_PORT, 1, 0), 0xE9);
        for b in b"SeaBIOS\n" {
            p.io_write(DEBUGCON_PORT, 1, u32::from(*b), 0, &mut mem());
        }
        p.io_write(0x3F8, 1, u32::from(b'x'), 0, &mut mem());
        assert_eq!(p.take_debug_output(), b"SeaBIOS\n");
        assert_eq!(p.take_console_output(), b"x");
        assert_eq!(p.unclaimed_accesses, before);
        // CMOS 0x5F: vCPUs less one, through the RTC's ports.
        p.io_write(0x70, 1, 0x5F, 0, &mut mem());
        assert_eq!(p.io_read(0x71, 1, 0), 1);
        // A debug console written without end stays bounded.
        for _ in 0..100_000 {
            p.io_write(DEBUGCON_PORT, 1, u32::from(b'.'), 0, &mut mem());
        }
        assert_eq!(p.take_debug_output().len(), DEBUGCON_LIMIT);
    }

    #[test]
    fn pci_config_ports_reach_the_host_bridge_and_cf9_resets() {
        let mut p = Platform::new(0, 0);
        p.io_write(0xCF8, 4, 0x8000_0000, 0, &mut mem());
        assert_eq!(p.io_read(0xCFC, 4, 0), 0x29C0_8086);
        assert_eq!(p.power_event(), None);
        p.io_write(0xCF9, 1, 0x06, 0, &mut mem());
        assert_eq!(p.power_event(), Some(PowerEvent::Reboot));
    }
}
