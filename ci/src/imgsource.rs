//! An IMGAPI image source the harness serves on this host (127.0.0.1:P,
//! which a machine on QEMU's user network reaches as 10.0.2.2:P): `GET
//! /images`, `GET /images/:uuid` and `GET /images/:uuid/file` for five
//! images: a good one, one whose file is not what `files[0].sha1` says,
//! one whose file is cut short (the connection closes before
//! `Content-Length` bytes), and three xz-compressed ones: one with a 64 KiB
//! dictionary, one with xz's default 8 MiB (more than zone-server's
//! 512 KiB heap: it grows its heap for it) and one whose header names
//! 32 MiB (more than zone-server's budget pays for: refused by name).

use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The image that imports.
pub const GOOD: &str = "1a9e0000-0000-4000-8000-00000000000a";
/// Its file is not what its manifest's SHA-1 says.
pub const BAD_SHA1: &str = "1a9e0000-0000-4000-8000-00000000000b";
/// Its file ends early.
pub const SHORT: &str = "1a9e0000-0000-4000-8000-00000000000c";
/// Its file is the good one's, xz-compressed (64 KiB dictionary, CRC64).
pub const XZ: &str = "1a9e0000-0000-4000-8000-00000000000d";
/// xz with the 8 MiB dictionary of `xz -6` (xz's default).
pub const XZ_BIG_DICT: &str = "1a9e0000-0000-4000-8000-00000000000e";
/// The 8 MiB one with its block header saying 32 MiB (CRC32 made good):
/// under xz's 64 MiB limit, over what zone-server's budget can give.
pub const XZ_HUGE_DICT: &str = "1a9e0000-0000-4000-8000-00000000000f";
/// Bytes of each uncompressed image file.
const FILE_BYTES: usize = 256 * 1024;

/// An image served besides the six above (`linux/vmadm-net`'s GRUB test
/// disk): its manifest and its file as served (compressed or not).
#[derive(Clone)]
pub struct Extra {
    pub manifest: serde_json::Value,
    pub file: Vec<u8>,
}

impl Extra {
    /// A `zvol` image `name` of `raw_bytes` (the volume: `image_size` in
    /// MiB, rounded up) served as `file` with `compression` (`none`, `xz`).
    pub fn zvol(uuid: &str, name: &str, raw_bytes: u64, file: Vec<u8>, compression: &str) -> Self {
        let mut manifest = manifest(uuid, name, &sha1_hex(&file), file.len(), compression);
        manifest["image_size"] = serde_json::json!(raw_bytes.div_ceil(1 << 20));
        manifest["requirements"] = serde_json::json!({"bootrom": "bios"});
        Self { manifest, file }
    }
}

/// The source, served until dropped.
pub struct Source {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn file() -> Vec<u8> {
    (0..FILE_BYTES).map(|i| if i < FILE_BYTES / 2 { (i * 13 % 251) as u8 } else { 0 }).collect()
}

/// The good file xz-compressed with a dictionary of `dict` bytes (by
/// lzma-rust2's encoder, independent of the decoder zone-server uses).
fn xz_file(dict: u32) -> Vec<u8> {
    let mut o = lzma_rust2::XzOptions::with_preset(1);
    o.lzma_options.dict_size = dict;
    let mut w = lzma_rust2::XzWriter::new(Vec::new(), o).expect("xz encoder");
    w.write_all(&file()).expect("xz encoder");
    w.finish().expect("xz encoder")
}

/// An image's file by uuid (the xz ones made once).
fn file_of(uuid: &str) -> Vec<u8> {
    static XZ_FILES: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    let (small, big) = XZ_FILES.get_or_init(|| (xz_file(64 << 10), xz_file(8 << 20)));
    match uuid {
        XZ => small.clone(),
        XZ_BIG_DICT => big.clone(),
        XZ_HUGE_DICT => with_dict_code(big, 26),
        _ => file(),
    }
}

/// `xz` with its first block header's LZMA2 dictionary byte set to
/// `code` (dictionary `(2 | code & 1) << (code / 2 + 11)` bytes) and the
/// header's CRC32 made good again. LZMA2 data does not depend on the
/// dictionary's size, so the file still decodes with the larger one.
fn with_dict_code(xz: &[u8], code: u8) -> Vec<u8> {
    const STREAM_HEADER: usize = 12;
    let mut f = xz.to_vec();
    let size = (usize::from(f[STREAM_HEADER]) + 1) * 4;
    let flags = f[STREAM_HEADER + 1];
    assert_eq!(flags & 0x03, 0, "one filter (the encoder's LZMA2 alone)");
    let mut at = STREAM_HEADER + 2;
    // The optional compressed and uncompressed sizes (multibyte integers).
    for present in [flags & 0x40 != 0, flags & 0x80 != 0] {
        if present {
            while f[at] & 0x80 != 0 {
                at += 1;
            }
            at += 1;
        }
    }
    assert_eq!((f[at], f[at + 1]), (0x21, 1), "LZMA2 filter with one property byte");
    f[at + 2] = code;
    let crc_at = STREAM_HEADER + size - 4;
    let crc = crc32(&f[STREAM_HEADER..crc_at]);
    f[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    f
}

/// CRC-32 (IEEE, reflected), as xz's headers use.
fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

fn sha1_hex(b: &[u8]) -> String {
    Sha1::digest(b).iter().map(|b| format!("{b:02x}")).collect()
}

fn manifest(uuid: &str, name: &str, sha1: &str, size: usize, compression: &str) -> serde_json::Value {
    serde_json::json!({
        "v": 2, "uuid": uuid, "owner": "930896af-bf8c-48d4-885c-6573a94b1853",
        "name": name, "version": "1.0", "type": "zvol", "os": "linux",
        "state": "active", "disabled": false, "public": true, "image_size": 1,
        "published_at": "2026-12-01T00:00:00Z",
        "files": [{"sha1": sha1, "size": size, "compression": compression}]
    })
}

fn manifests() -> Vec<serde_json::Value> {
    let good = sha1_hex(&file());
    let (xz, big, huge) = (file_of(XZ), file_of(XZ_BIG_DICT), file_of(XZ_HUGE_DICT));
    vec![
        manifest(GOOD, "imported-disk", &good, FILE_BYTES, "none"),
        manifest(BAD_SHA1, "bad-sha1-disk", &"0".repeat(40), FILE_BYTES, "none"),
        manifest(SHORT, "short-disk", &good, FILE_BYTES, "none"),
        manifest(XZ, "xz-disk", &sha1_hex(&xz), xz.len(), "xz"),
        manifest(XZ_BIG_DICT, "xz-big-dict-disk", &sha1_hex(&big), big.len(), "xz"),
        manifest(XZ_HUGE_DICT, "xz-huge-dict-disk", &sha1_hex(&huge), huge.len(), "xz"),
    ]
}

fn answer(s: &mut TcpStream, status: &str, body: &[u8], send: usize) {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body[..send.min(body.len())]);
}

fn serve(mut s: TcpStream, extra: &[Extra]) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut all = manifests();
    all.extend(extra.iter().map(|e| e.manifest.clone()));
    let found = |u: &str| all.iter().find(|m| m["uuid"] == u).cloned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["images"] => answer(&mut s, "200 OK", serde_json::Value::Array(all.clone()).to_string().as_bytes(), usize::MAX),
        ["images", u] if found(u).is_some() => answer(&mut s, "200 OK", found(u).unwrap().to_string().as_bytes(), usize::MAX),
        ["images", u, "file"] if extra.iter().any(|e| e.manifest["uuid"] == *u) => {
            let e = extra.iter().find(|e| e.manifest["uuid"] == *u).expect("just found");
            answer(&mut s, "200 OK", &e.file, usize::MAX);
        }
        ["images", u, "file"] if found(u).is_some() => {
            let f = file_of(u);
            let send = if *u == SHORT { f.len() - 1000 } else { f.len() };
            answer(&mut s, "200 OK", &f, send);
        }
        _ => answer(&mut s, "404 Not Found", br#"{"code": "ResourceNotFound", "message": "no such image"}"#, usize::MAX),
    }
    let _ = s.flush();
}

/// Starts serving on 127.0.0.1 (a free port).
pub fn start() -> std::io::Result<Source> {
    start_with(Vec::new())
}

/// As [`start`], serving `extra` too.
pub fn start_with(extra: Vec<Extra>) -> std::io::Result<Source> {
    let extra = Arc::new(extra);
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    l.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let extra = extra.clone();
                    std::thread::spawn(move || serve(s, &extra));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    Ok(Source { port, stop, thread: Some(thread) })
}
