//! The fuzzer's process side: the operations, each a system call (or a few)
//! checked against the model, and the batch loop with its invariants.
//!
//! What the fuzzer keeps clear of, so that nothing it does can end it
//! legitimately: it never calls `Exit` or `MachineExit` (except at the very
//! end), never deletes, revokes, configures or suspends a capability
//! outside its pool of slots, never unmaps outside its own window of
//! address space, and never starts a thread of its own process (threads it
//! creates in itself stay unconfigured; code runs only in child processes,
//! which hammer the kernel with system calls of their own). Garbage calls
//! name only empty or out-of-range slots in the places where a slot is read.

use abi::{CapSlot, Error, MsgInfo, ObjectType, PAGE_SIZE, Rights, Sys};
use alcove_rt::start::{SLOT_CONSOLE, SLOT_SELF};
use alcove_rt::{Start, StartInfo, println};
use alloc::collections::{BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kcore::testproto::PREFIX;
use ktest_fuzz::{Config, Model, ObjId, Rng, batch_seed};
use libipc::sys;

/// The slots the generator creates objects in.
const POOL: core::ops::Range<CapSlot> = 300..396;
/// Slots nothing ever uses (in the table) and beyond the table.
const EMPTY: core::ops::Range<CapSlot> = 900..1024;
/// The echo thread (its thread, stack and IPC-buffer frames), its endpoint,
/// the slots it receives capabilities into, and the probe frame.
const ECHO_SLOTS: alcove_rt::ThreadSlots = alcove_rt::ThreadSlots { thread: 250, stack: 251, ipc: 252 };
const ECHO_EP: CapSlot = 253;
const PROBE: CapSlot = 254;
const ECHO_RECV: CapSlot = 260;
const ECHO_VA: u64 = 0x2f00_0000_0000;
/// The fuzzer's own window of address space: the only place it maps into
/// itself, and the only range it unmaps.
const WINDOW: u64 = 0x3000_0000_0000;
const WINDOW_PAGES: u64 = 256;
/// The fuzzer's priority (its manifest's): nothing may be raised above it.
const MY_PRIORITY: u64 = 100;
const LABEL_CAPS: u32 = 7;
const ALL_RIGHTS: Rights = Rights::ALL;

/// Why a batch failed.
type Fail = String;

struct Fuzz {
    cfg: Config,
    cpus: u64,
    rng: Rng,
    model: Model,
    /// Objects handed to a child process (their state may change under us).
    shared: BTreeSet<ObjId>,
    /// The last operations, for a failure's report.
    trail: VecDeque<String>,
    calls: u64,
    known_12: u64,
    known_5: u64,
    known_wide: u64,
    batch: u64,
    console: Option<CapSlot>,
}

/// A system call with raw arguments; `Err` names a status that is no
/// `abi::Error` (the kernel and the ABI disagree).
fn sc(n: u64, args: [u64; 6]) -> Result<Result<[u64; 6], Error>, Fail> {
    // SAFETY: every call the generator makes keeps this process's memory and
    // capabilities intact (module doc): slots it may destroy are in POOL,
    // addresses it may unmap are in WINDOW, threads it configures run in
    // child processes, pointers it passes point at nothing of its own that
    // is in use (garbage calls name an empty slot first, so the kernel
    // refuses them before it reads memory) and IPC goes through libipc's
    // wrappers.
    let (status, out) = unsafe { sys::raw(n, args) };
    match status {
        0 => Ok(Ok(out)),
        s => Error::from_u64(s).map(Err).ok_or_else(|| format!("syscall {n} {args:x?} returned status {s}, no abi::Error")),
    }
}

fn s(x: CapSlot) -> u64 {
    u64::from(x)
}

fn want(ok: bool, why: impl FnOnce() -> String) -> Result<(), Fail> {
    if ok { Ok(()) } else { Err(why()) }
}

pub fn main(start: Start) -> u64 {
    let info = start.server("ktest-fuzz");
    let cfg = match Config::from_args(&info.args) {
        Ok(c) => c,
        Err(e) => {
            println!("{PREFIX} suite fuzz 1");
            println!("{PREFIX} run arguments");
            println!("{PREFIX} fail arguments {e}");
            println!("{PREFIX} end 0 1");
            let _ = sys::machine_exit(SLOT_CONSOLE, 1);
            return 1;
        }
    };
    let mut f = Fuzz {
        cpus: count_cpus(),
        rng: Rng::new(cfg.seed),
        model: Model::default(),
        shared: BTreeSet::new(),
        trail: VecDeque::new(),
        calls: 0,
        known_12: 0,
        known_5: 0,
        known_wide: 0,
        batch: 0,
        console: info.calls("console"),
        cfg,
    };
    run(&mut f, &info)
}

/// How many CPUs the kernel accepts as a thread's affinity.
fn count_cpus() -> u64 {
    let t = EMPTY.start;
    if sys::create(ObjectType::Thread, t, s(SLOT_SELF)).is_err() {
        return 1;
    }
    let mut n = 1;
    while n < 64 && sys::thread_set_priority(t, 1, Some(n)).is_ok() {
        n += 1;
    }
    let _ = sys::cap_delete(t);
    u64::from(n)
}

fn run(f: &mut Fuzz, _info: &StartInfo) -> u64 {
    let c = f.cfg.clone();
    println!(
        "fuzz: seed {:#x}, batches {}..{}, {} operations each, {} CPUs online{}",
        c.seed,
        c.first,
        c.first + c.batches,
        c.ops,
        f.cpus,
        c.expect_cpus.map(|n| format!(" (the machine was given {n})")).unwrap_or_default()
    );
    println!("{PREFIX} suite fuzz {}", c.batches + 1);
    let (mut passed, mut failed) = (0u64, 0u64);
    // The setup is a test of its own: without the echo thread nothing runs.
    println!("{PREFIX} run setup");
    let setup = setup(f);
    let _echo = match setup {
        Ok(t) => {
            println!("{PREFIX} ok setup");
            passed += 1;
            Some(t)
        }
        Err(e) => {
            println!("{PREFIX} fail setup {e}");
            failed += 1;
            None
        }
    };
    for i in c.first..c.first + c.batches {
        let seed = batch_seed(c.seed, i);
        let name = format!("batch-{i}-seed-{seed:016x}");
        println!("{PREFIX} run {name}");
        if _echo.is_none() {
            println!("{PREFIX} fail {name} not run: the setup failed");
            failed += 1;
            continue;
        }
        f.rng = Rng::new(seed);
        f.batch = i;
        f.trail.clear();
        match batch(f) {
            Ok(()) => {
                passed += 1;
                println!("{PREFIX} ok {name}");
            }
            Err(why) => {
                failed += 1;
                let trail: Vec<&str> = f.trail.iter().map(String::as_str).collect();
                println!("{PREFIX} fail {name} {why} (last operations: {}); reproduce: {}", trail.join("; "), c.reproduce(i));
                let _ = clean_up(f);
            }
        }
    }
    println!(
        "fuzz: {} batches ({} failed), {} system calls; known finding 12 (a mapping through a revoked copy survives) seen {} times, known finding 5 (a batch ends with less charged than it began) {} times, known wide-slots (an IPC call took a slot number modulo 2^32) {} times",
        c.batches, failed, f.calls, f.known_12, f.known_5, f.known_wide
    );
    println!("{PREFIX} end {passed} {failed}");
    let _ = sys::machine_exit(SLOT_CONSOLE, if failed == 0 { 0 } else { 1 });
    0
}

/// The echo thread and the probe frame, kept for the whole run.
fn setup(_f: &mut Fuzz) -> Result<alcove_rt::Thread, Fail> {
    sys::create(ObjectType::Endpoint, ECHO_EP, 0).map_err(|e| format!("echo endpoint: {e}"))?;
    sys::create(ObjectType::Frame, PROBE, 1).map_err(|e| format!("probe frame: {e}"))?;
    let t = alcove_rt::Thread::spawn(ECHO_SLOTS, ECHO_VA, 4, echo_thread, s(ECHO_EP), 0)
        .map_err(|e| format!("echo thread: {e}"))?;
    Ok(t)
}

/// Receives messages with capabilities and answers what arrived: how many
/// the kernel says, and in which receive slot what object type (4 bits
/// each) with which rights (8 bits each); deletes them all. (The kernel puts
/// the capability sent as `send_caps[i]` into `recv_slots[i]` and counts
/// those it moved, so a receiver looks at every slot it named.)
extern "C" fn echo_thread(_ipc: u64, ep: u64, _: u64) -> ! {
    let ep = ep as CapSlot;
    let arm = || {
        let _ = sys::with_ipc_buffer(|b| {
            for i in 0..abi::MSG_MAX_CAPS {
                b.recv_slots[i] = u64::from(ECHO_RECV) + i as u64;
            }
            b.recv_caps = 0;
        });
    };
    arm();
    let mut msg = sys::recv(ep, abi::FOREVER);
    loop {
        let reply = match msg {
            Ok(_) => {
                let got = sys::with_ipc_buffer(|b| b.recv_caps).unwrap_or(u64::MAX);
                let (mut types, mut rights) = (0u64, 0u64);
                for i in 0..abi::MSG_MAX_CAPS {
                    let slot = ECHO_RECV + i as CapSlot;
                    if let Ok(c) = sys::cap_identify(slot) {
                        types |= (c.object_type as u64) << (4 * i);
                        rights |= u64::from(c.rights.0) << (8 * i);
                    }
                    let _ = sys::cap_delete(slot);
                }
                [got, types, rights, 0]
            }
            Err(_) => [u64::MAX, 0, 0, 0],
        };
        arm();
        msg = match sys::reply_recv(ep, MsgInfo::new(LABEL_CAPS, 3, 0), reply) {
            Ok(m) => Ok(m),
            Err(_) => sys::recv(ep, abi::FOREVER),
        };
    }
}

impl Fuzz {
    fn note(&mut self, what: String) {
        if self.cfg.trace {
            println!("fuzz: {what}");
        }
        if self.trail.len() == 8 {
            self.trail.pop_front();
        }
        self.trail.push_back(what);
    }

    /// A raw call, counted and remembered.
    fn call(&mut self, what: &str, n: Sys, args: [u64; 6]) -> Result<Result<[u64; 6], Error>, Fail> {
        self.raw(what, n as u64, args)
    }

    fn raw(&mut self, what: &str, n: u64, args: [u64; 6]) -> Result<Result<[u64; 6], Error>, Fail> {
        self.calls += 1;
        let r = sc(n, args)?;
        self.note(format!("{what} {:x?} -> {:?}", &args[..4], r.map(|o| o[0])));
        Ok(r)
    }

    fn used(&self) -> Result<(u64, u64), Fail> {
        let b = sys::budget_info().map_err(|e| format!("budget_info: {e}"))?;
        if b.used_bytes > b.limit_bytes {
            return Err(format!("budget used {} exceeds its limit {}", b.used_bytes, b.limit_bytes));
        }
        Ok((b.used_bytes, b.limit_bytes))
    }

    fn free_slot(&mut self) -> CapSlot {
        let start = POOL.start + self.rng.below(u64::from(POOL.end - POOL.start)) as CapSlot;
        (start..POOL.end).chain(POOL.start..start).find(|s| !self.model.slots.contains_key(s)).unwrap_or(start)
    }

    fn held(&mut self) -> Option<CapSlot> {
        let slots: Vec<CapSlot> = self.model.slots.keys().copied().collect();
        self.rng.pick(&slots).copied()
    }

    fn held_of(&mut self, ty: ObjectType) -> Option<CapSlot> {
        let v = self.model.of_type(ty);
        self.rng.pick(&v).copied()
    }

    fn empty_slot(&mut self) -> u64 {
        match self.rng.below(3) {
            0 => 1024 + self.rng.below(1 << 20),
            // Beyond 2^32, and an empty slot modulo 2^32 (a kernel that
            // truncates slot numbers, `wide_slot`, must not reach a real
            // capability through a garbage call and block on it).
            1 => (self.rng.edgy() << 32) | (1 << 40) | (u64::from(EMPTY.start) + self.rng.below(u64::from(EMPTY.end - EMPTY.start))),
            _ => s(EMPTY.start) + self.rng.below(u64::from(EMPTY.end - EMPTY.start)),
        }
    }

    /// Whether a child process still runs (a dead one refuses maps).
    fn alive(&self, proc_slot: CapSlot) -> bool {
        matches!(sys::process_info(proc_slot), Ok(i) if i.state == abi::ProcessState::Running)
    }

    /// The object a process/guest slot names, for the page model.
    fn space_of(&self, target: CapSlot) -> Option<ObjId> {
        if target == SLOT_SELF { None } else { self.model.slots.get(&target).map(|h| h.obj) }
    }
}

/// One batch: operations, then the invariants.
fn batch(f: &mut Fuzz) -> Result<(), Fail> {
    let (baseline, _) = f.used()?;
    for _ in 0..f.cfg.ops {
        op(f)?;
        f.used()?;
    }
    sweep(f)?;
    let ended = clean_up(f);
    ended?;
    let (after, _) = f.used()?;
    if after < baseline && f.cfg.known("5") {
        // Open finding 5: a charge that failed was refunded anyway.
        f.known_5 += 1;
        println!("fuzz: batch {}: known finding 5: {baseline} bytes charged before, {after} after", f.batch);
        return alive(f);
    }
    want(after == baseline, || format!("kernel memory charged: {baseline} bytes before the batch, {after} after deleting everything it made"))?;
    alive(f)
}

/// The kernel still serves system calls and IPC: the console answers.
fn alive(f: &mut Fuzz) -> Result<(), Fail> {
    sys::clock_ns().map_err(|e| format!("clock: {e}"))?;
    let Some(console) = f.console else { return Err("no console endpoint granted".into()) };
    let c = libipc::interfaces::status::Client::new(libipc::kernel::KernelTransport::new(libipc::cap::Cap::from_slot(console)));
    let v = c.echo(0xf022).map_err(|e| format!("the console does not answer: {e}"))?;
    want(v == 0xf022, || format!("console echoed {v:#x}"))
}

/// Every pool slot reads as the model says.
fn sweep(f: &mut Fuzz) -> Result<(), Fail> {
    for slot in POOL {
        let got = sys::cap_identify(slot);
        match (f.model.slots.get(&slot), got) {
            (None, Err(Error::EmptySlot)) => {}
            (Some(h), Ok(c)) if c.object_type == h.ty && c.rights == h.rights && c.badge == h.badge => {}
            (h, got) => return Err(format!("slot {slot}: the model holds {h:?}, the kernel says {got:?}")),
        }
    }
    Ok(())
}

/// Unmaps the window and deletes every pool slot (threads first, then
/// processes and guests, then the rest). Checks what it can.
fn clean_up(f: &mut Fuzz) -> Result<(), Fail> {
    let mut result = Ok(());
    let expect = f.model.mapped_in(None, WINDOW, WINDOW_PAGES);
    // SAFETY: the window is the fuzzer's alone; nothing refers into it
    // (the generator's accesses are volatile and finished).
    let r = unsafe { sys::unmap(SLOT_SELF, WINDOW, WINDOW_PAGES) };
    let got = r.err();
    if (expect == 0) != (got == Some(Error::NotMapped)) {
        result = Err(format!("unmapping the window ({expect} pages mapped in the model) gave {got:?}"));
    }
    let order = |t: Option<&ktest_fuzz::Held>| match t.map(|h| h.ty) {
        Some(ObjectType::Thread) => 0,
        Some(ObjectType::Process | ObjectType::Guest) => 1,
        _ => 2,
    };
    let mut slots: Vec<CapSlot> = POOL.collect();
    slots.sort_by_key(|s| order(f.model.slots.get(s)));
    for slot in slots {
        let held = f.model.slots.contains_key(&slot);
        let r = sys::cap_delete(slot);
        if held && r.is_err() && result.is_ok() {
            result = Err(format!("deleting held slot {slot}: {r:?}"));
        }
        if !held && r != Err(Error::EmptySlot) && result.is_ok() {
            result = Err(format!("slot {slot} was empty in the model, deleting it gave {r:?}"));
        }
    }
    f.model.clear();
    f.shared.clear();
    result
}

/// Weighted operation kinds.
type Op = fn(&mut Fuzz) -> Result<(), Fail>;
const OPS: &[(u64, Op)] = &[
    (8, create_frame),
    (4, create_small),
    (3, create_process),
    (3, create_thread),
    (1, create_guest),
    (8, copy),
    (6, delete),
    (4, revoke),
    (3, identify),
    (7, map_self),
    (5, map_other),
    (4, unmap_self),
    (3, unmap_other),
    (3, grant),
    (3, child_program),
    (4, thread_control),
    (3, notification_ops),
    (3, ipc_with_caps),
    (2, endpoint_poll),
    (2, process_queries),
    (4, wrong_type),
    (6, garbage),
    (1, squeeze),
    (2, wide_slot),
];

fn op(f: &mut Fuzz) -> Result<(), Fail> {
    let total: u64 = OPS.iter().map(|o| o.0).sum();
    let mut x = f.rng.below(total);
    for (w, op) in OPS {
        if x < *w {
            return op(f);
        }
        x -= w;
    }
    Ok(())
}

fn create_frame(f: &mut Fuzz) -> Result<(), Fail> {
    let dst = f.free_slot();
    let pages = match f.rng.below(10) {
        0 => 0,
        1 => f.rng.edgy(),
        _ => 1 + f.rng.below(8),
    };
    let (before, _) = f.used()?;
    let r = f.call("create frame", Sys::Create, [ObjectType::Frame as u64, s(dst), pages, 0, 0, 0])?;
    match r {
        Ok(_) => {
            want(pages > 0, || "a frame of 0 pages was created".into())?;
            let (after, _) = f.used()?;
            // Exactly its pages, unless a child process (whose budget came
            // from this one) may have ended on another CPU meanwhile.
            let quiet = f.model.of_type(ObjectType::Process).is_empty();
            let charged = after as i64 - before as i64;
            want(!quiet || charged == (pages * PAGE_SIZE) as i64, || format!("a frame of {pages} pages charged {charged} bytes"))?;
            f.model.created(dst, ObjectType::Frame, Rights::READ | Rights::WRITE | Rights::EXECUTE, pages, None);
        }
        Err(Error::SlotInUse) => want(f.model.slots.contains_key(&dst), || format!("slot {dst} is empty in the model, SlotInUse"))?,
        Err(Error::InvalidArgument | Error::OutOfBudget | Error::OutOfMemory) if pages == 0 || pages > 16 => {}
        Err(Error::OutOfBudget) => {}
        Err(e) => return Err(format!("create frame of {pages} pages in slot {dst}: {e}")),
    }
    Ok(())
}

/// Notifications and endpoints: each of a type charges the same.
fn create_small(f: &mut Fuzz) -> Result<(), Fail> {
    let dst = f.free_slot();
    let (ty, rights) = if f.rng.chance(1, 2) {
        (ObjectType::Notification, Rights::READ | Rights::WRITE)
    } else {
        (ObjectType::Endpoint, Rights::SEND | Rights::RECV | Rights::GRANT)
    };
    let arg = f.rng.edgy();
    let r = f.call("create", Sys::Create, [ty as u64, s(dst), arg, 0, 0, 0])?;
    match r {
        Ok(_) => {
            f.model.created(dst, ty, rights, 0, None);
        }
        Err(Error::SlotInUse) => want(f.model.slots.contains_key(&dst), || format!("slot {dst} empty in the model: SlotInUse"))?,
        Err(Error::OutOfBudget) => {}
        Err(e) => return Err(format!("create {ty:?}: {e}")),
    }
    Ok(())
}

fn create_process(f: &mut Fuzz) -> Result<(), Fail> {
    let dst = f.free_slot();
    let budget = match f.rng.below(8) {
        0 => f.rng.edgy(),
        1 => f.rng.below(64 * 1024),
        _ => 64 * 1024 + f.rng.below(192 * 1024),
    };
    let slots = match f.rng.below(6) {
        0 => f.rng.edgy(),
        1 => 0,
        _ => 1 + f.rng.below(300),
    };
    let r = f.call("create process", Sys::Create, [ObjectType::Process as u64, s(dst), budget, slots, 0, 0])?;
    let valid = budget >= 64 * 1024 && slots <= 1024;
    match r {
        Ok(_) => {
            want(valid, || format!("a process with budget {budget} and {slots} slots was created"))?;
            f.model.created(dst, ObjectType::Process, ALL_RIGHTS, 0, None);
        }
        Err(Error::SlotInUse) if f.model.slots.contains_key(&dst) => {}
        Err(Error::InvalidArgument) if !valid => {}
        Err(Error::OutOfBudget | Error::OutOfMemory) => {}
        Err(e) => return Err(format!("create process (budget {budget}, {slots} slots): {e}")),
    }
    Ok(())
}

fn create_thread(f: &mut Fuzz) -> Result<(), Fail> {
    let dst = f.free_slot();
    let (proc_slot, process) = match f.rng.below(4) {
        0 => (SLOT_SELF, None),
        1 => (f.held().unwrap_or(SLOT_SELF), Some(u32::MAX)),
        _ => match f.held_of(ObjectType::Process) {
            Some(p) => (p, f.space_of(p)),
            None => (SLOT_SELF, None),
        },
    };
    let r = f.call("create thread", Sys::Create, [ObjectType::Thread as u64, s(dst), s(proc_slot), 0, 0, 0])?;
    match r {
        Ok(_) => {
            let h = if proc_slot == SLOT_SELF { None } else { f.model.slots.get(&proc_slot).cloned() };
            let ok_target = proc_slot == SLOT_SELF || h.as_ref().is_some_and(|h| h.ty == ObjectType::Process && h.rights.contains(Rights::MANAGE));
            want(ok_target, || format!("a thread was created in slot {proc_slot}, holding {h:?}"))?;
            let process = if process == Some(u32::MAX) { h.map(|h| h.obj) } else { process };
            f.model.created(dst, ObjectType::Thread, ALL_RIGHTS, 0, process);
        }
        Err(Error::SlotInUse) if f.model.slots.contains_key(&dst) => {}
        Err(Error::WrongType | Error::NoRights | Error::OutOfBudget | Error::Gone | Error::OutOfMemory) => {}
        Err(e) => return Err(format!("create thread in slot {proc_slot}: {e}")),
    }
    Ok(())
}

fn create_guest(f: &mut Fuzz) -> Result<(), Fail> {
    let dst = f.free_slot();
    let r = f.call("create guest", Sys::Create, [ObjectType::Guest as u64, s(dst), 0, 0, 0, 0])?;
    match r {
        Ok(_) => {
            f.model.created(dst, ObjectType::Guest, ALL_RIGHTS, 0, None);
        }
        Err(Error::SlotInUse) if f.model.slots.contains_key(&dst) => {}
        // No virtualization, or no ASID left.
        Err(Error::OutOfBudget | Error::OutOfMemory | Error::InvalidArgument | Error::BadState) => {}
        Err(e) => return Err(format!("create guest: {e}")),
    }
    Ok(())
}

/// Copies only drop rights: a copy never has a right its source lacks.
fn copy(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(src) = f.held() else { return Ok(()) };
    let dst = f.free_slot();
    let h = f.model.slots[&src].clone();
    let rights = if f.rng.chance(1, 4) { Rights(f.rng.below(256) as u32) } else { f.rng.rights_within(h.rights) };
    let badge = if f.rng.chance(1, 5) { f.rng.edgy() } else { 0 };
    let r = f.call("copy", Sys::CapCopy, [s(src), s(dst), u64::from(rights.0), badge, 0, 0])?;
    let widening = !h.rights.contains(rights) || !rights.is_valid();
    match r {
        Ok(_) => {
            want(!widening, || format!("copy of {h:?} with rights {rights:?} succeeded: rights widened"))?;
            want(badge == 0 || matches!(h.ty, ObjectType::Endpoint | ObjectType::Notification), || format!("badge {badge:#x} minted on {:?}", h.ty))?;
            let got = sys::cap_identify(dst).map_err(|e| format!("identify the copy: {e}"))?;
            want(h.rights.contains(got.rights) && got.object_type == h.ty, || format!("copy of {h:?} with {rights:?} reads {got:?}"))?;
            f.model.copied(src, dst, got.rights, got.badge);
            // The model learns the badge the kernel gives a re-badged copy.
            if let Some(c) = f.model.slots.get_mut(&dst) {
                c.badge = got.badge;
            }
        }
        Err(Error::SlotInUse) if f.model.slots.contains_key(&dst) => {}
        Err(Error::NoRights | Error::InvalidArgument) if widening || badge != 0 => {}
        Err(Error::OutOfBudget) => {}
        Err(e) => return Err(format!("copy of {h:?} with {rights:?} badge {badge:#x}: {e}")),
    }
    Ok(())
}

fn delete(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(slot) = f.held() else { return Ok(()) };
    let r = f.call("delete", Sys::CapDelete, [s(slot), 0, 0, 0, 0, 0])?;
    want(r.is_ok(), || format!("deleting held slot {slot}: {r:?}"))?;
    let id = sys::cap_identify(slot);
    want(id == Err(Error::EmptySlot), || format!("slot {slot} after delete: {id:?}"))?;
    f.model.deleted(slot);
    Ok(())
}

/// Revoking removes every derived capability (each reads EmptySlot) and
/// every mapping made through one (the address can be mapped again).
fn revoke(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(slot) = f.held() else { return Ok(()) };
    let r = f.call("revoke", Sys::CapRevoke, [s(slot), 0, 0, 0, 0, 0])?;
    let n = r.map_err(|e| format!("revoking held slot {slot}: {e}"))?[0];
    let (gone, pages) = f.model.revoked(slot);
    want(n >= gone.len() as u64, || format!("revoke of slot {slot} removed {n} capabilities, the model knows {} derived: {gone:?}", gone.len()))?;
    for g in &gone {
        let id = sys::cap_identify(*g);
        want(id == Err(Error::EmptySlot), || format!("slot {g}, derived from revoked slot {slot}, survived: {id:?}"))?;
    }
    want(sys::cap_identify(slot).is_ok(), || format!("the revoked slot {slot} itself went"))?;
    for (space, va) in pages {
        // Whose space: ours, or a process or guest still held.
        let target = match space {
            None => SLOT_SELF,
            Some(obj) => match f.model.slots.iter().find(|(_, h)| h.obj == obj && h.rights.contains(Rights::MANAGE)) {
                Some((&t, _)) => t,
                None => continue,
            },
        };
        if target != SLOT_SELF && f.model.slots[&target].ty == ObjectType::Process && !f.alive(target) {
            continue;
        }
        let r = sys::map(target, PROBE, va, Rights::READ);
        match r {
            Ok(()) => {
                // SAFETY: the probe page was just mapped at `va`, in the
                // window (ours) or in another space; nothing refers to it.
                let _ = unsafe { sys::unmap(target, va, 1) };
            }
            Err(Error::AlreadyMapped) => {
                if f.cfg.known("12") {
                    f.known_12 += 1;
                    println!("fuzz: batch {}: known finding 12: page {va:#x} survived the revoke of slot {slot}'s copies", f.batch);
                    // It stays mapped: keep it in the model, with no
                    // capability to revoke it through.
                    let frame = u32::MAX;
                    f.model.pages.insert((space, va), ktest_fuzz::Mapped { via: None, frame });
                } else {
                    return Err(format!(
                        "page {va:#x} (space {space:?}) was mapped through a capability derived from slot {slot}; it survived the revoke (finding 12)"
                    ));
                }
            }
            Err(e) => return Err(format!("probing {va:#x} after the revoke: {e}")),
        }
    }
    Ok(())
}

fn identify(f: &mut Fuzz) -> Result<(), Fail> {
    let slot = if f.rng.chance(1, 2) { f.held().unwrap_or(POOL.start) } else { f.free_slot() };
    let r = sys::cap_identify(slot);
    f.calls += 1;
    match (f.model.slots.get(&slot), r) {
        (None, Err(Error::EmptySlot)) => Ok(()),
        (Some(h), Ok(c)) if c.object_type == h.ty && c.rights == h.rights && c.badge == h.badge => Ok(()),
        (h, r) => Err(format!("identify slot {slot}: the model holds {h:?}, the kernel says {r:?}")),
    }
}

/// Random rights for a mapping: mostly valid ones.
fn map_rights(f: &mut Fuzz) -> Rights {
    if f.rng.chance(1, 6) { Rights(f.rng.below(512) as u32) } else { f.rng.rights_within(Rights::READ | Rights::WRITE | Rights::EXECUTE) }
}

/// What mapping `frame` with `rights` must give before the address is
/// looked at (`None`: the frame slot is not a frame the model knows).
fn map_refusal(f: &Fuzz, frame: CapSlot, rights: Rights) -> Option<Result<u64, Error>> {
    let h = f.model.slots.get(&frame)?;
    if h.ty != ObjectType::Frame {
        return Some(Err(Error::WrongType));
    }
    if !rights.is_valid() || !h.rights.contains(rights) || !rights.contains(Rights::READ) {
        return Some(Err(Error::NoRights));
    }
    Some(Ok(f.model.objects[&h.obj].pages))
}

fn map_self(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(frame) = f.held() else { return Ok(()) };
    let rights = map_rights(f);
    let expect = map_refusal(f, frame, rights).expect("held");
    let pages = *expect.as_ref().unwrap_or(&1);
    let wild = f.rng.chance(1, 8);
    let va = if wild {
        match f.rng.below(4) {
            0 => 0xffff_8000_0000_0000 + f.rng.below(1 << 30) * PAGE_SIZE,
            1 => abi::USER_MAX - f.rng.below(pages) * PAGE_SIZE, // runs past the end
            2 => WINDOW + 1 + f.rng.below(4095),
            _ => f.rng.below(abi::USER_MIN),
        }
    } else {
        WINDOW + f.rng.below(WINDOW_PAGES.saturating_sub(pages).max(1)) * PAGE_SIZE
    };
    if !wild && va + pages * PAGE_SIZE > WINDOW + WINDOW_PAGES * PAGE_SIZE {
        return Ok(()); // a frame larger than the window's rest
    }
    let r = f.call("map self", Sys::Map, [s(SLOT_SELF), s(frame), va, u64::from(rights.0), 0, 0])?;
    let expected = match expect {
        Err(e) => Err(e),
        Ok(_) if wild => Err(Error::InvalidArgument),
        Ok(_) if rights.contains(Rights::WRITE) && rights.contains(Rights::EXECUTE) => Err(Error::InvalidArgument),
        Ok(_) if f.model.mapped_in(None, va, pages) > 0 => Err(Error::AlreadyMapped),
        Ok(_) => Ok(()),
    };
    let got = r.map(drop);
    let fine = got == expected || (expected.is_ok() && matches!(got, Err(Error::OutOfBudget | Error::OutOfMemory)));
    want(fine, || format!("map slot {frame} at {va:#x} with {rights:?}: got {got:?}, the model expects {expected:?}"))?;
    if got.is_ok() {
        let obj = f.model.slots[&frame].obj;
        f.model.mapped(None, va, frame, obj, pages);
        // Touch it: the mapping is there, with the rights asked for.
        let p = (va + f.rng.below(pages * PAGE_SIZE / 8) * 8) as *mut u64;
        if rights.contains(Rights::WRITE) {
            let v = f.rng.next_u64();
            // SAFETY: `p` is in a page of the window just mapped writable
            // (in the model and by the kernel); nothing else uses it.
            let back = unsafe {
                p.write_volatile(v);
                p.read_volatile()
            };
            want(back == v || f.shared.contains(&obj), || format!("wrote {v:#x} at {p:?}, read {back:#x}"))?;
        } else {
            // SAFETY: as above, mapped readable.
            let _ = unsafe { p.read_volatile() };
        }
    }
    Ok(())
}

/// A process or guest of ours to map into or unmap from.
fn other_space(f: &mut Fuzz) -> Option<(CapSlot, ObjectType)> {
    let mut v = f.model.of_type(ObjectType::Process);
    v.extend(f.model.of_type(ObjectType::Guest));
    let t = *f.rng.pick(&v)?;
    Some((t, f.model.slots[&t].ty))
}

fn other_address(f: &mut Fuzz, ty: ObjectType) -> u64 {
    match (ty, f.rng.below(8)) {
        (_, 0) => f.rng.edgy(),
        (ObjectType::Guest, 1) => (1 + f.rng.below(8)) << 39, // a new 512 GiB region each (finding 5)
        (ObjectType::Guest, _) => f.rng.below(1 << 20) * PAGE_SIZE,
        _ => 0x40_0000 + f.rng.below(0x400) * PAGE_SIZE,
    }
}

fn map_other(f: &mut Fuzz) -> Result<(), Fail> {
    let Some((target, ty)) = other_space(f) else { return Ok(()) };
    let Some(frame) = f.held_of(ObjectType::Frame) else { return Ok(()) };
    let rights = map_rights(f);
    let va = other_address(f, ty);
    let r = f.call("map other", Sys::Map, [s(target), s(frame), va, u64::from(rights.0), 0, 0])?;
    let expect = map_refusal(f, frame, rights).expect("held");
    let pages = *expect.as_ref().unwrap_or(&1);
    let space = f.space_of(target);
    let managed = f.model.slots[&target].rights.contains(Rights::MANAGE);
    match r {
        Ok(_) => {
            want(managed && expect.is_ok(), || format!("map slot {frame} with {rights:?} into slot {target} without the rights succeeded"))?;
            let overlapping = f.model.mapped_in(space, va, pages);
            want(overlapping == 0, || format!("map at {va:#x} in slot {target} succeeded over {overlapping} mapped pages"))?;
            let obj = f.model.slots[&frame].obj;
            f.model.mapped(space, va, frame, obj, pages);
            f.shared.insert(obj);
        }
        Err(Error::AlreadyMapped) => {
            // Mapped here, or (a process) by the child itself.
            let known = f.model.mapped_in(space, va, pages) > 0;
            want(known || ty == ObjectType::Process, || format!("map at {va:#x} in slot {target}: AlreadyMapped, nothing mapped there in the model"))?;
        }
        Err(_) => {}
    }
    Ok(())
}

fn unmap_self(f: &mut Fuzz) -> Result<(), Fail> {
    let first = f.rng.below(WINDOW_PAGES);
    let pages = (1 + f.rng.below(32)).min(WINDOW_PAGES - first);
    let va = WINDOW + first * PAGE_SIZE;
    let r = f.call("unmap self", Sys::Unmap, [s(SLOT_SELF), va, pages, 0, 0, 0])?;
    let expected = f.model.mapped_in(None, va, pages);
    match r {
        Ok(out) => {
            f.model.unmapped(None, va, pages);
            want(out[0] == expected && expected > 0, || format!("unmap {pages} pages at {va:#x}: {} unmapped, the model had {expected}", out[0]))
        }
        Err(Error::NotMapped) => want(expected == 0, || format!("unmap {pages} pages at {va:#x}: NotMapped, the model had {expected}")),
        // Cutting a mapping in two takes a kernel range entry, charged
        // before anything is unmapped (finding 2): with the budget spent,
        // the unmap is refused and everything stays mapped.
        Err(Error::OutOfBudget) => want(expected > 0, || format!("unmap {pages} pages at {va:#x}: OutOfBudget with nothing mapped there in the model")),
        Err(e) => Err(format!("unmap {pages} pages at {va:#x}: {e}")),
    }
}

fn unmap_other(f: &mut Fuzz) -> Result<(), Fail> {
    let Some((target, ty)) = other_space(f) else { return Ok(()) };
    let va = other_address(f, ty);
    let pages = if f.rng.chance(1, 8) { f.rng.edgy() } else { 1 + f.rng.below(64) };
    let r = f.call("unmap other", Sys::Unmap, [s(target), va, pages, 0, 0, 0])?;
    let space = f.space_of(target);
    let valid = va.is_multiple_of(PAGE_SIZE) && pages <= 1 << 20;
    let expected = if valid { f.model.unmapped(space, va, pages) } else { 0 };
    match r {
        Ok(out) => want(valid && out[0] >= expected, || format!("unmap {pages} pages at {va:#x} in slot {target}: {} unmapped, the model had {expected}", out[0])),
        Err(Error::InvalidArgument) if !valid => Ok(()),
        Err(Error::NotMapped) => want(expected == 0 || !f.alive(target), || format!("unmap at {va:#x} in slot {target}: NotMapped, the model had {expected}")),
        Err(_) => Ok(()),
    }
}

/// Gives a child process a copy of a frame, notification or endpoint.
fn grant(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(target) = f.held_of(ObjectType::Process) else { return Ok(()) };
    let candidates: Vec<CapSlot> =
        f.model.slots.iter().filter(|(_, h)| matches!(h.ty, ObjectType::Frame | ObjectType::Notification | ObjectType::Endpoint)).map(|(&s, _)| s).collect();
    let Some(&src) = f.rng.pick(&candidates) else { return Ok(()) };
    let h = f.model.slots[&src].clone();
    let rights = f.rng.rights_within(h.rights);
    // Mostly the few slots the children's system calls name most.
    let dst = if f.rng.chance(1, 2) { f.rng.below(4) } else { f.rng.below(64) };
    let r = f.call("grant", Sys::CapGrant, [s(target), s(src), dst, u64::from(rights.0), 0, 0])?;
    if r.is_ok() {
        f.shared.insert(h.obj);
    }
    Ok(())
}

/// x86-64 machine code for a child: a loop of system calls with arguments
/// from the generator (32-bit immediates), or a simple ending.
fn child_code(f: &mut Fuzz) -> Vec<u8> {
    let mut c = Vec::new();
    match f.rng.below(8) {
        0 => c.extend_from_slice(&[0xb8, 22, 0, 0, 0, 0xbf, 7, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xfe]), // exit(7)
        1 => c.extend_from_slice(&[0xf4]),                                                        // hlt: #GP
        2 => c.extend_from_slice(&[0xb8, 1, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7]),                   // yield loop
        _ => {
            for _ in 0..1 + f.rng.below(24) {
                // IPC and notifications on the slots grants favour, often
                // (threads blocked in queues when they are throttled,
                // suspended or deleted), else any call.
                let n = if f.rng.chance(1, 2) { *f.rng.pick(&[2u32, 3, 4, 5, 6, 7, 8]).expect("non-empty") } else { f.rng.below(40) as u32 };
                let arg = |f: &mut Fuzz| -> u32 {
                    match f.rng.below(4) {
                        0 => f.rng.below(4) as u32,
                        1 => 0x40_0000 + f.rng.below(0x40_0000) as u32,
                        _ => f.rng.next_u64() as u32,
                    }
                };
                c.push(0xb8);
                c.extend_from_slice(&n.to_le_bytes()); // mov eax, n
                for op in [0xbf, 0xbe, 0xba] {
                    c.push(op); // mov edi/esi/edx, imm32
                    c.extend_from_slice(&arg(f).to_le_bytes());
                }
                c.extend_from_slice(&[0x49, 0xc7, 0xc2]); // mov r10, imm32 (small: timeouts stay short)
                c.extend_from_slice(&(f.rng.below(1_000_000) as u32).to_le_bytes());
                c.extend_from_slice(&[0x0f, 0x05]); // syscall
            }
            // jmp back to the start
            let back = -(c.len() as i32 + 5);
            c.push(0xe9);
            c.extend_from_slice(&back.to_le_bytes());
        }
    }
    c
}

/// A child process runs code: a code frame (written through the window),
/// a stack, a thread configured and resumed.
fn child_program(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(target) = f.held_of(ObjectType::Process) else { return Ok(()) };
    if !f.model.slots[&target].rights.contains(Rights::MANAGE) {
        return Ok(());
    }
    let code = child_code(f);
    let space = f.space_of(target);
    // The code frame, written through a free page of the window.
    let Some(first) = (0..WINDOW_PAGES).find(|p| f.model.mapped_in(None, WINDOW + p * PAGE_SIZE, 1) == 0) else { return Ok(()) };
    let wva = WINDOW + first * PAGE_SIZE;
    let cf = f.free_slot();
    if f.call("child code frame", Sys::Create, [ObjectType::Frame as u64, s(cf), 1, 0, 0, 0])?.is_err() {
        return Ok(());
    }
    let cobj = f.model.created(cf, ObjectType::Frame, Rights::READ | Rights::WRITE | Rights::EXECUTE, 1, None);
    match f.call("map code here", Sys::Map, [s(SLOT_SELF), s(cf), wva, u64::from((Rights::READ | Rights::WRITE).0), 0, 0])? {
        Ok(_) => {}
        // The page tables it needs may not fit in what is left.
        Err(Error::OutOfBudget | Error::OutOfMemory) => return Ok(()),
        Err(e) => return Err(format!("mapping a code frame at free window page {wva:#x}: {e}")),
    }
    f.model.mapped(None, wva, cf, cobj, 1);
    f.shared.insert(cobj);
    for (i, b) in code.iter().enumerate() {
        // SAFETY: the code frame was just mapped writable at `wva`, a page
        // of the window no one else uses; `code` is under a page.
        unsafe { ((wva + i as u64) as *mut u8).write_volatile(*b) };
    }
    let entry = 0x40_0000 + f.rng.below(0x200) * PAGE_SIZE;
    let r = f.call("map code there", Sys::Map, [s(target), s(cf), entry, u64::from((Rights::READ | Rights::EXECUTE).0), 0, 0])?;
    if r.is_ok() {
        f.model.mapped(space, entry, cf, cobj, 1);
    }
    let sf = f.free_slot();
    let stack = 0x80_0000 + f.rng.below(0x200) * PAGE_SIZE;
    if f.call("child stack frame", Sys::Create, [ObjectType::Frame as u64, s(sf), 1, 0, 0, 0])?.is_ok() {
        let sobj = f.model.created(sf, ObjectType::Frame, Rights::READ | Rights::WRITE | Rights::EXECUTE, 1, None);
        f.shared.insert(sobj);
        if f.call("map stack there", Sys::Map, [s(target), s(sf), stack, u64::from((Rights::READ | Rights::WRITE).0), 0, 0])?.is_ok() {
            f.model.mapped(space, stack, sf, sobj, 1);
        }
    }
    let t = f.free_slot();
    if f.call("child thread", Sys::Create, [ObjectType::Thread as u64, s(t), s(target), 0, 0, 0])?.is_err() {
        return Ok(());
    }
    let tobj = space;
    f.model.created(t, ObjectType::Thread, ALL_RIGHTS, 0, tobj);
    let ipc = if f.rng.chance(1, 2) { stack } else { 0 };
    let (a0, a1) = (f.rng.next_u64(), f.rng.next_u64());
    let _ = f.call("configure child", Sys::ThreadConfigure, [s(t), entry, stack + PAGE_SIZE - 8, ipc, a0, a1])?;
    let prio = f.rng.below(MY_PRIORITY + 1);
    let cpu = if f.rng.chance(1, 2) { u64::MAX } else { f.rng.below(f.cpus) };
    let _ = f.call("child priority", Sys::ThreadSetPriority, [s(t), prio, cpu, 0, 0, 0])?;
    if f.rng.chance(1, 3) {
        // A CPU budget that throttles it often (finding 1's ground).
        let period = 100_000 + f.rng.below(2_000_000);
        let budget = 1 + f.rng.below(period);
        let _ = f.call("child budget", Sys::ThreadSetBudget, [s(t), budget, period, 0, 0, 0])?;
    }
    let _ = f.call("resume child", Sys::ThreadResume, [s(t), 0, 0, 0, 0, 0])?;
    Ok(())
}

fn thread_control(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(t) = f.held_of(ObjectType::Thread) else { return Ok(()) };
    let h = f.model.slots[&t].clone();
    let ours = f.model.objects[&h.obj].process.is_none();
    match f.rng.below(6) {
        0 => {
            let prio = f.rng.below(256);
            let cpu = if f.rng.chance(1, 3) { u64::MAX } else { f.rng.below(f.cpus + 2) };
            let r = f.call("priority", Sys::ThreadSetPriority, [s(t), prio, cpu, 0, 0, 0])?;
            want(r.is_err() || (prio <= MY_PRIORITY && (cpu == u64::MAX || cpu < f.cpus)), || {
                format!("priority {prio} on CPU {cpu} (of {}) accepted above the setter's {MY_PRIORITY}", f.cpus)
            })
        }
        1 if !ours => {
            let (b, p) = (f.rng.edgy(), f.rng.edgy());
            f.call("budget", Sys::ThreadSetBudget, [s(t), b, p, 0, 0, 0]).map(drop)
        }
        2 if !ours => f.call("suspend", Sys::ThreadSuspend, [s(t), 0, 0, 0, 0, 0]).map(drop),
        3 => {
            let r = f.call("resume", Sys::ThreadResume, [s(t), 0, 0, 0, 0, 0])?;
            // A thread of ours is never configured: it cannot run.
            want(!ours || r.is_err(), || format!("resuming unconfigured thread slot {t} succeeded"))
        }
        4 => {
            let n = f.held_of(ObjectType::Notification);
            if let Some(obj) = n.map(|n| f.model.slots[&n].obj) {
                f.shared.insert(obj); // a bound thread may take its bits
            }
            let n = n.map_or_else(|| f.empty_slot(), s);
            f.call("bind", Sys::ThreadBindNotification, [s(t), n, 0, 0, 0, 0]).map(drop)
        }
        5 if !ours => {
            let a: [u64; 6] = [s(t), f.rng.edgy(), f.rng.edgy(), f.rng.edgy(), f.rng.next_u64(), f.rng.next_u64()];
            f.call("configure", Sys::ThreadConfigure, a).map(drop)
        }
        _ => Ok(()),
    }
}

fn notification_ops(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(n) = f.held_of(ObjectType::Notification) else { return Ok(()) };
    let h = f.model.slots[&n].clone();
    let bits = f.rng.edgy() | 1;
    let sig = f.call("signal", Sys::Signal, [s(n), bits, 0, 0, 0, 0])?;
    want(sig.is_ok() == h.rights.contains(Rights::WRITE), || format!("signal through {h:?}: {sig:?}"))?;
    let poll = if f.rng.chance(1, 2) {
        f.call("poll", Sys::Poll, [s(n), 0, 0, 0, 0, 0])?
    } else {
        let timeout = f.rng.below(2);
        f.call("wait", Sys::Wait, [s(n), timeout, 0, 0, 0, 0])?
    };
    if !h.rights.contains(Rights::READ) {
        return want(poll == Err(Error::NoRights), || format!("poll through {h:?}: {poll:?}"));
    }
    // Bits signalled are there to take, unless someone else may take them.
    let private = !f.shared.contains(&h.obj);
    if sig.is_ok() && private {
        let got = poll.map_err(|e| format!("poll after a signal: {e}"))?[0];
        want(got & bits == bits, || format!("signalled {bits:#x}, took {got:#x}"))?;
    }
    Ok(())
}

/// Capabilities sent to the echo thread arrive as what they are, with no
/// more rights.
fn ipc_with_caps(f: &mut Fuzz) -> Result<(), Fail> {
    let k = f.rng.below(abi::MSG_MAX_CAPS as u64 + 1) as usize;
    let mut sent = Vec::new();
    for _ in 0..k {
        match f.held() {
            Some(x) if f.rng.chance(7, 8) => sent.push(x),
            _ => sent.push(f.free_slot()),
        }
    }
    let slots = sent.clone();
    sys::with_ipc_buffer(|b| {
        for (i, x) in slots.iter().enumerate() {
            b.send_caps[i] = u64::from(*x);
        }
    })
    .map_err(|e| format!("IPC buffer: {e}"))?;
    f.calls += 1;
    let r = sys::call(ECHO_EP, MsgInfo::new(LABEL_CAPS, 2, k as u8), [f.rng.next_u64(), f.rng.next_u64(), 0, 0]);
    f.note(format!("call echo with caps {sent:?} -> {:?}", r.as_ref().map(|m| m.words)));
    let all_held = sent.iter().all(|x| f.model.slots.contains_key(x));
    match r {
        Ok(m) if all_held => {
            let [got, types, rights, _] = m.words;
            want(got == k as u64, || format!("sent {k} capabilities, {got} arrived"))?;
            for (i, x) in sent.iter().enumerate() {
                let h = &f.model.slots[x];
                let (ty, r) = ((types >> (4 * i)) & 0xf, Rights(((rights >> (8 * i)) & 0xff) as u32));
                want(ty == h.ty as u64 && h.rights.contains(r), || format!("sent {h:?}, received type {ty} rights {r:?}"))?;
            }
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(_) if !all_held => Ok(()),
        Err(e) => Err(format!("call to the echo thread with {sent:?}: {e}")),
    }
}

fn endpoint_poll(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(ep) = f.held_of(ObjectType::Endpoint) else { return Ok(()) };
    let h = f.model.slots[&ep].clone();
    f.calls += 1;
    let r = sys::recv(ep, 0);
    f.note(format!("recv {ep} polling -> {:?}", r.as_ref().map(|m| m.info)));
    match r {
        Err(Error::Timeout | Error::WouldBlock) => Ok(()),
        Err(Error::NoRights) if !h.rights.contains(Rights::RECV) => Ok(()),
        Ok(_) if f.shared.contains(&h.obj) => Ok(()),
        r => Err(format!("polling receive on {h:?} (nobody sends): {r:?}")),
    }
}

fn process_queries(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(p) = f.held_of(ObjectType::Process) else { return Ok(()) };
    let _ = f.call("process info", Sys::ProcessInfo, [s(p), 0, 0, 0, 0, 0])?;
    let n = f.held_of(ObjectType::Notification).map_or_else(|| f.empty_slot(), s);
    let bits = f.rng.edgy();
    f.call("watch", Sys::ProcessWatch, [s(p), n, bits, 0, 0, 0]).map(drop)
}

/// A well-formed call on a capability of another type is refused.
fn wrong_type(f: &mut Fuzz) -> Result<(), Fail> {
    let Some(slot) = f.held() else { return Ok(()) };
    let h = f.model.slots[&slot].clone();
    let (n, needs): (Sys, &[ObjectType]) = *f.rng.pick(&[
        (Sys::Signal, &[ObjectType::Notification][..]),
        (Sys::Poll, &[ObjectType::Notification][..]),
        (Sys::FrameInfo, &[ObjectType::Frame][..]),
        (Sys::ProcessInfo, &[ObjectType::Process][..]),
        (Sys::ThreadSuspend, &[ObjectType::Thread][..]),
        (Sys::IrqAck, &[ObjectType::Irq][..]),
        (Sys::IoPortEnable, &[ObjectType::IoPorts][..]),
        (Sys::VcpuKick, &[ObjectType::Vcpu][..]),
        (Sys::IrqMsiInfo, &[ObjectType::Irq][..]),
        (Sys::CapGrant, &[ObjectType::Process][..]),
    ])
    .expect("non-empty");
    if needs.contains(&h.ty) {
        return Ok(());
    }
    // Arguments after the slot name nothing (empty slots).
    let (e1, e2) = (f.empty_slot(), f.empty_slot());
    let r = f.call("wrong type", n, [s(slot), e1, e2, 0, 0, 0])?;
    want(matches!(r, Err(Error::WrongType | Error::NoRights)), || format!("{n:?} on {h:?}: {r:?}"))
}

/// Any system call number with garbage arguments, the slot ones empty.
fn garbage(f: &mut Fuzz) -> Result<(), Fail> {
    let n = loop {
        let n = f.rng.below(64);
        if n != Sys::Exit as u64 && n != Sys::MachineExit as u64 {
            break n;
        }
    };
    let mut a = [f.empty_slot(), f.empty_slot(), f.rng.edgy(), f.rng.edgy(), f.rng.edgy(), f.rng.edgy()];
    if n == Sys::Create as u64 {
        a[0] = f.rng.below(16); // an object type, then the (empty) slots
        a[1] = 1024 + f.rng.below(1 << 20); // beyond the table: nothing is made
        a[2] = f.rng.edgy();
        a[3] = f.empty_slot();
    }
    let r = f.raw("garbage", n, a)?;
    let harmless = [Sys::Yield as u64, Sys::Clock as u64, Sys::BudgetInfo as u64];
    want(r.is_err() || harmless.contains(&n) || n >= 37, || format!("garbage syscall {n} {a:x?} succeeded"))
}

/// Takes the budget to its limit with 256 KiB frames, so that the rest of
/// the batch runs where every charge can fail (a map's page tables, a
/// guest's nested tables, a process, a thread). A refusal comes only when
/// less than a frame's worth is left.
fn squeeze(f: &mut Fuzz) -> Result<(), Fail> {
    const PAGES: u64 = 64;
    for _ in 0..64 {
        let dst = f.free_slot();
        if f.model.slots.contains_key(&dst) {
            return Ok(()); // the pool is full
        }
        let r = f.call("squeeze", Sys::Create, [ObjectType::Frame as u64, s(dst), PAGES, 0, 0, 0])?;
        match r {
            Ok(_) => {
                f.model.created(dst, ObjectType::Frame, Rights::READ | Rights::WRITE | Rights::EXECUTE, PAGES, None);
            }
            Err(Error::OutOfBudget) => {
                let (used, limit) = f.used()?;
                let quiet = f.model.of_type(ObjectType::Process).is_empty();
                return want(!quiet || limit - used < PAGES * PAGE_SIZE, || {
                    format!("a frame of {PAGES} pages refused with {} of {limit} bytes left", limit - used)
                });
            }
            Err(Error::OutOfMemory) => return Ok(()),
            Err(e) => return Err(format!("squeezing the budget: {e}")),
        }
    }
    Ok(())
}

/// A slot number beyond the table is refused as such (`InvalidSlot`) by
/// every call, IPC included. The low 32 bits name an empty slot, so a
/// kernel that truncates answers `EmptySlot` instead (and blocks on
/// nothing).
fn wide_slot(f: &mut Fuzz) -> Result<(), Fail> {
    let n = *f.rng.pick(&[Sys::Call, Sys::Send, Sys::Recv, Sys::Wait, Sys::Signal, Sys::Poll, Sys::CapIdentify, Sys::CapDelete]).expect("non-empty");
    let low = u64::from(EMPTY.start) + f.rng.below(u64::from(EMPTY.end - EMPTY.start));
    let slot = ((1 + f.rng.below(0xffff_ffff)) << 32) | low;
    let r = f.call("wide slot", n, [slot, 0, 0, 0, 0, 0])?;
    if r == Err(Error::InvalidSlot) {
        return Ok(());
    }
    if r == Err(Error::EmptySlot) && f.cfg.known("wide-slots") {
        if f.known_wide == 0 {
            println!("fuzz: batch {}: known wide-slots: {n:?} on slot {slot:#x} gave EmptySlot (reported once)", f.batch);
        }
        f.known_wide += 1;
        return Ok(());
    }
    Err(format!("{n:?} on slot {slot:#x} (beyond the table; {low} modulo 2^32): {r:?}, not InvalidSlot"))
}
