//! The pure logic of the system-call fuzzer (`main.rs` is the process that
//! issues the calls): its configuration from the manifest arguments, the
//! seeded generator, and the model of what the process holds — which
//! capability is in which slot, derived from which, and which pages are
//! mapped through which capability — against which every kernel answer is
//! checked. Everything here builds and is tested on the host.
//!
//! The model follows the kernel's documented rules (`abi`): copies may only
//! drop rights; deleting a capability re-parents its children to its parent
//! (so a revoke still reaches grandchildren); revoking removes every
//! capability derived from the slot and keeps the slot; a mapping holds its
//! frame, so deleting the capability it was made through leaves it in place,
//! but revoking that capability must take it away.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use abi::{CapSlot, ObjectType, Rights};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// What the manifest arguments ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The run's seed; batch `i` runs on [`batch_seed`]`(seed, i)`.
    pub seed: u64,
    /// The first batch to run (a failing batch reruns alone with
    /// `first=K batches=1`).
    pub first: u64,
    /// How many batches.
    pub batches: u64,
    /// Operations per batch.
    pub ops: u32,
    /// The CPUs the harness gave the machine (`expect_cpus=N`).
    pub expect_cpus: Option<u32>,
    /// Open kernel findings whose checks only count, not fail
    /// (`known=12`: mappings made through a revoked copy survive;
    /// `known=5`: a batch leaves the budget's `used` below where it began;
    /// `known=wide-slots`: IPC calls take a slot number modulo 2^32).
    pub known: Vec<String>,
    /// Print every operation (`trace=1`).
    pub trace: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { seed: 1, first: 0, batches: 100, ops: 60, expect_cpus: None, known: Vec::new(), trace: false }
    }
}

fn number(key: &str, v: &str) -> Result<u64, String> {
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.map_err(|_| format!("argument {key}={v}: not a number"))
}

impl Config {
    /// Whether open finding `f` only counts.
    pub fn known(&self, f: &str) -> bool {
        self.known.iter().any(|k| k == f)
    }

    /// Parses `key=value` arguments: `seed`, `first`, `batches`, `ops`,
    /// `expect_cpus`, `known` (repeatable). Anything else is an error that
    /// names the argument.
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Result<Self, String> {
        let mut c = Config::default();
        for a in args {
            let a = a.as_ref();
            let (k, v) = a.split_once('=').ok_or_else(|| format!("argument {a:?}: expected key=value"))?;
            match k {
                "seed" => c.seed = number(k, v)?,
                "first" => c.first = number(k, v)?,
                "batches" => c.batches = number(k, v)?,
                "ops" => {
                    c.ops = u32::try_from(number(k, v)?).map_err(|_| format!("argument ops={v}: too large"))?;
                    if c.ops == 0 {
                        return Err("argument ops=0: a batch needs operations".into());
                    }
                }
                "expect_cpus" => {
                    let n = u32::try_from(number(k, v)?).ok().filter(|&n| n >= 1);
                    c.expect_cpus = Some(n.ok_or_else(|| format!("argument expect_cpus={v}: not a CPU count"))?);
                }
                "trace" => c.trace = number(k, v)? != 0,
                "known" => match v {
                    "5" | "12" | "wide-slots" => c.known.push(v.into()),
                    _ => return Err(format!("argument known={v}: not an open finding the fuzzer knows (5, 12, wide-slots)")),
                },
                _ => return Err(format!("argument {a:?}: unknown key {k:?} (seed, first, batches, ops, expect_cpus, known, trace)")),
            }
        }
        if c.batches == 0 {
            return Err("argument batches=0: nothing to run".into());
        }
        Ok(c)
    }

    /// The one command that reruns batch `batch` of this run alone.
    pub fn reproduce(&self, batch: u64) -> String {
        let mut s = format!("cargo xtask fuzz-syscalls --seed {:#x} --first {batch} --batches 1", self.seed);
        if let Some(n) = self.expect_cpus {
            s += &format!(" --smp {n}");
        }
        if self.ops != Config::default().ops {
            s += &format!(" --ops {}", self.ops);
        }
        for k in &self.known {
            s += &format!(" --known {k}");
        }
        s
    }
}

/// The seed of batch `index` of a run seeded with `seed`: each batch is
/// independent of the others, so one reruns alone.
pub fn batch_seed(seed: u64, index: u64) -> u64 {
    let mut r = Rng::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.next_u64()
}

/// SplitMix64: small, fast, and the same sequence everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the bias is negligible for small `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() { None } else { items.get(self.below(items.len() as u64) as usize) }
    }

    /// A subset of `of` (each right kept with probability 1/2).
    pub fn rights_within(&mut self, of: Rights) -> Rights {
        Rights(of.0 & self.next_u64() as u32)
    }

    /// A number that is often at an edge: 0, 1, powers of two and their
    /// neighbours, `u64::MAX`, or anything.
    pub fn edgy(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX - self.below(2),
            2 => 1u64 << self.below(64),
            3 => (1u64 << self.below(64)).wrapping_sub(1),
            4 => self.below(4096),
            _ => self.next_u64(),
        }
    }
}

/// An object the process created, as the model knows it: copies share it.
pub type ObjId = u32;

/// A capability in one of the process's slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub obj: ObjId,
    pub ty: ObjectType,
    pub rights: Rights,
    pub badge: u64,
    /// The slot it was copied from (its parent in the derivation tree).
    pub parent: Option<CapSlot>,
}

/// What an object is, beyond its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub ty: ObjectType,
    /// Frames: pages.
    pub pages: u64,
    /// Threads: the process object they run in (`None`: this process).
    pub process: Option<ObjId>,
}

/// Where a page is mapped: a process or guest object (`None`: this
/// process itself) and the page's address.
pub type PageKey = (Option<ObjId>, u64);

/// A mapped page: through which slot's capability (`None` once that
/// capability was deleted: deleting leaves the mapping) and which frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub via: Option<CapSlot>,
    pub frame: ObjId,
}

/// The process's holdings.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub slots: BTreeMap<CapSlot, Held>,
    pub objects: BTreeMap<ObjId, Object>,
    pub pages: BTreeMap<PageKey, Mapped>,
    next_obj: ObjId,
}

impl Model {
    /// Records a new object created in `slot` with `rights`.
    pub fn created(&mut self, slot: CapSlot, ty: ObjectType, rights: Rights, pages: u64, process: Option<ObjId>) -> ObjId {
        let obj = self.next_obj;
        self.next_obj += 1;
        self.objects.insert(obj, Object { ty, pages, process });
        self.slots.insert(slot, Held { obj, ty, rights, badge: 0, parent: None });
        obj
    }

    /// Records a copy of `src` in `dst`.
    pub fn copied(&mut self, src: CapSlot, dst: CapSlot, rights: Rights, badge: u64) {
        if let Some(h) = self.slots.get(&src).cloned() {
            let badge = if badge != 0 { badge } else { h.badge };
            self.slots.insert(dst, Held { obj: h.obj, ty: h.ty, rights, badge, parent: Some(src) });
        }
    }

    /// The slots derived from `slot`, children before their parents.
    pub fn descendants(&self, slot: CapSlot) -> Vec<CapSlot> {
        let mut out = Vec::new();
        let mut stack: Vec<CapSlot> = self.children(slot);
        while let Some(s) = stack.pop() {
            stack.extend(self.children(s));
            out.push(s);
        }
        out.reverse();
        out
    }

    fn children(&self, slot: CapSlot) -> Vec<CapSlot> {
        self.slots.iter().filter(|(_, h)| h.parent == Some(slot)).map(|(&s, _)| s).collect()
    }

    /// Records that `slot` was deleted: its children move to its parent,
    /// and so do mappings made through it (revoking the parent's ancestors
    /// still unmaps them; with no parent nothing can). Returns the objects
    /// no slot holds any more.
    pub fn deleted(&mut self, slot: CapSlot) -> Vec<ObjId> {
        let Some(h) = self.slots.remove(&slot) else { return Vec::new() };
        for c in self.slots.values_mut() {
            if c.parent == Some(slot) {
                c.parent = h.parent;
            }
        }
        for m in self.pages.values_mut() {
            if m.via == Some(slot) {
                m.via = h.parent;
            }
        }
        self.forget_unheld(h.obj)
    }

    /// Records a revoke of `slot`: every derived slot is gone. Returns the
    /// removed slots and the pages mapped through them, which the kernel
    /// must have unmapped; they leave the model.
    pub fn revoked(&mut self, slot: CapSlot) -> (Vec<CapSlot>, Vec<PageKey>) {
        let gone = self.descendants(slot);
        let mut pages = Vec::new();
        for s in &gone {
            let h = self.slots.remove(s).expect("descendants are held");
            for (k, m) in self.pages.iter() {
                if m.via == Some(*s) {
                    pages.push(*k);
                }
            }
            let _ = h;
        }
        for k in &pages {
            self.pages.remove(k);
        }
        (gone, pages)
    }

    /// An object nobody here holds any more: a process or guest takes its
    /// mappings along. Returns it if it was forgotten.
    fn forget_unheld(&mut self, obj: ObjId) -> Vec<ObjId> {
        if self.slots.values().any(|h| h.obj == obj) {
            return Vec::new();
        }
        let ty = self.objects.get(&obj).map(|o| o.ty);
        if matches!(ty, Some(ObjectType::Process | ObjectType::Guest)) {
            self.pages.retain(|(space, _), _| *space != Some(obj));
        }
        alloc::vec![obj]
    }

    /// Pages mapped in `space` within `va..va + pages * 4096`.
    pub fn mapped_in(&self, space: Option<ObjId>, va: u64, pages: u64) -> u64 {
        let end = va.saturating_add(pages.saturating_mul(abi::PAGE_SIZE));
        self.pages.range((space, va)..(space, end)).count() as u64
    }

    /// Records a mapping of `frame` through `via` at `va` in `space`.
    pub fn mapped(&mut self, space: Option<ObjId>, va: u64, via: CapSlot, frame: ObjId, pages: u64) {
        for i in 0..pages {
            self.pages.insert((space, va + i * abi::PAGE_SIZE), Mapped { via: Some(via), frame });
        }
    }

    /// Records an unmap; returns the pages it took.
    pub fn unmapped(&mut self, space: Option<ObjId>, va: u64, pages: u64) -> u64 {
        let end = va.saturating_add(pages.saturating_mul(abi::PAGE_SIZE));
        let keys: Vec<PageKey> = self.pages.range((space, va)..(space, end)).map(|(k, _)| *k).collect();
        for k in &keys {
            self.pages.remove(k);
        }
        keys.len() as u64
    }

    /// Held slots with objects of type `ty`.
    pub fn of_type(&self, ty: ObjectType) -> Vec<CapSlot> {
        self.slots.iter().filter(|(_, h)| h.ty == ty).map(|(&s, _)| s).collect()
    }

    /// Forgets everything (after the batch's clean-up).
    pub fn clear(&mut self) {
        *self = Model::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn args_parse_and_name_what_is_wrong() {
        let c = Config::from_args(&["seed=0x2a", "batches=300", "first=7", "expect_cpus=4", "known=12", "ops=9"]).unwrap();
        assert_eq!(c, Config { seed: 42, first: 7, batches: 300, ops: 9, expect_cpus: Some(4), known: vec!["12".into()], trace: false });
        assert!(Config::from_args(&["known=7"]).is_err());
        assert!(Config::from_args(&["trace=1"]).unwrap().trace);
        assert_eq!(Config::from_args::<&str>(&[]).unwrap(), Config::default());
        let e = Config::from_args(&["seed=x"]).unwrap_err();
        assert!(e.contains("seed=x"), "{e}");
        let e = Config::from_args(&["bogus=1"]).unwrap_err();
        assert!(e.contains("unknown key \"bogus\""), "{e}");
        assert!(Config::from_args(&["batches=0"]).is_err());
        assert!(Config::from_args(&["expect_cpus=0"]).is_err());
        assert!(Config::from_args(&["seed"]).is_err());
    }

    #[test]
    fn a_failing_batch_reruns_alone_with_one_command() {
        let c = Config::from_args(&["seed=0x2a", "batches=300", "expect_cpus=4", "known=12"]).unwrap();
        assert_eq!(c.reproduce(17), "cargo xtask fuzz-syscalls --seed 0x2a --first 17 --batches 1 --smp 4 --known 12");
    }

    #[test]
    fn seeds_are_deterministic_and_differ_per_batch() {
        assert_eq!(batch_seed(5, 3), batch_seed(5, 3));
        assert_ne!(batch_seed(5, 3), batch_seed(5, 4));
        assert_ne!(batch_seed(5, 3), batch_seed(6, 3));
        let (mut a, mut b) = (Rng::new(9), Rng::new(9));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
            assert_eq!(r.rights_within(Rights::READ).0 & !Rights::READ.0, 0);
        }
    }

    #[test]
    fn revoke_reaches_grandchildren_through_a_deleted_child_and_their_mappings() {
        let mut m = Model::default();
        let f = m.created(10, ObjectType::Frame, Rights::ALL, 2, None);
        m.copied(10, 11, Rights::READ, 0);
        m.copied(11, 12, Rights::READ, 0);
        m.copied(10, 13, Rights::READ, 0);
        m.mapped(None, 0x1000, 12, f, 2);
        m.mapped(None, 0x8000, 10, f, 1);
        assert_eq!(m.descendants(10), vec![12, 11, 13]);
        assert!(m.deleted(11).is_empty(), "the frame is still held");
        assert_eq!(m.slots[&12].parent, Some(10));
        let (gone, pages) = m.revoked(10);
        assert_eq!(gone, vec![12, 13]);
        assert_eq!(pages, vec![(None, 0x1000), (None, 0x2000)]);
        assert_eq!(m.mapped_in(None, 0, 16), 1, "the mapping through the revoked slot itself stays");
        assert!(m.slots.contains_key(&10));
    }

    #[test]
    fn a_deleted_copys_mappings_pass_to_its_parent() {
        let mut m = Model::default();
        let f = m.created(10, ObjectType::Frame, Rights::ALL, 1, None);
        m.copied(10, 11, Rights::READ, 0);
        m.copied(11, 12, Rights::READ, 0);
        m.mapped(None, 0x1000, 12, f, 1);
        m.deleted(12);
        assert_eq!(m.pages[&(None, 0x1000)].via, Some(11));
        m.deleted(11);
        assert_eq!(m.pages[&(None, 0x1000)].via, Some(10));
        let (_, pages) = m.revoked(10);
        assert!(pages.is_empty(), "mapped through the root now: revoking it keeps the page");
    }

    #[test]
    fn unmap_counts_pages_and_a_process_takes_its_mappings() {
        let mut m = Model::default();
        let f = m.created(1, ObjectType::Frame, Rights::ALL, 4, None);
        let p = m.created(2, ObjectType::Process, Rights::ALL, 0, None);
        m.mapped(Some(p), 0x40_0000, 1, f, 4);
        m.mapped(None, 0x40_0000, 1, f, 4);
        assert_eq!(m.mapped_in(Some(p), 0x40_1000, 2), 2);
        assert_eq!(m.unmapped(None, 0x40_3000, 10), 1);
        assert_eq!(m.deleted(1), vec![f]);
        assert_eq!(m.pages[&(Some(p), 0x40_0000)].via, None, "deleting keeps the mapping");
        assert_eq!(m.deleted(2), vec![p]);
        assert_eq!(m.mapped_in(Some(p), 0, u64::MAX / 4096), 0);
        assert_eq!(m.mapped_in(None, 0x40_0000, 3), 3);
    }
}
