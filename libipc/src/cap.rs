//! Typed capability handles, as rust-sel4's `Cap<T>`: a slot number in the
//! process's capability table plus, in the type, the kind of object it holds.
//! A `Cap<Frame>` does not compile where a `Cap<Endpoint>` is needed.
//!
//! The type is a promise made where the handle is built ([`Cap::from_slot`],
//! from the boot manifest's slot assignments) and checked by the kernel on
//! every use: a wrong promise yields `abi::Error::WrongType`, never memory
//! unsafety. `Cap::checked` (on Alcove) asks the kernel up front.
//!
//! ```compile_fail,E0308
//! use libipc::cap::{Cap, Endpoint, Frame};
//! fn wants_endpoint(_: Cap<Endpoint>) {}
//! wants_endpoint(Cap::<Frame>::from_slot(3)); // a Frame is not an Endpoint
//! ```
//!
//! On Alcove the handles carry the typed operations (`Cap<Notification>::signal`,
//! `Cap<Console>::write`, …), thin layers over [`crate::sys`].

use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;

use abi::{CapSlot, ObjectType};

mod sealed {
    pub trait Sealed {}
}

/// A kind of kernel object a capability can name. Implemented only by the
/// marker types of this module.
pub trait CapType: sealed::Sealed {
    /// The kernel's object type for this kind.
    const TYPE: ObjectType;
    /// The kind's name, for `Debug`.
    const NAME: &'static str;
}

macro_rules! cap_types {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $name {}
            impl sealed::Sealed for $name {}
            impl CapType for $name {
                const TYPE: ObjectType = ObjectType::$name;
                const NAME: &'static str = stringify!($name);
            }
        )*
    };
}

cap_types! {
    /// An IPC endpoint: call, send, receive.
    Endpoint,
    /// A notification word: signal, wait, poll.
    Notification,
    /// Physical pages: map, query for DMA.
    Frame,
    /// A process: map into it, grant capabilities to it, watch it.
    Process,
    /// A thread: configure, prioritize, resume, suspend.
    Thread,
    /// An interrupt line: bind to a notification, acknowledge.
    Irq,
    /// A range of I/O ports the holder may enable for itself.
    IoPorts,
    /// Device memory (MMIO) at a fixed physical address.
    DeviceMemory,
    /// The kernel console (debug output).
    Console,
}

/// Kinds that [`Sys::Map`](abi::Sys::Map) maps into an address space.
pub trait Mappable: CapType {}
impl Mappable for Frame {}
impl Mappable for DeviceMemory {}

/// A capability slot holding an object of kind `T`.
pub struct Cap<T: CapType> {
    slot: CapSlot,
    kind: PhantomData<fn() -> T>,
}

impl<T: CapType> Cap<T> {
    /// The handle for `slot`, which the caller knows holds a `T` (from the boot
    /// manifest or the message that brought it).
    pub const fn from_slot(slot: CapSlot) -> Self {
        Self { slot, kind: PhantomData }
    }

    /// The slot number.
    pub const fn slot(self) -> CapSlot {
        self.slot
    }

    /// Reinterprets the slot as holding a `U`. Safe (the kernel checks every
    /// use) but almost always a mistake outside code that just learned the
    /// type, e.g. from [`Cap::identify`].
    pub const fn cast<U: CapType>(self) -> Cap<U> {
        Cap::from_slot(self.slot)
    }
}

impl<T: CapType> Clone for Cap<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: CapType> Copy for Cap<T> {}

impl<T: CapType> PartialEq for Cap<T> {
    fn eq(&self, other: &Self) -> bool {
        self.slot == other.slot
    }
}

impl<T: CapType> Eq for Cap<T> {}

impl<T: CapType> Hash for Cap<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.slot.hash(state)
    }
}

impl<T: CapType> fmt::Debug for Cap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cap<{}>({})", T::NAME, self.slot)
    }
}

#[cfg(target_os = "none")]
mod ops {
    //! The typed operations, on Alcove only.

    use abi::{CapSlot, Error, FOREVER, MsgInfo, Rights};

    use super::*;
    use crate::sys::{self, CapInfo, FrameInfo, ProcessInfo};
    use crate::wire::Message;

    impl<T: CapType> Cap<T> {
        /// The handle for `slot` after the kernel confirmed it holds a `T`.
        pub fn checked(slot: CapSlot) -> Result<Self, Error> {
            let info = sys::cap_identify(slot)?;
            if info.object_type == T::TYPE { Ok(Self::from_slot(slot)) } else { Err(Error::WrongType) }
        }

        /// The object type, rights and badge the slot holds.
        pub fn identify(self) -> Result<CapInfo, Error> {
            sys::cap_identify(self.slot)
        }

        /// Copies the capability into the empty slot `dst` with `rights` (no
        /// more than it has).
        pub fn copy(self, dst: CapSlot, rights: Rights) -> Result<Cap<T>, Error> {
            sys::cap_copy(self.slot, dst, rights, 0)?;
            Ok(Cap::from_slot(dst))
        }

        /// Deletes this capability.
        pub fn delete(self) -> Result<(), Error> {
            sys::cap_delete(self.slot)
        }

        /// Deletes every capability derived from this one, keeping this one.
        pub fn revoke(self) -> Result<(), Error> {
            sys::cap_revoke(self.slot)
        }
    }

    impl Cap<Endpoint> {
        /// Creates an endpoint in the empty slot `dst`.
        pub fn create(dst: CapSlot) -> Result<Self, Error> {
            sys::create(ObjectType::Endpoint, dst, 0)?;
            Ok(Self::from_slot(dst))
        }

        /// Mints a copy carrying `badge`, which receivers see on every message
        /// sent through it.
        pub fn mint(self, dst: CapSlot, rights: Rights, badge: u64) -> Result<Self, Error> {
            sys::cap_copy(self.slot, dst, rights, badge)?;
            Ok(Self::from_slot(dst))
        }

        /// Sends and waits for the reply (raw words; see [`crate::kernel`] for typed calls).
        pub fn call(self, info: MsgInfo, words: [u64; 4]) -> Result<Message, Error> {
            sys::call(self.slot, info, words)
        }

        /// Sends, blocking until a receiver takes the message.
        pub fn send(self, info: MsgInfo, words: [u64; 4]) -> Result<(), Error> {
            sys::send(self.slot, info, words)
        }

        /// Waits up to `timeout_ns` ([`FOREVER`], 0 polls) for a message.
        pub fn recv(self, timeout_ns: u64) -> Result<Message, Error> {
            sys::recv(self.slot, timeout_ns)
        }

        /// Replies to the last caller, then waits for the next message.
        pub fn reply_recv(self, info: MsgInfo, words: [u64; 4]) -> Result<Message, Error> {
            sys::reply_recv(self.slot, info, words)
        }

        /// A transport for typed interface clients calling through this endpoint.
        pub const fn transport(self) -> crate::kernel::KernelTransport {
            crate::kernel::KernelTransport::new(self)
        }
    }

    impl Cap<Notification> {
        /// Creates a notification in the empty slot `dst`.
        pub fn create(dst: CapSlot) -> Result<Self, Error> {
            sys::create(ObjectType::Notification, dst, 0)?;
            Ok(Self::from_slot(dst))
        }

        /// Mints a copy carrying `badge`.
        pub fn mint(self, dst: CapSlot, rights: Rights, badge: u64) -> Result<Self, Error> {
            sys::cap_copy(self.slot, dst, rights, badge)?;
            Ok(Self::from_slot(dst))
        }

        /// ORs `bits` into the word and wakes a waiter.
        pub fn signal(self, bits: u64) -> Result<(), Error> {
            sys::signal(self.slot, bits)
        }

        /// Waits up to `timeout_ns` ([`FOREVER`]) for a bit; takes and clears all bits.
        pub fn wait(self, timeout_ns: u64) -> Result<u64, Error> {
            sys::wait(self.slot, timeout_ns)
        }

        /// Waits without a timeout.
        pub fn wait_forever(self) -> Result<u64, Error> {
            sys::wait(self.slot, FOREVER)
        }

        /// Takes and clears the bits without blocking (0 if none were set).
        pub fn poll(self) -> Result<u64, Error> {
            sys::poll(self.slot)
        }
    }

    impl Cap<Frame> {
        /// Creates a frame of `pages` contiguous pages in the empty slot `dst`.
        pub fn create(dst: CapSlot, pages: u64) -> Result<Self, Error> {
            sys::create(ObjectType::Frame, dst, pages)?;
            Ok(Self::from_slot(dst))
        }

        /// Physical address and size, for DMA.
        pub fn info(self) -> Result<FrameInfo, Error> {
            sys::frame_info(self.slot)
        }
    }

    impl Cap<Process> {
        /// Creates a process with a kernel-memory budget of `budget_bytes`.
        pub fn create(dst: CapSlot, budget_bytes: u64) -> Result<Self, Error> {
            sys::create(ObjectType::Process, dst, budget_bytes)?;
            Ok(Self::from_slot(dst))
        }

        /// Gives the process a copy of `cap` in its slot `dst`, with `rights`.
        pub fn grant<T: CapType>(self, cap: Cap<T>, dst: CapSlot, rights: Rights) -> Result<(), Error> {
            sys::cap_grant(self.slot, cap.slot(), dst, rights)
        }

        /// Maps `frame` at `vaddr` (page-aligned, unmapped) with `rights`.
        pub fn map<F: Mappable>(self, frame: Cap<F>, vaddr: u64, rights: Rights) -> Result<(), Error> {
            sys::map(self.slot, frame.slot(), vaddr, rights)
        }

        /// Unmaps `pages` pages at `vaddr`.
        ///
        /// # Safety
        ///
        /// As [`sys::unmap`]: if this is the caller's own process, nothing may
        /// still use the range.
        pub unsafe fn unmap(self, vaddr: u64, pages: u64) -> Result<(), Error> {
            // SAFETY: the caller upholds `sys::unmap`'s contract, forwarded above.
            unsafe { sys::unmap(self.slot, vaddr, pages) }
        }

        /// Whether the process runs, and its exit code once it ended.
        pub fn info(self) -> Result<ProcessInfo, Error> {
            sys::process_info(self.slot)
        }

        /// Signals `bits` on `notification` when the process ends.
        pub fn watch(self, notification: Cap<Notification>, bits: u64) -> Result<(), Error> {
            sys::process_watch(self.slot, notification.slot(), bits)
        }
    }

    impl Cap<Thread> {
        /// Creates a thread in `process`.
        pub fn create(dst: CapSlot, process: Cap<Process>) -> Result<Self, Error> {
            sys::create(ObjectType::Thread, dst, u64::from(process.slot()))?;
            Ok(Self::from_slot(dst))
        }

        /// Sets where the thread starts, its stack, its IPC buffer and the
        /// two start arguments (in `rsi` and `rdx`).
        ///
        /// # Safety
        ///
        /// As [`sys::thread_configure`].
        pub unsafe fn configure(self, entry: u64, stack: u64, ipc_buffer: u64, args: [u64; 2]) -> Result<(), Error> {
            // SAFETY: the caller upholds `sys::thread_configure`'s contract, forwarded above.
            unsafe { sys::thread_configure(self.slot, entry, stack, ipc_buffer, args[0], args[1]) }
        }

        /// Sets the priority and CPU (`None`: the kernel chooses).
        pub fn set_priority(self, priority: u8, cpu: Option<u32>) -> Result<(), Error> {
            sys::thread_set_priority(self.slot, priority, cpu)
        }

        /// Makes the configured thread runnable.
        pub fn resume(self) -> Result<(), Error> {
            sys::thread_resume(self.slot)
        }

        /// Stops the thread.
        pub fn suspend(self) -> Result<(), Error> {
            sys::thread_suspend(self.slot)
        }

        /// Binds `notification` so that receiving on an endpoint also returns
        /// when it is signalled.
        pub fn bind_notification(self, notification: Cap<Notification>) -> Result<(), Error> {
            sys::thread_bind_notification(self.slot, notification.slot())
        }
    }

    impl Cap<Irq> {
        /// Delivers the interrupt as `bits` signalled on `notification`.
        pub fn bind(self, notification: Cap<Notification>, bits: u64) -> Result<(), Error> {
            sys::irq_bind(self.slot, notification.slot(), bits)
        }

        /// Unmasks the line after the driver handled the interrupt.
        pub fn ack(self) -> Result<(), Error> {
            sys::irq_ack(self.slot)
        }
    }

    impl Cap<IoPorts> {
        /// Lets this process use `in`/`out` on the range.
        pub fn enable(self) -> Result<(), Error> {
            sys::io_port_enable(self.slot)
        }
    }

    impl Cap<Console> {
        /// Writes `text` to the kernel console.
        pub fn write(self, text: &str) -> Result<(), Error> {
            sys::debug_write(self.slot, text.as_bytes())
        }

        /// Writes raw bytes to the kernel console.
        pub fn write_bytes(self, bytes: &[u8]) -> Result<(), Error> {
            sys::debug_write(self.slot, bytes)
        }
    }

    /// `write!(console, …)` on a copy of the handle.
    impl fmt::Write for Cap<Console> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            Cap::write(*self, s).map_err(|_| fmt::Error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants_endpoint(ep: Cap<Endpoint>) -> CapSlot {
        ep.slot()
    }

    #[test]
    fn handles_are_copy_and_typed() {
        let ep = Cap::<Endpoint>::from_slot(7);
        let copy = ep;
        assert_eq!(wants_endpoint(ep), wants_endpoint(copy));
        assert_eq!(alloc::format!("{ep:?}"), "Cap<Endpoint>(7)");
        let frame: Cap<Frame> = ep.cast();
        assert_eq!(frame.slot(), 7);
        assert_eq!(<Frame as CapType>::TYPE, ObjectType::Frame);
        assert_eq!(<Console as CapType>::TYPE, ObjectType::Console);
    }
}
