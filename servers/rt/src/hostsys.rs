//! The system calls the mapping objects and threads use, as the host sees
//! them: there is no Alcove kernel under `cargo test`, so each fails with
//! `Error::NoSyscall` (the objects are only ever built on Alcove).

#![allow(clippy::missing_safety_doc)]

use abi::{CapSlot, Error, IpcBuffer, ObjectType, Rights};

pub fn create(_: ObjectType, _: CapSlot, _: u64) -> Result<(), Error> {
    Err(Error::NoSyscall)
}
pub fn create_from(_: ObjectType, _: CapSlot, _: u64, _: CapSlot) -> Result<(), Error> {
    Err(Error::NoSyscall)
}
pub fn map(_: CapSlot, _: CapSlot, _: u64, _: Rights) -> Result<(), Error> {
    Err(Error::NoSyscall)
}
pub fn cap_delete(_: CapSlot) -> Result<(), Error> {
    Err(Error::NoSyscall)
}
pub unsafe fn vcpu_run(_: CapSlot) -> Result<u64, Error> {
    Err(Error::NoSyscall)
}
pub unsafe fn thread_configure(_: CapSlot, _: u64, _: u64, _: u64, _: u64, _: u64) -> Result<(), Error> {
    Err(Error::NoSyscall)
}
pub fn thread_set_priority(_: CapSlot, _: u8, _: Option<u32>) -> Result<(), Error> {
    Err(Error::NoSyscall)
}
pub fn thread_resume(_: CapSlot) -> Result<(), Error> {
    Err(Error::NoSyscall)
}
#[derive(Debug)]
pub struct ThreadBuffer;
pub unsafe fn register_thread_buffer(_: u64, _: u64, _: *mut IpcBuffer) -> Result<ThreadBuffer, Error> {
    Err(Error::NoSyscall)
}
pub unsafe fn unregister_thread_buffer(_: ThreadBuffer) {}
