//! Kernel-memory budgets: every byte the kernel allocates on a process's
//! behalf (page tables, thread state, capability slots and derivation nodes,
//! endpoint queues) is charged to that process's budget first, so a process
//! can exhaust only what it was given, never the kernel's heap.
//!
//! Budgets form a tree that mirrors process creation: `Create(Process, bytes)`
//! carves the child's limit out of the creator's budget. When the child
//! ends, the part of its limit nothing holds goes back at once
//! ([`Budget::shrink_to_used`]) and the rest when the last object it paid
//! for dies ([`Budget::absorb`]): an object's charge stays with it. The
//! syscall layer charges before it allocates and refunds after it frees;
//! this module is only the arithmetic.

/// Why a charge or refund was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// The charge would take the budget past its limit; nothing was charged.
    Exhausted {
        /// Bytes the refused charge asked for.
        needed: u64,
        /// Bytes the budget had left, for the error message.
        available: u64,
    },
    /// More was refunded than had been charged: a kernel accounting bug,
    /// reported rather than wrapped around into a huge budget.
    Underflow,
}

impl From<BudgetError> for abi::Error {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::Exhausted { .. } => abi::Error::OutOfBudget,
            BudgetError::Underflow => abi::Error::InvalidArgument,
        }
    }
}

/// One process's kernel-memory allowance. Not `Clone`: a copy of a child
/// budget could be absorbed twice and mint memory out of nothing.
///
/// Invariant: `used <= limit`.
#[derive(Debug, PartialEq, Eq)]
pub struct Budget {
    limit: u64,
    used: u64,
}

impl Budget {
    /// A budget with nothing charged yet; the root budget is the kernel heap
    /// left for processes after boot.
    pub const fn new(limit_bytes: u64) -> Self {
        Self { limit: limit_bytes, used: 0 }
    }

    /// Charges `bytes` before the kernel allocates them. All or nothing: on
    /// failure the budget is unchanged, so the caller can simply return the
    /// error to userspace.
    pub fn charge(&mut self, bytes: u64) -> Result<(), BudgetError> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.limit => {
                self.used = total;
                Ok(())
            }
            _ => Err(BudgetError::Exhausted { needed: bytes, available: self.available() }),
        }
    }

    /// Returns `bytes` after the kernel freed them. Refunding more than is
    /// charged is a kernel accounting bug: it is refused with
    /// [`BudgetError::Underflow`] and changes nothing, so `used` never drops
    /// below what live objects hold (clamping it to zero once let each
    /// map/unmap cycle of an uncharged nested page table mint budget from
    /// nothing: security issue finding 5).
    pub fn refund(&mut self, bytes: u64) -> Result<(), BudgetError> {
        let left = self.used.checked_sub(bytes).ok_or(BudgetError::Underflow)?;
        self.used = left;
        Ok(())
    }

    /// Bytes charged and not yet refunded (what `BudgetInfo` reports).
    pub const fn used(&self) -> u64 {
        self.used
    }

    /// The most this budget may ever have charged at once.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// What the next charge may take.
    pub const fn available(&self) -> u64 {
        self.limit - self.used
    }

    /// Gives a new process a budget of `bytes` out of this one. The bytes stay
    /// charged here until [`Budget::absorb`] takes the child back, so a
    /// parent can never hand out more than it has.
    #[must_use = "dropping a carved budget leaks its bytes from the parent"]
    pub fn carve(&mut self, bytes: u64) -> Result<Budget, BudgetError> {
        self.charge(bytes)?;
        Ok(Budget::new(bytes))
    }

    /// Lowers the limit to what is charged and returns what it gave up:
    /// for an ended process whose objects outlive it, the part of its
    /// budget nothing holds goes back to the parent at once, while what its
    /// live objects hold stays carved until they die.
    pub fn shrink_to_used(&mut self) -> u64 {
        let spare = self.limit - self.used;
        self.limit = self.used;
        spare
    }

    /// Takes back an ended child's budget once every object it paid for has
    /// been freed (the kernel absorbs it only then): its whole remaining
    /// limit returns.
    /// Fails with [`BudgetError::Underflow`] (changing nothing) if `child`
    /// could not have been carved from this budget.
    pub fn absorb(&mut self, child: Budget) -> Result<(), BudgetError> {
        self.refund(child.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charge_and_refund() {
        let mut b = Budget::new(100);
        assert_eq!(b.charge(40), Ok(()));
        assert_eq!(b.charge(60), Ok(()));
        assert_eq!((b.used(), b.available(), b.limit()), (100, 0, 100));
        assert_eq!(b.refund(30), Ok(()));
        assert_eq!((b.used(), b.available()), (70, 30));
        assert_eq!(b.charge(0), Ok(()));
    }

    #[test]
    fn exhausting_changes_nothing() {
        let mut b = Budget::new(100);
        b.charge(90).unwrap();
        assert_eq!(b.charge(11), Err(BudgetError::Exhausted { needed: 11, available: 10 }));
        assert_eq!(b.used(), 90);
        assert_eq!(b.charge(10), Ok(()));
        assert_eq!(b.charge(1), Err(BudgetError::Exhausted { needed: 1, available: 0 }));
    }

    #[test]
    fn charge_is_overflow_safe() {
        let mut b = Budget::new(u64::MAX);
        b.charge(10).unwrap();
        assert_eq!(b.charge(u64::MAX), Err(BudgetError::Exhausted { needed: u64::MAX, available: u64::MAX - 10 }));
        assert_eq!(b.used(), 10);
        assert_eq!(b.charge(u64::MAX - 10), Ok(()));
        assert_eq!(b.available(), 0);
    }

    /// Security issue finding 5: a refund larger than what is charged must
    /// not lower `used` below what the live objects hold.
    #[test]
    fn budget_created_from_nothing() {
        let mut b = Budget::new(100);
        b.charge(5).unwrap();
        assert_eq!(b.refund(6), Err(BudgetError::Underflow));
        assert_eq!(b.used(), 5);
        assert_eq!(b.refund(u64::MAX), Err(BudgetError::Underflow));
        assert_eq!(b.available(), 95);
        // Twelve KiB of tables charged, then a refund of 24 KiB for them:
        // the 12 KiB a live object holds stay charged.
        let mut b = Budget::new(1 << 20);
        b.charge(12 * 1024).unwrap();
        b.charge(12 * 1024).unwrap();
        b.refund(12 * 1024).unwrap();
        assert_eq!(b.refund(24 * 1024), Err(BudgetError::Underflow));
        assert_eq!(b.used(), 12 * 1024);
    }

    #[test]
    fn exhaust_then_free_returns_budget_whole() {
        let mut b = Budget::new(4096);
        let mut charged = 0;
        while b.charge(100).is_ok() {
            charged += 1;
        }
        assert_eq!(charged, 40);
        assert_eq!(b.available(), 96);
        for _ in 0..charged {
            b.refund(100).unwrap();
        }
        assert_eq!(b, Budget::new(4096));
    }

    #[test]
    fn carve_and_absorb() {
        let mut parent = Budget::new(1000);
        parent.charge(100).unwrap();
        let mut child = parent.carve(600).unwrap();
        assert_eq!((parent.used(), parent.available()), (700, 300));
        assert_eq!((child.used(), child.limit()), (0, 600));

        // The child cannot outspend its carve, nor the parent its remainder.
        assert!(child.charge(601).is_err());
        child.charge(550).unwrap();
        assert!(parent.carve(301).is_err());
        assert_eq!(parent.used(), 700);

        // A grandchild comes out of the child's budget only.
        let grandchild = child.carve(50).unwrap();
        assert_eq!(child.available(), 0);
        child.absorb(grandchild).unwrap();
        assert_eq!(child.used(), 550);

        // Destroying the child returns its whole limit, used or not.
        parent.absorb(child).unwrap();
        assert_eq!((parent.used(), parent.available()), (100, 900));
    }

    /// Security issue finding 6: a child that ends while 300 bytes of its
    /// objects live on gives back only the rest; the 300 stay charged in
    /// the parent until the objects die and the child is absorbed.
    #[test]
    fn a_dead_childs_live_objects_stay_charged() {
        let mut parent = Budget::new(1000);
        let mut child = parent.carve(600).unwrap();
        child.charge(300).unwrap();
        let spare = child.shrink_to_used();
        assert_eq!(spare, 300);
        parent.refund(spare).unwrap();
        assert_eq!((parent.used(), child.limit(), child.available()), (300, 300, 0));
        // Nothing new fits in the shrunk budget.
        assert!(child.charge(1).is_err());
        child.refund(300).unwrap();
        parent.absorb(child).unwrap();
        assert_eq!(parent.used(), 0);
    }

    #[test]
    fn absorbing_a_stranger_is_caught() {
        let mut parent = Budget::new(1000);
        let _child = parent.carve(10).unwrap();
        assert_eq!(parent.absorb(Budget::new(500)), Err(BudgetError::Underflow));
        assert_eq!(parent.used(), 10);
    }

    #[test]
    fn errors_map_to_abi() {
        assert_eq!(abi::Error::from(BudgetError::Exhausted { needed: 1, available: 0 }), abi::Error::OutOfBudget);
        assert_eq!(abi::Error::from(BudgetError::Underflow), abi::Error::InvalidArgument);
    }
}
