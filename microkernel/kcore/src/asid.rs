//! SVM address-space identifiers handed out per physical CPU, by
//! generation (as KVM's `svm_cpu_data`): any number of vCPUs share the
//! few ASIDs a CPU has.
//!
//! The TLB tags guest translations with the ASID of the VMCB that made
//! them (AMD APM Vol. 2 §15.16), per CPU. A vCPU gets an ASID from the CPU
//! it enters on and keeps it while it stays there; when that CPU has none
//! left, it starts a new generation: the entry flushes the whole TLB
//! (TLB_CONTROL = 1) and ASIDs count from 1 again, so every vCPU that
//! enters afterwards takes a fresh one. A vCPU that moved to another CPU
//! (or comes back to one after a newer generation began) also takes a
//! fresh one, so it never meets translations another vCPU left under the
//! same tag, nor its own stale ones from before it moved.
//!
//! QEMU's SVM offers 16 ASIDs (15 for guests): handing each vCPU its own
//! for life stopped the sixteenth vCPU of a machine from being created.

/// What a vCPU remembers of its ASID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidTag {
    pub asid: u32,
    /// The CPU it was handed out on.
    pub cpu: u32,
    /// That CPU's generation when it was.
    pub generation: u64,
}

/// The ASID to enter with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub asid: u32,
    /// A new generation began: flush every ASID's translations on this CPU
    /// with this entry.
    pub flush_all: bool,
}

/// One CPU's ASIDs.
#[derive(Debug)]
pub struct AsidPool {
    /// The next ASID to hand out in this generation.
    next: u32,
    generation: u64,
}

impl Default for AsidPool {
    fn default() -> Self {
        Self::new()
    }
}

impl AsidPool {
    pub const fn new() -> Self {
        // Generation 0 is never current, so a vCPU without a tag (or with
        // a default one) always takes a fresh ASID.
        Self { next: u32::MAX, generation: 0 }
    }

    /// The ASID for `tag`'s vCPU entering on `cpu`, which has `limit` ASIDs
    /// (CPUID 8000_000A EBX; 0 is the host's). Updates `tag`. `None` when
    /// the CPU has no ASID for guests at all (`limit` < 2).
    pub fn assign(&mut self, cpu: u32, limit: u32, tag: &mut Option<AsidTag>) -> Option<Assigned> {
        if limit < 2 {
            return None;
        }
        if let Some(t) = tag
            && t.cpu == cpu
            && t.generation == self.generation
            && t.asid < limit
        {
            return Some(Assigned { asid: t.asid, flush_all: false });
        }
        let mut flush_all = false;
        if self.generation == 0 || self.next >= limit {
            self.generation += 1;
            self.next = 1;
            flush_all = true;
        }
        let asid = self.next;
        self.next += 1;
        *tag = Some(AsidTag { asid, cpu, generation: self.generation });
        Some(Assigned { asid, flush_all })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Under QEMU's 16 ASIDs, 32 vCPUs take turns on one CPU: within one
    /// generation no two of them share an ASID, and a reused ASID always
    /// comes with a flush of everything.
    #[test]
    fn more_vcpus_than_asids_share_them_by_generation() {
        let mut pool = AsidPool::new();
        let mut tags: Vec<Option<AsidTag>> = (0..32).map(|_| None).collect();
        // owner[asid] = the vCPU that holds it in the current generation.
        let mut owner: [Option<usize>; 16] = [None; 16];
        let mut flushes = 0;
        for round in 0..5 {
            for (v, tag) in tags.iter_mut().enumerate() {
                let a = pool.assign(0, 16, tag).unwrap();
                assert!((1..16).contains(&a.asid), "round {round} vCPU {v}: {a:?}");
                if a.flush_all {
                    flushes += 1;
                    owner = [None; 16];
                }
                match owner[a.asid as usize] {
                    Some(o) => assert_eq!(o, v, "ASID {} shared without a flush", a.asid),
                    None => owner[a.asid as usize] = Some(v),
                }
            }
        }
        // 32 vCPUs through 15 ASIDs: a new generation every 15 entries.
        assert_eq!(flushes, (5 * 32 + 14) / 15);
    }

    #[test]
    fn a_vcpu_keeps_its_asid_while_it_stays() {
        let mut pool = AsidPool::new();
        let mut t = None;
        let first = pool.assign(0, 16, &mut t).unwrap();
        assert_eq!(first, Assigned { asid: 1, flush_all: true });
        for _ in 0..100 {
            assert_eq!(pool.assign(0, 16, &mut t).unwrap(), Assigned { asid: 1, flush_all: false });
        }
        let mut u = None;
        assert_eq!(pool.assign(0, 16, &mut u).unwrap(), Assigned { asid: 2, flush_all: false });
    }

    #[test]
    fn a_vcpu_that_moved_takes_a_fresh_asid() {
        let (mut cpu0, mut cpu1) = (AsidPool::new(), AsidPool::new());
        let mut t = None;
        let mut other = None;
        assert_eq!(cpu0.assign(0, 16, &mut t).unwrap().asid, 1);
        assert_eq!(cpu1.assign(1, 16, &mut t).unwrap().asid, 1);
        assert_eq!(t.unwrap().cpu, 1);
        // Back on CPU 0 it must not reuse ASID 1 there: its translations
        // from before the move may be stale.
        assert_eq!(cpu0.assign(0, 16, &mut other).unwrap().asid, 2);
        let back = cpu0.assign(0, 16, &mut t).unwrap();
        assert_eq!(back, Assigned { asid: 3, flush_all: false });
    }

    #[test]
    fn no_asids_for_guests_is_refused() {
        let mut pool = AsidPool::new();
        let mut t = None;
        assert_eq!(pool.assign(0, 0, &mut t), None);
        assert_eq!(pool.assign(0, 1, &mut t), None);
        assert_eq!(t, None);
        // Two ASIDs: one for guests, a flush on every change of vCPU.
        let mut u = None;
        assert_eq!(pool.assign(0, 2, &mut t).unwrap(), Assigned { asid: 1, flush_all: true });
        assert_eq!(pool.assign(0, 2, &mut u).unwrap(), Assigned { asid: 1, flush_all: true });
        assert_eq!(pool.assign(0, 2, &mut t).unwrap(), Assigned { asid: 1, flush_all: true });
    }
}
