//! cpio "newc" archives: packing on the host, zero-copy walking in the kernel.

use alloc::vec::Vec;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// Why an archive could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// An entry header at this offset does not start with `070701`.
    BadMagic { offset: usize },
    /// A header field at this offset is not 8 hex digits.
    BadField { offset: usize },
    /// An entry at this offset runs past the end of the archive.
    Truncated { offset: usize },
    /// An entry name at this offset is not UTF-8 or lacks its NUL.
    BadName { offset: usize },
    /// The archive ends without a `TRAILER!!!` entry.
    NoTrailer,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::BadMagic { offset } => write!(f, "bad cpio magic at offset {offset}"),
            Error::BadField { offset } => write!(f, "bad cpio header field at offset {offset}"),
            Error::Truncated { offset } => write!(f, "cpio entry at offset {offset} is truncated"),
            Error::BadName { offset } => write!(f, "bad cpio entry name at offset {offset}"),
            Error::NoTrailer => write!(f, "cpio archive has no trailer"),
        }
    }
}

/// One file in the archive, borrowing its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

/// A boot archive in memory.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    bytes: &'a [u8],
}

impl<'a> Archive<'a> {
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Iterates over the entries; yields one `Err` and stops on damage.
    pub fn entries(&self) -> Entries<'a> {
        Entries { bytes: self.bytes, offset: 0, done: false }
    }

    /// Finds a file by name.
    pub fn find(&self, name: &str) -> Result<Option<Entry<'a>>, Error> {
        for e in self.entries() {
            let e = e?;
            if e.name == name {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Checks the whole archive; returns the number of entries.
    pub fn validate(&self) -> Result<usize, Error> {
        self.entries().try_fold(0, |n, e| e.map(|_| n + 1))
    }
}

pub struct Entries<'a> {
    bytes: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match parse_entry(self.bytes, self.offset) {
            Ok((entry, next)) if entry.name == TRAILER => {
                let _ = next;
                self.done = true;
                None
            }
            Ok((entry, next)) => {
                self.offset = next;
                Some(Ok(entry))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn parse_entry(bytes: &[u8], offset: usize) -> Result<(Entry<'_>, usize), Error> {
    if offset >= bytes.len() {
        return Err(Error::NoTrailer);
    }
    let header = bytes
        .get(offset..offset.checked_add(HEADER_LEN).ok_or(Error::Truncated { offset })?)
        .ok_or(Error::Truncated { offset })?;
    if &header[..6] != MAGIC {
        return Err(Error::BadMagic { offset });
    }
    let field = |i: usize| -> Result<usize, Error> {
        let at = 6 + 8 * i;
        let text = core::str::from_utf8(&header[at..at + 8]).map_err(|_| Error::BadField { offset: offset + at })?;
        usize::from_str_radix(text, 16).map_err(|_| Error::BadField { offset: offset + at })
    };
    let mode = field(1)? as u32;
    let file_size = field(6)?;
    let name_size = field(11)?;
    let name_start = offset + HEADER_LEN;
    let name_end = name_start.checked_add(name_size).ok_or(Error::Truncated { offset })?;
    let name_bytes = bytes.get(name_start..name_end).ok_or(Error::Truncated { offset })?;
    let name = match name_bytes.split_last() {
        Some((0, name)) => core::str::from_utf8(name).map_err(|_| Error::BadName { offset })?,
        _ => return Err(Error::BadName { offset }),
    };
    let data_start = align4(name_end);
    let data_end = data_start.checked_add(file_size).ok_or(Error::Truncated { offset })?;
    let data = bytes.get(data_start..data_end).ok_or(Error::Truncated { offset })?;
    Ok((Entry { name, mode, data }, align4(data_end)))
}

const fn align4(x: usize) -> usize {
    (x + 3) & !3
}

/// A file to pack.
pub struct File<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
    /// Unix permission bits; the file type bits (regular file) are added.
    pub perm: u32,
}

/// Packs files into a newc archive, in the given order, with a trailer.
pub fn pack(files: &[File<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, f) in files.iter().enumerate() {
        push_entry(&mut out, ino as u32 + 1, 0o100000 | (f.perm & 0o7777), f.name, f.data);
    }
    push_entry(&mut out, 0, 0, TRAILER, &[]);
    out
}

fn push_entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]) {
    use core::fmt::Write;
    let mut header = alloc::string::String::new();
    let fields = [ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    header.push_str("070701");
    for v in fields {
        let _ = write!(header, "{v:08x}");
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(align4(out.len()), 0);
    out.extend_from_slice(data);
    out.resize(align4(out.len()), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        pack(&[
            File { name: "manifest.toml", data: b"[system]\nname = \"demo\"\n", perm: 0o644 },
            File { name: "servers/init", data: &[0x7f, b'E', b'L', b'F', 1, 2, 3], perm: 0o755 },
            File { name: "empty", data: b"", perm: 0o644 },
        ])
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let a = Archive::new(&bytes);
        assert_eq!(a.validate(), Ok(3));
        let init = a.find("servers/init").unwrap().unwrap();
        assert_eq!(init.data, &[0x7f, b'E', b'L', b'F', 1, 2, 3]);
        assert_eq!(init.mode, 0o100755);
        assert_eq!(a.find("empty").unwrap().unwrap().data, b"");
        assert_eq!(a.find("nope"), Ok(None));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for cut in 0..bytes.len() - 1 {
            let a = Archive::new(&bytes[..cut]);
            assert!(a.validate().is_err(), "cut at {cut} validated");
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let bytes = sample();
        for at in 0..bytes.len() {
            for v in [0u8, b'0', b'f', b'z', 0xff] {
                let mut b = bytes.clone();
                b[at] = v;
                let _ = Archive::new(&b).validate();
            }
        }
        let mut b = bytes.clone();
        b[0] = b'X';
        assert_eq!(Archive::new(&b).validate(), Err(Error::BadMagic { offset: 0 }));
        // A huge file size must not overflow.
        let mut b = bytes;
        b[6 + 8 * 6..6 + 8 * 7].copy_from_slice(b"ffffffff");
        assert!(matches!(Archive::new(&b).validate(), Err(Error::Truncated { .. })));
    }
}
