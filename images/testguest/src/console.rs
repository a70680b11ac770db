//! The guest's console: bytes to port 0xE9, one line per `println!`. A
//! spinlock keeps the BSP's and the AP's lines whole; the fatal paths print
//! without it, since they may have interrupted its holder.
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use testguest::protocol::CONSOLE_PORT;

use crate::cpu;

static LOCK: AtomicBool = AtomicBool::new(false);

struct Port;

impl Write for Port {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            cpu::outb(CONSOLE_PORT, b);
        }
        Ok(())
    }
}

pub fn print(args: fmt::Arguments) {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let _ = Port.write_fmt(args);
    LOCK.store(false, Ordering::Release);
}

/// Prints without taking the lock (traps, panics).
pub fn force_print(args: fmt::Arguments) {
    let _ = Port.write_fmt(args);
}

macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
