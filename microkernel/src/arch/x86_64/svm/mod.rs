//! AMD SVM (AMD64 APM Vol. 2, chapter 15): detection and enabling on every
//! CPU, the VMCB of a vCPU, and one guest entry (`run`). The exit policy —
//! what the kernel finishes itself and what goes back to the VMM — is in
//! `kernel::vm`, shared with VMX.

use super::PHYS_OFFSET;
use abi::{Segment, VcpuRun};
use core::sync::atomic::{AtomicU64, Ordering};

core::arch::global_asm!(include_str!("run.s"));

unsafe extern "C" {
    fn svm_vcpu_run(vmcb_pa: u64, gprs: *mut [u64; 16], host_area_pa: u64);
}

const EFER: u32 = 0xc000_0080;
const EFER_SVME: u64 = 1 << 12;
const VM_HSAVE_PA: u32 = 0xc001_0117;

/// What the CPU offers (CPUID Fn8000_000A).
#[derive(Clone, Copy, Debug)]
pub struct Info {
    pub nested_paging: bool,
    pub nrip_save: bool,
    pub asids: u32,
}

pub fn detect() -> Option<Info> {
    let id = x86::cpuid::CpuId::new();
    let ext = id.get_extended_processor_and_feature_identifiers()?;
    if !ext.has_svm() {
        return None;
    }
    let r = x86::cpuid::cpuid!(0x8000_000a);
    Some(Info { nested_paging: r.edx & 1 != 0, nrip_save: r.edx & (1 << 3) != 0, asids: r.ebx })
}

/// Per-CPU host areas: [hsave, vmsave] physical addresses.
static HOST_AREAS: [[AtomicU64; 2]; super::MAX_CPUS] = [const { [AtomicU64::new(0), AtomicU64::new(0)] }; super::MAX_CPUS];

/// Turns SVM on for this CPU with the two zeroed host pages given.
pub fn enable_cpu(cpu: usize, hsave_pa: u64, host_vmsave_pa: u64) {
    // SAFETY: SVM is present (checked by the caller with `detect`); setting
    // EFER.SVME and the host save area is the architected enable sequence
    // (APM Vol. 2 §15.4); the pages are the kernel's, zeroed, and reserved
    // for this CPU for good.
    unsafe {
        x86::msr::wrmsr(EFER, x86::msr::rdmsr(EFER) | EFER_SVME);
        x86::msr::wrmsr(VM_HSAVE_PA, hsave_pa);
    }
    HOST_AREAS[cpu][0].store(hsave_pa, Ordering::Relaxed);
    HOST_AREAS[cpu][1].store(host_vmsave_pa, Ordering::Relaxed);
}

/// Whether the guest state in `vmcb` is the host's own as VMRUN saves it
/// to the host save area (RIP just after this kernel's VMRUN, a flat CS,
/// this CPU's CR3): no guest can be there, so the VMCB was overwritten.
#[inline(always)]
pub fn holds_host_state(vmcb: &Vmcb) -> bool {
    unsafe extern "C" {
        static svm_vcpu_run_resume: u8;
    }
    let resume = &raw const svm_vcpu_run_resume as u64;
    vmcb.r64(vmcb::RIP) == resume && vmcb.r64(vmcb::ES + 16 + 8) == 0 && vmcb.r64(vmcb::CR3) & 0x000f_ffff_ffff_f000 == super::cpu::read_cr3()
}

pub fn enabled_on(cpu: usize) -> bool {
    HOST_AREAS[cpu][0].load(Ordering::Relaxed) != 0
}

/// VMCB offsets (APM Vol. 2 Appendix B).
#[allow(dead_code)] // a register table: not every field is used yet
pub mod vmcb {
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE: usize = 0x040;
    pub const MSRPM_BASE: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    pub const INT_CTL: usize = 0x060;
    pub const INT_STATE: usize = 0x068;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const EXIT_INT_INFO: usize = 0x088;
    pub const NP_ENABLE: usize = 0x090;
    pub const EVENT_INJ: usize = 0x0a8;
    pub const N_CR3: usize = 0x0b0;
    pub const CLEAN: usize = 0x0c0;
    pub const NEXT_RIP: usize = 0x0c8;
    // State save area.
    pub const ES: usize = 0x400;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

/// Exceptions the kernel intercepts and gives straight back to the guest.
pub const DB_VECTOR: u8 = 1;
pub const AC_VECTOR: u8 = 17;

/// Exit codes (APM Vol. 2 Appendix C).
#[allow(dead_code)]
pub mod exit {
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INVD: u64 = 0x76;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const CPUID: u64 = 0x72;
    pub const IRET: u64 = 0x74;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const XSETBV: u64 = 0x8d;
    pub const CR8_WRITE: u64 = 0x18;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
}

/// The VMCB of one vCPU, reached through the direct map.
pub struct Vmcb {
    pub pa: u64,
}

impl Vmcb {
    fn ptr(&self, off: usize) -> *mut u8 {
        (self.pa + PHYS_OFFSET + off as u64) as *mut u8
    }
    pub fn r64(&self, off: usize) -> u64 {
        // SAFETY: the VMCB is a kernel-owned 4 KiB frame in the direct map;
        // every offset used is inside it and naturally aligned.
        unsafe { (self.ptr(off) as *const u64).read_volatile() }
    }
    pub fn w64(&mut self, off: usize, v: u64) {
        // SAFETY: as r64; only the vCPU's own thread touches its VMCB.
        unsafe { (self.ptr(off) as *mut u64).write_volatile(v) }
    }
    pub fn w32(&mut self, off: usize, v: u32) {
        // SAFETY: as r64.
        unsafe { (self.ptr(off) as *mut u32).write_volatile(v) }
    }
    pub fn w8(&mut self, off: usize, v: u8) {
        // SAFETY: as r64.
        unsafe { self.ptr(off).write_volatile(v) }
    }
    fn segment(&self, off: usize) -> Segment {
        // SAFETY: as r64; the VMCB segment layout is exactly `Segment`'s.
        unsafe { (self.ptr(off) as *const Segment).read_volatile() }
    }
    fn set_segment(&mut self, off: usize, s: Segment) {
        // SAFETY: as segment.
        unsafe { (self.ptr(off) as *mut Segment).write_volatile(s) }
    }

    /// Sets up intercepts, nested paging and the architectural reset state
    /// (real mode, as after INIT; the VMM overrides it through the run page).
    pub fn init(&mut self, iopm_pa: u64, msrpm_pa: u64, asid: u32, npt_root: u64) {
        use vmcb::*;
        // INTR, NMI, SMI, INIT, CPUID, INVD, INVLPGA, HLT, IOIO, MSR,
        // SHUTDOWN. INVD would drop dirty cache lines of host memory.
        let misc1: u32 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 18) | (1 << 22) | (1 << 24) | (1 << 26)
            | (1 << 27) | (1 << 28) | (1 << 31);
        // VMRUN, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, MONITOR,
        // MWAIT, XSETBV: the guest gets #UD or a checked XCR0.
        let misc2: u32 = 0x3f | (1 << 6) | (1 << 10) | (1 << 11) | (1 << 13);
        // CR8 writes only (bit 16 + 8): finished in the kernel as the CPU
        // would (V_TPR). QEMU 7.2's TCG, which runs our nested CI guests,
        // aborts on a guest CR8 write while V_IRQ is pending (it raises
        // the virtual interrupt without its global lock); OVMF writes CR8.
        self.w32(INTERCEPT_CR, 1 << (16 + 8));
        // #MC goes to the host; #DB and #AC exit and are reflected, so a
        // guest cannot wedge the CPU in an endless delivery loop of either
        // (CVE-2015-8104, CVE-2015-5307): each delivery is an exit.
        self.w32(INTERCEPT_EXCEPTIONS, (1 << 18) | (1 << DB_VECTOR) | (1 << AC_VECTOR));
        self.w32(INTERCEPT_MISC1, misc1);
        self.w32(INTERCEPT_MISC2, misc2);
        self.w64(IOPM_BASE, iopm_pa);
        self.w64(MSRPM_BASE, msrpm_pa);
        self.w64(TSC_OFFSET, 0);
        self.w32(ASID, asid);
        self.w8(TLB_CONTROL, 1); // flush this ASID on the first run
        self.w64(INT_CTL, 1 << 24); // V_INTR_MASKING: host IF governs host interrupts
        self.w64(NP_ENABLE, 1);
        self.w64(N_CR3, npt_root);
        self.w64(G_PAT, 0x0007_0406_0007_0406);
        self.w64(EFER, EFER_SVME);
        self.w64(CR0, 0x10);
        self.w64(DR6, 0xffff_0ff0);
        self.w64(DR7, 0x400);
        self.w64(RFLAGS, 2);
        self.w64(RIP, 0xfff0);
        let code = Segment { selector: 0xf000, attrib: 0x9b, limit: 0xffff, base: 0xffff_0000 };
        let data = Segment { selector: 0, attrib: 0x93, limit: 0xffff, base: 0 };
        for i in 0..6 {
            self.set_segment(ES + 16 * i, if i == 1 { code } else { data });
        }
        self.set_segment(LDTR, Segment { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 });
        self.set_segment(TR, Segment { selector: 0, attrib: 0x8b, limit: 0xffff, base: 0 });
        self.set_segment(GDTR, Segment { selector: 0, attrib: 0, limit: 0xffff, base: 0 });
        self.set_segment(IDTR, Segment { selector: 0, attrib: 0, limit: 0xffff, base: 0 });
    }

    /// Copies the guest state out to the run page (gprs are kept by the
    /// caller; RAX and RSP come from here).
    pub fn save(&self, run: &mut VcpuRun) {
        use vmcb::*;
        run.gprs[0] = self.r64(RAX);
        run.gprs[4] = self.r64(RSP);
        run.rip = self.r64(RIP);
        run.rflags = self.r64(RFLAGS);
        run.cr0 = self.r64(CR0);
        run.cr2 = self.r64(CR2);
        run.cr3 = self.r64(CR3);
        run.cr4 = self.r64(CR4);
        run.efer = self.r64(EFER) & !EFER_SVME;
        for i in 0..6 {
            run.segments[i] = self.segment(ES + 16 * i);
        }
        run.segments[6] = self.segment(LDTR);
        run.segments[7] = self.segment(TR);
        run.gdtr = self.segment(GDTR);
        run.idtr = self.segment(IDTR);
    }

    /// The guest state after an exit as the run page holds it, read in
    /// place (`RunPage::publish_exit_state`): as `save` puts it in a
    /// `VcpuRun`, with the registers of `gprs` (RAX and RSP too: the caller
    /// keeps them up to date from the VMCB).
    #[inline(always)]
    pub fn exit_state<'a>(&'a self, gprs: &'a [u64; 16]) -> crate::kernel::runpage::ExitState<'a> {
        use vmcb::*;
        const _: () = assert!(
            ES.is_multiple_of(8) && GDTR == ES + 6 * 16 && LDTR == GDTR + 16 && IDTR == LDTR + 16 && TR == IDTR + 16
                && core::mem::size_of::<Segment>() == 16
        );
        // SAFETY: ES..TR are ten 16-byte segments from ES, 8-aligned, inside
        // the VMCB's frame (as r64), in `Segment`'s layout (`segment`); the
        // vCPU's thread owns its VMCB and no VMRUN runs while `self` is
        // borrowed, so nothing writes them while the reference lives.
        let segments = unsafe { &*(self.ptr(ES) as *const [u64; 20]) };
        crate::kernel::runpage::ExitState {
            gprs,
            rip: self.r64(RIP),
            rflags: self.r64(RFLAGS),
            cr0: self.r64(CR0),
            cr2: self.r64(CR2),
            cr3: self.r64(CR3),
            cr4: self.r64(CR4),
            efer: self.r64(EFER) & !EFER_SVME,
            segments,
        }
    }

    /// Loads guest state from the run page, as `run.load_state` asks.
    /// Values the hardware would refuse are caught by VMRUN's consistency
    /// checks (an `InvalidState` exit), never by the host.
    /// Inline: the registers (the usual request after an exit) in four
    /// stores, the system state in a call of its own.
    #[inline(always)]
    pub fn load(&mut self, run: &VcpuRun, what: u64) {
        use vmcb::*;
        if what & abi::LOAD_GPRS != 0 {
            self.w64(RAX, run.gprs[0]);
            self.w64(RSP, run.gprs[4]);
            self.w64(RIP, run.rip);
            self.w64(RFLAGS, run.rflags | 2);
        } else if what & abi::LOAD_RIP != 0 {
            self.w64(RAX, run.gprs[0]);
            self.w64(RIP, run.rip);
        }
        if what & abi::LOAD_SYSTEM != 0 {
            self.load_system(run);
        }
    }

    #[inline(never)]
    fn load_system(&mut self, run: &VcpuRun) {
        use vmcb::*;
        self.w64(CR0, run.cr0);
        self.w64(CR2, run.cr2);
        self.w64(CR3, run.cr3);
        self.w64(CR4, run.cr4);
        self.w64(EFER, run.efer | EFER_SVME);
        for i in 0..6 {
            self.set_segment(ES + 16 * i, run.segments[i]);
        }
        self.set_segment(LDTR, run.segments[6]);
        self.set_segment(TR, run.segments[7]);
        self.set_segment(GDTR, run.gdtr);
        self.set_segment(IDTR, run.idtr);
        // CPL follows SS.DPL (APM Vol. 2 §15.5.1).
        let cpl = ((run.segments[2].attrib >> 5) & 3) as u8;
        self.w8(CPL, cpl);
        self.w32(CLEAN, 0);
    }
}

/// Enters the guest once. Must run with interrupts enabled under CLGI so a
/// host interrupt ends the run with an INTR exit (done here).
pub fn run(cpu: usize, vmcb: &Vmcb, gprs: &mut [u64; 16]) {
    let host_area = HOST_AREAS[cpu][1].load(Ordering::Relaxed);
    // SAFETY:
    // 1. SVM is enabled on this CPU (host save area set); the VMCB is
    //    initialised by `Vmcb::init` and owned by the calling vCPU thread.
    // 2. CLGI blocks host interrupts until STGI although IF is set for the
    //    VMRUN, so an interrupt becomes an INTR #VMEXIT; after STGI with IF
    //    clear it stays pending until the kernel opens interrupts.
    // 3. `svm_vcpu_run` saves and restores every host register it touches
    //    and the VMSAVE/VMLOAD host state.
    unsafe {
        core::arch::asm!("clgi", "sti", options(nomem, nostack));
        svm_vcpu_run(vmcb.pa, gprs, host_area);
        core::arch::asm!("cli", "stgi", options(nomem, nostack));
    }
}

/// Fills an MSR permission map (8 KiB): intercept everything except the
/// MSRs whose guest values the VMCB holds and VMLOAD/VMSAVE switch.
pub fn fill_msrpm(map: &mut [u8]) {
    map.fill(0xff);
    let mut pass = |msr: u32| {
        let (base, idx) = match msr {
            0..=0x1fff => (0, msr),
            0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
            0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
            _ => return,
        };
        let bit = idx as usize * 2;
        map[base + bit / 8] &= !(0b11 << (bit % 8));
    };
    for msr in [0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0100, 0xc000_0101, 0xc000_0102, 0x174, 0x175, 0x176, 0x277] {
        pass(msr);
    }
}
