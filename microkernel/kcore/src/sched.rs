//! Scheduling policy: who runs next, on which CPU, for how long, and whether
//! a zone's CPU cap allows it at all. The kernel does the context switching
//! and timer programming in `arch/`; it asks this module every decision.
//!
//! Fixed priorities, 0 (lowest) to 255 (highest), round robin inside a
//! level; a thread that is preempted goes back to the front of its level, one
//! whose slice ran out to the back. CPU caps are [`CpuBudget`]s checked
//! before a thread is picked and charged when it stops.

use alloc::collections::VecDeque;

/// Priority levels; a priority is a `u8`.
pub const PRIORITY_LEVELS: usize = 256;

/// Runnable threads (`T` is whatever names one, e.g. a thread id), one FIFO
/// per priority, with a bitmap of non-empty levels so finding the highest
/// costs four word tests whatever the load.
///
/// A level's queue allocates when it first grows past its earlier high-water
/// mark; after warm-up pushes do not allocate.
pub struct RunQueue<T> {
    levels: [VecDeque<T>; PRIORITY_LEVELS],
    /// Bit `p` set ⇔ `levels[p]` is non-empty.
    nonempty: [u64; PRIORITY_LEVELS / 64],
    len: usize,
}

impl<T: Copy + Eq> Default for RunQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Eq> RunQueue<T> {
    /// An empty queue; const so a per-CPU queue can live in a static.
    pub const fn new() -> Self {
        Self { levels: [const { VecDeque::new() }; PRIORITY_LEVELS], nonempty: [0; 4], len: 0 }
    }

    fn mark(&mut self, prio: u8) {
        let p = prio as usize;
        if self.levels[p].is_empty() {
            self.nonempty[p / 64] &= !(1 << (p % 64));
        } else {
            self.nonempty[p / 64] |= 1 << (p % 64);
        }
    }

    /// Queues `t` behind the others of its priority: a new arrival, or a
    /// thread whose time slice ran out. The caller keeps `t` in one queue once.
    pub fn push_back(&mut self, t: T, prio: u8) {
        self.levels[prio as usize].push_back(t);
        self.nonempty[prio as usize / 64] |= 1 << (prio % 64);
        self.len += 1;
    }

    /// Queues `t` ahead of the others of its priority: a thread preempted by
    /// a higher priority keeps its turn.
    pub fn push_front(&mut self, t: T, prio: u8) {
        self.levels[prio as usize].push_front(t);
        self.nonempty[prio as usize / 64] |= 1 << (prio % 64);
        self.len += 1;
    }

    /// Takes the next thread to run: the oldest of the highest priority.
    pub fn pop_highest(&mut self) -> Option<(T, u8)> {
        let prio = self.peek_highest_priority()?;
        let t = self.levels[prio as usize].pop_front()?;
        self.mark(prio);
        self.len -= 1;
        Some((t, prio))
    }

    /// The priority `pop_highest` would return, to decide on preemption
    /// without dequeuing.
    #[inline(always)]
    pub fn peek_highest_priority(&self) -> Option<u8> {
        // The IPC fast path asks on every call, nearly always of an empty
        // queue: answer that inline, without a call or walking the bitmap.
        if self.len == 0 {
            return None;
        }
        self.highest_nonempty()
    }

    #[inline(never)]
    fn highest_nonempty(&self) -> Option<u8> {
        (0..self.nonempty.len()).rev().find_map(|w| {
            let word = self.nonempty[w];
            (word != 0).then(|| (w * 64 + 63 - word.leading_zeros() as usize) as u8)
        })
    }

    /// The first queued thread, highest priority first and in turn within a
    /// level, for which `ok` holds (a thread another CPU may take).
    /// Walks the non-empty levels alone, by the bitmap's set bits (an idle
    /// CPU asks of every queue before it halts: testing each of the 256
    /// levels' bits cost the cross-core IPC round trip about 2,500
    /// instructions a queued thread below the top levels).
    pub fn find(&self, mut ok: impl FnMut(T) -> bool) -> Option<(T, u8)> {
        if self.len == 0 {
            return None;
        }
        for w in (0..self.nonempty.len()).rev() {
            let mut bits = self.nonempty[w];
            while bits != 0 {
                let b = 63 - bits.leading_zeros() as usize;
                bits &= !(1u64 << b);
                let p = w * 64 + b;
                if let Some(t) = self.levels[p].iter().copied().find(|&t| ok(t)) {
                    return Some((t, p as u8));
                }
            }
        }
        None
    }

    /// Takes `t` out of level `prio` wherever it stands (it blocked, was
    /// killed or changes priority); false if it was not there.
    pub fn remove(&mut self, t: T, prio: u8) -> bool {
        let level = &mut self.levels[prio as usize];
        let Some(i) = level.iter().position(|&x| x == t) else {
            return false;
        };
        level.remove(i);
        self.mark(prio);
        self.len -= 1;
        true
    }

    /// Threads queued, across all levels.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing to run: the CPU may idle.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Whether a thread becoming runnable at `incoming` takes the CPU from the
/// one running at `current` (`None`: the CPU idles). Only strictly higher
/// priority preempts; equals wait for the slice to end, which keeps round
/// robin fair and avoids switching for nothing.
pub fn should_preempt(current: Option<u8>, incoming: u8) -> bool {
    current.is_none_or(|c| incoming > c)
}

/// Whether the thread running at priority `current` gives up the CPU at a
/// scheduling pass, `best_queued` being the highest priority waiting there:
/// to a higher priority always, to an equal one only when its slice is
/// over (`slice_over`: the kernel's `need_resched` was set).
pub fn should_switch(current: u8, best_queued: Option<u8>, slice_over: bool) -> bool {
    best_queued.is_some_and(|b| b > current || (slice_over && b == current))
}

/// The default time slice: 10 ms.
pub const DEFAULT_TIME_SLICE_NS: u64 = 10_000_000;

/// How long a thread at `prio` runs before the next of its level gets the
/// CPU. The same for every priority: priority decides who runs, the slice
/// only rotates threads of equal priority, and 10 ms keeps that rotation
/// invisible to people without making context switches a visible cost.
pub fn time_slice_ns(_prio: u8) -> u64 {
    DEFAULT_TIME_SLICE_NS
}

/// Why a budget was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// A period of zero length has no meaning.
    ZeroPeriod,
    /// A budget of nothing would never run; stopping is a different thing.
    ZeroBudget,
    /// More than the period: a single CPU cannot supply it.
    BudgetExceedsPeriod,
    /// A period longer than [`MAX_PERIOD_NS`]: deadlines that far out mean
    /// nothing (and `now + period` must never wrap).
    PeriodTooLong,
    /// Less than [`MIN_BUDGET_NS`] per period: less than the kernel can
    /// measure and enforce between two timer interrupts.
    BudgetTooSmall,
}

/// The longest period a CPU budget may have: 10 s.
pub const MAX_PERIOD_NS: u64 = 10_000_000_000;
/// The least running time per period a CPU budget may give: 10 µs.
pub const MIN_BUDGET_NS: u64 = 10_000;

/// CPU bandwidth for a thread or a group (a zone's `cpu_cap`): at most
/// `budget_ns` of running in each `period_ns`. Periods are aligned to
/// multiples of `period_ns` on the monotonic clock, so a budget needs no
/// timer of its own: the kernel arms one at [`CpuBudget::replenish_at`] when
/// it throttles, and at most [`CpuBudget::remaining_ns`] ahead when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuBudget {
    budget_ns: u64,
    period_ns: u64,
    limited: bool,
    /// Start of the period `used_ns` belongs to.
    period_start_ns: u64,
    used_ns: u64,
}

impl CpuBudget {
    /// A cap of `budget_ns` per `period_ns`, nothing used yet.
    pub fn new(budget_ns: u64, period_ns: u64) -> Result<Self, BudgetError> {
        if period_ns == 0 {
            return Err(BudgetError::ZeroPeriod);
        }
        if budget_ns == 0 {
            return Err(BudgetError::ZeroBudget);
        }
        if budget_ns > period_ns {
            return Err(BudgetError::BudgetExceedsPeriod);
        }
        if period_ns > MAX_PERIOD_NS {
            return Err(BudgetError::PeriodTooLong);
        }
        if budget_ns < MIN_BUDGET_NS {
            return Err(BudgetError::BudgetTooSmall);
        }
        Ok(Self { budget_ns, period_ns, limited: true, period_start_ns: 0, used_ns: 0 })
    }

    /// The same cap with nothing used yet: what a new thread inherits from
    /// the thread that created it.
    pub fn fresh(&self) -> Self {
        Self { period_start_ns: 0, used_ns: 0, ..*self }
    }

    /// Whether a holder of this cap may hand out `other`: never a looser
    /// share of the CPU (budget / period) than its own, and never none at
    /// all when it has one.
    pub fn covers(&self, other: &CpuBudget) -> bool {
        if !self.limited {
            return true;
        }
        other.limited
            && u128::from(other.budget_ns) * u128::from(self.period_ns)
                <= u128::from(self.budget_ns) * u128::from(other.period_ns)
    }

    /// No cap: never throttled, charges are ignored.
    pub const fn unlimited() -> Self {
        Self {
            budget_ns: u64::MAX,
            period_ns: u64::MAX,
            limited: false,
            period_start_ns: 0,
            used_ns: 0,
        }
    }

    /// Running time allowed per period.
    pub fn budget_ns(&self) -> u64 {
        self.budget_ns
    }

    /// The period the budget renews on.
    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// Whether there is no cap at all.
    pub fn is_unlimited(&self) -> bool {
        !self.limited
    }

    fn period_of(&self, now_ns: u64) -> u64 {
        now_ns - now_ns % self.period_ns
    }

    /// Moves to `now`'s period if it is later; any number of skipped periods
    /// (a long sleep) land in the same place. A clock read on another CPU
    /// that is slightly behind never moves the period back.
    fn roll(&mut self, now_ns: u64) {
        let start = self.period_of(now_ns);
        if start > self.period_start_ns {
            self.period_start_ns = start;
            self.used_ns = 0;
        }
    }

    /// Records `ran_ns` of running that ended at `now_ns`. The part that
    /// fell in earlier periods is not carried over: those periods are over.
    pub fn charge(&mut self, now_ns: u64, ran_ns: u64) {
        if !self.limited {
            return;
        }
        self.roll(now_ns);
        let began = now_ns.saturating_sub(ran_ns);
        let in_period = if now_ns >= self.period_start_ns {
            now_ns - began.max(self.period_start_ns)
        } else {
            ran_ns
        };
        self.used_ns = self.used_ns.saturating_add(in_period);
    }

    /// Whether the budget of `now`'s period is spent.
    pub fn is_throttled(&self, now_ns: u64) -> bool {
        self.limited
            && self.period_of(now_ns) <= self.period_start_ns
            && self.used_ns >= self.budget_ns
    }

    /// How long it may run from `now_ns` before it is throttled.
    pub fn remaining_ns(&self, now_ns: u64) -> u64 {
        if !self.limited {
            u64::MAX
        } else if self.period_of(now_ns) > self.period_start_ns {
            self.budget_ns
        } else {
            self.budget_ns.saturating_sub(self.used_ns)
        }
    }

    /// When a spent budget refills: the start of the period after the one
    /// last charged. `None` if that period's budget is not spent (or there
    /// is no cap). May lie in the past once the clock has moved on.
    pub fn replenish_at(&self) -> Option<u64> {
        (self.limited && self.used_ns >= self.budget_ns)
            .then(|| self.period_start_ns.saturating_add(self.period_ns))
    }
}

/// What [`pick_cpu`] needs to know of one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuLoad {
    /// Started and taking work.
    pub online: bool,
    /// Highest priority running or queued there; `None` when it idles.
    pub highest_prio: Option<u8>,
    /// Threads waiting in its run queue.
    pub queued: usize,
}

/// Where a thread that became runnable should queue. Its affinity wins if
/// that CPU is online; otherwise an idle CPU, then the one with the fewest
/// queued threads, then the one running the lowest priority (the newcomer
/// may preempt there). Ties go to the lowest index, so placement is
/// reproducible. With no CPU online (impossible once booted) it answers 0,
/// the boot CPU.
pub fn pick_cpu(affinity: Option<usize>, cpus: &[CpuLoad]) -> usize {
    if let Some(a) = affinity
        && cpus.get(a).is_some_and(|c| c.online)
    {
        return a;
    }
    cpus.iter()
        .enumerate()
        .filter(|(_, c)| c.online)
        // `None < Some(_)`: an idle CPU sorts first.
        .min_by_key(|&(i, c)| (c.highest_prio.is_some(), c.queued, c.highest_prio, i))
        .map_or(0, |(i, _)| i)
}

/// Where a thread that wakes (made runnable again) should queue: `home`,
/// the CPU it last ran on, when it runs there at once (`home` idles, or it
/// preempts what runs there); otherwise an idle CPU, which runs it at once,
/// rather than a turn behind a busy one's thread while that CPU idles
/// (two vCPU threads of one guest left on one CPU took turns there while
/// the other idled, and the guest waited on its own cross-CPU calls);
/// `home` when none idles. `cpus[c].highest_prio` is the priority of the
/// thread running on `c` (`None` when it idles or its thread is leaving
/// the CPU). A thread with an affinity stays at `home`, which is it.
pub fn wake_cpu(home: usize, pinned: bool, prio: u8, cpus: &[CpuLoad]) -> usize {
    let Some(h) = cpus.get(home) else { return home };
    if pinned || !h.online || should_preempt(h.highest_prio, prio) {
        return home;
    }
    cpus.iter().position(|c| c.online && c.highest_prio.is_none() && c.queued == 0).unwrap_or(home)
}

/// Which CPU an idle CPU takes a queued thread from: of the CPUs running
/// a thread, the one with the most queued (the lowest index among equals),
/// if any has one. `cpus[c].queued` counts only threads that may move (no
/// affinity). Never from a CPU that idles (or whose thread is leaving it):
/// what is queued there was just woken for that CPU, which is being told
/// to run it.
pub fn steal_from(me: usize, cpus: &[CpuLoad]) -> Option<usize> {
    cpus.iter()
        .enumerate()
        .filter(|&(i, c)| i != me && c.online && c.highest_prio.is_some() && c.queued > 0)
        .max_by_key(|&(i, c)| (c.queued, core::cmp::Reverse(i)))
        .map(|(i, _)| i)
}

#[cfg(test)]
#[path = "sched_model.rs"]
mod model;

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const MS: u64 = 1_000_000;

    #[test]
    fn nonsense_budgets_are_refused() {
        assert_eq!(CpuBudget::new(u64::MAX, u64::MAX), Err(BudgetError::PeriodTooLong));
        assert_eq!(CpuBudget::new(1, 10 * MS), Err(BudgetError::BudgetTooSmall));
        assert!(CpuBudget::new(MAX_PERIOD_NS, MAX_PERIOD_NS).is_ok());
        // The largest allowed budget never pushes a deadline past u64.
        let b = CpuBudget::new(MAX_PERIOD_NS, MAX_PERIOD_NS).unwrap();
        assert!(b.remaining_ns(0) <= MAX_PERIOD_NS);
    }

    #[test]
    fn a_cap_covers_only_tighter_caps() {
        let half = CpuBudget::new(5 * MS, 10 * MS).unwrap();
        assert!(half.covers(&CpuBudget::new(MS, 10 * MS).unwrap()));
        assert!(half.covers(&CpuBudget::new(50 * MS, 100 * MS).unwrap()));
        assert!(!half.covers(&CpuBudget::new(6 * MS, 10 * MS).unwrap()));
        assert!(!half.covers(&CpuBudget::unlimited()));
        assert!(CpuBudget::unlimited().covers(&CpuBudget::unlimited()));
        let mut used = half;
        used.charge(3 * MS, 3 * MS);
        assert_eq!(used.fresh(), half);
    }

    #[test]
    fn round_robin_within_a_level() {
        let mut q = RunQueue::new();
        for t in 1..=3u32 {
            q.push_back(t, 7);
        }
        assert_eq!(q.pop_highest(), Some((1, 7)));
        q.push_back(1, 7); // slice ran out
        assert_eq!(q.pop_highest(), Some((2, 7)));
        q.push_front(2, 7); // preempted: keeps its turn
        let order: Vec<u32> = core::iter::from_fn(|| q.pop_highest().map(|(t, _)| t)).collect();
        assert_eq!(order, [2, 3, 1]);
        assert!(q.is_empty());
        assert_eq!(q.pop_highest(), None);
    }

    #[test]
    fn priority_order_across_levels() {
        let mut q = RunQueue::new();
        q.push_back(10u32, 0);
        q.push_back(20, 200);
        q.push_back(30, 63);
        q.push_back(40, 64);
        q.push_back(50, 255);
        q.push_back(21, 200);
        assert_eq!(q.len(), 6);
        assert_eq!(q.peek_highest_priority(), Some(255));
        let order: Vec<(u32, u8)> = core::iter::from_fn(|| q.pop_highest()).collect();
        assert_eq!(order, [(50, 255), (20, 200), (21, 200), (40, 64), (30, 63), (10, 0)]);
        assert_eq!(q.peek_highest_priority(), None);
    }

    #[test]
    fn bitmap_across_all_levels() {
        let mut q = RunQueue::new();
        for p in 0..=255u8 {
            q.push_back(p as u32, p);
            assert_eq!(q.peek_highest_priority(), Some(p));
        }
        for p in (0..=255u8).rev() {
            assert_eq!(q.peek_highest_priority(), Some(p));
            assert_eq!(q.pop_highest(), Some((p as u32, p)));
        }
        assert!(q.is_empty());
        // Each level alone, and removing it clears its bit.
        for p in 0..=255u8 {
            q.push_back(1, p);
            assert_eq!(q.peek_highest_priority(), Some(p));
            assert!(q.remove(1, p));
            assert_eq!(q.peek_highest_priority(), None);
        }
        assert_eq!(q.nonempty, [0; 4]);
    }

    #[test]
    fn remove_from_the_middle() {
        let mut q = RunQueue::new();
        for t in 1..=5u32 {
            q.push_back(t, 100);
        }
        q.push_back(9, 50);
        assert!(q.remove(3, 100));
        assert!(!q.remove(3, 100));
        assert!(!q.remove(9, 100)); // wrong level
        assert_eq!(q.len(), 5);
        let order: Vec<u32> = core::iter::from_fn(|| q.pop_highest().map(|(t, _)| t)).collect();
        assert_eq!(order, [1, 2, 4, 5, 9]);
    }

    #[test]
    fn preemption_rule() {
        assert!(should_preempt(None, 0));
        assert!(should_preempt(Some(4), 5));
        assert!(!should_preempt(Some(5), 5));
        assert!(!should_preempt(Some(255), 0));
        assert_eq!(time_slice_ns(0), time_slice_ns(255));
        assert!(!should_switch(5, None, true));
        assert!(should_switch(5, Some(6), false));
        assert!(!should_switch(5, Some(5), false));
        assert!(should_switch(5, Some(5), true));
        assert!(!should_switch(5, Some(4), true));
    }

    #[test]
    fn budget_validation() {
        assert_eq!(CpuBudget::new(1, 0), Err(BudgetError::ZeroPeriod));
        assert_eq!(CpuBudget::new(0, 10), Err(BudgetError::ZeroBudget));
        assert_eq!(CpuBudget::new(11, 10), Err(BudgetError::BudgetExceedsPeriod));
        assert!(CpuBudget::new(MIN_BUDGET_NS, MIN_BUDGET_NS).is_ok());
    }

    /// Runs 1 ms ticks from `from` for `ms` ticks, whenever not throttled.
    fn simulate(b: &mut CpuBudget, from: u64, ms: u64) -> u64 {
        let mut ran = 0;
        for tick in 0..ms {
            let now = from + tick * MS;
            if !b.is_throttled(now) {
                b.charge(now + MS, MS);
                ran += MS;
            }
        }
        ran
    }

    #[test]
    fn quarter_cap_over_a_second() {
        for period in [100 * MS, 1000 * MS, 40 * MS] {
            let mut b = CpuBudget::new(period / 4, period).unwrap();
            let ran = simulate(&mut b, 0, 1000);
            assert!(ran.abs_diff(250 * MS) <= MS, "period {period}: ran {ran}");
        }
    }

    #[test]
    fn throttles_at_the_cap_and_refills_on_the_boundary() {
        let mut b = CpuBudget::new(25 * MS, 100 * MS).unwrap();
        assert_eq!(b.remaining_ns(0), 25 * MS);
        b.charge(24 * MS, 24 * MS);
        assert!(!b.is_throttled(24 * MS));
        assert_eq!(b.replenish_at(), None);
        assert_eq!(b.remaining_ns(24 * MS), MS);
        b.charge(25 * MS, MS);
        assert!(b.is_throttled(25 * MS));
        assert_eq!(b.replenish_at(), Some(100 * MS));
        assert!(b.is_throttled(100 * MS - 1));
        assert!(!b.is_throttled(100 * MS));
        assert_eq!(b.remaining_ns(100 * MS), 25 * MS);
        // Running across the boundary charges only the new period's part.
        b.charge(110 * MS, 20 * MS);
        assert_eq!(b.remaining_ns(110 * MS), 15 * MS);
        assert_eq!(b.replenish_at(), None);
    }

    #[test]
    fn skipped_periods_refill() {
        let mut b = CpuBudget::new(25 * MS, 100 * MS).unwrap();
        b.charge(30 * MS, 30 * MS);
        assert!(b.is_throttled(50 * MS));
        // Asleep for 5.5 s: a whole budget, not 55 of them.
        let later = 5_550 * MS;
        assert!(!b.is_throttled(later));
        assert_eq!(b.remaining_ns(later), 25 * MS);
        assert_eq!(simulate(&mut b, later, 50), 25 * MS);
        assert_eq!(b.replenish_at(), Some(5_600 * MS));
        // A late charge stamped in an older period does not roll back.
        b.charge(5_000 * MS, MS);
        assert!(b.is_throttled(5_590 * MS));
        assert_eq!(b.replenish_at(), Some(5_600 * MS));
    }

    #[test]
    fn unlimited_budget() {
        let mut b = CpuBudget::unlimited();
        b.charge(u64::MAX, u64::MAX);
        assert!(b.is_unlimited());
        assert!(!b.is_throttled(12345));
        assert_eq!(b.replenish_at(), None);
        assert_eq!(b.remaining_ns(0), u64::MAX);
    }

    fn cpu(online: bool, highest_prio: Option<u8>, queued: usize) -> CpuLoad {
        CpuLoad { online, highest_prio, queued }
    }

    #[test]
    fn cpu_placement() {
        let busy = cpu(true, Some(10), 2);
        let idle = cpu(true, None, 0);
        let off = cpu(false, None, 0);
        // Affinity wins while online, even over an idle CPU.
        assert_eq!(pick_cpu(Some(0), &[busy, idle]), 0);
        assert_eq!(pick_cpu(Some(1), &[idle, off, busy]), 0);
        assert_eq!(pick_cpu(Some(9), &[busy, idle]), 1);
        // Idle first, the lowest idle index, offline never.
        assert_eq!(pick_cpu(None, &[off, busy, idle, idle]), 2);
        // Running with nothing queued still loses to idle.
        assert_eq!(pick_cpu(None, &[cpu(true, Some(0), 0), idle]), 1);
        // Least queued, then lowest running priority, then lowest index.
        assert_eq!(pick_cpu(None, &[busy, cpu(true, Some(200), 1), busy]), 1);
        assert_eq!(pick_cpu(None, &[busy, cpu(true, Some(5), 2), busy]), 1);
        assert_eq!(pick_cpu(None, &[busy, busy, busy]), 0);
        assert_eq!(pick_cpu(None, &[off, off]), 0);
        assert_eq!(pick_cpu(Some(0), &[]), 0);
    }

    #[test]
    fn a_waking_thread_goes_where_it_runs_at_once() {
        let running = |p| cpu(true, Some(p), 0);
        let idle = cpu(true, None, 0);
        // Home runs it at once: idle there, or it preempts.
        assert_eq!(wake_cpu(0, false, 100, &[idle, idle]), 0);
        assert_eq!(wake_cpu(0, false, 100, &[running(50), idle]), 0);
        // Home busy at its priority or above: an idle CPU, the first.
        assert_eq!(wake_cpu(0, false, 100, &[running(100), idle]), 1);
        assert_eq!(wake_cpu(1, false, 100, &[idle, running(200), idle]), 0);
        // Not one with a queue, nor an offline one; none: home.
        assert_eq!(wake_cpu(0, false, 100, &[running(100), cpu(true, None, 1)]), 0);
        assert_eq!(wake_cpu(0, false, 100, &[running(100), cpu(false, None, 0)]), 0);
        assert_eq!(wake_cpu(0, false, 100, &[running(100), running(1)]), 0);
        // Pinned stays; a home out of range is answered as is.
        assert_eq!(wake_cpu(0, true, 100, &[running(100), idle]), 0);
        assert_eq!(wake_cpu(5, false, 100, &[idle]), 5);
    }

    #[test]
    fn an_idle_cpu_takes_from_the_longest_queue() {
        let q = |n| cpu(true, Some(100), n);
        assert_eq!(steal_from(0, &[cpu(true, None, 0), q(1), q(3), q(3)]), Some(2));
        assert_eq!(steal_from(0, &[cpu(true, None, 0), q(0)]), None);
        assert_eq!(steal_from(1, &[q(2), cpu(true, None, 0)]), Some(0));
        // Never from itself, never from an offline CPU.
        assert_eq!(steal_from(0, &[q(4)]), None);
        assert_eq!(steal_from(0, &[q(0), cpu(false, None, 2)]), None);
        // Never from a CPU that idles: it was woken to run what it holds.
        assert_eq!(steal_from(0, &[cpu(true, None, 0), cpu(true, None, 3)]), None);
        assert_eq!(steal_from(0, &[cpu(true, None, 0), cpu(true, None, 3), q(1)]), Some(2));
    }

    #[test]
    fn find_walks_highest_priority_first_in_turn() {
        let mut q = RunQueue::new();
        assert_eq!(q.find(|_| true), None);
        q.push_back(1u32, 10);
        q.push_back(2, 200);
        q.push_back(3, 200);
        q.push_back(4, 64);
        assert_eq!(q.find(|_| true), Some((2, 200)));
        assert_eq!(q.find(|t| t != 2), Some((3, 200)));
        assert_eq!(q.find(|t| t < 2), Some((1, 10)));
        assert_eq!(q.find(|t| t == 4), Some((4, 64)));
        assert_eq!(q.find(|_| false), None);
        assert_eq!(q.len(), 4, "find takes nothing");
        // The edges of the bitmap's words.
        q.push_back(5, 0);
        q.push_back(6, 255);
        q.push_back(7, 63);
        assert_eq!(q.find(|_| true), Some((6, 255)));
        assert_eq!(q.find(|t| t == 5), Some((5, 0)));
        assert_eq!(q.find(|t| t == 7 || t == 1), Some((7, 63)));
    }
}
