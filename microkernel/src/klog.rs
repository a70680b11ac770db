//! Routes the `log` crate to the serial console, one locked line per record.

use crate::arch::serial;
use core::fmt::Write;

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;

impl log::Log for SerialLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        serial::with_locked(|w| {
            let _ = writeln!(w, "[{:5}] {}", record.level(), record.args());
        });
    }

    fn flush(&self) {
        serial::flush();
    }
}

pub fn init() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}
