//! An IMGAPI image source the harness serves on this host (127.0.0.1:P,
//! which a machine on QEMU's user network reaches as 10.0.2.2:P): `GET
//! /images`, `GET /images/:uuid` and `GET /images/:uuid/file` for five
//! images: a good one, one whose file is not what `files[0].sha1` says,
//! one whose file is cut short (the connection closes before
//! `Content-Length` bytes), and two xz-compressed ones: one with a 64 KiB
//! dictionary and one with xz's default 8 MiB (more than zone-server's
//! heap holds: refused by name).

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
/// Bytes of each uncompressed image file.
const FILE_BYTES: usize = 256 * 1024;

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
        _ => file(),
    }
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
    let (xz, big) = (file_of(XZ), file_of(XZ_BIG_DICT));
    vec![
        manifest(GOOD, "imported-disk", &good, FILE_BYTES, "none"),
        manifest(BAD_SHA1, "bad-sha1-disk", &"0".repeat(40), FILE_BYTES, "none"),
        manifest(SHORT, "short-disk", &good, FILE_BYTES, "none"),
        manifest(XZ, "xz-disk", &sha1_hex(&xz), xz.len(), "xz"),
        manifest(XZ_BIG_DICT, "xz-big-dict-disk", &sha1_hex(&big), big.len(), "xz"),
    ]
}

fn answer(s: &mut TcpStream, status: &str, body: &[u8], send: usize) {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body[..send.min(body.len())]);
}

fn serve(mut s: TcpStream) {
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
    let all = manifests();
    let found = |u: &str| all.iter().find(|m| m["uuid"] == u).cloned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["images"] => answer(&mut s, "200 OK", serde_json::Value::Array(all.clone()).to_string().as_bytes(), usize::MAX),
        ["images", u] if found(u).is_some() => answer(&mut s, "200 OK", found(u).unwrap().to_string().as_bytes(), usize::MAX),
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
                    std::thread::spawn(move || serve(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    Ok(Source { port, stop, thread: Some(thread) })
}
