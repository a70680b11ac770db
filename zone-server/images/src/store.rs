//! The image store on the pool, as SmartOS's imgadm keeps it on ZFS:
//! an installed image is volume `zones/<uuid>` with snapshot
//! `zones/<uuid>@final` (what instances clone) and its manifest in user
//! properties of the volume (`alcove:manifest.0`, `.1`, … in pieces of at
//! most [`PROP_CHUNK`] bytes: the pool keeps values up to 8 KiB).
//!
//! An install writes into `zones/<uuid>-partial` and renames it only once
//! the file's size, SHA-1 and decompression all checked out, so a failed or
//! interrupted install never looks installed; a leftover `-partial` volume
//! is destroyed by the next install of that image (imgadm does the same).
//!
//! The file (after gzip or xz, when `files[0].compression` says so) is
//! either
//! * a raw disk image of at most `image_size` MiB, written from offset 0
//!   (the rest of the volume reads as zeros; zero blocks are not written,
//!   the volume stays sparse), or
//! * the pool's own send stream (FORMAT.md "Send stream": it begins with
//!   the bytes `ALCVSEND`) of a volume of exactly `image_size` MiB, the
//!   equivalent of SmartOS's zvol images, which are `zfs send` streams. It
//!   goes to the pool's receive as it arrives (the pool checks and applies
//!   it piece by piece, about 32 KiB at a time, into a hidden volume that
//!   becomes the target only when the stream ends): the store holds none
//!   of it, whatever the image's size.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use sha1::{Digest, Sha1};

use crate::gzip::GzipReader;
use crate::manifest::{Compression, Manifest, hex, is_uuid};
use crate::xz::XzReader;
use crate::{Error, PoolOps};

/// The user property prefix of the stored manifest.
pub const PROP_MANIFEST: &str = "alcove:manifest";
/// The user property holding the IMGAPI source the image came from.
pub const PROP_SOURCE: &str = "alcove:source";
/// Bytes of manifest JSON per property.
pub const PROP_CHUNK: usize = 8000;
/// The snapshot instances clone.
pub const FINAL: &str = "final";
/// Volume block size of image volumes (the pool's default).
pub const IMAGE_VOLBLOCKSIZE: u32 = alcove_pool::pool::DEFAULT_VOLBLOCKSIZE;
/// The first bytes of a pool send stream.
pub const SEND_MAGIC: &[u8; 8] = b"ALCVSEND";
/// Bytes written between commits while installing (the pool holds an open
/// group's blocks in memory).
const COMMIT_EVERY: u64 = 32 << 20;
/// Raw images are written in pieces of this many bytes.
const WRITE_CHUNK: usize = 128 * 1024;

/// An installed image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub manifest: Manifest,
    /// `zones/<uuid>`.
    pub volume: String,
    pub pool: String,
    /// Volumes cloned from the image (instance disks), sorted.
    pub clones: Vec<String>,
    pub source: Option<String>,
}

/// `zones/<uuid>`.
pub fn image_volume<P: PoolOps + ?Sized>(pool: &P, uuid: &str) -> String {
    format!("{}/{uuid}", pool.pool_name())
}

fn check_uuid(what: &str, uuid: &str) -> Result<(), Error> {
    if is_uuid(uuid) { Ok(()) } else { Err(Error::Invalid(format!("{what} {uuid:?}: must be a lower-case UUID"))) }
}

enum Format {
    /// Not yet known: the first bytes, until there are 8.
    Unknown(Vec<u8>),
    Raw,
    /// A send stream, going to the pool's receive.
    Stream,
}

/// Where decompressed bytes go.
struct Sink {
    format: Format,
    volume: String,
    volsize: u64,
    /// Bytes of the disk image so far (raw) or of the stream (stream).
    at: u64,
    /// A raw piece not yet written (less than [`WRITE_CHUNK`]).
    pending: Vec<u8>,
    since_commit: u64,
    created: bool,
    /// A receive is open in the pool ([`PoolOps::receive_start`]).
    receiving: bool,
}

impl Sink {
    /// The largest send stream of a volume of `volsize` bytes: each block
    /// of at least 512 bytes costs 9 bytes of record header, each piece of
    /// about 32 KiB 36 bytes of length and tag (under 1 byte a 512-byte
    /// block), plus the stream's prefix, header piece and end.
    fn stream_limit(volsize: u64) -> u64 {
        volsize + volsize / 512 * 10 + 64 * 1024
    }

    fn take(&mut self, pool: &mut dyn PoolOps, mut data: &[u8]) -> Result<(), Error> {
        if let Format::Unknown(head) = &mut self.format {
            let n = (8 - head.len()).min(data.len());
            head.extend_from_slice(&data[..n]);
            data = &data[n..];
            if head.len() < 8 {
                return Ok(());
            }
            let head = core::mem::take(head);
            self.decide(pool, head)?;
        }
        self.push(pool, data)
    }

    fn decide(&mut self, pool: &mut dyn PoolOps, head: Vec<u8>) -> Result<(), Error> {
        if head.as_slice() == SEND_MAGIC {
            self.format = Format::Stream;
            pool.receive_start(&self.volume)?;
            self.receiving = true;
        } else {
            self.format = Format::Raw;
            pool.create_volume(&self.volume, self.volsize, IMAGE_VOLBLOCKSIZE)?;
            self.created = true;
        }
        self.push(pool, &head)
    }

    fn push(&mut self, pool: &mut dyn PoolOps, data: &[u8]) -> Result<(), Error> {
        match &mut self.format {
            Format::Unknown(_) => Ok(()),
            Format::Stream => {
                let limit = Self::stream_limit(self.volsize);
                let len = self.at + data.len() as u64;
                if len > limit {
                    return Err(Error::Stream(format!("longer than a stream of image_size ({limit} bytes at most)")));
                }
                self.at = len;
                pool.receive_bytes(data).map_err(receive_err)
            }
            Format::Raw => {
                if self.at + self.pending.len() as u64 + data.len() as u64 > self.volsize {
                    return Err(Error::TooLarge { limit: self.volsize });
                }
                let mut data = data;
                if !data.is_empty() && self.pending.capacity() < WRITE_CHUNK {
                    // Exactly one piece: grown by doubling from small
                    // writes it would take up to twice that.
                    self.pending.reserve_exact(WRITE_CHUNK - self.pending.len());
                }
                while !data.is_empty() {
                    let n = (WRITE_CHUNK - self.pending.len()).min(data.len());
                    self.pending.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.pending.len() == WRITE_CHUNK {
                        self.write_pending(pool)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes the pending piece (zero-padded to a sector) unless it is all
    /// zeros: the new volume already reads zeros there.
    fn write_pending(&mut self, pool: &mut dyn PoolOps) -> Result<(), Error> {
        let n = self.pending.len() as u64;
        if n == 0 {
            return Ok(());
        }
        if self.pending.iter().any(|&b| b != 0) {
            let padded = n.div_ceil(512) * 512;
            self.pending.resize(padded as usize, 0);
            pool.write(&self.volume, self.at, &self.pending)?;
            self.since_commit += padded;
            if self.since_commit >= COMMIT_EVERY {
                pool.sync()?;
                self.since_commit = 0;
            }
        }
        self.at += n;
        self.pending.clear();
        Ok(())
    }

    /// The file ended: the volume holds the image, not yet snapshotted.
    fn finish(&mut self, pool: &mut dyn PoolOps) -> Result<(), Error> {
        if let Format::Unknown(head) = &mut self.format {
            let head = core::mem::take(head);
            self.decide(pool, head)?;
        }
        match core::mem::replace(&mut self.format, Format::Raw) {
            Format::Stream => {
                self.receiving = false;
                let snap = pool.receive_end(true).map_err(receive_err)?;
                let snap = snap.ok_or_else(|| Error::Stream("the pool received no snapshot".into()))?;
                self.created = true;
                let size = pool.list().into_iter().find(|d| d.name == self.volume).map_or(0, |d| d.volsize);
                if size != self.volsize {
                    return Err(Error::Stream(format!(
                        "its volume is {size} bytes, image_size says {} MiB ({} bytes)",
                        self.volsize >> 20,
                        self.volsize
                    )));
                }
                // The stream's snapshot becomes @final.
                let fin = format!("{}@{FINAL}", self.volume);
                if snap != fin {
                    pool.rename(&snap, &fin)?;
                }
                Ok(())
            }
            _ => {
                self.write_pending(pool)?;
                pool.sync()?;
                Ok(())
            }
        }
    }
}

/// The pool's refusals of a stream itself are the image's fault.
fn receive_err(e: alcove_pool::Error) -> Error {
    match e {
        alcove_pool::Error::Invalid(s) if s.starts_with("receive:") => Error::Stream(s),
        e => Error::Pool(e),
    }
}

/// The file's decompression (`files[0].compression`).
enum Decompress {
    None,
    Gzip(GzipReader),
    Xz(XzReader),
}

/// An install in progress: feed it the file's bytes as they arrive
/// ([`Install::write`]), then [`Install::finish`]. Any error leaves no
/// volume behind. It borrows the pool for its life; [`Installing`] is the
/// same install holding no borrow (the pool handed to each call), for a
/// caller that keeps it between requests (zone-server's stepped import).
pub struct Install<'p, P: PoolOps> {
    pool: &'p mut P,
    state: Installing,
}

impl<'p, P: PoolOps> Install<'p, P> {
    /// Starts installing `manifest`'s image; `source` is the IMGAPI source
    /// it comes from (kept for `imgadm get`).
    pub fn begin(pool: &'p mut P, manifest: Manifest, source: Option<&str>) -> Result<Self, Error> {
        let state = Installing::begin(pool, manifest, source)?;
        Ok(Install { pool, state })
    }

    /// Lets the decompression grow the process's heap (an xz dictionary
    /// that does not fit it: see [`crate::xz`]).
    pub fn grow_heap_with(&mut self, grow: crate::xz::GrowHeap) {
        self.state.grow_heap_with(grow);
    }

    /// Bytes of the file taken so far.
    pub fn received(&self) -> u64 {
        self.state.received()
    }

    /// Takes the next bytes of the file.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.state.write(&mut *self.pool, bytes)
    }

    /// The file ended: checks it, snapshots `@final`, and makes the image
    /// visible as `zones/<uuid>`.
    pub fn finish(self) -> Result<ImageRecord, Error> {
        self.state.finish(self.pool)
    }

    /// Gives up: the partial volume is destroyed.
    pub fn cancel(self) {
        self.state.cancel(self.pool);
    }
}

/// An install in progress that holds no borrow of the pool: each call is
/// handed it (the same pool every time). See [`Install`].
pub struct Installing {
    manifest: Manifest,
    source: Option<String>,
    sha1: Sha1,
    received: u64,
    decompress: Decompress,
    sink: Sink,
    failed: bool,
}

impl Installing {
    /// Starts installing `manifest`'s image; `source` is the IMGAPI source
    /// it comes from (kept for `imgadm get`).
    pub fn begin<P: PoolOps + ?Sized>(pool: &mut P, manifest: Manifest, source: Option<&str>) -> Result<Self, Error> {
        let volume = image_volume(pool, &manifest.uuid);
        let partial = format!("{volume}-partial");
        let names: Vec<String> = pool.list().into_iter().map(|d| d.name).collect();
        if names.contains(&volume) {
            return Err(Error::Exists(manifest.uuid.clone()));
        }
        if let Some(s) = source
            && (s.len() > 4096 || s.chars().any(char::is_control))
        {
            return Err(Error::Invalid(format!("image source {s:?}: at most 4096 characters, no control characters")));
        }
        // An install dropped half way (its transport gone) may have left a
        // receive open in the pool: dropped with what it wrote.
        let _ = pool.receive_end(false);
        if names.contains(&partial) {
            // An interrupted install of this image.
            pool.destroy(&partial, true)?;
        }
        let volsize = manifest.image_bytes();
        let decompress = match manifest.file.compression {
            Compression::Gzip => Decompress::Gzip(GzipReader::new(Sink::stream_limit(volsize))),
            Compression::Xz => Decompress::Xz(XzReader::new(Sink::stream_limit(volsize))),
            Compression::None => Decompress::None,
        };
        Ok(Installing {
            source: source.map(str::to_owned),
            sha1: Sha1::new(),
            received: 0,
            decompress,
            sink: Sink {
                format: Format::Unknown(Vec::new()),
                volume: partial,
                volsize,
                at: 0,
                pending: Vec::new(),
                since_commit: 0,
                created: false,
                receiving: false,
            },
            manifest,
            failed: false,
        })
    }

    /// The manifest being installed.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Lets the decompression grow the process's heap (an xz dictionary
    /// that does not fit it: see [`crate::xz`]).
    pub fn grow_heap_with(&mut self, grow: crate::xz::GrowHeap) {
        if let Decompress::Xz(x) = &mut self.decompress {
            x.set_grow_heap(grow);
        }
    }

    /// Bytes of the file taken so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes the next bytes of the file.
    pub fn write<P: PoolOps>(&mut self, pool: &mut P, bytes: &[u8]) -> Result<(), Error> {
        if self.failed {
            return Err(Error::Invalid("install already failed".into()));
        }
        let r = self.write_inner(pool, bytes);
        if r.is_err() {
            self.abort(pool);
        }
        r
    }

    fn write_inner<P: PoolOps>(&mut self, pool: &mut P, bytes: &[u8]) -> Result<(), Error> {
        let declared = self.manifest.file.size;
        if self.received + bytes.len() as u64 > declared {
            return Err(Error::FileTooLong { declared });
        }
        self.received += bytes.len() as u64;
        self.sha1.update(bytes);
        let pool: &mut dyn PoolOps = pool;
        let sink = &mut self.sink;
        match &mut self.decompress {
            Decompress::Gzip(g) => g.feed(bytes, &mut |piece| sink.take(pool, piece)),
            Decompress::Xz(x) => x.feed(bytes, &mut |piece| sink.take(pool, piece)),
            Decompress::None => sink.take(pool, bytes),
        }
    }

    /// The file ended: checks it, snapshots `@final`, and makes the image
    /// visible as `zones/<uuid>`.
    pub fn finish<P: PoolOps>(mut self, pool: &mut P) -> Result<ImageRecord, Error> {
        if self.failed {
            return Err(Error::Invalid("install already failed".into()));
        }
        let r = self.finish_inner(pool);
        if r.is_err() {
            self.abort(pool);
        }
        r
    }

    fn finish_inner<P: PoolOps>(&mut self, pool: &mut P) -> Result<ImageRecord, Error> {
        let m = &self.manifest;
        if self.received != m.file.size {
            return Err(Error::Truncated { declared: m.file.size, got: self.received });
        }
        let got: [u8; 20] = core::mem::take(&mut self.sha1).finalize().into();
        if got != m.file.sha1 {
            return Err(Error::Sha1 { expected: hex(&m.file.sha1), got: hex(&got) });
        }
        match &self.decompress {
            Decompress::Gzip(g) => g.finish()?,
            Decompress::Xz(x) => x.finish()?,
            Decompress::None => {}
        }
        let pool: &mut dyn PoolOps = pool;
        self.sink.finish(pool)?;
        let partial = self.sink.volume.clone();
        let json = self.manifest.to_json_string();
        store_manifest(pool, &partial, &json)?;
        if let Some(s) = &self.source {
            pool.set_user_prop(&partial, PROP_SOURCE, s)?;
        }
        let fin = format!("{partial}@{FINAL}");
        if pool.list().iter().any(|d| d.name == fin) {
            pool.sync()?;
        } else {
            pool.snapshot(&fin)?;
        }
        let volume = image_volume(pool, &self.manifest.uuid);
        pool.rename(&partial, &volume)?;
        Ok(ImageRecord {
            manifest: self.manifest.clone(),
            pool: pool.pool_name(),
            volume,
            clones: Vec::new(),
            source: self.source.clone(),
        })
    }

    /// Gives up: the partial volume is destroyed.
    pub fn cancel<P: PoolOps>(mut self, pool: &mut P) {
        self.abort(pool);
    }

    fn abort<P: PoolOps>(&mut self, pool: &mut P) {
        self.failed = true;
        if core::mem::take(&mut self.sink.receiving) {
            // What the receive wrote (a hidden volume) goes with it.
            let _ = pool.receive_end(false);
        }
        if self.sink.created || pool.list().iter().any(|d| d.name == self.sink.volume) {
            // Best effort: a pool that fails here is reported by its own
            // next operation; the next install removes the leftover.
            let _ = pool.destroy(&self.sink.volume, true);
        }
    }
}

fn store_manifest(pool: &mut dyn PoolOps, volume: &str, json: &str) -> Result<(), Error> {
    let mut rest = json;
    let mut i = 0;
    while !rest.is_empty() {
        let mut cut = rest.len().min(PROP_CHUNK);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        pool.set_user_prop(volume, &format!("{PROP_MANIFEST}.{i}"), &rest[..cut])?;
        rest = &rest[cut..];
        i += 1;
    }
    Ok(())
}

/// Yields an image file's bytes: a download in progress, a file.
pub trait FileReader {
    /// Fills the front of `buf` with the next bytes; 0 at the end of the file.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error>;
}

impl FileReader for &[u8] {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        *self = &self[n..];
        Ok(n)
    }
}

/// Installs an image from a reader (`imgadm import`: the transport's body
/// of `GET /images/:uuid/file`), handing each new progress line (see
/// [`crate::imgapi::Progress`]) to `progress`. A reader that fails leaves
/// nothing behind, as a bad file does.
pub fn install_from<P: PoolOps, R: FileReader + ?Sized>(
    pool: &mut P,
    manifest: Manifest,
    reader: &mut R,
    source: Option<&str>,
    progress: &mut dyn FnMut(String),
) -> Result<ImageRecord, Error> {
    let mut meter = crate::imgapi::Progress::new(&manifest);
    let mut inst = Install::begin(pool, manifest, source)?;
    let mut buf = alloc::vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n.min(buf.len()),
            Err(e) => {
                inst.cancel();
                return Err(e);
            }
        };
        inst.write(&buf[..n])?;
        if let Some(line) = meter.advance(n as u64) {
            progress(line);
        }
    }
    inst.finish()
}

/// Installs an image whose whole file is in memory (`imgadm install -m
/// MANIFEST -f FILE`).
pub fn install<P: PoolOps>(
    pool: &mut P,
    manifest: Manifest,
    mut file: &[u8],
    source: Option<&str>,
) -> Result<ImageRecord, Error> {
    install_from(pool, manifest, &mut file, source, &mut |_| {})
}

/// Every installed image, oldest `published_at` first, then by name (as
/// `imgadm list` sorts). Volumes whose stored manifest cannot be read are
/// left out of the list; [`get`] names what is wrong with them.
pub fn list<P: PoolOps + ?Sized>(pool: &P) -> Vec<ImageRecord> {
    let all = pool.list();
    let prefix = format!("{}/", pool.pool_name());
    let mut out: Vec<ImageRecord> = all
        .iter()
        .filter(|d| !d.snapshot && d.name.strip_prefix(&prefix).is_some_and(is_uuid))
        .filter_map(|d| record(&pool.pool_name(), &all, &d.name).ok())
        .collect();
    out.sort_by(|a, b| {
        (a.manifest.published_at.as_deref(), &a.manifest.name).cmp(&(b.manifest.published_at.as_deref(), &b.manifest.name))
    });
    out
}

/// The manifest stored on image volume `d` (`volume`), checked to be that
/// image's.
fn stored_manifest(d: &alcove_pool::DatasetInfo, volume: &str) -> Result<Manifest, Error> {
    let mut json = String::new();
    for i in 0.. {
        match d.props.get(&format!("{PROP_MANIFEST}.{i}")) {
            Some(s) => json.push_str(s),
            None => break,
        }
    }
    if json.is_empty() {
        return Err(Error::Corrupt(format!("{volume}: not an image (no stored manifest)")));
    }
    let manifest =
        Manifest::parse(json.as_bytes()).map_err(|e| Error::Corrupt(format!("{volume}: stored manifest unreadable: {e}")))?;
    if volume.rsplit('/').next() != Some(manifest.uuid.as_str()) {
        return Err(Error::Corrupt(format!("{volume}: its stored manifest is image {}", manifest.uuid)));
    }
    Ok(manifest)
}

/// One installed image's manifest (what `vmadm create` needs of a disk's
/// image): read from its volume alone, where [`get`] reads every dataset
/// of the pool to find the image's clones.
pub fn manifest<P: PoolOps + ?Sized>(pool: &P, uuid: &str) -> Result<Manifest, Error> {
    check_uuid("image", uuid)?;
    let volume = image_volume(pool, uuid);
    let Some(d) = pool.volume(&volume) else {
        return Err(Error::NotFound { uuid: uuid.to_string(), zpool: pool.pool_name() });
    };
    stored_manifest(&d, &volume)
}

fn record(pool_name: &str, all: &[alcove_pool::DatasetInfo], volume: &str) -> Result<ImageRecord, Error> {
    let d = all.iter().find(|d| d.name == volume).ok_or_else(|| Error::Corrupt(format!("{volume}: no such volume")))?;
    let manifest = stored_manifest(d, volume)?;
    let snap_prefix = format!("{volume}@");
    let mut clones: Vec<String> = all
        .iter()
        .filter(|c| !c.snapshot && c.origin.as_deref().is_some_and(|o| o.starts_with(&snap_prefix)))
        .map(|c| c.name.clone())
        .collect();
    clones.sort();
    Ok(ImageRecord {
        manifest,
        volume: volume.to_string(),
        pool: pool_name.to_string(),
        clones,
        source: d.props.get(PROP_SOURCE).cloned(),
    })
}

/// One installed image (`imgadm get` / `show`).
pub fn get<P: PoolOps + ?Sized>(pool: &P, uuid: &str) -> Result<ImageRecord, Error> {
    check_uuid("image", uuid)?;
    let volume = image_volume(pool, uuid);
    let all = pool.list();
    if !all.iter().any(|d| d.name == volume) {
        return Err(Error::NotFound { uuid: uuid.to_string(), zpool: pool.pool_name() });
    }
    record(&pool.pool_name(), &all, &volume)
}

/// `imgadm delete`: refused while an instance volume is a clone of it.
pub fn delete<P: PoolOps>(pool: &mut P, uuid: &str) -> Result<(), Error> {
    let rec = get(pool, uuid)?;
    if !rec.clones.is_empty() {
        return Err(Error::InUse { image: uuid.to_string(), clones: rec.clones });
    }
    pool.destroy(&rec.volume, true)?;
    Ok(())
}

/// An instance's disk N from an image: the clone `zones/<instance>-disk<N>`
/// of `zones/<image>@final`, instant and sharing every block. Returns the
/// new volume's name.
pub fn clone_for_instance<P: PoolOps>(pool: &mut P, image: &str, instance: &str, disk: u32) -> Result<String, Error> {
    check_uuid("instance", instance)?;
    let rec = get(pool, image)?;
    let target = alcove_pool::pool::volume_name(&pool.pool_name(), instance, disk);
    pool.clone_snapshot(&format!("{}@{FINAL}", rec.volume), &target)?;
    Ok(target)
}
