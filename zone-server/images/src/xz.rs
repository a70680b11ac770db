//! A streaming xz reader (the .xz file format 1.x) on `xz4rust`, a port of
//! xz-embedded: stream header, blocks (LZMA2, with the BCJ and delta
//! filters), each block's CRC32 or CRC64 check, the index (checked against
//! the blocks and by its CRC32) and the footer; streams one after another
//! with stream padding between them; and a bound on the total output.
//! Output leaves in pieces of at most [`OUT_CHUNK`] bytes, so an xz bomb
//! costs one chunk of memory and stops at the bound. The index costs no
//! memory per block (the decoder keeps a running hash of it).
//!
//! Memory: the LZMA2 dictionary is the only large allocation. Before a
//! stream is decoded its header and first block header are read here to
//! learn the dictionary size; one above [`MAX_DICT`] is refused before
//! anything is allocated, and the dictionary is then allocated fallibly
//! (`try_reserve_exact`) from the process's heap: a heap that cannot give
//! it is a clear error, not an abort. Later blocks of the stream may not
//! need a larger dictionary than the first (xz's encoders use one filter
//! chain for every block of a stream).
//!
//! A process whose heap can grow (zone-server on Alcove, where every heap
//! starts at 512 KiB) hands the reader a [`GrowHeap`]: when the dictionary
//! does not fit, the reader asks it for that much more heap once and tries
//! again.
//!
//! SHA-256 checks are refused by name: `xz4rust` verifies them only through
//! the `sha2` crate with its `std` feature, which does not build on Alcove.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use xz4rust::{XzDecoder, XzError};

use crate::Error;

/// Bytes of output per call of the sink.
pub const OUT_CHUNK: usize = 64 * 1024;
/// The largest LZMA2 dictionary accepted: 64 MiB, what `xz -9` uses.
pub const MAX_DICT: usize = 64 << 20;

const MAGIC: &[u8; 6] = b"\xfd7zXZ\0";
const STREAM_HEADER: usize = 12;
/// LZMA2's filter ID.
const LZMA2: u64 = 0x21;
/// Heap asked for beyond a dictionary when the heap must grow for it (the
/// allocator's own bookkeeping and alignment).
const GROW_SLACK: usize = 64 * 1024;

/// Makes the process's heap at least this many bytes larger, or says why
/// it cannot (zone-server: frames charged to its kernel-memory budget).
pub type GrowHeap = fn(usize) -> Result<(), String>;

enum State {
    /// A stream's first bytes: its header and its first block header (or
    /// the first byte of its index), gathered to size the dictionary.
    Head(Vec<u8>),
    Body(Box<XzDecoder<'static>>),
    /// After a stream: the zero bytes of stream padding seen so far.
    Padding(u64),
    /// An error ended the file: nothing more is taken.
    Failed,
}

pub struct XzReader {
    state: State,
    total_out: u64,
    limit: u64,
    dict_limit: usize,
    /// The dictionary of the stream being decoded (bytes).
    dict: usize,
    streams: u32,
    out: Vec<u8>,
    grow: Option<GrowHeap>,
}

fn bad(s: &str) -> Error {
    Error::Xz(s.into())
}

/// A variable-length integer of the format (at most 9 bytes).
fn vli(h: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *h.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The dictionary size a block header names (its LZMA2 filter's property
/// byte), or `None` for a header that is not sound: the decoder then
/// reports what is wrong with it.
fn block_dict(h: &[u8]) -> Option<usize> {
    let (body, crc) = h.split_at(h.len().checked_sub(4)?);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let flags = *h.get(1)?;
    let mut pos = 2;
    if flags & 0x40 != 0 {
        vli(body, &mut pos)?;
    }
    if flags & 0x80 != 0 {
        vli(body, &mut pos)?;
    }
    let mut dict = None;
    for _ in 0..=(flags & 3) {
        let id = vli(body, &mut pos)?;
        let size = usize::try_from(vli(body, &mut pos)?).ok()?;
        let props = body.get(pos..pos.checked_add(size)?)?;
        pos += size;
        dict = match (id, props) {
            // Bits 0-5: the size is (2 | bit 0) << (bits 1-5 + 11).
            (LZMA2, [p]) if *p <= 39 => Some((2 | usize::from(p & 1)) << (p / 2 + 11)),
            _ => None,
        };
    }
    dict
}

/// What went wrong, for the user.
fn xz_err(e: &XzError, dict: usize) -> Error {
    Error::Xz(match e {
        XzError::StreamHeaderMagicNumberMismatch => "not xz data (bad magic)".into(),
        XzError::ContentCrc32Mismatch(got, want) => {
            format!("a block's CRC32 is {got:08x}, its check says {want:08x} (corrupt)")
        }
        XzError::ContentCrc64Mismatch(got, want) => {
            format!("a block's CRC64 is {got:016x}, its check says {want:016x} (corrupt)")
        }
        XzError::IndexCrc32Mismatch(got, want) => {
            format!("the index's CRC32 is {got:08x}, it says {want:08x} (corrupt)")
        }
        XzError::Sha256NotSupported => {
            "SHA-256 checks are not supported here; compress with xz's default check (--check=crc64)".into()
        }
        XzError::UnsupportedCheckType(t) => format!("check type {t} is not supported (none, CRC32 or CRC64)"),
        XzError::DictionaryTooLarge(n) => {
            format!("a block needs a dictionary of {n} bytes, more than the stream's first block ({dict} bytes)")
        }
        e => format!("corrupt xz data ({e})"),
    })
}

impl XzReader {
    /// A reader whose total output may not pass `limit` bytes, with
    /// dictionaries of at most [`MAX_DICT`].
    pub fn new(limit: u64) -> Self {
        Self::with_dict_limit(limit, MAX_DICT)
    }

    /// As [`XzReader::new`] with dictionaries of at most `dict_limit` bytes.
    pub fn with_dict_limit(limit: u64, dict_limit: usize) -> Self {
        XzReader {
            state: State::Head(Vec::new()),
            total_out: 0,
            limit,
            dict_limit: dict_limit.min(MAX_DICT),
            dict: 0,
            streams: 0,
            out: vec![0; OUT_CHUNK],
            grow: None,
        }
    }

    /// Lets the reader grow the heap for a dictionary that does not fit.
    pub fn set_grow_heap(&mut self, grow: GrowHeap) {
        self.grow = Some(grow);
    }

    /// Bytes produced so far.
    pub fn total_out(&self) -> u64 {
        self.total_out
    }

    /// Streams decoded whole so far.
    pub fn streams(&self) -> u32 {
        self.streams
    }

    /// The dictionary of the stream being (or last) decoded, bytes.
    pub fn dict_bytes(&self) -> usize {
        self.dict
    }

    /// Decompresses `input`, handing the output to `sink` piece by piece.
    /// After an error the reader takes nothing more.
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
        let r = self.feed_inner(input, sink);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn feed_inner(&mut self, mut input: &[u8], sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
        while !input.is_empty() {
            match &mut self.state {
                State::Padding(n) => {
                    let zeros = input.iter().position(|&b| b != 0).unwrap_or(input.len());
                    *n += zeros as u64;
                    input = &input[zeros..];
                    if !input.is_empty() {
                        if *n % 4 != 0 {
                            return Err(bad("stream padding is not a multiple of 4 bytes (corrupt)"));
                        }
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Head(head) => {
                    // The stream header and the block header's size byte,
                    // then the whole block header.
                    let need = match head.get(STREAM_HEADER) {
                        None => STREAM_HEADER + 1,
                        Some(0) => STREAM_HEADER + 1,
                        Some(&b) => STREAM_HEADER + (usize::from(b) + 1) * 4,
                    };
                    let n = (need - head.len()).min(input.len());
                    head.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if head.len() >= MAGIC.len() && head[..MAGIC.len()] != *MAGIC {
                        return Err(bad("not xz data (bad magic)"));
                    }
                    if head.len() < need || (head.len() == STREAM_HEADER + 1 && head[STREAM_HEADER] != 0) {
                        continue;
                    }
                    let head = core::mem::take(head);
                    // An empty stream (the index first) needs no dictionary.
                    let dict = match head[STREAM_HEADER] {
                        0 => 0,
                        _ => block_dict(&head[STREAM_HEADER..]).unwrap_or(0),
                    };
                    self.start_stream(dict)?;
                    // Headers only: the stream cannot end inside them.
                    let rest = self.decode(&head, sink)?;
                    debug_assert!(rest.is_empty());
                }
                State::Body(_) => input = self.decode(input, sink)?,
                State::Failed => return Err(bad("the file was refused already")),
            }
        }
        Ok(())
    }

    /// A new decoder with a dictionary of `dict` bytes.
    fn start_stream(&mut self, dict: usize) -> Result<(), Error> {
        // The previous stream's decoder and dictionary go first (and on an
        // error here, `feed` marks the reader failed).
        self.state = State::Failed;
        if dict > self.dict_limit {
            return Err(Error::Xz(format!(
                "the dictionary is {} MiB, more than the limit of {} MiB (compress with a smaller one: xz -9 or less)",
                dict.div_ceil(1 << 20),
                self.dict_limit >> 20
            )));
        }
        let mut buf: Vec<u8> = Vec::new();
        if buf.try_reserve_exact(dict).is_err() {
            let short = format!("no memory for a dictionary of {dict} bytes");
            let grow = self.grow.ok_or_else(|| Error::Xz(short.clone()))?;
            grow(dict + GROW_SLACK).map_err(|e| Error::Xz(format!("{short}: the heap cannot grow: {e}")))?;
            buf.try_reserve_exact(dict).map_err(|_| Error::Xz(format!("{short}, even after the heap grew")))?;
        }
        buf.resize(dict, 0);
        self.dict = dict;
        // The largest dictionary the decoder may use is this one: it never
        // allocates another.
        self.state = State::Body(XzDecoder::in_heap_with_alloc_dict(buf, dict));
        Ok(())
    }

    /// Runs the decoder on `input`; returns what follows the stream's end
    /// (nothing unless it ended).
    fn decode<'i>(&mut self, mut input: &'i [u8], sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<&'i [u8], Error> {
        while !input.is_empty() {
            let State::Body(dec) = &mut self.state else { return Ok(input) };
            let r = dec.decode(input, &mut self.out).map_err(|e| xz_err(&e, self.dict))?;
            input = &input[r.input_consumed()..];
            if r.is_end_of_stream() {
                self.emit(r.output_produced(), sink)?;
                self.streams += 1;
                self.state = State::Padding(0);
                return Ok(input);
            }
            if !r.made_progress() {
                return Err(bad("xz data makes no progress (corrupt)"));
            }
            self.emit(r.output_produced(), sink)?;
        }
        Ok(input)
    }

    fn emit(&mut self, n: usize, sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
        if n == 0 {
            return Ok(());
        }
        crate::count_output(&mut self.total_out, n, self.limit)?;
        sink(&self.out[..n])
    }

    /// The input ended: it must end after a whole stream and its padding.
    pub fn finish(&self) -> Result<(), Error> {
        match &self.state {
            State::Head(h) if h.is_empty() && self.streams > 0 => Ok(()),
            State::Head(h) if h.is_empty() => Err(bad("empty file")),
            State::Head(_) => Err(bad("file ends inside a stream or block header (truncated)")),
            State::Body(_) => Err(bad("file ends inside a stream (truncated)")),
            State::Padding(n) if n % 4 != 0 => Err(bad("stream padding is not a multiple of 4 bytes (corrupt)")),
            State::Padding(_) => Ok(()),
            State::Failed => Err(bad("the file was refused already")),
        }
    }
}
