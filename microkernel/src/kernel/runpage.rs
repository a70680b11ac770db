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

use abi::{CpuidEntry, PioWrite, VcpuRun, EXIT_TRACE_LEN, PIO_RING_LEN};
use core::mem::{offset_of, size_of};
use core::ptr::addr_of_mut;

/// The guest state at the page's start: `gprs` up to the end of `idtr`,
/// in words (`load_state` follows: the VMM's, never written back).
const STATE_WORDS: usize = offset_of!(VcpuRun, load_state) / 8;
const _: () = assert!(offset_of!(VcpuRun, gprs) == 0 && offset_of!(VcpuRun, idtr) + size_of::<abi::Segment>() == 8 * STATE_WORDS);
/// The exit record's words from `port` to `info2` (after the byte fields;
/// `exit_reason` before them is written last, on its own).
const RECORD_FROM: usize = offset_of!(VcpuRun, port);
const RECORD_WORDS: usize = (offset_of!(VcpuRun, info2) + 8 - RECORD_FROM) / 8;
const _: () = assert!(RECORD_FROM.is_multiple_of(8) && offset_of!(VcpuRun, size) + 4 == RECORD_FROM);
const _: () = assert!(offset_of!(VcpuRun, size) % 4 == 0 && offset_of!(VcpuRun, _pad) == offset_of!(VcpuRun, size) + 3);
const _: () = assert!(size_of::<PioWrite>() == 4 && offset_of!(VcpuRun, pio_ring) % 4 == 0);

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

    /// Copies `words` 8-byte words at byte `offset` of `shadow` into the
    /// same place of the page: one `rep movsq`, each word stored once, none
    /// read back (what a volatile copy promises).
    fn copy_words(&self, shadow: &VcpuRun, offset: usize, words: usize) {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 * words <= core::mem::size_of::<VcpuRun>());
        let src = (shadow as *const VcpuRun).cast::<u8>().wrapping_add(offset);
        let dst = self.0.cast::<u8>().wrapping_add(offset);
        // SAFETY: both ranges lie inside a whole `VcpuRun` (the callers pass
        // constant ranges checked at compile time below): `shadow` is the
        // kernel's own copy, borrowed shared for the call, and the page is
        // mapped and allocated (`at`'s contract). Plain-integer fields only,
        // so any bytes are valid. DF is clear in the kernel (the entries
        // do CLD).
        unsafe {
            core::arch::asm!(
                "rep movsq",
                inout("rcx") words => _,
                inout("rdi") dst => _,
                inout("rsi") src => _,
                options(nostack, preserves_flags),
            );
        }
    }

    /// Publishes the guest state from `shadow` (registers, control
    /// registers, segments and tables), and the exit trace whole: the
    /// reset state of a new vCPU.
    pub fn publish_state(&self, shadow: &VcpuRun) {
        self.copy_words(shadow, 0, STATE_WORDS);
        Self::write(at!(self, exit_trace), shadow.exit_trace);
        Self::write(at!(self, exit_trace_next), shadow.exit_trace_next);
    }

    /// After a run: the state, the exit record, the FPU image if the VMM
    /// asked for it at entry, the exit-trace entries added since the trace
    /// index was `trace_from` and the coalesced writes since the ring's tail
    /// was `ring_from` (entries already published are not written again,
    /// as in a ring). The VMM's requests and rules are left alone.
    pub fn publish(&self, shadow: &VcpuRun, ring_from: u32, trace_from: u32) {
        self.copy_words(shadow, 0, STATE_WORDS);
        // size, write, io_flags (and the pad byte) in one store, then from
        // `port` to `info2` in words.
        Self::write(at!(self, size).cast::<u32>(), u32::from_le_bytes([shadow.size, shadow.write, shadow.io_flags, shadow._pad]));
        self.copy_words(shadow, RECORD_FROM, RECORD_WORDS);
        if shadow.fpu_request & 1 != 0 {
            Self::write(at!(self, fpu), shadow.fpu);
        }
        let traced = shadow.exit_trace_next.wrapping_sub(trace_from).min(EXIT_TRACE_LEN as u32);
        for i in 0..traced {
            let slot = shadow.exit_trace_next.wrapping_sub(traced).wrapping_add(i) as usize % EXIT_TRACE_LEN;
            Self::write(at!(self, exit_trace[slot]), shadow.exit_trace[slot]);
        }
        Self::write(at!(self, exit_trace_next), shadow.exit_trace_next);
        let added = shadow.pio_ring_tail.wrapping_sub(ring_from).min(PIO_RING_LEN as u32);
        for i in 0..added {
            let slot = ring_from.wrapping_add(i) as usize % PIO_RING_LEN;
            let entry: PioWrite = shadow.pio_ring[slot];
            Self::write(at!(self, pio_ring[slot]).cast::<u32>(), u32::from_le_bytes([entry.port as u8, (entry.port >> 8) as u8, entry.value, entry._pad]));
        }
        Self::write(at!(self, pio_ring_tail), shadow.pio_ring_tail);
        // The event the exit interrupted (with its error code): read only
        // by the VMM's diagnostics (a triple fault's report said "none"
        // above a trace that showed a #PF being delivered).
        Self::write(at!(self, exit_int_info), shadow.exit_int_info);
        // Only a triple fault's (the VMM's fault report reads it).
        if shadow.exit_reason == abi::VcpuExit::Shutdown as u32 {
            Self::write(at!(self, nested), shadow.nested);
        }
        // Last, so a VMM that polls it sees the rest of the record.
        Self::write(at!(self, exit_reason), shadow.exit_reason);
    }

    /// Only the exit reason (a run that never entered the guest).
    pub fn set_exit_reason(&self, reason: u32) {
        Self::write(at!(self, exit_reason), reason);
    }
}
