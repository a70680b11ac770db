//! The `pool` interface ([`libipc::interfaces::pool`]) over the pool
//! library: what the control plane (and init) call to manage volumes,
//! snapshots, clones, properties, streams, scrub, and the grants that let a
//! VMM reach its volumes. Only admins get answers ([`PoolError::NotPermitted`]
//! for everyone else, before anything is looked at).
//!
//! Every reply fits in one message: lists and property keys come in pages of
//! at most [`POOL_PAGE_BYTES`] of names, streams and long values in chunks
//! of [`POOL_CHUNK_BYTES`], reasons cut at [`POOL_TEXT_MAX`] bytes.
//!
//! Send and receive streams move in the pool library's pieces (FORMAT.md
//! "Send stream"): storaged holds one piece of each open stream (at most
//! [`alcove_pool::pool::PIECE_MAX`] bytes, about 32 KiB usually), at most
//! [`MAX_STREAMS`] at once, whatever the volume's size. A send makes its next
//! piece when the reader asks for the byte after the current one (reads go
//! forward); a receive checks and applies each piece as its last chunk
//! arrives, into a hidden volume that becomes the target at `receive_end`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use alcove_pool::Error as E;
use alcove_pool::pool::{PROP_CHECKSUM, PROP_COMPRESSION, PROP_QUOTA, PROP_REFRESERVATION, PROP_RESERVATION, Receiver, SendCursor};
use libipc::blkring::BlockDevice;
use libipc::cap::{Cap, Endpoint};
use libipc::interfaces::{
    DatasetEntry, DatasetPage, DiskReport, Granted, POOL_CHUNK_BYTES, POOL_GRANT_MAX, POOL_PAGE_BYTES,
    POOL_REPORTS_MAX, POOL_TEXT_MAX, PoolChild, PoolError, PoolScan, PoolStatus, PropChunk, PropPage, ScrubReport,
    StreamOpened, VolumeInfo, pool,
};
use libipc::reply_caps;

use crate::{Grant, RingFactory, Storaged};

/// Streams open at once (over all callers).
pub const MAX_STREAMS: usize = 2;
/// Bytes a user property's value may have (the pool's own bound).
const PROP_VALUE_MAX: usize = 8 * 1024;

/// A send stream being read, or a receive stream being filled.
pub(crate) struct Stream {
    id: u32,
    /// The badge of the caller that opened it.
    owner: u64,
    kind: Kind,
}

enum Kind {
    /// The current piece, starting at stream byte `start`.
    Send { cursor: SendCursor, piece: Vec<u8>, start: u64 },
    Receive { target: String, rx: Receiver },
}

/// Bytes of a disk's name in `status` at most.
const DISK_NAME_MAX: usize = 64;
/// Bytes of a report's text in `status` at most (so a full status, every
/// child and report at its longest, still fits in one message).
const REPORT_MAX: usize = 200;

/// `s`, cut to at most [`POOL_TEXT_MAX`] bytes at a character boundary.
pub(crate) fn text(s: &str) -> String {
    cut(s, POOL_TEXT_MAX as usize)
}

/// `s`, cut to at most `max` bytes (at least 4) at a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What `pool.scrub` replies: the walk's figures, the disks' counters, and
/// the first [`POOL_REPORTS_MAX`] permanent errors (a dataset name cut to
/// 200 bytes, the rest whole) with their count, so the reply fits one message.
pub(crate) fn scrub_report(r: &alcove_pool::VerifyReport, stats: &[alcove_pool::vdev::ChildStats], state: &str) -> ScrubReport {
    ScrubReport {
        txg: r.txg,
        datasets: r.datasets as u32,
        blocks: r.blocks,
        bytes: r.bytes,
        checksum_errors: stats.iter().map(|s| s.checksum_errors).sum(),
        repaired_bytes: stats.iter().map(|s| s.repaired_bytes).sum(),
        state: state.to_string(),
        data_error_count: r.errors.len() as u64,
        data_errors: r
            .errors
            .iter()
            .take(POOL_REPORTS_MAX as usize)
            .map(|e| {
                // A long name is cut, not the bytes that follow it.
                let mut e = e.clone();
                e.dataset = e.dataset.map(|d| cut(&d, REPORT_MAX));
                text(&e.to_string())
            })
            .collect(),
    }
}

/// Logs what a scrub found (storaged's log, as `zpool status` would say it).
pub(crate) fn log_scrub(report: &ScrubReport) {
    log::info!(
        "pool: scrub of txg {}: {} blocks, {} repaired bytes, {} permanent errors, {}",
        report.txg,
        report.blocks,
        report.repaired_bytes,
        report.data_error_count,
        report.state
    );
    for e in &report.data_errors {
        log::warn!("pool: permanent error: {e}");
    }
}

fn err(e: E) -> PoolError {
    match e {
        E::Io(s) => PoolError::Io { why: text(&s) },
        E::Checksum { offset } => PoolError::Checksum { offset },
        E::Format(s) | E::Corrupt(s) => PoolError::Corrupt { why: text(&s) },
        E::NoSpace => PoolError::NoSpace,
        E::NotFound(s) => PoolError::NotFound { name: text(&s) },
        E::Exists(s) => PoolError::Exists { name: text(&s) },
        E::Busy(s) => PoolError::Busy { why: text(&s) },
        E::Invalid(s) => PoolError::Invalid { why: text(&s) },
        E::Quota(s) => PoolError::Quota { why: text(&s) },
        E::Space(s) => PoolError::Space { why: text(&s) },
        E::DirtyFull { dirty, limit } => PoolError::Io { why: format!("open group holds {dirty} bytes (limit {limit})") },
    }
}

/// `status`'s `scan`: the scrub under way, else the last one cancelled
/// since, else the last one finished.
fn scan_of<D: alcove_pool::Disk>(p: &alcove_pool::Pool<D>) -> Option<PoolScan> {
    if let Some(s) = p.scrub_progress() {
        let (start, bytes, total, repaired, errors) = (s.start, s.bytes, s.total, s.repaired, s.errors);
        return Some(PoolScan { start, bytes, total, repaired, errors, running: true, ..Default::default() });
    }
    if let Some(c) = p.scrub_canceled() {
        return Some(PoolScan { start: c.start, end: c.end, bytes: c.bytes, canceled: true, ..Default::default() });
    }
    p.last_scrub().map(|s| PoolScan {
        start: s.start,
        end: s.end,
        bytes: s.bytes,
        repaired: s.repaired,
        errors: s.errors_total,
        ..Default::default()
    })
}

/// Names of at most [`POOL_PAGE_BYTES`] bytes in all, at least one.
fn page<T>(items: impl Iterator<Item = (String, T)>) -> (Vec<T>, Option<String>) {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut last = None;
    for (name, item) in items {
        if !out.is_empty() && bytes + name.len() > POOL_PAGE_BYTES as usize {
            return (out, last);
        }
        bytes += name.len();
        last = Some(name);
        out.push(item);
    }
    (out, None)
}

impl<D: BlockDevice, F: RingFactory> Storaged<D, F> {
    /// The admin check, then the pool.
    fn admin_pool(&mut self) -> Result<core::cell::RefMut<'_, crate::MachinePool<D>>, PoolError> {
        self.service.requests += 1;
        if !self.is_admin() {
            log::warn!("pool request from badge {:#x} refused: not an admin", self.caller);
            return Err(PoolError::NotPermitted);
        }
        self.pool.as_ref().map(|p| p.borrow_mut()).ok_or(PoolError::NoPool)
    }

    fn admin(&mut self) -> Result<(), PoolError> {
        self.admin_pool().map(drop)
    }

    fn stream(&mut self, stream: u32) -> Result<usize, PoolError> {
        let caller = self.caller;
        self.streams.iter().position(|s| s.id == stream && s.owner == caller).ok_or(PoolError::NoSuchStream { stream })
    }

    fn new_stream(&mut self, kind: Kind) -> Result<u32, PoolError> {
        if self.streams.len() >= MAX_STREAMS {
            return Err(PoolError::TooManyStreams { limit: MAX_STREAMS as u32 });
        }
        let id = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(1).max(1);
        self.streams.push(Stream { id, owner: self.caller, kind });
        Ok(id)
    }

    /// Refuses the hidden volume of a receive under way (`TARGET%recv`, and
    /// its snapshots): it is no dataset until the receive ends, and only
    /// the receive may change it. `pool.get` and `list` do not show it.
    fn visible(name: &str) -> Result<(), PoolError> {
        if name.split('@').next().unwrap_or("").ends_with(alcove_pool::pool::RECV_SUFFIX) {
            return Err(PoolError::NotFound { name: text(name) });
        }
        Ok(())
    }

    fn busy(&self, name: &str) -> Result<(), PoolError> {
        match self.in_use(name) {
            Some(why) => Err(PoolError::Busy { why: text(&why) }),
            None => Ok(()),
        }
    }
}

impl<D: BlockDevice, F: RingFactory> pool::Server for Storaged<D, F> {
    fn status(&mut self) -> Result<PoolStatus, PoolError> {
        let grants = self.grants.len() as u32;
        let reports: Vec<DiskReport> = self
            .reports
            .iter()
            .take(POOL_REPORTS_MAX as usize)
            .map(|r| DiskReport { disk: cut(&r.disk, DISK_NAME_MAX), what: cut(&r.what, REPORT_MAX) })
            .collect();
        let reports_total = self.reports.len() as u32;
        let names = self.pool_disks.clone();
        let p = self.admin_pool()?;
        let children = p
            .child_stats()
            .iter()
            .enumerate()
            .map(|(i, s)| PoolChild {
                disk: cut(names.get(i).map_or("?", |n| n.as_str()), DISK_NAME_MAX),
                state: String::from(if s.faulted {
                    "FAULTED"
                } else if s.read_errors + s.write_errors + s.checksum_errors > 0 {
                    "DEGRADED"
                } else {
                    "ONLINE"
                }),
                read_errors: s.read_errors,
                write_errors: s.write_errors,
                checksum_errors: s.checksum_errors,
                repaired_bytes: s.repaired_bytes,
            })
            .collect();
        Ok(PoolStatus {
            name: p.name().to_string(),
            guid: p.guid(),
            state: p.state().to_string(),
            txg: p.txg(),
            vdev: String::from(if p.children_total() > 1 { "mirror" } else { "disk" }),
            children,
            children_total: p.children_total() as u32,
            size_bytes: p.size_bytes(),
            free_bytes: p.free_bytes(),
            reports,
            reports_total,
            grants,
            scan: scan_of(&p),
        })
    }

    fn list(&mut self, after: String) -> Result<DatasetPage, PoolError> {
        let p = self.admin_pool()?;
        let mut all = p.list();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let (datasets, next) = page(
            all.into_iter()
                .filter(|d| d.name > after)
                .map(|d| (d.name.clone(), DatasetEntry { name: d.name, snapshot: d.snapshot, volsize: d.volsize })),
        );
        Ok(DatasetPage { datasets, next })
    }

    fn create(&mut self, name: String, volsize: u64, volblocksize: u32) -> Result<(), PoolError> {
        let mut p = self.admin_pool()?;
        let bs = if volblocksize == 0 { alcove_pool::pool::DEFAULT_VOLBLOCKSIZE } else { volblocksize };
        p.create_volume(&name, volsize, bs).map_err(err)?;
        log::info!("pool: created {name} ({volsize} bytes, volblocksize {bs})");
        Ok(())
    }

    fn destroy(&mut self, name: String, recursive: bool) -> Result<(), PoolError> {
        self.admin()?;
        Self::visible(&name)?;
        self.busy(&name)?;
        let mut p = self.admin_pool()?;
        p.destroy(&name, recursive).map_err(err)?;
        log::info!("pool: destroyed {name}{}", if recursive { " and its snapshots" } else { "" });
        Ok(())
    }

    fn get(&mut self, name: String) -> Result<VolumeInfo, PoolError> {
        let mut p = self.admin_pool()?;
        let d = p.get(&name).map_err(err)?;
        let space = p.space_of(&name).map_err(err)?;
        let usage = if d.snapshot { Default::default() } else { p.usage(&name).map_err(err)? };
        Ok(VolumeInfo {
            name: d.name,
            guid: d.guid,
            snapshot: d.snapshot,
            volsize: d.volsize,
            volblocksize: d.volblocksize,
            creation_txg: d.creation_txg,
            creation: d.creation,
            origin: d.origin,
            compression: d.props.get(PROP_COMPRESSION).cloned().unwrap_or_else(|| "off".into()),
            used: usage.used,
            available: usage.available,
            referenced: space.referenced,
            compressratio_x100: space.compressratio_x100(),
            quota: usage.quota,
            reservation: usage.reservation,
            refreservation: usage.refreservation,
            user_props: d.props.keys().filter(|k| k.contains(':')).count() as u32,
            checksum: d.props.get(PROP_CHECKSUM).cloned().unwrap_or_else(|| "on".into()),
        })
    }

    fn props(&mut self, name: String, after: String) -> Result<PropPage, PoolError> {
        let p = self.admin_pool()?;
        let d = p.get(&name).map_err(err)?;
        let (keys, next) =
            page(d.props.into_keys().filter(|k| k.contains(':') && *k > after).map(|k| (k.clone(), k)));
        Ok(PropPage { keys, next })
    }

    fn get_prop(&mut self, name: String, key: String, offset: u32) -> Result<PropChunk, PoolError> {
        let p = self.admin_pool()?;
        let d = p.get(&name).map_err(err)?;
        let value = d.props.get(&key).ok_or_else(|| PoolError::NotFound { name: text(&format!("{name} property {key}")) })?;
        let bytes = value.as_bytes();
        let from = (offset as usize).min(bytes.len());
        let to = (from + POOL_CHUNK_BYTES as usize).min(bytes.len());
        Ok(PropChunk { bytes: bytes[from..to].to_vec(), total_bytes: bytes.len() as u32 })
    }

    fn set(&mut self, name: String, key: String, value: String, append: bool) -> Result<(), PoolError> {
        let mut p = self.admin_pool()?;
        Self::visible(&name)?;
        let native = [PROP_COMPRESSION, PROP_CHECKSUM, PROP_QUOTA, PROP_RESERVATION, PROP_REFRESERVATION].contains(&key.as_str());
        let value = if append {
            if native {
                return Err(PoolError::Invalid { why: format!("property {key:?}: append is for user properties") });
            }
            let d = p.get(&name).map_err(err)?;
            let mut whole = d.props.get(&key).cloned().unwrap_or_default();
            if whole.len() + value.len() > PROP_VALUE_MAX {
                return Err(PoolError::TooLarge { what: text(&format!("property {key} of {name}")), max: PROP_VALUE_MAX as u64 });
            }
            whole.push_str(&value);
            whole
        } else {
            value
        };
        p.set_prop(&name, &key, &value).map_err(err)?;
        p.sync().map_err(err)
    }

    fn snapshot(&mut self, name: String) -> Result<(), PoolError> {
        let mut p = self.admin_pool()?;
        Self::visible(&name)?;
        p.snapshot(&name).map_err(err)
    }

    fn clone_snapshot(&mut self, snapshot: String, name: String) -> Result<(), PoolError> {
        let mut p = self.admin_pool()?;
        Self::visible(&snapshot)?;
        p.clone_snapshot(&snapshot, &name).map_err(err)
    }

    fn rename(&mut self, from: String, to: String) -> Result<(), PoolError> {
        self.admin()?;
        Self::visible(&from)?;
        let volume = from.split_once('@').map_or(from.as_str(), |(v, _)| v);
        self.busy(volume)?;
        let mut p = self.admin_pool()?;
        p.rename(&from, &to).map_err(err)?;
        log::info!("pool: renamed {from} to {to}");
        Ok(())
    }

    fn rollback(&mut self, snapshot: String) -> Result<(), PoolError> {
        self.admin()?;
        Self::visible(&snapshot)?;
        let volume = snapshot.split_once('@').map_or(snapshot.as_str(), |(v, _)| v);
        if let Some(why) = self.in_use(volume).filter(|w| w.contains("ring")) {
            return Err(PoolError::Busy { why: text(&why) });
        }
        let mut p = self.admin_pool()?;
        p.rollback(&snapshot).map_err(err)
    }

    fn send(&mut self, snapshot: String, from: Option<String>) -> Result<StreamOpened, PoolError> {
        self.admin()?;
        Self::visible(&snapshot)?;
        if let Some(f) = &from {
            Self::visible(f)?;
        }
        if self.streams.len() >= MAX_STREAMS {
            return Err(PoolError::TooManyStreams { limit: MAX_STREAMS as u32 });
        }
        let cursor = self.admin_pool()?.send_start(&snapshot, from.as_deref()).map_err(err)?;
        let stream = self.new_stream(Kind::Send { cursor, piece: Vec::new(), start: 0 })?;
        Ok(StreamOpened { stream, bytes: u64::MAX })
    }

    fn send_chunk(&mut self, stream: u32, offset: u64) -> Result<Vec<u8>, PoolError> {
        self.admin()?;
        let i = self.stream(stream)?;
        let Kind::Send { piece, start, .. } = &self.streams[i].kind else {
            return Err(PoolError::Invalid { why: format!("stream {stream} is a receive stream") });
        };
        let end = *start + piece.len() as u64;
        if offset < *start || offset > end {
            return Err(PoolError::Invalid {
                why: format!("send stream {stream}: offset {offset}, the stream is at {start}..{end} (read it in order)"),
            });
        }
        if offset == end {
            // The next piece (or the end): the stream's state moves out
            // while the pool makes it.
            let mut st = self.streams.swap_remove(i);
            let r = match &mut st.kind {
                Kind::Send { cursor, piece, start } => self.admin_pool().and_then(|mut p| {
                    *start = end;
                    p.send_piece(cursor, piece).map_err(err)
                }),
                Kind::Receive { .. } => Ok(false),
            };
            match r {
                Ok(_) => self.streams.push(st),
                Err(e) => {
                    log::info!("pool: send stream {stream} ended: {e:?}");
                    return Err(e);
                }
            }
        }
        let i = self.stream(stream)?;
        let Kind::Send { piece, start, .. } = &self.streams[i].kind else { return Ok(Vec::new()) };
        let from = (offset - *start) as usize;
        let to = (from + POOL_CHUNK_BYTES as usize).min(piece.len());
        Ok(piece[from..to].to_vec())
    }

    fn receive(&mut self, target: String) -> Result<u32, PoolError> {
        self.admin()?;
        self.busy(&target)?;
        if self.streams.len() >= MAX_STREAMS {
            return Err(PoolError::TooManyStreams { limit: MAX_STREAMS as u32 });
        }
        let rx = self.admin_pool()?.receive_start(&target).map_err(err)?;
        self.new_stream(Kind::Receive { target, rx })
    }

    fn receive_chunk(&mut self, stream: u32, bytes: Vec<u8>) -> Result<u64, PoolError> {
        self.admin()?;
        let i = self.stream(stream)?;
        if !matches!(self.streams[i].kind, Kind::Receive { .. }) {
            return Err(PoolError::Invalid { why: format!("stream {stream} is a send stream") });
        }
        if bytes.len() > POOL_CHUNK_BYTES as usize {
            return Err(PoolError::TooLarge { what: "a stream chunk".into(), max: u64::from(POOL_CHUNK_BYTES) });
        }
        let mut st = self.streams.swap_remove(i);
        let Kind::Receive { rx, .. } = &mut st.kind else { unreachable!() };
        let r = self.admin_pool().and_then(|mut p| p.receive_bytes(rx, &bytes).map_err(err));
        match r {
            Ok(()) => {
                let n = rx.bytes();
                self.streams.push(st);
                Ok(n)
            }
            // The receive is over (the pool undid it): so is the stream.
            Err(e) => Err(e),
        }
    }

    fn receive_end(&mut self, stream: u32) -> Result<String, PoolError> {
        self.admin()?;
        let i = self.stream(stream)?;
        if !matches!(self.streams[i].kind, Kind::Receive { .. }) {
            return Err(PoolError::Invalid { why: format!("stream {stream} is a send stream") });
        }
        let Kind::Receive { target, rx } = self.streams.swap_remove(i).kind else { unreachable!() };
        let bytes = rx.bytes();
        let busy = self.in_use(&target);
        let mut p = self.admin_pool()?;
        if let Some(why) = busy {
            p.receive_abort(rx);
            return Err(PoolError::Busy { why: text(&why) });
        }
        let made = p.receive_finish(rx).map_err(err)?;
        log::info!("pool: received {made} ({bytes} bytes)");
        Ok(made)
    }

    fn close_stream(&mut self, stream: u32) -> Result<(), PoolError> {
        self.admin()?;
        let i = self.stream(stream)?;
        if let Kind::Receive { rx, .. } = self.streams.swap_remove(i).kind {
            // Whatever it made goes.
            self.admin_pool()?.receive_abort(rx);
        }
        Ok(())
    }

    fn scrub(&mut self) -> Result<ScrubReport, PoolError> {
        let mut p = self.admin_pool()?;
        let r = p.scrub().map_err(err)?;
        let report = scrub_report(&r, p.child_stats(), p.state());
        log_scrub(&report);
        Ok(report)
    }

    fn scrub_start(&mut self) -> Result<(), PoolError> {
        let mut p = self.admin_pool()?;
        p.scrub_start().map_err(err)?;
        let s = p.scrub_progress().unwrap_or_default();
        log::info!("pool: scrub of txg {} started ({} bytes), in steps between requests", s.txg, s.total);
        Ok(())
    }

    fn scrub_stop(&mut self) -> Result<(), PoolError> {
        let mut p = self.admin_pool()?;
        let walked = p.scrub_progress().map(|s| s.bytes);
        if !p.scrub_cancel() {
            return Err(PoolError::Invalid { why: "no scrub is in progress".into() });
        }
        // The commit records that no scrub is under way: an import after
        // does not resume it.
        p.sync().map_err(err)?;
        log::info!("pool: scrub cancelled after {} bytes", walked.unwrap_or(0));
        Ok(())
    }

    fn grant(&mut self, volumes: Vec<String>) -> Result<Granted, PoolError> {
        {
            let p = self.admin_pool()?;
            if volumes.is_empty() || volumes.len() > POOL_GRANT_MAX as usize {
                return Err(PoolError::Invalid { why: format!("a grant names 1 to {POOL_GRANT_MAX} volumes, got {}", volumes.len()) });
            }
            for v in &volumes {
                p.get(v).map_err(err)?;
            }
        }
        let badge = self.next_grant;
        let slot = self.factory.mint(badge).map_err(|why| PoolError::GrantSetup { why: text(&why) })?;
        if let Err(e) = reply_caps::attach(Cap::<Endpoint>::from_slot(slot)) {
            self.factory.unmint(slot);
            return Err(PoolError::GrantSetup { why: format!("{e}") });
        }
        self.next_grant += 1;
        log::info!("pool: grant {badge:#x}: {} ({} live)", volumes.join(", "), self.grants.len() + 1);
        self.grants.push(Grant { badge, volumes, slot: Some(slot) });
        Ok(Granted { badge })
    }

    fn revoke(&mut self, badge: u64) -> Result<u32, PoolError> {
        self.admin()?;
        let i = self
            .grants
            .iter()
            .position(|g| g.badge == badge)
            .ok_or_else(|| PoolError::NotFound { name: format!("grant {badge:#x}") })?;
        let grant = self.grants.swap_remove(i);
        if let Some(slot) = grant.slot {
            self.factory.unmint(slot);
        }
        let mut closed = 0;
        while let Some(i) = self.rings.iter().position(|r| r.owner == badge) {
            let ring = self.rings.swap_remove(i);
            self.drop_ring(ring);
            closed += 1;
        }
        log::info!("pool: grant {badge:#x} revoked ({closed} rings closed, {} live)", self.grants.len());
        Ok(closed)
    }
}
