//! Guests and vCPUs: the hypervisor half of the kernel, shared by the SVM
//! and (later) VMX backends.
//!
//! A guest is a guest-physical address space (nested page tables) that a
//! VMM maps frames into. A vCPU belongs to a guest and to the first thread
//! that runs it; `VcpuRun` enters the guest on that thread without holding
//! the kernel lock and returns only for exits the VMM must see (port I/O,
//! MMIO, unknown MSRs, HLT, shutdown, invalid state, a host interrupt).
//! CPUID (from the VMM's table), the plain-state MSRs, XSETBV and the SVM
//! instructions are finished here. Guest FPU state is saved per vCPU and a
//! clean state is loaded before anything else runs, so it never leaks.

use super::mem::{self, Tables, PAGE};
use super::runpage::RunPage;
use super::{cost, Kernel, KernelGuard, Obj};
use crate::arch::{self, percpu, svm, vmx};
use abi::{Error, Rights, VcpuExit, VcpuRun};
use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use kcore::pagetable::{self, Ept, Flags, Npt};
use kcore::slab::Id;
use kcore::vcpu_halt::{
    HltDecision, HltInputs, Latched, Look, NmiGate, OtherVcpu, hlt_decision, stop_with_interrupts_off, wakes_from_stop,
};
use kcore::vlapic::{DeliveryMode, Effect, VLapic, VLapicConfig};

/// The highest guest-physical address (exclusive) a guest may map.
pub const GPA_LIMIT: u64 = 1 << 46;

static BACKEND: spin::Once<Option<Hw>> = spin::Once::new();
/// Which backend `BACKEND` holds, as one byte (`KIND_*`) for the checks of
/// every `VcpuRun` (`enabled_on`, `is_vmx`): one load instead of the
/// `Once`'s state and the `Option`'s tag. Set with it, before other CPUs
/// start.
static KIND: AtomicU8 = AtomicU8::new(KIND_NONE);
const KIND_NONE: u8 = 0;
const KIND_SVM: u8 = 1;
const KIND_VMX: u8 = 2;
static IOPM_PA: AtomicU64 = AtomicU64::new(0);
static MSRPM_PA: AtomicU64 = AtomicU64::new(0);
/// VPIDs (VMX) of live vCPUs. A reused one is flushed at the vCPU's first
/// entry on each CPU (`kcore::vcpu_cpu`).
static ASIDS: spin::Mutex<kcore::idalloc::IdAllocator> = spin::Mutex::new(kcore::idalloc::IdAllocator::new());
/// SVM's ASIDs, per CPU by generation (`kcore::asid`): QEMU offers 16, so
/// vCPUs share them instead of holding one each. Only the CPU itself
/// takes its pool's lock.
static SVM_ASIDS: [spin::Mutex<kcore::asid::AsidPool>; arch::MAX_CPUS] =
    [const { spin::Mutex::new(kcore::asid::AsidPool::new()) }; arch::MAX_CPUS];

#[derive(Clone, Copy, Debug)]
pub enum Hw {
    Svm(svm::Info),
    Vmx(vmx::Info),
}

pub fn backend() -> Option<Hw> {
    BACKEND.get().copied().flatten()
}

/// Detects the virtualization extension (on the bootstrap CPU, before the
/// others start) and builds the shared permission maps.
pub fn init() {
    BACKEND.call_once(|| match svm::detect() {
        Some(info) if info.nested_paging => {
            let iopm = mem::alloc_frames(3)?;
            let msrpm = mem::alloc_frames(2)?;
            // SAFETY: freshly allocated, contiguous, kernel-owned frames in
            // the direct map, shared read-only by every VMCB afterwards.
            unsafe {
                core::ptr::write_bytes((iopm + arch::PHYS_OFFSET) as *mut u8, 0xff, 3 * PAGE as usize);
                let map = core::slice::from_raw_parts_mut((msrpm + arch::PHYS_OFFSET) as *mut u8, 2 * PAGE as usize);
                svm::fill_msrpm(map);
            }
            IOPM_PA.store(iopm, Ordering::Relaxed);
            MSRPM_PA.store(msrpm, Ordering::Relaxed);
            Some(Hw::Svm(info))
        }
        Some(_) => {
            log::warn!("vm: SVM without nested paging is not supported");
            None
        }
        None => match vmx::detect() {
            Some(info) if info.ept && info.unrestricted => {
                let (Some(io), Some(msrs)) = (mem::alloc_frames(2), mem::alloc_frame()) else { return None };
                // SAFETY: fresh kernel frames in the direct map, read by the
                // hardware through every VMCS afterwards.
                unsafe {
                    core::ptr::write_bytes((io + arch::PHYS_OFFSET) as *mut u8, 0xff, 2 * PAGE as usize);
                    let map = core::slice::from_raw_parts_mut((msrs + arch::PHYS_OFFSET) as *mut u8, PAGE as usize);
                    vmx_msr_bitmap(map);
                }
                IOPM_PA.store(io, Ordering::Relaxed);
                MSRPM_PA.store(msrs, Ordering::Relaxed);
                Some(Hw::Vmx(info))
            }
            Some(_) => {
                log::warn!("vm: VMX without EPT and unrestricted guests is not supported");
                None
            }
            None => None,
        },
    });
    KIND.store(
        match backend() {
            Some(Hw::Svm(_)) => KIND_SVM,
            Some(Hw::Vmx(_)) => KIND_VMX,
            None => KIND_NONE,
        },
        Ordering::Release,
    );
    match backend() {
        Some(Hw::Svm(i)) => log::info!(
            "vm: AMD SVM with nested paging, {} ASIDs, NRIP-save {}",
            i.asids,
            if i.nrip_save { "yes" } else { "no (instruction lengths decoded)" }
        ),
        Some(Hw::Vmx(i)) => log::info!("vm: Intel VMX with EPT, unrestricted guests, VPID {}", if i.vpid { "yes" } else { "no" }),
        None => log::info!("vm: no usable hardware virtualization; guests cannot run"),
    }
}

/// The VMX MSR bitmap (SDM Vol. 3C §25.6.9): intercept every MSR except those
/// the VMCS or the MSR-load areas switch.
fn vmx_msr_bitmap(map: &mut [u8]) {
    map.fill(0xff);
    let pass = |map: &mut [u8], msr: u32| {
        let (off, idx) = match msr {
            0..=0x1fff => (0, msr),
            0xc000_0000..=0xc000_1fff => (1024, msr - 0xc000_0000),
            _ => return,
        };
        for base in [off, off + 2048] {
            map[base + idx as usize / 8] &= !(1 << (idx % 8));
        }
    };
    for m in vmx::SWITCHED_MSRS.iter().copied().chain([0x174, 0x175, 0x176, 0x277, 0xc000_0100, 0xc000_0101]) {
        pass(map, m);
    }
}

/// Enables the extension on the calling CPU.
pub fn init_cpu(cpu: usize) {
    match backend() {
        Some(Hw::Svm(_)) => match (mem::alloc_frame(), mem::alloc_frame()) {
            (Some(hsave), Some(vmsave)) => svm::enable_cpu(cpu, hsave, vmsave),
            _ => log::error!("vm: no memory to enable SVM on CPU {cpu}"),
        },
        Some(Hw::Vmx(info)) => match mem::alloc_frame() {
            Some(page) => {
                vmx::enable_cpu(cpu, info, page);
            }
            None => log::error!("vm: no memory to enable VMX on CPU {cpu}"),
        },
        None => {}
    }
}

fn enabled_on(cpu: usize) -> bool {
    match KIND.load(Ordering::Acquire) {
        KIND_SVM => svm::enabled_on(cpu),
        KIND_VMX => vmx::enabled_on(cpu),
        _ => false,
    }
}

fn is_vmx() -> bool {
    KIND.load(Ordering::Acquire) == KIND_VMX
}

/// Nested-page-table operations in the backend's format.
fn nested_map(t: &mut Tables, root: u64, gpa: u64, pa: u64, flags: Flags) -> Result<usize, pagetable::MapError> {
    if is_vmx() { pagetable::map::<Ept, _>(t, root, gpa, pa, flags) } else { pagetable::map::<Npt, _>(t, root, gpa, pa, flags) }
}

fn nested_unmap(t: &mut Tables, root: u64, gpa: u64) {
    if is_vmx() {
        let _ = pagetable::unmap::<Ept, _>(t, root, gpa);
    } else {
        let _ = pagetable::unmap::<Npt, _>(t, root, gpa);
    }
}

pub struct Guest {
    pub npt_root: u64,
    /// Guest-physical page → frame object (a reference each) and the
    /// capability it was mapped through, as a process's (`Mapping`):
    /// revoking that capability unmaps it (finding 12).
    pub mappings: kcore::rangemap::RangeMap<super::Mapping>,
    pub tables: u64,
    pub refs: u32,
    pub charged_to: Option<Id>,
    /// Bumped on every unmap: a vCPU that sees a new value flushes its
    /// guest TLB before the next entry.
    pub tlb_generation: Arc<AtomicU64>,
    /// Its vCPUs in creation order (the APIC id is the position).
    pub vcpus: alloc::vec::Vec<Id>,
}

pub struct Vcpu {
    pub guest: Id,
    /// SVM: the VMCB (pa 0 under VMX).
    pub vmcb: svm::Vmcb,
    /// VMX: the VMCS (pa 0 under SVM), set up on the first run on the
    /// vCPU's CPU.
    pub vmcs: vmx::Vmcs,
    pub vmcs_ready: bool,
    pub ept_root: u64,
    pub vpid: u16,
    pub run_frame: Id,
    pub run_pa: u64,
    /// RAX..R15 (RAX and RSP are kept in the VMCB while the guest runs).
    pub gprs: [u64; 16],
    pub thread: Option<Id>,
    pub running: bool,
    pub refs: u32,
    pub charged_to: Option<Id>,
    pub fpu: Box<FxArea>,
    pub tsc_aux: u64,
    /// IA32_MISC_ENABLE as the guest sees it (fast strings on at reset).
    pub misc_enable: u64,
    pub tlb_generation: Arc<AtomicU64>,
    /// Where it ran last and what an entry elsewhere must redo (guest TLB
    /// flush, VMX host state and launch: `kcore::vcpu_cpu`).
    pub placement: kcore::vcpu_cpu::VcpuCpu,
    /// The SVM ASID this vCPU last entered with, on which CPU, in which of
    /// its generations.
    pub asid_tag: Option<kcore::asid::AsidTag>,
    pub reinject: u64,
    /// SVM: the vector armed in V_IRQ at the last entry (already moved
    /// from IRR to ISR). The exit right after takes it back to IRR if the
    /// guest did not take it (`settle_virq`).
    pub virq: Option<u8>,
    /// True while the CPU is inside the guest (set and cleared by the vCPU's
    /// thread without the lock): whoever unmaps guest memory waits for it.
    pub in_guest: AtomicBool,
    /// The local APIC emulated in the kernel; other vCPUs' threads deliver
    /// IPIs into it.
    pub lapic: Arc<spin::Mutex<VLapic>>,
    /// Set by a run that ends in a HLT to sleep through (APIC time base;
    /// `u64::MAX`: until an IPI).
    pub halt_until: Option<u64>,
    /// A start-up IPI's vector: the next entry starts there (SDM Vol. 3A
    /// §9.4.4), replacing the state the VMM loads.
    pub sipi: Option<u8>,
    /// The kernel's copy of the run page (see `runpage`): what the VMM asked
    /// of an entry, read once, and the exit record of the run (under VMX the
    /// guest state too; under SVM it is published from the VMCB, and the
    /// registers live in `gprs` both ways). Taken out while the vCPU runs.
    pub shadow: Option<Box<VcpuRun>>,
    /// Set by `VcpuKick`: the next check in the run loop returns.
    pub kicked: AtomicBool,
    /// The guest ended a level-triggered interrupt (EOI of a vector the VMM
    /// delivered as level): the run returns `VcpuExit::Eoi` before the
    /// next entry, so the VMM's I/O APIC sees the EOI broadcast.
    pub eoi_exit: Option<u8>,
    /// Halted with interrupts off: runs again only after an NMI or INIT
    /// (read by the guest's other vCPUs, see `others_stopped`).
    pub stopped: AtomicBool,
    /// NMI blocking under SVM (VMX tracks it in the interruptibility state).
    pub nmi_gate: NmiGate,
    /// Set whenever an INIT, start-up IPI or NMI is latched in `lapic`
    /// (`apply`) and while the vCPU waits for a start-up IPI or is
    /// `stopped`: `vcpu_run` looks at those (under the APIC's lock) only
    /// then, not on every run.
    pub attention: AtomicBool,
}

/// The legacy FXSAVE area (SDM Vol. 1 §10.5.1).
#[repr(C, align(64))]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// The state after FNINIT with SSE defaults: FCW 0x37f, MXCSR 0x1f80.
    pub fn clean() -> Self {
        let mut a = [0u8; 512];
        a[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        a[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        a[28..32].copy_from_slice(&0xffffu32.to_le_bytes()); // MXCSR_MASK
        Self(a)
    }
}

pub(crate) static CLEAN_FPU: spin::Lazy<FxArea> = spin::Lazy::new(FxArea::clean);

/// The MXCSR bits this CPU lets FXRSTOR set (its MXCSR_MASK, SDM Vol. 1
/// §11.6.6); any other bit in an image makes FXRSTOR raise #GP.
static MXCSR_MASK: spin::Lazy<u32> = spin::Lazy::new(arch::cpu::mxcsr_mask);

/// Kernel memory a vCPU costs its creator beyond its guest: the VMCB or
/// VMCS, the MSR area, and the object with its FPU area and run-page copy.
const VCPU_COST: u64 = 2 * cost::PAGE_TABLE + 1024 + core::mem::size_of::<VcpuRun>() as u64;

impl Kernel {
    pub fn create_guest(&mut self, payer: Id) -> Result<Id, Error> {
        if backend().is_none() {
            return Err(Error::BadState);
        }
        self.charge(payer, cost::PAGE_TABLE)?;
        let Some(root) = mem::alloc_frame() else {
            self.refund(Some(payer), cost::PAGE_TABLE);
            return Err(Error::OutOfMemory);
        };
        Ok(self.guests.insert(Guest {
            npt_root: root,
            mappings: kcore::rangemap::RangeMap::new(),
            tables: 0,
            refs: 0,
            charged_to: Some(payer),
            tlb_generation: Arc::new(AtomicU64::new(0)),
            vcpus: alloc::vec::Vec::new(),
        }))
    }

    pub fn create_vcpu(&mut self, payer: Id, guest: Id, run_frame: Id) -> Result<Id, Error> {
        let g = self.guests.get(guest).ok_or(Error::Gone)?;
        let (root, generation) = (g.npt_root, g.tlb_generation.clone());
        let apic_id = g.vcpus.len() as u32;
        if apic_id >= 255 {
            return Err(Error::InvalidArgument);
        }
        let f = self.frames.get(run_frame).ok_or(Error::Gone)?;
        if f.device || f.fixed {
            return Err(Error::InvalidArgument);
        }
        let run_pa = f.phys;
        // Every live VMX vCPU has its own VPID (65535 of them); SVM's
        // ASIDs are few (QEMU offers 16) and handed out at each entry by
        // the CPU it runs on (`SVM_ASIDS`).
        let asid = match backend() {
            Some(Hw::Svm(i)) if i.asids < 2 => return Err(Error::BadState),
            Some(Hw::Svm(_)) => 0,
            Some(Hw::Vmx(_)) => ASIDS.lock().alloc(0x1_0000).ok_or(Error::BadState)?,
            None => return Err(Error::BadState),
        };
        if let Err(e) = self.charge(payer, VCPU_COST) {
            ASIDS.lock().free(asid);
            return Err(e);
        }
        let (Some(vmcb_pa), Some(msr_pa)) = (mem::alloc_frame(), mem::alloc_frame()) else {
            self.refund(Some(payer), VCPU_COST);
            ASIDS.lock().free(asid);
            return Err(Error::OutOfMemory);
        };
        let mut vmcb = svm::Vmcb { pa: 0 };
        let mut vmcs = vmx::Vmcs { pa: 0, msr_area_pa: msr_pa, launched: false, cpu: 0, guest_cr2: 0 };
        if is_vmx() {
            vmcs.pa = vmcb_pa;
        } else {
            vmcb.pa = vmcb_pa;
            vmcb.init(IOPM_PA.load(Ordering::Relaxed), MSRPM_PA.load(Ordering::Relaxed), asid, root);
        }
        self.obj_ref(Obj::Frame(run_frame));
        if let Some(g) = self.guests.get_mut(guest) {
            g.refs += 1; // a vCPU keeps its guest
        }
        let v = Vcpu {
            guest,
            vmcb,
            vmcs,
            vmcs_ready: false,
            ept_root: root,
            vpid: asid as u16,
            run_frame,
            run_pa,
            gprs: [0; 16],
            thread: None,
            running: false,
            refs: 0,
            charged_to: Some(payer),
            fpu: Box::new(FxArea::clean()),
            tsc_aux: 0,
            misc_enable: 1,
            tlb_generation: generation,
            // No CPU yet: the first entry flushes the (possibly reused) tag.
            placement: kcore::vcpu_cpu::VcpuCpu::new(),
            asid_tag: None,
            reinject: 0,
            virq: None,
            in_guest: AtomicBool::new(false),
            lapic: Arc::new(spin::Mutex::new(VLapic::new(
                apic_id,
                VLapicConfig {
                    tsc_hz: arch::time::tsc_khz() * 1000,
                    bsp: apic_id == 0,
                    x2apic_supported: true,
                    max_phys_addr_bits: 46,
                },
            ))),
            halt_until: None,
            sipi: None,
            shadow: Some(Box::new(VcpuRun::ZERO)),
            kicked: AtomicBool::new(false),
            eoi_exit: None,
            stopped: AtomicBool::new(false),
            nmi_gate: NmiGate::default(),
            // The first run looks (an AP waits for its start-up IPI).
            attention: AtomicBool::new(true),
        };
        let id = self.vcpus.insert(Box::new(v));
        if let Some(g) = self.guests.get_mut(guest) {
            g.vcpus.push(id);
        }
        // The VMM starts from the reset state, written to the run page.
        if let Some(vc) = self.vcpus.get_mut(id) {
            let vc = &mut **vc;
            if let Some(shadow) = vc.shadow.as_deref_mut() {
                if is_vmx() {
                    reset_state(shadow);
                } else {
                    vc.vmcb.save(shadow);
                }
                shadow.gprs = [0; 16];
                // SAFETY: the run frame is RAM (checked above) and this vCPU
                // holds a reference to it.
                unsafe { RunPage::at(run_pa) }.publish_state(shadow);
            }
        }
        Ok(id)
    }

    /// Maps every page of `frame` into the guest at `gpa`; `through` is the
    /// capability the caller named (see `Mapping`).
    pub fn guest_map(&mut self, guest: Id, frame: Id, gpa: u64, rights: Rights, through: Option<kcore::cap::NodeId>) -> Result<(), Error> {
        let f = self.frames.get(frame).ok_or(Error::Gone)?;
        let (phys, pages, device) = (f.phys, u64::from(f.pages), f.device);
        let end = gpa.checked_add(pages * PAGE).ok_or(Error::InvalidArgument)?;
        if !gpa.is_multiple_of(PAGE) || end > GPA_LIMIT {
            return Err(Error::InvalidArgument);
        }
        let g = self.guests.get(guest).ok_or(Error::Gone)?;
        if g.mappings.overlaps(gpa, pages) {
            return Err(Error::AlreadyMapped);
        }
        let (root, payer) = (g.npt_root, g.charged_to);
        // The range-map entry is kernel heap on the payer's behalf (finding 2).
        if let Some(p) = payer {
            self.charge(p, cost::RANGE_ENTRY)?;
        }
        let flags = Flags {
            writable: rights.contains(Rights::WRITE),
            user: true,
            executable: rights.contains(Rights::EXECUTE),
            cache_disable: device,
            write_through: device,
            ..Flags::default()
        };
        for i in 0..pages {
            let mut t = Tables::new();
            let r = nested_map(&mut t, root, gpa + i * PAGE, phys + i * PAGE, flags);
            let made = t.allocated as u64;
            let charged = payer.map_or(Ok(()), |p| self.charge(p, made * cost::PAGE_TABLE));
            let r = match (r, charged) {
                (Ok(_), Err(e)) => {
                    // The budget cannot pay for the tables this page needed:
                    // take the page out again (its new tables hold nothing
                    // else; they were never charged, so nothing is
                    // refunded) and undo the earlier pages as for any
                    // failure. Nested tables are kernel memory like any
                    // other: a VMM gets no more than its budget.
                    let mut undo = Tables::new();
                    nested_unmap(&mut undo, root, gpa + i * PAGE);
                    if undo.freed > 0 {
                        // A vCPU may be walking the tables just made.
                        self.kick_guest(guest);
                    }
                    Err(e)
                }
                (r, _) => r.map_err(|e| match e {
                    pagetable::MapError::OutOfMemory => Error::OutOfMemory,
                    pagetable::MapError::AlreadyMapped => Error::AlreadyMapped,
                    _ => Error::InvalidArgument,
                }),
            };
            match r {
                Ok(_) => {
                    let g = self.guests.get_mut(guest).expect("checked");
                    g.tables += made;
                    self.obj_ref(Obj::Frame(frame));
                }
                Err(e) => {
                    // The entry charged above pays for the partial one
                    // guest_unmap takes out again (and refunds).
                    if i == 0 {
                        self.refund(payer, cost::RANGE_ENTRY);
                    } else if let Some(g) = self.guests.get_mut(guest) {
                        g.mappings.insert(gpa, i, super::Mapping { frame, through });
                    }
                    let _ = self.guest_unmap(guest, gpa, i);
                    return Err(e);
                }
            }
        }
        self.guests.get_mut(guest).expect("checked").mappings.insert(gpa, pages, super::Mapping { frame, through });
        Ok(())
    }

    pub fn guest_unmap(&mut self, guest: Id, gpa: u64, pages: u64) -> Result<u64, Error> {
        let g = self.guests.get(guest).ok_or(Error::Gone)?;
        let (root, payer) = (g.npt_root, g.charged_to);
        // Entries as for a process's (`Kernel::unmap_range`): a split is
        // charged first, each entry removed refunded, and the frames to
        // release kept one per piece, not one per page (finding 2).
        let split = g.mappings.splits(gpa, pages);
        if split && let Some(p) = payer {
            self.charge(p, cost::RANGE_ENTRY)?;
        }
        let g = self.guests.get_mut(guest).expect("checked");
        let entries = g.mappings.len() as u64 + u64::from(split);
        let pieces = g.mappings.remove(gpa, pages);
        let entries_freed = entries.saturating_sub(g.mappings.len() as u64);
        self.refund(payer, entries_freed * cost::RANGE_ENTRY);
        let mut n = 0u64;
        // Emptied nested tables are freed only after the kick below: a
        // vCPU inside the guest may walk them until it has left.
        let mut t = Tables::deferring();
        for piece in &pieces {
            for i in 0..piece.pages {
                nested_unmap(&mut t, root, piece.start + i * PAGE);
            }
            n += piece.pages;
        }
        let g = self.guests.get_mut(guest).expect("checked");
        g.tables = g.tables.saturating_sub(t.freed as u64);
        self.refund(payer, t.freed as u64 * cost::PAGE_TABLE);
        if n > 0 {
            let g = self.guests.get(guest).expect("checked");
            g.tlb_generation.fetch_add(1, Ordering::AcqRel);
            // A vCPU inside the guest right now must leave it before the
            // frames can be reused: kick every CPU running one.
            self.kick_guest(guest);
        }
        t.release();
        for piece in pieces {
            for _ in 0..piece.pages {
                self.obj_unref(Obj::Frame(piece.value.frame));
            }
        }
        Ok(n)
    }

    /// Makes every CPU that runs a vCPU of `guest` leave it, and waits
    /// until it has (so unmapped frames are no longer reachable).
    fn kick_guest(&mut self, guest: Id) {
        let me = percpu::index();
        for (_, v) in self.vcpus.iter() {
            if v.guest != guest || !v.running {
                continue;
            }
            let Some(t) = v.thread else { continue };
            let Some(cpu) = self.thread(t).map(|th| th.cpu) else { continue };
            if cpu == me {
                continue;
            }
            let p = percpu::of(cpu);
            // SeqCst: visible before `in_guest` is read below (as `vcpu_kick`).
            p.need_resched.store(true, Ordering::SeqCst);
            arch::apic::send_fixed(p.apic_id.load(Ordering::Relaxed), arch::apic::RESCHED_VECTOR);
            let deadline = arch::time::nanos_since_boot() + 100_000_000;
            while v.in_guest.load(Ordering::Acquire) {
                if arch::time::nanos_since_boot() > deadline {
                    log::error!("vm: CPU {cpu} did not leave its guest");
                    break;
                }
                core::hint::spin_loop();
            }
        }
    }

    pub fn destroy_guest(&mut self, id: Id) {
        let Some(g) = self.guests.get(id) else { return };
        for (gpa, pages) in g.mappings.ranges() {
            let _ = self.guest_unmap(id, gpa, pages);
        }
        if let Some(g) = self.guests.remove(id) {
            let mut t = Tables::new();
            if is_vmx() {
                pagetable::destroy::<Ept, _>(&mut t, g.npt_root, 0..512);
            } else {
                pagetable::destroy::<Npt, _>(&mut t, g.npt_root, 0..512);
            }
            mem::free_frames(g.npt_root, 1);
            self.refund(g.charged_to, cost::PAGE_TABLE);
        }
    }

    pub fn destroy_vcpu(&mut self, id: Id) {
        let Some(v) = self.vcpus.get(id) else { return };
        if v.running {
            // Its thread frees it when the run ends (see `vcpu_run`).
            return;
        }
        let v = self.vcpus.remove(id).expect("checked");
        if v.vmcb.pa != 0 {
            mem::free_frames(v.vmcb.pa, 1);
        }
        if v.vmcs.pa != 0 {
            // Not running, so not active on any CPU: every run clears it
            // on its own CPU as it ends (`run_loop_vmx`). A VMCLEAR from
            // here, perhaps another CPU, could write a stale copy over the
            // freed page (finding 9).
            mem::free_frames(v.vmcs.pa, 1);
        }
        mem::free_frames(v.vmcs.msr_area_pa, 1);
        ASIDS.lock().free(u32::from(v.vpid));
        if let Some(g) = self.guests.get_mut(v.guest) {
            g.vcpus.retain(|&x| x != id);
        }
        self.refund(v.charged_to, VCPU_COST);
        self.obj_unref(Obj::Frame(v.run_frame));
        self.obj_unref(Obj::Guest(v.guest));
    }
}

/// The longest a vCPU stays in the guest per `VcpuRun` under VMX (the
/// scheduler's slice), kernel-finished exits included, enforced with the
/// VMX-preemption timer.
const GUEST_SLICE_MS: u64 = 10;

fn run_page(vcpu: &Vcpu) -> RunPage {
    // SAFETY: the run frame is RAM (create_vcpu refuses device and fixed
    // frames) and the vCPU holds a reference to it until it is destroyed.
    unsafe { RunPage::at(vcpu.run_pa) }
}

/// `VcpuRun`: runs the vCPU in `slot` on the calling thread until an exit
/// for the VMM. Called with the lock held; drops it while the guest runs.
/// `me`'s process is `pid` (the caller looked the thread up once). Returns
/// the exit for the VMM when the call completed with one: the caller writes
/// it to the thread (`rax` 0, `rdi` the exit) with its own lookup of the
/// thread (`fastpath::resume_caller`); `None` when the registers are
/// already set (an error) or the call restarts (a halt).
#[inline(always)]
pub fn vcpu_run(mut k: KernelGuard, me: Id, pid: Id, slot: u64) -> (KernelGuard, Option<VcpuExit>) {
    let r = prepare(&mut k, me, pid, slot);
    let (id, vcpu_ptr) = match r {
        Ok(x) => x,
        Err(e) => {
            if let Some(th) = k.thread_mut(me) {
                th.ctx.rax = e as u64;
            }
            return (k, None);
        }
    };
    drop(k);
    let vmx = is_vmx();
    // SAFETY: `prepare` marked the vCPU running and bound to this thread;
    // while running, nothing else uses or frees it (destroy_vcpu defers, the
    // object is boxed so its address is stable), so this thread has it
    // exclusively until it re-takes the lock below.
    let vcpu = unsafe { &mut *vcpu_ptr };
    // An AP waits for its start-up IPI before it may run at all. Looked at
    // only when `attention` says something may have changed (cleared
    // before the look, so a latch after it sets it again for the next run).
    let waiting = vcpu.attention.swap(false, Ordering::AcqRel) && {
        // The APIC's lock borrows only `vcpu.lapic`: the other fields stay
        // writable beside it (no `Arc` clone on every run).
        // INIT and SIPI looked at first (inline): the calls that take
        // them only when they are latched.
        let mut l = vcpu.lapic.lock();
        if l.init_pending() && l.take_init() {
            vcpu.sipi = None;
            vcpu.stopped.store(false, Ordering::SeqCst);
            vcpu.nmi_gate.reset();
        }
        if l.sipi_pending()
            && let Some(vector) = l.take_sipi()
        {
            vcpu.sipi = Some(vector);
        }
        // Halted with interrupts off: only an NMI (or INIT) lets it run.
        if vcpu.stopped.load(Ordering::SeqCst) && wakes_from_stop(l.nmi_pending(), l.init_pending()) {
            vcpu.stopped.store(false, Ordering::SeqCst);
        }
        let waiting = l.waiting_for_sipi() || vcpu.stopped.load(Ordering::SeqCst);
        if waiting {
            // Still to be looked at on every run until it starts.
            vcpu.attention.store(true, Ordering::Release);
        }
        waiting
    };
    let exit = if vcpu.kicked.swap(false, Ordering::AcqRel) {
        run_page(vcpu).set_exit_reason(VcpuExit::Interrupted as u32);
        VcpuExit::Interrupted
    } else if waiting {
        vcpu.halt_until = Some(u64::MAX);
        VcpuExit::Hlt
    } else {
        match vcpu.shadow.take() {
            Some(mut shadow) => {
                let exit = enter(vcpu, &mut shadow, vmx);
                vcpu.shadow = Some(shadow);
                exit
            }
            None => VcpuExit::InvalidState, // only while running, and we are not
        }
    };
    // Test-only (kernel/inject.rs): hold the thread between a HLT exit it
    // would sleep through and the lock, where another CPU may delete the
    // vCPU's last capability (finding 7).
    if vcpu.halt_until.is_some() && super::inject::armed(abi::FaultPoint::HaltExit) {
        super::inject::pause(abi::FaultPoint::HaltExit, || false);
    }
    let mut k = super::lock();
    // What this thread still reads through `vcpu` it reads now, under the
    // lock (a waker changes that state under it, so no wake-up is missed);
    // from here on the vCPU is reached only through `k`, never through two
    // references at once. `woken_meanwhile` only reads.
    let halt = vcpu.halt_until.take();
    let woken = halt.is_some() && woken_meanwhile(vcpu);
    // Its last capability went while it ran: it is destroyed below, on
    // every way out, a halt included (security issue finding 7). No longer
    // running from here on either way (`destroy_vcpu` defers while it is).
    let doomed = match k.vcpus.get_mut(id) {
        Some(v) => {
            v.running = false;
            v.refs == 0
        }
        None => true,
    };
    if let Some(until) = halt
        && !doomed
    {
        // Sleep in the kernel; the thread re-enters VcpuRun on wake-up
        // (the system call restarts: RIP back over SYSCALL, RAX its number).
        // If the wake-up came already, it re-enters at once.
        if let Some(th) = k.thread_mut(me) {
            th.ctx.rip = th.ctx.rip.wrapping_sub(2);
            th.ctx.rax = abi::Sys::VcpuRun as u64;
            if !woken {
                th.state = super::ThreadState::GuestHalted;
            }
        }
        if !woken {
            let deadline = (until != u64::MAX).then(|| to_boot_ns(until));
            k.block_current(deadline);
        }
        return (k, None);
    }
    if doomed {
        k.destroy_vcpu(id);
    }
    (k, Some(exit))
}

/// One `VcpuRun` into the guest: takes the VMM's requests from the run
/// page into `run` (the vCPU's copy, read once), runs, and publishes the
/// state and exit record.
fn enter(vcpu: &mut Vcpu, run: &mut VcpuRun, vmx: bool) -> VcpuExit {
    let page = run_page(vcpu);
    let mut load = page.take_requests(run, &mut vcpu.gprs);
    if let Some(vector) = vcpu.sipi.take() {
        start_at_sipi(vcpu, run, vector);
        load |= abi::LOAD_GPRS | abi::LOAD_SYSTEM;
    }
    let (ring_from, trace_from) = (run.pio_ring_tail, run.exit_trace_next);
    let exit = if vmx {
        let exit = run_loop_vmx(vcpu, run, &page, load);
        page.publish_shadow_state(run);
        if run.fpu_request & 1 != 0 {
            page.publish_fpu(&run.fpu);
        }
        exit
    } else {
        // Straight from the VMCB and the vCPU, not through the shadow.
        let exit = run_loop(vcpu, run, &page, load);
        page.publish_exit_state(&vcpu.vmcb.exit_state(&vcpu.gprs));
        if run.fpu_request & 1 != 0 {
            page.publish_fpu(&vcpu.fpu.0);
        }
        exit
    };
    run.exit_reason = exit as u32;
    page.publish(run, ring_from, trace_from);
    super::phases::stamp(4);
    exit
}

fn prepare(k: &mut Kernel, me: Id, pid: Id, slot: u64) -> Result<(Id, *mut Vcpu), Error> {
    // Live: the process of this CPU's current thread, under the lock since
    // the system call's entry (a process ends only with its threads).
    let space = k.processes.get_live(pid).ok_or(Error::Gone)?.space;
    let slot = u32::try_from(slot).map_err(|_| Error::InvalidSlot)?;
    let Obj::Vcpu(id) = k.cap(space, slot, Rights::MANAGE)? else { return Err(Error::WrongType) };
    let cpu = percpu::index();
    if !enabled_on(cpu) {
        return Err(Error::BadState);
    }
    let v = k.vcpus.get_mut(id).ok_or(Error::Gone)?;
    if v.running {
        return Err(Error::BadState);
    }
    match v.thread {
        None => v.thread = Some(me),
        Some(t) if t == me => {}
        Some(_) => return Err(Error::NoRights), // bound to another thread
    }
    v.running = true;
    let v = &mut **v as *mut Vcpu;
    // The guest's FPU registers are loaded over the CPU's: a VMM thread
    // that used its own in this run has them saved first (`fpu`).
    super::fpu::park(&mut k.fpu_owner[cpu], &mut k.threads);
    Ok((id, v))
}

const EVENT_VALID: u64 = 1 << 31;

fn inject_exception(vcpu: &mut Vcpu, vector: u8, error: Option<u32>) {
    let mut ev = u64::from(vector) | (3 << 8) | EVENT_VALID;
    if let Some(e) = error {
        ev |= (1 << 11) | (u64::from(e) << 32);
    }
    vcpu.vmcb.w64(svm::vmcb::EVENT_INJ, ev);
}

/// Skips the exiting instruction: to the next RIP the hardware saved when it
/// has NRIP-save, else by the instruction's known length (QEMU's SVM has no
/// NRIP-save; every instruction skipped this way has a fixed encoding).
fn advance(vcpu: &mut Vcpu, len: u64) {
    let rip = vcpu.vmcb.r64(svm::vmcb::RIP);
    let nrip = match backend() {
        Some(Hw::Svm(i)) if i.nrip_save => vcpu.vmcb.r64(svm::vmcb::NEXT_RIP),
        _ => 0,
    };
    vcpu.vmcb.w64(svm::vmcb::RIP, if nrip > rip { nrip } else { rip.wrapping_add(len) });
    // Skipping an instruction ends an STI/MOV SS interrupt shadow.
    let st = vcpu.vmcb.r64(svm::vmcb::INT_STATE);
    vcpu.vmcb.w64(svm::vmcb::INT_STATE, st & !1);
}

/// Enters the guest until an exit the VMM must see.
fn run_loop(vcpu: &mut Vcpu, run: &mut VcpuRun, page: &RunPage, load: u64) -> VcpuExit {
    use svm::exit as x;
    use svm::vmcb as f;
    let cpu = percpu::index();
    // The VMM's requests, already copied out of the page (`enter`; the
    // registers into `vcpu.gprs`).
    if load & abi::LOAD_FPU != 0 {
        load_fpu(vcpu, run);
    }
    vcpu.vmcb.load(run, load);
    let inject = core::mem::take(&mut run.inject);
    if inject & EVENT_VALID != 0 {
        vcpu.vmcb.w64(f::EVENT_INJ, inject & 0xffff_ffff_8000_0fff);
    } else if vcpu.reinject & EVENT_VALID != 0 {
        vcpu.vmcb.w64(f::EVENT_INJ, vcpu.reinject);
    }
    vcpu.reinject = 0;
    let reason = loop {
        // Announce the entry before the last check, so an unmapper that
        // missed `in_guest` has already raised need_resched for us.
        if let Some(vector) = vcpu.eoi_exit.take() {
            run.data = u64::from(vector);
            break VcpuExit::Eoi;
        }
        vcpu.in_guest.store(true, Ordering::SeqCst);
        if percpu::this().need_resched.load(Ordering::SeqCst) || vcpu.kicked.swap(false, Ordering::AcqRel) {
            vcpu.in_guest.store(false, Ordering::Release);
            break VcpuExit::Interrupted;
        }
        // Flushed per vCPU on every CPU it comes to, not only where it saw
        // an unmap (finding 8).
        let generation = vcpu.tlb_generation.load(Ordering::Acquire);
        if vcpu.placement.enter(cpu as u32, generation).flush_tlb {
            vcpu.vmcb.w8(f::TLB_CONTROL, 1);
        }
        // The ASID last: nothing between here and VMRUN leaves this CPU.
        let limit = match backend() {
            Some(Hw::Svm(i)) => i.asids,
            _ => 0,
        };
        match SVM_ASIDS[cpu].lock().assign(cpu as u32, limit, &mut vcpu.asid_tag) {
            Some(a) => {
                if a.flush_all {
                    vcpu.vmcb.w8(f::TLB_CONTROL, 1);
                }
                vcpu.vmcb.w32(f::ASID, a.asid);
            }
            None => break VcpuExit::InvalidState,
        }
        pre_entry(vcpu);
        vcpu.gprs[0] = vcpu.vmcb.r64(f::RAX);
        // For the exit trace: the event injected, else the interrupt
        // offered in V_IRQ (as an external interrupt).
        let injected = match (vcpu.vmcb.r64(f::EVENT_INJ) as u32, vcpu.virq) {
            (e, Some(v)) if u64::from(e) & EVENT_VALID == 0 => u32::from(v) | EVENT_VALID as u32,
            (e, _) => e,
        };
        arch::cpu::fpu_load(&vcpu.fpu.0);
        super::phases::stamp(2);
        svm::run(cpu, &vcpu.vmcb, &mut vcpu.gprs);
        super::phases::stamp(3);
        vcpu.in_guest.store(false, Ordering::Release);
        arch::cpu::fpu_save_and_clean(&mut vcpu.fpu.0, &CLEAN_FPU.0);
        vcpu.vmcb.w8(f::TLB_CONTROL, 0);
        vcpu.vmcb.w32(f::CLEAN, 0);
        vcpu.gprs[0] = vcpu.vmcb.r64(f::RAX);
        // A virtual interrupt the guest did not take goes back to IRR.
        let iinfo = settle_virq(vcpu, vcpu.vmcb.r64(f::EXIT_INT_INFO));
        // An event whose delivery the exit interrupted is delivered again.
        let code = vcpu.vmcb.r64(f::EXIT_CODE);
        let info1 = vcpu.vmcb.r64(f::EXIT_INFO1);
        let info2 = vcpu.vmcb.r64(f::EXIT_INFO2);
        vcpu.vmcb.w64(f::EVENT_INJ, if iinfo & EVENT_VALID != 0 { iinfo } else { 0 });
        run.exit_int_info = iinfo;
        run.trace_exit(abi::ExitTrace {
            rip: vcpu.vmcb.r64(f::RIP),
            code: code as u32,
            injected,
            int_info: iinfo as u32,
            info: info1 as u32,
        });
        run.hw_code = code;
        run.info1 = info1;
        run.info2 = info2;
        // The guest's state is the host's own, as the host's VMRUN saved
        // it: under QEMU 7.2's multi-threaded TCG the VMCB of a vCPU
        // starting up on a two-CPU machine was found so, about one run in
        // ten of vm/epyc-svm (never with `-accel tcg,thread=single`). Run
        // again it loops in nested-page faults at a kernel address; the
        // VMM is told instead, and the kernel says why.
        if svm::holds_host_state(&vcpu.vmcb) {
            log::error!(
                "vm: vCPU's VMCB holds this host's state after exit {code:#x} (rip {:#x}): overwritten by the CPU or its emulator; the vCPU cannot go on",
                vcpu.vmcb.r64(f::RIP)
            );
            break VcpuExit::InvalidState;
        }
        match code {
            x::INTR | x::NMI | x::SMI | x::INIT => {
                // Let the host interrupt in (it marks what it needs).
                arch::cpu::open_interrupt_window();
                break VcpuExit::Interrupted;
            }
            x::CPUID => {
                // SVM keeps the guest's RAX in the VMCB.
                cpuid_regs(&mut vcpu.gprs, page);
                vcpu.vmcb.w64(svm::vmcb::RAX, vcpu.gprs[0]);
                advance(vcpu, 2);
            }
            x::MSR => {
                if !msr(vcpu, info1 == 1) {
                    let rip = vcpu.vmcb.r64(f::RIP);
                    run.msr = vcpu.gprs[1] as u32;
                    run.write = info1 as u8;
                    run.data = (vcpu.gprs[2] << 32) | (vcpu.gprs[0] & 0xffff_ffff);
                    run.next_rip = rip + 2;
                    break VcpuExit::Msr;
                }
            }
            x::IOIO => {
                let port = (info1 >> 16) as u16;
                // SZ8/SZ16/SZ32 are one-hot (APM Vol. 2 §15.10.2).
                let size: u8 = match (info1 >> 4) & 7 {
                    1 => 1,
                    2 => 2,
                    _ => 4,
                };
                let write = info1 & 1 == 0;
                let io_flags = (((info1 >> 2) & 1) | (((info1 >> 3) & 1) << 1)) as u8;
                let data = vcpu.gprs[0] & (u64::MAX >> (64 - 8 * u32::from(size)));
                run.port = port;
                run.size = size;
                run.write = u8::from(write);
                run.io_flags = io_flags;
                run.data = data;
                run.next_rip = info2;
                // Coalesced port I/O: finished here when the VMM asked so.
                if io_flags == 0
                    && let Some(read) = run.kernel_pio(port, size, write, data as u8, arch::time::nanos_since_boot)
                {
                    if let Some(v) = read {
                        let rax = abi::merge_in(vcpu.vmcb.r64(f::RAX), size, v);
                        vcpu.vmcb.w64(f::RAX, rax);
                    }
                    // EXITINFO2 holds the next RIP for IOIO (APM Vol. 2 §15.10.2).
                    vcpu.vmcb.w64(f::RIP, info2);
                    let st = vcpu.vmcb.r64(f::INT_STATE);
                    vcpu.vmcb.w64(f::INT_STATE, st & !1);
                    continue;
                }
                break VcpuExit::Io;
            }
            x::NPF => {
                vcpu.vmcb.w64(f::RAX, vcpu.gprs[0]);
                if lapic_mmio(vcpu, info2) {
                    vcpu.vmcb.w64(f::RAX, vcpu.gprs[0]);
                    continue;
                }
                run.gpa = info2;
                run.write = u8::from(info1 & 2 != 0);
                run.next_rip = 0;
                fill_insn(vcpu, run);
                break VcpuExit::Mmio;
            }
            0x64 => Regs::request_window(vcpu, false), // VINTR: inject on re-entry
            x::CR8_WRITE => {
                if !cr8_write(vcpu) {
                    break VcpuExit::Unhandled;
                }
            }
            x::IRET => {
                // Before the IRET runs: NMIs open once the guest is past it.
                let rip = vcpu.vmcb.r64(f::RIP);
                vcpu.nmi_gate.iret_intercepted(rip);
                Regs::set_iret_intercept(vcpu);
            }
            // #DB and #AC back to the guest (the VMCB's DR6 is already
            // updated, APM Vol. 2 §15.12.2), unless the exit interrupted
            // another event's delivery, which goes first (above).
            c if c == x::EXCEPTION_BASE + u64::from(svm::DB_VECTOR) || c == x::EXCEPTION_BASE + u64::from(svm::AC_VECTOR) => {
                if iinfo & EVENT_VALID == 0 {
                    let vector = (c - x::EXCEPTION_BASE) as u8;
                    let error = (vector == svm::AC_VECTOR).then_some(info1 as u32);
                    inject_exception(vcpu, vector, error);
                }
            }
            // INVD: as WBINVD, which the guest may do (skipped: the caches
            // stay coherent), never a real INVD of host memory.
            x::INVD => advance(vcpu, 2),
            x::HLT => {
                if run.pio_pending() > 0 {
                    // Let the VMM see the buffered output before the guest
                    // sleeps; HLT runs again on re-entry.
                    break VcpuExit::Interrupted;
                }
                advance(vcpu, 1);
                match on_hlt(vcpu) {
                    Halt::Continue => {}
                    Halt::Until(d) => {
                        vcpu.halt_until = Some(d);
                        break VcpuExit::Hlt;
                    }
                    Halt::ToVmm { all } => {
                        // The exit record: 1 when every vCPU is stopped.
                        run.data = u64::from(all);
                        break VcpuExit::Hlt;
                    }
                }
            }
            x::SHUTDOWN => break VcpuExit::Shutdown,
            x::INVALID => break VcpuExit::InvalidState,
            // VMRUN, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, MONITOR,
            // MWAIT, INVLPGA: not for guests.
            0x7a | 0x80..=0x86 | 0x8a..=0x8c => inject_exception(vcpu, 6, None),
            x::XSETBV => {
                let value = (vcpu.gprs[2] << 32) | (vcpu.gprs[0] & 0xffff_ffff);
                if vcpu.gprs[1] as u32 == 0 && value == 1 {
                    advance(vcpu, 3);
                } else {
                    inject_exception(vcpu, 13, Some(0));
                }
            }
            _ => break VcpuExit::Unhandled,
        }
    };
    if reason == VcpuExit::Shutdown {
        run.nested = nested_walk(vcpu);
    }
    // The state is published from the VMCB and `vcpu.gprs` (`enter`), with
    // the VMCB's RSP (the entry does not load `gprs[4]`).
    vcpu.gprs[4] = vcpu.vmcb.r64(svm::vmcb::RSP);
    reason
}

/// MSRs the kernel finishes; false to hand the access to the VMM.
fn msr(vcpu: &mut Vcpu, write: bool) -> bool {
    let index = vcpu.gprs[1] as u32;
    let value = (vcpu.gprs[2] << 32) | (vcpu.gprs[0] & 0xffff_ffff);
    let read = |vcpu: &mut Vcpu, v: u64| {
        vcpu.vmcb.w64(svm::vmcb::RAX, v & 0xffff_ffff);
        vcpu.gprs[2] = v >> 32;
    };
    if let Some(r) = lapic_msr(vcpu, index, write, value) {
        match r {
            Ok(Some(v)) => read(vcpu, v),
            Ok(None) => {}
            Err(()) => {
                inject_exception(vcpu, 13, Some(0));
                return true;
            }
        }
        advance(vcpu, 2);
        return true;
    }
    match (index, write) {
        // EFER: SVME is the host's; the guest never sees or clears it.
        (0xc000_0080, false) => {
            let v = vcpu.vmcb.r64(svm::vmcb::EFER) & !(1 << 12);
            read(vcpu, v);
        }
        (0xc000_0080, true) => {
            // LME, LMA, NXE, SCE, FFXSR are the guest's; anything else: #GP.
            let allowed = 1 | (1 << 8) | (1 << 10) | (1 << 11) | (1 << 14);
            let old = vcpu.vmcb.r64(svm::vmcb::EFER);
            let paging = vcpu.vmcb.r64(svm::vmcb::CR0) & (1 << 31) != 0;
            if value & !allowed != 0 || (paging && (old ^ value) & (1 << 8) != 0) {
                inject_exception(vcpu, 13, Some(0));
                return true;
            }
            // LMA is the processor's to set.
            let value = (value & !(1 << 10)) | (old & (1 << 10));
            vcpu.vmcb.w64(svm::vmcb::EFER, value | (1 << 12));
        }
        (0xc000_0103, false) => {
            let v = vcpu.tsc_aux;
            read(vcpu, v);
        }
        (0xc000_0103, true) => vcpu.tsc_aux = value & 0xffff_ffff,
        // IA32_MISC_ENABLE: plain state for the guest (SDM Vol. 4 §2.1).
        (0x1a0, false) => {
            let v = vcpu.misc_enable;
            read(vcpu, v);
        }
        (0x1a0, true) => vcpu.misc_enable = value,
        _ => return false,
    }
    advance(vcpu, 2);
    true
}

/// The architectural reset state (real mode at F000:FFF0) in the run page.
fn reset_state(run: &mut VcpuRun) {
    let data = abi::Segment { selector: 0, attrib: 0x93, limit: 0xffff, base: 0 };
    run.segments = [data; 8];
    run.segments[1] = abi::Segment { selector: 0xf000, attrib: 0x9b, limit: 0xffff, base: 0xffff_0000 };
    run.segments[6] = abi::Segment { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 };
    run.segments[7] = abi::Segment { selector: 0, attrib: 0x8b, limit: 0xffff, base: 0 };
    run.gdtr = abi::Segment { selector: 0, attrib: 0, limit: 0xffff, base: 0 };
    run.idtr = run.gdtr;
    run.rip = 0xfff0;
    run.rflags = 2;
    run.cr0 = 0x10;
    run.cr2 = 0;
    run.cr3 = 0;
    run.cr4 = 0;
    run.efer = 0;
}

/// The VMX run loop: as `run_loop`, with VMX's exit reasons. The VMCS is
/// active on this CPU only during the run: it is cleared here at the end
/// (SDM Vol. 3C §25.11.1), so the thread may run the vCPU next on another
/// CPU, and `destroy_vcpu` frees it without a VMCLEAR from a foreign CPU
/// (finding 9).
fn run_loop_vmx(vcpu: &mut Vcpu, run: &mut VcpuRun, page: &RunPage, load: u64) -> VcpuExit {
    let exit = run_loop_vmx_active(vcpu, run, page, load);
    vmx::clear(vcpu.vmcs.pa);
    vcpu.vmcs.launched = false;
    vcpu.placement.cleared();
    exit
}

fn run_loop_vmx_active(vcpu: &mut Vcpu, run: &mut VcpuRun, page: &RunPage, load: u64) -> VcpuExit {
    use vmx::exit as x;
    use vmx::field as f;
    let cpu = percpu::index();
    if !vcpu.vmcs_ready {
        let ok = vcpu.vmcs.init(
            cpu,
            vcpu.ept_root,
            vcpu.vpid,
            MSRPM_PA.load(Ordering::Relaxed),
            IOPM_PA.load(Ordering::Relaxed),
        );
        if !ok {
            gprs_back(vcpu, run);
            return VcpuExit::InvalidState;
        }
        vcpu.vmcs_ready = true;
    } else if !vcpu.vmcs.load(cpu) {
        gprs_back(vcpu, run);
        return VcpuExit::InvalidState;
    }
    // The thread's address space may differ from when the VMCS was made.
    vmx::vmwrite(f::HOST_CR3, arch::cpu::read_cr3());
    // The VMM's requests, already copied out of the page (`enter`; the
    // registers into `vcpu.gprs`).
    if load & abi::LOAD_FPU != 0 {
        load_fpu(vcpu, run);
    }
    vcpu.vmcs.load_state(run, load);
    let inject = core::mem::take(&mut run.inject);
    if inject & EVENT_VALID != 0 {
        vmx::vmwrite(f::ENTRY_INTR_INFO, inject & 0x8000_0fff);
        vmx::vmwrite(f::ENTRY_EXCEPTION_ERROR, inject >> 32);
    } else if vcpu.reinject & EVENT_VALID != 0 {
        vmx::vmwrite(f::ENTRY_INTR_INFO, vcpu.reinject & 0x8000_0fff);
        vmx::vmwrite(f::ENTRY_EXCEPTION_ERROR, vcpu.reinject >> 32);
    }
    vcpu.reinject = 0;
    let advance = |len: u64| {
        let rip = vmx::vmread(f::GUEST_RIP);
        vmx::vmwrite(f::GUEST_RIP, rip.wrapping_add(len));
        // Skipping an instruction ends an STI/MOV SS interrupt shadow.
        let st = vmx::vmread(f::GUEST_INTERRUPTIBILITY);
        vmx::vmwrite(f::GUEST_INTERRUPTIBILITY, st & !3);
    };
    let inject_exc = |vector: u64, error: Option<u64>| {
        let mut ev = vector | (3 << 8) | EVENT_VALID;
        if let Some(e) = error {
            ev |= 1 << 11;
            vmx::vmwrite(f::ENTRY_EXCEPTION_ERROR, e);
        }
        vmx::vmwrite(f::ENTRY_INTR_INFO, ev);
    };
    // The end of this run's time slice in TSC ticks (see the preemption
    // timer below).
    let slice_end = arch::cpu::rdtsc().saturating_add(arch::time::tsc_khz() * GUEST_SLICE_MS);
    let reason = loop {
        if let Some(vector) = vcpu.eoi_exit.take() {
            run.data = u64::from(vector);
            break VcpuExit::Eoi;
        }
        vcpu.in_guest.store(true, Ordering::SeqCst);
        if percpu::this().need_resched.load(Ordering::SeqCst) || vcpu.kicked.swap(false, Ordering::AcqRel) {
            vcpu.in_guest.store(false, Ordering::Release);
            break VcpuExit::Interrupted;
        }
        // A guest TLB flush on every CPU the vCPU comes to, not only where
        // it saw an unmap (finding 8); the host state of this CPU for its
        // exits, and VMLAUNCH after the clear that ended the last run
        // (finding 9).
        let generation = vcpu.tlb_generation.load(Ordering::Acquire);
        let plan = vcpu.placement.enter(cpu as u32, generation);
        if plan.flush_tlb {
            vmx::invept_all();
        }
        if plan.write_host_state {
            vcpu.vmcs.host_state(cpu);
        }
        vcpu.vmcs.launched = !plan.launch;
        pre_entry(vcpu);
        if let Some(Hw::Vmx(vmx::Info { preemption_rate: Some(rate), .. })) = backend() {
            // At most one time slice in the guest per `VcpuRun`, whether or
            // not the host's timer interrupt gets the guest to exit (Bochs's
            // does not reliably): then the scheduler runs as on a tick. The
            // slice counts from the run's start, not from each entry: a
            // guest whose exits the kernel finishes itself (OVMF reading the
            // PM timer in a delay loop, every few microseconds) would
            // otherwise re-arm a whole slice each time and keep the CPU for
            // good, starving the vCPU it waits for on the same CPU.
            let now = arch::cpu::rdtsc();
            if now >= slice_end {
                vcpu.in_guest.store(false, Ordering::Release);
                percpu::this().need_resched.store(true, Ordering::Relaxed);
                break VcpuExit::Interrupted;
            }
            let ticks = (slice_end - now) >> rate;
            vmx::vmwrite(f::PREEMPTION_TIMER_VALUE, ticks.clamp(1, u64::from(u32::MAX)));
        }
        let injected = vmx::vmread(f::ENTRY_INTR_INFO) as u32;
        arch::cpu::fpu_load(&vcpu.fpu.0);
        super::phases::stamp(2);
        let entered = vmx::run(&mut vcpu.vmcs, &mut vcpu.gprs);
        super::phases::stamp(3);
        vcpu.in_guest.store(false, Ordering::Release);
        if entered {
            vcpu.placement.entered();
        }
        arch::cpu::fpu_save_and_clean(&mut vcpu.fpu.0, &CLEAN_FPU.0);
        if !entered {
            run.hw_code = vmx::vmread(f::INSTRUCTION_ERROR);
            break VcpuExit::InvalidState;
        }
        let raw = vmx::vmread(f::EXIT_REASON);
        let qual = vmx::vmread(f::EXIT_QUALIFICATION);
        let len = vmx::vmread(f::EXIT_INSTRUCTION_LEN);
        let vect = vmx::vmread(f::IDT_VECTORING_INFO);
        // An event whose delivery the exit interrupted is delivered again.
        if vect & EVENT_VALID != 0 {
            vmx::vmwrite(f::ENTRY_INTR_INFO, vect & 0x8000_0fff);
            vmx::vmwrite(f::ENTRY_EXCEPTION_ERROR, vmx::vmread(f::IDT_VECTORING_ERROR));
        } else {
            vmx::vmwrite(f::ENTRY_INTR_INFO, 0);
        }
        run.exit_int_info =
            if vect & (1 << 11) != 0 { (vect & 0xffff_ffff) | (vmx::vmread(f::IDT_VECTORING_ERROR) << 32) } else { vect & 0xffff_ffff };
        run.trace_exit(abi::ExitTrace {
            rip: vmx::vmread(f::GUEST_RIP),
            code: raw as u32,
            injected,
            int_info: vect as u32,
            info: qual as u32,
        });
        run.hw_code = raw;
        run.info1 = qual;
        run.info2 = vmx::vmread(f::GUEST_PHYSICAL_ADDRESS);
        let basic = (raw & 0xffff) as u32;
        if raw & (1 << 31) != 0 {
            break VcpuExit::InvalidState; // VM-entry failure
        }
        match basic {
            // #DB and #AC (exception bitmap) back to the guest, unless the
            // exit interrupted another event's delivery (re-injected above).
            x::EXCEPTION_NMI if is_reflected_exception(vmx::vmread(f::EXIT_INTR_INFO)) => {
                let info = vmx::vmread(f::EXIT_INTR_INFO);
                if vect & EVENT_VALID == 0 {
                    if info & 0xff == 1 {
                        vmx::set_guest_dr6(qual);
                    }
                    let error = (info & (1 << 11) != 0).then(|| vmx::vmread(f::EXIT_INTR_ERROR));
                    inject_exc(info & 0xff, error);
                }
            }
            x::EXTERNAL_INTERRUPT | x::EXCEPTION_NMI | x::INIT | x::SIPI => {
                arch::cpu::open_interrupt_window();
                break VcpuExit::Interrupted;
            }
            // INVD always exits under VMX: done as WBINVD (skipped).
            x::INVD => advance(len),
            x::PREEMPTION_TIMER => {
                arch::cpu::open_interrupt_window();
                percpu::this().need_resched.store(true, Ordering::Relaxed);
                break VcpuExit::Interrupted;
            }
            x::CPUID => {
                cpuid_regs(&mut vcpu.gprs, page);
                advance(len);
            }
            x::RDMSR | x::WRMSR => {
                let write = basic == x::WRMSR;
                match vmx_msr(vcpu, write) {
                    MsrResult::Done => advance(len),
                    MsrResult::Gp => inject_exc(13, Some(0)),
                    MsrResult::Vmm => {
                        run.msr = vcpu.gprs[1] as u32;
                        run.write = u8::from(write);
                        run.data = (vcpu.gprs[2] << 32) | (vcpu.gprs[0] & 0xffff_ffff);
                        run.next_rip = vmx::vmread(f::GUEST_RIP) + len;
                        break VcpuExit::Msr;
                    }
                }
            }
            x::IO => {
                // SDM Vol. 3C Table 28-5: size - 1 in bits 2:0 (0, 1 or 3).
                let port = (qual >> 16) as u16;
                let size = ((qual & 3) + 1) as u8;
                let write = qual & 8 == 0;
                let io_flags = (((qual >> 4) & 1) | (((qual >> 5) & 1) << 1)) as u8;
                let data = vcpu.gprs[0] & (u64::MAX >> (64 - 8 * u32::from(size)));
                run.port = port;
                run.size = size;
                run.write = u8::from(write);
                run.io_flags = io_flags;
                run.data = data;
                run.next_rip = vmx::vmread(f::GUEST_RIP) + len;
                // Coalesced port I/O: finished here when the VMM asked so.
                if io_flags == 0
                    && let Some(read) = run.kernel_pio(port, size, write, data as u8, arch::time::nanos_since_boot)
                {
                    if let Some(v) = read {
                        vcpu.gprs[0] = abi::merge_in(vcpu.gprs[0], size, v);
                    }
                    advance(len);
                    continue;
                }
                break VcpuExit::Io;
            }
            7 => Regs::request_window(vcpu, false), // interrupt window: inject on re-entry
            x::EPT_VIOLATION => {
                let gpa = vmx::vmread(f::GUEST_PHYSICAL_ADDRESS);
                if lapic_mmio(vcpu, gpa) {
                    continue;
                }
                run.gpa = vmx::vmread(f::GUEST_PHYSICAL_ADDRESS);
                run.write = u8::from(qual & 2 != 0);
                run.next_rip = 0;
                fill_insn(vcpu, run);
                break VcpuExit::Mmio;
            }
            x::CR_ACCESS => {
                if !cr_access(vcpu, qual) {
                    inject_exc(13, Some(0));
                } else {
                    advance(len);
                }
            }
            x::HLT => {
                if run.pio_pending() > 0 {
                    break VcpuExit::Interrupted; // as under SVM
                }
                advance(len);
                match on_hlt(vcpu) {
                    Halt::Continue => {}
                    Halt::Until(d) => {
                        vcpu.halt_until = Some(d);
                        break VcpuExit::Hlt;
                    }
                    Halt::ToVmm { all } => {
                        // The exit record: 1 when every vCPU is stopped.
                        run.data = u64::from(all);
                        break VcpuExit::Hlt;
                    }
                }
            }
            x::TRIPLE_FAULT => break VcpuExit::Shutdown,
            x::INVALID_GUEST_STATE | x::MSR_LOADING | x::EPT_MISCONFIG => break VcpuExit::InvalidState,
            // VMCALL and the VMX instructions, MONITOR/MWAIT: not for guests.
            x::VMCALL | 19..=27 | 50 | 53 | x::MWAIT | x::MONITOR => inject_exc(6, None),
            x::XSETBV => {
                let value = (vcpu.gprs[2] << 32) | (vcpu.gprs[0] & 0xffff_ffff);
                if vcpu.gprs[1] as u32 == 0 && value == 1 {
                    advance(len);
                } else {
                    inject_exc(13, Some(0));
                }
            }
            _ => break VcpuExit::Unhandled,
        }
    };
    if reason == VcpuExit::Shutdown {
        run.nested = nested_walk(vcpu);
    }
    vcpu.vmcs.save(run);
    gprs_back(vcpu, run);
    save_fpu(vcpu, run);
    reason
}

/// VMX: the vCPU's registers into the shadow for publishing, but RSP, which
/// the VMCS holds (`Vmcs::save` put it there, or the entry's `LOAD_GPRS`).
fn gprs_back(vcpu: &Vcpu, run: &mut VcpuRun) {
    let rsp = run.gprs[4];
    run.gprs = vcpu.gprs;
    run.gprs[4] = rsp;
}

/// A VM-exit interruption information (SDM Vol. 3C §25.9.2) for a hardware
/// exception the kernel reflects: #DB or #AC.
fn is_reflected_exception(info: u64) -> bool {
    let (valid, kind, vector) = (info & EVENT_VALID != 0, (info >> 8) & 7, info & 0xff);
    valid && kind == 3 && (vector == 1 || vector == 17)
}

enum MsrResult {
    Done,
    Gp,
    Vmm,
}

fn vmx_msr(vcpu: &mut Vcpu, write: bool) -> MsrResult {
    use vmx::field as f;
    let index = vcpu.gprs[1] as u32;
    let value = (vcpu.gprs[2] << 32) | (vcpu.gprs[0] & 0xffff_ffff);
    if let Some(r) = lapic_msr(vcpu, index, write, value) {
        return match r {
            Ok(Some(v)) => {
                vcpu.gprs[0] = v & 0xffff_ffff;
                vcpu.gprs[2] = v >> 32;
                MsrResult::Done
            }
            Ok(None) => MsrResult::Done,
            Err(()) => MsrResult::Gp,
        };
    }
    let mut read = |v: u64| {
        vcpu.gprs[0] = v & 0xffff_ffff;
        vcpu.gprs[2] = v >> 32;
    };
    match (index, write) {
        (0xc000_0080, false) => read(vmx::vmread(f::GUEST_EFER)),
        (0xc000_0080, true) => {
            let allowed = 1 | (1 << 8) | (1 << 10) | (1 << 11) | (1 << 14);
            let old = vmx::vmread(f::GUEST_EFER);
            // LME may not change while paging is on (SDM Vol. 3A §10.8.5).
            let lme_changes = (old ^ value) & (1 << 8) != 0;
            if value & !allowed != 0 || (lme_changes && vmx::guest_cr0() & (1 << 31) != 0) {
                return MsrResult::Gp;
            }
            vmx::vmwrite(f::GUEST_EFER, value & !(1 << 10));
            vcpu.vmcs.update_long_mode();
        }
        (0xc000_0103, false) => read(vcpu.tsc_aux),
        (0xc000_0103, true) => vcpu.tsc_aux = value & 0xffff_ffff,
        (0x1a0, false) => read(vcpu.misc_enable),
        (0x1a0, true) => vcpu.misc_enable = value,
        _ => return MsrResult::Vmm,
    }
    MsrResult::Done
}

/// MOV to/from CR0/CR4 (for the bits the host owns), CLTS and LMSW
/// (SDM Vol. 3C Table 28-3); false to inject #GP.
fn cr_access(vcpu: &mut Vcpu, qual: u64) -> bool {
    let cr = qual & 0xf;
    let kind = (qual >> 4) & 3;
    let reg = ((qual >> 8) & 0xf) as usize;
    let value = if reg == 4 { vmx::vmread(vmx::field::GUEST_RSP) } else { vcpu.gprs[reg] };
    match (kind, cr) {
        (0, 0) => {
            // Long mode needs PAE first; PG without PE is invalid.
            if value & (1 << 31) != 0 && value & 1 == 0 {
                return false;
            }
            vcpu.vmcs.set_cr0(value);
        }
        (0, 4) => vcpu.vmcs.set_cr4(value),
        (1, 0) | (1, 4) => {
            let v = if cr == 0 { vmx::guest_cr0() } else { vmx::guest_cr4() };
            if reg == 4 {
                vmx::vmwrite(vmx::field::GUEST_RSP, v);
            } else {
                vcpu.gprs[reg] = v;
            }
        }
        (2, _) => {
            let v = vmx::guest_cr0() & !(1 << 3);
            vcpu.vmcs.set_cr0(v);
        }
        (3, _) => {
            // LMSW: the low four bits; cannot clear PE.
            let src = (qual >> 16) & 0xf;
            let old = vmx::guest_cr0();
            let v = (old & !0xe) | (src & 0xf) | (old & 1);
            vcpu.vmcs.set_cr0(v);
        }
        _ => return false,
    }
    true
}

/// Answers CPUID from the VMM's table into the register file, with the
/// hypervisor bit and the TSC-frequency leaf the kernel alone knows.
fn cpuid_regs(gprs: &mut [u64; 16], page: &RunPage) {
    let (leaf, sub) = (gprs[0] as u32, gprs[1] as u32);
    let e = page.cpuid(leaf, sub);
    let (mut a, b, mut c, d) = (e.eax, e.ebx, e.ecx, e.edx);
    if leaf == 1 {
        c |= 1 << 31;
    }
    if leaf == 0x4000_0010 && a == 0 {
        a = arch::time::tsc_khz() as u32;
    }
    gprs[0] = u64::from(a);
    gprs[3] = u64::from(b);
    gprs[1] = u64::from(c);
    gprs[2] = u64::from(d);
}

// ---- the emulated local APIC ----------------------------------------------

/// The time base of the emulated APICs: ns since the TSC was 0, so guest
/// TSC-deadline values (host TSC values: no TSC offset) convert exactly.
pub fn lapic_now() -> u64 {
    (u128::from(arch::cpu::rdtsc()) * 1_000_000 / u128::from(arch::time::tsc_khz())) as u64
}

/// Converts an APIC-time deadline to the scheduler's (ns since boot).
fn to_boot_ns(lapic_ns: u64) -> u64 {
    let now = lapic_now();
    arch::time::nanos_since_boot().saturating_add(lapic_ns.saturating_sub(now))
}

/// Backend accessors the APIC logic needs.
struct Regs;

impl Regs {
    fn rflags(v: &Vcpu) -> u64 {
        if is_vmx() { vmx::vmread(vmx::field::GUEST_RFLAGS) } else { v.vmcb.r64(svm::vmcb::RFLAGS) }
    }
    fn shadow(v: &Vcpu) -> bool {
        if is_vmx() { vmx::vmread(vmx::field::GUEST_INTERRUPTIBILITY) & 3 != 0 } else { v.vmcb.r64(svm::vmcb::INT_STATE) & 1 != 0 }
    }
    fn event_pending(v: &Vcpu) -> bool {
        if is_vmx() {
            vmx::vmread(vmx::field::ENTRY_INTR_INFO) & EVENT_VALID != 0
        } else {
            v.vmcb.r64(svm::vmcb::EVENT_INJ) & EVENT_VALID != 0
        }
    }
    /// Whether an NMI may be injected: not blocked by a previous one still
    /// in its handler (VMX: virtual-NMI blocking, which the CPU clears at
    /// the guest's IRET; SVM: [`NmiGate`]) nor by STI/MOV SS.
    fn nmi_open(v: &mut Vcpu) -> bool {
        if is_vmx() {
            vmx::vmread(vmx::field::GUEST_INTERRUPTIBILITY) & 0b1011 == 0
        } else {
            let rip = v.vmcb.r64(svm::vmcb::RIP);
            v.nmi_gate.can_inject(rip)
        }
    }
    /// Injects an NMI (interruption type 2, vector 2). Under SVM the IRET
    /// intercept then tells when the handler ends.
    fn inject_nmi(v: &mut Vcpu) {
        let ev = 2 | (2 << 8) | EVENT_VALID;
        if is_vmx() {
            vmx::vmwrite(vmx::field::ENTRY_INTR_INFO, ev);
        } else {
            v.vmcb.w64(svm::vmcb::EVENT_INJ, ev);
            v.nmi_gate.injected();
            Regs::set_iret_intercept(v);
        }
    }
    /// SVM: intercept IRET exactly while [`NmiGate::wants_iret_intercept`].
    fn set_iret_intercept(v: &mut Vcpu) {
        let m = v.vmcb.r64(svm::vmcb::INTERCEPT_MISC1) as u32;
        let bit = 1 << 20;
        let want = if v.nmi_gate.wants_iret_intercept() { m | bit } else { m & !bit };
        if want != m {
            v.vmcb.w32(svm::vmcb::INTERCEPT_MISC1, want);
            v.vmcb.w32(svm::vmcb::CLEAN, 0);
        }
    }
    fn inject_interrupt(v: &mut Vcpu, vector: u8) {
        let ev = u64::from(vector) | EVENT_VALID;
        if is_vmx() {
            vmx::vmwrite(vmx::field::ENTRY_INTR_INFO, ev);
        } else {
            v.vmcb.w64(svm::vmcb::EVENT_INJ, ev);
        }
    }
    /// Asks for an exit as soon as the guest can take an interrupt.
    fn request_window(v: &mut Vcpu, on: bool) {
        if is_vmx() {
            let p = vmx::vmread(vmx::field::PROC_CONTROLS);
            vmx::vmwrite(vmx::field::PROC_CONTROLS, if on { p | (1 << 2) } else { p & !(1 << 2) });
        } else {
            // V_IRQ with top priority, TPR ignored, and the VINTR intercept.
            let c = v.vmcb.r64(svm::vmcb::INT_CTL);
            let bits = VIRQ_BITS;
            v.vmcb.w64(svm::vmcb::INT_CTL, if on { c | bits } else { c & !bits });
            let m = v.vmcb.r64(svm::vmcb::INTERCEPT_MISC1) as u32;
            v.vmcb.w32(svm::vmcb::INTERCEPT_MISC1, if on { m | (1 << 4) } else { m & !(1 << 4) });
            v.vmcb.w32(svm::vmcb::CLEAN, 0);
        }
    }
    /// SVM: arms V_IRQ with `vector` at top priority (TPR ignored: the
    /// virtual APIC has already weighed it) and no VINTR intercept, so the
    /// guest takes it at its first chance without an exit.
    fn arm_virq(v: &mut Vcpu, vector: u8) {
        let c = v.vmcb.r64(svm::vmcb::INT_CTL);
        let c = (c & !(0xff << 32)) | (u64::from(vector) << 32) | VIRQ_BITS;
        v.vmcb.w64(svm::vmcb::INT_CTL, c);
        let m = v.vmcb.r64(svm::vmcb::INTERCEPT_MISC1) as u32;
        if m & (1 << 4) != 0 {
            v.vmcb.w32(svm::vmcb::INTERCEPT_MISC1, m & !(1 << 4));
        }
        v.vmcb.w32(svm::vmcb::CLEAN, 0);
    }
    fn clear_shadow(v: &mut Vcpu) {
        if is_vmx() {
            let st = vmx::vmread(vmx::field::GUEST_INTERRUPTIBILITY);
            vmx::vmwrite(vmx::field::GUEST_INTERRUPTIBILITY, st & !3);
        } else {
            let st = v.vmcb.r64(svm::vmcb::INT_STATE);
            v.vmcb.w64(svm::vmcb::INT_STATE, st & !1);
        }
    }
    fn rip(v: &Vcpu) -> u64 {
        if is_vmx() { vmx::vmread(vmx::field::GUEST_RIP) } else { v.vmcb.r64(svm::vmcb::RIP) }
    }
    fn set_rip(v: &mut Vcpu, rip: u64) {
        if is_vmx() {
            vmx::vmwrite(vmx::field::GUEST_RIP, rip);
        } else {
            v.vmcb.w64(svm::vmcb::RIP, rip);
        }
    }
}

/// Whether external interrupts reach the guest as SVM virtual interrupts
/// (V_IRQ, taken by the CPU) rather than injected events (EVENTINJ, after
/// the kernel checked RFLAGS.IF and the shadow): on an SVM without
/// NRIP-save, which today means QEMU's TCG (every AMD CPU of the last
/// decade has it), whose injected interrupts can be delivered twice (see
/// `pre_entry`). Bochs 2.7's SVM (with NRIP-save) did not deliver such a
/// V_IRQ to a guest woken from HLT (`vm/bochs-ryzen-svm-nrip`'s
/// `guest_hlt_timer` hung), so the architected injection stays everywhere
/// else.
#[inline(always)]
fn virq_delivery() -> bool {
    matches!(backend(), Some(Hw::Svm(i)) if !i.nrip_save)
}

/// V_IRQ (bit 8), V_INTR_PRIO 15 (bits 16-19) and V_IGN_TPR (bit 20) of the
/// VMCB's V_INTR control (APM Vol. 2 §15.21.4).
const VIRQ_BITS: u64 = (1 << 8) | (0xf << 16) | (1 << 20);

/// SVM, right after an exit: the vector armed in V_IRQ at the entry (see
/// `pre_entry`) was taken if the CPU cleared V_IRQ; otherwise it goes back
/// from ISR to IRR and V_IRQ is cleared, so the exit's handling (an EOI,
/// a read of ISR or PPR, a HLT) sees the APIC as the guest does. Returns
/// the exit's EXITINTINFO to act on: QEMU reports a virtual interrupt whose
/// delivery an exit cut short as an exception of that vector with V_IRQ
/// still set, which the interrupt, back in IRR, replaces (hardware reports
/// a taken one as an external interrupt, delivered again as such).
fn settle_virq(vcpu: &mut Vcpu, iinfo: u64) -> u64 {
    let Some(vector) = vcpu.virq.take() else { return iinfo };
    let c = vcpu.vmcb.r64(svm::vmcb::INT_CTL);
    if c & (1 << 8) == 0 {
        return iinfo;
    }
    vcpu.vmcb.w64(svm::vmcb::INT_CTL, c & !VIRQ_BITS);
    vcpu.lapic.lock().unack(vector);
    if iinfo & EVENT_VALID != 0 && iinfo as u8 == vector && (iinfo >> 8) & 7 != 2 { 0 } else { iinfo }
}

/// Before an entry: advances the APIC timer and hands the highest pending
/// interrupt to the guest: under SVM armed in V_IRQ (taken when the guest
/// can), under VMX injected if the guest can take one now, else a window
/// is asked for.
///
/// The clock is read and the timer ticked only while it is armed
/// (`VLapic::timer_armed`): otherwise a tick raises nothing. The APIC's
/// lock borrows only `vcpu.lapic`, so the VMCB/VMCS reads go on beside it;
/// the writes (which take the whole vCPU) come after it is let go, the
/// decision having been made under it. Only this vCPU's thread takes its
/// NMI or acknowledges its interrupts, so nothing taken here can be taken
/// by another CPU meanwhile.
fn pre_entry(vcpu: &mut Vcpu) {
    let mut l = vcpu.lapic.lock();
    if l.timer_armed() {
        l.tick(lapic_now());
    }
    // An NMI goes first, whatever RFLAGS.IF says (SDM Vol. 3A §6.7.1).
    if l.nmi_pending() {
        drop(l);
        if !Regs::event_pending(vcpu) && Regs::nmi_open(vcpu) {
            vcpu.lapic.lock().take_nmi();
            Regs::inject_nmi(vcpu);
        }
        l = vcpu.lapic.lock();
    }
    let Some(vector) = l.pending_interrupt() else {
        drop(l);
        Regs::request_window(vcpu, false);
        return;
    };
    if virq_delivery() {
        // A virtual interrupt (V_IRQ), which the CPU delivers once the
        // guest can take it (RFLAGS.IF, no interrupt shadow), not an
        // injected event. QEMU 7.2's TCG delivers an injected interrupt
        // (EVENTINJ type 0) at VMRUN but leaves it as the CPU's pending
        // exception, and delivers it a second time if its execution loop
        // is asked to stop before anything replaces it (`helper_vmrun`
        // sets `exception_index` to the vector; `cpu_handle_interrupt`
        // keeps it on an exit request; `cpu_handle_exception` delivers it):
        // the Linux guest then took the same vector again inside its own
        // handler, with interrupts off (an RCU stall on the descriptor
        // lock, or a per-CPU fault on the entry stack), about one boot in
        // a hundred and forty with one emulator thread for both CPUs.
        l.ack(vector);
        drop(l);
        Regs::arm_virq(vcpu, vector);
        vcpu.virq = Some(vector);
        return;
    }
    if Regs::event_pending(vcpu) {
        return;
    }
    if Regs::rflags(vcpu) & (1 << 9) != 0 && !Regs::shadow(vcpu) {
        l.ack(vector);
        drop(l);
        Regs::inject_interrupt(vcpu, vector);
        Regs::request_window(vcpu, false);
    } else {
        drop(l);
        Regs::request_window(vcpu, true);
    }
}

/// What a HLT becomes.
enum Halt {
    /// An interrupt is ready: carry on in the guest.
    Continue,
    /// Sleep until the APIC timer (APIC time base) or an IPI.
    Until(u64),
    /// Nothing can wake it (interrupts off, no timer): tell the VMM, and
    /// whether every vCPU of the guest is stopped so.
    ToVmm { all: bool },
}

fn on_hlt(vcpu: &mut Vcpu) -> Halt {
    let interrupts_on = Regs::rflags(vcpu) & (1 << 9) != 0;
    let inputs = {
        let mut l = vcpu.lapic.lock();
        l.tick(lapic_now());
        HltInputs {
            interrupts_on,
            nmi_pending: l.nmi_pending(),
            interrupt_ready: l.pending_interrupt().is_some(),
            timer_deadline: l.next_timer_deadline(),
            others_stopped: false,
        }
    };
    let decision = if !interrupts_on && !inputs.nmi_pending {
        // Announce the stop, then look at this vCPU's APIC again and at the
        // others in one snapshot: of two vCPUs stopping at once the second
        // sees the first, and an NMI latched since the look above wakes
        // this one (`stop_with_interrupts_off`).
        stop_with_interrupts_off(|| vcpu.stopped.store(true, Ordering::SeqCst), || look_when_stopping(vcpu))
    } else {
        hlt_decision(&inputs)
    };
    match decision {
        HltDecision::Continue => {
            vcpu.stopped.store(false, Ordering::SeqCst);
            Halt::Continue
        }
        // Until the APIC timer, an IPI or a kick.
        HltDecision::SleepUntil(deadline) => Halt::Until(deadline),
        // Stopped until an NMI or INIT: the VMM decides (it ends the VM
        // when `all`); running the vCPU again sleeps until one arrives.
        HltDecision::Stopped { all } => {
            vcpu.attention.store(true, Ordering::Release);
            Halt::ToVmm { all }
        }
    }
}

/// What a vCPU stopping with interrupts off sees, in one snapshot under
/// the kernel lock, which IPI delivery (`apply`) holds too: what its own
/// APIC has latched, and whether every other vCPU of its guest is stopped
/// (halted with interrupts off or waiting for a start-up IPI, with nothing
/// latched that wakes it). Takes the kernel lock, then each APIC's (as
/// `apply`).
fn look_when_stopping(vcpu: &Vcpu) -> Look {
    let k = super::lock();
    let own = {
        let l = vcpu.lapic.lock();
        Latched { nmi: l.nmi_pending(), init: l.init_pending() }
    };
    if own.nmi || own.init {
        return Look { own, others_stopped: false };
    }
    Look { own, others_stopped: others_stopped(&k, vcpu) }
}

/// Whether every other vCPU of `vcpu`'s guest is stopped (see
/// `look_when_stopping`), the kernel lock held.
fn others_stopped(k: &super::Kernel, vcpu: &Vcpu) -> bool {
    let Some(g) = k.guests.get(vcpu.guest) else { return true };
    for &t in &g.vcpus {
        let Some(v) = k.vcpus.get(t) else { continue };
        if Arc::ptr_eq(&v.lapic, &vcpu.lapic) {
            continue;
        }
        let l = v.lapic.lock();
        let other = OtherVcpu {
            halted_no_interrupts: v.stopped.load(Ordering::SeqCst),
            waiting_for_sipi: l.waiting_for_sipi(),
            sipi_pending: l.sipi_pending(),
            nmi_or_init_pending: l.nmi_pending() || l.init_pending(),
        };
        if !other.stopped() {
            return false;
        }
    }
    true
}

/// Whether what a halted vCPU sleeps for arrived between its HLT exit and
/// now (the sender found its thread not yet asleep): then it does not
/// sleep but enters `VcpuRun` again. Called with the kernel lock held.
fn woken_meanwhile(vcpu: &Vcpu) -> bool {
    // `VcpuKick` and IPIs change this state under the kernel lock, and wake
    // the thread only once it is asleep.
    if vcpu.kicked.load(Ordering::Acquire) {
        return true;
    }
    let l = vcpu.lapic.lock();
    if l.nmi_pending() || l.init_pending() || l.sipi_pending() {
        return true;
    }
    !vcpu.stopped.load(Ordering::SeqCst) && !l.waiting_for_sipi() && l.pending_interrupt().is_some()
}

/// An APIC MSR access; None when `index` is not the APIC's.
fn lapic_msr(vcpu: &mut Vcpu, index: u32, write: bool, value: u64) -> Option<Result<Option<u64>, ()>> {
    if !kcore::vlapic::is_lapic_msr(index) {
        return None;
    }
    let now = lapic_now();
    let lapic = vcpu.lapic.clone();
    let mut l = lapic.lock();
    if write {
        match l.msr_write(index, value, now) {
            Ok(effect) => {
                drop(l);
                apply(vcpu, effect);
                Some(Ok(None))
            }
            Err(_) => Some(Err(())),
        }
    } else {
        Some(l.msr_read(index, now).map(Some).map_err(|_| ()))
    }
}

/// What decoding an instruction needs of the guest's state.
struct Mode {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    cs_base: u64,
    cs_attrib: u16,
    rip: u64,
}

fn mode(vcpu: &Vcpu) -> Mode {
    if is_vmx() {
        use vmx::field as f;
        Mode {
            cr0: vmx::guest_cr0(),
            cr3: vmx::vmread(f::GUEST_CR3),
            cr4: vmx::guest_cr4(),
            efer: vmx::vmread(f::GUEST_EFER),
            cs_base: vmx::vmread(f::GUEST_ES_BASE + 2),
            cs_attrib: {
                let ar = vmx::vmread(f::GUEST_ES_AR + 2);
                ((ar & 0xff) | ((ar >> 4) & 0xf00)) as u16
            },
            rip: vmx::vmread(f::GUEST_RIP),
        }
    } else {
        use svm::vmcb as f;
        Mode {
            cr0: vcpu.vmcb.r64(f::CR0),
            cr3: vcpu.vmcb.r64(f::CR3),
            cr4: vcpu.vmcb.r64(f::CR4),
            efer: vcpu.vmcb.r64(f::EFER),
            cs_base: vcpu.vmcb.r64(f::ES + 16 + 8),
            // The segment's attributes are the u16 after its selector.
            cs_attrib: (vcpu.vmcb.r64(f::ES + 16) >> 16) as u16,
            rip: vcpu.vmcb.r64(f::RIP),
        }
    }
}

/// Reads guest-physical memory through the guest's nested tables (only
/// frames mapped into this guest, read through the direct map); false if
/// any of it is not guest RAM. Device frames (mapped uncached, perhaps
/// above the direct map) are never read: the kernel would fault on a BAR
/// above 4 GiB and read one below through a cached mapping (finding 14).
/// Only under [`with_tables`], which keeps the tables from being freed.
fn read_guest(vcpu: &Vcpu, gpa: u64, out: &mut [u8]) -> bool {
    let mut done = 0;
    while done < out.len() {
        let a = gpa.wrapping_add(done as u64);
        let page = a & !(PAGE - 1);
        let hpa = if is_vmx() {
            pagetable::translate::<Ept, _>(&Tables::new(), vcpu.ept_root, page)
        } else {
            pagetable::translate::<Npt, _>(&Tables::new(), vcpu.ept_root, page)
        };
        let Some((hpa, flags)) = hpa else { return false };
        if !guest_ram(flags) {
            return false;
        }
        // Test-only (kernel/inject.rs): hold the walk between the
        // translation and the read, where another CPU may unmap the page
        // (finding 13); the pause ends soon after the tables change.
        if super::inject::armed(abi::FaultPoint::GuestWalk) {
            let generation = vcpu.tlb_generation.load(Ordering::SeqCst);
            super::inject::pause(abi::FaultPoint::GuestWalk, || vcpu.tlb_generation.load(Ordering::SeqCst) != generation);
        }
        let off = (a & (PAGE - 1)) as usize;
        let n = (out.len() - done).min(PAGE as usize - off);
        // SAFETY: `hpa` is a frame mapped into this guest as RAM (not a
        // device frame: `guest_ram`), so RAM the kernel owns, in the direct
        // map; `with_tables` keeps `guest_unmap` from freeing it (or the
        // tables that led here) meanwhile; the copy stays inside the page.
        unsafe {
            core::ptr::copy_nonoverlapping((hpa + arch::PHYS_OFFSET + off as u64) as *const u8, out[done..].as_mut_ptr(), n)
        };
        done += n;
    }
    true
}

/// After a shutdown exit (a triple fault): the guest's walk of its RIP,
/// each of its tables read through the nested tables the kernel made, and
/// the nested root the hardware had, for the VMM's fault report
/// (`abi::NestedWalk`). A guest whose own walk failed although its tables
/// are intact in its RAM shows here whether the nested side was wrong.
fn nested_walk(vcpu: &Vcpu) -> abi::NestedWalk {
    let (hw_root, asid) = if is_vmx() {
        (vmx::vmread(vmx::field::EPT_POINTER) & !(PAGE - 1), u32::from(vcpu.vpid))
    } else {
        (vcpu.vmcb.r64(svm::vmcb::N_CR3), vcpu.vmcb.r64(svm::vmcb::ASID) as u32)
    };
    let mut w = abi::NestedWalk { hw_root, root: vcpu.ept_root, asid, ..abi::NestedWalk::default() };
    with_tables(vcpu, || {
        let m = mode(vcpu);
        let va = m.cs_base.wrapping_add(m.rip);
        let mut steps = 0;
        let step = |gpa: u64| -> Option<u64> {
            let i = steps;
            if i == w.leaves.len() {
                return None;
            }
            steps += 1;
            w.steps = steps as u32;
            let page = gpa & !(PAGE - 1);
            let leaf = if is_vmx() {
                pagetable::leaf_entry::<Ept, _>(&Tables::new(), vcpu.ept_root, page)
            } else {
                pagetable::leaf_entry::<Npt, _>(&Tables::new(), vcpu.ept_root, page)
            };
            w.leaves[i] = leaf?;
            let mut b = [0u8; 8];
            if !read_guest(vcpu, gpa, &mut b) {
                return None;
            }
            w.entries[i] = u64::from_le_bytes(b);
            Some(w.entries[i])
        };
        let _ = kcore::insn::guest_translate(m.cr0, m.cr3, m.cr4, m.efer, va, step);
    });
    w
}

/// Whether a nested-table leaf maps guest RAM: `guest_map` maps device
/// frames, and only those, uncached.
fn guest_ram(flags: Flags) -> bool {
    !flags.cache_disable
}

/// Runs `walk` over the guest's nested tables and the frames they map,
/// outside the guest and without the kernel lock, safe from a concurrent
/// `guest_unmap` (finding 13): `in_guest` is raised for the walk as for
/// an entry, and `guest_unmap` changes the tables and frees pages only
/// under the lock, then waits (`kick_guest`) for every running vCPU of
/// the guest to have `in_guest` clear before the lock, and with it the
/// freed pages, go. Whoever raised the flag before the unmapper looked
/// is waited for; whoever raised it after sees the new tables (the flag's
/// store and the unmapper's generation bump are both full barriers).
/// `walk` must not take the kernel lock (the unmapper holds it while it
/// waits).
fn with_tables<R>(vcpu: &Vcpu, walk: impl FnOnce() -> R) -> R {
    vcpu.in_guest.store(true, Ordering::SeqCst);
    let r = walk();
    vcpu.in_guest.store(false, Ordering::Release);
    r
}

/// The bytes of the instruction at the guest's RIP (up to 15, fewer at the
/// end of its mapped memory), through its own page tables.
fn fetch_insn(vcpu: &Vcpu) -> Option<([u8; 15], usize)> {
    with_tables(vcpu, || fetch_insn_walk(vcpu))
}

fn fetch_insn_walk(vcpu: &Vcpu) -> Option<([u8; 15], usize)> {
    let m = mode(vcpu);
    let va = m.cs_base.wrapping_add(m.rip);
    let walk = |a: u64| -> Option<u64> {
        let mut b = [0u8; 8];
        read_guest(vcpu, a, &mut b).then(|| u64::from_le_bytes(b))
    };
    let mut bytes = [0u8; 15];
    let mut n = 0;
    while n < 15 {
        let Some(pa) = kcore::insn::guest_translate(m.cr0, m.cr3, m.cr4, m.efer, va.wrapping_add(n as u64), walk) else {
            break;
        };
        let chunk = (15 - n).min((PAGE - (pa & (PAGE - 1))) as usize);
        if !read_guest(vcpu, pa, &mut bytes[n..n + chunk]) {
            break;
        }
        n += chunk;
    }
    (n > 0).then_some((bytes, n))
}

/// SVM: the guest's `mov cr8, reg` (intercepted, see `Vmcb::init`), done
/// as the CPU does it with V_INTR_MASKING: the value goes to V_TPR
/// (INT_CTL bits 3:0); reserved bits set: #GP(0). False when the bytes at
/// RIP are not such a `mov` (the VMM reports the exit).
fn cr8_write(vcpu: &mut Vcpu) -> bool {
    use svm::vmcb as f;
    let m = mode(vcpu);
    let long = m.efer & (1 << 10) != 0 && m.cs_attrib & (1 << 9) != 0;
    let Some((bytes, n)) = fetch_insn(vcpu) else { return false };
    let Some(d) = kcore::insn::decode_mov_to_cr8(&bytes[..n], long) else { return false };
    // RAX and RSP live in the VMCB.
    let value = match d.reg {
        0 => vcpu.vmcb.r64(f::RAX),
        4 => vcpu.vmcb.r64(f::RSP),
        r => vcpu.gprs[usize::from(r)],
    };
    let value = if long { value } else { value & 0xffff_ffff };
    if value & !0xf != 0 {
        inject_exception(vcpu, 13, Some(0));
        return true;
    }
    let c = vcpu.vmcb.r64(f::INT_CTL);
    vcpu.vmcb.w64(f::INT_CTL, (c & !0xf) | value);
    advance(vcpu, u64::from(d.len));
    true
}

/// An access to the xAPIC page at `gpa`: decodes the `mov` at RIP and does
/// it. False to hand the exit to the VMM (not the APIC, or another form).
fn lapic_mmio(vcpu: &mut Vcpu, gpa: u64) -> bool {
    let base = vcpu.lapic.lock().mmio_base();
    let Some(base) = base else { return false };
    if gpa < base || gpa >= base + PAGE {
        return false;
    }
    let m0 = mode(vcpu);
    let long = m0.efer & (1 << 10) != 0 && m0.cs_attrib & (1 << 9) != 0;
    let Some((bytes, _)) = fetch_insn(vcpu) else { return false };
    let Some(m) = kcore::insn::decode_mov32(&bytes, long) else { return false };
    let offset = (gpa - base) as u32;
    let now = lapic_now();
    if m.write {
        let value = match m.reg {
            Some(r) => vcpu.gprs[r as usize] as u32,
            None => m.imm,
        };
        let effect = vcpu.lapic.lock().mmio_write(offset, value, now);
        apply(vcpu, effect);
    } else {
        let value = vcpu.lapic.lock().mmio_read(offset, now);
        if let Some(r) = m.reg {
            // A 32-bit load zero-extends in 64-bit mode.
            vcpu.gprs[r as usize] = u64::from(value);
        }
    }
    let rip = Regs::rip(vcpu);
    Regs::set_rip(vcpu, rip.wrapping_add(u64::from(m.len)));
    Regs::clear_shadow(vcpu);
    true
}

impl Kernel {
    /// `VcpuInterrupt`: a fixed interrupt into the vCPU's APIC, then the
    /// same wake-up as an IPI from another vCPU.
    pub fn vcpu_interrupt(&mut self, id: Id, vector: u8, level: bool) -> Result<(), Error> {
        let v = self.vcpus.get(id).ok_or(Error::Gone)?;
        let trigger = if level { kcore::vlapic::TriggerMode::Level } else { kcore::vlapic::TriggerMode::Edge };
        v.lapic.lock().accept(vector, trigger);
        let in_guest = v.in_guest.load(Ordering::Acquire);
        if let Some(th) = v.thread {
            self.wake_vcpu_thread(th, in_guest);
        }
        Ok(())
    }

    /// `VcpuKick`: see abi.
    pub fn vcpu_kick(&mut self, id: Id) -> Result<(), Error> {
        let v = self.vcpus.get(id).ok_or(Error::Gone)?;
        // SeqCst both: the store must be visible before `in_guest` is read
        // (a store may pass a later load on x86). The vCPU's thread stores
        // `in_guest` then reads `kicked` (both SeqCst): one of the two sees
        // the other. With Release/Acquire here both could miss: the vCPU
        // entered its guest unkicked and no IPI came (a spinning AP never
        // stopped: guest_ipi's 'AP thread did not stop', 1 run in 6).
        v.kicked.store(true, Ordering::SeqCst);
        let in_guest = v.in_guest.load(Ordering::SeqCst);
        if let Some(th) = v.thread {
            self.wake_vcpu_thread(th, in_guest);
        }
        Ok(())
    }

    /// Gets a vCPU's thread to look at its APIC or kick flag: a halted one
    /// becomes runnable, one in the guest on another CPU is made to exit.
    fn wake_vcpu_thread(&mut self, th: Id, in_guest: bool) {
        let Some(t) = self.thread(th) else { return };
        let cpu = t.cpu;
        if t.state == super::ThreadState::GuestHalted {
            self.make_runnable(th);
        } else if in_guest && cpu != percpu::index() {
            let p = percpu::of(cpu);
            p.need_resched.store(true, Ordering::Release);
            arch::apic::send_fixed(p.apic_id.load(Ordering::Relaxed), arch::apic::RESCHED_VECTOR);
        }
    }
}

/// Carries out what an APIC register write asked for: IPIs go to the
/// matching vCPUs of the same guest (waking a halted one, kicking a running
/// one off its CPU).
fn apply(vcpu: &mut Vcpu, effect: Effect) {
    if let Effect::Eoi { vector, level_triggered: true } = effect {
        // SDM Vol. 3A §12.8.5: the EOI goes to the I/O APICs (here the
        // VMM's) for a level-triggered vector.
        vcpu.eoi_exit = Some(vector);
        return;
    }
    let Effect::SendIpi(ipi) = effect else { return };
    let mut k = super::lock();
    let Some(g) = k.guests.get(vcpu.guest) else { return };
    let targets: alloc::vec::Vec<Id> = g.vcpus.clone();
    let mut wake = alloc::vec::Vec::new();
    for t in targets {
        let Some(v) = k.vcpus.get(t) else { continue };
        let lapic = v.lapic.clone();
        // The sender's own APIC too (a self-IPI, an all-including-self
        // broadcast): its callers drop their guard before `apply`, so the
        // lock is only ever held briefly by another thread delivering to
        // it. A try-lock here dropped the self-IPI whenever one was.
        let mut l = lapic.lock();
        if !l.matches(&ipi.dest) {
            continue;
        }
        l.deliver(ipi.mode, ipi.vector, ipi.trigger);
        drop(l);
        if matches!(ipi.mode, DeliveryMode::Init | DeliveryMode::Startup | DeliveryMode::Nmi) {
            v.attention.store(true, Ordering::Release);
        }
        if let Some(th) = v.thread {
            wake.push((th, v.in_guest.load(Ordering::Acquire)));
        }
    }
    for (th, in_guest) in wake {
        k.wake_vcpu_thread(th, in_guest);
    }
}

/// Puts an AP at its start-up vector: real mode, CS = vector << 8, IP = 0
/// (SDM Vol. 3A §9.4.4).
/// The caller loads `run`'s registers and system state next.
fn start_at_sipi(vcpu: &mut Vcpu, run: &mut VcpuRun, vector: u8) {
    reset_state(run);
    run.segments[1] = abi::Segment { selector: u16::from(vector) << 8, attrib: 0x9b, limit: 0xffff, base: u64::from(vector) << 12 };
    run.rip = 0;
    run.gprs = [0; 16];
    vcpu.gprs = [0; 16];
}

/// `LOAD_FPU`: takes the VMM's FXSAVE image from `run`, the kernel's copy
/// of the run page (never the page itself, which another VMM thread may
/// change after the check), unless its MXCSR sets bits this CPU reserves:
/// FXRSTOR would raise #GP in the kernel.
fn load_fpu(vcpu: &mut Vcpu, run: &VcpuRun) {
    let mxcsr = u32::from_le_bytes([run.fpu[24], run.fpu[25], run.fpu[26], run.fpu[27]]);
    if mxcsr & !*MXCSR_MASK == 0 {
        vcpu.fpu.0.copy_from_slice(&run.fpu);
        // The mask is the CPU's, never the VMM's.
        vcpu.fpu.0[28..32].copy_from_slice(&CLEAN_FPU.0[28..32]);
    }
}

/// At the end of a VMX run: the guest's FPU image to the shadow if asked
/// (published from there).
fn save_fpu(vcpu: &Vcpu, run: &mut VcpuRun) {
    if run.fpu_request & 1 != 0 {
        run.fpu.copy_from_slice(&vcpu.fpu.0);
    }
}

/// The exiting instruction's bytes for the VMM's decoder.
fn fill_insn(vcpu: &Vcpu, run: &mut VcpuRun) {
    match fetch_insn(vcpu) {
        Some((bytes, n)) => {
            run.insn = bytes;
            run.insn_len = n as u8;
        }
        None => run.insn_len = 0,
    }
}
