//! The tests, one module each, selected by the test number in BX. Each
//! prints one console line per check, numbered from 1; the first failing
//! check ends the test with `FailureCode::new(test, n)`.
use core::fmt;

use testguest::protocol::{FailureCode, Test};

mod bench;
mod cpuid;
pub mod debug;
mod fpu;
pub mod ipi;
mod mmio;
mod msr;
mod npt_fault;
mod pio;
mod scribble;
mod timer;
mod triple_fault;
mod vmm_interrupt;

pub type Outcome = Result<(), FailureCode>;

pub fn run(test: Test, ram_bytes: u64) -> Outcome {
    let mut r = Run { test, check: 0 };
    match test {
        Test::Cpuid => cpuid::run(&mut r),
        Test::Pio => pio::run(&mut r),
        Test::Mmio => mmio::run(&mut r),
        Test::HltTimer => timer::run_xapic(&mut r),
        Test::X2apicTimer => timer::run_x2apic(&mut r),
        Test::Ipi => ipi::run(&mut r),
        Test::Msr => msr::run(&mut r),
        Test::NptFault => npt_fault::run(&mut r),
        Test::TripleFault => triple_fault::run(&mut r),
        Test::Scribble => scribble::run(&mut r, ram_bytes),
        Test::Bench => bench::run(&mut r),
        Test::VmmInterrupt => vmm_interrupt::run(&mut r),
        Test::Fpu => fpu::run(&mut r),
        Test::FpuFresh => fpu::run_fresh(&mut r),
        Test::FpuRace => fpu::run_race(&mut r),
        Test::DebugExceptions => debug::run(&mut r),
        Test::SpinTimer => timer::run_spinning(&mut r),
        Test::ApWhileBspExits => ipi::run_while_exiting(&mut r),
    }
}

/// The running test's check counter and console lines.
pub struct Run {
    test: Test,
    check: u16,
}

impl Run {
    fn next(&mut self) -> u16 {
        self.check += 1;
        self.check
    }

    /// Check `n`: `got` must equal `want`.
    pub fn expect_eq(&mut self, what: &str, got: u64, want: u64) -> Outcome {
        let n = self.next();
        let name = self.test.name();
        if got == want {
            println!("{name}: [{n}] {what}: ok ({got:#x})");
            Ok(())
        } else {
            println!("{name}: [{n}] FAIL {what}: got {got:#x}, want {want:#x}");
            Err(FailureCode::new(self.test, n))
        }
    }

    /// Check `n`: `ok` must hold; `detail` says what was seen.
    pub fn expect(&mut self, what: &str, ok: bool, detail: fmt::Arguments) -> Outcome {
        let n = self.next();
        let name = self.test.name();
        if ok {
            println!("{name}: [{n}] {what}: ok ({detail})");
            Ok(())
        } else {
            println!("{name}: [{n}] FAIL {what}: {detail}");
            Err(FailureCode::new(self.test, n))
        }
    }

    /// Check `n` does not apply here (a CPU feature the VMM does not offer);
    /// it keeps its number so the others keep theirs.
    pub fn skip(&mut self, what: &str, why: &str) {
        let n = self.next();
        println!("{}: [{n}] {what}: {why}, skipped", self.test.name());
    }

    /// A line that is not a check.
    pub fn note(&self, args: fmt::Arguments) {
        println!("{}: {args}", self.test.name());
    }

    /// Fails check `n` as the next check (for "should not get here").
    pub fn fail(&mut self, what: &str) -> Outcome {
        let n = self.next();
        println!("{}: [{n}] FAIL {what}", self.test.name());
        Err(FailureCode::new(self.test, n))
    }
}
