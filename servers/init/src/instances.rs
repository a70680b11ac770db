//! init's `proc` service as policy (pure, host-tested): who may start
//! instances of which server, the start-up data and budget limits, and the
//! instances each caller holds. init.rs does the building and ending of
//! processes; everything it decides comes from here.
//!
//! A caller is the server whose badge its `proc` endpoint carries (init
//! badges server `i`'s endpoints with `i + 1`). It may start instances of
//! the servers its manifest entry lists in `spawns`, each with a budget
//! that comes out of its `spawn_budget_kib` and goes back when the
//! instance is stopped (reaped). Instance numbers are never reused, and a
//! caller sees only its own: another's number is as unknown as a stale one.
//!
//! Start data (`vm.json`) longer than one message is staged in pieces
//! (`proc.append_start_data`) for the caller's next `start`, per caller:
//! at most [`PROC_START_DATA_TOTAL_MAX`] bytes each, held only for callers
//! with `spawns` (the manifest bounds how many), and dropped by that
//! `start` whatever it does, by a refused piece and by the caller's end.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use initrd::manifest::Manifest;
use libipc::interfaces::{
    PROC_INSTANCES_MAX, PROC_START_DATA_MAX, PROC_START_DATA_TOTAL_MAX, ProcError, ProcState, ProcUsage,
};

/// One instance a caller started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance<P> {
    pub id: u32,
    /// The caller's server index in the manifest.
    pub owner: usize,
    /// The template's server index.
    pub template: usize,
    pub budget_kib: u32,
    /// The process (init's capability to it).
    pub process: P,
    /// How it ended, once it has.
    pub ended: Option<ProcState>,
    /// init's copy of the `control` notification its starter gave (the
    /// right to signal it only), handed back by `proc.control`.
    pub control: Option<P>,
}

/// Every instance init runs for `proc` callers, and the start data
/// callers staged for their next one.
#[derive(Debug)]
pub struct Instances<P> {
    list: Vec<Instance<P>>,
    next_id: u32,
    /// (caller, the bytes it staged), at most one entry a caller, never
    /// empty.
    staged: Vec<(usize, Vec<u8>)>,
}

impl<P> Default for Instances<P> {
    fn default() -> Self {
        Self { list: Vec::new(), next_id: 1, staged: Vec::new() }
    }
}

/// The server index a badge names (`None`: unbadged or beyond the manifest).
pub fn caller(manifest: &Manifest, badge: u64) -> Option<usize> {
    let i = usize::try_from(badge.checked_sub(1)?).ok()?;
    (i < manifest.servers.len()).then_some(i)
}

impl<P: Copy> Instances<P> {
    /// Kernel memory the caller's instances hold, in KiB.
    pub fn used_kib(&self, owner: usize) -> u32 {
        self.list.iter().filter(|i| i.owner == owner).map(|i| i.budget_kib).sum()
    }

    /// Checks a `start` request (`start_data`: the bytes of its whole
    /// start data, [`Instances::take_start_data`]'s): the template's
    /// index, or why not.
    pub fn check_start(
        &self,
        manifest: &Manifest,
        owner: Option<usize>,
        template: &str,
        start_data: usize,
        budget_kib: u32,
    ) -> Result<usize, ProcError> {
        let not_permitted = || ProcError::NotPermitted { template: clip(template) };
        let owner = owner.ok_or_else(not_permitted)?;
        let Some(t) = manifest.servers.iter().position(|s| s.name == template) else {
            // Only a caller that may start something learns what exists.
            if manifest.servers[owner].spawns.is_empty() {
                return Err(not_permitted());
            }
            return Err(ProcError::UnknownTemplate { template: clip(template) });
        };
        if !manifest.servers[owner].spawns.iter().any(|s| s == template) {
            return Err(not_permitted());
        }
        if start_data > PROC_START_DATA_TOTAL_MAX as usize {
            return Err(ProcError::TooLarge { what: "start data (bytes)".into(), max: u64::from(PROC_START_DATA_TOTAL_MAX) });
        }
        if self.list.len() >= PROC_INSTANCES_MAX as usize {
            return Err(ProcError::TooMany { limit: PROC_INSTANCES_MAX });
        }
        let limit = manifest.servers[owner].spawn_budget_kib;
        let left = limit.saturating_sub(self.used_kib(owner));
        if budget_kib == 0 || budget_kib > left {
            return Err(ProcError::OutOfBudget { asked_kib: budget_kib, left_kib: left });
        }
        Ok(t)
    }

    /// `proc.append_start_data`: stages `chunk` for the caller's next
    /// `start` after the `offset` bytes it staged before (0: afresh).
    /// Returns the bytes staged; on `Err` what the caller had staged is
    /// dropped (its next `start` uses only its own start data).
    pub fn append_start_data(
        &mut self,
        manifest: &Manifest,
        owner: Option<usize>,
        offset: u32,
        chunk: &[u8],
    ) -> Result<u32, ProcError> {
        let refused = |why: String| ProcError::StartData { why };
        let Some(owner) = owner.filter(|&o| manifest.servers.get(o).is_some_and(|s| !s.spawns.is_empty())) else {
            return Err(refused("this client starts no instances (manifest: spawns)".into()));
        };
        let pos = self.staged.iter().position(|(o, _)| *o == owner);
        let mut bytes = pos.map(|p| self.staged.swap_remove(p).1).unwrap_or_default();
        if offset == 0 {
            bytes.clear();
        }
        if chunk.len() > PROC_START_DATA_MAX as usize {
            return Err(ProcError::TooLarge { what: "a start data chunk (bytes)".into(), max: u64::from(PROC_START_DATA_MAX) });
        }
        if offset as usize != bytes.len() {
            return Err(refused(format!("offset {offset}, but {} bytes are staged (begin again at 0)", bytes.len())));
        }
        let total = bytes.len() + chunk.len();
        if total > PROC_START_DATA_TOTAL_MAX as usize {
            return Err(ProcError::TooLarge {
                what: "start data staged (bytes)".into(),
                max: u64::from(PROC_START_DATA_TOTAL_MAX),
            });
        }
        if total == 0 {
            return Ok(0);
        }
        // Doubling, but never past the limit: init's heap holds at most
        // the limit for each caller, however the chunks come.
        if total > bytes.capacity() {
            let want = total.max(bytes.capacity() * 2).min(PROC_START_DATA_TOTAL_MAX as usize);
            bytes
                .try_reserve_exact(want - bytes.len())
                .map_err(|_| refused(format!("init has no memory left for {total} bytes")))?;
        }
        bytes.extend_from_slice(chunk);
        self.staged.push((owner, bytes));
        Ok(total as u32)
    }

    /// The bytes the caller has staged (0 for none).
    pub fn staged_bytes(&self, owner: Option<usize>) -> usize {
        self.staged.iter().find(|(o, _)| Some(*o) == owner).map_or(0, |(_, b)| b.len())
    }

    /// A `start`'s whole start data: what the caller staged followed by
    /// `own` (the request's), or why not. The staging is taken out either
    /// way: a `start` uses it or drops it.
    pub fn take_start_data(&mut self, owner: Option<usize>, own: Vec<u8>) -> Result<Vec<u8>, ProcError> {
        let mut bytes = match self.staged.iter().position(|(o, _)| Some(*o) == owner) {
            Some(p) => self.staged.swap_remove(p).1,
            None => Vec::new(),
        };
        if own.len() > PROC_START_DATA_MAX as usize {
            return Err(ProcError::TooLarge { what: "start data (bytes)".into(), max: u64::from(PROC_START_DATA_MAX) });
        }
        if bytes.len() + own.len() > PROC_START_DATA_TOTAL_MAX as usize {
            return Err(ProcError::TooLarge {
                what: "start data staged and sent (bytes)".into(),
                max: u64::from(PROC_START_DATA_TOTAL_MAX),
            });
        }
        if bytes.is_empty() {
            return Ok(own);
        }
        bytes
            .try_reserve_exact(own.len())
            .map_err(|_| ProcError::Start { why: format!("init has no memory left for {} bytes of start data", bytes.len() + own.len()) })?;
        bytes.extend_from_slice(&own);
        Ok(bytes)
    }

    /// Drops what server `owner` staged (it ended).
    pub fn drop_start_data(&mut self, owner: usize) {
        self.staged.retain(|(o, _)| *o != owner);
    }

    /// The number the next instance gets.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Records a started instance: its number.
    pub fn add(&mut self, owner: usize, template: usize, budget_kib: u32, process: P) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.list.push(Instance { id, owner, template, budget_kib, process, ended: None, control: None });
        id
    }

    /// Keeps `control` as instance `id`'s control notification.
    pub fn set_control(&mut self, id: u32, control: P) {
        if let Some(i) = self.list.iter_mut().find(|i| i.id == id) {
            i.control = Some(control);
        }
    }

    /// `proc.control`: the control notification the caller gave for its
    /// instance `id`, or why not (another caller's instance is as unknown
    /// as a stale number; an ended one has nothing left to signal).
    pub fn control(&self, owner: Option<usize>, id: u32) -> Result<P, ProcError> {
        let ins = self.get(owner, id)?;
        let bad = |why: &str| ProcError::BadCapability { name: "control".into(), why: why.into() };
        if ins.ended.is_some() {
            return Err(bad("the instance has ended"));
        }
        ins.control.ok_or_else(|| bad("the instance was started without one"))
    }

    /// The caller's instance `id`.
    pub fn get(&self, owner: Option<usize>, id: u32) -> Result<&Instance<P>, ProcError> {
        self.list
            .iter()
            .find(|i| Some(i.owner) == owner && i.id == id)
            .ok_or(ProcError::NoSuchInstance { instance: id })
    }

    /// Takes the caller's instance `id` out (stop): it is no longer valid.
    pub fn remove(&mut self, owner: Option<usize>, id: u32) -> Result<Instance<P>, ProcError> {
        let pos = self
            .list
            .iter()
            .position(|i| Some(i.owner) == owner && i.id == id)
            .ok_or(ProcError::NoSuchInstance { instance: id })?;
        Ok(self.list.remove(pos))
    }

    /// Instances not known to have ended, to look at after a watch signal.
    pub fn live_mut(&mut self) -> impl Iterator<Item = &mut Instance<P>> {
        self.list.iter_mut().filter(|i| i.ended.is_none())
    }

    /// The caller's usage (`init_used_kib` is for the caller to fill in).
    pub fn usage(&self, manifest: &Manifest, owner: Option<usize>) -> ProcUsage {
        let Some(owner) = owner else { return ProcUsage::default() };
        ProcUsage {
            instances: self.list.iter().filter(|i| i.owner == owner).count() as u32,
            budget_used_kib: self.used_kib(owner),
            budget_limit_kib: manifest.servers[owner].spawn_budget_kib,
            init_used_kib: 0,
            init_ready: false,
        }
    }
}

/// A caller's name for an error message, cut to a sane length.
pub(crate) fn clip(s: &str) -> String {
    if s.len() <= 64 {
        return s.into();
    }
    format!("{}…", cut(s, 64))
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
        [system]
        name = "t"
        [[server]]
        name = "zone-server"
        priority = 100
        budget_kib = 64
        calls = ["proc"]
        spawns = ["vmm-server"]
        spawn_budget_kib = 1000
        [[server]]
        name = "intruder"
        priority = 100
        budget_kib = 64
        calls = ["proc"]
        [[server]]
        name = "vmm-server"
        priority = 100
        budget_kib = 64
        on_demand = true
        [[server]]
        name = "other-starter"
        priority = 100
        budget_kib = 64
        calls = ["proc"]
        spawns = ["vmm-server"]
        spawn_budget_kib = 1000
    "#;

    fn manifest() -> Manifest {
        Manifest::from_toml(MANIFEST).unwrap()
    }

    #[test]
    fn badges_name_servers() {
        let m = manifest();
        assert_eq!(caller(&m, 0), None);
        assert_eq!(caller(&m, 1), Some(0));
        assert_eq!(caller(&m, 3), Some(2));
        assert_eq!(caller(&m, 4), Some(3));
        assert_eq!(caller(&m, 5), None);
        assert_eq!(caller(&m, u64::MAX), None);
    }

    #[test]
    fn only_the_spawns_list_may_start_and_only_its_templates() {
        let m = manifest();
        let ins = Instances::<u32>::default();
        assert_eq!(ins.check_start(&m, Some(0), "vmm-server", 10, 100), Ok(2));
        let np = |t: &str| Err(ProcError::NotPermitted { template: t.into() });
        assert_eq!(ins.check_start(&m, Some(1), "vmm-server", 10, 100), np("vmm-server"));
        assert_eq!(ins.check_start(&m, None, "vmm-server", 10, 100), np("vmm-server"));
        // A caller that may start nothing does not learn what exists.
        assert_eq!(ins.check_start(&m, Some(1), "nosuch", 10, 100), np("nosuch"));
        assert_eq!(
            ins.check_start(&m, Some(0), "nosuch", 10, 100),
            Err(ProcError::UnknownTemplate { template: "nosuch".into() })
        );
        // A server of the manifest that is not in spawns.
        assert_eq!(ins.check_start(&m, Some(0), "intruder", 10, 100), np("intruder"));
        let long = "x".repeat(5000);
        match ins.check_start(&m, Some(0), &long, 10, 100) {
            Err(ProcError::UnknownTemplate { template }) => assert!(template.len() < 70),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_data_and_budget_are_bounded() {
        let m = manifest();
        let mut ins = Instances::<u32>::default();
        assert_eq!(ins.check_start(&m, Some(0), "vmm-server", PROC_START_DATA_TOTAL_MAX as usize, 100), Ok(2));
        assert_eq!(
            ins.check_start(&m, Some(0), "vmm-server", PROC_START_DATA_TOTAL_MAX as usize + 1, 100),
            Err(ProcError::TooLarge { what: "start data (bytes)".into(), max: u64::from(PROC_START_DATA_TOTAL_MAX) })
        );
        assert_eq!(
            ins.check_start(&m, Some(0), "vmm-server", 1, 1001),
            Err(ProcError::OutOfBudget { asked_kib: 1001, left_kib: 1000 })
        );
        assert_eq!(ins.check_start(&m, Some(0), "vmm-server", 1, 0), Err(ProcError::OutOfBudget { asked_kib: 0, left_kib: 1000 }));
        let a = ins.add(0, 2, 600, 7);
        assert_eq!(ins.check_start(&m, Some(0), "vmm-server", 1, 500), Err(ProcError::OutOfBudget { asked_kib: 500, left_kib: 400 }));
        assert_eq!(ins.usage(&m, Some(0)), ProcUsage { instances: 1, budget_used_kib: 600, budget_limit_kib: 1000, init_used_kib: 0, init_ready: false });
        // Stopping gives the budget back.
        assert_eq!(ins.remove(Some(0), a).map(|i| i.process), Ok(7));
        assert_eq!(ins.check_start(&m, Some(0), "vmm-server", 1, 1000), Ok(2));
        assert_eq!(ins.usage(&m, Some(0)).budget_used_kib, 0);
    }

    #[test]
    fn numbers_are_the_caller_s_and_never_reused() {
        let m = manifest();
        let mut ins = Instances::<u32>::default();
        let a = ins.add(0, 2, 10, 1);
        // Another caller's instance looks unknown.
        assert_eq!(ins.get(Some(1), a), Err(ProcError::NoSuchInstance { instance: a }));
        assert_eq!(ins.remove(Some(1), a), Err(ProcError::NoSuchInstance { instance: a }));
        assert_eq!(ins.remove(None, a), Err(ProcError::NoSuchInstance { instance: a }));
        assert!(ins.remove(Some(0), a).is_ok());
        // Stale.
        assert_eq!(ins.remove(Some(0), a), Err(ProcError::NoSuchInstance { instance: a }));
        let b = ins.add(0, 2, 10, 2);
        assert_ne!(a, b);
        assert_eq!(ins.get(Some(0), b).map(|i| i.process), Ok(2));
        assert_eq!(ins.usage(&m, Some(1)).instances, 0);
    }

    /// `proc.control` hands the control notification back to the caller
    /// that started the instance only: another caller (or an unbadged one)
    /// sees no such instance, and an instance without one, ended or
    /// stopped has none to give.
    #[test]
    fn control_goes_back_to_the_starter_only() {
        let mut ins = Instances::<u32>::default();
        let a = ins.add(0, 2, 10, 1);
        let b = ins.add(0, 2, 10, 2);
        ins.set_control(a, 40);
        assert_eq!(ins.control(Some(0), a), Ok(40));
        for who in [Some(1), Some(2), None] {
            assert_eq!(ins.control(who, a), Err(ProcError::NoSuchInstance { instance: a }));
        }
        let none = ins.control(Some(0), b);
        assert!(matches!(&none, Err(ProcError::BadCapability { name, why }) if name == "control" && why.contains("without")), "{none:?}");
        for n in [0, 3, u32::MAX] {
            assert_eq!(ins.control(Some(0), n), Err(ProcError::NoSuchInstance { instance: n }));
        }
        ins.live_mut().find(|i| i.id == a).unwrap().ended = Some(ProcState::Exited { code: 0 });
        assert!(matches!(ins.control(Some(0), a), Err(ProcError::BadCapability { .. })));
        assert_eq!(ins.remove(Some(0), a).map(|i| i.control), Ok(Some(40)));
        assert_eq!(ins.control(Some(0), a), Err(ProcError::NoSuchInstance { instance: a }));
    }

    const MAX: usize = PROC_START_DATA_MAX as usize;
    const TOTAL: usize = PROC_START_DATA_TOTAL_MAX as usize;

    /// `len` bytes that tell where each came from (`seed` and position).
    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add((i % 251) as u8)).collect()
    }

    /// Stages `data` for `owner` in chunks of one message, as zone-server
    /// does: the bytes staged after each.
    fn stage(ins: &mut Instances<u32>, m: &Manifest, owner: usize, data: &[u8]) -> Vec<Result<u32, ProcError>> {
        data.chunks(MAX).enumerate().map(|(i, c)| ins.append_start_data(m, Some(owner), (i * MAX) as u32, c)).collect()
    }

    /// A `vm.json` longer than one message crosses in chunks; `start` gets
    /// the staged bytes followed by its own, and the staging is gone after.
    #[test]
    fn start_with_staged_data_gets_the_concatenation() {
        let m = manifest();
        let mut ins = Instances::<u32>::default();
        let staged = bytes(1, 5 * MAX + 17);
        let counts = stage(&mut ins, &m, 0, &staged);
        assert_eq!(counts.last(), Some(&Ok(staged.len() as u32)));
        assert!(counts.iter().all(Result::is_ok), "{counts:?}");
        assert_eq!(ins.staged_bytes(Some(0)), staged.len());
        let own = bytes(99, MAX);
        let whole = ins.take_start_data(Some(0), own.clone()).unwrap();
        assert_eq!(whole.len(), staged.len() + own.len());
        assert_eq!((&whole[..staged.len()], &whole[staged.len()..]), (&staged[..], &own[..]));
        assert_eq!(ins.check_start(&m, Some(0), "vmm-server", whole.len(), 100), Ok(2));
        // Used: the next start has only its own.
        assert_eq!(ins.staged_bytes(Some(0)), 0);
        assert_eq!(ins.take_start_data(Some(0), b"{}".to_vec()), Ok(b"{}".to_vec()));
        // Nothing staged: the request's bytes as they are.
        assert_eq!(ins.take_start_data(Some(0), Vec::new()), Ok(Vec::new()));
    }

    /// Up to the total limit exactly, staged and sent; one byte more is
    /// refused with the limit, on the append that crosses it and at start.
    #[test]
    fn the_total_is_bounded_on_every_append_and_at_start() {
        let m = manifest();
        let mut ins = Instances::<u32>::default();
        let full = bytes(3, TOTAL - MAX);
        assert!(stage(&mut ins, &m, 0, &full).iter().all(Result::is_ok));
        assert_eq!(ins.take_start_data(Some(0), bytes(4, MAX)).map(|d| d.len()), Ok(TOTAL));
        let too_much = Err(ProcError::TooLarge { what: "start data staged (bytes)".into(), max: TOTAL as u64 });
        let all = bytes(5, TOTAL + 1);
        let counts = stage(&mut ins, &m, 0, &all);
        assert_eq!(counts.last(), Some(&too_much));
        assert_eq!(counts.iter().filter(|c| c.is_ok()).count(), TOTAL / MAX, "every chunk up to the limit taken");
        // The refusal dropped the staging.
        assert_eq!(ins.staged_bytes(Some(0)), 0);
        // Staged to the limit, then one more byte with start.
        assert!(stage(&mut ins, &m, 0, &all[..TOTAL]).iter().all(Result::is_ok));
        assert_eq!(
            ins.take_start_data(Some(0), vec![b'}']),
            Err(ProcError::TooLarge { what: "start data staged and sent (bytes)".into(), max: TOTAL as u64 })
        );
        assert_eq!(ins.staged_bytes(Some(0)), 0);
    }

    /// A chunk longer than one message's start data is refused (as a
    /// start's own), and what was staged goes with it.
    #[test]
    fn a_chunk_over_one_message_is_refused() {
        let m = manifest();
        let mut ins = Instances::<u32>::default();
        assert_eq!(ins.append_start_data(&m, Some(0), 0, &bytes(1, MAX)), Ok(MAX as u32));
        assert_eq!(
            ins.append_start_data(&m, Some(0), MAX as u32, &bytes(2, MAX + 1)),
            Err(ProcError::TooLarge { what: "a start data chunk (bytes)".into(), max: MAX as u64 })
        );
        assert_eq!(ins.staged_bytes(Some(0)), 0);
        assert_eq!(
            ins.take_start_data(Some(0), bytes(3, MAX + 1)),
            Err(ProcError::TooLarge { what: "start data (bytes)".into(), max: MAX as u64 })
        );
    }

    /// `offset` must be the bytes staged: 0 begins again (an unfinished
    /// staging is not prepended to the next one), a gap or an overlap is
    /// refused and drops the staging.
    #[test]
    fn offsets_must_follow_on() {
        let m = manifest();
        let mut ins = Instances::<u32>::default();
        assert_eq!(ins.append_start_data(&m, Some(0), 0, b"stale"), Ok(5));
        assert_eq!(ins.append_start_data(&m, Some(0), 0, b"{\"ram\""), Ok(6));
        assert_eq!(ins.append_start_data(&m, Some(0), 6, b": 64"), Ok(10));
        assert_eq!(ins.take_start_data(Some(0), b"}".to_vec()), Ok(b"{\"ram\": 64}".to_vec()));
        for wrong in [3, 11, u32::MAX] {
            assert_eq!(ins.append_start_data(&m, Some(0), 0, b"0123456789"), Ok(10));
            let got = ins.append_start_data(&m, Some(0), wrong, b"x");
            assert!(matches!(&got, Err(ProcError::StartData { why }) if why.contains("10 bytes are staged")), "{got:?}");
            assert_eq!(ins.staged_bytes(Some(0)), 0);
        }
        // Offset 0 with nothing: a way to drop what is staged.
        assert_eq!(ins.append_start_data(&m, Some(0), 0, b"abc"), Ok(3));
        assert_eq!(ins.append_start_data(&m, Some(0), 0, b""), Ok(0));
        assert_eq!(ins.staged_bytes(Some(0)), 0);
    }

    /// Each caller's staging is its own: another starter's `start` never
    /// sees it, and callers that start nothing stage nothing.
    #[test]
    fn another_caller_s_staging_is_never_used() {
        let m = manifest();
        let mut ins = Instances::<u32>::default();
        assert_eq!(ins.append_start_data(&m, Some(0), 0, b"zone-server's"), Ok(13));
        assert_eq!(ins.take_start_data(Some(3), b"{}".to_vec()), Ok(b"{}".to_vec()));
        // Nor does a second one continue the first's.
        let got = ins.append_start_data(&m, Some(3), 13, b"x");
        assert!(matches!(got, Err(ProcError::StartData { .. })), "{got:?}");
        assert_eq!(ins.staged_bytes(Some(0)), 13);
        let not = |got: Result<u32, ProcError>| matches!(&got, Err(ProcError::StartData { why }) if why.contains("spawns"));
        for who in [Some(1), Some(2), None, Some(4), Some(usize::MAX)] {
            assert!(not(ins.append_start_data(&m, who, 0, b"{}")), "{who:?}");
            assert_eq!(ins.take_start_data(who, Vec::new()), Ok(Vec::new()), "{who:?}");
        }
        assert_eq!(ins.take_start_data(Some(0), b"!".to_vec()), Ok(b"zone-server's!".to_vec()));
    }

    /// A start that fails drops what was staged (init takes it out before
    /// it checks the start), and so does the caller's end.
    #[test]
    fn staging_is_dropped_after_a_failed_start_and_at_the_caller_s_end() {
        let m = manifest();
        let mut ins = Instances::<u32>::default();
        assert_eq!(ins.append_start_data(&m, Some(0), 0, &bytes(1, MAX)), Ok(MAX as u32));
        // As ProcCall::start: the whole data, then the checks (here the
        // budget) refuse.
        let whole = ins.take_start_data(Some(0), b"}".to_vec()).unwrap();
        assert!(ins.check_start(&m, Some(0), "vmm-server", whole.len(), 5000).is_err());
        assert_eq!(ins.staged_bytes(Some(0)), 0);
        assert_eq!(ins.take_start_data(Some(0), b"{}".to_vec()), Ok(b"{}".to_vec()));
        // The caller ended (restarted) between its appends and its start.
        assert_eq!(ins.append_start_data(&m, Some(0), 0, &bytes(1, MAX)), Ok(MAX as u32));
        assert_eq!(ins.append_start_data(&m, Some(3), 0, b"kept"), Ok(4));
        ins.drop_start_data(0);
        assert_eq!((ins.staged_bytes(Some(0)), ins.staged_bytes(Some(3))), (0, 4));
    }

    #[test]
    fn instance_slots_are_bounded() {
        let m = manifest();
        let mut ins = Instances::<u32>::default();
        for i in 0..PROC_INSTANCES_MAX {
            ins.add(0, 2, 0, i);
        }
        assert_eq!(ins.check_start(&m, Some(0), "vmm-server", 1, 1), Err(ProcError::TooMany { limit: PROC_INSTANCES_MAX }));
    }
}
