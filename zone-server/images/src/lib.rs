//! alcove-images: the image store of the control plane (`imgadm`).
//!
//! Where it sits: zone-server's `imgadm import` and `install` hand a
//! manifest and the image file's bytes (from an IMGAPI source, the HTTP
//! API or the console) to [`store::Install`]; it checks the file's size and
//! `files[0].sha1` as the bytes arrive, decompresses gzip or xz with a bound, and
//! writes the disk image into the pool as volume `zones/<uuid>` with the
//! snapshot `zones/<uuid>@final`, keeping the manifest as user properties of
//! the volume. `vmadm create` then calls [`store::clone_for_instance`]: an
//! instant clone `zones/<instance>-disk<N>` of that snapshot. The pool is
//! reached through [`PoolOps`]: the `alcove-pool` library in tests and the
//! host tool, storaged's pool interface on Alcove.
//!
//! Wiring: zone-server implements [`PoolOps`] over storaged's pool
//! interface (image volumes written through a block ring, not IPC
//! copies) and serves [`cli::run`] and [`cli::install`] (the file read
//! from a pool volume through a ring) on its `vmadm` interface, and
//! `sources`, `avail` and `import` (zone-server's `imgsrc`: alcove-api's
//! HTTP client over netd's sockets, the body of `/images/:uuid/file`
//! streamed into [`store::Install`]).
//!
//! * [`manifest`]: IMGAPI v2 manifests, checked, with errors naming the property.
//! * [`gzip`]: a streaming gzip reader with an output bound.
//! * [`xz`]: a streaming xz reader with an output bound and a dictionary limit.
//! * [`store`]: install, list, get, delete, clones.
//! * [`output`]: `imgadm list` / `show` / `get` as SmartOS prints them.
//! * [`cli`]: `imgadm list|show|get|delete|install` with imgadm's errors and exit statuses.
//! * [`imgapi`]: an IMGAPI client's logic without its transport (the URLs
//!   to fetch, the answers parsed, the progress line).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use alcove_pool::{DatasetInfo, Disk, Pool};

pub mod cli;
pub mod gzip;
pub mod imgapi;
pub mod manifest;
pub mod output;
pub mod store;
pub mod xz;

pub use manifest::{Manifest, ManifestError};

/// What went wrong, for the user: each names the image and the figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Manifest(ManifestError),
    /// No image with this uuid is installed on the pool.
    NotFound {
        uuid: String,
        zpool: String,
    },
    /// The image is installed already.
    Exists(String),
    /// Refused while instance volumes are clones of the image.
    InUse {
        image: String,
        clones: Vec<String>,
    },
    /// The file holds more bytes than `files[0].size` says.
    FileTooLong {
        declared: u64,
    },
    /// The file ended before `files[0].size` bytes.
    Truncated {
        declared: u64,
        got: u64,
    },
    /// The file's SHA-1 is not `files[0].sha1`.
    Sha1 {
        expected: String,
        got: String,
    },
    /// The disk image is larger than `image_size` (bytes).
    TooLarge {
        limit: u64,
    },
    Gzip(String),
    Xz(String),
    /// A pool send stream inside the file does not fit the manifest.
    Stream(String),
    Invalid(String),
    /// An image source could not be reached or answered badly (`imgadm
    /// avail`, `import`): the source and why.
    Download(String),
    /// An installed image's stored manifest cannot be read.
    Corrupt(String),
    Pool(alcove_pool::Error),
}

/// Counts `n` more decompressed bytes into `total_out`, refusing a total
/// past `limit` (the image's size) before anything is handed on: the one
/// output bound of the gzip and xz readers.
pub(crate) fn count_output(total_out: &mut u64, n: usize, limit: u64) -> Result<(), Error> {
    let total = *total_out + n as u64;
    if total > limit {
        return Err(Error::TooLarge { limit });
    }
    *total_out = total;
    Ok(())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Manifest(e) => write!(f, "{e}"),
            Error::NotFound { uuid, zpool } => write!(f, "image \"{uuid}\" was not found on zpool \"{zpool}\""),
            Error::Exists(u) => write!(f, "image \"{u}\" is already installed"),
            Error::InUse { image, clones } => write!(f, "image \"{image}\" has dependent clones: {}", clones.join(", ")),
            Error::FileTooLong { declared } => {
                write!(f, "image file is longer than files[0].size ({declared} bytes)")
            }
            Error::Truncated { declared, got } => {
                write!(f, "image file is truncated: {got} bytes, files[0].size says {declared}")
            }
            Error::Sha1 { expected, got } => {
                write!(f, "image file's SHA-1 is {got}, files[0].sha1 says {expected}")
            }
            Error::TooLarge { limit } => {
                write!(f, "image file decompresses to more than image_size ({limit} bytes)")
            }
            Error::Gzip(s) => write!(f, "image file: gzip: {s}"),
            Error::Xz(s) => write!(f, "image file: xz: {s}"),
            Error::Stream(s) => write!(f, "image file: pool send stream: {s}"),
            Error::Invalid(s) => write!(f, "{s}"),
            Error::Download(s) => write!(f, "{s}"),
            Error::Corrupt(s) => write!(f, "{s}"),
            Error::Pool(e) => write!(f, "pool: {e}"),
        }
    }
}

impl Error {
    /// imgadm's error code (`imgadm: error (CODE): message`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Manifest(_) => "InvalidManifest",
            Error::NotFound { .. } => "ImageNotInstalled",
            Error::Exists(_) => "ImageAlreadyInstalled",
            Error::InUse { .. } => "ImageHasDependentClones",
            Error::FileTooLong { .. } | Error::Truncated { .. } | Error::Sha1 { .. } | Error::Download(_) => "DownloadError",
            Error::TooLarge { .. } | Error::Gzip(_) | Error::Xz(_) => "UncompressionError",
            Error::Stream(_) => "InvalidImageFile",
            Error::Invalid(_) => "Usage",
            Error::Corrupt(_) | Error::Pool(_) => "InternalError",
        }
    }

    /// imgadm's exit status: 3 for an image that is not installed, else 1.
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::NotFound { .. } => 3,
            _ => 1,
        }
    }
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Self {
        Error::Manifest(e)
    }
}

impl From<alcove_pool::Error> for Error {
    fn from(e: alcove_pool::Error) -> Self {
        Error::Pool(e)
    }
}

/// The pool operations the image store uses: what storaged's pool
/// interface offers the control plane, and what [`alcove_pool::Pool`] does
/// in process.
pub trait PoolOps {
    /// The pool's name (`zones`).
    fn pool_name(&self) -> String;
    fn list(&self) -> Vec<DatasetInfo>;
    /// Volume `name` (not a snapshot), or `None` if there is none: at least
    /// its name and the user properties [`PoolOps::list`] shows on an
    /// image's volume (its stored manifest and source; other fields may be
    /// left 0), which is what reading one image needs, without asking the
    /// pool about every dataset it holds.
    fn volume(&self, name: &str) -> Option<DatasetInfo> {
        self.list().into_iter().find(|d| !d.snapshot && d.name == name)
    }
    fn create_volume(&mut self, name: &str, volsize: u64, volblocksize: u32) -> Result<(), alcove_pool::Error>;
    /// Writes at a 512-byte aligned offset; durable after [`PoolOps::sync`].
    fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), alcove_pool::Error>;
    fn sync(&mut self) -> Result<(), alcove_pool::Error>;
    fn set_user_prop(&mut self, name: &str, key: &str, value: &str) -> Result<(), alcove_pool::Error>;
    fn snapshot(&mut self, full: &str) -> Result<(), alcove_pool::Error>;
    fn clone_snapshot(&mut self, snap: &str, name: &str) -> Result<(), alcove_pool::Error>;
    fn destroy(&mut self, name: &str, recursive: bool) -> Result<(), alcove_pool::Error>;
    fn rename(&mut self, from: &str, to: &str) -> Result<(), alcove_pool::Error>;
    /// Starts receiving a send stream as volume `target`, in pieces as it
    /// arrives ([`PoolOps::receive_bytes`]); one receive at a time. The
    /// volume appears only at [`PoolOps::receive_end`].
    fn receive_start(&mut self, target: &str) -> Result<(), alcove_pool::Error>;
    /// The next bytes of the stream (any split): the pool checks and
    /// applies each piece as it completes.
    fn receive_bytes(&mut self, bytes: &[u8]) -> Result<(), alcove_pool::Error>;
    /// The stream ended: `finish` makes the volume and returns the snapshot
    /// it received (`target@NAME`); `finish` false drops the receive and
    /// what it wrote (`Ok(None)`).
    fn receive_end(&mut self, finish: bool) -> Result<Option<String>, alcove_pool::Error>;
}

impl<D: Disk> PoolOps for Pool<D> {
    fn pool_name(&self) -> String {
        String::from(self.name())
    }
    fn list(&self) -> Vec<DatasetInfo> {
        Pool::list(self)
    }
    fn create_volume(&mut self, name: &str, volsize: u64, volblocksize: u32) -> Result<(), alcove_pool::Error> {
        Pool::create_volume(self, name, volsize, volblocksize)
    }
    fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), alcove_pool::Error> {
        match Pool::write(self, name, offset, data) {
            // The caller's dirty bound: commit the group, then write.
            Err(alcove_pool::Error::DirtyFull { .. }) => {
                Pool::sync(self)?;
                Pool::write(self, name, offset, data)
            }
            r => r,
        }
    }
    fn sync(&mut self) -> Result<(), alcove_pool::Error> {
        Pool::sync(self)
    }
    fn set_user_prop(&mut self, name: &str, key: &str, value: &str) -> Result<(), alcove_pool::Error> {
        Pool::set_user_prop(self, name, key, value)
    }
    fn snapshot(&mut self, full: &str) -> Result<(), alcove_pool::Error> {
        Pool::snapshot(self, full)
    }
    fn clone_snapshot(&mut self, snap: &str, name: &str) -> Result<(), alcove_pool::Error> {
        Pool::clone_snapshot(self, snap, name)
    }
    fn destroy(&mut self, name: &str, recursive: bool) -> Result<(), alcove_pool::Error> {
        Pool::destroy(self, name, recursive)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), alcove_pool::Error> {
        Pool::rename(self, from, to)
    }
    fn receive_start(&mut self, target: &str) -> Result<(), alcove_pool::Error> {
        Pool::receive_open(self, target)
    }
    fn receive_bytes(&mut self, bytes: &[u8]) -> Result<(), alcove_pool::Error> {
        Pool::receive_feed(self, bytes)
    }
    fn receive_end(&mut self, finish: bool) -> Result<Option<String>, alcove_pool::Error> {
        Pool::receive_close(self, finish)
    }
}
