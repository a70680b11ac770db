//! Small integer identifiers handed out and given back: the ASIDs (SVM) and
//! VPIDs (VMX) of vCPUs. Identifier 0 is the host's and never handed out.
//! A freed identifier is reused, so whoever hands one out again must flush
//! the translations the hardware may still hold for it.

/// Up to 65536 identifiers (ASIDs and VPIDs are 16 bits at most).
pub struct IdAllocator {
    bits: [u64; 1024],
    /// Where the next search starts (spreads reuse out a little).
    next: usize,
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdAllocator {
    pub const fn new() -> Self {
        Self { bits: [0; 1024], next: 1 }
    }

    /// A free identifier in `1..limit` (`limit` at most 65536), or `None`
    /// when all are in use.
    pub fn alloc(&mut self, limit: u32) -> Option<u32> {
        let limit = (limit as usize).min(self.bits.len() * 64);
        if limit <= 1 {
            return None;
        }
        let start = self.next.clamp(1, limit - 1);
        for id in (start..limit).chain(1..start) {
            let (word, bit) = (id / 64, id % 64);
            if self.bits[word] & (1 << bit) == 0 {
                self.bits[word] |= 1 << bit;
                self.next = id + 1;
                return Some(id as u32);
            }
        }
        None
    }

    /// Gives `id` back (ignored if it was not handed out).
    pub fn free(&mut self, id: u32) {
        let id = id as usize;
        if id > 0 && id < self.bits.len() * 64 {
            self.bits[id / 64] &= !(1 << (id % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_each_id_once_and_reuses_freed_ones() {
        let mut a = IdAllocator::new();
        let got: alloc::vec::Vec<u32> = (0..15).map(|_| a.alloc(16).unwrap()).collect();
        assert_eq!(got, (1..16).collect::<alloc::vec::Vec<_>>());
        assert_eq!(a.alloc(16), None, "15 ASIDs under QEMU's 16");
        a.free(7);
        assert_eq!(a.alloc(16), Some(7));
        a.free(0);
        a.free(70_000);
        assert_eq!(a.alloc(16), None);
        assert_eq!(a.alloc(1), None);
        assert_eq!(a.alloc(0), None);
        let mut b = IdAllocator::new();
        for _ in 0..200_000 {
            let id = b.alloc(u32::MAX).unwrap();
            assert!((1..65536).contains(&id));
            b.free(id);
        }
    }
}
