//! The vCPU run page as the kernel touches it. The page is a frame the VMM
//! maps and may write from any of its threads at any moment, also while
//! the kernel reads it, so no Rust reference ever points into it and the
//! kernel reads each field it needs exactly once: `VcpuRun` entry copies
//! the VMM's requests into the vCPU's kernel-side copy (`Vcpu::shadow`),
//! every check and every use looks at that copy only, and the run's end
//! writes the state and the exit record back. (Checking the page and then
//! reading it again would let another VMM thread change a value in
//! between: an MXCSR with reserved bits after the check makes FXRSTOR
//! fault in ring 0.)

use abi::{CpuidEntry, PioWrite, VcpuRun, PIO_RING_LEN};
use core::ptr::addr_of_mut;

/// A vCPU's run page in the direct map.
#[derive(Clone, Copy)]
pub struct RunPage(*mut VcpuRun);

/// A field of the page, as a raw pointer (no reference is made).
macro_rules! at {
    ($page:expr, $($field:tt)+) => {
        // SAFETY: `RunPage::at`'s contract: the pointer is to a whole
        // `VcpuRun` in the direct map; this only computes a field address.
        unsafe { addr_of_mut!((*$page.0).$($field)+) }
    };
}

impl RunPage {
    /// The run page in the frame at physical `pa`.
    ///
    /// # Safety
    /// `pa` is the start of a RAM frame of at least `size_of::<VcpuRun>()`
    /// bytes that stays allocated while the returned value is used (the
    /// vCPU holds a reference to its run frame).
    pub unsafe fn at(pa: u64) -> Self {
        Self((pa + crate::arch::PHYS_OFFSET) as *mut VcpuRun)
    }

    fn read<T: Copy>(p: *mut T) -> T {
        // SAFETY: `p` is a field of the page (the `at!` macro); the frame is
        // mapped and allocated (`at`'s contract) and every bit pattern is a
        // valid value of the page's plain-integer fields. Volatile: one read,
        // whatever another CPU writes meanwhile.
        unsafe { p.read_volatile() }
    }

    fn write<T: Copy>(p: *mut T, value: T) {
        // SAFETY: as in `read`.
        unsafe { p.write_volatile(value) }
    }

    /// Copies what the VMM asks of the coming entry into `shadow`, each
    /// field read once, and clears `load_state` and `inject` in the page:
    /// the guest state `load_state` names (and the FPU image with
    /// `LOAD_FPU`), `inject`, `fpu_request`, the coalescing rules (the
    /// clock port's too) and the ring indices. Returns the `load_state` bits.
    pub fn take_requests(&self, shadow: &mut VcpuRun) -> u64 {
        let load = Self::read(at!(self, load_state));
        Self::write(at!(self, load_state), 0);
        if load & abi::LOAD_GPRS != 0 {
            shadow.gprs = Self::read(at!(self, gprs));
            shadow.rip = Self::read(at!(self, rip));
            shadow.rflags = Self::read(at!(self, rflags));
        }
        if load & abi::LOAD_SYSTEM != 0 {
            shadow.cr0 = Self::read(at!(self, cr0));
            shadow.cr2 = Self::read(at!(self, cr2));
            shadow.cr3 = Self::read(at!(self, cr3));
            shadow.cr4 = Self::read(at!(self, cr4));
            shadow.efer = Self::read(at!(self, efer));
            shadow.segments = Self::read(at!(self, segments));
            shadow.gdtr = Self::read(at!(self, gdtr));
            shadow.idtr = Self::read(at!(self, idtr));
        }
        if load & abi::LOAD_FPU != 0 {
            shadow.fpu = Self::read(at!(self, fpu));
        }
        shadow.inject = Self::read(at!(self, inject));
        Self::write(at!(self, inject), 0);
        shadow.fpu_request = Self::read(at!(self, fpu_request));
        shadow.pio_buffered_ports = Self::read(at!(self, pio_buffered_ports));
        shadow.pio_constant_ports = Self::read(at!(self, pio_constant_ports));
        shadow.pio_constant_values = Self::read(at!(self, pio_constant_values));
        shadow.pio_ring_head = Self::read(at!(self, pio_ring_head));
        shadow.pio_ring_tail = Self::read(at!(self, pio_ring_tail));
        shadow.pio_clock_port = Self::read(at!(self, pio_clock_port));
        shadow.pio_clock_hz = Self::read(at!(self, pio_clock_hz));
        shadow.pio_clock_epoch_ns = Self::read(at!(self, pio_clock_epoch_ns));
        load
    }

    /// The CPUID answer for `leaf`/`subleaf` from the VMM's table (the
    /// first match; zeros if none): the count is read once and clamped, and
    /// each entry is read once, whole.
    pub fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidEntry {
        let count = (Self::read(at!(self, cpuid_count)) as usize).min(64);
        for i in 0..count {
            let e = Self::read(at!(self, cpuid[i]));
            if e.leaf == leaf && (e.subleaf == u32::MAX || e.subleaf == subleaf) {
                return e;
            }
        }
        CpuidEntry::default()
    }

    /// Publishes the guest state from `shadow` (registers, control
    /// registers, segments and tables).
    pub fn publish_state(&self, shadow: &VcpuRun) {
        Self::write(at!(self, gprs), shadow.gprs);
        Self::write(at!(self, rip), shadow.rip);
        Self::write(at!(self, rflags), shadow.rflags);
        Self::write(at!(self, cr0), shadow.cr0);
        Self::write(at!(self, cr2), shadow.cr2);
        Self::write(at!(self, cr3), shadow.cr3);
        Self::write(at!(self, cr4), shadow.cr4);
        Self::write(at!(self, efer), shadow.efer);
        Self::write(at!(self, segments), shadow.segments);
        Self::write(at!(self, gdtr), shadow.gdtr);
        Self::write(at!(self, idtr), shadow.idtr);
    }

    /// After a run: the state, the whole exit record, the FPU image if the
    /// VMM asked for it at entry, and the coalesced writes since the ring's
    /// tail was `ring_from`. The VMM's requests and rules are left alone.
    pub fn publish(&self, shadow: &VcpuRun, ring_from: u32) {
        self.publish_state(shadow);
        Self::write(at!(self, size), shadow.size);
        Self::write(at!(self, write), shadow.write);
        Self::write(at!(self, io_flags), shadow.io_flags);
        Self::write(at!(self, port), shadow.port);
        Self::write(at!(self, data), shadow.data);
        Self::write(at!(self, gpa), shadow.gpa);
        Self::write(at!(self, msr), shadow.msr);
        Self::write(at!(self, next_rip), shadow.next_rip);
        Self::write(at!(self, insn), shadow.insn);
        Self::write(at!(self, insn_len), shadow.insn_len);
        Self::write(at!(self, hw_code), shadow.hw_code);
        Self::write(at!(self, info1), shadow.info1);
        Self::write(at!(self, info2), shadow.info2);
        Self::write(at!(self, exit_int_info), shadow.exit_int_info);
        Self::write(at!(self, exit_trace), shadow.exit_trace);
        Self::write(at!(self, exit_trace_next), shadow.exit_trace_next);
        if shadow.fpu_request & 1 != 0 {
            Self::write(at!(self, fpu), shadow.fpu);
        }
        let added = shadow.pio_ring_tail.wrapping_sub(ring_from).min(PIO_RING_LEN as u32);
        for i in 0..added {
            let slot = ring_from.wrapping_add(i) as usize % PIO_RING_LEN;
            let entry: PioWrite = shadow.pio_ring[slot];
            Self::write(at!(self, pio_ring[slot]), entry);
        }
        Self::write(at!(self, pio_ring_tail), shadow.pio_ring_tail);
        // Last, so a VMM that polls it sees the rest of the record.
        Self::write(at!(self, exit_reason), shadow.exit_reason);
    }

    /// Only the exit reason (a run that never entered the guest).
    pub fn set_exit_reason(&self, reason: u32) {
        Self::write(at!(self, exit_reason), reason);
    }
}
