//! System-call dispatch: decode the arguments from the caller's saved
//! registers, check every capability and value, act, and put the result
//! back. Nothing a process passes reaches an `unwrap` or an unchecked index.

use super::{ipc, mem, Kernel, Obj, ProcessState};
use crate::arch::{self, apic, percpu};
use abi::{Error, ObjectType, Rights, Sys};
use kcore::slab::Id;

/// What a handler gives back: register results, or "the IPC path already
/// wrote them (or the thread blocked)".
enum Done {
    Values([u64; 3]),
    Handled,
}

fn vals(a: u64, b: u64, c: u64) -> Result<Done, Error> {
    Ok(Done::Values([a, b, c]))
}

pub fn dispatch(k: &mut Kernel) {
    let cpu = percpu::index();
    let Some(me) = k.current[cpu] else { return };
    let Some(th) = k.thread(me) else { return };
    let c = &th.ctx;
    let (number, args) = (c.rax, [c.rdi, c.rsi, c.rdx, c.r10, c.r8, c.r9]);
    let pid = th.process;
    let r = match Sys::from_u64(number) {
        None => Err(Error::NoSyscall),
        Some(sys) => call(k, me, pid, sys, args),
    };
    let still_current = k.current[cpu] == Some(me);
    let Some(th) = k.thread_mut(me) else { return }; // the process may have ended
    match r {
        Ok(Done::Values([a, b, c])) => {
            th.ctx.rax = 0;
            th.ctx.rdi = a;
            th.ctx.rsi = b;
            th.ctx.rdx = c;
        }
        Ok(Done::Handled) => {
            if still_current && th.ctx.rax == number {
                th.ctx.rax = 0;
            }
        }
        Err(e) => th.ctx.rax = e as u64,
    }
}

fn slot(v: u64) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::InvalidSlot)
}

fn call(k: &mut Kernel, me: Id, pid: Id, sys: Sys, a: [u64; 6]) -> Result<Done, Error> {
    let space = k.processes.get(pid).ok_or(Error::Gone)?.space;
    match sys {
        // Handled before dispatch (it writes outside the lock).
        Sys::DebugWrite => Err(Error::BadState),
        Sys::Nop => vals(0, 0, 0),
        Sys::Yield => {
            percpu::this().need_resched.store(true, core::sync::atomic::Ordering::Relaxed);
            vals(0, 0, 0)
        }
        Sys::Call => ipc::send(k, true).map(|_| Done::Handled),
        Sys::Send => ipc::send(k, false).map(|_| Done::Handled),
        Sys::Recv => ipc::recv(k, a[0], a[1]).map(|_| Done::Handled),
        Sys::ReplyRecv => ipc::reply_recv(k).map(|_| Done::Handled),
        Sys::Signal => {
            let Obj::Notification(n) = k.cap(space, slot(a[0])?, Rights::WRITE)? else { return Err(Error::WrongType) };
            ipc::signal(k, n, a[1])?;
            vals(0, 0, 0)
        }
        Sys::Wait => ipc::wait(k, a[0], a[1]).map(|_| Done::Handled),
        Sys::Poll => {
            let Obj::Notification(n) = k.cap(space, slot(a[0])?, Rights::READ)? else { return Err(Error::WrongType) };
            let nt = k.notifications.get_mut(n).ok_or(Error::Gone)?;
            vals(core::mem::take(&mut nt.bits), 0, 0)
        }
        Sys::CapCopy => {
            let rights = Rights(u32::try_from(a[2]).map_err(|_| Error::InvalidArgument)?);
            let src = k.caps.lookup(space, slot(a[0])?)?;
            let obj = src.object;
            let badge = match a[3] {
                0 => None,
                b if matches!(obj, Obj::Endpoint(_) | Obj::Notification(_)) => Some(b),
                _ => return Err(Error::InvalidArgument),
            };
            k.caps.copy(space, slot(a[0])?, space, slot(a[1])?, rights, badge)?;
            k.obj_ref(obj);
            vals(0, 0, 0)
        }
        Sys::CapDelete => {
            let r = k.caps.delete(space, slot(a[0])?)?;
            k.removed(alloc::vec![r]);
            vals(0, 0, 0)
        }
        Sys::CapRevoke => {
            let list = k.caps.revoke(space, slot(a[0])?)?;
            let n = list.len() as u64;
            k.revoked(list);
            vals(n, 0, 0)
        }
        Sys::CapIdentify => {
            let c = k.caps.lookup(space, slot(a[0])?)?;
            vals(c.object.object_type() as u64, u64::from(c.rights.0), c.badge)
        }
        Sys::CapGrant => {
            let Obj::Process(target) = k.cap(space, slot(a[0])?, Rights::MANAGE)? else {
                return Err(Error::WrongType);
            };
            let tspace = k.processes.get(target).ok_or(Error::Gone)?.space;
            let rights = Rights(u32::try_from(a[3]).map_err(|_| Error::InvalidArgument)?);
            let obj = k.caps.lookup(space, slot(a[1])?)?.object;
            k.caps.copy(space, slot(a[1])?, tspace, slot(a[2])?, rights, None)?;
            k.obj_ref(obj);
            vals(0, 0, 0)
        }
        Sys::Create => create(k, me, pid, space, a),
        Sys::Map => {
            let target = k.cap(space, slot(a[0])?, Rights::MANAGE)?;
            let fcap = k.caps.lookup(space, slot(a[1])?)?;
            let (Obj::Frame(f), through) = (fcap.object, fcap.node) else { return Err(Error::WrongType) };
            let want = Rights(u32::try_from(a[3]).map_err(|_| Error::InvalidArgument)?);
            if !want.is_valid() || !fcap.rights.contains(want) || !want.contains(Rights::READ) {
                return Err(Error::NoRights);
            }
            match target {
                Obj::Process(p) => k.map_frame(p, f, a[2], want, Some(through))?,
                Obj::Guest(g) => k.guest_map(g, f, a[2], want, Some(through))?,
                _ => return Err(Error::WrongType),
            }
            vals(0, 0, 0)
        }
        Sys::Unmap => {
            let target = k.cap(space, slot(a[0])?, Rights::MANAGE)?;
            if !a[1].is_multiple_of(mem::PAGE) || a[2] > 1 << 20 {
                return Err(Error::InvalidArgument);
            }
            let n = match target {
                Obj::Process(p) => k.unmap_range(p, a[1], a[2])?,
                Obj::Guest(g) => k.guest_unmap(g, a[1], a[2])?,
                _ => return Err(Error::WrongType),
            };
            if n == 0 && a[2] > 0 {
                return Err(Error::NotMapped);
            }
            vals(n, 0, 0)
        }
        Sys::ThreadConfigure => {
            let t = thread_cap(k, space, a[0])?;
            k.thread_configure(t, a[1], a[2], a[3])?;
            // Two start arguments, after the IPC buffer in rdi.
            let th = k.thread_mut(t).ok_or(Error::Gone)?;
            th.ctx.rsi = a[4];
            th.ctx.rdx = a[5];
            vals(0, 0, 0)
        }
        Sys::ThreadSetPriority => {
            let t = thread_cap(k, space, a[0])?;
            let prio = u8::try_from(a[1]).map_err(|_| Error::InvalidArgument)?;
            let affinity = match a[2] {
                u64::MAX => None,
                c if (c as usize) < k.cpus_online => Some(c as usize),
                _ => return Err(Error::InvalidArgument),
            };
            // A thread may not be given a priority above its setter's.
            let mine = k.thread(me).map_or(0, |t| t.priority);
            if prio > mine {
                return Err(Error::NoRights);
            }
            // Nor one another CPU has not let go of since it was suspended:
            // resumed, it goes back to that CPU (`thread_resume`), so a new
            // affinity would not hold.
            if k.cpu_holding(t).is_some() {
                return Err(Error::BadState);
            }
            let th = k.thread_mut(t).ok_or(Error::Gone)?;
            if th.state != super::ThreadState::Inactive {
                return Err(Error::BadState);
            }
            th.priority = prio;
            th.affinity = affinity;
            vals(0, 0, 0)
        }
        // Handled before dispatch (it gives up the lock); reaching here means
        // the fast check there did not apply.
        Sys::VcpuRun => Err(Error::BadState),
        Sys::IrqMsiInfo => {
            let Obj::Msi(v) = k.cap(space, slot(a[0])?, Rights::MANAGE)? else { return Err(Error::WrongType) };
            // Fixed delivery, edge, physical destination: the bootstrap CPU
            // (MSI address format: Intel SDM Vol. 3A §12.11.1).
            let dest = u64::from(percpu::of(0).apic_id.load(core::sync::atomic::Ordering::Relaxed));
            vals(0xfee0_0000 | (dest << 12), u64::from(v), 0)
        }
        Sys::VcpuInterrupt => {
            let Obj::Vcpu(v) = k.cap(space, slot(a[0])?, Rights::MANAGE)? else { return Err(Error::WrongType) };
            if a[1] & !(abi::VCPU_INTERRUPT_LEVEL | 0xff) != 0 {
                return Err(Error::InvalidArgument);
            }
            let vector = a[1] as u8;
            if vector < 16 {
                return Err(Error::InvalidArgument); // exceptions are injected through the run page
            }
            k.vcpu_interrupt(v, vector, a[1] & abi::VCPU_INTERRUPT_LEVEL != 0)?;
            vals(0, 0, 0)
        }
        Sys::VcpuKick => {
            let Obj::Vcpu(v) = k.cap(space, slot(a[0])?, Rights::MANAGE)? else { return Err(Error::WrongType) };
            k.vcpu_kick(v)?;
            vals(0, 0, 0)
        }
        Sys::ThreadSetBudget => {
            let t = thread_cap(k, space, a[0])?;
            let budget = if a[1] == 0 {
                kcore::sched::CpuBudget::unlimited()
            } else {
                kcore::sched::CpuBudget::new(a[1], a[2]).map_err(|_| Error::InvalidArgument)?
            };
            // A capped thread cannot lift a cap (its own included) or give
            // a looser one than it has.
            if !k.thread(me).is_some_and(|t| t.cpu_budget.covers(&budget)) {
                return Err(Error::NoRights);
            }
            let th = k.thread_mut(t).ok_or(Error::Gone)?;
            th.cpu_budget = budget;
            th.ran_since = arch::time::nanos_since_boot();
            vals(0, 0, 0)
        }
        Sys::ThreadResume => {
            let t = thread_cap(k, space, a[0])?;
            k.thread_resume(t)?;
            vals(0, 0, 0)
        }
        Sys::ThreadSuspend => {
            let t = thread_cap(k, space, a[0])?;
            k.unblock_cleanup(t);
            k.unthrottle(t);
            let cpu = percpu::index();
            if k.current[cpu] == Some(t) {
                k.current[cpu] = None;
            }
            k.thread_mut(t).ok_or(Error::Gone)?.state = super::ThreadState::Inactive;
            // Running on another CPU: it leaves ring 3 now (and stops there
            // when that CPU next schedules), not at its next timer tick.
            k.stop_remote(&[t]);
            vals(0, 0, 0)
        }
        Sys::ThreadBindNotification => {
            let t = thread_cap(k, space, a[0])?;
            let Obj::Notification(n) = k.cap(space, slot(a[1])?, Rights::READ)? else {
                return Err(Error::WrongType);
            };
            let nt = k.notifications.get_mut(n).ok_or(Error::Gone)?;
            if nt.bound.is_some_and(|b| b != t) {
                return Err(Error::BadState);
            }
            nt.bound = Some(t);
            let old = k.thread_mut(t).ok_or(Error::Gone)?.bound_notification.replace(n);
            // Bound to one at a time: the one it leaves no longer names it
            // (or its signal would still end the thread's Recv, no other
            // thread could bind it, and its deletion would unbind this one).
            if let Some(o) = old.filter(|&o| o != n)
                && let Some(ot) = k.notifications.get_mut(o)
                && ot.bound == Some(t)
            {
                ot.bound = None;
            }
            vals(0, 0, 0)
        }
        Sys::Exit => {
            k.end_process(pid, ProcessState::Exited(a[0]));
            Ok(Done::Handled)
        }
        Sys::IrqBind => {
            let irq = k.cap(space, slot(a[0])?, Rights::MANAGE)?;
            let Obj::Notification(n) = k.cap(space, slot(a[1])?, Rights::WRITE)? else {
                return Err(Error::WrongType);
            };
            if a[2] == 0 {
                return Err(Error::InvalidArgument);
            }
            let line = match irq {
                Obj::Irq(line) => line,
                Obj::Msi(v) => {
                    let i = usize::from(v - apic::MSI_BASE_VECTOR);
                    k.msis[i] = Some(super::IrqLine { notification: Some(n), bits: a[2], pending_ack: false });
                    return vals(0, 0, 0);
                }
                _ => return Err(Error::WrongType),
            };
            k.irqs[line as usize] = super::IrqLine { notification: Some(n), bits: a[2], pending_ack: false };
            let dest = percpu::of(0).apic_id.load(core::sync::atomic::Ordering::Relaxed);
            let (level, low) = crate::irq_polarity(line);
            apic::route_line(u32::from(line), dest, level, low);
            apic::set_line_masked(u32::from(line), false);
            vals(0, 0, 0)
        }
        Sys::IrqAck => {
            let line = match k.cap(space, slot(a[0])?, Rights::MANAGE)? {
                Obj::Irq(line) => line,
                Obj::Msi(_) => return vals(0, 0, 0), // edge-triggered: nothing to unmask
                _ => return Err(Error::WrongType),
            };
            let l = &mut k.irqs[line as usize];
            if l.notification.is_none() {
                return Err(Error::BadState);
            }
            l.pending_ack = false;
            apic::set_line_masked(u32::from(line), false);
            vals(0, 0, 0)
        }
        Sys::IoPortEnable => {
            let Obj::IoPorts { first, count } = k.cap(space, slot(a[0])?, Rights::MANAGE)? else {
                return Err(Error::WrongType);
            };
            // The bitmap is kernel memory on the caller's behalf (finding 2).
            if k.processes.get(pid).ok_or(Error::Gone)?.io_bitmap.is_none() {
                k.charge(pid, super::cost::IO_BITMAP)?;
            }
            let p = k.processes.get_mut(pid).ok_or(Error::Gone)?;
            let bm = p.io_bitmap.get_or_insert_with(|| alloc::boxed::Box::new([0xff; arch::gdt::IOMAP_BYTES]));
            for port in u32::from(first)..u32::from(first) + u32::from(count) {
                bm[(port / 8) as usize] &= !(1 << (port % 8));
            }
            let bm: &[u8; arch::gdt::IOMAP_BYTES] = bm;
            let cpu = percpu::index();
            arch::gdt::set_io_bitmap(cpu, Some(bm));
            // The TSS now holds this process's bitmap: say so, or the next
            // switch to a process without ports (owner None, as recorded
            // when this one had none yet) would keep them open.
            k.io_bitmap_owner[cpu] = Some(pid);
            // Test-only (kernel/inject.rs): as if a timer tick had landed
            // during the call, the return goes to the next ready thread,
            // perhaps another process's: the switch that must not keep
            // this process's ports in the TSS (finding 3).
            if super::inject::fire(abi::FaultPoint::IoPortEnableReturn) {
                percpu::this().need_resched.store(true, core::sync::atomic::Ordering::Relaxed);
            }
            vals(0, 0, 0)
        }
        Sys::FrameInfo => {
            let Obj::Frame(f) = k.cap(space, slot(a[0])?, Rights::NONE)? else { return Err(Error::WrongType) };
            let f = k.frames.get(f).ok_or(Error::Gone)?;
            vals(f.phys, u64::from(f.pages), 0)
        }
        Sys::BudgetInfo => {
            let p = k.processes.get(pid).ok_or(Error::Gone)?;
            vals(p.budget.used(), p.budget.limit(), 0)
        }
        Sys::Clock => vals(arch::time::nanos_since_boot(), arch::time::tsc_khz(), arch::time::unix_seconds()),
        Sys::ProcessInfo => {
            let Obj::Process(target) = k.cap(space, slot(a[0])?, Rights::NONE)? else { return Err(Error::WrongType) };
            let p = k.processes.get(target).ok_or(Error::Gone)?;
            match p.state {
                ProcessState::Running => vals(abi::ProcessState::Running as u64, 0, p.budget.used()),
                ProcessState::Exited(c) => vals(abi::ProcessState::Exited as u64, c, 0),
                ProcessState::Faulted(v) => vals(abi::ProcessState::Faulted as u64, v, 0),
            }
        }
        Sys::ProcessWatch => {
            let Obj::Process(target) = k.cap(space, slot(a[0])?, Rights::NONE)? else { return Err(Error::WrongType) };
            let Obj::Notification(n) = k.cap(space, slot(a[1])?, Rights::WRITE)? else {
                return Err(Error::WrongType);
            };
            let running = k.processes.get(target).ok_or(Error::Gone)?.state == ProcessState::Running;
            if running {
                // One entry per notification, its bits ORed (a loop of
                // watches used to grow the list until the kernel heap ran
                // out: security issue finding 2); each entry is charged.
                let p = k.processes.get_mut(target).ok_or(Error::Gone)?;
                if let Some(w) = p.watchers.iter_mut().find(|w| w.notification == n) {
                    w.bits |= a[2];
                    return vals(0, 0, 0);
                }
                k.charge(pid, super::cost::WATCH)?;
                let p = k.processes.get_mut(target).ok_or(Error::Gone)?;
                if p.watchers.try_reserve(1).is_err() {
                    k.refund(Some(pid), super::cost::WATCH);
                    return Err(Error::OutOfMemory);
                }
                p.watchers.push(super::Watcher { notification: n, bits: a[2], payer: pid });
                k.obj_ref(Obj::Notification(n));
            } else {
                ipc::signal(k, n, a[2])?;
            }
            vals(0, 0, 0)
        }
        Sys::BenchPhases => {
            let Obj::Console = k.cap(space, slot(a[0])?, Rights::MANAGE)? else { return Err(Error::WrongType) };
            let (ticks, calls, fallbacks) = super::phases::control(a[1]).ok_or(Error::InvalidArgument)?;
            vals(ticks, calls, fallbacks)
        }
        Sys::FaultInject => {
            // Absent unless the boot command line enabled it; then only for
            // a holder of the right to end the machine (system tests).
            if !super::inject::enabled() {
                return Err(Error::NoSyscall);
            }
            let Obj::Console = k.cap(space, slot(a[0])?, Rights::MANAGE)? else { return Err(Error::WrongType) };
            let (point, phase) = super::inject::control(a[1], a[2], a[3]).ok_or(Error::InvalidArgument)?;
            vals(point, phase, 0)
        }
        Sys::MachineExit => {
            let Obj::Console = k.cap(space, slot(a[0])?, Rights::MANAGE)? else { return Err(Error::WrongType) };
            arch::exit(if a[1] == 0 { arch::Exit::Pass } else { arch::Exit::Fail })
        }
    }
}

/// `DebugWrite`'s checks and copy, under the lock: the caller's bytes into
/// `buf`; returns how many. The UART is driven afterwards, outside the big
/// lock (`kernel::debug_write`).
pub fn debug_write_prepare(k: &Kernel, me: Id, buf: &mut [u8; 4096]) -> Result<usize, Error> {
    let pid = k.thread(me).ok_or(Error::Gone)?.process;
    let (space, pml4) = {
        let p = k.processes.get(pid).ok_or(Error::Gone)?;
        (p.space, p.pml4)
    };
    let a = k.thread(me).map(|t| [t.ctx.rdi, t.ctx.rsi, t.ctx.rdx]).ok_or(Error::Gone)?;
    let Obj::Console = k.cap(space, slot(a[0])?, Rights::WRITE)? else { return Err(Error::WrongType) };
    let len = a[2];
    if len > buf.len() as u64 {
        return Err(Error::InvalidArgument);
    }
    if !mem::copy_from_user(pml4, a[1], &mut buf[..len as usize]) {
        return Err(Error::BadAddress);
    }
    Ok(len as usize)
}

fn thread_cap(k: &Kernel, space: kcore::cap::SpaceId, s: u64) -> Result<Id, Error> {
    match k.cap(space, slot(s)?, Rights::MANAGE)? {
        Obj::Thread(t) => Ok(t),
        _ => Err(Error::WrongType),
    }
}

fn create(k: &mut Kernel, me: Id, pid: Id, space: kcore::cap::SpaceId, a: [u64; 6]) -> Result<Done, Error> {
    // A device frame nobody ended up holding must not linger.
    let ty = ObjectType::from_u64(a[0]).ok_or(Error::InvalidArgument)?;
    let dst = slot(a[1])?;
    // Fail early, before anything is allocated, if the slot is unusable.
    match k.caps.lookup(space, dst) {
        Ok(_) => return Err(Error::SlotInUse),
        Err(kcore::cap::CapError::EmptySlot) => {}
        Err(e) => return Err(e.into()),
    }
    // Objects made from another capability hang under it in the derivation
    // tree, so revoking that capability reaches them (finding 12).
    let mut source = None;
    let (obj, rights) = match ty {
        ObjectType::Endpoint => (Obj::Endpoint(k.create_endpoint(pid)?), Rights::SEND | Rights::RECV | Rights::GRANT),
        ObjectType::Notification => (Obj::Notification(k.create_notification(pid)?), Rights::READ | Rights::WRITE),
        ObjectType::Frame => (Obj::Frame(k.create_frame(pid, a[2])?), Rights::READ | Rights::WRITE | Rights::EXECUTE),
        ObjectType::Process => {
            if a[2] < 64 * 1024 {
                return Err(Error::InvalidArgument);
            }
            let slots = match a[3] {
                0 => super::process::CHILD_SLOTS,
                n if n <= u64::from(abi::CSPACE_SLOTS) => n as u32,
                _ => return Err(Error::InvalidArgument),
            };
            let child = k.create_process(Some(pid), a[2], slots, "child")?;
            (Obj::Process(child), Rights::ALL)
        }
        ObjectType::Thread => {
            let Obj::Process(target) = k.cap(space, slot(a[2])?, Rights::MANAGE)? else {
                return Err(Error::WrongType);
            };
            (Obj::Thread(k.create_thread(target, pid, Some(me))?), Rights::ALL)
        }
        ObjectType::IoPorts => {
            // A sub-range of an I/O-port capability the caller holds.
            let Obj::IoPorts { first, count } = k.cap(space, slot(a[3])?, Rights::MANAGE)? else {
                return Err(Error::WrongType);
            };
            let (f, c) = ((a[2] & 0xffff) as u32, ((a[2] >> 16) & 0xffff) as u32);
            if a[2] >> 32 != 0 || c == 0 || f < u32::from(first) || f + c > u32::from(first) + u32::from(count) {
                return Err(Error::InvalidArgument);
            }
            source = Some(slot(a[3])?);
            (Obj::IoPorts { first: f as u16, count: c as u16 }, Rights::MANAGE)
        }
        ObjectType::Guest => (Obj::Guest(k.create_guest(pid)?), Rights::ALL),
        ObjectType::Irq => {
            // A message-signalled vector, for a holder of interrupt rights.
            if !matches!(k.cap(space, slot(a[3])?, Rights::MANAGE)?, Obj::Irq(_) | Obj::Msi(_)) || a[2] != 1 {
                return Err(Error::InvalidArgument);
            }
            source = Some(slot(a[3])?);
            let free = k.msis.iter().position(Option::is_none).ok_or(Error::OutOfMemory)?;
            k.msis[free] = Some(super::IrqLine::default());
            (Obj::Msi(apic::MSI_BASE_VECTOR + free as u8), Rights::MANAGE)
        }
        ObjectType::Vcpu => {
            let Obj::Guest(g) = k.cap(space, slot(a[2])?, Rights::MANAGE)? else { return Err(Error::WrongType) };
            let fcap = k.caps.lookup(space, slot(a[3])?)?;
            let Obj::Frame(f) = fcap.object else { return Err(Error::WrongType) };
            if !fcap.rights.contains(Rights::READ | Rights::WRITE) {
                return Err(Error::NoRights);
            }
            (Obj::Vcpu(k.create_vcpu(pid, g, f)?), Rights::ALL)
        }
        ObjectType::DeviceMemory => {
            let Obj::DeviceMemory { first_page, pages } = k.cap(space, slot(a[3])?, Rights::MANAGE)? else {
                return Err(Error::WrongType);
            };
            let (phys, want) = (a[2], a[4]);
            let page = phys / mem::PAGE;
            if page < first_page || page.saturating_add(want) > first_page.saturating_add(pages) {
                return Err(Error::InvalidArgument);
            }
            source = Some(slot(a[3])?);
            (Obj::Frame(k.create_device_frame(phys, want)?), Rights::READ | Rights::WRITE)
        }
        _ => return Err(Error::InvalidArgument),
    };
    let installed = match source {
        Some(src) => k.install_derived(pid, src, dst, obj, rights),
        None => k.install(pid, dst, obj, rights),
    };
    if let Err(e) = installed {
        // Cannot happen after the check above, but never leak the object.
        k.obj_ref(obj);
        k.obj_unref(obj);
        return Err(e);
    }
    vals(0, 0, 0)
}
