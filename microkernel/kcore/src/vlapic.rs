//! The local APIC the kernel emulates for each vCPU, as a pure state machine.
//!
//! Where it sits: the VMX/SVM exit handlers decode a guest access to the xAPIC
//! page (4 KiB at [`VLapic::mmio_base`], normally 0xFEE0_0000) or a
//! RDMSR/WRMSR of IA32_APIC_BASE, IA32_TSC_DEADLINE or an x2APIC MSR
//! (0x800..=0x8FF) and call [`VLapic::mmio_read`], [`VLapic::mmio_write`],
//! [`VLapic::msr_read`] or [`VLapic::msr_write`]. The returned [`Effect`] says
//! what has to happen outside this vCPU: route an IPI to the guest's other
//! vCPUs (each tested with [`VLapic::matches`] and handed to
//! [`VLapic::deliver`]), broadcast an EOI to the emulated IOAPIC, re-arm the
//! host timer, or re-map the APIC page. Before each VM entry the kernel calls
//! [`VLapic::tick`], then [`VLapic::pending_interrupt`], and [`VLapic::ack`]
//! for the vector it injects.
//!
//! Time is an argument, never read here: `now_ns` is the guest-visible time
//! base in nanoseconds, and the guest's TSC is defined as
//! `now_ns * tsc_hz / 10^9` ([`VLapicConfig::tsc_hz`]), so the kernel derives
//! `now_ns` from the guest TSC (or the other way round) with the same ratio.
//! The APIC timer counts at [`APIC_BUS_HZ`] (1 GHz: one bus cycle per ns),
//! divided by the divide configuration register.
//!
//! Section numbers are those of the Intel SDM Vol. 3A chapter "Advanced
//! Programmable Interrupt Controller (APIC)", chapter 12 in recent editions
//! (chapter 10 in older ones, with the same subsections).
//!
//! Nothing here panics on any guest value, offset, MSR number or time
//! (including time going backwards); see the fuzz test at the end.

/// The emulated APIC bus (timer input) frequency: 1 GHz, so one timer count
/// takes `divisor` ns. Report it to the guest where it asks (CPUID.15H core
/// crystal clock, hypervisor timing leaves), or it will calibrate against
/// the PIT and get the same figure less precisely.
pub const APIC_BUS_HZ: u64 = 1_000_000_000;
const BUS_CYCLE_NS: u64 = 1_000_000_000 / APIC_BUS_HZ;
const _: () = assert!(BUS_CYCLE_NS * APIC_BUS_HZ == 1_000_000_000);

/// The architectural xAPIC page address after reset (§12.4.4).
pub const XAPIC_DEFAULT_BASE: u64 = 0xFEE0_0000;
/// The xAPIC register page size.
pub const XAPIC_PAGE_SIZE: u64 = 0x1000;
/// IA32_APIC_BASE (§12.4.4).
pub const MSR_IA32_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE (§12.5.4.1).
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6E0;
/// First MSR of the x2APIC register space (§12.12.1.2).
pub const MSR_X2APIC_FIRST: u32 = 0x800;
/// Last MSR of the x2APIC register space.
pub const MSR_X2APIC_LAST: u32 = 0x8FF;

/// The version register (§12.4.8): version 0x14 (integrated APIC), seven LVT
/// entries (max LVT entry 6: timer, thermal, perfmon, LINT0, LINT1, error,
/// CMCI), no EOI-broadcast suppression (bit 24 clear).
pub const APIC_VERSION: u32 = 0x0006_0014;

const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_EN: u64 = 1 << 11;

/// SVR: vector, software enable (bit 8), focus processor checking (bit 9).
/// Bit 12 (EOI-broadcast suppression) is reserved: the version does not
/// advertise it (§12.9).
const SVR_WRITABLE: u32 = 0x3FF;
const SVR_ENABLE: u32 = 1 << 8;

const LVT_MASKED: u32 = 1 << 16;
const LVT_DELIVERY_STATUS: u32 = 1 << 12;
const LVT_REMOTE_IRR: u32 = 1 << 14;
const LVT_LEVEL: u32 = 1 << 15;

/// ICR low bits software can write (§12.6.1): vector, delivery mode,
/// destination mode, level, trigger mode, shorthand. Delivery status (bit
/// 12) always reads idle: IPIs are handed to the kernel at once.
const ICR_WRITABLE: u32 = 0x000C_CFFF;
const ICR_LOGICAL: u32 = 1 << 11;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_LEVEL: u32 = 1 << 15;

/// ESR bits this model raises (§12.5.3).
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// Divide configuration bits 0, 1 and 3 (§12.5.4).
const DIVIDE_WRITABLE: u32 = 0xB;

/// Whether `msr` is one [`VLapic::msr_read`]/[`VLapic::msr_write`] handle:
/// the kernel's MSR exit dispatch asks this first.
pub const fn is_lapic_msr(msr: u32) -> bool {
    matches!(msr, MSR_IA32_APIC_BASE | MSR_IA32_TSC_DEADLINE | MSR_X2APIC_FIRST..=MSR_X2APIC_LAST)
}

/// A fault the guest's access raises; the kernel injects it instead of
/// completing the RDMSR/WRMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// #GP(0): reserved bits, a read-only or write-only register, an MSR
    /// outside the current mode, an illegal IA32_APIC_BASE transition.
    Gp,
}

/// How an interrupt is signalled: edge, or level (sets its TMR bit so its
/// EOI is broadcast to the IOAPICs, §12.8.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerMode {
    Edge,
    Level,
}

/// ICR delivery modes (§12.6.1); the two reserved encodings are never sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    /// Deliver to the one matching vCPU the kernel picks (§12.6.2.4); it may
    /// rank them by [`VLapic::arbitration_priority`].
    LowestPriority,
    Smi,
    Nmi,
    Init,
    /// Start-up IPI: the vector is the page number of the AP's start address.
    Startup,
}

/// Which form a destination ID has: the 8-bit xAPIC form (xAPIC-mode ICR,
/// IOAPIC redirection entries, MSI addresses) or the 32-bit x2APIC form.
/// Broadcast is 0xFF in the first and 0xFFFF_FFFF in the second (§12.6.2.3,
/// §12.12.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdFormat {
    Xapic,
    X2apic,
}

/// Who an interrupt message is for (§12.6.2, §12.12.10). `source` is the
/// sender's [`VLapic::apic_id`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// No shorthand, physical destination mode: one APIC ID, or broadcast.
    Physical { id: u32, format: IdFormat },
    /// No shorthand, logical destination mode: a message destination
    /// address compared with each APIC's LDR (and DFR in xAPIC mode).
    Logical { mda: u32, format: IdFormat },
    /// Shorthand 01: the sender only.
    SelfOnly { source: u32 },
    /// Shorthand 10: every APIC, the sender included.
    AllIncludingSelf,
    /// Shorthand 11: every APIC but the sender.
    AllExcludingSelf { source: u32 },
}

/// An IPI the guest sent through the ICR or the SELF IPI register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    pub dest: Destination,
    pub vector: u8,
    pub mode: DeliveryMode,
    pub trigger: TriggerMode,
}

/// What the kernel has to do after an access.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing outside this vCPU.
    None,
    /// Hand the IPI to every vCPU of the guest (the sender included) whose
    /// `matches(&ipi.dest)` holds, through [`VLapic::deliver`]; for
    /// [`DeliveryMode::LowestPriority`] to one of them only.
    SendIpi(Ipi),
    /// An in-service interrupt ended. If `level_triggered`, broadcast the EOI
    /// for `vector` to the IOAPICs (§12.8.5).
    Eoi { vector: u8, level_triggered: bool },
    /// [`VLapic::next_timer_deadline`] changed: re-arm the host timer.
    TimerChanged,
    /// IA32_APIC_BASE changed: re-read [`VLapic::mode`] and
    /// [`VLapic::mmio_base`] (trap the xAPIC page or the x2APIC MSRs), and
    /// the timer deadline (a mode change resets the APIC).
    ModeChanged,
}

/// What [`VLapic::raise_lvt`] did with a local interrupt (§12.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalDelivery {
    /// Masked, reserved delivery mode, or refused (illegal vector, APIC
    /// software-disabled): nothing happens.
    Dropped,
    /// A fixed interrupt is in IRR, or an NMI or INIT is latched: wake the
    /// vCPU.
    Delivered,
    /// ExtINT: take the vector from the emulated 8259 and inject it
    /// directly; it bypasses IRR and ISR (§12.8.4).
    ExtInt,
    /// SMI: the kernel's to handle (or drop, without SMM).
    Smi,
}

/// The local vector table entries (§12.5.1), in the order the kernel names
/// them with [`VLapic::raise_lvt`] and [`VLapic::lvt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lvt {
    Timer = 0,
    Thermal = 1,
    PerfMon = 2,
    Lint0 = 3,
    Lint1 = 4,
    Error = 5,
    Cmci = 6,
}

impl Lvt {
    /// Bits software can write: vector, delivery mode where there is one,
    /// mask, and the timer mode or the LINT pin polarity and trigger mode.
    /// TSC-deadline mode is supported, so timer mode is bits 18:17.
    const fn writable(self) -> u32 {
        match self {
            Lvt::Timer => 0x0007_00FF,
            Lvt::Thermal | Lvt::PerfMon | Lvt::Cmci => 0x0001_07FF,
            Lvt::Lint0 | Lvt::Lint1 => 0x0001_A7FF,
            Lvt::Error => 0x0001_00FF,
        }
    }

    /// Read-only status bits: not reserved, so an x2APIC write of them does
    /// not fault, but ignored.
    const fn read_only(self) -> u32 {
        match self {
            Lvt::Lint0 | Lvt::Lint1 => LVT_DELIVERY_STATUS | LVT_REMOTE_IRR,
            _ => LVT_DELIVERY_STATUS,
        }
    }
}

/// The APIC's mode, from IA32_APIC_BASE EN (bit 11) and EXTD (bit 10)
/// (§12.12.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// EN = 0: as if the processor had no APIC (§12.4.3).
    Disabled,
    /// EN = 1, EXTD = 0: registers in the MMIO page.
    Xapic,
    /// EN = 1, EXTD = 1: registers in MSRs 0x800..=0x8FF.
    X2apic,
}

impl ApicMode {
    /// `None` for the invalid EN = 0, EXTD = 1.
    const fn from_base(base: u64) -> Option<Self> {
        match (base & APIC_BASE_EN != 0, base & APIC_BASE_EXTD != 0) {
            (false, false) => Some(ApicMode::Disabled),
            (true, false) => Some(ApicMode::Xapic),
            (true, true) => Some(ApicMode::X2apic),
            (false, true) => None,
        }
    }
}

/// What the vCPU looks like to its APIC; fixed for the vCPU's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VLapicConfig {
    /// The guest TSC frequency in Hz, to turn IA32_TSC_DEADLINE into ns
    /// (0 is taken as 1).
    pub tsc_hz: u64,
    /// The bootstrap processor: IA32_APIC_BASE.BSP is set at reset, and an
    /// INIT does not leave it waiting for a start-up IPI.
    pub bsp: bool,
    /// CPUID.01H:ECX.x2APIC[bit 21] as the guest sees it; without it
    /// IA32_APIC_BASE.EXTD is reserved.
    pub x2apic_supported: bool,
    /// MAXPHYADDR as the guest sees it (CPUID.80000008H:EAX bits 7:0): APIC base
    /// bits from it up are reserved. Clamped to 12..=52.
    pub max_phys_addr_bits: u8,
}

/// A 256-bit vector set (IRR, ISR, TMR), as the eight 32-bit registers that
/// show it (§12.8.4), with a summary of which registers are not zero: the
/// highest vector is found without a scan of eight words (the kernel asks
/// for it before every guest entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VectorSet {
    words: [u32; 8],
    /// Bit `i` set exactly when `words[i]` is not zero.
    nonzero: u8,
}

impl VectorSet {
    fn set(&mut self, v: u8) {
        self.words[usize::from(v >> 5)] |= 1 << (v & 31);
        self.nonzero |= 1 << (v >> 5);
    }

    fn clear(&mut self, v: u8) {
        let i = usize::from(v >> 5);
        self.words[i] &= !(1 << (v & 31));
        if self.words[i] == 0 {
            self.nonzero &= !(1 << i);
        }
    }

    fn assign(&mut self, v: u8, on: bool) {
        if on { self.set(v) } else { self.clear(v) }
    }

    fn contains(&self, v: u8) -> bool {
        self.words[usize::from(v >> 5)] & (1 << (v & 31)) != 0
    }

    #[inline]
    fn highest(&self) -> Option<u8> {
        if self.nonzero == 0 {
            return None;
        }
        let i = 7 - self.nonzero.leading_zeros() as u8;
        let w = self.words[usize::from(i)];
        Some((i << 5) | (31 - w.leading_zeros()) as u8)
    }

    fn word(&self, i: u8) -> u32 {
        self.words[usize::from(i & 7)]
    }
}

/// Timer modes, LVT timer bits 18:17 (§12.5.4, §12.5.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
    /// 11b: the timer does not run.
    Reserved,
}

/// A running count: it was `count` at `at_ns` and drops by one every
/// `divisor` bus cycles. `count >= 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Countdown {
    at_ns: u64,
    count: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timer {
    initial: u32,
    divide: u32,
    /// One-shot or periodic count in progress; `None` when stopped.
    countdown: Option<Countdown>,
    /// IA32_TSC_DEADLINE in guest TSC ticks; 0 = disarmed.
    tsc_deadline: u64,
}

impl Timer {
    const RESET: Self = Self { initial: 0, divide: 0, countdown: None, tsc_deadline: 0 };
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct VLapic {
    config: VLapicConfig,
    /// The initial APIC ID: the vCPU index, the x2APIC ID, and how IPIs name
    /// their sender.
    apic_id: u32,
    apic_base: u64,
    /// The xAPIC ID register (ID in bits 31:24); software may change it.
    xapic_id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    /// What ESR reads: errors latched by the last ESR write.
    esr: u32,
    /// Errors seen since the last ESR write (§12.5.3).
    esr_pending: u32,
    lvt: [u32; 7],
    /// ICR low in bits 31:0, high (destination) in bits 63:32.
    icr: u64,
    timer: Timer,
    nmi_pending: bool,
    init_pending: bool,
    wait_for_sipi: bool,
    sipi: Option<u8>,
}

/// The registers, by their index (xAPIC offset >> 4, x2APIC MSR - 0x800).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Id,
    Version,
    Tpr,
    Apr,
    Ppr,
    Eoi,
    Rrd,
    Ldr,
    Dfr,
    Svr,
    Isr(u8),
    Tmr(u8),
    Irr(u8),
    Esr,
    Lvt(Lvt),
    IcrLow,
    IcrHigh,
    TimerInitial,
    TimerCurrent,
    TimerDivide,
    SelfIpi,
}

impl Reg {
    /// The register map (§12.4.1 Table "Local APIC Register Address Map",
    /// §12.12.1.2 for x2APIC).
    fn from_index(index: u32) -> Option<Self> {
        Some(match index {
            0x02 => Reg::Id,
            0x03 => Reg::Version,
            0x08 => Reg::Tpr,
            0x09 => Reg::Apr,
            0x0A => Reg::Ppr,
            0x0B => Reg::Eoi,
            0x0C => Reg::Rrd,
            0x0D => Reg::Ldr,
            0x0E => Reg::Dfr,
            0x0F => Reg::Svr,
            0x10..=0x17 => Reg::Isr((index - 0x10) as u8),
            0x18..=0x1F => Reg::Tmr((index - 0x18) as u8),
            0x20..=0x27 => Reg::Irr((index - 0x20) as u8),
            0x28 => Reg::Esr,
            0x2F => Reg::Lvt(Lvt::Cmci),
            0x30 => Reg::IcrLow,
            0x31 => Reg::IcrHigh,
            0x32 => Reg::Lvt(Lvt::Timer),
            0x33 => Reg::Lvt(Lvt::Thermal),
            0x34 => Reg::Lvt(Lvt::PerfMon),
            0x35 => Reg::Lvt(Lvt::Lint0),
            0x36 => Reg::Lvt(Lvt::Lint1),
            0x37 => Reg::Lvt(Lvt::Error),
            0x38 => Reg::TimerInitial,
            0x39 => Reg::TimerCurrent,
            0x3E => Reg::TimerDivide,
            0x3F => Reg::SelfIpi,
            _ => return None,
        })
    }

    /// Registers are 32 bits on 16-byte boundaries; anything else in the
    /// page is reserved. SELF IPI exists only as an MSR.
    fn from_mmio_offset(offset: u32) -> Option<Self> {
        if offset & 0xF != 0 {
            return None;
        }
        Self::from_index(offset >> 4).filter(|r| *r != Reg::SelfIpi)
    }

    /// APR, remote read, DFR and ICR high have no x2APIC MSR (§12.12.1.2).
    fn from_x2apic_msr(msr: u32) -> Option<Self> {
        let index = msr.checked_sub(MSR_X2APIC_FIRST)?;
        Self::from_index(index)
            .filter(|r| !matches!(r, Reg::Apr | Reg::Rrd | Reg::Dfr | Reg::IcrHigh))
    }
}

/// §12.12.1.3: in x2APIC mode a WRMSR that sets a reserved bit (bits 63:32
/// included, except for the ICR) raises #GP; in xAPIC mode they are dropped.
fn check_reserved(x2apic: bool, value: u64, allowed: u64) -> Result<u32, Fault> {
    if x2apic && value & !allowed != 0 { Err(Fault::Gp) } else { Ok(value as u32) }
}

impl VLapic {
    /// The APIC of vCPU `apic_id` after power-up reset (§12.4.7.1): xAPIC
    /// mode at [`XAPIC_DEFAULT_BASE`], software-disabled (SVR = 0xFF), every
    /// LVT entry masked, DFR all ones, nothing pending.
    pub fn new(apic_id: u32, config: VLapicConfig) -> Self {
        let config = VLapicConfig { tsc_hz: config.tsc_hz.max(1), ..config };
        let bsp = if config.bsp { APIC_BASE_BSP } else { 0 };
        let mut lapic = Self {
            config,
            apic_id,
            apic_base: XAPIC_DEFAULT_BASE | APIC_BASE_EN | bsp,
            xapic_id: (apic_id & 0xFF) << 24,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xFF,
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            irr: VectorSet::default(),
            esr: 0,
            esr_pending: 0,
            lvt: [LVT_MASKED; 7],
            icr: 0,
            timer: Timer::RESET,
            nmi_pending: false,
            init_pending: false,
            // An AP waits for INIT-SIPI after reset; the BSP runs.
            wait_for_sipi: !config.bsp,
            sipi: None,
        };
        lapic.reset_registers();
        lapic
    }

    /// Everything but the IDs and IA32_APIC_BASE back to the reset state, as
    /// INIT does (§12.4.7.3) and as the disabled → xAPIC transition does
    /// (§12.12.5.1). In x2APIC mode the LDR is derived from the ID.
    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.ldr = if self.x2apic_mode() { self.x2apic_ldr() } else { 0 };
        self.dfr = u32::MAX;
        self.svr = 0xFF;
        self.isr = VectorSet::default();
        self.tmr = VectorSet::default();
        self.irr = VectorSet::default();
        self.esr = 0;
        self.esr_pending = 0;
        self.lvt = [LVT_MASKED; 7];
        self.icr = 0;
        self.timer = Timer::RESET;
    }

    /// The initial APIC ID (the vCPU index); the x2APIC ID.
    pub fn apic_id(&self) -> u32 {
        self.apic_id
    }

    /// IA32_APIC_BASE as the guest last set it.
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    pub fn mode(&self) -> ApicMode {
        ApicMode::from_base(self.apic_base).unwrap_or(ApicMode::Disabled)
    }

    /// Whether the APIC is globally enabled (IA32_APIC_BASE.EN).
    pub fn hw_enabled(&self) -> bool {
        self.apic_base & APIC_BASE_EN != 0
    }

    /// Whether the APIC is globally and software-enabled (SVR bit 8, §12.4.3).
    pub fn sw_enabled(&self) -> bool {
        self.hw_enabled() && self.svr & SVR_ENABLE != 0
    }

    pub fn x2apic_mode(&self) -> bool {
        self.mode() == ApicMode::X2apic
    }

    /// Guest-physical address of the register page to trap, in xAPIC mode
    /// only (the page does not decode in x2APIC or disabled mode).
    pub fn mmio_base(&self) -> Option<u64> {
        (self.mode() == ApicMode::Xapic).then_some(self.apic_base & self.base_address_mask())
    }

    fn base_address_mask(&self) -> u64 {
        let bits = self.config.max_phys_addr_bits.clamp(12, 52);
        ((1u64 << bits) - 1) & !0xFFF
    }

    /// x2APIC logical ID (§12.12.10.2): cluster ID[19:4] in bits 31:16, one
    /// bit for ID[3:0] in bits 15:0.
    fn x2apic_ldr(&self) -> u32 {
        ((self.apic_id >> 4) << 16) | (1 << (self.apic_id & 0xF))
    }

    // ----- guest accesses -------------------------------------------------

    /// A 32-bit read of the xAPIC page at `offset`. Offsets that are not a
    /// register (reserved slots, not 16-byte aligned, past the page) and any
    /// read outside xAPIC mode return 0. The kernel narrows sub-word reads
    /// itself; registers must be read as aligned dwords (§12.4.1).
    pub fn mmio_read(&mut self, offset: u32, now_ns: u64) -> u32 {
        if self.mode() != ApicMode::Xapic {
            return 0;
        }
        let Some(reg) = Reg::from_mmio_offset(offset) else { return 0 };
        self.advance(now_ns);
        self.read_reg(reg, false, now_ns).map_or(0, |v| v as u32)
    }

    /// A 32-bit write of the xAPIC page at `offset`. Writes to read-only or
    /// reserved offsets, and any write outside xAPIC mode, are dropped;
    /// reserved bits are dropped.
    pub fn mmio_write(&mut self, offset: u32, value: u32, now_ns: u64) -> Effect {
        if self.mode() != ApicMode::Xapic {
            return Effect::None;
        }
        let Some(reg) = Reg::from_mmio_offset(offset) else { return Effect::None };
        self.write_reg(reg, u64::from(value), false, now_ns).unwrap_or(Effect::None)
    }

    /// RDMSR of IA32_APIC_BASE, IA32_TSC_DEADLINE or an x2APIC register.
    /// In x2APIC mode a write-only, absent or xAPIC-only register faults;
    /// outside x2APIC mode every x2APIC MSR faults (§12.12.1.2); other MSR
    /// numbers fault too.
    pub fn msr_read(&mut self, msr: u32, now_ns: u64) -> Result<u64, Fault> {
        self.advance(now_ns);
        match msr {
            MSR_IA32_APIC_BASE => Ok(self.apic_base),
            // Reads 0 outside TSC-deadline mode (§12.5.4.1).
            MSR_IA32_TSC_DEADLINE => Ok(if self.timer_mode() == TimerMode::TscDeadline {
                self.timer.tsc_deadline
            } else {
                0
            }),
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST if self.x2apic_mode() => {
                let reg = Reg::from_x2apic_msr(msr).ok_or(Fault::Gp)?;
                self.read_reg(reg, true, now_ns)
            }
            _ => Err(Fault::Gp),
        }
    }

    /// WRMSR of IA32_APIC_BASE, IA32_TSC_DEADLINE or an x2APIC register.
    /// Faults as [`VLapic::msr_read`] does, plus for read-only registers and
    /// reserved bits (§12.12.1.3) and illegal mode transitions (§12.12.5).
    pub fn msr_write(&mut self, msr: u32, value: u64, now_ns: u64) -> Result<Effect, Fault> {
        match msr {
            MSR_IA32_APIC_BASE => {
                self.advance(now_ns);
                self.write_apic_base(value)
            }
            MSR_IA32_TSC_DEADLINE => {
                self.advance(now_ns);
                // Ignored outside TSC-deadline mode (§12.5.4.1).
                if self.timer_mode() != TimerMode::TscDeadline {
                    return Ok(Effect::None);
                }
                self.timer.tsc_deadline = value;
                // A deadline already passed fires now.
                self.advance(now_ns);
                Ok(Effect::TimerChanged)
            }
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST if self.x2apic_mode() => {
                let reg = Reg::from_x2apic_msr(msr).ok_or(Fault::Gp)?;
                self.write_reg(reg, value, true, now_ns)
            }
            _ => Err(Fault::Gp),
        }
    }

    fn read_reg(&self, reg: Reg, x2apic: bool, now_ns: u64) -> Result<u64, Fault> {
        let value = match reg {
            Reg::Id if x2apic => self.apic_id,
            Reg::Id => self.xapic_id,
            Reg::Version => APIC_VERSION,
            Reg::Tpr => self.tpr,
            Reg::Apr => u32::from(self.arbitration_priority()),
            Reg::Ppr => u32::from(self.ppr()),
            // Write-only: #GP as an MSR, 0 in the page.
            Reg::Eoi | Reg::SelfIpi if x2apic => return Err(Fault::Gp),
            Reg::Eoi | Reg::SelfIpi | Reg::Rrd => 0,
            Reg::Ldr => self.ldr,
            Reg::Dfr => self.dfr,
            Reg::Svr => self.svr,
            Reg::Isr(i) => self.isr.word(i),
            Reg::Tmr(i) => self.tmr.word(i),
            Reg::Irr(i) => self.irr.word(i),
            Reg::Esr => self.esr,
            Reg::Lvt(which) => self.lvt[which as usize],
            // One 64-bit register in x2APIC mode (§12.12.9).
            Reg::IcrLow if x2apic => return Ok(self.icr),
            Reg::IcrLow => self.icr as u32,
            Reg::IcrHigh => (self.icr >> 32) as u32,
            Reg::TimerInitial => self.timer.initial,
            Reg::TimerCurrent => self.current_count(now_ns),
            Reg::TimerDivide => self.timer.divide,
        };
        Ok(u64::from(value))
    }

    /// A register write, bracketed by bringing the timer up to `now_ns` and
    /// reporting a moved timer deadline.
    fn write_reg(
        &mut self,
        reg: Reg,
        value: u64,
        x2apic: bool,
        now_ns: u64,
    ) -> Result<Effect, Fault> {
        self.advance(now_ns);
        let before = self.next_timer_deadline();
        let effect = self.apply_write(reg, value, x2apic, now_ns)?;
        self.advance(now_ns);
        if effect == Effect::None && self.next_timer_deadline() != before {
            return Ok(Effect::TimerChanged);
        }
        Ok(effect)
    }

    fn apply_write(
        &mut self,
        reg: Reg,
        value: u64,
        x2apic: bool,
        now_ns: u64,
    ) -> Result<Effect, Fault> {
        match reg {
            // The xAPIC ID and LDR are software's (§12.4.6, §12.6.2.2); in
            // x2APIC mode both are read-only (§12.12.2).
            Reg::Id | Reg::Ldr if x2apic => return Err(Fault::Gp),
            Reg::Id => self.xapic_id = value as u32 & 0xFF00_0000,
            Reg::Ldr => self.ldr = value as u32 & 0xFF00_0000,
            Reg::Version
            | Reg::Apr
            | Reg::Ppr
            | Reg::Rrd
            | Reg::Isr(_)
            | Reg::Tmr(_)
            | Reg::Irr(_)
            | Reg::TimerCurrent => {
                if x2apic {
                    return Err(Fault::Gp);
                }
            }
            Reg::Tpr => self.tpr = check_reserved(x2apic, value, 0xFF)? & 0xFF,
            Reg::Eoi => {
                // x2APIC: only a write of 0 is an EOI (§12.12.1.3).
                check_reserved(x2apic, value, 0)?;
                return Ok(self.eoi());
            }
            // Bits 27:0 read as ones (§12.6.2.2).
            Reg::Dfr => self.dfr = (value as u32 & 0xF000_0000) | 0x0FFF_FFFF,
            Reg::Svr => {
                let v = check_reserved(x2apic, value, u64::from(SVR_WRITABLE))? & SVR_WRITABLE;
                self.svr = v;
                // Software-disabling masks every LVT entry (§12.4.7.2).
                if v & SVR_ENABLE == 0 {
                    for entry in &mut self.lvt {
                        *entry |= LVT_MASKED;
                    }
                }
            }
            Reg::Esr => {
                // A write latches the errors since the previous write; x2APIC
                // writes must be 0 (§12.5.3).
                check_reserved(x2apic, value, 0)?;
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            Reg::Lvt(which) => {
                let v =
                    check_reserved(x2apic, value, u64::from(which.writable() | which.read_only()))?;
                self.write_lvt(which, v & which.writable());
            }
            Reg::IcrLow => {
                if x2apic {
                    check_reserved(true, value, 0xFFFF_FFFF_0000_0000 | u64::from(ICR_WRITABLE))?;
                    self.icr = value;
                } else {
                    self.icr = (self.icr & !0xFFFF_FFFF) | u64::from(value as u32 & ICR_WRITABLE);
                }
                // Writing the low half sends (§12.6.1, §12.12.9).
                return Ok(self.send_icr(x2apic));
            }
            Reg::IcrHigh => {
                self.icr = (self.icr & 0xFFFF_FFFF) | (u64::from(value as u32 & 0xFF00_0000) << 32)
            }
            Reg::TimerInitial => {
                let v = check_reserved(x2apic, value, 0xFFFF_FFFF)?;
                self.write_initial_count(v, now_ns);
            }
            Reg::TimerDivide => {
                let v =
                    check_reserved(x2apic, value, u64::from(DIVIDE_WRITABLE))? & DIVIDE_WRITABLE;
                self.write_divide(v, now_ns);
            }
            Reg::SelfIpi => {
                // §12.12.11: a fixed, edge-triggered IPI to self.
                let v = check_reserved(x2apic, value, 0xFF)?;
                let dest = Destination::SelfOnly { source: self.apic_id };
                return Ok(self.send(Ipi {
                    dest,
                    vector: v as u8,
                    mode: DeliveryMode::Fixed,
                    trigger: TriggerMode::Edge,
                }));
            }
        }
        Ok(Effect::None)
    }

    /// IA32_APIC_BASE (§12.4.4) and the mode transitions of §12.12.5:
    /// xAPIC ↔ disabled, xAPIC → x2APIC, x2APIC → disabled are legal;
    /// x2APIC → xAPIC, disabled → x2APIC and EN = 0 with EXTD = 1 fault.
    fn write_apic_base(&mut self, value: u64) -> Result<Effect, Fault> {
        let mut allowed = self.base_address_mask() | APIC_BASE_BSP | APIC_BASE_EN;
        if self.config.x2apic_supported {
            allowed |= APIC_BASE_EXTD;
        }
        if value & !allowed != 0 {
            return Err(Fault::Gp);
        }
        let old = self.mode();
        let new = ApicMode::from_base(value).ok_or(Fault::Gp)?;
        if matches!(
            (old, new),
            (ApicMode::X2apic, ApicMode::Xapic) | (ApicMode::Disabled, ApicMode::X2apic)
        ) {
            return Err(Fault::Gp);
        }
        let changed = value != self.apic_base;
        self.apic_base = value;
        match (old, new) {
            // The x2APIC ID is kept and the logical ID derived from it.
            (ApicMode::Xapic, ApicMode::X2apic) => self.ldr = self.x2apic_ldr(),
            // A disabled APIC is no APIC: nothing pending, no timer.
            (ApicMode::Xapic | ApicMode::X2apic, ApicMode::Disabled) => self.reset_registers(),
            // Register state is not kept across the disabled state.
            (ApicMode::Disabled, ApicMode::Xapic) => {
                self.xapic_id = (self.apic_id & 0xFF) << 24;
                self.reset_registers();
            }
            _ => {}
        }
        Ok(if changed { Effect::ModeChanged } else { Effect::None })
    }

    fn write_lvt(&mut self, which: Lvt, mut value: u32) {
        // Software-disabled: mask bits stay set (§12.4.7.2).
        if !self.sw_enabled() {
            value |= LVT_MASKED;
        }
        if which == Lvt::Timer && timer_mode_of(value) != self.timer_mode() {
            // Changing the timer mode disarms the timer (§12.5.4.1).
            self.timer.countdown = None;
            self.timer.tsc_deadline = 0;
        }
        self.lvt[which as usize] = value;
    }

    // ----- priorities and fixed interrupts (§12.8) ------------------------

    /// The task priority register (CR8 is `tpr >> 4`, §12.8.6).
    pub fn tpr(&self) -> u8 {
        self.tpr as u8
    }

    /// MOV to CR8 or a TPR-shadow update: the kernel passes `cr8 << 4`.
    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = u32::from(tpr);
    }

    /// The processor priority (§12.8.3.1): the TPR, or the class of the
    /// highest in-service vector if that is higher.
    pub fn ppr(&self) -> u8 {
        let tpr = self.tpr as u8;
        let isrv = self.isr.highest().unwrap_or(0);
        if tpr >> 4 >= isrv >> 4 { tpr } else { isrv & 0xF0 }
    }

    /// The arbitration priority (§12.6.2.4), for lowest-priority delivery.
    pub fn arbitration_priority(&self) -> u8 {
        let tpr = self.tpr as u8;
        let isrv = self.isr.highest().unwrap_or(0);
        let irrv = self.irr.highest().unwrap_or(0);
        if tpr >> 4 >= irrv >> 4 && tpr >> 4 > isrv >> 4 {
            tpr
        } else {
            (tpr & 0xF0).max(isrv & 0xF0).max(irrv & 0xF0)
        }
    }

    /// Put a fixed interrupt into IRR (an IPI, the IOAPIC, an MSI, an LVT
    /// entry), its TMR bit set for level-triggered ones (§12.8.4). Returns
    /// whether it was taken, i.e. whether to wake the vCPU. A vector below 16
    /// is refused with a receive-illegal-vector error (§12.5.2); a
    /// software-disabled APIC takes no fixed interrupts (§12.4.7.2).
    pub fn accept(&mut self, vector: u8, trigger: TriggerMode) -> bool {
        if !self.sw_enabled() {
            return false;
        }
        if vector < 16 {
            self.record_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.irr.set(vector);
        self.tmr.assign(vector, trigger == TriggerMode::Level);
        true
    }

    /// The vector to inject now, if any: the highest in IRR, when its
    /// priority class is above the PPR's (§12.8.3.1). Interrupts already in
    /// IRR stay deliverable while software-disabled (§12.4.7.2), not while
    /// globally disabled.
    #[inline]
    pub fn pending_interrupt(&self) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        let vector = self.irr.highest()?;
        (vector >> 4 > self.ppr() >> 4).then_some(vector)
    }

    /// The kernel injected `vector`: it moves from IRR to ISR. Returns false
    /// (and changes nothing) if it was not in IRR.
    pub fn ack(&mut self, vector: u8) -> bool {
        if !self.irr.contains(vector) {
            return false;
        }
        self.irr.clear(vector);
        self.isr.set(vector);
        true
    }

    /// Undoes [`Self::ack`] of `vector`, offered to the guest but not taken
    /// (SVM's V_IRQ): back from ISR to IRR. Returns false (and changes
    /// nothing) if it was not in service.
    pub fn unack(&mut self, vector: u8) -> bool {
        if !self.isr.contains(vector) {
            return false;
        }
        self.isr.clear(vector);
        self.irr.set(vector);
        true
    }

    /// End of interrupt (§12.8.5): the highest in-service vector is done.
    /// Called for EOI register writes; also for the kernel's own EOI exits
    /// (virtual-interrupt delivery).
    pub fn eoi(&mut self) -> Effect {
        let Some(vector) = self.isr.highest() else { return Effect::None };
        self.isr.clear(vector);
        Effect::Eoi { vector, level_triggered: self.tmr.contains(vector) }
    }

    /// Errors go into ESR at the next ESR write and raise the LVT error
    /// interrupt (§12.5.3).
    fn record_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let entry = self.lvt[Lvt::Error as usize];
        if entry & LVT_MASKED == 0 && self.sw_enabled() {
            let vector = entry as u8;
            // Not through accept(): an illegal error vector must not recurse.
            if vector < 16 {
                self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
            } else {
                self.irr.set(vector);
                self.tmr.clear(vector);
            }
        }
    }

    // ----- NMI, INIT, start-up --------------------------------------------

    /// Latch an NMI (it bypasses IRR, §12.8.4). Always taken.
    pub fn accept_nmi(&mut self) -> bool {
        self.nmi_pending = true;
        true
    }

    /// Whether an NMI is latched (left latched).
    #[inline]
    pub fn nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    /// Whether an INIT is latched and not yet taken.
    #[inline]
    pub fn init_pending(&self) -> bool {
        self.init_pending
    }

    /// Whether a start-up IPI is latched and not yet taken.
    #[inline]
    pub fn sipi_pending(&self) -> bool {
        self.sipi.is_some()
    }

    /// Whether an NMI was latched; clears it.
    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.nmi_pending)
    }

    /// Latch an INIT. An AP then waits for a start-up IPI (§12.4.7.3); an
    /// earlier, untaken SIPI is forgotten.
    pub fn accept_init(&mut self) -> bool {
        self.init_pending = true;
        if self.apic_base & APIC_BASE_BSP == 0 {
            self.wait_for_sipi = true;
            self.sipi = None;
        }
        true
    }

    /// Latch a start-up IPI, if in wait-for-SIPI state and none is latched
    /// yet; otherwise it is ignored (the second SIPI of the MP start-up
    /// protocol usually is).
    pub fn accept_sipi(&mut self, vector: u8) -> bool {
        if !self.wait_for_sipi || self.sipi.is_some() {
            return false;
        }
        self.sipi = Some(vector);
        true
    }

    /// If an INIT was latched: resets the APIC registers except the ID and
    /// IA32_APIC_BASE, the mode included (§12.4.7.3, §12.12.5.1), drops a
    /// pending NMI, and returns true. The kernel then resets the vCPU and,
    /// if [`VLapic::waiting_for_sipi`], parks it until [`VLapic::take_sipi`].
    pub fn take_init(&mut self) -> bool {
        if !core::mem::take(&mut self.init_pending) {
            return false;
        }
        self.nmi_pending = false;
        self.reset_registers();
        true
    }

    /// Whether the vCPU is in wait-for-SIPI state (after INIT, an AP).
    #[inline]
    pub fn waiting_for_sipi(&self) -> bool {
        self.wait_for_sipi
    }

    /// The start-up vector (start at `vector << 12`) once the INIT before
    /// it has been taken; leaves wait-for-SIPI state.
    pub fn take_sipi(&mut self) -> Option<u8> {
        if self.init_pending {
            return None;
        }
        let vector = self.sipi.take()?;
        self.wait_for_sipi = false;
        Some(vector)
    }

    /// Deliver a routed IPI (or IOAPIC/MSI message) of `mode` to this APIC;
    /// returns whether anything was latched (wake the vCPU). SMI is not
    /// modelled and returns false.
    pub fn deliver(&mut self, mode: DeliveryMode, vector: u8, trigger: TriggerMode) -> bool {
        match mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => self.accept(vector, trigger),
            DeliveryMode::Nmi => self.accept_nmi(),
            DeliveryMode::Init => self.accept_init(),
            DeliveryMode::Startup => self.accept_sipi(vector),
            DeliveryMode::Smi => false,
        }
    }

    // ----- local interrupts (§12.5.1) -------------------------------------

    /// The raw LVT entry.
    pub fn lvt(&self, which: Lvt) -> u32 {
        self.lvt[which as usize]
    }

    /// Whether the 8259's INTR output reaches the CPU: the APIC is globally
    /// disabled (LINT0 is then the INTR pin, §12.4.3) or LINT0 is an
    /// unmasked ExtINT entry (virtual wire mode).
    pub fn accepts_pic_interrupts(&self) -> bool {
        let lint0 = self.lvt[Lvt::Lint0 as usize];
        !self.hw_enabled() || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == 7)
    }

    /// A local interrupt source fired (the LINT pins from the emulated PIC or
    /// NMI logic, PMU overflow, thermal, CMCI, or the timer/error entries):
    /// deliver it as its LVT entry says.
    pub fn raise_lvt(&mut self, which: Lvt) -> LocalDelivery {
        if !self.hw_enabled() {
            // Without an APIC, LINT0/LINT1 are the INTR and NMI pins (§12.4.3).
            return match which {
                Lvt::Lint0 => LocalDelivery::ExtInt,
                Lvt::Lint1 => {
                    self.accept_nmi();
                    LocalDelivery::Delivered
                }
                _ => LocalDelivery::Dropped,
            };
        }
        let entry = self.lvt[which as usize];
        if entry & LVT_MASKED != 0 {
            return LocalDelivery::Dropped;
        }
        // The timer and error entries have no delivery-mode field.
        let mode = if matches!(which, Lvt::Timer | Lvt::Error) { 0 } else { (entry >> 8) & 7 };
        let delivered = match mode {
            0 => {
                let level = matches!(which, Lvt::Lint0 | Lvt::Lint1) && entry & LVT_LEVEL != 0;
                self.accept(entry as u8, if level { TriggerMode::Level } else { TriggerMode::Edge })
            }
            2 => return LocalDelivery::Smi,
            4 => self.accept_nmi(),
            5 => self.accept_init(),
            7 => return LocalDelivery::ExtInt,
            _ => false,
        };
        if !delivered {
            return LocalDelivery::Dropped;
        }
        // Intel parts set the perfmon entry's mask bit when they deliver a
        // PMI, so the handler re-arms it (SDM Vol. 3B, performance
        // monitoring interrupts).
        if which == Lvt::PerfMon {
            self.lvt[Lvt::PerfMon as usize] |= LVT_MASKED;
        }
        LocalDelivery::Delivered
    }

    // ----- IPIs (§12.6) ---------------------------------------------------

    fn send_icr(&mut self, x2apic: bool) -> Effect {
        let low = self.icr as u32;
        let mode = match (low >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::Startup,
            _ => return Effect::None,
        };
        let trigger = if low & ICR_LEVEL != 0 { TriggerMode::Level } else { TriggerMode::Edge };
        // INIT level de-assert only synchronised arbitration IDs on old
        // parts; newer ones ignore it (§12.6.1).
        if mode == DeliveryMode::Init && trigger == TriggerMode::Level && low & ICR_ASSERT == 0 {
            return Effect::None;
        }
        let (id, format) = if x2apic {
            ((self.icr >> 32) as u32, IdFormat::X2apic)
        } else {
            ((self.icr >> 56) as u32, IdFormat::Xapic)
        };
        let dest = match (low >> 18) & 3 {
            0 if low & ICR_LOGICAL != 0 => Destination::Logical { mda: id, format },
            0 => Destination::Physical { id, format },
            1 => Destination::SelfOnly { source: self.apic_id },
            2 => Destination::AllIncludingSelf,
            _ => Destination::AllExcludingSelf { source: self.apic_id },
        };
        self.send(Ipi { dest, vector: low as u8, mode, trigger })
    }

    fn send(&mut self, ipi: Ipi) -> Effect {
        // §12.5.2: a fixed or lowest-priority vector below 16 is not sent.
        if matches!(ipi.mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && ipi.vector < 16
        {
            self.record_error(ESR_SEND_ILLEGAL_VECTOR);
            return Effect::None;
        }
        Effect::SendIpi(ipi)
    }

    /// Whether a message for `dest` is for this APIC (§12.6.2, §12.12.10).
    /// A globally disabled APIC takes nothing; a software-disabled one still
    /// takes NMI, INIT and SIPI (and [`VLapic::accept`] refuses the rest).
    pub fn matches(&self, dest: &Destination) -> bool {
        if !self.hw_enabled() {
            return false;
        }
        match *dest {
            Destination::SelfOnly { source } => source == self.apic_id,
            Destination::AllIncludingSelf => true,
            Destination::AllExcludingSelf { source } => source != self.apic_id,
            Destination::Physical { id, format } => self.matches_physical(id, format),
            Destination::Logical { mda, format } => self.matches_logical(mda, format),
        }
    }

    fn is_broadcast(id: u32, format: IdFormat) -> bool {
        match format {
            IdFormat::Xapic => id == 0xFF,
            IdFormat::X2apic => id == u32::MAX,
        }
    }

    /// §12.6.2.1. An xAPIC-mode APIC whose initial ID does not fit 8 bits
    /// also answers to its full ID, so a vCPU that has not switched to x2APIC
    /// yet can still be started by one that has.
    fn matches_physical(&self, id: u32, format: IdFormat) -> bool {
        if Self::is_broadcast(id, format) {
            return true;
        }
        if self.x2apic_mode() {
            id == self.apic_id
        } else {
            id == self.xapic_id >> 24 || (self.apic_id > 0xFF && id == self.apic_id)
        }
    }

    /// §12.6.2.2 (flat and cluster models, by DFR) and §12.12.10.1 (x2APIC
    /// cluster: cluster in bits 31:16, member bitmap in 15:0). An 8-bit MDA
    /// to an x2APIC-mode APIC addresses cluster 0; a 32-bit one to an
    /// xAPIC-mode APIC matches only as broadcast.
    fn matches_logical(&self, mda: u32, format: IdFormat) -> bool {
        if Self::is_broadcast(mda, format) {
            return true;
        }
        if self.x2apic_mode() {
            return mda >> 16 == self.ldr >> 16 && mda & self.ldr & 0xFFFF != 0;
        }
        if format == IdFormat::X2apic {
            return false;
        }
        let logical = self.ldr >> 24;
        let mda = mda & 0xFF;
        match self.dfr >> 28 {
            0xF => logical & mda != 0,
            0x0 => logical >> 4 == mda >> 4 && logical & mda & 0xF != 0,
            _ => false,
        }
    }

    // ----- timer (§12.5.4) ------------------------------------------------

    fn timer_mode(&self) -> TimerMode {
        timer_mode_of(self.lvt[Lvt::Timer as usize])
    }

    /// Nanoseconds per count: the divisor, in 1 GHz bus cycles.
    fn ns_per_count(&self) -> u64 {
        let d = self.timer.divide;
        let code = ((d >> 1) & 4) | (d & 3);
        let divisor = if code == 7 { 1 } else { 2u64 << code };
        divisor * BUS_CYCLE_NS
    }

    /// The time the running count reaches zero.
    fn zero_time(&self, cd: Countdown) -> u64 {
        cd.at_ns.saturating_add(u64::from(cd.count) * self.ns_per_count())
    }

    fn guest_tsc(&self, now_ns: u64) -> u64 {
        let tsc = u128::from(now_ns) * u128::from(self.config.tsc_hz) / 1_000_000_000;
        u64::try_from(tsc).unwrap_or(u64::MAX)
    }

    /// The first `now_ns` at which the guest TSC is at least `tsc`.
    fn tsc_to_ns(&self, tsc: u64) -> u64 {
        let ns = (u128::from(tsc) * 1_000_000_000).div_ceil(u128::from(self.config.tsc_hz));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// The current-count register: 0 when stopped and in TSC-deadline mode.
    fn current_count(&self, now_ns: u64) -> u32 {
        let mode = self.timer_mode();
        let Some(cd) = self.timer.countdown else { return 0 };
        let elapsed = now_ns.saturating_sub(cd.at_ns) / self.ns_per_count();
        if elapsed < u64::from(cd.count) {
            return cd.count - elapsed as u32;
        }
        // Past zero without a tick() yet: a periodic count has reloaded.
        let initial = u64::from(self.timer.initial);
        if mode == TimerMode::Periodic && initial != 0 {
            (initial - (elapsed - u64::from(cd.count)) % initial) as u32
        } else {
            0
        }
    }

    fn write_initial_count(&mut self, count: u32, now_ns: u64) {
        match self.timer_mode() {
            // Ignored in TSC-deadline mode (§12.5.4.1).
            TimerMode::TscDeadline => {}
            mode => {
                self.timer.initial = count;
                let runs = count != 0 && mode != TimerMode::Reserved;
                self.timer.countdown = runs.then_some(Countdown { at_ns: now_ns, count });
            }
        }
    }

    /// A new divisor applies from now on to what is left of the count.
    fn write_divide(&mut self, divide: u32, now_ns: u64) {
        let current = self.current_count(now_ns);
        self.timer.divide = divide;
        if self.timer.countdown.is_some() && current != 0 {
            self.timer.countdown = Some(Countdown { at_ns: now_ns, count: current });
        }
    }

    /// Fire the timer if it is due by `now_ns`: the LVT timer vector goes
    /// into IRR unless masked; a periodic count reloads (missed periods
    /// coalesce into one interrupt, as they would in IRR), a one-shot one
    /// stops, a TSC deadline clears. Returns whether it fired.
    ///
    /// Call it before [`VLapic::pending_interrupt`] and when the host timer
    /// armed from [`VLapic::next_timer_deadline`] expires, and re-arm from
    /// `next_timer_deadline` afterwards whatever it returns: accesses also
    /// bring the timer up to date, so a periodic deadline may have moved.
    pub fn tick(&mut self, now_ns: u64) -> bool {
        self.advance(now_ns)
    }

    fn advance(&mut self, now_ns: u64) -> bool {
        match self.timer_mode() {
            mode @ (TimerMode::OneShot | TimerMode::Periodic) => {
                let Some(cd) = self.timer.countdown else { return false };
                let zero = self.zero_time(cd);
                if now_ns < zero {
                    return false;
                }
                let initial = self.timer.initial;
                self.timer.countdown = if mode == TimerMode::Periodic && initial != 0 {
                    let period = u64::from(initial) * self.ns_per_count();
                    let reloads = (now_ns - zero) / period;
                    Some(Countdown { at_ns: zero + reloads * period, count: initial })
                } else {
                    None
                };
            }
            TimerMode::TscDeadline => {
                let deadline = self.timer.tsc_deadline;
                if deadline == 0 || self.guest_tsc(now_ns) < deadline {
                    return false;
                }
                self.timer.tsc_deadline = 0;
            }
            TimerMode::Reserved => return false,
        }
        let entry = self.lvt[Lvt::Timer as usize];
        if entry & LVT_MASKED == 0 {
            self.accept(entry as u8, TriggerMode::Edge);
        }
        true
    }

    /// Whether the timer needs [`VLapic::tick`] at all: exactly when
    /// [`VLapic::next_timer_deadline`] is `Some`, without working out when.
    /// While it is `false` a tick raises nothing, so a caller may skip
    /// reading the clock and ticking (the kernel does before every entry).
    #[inline]
    pub fn timer_armed(&self) -> bool {
        if self.lvt[Lvt::Timer as usize] & LVT_MASKED != 0 {
            return false;
        }
        match self.timer_mode() {
            TimerMode::OneShot | TimerMode::Periodic => self.timer.countdown.is_some(),
            TimerMode::TscDeadline => self.timer.tsc_deadline != 0,
            TimerMode::Reserved => false,
        }
    }

    /// When (in `now_ns` time) the timer next needs [`VLapic::tick`], if it
    /// runs and is unmasked. It may already have passed. A masked timer
    /// needs no tick: every access catches the count up from the time.
    /// Bounding how soon the host timer fires (a tiny periodic count) is
    /// the kernel's policy; late ticks only coalesce interrupts.
    pub fn next_timer_deadline(&self) -> Option<u64> {
        if self.lvt[Lvt::Timer as usize] & LVT_MASKED != 0 {
            return None;
        }
        match self.timer_mode() {
            TimerMode::OneShot | TimerMode::Periodic => {
                self.timer.countdown.map(|cd| self.zero_time(cd))
            }
            TimerMode::TscDeadline => {
                (self.timer.tsc_deadline != 0).then(|| self.tsc_to_ns(self.timer.tsc_deadline))
            }
            TimerMode::Reserved => None,
        }
    }
}

fn timer_mode_of(lvt_timer: u32) -> TimerMode {
    match (lvt_timer >> 17) & 3 {
        0 => TimerMode::OneShot,
        1 => TimerMode::Periodic,
        2 => TimerMode::TscDeadline,
        _ => TimerMode::Reserved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSC_HZ: u64 = 2_000_000_000;

    fn config(bsp: bool) -> VLapicConfig {
        VLapicConfig { tsc_hz: TSC_HZ, bsp, x2apic_supported: true, max_phys_addr_bits: 46 }
    }

    /// vCPU `id`, software-enabled with spurious vector 0xFF.
    fn enabled(id: u32) -> VLapic {
        let mut l = VLapic::new(id, config(id == 0));
        assert_eq!(l.mmio_write(0xF0, 0x1FF, 0), Effect::None);
        l
    }

    fn to_x2apic(l: &mut VLapic) {
        let base = l.apic_base() | APIC_BASE_EXTD;
        assert_eq!(l.msr_write(MSR_IA32_APIC_BASE, base, 0), Ok(Effect::ModeChanged));
        assert!(l.x2apic_mode());
    }

    fn irr_has(l: &VLapic, v: u8) -> bool {
        l.irr.contains(v)
    }

    #[test]
    fn reset_state() {
        let mut l = VLapic::new(3, config(false));
        assert_eq!(l.apic_base(), XAPIC_DEFAULT_BASE | APIC_BASE_EN);
        assert_eq!(
            VLapic::new(0, config(true)).apic_base(),
            XAPIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_BSP
        );
        assert_eq!(l.mmio_base(), Some(XAPIC_DEFAULT_BASE));
        assert_eq!(l.mmio_read(0x20, 0), 3 << 24);
        assert_eq!(l.mmio_read(0x30, 0), APIC_VERSION);
        assert_eq!(l.mmio_read(0xF0, 0), 0xFF);
        assert_eq!(l.mmio_read(0xE0, 0), u32::MAX);
        for off in [0x2F0, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370] {
            assert_eq!(l.mmio_read(off, 0), LVT_MASKED, "LVT at {off:#x}");
        }
        assert!(!l.sw_enabled());
        // Software-disabled: LVT mask bits cannot be cleared.
        let _ = l.mmio_write(0x350, 0x700, 0);
        assert_eq!(l.mmio_read(0x350, 0), 0x700 | LVT_MASKED);
        // Nor are fixed interrupts taken.
        assert!(!l.accept(0x40, TriggerMode::Edge));
    }

    #[test]
    fn xapic_register_round_trips() {
        let mut l = enabled(1);
        let cases: &[(u32, u32, u32)] = &[
            (0x20, 0xFFFF_FFFF, 0xFF00_0000),  // ID: bits 31:24
            (0x80, 0xFFFF_FF5A, 0x5A),         // TPR
            (0xD0, 0x1234_5678, 0x1200_0000),  // LDR
            (0xE0, 0x0000_0000, 0x0FFF_FFFF),  // DFR: cluster model
            (0xF0, 0xFFFF_F3FF, 0x3FF),        // SVR
            (0x2F0, 0xFFFF_FFFF, 0x107FF),     // CMCI
            (0x320, 0xFFFF_FFFF, 0x700FF),     // timer
            (0x330, 0xFFFF_FFFF, 0x107FF),     // thermal
            (0x340, 0xFFFF_FFFF, 0x107FF),     // perfmon
            (0x350, 0xFFFF_FFFF, 0x1A7FF),     // LINT0
            (0x360, 0xFFFF_FFFF, 0x1A7FF),     // LINT1
            (0x370, 0xFFFF_FFFF, 0x100FF),     // error
            (0x310, 0xFFFF_FFFF, 0xFF00_0000), // ICR high
            (0x380, 0xFFFF_FFFF, 0xFFFF_FFFF), // initial count
            (0x3E0, 0xFFFF_FFFF, 0xB),         // divide
        ];
        for &(off, write, read) in cases {
            let _ = l.mmio_write(off, write, 10);
            assert_eq!(l.mmio_read(off, 10), read, "offset {off:#x}");
        }
        // Read-only registers ignore writes.
        for off in [0x30, 0x90, 0xA0, 0x100, 0x180, 0x200, 0x390] {
            let before = l.mmio_read(off, 10);
            assert_eq!(l.mmio_write(off, 0xFFFF_FFFF, 10), Effect::None);
            assert_eq!(l.mmio_read(off, 10), before, "offset {off:#x}");
        }
        // Reserved and misaligned offsets read 0, and past the page.
        for off in [0x0, 0x10, 0x40, 0x3F0, 0x24, 0x81, 0x400, 0xFF0, 0x1000, u32::MAX] {
            assert_eq!(l.mmio_write(off, 0xFFFF_FFFF, 10), Effect::None);
            assert_eq!(l.mmio_read(off, 10), 0, "offset {off:#x}");
        }
    }

    #[test]
    fn x2apic_register_round_trips() {
        let mut l = enabled(0x25);
        to_x2apic(&mut l);
        assert_eq!(l.mmio_base(), None);
        assert_eq!(l.mmio_read(0x20, 0), 0);
        assert_eq!(l.msr_read(0x802, 0), Ok(0x25));
        assert_eq!(l.msr_read(0x803, 0), Ok(u64::from(APIC_VERSION)));
        // Logical x2APIC ID: cluster 2, bit 5.
        assert_eq!(l.msr_read(0x80D, 0), Ok(0x0002_0020));
        assert_eq!(l.msr_write(0x808, 0x41, 0), Ok(Effect::None));
        assert_eq!(l.msr_read(0x808, 0), Ok(0x41));
        assert_eq!(l.msr_write(0x835, 0x8700, 0), Ok(Effect::None));
        assert_eq!(l.msr_read(0x835, 0), Ok(0x8700));
        let icr = (7u64 << 32) | 0x4030;
        assert!(matches!(l.msr_write(0x830, icr, 0), Ok(Effect::SendIpi(_))));
        assert_eq!(l.msr_read(0x830, 0), Ok(icr));
        assert_eq!(l.msr_write(0x838, 0xFFFF_FFFF, 0), Ok(Effect::None)); // timer masked
        assert_eq!(l.msr_read(0x838, 0), Ok(0xFFFF_FFFF));
        assert_eq!(l.msr_read(0x83E, 0), Ok(0));
        assert_eq!(l.msr_write(0x83E, 0xB, 0), Ok(Effect::None));
        assert_eq!(l.msr_read(0x83E, 0), Ok(0xB));
    }

    #[test]
    fn x2apic_faults() {
        let mut l = enabled(2);
        // x2APIC MSRs fault in xAPIC mode.
        assert_eq!(l.msr_read(0x802, 0), Err(Fault::Gp));
        assert_eq!(l.msr_write(0x808, 0, 0), Err(Fault::Gp));
        to_x2apic(&mut l);
        // Write-only, absent, xAPIC-only.
        for msr in [0x80B, 0x83F, 0x800, 0x801, 0x809, 0x80C, 0x80E, 0x831, 0x83A, 0x840, 0x8FF] {
            assert_eq!(l.msr_read(msr, 0), Err(Fault::Gp), "read {msr:#x}");
        }
        // Read-only.
        for msr in [0x802, 0x803, 0x80A, 0x80D, 0x810, 0x818, 0x820, 0x827, 0x839] {
            assert_eq!(l.msr_write(msr, 0, 0), Err(Fault::Gp), "write {msr:#x}");
        }
        // Reserved bits.
        let reserved: &[(u32, u64)] = &[
            (0x808, 0x100),
            (0x808, 1 << 32),
            (0x80B, 1),
            (0x828, 1),
            (0x80F, 0x1000),
            (0x832, 1 << 19),
            (0x837, 0x700),
            (0x830, 1 << 12),
            (0x830, 1 << 20),
            (0x83E, 0x4),
            (0x83F, 0x100),
            (0x838, 1 << 32),
        ];
        for &(msr, v) in reserved {
            assert_eq!(l.msr_write(msr, v, 0), Err(Fault::Gp), "write {msr:#x} = {v:#x}");
        }
        // Not a LAPIC MSR at all.
        assert_eq!(l.msr_read(0x10, 0), Err(Fault::Gp));
        assert!(
            !is_lapic_msr(0x10) && is_lapic_msr(0x80B) && is_lapic_msr(0x1B) && is_lapic_msr(0x6E0)
        );
    }

    #[test]
    fn apic_base_transitions() {
        let mut l = enabled(1);
        let base = l.apic_base();
        // Reserved bits, EXTD without EN.
        assert_eq!(l.msr_write(MSR_IA32_APIC_BASE, base | 1, 0), Err(Fault::Gp));
        assert_eq!(l.msr_write(MSR_IA32_APIC_BASE, base | (1 << 9), 0), Err(Fault::Gp));
        assert_eq!(l.msr_write(MSR_IA32_APIC_BASE, base | (1 << 46), 0), Err(Fault::Gp));
        assert_eq!(
            l.msr_write(MSR_IA32_APIC_BASE, XAPIC_DEFAULT_BASE | APIC_BASE_EXTD, 0),
            Err(Fault::Gp)
        );
        // Same value: nothing to do.
        assert_eq!(l.msr_write(MSR_IA32_APIC_BASE, base, 0), Ok(Effect::None));
        // Relocation.
        assert_eq!(
            l.msr_write(MSR_IA32_APIC_BASE, 0xFED0_0000 | APIC_BASE_EN, 0),
            Ok(Effect::ModeChanged)
        );
        assert_eq!(l.mmio_base(), Some(0xFED0_0000));
        // xAPIC → x2APIC → xAPIC is illegal.
        to_x2apic(&mut l);
        assert_eq!(
            l.msr_write(MSR_IA32_APIC_BASE, XAPIC_DEFAULT_BASE | APIC_BASE_EN, 0),
            Err(Fault::Gp)
        );
        // x2APIC → disabled → x2APIC is illegal; → xAPIC resets.
        assert_eq!(l.msr_write(MSR_IA32_APIC_BASE, XAPIC_DEFAULT_BASE, 0), Ok(Effect::ModeChanged));
        assert_eq!(l.mode(), ApicMode::Disabled);
        assert_eq!(l.mmio_base(), None);
        assert_eq!(l.pending_interrupt(), None);
        let x2 = XAPIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD;
        assert_eq!(l.msr_write(MSR_IA32_APIC_BASE, x2, 0), Err(Fault::Gp));
        assert_eq!(
            l.msr_write(MSR_IA32_APIC_BASE, XAPIC_DEFAULT_BASE | APIC_BASE_EN, 0),
            Ok(Effect::ModeChanged)
        );
        assert_eq!(l.mode(), ApicMode::Xapic);
        assert_eq!(l.mmio_read(0xF0, 0), 0xFF);
        // Without x2APIC in CPUID, EXTD is reserved.
        let mut no_x2 = VLapic::new(0, VLapicConfig { x2apic_supported: false, ..config(true) });
        assert_eq!(
            no_x2.msr_write(MSR_IA32_APIC_BASE, no_x2.apic_base() | APIC_BASE_EXTD, 0),
            Err(Fault::Gp)
        );
    }

    #[test]
    fn tpr_ppr_mask_lower_priority() {
        let mut l = enabled(0);
        assert!(l.accept(0x45, TriggerMode::Edge));
        assert_eq!(l.pending_interrupt(), Some(0x45));
        let _ = l.mmio_write(0x80, 0x50, 0);
        assert_eq!((l.mmio_read(0xA0, 0), l.pending_interrupt()), (0x50, None));
        let _ = l.mmio_write(0x80, 0x40, 0);
        assert_eq!(l.pending_interrupt(), None, "same class as the TPR is blocked");
        l.set_tpr(0x3F);
        assert_eq!(l.pending_interrupt(), Some(0x45));
        // PPR follows ISR when it is higher.
        assert!(l.ack(0x45));
        assert_eq!(l.mmio_read(0xA0, 0), 0x40);
        l.set_tpr(0x52);
        assert_eq!(l.ppr(), 0x52);
        // APR: TPR dominates here.
        assert_eq!(l.mmio_read(0x90, 0), 0x52);
    }

    #[test]
    fn an_offered_vector_not_taken_goes_back_to_irr() {
        let mut l = enabled(0);
        assert!(l.accept(0x40, TriggerMode::Level));
        assert!(l.accept(0x30, TriggerMode::Edge));
        assert!(l.ack(0x40));
        assert_eq!(l.pending_interrupt(), None, "0x30 waits behind 0x40 in service");
        // Not taken: as if never offered, its trigger mode kept.
        assert!(l.unack(0x40));
        assert!(!l.unack(0x40), "no longer in service");
        assert_eq!(l.pending_interrupt(), Some(0x40));
        assert_eq!(l.mmio_read(0x100 + 0x20, 0), 0, "ISR empty");
        assert_eq!(l.mmio_read(0x200 + 0x20, 0), 1, "IRR has 0x40 again");
        assert!(l.ack(0x40));
        assert_eq!(l.eoi(), Effect::Eoi { vector: 0x40, level_triggered: true });
        assert_eq!(l.pending_interrupt(), Some(0x30));
        assert!(!l.unack(0x30), "never acknowledged");
    }

    #[test]
    fn nested_irr_isr_eoi() {
        let mut l = enabled(0);
        assert!(l.accept(0x30, TriggerMode::Edge));
        assert_eq!(l.pending_interrupt(), Some(0x30));
        assert!(l.ack(0x30));
        assert!(!l.ack(0x30));
        assert!(l.accept(0x80, TriggerMode::Level));
        assert_eq!(l.pending_interrupt(), Some(0x80));
        assert!(l.ack(0x80));
        assert!(l.accept(0x20, TriggerMode::Edge));
        assert!(l.accept(0x35, TriggerMode::Edge));
        assert_eq!(l.pending_interrupt(), None);
        assert_eq!(l.mmio_read(0x100 + 0x40, 0), 1, "ISR has 0x80");
        assert_eq!(l.mmio_read(0x180 + 0x40, 0), 1, "TMR has 0x80");
        assert_eq!(l.mmio_write(0xB0, 0, 0), Effect::Eoi { vector: 0x80, level_triggered: true });
        // 0x35 is in the same class as 0x30 in service: still blocked.
        assert_eq!(l.pending_interrupt(), None);
        assert_eq!(l.mmio_write(0xB0, 0, 0), Effect::Eoi { vector: 0x30, level_triggered: false });
        assert_eq!(l.pending_interrupt(), Some(0x35));
        assert!(l.ack(0x35));
        assert_eq!(l.eoi(), Effect::Eoi { vector: 0x35, level_triggered: false });
        assert_eq!(l.pending_interrupt(), Some(0x20));
        assert!(l.ack(0x20));
        assert_eq!(l.eoi(), Effect::Eoi { vector: 0x20, level_triggered: false });
        assert_eq!(l.eoi(), Effect::None);
        // Software-disabled: IRR contents stay deliverable, new ones are refused.
        assert!(l.accept(0x60, TriggerMode::Edge));
        let _ = l.mmio_write(0xF0, 0xFF, 0);
        assert!(!l.accept(0x70, TriggerMode::Edge));
        assert_eq!(l.pending_interrupt(), Some(0x60));
    }

    /// (divide register value, divisor)
    const DIVIDES: [(u32, u64); 5] = [(0xB, 1), (0x0, 2), (0x1, 4), (0x3, 16), (0xA, 128)];

    #[test]
    fn one_shot_timer() {
        for (reg, div) in DIVIDES {
            let mut l = enabled(0);
            assert_eq!(l.mmio_write(0x320, 0x30, 0), Effect::None); // one-shot, unmasked
            let _ = l.mmio_write(0x3E0, reg, 0);
            let t0 = 5_000;
            assert_eq!(l.mmio_write(0x380, 1000, t0), Effect::TimerChanged);
            let zero = t0 + 1000 * div;
            assert_eq!(l.next_timer_deadline(), Some(zero));
            assert_eq!(l.mmio_read(0x390, t0), 1000);
            let mut last = 1000;
            for k in 1..10 {
                let c = l.mmio_read(0x390, t0 + k * 97 * div);
                assert!(c < last, "div {div}: count must fall");
                last = c;
            }
            assert_eq!(l.mmio_read(0x390, t0 + 10 * div), 990);
            assert!(!l.tick(zero - 1));
            assert!(!irr_has(&l, 0x30));
            assert!(l.tick(zero));
            assert!(irr_has(&l, 0x30));
            assert_eq!(l.mmio_read(0x390, zero), 0);
            assert_eq!(l.next_timer_deadline(), None);
            assert!(!l.tick(zero * 10));
            assert_eq!(l.mmio_read(0x380, zero), 1000);
        }
    }

    #[test]
    fn periodic_timer() {
        for (reg, div) in DIVIDES {
            let mut l = enabled(0);
            let _ = l.mmio_write(0x320, 0x31 | (1 << 17), 0);
            let _ = l.mmio_write(0x3E0, reg, 0);
            let _ = l.mmio_write(0x380, 100, 0);
            let period = 100 * div;
            for n in 1..=3 {
                assert_eq!(l.next_timer_deadline(), Some(n * period));
                assert!(!l.tick(n * period - 1));
                assert!(l.tick(n * period));
                assert!(irr_has(&l, 0x31));
                assert!(l.ack(0x31));
                let _ = l.eoi();
            }
            // Late by several periods: one interrupt, then back on the grid.
            assert!(l.tick(10 * period + 1));
            assert_eq!(l.next_timer_deadline(), Some(11 * period));
            assert_eq!(l.mmio_read(0x390, 10 * period + 50 * div), 50);
            // Reads past zero without a tick see the reloaded count.
            assert_eq!(l.mmio_read(0x390, 11 * period + 10 * div), 90);
            // Writing 0 stops it.
            assert_eq!(l.mmio_write(0x380, 0, 12 * period), Effect::TimerChanged);
            assert_eq!((l.next_timer_deadline(), l.mmio_read(0x390, 13 * period)), (None, 0));
        }
    }

    /// `timer_armed` is `next_timer_deadline().is_some()`, and while it is
    /// false a tick, however late, raises nothing: the kernel skips the
    /// clock and the tick then. Armed, the tick at the deadline raises the
    /// vector.
    /// The summary of non-zero registers stays exact through any walk of
    /// sets and clears (4 vectors in each register, so registers empty and
    /// fill often): `highest` is what a scan of all 256 finds.
    #[test]
    fn vector_set_highest_is_a_scans_answer() {
        let mut s = VectorSet::default();
        let mut x: u32 = 0x1234_5678;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = (x >> 8) as u8 & 0xe3;
            if x & 3 == 0 { s.clear(v) } else if x & 3 == 1 { s.set(v) } else { s.assign(v, x & 4 != 0) }
            let scan = (0..=255u8).rev().find(|&v| s.contains(v));
            assert_eq!(s.highest(), scan, "step {step}: {s:x?}");
            let summary = (0..8).fold(0u8, |m, i| m | (u8::from(s.words[i] != 0) << i));
            assert_eq!(s.nonzero, summary, "step {step}");
        }
        assert_eq!(VectorSet::default().highest(), None);
    }

    #[test]
    fn timer_armed_exactly_when_a_tick_can_raise_the_timer() {
        let check = |l: &VLapic, what: &str| {
            assert_eq!(l.timer_armed(), l.next_timer_deadline().is_some(), "{what}");
            let mut ticked = l.clone();
            match l.next_timer_deadline() {
                None => {
                    let _ = ticked.tick(u64::MAX / 4);
                    assert_eq!(ticked.pending_interrupt(), l.pending_interrupt(), "{what}: a tick raised something");
                }
                Some(at) => {
                    assert!(ticked.tick(at), "{what}: not fired at its deadline");
                    assert!(ticked.pending_interrupt().is_some(), "{what}: nothing pending after firing");
                }
            }
        };
        let mut l = enabled(0);
        check(&l, "after reset");
        let _ = l.mmio_write(0x3E0, 0xB, 0); // divide by 1
        let _ = l.mmio_write(0x320, 0x30, 0); // one-shot, unmasked
        check(&l, "one-shot, no count");
        let _ = l.mmio_write(0x380, 1000, 0);
        check(&l, "one-shot, counting");
        let _ = l.mmio_write(0x320, 0x30 | LVT_MASKED, 10);
        check(&l, "one-shot, masked");
        let _ = l.mmio_write(0x320, 0x30, 20);
        check(&l, "one-shot, unmasked again");
        assert!(l.tick(1000));
        assert!(l.ack(0x30));
        let _ = l.eoi();
        check(&l, "one-shot, fired");
        let _ = l.mmio_write(0x320, 0x31 | (1 << 17), 2000); // periodic
        let _ = l.mmio_write(0x380, 100, 2000);
        check(&l, "periodic");
        let _ = l.mmio_write(0x380, 0, 2050);
        check(&l, "periodic, stopped");
        let _ = l.mmio_write(0x320, 0x40 | (2 << 17), 3000); // TSC deadline
        check(&l, "TSC deadline, none set");
        let _ = l.msr_write(MSR_IA32_TSC_DEADLINE, 1 << 20, 3000);
        check(&l, "TSC deadline, set");
        let _ = l.msr_write(MSR_IA32_TSC_DEADLINE, 0, 3000);
        check(&l, "TSC deadline, cleared");
        let _ = l.mmio_write(0x320, 0x40 | (3 << 17), 3000); // reserved mode
        check(&l, "reserved mode");
    }

    #[test]
    fn divide_change_keeps_remaining_count() {
        let mut l = enabled(0);
        let _ = l.mmio_write(0x320, 0x30, 0);
        let _ = l.mmio_write(0x3E0, 0xB, 0); // ÷1
        let _ = l.mmio_write(0x380, 1000, 0);
        assert_eq!(l.mmio_write(0x3E0, 0x0, 400), Effect::TimerChanged); // ÷2, 600 left
        assert_eq!(l.mmio_read(0x390, 600), 500);
        assert_eq!(l.next_timer_deadline(), Some(400 + 1200));
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut l = enabled(0);
        let deadline_mode = 0x40 | (2 << 17);
        let _ = l.mmio_write(0x320, deadline_mode, 0);
        // Initial count is ignored, current count reads 0.
        let _ = l.mmio_write(0x380, 1234, 0);
        assert_eq!((l.mmio_read(0x380, 0), l.mmio_read(0x390, 0)), (0, 0));
        // At 1000 ns the guest TSC (2 GHz) is 2000.
        assert_eq!(l.msr_write(MSR_IA32_TSC_DEADLINE, 2000 + 5000, 1000), Ok(Effect::TimerChanged));
        assert_eq!(l.msr_read(MSR_IA32_TSC_DEADLINE, 1000), Ok(7000));
        assert_eq!(l.next_timer_deadline(), Some(3500));
        assert!(!l.tick(3499));
        assert!(l.tick(3500));
        assert!(irr_has(&l, 0x40));
        assert_eq!(l.msr_read(MSR_IA32_TSC_DEADLINE, 3500), Ok(0));
        assert_eq!(l.next_timer_deadline(), None);
        // A deadline already passed fires at once.
        assert!(l.ack(0x40));
        let _ = l.eoi();
        assert_eq!(l.msr_write(MSR_IA32_TSC_DEADLINE, 10, 4000), Ok(Effect::TimerChanged));
        assert!(irr_has(&l, 0x40));
        // 0 disarms.
        let _ = l.msr_write(MSR_IA32_TSC_DEADLINE, 1 << 40, 4000);
        assert!(l.next_timer_deadline().is_some());
        let _ = l.msr_write(MSR_IA32_TSC_DEADLINE, 0, 4000);
        assert_eq!(l.next_timer_deadline(), None);
        // Leaving TSC-deadline mode disarms; the MSR then reads 0, writes are dropped.
        let _ = l.msr_write(MSR_IA32_TSC_DEADLINE, 1 << 40, 4000);
        assert_eq!(l.mmio_write(0x320, 0x40, 4000), Effect::TimerChanged);
        assert_eq!(l.msr_write(MSR_IA32_TSC_DEADLINE, 1 << 40, 4000), Ok(Effect::None));
        assert_eq!(l.msr_read(MSR_IA32_TSC_DEADLINE, 4000), Ok(0));
        let _ = l.mmio_write(0x320, deadline_mode, 4000);
        assert_eq!(l.next_timer_deadline(), None);
    }

    #[test]
    fn tsc_deadline_rounds_up() {
        // 3 GHz: deadline 10 is reached at 4 ns (TSC 12), not 3 ns (TSC 9).
        let mut l = VLapic::new(0, VLapicConfig { tsc_hz: 3_000_000_000, ..config(true) });
        let _ = l.mmio_write(0xF0, 0x1FF, 0);
        let _ = l.mmio_write(0x320, 0x40 | (2 << 17), 0);
        let _ = l.msr_write(MSR_IA32_TSC_DEADLINE, 10, 0);
        assert_eq!(l.next_timer_deadline(), Some(4));
        assert!(!l.tick(3));
        assert!(l.tick(4));
    }

    #[test]
    fn masked_timer_sets_no_irr() {
        let mut l = enabled(0);
        let _ = l.mmio_write(0x320, LVT_MASKED | 0x30 | (1 << 17), 0);
        let _ = l.mmio_write(0x3E0, 0xB, 0);
        assert_eq!(l.mmio_write(0x380, 100, 0), Effect::None);
        assert_eq!(l.next_timer_deadline(), None);
        assert!(l.tick(100));
        assert!(!irr_has(&l, 0x30));
        assert_eq!(l.mmio_read(0x390, 150), 50, "a masked timer still counts");
        // Unmasking brings the deadline back.
        assert_eq!(l.mmio_write(0x320, 0x30 | (1 << 17), 150), Effect::TimerChanged);
        assert_eq!(l.next_timer_deadline(), Some(200));
        // Software-disabling masks it again.
        assert_eq!(l.mmio_write(0xF0, 0xFF, 160), Effect::TimerChanged);
        assert_eq!(l.next_timer_deadline(), None);
    }

    #[test]
    fn xapic_icr_sends() {
        let mut l = enabled(0);
        let _ = l.mmio_write(0x310, 3 << 24, 0);
        let ipi = |vector, mode, dest| {
            Effect::SendIpi(Ipi { dest, vector, mode, trigger: TriggerMode::Edge })
        };
        let phys3 = Destination::Physical { id: 3, format: IdFormat::Xapic };
        assert_eq!(l.mmio_write(0x300, 0x4050, 0), ipi(0x50, DeliveryMode::Fixed, phys3));
        assert_eq!(l.mmio_read(0x300, 0), 0x4050);
        assert_eq!(l.mmio_write(0x300, 0x4500, 0), ipi(0, DeliveryMode::Init, phys3));
        assert_eq!(l.mmio_write(0x300, 0x4698, 0), ipi(0x98, DeliveryMode::Startup, phys3));
        assert_eq!(l.mmio_write(0x300, 0x4400, 0), ipi(0, DeliveryMode::Nmi, phys3));
        assert_eq!(l.mmio_write(0x300, 0x4133, 0), ipi(0x33, DeliveryMode::LowestPriority, phys3));
        assert_eq!(l.mmio_write(0x300, 0x4200, 0), ipi(0, DeliveryMode::Smi, phys3));
        let logical = Destination::Logical { mda: 3, format: IdFormat::Xapic };
        assert_eq!(l.mmio_write(0x300, 0x4850, 0), ipi(0x50, DeliveryMode::Fixed, logical));
        let all_but = Destination::AllExcludingSelf { source: 0 };
        assert_eq!(l.mmio_write(0x300, 0xC4500, 0), ipi(0, DeliveryMode::Init, all_but));
        assert_eq!(
            l.mmio_write(0x300, 0x84050, 0),
            ipi(0x50, DeliveryMode::Fixed, Destination::AllIncludingSelf)
        );
        let me = Destination::SelfOnly { source: 0 };
        assert_eq!(l.mmio_write(0x300, 0x44050, 0), ipi(0x50, DeliveryMode::Fixed, me));
        // Level-triggered fixed IPI carries its trigger mode.
        let level = Effect::SendIpi(Ipi {
            dest: phys3,
            vector: 0x50,
            mode: DeliveryMode::Fixed,
            trigger: TriggerMode::Level,
        });
        assert_eq!(l.mmio_write(0x300, 0xC050, 0), level);
        // INIT level de-assert, reserved modes and illegal vectors send nothing.
        assert_eq!(l.mmio_write(0x300, 0x8500, 0), Effect::None);
        assert_eq!(l.mmio_write(0x300, 0x4350, 0), Effect::None);
        assert_eq!(l.mmio_write(0x300, 0x4750, 0), Effect::None);
        assert_eq!(l.mmio_write(0x300, 0x400F, 0), Effect::None);
    }

    #[test]
    fn x2apic_icr_and_self_ipi() {
        let mut l = enabled(5);
        to_x2apic(&mut l);
        let e = l.msr_write(0x830, (0x1_0007u64 << 32) | 0x40F1, 0);
        let dest = Destination::Physical { id: 0x1_0007, format: IdFormat::X2apic };
        assert_eq!(
            e,
            Ok(Effect::SendIpi(Ipi {
                dest,
                vector: 0xF1,
                mode: DeliveryMode::Fixed,
                trigger: TriggerMode::Edge
            }))
        );
        let e = l.msr_write(0x830, (0x0002_0004u64 << 32) | 0x4831, 0);
        let dest = Destination::Logical { mda: 0x0002_0004, format: IdFormat::X2apic };
        assert_eq!(
            e,
            Ok(Effect::SendIpi(Ipi {
                dest,
                vector: 0x31,
                mode: DeliveryMode::Fixed,
                trigger: TriggerMode::Edge
            }))
        );
        // SELF IPI.
        let e = l.msr_write(0x83F, 0x77, 0);
        let dest = Destination::SelfOnly { source: 5 };
        let ipi = Ipi { dest, vector: 0x77, mode: DeliveryMode::Fixed, trigger: TriggerMode::Edge };
        assert_eq!(e, Ok(Effect::SendIpi(ipi)));
        assert!(l.matches(&ipi.dest));
        assert!(l.deliver(ipi.mode, ipi.vector, ipi.trigger));
        assert_eq!(l.pending_interrupt(), Some(0x77));
        // An illegal vector is an error, not an IPI.
        assert_eq!(l.msr_write(0x83F, 0x05, 0), Ok(Effect::None));
        assert_eq!(l.msr_write(0x828, 0, 0), Ok(Effect::None));
        assert_eq!(l.msr_read(0x828, 0), Ok(u64::from(ESR_SEND_ILLEGAL_VECTOR)));
    }

    #[test]
    fn errors_latch_and_interrupt() {
        let mut l = enabled(0);
        let _ = l.mmio_write(0x370, 0xEE, 0); // LVT error, unmasked
        assert!(!l.accept(0x03, TriggerMode::Edge));
        assert_eq!(l.mmio_read(0x280, 0), 0, "ESR shows errors only after a write");
        let _ = l.mmio_write(0x280, 0, 0);
        assert_eq!(l.mmio_read(0x280, 0), ESR_RECEIVE_ILLEGAL_VECTOR);
        assert_eq!(l.pending_interrupt(), Some(0xEE));
        let _ = l.mmio_write(0x280, 0, 0);
        assert_eq!(l.mmio_read(0x280, 0), 0);
        // An illegal error vector does not recurse.
        let _ = l.mmio_write(0x370, 0x01, 0);
        assert!(!l.accept(0x02, TriggerMode::Edge));
    }

    #[test]
    fn init_sipi_flow() {
        let mut ap = enabled(1);
        assert!(ap.waiting_for_sipi(), "an AP waits for INIT-SIPI after reset");
        assert!(!enabled(0).waiting_for_sipi(), "the BSP runs");
        let mut bsp = enabled(0);
        assert!(!bsp.accept_sipi(0x10), "SIPI outside wait-for-SIPI is ignored");
        let _ = ap.mmio_write(0x80, 0x20, 0);
        assert!(ap.deliver(DeliveryMode::Init, 0, TriggerMode::Edge));
        assert!(ap.waiting_for_sipi());
        assert!(ap.deliver(DeliveryMode::Startup, 0x9A, TriggerMode::Edge));
        assert!(!ap.accept_sipi(0x9B), "second SIPI is ignored");
        assert_eq!(ap.take_sipi(), None, "INIT first");
        assert!(ap.take_init());
        assert!(!ap.take_init());
        assert_eq!(
            (ap.mmio_read(0x80, 0), ap.mmio_read(0xF0, 0), ap.mmio_read(0x20, 0)),
            (0, 0xFF, 1 << 24)
        );
        assert_eq!(ap.take_sipi(), Some(0x9A));
        assert!(!ap.waiting_for_sipi());
        assert_eq!(ap.take_sipi(), None);
        // The BSP does not wait for a SIPI.
        let mut bsp = enabled(0);
        assert!(bsp.accept_init());
        assert!(!bsp.accept_sipi(0x9A));
        assert!(bsp.take_init());
        // INIT keeps x2APIC mode and the derived LDR.
        let mut x = enabled(0x13);
        to_x2apic(&mut x);
        assert!(x.accept_init() && x.take_init());
        assert!(x.x2apic_mode());
        assert_eq!(x.msr_read(0x80D, 0), Ok(0x0001_0008));
        assert_eq!(x.msr_read(0x80F, 0), Ok(0xFF));
        // NMI.
        assert!(x.deliver(DeliveryMode::Nmi, 0, TriggerMode::Edge));
        assert!(x.take_nmi());
        assert!(!x.take_nmi());
    }

    #[test]
    fn destination_matching() {
        let mut a = enabled(1);
        let phys = |id| Destination::Physical { id, format: IdFormat::Xapic };
        assert!(a.matches(&phys(1)) && a.matches(&phys(0xFF)) && !a.matches(&phys(2)));
        // A changed xAPIC ID is what physical mode matches.
        let _ = a.mmio_write(0x20, 9 << 24, 0);
        assert!(a.matches(&phys(9)) && !a.matches(&phys(1)));
        // Flat logical.
        let _ = a.mmio_write(0xD0, 0x0400_0000, 0);
        let logical = |mda| Destination::Logical { mda, format: IdFormat::Xapic };
        assert!(
            a.matches(&logical(0x06)) && !a.matches(&logical(0x01)) && a.matches(&logical(0xFF))
        );
        // Cluster logical: cluster 2, member bit 1.
        let _ = a.mmio_write(0xE0, 0x0FFF_FFFF, 0);
        let _ = a.mmio_write(0xD0, 0x2200_0000, 0);
        assert!(
            a.matches(&logical(0x23)) && !a.matches(&logical(0x13)) && !a.matches(&logical(0x24))
        );
        // Shorthands.
        assert!(
            a.matches(&Destination::SelfOnly { source: 1 })
                && !a.matches(&Destination::SelfOnly { source: 0 })
        );
        assert!(a.matches(&Destination::AllIncludingSelf));
        assert!(!a.matches(&Destination::AllExcludingSelf { source: 1 }));
        assert!(a.matches(&Destination::AllExcludingSelf { source: 0 }));
        // x2APIC: physical by 32-bit ID, cluster logical.
        let mut b = enabled(0x31);
        to_x2apic(&mut b);
        let x2phys = |id| Destination::Physical { id, format: IdFormat::X2apic };
        let x2logical = |mda| Destination::Logical { mda, format: IdFormat::X2apic };
        assert!(
            b.matches(&x2phys(0x31)) && !b.matches(&x2phys(0x131)) && b.matches(&x2phys(u32::MAX))
        );
        assert!(!b.matches(&x2phys(0xFF)), "0xFF is not broadcast in x2APIC form");
        assert!(b.matches(&phys(0xFF)), "but is from an IOAPIC");
        assert!(b.matches(&x2logical(0x0003_0002)) && !b.matches(&x2logical(0x0002_0002)));
        assert!(!b.matches(&x2logical(0x0003_0001)) && b.matches(&x2logical(u32::MAX)));
        // A vCPU whose ID does not fit 8 bits can be started before it switches.
        let c = VLapic::new(300, config(false));
        assert!(c.matches(&x2phys(300)) && c.matches(&phys(300 & 0xFF)));
        // A globally disabled APIC takes nothing.
        let _ = a.msr_write(MSR_IA32_APIC_BASE, XAPIC_DEFAULT_BASE, 0);
        assert!(!a.matches(&Destination::AllIncludingSelf));
    }

    #[test]
    fn local_interrupts() {
        let mut l = VLapic::new(0, config(true));
        // Globally disabled: LINT0 is INTR, LINT1 is NMI.
        let _ = l.msr_write(MSR_IA32_APIC_BASE, XAPIC_DEFAULT_BASE, 0);
        assert!(l.accepts_pic_interrupts());
        assert_eq!(l.raise_lvt(Lvt::Lint0), LocalDelivery::ExtInt);
        assert_eq!(l.raise_lvt(Lvt::Lint1), LocalDelivery::Delivered);
        assert!(l.take_nmi());
        let _ = l.msr_write(MSR_IA32_APIC_BASE, XAPIC_DEFAULT_BASE | APIC_BASE_EN, 0);
        assert!(!l.accepts_pic_interrupts());
        assert_eq!(l.raise_lvt(Lvt::Lint0), LocalDelivery::Dropped);
        // Virtual wire: LINT0 ExtINT, LINT1 NMI.
        let _ = l.mmio_write(0xF0, 0x1FF, 0);
        let _ = l.mmio_write(0x350, 0x700, 0);
        let _ = l.mmio_write(0x360, 0x400, 0);
        assert!(l.accepts_pic_interrupts());
        assert_eq!(l.raise_lvt(Lvt::Lint0), LocalDelivery::ExtInt);
        assert_eq!(l.raise_lvt(Lvt::Lint1), LocalDelivery::Delivered);
        assert!(l.take_nmi());
        // Fixed perfmon interrupt; the entry masks itself.
        let _ = l.mmio_write(0x340, 0x55, 0);
        assert_eq!(l.raise_lvt(Lvt::PerfMon), LocalDelivery::Delivered);
        assert_eq!(l.pending_interrupt(), Some(0x55));
        assert_eq!(l.lvt(Lvt::PerfMon), 0x55 | LVT_MASKED);
        assert_eq!(l.raise_lvt(Lvt::PerfMon), LocalDelivery::Dropped);
        // Level-triggered fixed LINT sets TMR.
        let _ = l.mmio_write(0x350, 0x8066, 0);
        assert_eq!(l.raise_lvt(Lvt::Lint0), LocalDelivery::Delivered);
        assert!(l.tmr.contains(0x66));
        let _ = l.mmio_write(0x330, 0x200, 0);
        assert_eq!(l.raise_lvt(Lvt::Thermal), LocalDelivery::Smi);
    }

    /// Random accesses at random offsets, MSRs, values and times (including
    /// going backwards and the extremes) must never panic, and what the
    /// model reports must stay consistent.
    #[test]
    fn fuzz_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let interesting_times = [0, 1, u64::MAX - 1, u64::MAX, 1 << 63];
        for lapic_no in 0..16u32 {
            let id = if lapic_no % 4 == 3 { rand() as u32 } else { lapic_no };
            let tsc_hz = [0, 1, TSC_HZ, u64::MAX][lapic_no as usize % 4];
            let bits = (rand() % 70) as u8;
            let cfg = VLapicConfig {
                tsc_hz,
                bsp: rand() & 1 == 0,
                x2apic_supported: rand() & 3 != 0,
                max_phys_addr_bits: bits,
            };
            let mut l = VLapic::new(id, cfg);
            let mut now = 0u64;
            for _ in 0..20_000 {
                let r = rand();
                now = match r % 64 {
                    0 => interesting_times[(r >> 8) as usize % interesting_times.len()],
                    1 => now.wrapping_sub(r >> 40),
                    _ => now.saturating_add((r >> 32) % 5000),
                };
                let value = match (r >> 6) % 4 {
                    0 => rand() & 0xFFFF_FFFF,
                    1 => rand(),
                    2 => rand() & 0x1FF,
                    _ => [0, 0x1FF, 0x30 | (1 << 17), 0x40 | (2 << 17), 0xB, 1, 0xFEE0_0C00]
                        [(r >> 10) as usize % 7],
                };
                match (r >> 3) % 14 {
                    0 | 1 => {
                        let off = if r & (1 << 20) != 0 {
                            ((rand() & 0x3F) << 4) as u32
                        } else {
                            rand() as u32
                        };
                        let _ = l.mmio_read(off, now);
                    }
                    2..=4 => {
                        let off = if r & (1 << 20) != 0 {
                            ((rand() & 0x3F) << 4) as u32
                        } else {
                            rand() as u32
                        };
                        let _ = l.mmio_write(off, value as u32, now);
                    }
                    5 | 6 => {
                        let msr = [0x1B, 0x6E0, 0x800 + (rand() & 0xFF) as u32, rand() as u32]
                            [(r >> 12) as usize % 4];
                        let _ = l.msr_read(msr, now);
                    }
                    7..=9 => {
                        let msr = [0x1B, 0x6E0, 0x800 + (rand() & 0xFF) as u32, rand() as u32]
                            [(r >> 12) as usize % 4];
                        let _ = l.msr_write(msr, value, now);
                    }
                    10 => {
                        let _ = l.tick(now);
                        let _ = l.next_timer_deadline();
                    }
                    11 => {
                        if let Some(v) = l.pending_interrupt() {
                            assert!(v >> 4 > l.ppr() >> 4);
                            assert!(l.ack(v));
                        }
                        if r & (1 << 30) != 0 {
                            let _ = l.eoi();
                        }
                    }
                    12 => {
                        let mode = [
                            DeliveryMode::Fixed,
                            DeliveryMode::LowestPriority,
                            DeliveryMode::Smi,
                            DeliveryMode::Nmi,
                            DeliveryMode::Init,
                            DeliveryMode::Startup,
                        ][(r >> 12) as usize % 6];
                        let trigger =
                            if r & (1 << 16) != 0 { TriggerMode::Level } else { TriggerMode::Edge };
                        let _ = l.deliver(mode, value as u8, trigger);
                        let lvt = [
                            Lvt::Timer,
                            Lvt::Thermal,
                            Lvt::PerfMon,
                            Lvt::Lint0,
                            Lvt::Lint1,
                            Lvt::Error,
                            Lvt::Cmci,
                        ][(r >> 20) as usize % 7];
                        let _ = l.raise_lvt(lvt);
                    }
                    _ => {
                        let format =
                            if r & (1 << 12) != 0 { IdFormat::X2apic } else { IdFormat::Xapic };
                        let dest = [
                            Destination::Physical { id: value as u32, format },
                            Destination::Logical { mda: value as u32, format },
                            Destination::SelfOnly { source: value as u32 },
                            Destination::AllIncludingSelf,
                            Destination::AllExcludingSelf { source: value as u32 },
                        ][(r >> 13) as usize % 5];
                        let _ = l.matches(&dest);
                        let _ =
                            (l.take_init(), l.take_sipi(), l.take_nmi(), l.arbitration_priority());
                        let _ = (l.accepts_pic_interrupts(), l.mmio_base(), l.mode());
                    }
                }
                // Invariants: the count never exceeds the initial count, and
                // a masked timer asks for no tick.
                if l.mode() == ApicMode::Xapic {
                    assert!(l.mmio_read(0x390, now) <= l.mmio_read(0x380, now));
                }
                if l.lvt(Lvt::Timer) & LVT_MASKED != 0 {
                    assert_eq!(l.next_timer_deadline(), None);
                }
            }
        }
    }
}
