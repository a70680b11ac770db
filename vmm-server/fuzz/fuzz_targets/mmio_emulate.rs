//! An MMIO exit, all of it from the fuzzer: the instruction bytes, the
//! guest's registers and mode, and the faulting address. The emulator
//! decodes (iced-x86) and carries the access out against a device page;
//! whatever the bytes, it must return an error or a consistent result,
//! never panic.
#![no_main]

use abi::{Segment, VcpuRun};
use libfuzzer_sys::fuzz_target;
use vmm_server::mmio::{self, GuestMemory, MemFault, MmioBus};

struct Ram(Vec<u8>);

impl GuestMemory for Ram {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let start = usize::try_from(gva).map_err(|_| MemFault { gva })?;
        let src = self.0.get(start..start.saturating_add(buf.len())).ok_or(MemFault { gva })?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault> {
        let start = usize::try_from(gva).map_err(|_| MemFault { gva })?;
        let dst = self.0.get_mut(start..start.saturating_add(data.len())).ok_or(MemFault { gva })?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

struct Device(u64);

impl MmioBus for Device {
    fn read(&mut self, gpa: u64, _size: u8) -> u64 {
        self.0 ^ gpa
    }
    fn write(&mut self, _gpa: u64, _size: u8, value: u64) {
        self.0 = value;
    }
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 + 15 {
        return;
    }
    let mode = data[0] % 4;
    let len = 1 + usize::from(data[1]) % 15;
    let bytes = &data[2..2 + len];
    let gpa = u64_at(data, 17);
    let mut run = VcpuRun::ZERO;
    // Registers: from the input where there is some, small otherwise.
    for (i, g) in run.gprs.iter_mut().enumerate() {
        *g = u64_at(data, 25 + 8 * i);
    }
    run.rflags = 2 | (u64_at(data, 25 + 128) & 0xcd5);
    let code = match mode {
        0 => Segment { selector: 0, attrib: 0x9b, limit: 0xffff, base: 0 },
        1 => Segment { selector: 8, attrib: 0x9b, limit: 0xffff, base: 0 },
        2 => Segment { selector: 8, attrib: 0x49b, limit: u32::MAX, base: 0 },
        _ => Segment { selector: 8, attrib: 0x29b, limit: u32::MAX, base: 0 },
    };
    run.segments = [Segment { selector: 0x10, attrib: 0x493, limit: u32::MAX, base: 0 }; 8];
    run.segments[1] = code;
    run.cr0 = if mode == 0 { 0x10 } else { 0x11 };
    run.efer = if mode == 3 { 0x500 } else { 0 };
    let before = (run.rip, run.gprs);
    let mut ram = Ram(vec![0xAA; 0x1_0000]);
    let mut dev = Device(0);
    match mmio::emulate(bytes, &mut run, gpa, &mut ram, &mut dev) {
        Ok(done) => {
            assert!(matches!(done.size, 1 | 2 | 4 | 8));
            assert!(done.count <= mmio::REP_LIMIT);
        }
        Err(_) => assert_eq!(before.0, run.rip, "a failed emulation must not move RIP"),
    }
});
