//! Port I/O (`in`/`out`) for drivers, on Alcove only. A process may use only
//! the ports the kernel enabled for it ([`crate::sys::io_port_enable`] on an
//! I/O-port capability); any other port raises #GP and the kernel ends the
//! process. Port I/O reads and writes no memory of the process, so these are
//! safe functions.
//!
//! Also the PCI configuration mechanism #1 (ports 0xCF8/0xCFC, PCI Local Bus
//! 3.0 §3.2.2.3.2), which storaged uses to find its disks.

/// Reads a 32-bit port.
pub fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: `in` touches no memory (`nomem`) and no stack; a port the
    // process was not given faults and ends the process, which is sound.
    unsafe { core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a 32-bit port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as `inl`.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) };
}

/// Reads an 8-bit port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as `inl`.
    unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes an 8-bit port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: as `inl`.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// The configuration address register of mechanism #1.
pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
/// The configuration data register of mechanism #1.
pub const PCI_CONFIG_DATA: u16 = 0xcfc;

/// The address word for `bus:device.function`, register `offset` (rounded
/// down to a dword).
pub const fn pci_config_address(bus: u8, device: u8, function: u8, offset: u8) -> u32 {
    0x8000_0000
        | (bus as u32) << 16
        | ((device as u32) & 0x1f) << 11
        | ((function as u32) & 0x7) << 8
        | (offset as u32 & 0xfc)
}

/// Reads a configuration dword (needs ports 0xCF8..0xCFF).
pub fn pci_config_read(bus: u8, device: u8, function: u8, offset: u8) -> u32 {
    outl(PCI_CONFIG_ADDRESS, pci_config_address(bus, device, function, offset));
    inl(PCI_CONFIG_DATA)
}

/// Writes a configuration dword (needs ports 0xCF8..0xCFF).
pub fn pci_config_write(bus: u8, device: u8, function: u8, offset: u8, value: u32) {
    outl(PCI_CONFIG_ADDRESS, pci_config_address(bus, device, function, offset));
    outl(PCI_CONFIG_DATA, value);
}
