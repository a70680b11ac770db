//! COM1, a 16550 UART at 0x3f8: the kernel's console and the channel system
//! tests report on. Polled output; no interrupts yet.

use super::cpu::{inb, outb};
use spin::Mutex;

const COM1: u16 = 0x3f8;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_TX_IDLE: u8 = 1 << 6;

static LOCK: Mutex<()> = Mutex::new(());

/// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
pub fn init() {
    outb(COM1 + 1, 0x00); // IER: no interrupts
    outb(COM1 + 3, 0x80); // LCR: DLAB on
    outb(COM1, 0x01); // divisor 1 = 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8N1, DLAB off
    outb(COM1 + 2, 0xc7); // FIFO on, cleared, 14-byte threshold
    outb(COM1 + 4, 0x03); // DTR, RTS
}

fn put(b: u8) {
    // Bounded wait: a missing UART (reads 0xff) or a stuck one never hangs us.
    for _ in 0..100_000 {
        if inb(COM1 + 5) & LSR_THR_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    outb(COM1, b);
}

fn write_raw(s: &str) {
    write_bytes_raw(s.as_bytes());
}

fn write_bytes_raw(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

/// Waits until the UART has sent everything (before the machine is left).
pub fn flush() {
    for _ in 0..1_000_000 {
        if inb(COM1 + 5) & LSR_TX_IDLE != 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// The serial port as a `core::fmt::Write` sink that holds the lock for the
/// whole formatted message, so lines from different CPUs never interleave.
pub struct Writer;

impl Writer {
    /// Bytes as they are (a guest's console is a byte stream, not always
    /// UTF-8), newlines as CR LF.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        write_bytes_raw(bytes);
    }
}

impl core::fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write_raw(s);
        Ok(())
    }
}

/// Runs `f` with the serial port locked.
pub fn with_locked<R>(f: impl FnOnce(&mut Writer) -> R) -> R {
    let _guard = LOCK.lock();
    f(&mut Writer)
}

/// Runs `f` with the serial port locked if nobody holds it (else not at
/// all): for handlers that may have interrupted the holder on this CPU.
pub fn try_with_locked<R>(f: impl FnOnce(&mut Writer) -> R) -> Option<R> {
    let _guard = LOCK.try_lock()?;
    Some(f(&mut Writer))
}

/// For the fault and panic paths: takes the port even if the CPU that faulted
/// was holding it, so the report always gets out.
pub fn with_forced<R>(f: impl FnOnce(&mut Writer) -> R) -> R {
    if LOCK.is_locked() {
        // SAFETY: called only on the way to stopping the machine; the lock
        // guards no memory, only the interleaving of output.
        unsafe { LOCK.force_unlock() };
    }
    with_locked(f)
}

#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {{
        $crate::arch::serial::with_locked(|w| {
            use core::fmt::Write;
            let _ = writeln!(w, $($arg)*);
        })
    }};
}
