//! An IMGAPI image source the harness serves on this host (127.0.0.1:P,
//! which a machine on QEMU's user network reaches as 10.0.2.2:P): `GET
//! /images`, `GET /images/:uuid` and `GET /images/:uuid/file` for three
//! images: a good one, one whose file is not what `files[0].sha1` says,
//! and one whose file is cut short (the connection closes before
//! `Content-Length` bytes).

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
/// Bytes of each image file.
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

fn manifest(uuid: &str, name: &str, sha1: &str) -> serde_json::Value {
    serde_json::json!({
        "v": 2, "uuid": uuid, "owner": "930896af-bf8c-48d4-885c-6573a94b1853",
        "name": name, "version": "1.0", "type": "zvol", "os": "linux",
        "state": "active", "disabled": false, "public": true, "image_size": 1,
        "published_at": "2026-12-01T00:00:00Z",
        "files": [{"sha1": sha1, "size": FILE_BYTES, "compression": "none"}]
    })
}

fn manifests() -> Vec<serde_json::Value> {
    let good: String = Sha1::digest(file()).iter().map(|b| format!("{b:02x}")).collect();
    vec![
        manifest(GOOD, "imported-disk", &good),
        manifest(BAD_SHA1, "bad-sha1-disk", &"0".repeat(40)),
        manifest(SHORT, "short-disk", &good),
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
            let f = file();
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
