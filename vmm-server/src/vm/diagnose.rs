//! What the VMM prints when a vCPU ends the VM by a triple fault (the
//! hardware's shutdown exit): where the guest was (RIP, CS, RSP, RFLAGS,
//! control registers, EFER, IDTR), the event the hardware was delivering
//! when it gave up (SVM EXITINTINFO, VMX IDT-vectoring information) and
//! the vCPU's last hardware exits as the kernel traced them, those it
//! finished itself included (`abi::VcpuRun::exit_trace`). An operator (and
//! a failing CI run) reads from it where the guest went wrong.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use abi::VcpuRun;

/// An event in `inject`'s format, in words: `none`, or e.g.
/// `#GP(0x0) exception` / `vector 0xec external interrupt`.
pub fn describe_event(ev: u64) -> String {
    if ev & (1 << 31) == 0 {
        return "none".into();
    }
    let vector = ev & 0xff;
    let kind = match (ev >> 8) & 7 {
        0 => "external interrupt",
        2 => "NMI",
        3 => "exception",
        4 => "software interrupt",
        5 => "privileged software exception",
        6 => "software exception",
        _ => "reserved type",
    };
    const NAMES: [&str; 22] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "15",
        "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    ];
    let name = match (ev >> 8) & 7 {
        3 | 6 if (vector as usize) < NAMES.len() => String::from(NAMES[vector as usize]),
        _ => format!("vector {vector:#x}"),
    };
    if ev & (1 << 11) != 0 {
        format!("{name}({:#x}) {kind}", ev >> 32)
    } else {
        format!("{name} {kind}")
    }
}

/// The report of vCPU `index` after its shutdown exit, one line each.
pub fn shutdown_report(index: usize, run: &VcpuRun) -> Vec<String> {
    let cs = run.segments[1];
    let mut lines = Vec::new();
    lines.push(format!(
        "vCPU {index}: triple fault at rip {:#x} cs {:#x} (base {:#x}, attrib {:#x}) rsp {:#x} rflags {:#x}",
        run.rip, cs.selector, cs.base, cs.attrib, run.gprs[4], run.rflags
    ));
    lines.push(format!(
        "vCPU {index}: cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} idtr {:#x}/{:#x} gdtr {:#x}/{:#x}",
        run.cr0, run.cr2, run.cr3, run.cr4, run.efer, run.idtr.base, run.idtr.limit, run.gdtr.base, run.gdtr.limit
    ));
    lines.push(format!(
        "vCPU {index}: being delivered at the exit: {} (raw {:#x}); exit code {:#x} info {:#x} {:#x}",
        describe_event(run.exit_int_info),
        run.exit_int_info,
        run.hw_code,
        run.info1,
        run.info2
    ));
    let exits: Vec<_> = run.recent_exits().collect();
    lines.push(format!("vCPU {index}: last {} hardware exits, oldest first:", exits.len()));
    for e in exits {
        lines.push(format!(
            "vCPU {index}:   exit {:#x} at rip {:#x} info {:#x}; injected {}; delivering {}",
            e.code,
            e.rip,
            e.info,
            describe_event(u64::from(e.injected)),
            describe_event(u64::from(e.int_info))
        ));
    }
    lines
}

/// The report of vCPU `index` when the VM ended with every vCPU halted
/// with interrupts off (nothing but another vCPU's NMI could wake one):
/// where it stopped and its last hardware exits, one line each.
pub fn halt_report(index: usize, run: &VcpuRun) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "vCPU {index}: stopped at rip {:#x} rflags {:#x}; exit code {:#x}, delivering {}",
        run.rip,
        run.rflags,
        run.hw_code,
        describe_event(run.exit_int_info)
    ));
    let exits: Vec<_> = run.recent_exits().collect();
    lines.push(format!("vCPU {index}: last {} hardware exits, oldest first:", exits.len()));
    for e in exits {
        lines.push(format!(
            "vCPU {index}:   exit {:#x} at rip {:#x} info {:#x}; injected {}; delivering {}",
            e.code,
            e.rip,
            e.info,
            describe_event(u64::from(e.injected)),
            describe_event(u64::from(e.int_info))
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::ExitTrace;

    #[test]
    fn events_in_words() {
        assert_eq!(describe_event(0), "none");
        assert_eq!(describe_event((1 << 31) | (3 << 8) | 14 | (1 << 11) | (2 << 32)), "#PF(0x2) exception");
        assert_eq!(describe_event((1 << 31) | 0xec), "vector 0xec external interrupt");
        assert_eq!(describe_event((1 << 31) | (2 << 8) | 2), "vector 0x2 NMI");
    }

    #[test]
    fn halt_report_says_where_the_vcpu_stopped_and_what_it_last_did() {
        let mut run = VcpuRun { rip: 0x10_b2f7, rflags: 0x2, ..VcpuRun::ZERO };
        run.hw_code = 0x78;
        run.trace_exit(ExitTrace { rip: 0x10_0440, code: 0x74, injected: (1 << 31) | (2 << 8) | 2, int_info: 0, info: 0 });
        run.trace_exit(ExitTrace { rip: 0x10_b2f6, code: 0x78, injected: 0, int_info: 0, info: 0 });
        let r = halt_report(1, &run);
        assert!(r[0].contains("vCPU 1: stopped at rip 0x10b2f7 rflags 0x2; exit code 0x78"), "{r:?}");
        assert!(r[1].contains("last 2 hardware exits"), "{r:?}");
        assert!(r[2].contains("exit 0x74 at rip 0x100440") && r[2].contains("injected vector 0x2 NMI"), "{r:?}");
        assert!(r[3].contains("exit 0x78 at rip 0x10b2f6"), "{r:?}");
    }

    #[test]
    fn report_names_where_the_guest_was_and_its_last_exits() {
        let mut run = VcpuRun { rip: 0xffff_ffff_8100_0000, cr3: 0x0123_4000, exit_int_info: (1 << 31) | (3 << 8) | 8 | (1 << 11), ..VcpuRun::ZERO };
        run.segments[1].selector = 0x10;
        run.hw_code = 0x7f;
        run.trace_exit(ExitTrace { rip: 0x1000, code: 0x7b, injected: (1 << 31) | 0x30, int_info: 0, info: 0x3f80000 });
        run.trace_exit(ExitTrace { rip: 0x2000, code: 0x7f, injected: 0, int_info: (1 << 31) | (3 << 8) | 8 | (1 << 11), info: 0 });
        let r = shutdown_report(3, &run);
        assert!(r[0].contains("vCPU 3: triple fault at rip 0xffffffff81000000 cs 0x10"), "{r:?}");
        assert!(r[1].contains("cr3 0x1234000"), "{r:?}");
        assert!(r[2].contains("#DF(0x0) exception") && r[2].contains("exit code 0x7f"), "{r:?}");
        assert!(r[3].contains("last 2 hardware exits"), "{r:?}");
        assert!(r[4].contains("exit 0x7b at rip 0x1000") && r[4].contains("injected vector 0x30 external interrupt"), "{r:?}");
        assert!(r[5].contains("exit 0x7f at rip 0x2000") && r[5].contains("delivering #DF(0x0) exception"), "{r:?}");
    }
}
