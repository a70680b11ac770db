//! A send stream (FORMAT.md "Send stream") received into a fresh in-memory
//! pool that holds one volume, `f/base`, whose latest snapshot `f/base@s`
//! an incremental stream can name as its base. The first byte picks how the
//! rest becomes a stream:
//! 0. the bytes as they are (the pieces' chained SHA-256 tags cannot be
//!    guessed: the receive must fail);
//! 1. payloads (each a u16 length and its bytes), framed and tagged as a
//!    sender would, so the header and records themselves are checked;
//! 2. and 3. byte edits (offset u16, value) to the payloads of a real full
//!    stream of `f/base@s` (2) or incremental stream `@s` to `@t` (3),
//!    tagged again; with bit 2 set the last piece is dropped (cut short).
//!
//! Asserted, besides never a panic and never a run without end (the input
//! is bounded, and a FREE record costs what it frees): a refused receive
//! leaves the pool's datasets and `f/base`'s bytes as they were and the pool
//! verifies; a received snapshot is listed, the pool verifies, and the
//! snapshot sent again and received into another fresh pool reads the same.
#![no_main]

use std::sync::OnceLock;

use alcove_pool::pool::{STREAM_VERSION, piece_tag};
use alcove_pool::{DatasetInfo, MemDisk, Pool};
use libfuzzer_sys::fuzz_target;

const DISK: usize = 2 << 20;
const MAX_INPUT: usize = 512 * 1024;
/// Bytes of each volume compared (a received volsize may be up to 2^50).
const COMPARE: u64 = 256 * 1024;

struct Template {
    /// The pool image a receive starts from.
    img: Vec<u8>,
    list: Vec<DatasetInfo>,
    base: Vec<u8>,
    full: Vec<Vec<u8>>,
    incremental: Vec<Vec<u8>>,
}

/// The payloads of a stream's pieces: after the 12-byte prefix, each piece
/// is a length u32, the payload, a 32-byte tag.
fn payloads(s: &[u8]) -> Vec<Vec<u8>> {
    let mut at = 12;
    let mut out = Vec::new();
    while at + 4 <= s.len() {
        let len = u32::from_le_bytes(s[at..at + 4].try_into().unwrap()) as usize;
        out.push(s[at + 4..at + 4 + len].to_vec());
        at += 4 + len + 32;
    }
    out
}

/// `payloads` framed and tagged as a sender does.
fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"ALCVSEND");
    s.extend_from_slice(&STREAM_VERSION.to_le_bytes());
    let mut prev = [0u8; 32];
    for p in payloads {
        let tag = piece_tag(&prev, p);
        s.extend_from_slice(&(p.len() as u32).to_le_bytes());
        s.extend_from_slice(p);
        s.extend_from_slice(&tag);
        prev = tag;
    }
    s
}

fn read_some(p: &mut Pool<MemDisk>, name: &str, volsize: u64) -> Option<Vec<u8>> {
    let mut b = vec![0u8; volsize.min(COMPARE) as usize];
    p.read(name, 0, &mut b).ok().map(|()| b)
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let mut p = Pool::create("f", vec![MemDisk::new(DISK)], 5).unwrap();
        p.create_volume("f/base", 256 * 1024, 4096).unwrap();
        p.write("f/base", 8192, &[3; 16384]).unwrap();
        p.write("f/base", 128 * 1024, &[4; 4096]).unwrap();
        p.snapshot("f/base@s").unwrap();
        let disks = p.into_disks();
        let img = disks[0].bytes.clone();
        let mut p = Pool::import(disks).unwrap();
        let list = p.list();
        let base = read_some(&mut p, "f/base", 256 * 1024).unwrap();
        p.write("f/base", 8192, &[0; 8192]).unwrap();
        p.write("f/base", 200 * 1024, &[5; 4096]).unwrap();
        p.snapshot("f/base@t").unwrap();
        let mut full = Vec::new();
        p.send("f/base@s", None, &mut |b| full.extend_from_slice(b)).unwrap();
        let mut inc = Vec::new();
        p.send("f/base@t", Some("f/base@s"), &mut |b| inc.extend_from_slice(b)).unwrap();
        Template { img, list, base, full: payloads(&full), incremental: payloads(&inc) }
    })
}

fn fresh(t: &Template) -> Pool<MemDisk> {
    Pool::import(vec![MemDisk { bytes: t.img.clone() }]).unwrap()
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() || data.len() > MAX_INPUT {
        return;
    }
    let t = template();
    let (mode, rest) = (data[0] % 4, &data[1..]);
    let (stream, target) = match mode {
        0 => (rest.to_vec(), if data[0] & 4 == 0 { "f/new" } else { "f/base" }),
        1 => {
            let mut pieces = Vec::new();
            let mut r = rest;
            while r.len() >= 2 {
                let n = usize::from(u16::from_le_bytes([r[0], r[1]])).min(r.len() - 2);
                pieces.push(r[2..2 + n].to_vec());
                r = &r[2 + n..];
            }
            (framed(&pieces), if data[0] & 4 == 0 { "f/new" } else { "f/base" })
        }
        _ => {
            let (mut pieces, target) = if mode == 2 { (t.full.clone(), "f/new") } else { (t.incremental.clone(), "f/base") };
            let total: usize = pieces.iter().map(Vec::len).sum();
            for e in rest.chunks_exact(3) {
                let mut at = usize::from(u16::from_le_bytes([e[0], e[1]])) % total;
                for p in &mut pieces {
                    if at < p.len() {
                        p[at] = e[2];
                        break;
                    }
                    at -= p.len();
                }
            }
            if data[0] & 4 != 0 {
                pieces.pop();
            }
            (framed(&pieces), target)
        }
    };
    let mut p = fresh(t);
    let r = p.receive(target, &stream);
    if mode == 0 {
        assert!(r.is_err(), "raw bytes received as a stream");
    }
    if mode >= 2 && data[0] & 4 != 0 {
        assert!(r.is_err(), "a stream cut short was received");
    }
    match r {
        Err(_) => {
            if p.state() == "FAULTED" {
                return;
            }
            assert_eq!(p.list(), t.list, "a refused receive changed the datasets");
            assert!(read_some(&mut p, "f/base", 256 * 1024).as_ref() == Some(&t.base), "a refused receive changed f/base");
            p.verify(false).expect("the pool verifies after a refused receive");
        }
        Ok(snap) => {
            let got = p.get(&snap).expect("the received snapshot is listed");
            assert!(got.snapshot && snap.starts_with(&format!("{target}@")), "received {snap}");
            p.verify(false).expect("the pool verifies after a receive");
            let want = read_some(&mut p, &snap, got.volsize).expect("the received snapshot reads");
            // Sent again and received elsewhere: the same bytes.
            let mut again = Vec::new();
            p.send(&snap, None, &mut |b| again.extend_from_slice(b)).expect("a received snapshot sends");
            let mut q = fresh(t);
            let snap2 = q.receive("f/rt", &again).expect("a snapshot's own stream is received");
            let got2 = q.get(&snap2).unwrap();
            assert_eq!(got2.volsize, got.volsize);
            assert!(read_some(&mut q, &snap2, got2.volsize) == Some(want), "{snap} and its copy differ");
        }
    }
});
