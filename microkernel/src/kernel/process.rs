//! Processes and threads: creation charged to budgets, address spaces built
//! with kcore's page tables, object reference counts, the end of a process
//! (exit or fault) returning everything it held, and starting init from the
//! boot archive.

use super::mem::{self, Tables, PAGE};
use super::{cost, Endpoint, Frame, Kernel, Mapping, Notification, Obj, Process, ProcessState, Thread, ThreadState};
use crate::arch::{self, gdt, percpu, trap::TrapFrame};
use abi::{CapSlot, Error, Rights};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use kcore::budget::Budget;
use kcore::cap::{NodeId, Removed, NODE_BYTES, SLOT_BYTES};
use kcore::pagetable::{self, Flags, X86_64};
use kcore::slab::Id;

/// Capability slots of processes made by `Create(Process)`.
pub const CHILD_SLOTS: u32 = 256;

const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_RESERVED: u64 = 1 << 1;

impl Kernel {
    // ---- references ---------------------------------------------------------

    /// A new capability or mapping refers to `obj`.
    pub fn obj_ref(&mut self, obj: Obj) {
        match obj {
            Obj::Frame(id) => {
                if let Some(f) = self.frames.get_mut(id) {
                    f.refs += 1;
                }
            }
            Obj::Endpoint(id) => {
                if let Some(e) = self.endpoints.get_mut(id) {
                    e.refs += 1;
                }
            }
            Obj::Thread(id) => {
                if let Some(t) = self.thread_mut(id) {
                    t.refs += 1;
                }
            }
            Obj::Notification(id) => {
                if let Some(n) = self.notifications.get_mut(id) {
                    n.refs += 1;
                }
            }
            Obj::Process(id) => {
                if let Some(p) = self.processes.get_mut(id) {
                    p.refs += 1;
                }
            }
            Obj::Guest(id) => {
                if let Some(g) = self.guests.get_mut(id) {
                    g.refs += 1;
                }
            }
            Obj::Vcpu(id) => {
                if let Some(v) = self.vcpus.get_mut(id) {
                    v.refs += 1;
                }
            }
            Obj::Msi(vector) => {
                if let Some(r) = msi_index(vector).and_then(|i| self.msi_refs.get_mut(i)) {
                    *r += 1;
                }
            }
            _ => {}
        }
    }

    /// A capability or mapping to `obj` went away; frees it with the last one.
    pub fn obj_unref(&mut self, obj: Obj) {
        match obj {
            Obj::Msi(vector) => {
                let Some(i) = msi_index(vector) else { return };
                let Some(r) = self.msi_refs.get_mut(i) else { return };
                *r = r.saturating_sub(1);
                if *r == 0 {
                    // Free for the next allocation; one that still fires
                    // finds no handler (msi_fired).
                    self.msis[i] = None;
                }
            }
            Obj::Frame(id) => {
                let Some(f) = self.frames.get_mut(id) else { return };
                f.refs = f.refs.saturating_sub(1);
                if f.refs == 0 {
                    let f = self.frames.remove(id).expect("frame exists");
                    if !f.fixed {
                        mem::free_frames(f.phys, f.pages as usize);
                    }
                    self.refund(f.charged_to, f.charged);
                }
            }
            Obj::Endpoint(id) => {
                let Some(e) = self.endpoints.get_mut(id) else { return };
                e.refs = e.refs.saturating_sub(1);
                if e.refs == 0 {
                    let mut e = self.endpoints.remove(id).expect("endpoint exists");
                    // Whoever still waits on it learns it is gone; each
                    // receiver is unlinked before it is woken.
                    for t in e.senders {
                        self.fail_blocked(t, Error::Gone);
                    }
                    while let Some(t) = e.receivers.pop_front(&mut self.threads) {
                        self.fail_blocked(t, Error::Gone);
                    }
                    self.refund(e.charged_to, cost::ENDPOINT);
                }
            }
            Obj::Notification(id) => {
                let Some(n) = self.notifications.get_mut(id) else { return };
                n.refs = n.refs.saturating_sub(1);
                if n.refs == 0 {
                    let n = self.notifications.remove(id).expect("notification exists");
                    for t in n.waiters {
                        self.fail_blocked(t, Error::Gone);
                    }
                    if let Some(b) = n.bound
                        && let Some(t) = self.thread_mut(b)
                        && t.bound_notification == Some(id)
                    {
                        t.bound_notification = None;
                    }
                    for line in self.irqs.iter_mut() {
                        if line.notification == Some(id) {
                            line.notification = None;
                        }
                    }
                    self.refund(n.charged_to, cost::NOTIFICATION);
                }
            }
            Obj::Process(id) => {
                let Some(p) = self.processes.get_mut(id) else { return };
                p.refs = p.refs.saturating_sub(1);
                if p.refs == 0 {
                    // Nobody can reach it any more: end it. Ending it drops
                    // its capabilities, which may end more processes (a
                    // chain of processes each holding the next): they go
                    // on a work list, so the kernel stack stays shallow
                    // however long the chain (security issue finding 4).
                    self.unreachable.push(id);
                    if !self.tearing_down {
                        self.tearing_down = true;
                        while let Some(pid) = self.unreachable.pop() {
                            if self.processes.get(pid).is_some_and(|p| p.refs == 0 && p.state == ProcessState::Running) {
                                self.end_process(pid, ProcessState::Exited(0));
                            }
                            self.reap(pid);
                        }
                        self.tearing_down = false;
                    }
                }
            }
            Obj::Thread(id) => {
                let Some(t) = self.thread_mut(id) else { return };
                t.refs = t.refs.saturating_sub(1);
                if t.refs == 0 {
                    // Nobody can reach it any more: stop it wherever it runs.
                    self.stop_remote(&[id]);
                    self.kill_thread(id);
                }
            }
            Obj::Guest(id) => {
                let Some(g) = self.guests.get_mut(id) else { return };
                g.refs = g.refs.saturating_sub(1);
                if g.refs == 0 {
                    self.destroy_guest(id);
                }
            }
            Obj::Vcpu(id) => {
                let Some(v) = self.vcpus.get_mut(id) else { return };
                v.refs = v.refs.saturating_sub(1);
                if v.refs == 0 {
                    self.destroy_vcpu(id);
                }
            }
            _ => {}
        }
    }

    /// Handles capabilities that `CapRevoke` took back: first undoes what
    /// was done through them (mappings made through a revoked frame
    /// capability go, in every process and guest), then as [`Kernel::removed`].
    pub fn revoked(&mut self, list: Vec<Removed<Obj>>) {
        let frames: Vec<NodeId> = list.iter().filter(|r| matches!(r.object, Obj::Frame(_))).map(|r| r.node).collect();
        if !frames.is_empty() {
            let pids: Vec<Id> = self.processes.ids().collect();
            for pid in pids {
                let Some(p) = self.processes.get(pid) else { continue };
                let ranges = p.mappings.ranges_where(|m| m.through.is_some_and(|n| frames.contains(&n)));
                for (va, pages) in ranges {
                    let _ = self.unmap_range(pid, va, pages);
                }
            }
            // Guests too: a frame mapped into a guest through a revoked
            // copy leaves the guest's nested tables.
            let gids: Vec<Id> = self.guests.ids().collect();
            for gid in gids {
                let Some(g) = self.guests.get(gid) else { continue };
                let ranges = g.mappings.ranges_where(|m| m.through.is_some_and(|n| frames.contains(&n)));
                for (gpa, pages) in ranges {
                    let _ = self.guest_unmap(gid, gpa, pages);
                }
            }
        }
        self.removed(list);
    }

    /// Handles capabilities that left the system (deleted, revoked, or
    /// gone with their process): what was done through one and is still
    /// standing passes to its parent (mappings), or ends (I/O ports it
    /// enabled, sends queued through it); then the object loses a
    /// reference.
    pub fn removed(&mut self, list: Vec<Removed<Obj>>) {
        for r in list {
            match r.object {
                Obj::Frame(_) => self.mappings_pass_to_parent(r.node, r.parent),
                Obj::IoPorts { first, count } => self.io_ports_withdrawn(r.space, first, count),
                Obj::Endpoint(ep) => self.sends_through_fail(ep, r.node),
                _ => {}
            }
            self.obj_unref(r.object);
        }
    }

    /// Mappings made through a deleted frame capability (in processes and
    /// guests) now hang on the capability it came from, so revoking that still reaches them.
    fn mappings_pass_to_parent(&mut self, node: NodeId, parent: Option<NodeId>) {
        let pids: Vec<Id> = self.processes.ids().collect();
        for pid in pids {
            let Some(p) = self.processes.get_mut(pid) else { continue };
            p.mappings.update_values(|m| {
                if m.through == Some(node) {
                    m.through = parent;
                }
            });
        }
        let gids: Vec<Id> = self.guests.ids().collect();
        for gid in gids {
            let Some(g) = self.guests.get_mut(gid) else { continue };
            g.mappings.update_values(|m| {
                if m.through == Some(node) {
                    m.through = parent;
                }
            });
        }
    }

    /// The process owning `space` lost a capability for `count` ports from
    /// `first`: those it holds no other capability for are denied again in
    /// its I/O bitmap, and in the TSS of every CPU that holds that bitmap
    /// now (one may be running the process in ring 3 this moment).
    fn io_ports_withdrawn(&mut self, space: kcore::cap::SpaceId, first: u16, count: u16) {
        let Some(pid) = self.processes.iter().find(|(_, p)| p.space == space && p.state == ProcessState::Running).map(|(id, _)| id)
        else {
            return;
        };
        let still: Vec<(u32, u32)> = self
            .caps
            .caps_in(space)
            .filter_map(|(_, c)| match c.object {
                Obj::IoPorts { first, count } => Some((u32::from(first), u32::from(first) + u32::from(count))),
                _ => None,
            })
            .collect();
        let Some(bm) = self.processes.get_mut(pid).and_then(|p| p.io_bitmap.as_deref_mut()) else { return };
        for port in u32::from(first)..u32::from(first) + u32::from(count) {
            if !still.iter().any(|&(s, e)| (s..e).contains(&port)) {
                bm[(port / 8) as usize] |= 1 << (port % 8);
            }
        }
        let bm: &[u8; gdt::IOMAP_BYTES] = bm;
        for cpu in 0..self.cpus_online {
            if self.io_bitmap_owner[cpu] == Some(pid) {
                gdt::set_io_bitmap(cpu, Some(bm));
            }
        }
    }

    /// Senders queued on `ep` through the capability `node`, which is gone,
    /// fail with `Gone` instead of being delivered later with its badge
    /// and rights.
    fn sends_through_fail(&mut self, ep: Id, node: NodeId) {
        let Some(e) = self.endpoints.get(ep) else { return };
        let stale: Vec<Id> =
            e.senders.iter().copied().filter(|&t| self.thread(t).is_some_and(|th| th.send_node == Some(node))).collect();
        for t in stale {
            self.fail_blocked(t, Error::Gone);
        }
    }

    fn fail_blocked(&mut self, t: Id, e: Error) {
        self.unblock_cleanup(t);
        if let Some(th) = self.thread_mut(t) {
            th.ctx.rax = e as u64;
            th.state = ThreadState::Inactive;
        }
        self.make_runnable(t);
    }

    /// Charges `bytes` to a running process (an ended one pays for
    /// nothing new: its budget only waits for its objects to die).
    pub fn charge(&mut self, pid: Id, bytes: u64) -> Result<(), Error> {
        let p = self.processes.get_mut(pid).ok_or(Error::Gone)?;
        if p.state != ProcessState::Running {
            return Err(Error::Gone);
        }
        p.budget.charge(bytes).map_err(Error::from)
    }

    /// Gives `bytes` back to the budget that paid for them, ended or not:
    /// an object's charge stays with its payer until the object dies. A
    /// refund of more than is charged changes nothing (kcore refuses it)
    /// and is reported: it is a kernel accounting bug. The last refund to
    /// an ended process returns its budget to its parent (`settle`).
    pub fn refund(&mut self, pid: Option<Id>, bytes: u64) {
        let Some(pid) = pid else { return };
        let Some(p) = self.processes.get_mut(pid) else { return };
        if p.budget.refund(bytes).is_err() {
            refund_underflow(&p.name, bytes, p.budget.used());
            return;
        }
        if p.state != ProcessState::Running {
            self.settle(pid);
        }
    }

    /// Returns an ended process's budget to its parent once nothing it paid
    /// for is alive (its used bytes are back to zero), and frees its record
    /// if nothing names it. Until then the budget stays charged in the
    /// parent's: frames it handed out, objects it made for others and
    /// children that outlive it (a cycle of process capabilities) keep
    /// their charge (security issue finding 6: the whole budget used to
    /// come back at once, and a loop of such children made memory without
    /// limit). A parent that has ended too may settle in turn: a loop, not
    /// recursion.
    fn settle(&mut self, pid: Id) {
        let mut next = Some(pid);
        while let Some(pid) = next.take() {
            let Some(p) = self.processes.get_mut(pid) else { return };
            // A limit of zero: given back already.
            if p.state == ProcessState::Running || p.budget.used() != 0 || p.budget.limit() == 0 {
                return;
            }
            let budget = core::mem::replace(&mut p.budget, Budget::new(0));
            let parent = p.parent;
            self.reap(pid);
            let Some(pp) = parent.and_then(|pp| self.processes.get_mut(pp)) else { return };
            let limit = budget.limit();
            if pp.budget.absorb(budget).is_err() {
                refund_underflow(&pp.name, limit, pp.budget.used());
            } else if pp.state != ProcessState::Running {
                next = parent;
            }
        }
    }

    // ---- creation ------------------------------------------------------------

    /// A new process with `budget` carved from `parent` (or the whole given
    /// budget for init).
    pub fn create_process(&mut self, parent: Option<Id>, budget_bytes: u64, slots: u32, name: &str) -> Result<Id, Error> {
        let mut budget = match parent {
            Some(pp) => {
                let p = self.processes.get_mut(pp).ok_or(Error::Gone)?;
                p.budget.carve(budget_bytes).map_err(Error::from)?
            }
            None => Budget::new(budget_bytes),
        };
        let own = cost::PROCESS + u64::from(slots) * (SLOT_BYTES + NODE_BYTES);
        if budget.charge(own).is_err() {
            self.give_back(parent, budget);
            return Err(Error::OutOfBudget);
        }
        let Some(pml4) = mem::new_pml4() else {
            self.give_back(parent, budget);
            return Err(Error::OutOfMemory);
        };
        let space = match self.caps.create_space(slots) {
            Ok(s) => s,
            Err(e) => {
                mem::free_frames(pml4, 1);
                self.give_back(parent, budget);
                return Err(e.into());
            }
        };
        let mut n = heapless::String::new();
        for c in name.chars() {
            if n.push(c).is_err() {
                break;
            }
        }
        Ok(self.processes.insert(Process {
            name: n,
            space,
            pml4,
            budget,
            parent,
            threads: Vec::new(),
            state: ProcessState::Running,
            mappings: kcore::rangemap::RangeMap::new(),
            page_tables: 0,
            refs: 0,
            watchers: Vec::new(),
            io_bitmap: None,
            own_charge: own,
        }))
    }

    fn give_back(&mut self, parent: Option<Id>, budget: Budget) {
        if let Some(p) = parent.and_then(|pp| self.processes.get_mut(pp)) {
            let limit = budget.limit();
            if p.budget.absorb(budget).is_err() {
                refund_underflow(&p.name, limit, p.budget.used());
            }
        }
    }

    /// A new thread of `pid`, paid for by `payer`. It starts at its
    /// creator's priority and under its creator's CPU cap (nothing used
    /// yet), so a thread can never make one that outranks or outruns it;
    /// with no creator (init's first thread) at 100, uncapped.
    pub fn create_thread(&mut self, pid: Id, payer: Id, creator: Option<Id>) -> Result<Id, Error> {
        let p = self.processes.get(pid).ok_or(Error::Gone)?;
        if p.state != ProcessState::Running {
            return Err(Error::Gone);
        }
        let (priority, cpu_budget) = match creator.and_then(|c| self.thread(c)) {
            Some(c) => (c.priority, c.cpu_budget.fresh()),
            None => (100, kcore::sched::CpuBudget::unlimited()),
        };
        self.charge(payer, cost::THREAD)?;
        let ctx = TrapFrame {
            cs: u64::from(gdt::USER_CS),
            ss: u64::from(gdt::USER_DS),
            rflags: RFLAGS_IF | RFLAGS_RESERVED,
            ..TrapFrame::zeroed()
        };
        let t = self.threads.insert(Box::new(Thread {
            ctx,
            process: pid,
            state: ThreadState::Inactive,
            priority,
            affinity: None,
            cpu: 0,
            ipc_buffer: 0,
            configured: false,
            bound_notification: None,
            reply_to: None,
            deadline: None,
            send_badge: 0,
            send_grant: false,
            send_node: None,
            charged_to: payer,
            refs: 0,
            cpu_budget,
            ran_since: 0,
            throttled_until: None,
            wait_link: None,
            fpu: super::fpu::ThreadFpu::new(),
        }));
        self.processes.get_mut(pid).expect("checked").threads.push(t);
        Ok(t)
    }

    pub fn create_endpoint(&mut self, payer: Id) -> Result<Id, Error> {
        self.charge(payer, cost::ENDPOINT)?;
        Ok(self.endpoints.insert(Endpoint {
            senders: VecDeque::new(),
            receivers: kcore::waitlist::WaitList::new(),
            refs: 0,
            charged_to: Some(payer),
        }))
    }

    pub fn create_notification(&mut self, payer: Id) -> Result<Id, Error> {
        self.charge(payer, cost::NOTIFICATION)?;
        Ok(self.notifications.insert(Notification {
            bits: 0,
            waiters: VecDeque::new(),
            bound: None,
            refs: 0,
            charged_to: Some(payer),
        }))
    }

    pub fn create_frame(&mut self, payer: Id, pages: u64) -> Result<Id, Error> {
        // Up to 64 MiB of contiguous memory in one object (boot files such
        // as a guest kernel are single frames; guest RAM comes in smaller
        // pieces so that it survives fragmentation).
        if pages == 0 || pages > MAX_FRAME_PAGES {
            return Err(Error::InvalidArgument);
        }
        let bytes = pages * PAGE;
        self.charge(payer, bytes)?;
        let Some(phys) = mem::alloc_frames(pages as usize) else {
            self.refund(Some(payer), bytes);
            return Err(Error::OutOfMemory);
        };
        Ok(self.frames.insert(Frame {
            phys,
            pages: pages as u32,
            refs: 0,
            charged_to: Some(payer),
            charged: bytes,
            fixed: false,
            device: false,
        }))
    }

    /// A frame object over MMIO at `phys` (never RAM, never freed).
    pub fn create_device_frame(&mut self, phys: u64, pages: u64) -> Result<Id, Error> {
        let end = pages.checked_mul(PAGE).and_then(|b| phys.checked_add(b)).ok_or(Error::InvalidArgument)?;
        if !phys.is_multiple_of(PAGE) || pages == 0 || pages > 1 << 20 || end > 1 << 52 || super::is_ram(phys, end) {
            return Err(Error::InvalidArgument);
        }
        Ok(self.frames.insert(Frame {
            phys,
            pages: pages as u32,
            refs: 0,
            charged_to: None,
            charged: 0,
            fixed: true,
            device: true,
        }))
    }

    /// Puts a new object's first capability in `slot` of `pid`.
    pub fn install(&mut self, pid: Id, slot: CapSlot, obj: Obj, rights: Rights) -> Result<(), Error> {
        let space = self.processes.get(pid).ok_or(Error::Gone)?.space;
        self.caps.insert_original(space, slot, obj, rights, 0)?;
        self.obj_ref(obj);
        Ok(())
    }

    /// As `install`, as a child of the capability in `src` the object was
    /// made from (see `CapSystem::insert_derived`).
    pub fn install_derived(&mut self, pid: Id, src: CapSlot, slot: CapSlot, obj: Obj, rights: Rights) -> Result<(), Error> {
        let space = self.processes.get(pid).ok_or(Error::Gone)?.space;
        self.caps.insert_derived(space, src, space, slot, obj, rights, 0)?;
        self.obj_ref(obj);
        Ok(())
    }

    // ---- memory ------------------------------------------------------------

    /// Maps every page of `frame` at `vaddr` in `pid` with `rights`.
    /// `through` is the capability the caller named (see `Mapping`).
    pub fn map_frame(&mut self, pid: Id, frame: Id, vaddr: u64, rights: Rights, through: Option<NodeId>) -> Result<(), Error> {
        let f = self.frames.get(frame).ok_or(Error::Gone)?;
        let (phys, pages, device) = (f.phys, u64::from(f.pages), f.device);
        let end = vaddr.checked_add(pages * PAGE).ok_or(Error::InvalidArgument)?;
        if !vaddr.is_multiple_of(PAGE) || vaddr < abi::USER_MIN || end > abi::USER_MAX {
            return Err(Error::InvalidArgument);
        }
        if rights.contains(Rights::WRITE) && rights.contains(Rights::EXECUTE) {
            return Err(Error::InvalidArgument); // W^X
        }
        let p = self.processes.get(pid).ok_or(Error::Gone)?;
        if p.state != ProcessState::Running {
            return Err(Error::Gone);
        }
        if p.mappings.overlaps(vaddr, pages) {
            return Err(Error::AlreadyMapped);
        }
        let pml4 = p.pml4;
        // The range-map entry this call adds is kernel heap on the caller's
        // behalf (security issue finding 2: a page-at-a-time loop of maps
        // used to fill the heap for the price of its page tables).
        self.charge(pid, cost::RANGE_ENTRY)?;
        let flags = Flags {
            writable: rights.contains(Rights::WRITE),
            user: true,
            executable: rights.contains(Rights::EXECUTE) && !device,
            cache_disable: device,
            write_through: device,
            ..Flags::default()
        };
        for i in 0..pages {
            // Charge the tables this page may need up front (at most 3).
            let mut t = Tables::new();
            let va = vaddr + i * PAGE;
            let r = pagetable::map::<X86_64, _>(&mut t, pml4, va, phys + i * PAGE, flags);
            let made = t.allocated as u64;
            let charged = self.charge(pid, made * cost::PAGE_TABLE);
            match (r, charged) {
                (Ok(_), Ok(())) => {
                    let p = self.processes.get_mut(pid).expect("checked");
                    p.page_tables += made;
                    self.obj_ref(Obj::Frame(frame));
                }
                (r, charged) => {
                    // Undo this page and every earlier one.
                    if r.is_ok() {
                        let mut t = Tables::new();
                        let _ = pagetable::unmap::<X86_64, _>(&mut t, pml4, va);
                    }
                    // The entry charged above pays for the partial one
                    // unmap_range takes out again (and refunds).
                    if i == 0 {
                        self.refund(Some(pid), cost::RANGE_ENTRY);
                    } else if let Some(p) = self.processes.get_mut(pid) {
                        p.mappings.insert(vaddr, i, Mapping { frame, through });
                    }
                    let _ = self.unmap_range(pid, vaddr, i);
                    return Err(match (r, charged) {
                        (Err(pagetable::MapError::OutOfMemory), _) => Error::OutOfMemory,
                        (Err(pagetable::MapError::AlreadyMapped), _) => Error::AlreadyMapped,
                        (Err(_), _) => Error::InvalidArgument,
                        (Ok(_), Err(e)) => e,
                        (Ok(_), Ok(())) => Error::InvalidArgument,
                    });
                }
            }
        }
        self.processes.get_mut(pid).expect("checked").mappings.insert(vaddr, pages, Mapping { frame, through });
        Ok(())
    }

    /// Unmaps `pages` pages from `vaddr` (missing pages are skipped); returns
    /// how many were mapped. Splitting an entry (a range strictly inside
    /// one) makes one more, charged first; every entry removed is
    /// refunded. The frames to release are kept as the removed pieces, one
    /// per entry (charged), never one per page: a range of millions of
    /// pages built a vector of millions of ids (finding 2).
    pub fn unmap_range(&mut self, pid: Id, vaddr: u64, pages: u64) -> Result<u64, Error> {
        let p = self.processes.get(pid).ok_or(Error::Gone)?;
        let pml4 = p.pml4;
        let split = p.mappings.splits(vaddr, pages);
        if split {
            self.charge(pid, cost::RANGE_ENTRY)?;
        }
        let p = self.processes.get_mut(pid).expect("checked");
        let entries = p.mappings.len() as u64 + u64::from(split);
        let pieces = p.mappings.remove(vaddr, pages);
        let entries_freed = entries.saturating_sub(p.mappings.len() as u64);
        let mut count = 0u64;
        // Emptied tables are freed after the shootdown below.
        let mut t = Tables::deferring();
        for piece in &pieces {
            for i in 0..piece.pages {
                let _ = pagetable::unmap::<X86_64, _>(&mut t, pml4, piece.start + i * PAGE);
            }
            count += piece.pages;
        }
        let tables_freed = t.freed as u64;
        let p = self.processes.get_mut(pid).expect("checked");
        p.page_tables = p.page_tables.saturating_sub(tables_freed);
        let refund = tables_freed * cost::PAGE_TABLE + entries_freed * cost::RANGE_ENTRY;
        if p.budget.refund(refund).is_err() {
            refund_underflow(&p.name, refund, p.budget.used());
        }
        if count > 0 {
            // No CPU may still translate to these frames when they are freed.
            self.shoot_down(pml4);
        }
        t.release();
        for piece in pieces {
            for _ in 0..piece.pages {
                self.obj_unref(Obj::Frame(piece.value.frame));
            }
        }
        Ok(count)
    }

    /// Makes every CPU that may cache translations of `pml4` drop them, and
    /// waits until they have.
    fn shoot_down(&mut self, pml4: u64) {
        use core::sync::atomic::Ordering;
        arch::cpu::flush_tlb_if(pml4);
        let me = percpu::index();
        let mut waiting: heapless::Vec<(usize, u64), { arch::MAX_CPUS }> = heapless::Vec::new();
        for cpu in 0..self.cpus_online {
            let p = percpu::of(cpu);
            if cpu == me || p.cr3.load(Ordering::Acquire) != pml4 {
                continue;
            }
            let before = p.tlb_acks.load(Ordering::Acquire);
            let _ = waiting.push((cpu, before));
            arch::apic::send_fixed(p.apic_id.load(Ordering::Relaxed), arch::apic::TLB_VECTOR);
        }
        for (cpu, before) in waiting {
            if !wait_until(|| percpu::of(cpu).tlb_acks.load(Ordering::Acquire) != before) {
                log::error!("CPU {cpu} did not acknowledge a TLB shootdown");
            }
        }
    }

    /// Makes every other CPU running one of `threads` leave ring 3 (it then
    /// waits for the kernel lock), so their saved contexts are current and
    /// nothing runs in the address space while it is taken apart.
    pub(super) fn stop_remote(&mut self, threads: &[Id]) {
        use core::sync::atomic::Ordering;
        let me = percpu::index();
        for cpu in 0..self.cpus_online {
            if cpu == me || !self.current[cpu].is_some_and(|t| threads.contains(&t)) {
                continue;
            }
            let p = percpu::of(cpu);
            arch::apic::send_fixed(p.apic_id.load(Ordering::Relaxed), arch::apic::RESCHED_VECTOR);
            if !wait_until(|| !p.in_user.load(Ordering::Acquire)) {
                log::error!("CPU {cpu} did not leave user mode");
            }
        }
    }

    // ---- the end -------------------------------------------------------------

    /// Ends a process: its threads stop, its capabilities and mappings go,
    /// its page tables are freed and its budget returns to its parent.
    pub fn end_process(&mut self, pid: Id, how: ProcessState) {
        let Some(p) = self.processes.get_mut(pid) else { return };
        if p.state != ProcessState::Running {
            return;
        }
        p.state = how;
        // Keep the process alive while we take it apart.
        p.refs += 1;
        let threads = core::mem::take(&mut p.threads);
        self.stop_remote(&threads);
        for t in threads {
            self.kill_thread(t);
        }
        let p = self.processes.get(pid).expect("held");
        let (space, pml4) = (p.space, p.pml4);
        for (va, pages) in p.mappings.ranges() {
            let _ = self.unmap_range(pid, va, pages);
        }
        if let Ok(list) = self.caps.destroy_space(space) {
            self.removed(list);
        }
        let mut t = Tables::new();
        pagetable::destroy::<X86_64, _>(&mut t, pml4, 0..256);
        if arch::cpu::read_cr3() == pml4 {
            arch::cpu::write_cr3(arch::paging::boot_cr3());
        }
        // The user half is gone (and shot down); the root with the shared
        // kernel half waits until no CPU has it loaded.
        self.shoot_down(pml4);
        self.dead_pml4s.push(pml4);
        for line in 0..self.irqs.len() {
            // IRQ bindings die with the notification; nothing to do here.
            let _ = line;
        }
        // Its record, PML4, capability space and I/O bitmap are gone (the
        // PML4 waits in `dead_pml4s`): refunded. What it paid for that
        // lives on keeps its charge, and the budget goes back to the
        // parent only when that is gone too (`settle`).
        let p = self.processes.get_mut(pid).expect("held");
        let freed = core::mem::take(&mut p.own_charge) + if p.io_bitmap.take().is_some() { cost::IO_BITMAP } else { 0 };
        if p.budget.refund(freed).is_err() {
            refund_underflow(&p.name, freed, p.budget.used());
        }
        let watchers = core::mem::take(&mut p.watchers);
        for w in watchers {
            let _ = super::ipc::signal(self, w.notification, w.bits);
            self.obj_unref(Obj::Notification(w.notification));
            self.refund(Some(w.payer), cost::WATCH);
        }
        // What nothing holds goes back to the parent now; the rest when
        // the objects holding it die.
        if let Some(p) = self.processes.get_mut(pid)
            && p.budget.used() > 0
        {
            let (spare, parent) = (p.budget.shrink_to_used(), p.parent);
            self.refund(parent, spare);
        }
        self.settle(pid);
        self.obj_unref(Obj::Process(pid));
    }

    /// Frees the process record once it has ended, nothing names it and
    /// its budget has gone back to its parent (`settle`).
    fn reap(&mut self, pid: Id) {
        if let Some(p) = self.processes.get(pid)
            && p.refs == 0 && p.state != ProcessState::Running && p.budget.limit() == 0 {
                self.processes.remove(pid);
            }
    }

    pub fn kill_thread(&mut self, t: Id) {
        self.unblock_cleanup(t);
        // Out of every queue now: a thread freed while linked would leave
        // its neighbours pointing at a dead id.
        debug_assert!(self.thread(t).is_none_or(|th| th.wait_link.is_none()), "killed thread still queued");
        // A caller waiting for this thread's reply learns it is gone.
        if let Some(caller) = self.thread_mut(t).and_then(|th| th.reply_to.take())
            && self.thread(caller).is_some_and(|c| c.state == ThreadState::AwaitingReply) {
                self.fail_blocked(caller, Error::Gone);
            }
        // Threads waiting for *its* reply are in no queue; find them.
        let waiting: Vec<Id> = self
            .threads
            .iter()
            .filter(|(_, th)| th.reply_to == Some(t))
            .map(|(id, _)| id)
            .collect();
        for w in waiting {
            if let Some(th) = self.thread_mut(w) {
                th.reply_to = None;
            }
        }
        if let Some(n) = self.thread(t).and_then(|th| th.bound_notification)
            && let Some(nt) = self.notifications.get_mut(n) {
                nt.bound = None;
            }
        for cur in self.current.iter_mut() {
            if *cur == Some(t) {
                *cur = None;
            }
        }
        self.unthrottle(t);
        if let Some(th) = self.threads.remove(t) {
            if let Some(p) = self.processes.get_mut(th.process) {
                p.threads.retain(|&x| x != t);
            }
            self.refund(Some(th.charged_to), cost::THREAD);
        }
    }

    pub fn thread_configure(&mut self, t: Id, entry: u64, stack: u64, ipc_buffer: u64) -> Result<(), Error> {
        let user = |a: u64| (abi::USER_MIN..abi::USER_MAX).contains(&a);
        if !user(entry) || !user(stack) || (ipc_buffer != 0 && (!user(ipc_buffer) || !ipc_buffer.is_multiple_of(PAGE))) {
            return Err(Error::InvalidArgument);
        }
        // Nor one that another CPU still runs: suspended there, it leaves
        // ring 3 at once (`ThreadSuspend` makes it), but until that CPU
        // schedules again it may be in the middle of a system call whose
        // answer would land in the rewritten frame.
        if self.cpu_holding(t).is_some() {
            return Err(Error::BadState);
        }
        let th = self.thread_mut(t).ok_or(Error::Gone)?;
        // Only a thread that waits for nothing: created, or suspended (and
        // not throttled, which is a resumed thread waiting for its budget).
        // A thread running, ready or blocked in a system call has a saved
        // frame that is its own: rewritten, a blocked thread would come out
        // of its call elsewhere (and the IPC fast path returns to a waiting
        // peer by SYSRET because that frame is the one its SYSCALL saved),
        // a running one would lose the write at its next entry.
        if th.state != ThreadState::Inactive || th.throttled_until.is_some() {
            return Err(Error::BadState);
        }
        th.ctx.rip = entry;
        th.ctx.rsp = stack;
        th.ctx.rflags = RFLAGS_IF | RFLAGS_RESERVED;
        th.ctx.cs = u64::from(gdt::USER_CS);
        th.ctx.ss = u64::from(gdt::USER_DS);
        th.ctx.rdi = ipc_buffer;
        th.ipc_buffer = ipc_buffer;
        th.configured = true;
        Ok(())
    }

    pub fn thread_resume(&mut self, t: Id) -> Result<(), Error> {
        let th = self.thread(t).ok_or(Error::Gone)?;
        if !th.configured {
            return Err(Error::BadState);
        }
        // Running or waiting already; or resumed already and throttled,
        // so it runs when its CPU budget comes back (`replenish`).
        if th.state != ThreadState::Inactive || th.throttled_until.is_some() {
            return Ok(());
        }
        // Suspended but still current on a CPU that has not scheduled since
        // (`ThreadSuspend` made it leave ring 3; it waits for the lock):
        // it goes back to that CPU's queue, which picks it up. Anywhere
        // else two CPUs would run it at once from one saved context.
        let still_on = self.cpu_holding(t);
        let cpu = still_on.unwrap_or_else(|| self.pick_cpu(th.affinity));
        self.thread_mut(t).expect("checked").cpu = cpu;
        self.make_runnable(t);
        Ok(())
    }
}

/// A refund larger than its budget's charge: a kernel accounting bug,
/// reported loudly (the budget itself is left as it was).
fn refund_underflow(name: &str, bytes: u64, used: u64) {
    log::error!("kernel bug: refund of {bytes} bytes to \"{name}\" exceeds its {used} bytes charged; refused");
}

/// The index of an MSI vector in `Kernel::msis`.
fn msi_index(vector: u8) -> Option<usize> {
    vector.checked_sub(arch::apic::MSI_BASE_VECTOR).map(usize::from).filter(|&i| i < arch::apic::MSI_VECTORS)
}

/// Spins (up to 100 ms) until `done`; false if it never happened.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = arch::time::nanos_since_boot() + 100_000_000;
    while !done() {
        if arch::time::nanos_since_boot() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// A ring-3 exception: the process is killed (no fault handlers yet) and
/// whoever watches it is told.
pub fn user_fault(k: &mut Kernel, frame: &TrapFrame) {
    let cpu = percpu::index();
    let Some(t) = k.current[cpu] else { return };
    let Some(pid) = k.thread(t).map(|th| th.process) else { return };
    let name = k.processes.get(pid).map(|p| p.name.clone()).unwrap_or_default();
    log::warn!(
        "process \"{name}\" faulted: vector {} error {:#x} at rip {:#x} (cr2 {:#x}); killed",
        frame.vector,
        frame.error_code,
        frame.rip,
        arch::cpu::read_cr2()
    );
    k.end_process(pid, ProcessState::Faulted(frame.vector));
}

/// Starts init: its ELF from the boot archive, a stack, an IPC buffer, the
/// archive mapped read-only, and the capabilities of `abi::INIT_SLOT_*`.
pub fn start_init(k: &mut Kernel, elf: &[u8], archive_phys: u64, archive_len: u64, budget: u64) -> Result<Id, &'static str> {
    let plan = initrd::elf::load_plan(elf).map_err(|_| "init is not a valid static x86-64 executable")?;
    let pid = k.create_process(None, budget, abi::CSPACE_SLOTS, "init").map_err(|_| "cannot create init's process")?;
    let all = Rights::ALL;
    k.install(pid, abi::INIT_SLOT_SELF, Obj::Process(pid), all).map_err(|_| "slot")?;
    k.install(pid, abi::INIT_SLOT_CONSOLE, Obj::Console, all).map_err(|_| "slot")?;
    k.install(pid, abi::INIT_SLOT_IOPORTS, Obj::IoPorts { first: 0, count: u16::MAX }, all).map_err(|_| "slot")?;
    let all_devices = Obj::DeviceMemory { first_page: 0, pages: 1 << 40 };
    k.install(pid, abi::INIT_SLOT_DEVICE_MEMORY, all_devices, all).map_err(|_| "slot")?;
    for line in 0..arch::apic::IRQ_LINES {
        k.install(pid, abi::INIT_SLOT_IRQ_BASE + line, Obj::Irq(line as u8), all).map_err(|_| "slot")?;
    }
    // The archive: fixed memory, mapped read-only.
    let pages = archive_len.div_ceil(PAGE);
    let fid = k.frames.insert(Frame {
        phys: archive_phys & !(PAGE - 1),
        pages: pages as u32,
        refs: 0,
        charged_to: None,
        charged: 0,
        fixed: true,
        device: false,
    });
    k.install(pid, abi::INIT_SLOT_ARCHIVE, Obj::Frame(fid), Rights::READ).map_err(|_| "slot")?;
    k.map_frame(pid, fid, abi::INIT_ARCHIVE_BASE, Rights::READ, None).map_err(|_| "cannot map the boot archive")?;
    // Segments: a frame per segment, filled from the file, then mapped.
    for seg in plan.segments().iter() {
        let range = seg.pages();
        let (start, end) = (range.start, range.end);
        let pages = (end - start) / PAGE;
        let f = k.create_frame(pid, pages).map_err(|_| "no memory for init's segments")?;
        let phys = k.frames.get(f).expect("new frame").phys;
        for i in 0..pages {
            let page_va = start + i * PAGE;
            let Some((dst_off, src)) = seg.page_contents(page_va) else { continue };
            if src.is_empty() {
                continue;
            }
            let dst = phys + i * PAGE + dst_off as u64 + arch::PHYS_OFFSET;
            let bytes = elf.get(src).ok_or("segment outside the file")?;
            // SAFETY: `dst..dst+len` lies inside the new frame (page_contents
            // keeps dst_off + len <= 4096), reached through the direct map.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst as *mut u8, bytes.len()) };
        }
        k.obj_ref(Obj::Frame(f));
        k.map_frame(pid, f, start, seg.rights(), None).map_err(|_| "cannot map an init segment")?;
        k.obj_unref(Obj::Frame(f));
    }
    let stack = k.create_frame(pid, abi::INIT_STACK_PAGES).map_err(|_| "no memory for init's stack")?;
    k.obj_ref(Obj::Frame(stack));
    k.map_frame(pid, stack, abi::INIT_STACK_TOP - abi::INIT_STACK_PAGES * PAGE, Rights::READ | Rights::WRITE, None)
        .map_err(|_| "cannot map init's stack")?;
    k.obj_unref(Obj::Frame(stack));
    let ipcb = k.create_frame(pid, 1).map_err(|_| "no memory for init's IPC buffer")?;
    k.obj_ref(Obj::Frame(ipcb));
    k.map_frame(pid, ipcb, abi::INIT_IPC_BUFFER, Rights::READ | Rights::WRITE, None).map_err(|_| "ipc buffer")?;
    k.obj_unref(Obj::Frame(ipcb));
    let t = k.create_thread(pid, pid, None).map_err(|_| "cannot create init's thread")?;
    k.install(pid, abi::INIT_SLOT_THREAD, Obj::Thread(t), all).map_err(|_| "slot")?;
    k.thread_configure(t, plan.entry(), abi::INIT_STACK_TOP - 8, abi::INIT_IPC_BUFFER).map_err(|_| "configure")?;
    {
        let th = k.thread_mut(t).expect("new thread");
        th.ctx.rsi = abi::INIT_ARCHIVE_BASE + (archive_phys & (PAGE - 1));
        th.ctx.rdx = archive_len;
        th.priority = 200;
    }
    k.thread_resume(t).map_err(|_| "resume")?;
    Ok(pid)
}

/// The largest frame object `create_frame` makes, in pages.
pub const MAX_FRAME_PAGES: u64 = 16 * 1024;
