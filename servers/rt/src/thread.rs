//! More threads in a process, each with a stack and an IPC buffer of its
//! own (DESIGN.md: "Each thread has its own IPC buffer"), so threads make
//! IPC calls independently of each other.
//!
//! [`Thread::spawn`] creates the stack and the buffer as new frames mapped
//! at a caller-chosen address (the buffer on the page above the stack's
//! top; a stack overflow runs downwards, away from it), registers the pair
//! with libipc, and starts the thread. Dropping the [`Thread`] ends the
//! thread (deleting its capability) and only then frees its memory.

use abi::{CapSlot, Error, ObjectType, PAGE_SIZE};
#[cfg(not(target_os = "none"))]
use crate::hostsys::{self as sys, ThreadBuffer};
#[cfg(target_os = "none")]
use libipc::sys::{self, ThreadBuffer};

use crate::mapping::PrivateMapping;
use crate::start::SLOT_SELF;

/// A running thread of this process and the memory it runs on.
pub struct Thread {
    slot: CapSlot,
    buffer: Option<ThreadBuffer>,
    // Dropped after the thread has ended (see `Drop`).
    stack: Option<PrivateMapping>,
    ipc: Option<PrivateMapping>,
}

/// The capability slots a new thread takes: its thread object, its stack
/// frame and its IPC buffer frame.
#[derive(Clone, Copy, Debug)]
pub struct ThreadSlots {
    pub thread: CapSlot,
    pub stack: CapSlot,
    pub ipc: CapSlot,
}

impl Thread {
    /// Starts `entry(ipc_buffer, arg0, arg1)` in a new thread of this
    /// process on a stack of `stack_pages` pages at `va`, its IPC buffer
    /// on the page at `va + stack_pages * PAGE_SIZE` (so the range
    /// `va..va + (stack_pages + 1) * PAGE_SIZE` must be free). The thread
    /// runs at its creator's priority until told otherwise.
    pub fn spawn(
        slots: ThreadSlots,
        va: u64,
        stack_pages: u64,
        entry: extern "C" fn(u64, u64, u64) -> !,
        arg0: u64,
        arg1: u64,
    ) -> Result<Thread, Error> {
        Self::spawn_placed(slots, va, stack_pages, entry, arg0, arg1, None)
    }

    /// As [`Thread::spawn`], the thread given `placement` (its priority, at
    /// most its creator's, and the CPU it is pinned to, if any) before it
    /// starts: a thread's priority and affinity are set only while it has
    /// not started.
    pub fn spawn_placed(
        slots: ThreadSlots,
        va: u64,
        stack_pages: u64,
        entry: extern "C" fn(u64, u64, u64) -> !,
        arg0: u64,
        arg1: u64,
        placement: Option<(u8, Option<u32>)>,
    ) -> Result<Thread, Error> {
        if stack_pages == 0 {
            return Err(Error::InvalidArgument);
        }
        let stack_bytes = stack_pages.checked_mul(PAGE_SIZE).ok_or(Error::InvalidArgument)?;
        let ipc_va = va.checked_add(stack_bytes).ok_or(Error::InvalidArgument)?;
        let stack = PrivateMapping::create(va, stack_bytes, stack_pages, core::iter::once(slots.stack))?;
        let mut ipc = match PrivateMapping::create(ipc_va, PAGE_SIZE, 1, core::iter::once(slots.ipc)) {
            Ok(m) => m,
            Err(e) => {
                free(stack);
                return Err(e);
            }
        };
        let buffer_ptr = ipc.bytes_mut().as_mut_ptr().cast::<abi::IpcBuffer>();
        if let Err(e) = sys::create(ObjectType::Thread, slots.thread, u64::from(SLOT_SELF)) {
            free(stack);
            free(ipc);
            return Err(e);
        }
        let mut t = Thread { slot: slots.thread, buffer: None, stack: Some(stack), ipc: Some(ipc) };
        // SAFETY: the buffer is a page of its own (a new frame mapped only
        // here, aligned), used from now on by libipc and the kernel only
        // (`bytes_mut`'s borrow ended above); the stack is the new
        // thread's alone: new memory no other thread or registration uses.
        t.buffer = Some(unsafe { sys::register_thread_buffer(va, ipc_va, buffer_ptr)? });
        // The top of the stack, 16-byte aligned less the return address
        // slot an `extern "C"` function expects at entry.
        let top = ipc_va - 8;
        // SAFETY:
        // 1. `entry` has the type a thread entry needs (checked by the
        //    signature above) and diverges.
        // 2. The stack and IPC buffer are the thread's alone and stay
        //    mapped until `Drop` has ended the thread.
        unsafe { sys::thread_configure(slots.thread, entry as usize as u64, top, ipc_va, arg0, arg1)? };
        if let Some((priority, cpu)) = placement {
            sys::thread_set_priority(slots.thread, priority, cpu)?;
        }
        sys::thread_resume(slots.thread)?;
        Ok(t)
    }

    /// The thread's capability slot (to set its priority or budget).
    pub fn slot(&self) -> CapSlot {
        self.slot
    }
}

/// Unmaps a mapping and frees its frames.
fn free(m: PrivateMapping) {
    let (shared, frames) = m.share();
    drop(shared);
    for f in frames {
        let _ = sys::cap_delete(f);
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        // Deleting its last capability ends the thread; only then is its
        // memory given back.
        let _ = sys::cap_delete(self.slot);
        if let Some(b) = self.buffer.take() {
            // SAFETY: the thread has ended (above).
            unsafe { sys::unregister_thread_buffer(b) };
        }
        if let Some(m) = self.stack.take() {
            free(m);
        }
        if let Some(m) = self.ipc.take() {
            free(m);
        }
    }
}
