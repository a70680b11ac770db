//! Threads of one process doing IPC at the same time, each through its own
//! IPC buffer (`alcove_rt::Thread`, libipc's per-thread buffers): long
//! messages (words past the four registers travel in the buffer) from
//! several threads at once must all come back intact. With one buffer per
//! process, one thread's message words overwrite another's between writing
//! them and the call, or the call is refused because another thread has
//! the buffer borrowed.

use abi::{CapSlot, FOREVER, MsgInfo, ObjectType};
use alcove_rt::{Thread, ThreadSlots};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use libipc::sys;

use crate::tests::Env;

const LABEL_LONG: u32 = 7;
/// Message length: 4 words in registers, the rest in the IPC buffer.
const WORDS: usize = 24;
const CLIENTS: usize = 3;
const CALLS: u64 = 300;
const STACK_PAGES: u64 = 8;

/// Per client: calls answered correctly, and the first failure (0: none).
static GOOD: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];
static BAD: [AtomicU64; CLIENTS] = [const { AtomicU64::new(0) }; CLIENTS];

/// The message client `who` sends as its call `i`: every word tells who
/// and which call, so a word from another thread's message shows.
fn message(who: u64, i: u64) -> [u64; WORDS] {
    core::array::from_fn(|k| (who << 48) | (i << 16) | k as u64)
}

/// One call with a long message; `Err` names what came back wrong.
fn long_call(ep: CapSlot, who: u64, i: u64) -> Result<(), String> {
    let m = message(who, i);
    sys::with_ipc_buffer(|b| b.words[4..WORDS].copy_from_slice(&m[4..])).map_err(|e| format!("buffer: {e}"))?;
    let r = sys::call(ep, MsgInfo::new(LABEL_LONG, WORDS as u16, 0), [m[0], m[1], m[2], m[3]])
        .map_err(|e| format!("call {i}: {e}"))?;
    let mut got = [0u64; WORDS];
    got[..4].copy_from_slice(&r.words);
    sys::with_ipc_buffer(|b| got[4..].copy_from_slice(&b.words[4..WORDS])).map_err(|e| format!("buffer: {e}"))?;
    let want: [u64; WORDS] = core::array::from_fn(|k| !m[k]);
    if r.info.words as usize != WORDS || got != want {
        let k = (0..WORDS).find(|&k| got[k] != want[k]).unwrap_or(0);
        return Err(format!("call {i} of thread {who}: word {k} came back {:#x}, expected {:#x}", got[k], want[k]));
    }
    Ok(())
}

/// The server: answers each long message with every word inverted.
extern "C" fn server(_ipc: u64, ep: u64, _: u64) -> ! {
    let ep = ep as CapSlot;
    let mut msg = match sys::recv(ep, FOREVER) {
        Ok(m) => m,
        Err(_) => sys::exit(91),
    };
    loop {
        let n = (msg.info.words as usize).clamp(4, WORDS);
        let mut w = [0u64; WORDS];
        w[..4].copy_from_slice(&msg.words);
        let _ = sys::with_ipc_buffer(|b| w[4..n].copy_from_slice(&b.words[4..n]));
        for x in &mut w {
            *x = !*x;
        }
        let _ = sys::with_ipc_buffer(|b| b.words[4..n].copy_from_slice(&w[4..n]));
        msg = match sys::reply_recv(ep, MsgInfo::new(LABEL_LONG, n as u16, 0), [w[0], w[1], w[2], w[3]]) {
            Ok(m) => m,
            Err(_) => sys::exit(92),
        };
    }
}

/// A client: `CALLS` long calls, then it reports and waits to be ended.
/// `who_done_park`: its index, and the slots of the notifications it
/// reports on and parks on.
extern "C" fn client(_ipc: u64, ep: u64, who_done_park: u64) -> ! {
    let who = who_done_park & 0xff;
    let done = ((who_done_park >> 8) & 0xff_ffff) as CapSlot;
    let park = (who_done_park >> 32) as CapSlot;
    for i in 0..CALLS {
        match long_call(ep as CapSlot, who + 1, i) {
            Ok(()) => {
                GOOD[who as usize].fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let _ = BAD[who as usize].compare_exchange(0, i + 1, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
    let _ = sys::signal(done, 1 << who);
    loop {
        let _ = sys::wait(park, FOREVER);
    }
}

pub fn ipc_buffers_are_per_thread(env: &mut Env) -> Result<(), String> {
    let before = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    let ep = env.slot();
    sys::create(ObjectType::Endpoint, ep, 0).map_err(|e| format!("endpoint: {e}"))?;
    let done = env.slot();
    sys::create(ObjectType::Notification, done, 0).map_err(|e| format!("notification: {e}"))?;
    let park = env.slot();
    sys::create(ObjectType::Notification, park, 0).map_err(|e| format!("notification: {e}"))?;
    for i in 0..CLIENTS {
        GOOD[i].store(0, Ordering::Relaxed);
        BAD[i].store(0, Ordering::Relaxed);
    }
    let mut threads: Vec<Thread> = Vec::new();
    let spawn = |env: &mut Env, entry: extern "C" fn(u64, u64, u64) -> !, a0: u64, a1: u64| {
        let slots = ThreadSlots { thread: env.slot(), stack: env.slot(), ipc: env.slot() };
        let va = env.reserve_va(STACK_PAGES + 1);
        Thread::spawn(slots, va, STACK_PAGES, entry, a0, a1).map_err(|e| format!("spawn: {e}"))
    };
    let result = (|| -> Result<(), String> {
        let s = spawn(env, server, u64::from(ep), 0)?;
        if env.cpus() > 1 {
            let _ = sys::thread_set_priority(s.slot(), 100, Some(1));
        }
        threads.push(s);
        for who in 0..CLIENTS as u64 {
            let t = spawn(env, client, u64::from(ep), who | (u64::from(done) << 8) | (u64::from(park) << 32))?;
            if env.cpus() > 1 {
                let _ = sys::thread_set_priority(t.slot(), 100, Some((who as u32 + 2) % env.cpus()));
            }
            threads.push(t);
        }
        // The main thread calls too, through the process's buffer.
        for i in 0..CALLS {
            long_call(ep, 0xff, i).map_err(|e| format!("main thread: {e}"))?;
        }
        let all = (1u64 << CLIENTS) - 1;
        let mut seen = 0;
        while seen & all != all {
            seen |= sys::wait(done, 20_000_000_000).map_err(|e| format!("waiting for the clients: {e}"))?;
        }
        for who in 0..CLIENTS {
            let bad = BAD[who].load(Ordering::Relaxed);
            if bad != 0 {
                // Say what went wrong: repeat that call from here.
                return Err(format!("thread {} failed its call {} ({} of {CALLS} good)", who + 1, bad - 1, GOOD[who].load(Ordering::Relaxed)));
            }
        }
        Ok(())
    })();
    // Ending the threads gives back their stacks and buffers.
    drop(threads);
    let _ = sys::cap_delete(ep);
    let _ = sys::cap_delete(done);
    let _ = sys::cap_delete(park);
    result?;
    let after = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    if after != before {
        return Err(format!("the threads' memory was not all returned: {before} bytes before, {after} after"));
    }
    Ok(())
}
