//! The on-disk structures (FORMAT.md beside this crate describes each field
//! and invariant). Everything is little-endian; every structure read from a
//! disk is parsed here into typed values and checked once, and bad input is
//! an error, never a panic.

use alloc::string::String;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// The unit of every disk request.
pub const SECTOR: u64 = 512;
/// The allocation unit: every block's physical size is a multiple of it.
pub const BLOCK: u64 = 4096;
/// One label: a 4 KiB header and a ring of uberblock slots.
pub const LABEL_SIZE: u64 = 128 * 1024;
/// Labels per disk: two at the front, two at the end.
pub const LABELS: usize = 4;
/// Uberblock slot size, and slots per label.
pub const UB_SLOT: u64 = 4096;
pub const UB_SLOTS: u64 = (LABEL_SIZE - BLOCK) / UB_SLOT;
/// An indirect block: [`BP_SIZE`]-byte block pointers.
pub const INDIRECT_SIZE: usize = 4096;
pub const BP_SIZE: usize = 64;
pub const BP_PER_INDIRECT: u64 = (INDIRECT_SIZE / BP_SIZE) as u64;
pub const VERSION: u32 = 1;
/// The smallest disk: four labels and 1 MiB of data.
pub const MIN_DISK: u64 = LABELS as u64 * LABEL_SIZE + 1024 * 1024;
/// Mirror children at most; names at most (bytes).
pub const MAX_CHILDREN: usize = 8;
pub const MAX_NAME: usize = 255;

pub const LABEL_MAGIC: u64 = u64::from_le_bytes(*b"ALCVLABL");
pub const UB_MAGIC: u64 = u64::from_le_bytes(*b"ALCVUBER");
pub const MOS_MAGIC: u64 = u64::from_le_bytes(*b"ALCVMOS1");
/// The MOS's own version (FORMAT.md "MOS"): 2 adds each dataset's
/// `creation` time and the scan record, 3 the scrub in progress record;
/// versions 1 and 2 are still read.
pub const MOS_VERSION: u32 = 3;

pub const LOG_MAGIC: u64 = u64::from_le_bytes(*b"ALCVZIL1");
/// The intent log's version written: 3 is sealed with fletcher4 (as ZFS's
/// log blocks are) and written only after a barrier made the data blocks it
/// names durable, so at replay a data block that fails its checksum was
/// damaged, not torn; 2 (fletcher4, no such barrier) and 1 (SHA-256) are
/// still read, and there a data block that fails ends the log.
pub const LOG_VERSION: u32 = 3;

/// The space each intent-log block is given (it is written only as far as
/// its records reach, in whole [`BLOCK`]s).
pub const LOG_BLOCK: u64 = 32 * 1024;
/// A log block's fixed header: magic, version, len, pool guid, txg, seq,
/// next, record count.
pub const LOG_HEADER: usize = 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4;
/// One log record: volume id, block index, block pointer.
pub const LOG_RECORD: usize = 8 + 8 + BP_SIZE;
/// Records one log block holds.
pub const LOG_RECORDS_PER_BLOCK: usize = (LOG_BLOCK as usize - LOG_HEADER - 32) / LOG_RECORD;

pub type Checksum = [u8; 32];

/// Block pointer `comp` values.
pub const COMP_OFF: u8 = 0;
/// LZ4 block format (`lz4_flex`): the physical block is the compressed
/// length (u32) then the compressed bytes, zero-padded.
pub const COMP_LZ4: u8 = 1;
/// The largest logical block (volblocksize's limit).
pub const MAX_LSIZE: u32 = 128 * 1024;

/// Block pointer `cksum` values: which function `checksum` is of the
/// block's physical bytes. 0 is what every pool before the byte existed
/// wrote (it was reserved, zero), so those pools read unchanged.
pub const CKSUM_SHA256: u8 = 0;
/// BLAKE3 (its 32-byte default output), from the `blake3` crate's portable
/// code: several times faster than SHA-256 without SIMD or SHA extensions,
/// which is how storaged runs.
pub const CKSUM_BLAKE3: u8 = 1;

/// ZFS's fletcher4 (FORMAT.md "Checksums"): the default function of data
/// blocks (`checksum=on`), as on ZFS. Not collision-resistant: it catches
/// the accidents of disks, not a forger.
pub const CKSUM_FLETCHER4: u8 = 2;

/// SHA-256 (FIPS 180-4) of `data`: the labels' and uberblocks' seals.
pub fn checksum(data: &[u8]) -> Checksum {
    Sha256::digest(data).into()
}

/// ZFS's fletcher4 of `data`: four 64-bit running sums over its
/// little-endian 32-bit words, `a += w; b += a; c += b; d += c`, wrapping;
/// the checksum is a, b, c, d, each little-endian. A tail shorter than a
/// word is zero-padded to one (a block's psize is a multiple of 4096, so no
/// block has one). Own code, in the `alcove-fletcher4` crate beside this
/// one: the scalar recurrence, and an SSE2 loop where the build allows it
/// (the `sse2` feature; the same sums); no well-kept crate has ZFS's
/// variant (the `fletcher` crate's are the classic two-sum modular ones).
pub fn fletcher4(data: &[u8]) -> Checksum {
    let sums = alcove_fletcher4::fletcher4(data);
    let mut out = [0u8; 32];
    for (i, s) in sums.into_iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&s.to_le_bytes());
    }
    out
}

/// `data`'s checksum by the function `algo` names ([`CKSUM_SHA256`],
/// [`CKSUM_BLAKE3`] or [`CKSUM_FLETCHER4`]; block pointers are checked for
/// one of those when parsed, and any other value is SHA-256 here).
pub fn checksum_with(algo: u8, data: &[u8]) -> Checksum {
    match algo {
        CKSUM_BLAKE3 => *blake3::hash(data).as_bytes(),
        CKSUM_FLETCHER4 => fletcher4(data),
        _ => checksum(data),
    }
}

/// Whether a block pointer may name `algo` (0, 1 or 2).
pub fn cksum_known(algo: u8) -> bool {
    matches!(algo, CKSUM_SHA256 | CKSUM_BLAKE3 | CKSUM_FLETCHER4)
}

/// The function of a volume's indirect blocks when its data blocks use
/// `data`: the same one, fletcher4 included, as on ZFS (FORMAT.md
/// "Checksums" says why a collision-resistant function buys nothing there).
/// Pools written before session 18 have BLAKE3 indirect blocks above
/// fletcher4 data; their pointers say so, and they read unchanged.
pub fn indirect_cksum(data: u8) -> u8 {
    data
}

/// The function of the MOS: fletcher4, as ZFS's MOS (FORMAT.md
/// "Checksums"); BLAKE3 before session 18, still read (the uberblock's
/// pointer to the MOS names its function).
pub const MOS_CKSUM: u8 = CKSUM_FLETCHER4;

/// The `checksum` property's values, as ZFS names them.
pub fn cksum_name(algo: u8) -> &'static str {
    match algo {
        CKSUM_BLAKE3 => "blake3",
        CKSUM_FLETCHER4 => "fletcher4",
        _ => "sha256",
    }
}

/// `fletcher4`, `blake3` or `sha256`; `on` is ZFS's default, fletcher4.
/// `off` (and anything else) is none: see [`cksum_refusal`].
pub fn cksum_from_name(name: &str) -> Option<u8> {
    match name {
        "sha256" => Some(CKSUM_SHA256),
        "blake3" => Some(CKSUM_BLAKE3),
        "fletcher4" | "on" => Some(CKSUM_FLETCHER4),
        _ => None,
    }
}

/// Why `checksum=value` is refused, for a value [`cksum_from_name`] does
/// not take.
pub fn cksum_refusal(value: &str) -> String {
    if value == "off" {
        String::from(
            "property \"checksum\": off is not supported: reads, mirror self-healing and scrub need every block \
             checksummed (use on, fletcher4, blake3 or sha256)",
        )
    } else {
        alloc::format!("property \"checksum\": must be on, fletcher4, blake3 or sha256, got {value:?}")
    }
}

/// Where the labels of a disk of `asize` bytes are.
pub fn label_offset(asize: u64, index: usize) -> u64 {
    match index {
        0 => 0,
        1 => LABEL_SIZE,
        2 => asize - 2 * LABEL_SIZE,
        _ => asize - LABEL_SIZE,
    }
}

/// The usable size of a disk: rounded down to [`BLOCK`].
pub fn asize_of(disk_size: u64) -> u64 {
    disk_size / BLOCK * BLOCK
}

/// The allocatable region of a vdev of `asize` bytes.
pub fn data_region(asize: u64) -> (u64, u64) {
    (2 * LABEL_SIZE, asize - 2 * LABEL_SIZE)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    Truncated,
    BadMagic,
    BadVersion(u32),
    BadChecksum,
    BadField(&'static str),
}

/// What a block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockKind {
    Data = 1,
    Indirect = 2,
    Mos = 3,
}

/// A block pointer: where a child block is, how big, when it was born and
/// what its bytes hash to. All zeros is a hole (reads as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPtr {
    /// Byte offset on every child of the vdev (0: hole).
    pub offset: u64,
    /// Physical (allocated, checksummed) size in bytes, a multiple of BLOCK.
    pub psize: u32,
    /// Logical size in bytes.
    pub lsize: u32,
    /// The transaction group that wrote it.
    pub birth: u64,
    pub kind: u8,
    /// [`COMP_OFF`] or [`COMP_LZ4`] (data blocks only).
    pub comp: u8,
    /// 0 for data, n for an indirect block n levels above data.
    pub level: u8,
    /// Which function `checksum` is: [`CKSUM_SHA256`], [`CKSUM_BLAKE3`] or
    /// [`CKSUM_FLETCHER4`].
    pub cksum: u8,
    pub checksum: Checksum,
}

impl BlockPtr {
    pub const HOLE: BlockPtr =
        BlockPtr { offset: 0, psize: 0, lsize: 0, birth: 0, kind: 0, comp: 0, level: 0, cksum: 0, checksum: [0; 32] };

    pub fn is_hole(&self) -> bool {
        self.offset == 0
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[..BP_SIZE].fill(0);
        out[0..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.psize.to_le_bytes());
        out[12..16].copy_from_slice(&self.lsize.to_le_bytes());
        out[16..24].copy_from_slice(&self.birth.to_le_bytes());
        out[24] = self.kind;
        out[25] = self.comp;
        out[26] = self.level;
        out[27] = self.cksum;
        out[32..64].copy_from_slice(&self.checksum);
    }

    /// Parses and checks a block pointer (offsets against the vdev are
    /// checked by the reader, which knows its size).
    pub fn decode(b: &[u8]) -> Result<BlockPtr, FormatError> {
        if b.len() < BP_SIZE {
            return Err(FormatError::Truncated);
        }
        let bp = BlockPtr {
            offset: u64le(&b[0..8]),
            psize: u32le(&b[8..12]),
            lsize: u32le(&b[12..16]),
            birth: u64le(&b[16..24]),
            kind: b[24],
            comp: b[25],
            level: b[26],
            cksum: b[27],
            checksum: b[32..64].try_into().unwrap_or([0; 32]),
        };
        if b[28..32].iter().any(|&x| x != 0) {
            return Err(FormatError::BadField("block pointer reserved bytes"));
        }
        if !cksum_known(bp.cksum) {
            return Err(FormatError::BadField("block pointer checksum function"));
        }
        if bp.is_hole() {
            if bp != BlockPtr::HOLE {
                return Err(FormatError::BadField("hole with fields set"));
            }
            return Ok(bp);
        }
        if bp.psize == 0 || u64::from(bp.psize) % BLOCK != 0 || !bp.offset.is_multiple_of(BLOCK) {
            return Err(FormatError::BadField("block pointer size or offset"));
        }
        let sizes_ok = match bp.comp {
            COMP_OFF => bp.lsize <= bp.psize,
            COMP_LZ4 => bp.kind == BlockKind::Data as u8 && bp.lsize <= MAX_LSIZE && bp.psize < bp.lsize.next_multiple_of(BLOCK as u32),
            _ => false,
        };
        if bp.lsize == 0 || !sizes_ok || bp.birth == 0 {
            return Err(FormatError::BadField("block pointer lsize, compression or birth"));
        }
        match bp.kind {
            1 if bp.level == 0 => {}
            2 if bp.level > 0 && bp.psize as usize == INDIRECT_SIZE => {}
            3 if bp.level == 0 => {}
            _ => return Err(FormatError::BadField("block pointer kind or level")),
        }
        Ok(bp)
    }
}

/// The static part of a label: who this disk is in which pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelHeader {
    pub pool_guid: u64,
    pub pool_name: String,
    pub vdev_guid: u64,
    /// This disk's place among `children`.
    pub child: u32,
    /// Every child's guid, in order (one for a single disk).
    pub children: Vec<u64>,
    /// Usable size of every child (the smallest).
    pub asize: u64,
}

impl LabelHeader {
    pub fn encode(&self, label_index: u32) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(LABEL_MAGIC);
        w.u32(VERSION);
        w.u32(label_index);
        w.u64(self.pool_guid);
        w.u64(self.vdev_guid);
        w.u64(self.asize);
        w.u32(self.child);
        w.u32(self.children.len() as u32);
        for g in &self.children {
            w.u64(*g);
        }
        w.str(&self.pool_name);
        seal(w.buf, BLOCK as usize)
    }

    pub fn decode(b: &[u8]) -> Result<(LabelHeader, u32), FormatError> {
        let body = unseal(b, BLOCK as usize)?;
        let mut r = Reader::new(body);
        if r.u64()? != LABEL_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let v = r.u32()?;
        if v != VERSION {
            return Err(FormatError::BadVersion(v));
        }
        let index = r.u32()?;
        let pool_guid = r.u64()?;
        let vdev_guid = r.u64()?;
        let asize = r.u64()?;
        let child = r.u32()?;
        let n = r.u32()? as usize;
        if n == 0 || n > MAX_CHILDREN || child as usize >= n {
            return Err(FormatError::BadField("label children"));
        }
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            children.push(r.u64()?);
        }
        if children[child as usize] != vdev_guid {
            return Err(FormatError::BadField("label vdev guid"));
        }
        if asize < MIN_DISK || asize % BLOCK != 0 {
            return Err(FormatError::BadField("label asize"));
        }
        let pool_name = r.str()?;
        Ok((LabelHeader { pool_guid, pool_name, vdev_guid, child, children, asize }, index))
    }
}

/// The root of one committed transaction group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uberblock {
    pub txg: u64,
    pub pool_guid: u64,
    /// The meta object set: the dataset directory and the space map.
    pub mos: BlockPtr,
    /// Where this group's intent log starts ([`LOG_BLOCK`] bytes the MOS's
    /// space map holds as allocated; 0: no log). An uberblock written
    /// before the field existed reads 0 here (its sealed padding).
    pub log: u64,
}

impl Uberblock {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(UB_MAGIC);
        w.u32(VERSION);
        w.u32(0);
        w.u64(self.txg);
        w.u64(self.pool_guid);
        w.bp(&self.mos);
        w.u64(self.log);
        seal(w.buf, UB_SLOT as usize)
    }

    pub fn decode(b: &[u8]) -> Result<Uberblock, FormatError> {
        let body = unseal(b, UB_SLOT as usize)?;
        let mut r = Reader::new(body);
        if r.u64()? != UB_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let v = r.u32()?;
        if v != VERSION {
            return Err(FormatError::BadVersion(v));
        }
        r.u32()?;
        let txg = r.u64()?;
        let pool_guid = r.u64()?;
        let mos = r.bp()?;
        let log = r.u64()?;
        if txg == 0 || mos.is_hole() || mos.kind != BlockKind::Mos as u8 {
            return Err(FormatError::BadField("uberblock txg or mos"));
        }
        if !log.is_multiple_of(BLOCK) {
            return Err(FormatError::BadField("uberblock log offset"));
        }
        Ok(Uberblock { txg, pool_guid, mos, log })
    }

    /// Its slot in each label's ring.
    pub fn slot_offset(label: u64, txg: u64) -> u64 {
        label + BLOCK + (txg % UB_SLOTS) * UB_SLOT
    }
}

/// One intent-log record: block `block` of volume `volume` is now `bp` (a
/// data block already on disk, or a hole), born in the open group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord {
    pub volume: u64,
    pub block: u64,
    pub bp: BlockPtr,
}

/// One block of the intent log of the group after committed txg `txg`
/// (FORMAT.md "Intent log"): sealed over its first `len` bytes, written
/// once, chained forward through `next` (space allocated before the block
/// was written, so the next block's place is known before its contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBlock {
    pub pool_guid: u64,
    /// The committed txg this log extends (its generation).
    pub txg: u64,
    /// 0 for the block the uberblock names, then 1, 2, …
    pub seq: u64,
    /// Where the next block will go ([`LOG_BLOCK`] bytes).
    pub next: u64,
    pub records: Vec<LogRecord>,
    /// The version read ([`LOG_VERSION`] for a block to write: `encode`
    /// always writes that).
    pub version: u32,
}

impl LogBlock {
    /// The sealed bytes: a multiple of [`BLOCK`], at most [`LOG_BLOCK`].
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.records.len() <= LOG_RECORDS_PER_BLOCK,
            "log block overfull"
        );
        let body = LOG_HEADER + self.records.len() * LOG_RECORD;
        let len = (body as u64 + 32).div_ceil(BLOCK) * BLOCK;
        let mut w = Writer {
            buf: Vec::with_capacity(len as usize),
        };
        w.u64(LOG_MAGIC);
        w.u32(LOG_VERSION);
        w.u32(len as u32);
        w.u64(self.pool_guid);
        w.u64(self.txg);
        w.u64(self.seq);
        w.u64(self.next);
        w.u32(self.records.len() as u32);
        for r in &self.records {
            w.u64(r.volume);
            w.u64(r.block);
            w.bp(&r.bp);
        }
        seal_with(CKSUM_FLETCHER4, w.buf, len as usize)
    }

    /// Parses a log block from the [`LOG_BLOCK`] bytes at its place: its
    /// seal, magic and version, the fields' shapes. Whether it belongs to
    /// this pool and generation, and whether its records make sense for
    /// the pool, the reader checks.
    pub fn decode(b: &[u8]) -> Result<LogBlock, FormatError> {
        if b.len() < LOG_HEADER {
            return Err(FormatError::Truncated);
        }
        let len = u32le(&b[12..16]) as usize;
        if len == 0 || !(len as u64).is_multiple_of(BLOCK) || len as u64 > LOG_BLOCK {
            return Err(FormatError::BadField("log block length"));
        }
        // The version says how the block is sealed: read before the seal
        // is checked, and checked by it.
        let body = match u32le(&b[8..12]) {
            1 => unseal(b, len)?,
            2 | LOG_VERSION => unseal_with(CKSUM_FLETCHER4, b, len)?,
            v => return Err(FormatError::BadVersion(v)),
        };
        let mut r = Reader::new(body);
        if r.u64()? != LOG_MAGIC {
            return Err(FormatError::BadMagic);
        }
        r.u32()?;
        r.u32()?;
        let pool_guid = r.u64()?;
        let txg = r.u64()?;
        let seq = r.u64()?;
        let next = r.u64()?;
        let n = r.u32()? as usize;
        if n > LOG_RECORDS_PER_BLOCK || n * LOG_RECORD > r.remaining() {
            return Err(FormatError::BadField("log record count"));
        }
        if (LOG_HEADER as u64 + (n * LOG_RECORD) as u64 + 32).div_ceil(BLOCK) * BLOCK != len as u64
        {
            return Err(FormatError::BadField("log block length for its records"));
        }
        if next == 0 || !next.is_multiple_of(BLOCK) {
            return Err(FormatError::BadField("log next offset"));
        }
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            let volume = r.u64()?;
            let block = r.u64()?;
            let bp = r.bp()?;
            if !bp.is_hole() && (bp.kind != BlockKind::Data as u8 || bp.level != 0) {
                return Err(FormatError::BadField("log record block kind"));
            }
            records.push(LogRecord { volume, block, bp });
        }
        if body[body.len() - r.remaining()..].iter().any(|&x| x != 0) {
            return Err(FormatError::BadField("log block padding"));
        }
        Ok(LogBlock {
            pool_guid,
            txg,
            seq,
            next,
            records,
            version: u32le(&b[8..12]),
        })
    }
}

/// `body` zero-padded to `size` with a SHA-256 of the first `size - 32`
/// bytes in the last 32.
/// `body` zero-padded to `size` bytes, the last 32 the SHA-256 of the rest
/// (labels, uberblocks, version 1 log blocks).
fn seal(body: Vec<u8>, size: usize) -> Vec<u8> {
    seal_with(CKSUM_SHA256, body, size)
}

/// [`seal`] with the function `algo` names.
fn seal_with(algo: u8, mut body: Vec<u8>, size: usize) -> Vec<u8> {
    assert!(body.len() <= size - 32, "sealed structure too large");
    body.resize(size, 0);
    let sum = checksum_with(algo, &body[..size - 32]);
    body[size - 32..].copy_from_slice(&sum);
    body
}

fn unseal(b: &[u8], size: usize) -> Result<&[u8], FormatError> {
    unseal_with(CKSUM_SHA256, b, size)
}

fn unseal_with(algo: u8, b: &[u8], size: usize) -> Result<&[u8], FormatError> {
    if b.len() < size {
        return Err(FormatError::Truncated);
    }
    if checksum_with(algo, &b[..size - 32]) != b[size - 32..size] {
        return Err(FormatError::BadChecksum);
    }
    Ok(&b[..size - 32])
}

fn u64le(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
}
fn u32le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap_or([0; 4]))
}

/// Little-endian encoder for the sealed structures and the MOS.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub fn bp(&mut self, bp: &BlockPtr) {
        let mut b = [0u8; BP_SIZE];
        bp.encode(&mut b);
        self.buf.extend_from_slice(&b);
    }
}

/// The bounds-checked decoder matching [`Writer`].
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).ok_or(FormatError::Truncated)?;
        let s = self.b.get(self.at..end).ok_or(FormatError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32le(self.take(4)?))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64le(self.take(8)?))
    }
    pub fn str(&mut self) -> Result<String, FormatError> {
        let n = self.u32()? as usize;
        if n > MAX_NAME * 16 {
            return Err(FormatError::BadField("string length"));
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::BadField("string not UTF-8"))
    }
    pub fn bp(&mut self) -> Result<BlockPtr, FormatError> {
        BlockPtr::decode(self.take(BP_SIZE)?)
    }
    /// A count of items each at least `min_item` bytes: bounded by what is left.
    pub fn count(&mut self, min_item: usize) -> Result<usize, FormatError> {
        let n = self.u64()?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(min_item as u64) > left {
            return Err(FormatError::Truncated);
        }
        Ok(n as usize)
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        self.take(n)
    }
    pub fn remaining(&self) -> usize {
        self.b.len() - self.at
    }
    pub fn done(&self) -> bool {
        self.at == self.b.len()
    }
}
