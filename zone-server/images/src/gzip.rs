//! A streaming gzip reader (RFC 1952) on `miniz_oxide`'s inflate: the
//! member header, the deflate body, the CRC32 and ISIZE trailer, members
//! one after another, and a bound on the total output. Output leaves in
//! pieces of at most [`OUT_CHUNK`] bytes, so a gzip bomb costs one chunk of
//! memory and stops at the bound.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

use crate::Error;

/// Bytes of output per call of the sink.
pub const OUT_CHUNK: usize = 64 * 1024;
/// A header longer than this (FEXTRA, FNAME, FCOMMENT) is refused.
const MAX_HEADER: usize = 1 << 20;

const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;

/// Where in a member header the reader is; each input byte is looked at
/// once, so a header of any length costs its length.
enum Header {
    /// The fixed 10 bytes (those so far).
    Fixed(Vec<u8>),
    /// FEXTRA's 2-byte length (the bytes so far).
    ExtraLen(Vec<u8>),
    /// FEXTRA's bytes still to skip.
    Extra(usize),
    /// Inside FNAME (`true`) or FCOMMENT, until a zero byte.
    Text(bool),
    /// FHCRC's bytes still to skip.
    Crc(usize),
}

enum State {
    Header {
        at: Header,
        flags: u8,
        len: usize,
    },
    Body,
    /// Gathering the 8-byte trailer.
    Trailer(Vec<u8>),
}

/// The part after `done` in the order RFC 1952 §2.3 puts them, or `None`
/// when the header is complete. `done`: 0 fixed, 1 extra, 2 name,
/// 3 comment.
fn next_part(flags: u8, done: u8) -> Option<Header> {
    if done < 1 && flags & FEXTRA != 0 {
        return Some(Header::ExtraLen(Vec::new()));
    }
    if done < 2 && flags & FNAME != 0 {
        return Some(Header::Text(true));
    }
    if done < 3 && flags & FCOMMENT != 0 {
        return Some(Header::Text(false));
    }
    if flags & FHCRC != 0 {
        return Some(Header::Crc(2));
    }
    None
}

fn new_member() -> State {
    State::Header { at: Header::Fixed(Vec::new()), flags: 0, len: 0 }
}

pub struct GzipReader {
    state: State,
    inflate: Box<InflateState>,
    crc: crc32fast::Hasher,
    /// Output of the current member (ISIZE is this mod 2^32).
    member_out: u64,
    total_out: u64,
    limit: u64,
    members: u32,
    out: Vec<u8>,
}

fn bad(s: &str) -> Error {
    Error::Gzip(s.into())
}

impl GzipReader {
    /// A reader whose total output may not pass `limit` bytes.
    pub fn new(limit: u64) -> Self {
        GzipReader {
            state: new_member(),
            inflate: InflateState::new_boxed(DataFormat::Raw),
            crc: crc32fast::Hasher::new(),
            member_out: 0,
            total_out: 0,
            limit,
            members: 0,
            out: vec![0; OUT_CHUNK],
        }
    }

    /// Bytes produced so far.
    pub fn total_out(&self) -> u64 {
        self.total_out
    }

    /// Decompresses `input`, handing the output to `sink` piece by piece.
    pub fn feed(&mut self, mut input: &[u8], sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
        while !input.is_empty() {
            match &mut self.state {
                State::Header { at, flags, len } => {
                    let before = input.len();
                    let next = match at {
                        Header::Fixed(h) => {
                            let n = (10 - h.len()).min(input.len());
                            h.extend_from_slice(&input[..n]);
                            input = &input[n..];
                            if h.len() >= 2 && h[..2] != [0x1f, 0x8b] {
                                return Err(bad("not gzip data (bad magic)"));
                            }
                            if h.len() >= 3 && h[2] != 8 {
                                return Err(bad("unknown compression method (only deflate)"));
                            }
                            if h.len() < 10 {
                                continue;
                            }
                            *flags = h[3];
                            if *flags & 0xe0 != 0 {
                                return Err(bad("reserved header flags set"));
                            }
                            next_part(*flags, 0)
                        }
                        Header::ExtraLen(x) => {
                            let n = (2 - x.len()).min(input.len());
                            x.extend_from_slice(&input[..n]);
                            input = &input[n..];
                            if x.len() < 2 {
                                continue;
                            }
                            Some(Header::Extra(usize::from(u16::from_le_bytes([x[0], x[1]]))))
                        }
                        Header::Extra(left) | Header::Crc(left) => {
                            let n = (*left).min(input.len());
                            input = &input[n..];
                            *left -= n;
                            if *left > 0 {
                                continue;
                            }
                            match at {
                                Header::Extra(_) => next_part(*flags, 1),
                                _ => None,
                            }
                        }
                        Header::Text(name) => match input.iter().position(|&b| b == 0) {
                            Some(z) => {
                                input = &input[z + 1..];
                                next_part(*flags, if *name { 2 } else { 3 })
                            }
                            None => {
                                input = &[];
                                *len += before;
                                if *len > MAX_HEADER {
                                    return Err(bad("header longer than 1 MiB"));
                                }
                                continue;
                            }
                        },
                    };
                    *len += before - input.len();
                    if *len > MAX_HEADER {
                        return Err(bad("header longer than 1 MiB"));
                    }
                    match next {
                        Some(part) => *at = part,
                        None => self.state = State::Body,
                    }
                }
                State::Body => {
                    let r = inflate(&mut self.inflate, input, &mut self.out, MZFlush::None);
                    input = &input[r.bytes_consumed..];
                    self.emit(r.bytes_written, sink)?;
                    match r.status {
                        Ok(MZStatus::StreamEnd) => self.state = State::Trailer(Vec::new()),
                        Ok(_) => {}
                        Err(MZError::Buf) if r.bytes_consumed > 0 || r.bytes_written > 0 => {}
                        Err(MZError::Buf) => {
                            return Err(bad("deflate data makes no progress (corrupt)"));
                        }
                        Err(_) => return Err(bad("corrupt deflate data")),
                    }
                }
                State::Trailer(t) => {
                    let n = (8 - t.len()).min(input.len());
                    t.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if t.len() == 8 {
                        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                        let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                        let ours = core::mem::take(&mut self.crc).finalize();
                        if crc != ours {
                            return Err(Error::Gzip(format!("CRC32 of the data is {ours:08x}, the trailer says {crc:08x}")));
                        }
                        if u64::from(isize) != self.member_out & 0xffff_ffff {
                            return Err(bad("length in the trailer does not match the data"));
                        }
                        self.members += 1;
                        self.member_out = 0;
                        self.inflate = InflateState::new_boxed(DataFormat::Raw);
                        self.state = new_member();
                    }
                }
            }
        }
        // Drain what the inflater still holds (a full output buffer).
        while matches!(self.state, State::Body) {
            let r = inflate(&mut self.inflate, &[], &mut self.out, MZFlush::None);
            self.emit(r.bytes_written, sink)?;
            match r.status {
                Ok(MZStatus::StreamEnd) => self.state = State::Trailer(Vec::new()),
                _ if r.bytes_written == 0 => break,
                Err(MZError::Buf) | Ok(_) => {}
                Err(_) => return Err(bad("corrupt deflate data")),
            }
        }
        Ok(())
    }

    fn emit(&mut self, n: usize, sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
        if n == 0 {
            return Ok(());
        }
        crate::count_output(&mut self.total_out, n, self.limit)?;
        let piece = &self.out[..n];
        self.crc.update(piece);
        self.member_out += n as u64;
        sink(piece)
    }

    /// The input ended: it must end after a whole member.
    pub fn finish(&self) -> Result<(), Error> {
        match &self.state {
            State::Header { at: Header::Fixed(h), .. } if h.is_empty() && self.members > 0 => Ok(()),
            State::Header { at: Header::Fixed(h), .. } if h.is_empty() => Err(bad("empty file")),
            State::Header { .. } => Err(bad("file ends inside a member header")),
            State::Body => Err(bad("file ends inside the compressed data (truncated)")),
            State::Trailer(_) => Err(bad("file ends inside the trailer (truncated)")),
        }
    }
}
