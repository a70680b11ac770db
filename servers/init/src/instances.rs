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

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use initrd::manifest::Manifest;
use libipc::interfaces::{PROC_INSTANCES_MAX, PROC_START_DATA_MAX, ProcError, ProcState, ProcUsage};

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

/// Every instance init runs for `proc` callers.
#[derive(Debug)]
pub struct Instances<P> {
    list: Vec<Instance<P>>,
    next_id: u32,
}

impl<P> Default for Instances<P> {
    fn default() -> Self {
        Self { list: Vec::new(), next_id: 1 }
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

    /// Checks a `start` request: the template's index, or why not.
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
        if start_data > PROC_START_DATA_MAX as usize {
            return Err(ProcError::TooLarge { what: "start data (bytes)".into(), max: u64::from(PROC_START_DATA_MAX) });
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
        assert_eq!(caller(&m, 4), None);
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
        assert_eq!(
            ins.check_start(&m, Some(0), "vmm-server", PROC_START_DATA_MAX as usize + 1, 100),
            Err(ProcError::TooLarge { what: "start data (bytes)".into(), max: u64::from(PROC_START_DATA_MAX) })
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
