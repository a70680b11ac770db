//! The boot archive: the servers, the system manifest and boot-time files that
//! GRUB loads next to the kernel as one Multiboot2 module.
//!
//! The format is cpio "newc" (as a Linux initramfs): simple, streamable, and
//! `cpio -t` lists it on the host. The host packs it ([`pack`], with `alloc`;
//! a whole system with [`pack_system`], feature `std`); the kernel walks it in
//! place ([`Archive::entries`]) without copying. The archive comes from the
//! boot medium, so parsing is bounds-checked everywhere and a damaged archive
//! yields an [`Error`], never a panic.
//!
//! A system's archive holds:
//!
//! * [`MANIFEST_TOML`] — the manifest as written, for people;
//! * [`MANIFEST_BIN`] — the same, checked and encoded ([`manifest::Manifest`]);
//! * `bin/init` and `bin/<binary>` for every server — static x86-64
//!   executables, loaded through [`elf::load_plan`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod cpio;
pub mod elf;
pub mod manifest;
#[cfg(feature = "std")]
mod system;

pub use cpio::{Archive, Entries, Entry, Error, File, pack};
#[cfg(feature = "std")]
pub use system::{MaybeBinary, pack_system, pack_system_partial};

/// The manifest as its author wrote it.
pub const MANIFEST_TOML: &str = "manifest.toml";
/// The manifest as init reads it: [`manifest::Manifest::decode`].
pub const MANIFEST_BIN: &str = "manifest.bin";
/// The root task's executable.
pub const INIT_BINARY: &str = "bin/init";

/// The archive path of a data file a server is given: `files/<name>`.
pub fn file_path(name: &str) -> alloc::string::String {
    alloc::format!("files/{name}")
}

/// The archive path of a server's executable: `bin/<binary>`.
pub fn binary_path(binary: &str) -> alloc::string::String {
    alloc::format!("bin/{binary}")
}
