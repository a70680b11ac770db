//! send / receive: a snapshot as a byte stream, full or incremental from an
//! earlier snapshot of the same volume (FORMAT.md "Send stream"), made and
//! taken in pieces: a sender holds one piece at a time ([`SendCursor`], a
//! block index), a receiver ([`Receiver`]) one piece, whatever the volume's
//! size. Each piece carries a SHA-256 chained over every piece before it, so
//! a receiver checks each piece before it applies it and refuses a stream cut
//! short, altered, or spliced with pieces of another one. It receives into a
//! hidden volume (`TARGET%recv`) that becomes the target only at the end, in
//! one commit: a refused or interrupted receive leaves nothing visible (and
//! [`Pool::import`] destroys what a power cut left). An incremental stream
//! walks both trees together and skips every subtree whose block pointer is
//! the same in both, so its cost follows what changed, not the volume's size.

use sha2::{Digest, Sha256};

use super::*;

pub const SEND_MAGIC: u64 = u64::from_le_bytes(*b"ALCVSEND");
/// The stream version written and read (1, the stream in one piece, is no
/// longer read).
pub const STREAM_VERSION: u32 = 2;
/// A piece's payload at most: a WRITE record of the largest block fits,
/// with room to spare. A receiver refuses a longer claimed length before it
/// buffers anything of it.
pub const PIECE_MAX: usize = 1 + 8 + 131072 + 4096;
/// A sender closes a piece once its records reach about this many bytes
/// (a piece always holds at least one record).
pub const PIECE_TARGET: usize = 32 * 1024;
/// Bytes before the first piece: magic u64, version u32.
const PREFIX: usize = 12;
/// A piece: length u32, payload, tag.
const TAG: usize = 32;
const REC_END: u8 = 0;
const REC_WRITE: u8 = 1;
const REC_FREE: u8 = 2;
/// Received bytes gathered in memory before a commit.
const RECV_COMMIT_BYTES: usize = 32 << 20;
/// The hidden volume a receive into `target` fills.
pub const RECV_SUFFIX: &str = "%recv";

/// A piece's tag: SHA-256 of the previous piece's tag (zeros for the
/// first), the payload's length (u32 LE) and the payload.
pub fn piece_tag(prev: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update((payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

fn stream_err(s: &str) -> Error {
    Error::Invalid(format!("receive: {s}; nothing received"))
}

/// Where a send is: made by [`Pool::send_start`], moved on by
/// [`Pool::send_piece`]. A few words, whatever the volume's size.
#[derive(Debug, Clone)]
pub struct SendCursor {
    snap: (u64, u64),
    from: Option<(u64, u64)>,
    /// The next block index to compare.
    next: u64,
    nblocks: u64,
    tag: [u8; 32],
    started: bool,
    done: bool,
    bytes: u64,
}

impl SendCursor {
    /// Bytes handed out so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// The last piece (with END) has been handed out.
    pub fn done(&self) -> bool {
        self.done
    }
    /// Blocks compared so far, of the volume's blocks.
    pub fn progress(&self) -> (u64, u64) {
        (self.next.min(self.nblocks), self.nblocks)
    }
}

#[derive(Debug, Clone)]
struct Header {
    incremental: bool,
    volsize: u64,
    volblocksize: u32,
    to_guid: u64,
    to_name: String,
    from_guid: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Prefix,
    Header,
    Body,
    Done,
    Failed,
}

/// A receive under way: made by [`Pool::receive_start`], fed by
/// [`Pool::receive_bytes`], ended by [`Pool::receive_finish`] or
/// [`Pool::receive_abort`]. Holds at most one piece of the stream.
#[derive(Debug)]
pub struct Receiver {
    target: String,
    hidden: String,
    buf: Vec<u8>,
    tag: [u8; 32],
    stage: Stage,
    hdr: Option<Header>,
    /// The base snapshot (incremental): id and guid.
    base: Option<(u64, u64)>,
    /// The hidden volume exists (was made by this receive).
    made: bool,
    pending: usize,
    bytes: u64,
}

impl Receiver {
    /// Stream bytes taken so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// The stream's END piece has arrived and checked.
    pub fn complete(&self) -> bool {
        self.stage == Stage::Done
    }
    /// The bytes held now, waiting for the rest of their piece.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

impl<D: Disk> Pool<D> {
    /// Writes snapshot `snap` to `out` as a stream: everything, or with
    /// `from` (an earlier snapshot of the same volume) only what changed
    /// since. Returns the stream's length in bytes. `out` gets one piece at
    /// a time.
    pub fn send(&mut self, snap: &str, from: Option<&str>, out: &mut dyn FnMut(&[u8])) -> Result<u64, Error> {
        let mut c = self.send_start(snap, from)?;
        let mut piece = Vec::new();
        while self.send_piece(&mut c, &mut piece)? {
            out(&piece);
        }
        Ok(c.bytes())
    }

    /// Starts a send of `snap` (incremental from `from`): nothing is read
    /// yet.
    pub fn send_start(&mut self, snap: &str, from: Option<&str>) -> Result<SendCursor, Error> {
        let s = self.ds(self.id_of(snap)?).clone();
        if !s.snapshot {
            return Err(Error::Invalid(format!("{snap}: send takes a snapshot")));
        }
        let from = match from {
            None => None,
            Some(f) => {
                let fd = self.ds(self.id_of(f)?).clone();
                if !fd.snapshot || fd.head != s.head || fd.creation_txg >= s.creation_txg {
                    return Err(Error::Invalid(format!("{f}: an incremental send starts from an earlier snapshot of the same volume")));
                }
                Some((fd.id, fd.guid))
            }
        };
        Ok(SendCursor { snap: (s.id, s.guid), from, next: 0, nblocks: s.nblocks(), tag: [0; 32], started: false, done: false, bytes: 0 })
    }

    fn send_ds(&self, (id, guid): (u64, u64)) -> Result<Dataset, Error> {
        self.datasets
            .get(&id)
            .filter(|d| d.guid == guid && d.snapshot)
            .cloned()
            .ok_or_else(|| Error::Invalid("send: a snapshot of the stream was destroyed during the send".into()))
    }

    /// The next piece of the stream into `out` (cleared first): `Ok(true)`
    /// with a piece, `Ok(false)` (and `out` empty) once the stream has
    /// ended. Reads about [`PIECE_TARGET`] bytes of the snapshot a call.
    pub fn send_piece(&mut self, c: &mut SendCursor, out: &mut Vec<u8>) -> Result<bool, Error> {
        out.clear();
        if c.done {
            return Ok(false);
        }
        let s = self.send_ds(c.snap)?;
        let from_root = match c.from {
            Some(f) => self.send_ds(f)?.root,
            None => BlockPtr::HOLE,
        };
        let mut w = Writer::default();
        if !c.started {
            out.extend_from_slice(&SEND_MAGIC.to_le_bytes());
            out.extend_from_slice(&STREAM_VERSION.to_le_bytes());
            w.u32(u32::from(c.from.is_some()));
            w.u64(s.volsize);
            w.u32(s.volblocksize);
            w.u64(s.guid);
            w.str(s.name.split_once('@').map_or("", |(_, n)| n));
            w.u64(c.from.map_or(0, |f| f.1));
            c.started = true;
        } else {
            let bs = s.volblocksize as usize;
            let max = (PIECE_TARGET / (9 + bs)).max(1);
            let mut found = Vec::with_capacity(max);
            self.diff_from(from_root, s.root, s.height(), 0, c.next, c.nblocks, &mut found, max)?;
            for &(blk, bp) in &found {
                if bp.is_hole() {
                    w.u8(REC_FREE);
                    w.u64(blk);
                    w.u64(1);
                } else {
                    let data = self.read_data(&bp)?;
                    w.u8(REC_WRITE);
                    w.u64(blk);
                    w.buf.extend_from_slice(&data);
                }
                c.next = blk + 1;
            }
            if found.len() < max {
                w.u8(REC_END);
                c.next = c.nblocks;
                c.done = true;
            }
        }
        let tag = piece_tag(&c.tag, &w.buf);
        out.extend_from_slice(&(w.buf.len() as u32).to_le_bytes());
        out.extend_from_slice(&w.buf);
        out.extend_from_slice(&tag);
        c.tag = tag;
        c.bytes += out.len() as u64;
        Ok(true)
    }

    /// Up to `max` blocks at or after block `from` whose pointers differ
    /// between trees `a` and `b`, in order, into `out`.
    #[allow(clippy::too_many_arguments)]
    fn diff_from(
        &mut self,
        a: BlockPtr,
        b: BlockPtr,
        level: u8,
        first: u64,
        from: u64,
        nblocks: u64,
        out: &mut Vec<(u64, BlockPtr)>,
        max: usize,
    ) -> Result<(), Error> {
        if out.len() >= max || a == b || first >= nblocks || first.saturating_add(span(level)) <= from {
            return Ok(());
        }
        if level == 0 {
            out.push((first, b));
            return Ok(());
        }
        let holes = || vec![BlockPtr::HOLE; BP_PER_INDIRECT as usize];
        let ca = if a.is_hole() || a.level != level { holes() } else { self.read_indirect(&a)? };
        let cb = if b.is_hole() { holes() } else { self.read_indirect(&b)? };
        let cs = span(level - 1);
        let i0 = if from > first { ((from - first) / cs) as usize } else { 0 };
        for i in i0..BP_PER_INDIRECT as usize {
            if out.len() >= max {
                break;
            }
            self.diff_from(ca[i], cb[i], level - 1, first.saturating_add(cs.saturating_mul(i as u64)), from, nblocks, out, max)?;
        }
        Ok(())
    }

    /// Receives a whole stream into volume `target` (see [`Pool::receive_start`]).
    pub fn receive(&mut self, target: &str, stream: &[u8]) -> Result<String, Error> {
        let mut rx = self.receive_start(target)?;
        self.receive_bytes(&mut rx, stream)?;
        self.receive_finish(rx)
    }

    /// Starts receiving a stream into volume `target`: a full stream makes
    /// the volume (it must not exist), an incremental one applies to a
    /// volume whose latest snapshot is the stream's base and that has not
    /// changed since. Either way it ends with the sent snapshot,
    /// `target@NAME`. Nothing is made until the stream's header arrives.
    pub fn receive_start(&mut self, target: &str) -> Result<Receiver, Error> {
        self.check_live()?;
        if target.contains('@') {
            return Err(Error::Invalid(format!("receive: {target}: a receive target is a volume")));
        }
        // A name no volume could have is refused now, not after the stream
        // came (a full stream's check at its header remains: the name may
        // be taken by then).
        if !target.strip_prefix(self.name.as_str()).and_then(|r| r.strip_prefix('/')).is_some_and(valid_component) {
            return Err(Error::Invalid(format!("receive: {target:?}: a volume name is {}/NAME with letters, digits and -_.:", self.name)));
        }
        Ok(Receiver {
            target: target.to_string(),
            hidden: format!("{target}{RECV_SUFFIX}"),
            buf: Vec::new(),
            tag: [0; 32],
            stage: Stage::Prefix,
            hdr: None,
            base: None,
            made: false,
            pending: 0,
            bytes: 0,
        })
    }

    /// Takes the next bytes of the stream (any split): every whole piece
    /// among them is checked, then applied to the hidden volume. On an
    /// error the receive is over (what it made is destroyed).
    pub fn receive_bytes(&mut self, rx: &mut Receiver, data: &[u8]) -> Result<(), Error> {
        if rx.stage == Stage::Failed {
            return Err(Error::Invalid("receive: this receive already failed".into()));
        }
        for part in data.chunks(PIECE_MAX) {
            rx.buf.extend_from_slice(part);
            rx.bytes += part.len() as u64;
            if let Err(e) = self.receive_pieces(rx) {
                self.receive_fail(rx);
                return Err(e);
            }
        }
        Ok(())
    }

    fn receive_fail(&mut self, rx: &mut Receiver) {
        rx.stage = Stage::Failed;
        rx.buf = Vec::new();
        if rx.made {
            // Best effort: the pool may be suspended (import cleans up).
            let _ = self.destroy(&rx.hidden, true);
            rx.made = false;
        }
    }

    fn receive_pieces(&mut self, rx: &mut Receiver) -> Result<(), Error> {
        let mut at = 0;
        let r = loop {
            let b = &rx.buf[at..];
            if rx.stage == Stage::Done {
                if !b.is_empty() {
                    break Err(stream_err("bytes after the end of the stream"));
                }
                break Ok(());
            }
            if rx.stage == Stage::Prefix {
                if b.len() < PREFIX {
                    break Ok(());
                }
                if b[..8] != SEND_MAGIC.to_le_bytes() {
                    break Err(stream_err("not an alcove-pool send stream"));
                }
                let v = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
                if v != STREAM_VERSION {
                    break Err(stream_err(&format!("stream version {v}, this pool reads {STREAM_VERSION}")));
                }
                at += PREFIX;
                rx.stage = Stage::Header;
                continue;
            }
            if b.len() < 4 {
                break Ok(());
            }
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if len == 0 || len > PIECE_MAX {
                break Err(stream_err(&format!("a piece of {len} bytes (1 to {PIECE_MAX}): altered stream")));
            }
            if b.len() < 4 + len + TAG {
                break Ok(());
            }
            let payload = &b[4..4 + len];
            let tag = piece_tag(&rx.tag, payload);
            if tag[..] != b[4 + len..4 + len + TAG] {
                break Err(stream_err("stream altered: a piece's checksum does not match (or it is from another stream)"));
            }
            // The payload is copied out: applying it borrows the pool.
            let payload = payload.to_vec();
            at += 4 + len + TAG;
            rx.tag = tag;
            let r = if rx.stage == Stage::Header { self.receive_header(rx, &payload) } else { self.receive_records(rx, &payload) };
            if let Err(e) = r {
                break Err(e);
            }
        };
        rx.buf.drain(..at.min(rx.buf.len()));
        r
    }

    fn receive_header(&mut self, rx: &mut Receiver, payload: &[u8]) -> Result<(), Error> {
        let mut r = Reader::new(payload);
        let bad = |_| stream_err("bad stream header");
        let incremental = r.u32().map_err(bad)? != 0;
        let volsize = r.u64().map_err(bad)?;
        let volblocksize = r.u32().map_err(bad)?;
        let to_guid = r.u64().map_err(bad)?;
        let to_name = r.str().map_err(bad)?;
        let from_guid = r.u64().map_err(bad)?;
        if r.remaining() != 0
            || !volblocksize.is_power_of_two()
            || !(512..=131072).contains(&volblocksize)
            || volsize == 0
            || volsize % u64::from(volblocksize) != 0
            || volsize > MAX_VOLSIZE
            || !valid_component(&to_name)
            || incremental != (from_guid != 0)
        {
            return Err(stream_err("bad stream header"));
        }
        let target = rx.target.clone();
        let snap_name = format!("{target}@{to_name}");
        if self.id_of(&snap_name).is_ok() {
            return Err(Error::Exists(snap_name));
        }
        if self.id_of(&rx.hidden).is_ok() {
            // What an earlier receive left (a power cut; import cleans up too).
            self.destroy(&rx.hidden, true)?;
        }
        if incremental {
            let sid = self.receive_base(&target, from_guid, volsize)?;
            let sname = self.ds(sid).name.clone();
            self.clone_named(&sname, &rx.hidden)?;
            rx.base = Some((sid, from_guid));
        } else {
            self.check_new_volume_name(&target)?;
            self.create_volume_named(&rx.hidden, volsize, volblocksize)?;
        }
        rx.made = true;
        rx.hdr = Some(Header { incremental, volsize, volblocksize, to_guid, to_name, from_guid });
        rx.stage = Stage::Body;
        Ok(())
    }

    /// The latest snapshot of `target`, if it is the stream's base and the
    /// volume has not changed since.
    fn receive_base(&self, target: &str, from_guid: u64, volsize: u64) -> Result<u64, Error> {
        let id = self.id_of(target)?;
        let d = self.ds(id).clone();
        if d.snapshot {
            return Err(Error::Invalid(format!("receive: {target}: a receive target is a volume")));
        }
        let latest = self.snapshots_of(id).last().map(|&s| self.ds(s).clone());
        let Some(latest) = latest.filter(|l| l.guid == from_guid) else {
            return Err(Error::Invalid(format!("receive: {target}: its latest snapshot is not the stream's base (guid {from_guid:#x})")));
        };
        if d.root != latest.root || self.dirty.get(&id).is_some_and(|m| !m.is_empty()) || d.volsize != volsize {
            return Err(Error::Busy(format!("receive: {target} changed since {}; roll it back first", latest.name)));
        }
        Ok(latest.id)
    }

    fn receive_records(&mut self, rx: &mut Receiver, payload: &[u8]) -> Result<(), Error> {
        let Some(h) = rx.hdr.clone() else { return Err(stream_err("records before the header")) };
        let nblocks = h.volsize / u64::from(h.volblocksize);
        let bs = u64::from(h.volblocksize);
        let mut r = Reader::new(payload);
        let short = |_| stream_err("a record runs past its piece (altered stream?)");
        while r.remaining() > 0 {
            match r.u8().map_err(short)? {
                REC_END => {
                    if r.remaining() != 0 {
                        return Err(stream_err("bytes after the end of the stream"));
                    }
                    rx.stage = Stage::Done;
                    return Ok(());
                }
                REC_WRITE => {
                    let blk = r.u64().map_err(short)?;
                    let data = r.bytes(h.volblocksize as usize).map_err(short)?;
                    if blk >= nblocks {
                        return Err(stream_err("write record past the volume's end"));
                    }
                    self.recv_write(&rx.hidden, blk * bs, data)?;
                    rx.pending += data.len();
                }
                REC_FREE => {
                    let blk = r.u64().map_err(short)?;
                    let n = r.u64().map_err(short)?;
                    if blk.checked_add(n).is_none_or(|e| e > nblocks) {
                        return Err(stream_err("free record past the volume's end"));
                    }
                    // Only blocks holding data need zeros: a FREE over a
                    // huge sparse range costs what it frees, not its length.
                    let zeros = vec![0u8; h.volblocksize as usize];
                    let mut lo = blk;
                    let hi = blk + n;
                    loop {
                        let some = self.blocks_with_data(&rx.hidden, lo, hi, 1024)?;
                        for &b in &some {
                            self.recv_write(&rx.hidden, b * bs, &zeros)?;
                            rx.pending += zeros.len();
                        }
                        match some.last() {
                            Some(&l) if some.len() == 1024 => lo = l + 1,
                            _ => break,
                        }
                    }
                }
                t => return Err(stream_err(&format!("unknown record type {t} (altered stream?)"))),
            }
            if rx.pending >= RECV_COMMIT_BYTES {
                self.sync()?;
                rx.pending = 0;
            }
        }
        Ok(())
    }

    /// Ends a receive: refused (and undone) unless the whole stream came;
    /// else the hidden volume becomes the target with its new snapshot, in
    /// one commit. Returns the snapshot's name.
    pub fn receive_finish(&mut self, mut rx: Receiver) -> Result<String, Error> {
        match rx.stage {
            Stage::Done => {}
            Stage::Failed => return Err(Error::Invalid("receive: this receive already failed".into())),
            _ => {
                self.receive_fail(&mut rx);
                return Err(stream_err("stream cut short"));
            }
        }
        let r = self.receive_commit(&rx);
        if r.is_err() {
            self.receive_fail(&mut rx);
        }
        r
    }

    /// Drops a receive under way: what it made is destroyed.
    pub fn receive_abort(&mut self, mut rx: Receiver) {
        self.receive_fail(&mut rx);
    }

    /// [`Pool::receive_start`], the [`Receiver`] kept by the pool (one at
    /// a time: a second is [`Error::Busy`]); fed by
    /// [`Pool::receive_feed`], ended by [`Pool::receive_close`].
    pub fn receive_open(&mut self, target: &str) -> Result<(), Error> {
        if self.held_receive.is_some() {
            return Err(Error::Busy("receive: another receive is open".into()));
        }
        self.held_receive = Some(self.receive_start(target)?);
        Ok(())
    }

    /// [`Pool::receive_bytes`] into the receive [`Pool::receive_open`] made.
    pub fn receive_feed(&mut self, data: &[u8]) -> Result<(), Error> {
        let mut rx = self.held_receive.take().ok_or_else(|| Error::Invalid("receive: no receive is open".into()))?;
        let r = self.receive_bytes(&mut rx, data);
        self.held_receive = Some(rx);
        r
    }

    /// Ends the receive [`Pool::receive_open`] made: `finish` true is
    /// [`Pool::receive_finish`] (the snapshot received), false
    /// [`Pool::receive_abort`] (`Ok(None)`).
    pub fn receive_close(&mut self, finish: bool) -> Result<Option<String>, Error> {
        let rx = self.held_receive.take().ok_or_else(|| Error::Invalid("receive: no receive is open".into()))?;
        if finish {
            self.receive_finish(rx).map(Some)
        } else {
            self.receive_abort(rx);
            Ok(None)
        }
    }

    fn receive_commit(&mut self, rx: &Receiver) -> Result<String, Error> {
        let Some(h) = rx.hdr.clone() else { return Err(stream_err("stream cut short")) };
        let target = rx.target.clone();
        let snap_name = format!("{target}@{}", h.to_name);
        if self.id_of(&snap_name).is_ok() {
            return Err(Error::Exists(snap_name));
        }
        let hidden_snap = format!("{}@{}", rx.hidden, h.to_name);
        self.snapshot_with_guid(&hidden_snap, Some(h.to_guid))?;
        if !h.incremental {
            // The volume and its snapshot appear together (one commit).
            self.rename(&rx.hidden, &target)?;
            return Ok(snap_name);
        }
        // Incremental: the target takes the hidden clone's tree and its new
        // snapshot; the clone (now the base's tree, every block older than
        // the base) goes, freeing nothing. One commit.
        let base = self.receive_base(&target, h.from_guid, h.volsize)?;
        if rx.base.map(|b| b.0) != Some(base) {
            return Err(Error::Busy(format!("receive: {target}: its snapshots changed during the receive")));
        }
        let hid = self.id_of(&rx.hidden)?;
        let tid = self.id_of(&target)?;
        let sid = self.id_of(&hidden_snap)?;
        self.acct.clear();
        let c = self.ds(hid).clone();
        let props = self.ds(tid).props.clone();
        if self.dirty.get(&hid).is_some_and(|m| !m.is_empty()) {
            return Err(Error::Busy(format!("receive: {} has open writes", rx.hidden)));
        }
        let t = self.datasets.get_mut(&tid).ok_or_else(|| Error::NotFound(target.clone()))?;
        t.root = c.root;
        // Whatever the target killed since its base (nothing, its tree is
        // the base's) belongs to the new snapshot's interval, as the clone's.
        let killed = core::mem::replace(&mut t.deadlist, c.deadlist);
        t.prev_snap_txg = c.prev_snap_txg;
        let s = self.datasets.get_mut(&sid).ok_or_else(|| Error::NotFound(hidden_snap.clone()))?;
        s.head = tid;
        s.name = snap_name.clone();
        s.props = props;
        s.deadlist.extend(killed);
        self.datasets.remove(&hid);
        self.sync()?;
        Ok(snap_name)
    }

    /// Up to `max` blocks in `[lo, hi)` of volume `name` that are not holes
    /// (dirty or in its tree), in order, by a walk that skips hole subtrees.
    fn blocks_with_data(&mut self, name: &str, lo: u64, hi: u64, max: usize) -> Result<Vec<u64>, Error> {
        let d = self.ds(self.id_of(name)?).clone();
        let mut out: BTreeSet<u64> = self.dirty.get(&d.id).map(|m| m.range(lo..hi).map(|(k, _)| *k).take(max).collect()).unwrap_or_default();
        self.data_walk(d.root, 0, lo, hi, &mut out, max)?;
        Ok(out.into_iter().take(max).collect())
    }

    fn data_walk(&mut self, bp: BlockPtr, first: u64, lo: u64, hi: u64, out: &mut BTreeSet<u64>, max: usize) -> Result<(), Error> {
        let end = first.saturating_add(span(bp.level));
        if bp.is_hole() || end <= lo || first >= hi {
            return Ok(());
        }
        // Past `max` found blocks, only smaller ones can still matter.
        if out.len() >= max && out.last().is_some_and(|&l| first > l) {
            return Ok(());
        }
        if bp.level == 0 {
            out.insert(first);
            while out.len() > max {
                out.pop_last();
            }
            return Ok(());
        }
        let cs = span(bp.level - 1);
        for (i, c) in self.read_indirect(&bp)?.into_iter().enumerate() {
            self.data_walk(c, first.saturating_add(cs.saturating_mul(i as u64)), lo, hi, out, max)?;
        }
        Ok(())
    }

    /// A received block; commits first when the caller's dirty bound
    /// would refuse it (the bound holds during a receive too), or when the
    /// open group's worst-case commit would not fit beside it: that
    /// estimate counts a whole path of indirect blocks (4 KiB a level) for
    /// every dirty block, several times the data for small blocks, so a
    /// receive short of `RECV_COMMIT_BYTES` ran out of space with most of
    /// the pool free. After the commit the write is refused only when the
    /// pool has no room for it.
    fn recv_write(&mut self, target: &str, at: u64, data: &[u8]) -> Result<(), Error> {
        match self.write(target, at, data) {
            Err(Error::DirtyFull { .. }) => {
                self.sync()?;
                self.write(target, at, data)
            }
            Err(Error::NoSpace) if self.dirty_blocks() > 0 => {
                self.sync()?;
                self.write(target, at, data)
            }
            r => r,
        }
    }

    /// Destroys what receives interrupted by a power cut or export left
    /// (hidden `%recv` volumes): called at import. Returns how many.
    pub(super) fn destroy_partial_receives(&mut self) -> usize {
        let names: Vec<String> = self.datasets.values().filter(|d| !d.snapshot && d.name.ends_with(RECV_SUFFIX)).map(|d| d.name.clone()).collect();
        let mut n = 0;
        for name in names {
            if self.destroy(&name, true).is_ok() {
                n += 1;
            }
        }
        n
    }
}
