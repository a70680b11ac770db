//! An MMIO exit, all of it from the fuzzer: the instruction bytes, the
//! guest's registers and mode, and the faulting address. The emulator
//! decodes (iced-x86) and carries the access out against a device page;
//! whatever the bytes, it must return an error or a consistent result,
//! never panic. One input in four is taken as a string port I/O exit
//! (`ins`/`outs`) instead, against a RAM whose second page the guest's
//! paging refuses.
#![no_main]

use abi::{Segment, VcpuRun};
use libfuzzer_sys::fuzz_target;
use vmm_server::mmio::{self, AccessKind, FaultKind, GuestMemory, MemFault, MmioBus, PortBus};

struct Ram(Vec<u8>);

/// Linear = physical; the page at 0x1000 is refused (user, not present).
const REFUSED: u64 = 0x1000;

impl Ram {
    fn range(&self, gva: u64, len: usize) -> Result<core::ops::Range<usize>, MemFault> {
        let last = gva.wrapping_add(len.max(1) as u64 - 1);
        if gva >> 12 == REFUSED >> 12 || last >> 12 == REFUSED >> 12 {
            return Err(MemFault { gva, kind: FaultKind::Page { error_code: 4 } });
        }
        let not_ram = MemFault { gva, kind: FaultKind::NotRam { gpa: gva } };
        let start = usize::try_from(gva).map_err(|_| not_ram)?;
        let end = start.checked_add(len).filter(|&e| e <= self.0.len()).ok_or(not_ram)?;
        Ok(start..end)
    }
}

impl GuestMemory for Ram {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let r = self.range(gva, buf.len())?;
        buf.copy_from_slice(&self.0[r]);
        Ok(())
    }
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault> {
        let r = self.range(gva, data.len())?;
        self.0[r].copy_from_slice(data);
        Ok(())
    }
    fn fetch(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.read(gva, buf)
    }
    fn check(&mut self, gva: u64, _kind: AccessKind) -> Result<u64, MemFault> {
        match self.range(gva, 1) {
            Err(MemFault { kind: FaultKind::Page { .. }, .. }) => Err(MemFault { gva, kind: FaultKind::Page { error_code: 4 } }),
            _ => Ok(gva),
        }
    }
}

struct Port(u32);

impl PortBus for Port {
    fn read(&mut self, port: u16, _size: u8) -> u32 {
        self.0 ^ u32::from(port)
    }
    fn write(&mut self, _port: u16, _size: u8, value: u32) {
        self.0 = value;
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
    if data[1] & 0xc0 == 0 {
        let size = [1, 2, 4, 4][usize::from(data[16] & 3)];
        let exit = mmio::PortExit { port: gpa as u16, size, write: data[16] & 4 != 0, rep: data[16] & 8 != 0 };
        match mmio::string_io(bytes, &mut run, exit, &mut ram, &mut Port(0)) {
            Ok(done) => {
                assert!(done.count <= mmio::REP_LIMIT);
                assert_eq!(done.finished, run.rip != before.0);
            }
            Err(mmio::EmulateError::Fault { fault, .. }) => {
                assert_eq!(before.0, run.rip, "a faulting string I/O must not move RIP");
                assert!(fault.exception().is_some() || matches!(fault.kind, FaultKind::NotRam { .. }));
            }
            Err(_) => assert_eq!(before, (run.rip, run.gprs), "a refused string I/O must change nothing"),
        }
        return;
    }
    let mut dev = Device(0);
    match mmio::emulate(bytes, &mut run, gpa, &mut ram, &mut dev) {
        Ok(done) => {
            assert!(matches!(done.size, 1 | 2 | 4 | 8));
            assert!(done.count <= mmio::REP_LIMIT);
        }
        Err(_) => assert_eq!(before.0, run.rip, "a failed emulation must not move RIP"),
    }
});
