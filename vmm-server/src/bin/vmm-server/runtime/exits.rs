//! The vCPU threads' exit handling: port I/O (with the coalesced ring the
//! kernel fills), MMIO through the instruction emulator, MSRs (kvmclock and
//! the ones Linux probes), and everything else that ends the VM.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use abi::{VcpuExit, VcpuRun};
use libipc::sys;
use vmm_server::boot::{acpi, layout};
use vmm_server::mmio::{self, MmioBus};
use vmm_server::vm::diagnose;
use vmm_server::vm::memory::GuestRam;
use vmm_server::vm::platform::Platform;
use vmm_server::vm::exit_counts::KernelExits;
use vmm_server::vm::port_counts::{AddrCounts, PortCounts};
use vmm_server::vm::pvclock;
use alcove_rt::RunPage;

use super::{Ending, GuestMemory, Shared};

pub(super) fn mask(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (8 * u32::from(size))) - 1 }
}

/// The kinds of `Shared::vmm_ticks`: the five of `Shared::exits`, other
/// exits, then `run_disks`.
pub(super) const VMM_TICK_KINDS: usize = 7;

/// #GP(0), as hardware raises for a bad MSR.
const INJECT_GP0: u64 = (1 << 31) | (3 << 8) | 13 | (1 << 11);

pub(super) fn vcpu_loop(sh: &Shared, index: usize, page: &mut RunPage) {
    let mut unknown_msrs = 0u32;
    // This vCPU's kvmclock MSRs (wall clock, system time), as last written.
    let mut kvm_msrs = [0u64; 2];
    // This vCPU's port-I/O exits by port, merged into the VM's at the end.
    let mut ports = PortCounts::new();
    // And its MMIO exits by guest-physical address, MSR exits by MSR.
    let mut mmios = AddrCounts::named("addresses");
    let mut msrs = AddrCounts::named("MSRs");
    // TSC ticks this thread spent on exits in the VMM, by kind (as
    // `Shared::vmm_ticks`), and in `run_disks`.
    let mut ticks = [0u64; VMM_TICK_KINDS];
    // The exits the kernel finished itself, from the run page's trace.
    let mut kernel_exits = KernelExits::new(page.state());
    // Firmware VMs: the kernel answers the ACPI PM timer's 4-byte reads
    // itself (OVMF polls it through every delay: some 280,000 exits per
    // boot otherwise), from the clock and epoch `Platform`'s own PM-timer
    // reads use, so both give the same count.
    if sh.platform.lock().fw_cfg().is_some() {
        let run = page.state();
        run.pio_clock_port = acpi::PM_TMR_BLK;
        run.pio_clock_hz = acpi::PM_TIMER_HZ as u32;
        run.pio_clock_epoch_ns = sh.epoch_ns;
    }
    if index == 0 {
        // `cargo xtask bench --case bench/vmadm-create` pairs this with
        // the time the VM's `vmadm create` was sent.
        alcove_rt::println!("vm {}: first guest entry at {} ns since boot", sh.name, alcove_rt::clock_ns());
    }
    while !sh.stopping.load(Ordering::Acquire) {
        let exit = match page.run() {
            Ok(r) => VcpuExit::from_u32(r as u32),
            Err(e) => {
                sh.end(Ending::Error(format!("vCPU {index}: VcpuRun failed: {e}")));
                break;
            }
        };
        let back = alcove_rt::rdtsc();
        let run = page.state();
        kernel_exits.absorb(run);
        // Buffered OUTs happened before this exit: carry them out first.
        replay_pio_ring(sh, run);
        let kind = match exit {
            Some(VcpuExit::Io) if (0x3f8..0x400).contains(&run.port) => Some(1),
            Some(VcpuExit::Io) => Some(0),
            Some(VcpuExit::Mmio) => Some(2),
            Some(VcpuExit::Msr) => Some(3),
            Some(VcpuExit::Interrupted) => Some(4),
            _ => None,
        };
        if let Some(k) = kind {
            sh.exits[k].fetch_add(1, Ordering::Relaxed);
        }
        match exit {
            Some(VcpuExit::Io) => io_exit(sh, run),
            Some(VcpuExit::Mmio) => {
                if let Err(e) = mmio_exit(sh, run) {
                    sh.end(Ending::Error(format!("vCPU {index}: {e}")));
                }
            }
            Some(VcpuExit::Msr) => msr_exit(sh, run, index, &mut kvm_msrs, &mut unknown_msrs),
            Some(VcpuExit::Interrupted) => {}
            // The guest ended a level-triggered interrupt.
            Some(VcpuExit::Eoi) => sh.platform.lock().eoi(run.data as u8, sh.now()),
            // HLT with interrupts off. Another vCPU may still wake this
            // one with an NMI (memtest86+'s barriers do): run it again, the
            // kernel sleeps it until then. Once every vCPU is stopped so,
            // only a reset would end it.
            Some(VcpuExit::Hlt) if run.data != 0 => sh.end(Ending::Halted),
            Some(VcpuExit::Hlt) => {}
            Some(VcpuExit::Shutdown) => {
                // Where the guest was, for the operator (printed once the
                // guest's own output is out); the first vCPU's report wins.
                let mut report = sh.fault_report.lock();
                if report.is_none() {
                    let mut lines = diagnose::shutdown_report(index, run);
                    lines.extend(diagnose::shutdown_walks(index, &sh.ram, run));
                    lines.extend(diagnose::nested_walk(index, &sh.ram, run));
                    *report = Some(lines);
                }
                drop(report);
                sh.end(Ending::TripleFault)
            }
            other => sh.end(Ending::Error(format!(
                "vCPU {index}: exit {other:?} (hardware code {:#x}, info {:#x} {:#x}) at rip {:#x}, cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
                run.hw_code, run.info1, run.info2, run.rip, run.cr0, run.cr3, run.cr4, run.efer
            ))),
        }
        // Disk requests the exit queued: carried out without the platform
        // lock, completed under it.
        let handled = alcove_rt::rdtsc();
        super::run_disks(sh);
        let disks = alcove_rt::rdtsc();
        sh.deliver_from_vcpu();
        update_pio_rules(sh, run);
        let spent = handled.wrapping_sub(back) + alcove_rt::rdtsc().wrapping_sub(disks);
        ticks[kind.unwrap_or(VMM_TICK_KINDS - 2)] += spent;
        ticks[VMM_TICK_KINDS - 1] += disks.wrapping_sub(handled);
        let write = run.write != 0;
        match exit {
            Some(VcpuExit::Io) => ports.add_timed(run.port, write, 1, spent),
            // PCI configuration through ECAM counts as one address (its
            // registers would fill the table).
            Some(VcpuExit::Mmio) if (layout::ECAM_BASE..layout::ECAM_WINDOW_END).contains(&run.gpa) => {
                mmios.add_timed(layout::ECAM_BASE, write, 1, spent)
            }
            Some(VcpuExit::Mmio) => mmios.add_timed(run.gpa, write, 1, spent),
            Some(VcpuExit::Msr) => msrs.add_timed(u64::from(run.msr), write, 1, spent),
            _ => {}
        }
    }
    // Whatever this vCPU still holds goes to the devices before the VM's
    // final console flush (the main thread's, once every thread is done).
    replay_pio_ring(sh, page.state());
    if matches!(*sh.ending.lock(), Some(Ending::Halted)) {
        // Every vCPU stopped for good: where each one was, for the
        // operator (a guest's barrier whose wake-up never came).
        sh.fault_report.lock().get_or_insert_with(Vec::new).extend(diagnose::halt_report(index, page.state()));
    }
    sh.port_exits.lock().merge(&ports);
    sh.mmio_exits.lock().merge(&mmios);
    sh.msr_exits.lock().merge(&msrs);
    for (sum, t) in sh.vmm_ticks.iter().zip(ticks) {
        sum.fetch_add(t, Ordering::Relaxed);
    }
    sh.kernel_exits.lock().merge(&kernel_exits);
}

/// Carries out the OUTs the kernel buffered for this vCPU (coalesced port
/// I/O), in order.
fn replay_pio_ring(sh: &Shared, run: &mut VcpuRun) {
    let n = run.pio_pending();
    if n == 0 {
        return;
    }
    let now = sh.now();
    let mut mem = GuestRam::physical(&sh.ram);
    let mut p = sh.platform.lock();
    for i in 0..n {
        let e = run.pio_ring[run.pio_ring_head.wrapping_add(i) as usize % abi::PIO_RING_LEN];
        p.io_write(e.port, 1, u32::from(e.value), now, &mut mem);
    }
    run.pio_ring_head = run.pio_ring_head.wrapping_add(n);
}

/// Tells the kernel which port accesses it may finish itself: while the
/// serial port is a plain polled output (how Linux's console writes the
/// boot log), its THR writes are buffered and its LSR reads answered, two
/// exits per character fewer. Rechecked after every exit of this vCPU;
/// every access that could change the UART's state still exits. A
/// firmware VM's rules besides (`Platform::firmware_pio_rules`: the debug
/// console and POST port buffered, the CMOS index and port 0x92 answered)
/// take rule slots 1 and 2.
fn update_pio_rules(sh: &Shared, run: &mut VcpuRun) {
    let (rule, firmware) = {
        let p = sh.platform.lock();
        (p.serial_coalescing(), p.firmware_pio_rules())
    };
    match rule {
        Some((thr, lsr_port, lsr)) => {
            run.pio_buffered_ports[0] = thr;
            run.pio_constant_ports[0] = lsr_port;
            run.pio_constant_values[0] = lsr;
        }
        None => {
            run.pio_buffered_ports[0] = 0;
            run.pio_constant_ports[0] = 0;
        }
    }
    if let Some(f) = firmware {
        run.pio_buffered_ports[1..3].copy_from_slice(&f.buffered);
        for (i, &(port, value)) in f.constant.iter().enumerate() {
            run.pio_constant_ports[1 + i] = port;
            run.pio_constant_values[1 + i] = value;
        }
    }
}

fn io_exit(sh: &Shared, run: &mut VcpuRun) {
    let now = sh.now();
    let (port, size) = (run.port, run.size);
    if run.io_flags & 1 != 0 {
        // RIP moves only when the whole `rep` is done.
        return string_io(sh, run, now);
    } else if run.write != 0 {
        let mut mem = GuestRam::physical(&sh.ram);
        sh.platform.lock().io_write(port, size, (run.data & mask(size)) as u32, now, &mut mem);
        if Platform::reprograms_timers(port) {
            let _ = sys::signal(sh.timer, 1);
        }
    } else {
        let v = u64::from(sh.platform.lock().io_read(port, size, now));
        let m = mask(size);
        run.gprs[0] = (run.gprs[0] & !m) | (v & m);
    }
    // Only RIP and RAX changed: the 15 other registers stay in the kernel.
    run.rip = run.next_rip;
    run.load_state = abi::LOAD_RIP;
}

/// `ins`/`outs` (with or without `rep`), emulated by
/// `vmm_server::mmio::string_io` from the instruction at RIP (its address
/// size and segment override): a batch of elements per exit, RIP left on
/// the instruction until RCX reaches 0 (the guest re-executes it, as under
/// KVM), the guest's page-table permissions honoured and a fault on its
/// buffer injected as the #PF the hardware would raise.
fn string_io(sh: &Shared, run: &mut VcpuRun, now: u64) {
    let exit = mmio::PortExit { port: run.port, size: run.size, write: run.write != 0, rep: run.io_flags & 2 != 0 };
    let mut mem = GuestRam::for_vcpu(&sh.ram, run);
    let bytes = match mmio::fetch(&mut mem, run) {
        Ok(b) => b,
        Err(fault) => return inject_fault(sh, run, fault, "fetching a string I/O instruction"),
    };
    let mut ports = Ports { platform: sh.platform.lock(), ram: &sh.ram, now };
    let r = mmio::string_io(&bytes.0[..bytes.1], run, exit, &mut mem, &mut ports);
    drop(ports);
    run.load_state = abi::LOAD_GPRS;
    match r {
        Ok(_) => {
            if exit.write && Platform::reprograms_timers(exit.port) {
                let _ = sys::signal(sh.timer, 1);
            }
        }
        Err(mmio::EmulateError::Fault { fault, .. }) => inject_fault(sh, run, fault, "string I/O"),
        Err(e) => sh.end(Ending::Error(format!("string I/O at port {:#x}: {e}", exit.port))),
    }
}

/// Hands a fault of the guest's own making back to it: #PF with the error
/// code and CR2 (CR2 travels with the system state), or #GP(0). A fault
/// that is no exception (memory that is not RAM) ends the VM.
fn inject_fault(sh: &Shared, run: &mut VcpuRun, fault: mmio::MemFault, what: &str) {
    match fault.exception() {
        Some((event, cr2)) => {
            run.inject = event;
            if let Some(cr2) = cr2 {
                run.cr2 = cr2;
                run.load_state |= abi::LOAD_SYSTEM;
            }
        }
        None => sh.end(Ending::Error(format!(
            "{what} at rip {:#x}: {}",
            run.rip,
            mmio::EmulateError::Fault { rip: run.rip, fault }
        ))),
    }
}

/// The I/O-port bus of a string I/O exit.
struct Ports<'a> {
    platform: spin::MutexGuard<'a, Platform>,
    ram: &'a GuestMemory,
    now: u64,
}

impl mmio::PortBus for Ports<'_> {
    fn read(&mut self, port: u16, size: u8) -> u32 {
        self.platform.io_read(port, size, self.now)
    }
    fn write(&mut self, port: u16, size: u8, value: u32) {
        self.platform.io_write(port, size, value, self.now, &mut GuestRam::physical(self.ram));
    }
}

/// The guest-physical bus of an MMIO exit.
struct Bus<'a> {
    platform: spin::MutexGuard<'a, Platform>,
    ram: &'a GuestMemory,
}

impl MmioBus for Bus<'_> {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        self.platform.mmio_read(gpa, size)
    }
    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        self.platform.mmio_write(gpa, size, value, &mut GuestRam::physical(self.ram))
    }
}

fn mmio_exit(sh: &Shared, run: &mut VcpuRun) -> Result<(), String> {
    let gpa = run.gpa;
    let mut mem = GuestRam::for_vcpu(&sh.ram, run);
    let (bytes, len) = if run.insn_len > 0 {
        let mut b = [0u8; mmio::MAX_INSN_LEN];
        let n = usize::from(run.insn_len).min(b.len());
        b[..n].copy_from_slice(&run.insn[..n]);
        (b, n)
    } else {
        match mmio::fetch(&mut mem, run) {
            Ok(b) => b,
            Err(fault) => {
                inject_fault(sh, run, fault, "fetching an MMIO instruction");
                return Ok(());
            }
        }
    };
    let mut bus = Bus { platform: sh.platform.lock(), ram: &sh.ram };
    let r = mmio::emulate(&bytes[..len], run, gpa, &mut mem, &mut bus);
    drop(bus);
    // A `rep` may have done some elements before a fault: its registers
    // say so either way.
    run.load_state = abi::LOAD_GPRS;
    match r {
        Ok(_) => Ok(()),
        // The guest's own fault on its memory side (RAM half of `movs`,
        // the other page of a split access): the exception it would take.
        Err(mmio::EmulateError::Fault { fault, .. }) if fault.exception().is_some() => {
            inject_fault(sh, run, fault, "MMIO");
            Ok(())
        }
        Err(e) => Err(format!("MMIO at {gpa:#x}, rip {:#x}: {e}", run.rip)),
    }
}

/// MSRs a Linux guest reads or writes on AMD and Intel CPUs that carry no
/// state here: reads give 0, writes are dropped (as KVM does for them).
/// Patch level, HWCR, SYSCFG, NB_CFG, TSEG, MMIO_CONF_BASE, LS_CFG,
/// DE_CFG, BU_CFG2, the microcode update trigger and signature,
/// PLATFORM_ID, FEATURE_CONTROL.
const QUIET_MSRS: &[u32] = &[
    0x8b, 0xc001_0015, 0xc001_0010, 0xc001_001f, 0xc001_0112, 0xc001_0058, 0xc001_1020, 0xc001_1029, 0xc001_102a,
    0x79, 0x17, 0x3a,
];

fn msr_exit(sh: &Shared, run: &mut VcpuRun, index: usize, kvm: &mut [u64; 2], unknown: &mut u32) {
    let done = |run: &mut VcpuRun, read: Option<u64>| {
        if let Some(v) = read {
            run.gprs[0] = v & 0xffff_ffff;
            run.gprs[2] = v >> 32;
        }
        run.rip = run.next_rip;
        run.load_state = abi::LOAD_GPRS;
    };
    let write = run.write != 0;
    let kvm_index = match run.msr {
        pvclock::MSR_KVM_WALL_CLOCK_NEW => Some(0),
        pvclock::MSR_KVM_SYSTEM_TIME_NEW => Some(1),
        _ => None,
    };
    if let Some(i) = kvm_index {
        if !write {
            return done(run, Some(kvm[i]));
        }
        let value = run.data;
        kvm[i] = value;
        // A structure that would not lie in guest RAM is not written (as
        // KVM does); the guest's clock then reads zeros.
        if i == 0 {
            let _ = sh.ram.write(value, &sh.clock.wall_clock());
        } else if value & 1 != 0 {
            let _ = sh.ram.write(value & !1, &sh.clock.time_info());
        }
        return done(run, None);
    }
    if QUIET_MSRS.contains(&run.msr) {
        return done(run, (!write).then_some(0));
    }
    if *unknown < 16 {
        *unknown += 1;
        // Linux probes optional MSRs with rdmsr_safe; a #GP is the answer
        // it expects from hardware without them.
        log::debug!(
            "vCPU {index}: {} of MSR {:#x} at rip {:#x}: #GP",
            if write { "write" } else { "read" },
            run.msr,
            run.rip
        );
    }
    run.inject = INJECT_GP0;
}
