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

use super::memory::{GuestRam, PhysMemory};

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

/// The vCPU's last hardware exits as the kernel traced them, oldest
/// first, a line each after a heading line.
fn push_recent_exits(index: usize, run: &VcpuRun, lines: &mut Vec<String>) {
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
    push_recent_exits(index, run, &mut lines);
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
    push_recent_exits(index, run, &mut lines);
    lines
}

/// Where the guest's own page tables (in guest RAM as the VMM reads it
/// after the fault) take RIP, CR2 and the IDT, one line each, and the IDT
/// gates of #DF and #PF: whether the tables the faulting walk used are
/// intact now (then the guest saw a stale or wrong translation) or hold
/// garbage (then something wrote into them).
pub fn shutdown_walks<M: PhysMemory>(index: usize, mem: &M, run: &VcpuRun) -> Vec<String> {
    let ram = GuestRam::for_vcpu(mem, run);
    let mut lines = Vec::new();
    for (what, va) in [("rip", run.rip), ("cr2", run.cr2), ("idtr", run.idtr.base)] {
        lines.push(format!("vCPU {index}: page walk of {what} {}", ram.walk_report(va)));
    }
    let long_mode = run.efer & (1 << 10) != 0;
    if long_mode && run.cr0 & (1 << 31) != 0 {
        lines.push(top_table(index, mem, run.cr3 & 0x000f_ffff_ffff_f000));
    }
    if run.cr0 & 1 == 0 {
        // Real mode: an interrupt vector table, no gates.
        return lines;
    }
    // Long mode's gates are 16 bytes, protected mode's 8.
    let gate = if long_mode { 16 } else { 8 };
    for vector in [8u64, 14] {
        let at = vector * gate;
        if at + gate > u64::from(run.idtr.limit) + 1 {
            lines.push(format!("vCPU {index}: IDT gate {vector:#x}: past the IDT's limit"));
            continue;
        }
        let va = run.idtr.base.wrapping_add(at);
        let mut bytes = [0u8; 16];
        let bytes = &mut bytes[..gate as usize];
        match ram.translate(va) {
            Some(gpa) if mem.read(gpa, bytes) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                lines.push(format!("vCPU {index}: IDT gate {vector:#x} at gpa {gpa:#x}: {hex}"));
            }
            Some(gpa) => lines.push(format!("vCPU {index}: IDT gate {vector:#x} at gpa {gpa:#x}: not guest RAM")),
            None => lines.push(format!("vCPU {index}: IDT gate {vector:#x}: not mapped")),
        }
    }
    lines
}

/// What the kernel found under the guest's walk of RIP right after the
/// exit (`abi::NestedWalk`: each of the guest's tables read through the
/// nested tables, and the nested root the hardware had) beside what the
/// VMM reads at the same guest-physical addresses: a root that is not the
/// guest's, or an entry the two read differently, means the guest's walk
/// went through a frame other than its RAM. One line, then one a step.
pub fn nested_walk<M: PhysMemory>(index: usize, mem: &M, run: &VcpuRun) -> Vec<String> {
    let n = &run.nested;
    let steps = (n.steps as usize).min(n.leaves.len());
    if steps == 0 {
        return alloc::vec![format!("vCPU {index}: nested walk of rip: none (paging off, or not reported)")];
    }
    let root = if n.hw_root == n.root { String::from("the guest's") } else { format!("NOT the guest's root {:#x}", n.root) };
    let mut lines = alloc::vec![format!(
        "vCPU {index}: nested walk of rip (the kernel, after the exit): root {:#x} ({root}), ASID {}",
        n.hw_root, n.asid
    )];
    let va = run.segments[1].base.wrapping_add(run.rip);
    let ours = GuestRam::for_vcpu(mem, run).entries_read(va);
    for i in 0..steps {
        // The two walks go the same way as long as they agree.
        let same_way = ours.iter().zip(&n.entries).take(i).all(|(&(_, e), &k)| e == k);
        let vmm = if same_way { ours.get(i) } else { None };
        let at = vmm.map_or(String::new(), |&(gpa, _)| format!("[{gpa:#x}] "));
        let (leaf, entry) = (n.leaves[i], n.entries[i]);
        let leaf_says = if leaf == 0 { String::from("no nested leaf") } else { format!("nested leaf {leaf:#x}: {entry:#x}") };
        let vmm_says = match vmm {
            _ if leaf == 0 => String::new(),
            Some(&(_, e)) if e == entry => String::from(" (the VMM reads the same)"),
            Some(&(_, e)) => format!(", but the VMM reads {e:#x}"),
            None if same_way => String::from(" (the VMM's walk stopped before)"),
            None => String::from(" (the VMM's walk went elsewhere)"),
        };
        lines.push(format!("vCPU {index}:   {at}{leaf_says}{vmm_says}"));
    }
    lines
}

/// The non-zero entries of the top-level table at `gpa` (a 64-bit
/// guest's PML4 holds a handful: garbage there shows what overwrote it),
/// the first 16 of them.
fn top_table<M: PhysMemory>(index: usize, mem: &M, gpa: u64) -> String {
    // On the heap: vCPU threads have small stacks.
    let mut page = alloc::vec![0u8; 4096];
    if !mem.read(gpa, &mut page) {
        return format!("vCPU {index}: top-level table at gpa {gpa:#x}: not guest RAM");
    }
    let entries: Vec<(usize, u64)> = page
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .enumerate()
        .filter(|&(_, e)| e != 0)
        .collect();
    let shown: Vec<String> = entries.iter().take(16).map(|(i, e)| format!("[{i}] {e:#x}")).collect();
    format!(
        "vCPU {index}: top-level table at gpa {gpa:#x}: {} of 512 entries non-zero: {}{}",
        entries.len(),
        shown.join(" "),
        if entries.len() > 16 { " ..." } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::ExitTrace;

    /// Guest RAM for the walks: a vector, refusing what lies past it.
    struct Ram(core::cell::RefCell<Vec<u8>>);

    impl PhysMemory for Ram {
        fn size(&self) -> u64 {
            self.0.borrow().len() as u64
        }
        fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
            let m = self.0.borrow();
            let Some(s) = usize::try_from(gpa).ok().and_then(|at| m.get(at..)).and_then(|s| s.get(..buf.len())) else {
                return false;
            };
            buf.copy_from_slice(s);
            true
        }
        fn write(&self, gpa: u64, data: &[u8]) -> bool {
            let mut m = self.0.borrow_mut();
            let Some(s) = usize::try_from(gpa).ok().and_then(|at| m.get_mut(at..)).and_then(|s| s.get_mut(..data.len()))
            else {
                return false;
            };
            s.copy_from_slice(data);
            true
        }
    }

    /// The walks of a fault like net-two's: the IDT's page is mapped by a
    /// page table one entry of which was overwritten with garbage. The
    /// report shows the intact path to the IDT and its gates, and the bad
    /// entry on CR2's path; an IDTR limit too short for a gate and a
    /// table past RAM are reported, not read.
    #[test]
    fn walks_show_the_guests_tables_at_the_fault() {
        let ram = Ram(core::cell::RefCell::new(alloc::vec![0u8; 0x10_0000]));
        let put = |gpa: u64, v: u64| assert!(ram.write(gpa, &v.to_le_bytes()));
        // PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000.
        put(0x1000, 0x2003);
        put(0x2000, 0x3003);
        put(0x3000, 0x4003);
        put(0x4000 + 8, 0x9001 | (1 << 63)); // 0x1000: the IDT, read-only, no-execute
        put(0x4000 + 16, 0x0bad_0000_0000_0b0e); // 0x2000: garbage
        put(0x4000 + 24, 0xa001); // 0x3000: code
        // #DF's and #PF's gates.
        put(0x9080, 0x1111_2222_3333_4444);
        put(0x9088, 0x5555_6666);
        put(0x90e0, 0x7777_8888_9999_aaaa);
        let mut run = VcpuRun {
            rip: 0x3010,
            cr0: (1 << 31) | 1,
            cr2: 0x2000,
            cr3: 0x1000,
            cr4: 1 << 5,
            efer: (1 << 10) | (1 << 8) | (1 << 11),
            ..VcpuRun::ZERO
        };
        run.idtr.base = 0x1000;
        run.idtr.limit = 0xfff;
        let r = shutdown_walks(1, &ram, &run);
        assert_eq!(r.len(), 6, "{r:?}");
        assert_eq!(r[0], "vCPU 1: page walk of rip 0x3010 (cr3 0x1000): [0x1000] 0x2003 [0x2000] 0x3003 [0x3000] 0x4003 [0x4018] 0xa001 -> gpa 0xa010 (read-only)");
        assert!(r[1].starts_with("vCPU 1: page walk of cr2 0x2000 ") && r[1].ends_with("[0x4010] 0xbad000000000b0e: not present"), "{r:?}");
        assert!(r[2].ends_with("[0x4008] 0x8000000000009001 -> gpa 0x9000 (read-only, no-execute)"), "{r:?}");
        assert_eq!(r[3], "vCPU 1: top-level table at gpa 0x1000: 1 of 512 entries non-zero: [0] 0x2003");
        assert_eq!(r[4], "vCPU 1: IDT gate 0x8 at gpa 0x9080: 44443333222211116666555500000000");
        assert_eq!(r[5], "vCPU 1: IDT gate 0xe at gpa 0x90e0: aaaa9999888877770000000000000000");
        // A limit that holds #DF's gate but not #PF's; then tables past RAM.
        run.idtr.limit = 0x8f;
        let r = shutdown_walks(1, &ram, &run);
        assert!(r[4].starts_with("vCPU 1: IDT gate 0x8 at gpa 0x9080"), "{r:?}");
        assert_eq!(r[5], "vCPU 1: IDT gate 0xe: past the IDT's limit");
        // A top-level table full of garbage: its first 16 entries shown.
        for i in 0..512u64 {
            put(0x5000 + i * 8, 0x6b6b_6b6b_6b6b_6b6b);
        }
        run.cr3 = 0x5000;
        let r = shutdown_walks(1, &ram, &run);
        assert!(
            r[0].ends_with("(cr3 0x5000): [0x5000] 0x6b6b6b6b6b6b6b6b: table entry at 0xb6b6b6b6b6000 is not guest RAM"),
            "{r:?}"
        );
        assert!(r[3].starts_with("vCPU 1: top-level table at gpa 0x5000: 512 of 512 entries non-zero: [0] 0x6b6b6b6b6b6b6b6b"), "{r:?}");
        assert!(r[3].ends_with("[15] 0x6b6b6b6b6b6b6b6b ..."), "{r:?}");
        // Real mode: identity "walks", no table and no gates.
        let real = VcpuRun { rip: 0x7c00, ..VcpuRun::ZERO };
        let r = shutdown_walks(1, &ram, &real);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[0], "vCPU 1: page walk of rip 0x7c00 (cr3 0x0): paging off");
        run.cr3 = 0xffff_f000;
        let r = shutdown_walks(1, &ram, &run);
        assert!(r[0].ends_with("(cr3 0xfffff000): table entry at 0xfffff000 is not guest RAM"), "{r:?}");
        assert_eq!(r[3], "vCPU 1: top-level table at gpa 0xfffff000: not guest RAM");
        assert_eq!(r[4], "vCPU 1: IDT gate 0x8: not mapped");
    }

    /// The kernel's nested walk beside the VMM's reading of the same
    /// tables: agreeing steps, a root that is not the guest's, an entry
    /// the kernel read differently (the walks part there), a table no
    /// nested leaf maps, a count past the array, and no report at all.
    #[test]
    fn nested_walk_shows_where_the_kernel_and_the_vmm_disagree() {
        let ram = Ram(core::cell::RefCell::new(alloc::vec![0u8; 0x10_0000]));
        let put = |gpa: u64, v: u64| assert!(ram.write(gpa, &v.to_le_bytes()));
        // RIP 0x3010: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000.
        put(0x1000, 0x2003);
        put(0x2000, 0x3003);
        put(0x3000, 0x4003);
        put(0x4018, 0xa001);
        let mut run = VcpuRun { rip: 0x3010, cr0: (1 << 31) | 1, cr3: 0x1000, cr4: 1 << 5, efer: (1 << 10) | (1 << 8), ..VcpuRun::ZERO };
        assert_eq!(nested_walk(2, &ram, &run), ["vCPU 2: nested walk of rip: none (paging off, or not reported)"]);
        let leaf = |pa: u64| pa | 0x67;
        run.nested = abi::NestedWalk {
            hw_root: 0x7_7000,
            root: 0x7_7000,
            leaves: [leaf(0x50_1000), leaf(0x50_2000), leaf(0x50_3000), leaf(0x50_4000)],
            entries: [0x2003, 0x3003, 0x4003, 0xa001],
            steps: 4,
            asid: 3,
        };
        let r = nested_walk(2, &ram, &run);
        assert_eq!(r.len(), 5, "{r:?}");
        assert_eq!(r[0], "vCPU 2: nested walk of rip (the kernel, after the exit): root 0x77000 (the guest's), ASID 3");
        assert_eq!(r[1], "vCPU 2:   [0x1000] nested leaf 0x501067: 0x2003 (the VMM reads the same)");
        assert_eq!(r[4], "vCPU 2:   [0x4018] nested leaf 0x504067: 0xa001 (the VMM reads the same)");
        // Another root, and the PDPT read as something else through it.
        run.nested.hw_root = 0x9_9000;
        run.nested.entries[1] = 0;
        run.nested.steps = 2;
        let r = nested_walk(2, &ram, &run);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[0].ends_with("root 0x99000 (NOT the guest's root 0x77000), ASID 3"), "{r:?}");
        assert_eq!(r[2], "vCPU 2:   [0x2000] nested leaf 0x502067: 0x0, but the VMM reads 0x3003");
        // Past a disagreement the walks part; a table no leaf maps.
        run.nested.entries[1] = 0x6003;
        run.nested.leaves[2] = 0;
        run.nested.steps = 99;
        let r = nested_walk(2, &ram, &run);
        assert_eq!(r.len(), 5, "{r:?}");
        assert_eq!(r[3], "vCPU 2:   no nested leaf");
        assert_eq!(r[4], "vCPU 2:   nested leaf 0x504067: 0xa001 (the VMM's walk went elsewhere)");
        // The VMM's walk stops (a not-present PT entry) where the kernel's went on.
        put(0x4018, 0);
        run.nested.entries = [0x2003, 0x3003, 0x4003, 0xa001];
        run.nested.leaves[2] = leaf(0x50_3000);
        let r = nested_walk(2, &ram, &run);
        assert_eq!(r[4], "vCPU 2:   [0x4018] nested leaf 0x504067: 0xa001, but the VMM reads 0x0");
        put(0x3000, 0x4000);
        let r = nested_walk(2, &ram, &run);
        assert_eq!(r[3], "vCPU 2:   [0x3000] nested leaf 0x503067: 0x4003, but the VMM reads 0x4000");
        assert_eq!(r[4], "vCPU 2:   nested leaf 0x504067: 0xa001 (the VMM's walk went elsewhere)");
        put(0x3000, 0x4003);
        put(0x2000, 0x3083); // a 1 GiB page: the VMM's walk ends at the PDPT
        run.nested.entries[1] = 0x3083;
        let r = nested_walk(2, &ram, &run);
        assert_eq!(r[3], "vCPU 2:   nested leaf 0x503067: 0x4003 (the VMM's walk stopped before)");
    }

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
