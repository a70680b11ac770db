//! alcove-pool: the copy-on-write pool storaged keeps on the machine's disks.
//!
//! Where it sits: a VM's block request arrives in storaged's block ring, names
//! a volume (`zones/<uuid>-disk<N>`), and becomes [`Pool::write`] /
//! [`Pool::read`] / [`Pool::sync`] here; the pool turns it into checksummed,
//! copy-on-write blocks on a single disk or an n-way mirror ([`vdev`]) behind
//! the [`Disk`] trait (virtio-blk on Alcove, memory or files on the host).
//!
//! The on-disk format is documented field by field in `FORMAT.md` beside this
//! crate; [`format`] is its code. Transaction groups: writes gather in memory
//! and [`Pool::sync`] commits them atomically (data and metadata, a flush
//! barrier, then the uberblock, a flush). A guest's FLUSH ([`Pool::flush`])
//! writes the group's new block pointers to the intent log (a flush
//! barrier for the data, one log write, a flush barrier), replayed at
//! import; it commits when the log cannot
//! take them;
//! [`Pool::set_dirty_limit`] lets the caller bound the open group's memory
//! (writes past it are refused until it commits). Volumes take ZFS's
//! `quota`, `reservation` and `refreservation` ([`Pool::usage`]).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod disk;
pub mod fault;
pub mod format;
pub mod pool;
pub mod space;
pub mod vdev;

/// The fuzz targets' wrappers (feature `fuzzing`, storaged/pool/fuzz).
#[cfg(feature = "fuzzing")]
pub use pool::fuzzing;

pub use disk::{Disk, MemDisk};
pub use pool::{
    DataError, DatasetInfo, Error, Pool, SCAN_ERRORS_KEPT, ScanRecord, ScrubCanceled, ScrubEnd, ScrubProgress, VerifyReport,
};
