//! The vCPU run page as the kernel touches it. The page is a frame the VMM
//! maps and may write from any of its threads at any moment, also while
//! the kernel reads it, so no Rust reference ever points into it and the
//! kernel reads each field it needs exactly once: `VcpuRun` entry copies
//! the VMM's requests into the vCPU's kernel-side copy (`Vcpu::shadow`;
//! the general registers, which need no check, straight into the vCPU's
//! own), every check and every use looks at that copy only, and the run's
//! end writes the state and the exit record back. (Checking the page and then
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

/// RIP and RFLAGS after the registers, in words (`LOAD_GPRS`).
const GPRS_WORDS: usize = offset_of!(VcpuRun, rflags) / 8 + 1;
const _: () = assert!(offset_of!(VcpuRun, rip) == 8 * 16 && offset_of!(VcpuRun, rflags) == offset_of!(VcpuRun, rip) + 8);
/// The system state from `cr0` to the end of `idtr`, in words (`LOAD_SYSTEM`).
const SYSTEM_FROM: usize = offset_of!(VcpuRun, cr0);
const _: () = assert!(SYSTEM_FROM == 8 * GPRS_WORDS);
/// The coalescing rules and the ring's indices: the buffered ports, the
/// constant ports, their values with the ring's head in one word, the
/// tail on its own (the ring's entries follow it).
const RULES_FROM: usize = offset_of!(VcpuRun, pio_buffered_ports);
const _: () = assert!(
    RULES_FROM.is_multiple_of(8)
        && offset_of!(VcpuRun, pio_constant_ports) == RULES_FROM + 8
        && offset_of!(VcpuRun, pio_constant_values) == RULES_FROM + 16
        && offset_of!(VcpuRun, pio_ring_head) == RULES_FROM + 20
        && offset_of!(VcpuRun, pio_ring_tail) == RULES_FROM + 24
        && abi::PIO_RULES == 4
);
const _: () = assert!(offset_of!(VcpuRun, fpu).is_multiple_of(8) && offset_of!(VcpuRun, segments).is_multiple_of(8));
const _: () = assert!(size_of::<abi::Segment>() == 16 && offset_of!(VcpuRun, gdtr).is_multiple_of(8));
const _: () = assert!(
    size_of::<abi::ExitTrace>() == 24
        && offset_of!(VcpuRun, exit_trace).is_multiple_of(8)
        && offset_of!(abi::ExitTrace, code) == 8
        && offset_of!(abi::ExitTrace, injected) == 12
        && offset_of!(abi::ExitTrace, int_info) == 16
        && offset_of!(abi::ExitTrace, info) == 20
);

/// The guest state where an exit left it, to be published straight into
/// the page (`RunPage::publish_exit_state`): no copy in the vCPU's shadow
/// between. `segments` are the ten segment registers in `Segment`'s format
/// as words, in the order of SVM's VMCB: ES, CS, SS, DS, FS, GS, GDTR,
/// LDTR, IDTR, TR.
pub struct ExitState<'a> {
    pub gprs: &'a [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub segments: &'a [u64; 20],
}

/// `rep movsq`: `words` 8-byte words from `src` to `dst`, each read once
/// and stored once.
///
/// # Safety
/// Both ranges are valid for `8 * words` bytes (either may be the run
/// page, which another CPU may write meanwhile: plain integers only, so
/// any bytes are valid) and do not overlap.
#[inline(always)]
unsafe fn movsq(dst: *mut u8, src: *const u8, words: usize) {
    // SAFETY: the caller's contract; DF is clear in the kernel (the entries
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

    /// Copies `words` 8-byte words at byte `offset` of the page into the
    /// same place of `shadow`: one `rep movsq`, each word read once.
    #[inline(always)]
    fn copy_in(&self, shadow: &mut VcpuRun, offset: usize, words: usize) {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 * words <= core::mem::size_of::<VcpuRun>());
        let dst = (shadow as *mut VcpuRun).cast::<u8>().wrapping_add(offset);
        let src = self.0.cast::<u8>().wrapping_add(offset);
        // SAFETY: both ranges lie inside a whole `VcpuRun` (the callers pass
        // constant ranges checked at compile time above): `shadow` is the
        // kernel's own copy, borrowed exclusively, and the page is mapped
        // and allocated (`at`'s contract); plain-integer fields only.
        unsafe { movsq(dst, src, words) }
    }

    /// Copies what the VMM asks of the coming entry into `shadow`, each
    /// field read once, and clears `load_state` and `inject` in the page:
    /// the guest state `load_state` names (and the FPU image with
    /// `LOAD_FPU`), `inject`, `fpu_request`, the coalescing rules (the
    /// clock port's too) and the ring indices. Returns the `load_state` bits.
    ///
    /// `LOAD_GPRS`'s 16 registers go straight to `gprs` (the vCPU's own,
    /// which the entry loads); `shadow.gprs` gets only RAX and RSP of them
    /// (for the VMCB/VMCS loads), its other registers are the exit's until
    /// the run's end writes `gprs` back.
    pub fn take_requests(&self, shadow: &mut VcpuRun, gprs: &mut [u64; 16]) -> u64 {
        let load = Self::read(at!(self, load_state));
        Self::write(at!(self, load_state), 0);
        if load & abi::LOAD_GPRS != 0 {
            // SAFETY: the page's `gprs` (offset 0, 16 words: see `at`'s
            // contract) to the vCPU's registers, borrowed exclusively.
            unsafe { movsq(gprs.as_mut_ptr().cast(), self.0.cast(), 16) };
            shadow.rip = Self::read(at!(self, rip));
            shadow.rflags = Self::read(at!(self, rflags));
            shadow.gprs[0] = gprs[0];
            shadow.gprs[4] = gprs[4];
        } else if load & abi::LOAD_RIP != 0 {
            gprs[0] = Self::read(at!(self, gprs[0]));
            shadow.gprs[0] = gprs[0];
            shadow.rip = Self::read(at!(self, rip));
        }
        if load & abi::LOAD_SYSTEM != 0 {
            self.copy_in(shadow, SYSTEM_FROM, STATE_WORDS - GPRS_WORDS);
        }
        if load & abi::LOAD_FPU != 0 {
            self.copy_in(shadow, offset_of!(VcpuRun, fpu), 512 / 8);
        }
        shadow.inject = Self::read(at!(self, inject));
        Self::write(at!(self, inject), 0);
        shadow.fpu_request = Self::read(at!(self, fpu_request));
        self.copy_in(shadow, RULES_FROM, 3);
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
        // constant ranges checked at compile time above): `shadow` is the
        // kernel's own copy, borrowed shared for the call, and the page is
        // mapped and allocated (`at`'s contract). Plain-integer fields only,
        // so any bytes are valid.
        unsafe { movsq(dst, src, words) }
    }

    /// Publishes the guest state from `shadow` (registers, control
    /// registers, segments and tables), and the exit trace whole: the
    /// reset state of a new vCPU.
    pub fn publish_state(&self, shadow: &VcpuRun) {
        self.copy_words(shadow, 0, STATE_WORDS);
        Self::write(at!(self, exit_trace), shadow.exit_trace);
        Self::write(at!(self, exit_trace_next), shadow.exit_trace_next);
    }

    /// After a VMX run: the guest state from `shadow`, where the run's end
    /// saved it (registers, control registers, segments and tables).
    pub fn publish_shadow_state(&self, shadow: &VcpuRun) {
        self.copy_words(shadow, 0, STATE_WORDS);
    }

    /// After an SVM run: the guest state straight from where the exit left
    /// it (the vCPU's registers, the VMCB's save area), each word stored
    /// once; the page ends up as `publish_shadow_state` of the same state
    /// saved into the shadow would leave it.
    #[inline(always)]
    pub fn publish_exit_state(&self, s: &ExitState) {
        // SAFETY: 16 words of the vCPU's registers to the page's `gprs`
        // (offset 0; `at`'s contract).
        unsafe { movsq(self.0.cast(), s.gprs.as_ptr().cast(), 16) };
        Self::write(at!(self, rip), s.rip);
        Self::write(at!(self, rflags), s.rflags);
        Self::write(at!(self, cr0), s.cr0);
        Self::write(at!(self, cr2), s.cr2);
        Self::write(at!(self, cr3), s.cr3);
        Self::write(at!(self, cr4), s.cr4);
        Self::write(at!(self, efer), s.efer);
        let segments = at!(self, segments).cast::<u8>();
        // SAFETY: 12 words to the page's `segments[0..6]` (96 bytes,
        // 8-aligned: checked above), from a borrowed array.
        unsafe { movsq(segments, s.segments.as_ptr().cast(), 12) };
        // Then LDTR, TR, GDTR, IDTR, as words (a volatile `Segment` is
        // stored field by field).
        for (field, from) in [(at!(self, segments[6]), 14), (at!(self, segments[7]), 18), (at!(self, gdtr), 12), (at!(self, idtr), 16)] {
            let field = field.cast::<u64>();
            Self::write(field, s.segments[from]);
            Self::write(field.wrapping_add(1), s.segments[from + 1]);
        }
    }

    /// The guest's FXSAVE image to the page (`fpu_request` bit 0).
    pub fn publish_fpu(&self, fpu: &[u8; 512]) {
        let dst = at!(self, fpu).cast::<u8>();
        // SAFETY: 64 words to the page's `fpu` (512 bytes, 8-aligned:
        // checked above), from a borrowed array.
        unsafe { movsq(dst, fpu.as_ptr(), 512 / 8) };
    }

    /// After a run, the guest state published already
    /// (`publish_shadow_state`, `publish_exit_state`) and the FPU image
    /// too if the VMM asked for it at entry (`publish_fpu`): the exit
    /// record, the exit-trace entries added since the trace index was
    /// `trace_from` and the coalesced writes since the ring's tail was
    /// `ring_from` (entries already published are not written again, as in
    /// a ring). The VMM's requests and rules are left alone.
    #[inline(always)]
    pub fn publish(&self, shadow: &VcpuRun, ring_from: u32, trace_from: u32) {
        // size, write, io_flags (and the pad byte) in one store, then from
        // `port` to `info2` in words.
        Self::write(at!(self, size).cast::<u32>(), u32::from_le_bytes([shadow.size, shadow.write, shadow.io_flags, shadow._pad]));
        self.copy_words(shadow, RECORD_FROM, RECORD_WORDS);
        // From `trace_from`, or the oldest entry the trace still holds when
        // more were added than it has slots.
        let next = shadow.exit_trace_next;
        let mut i = if next.wrapping_sub(trace_from) > EXIT_TRACE_LEN as u32 { next.wrapping_sub(EXIT_TRACE_LEN as u32) } else { trace_from };
        while i != next {
            let slot = i as usize % EXIT_TRACE_LEN;
            // As three words (a volatile `ExitTrace` goes through the stack).
            let e = shadow.exit_trace[slot];
            let words = at!(self, exit_trace[slot]).cast::<u64>();
            Self::write(words, e.rip);
            Self::write(words.wrapping_add(1), u64::from(e.code) | u64::from(e.injected) << 32);
            Self::write(words.wrapping_add(2), u64::from(e.int_info) | u64::from(e.info) << 32);
            i = i.wrapping_add(1);
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
