//! What a vCPU's entry on a physical CPU must redo because of where the
//! vCPU ran before (security issue findings 8 and 9).
//!
//! * Guest translations are cached per CPU, tagged with the VPID (VMX) or
//!   ASID (SVM) and the nested-table root, and a flush (INVEPT, SVM's
//!   TLB_CONTROL) acts on the CPU that does it only. A vCPU that comes to
//!   a CPU it did not run on last may meet translations it left there
//!   before unmaps it then flushed elsewhere: it flushes on arrival, as
//!   KVM does on a vCPU's migration (`KVM_REQ_TLB_FLUSH`). A guest's unmap
//!   generation it has not yet seen flushes as well.
//! * A VMCS is active on one CPU at a time and must be VMCLEARed on that
//!   CPU before another CPU loads it (SDM Vol. 3C §25.11.1, §25.11.3); its
//!   host-state area names the per-CPU GS base, TSS and GDT of the CPU that
//!   takes the exits. The kernel clears the VMCS on its CPU at the end of
//!   every `VcpuRun` (the run cannot change CPU: interrupts are off in it),
//!   so between runs it is active nowhere: the thread may move, and
//!   destroying the vCPU needs no VMCLEAR from a foreign CPU. After a clear
//!   the next entry is a VMLAUNCH; the host state is rewritten whenever the
//!   CPU differs from the one it was written for.

/// What the kernel remembers of a vCPU's last entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuCpu {
    /// The CPU of its last entry (`None` before the first).
    last_cpu: Option<u32>,
    /// The guest's unmap generation its translations were last flushed for.
    seen_generation: u64,
    /// VMX: the VMCS's host state is that of this CPU.
    host_state_cpu: Option<u32>,
    /// VMX: the VMCS is launched (and active on `last_cpu`).
    launched: bool,
}

/// What an entry on a CPU must do first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPlan {
    /// Flush the vCPU's guest translations on this CPU.
    pub flush_tlb: bool,
    /// VMX: write the host-state area for this CPU.
    pub write_host_state: bool,
    /// VMX: VMLAUNCH (the VMCS is clear), not VMRESUME.
    pub launch: bool,
}

impl Default for VcpuCpu {
    fn default() -> Self {
        Self::new()
    }
}

impl VcpuCpu {
    pub const fn new() -> Self {
        Self { last_cpu: None, seen_generation: 0, host_state_cpu: None, launched: false }
    }

    /// An entry on `cpu` while the guest's unmap generation is `generation`.
    pub fn enter(&mut self, cpu: u32, generation: u64) -> EntryPlan {
        let flush_tlb = self.last_cpu != Some(cpu) || generation != self.seen_generation;
        let write_host_state = self.host_state_cpu != Some(cpu);
        self.last_cpu = Some(cpu);
        self.seen_generation = generation;
        self.host_state_cpu = Some(cpu);
        EntryPlan { flush_tlb, write_host_state, launch: !self.launched }
    }

    /// The guest was entered (VMLAUNCH/VMRESUME succeeded).
    pub fn entered(&mut self) {
        self.launched = true;
    }

    /// The run is over and the VMCS was cleared on its CPU.
    pub fn cleared(&mut self) {
        self.launched = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 8: a vCPU runs on CPU 0, moves to CPU 1, the guest unmaps
    /// memory (the flush happens on CPU 1, where the vCPU now runs), and
    /// the vCPU moves back to CPU 0: CPU 0 still holds its translations of
    /// the unmapped (freed) frames, so it must flush there too.
    #[test]
    fn guest_tlb_flush_per_vcpu_not_per_cpu() {
        let mut v = VcpuCpu::new();
        assert!(v.enter(0, 0).flush_tlb);
        v.cleared();
        let on1 = v.enter(1, 0);
        assert!(on1.flush_tlb, "arriving on CPU 1 must flush what an earlier stay there left");
        v.cleared();
        // The unmap: generation 1, seen (and flushed) on CPU 1.
        assert!(v.enter(1, 1).flush_tlb);
        v.cleared();
        assert!(!v.enter(1, 1).flush_tlb, "no flush while nothing changed");
        v.cleared();
        assert!(v.enter(0, 1).flush_tlb, "back on CPU 0: its stale translations of freed frames must go");
        v.cleared();
        assert!(!v.enter(0, 1).flush_tlb);
    }

    /// A fresh vCPU (perhaps with a reused VPID) flushes at its first
    /// entry, whatever the generation.
    #[test]
    fn first_entry_flushes() {
        for generation in [0, 1, u64::MAX] {
            let mut v = VcpuCpu::new();
            assert!(v.enter(3, generation).flush_tlb, "generation {generation}");
        }
    }

    /// Finding 9: a VMX vCPU moved between CPUs gets its VMCS cleared on
    /// the old CPU (at the end of each run), launched anew on the new one,
    /// and the new CPU's host state (GS, TR and GDTR bases) before the
    /// entry, so its exits load that CPU's state, not the old one's.
    #[test]
    fn vmx_vcpu_moved_between_cpus() {
        let mut v = VcpuCpu::new();
        let first = v.enter(0, 0);
        assert!(first.write_host_state && first.launch);
        v.entered();
        // Further entries in the same run resume.
        let again = v.enter(0, 0);
        assert!(!again.write_host_state && !again.launch);
        v.entered();
        v.cleared();
        // Next run, on CPU 1.
        let moved = v.enter(1, 0);
        assert!(moved.write_host_state, "exits on CPU 1 must load CPU 1's GS/TR/GDTR");
        assert!(moved.launch, "a VMCS cleared on CPU 0 is launched, not resumed, on CPU 1");
        v.entered();
        v.cleared();
        // Back on CPU 1 in a later run: the host state still fits, but the
        // clear at the end of the run means a launch.
        let stay = v.enter(1, 0);
        assert!(!stay.write_host_state);
        assert!(stay.launch);
        v.entered();
        let resume = v.enter(1, 0);
        assert!(!resume.launch);
        v.cleared();
        assert!(v.enter(0, 0).write_host_state);
    }
}
