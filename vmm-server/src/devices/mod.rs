//! Platform device models: the PC legacy devices a Linux guest expects to
//! find without being told otherwise on its command line.
//!
//! Each model is a pure state machine in its own file: the VMM's exit handler
//! hands it a port or MMIO access together with the current time
//! (`now_ns`, nanoseconds on the VM's monotonic clock), and asks it afterwards
//! what its interrupt lines do. No model owns a timer, a thread or a lock;
//! where a model changes state on its own as time passes (the PIT, the RTC)
//! it says when next (`next_event`), and the VMM calls back then.
//!
//! * [`uart16550`]: the 16550A serial port (guest console, COM1 0x3F8 IRQ 4).
//! * [`pic8259`]: the two cascaded 8259A interrupt controllers and the ELCR.
//! * [`ioapic`]: the 82093AA I/O APIC at 0xFEC0_0000 (the one MMIO device).
//! * [`pit`]: the 8254 interval timer and port 0x61 (channel 2 gate/output).
//! * [`rtc`]: the MC146818 real-time clock and CMOS RAM.
//! * [`i8042`]: the keyboard controller, for its reset line.
//!
//! Interrupt lines are levels the VMM samples after every access and every
//! timer callback (`Uart16550::irq_level`, `I8042::irq1_level`/`irq12_level`,
//! `Rtc::irq_level`, and the PIT's `irq_edges` for IRQ 0) and hands on, on a
//! change, to both the PIC (`DualPic::set_irq`) and the I/O APIC
//! (`IoApic::set_irq`, pin = ISA IRQ, except IRQ 0 on pin 2 as the MADT's
//! interrupt source override says).
//!
//! [`PortBus`] maps I/O port ranges to the devices so an `in`/`out` exit is
//! one lookup. All of these models are fed by the guest: no access, size,
//! value or time may make them panic.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;

pub mod i8042;
pub mod ioapic;
pub mod pic8259;
pub mod pit;
pub mod rtc;
pub mod uart16550;

/// A device reached through x86 I/O ports (`in`/`out`).
///
/// `port` is the absolute port number (a device may answer several
/// ranges, as the PIT answers 0x40-0x43 and 0x61), `size` is 1, 2 or 4 bytes
/// and values are little-endian in the low bytes. A read of an unsupported
/// size returns all ones and such a write is ignored. `now_ns` is the VM's
/// monotonic time: the timer and the clock read out their state at that
/// moment. Time that goes backwards is treated as standing still.
pub trait PortIoDevice: Any + Send {
    fn read(&mut self, port: u16, size: u8, now_ns: u64) -> u32;
    fn write(&mut self, port: u16, size: u8, value: u32, now_ns: u64);
}

/// A device reached through guest-physical memory that is not RAM.
///
/// `offset` is relative to the device's base address; `size` is 1, 2, 4 or
/// 8 bytes, values little-endian in the low bytes (as [`crate::mmio::MmioBus`]
/// hands them over).
pub trait MmioDevice: Any + Send {
    fn read(&mut self, offset: u64, size: u8, now_ns: u64) -> u64;
    fn write(&mut self, offset: u64, size: u8, value: u64, now_ns: u64);
}

/// The value a read of `size` bytes gets from nothing: the ISA bus floats
/// high (Linux's probes for absent serial ports rely on reading 0xFF).
pub fn all_ones(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// Carries out a 1-, 2- or 4-byte read on an 8-bit device as consecutive
/// byte reads at `port`, `port + 1`, ..., as the chipset splits a wide cycle
/// to an 8-bit ISA device. Other sizes read all ones without touching the
/// device.
pub(crate) fn read_bytewise(port: u16, size: u8, mut read_byte: impl FnMut(u16) -> u8) -> u32 {
    if !matches!(size, 1 | 2 | 4) {
        return all_ones(size);
    }
    (0..u16::from(size)).fold(0u32, |acc, i| acc | u32::from(read_byte(port.wrapping_add(i))) << (8 * i))
}

/// The write counterpart of [`read_bytewise`]; other sizes are ignored.
pub(crate) fn write_bytewise(port: u16, size: u8, value: u32, mut write_byte: impl FnMut(u16, u8)) {
    if !matches!(size, 1 | 2 | 4) {
        return;
    }
    for i in 0..u16::from(size) {
        write_byte(port.wrapping_add(i), (value >> (8 * i)) as u8);
    }
}

/// A contiguous range of I/O ports: `base ..= base + len - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub base: u16,
    pub len: u16,
}

impl PortRange {
    pub const fn new(base: u16, len: u16) -> Self {
        Self { base, len }
    }

    /// The last port in the range (`None` for an empty range or one that
    /// runs past 0xFFFF).
    fn last(self) -> Option<u16> {
        self.len.checked_sub(1).and_then(|l| self.base.checked_add(l))
    }

    pub fn contains(self, port: u16) -> bool {
        self.last().is_some_and(|last| (self.base..=last).contains(&port))
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.last() {
            Some(last) => write!(f, "{:#x}-{:#x}", self.base, last),
            None => write!(f, "{:#x}+{}", self.base, self.len),
        }
    }
}

/// A device's place on a [`PortBus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceId(usize);

/// Why a device could not be put on the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or runs past port 0xFFFF.
    InvalidRange(PortRange),
    /// The range overlaps one already on the bus (or another in the same call).
    Overlap { range: PortRange, existing: PortRange },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::InvalidRange(r) => write!(f, "port range {r}: empty or past 0xffff"),
            BusError::Overlap { range, existing } => {
                write!(f, "port range {range}: overlaps {existing}, already on the bus")
            }
        }
    }
}

/// Maps I/O port ranges to devices, so the VMM's `in`/`out` exit handler
/// is one lookup. Ranges never overlap. The VMM keeps the [`DeviceId`]s to
/// reach the concrete devices again (draining the UART, asking the PIC for
/// a vector) through [`PortBus::device_mut`].
#[derive(Default)]
pub struct PortBus {
    devices: Vec<Box<dyn PortIoDevice>>,
    /// Sorted by base port, disjoint.
    ranges: Vec<(PortRange, usize)>,
}

impl PortBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` on the bus at every range in `ranges`: all of them or,
    /// on an error, none.
    pub fn add<D: PortIoDevice>(&mut self, device: D, ranges: &[PortRange]) -> Result<DeviceId, BusError> {
        for (i, &range) in ranges.iter().enumerate() {
            let last = range.last().ok_or(BusError::InvalidRange(range))?;
            let overlaps = |other: PortRange| other.last().is_some_and(|ol| range.base <= ol && other.base <= last);
            if let Some(&(existing, _)) = self.ranges.iter().find(|(r, _)| overlaps(*r)) {
                return Err(BusError::Overlap { range, existing });
            }
            if let Some(&existing) = ranges[..i].iter().find(|r| overlaps(**r)) {
                return Err(BusError::Overlap { range, existing });
            }
        }
        let index = self.devices.len();
        self.devices.push(Box::new(device));
        for &range in ranges {
            let at = self.ranges.partition_point(|(r, _)| r.base < range.base);
            self.ranges.insert(at, (range, index));
        }
        Ok(DeviceId(index))
    }

    /// The device answering `port`, if any.
    pub fn lookup(&self, port: u16) -> Option<DeviceId> {
        let at = self.ranges.partition_point(|(r, _)| r.base <= port);
        let (range, index) = *self.ranges.get(at.checked_sub(1)?)?;
        range.contains(port).then_some(DeviceId(index))
    }

    /// An `in` of `size` bytes at `port`; `None` when no device answers it
    /// (the guest should then read [`all_ones`]).
    pub fn read(&mut self, port: u16, size: u8, now_ns: u64) -> Option<u32> {
        let DeviceId(index) = self.lookup(port)?;
        Some(self.devices[index].read(port, size, now_ns))
    }

    /// An `out` of `size` bytes at `port`; `false` when no device answers it.
    pub fn write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) -> bool {
        match self.lookup(port) {
            Some(DeviceId(index)) => {
                self.devices[index].write(port, size, value, now_ns);
                true
            }
            None => false,
        }
    }

    /// The device at `id` as its concrete type (`None` for another type or
    /// an id from another bus).
    pub fn device_mut<T: PortIoDevice>(&mut self, id: DeviceId) -> Option<&mut T> {
        let device: &mut dyn Any = self.devices.get_mut(id.0)?.as_mut();
        device.downcast_mut::<T>()
    }

    pub fn device<T: PortIoDevice>(&self, id: DeviceId) -> Option<&T> {
        let device: &dyn Any = self.devices.get(id.0)?.as_ref();
        device.downcast_ref::<T>()
    }
}

/// A tiny xorshift generator for the fuzz-style tests of every device.
#[cfg(test)]
pub(crate) struct XorShift(pub u64);

#[cfg(test)]
impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An access size, mostly 1, sometimes 2, 4 or an invalid one.
    pub fn size(&mut self) -> u8 {
        [1, 1, 1, 1, 2, 4, 0, 3, 8][self.below(9) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    struct Echo {
        last: u32,
    }

    impl PortIoDevice for Echo {
        fn read(&mut self, port: u16, _size: u8, _now_ns: u64) -> u32 {
            self.last ^ u32::from(port)
        }
        fn write(&mut self, _port: u16, _size: u8, value: u32, _now_ns: u64) {
            self.last = value;
        }
    }

    #[test]
    fn bus_routes_ports_and_rejects_overlaps() {
        let mut bus = PortBus::new();
        let a = bus.add(Echo { last: 0 }, &[PortRange::new(0x40, 4), PortRange::new(0x61, 1)]).unwrap();
        let b = bus.add(uart16550::Uart16550::new(), &[PortRange::new(0x3F8, 8)]).unwrap();
        assert_eq!(bus.lookup(0x40), Some(a));
        assert_eq!(bus.lookup(0x43), Some(a));
        assert_eq!(bus.lookup(0x44), None);
        assert_eq!(bus.lookup(0x61), Some(a));
        assert_eq!(bus.lookup(0x3F8), Some(b));
        assert_eq!(bus.lookup(0x3FF), Some(b));
        assert_eq!(bus.lookup(0x400), None);
        assert_eq!(bus.lookup(0), None);
        assert_eq!(bus.lookup(0xFFFF), None);

        assert_eq!(
            bus.add(Echo { last: 0 }, &[PortRange::new(0x60, 2)]),
            Err(BusError::Overlap { range: PortRange::new(0x60, 2), existing: PortRange::new(0x61, 1) })
        );
        assert!(matches!(bus.add(Echo { last: 0 }, &[PortRange::new(0x3F0, 9)]), Err(BusError::Overlap { .. })));
        assert!(matches!(
            bus.add(Echo { last: 0 }, &[PortRange::new(0x10, 4), PortRange::new(0x12, 1)]),
            Err(BusError::Overlap { .. })
        ));
        assert_eq!(bus.lookup(0x10), None, "a failed add leaves nothing behind");
        assert_eq!(
            bus.add(Echo { last: 0 }, &[PortRange::new(0x10, 0)]),
            Err(BusError::InvalidRange(PortRange::new(0x10, 0)))
        );
        assert!(matches!(bus.add(Echo { last: 0 }, &[PortRange::new(0xFFFF, 2)]), Err(BusError::InvalidRange(_))));
        let c = bus.add(Echo { last: 0 }, &[PortRange::new(0xFFFF, 1)]).unwrap();
        assert_eq!(bus.lookup(0xFFFF), Some(c));

        assert!(bus.write(0x42, 1, 0x77, 0));
        assert_eq!(bus.read(0x61, 1, 0), Some(0x77 ^ 0x61));
        assert_eq!(bus.read(0x50, 1, 0), None);
        assert!(!bus.write(0x50, 1, 0, 0));

        assert_eq!(bus.device_mut::<Echo>(a).unwrap().last, 0x77);
        assert!(bus.device_mut::<Echo>(b).is_none(), "wrong type");
        bus.write(0x3F8, 1, u32::from(b'x'), 0);
        assert_eq!(bus.device_mut::<uart16550::Uart16550>(b).unwrap().take_output(), b"x");
        assert!(bus.device::<uart16550::Uart16550>(DeviceId(99)).is_none());
        assert!(BusError::InvalidRange(PortRange::new(1, 0)).to_string().contains("0x1"));
    }

    #[test]
    fn bytewise_splits_wide_accesses() {
        let mut seen = Vec::new();
        let v = read_bytewise(0x70, 2, |p| {
            seen.push(p);
            p as u8
        });
        assert_eq!(v, 0x7170);
        assert_eq!(seen, [0x70, 0x71]);
        assert_eq!(read_bytewise(0xFFFF, 4, |p| p as u8), 0x0201_00FF);
        assert_eq!(read_bytewise(0x70, 3, |_| 0), 0xFFFF_FFFF);
        let mut writes = Vec::new();
        write_bytewise(0x20, 4, 0x4433_2211, |p, b| writes.push((p, b)));
        assert_eq!(writes, [(0x20, 0x11), (0x21, 0x22), (0x22, 0x33), (0x23, 0x44)]);
        write_bytewise(0x20, 8, 0, |_, _| panic!("size 8 must be ignored"));
    }
}
