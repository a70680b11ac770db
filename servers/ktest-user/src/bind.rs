//! `ThreadBindNotification` binds a thread to one notification at a time:
//! binding it to another lets go of the first. Before, the first still
//! named the thread, so its signal woke the thread out of `Recv` as if it
//! were bound there, no other thread could bind it (`BadState`), and its
//! deletion unbound the thread from the notification it was bound to.

use abi::{CapSlot, MsgInfo, ObjectType, FOREVER};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::sys;

use crate::fastpath::spawn;
use crate::tests::Env;

/// What the receiver's last `Recv` gave: `NOTIFIED | bits`, `MESSAGE`,
/// `TIMED_OUT`, or `FAILED | error`.
static GOT: AtomicU64 = AtomicU64::new(0);
const NOTIFIED: u64 = 1 << 60;
const MESSAGE: u64 = 2 << 60;
const TIMED_OUT: u64 = 3 << 60;
const FAILED: u64 = 4 << 60;

/// Per signal of `go` (high half of `a0`): one `Recv` on the endpoint (low
/// half) with a 300 ms timeout, its outcome in `GOT`, then a signal of
/// `done` (`a1`).
extern "C" fn receiver(_ipc: u64, a0: u64, done: u64) -> ! {
    let (ep, go) = ((a0 & 0xffff_ffff) as CapSlot, (a0 >> 32) as CapSlot);
    loop {
        let _ = sys::wait(go, FOREVER);
        let got = match sys::recv(ep, 300_000_000) {
            Ok(m) if m.info.label == MsgInfo::NOTIFICATION_LABEL => NOTIFIED | (m.words[0] & 0xffff),
            Ok(_) => MESSAGE,
            Err(abi::Error::Timeout) => TIMED_OUT,
            Err(e) => FAILED | e as u64,
        };
        GOT.store(got, Ordering::SeqCst);
        let _ = sys::signal(done as CapSlot, 1);
    }
}

fn describe(got: u64) -> String {
    match got & (0xf << 60) {
        NOTIFIED => format!("woken by a notification with bits {:#x}", got & 0xffff),
        MESSAGE => String::from("a message"),
        TIMED_OUT => String::from("timed out"),
        FAILED => format!("error {}", got & 0xffff),
        _ => String::from("nothing"),
    }
}

/// One `Recv` of the receiver, with `before` done first (while it waits on
/// `go`) and `during` while it receives; what it got.
fn one_recv(go: CapSlot, done: CapSlot, before: impl FnOnce() -> Result<(), String>, during: impl FnOnce() -> Result<(), String>) -> Result<u64, String> {
    GOT.store(0, Ordering::SeqCst);
    before()?;
    sys::signal(go, 1).map_err(|e| format!("go: {e}"))?;
    // Same CPU, same priority: the receiver runs up to its Recv and blocks.
    sys::yield_now().map_err(|e| format!("yield: {e}"))?;
    during()?;
    sys::wait(done, 3_000_000_000).map_err(|e| format!("the receiver never finished its Recv: {e}"))?;
    Ok(GOT.load(Ordering::SeqCst))
}

pub fn rebinding_a_thread_lets_go_of_its_old_notification(env: &mut Env) -> Result<(), String> {
    let new = |env: &mut Env, ty: ObjectType, what: &str| -> Result<CapSlot, String> {
        let s = env.slot();
        sys::create(ty, s, 0).map_err(|e| format!("{what}: {e}"))?;
        Ok(s)
    };
    let (n1, n2) = (new(env, ObjectType::Notification, "n1")?, new(env, ObjectType::Notification, "n2")?);
    let (go, done) = (new(env, ObjectType::Notification, "go")?, new(env, ObjectType::Notification, "done")?);
    let ep = new(env, ObjectType::Endpoint, "endpoint")?;
    let t = spawn(env, receiver, 100, u64::from(ep) | u64::from(go) << 32, u64::from(done))?;
    sys::thread_bind_notification(t, n1).map_err(|e| format!("bind to n1: {e}"))?;
    sys::thread_bind_notification(t, n2).map_err(|e| format!("bind to n2 (rebind): {e}"))?;

    // The old notification's signal does not reach it.
    let got = one_recv(go, done, || Ok(()), || sys::signal(n1, 0x10).map_err(|e| format!("signal n1: {e}")))?;
    if got != TIMED_OUT {
        return Err(format!("signalled its old notification, the rebound thread was {}; it must time out", describe(got)));
    }
    let _ = sys::poll(n1);
    // The new one's does.
    let got = one_recv(go, done, || Ok(()), || sys::signal(n2, 0x20).map_err(|e| format!("signal n2: {e}")))?;
    if got != NOTIFIED | 0x20 {
        return Err(format!("signalled its new notification, the rebound thread was {}", describe(got)));
    }
    // Another thread may bind the old one now.
    let other = env.slot();
    sys::create(ObjectType::Thread, other, u64::from(alcove_rt::start::SLOT_SELF)).map_err(|e| format!("thread: {e}"))?;
    sys::thread_bind_notification(other, n1).map_err(|e| format!("binding another thread to the old notification: {e}"))?;
    let _ = sys::cap_delete(other);
    // Deleting the old one leaves the binding to the new one: bits pending
    // there when it receives end its Recv at once.
    let got = one_recv(
        go,
        done,
        || {
            sys::cap_delete(n1).map_err(|e| format!("delete n1: {e}"))?;
            sys::signal(n2, 0x40).map_err(|e| format!("signal n2: {e}"))
        },
        || Ok(()),
    )?;
    if got != NOTIFIED | 0x40 {
        return Err(format!("with its old notification deleted, the thread receiving with bits pending on its new one was {}", describe(got)));
    }
    let _ = sys::thread_suspend(t);
    let _ = sys::cap_delete(t);
    Ok(())
}
