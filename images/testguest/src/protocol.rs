//! The guest-VMM contract in constants: where the guest is loaded, which ports
//! it talks on, which tests exist, how failures are coded, and what the VMM
//! answers. The guest (this crate's bin) and the VMM and host tests all use
//! these, so the two sides cannot drift apart. See the crate documentation
//! for the prose version.

/// Guest-physical address of the first loadable segment and of `_start16`.
pub const ENTRY_GPA: u64 = 0x8000;
/// SP the VMM sets for vCPU 0 (real mode, SS = 0).
pub const INITIAL_SP: u16 = 0x7000;
/// The least guest RAM the guest works with.
pub const MIN_RAM_BYTES: u64 = 2 << 20;
/// The SIPI vector the guest sends: an AP starts at `SIPI_VECTOR << 12`,
/// i.e. CS = 0x0800, IP = 0 (SDM Vol. 3A §9.4.4).
pub const SIPI_VECTOR: u8 = (ENTRY_GPA >> 12) as u8;

/// Each byte written here is console output (ASCII lines).
pub const CONSOLE_PORT: u16 = 0xE9;
/// The guest's single 32-bit result write.
pub const RESULT_PORT: u16 = 0xF4;
/// Result meaning every check passed.
pub const RESULT_PASS: u32 = 0;
/// Result for a test number the guest does not know.
pub const UNKNOWN_TEST: u32 = 0xFFFF;

/// The tests the guest runs, selected by BX at entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Test {
    Cpuid = 1,
    Pio = 2,
    Mmio = 3,
    HltTimer = 4,
    X2apicTimer = 5,
    Ipi = 6,
    Msr = 7,
    NptFault = 8,
    TripleFault = 9,
    Scribble = 10,
    Bench = 11,
    VmmInterrupt = 12,
    Fpu = 13,
    FpuFresh = 14,
    FpuRace = 15,
    DebugExceptions = 16,
    SpinTimer = 17,
    ApWhileBspExits = 18,
}

/// `ap_while_bsp_exits`: the AP's work, in loop iterations (no PAUSE), before it
/// sets its flag.
pub const AP_WORK: u32 = 1_000_000;
/// `ap_while_bsp_exits`: the most CPUIDs the BSP makes waiting for the AP
/// (a scheduler that shares the CPU fairly needs a small fraction).
pub const BSP_CPUID_BOUND: u64 = 3_000_000;

/// How a test ends, as the VMM should observe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// A 32-bit write to [`RESULT_PORT`], then `cli; hlt` forever.
    Result,
    /// A triple fault (shutdown exit); no result write.
    Shutdown,
}

impl Test {
    pub const ALL: [Test; 18] = [
        Test::Cpuid,
        Test::Pio,
        Test::Mmio,
        Test::HltTimer,
        Test::X2apicTimer,
        Test::Ipi,
        Test::Msr,
        Test::NptFault,
        Test::TripleFault,
        Test::Scribble,
        Test::Bench,
        Test::VmmInterrupt,
        Test::Fpu,
        Test::FpuFresh,
        Test::FpuRace,
        Test::DebugExceptions,
        Test::SpinTimer,
        Test::ApWhileBspExits,
    ];

    pub fn from_u32(number: u32) -> Option<Test> {
        Test::ALL.into_iter().find(|t| t.number() == number)
    }

    pub fn number(self) -> u32 {
        self as u32
    }

    /// The name the guest prints at the start of each console line.
    pub fn name(self) -> &'static str {
        match self {
            Test::Cpuid => "cpuid",
            Test::Pio => "pio",
            Test::Mmio => "mmio",
            Test::HltTimer => "hlt_timer",
            Test::X2apicTimer => "x2apic_timer",
            Test::Ipi => "ipi",
            Test::Msr => "msr",
            Test::NptFault => "npt_fault",
            Test::TripleFault => "triple_fault",
            Test::Scribble => "scribble",
            Test::Bench => "bench",
            Test::VmmInterrupt => "vmm_interrupt",
            Test::Fpu => "fpu",
            Test::FpuFresh => "fpu_fresh",
            Test::FpuRace => "fpu_race",
            Test::DebugExceptions => "debug_exceptions",
            Test::SpinTimer => "spin_timer",
            Test::ApWhileBspExits => "ap_while_bsp_exits",
        }
    }

    /// How many vCPUs the VMM creates for this test.
    pub fn vcpus(self) -> u32 {
        match self {
            Test::Ipi | Test::ApWhileBspExits => 2,
            _ => 1,
        }
    }

    pub fn ending(self) -> Ending {
        match self {
            Test::TripleFault | Test::Scribble => Ending::Shutdown,
            _ => Ending::Result,
        }
    }
}

/// A failure result: `test << 16 | check`. Checks are numbered from 1 in
/// the order a test prints them (`[n]` on its console line); the numbers
/// from [`FailureCode::TRAP_BASE`] up are shared by all tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureCode {
    pub test: u16,
    pub check: u16,
}

impl FailureCode {
    /// `TRAP_BASE | vector`: an exception or interrupt the test did not expect.
    pub const TRAP_BASE: u16 = 0xFE00;
    /// The guest panicked (a bug in the guest; the console says where).
    pub const PANIC: u16 = 0xFFFE;

    pub fn new(test: Test, check: u16) -> FailureCode {
        FailureCode { test: test as u16, check }
    }

    pub fn trap(test: Test, vector: u8) -> FailureCode {
        FailureCode::new(test, FailureCode::TRAP_BASE | u16::from(vector))
    }

    pub fn to_u32(self) -> u32 {
        u32::from(self.test) << 16 | u32::from(self.check)
    }

    /// Splits a result write; `None` for [`RESULT_PASS`].
    pub fn from_u32(result: u32) -> Option<FailureCode> {
        (result != RESULT_PASS).then_some(FailureCode {
            test: (result >> 16) as u16,
            check: result as u16,
        })
    }

    /// The vector of an unexpected trap, if this is one.
    pub fn trap_vector(self) -> Option<u8> {
        (self.check & 0xFF00 == FailureCode::TRAP_BASE).then_some(self.check as u8)
    }
}

/// Test 12: an interrupt the VMM injects (as a device model would, through
/// the IOAPIC): the guest writes [`vmm_interrupt::REQUEST_PORT`], halts with
/// interrupts on, and must receive [`apic::IPI_VECTOR`] from the VMM.
pub mod vmm_interrupt {
    /// A byte written here asks the VMM to inject one interrupt.
    pub const REQUEST_PORT: u16 = 0x513;
    /// How many rounds the guest asks for.
    pub const ROUNDS: u32 = 3;
}

/// Tests 13-15: the guest's FPU/SSE state and the run page's FXSAVE image
/// (`VcpuRun::fpu`, `abi::LOAD_FPU`, `VcpuRun::fpu_request`).
///
/// - 13 (`Fpu`): the VMM loads [`fpu::VMM_FIRST`] before the first entry;
///   the guest must see it, then loads [`fpu::GUEST`] itself and writes
///   [`fpu::SWAP_PORT`]. At that exit the VMM must read `GUEST` in the run
///   page; it loads [`fpu::VMM_SECOND`], which the guest must see next. The
///   guest loads `GUEST` again and reports; the run page must hold `GUEST`
///   at the end. All four states differ from each other and from
///   [`fpu::CLEAN`], so a kernel that ignores either direction fails.
/// - 14 (`FpuFresh`): a new guest the VMM gives no FPU image (after test 13
///   in the same VMM) must start from [`fpu::CLEAN`]: nothing of another
///   guest's or the VMM's state reaches it.
/// - 15 (`FpuRace`): the guest writes [`fpu::RACE_PORT`] [`fpu::RACE_ROUNDS`]
///   times, checking the CPUID signature each round; the VMM asks for
///   `LOAD_FPU` on every re-entry while another of its threads flips the
///   image's MXCSR between [`fpu::RACE_MXCSR`] and a value with reserved
///   bits (and the CPUID table's count between valid and huge). The kernel
///   must never fault (FXRSTOR of a reserved MXCSR bit is a #GP in ring 0)
///   and the guest must end with `RACE_MXCSR` loaded.
pub mod fpu {
    /// The parts of an FXSAVE image (SDM Vol. 1 §10.5.1, Table 10-2) the
    /// FPU tests compare.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct State {
        /// x87 control word (bytes 0-1).
        pub fcw: u16,
        /// MXCSR (bytes 24-27).
        pub mxcsr: u32,
        /// XMM0 (bytes 160-175) and XMM15 (bytes 400-415).
        pub xmm0: u128,
        pub xmm15: u128,
    }

    const XMM0: usize = 160;
    const XMM15: usize = 160 + 15 * 16;

    impl State {
        /// The fields of an FXSAVE image.
        pub fn from_fxsave(image: &[u8; 512]) -> State {
            let u128_at = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&image[at..at + 16]);
                u128::from_le_bytes(b)
            };
            State {
                fcw: u16::from_le_bytes([image[0], image[1]]),
                mxcsr: u32::from_le_bytes([image[24], image[25], image[26], image[27]]),
                xmm0: u128_at(XMM0),
                xmm15: u128_at(XMM15),
            }
        }

        /// An FXSAVE image with these fields and everything else as after
        /// FNINIT (empty x87 stack, no exceptions pending).
        pub fn to_fxsave(self) -> [u8; 512] {
            let mut image = [0u8; 512];
            image[0..2].copy_from_slice(&self.fcw.to_le_bytes());
            image[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
            image[XMM0..XMM0 + 16].copy_from_slice(&self.xmm0.to_le_bytes());
            image[XMM15..XMM15 + 16].copy_from_slice(&self.xmm15.to_le_bytes());
            image
        }
    }

    /// After reset/FNINIT with SSE defaults: what a new vCPU starts with.
    pub const CLEAN: State = State { fcw: 0x037f, mxcsr: 0x1f80, xmm0: 0, xmm15: 0 };
    /// Loaded by the VMM before the first entry (double precision; the
    /// precision flag set).
    pub const VMM_FIRST: State =
        State { fcw: 0x027f, mxcsr: 0x1fa0, xmm0: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, xmm15: 0x5555_aaaa_5555_aaaa_0f0f_f0f0_0f0f_f0f0 };
    /// Loaded by the guest itself (round toward zero, flush to zero).
    pub const GUEST: State =
        State { fcw: 0x0f7f, mxcsr: 0xff80, xmm0: 0x6767_6767_1111_2222_3333_4444_dead_beef, xmm15: 0x9999_8888_7777_6666_c0ff_ee00_1234_abcd };
    /// Loaded by the VMM at the [`SWAP_PORT`] exit (round down, single
    /// precision).
    pub const VMM_SECOND: State =
        State { fcw: 0x047f, mxcsr: 0x3f80, xmm0: 0x0bad_cafe_0bad_cafe_0bad_cafe_0bad_cafe, xmm15: 0x7e57_7e57_0000_ffff_ffff_0000_7e57_7e57 };
    /// A byte written here (after the guest loaded [`GUEST`]) asks the VMM
    /// to check the run page and load [`VMM_SECOND`].
    pub const SWAP_PORT: u16 = 0x514;

    /// Each byte written here is one round of test 15.
    pub const RACE_PORT: u16 = 0x515;
    pub const RACE_ROUNDS: u32 = 20_000;
    /// The valid MXCSR of the racing image (flush to zero, all masked).
    pub const RACE_MXCSR: u32 = 0x9f80;
    /// Bits the racing writer ORs in: reserved in every CPU's MXCSR_MASK.
    pub const RACE_RESERVED_BITS: u32 = 0xffff_0000;
}

/// Test 16: exceptions the hypervisor intercepts and reflects (#DB, #AC)
/// and INVD, which it must not let reach the host's caches.
pub mod debug {
    /// Single steps (TF) the guest takes with its #DB handler; each #DB must
    /// arrive with DR6.BS set, and the handler clears TF after the last.
    pub const SINGLE_STEPS: u32 = 5;
}

/// Test 1: the hypervisor CPUID leaves the VMM must offer.
pub mod cpuid {
    /// CPUID.1:ECX bit 31: running under a hypervisor.
    pub const HYPERVISOR_BIT: u32 = 1 << 31;
    /// The hypervisor's base leaf: EAX = max leaf, EBX:ECX:EDX = signature.
    pub const BASE_LEAF: u32 = 0x4000_0000;
    /// The least max leaf the base leaf must report.
    pub const MIN_MAX_LEAF: u32 = 0x4000_0010;
    /// 12 bytes in EBX, ECX, EDX, like KVM's "KVMKVMKVM\0\0\0".
    pub const SIGNATURE: [u8; 12] = *b"AlcoveAlcove";
    /// EAX = TSC frequency in kHz (VMware's and KVM's timing leaf).
    pub const TSC_FREQ_LEAF: u32 = 0x4000_0010;

    /// [`SIGNATURE`] as the EBX, ECX, EDX values of [`BASE_LEAF`].
    pub fn signature_regs() -> [u32; 3] {
        let s = SIGNATURE;
        [
            u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
            u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
            u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
        ]
    }
}

/// Test 2: port I/O.
pub mod pio {
    /// The guest writes [`WRITES`] here, in order.
    pub const WRITE_PORT: u16 = 0x510;
    /// Reads here are answered by [`read_answer`].
    pub const READ_PORT: u16 = 0x511;
    /// (size in bytes, value) of each `out` to [`WRITE_PORT`], in order.
    pub const WRITES: [(u8, u32); 3] = [(1, 0x11), (2, 0x2233), (4, 0x4455_6677)];
    /// The string the guest sends to the console with `rep outsb`.
    pub const OUTSB_STRING: &[u8; 8] = b"ALCOVE!\n";
    /// Bytes the guest reads from [`READ_PORT`] with `rep insb`.
    pub const INSB_COUNT: usize = 4;
    /// Every byte of every read of [`READ_PORT`].
    pub const READ_BYTE: u8 = 0xA5;

    /// The value the VMM returns for a `size`-byte read of [`READ_PORT`].
    pub fn read_answer(size: u8) -> u32 {
        match size {
            1 => 0xA5,
            2 => 0xA5A5,
            _ => 0xA5A5_A5A5,
        }
    }
}

/// Test 3: the emulated MMIO device.
pub mod mmio {
    /// Guest-physical base of the device page (not RAM: every access exits).
    pub const BASE: u64 = 0xD000_0000;
    pub const PAGE_BYTES: u64 = 0x1000;
    /// 8 bytes that behave like RAM; the low 4 are "the 32-bit register".
    pub const SCRATCH_OFFSET: u64 = 0;
    pub const SCRATCH_BYTES: u64 = 8;
    /// A read-only 8-byte register.
    pub const ID_OFFSET: u64 = 8;
    pub const ID_VALUE: u64 = 0x1234_5678_9ABC_DEF0;
    /// What every other byte of the page reads as.
    pub const UNDEFINED_BYTE: u8 = 0xFF;

    /// The reference model of the device, byte by byte, so any access size
    /// and the byte-wise accesses of `rep movsb` behave alike. The VMM may
    /// use it as is: `data` is the access's bytes, little-endian, as in a
    /// KVM MMIO exit.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct TestDevice {
        scratch: [u8; SCRATCH_BYTES as usize],
    }

    impl TestDevice {
        pub const fn new() -> TestDevice {
            TestDevice { scratch: [0; SCRATCH_BYTES as usize] }
        }

        /// A read of `data.len()` bytes at `offset` into the page.
        pub fn read(&self, offset: u64, data: &mut [u8]) {
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = offset.checked_add(i as u64).map_or(UNDEFINED_BYTE, |at| self.byte_at(at));
            }
        }

        /// A write of `data` at `offset` into the page; only scratch bytes
        /// change.
        pub fn write(&mut self, offset: u64, data: &[u8]) {
            for (i, byte) in data.iter().enumerate() {
                let at = offset.checked_add(i as u64).and_then(|at| at.checked_sub(SCRATCH_OFFSET));
                if let Some(at) = at.filter(|&at| at < SCRATCH_BYTES) {
                    self.scratch[at as usize] = *byte;
                }
            }
        }

        fn byte_at(&self, offset: u64) -> u8 {
            let scratch = offset.wrapping_sub(SCRATCH_OFFSET);
            let id = offset.wrapping_sub(ID_OFFSET);
            if scratch < SCRATCH_BYTES {
                self.scratch[scratch as usize]
            } else if id < 8 {
                ID_VALUE.to_le_bytes()[id as usize]
            } else {
                UNDEFINED_BYTE
            }
        }
    }
}

/// Test 8: an access to guest-physical memory that is neither RAM nor a device.
pub mod unmapped {
    pub const GPA: u64 = 0x3000_0000;
    /// Reads of any size return all ones (as on a PC bus with nothing there).
    pub const READ_BYTE: u8 = 0xFF;
    /// The 4-byte write the guest makes after its reads.
    pub const WRITE_VALUE: u32 = 0x0BAD_F00D;
}

/// Test 7: MSRs the VMM answers itself.
pub mod msr {
    /// The VMM handles reads and writes of this MSR.
    pub const VMM_MSR: u32 = 0x4B56_4D00;
    /// EDX:EAX the VMM returns for `rdmsr` of [`VMM_MSR`].
    pub const VMM_MSR_READ_VALUE: u64 = 0xA1C0_0E00;
    /// EDX:EAX the guest writes to [`VMM_MSR`].
    pub const VMM_MSR_WRITE_VALUE: u64 = 0x1234;
    /// An MSR nobody implements: `rdmsr` must raise #GP in the guest.
    pub const UNIMPLEMENTED_MSR: u32 = 0x1234_5678;
}

/// Tests 4-6: local APIC vectors the guest programs.
pub mod apic {
    pub const XAPIC_BASE: u64 = 0xFEE0_0000;
    pub const TIMER_VECTOR: u8 = 0x40;
    pub const IPI_VECTOR: u8 = 0x41;
    pub const SPURIOUS_VECTOR: u8 = 0xFF;
}

/// Test 10: what the scribbler touches.
pub mod scribble {
    /// RAM from here up to the size in ECX gets [`pattern`].
    pub const RAM_START: u64 = 2 << 20;
    /// The scribbler never writes at or above this (the MMIO hole).
    pub const RAM_LIMIT: u64 = 0xC000_0000;
    /// A page filled with 0xFF bytes that the guest finally jumps into.
    pub const GARBAGE_GPA: u64 = 0x1F_F000;
    /// The byte written to every port.
    pub const PORT_VALUE: u8 = 0;

    /// The qword written all over the 4 KiB page at `page_gpa`.
    pub fn pattern(page_gpa: u64) -> u64 {
        0x5C81_BB1E_0000_0000 | (page_gpa >> 12)
    }

    /// Ports the scribbler leaves alone: the console and the result port's
    /// 4 bytes (a byte write there must not read as a result).
    pub fn port_is_skipped(port: u16) -> bool {
        port == super::CONSOLE_PORT || (super::RESULT_PORT..super::RESULT_PORT + 4).contains(&port)
    }

    /// MSRs with known meanings, on top of the strided sweep.
    const NOTABLE_MSRS: [u32; 24] = [
        0x10, 0x1B, 0x3A, 0x48, 0x49, 0x8B, 0xFE, 0x174, 0x175, 0x176, 0x1A0, 0x277, 0x2FF,
        0x6E0, 0x802, 0x80B, 0x830, 0xC000_0080, 0xC000_0081, 0xC000_0084, 0xC000_0100,
        0xC000_0102, 0xC000_0103, 0x4000_0000,
    ];

    /// (start, end, stride) of the sweeps; strides are odd so the numbers
    /// hit every alignment.
    const SWEEPS: [(u32, u32, u32); 3] = [
        (0x0, 0x2000, 0x17),
        (0xC000_0000, 0xC000_2000, 0x29),
        (0x4000_0000, 0x4000_0100, 0x3),
    ];

    /// The few hundred MSR numbers the scribbler reads and writes.
    pub fn msr_numbers() -> impl Iterator<Item = u32> {
        NOTABLE_MSRS.into_iter().chain(
            SWEEPS
                .into_iter()
                .flat_map(|(start, end, stride)| (start..end).step_by(stride as usize)),
        )
    }
}

/// Test 11: path lengths of VM exits, measured by the guest with RDTSC.
/// Under QEMU's `-icount shift=0` a TSC delta is the number of instructions
/// executed (host and guest together), so the figures are deterministic.
pub mod bench {
    /// Each byte `out` here is one exit the VMM answers in userspace (it
    /// ignores the value) and resumes from.
    pub const PIO_PORT: u16 = 0x512;
    /// Measured iterations of each loop.
    pub const ITERATIONS: u64 = 1000;
    /// Iterations of each loop run before the measured ones.
    pub const WARMUP: u64 = 50;
    /// What each figure is in: the last word of a result line.
    pub const UNIT: &str = "instructions";
    /// The measurements, in the order the guest prints them:
    /// - `vmexit_cpuid`: CPUID leaf 0, answered by the kernel in ring 0;
    /// - `vmexit_pio_user`: a 1-byte `out` to [`PIO_PORT`], answered by
    ///   the VMM in userspace;
    /// - `vmexit_mmio_user`: a 4-byte `mov` load from
    ///   [`mmio::BASE`](super::mmio::BASE) + 0, decoded and answered by the
    ///   VMM's [`TestDevice`](super::mmio::TestDevice);
    /// - `vmexit_none`: a `nop`, no exit: the cost of the loop itself.
    pub const NAMES: [&str; 4] = ["vmexit_cpuid", "vmexit_pio_user", "vmexit_mmio_user", "vmexit_none"];

    /// Parses a console line `bench <name> <value> instructions` into
    /// (name, value); `None` for any other line.
    pub fn parse_line(line: &str) -> Option<(&str, u64)> {
        let mut words = line.trim_end_matches(['\r', '\n']).split(' ');
        let (Some("bench"), Some(name), Some(value), Some(UNIT), None) =
            (words.next(), words.next(), words.next(), words.next(), words.next())
        else {
            return None;
        };
        let value = value.parse().ok()?;
        NAMES.contains(&name).then_some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_numbers_round_trip() {
        for (i, t) in Test::ALL.into_iter().enumerate() {
            assert_eq!(t.number(), i as u32 + 1);
            assert_eq!(Test::from_u32(t.number()), Some(t));
        }
        assert_eq!(Test::from_u32(0), None);
        assert_eq!(Test::from_u32(11), Some(Test::Bench));
        assert_eq!(Test::from_u32(12), Some(Test::VmmInterrupt));
        assert_eq!(Test::from_u32(16), Some(Test::DebugExceptions));
        assert_eq!(Test::from_u32(17), Some(Test::SpinTimer));
        assert_eq!(Test::from_u32(18), Some(Test::ApWhileBspExits));
        assert_eq!(Test::from_u32(19), None);
        assert_eq!(Test::from_u32(0x1_0001), None);
    }

    #[test]
    fn endings_and_vcpus() {
        assert_eq!(Test::TripleFault.ending(), Ending::Shutdown);
        assert_eq!(Test::Scribble.ending(), Ending::Shutdown);
        assert_eq!(Test::Msr.ending(), Ending::Result);
        assert_eq!(Test::Ipi.vcpus(), 2);
        assert_eq!(Test::ApWhileBspExits.vcpus(), 2);
        assert_eq!(Test::Cpuid.vcpus(), 1);
        assert_eq!(Test::Bench.ending(), Ending::Result);
        assert_eq!(Test::Bench.vcpus(), 1);
        assert_eq!(Test::Bench.name(), "bench");
    }

    #[test]
    fn bench_lines_parse() {
        assert_eq!(bench::parse_line("bench vmexit_cpuid 1234 instructions"), Some(("vmexit_cpuid", 1234)));
        assert_eq!(bench::parse_line("bench vmexit_none 3 instructions\n"), Some(("vmexit_none", 3)));
        assert_eq!(bench::parse_line("bench: [1] vmexit_cpuid: ok"), None);
        assert_eq!(bench::parse_line("bench vmexit_cpuid 12x instructions"), None);
        assert_eq!(bench::parse_line("bench vmexit_other 12 instructions"), None);
        assert_eq!(bench::parse_line("bench vmexit_cpuid 12 instructions extra"), None);
        // The port is no other test's.
        assert!(![CONSOLE_PORT, RESULT_PORT, pio::WRITE_PORT, pio::READ_PORT].contains(&bench::PIO_PORT));
        let mut names = bench::NAMES;
        names.sort_unstable();
        assert!(names.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn fpu_states_differ_and_round_trip_through_an_image() {
        use fpu::*;
        let all = [CLEAN, VMM_FIRST, GUEST, VMM_SECOND];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(State::from_fxsave(&a.to_fxsave()), *a);
            for b in &all[i + 1..] {
                // Every field differs, so no one field can pass for another state.
                assert!(a.fcw != b.fcw && a.mxcsr != b.mxcsr && a.xmm0 != b.xmm0 && a.xmm15 != b.xmm15, "{a:x?} {b:x?}");
            }
            // Valid on every SSE CPU: no reserved and no DAZ bit (MXCSR_MASK
            // may lack DAZ, SDM Vol. 1 §11.6.6).
            assert_eq!(a.mxcsr & !0xffbf, 0, "{a:x?}");
        }
        assert_eq!(RACE_MXCSR & !0xffbf, 0);
        assert_ne!(RACE_MXCSR, CLEAN.mxcsr);
        assert_eq!(RACE_RESERVED_BITS & 0xffff, 0);
        let image = GUEST.to_fxsave();
        assert_eq!(&image[24..28], &0xff80u32.to_le_bytes());
        assert_eq!(image[160], 0xef);
        assert_eq!(image[400], 0xcd);
        assert!(![CONSOLE_PORT, RESULT_PORT, pio::WRITE_PORT, pio::READ_PORT, bench::PIO_PORT, vmm_interrupt::REQUEST_PORT]
            .iter()
            .any(|&p| p == SWAP_PORT || p == RACE_PORT));
    }

    #[test]
    fn failure_codes() {
        let code = FailureCode::new(Test::Mmio, 5).to_u32();
        assert_eq!(code, 0x0003_0005);
        assert_eq!(FailureCode::from_u32(code), Some(FailureCode { test: 3, check: 5 }));
        assert_eq!(FailureCode::from_u32(RESULT_PASS), None);
        let trap = FailureCode::trap(Test::Msr, 13);
        assert_eq!(trap.to_u32(), 0x0007_FE0D);
        assert_eq!(trap.trap_vector(), Some(13));
        assert_eq!(FailureCode::new(Test::Msr, FailureCode::PANIC).trap_vector(), None);
        assert_eq!(FailureCode::from_u32(UNKNOWN_TEST), Some(FailureCode { test: 0, check: 0xFFFF }));
    }

    #[test]
    fn cpuid_signature_registers() {
        let [ebx, ecx, edx] = cpuid::signature_regs();
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&ebx.to_le_bytes());
        bytes[4..8].copy_from_slice(&ecx.to_le_bytes());
        bytes[8..].copy_from_slice(&edx.to_le_bytes());
        assert_eq!(&bytes, b"AlcoveAlcove");
        assert_eq!(ebx, 0x6f63_6c41); // "Alco"
    }

    #[test]
    fn pio_answers() {
        assert_eq!(pio::read_answer(1), 0xA5);
        assert_eq!(pio::read_answer(2), 0xA5A5);
        assert_eq!(pio::read_answer(4), 0xA5A5_A5A5);
        for (size, value) in pio::WRITES {
            assert!(u64::from(value) < 1u64 << (8 * u32::from(size)));
        }
    }

    #[test]
    fn sipi_vector_points_at_entry() {
        assert_eq!(u64::from(SIPI_VECTOR) << 12, ENTRY_GPA);
    }

    fn read(dev: &mmio::TestDevice, offset: u64, len: usize) -> u64 {
        let mut data = [0u8; 8];
        dev.read(offset, &mut data[..len]);
        u64::from_le_bytes(data)
    }

    #[test]
    fn mmio_device_scratch_is_ram_like() {
        let mut dev = mmio::TestDevice::new();
        assert_eq!(read(&dev, 0, 8), 0);
        dev.write(0, &0x8899_AABBu32.to_le_bytes());
        assert_eq!(read(&dev, 0, 1), 0xBB);
        assert_eq!(read(&dev, 0, 2), 0xAABB);
        assert_eq!(read(&dev, 0, 4), 0x8899_AABB);
        // rep movsb: byte writes at +0..+3.
        for (i, b) in b"ALCV".iter().enumerate() {
            dev.write(i as u64, &[*b]);
        }
        assert_eq!(read(&dev, 0, 4), u64::from(u32::from_le_bytes(*b"ALCV")));
        // rep stosd with count 2: dwords at +0 and +4.
        dev.write(0, &0xDEAD_BEEFu32.to_le_bytes());
        dev.write(4, &0xDEAD_BEEFu32.to_le_bytes());
        assert_eq!(read(&dev, 0, 8), 0xDEAD_BEEF_DEAD_BEEF);
    }

    #[test]
    fn mmio_device_id_is_read_only() {
        let mut dev = mmio::TestDevice::new();
        assert_eq!(read(&dev, mmio::ID_OFFSET, 8), mmio::ID_VALUE);
        assert_eq!(read(&dev, mmio::ID_OFFSET + 4, 4), 0x1234_5678);
        dev.write(mmio::ID_OFFSET, &[0; 8]);
        assert_eq!(read(&dev, mmio::ID_OFFSET, 8), mmio::ID_VALUE);
        // A write straddling scratch and ID changes only the scratch byte.
        dev.write(7, &[0x11, 0x22]);
        assert_eq!(read(&dev, 7, 2), 0xF011);
        assert_eq!(read(&dev, 0x10, 4), 0xFFFF_FFFF);
        assert_eq!(read(&dev, 0xFFC, 4), 0xFFFF_FFFF);
        // Offsets do not wrap around into the scratch bytes.
        assert_eq!(read(&dev, u64::MAX, 2), 0xFFFF);
        dev.write(u64::MAX, &[1, 2]);
        assert_eq!(read(&dev, 0, 1), 0);
    }

    #[test]
    fn scribble_msrs_are_a_few_hundred_in_range() {
        let n = scribble::msr_numbers().count();
        assert!((300..1000).contains(&n), "{n} MSRs");
        assert!(scribble::msr_numbers().all(|m| m < 0x2000
            || (0xC000_0000..0xC000_2000).contains(&m)
            || (0x4000_0000..0x4000_0100).contains(&m)));
        assert!(scribble::msr_numbers().all(|m| m != msr::VMM_MSR));
    }

    #[test]
    fn scribble_skips_console_and_result_ports() {
        let skipped: [u16; 5] = [0xE9, 0xF4, 0xF5, 0xF6, 0xF7];
        for port in 0..=u16::MAX {
            assert_eq!(scribble::port_is_skipped(port), skipped.contains(&port), "{port:#x}");
        }
        assert_eq!(scribble::pattern(0x20_0000), 0x5C81_BB1E_0000_0200);
    }
}
