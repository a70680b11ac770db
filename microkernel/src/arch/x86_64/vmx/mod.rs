//! Intel VMX (SDM Vol. 3C, chapters 24-29): detection and VMXON on every
//! CPU, the VMCS of a vCPU, and one guest entry (`run`). The exit policy is
//! in `kernel::vm`, shared with SVM.
//!
//! Guests run as "unrestricted guests" (real mode and unpaged protected mode
//! run natively) on EPT with a VPID. CR0.NE/CR4.VMXE are owned by the host
//! (guest/host masks with read shadows), so guest writes that touch them exit
//! and are emulated. The SYSCALL MSRs, which VMX does not switch, travel in
//! the VM-entry/VM-exit MSR-load areas.

use super::{cpu, gdt, percpu, PHYS_OFFSET};
use abi::{Segment, VcpuRun};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

core::arch::global_asm!(include_str!("run.s"));

unsafe extern "C" {
    fn vmx_vcpu_run(gprs: *mut [u64; 16], launched: u64) -> u64;
}

const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_VMX_BASIC: u32 = 0x480;
const IA32_VMX_PINBASED: u32 = 0x481;
const IA32_VMX_PROCBASED: u32 = 0x482;
const IA32_VMX_EXIT: u32 = 0x483;
const IA32_VMX_ENTRY: u32 = 0x484;
const IA32_VMX_CR0_FIXED0: u32 = 0x486;
const IA32_VMX_CR0_FIXED1: u32 = 0x487;
const IA32_VMX_CR4_FIXED0: u32 = 0x488;
const IA32_VMX_CR4_FIXED1: u32 = 0x489;
const IA32_VMX_PROCBASED2: u32 = 0x48b;
const IA32_VMX_MISC: u32 = 0x485;
const IA32_VMX_TRUE_PINBASED: u32 = 0x48d;
const IA32_VMX_TRUE_PROCBASED: u32 = 0x48e;
const IA32_VMX_TRUE_EXIT: u32 = 0x48f;
const IA32_VMX_TRUE_ENTRY: u32 = 0x490;

fn rdmsr(m: u32) -> u64 {
    // SAFETY: only VMX capability MSRs, read after CPUID said VMX exists.
    unsafe { x86::msr::rdmsr(m) }
}

/// VMCS field encodings (SDM Vol. 3C Appendix B).
#[allow(dead_code)] // a register table: not every field is used yet
pub mod field {
    pub const VPID: u64 = 0x0000;
    pub const PREEMPTION_TIMER_VALUE: u64 = 0x482E;
    pub const GUEST_ES_SELECTOR: u64 = 0x0800;
    pub const HOST_ES_SELECTOR: u64 = 0x0c00;
    pub const HOST_CS_SELECTOR: u64 = 0x0c02;
    pub const HOST_SS_SELECTOR: u64 = 0x0c04;
    pub const HOST_DS_SELECTOR: u64 = 0x0c06;
    pub const HOST_FS_SELECTOR: u64 = 0x0c08;
    pub const HOST_GS_SELECTOR: u64 = 0x0c0a;
    pub const HOST_TR_SELECTOR: u64 = 0x0c0c;
    pub const IO_BITMAP_A: u64 = 0x2000;
    pub const IO_BITMAP_B: u64 = 0x2002;
    pub const MSR_BITMAP: u64 = 0x2004;
    pub const EXIT_MSR_STORE: u64 = 0x2006;
    pub const EXIT_MSR_LOAD: u64 = 0x2008;
    pub const ENTRY_MSR_LOAD: u64 = 0x200a;
    pub const TSC_OFFSET: u64 = 0x2010;
    pub const EPT_POINTER: u64 = 0x201a;
    pub const GUEST_PHYSICAL_ADDRESS: u64 = 0x2400;
    pub const VMCS_LINK_POINTER: u64 = 0x2800;
    pub const GUEST_PAT: u64 = 0x2804;
    pub const GUEST_EFER: u64 = 0x2806;
    pub const HOST_PAT: u64 = 0x2c00;
    pub const HOST_EFER: u64 = 0x2c02;
    pub const PIN_CONTROLS: u64 = 0x4000;
    pub const PROC_CONTROLS: u64 = 0x4002;
    pub const EXCEPTION_BITMAP: u64 = 0x4004;
    pub const CR3_TARGET_COUNT: u64 = 0x400a;
    pub const EXIT_CONTROLS: u64 = 0x400c;
    pub const EXIT_MSR_STORE_COUNT: u64 = 0x400e;
    pub const EXIT_MSR_LOAD_COUNT: u64 = 0x4010;
    pub const ENTRY_CONTROLS: u64 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u64 = 0x4014;
    pub const ENTRY_INTR_INFO: u64 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR: u64 = 0x4018;
    pub const ENTRY_INSTRUCTION_LEN: u64 = 0x401a;
    pub const PROC_CONTROLS2: u64 = 0x401e;
    pub const INSTRUCTION_ERROR: u64 = 0x4400;
    pub const EXIT_REASON: u64 = 0x4402;
    pub const EXIT_INTR_INFO: u64 = 0x4404;
    pub const EXIT_INTR_ERROR: u64 = 0x4406;
    pub const IDT_VECTORING_INFO: u64 = 0x4408;
    pub const IDT_VECTORING_ERROR: u64 = 0x440a;
    pub const EXIT_INSTRUCTION_LEN: u64 = 0x440c;
    pub const GUEST_ES_LIMIT: u64 = 0x4800;
    pub const GUEST_GDTR_LIMIT: u64 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u64 = 0x4812;
    pub const GUEST_ES_AR: u64 = 0x4814;
    pub const GUEST_INTERRUPTIBILITY: u64 = 0x4824;
    pub const GUEST_ACTIVITY: u64 = 0x4826;
    pub const GUEST_SYSENTER_CS: u64 = 0x482a;
    pub const HOST_SYSENTER_CS: u64 = 0x4c00;
    pub const CR0_MASK: u64 = 0x6000;
    pub const CR4_MASK: u64 = 0x6002;
    pub const CR0_SHADOW: u64 = 0x6004;
    pub const CR4_SHADOW: u64 = 0x6006;
    pub const EXIT_QUALIFICATION: u64 = 0x6400;
    pub const GUEST_CR0: u64 = 0x6800;
    pub const GUEST_CR3: u64 = 0x6802;
    pub const GUEST_CR4: u64 = 0x6804;
    pub const GUEST_ES_BASE: u64 = 0x6806;
    pub const GUEST_GDTR_BASE: u64 = 0x6816;
    pub const GUEST_IDTR_BASE: u64 = 0x6818;
    pub const GUEST_DR7: u64 = 0x681a;
    pub const GUEST_RSP: u64 = 0x681c;
    pub const GUEST_RIP: u64 = 0x681e;
    pub const GUEST_RFLAGS: u64 = 0x6820;
    pub const GUEST_SYSENTER_ESP: u64 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u64 = 0x6826;
    pub const HOST_CR0: u64 = 0x6c00;
    pub const HOST_CR3: u64 = 0x6c02;
    pub const HOST_CR4: u64 = 0x6c04;
    pub const HOST_FS_BASE: u64 = 0x6c06;
    pub const HOST_GS_BASE: u64 = 0x6c08;
    pub const HOST_TR_BASE: u64 = 0x6c0a;
    pub const HOST_GDTR_BASE: u64 = 0x6c0c;
    pub const HOST_IDTR_BASE: u64 = 0x6c0e;
    pub const HOST_SYSENTER_ESP: u64 = 0x6c10;
    pub const HOST_SYSENTER_EIP: u64 = 0x6c12;
}

/// Basic exit reasons (SDM Vol. 3C Appendix C).
#[allow(dead_code)]
pub mod exit {
    pub const EXCEPTION_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const SIPI: u32 = 4;
    pub const CPUID: u32 = 10;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const VMCALL: u32 = 18;
    pub const CR_ACCESS: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const INVALID_GUEST_STATE: u32 = 33;
    pub const MSR_LOADING: u32 = 34;
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const PAUSE: u32 = 40;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const XSETBV: u32 = 55;
}

#[derive(Clone, Copy, Debug)]
pub struct Info {
    pub ept: bool,
    pub vpid: bool,
    pub unrestricted: bool,
    /// The VMX-preemption timer counts down once every 2^rate TSC ticks
    /// (SDM Vol. 3C §26.5.1); `None` without the timer.
    pub preemption_rate: Option<u8>,
    revision: u32,
    true_controls: bool,
}

fn allowed(msr: u32, want: u32, need: u32) -> Option<u32> {
    let caps = rdmsr(msr);
    let (must, may) = (caps as u32, (caps >> 32) as u32);
    let v = (want | need | must) & may;
    (v & need == need).then_some(v)
}

pub fn detect() -> Option<Info> {
    let id = x86::cpuid::CpuId::new();
    if !id.get_feature_info()?.has_vmx() {
        return None;
    }
    let fc = rdmsr(IA32_FEATURE_CONTROL);
    if fc & 1 != 0 && fc & 4 == 0 {
        log::warn!("vmx: disabled by the firmware (IA32_FEATURE_CONTROL locked)");
        return None;
    }
    let basic = rdmsr(IA32_VMX_BASIC);
    let proc = rdmsr(IA32_VMX_PROCBASED);
    if (proc >> 32) & (1 << 31) == 0 {
        return None; // no secondary controls: no EPT
    }
    let proc2 = rdmsr(IA32_VMX_PROCBASED2) >> 32;
    let pin_may = rdmsr(if basic & (1 << 55) != 0 { IA32_VMX_TRUE_PINBASED } else { IA32_VMX_PINBASED }) >> 32;
    let preemption_rate = (pin_may & (1 << 6) != 0).then(|| (rdmsr(IA32_VMX_MISC) & 0x1f) as u8);
    Some(Info {
        preemption_rate,
        ept: proc2 & (1 << 1) != 0,
        vpid: proc2 & (1 << 5) != 0,
        unrestricted: proc2 & (1 << 7) != 0,
        revision: basic as u32 & 0x7fff_ffff,
        true_controls: basic & (1 << 55) != 0,
    })
}

static INFO: spin::Once<Info> = spin::Once::new();
static VMXON_PA: [AtomicU64; super::MAX_CPUS] = [const { AtomicU64::new(0) }; super::MAX_CPUS];

/// VMXON on this CPU with the zeroed page given.
pub fn enable_cpu(cpu: usize, info: Info, vmxon_pa: u64) -> bool {
    INFO.call_once(|| info);
    // SAFETY: VMX exists (detect); the feature-control MSR is either
    // unlocked (we enable VMX outside SMX and lock it, as firmware would) or
    // already allows it; CR0/CR4 get the bits VMX operation requires
    // (SDM Vol. 3C §24.7-24.8); the VMXON region is a kernel page holding the
    // revision identifier, used for nothing else.
    unsafe {
        let fc = rdmsr(IA32_FEATURE_CONTROL);
        if fc & 1 == 0 {
            x86::msr::wrmsr(IA32_FEATURE_CONTROL, fc | 1 | 4);
        }
        let cr0 = (x86::controlregs::cr0().bits() as u64 | rdmsr(IA32_VMX_CR0_FIXED0)) & rdmsr(IA32_VMX_CR0_FIXED1);
        x86::controlregs::cr0_write(x86::controlregs::Cr0::from_bits_truncate(cr0 as usize));
        let cr4 = (x86::controlregs::cr4().bits() as u64 | (1 << 13) | rdmsr(IA32_VMX_CR4_FIXED0)) & rdmsr(IA32_VMX_CR4_FIXED1);
        x86::controlregs::cr4_write(x86::controlregs::Cr4::from_bits_truncate(cr4 as usize));
        ((vmxon_pa + PHYS_OFFSET) as *mut u32).write_volatile(info.revision);
        let ok: u8;
        asm!("vmxon [{pa}]", "setna {ok}", pa = in(reg) &vmxon_pa, ok = out(reg_byte) ok);
        if ok != 0 {
            log::error!("vmx: VMXON failed on CPU {cpu}");
            return false;
        }
    }
    VMXON_PA[cpu].store(vmxon_pa, Ordering::Relaxed);
    true
}

pub fn enabled_on(cpu: usize) -> bool {
    VMXON_PA[cpu].load(Ordering::Relaxed) != 0
}

pub fn vmread(f: u64) -> u64 {
    let v: u64;
    // SAFETY: a VMCS is current on this CPU (the caller made it so); VMREAD
    // of a valid field encoding has no other effect.
    unsafe { asm!("vmread {v}, {f}", f = in(reg) f, v = out(reg) v, options(nostack)) };
    v
}

pub fn vmwrite(f: u64, v: u64) {
    // SAFETY: as vmread; every field written is a valid encoding and values
    // the hardware refuses surface as a failed VM entry, not a host fault.
    unsafe { asm!("vmwrite {f}, {v}", f = in(reg) f, v = in(reg) v, options(nostack)) };
}

/// SVM-style segment attributes (the ABI's) to VMX access rights and back.
fn to_ar(a: u16) -> u64 {
    let ar = u64::from(a & 0xff) | (u64::from(a & 0xf00) << 4);
    if a & 0x80 == 0 { ar | (1 << 16) } else { ar }
}

fn from_ar(ar: u64) -> u16 {
    if ar & (1 << 16) != 0 {
        return 0;
    }
    ((ar & 0xff) | ((ar >> 4) & 0xf00)) as u16
}

/// MSRs VMX does not switch, carried in the MSR-load areas.
pub const SWITCHED_MSRS: [u32; 5] = [0xc000_0081, 0xc000_0082, 0xc000_0084, 0xc000_0102, 0xc000_0083];

/// One vCPU's VMCS plus its MSR areas (guest values stored and loaded;
/// host values loaded on exit).
pub struct Vmcs {
    pub pa: u64,
    /// A page: [0..] guest MSR area (entry load + exit store), [2048..] host
    /// MSR area (exit load).
    pub msr_area_pa: u64,
    pub launched: bool,
    pub cpu: usize,
    /// The guest's CR2, which the VMCS does not hold (SDM Vol. 3C §27.3,
    /// §28.3): loaded into the CPU before each entry and read back after
    /// each exit, so an injected #PF carries the VMM's CR2 and no guest
    /// sees another's.
    pub guest_cr2: u64,
}

const CR0_OWNED: u64 = (1 << 5) | (1 << 29) | (1 << 30); // NE, NW, CD
const CR4_OWNED: u64 = 1 << 13; // VMXE

impl Vmcs {
    fn msr_entry(&self, host: bool, i: usize) -> *mut u64 {
        let base = self.msr_area_pa + PHYS_OFFSET + if host { 2048 } else { 0 };
        (base + 16 * i as u64) as *mut u64
    }

    /// Makes this VMCS current on this CPU (and initialises it the first
    /// time).
    pub fn load(&mut self, cpu: usize) -> bool {
        // SAFETY: VMXON is on (enabled_on); the VMCS page is the vCPU's,
        // holding the revision id; VMPTRLD only makes it current.
        unsafe {
            let pa = self.pa;
            let ok: u8;
            asm!("vmptrld [{pa}]", "setna {ok}", pa = in(reg) &pa, ok = out(reg_byte) ok);
            if ok != 0 {
                return false;
            }
        }
        self.cpu = cpu;
        true
    }

    /// Creates the VMCS: controls, host state, reset guest state (real mode
    /// at F000:FFF0, as after INIT; the VMM overrides it through the run page).
    pub fn init(&mut self, cpu: usize, ept_root: u64, vpid: u16, msr_bitmap_pa: u64, io_bitmap_pa: u64) -> bool {
        use field::*;
        let Some(info) = INFO.get().copied() else { return false };
        // SAFETY: the VMCS page is fresh and the vCPU's; VMCLEAR initialises it.
        unsafe {
            ((self.pa + PHYS_OFFSET) as *mut u32).write_volatile(info.revision);
            let pa = self.pa;
            asm!("vmclear [{pa}]", pa = in(reg) &pa);
        }
        if !self.load(cpu) {
            return false;
        }
        let (pin_msr, proc_msr, exit_msr, entry_msr) = if info.true_controls {
            (IA32_VMX_TRUE_PINBASED, IA32_VMX_TRUE_PROCBASED, IA32_VMX_TRUE_EXIT, IA32_VMX_TRUE_ENTRY)
        } else {
            (IA32_VMX_PINBASED, IA32_VMX_PROCBASED, IA32_VMX_EXIT, IA32_VMX_ENTRY)
        };
        // External interrupts and NMIs exit (the host keeps control); the
        // VMX-preemption timer, where there is one, bounds each stay in
        // the guest as well (a backstop for the scheduler's time slice).
        // Virtual NMIs: the guest's IRET ends the blocking an injected NMI
        // sets (with NMI exiting alone it would last until the next exit;
        // SDM Vol. 3C §26.6.1).
        let Some(pin) = allowed(pin_msr, (1 << 5) | (1 << 6), 1 | (1 << 3)) else { return false };
        // HLT, unconditional I/O... no: I/O bitmaps, MSR bitmaps, secondary.
        let proc_need = (1 << 7) | (1 << 25) | (1 << 28) | (1 << 31);
        let Some(proc) = allowed(proc_msr, 0, proc_need) else { return false };
        // EPT, VPID (if offered), unrestricted guest, RDTSCP passthrough.
        let want2 = (1 << 3) | if info.vpid { 1 << 5 } else { 0 };
        let Some(proc2) = allowed(IA32_VMX_PROCBASED2, want2, (1 << 1) | (1 << 7)) else { return false };
        // 64-bit host, save/load PAT and EFER.
        let Some(exitc) = allowed(exit_msr, 0, (1 << 9) | (1 << 18) | (1 << 19) | (1 << 20) | (1 << 21)) else {
            return false;
        };
        let Some(entryc) = allowed(entry_msr, 0, (1 << 14) | (1 << 15)) else { return false };
        vmwrite(PIN_CONTROLS, u64::from(pin));
        vmwrite(PROC_CONTROLS, u64::from(proc));
        vmwrite(PROC_CONTROLS2, u64::from(proc2));
        vmwrite(EXIT_CONTROLS, u64::from(exitc));
        vmwrite(ENTRY_CONTROLS, u64::from(entryc));
        // #MC goes to the host; #DB and #AC exit and are reflected (see
        // svm::Vmcb::init: no endless delivery loop without an exit).
        vmwrite(EXCEPTION_BITMAP, (1 << 18) | (1 << 1) | (1 << 17));
        vmwrite(CR3_TARGET_COUNT, 0);
        vmwrite(IO_BITMAP_A, io_bitmap_pa);
        vmwrite(IO_BITMAP_B, io_bitmap_pa + 4096);
        vmwrite(MSR_BITMAP, msr_bitmap_pa);
        vmwrite(EPT_POINTER, ept_root | (3 << 3) | 6);
        if info.vpid {
            vmwrite(VPID, u64::from(vpid));
        }
        vmwrite(VMCS_LINK_POINTER, u64::MAX);
        vmwrite(TSC_OFFSET, 0);
        vmwrite(CR0_MASK, CR0_OWNED);
        vmwrite(CR4_MASK, CR4_OWNED);
        // The SYSCALL MSRs: guest values loaded on entry and stored on exit,
        // host values loaded on exit.
        for (i, &m) in SWITCHED_MSRS.iter().enumerate() {
            // SAFETY: the MSR area page is the vCPU's, in the direct map; the
            // entries are (index, reserved, value) as SDM §25.7.2 lays out.
            unsafe {
                self.msr_entry(false, i).write_volatile(u64::from(m));
                self.msr_entry(false, i).add(1).write_volatile(0);
                self.msr_entry(true, i).write_volatile(u64::from(m));
                self.msr_entry(true, i).add(1).write_volatile(x86::msr::rdmsr(m));
            }
        }
        let n = SWITCHED_MSRS.len() as u64;
        vmwrite(ENTRY_MSR_LOAD, self.msr_area_pa);
        vmwrite(ENTRY_MSR_LOAD_COUNT, n);
        vmwrite(EXIT_MSR_STORE, self.msr_area_pa);
        vmwrite(EXIT_MSR_STORE_COUNT, n);
        vmwrite(EXIT_MSR_LOAD, self.msr_area_pa + 2048);
        vmwrite(EXIT_MSR_LOAD_COUNT, n);
        self.host_state(cpu);
        // Guest: real mode at F000:FFF0.
        let code = Segment { selector: 0xf000, attrib: 0x9b, limit: 0xffff, base: 0xffff_0000 };
        let data = Segment { selector: 0, attrib: 0x93, limit: 0xffff, base: 0 };
        for i in 0..6 {
            self.set_segment(i, if i == 1 { code } else { data });
        }
        self.set_segment(6, Segment { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 });
        self.set_segment(7, Segment { selector: 0, attrib: 0x8b, limit: 0xffff, base: 0 });
        vmwrite(GUEST_GDTR_BASE, 0);
        vmwrite(GUEST_GDTR_LIMIT, 0xffff);
        vmwrite(GUEST_IDTR_BASE, 0);
        vmwrite(GUEST_IDTR_LIMIT, 0xffff);
        self.set_cr0(0x10);
        self.set_cr4(0);
        vmwrite(GUEST_CR3, 0);
        vmwrite(GUEST_DR7, 0x400);
        vmwrite(GUEST_RSP, 0);
        vmwrite(GUEST_RIP, 0xfff0);
        vmwrite(GUEST_RFLAGS, 2);
        vmwrite(GUEST_EFER, 0);
        vmwrite(GUEST_PAT, 0x0007_0406_0007_0406);
        vmwrite(GUEST_SYSENTER_CS, 0);
        vmwrite(GUEST_SYSENTER_ESP, 0);
        vmwrite(GUEST_SYSENTER_EIP, 0);
        vmwrite(GUEST_INTERRUPTIBILITY, 0);
        vmwrite(GUEST_ACTIVITY, 0);
        vmwrite(ENTRY_INTR_INFO, 0);
        true
    }

    /// Host state for exits on `cpu` (its GDT, TSS, per-CPU GS).
    pub fn host_state(&mut self, cpu: usize) {
        use field::*;
        // SAFETY: reading control registers and MSRs has no side effect.
        let (cr0, cr3, cr4, efer, pat) = unsafe {
            (
                x86::controlregs::cr0().bits() as u64,
                x86::controlregs::cr3(),
                x86::controlregs::cr4().bits() as u64,
                x86::msr::rdmsr(0xc000_0080),
                x86::msr::rdmsr(0x277),
            )
        };
        vmwrite(HOST_CR0, cr0);
        vmwrite(HOST_CR3, cr3);
        vmwrite(HOST_CR4, cr4);
        vmwrite(HOST_ES_SELECTOR, u64::from(gdt::KERNEL_DS));
        vmwrite(HOST_CS_SELECTOR, u64::from(gdt::KERNEL_CS));
        vmwrite(HOST_SS_SELECTOR, u64::from(gdt::KERNEL_DS));
        vmwrite(HOST_DS_SELECTOR, u64::from(gdt::KERNEL_DS));
        vmwrite(HOST_FS_SELECTOR, 0);
        vmwrite(HOST_GS_SELECTOR, 0);
        vmwrite(HOST_TR_SELECTOR, u64::from(gdt::TSS_SEL));
        vmwrite(HOST_FS_BASE, 0);
        vmwrite(HOST_GS_BASE, percpu::of(cpu).self_ptr);
        vmwrite(HOST_TR_BASE, gdt::tss_base(cpu));
        vmwrite(HOST_GDTR_BASE, gdt::gdt_base(cpu));
        vmwrite(HOST_IDTR_BASE, super::trap::idt_base());
        vmwrite(HOST_SYSENTER_CS, 0);
        vmwrite(HOST_SYSENTER_ESP, 0);
        vmwrite(HOST_SYSENTER_EIP, 0);
        vmwrite(HOST_EFER, efer);
        vmwrite(HOST_PAT, pat);
    }

    fn set_segment(&mut self, i: usize, s: Segment) {
        use field::*;
        vmwrite(GUEST_ES_SELECTOR + 2 * i as u64, u64::from(s.selector));
        vmwrite(GUEST_ES_LIMIT + 2 * i as u64, u64::from(s.limit));
        vmwrite(GUEST_ES_AR + 2 * i as u64, to_ar(s.attrib));
        vmwrite(GUEST_ES_BASE + 2 * i as u64, s.base);
    }

    fn segment(&self, i: usize) -> Segment {
        use field::*;
        Segment {
            selector: vmread(GUEST_ES_SELECTOR + 2 * i as u64) as u16,
            attrib: from_ar(vmread(GUEST_ES_AR + 2 * i as u64)),
            limit: vmread(GUEST_ES_LIMIT + 2 * i as u64) as u32,
            base: vmread(GUEST_ES_BASE + 2 * i as u64),
        }
    }

    /// Sets the guest's CR0 as the guest sees it; the real value keeps the
    /// bits VMX requires (SDM Vol. 3C §24.8; PE/PG free with unrestricted
    /// guests) and cache-disable off.
    pub fn set_cr0(&mut self, v: u64) {
        let fixed0 = rdmsr(IA32_VMX_CR0_FIXED0) & !((1 << 0) | (1 << 31));
        let real = ((v | fixed0) & rdmsr(IA32_VMX_CR0_FIXED1)) & !((1 << 29) | (1 << 30));
        field_write(field::GUEST_CR0, real);
        field_write(field::CR0_SHADOW, v);
        self.update_long_mode();
    }

    pub fn set_cr4(&mut self, v: u64) {
        let real = (v | rdmsr(IA32_VMX_CR4_FIXED0)) & rdmsr(IA32_VMX_CR4_FIXED1);
        field_write(field::GUEST_CR4, real);
        field_write(field::CR4_SHADOW, v);
    }

    /// EFER.LMA and the "IA-32e mode guest" entry control follow CR0.PG
    /// with EFER.LME (SDM Vol. 3A §10.8.5).
    pub fn update_long_mode(&mut self) {
        let efer = vmread(field::GUEST_EFER);
        let lma = efer & (1 << 8) != 0 && guest_cr0() & (1 << 31) != 0;
        let efer = if lma { efer | (1 << 10) } else { efer & !(1 << 10) };
        vmwrite(field::GUEST_EFER, efer);
        let entry = vmread(field::ENTRY_CONTROLS);
        vmwrite(field::ENTRY_CONTROLS, if lma { entry | (1 << 9) } else { entry & !(1 << 9) });
    }

    pub fn save(&self, run: &mut VcpuRun) {
        use field::*;
        run.gprs[4] = vmread(GUEST_RSP);
        run.rip = vmread(GUEST_RIP);
        run.rflags = vmread(GUEST_RFLAGS);
        run.cr0 = guest_cr0();
        run.cr3 = vmread(GUEST_CR3);
        run.cr4 = guest_cr4();
        run.efer = vmread(GUEST_EFER);
        run.cr2 = self.guest_cr2;
        for i in 0..8 {
            run.segments[i] = self.segment(i);
        }
        run.gdtr = Segment { selector: 0, attrib: 0, limit: vmread(GUEST_GDTR_LIMIT) as u32, base: vmread(GUEST_GDTR_BASE) };
        run.idtr = Segment { selector: 0, attrib: 0, limit: vmread(GUEST_IDTR_LIMIT) as u32, base: vmread(GUEST_IDTR_BASE) };
    }

    pub fn load_state(&mut self, run: &VcpuRun, what: u64) {
        use field::*;
        if what & abi::LOAD_GPRS != 0 {
            vmwrite(GUEST_RSP, run.gprs[4]);
            vmwrite(GUEST_RIP, run.rip);
            vmwrite(GUEST_RFLAGS, run.rflags | 2);
        } else if what & abi::LOAD_RIP != 0 {
            // RAX goes in from the vCPU's registers (`take_requests`).
            vmwrite(GUEST_RIP, run.rip);
        }
        if what & abi::LOAD_SYSTEM != 0 {
            self.guest_cr2 = run.cr2;
            vmwrite(GUEST_CR3, run.cr3);
            self.set_cr4(run.cr4);
            vmwrite(GUEST_EFER, run.efer & !(1 << 10));
            self.set_cr0(run.cr0);
            for i in 0..8 {
                self.set_segment(i, run.segments[i]);
            }
            vmwrite(GUEST_GDTR_BASE, run.gdtr.base);
            vmwrite(GUEST_GDTR_LIMIT, u64::from(run.gdtr.limit));
            vmwrite(GUEST_IDTR_BASE, run.idtr.base);
            vmwrite(GUEST_IDTR_LIMIT, u64::from(run.idtr.limit));
        }
    }
}

/// CR0 as the guest sees it: its own bits from the VMCS, the host-owned ones
/// from the read shadow (a MOV to CR0 that keeps the owned bits does not
/// exit, so the VMCS is the only truth).
pub fn guest_cr0() -> u64 {
    (vmread(field::GUEST_CR0) & !CR0_OWNED) | (vmread(field::CR0_SHADOW) & CR0_OWNED)
}

pub fn guest_cr4() -> u64 {
    (vmread(field::GUEST_CR4) & !CR4_OWNED) | (vmread(field::CR4_SHADOW) & CR4_OWNED)
}

fn field_write(f: u64, v: u64) {
    vmwrite(f, v)
}

/// Enters the guest once with this VMCS current. Returns false if the entry
/// itself failed (VM-instruction error in `field::INSTRUCTION_ERROR`).
pub fn run(vmcs: &mut Vmcs, gprs: &mut [u64; 16]) -> bool {
    // The guest's CR2 goes in by hand (the VMCS has none); interrupts are
    // off and nothing between here and the entry can fault.
    cpu::write_cr2(vmcs.guest_cr2);
    // SAFETY:
    // 1. The VMCS is current on this CPU and fully initialised (`init`),
    //    with host state for this CPU; HOST_RSP/RIP are set by the stub.
    // 2. Interrupts are off: an external interrupt in the guest exits
    //    (pin-based control) and stays pending in the local APIC until the
    //    kernel opens a window.
    // 3. `vmx_vcpu_run` saves and restores every host register it touches.
    let failed = unsafe { vmx_vcpu_run(gprs, u64::from(vmcs.launched)) };
    vmcs.guest_cr2 = cpu::read_cr2();
    if failed == 0 {
        vmcs.launched = true;
    }
    // A VM exit leaves TR's limit at 0x67 and GDTR's at 0xFFFF (SDM Vol.
    // 3C §28.5.2): reload both (TR's would cut off the TSS's I/O bitmap).
    gdt::reload_gdt(vmcs.cpu);
    gdt::reload_tr(vmcs.cpu);
    failed == 0
}

/// Sets DR6 for a #DB the kernel reflects into the guest: a #DB exit
/// leaves DR6 alone and reports its bits in the exit qualification (SDM
/// Vol. 3C §28.2.1: B0-B3, BD, BS, RTM), so they are merged into DR6's
/// fixed value before the injection, as the guest's handler expects.
pub fn set_guest_dr6(qualification: u64) {
    let dr6 = 0xffff_0ff0u64 | (qualification & 0x1_600f);
    // SAFETY: the kernel does not use the debug registers; DR6 is the
    // guest's while VMX guests run (it is not part of the VMCS).
    unsafe { asm!("mov dr6, {}", in(reg) dr6, options(nomem, nostack, preserves_flags)) }
}

/// VMCLEAR of a VMCS by address, on the CPU it is active on (the end of
/// each run): its data goes to memory and it is active nowhere, so another
/// CPU may load it next, or its page be freed.
pub fn clear(pa: u64) {
    // SAFETY: VMCLEAR only writes back and deactivates the VMCS at `pa`,
    // the caller's vCPU's, current (if at all) on this CPU only.
    unsafe { asm!("vmclear [{pa}]", pa = in(reg) &pa) }
}

/// Drops every EPT-derived translation (INVEPT all-context, SDM Vol. 3C
/// §29.4.3.1), after a guest's mappings shrank.
pub fn invept_all() {
    let descriptor = [0u64; 2];
    // SAFETY: INVEPT type 2 with a zero descriptor only invalidates cached
    // translations.
    unsafe { asm!("invept {t}, [{d}]", t = in(reg) 2u64, d = in(reg) &descriptor, options(nostack)) }
}
