//! The test guest kernel. `boot.s` brings each vCPU from real mode to long
//! mode and calls [`guest_main`]; the BSP runs the test BX selected and
//! reports on ports 0xE9 (console) and 0xF4 (result). The contract is in the
//! lib's documentation (`src/lib.rs`), its constants in `testguest::protocol`.
//!
//! On the host this bin is a stub, so `cargo test` on the workspace builds.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
#[macro_use]
mod console;
#[cfg(target_os = "none")]
mod apic;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod trap;
#[cfg(target_os = "none")]
mod tests;

#[cfg(target_os = "none")]
core::arch::global_asm!(include_str!("boot.s"));

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("testguest is a guest kernel: build it with --target x86_64-unknown-none");
}

#[cfg(target_os = "none")]
use core::sync::atomic::{AtomicU32, Ordering};
#[cfg(target_os = "none")]
use testguest::protocol::{self, FailureCode, Test};

/// Set by the BSP before it sends a SIPI; `boot.s` reads it to tell an AP
/// from the BSP.
#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
pub static AP_BOOT: AtomicU32 = AtomicU32::new(0);
/// The number of APs that reached long mode; `boot.s` hands out stacks by it.
#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
pub static AP_COUNT: AtomicU32 = AtomicU32::new(0);
/// The test the BSP runs, for failure codes from traps and panics.
#[cfg(target_os = "none")]
static CURRENT_TEST: AtomicU32 = AtomicU32::new(0);

/// Called by `boot.s` on each vCPU in long mode, on its own stack.
#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main(test: u32, is_ap: bool, ram_bytes: u32) -> ! {
    if is_ap {
        trap::load_idt();
        tests::ipi::ap_main();
    }
    trap::init_idt();
    CURRENT_TEST.store(test, Ordering::Relaxed);
    println!("testguest: test {test}, RAM {ram_bytes:#x} bytes");
    let result = match Test::from_u32(test) {
        Some(t) => {
            println!("testguest: running {}", t.name());
            match tests::run(t, u64::from(ram_bytes)) {
                Ok(()) => {
                    println!("{}: pass", t.name());
                    protocol::RESULT_PASS
                }
                Err(code) => code.to_u32(),
            }
        }
        None => {
            println!("unknown test {test}");
            protocol::UNKNOWN_TEST
        }
    };
    report(result)
}

/// Writes the result to the VMM and stops this vCPU.
#[cfg(target_os = "none")]
fn report(result: u32) -> ! {
    if result != protocol::RESULT_PASS {
        println!("testguest: result {result:#x}");
    }
    cpu::outl(protocol::RESULT_PORT, result);
    cpu::halt_forever()
}

/// The failure code for `check` of the running test.
#[cfg(target_os = "none")]
fn current_failure(check: impl FnOnce(Test) -> FailureCode) -> u32 {
    match Test::from_u32(CURRENT_TEST.load(Ordering::Relaxed)) {
        Some(t) => check(t).to_u32(),
        None => protocol::UNKNOWN_TEST,
    }
}

/// A fatal trap: explain, report (from the BSP only) and stop.
#[cfg(target_os = "none")]
fn die_from_trap(frame: &trap::TrapFrame, on_ap: bool) -> ! {
    console::force_print(format_args!(
        "FAIL: unexpected {} (vector {}) error {:#x} at rip {:#x} rsp {:#x} on {}\n",
        trap::vector_name(frame.vector as u8),
        frame.vector,
        frame.error,
        frame.rip,
        frame.rsp,
        if on_ap { "the AP" } else { "the BSP" },
    ));
    if on_ap {
        cpu::halt_forever();
    }
    report(current_failure(|t| FailureCode::trap(t, frame.vector as u8)))
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::force_print(format_args!("FAIL: guest panic: {info}\n"));
    if trap::on_ap_stack() {
        cpu::halt_forever();
    }
    report(current_failure(|t| FailureCode::new(t, FailureCode::PANIC)))
}
