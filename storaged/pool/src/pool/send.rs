//! send / receive: a snapshot as a byte stream, full or incremental from an
//! earlier snapshot of the same volume, checksummed end to end (FORMAT.md
//! "Send stream"). An incremental stream walks both trees together and
//! skips every subtree whose block pointer is the same in both, so its cost
//! follows what changed, not the volume's size.

use sha2::{Digest, Sha256};

use super::*;

pub const SEND_MAGIC: u64 = u64::from_le_bytes(*b"ALCVSEND");
const REC_END: u8 = 0;
const REC_WRITE: u8 = 1;
const REC_FREE: u8 = 2;
/// Received bytes gathered in memory before a commit.
const RECV_COMMIT_BYTES: usize = 32 << 20;

struct Sink<'a> {
    out: &'a mut dyn FnMut(&[u8]),
    hash: Sha256,
    bytes: u64,
    /// The stream is cut (and the walk stops) once past this many bytes.
    limit: u64,
}

impl Sink<'_> {
    fn put(&mut self, b: &[u8]) {
        if self.cut() {
            return;
        }
        self.hash.update(b);
        (self.out)(b);
        self.bytes += b.len() as u64;
    }

    fn cut(&self) -> bool {
        self.bytes > self.limit
    }
}

enum Record<'a> {
    Write(u64, &'a [u8]),
    Free(u64, u64),
}

fn stream_err(s: &str) -> Error {
    Error::Invalid(format!("receive: {s}; nothing received"))
}

impl<D: Disk> Pool<D> {
    /// Writes snapshot `snap` to `out` as a stream: everything, or with
    /// `from` (an earlier snapshot of the same volume) only what changed
    /// since. Returns the stream's length in bytes.
    pub fn send(&mut self, snap: &str, from: Option<&str>, out: &mut dyn FnMut(&[u8])) -> Result<u64, Error> {
        self.send_bounded(snap, from, u64::MAX, out)?.ok_or_else(|| Error::Invalid("send stream past u64::MAX bytes".into()))
    }

    /// [`Pool::send`], stopping as soon as the stream is longer than `limit`
    /// bytes: `Ok(None)`, having read little more than `limit` bytes of the
    /// snapshot (storaged, which holds a stream in memory and serves no one
    /// else while it makes it, refuses a large one at that cost).
    pub fn send_bounded(&mut self, snap: &str, from: Option<&str>, limit: u64, out: &mut dyn FnMut(&[u8])) -> Result<Option<u64>, Error> {
        let s = self.ds(self.id_of(snap)?).clone();
        if !s.snapshot {
            return Err(Error::Invalid(format!("{snap}: send takes a snapshot")));
        }
        let (from_guid, from_root) = match from {
            None => (0, BlockPtr::HOLE),
            Some(f) => {
                let fd = self.ds(self.id_of(f)?).clone();
                if !fd.snapshot || fd.head != s.head || fd.creation_txg >= s.creation_txg {
                    return Err(Error::Invalid(format!("{f}: an incremental send starts from an earlier snapshot of the same volume")));
                }
                (fd.guid, fd.root)
            }
        };
        let mut sink = Sink { out, hash: Sha256::new(), bytes: 0, limit };
        let mut w = Writer::default();
        w.u64(SEND_MAGIC);
        w.u32(VERSION);
        w.u32(u32::from(from.is_some()));
        w.u64(s.volsize);
        w.u32(s.volblocksize);
        w.u64(s.guid);
        w.str(s.name.split_once('@').map_or("", |(_, n)| n));
        w.u64(from_guid);
        sink.put(&w.buf);
        self.diff(from_root, s.root, s.height(), 0, &s, &mut sink)?;
        sink.put(&[REC_END]);
        if sink.cut() || sink.bytes > limit.saturating_sub(32) {
            return Ok(None);
        }
        let sum: [u8; 32] = sink.hash.clone().finalize().into();
        (sink.out)(&sum);
        Ok(Some(sink.bytes + 32))
    }

    fn diff(&mut self, a: BlockPtr, b: BlockPtr, level: u8, first: u64, d: &Dataset, sink: &mut Sink<'_>) -> Result<(), Error> {
        if a == b || first >= d.nblocks() || sink.cut() {
            return Ok(());
        }
        if level == 0 {
            if b.is_hole() {
                sink.put(&[REC_FREE]);
                sink.put(&first.to_le_bytes());
                sink.put(&1u64.to_le_bytes());
            } else {
                let data = self.read_data(&b)?;
                sink.put(&[REC_WRITE]);
                sink.put(&first.to_le_bytes());
                sink.put(&data);
            }
            return Ok(());
        }
        let holes = || vec![BlockPtr::HOLE; BP_PER_INDIRECT as usize];
        let ca = if a.is_hole() || a.level != level { holes() } else { self.read_indirect(&a)? };
        let cb = if b.is_hole() { holes() } else { self.read_indirect(&b)? };
        let cs = span(level - 1);
        for i in 0..BP_PER_INDIRECT as usize {
            self.diff(ca[i], cb[i], level - 1, first.saturating_add(cs.saturating_mul(i as u64)), d, sink)?;
        }
        Ok(())
    }

    /// Receives a stream into volume `target`: a full stream makes the
    /// volume (it must not exist), an incremental one applies to a volume
    /// whose latest snapshot is the stream's base and that has not changed
    /// since. Either way it ends with the sent snapshot, `target@NAME`, whose
    /// name it returns. The whole stream is parsed and its checksum checked
    /// before anything is written: a stream cut short or altered is refused.
    pub fn receive(&mut self, target: &str, stream: &[u8]) -> Result<String, Error> {
        self.check_live()?;
        let mut r = Reader::new(stream);
        let short = |_| stream_err("stream cut short");
        if r.u64().map_err(short)? != SEND_MAGIC {
            return Err(stream_err("not an alcove-pool send stream"));
        }
        let v = r.u32().map_err(short)?;
        if v != VERSION {
            return Err(stream_err(&format!("stream version {v}, this pool reads {VERSION}")));
        }
        let incremental = r.u32().map_err(short)? != 0;
        let volsize = r.u64().map_err(short)?;
        let volblocksize = r.u32().map_err(short)?;
        let to_guid = r.u64().map_err(short)?;
        let to_name = r.str().map_err(short)?;
        let from_guid = r.u64().map_err(short)?;
        if !volblocksize.is_power_of_two()
            || !(512..=131072).contains(&volblocksize)
            || volsize == 0
            || volsize % u64::from(volblocksize) != 0
            || volsize > MAX_VOLSIZE
            || !valid_component(&to_name)
            || incremental != (from_guid != 0)
        {
            return Err(stream_err("bad stream header"));
        }
        let nblocks = volsize / u64::from(volblocksize);
        let mut records = Vec::new();
        let end;
        loop {
            match r.u8().map_err(short)? {
                REC_END => {
                    end = stream.len() - r.remaining();
                    break;
                }
                REC_WRITE => {
                    let blk = r.u64().map_err(short)?;
                    let data = r.bytes(volblocksize as usize).map_err(short)?;
                    if blk >= nblocks {
                        return Err(stream_err("write record past the volume's end"));
                    }
                    records.push(Record::Write(blk, data));
                }
                REC_FREE => {
                    let blk = r.u64().map_err(short)?;
                    let n = r.u64().map_err(short)?;
                    if blk.checked_add(n).is_none_or(|e| e > nblocks) {
                        return Err(stream_err("free record past the volume's end"));
                    }
                    records.push(Record::Free(blk, n));
                }
                t => return Err(stream_err(&format!("unknown record type {t} (altered stream?)"))),
            }
        }
        if r.remaining() < 32 {
            return Err(stream_err("stream cut short"));
        }
        if r.remaining() > 32 {
            return Err(stream_err("bytes after the end of the stream"));
        }
        if checksum(&stream[..end]) != stream[end..] {
            return Err(stream_err("stream altered: its checksum does not match"));
        }
        let snap_name = format!("{target}@{to_name}");
        if self.id_of(&snap_name).is_ok() {
            return Err(Error::Exists(snap_name));
        }
        let base = if incremental {
            let id = self.id_of(target)?;
            let d = self.ds(id).clone();
            let latest = self.snapshots_of(id).last().map(|&s| self.ds(s).clone());
            let Some(latest) = latest.filter(|l| l.guid == from_guid) else {
                return Err(Error::Invalid(format!(
                    "receive: {target}: its latest snapshot is not the stream's base (guid {from_guid:#x})"
                )));
            };
            if d.root != latest.root || self.dirty.get(&id).is_some_and(|m| !m.is_empty()) || d.volsize != volsize {
                return Err(Error::Busy(format!("receive: {target} changed since {}; roll it back first", latest.name)));
            }
            Some(latest.name)
        } else {
            self.create_volume(target, volsize, volblocksize)?;
            None
        };
        let r = self.apply(target, &records, volblocksize).and_then(|()| self.snapshot_with_guid(&snap_name, Some(to_guid)));
        if let Err(e) = r {
            // Leave the pool as it was (best effort: the pool may be suspended).
            let _ = match &base {
                Some(b) => self.rollback(b),
                None => self.destroy(target, true),
            };
            return Err(e);
        }
        Ok(snap_name)
    }

    fn apply(&mut self, target: &str, records: &[Record<'_>], volblocksize: u32) -> Result<(), Error> {
        let bs = u64::from(volblocksize);
        let zeros = vec![0u8; volblocksize as usize];
        let mut pending = 0usize;
        for rec in records {
            match *rec {
                Record::Write(blk, data) => {
                    self.recv_write(target, blk * bs, data)?;
                    pending += data.len();
                }
                Record::Free(blk, n) => {
                    // Only blocks holding data need zeros: a FREE over a
                    // huge sparse range costs what it frees, not its length.
                    for b in self.blocks_with_data(target, blk, blk.saturating_add(n))? {
                        self.recv_write(target, b * bs, &zeros)?;
                        pending += zeros.len();
                    }
                }
            }
            if pending >= RECV_COMMIT_BYTES {
                self.sync()?;
                pending = 0;
            }
        }
        Ok(())
    }

    /// The blocks in `[lo, hi)` of volume `name` that are not holes (dirty
    /// or in its tree), by a walk that skips hole subtrees.
    fn blocks_with_data(&mut self, name: &str, lo: u64, hi: u64) -> Result<Vec<u64>, Error> {
        let d = self.ds(self.id_of(name)?).clone();
        let mut out: BTreeSet<u64> = self.dirty.get(&d.id).map(|m| m.range(lo..hi).map(|(k, _)| *k).collect()).unwrap_or_default();
        self.data_walk(d.root, 0, lo, hi, &mut out)?;
        Ok(out.into_iter().collect())
    }

    fn data_walk(&mut self, bp: BlockPtr, first: u64, lo: u64, hi: u64, out: &mut BTreeSet<u64>) -> Result<(), Error> {
        let end = first.saturating_add(span(bp.level));
        if bp.is_hole() || end <= lo || first >= hi {
            return Ok(());
        }
        if bp.level == 0 {
            out.insert(first);
            return Ok(());
        }
        let cs = span(bp.level - 1);
        for (i, c) in self.read_indirect(&bp)?.into_iter().enumerate() {
            self.data_walk(c, first.saturating_add(cs.saturating_mul(i as u64)), lo, hi, out)?;
        }
        Ok(())
    }

    /// A received block; commits first when the caller's dirty bound
    /// would refuse it (the bound holds during a receive too).
    fn recv_write(&mut self, target: &str, at: u64, data: &[u8]) -> Result<(), Error> {
        match self.write(target, at, data) {
            Err(Error::DirtyFull { .. }) => {
                self.sync()?;
                self.write(target, at, data)
            }
            r => r,
        }
    }
}
