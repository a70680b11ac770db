//! `imgadm sources|avail|import` against image sources scripted in
//! memory: the HTTP client fed split reads, chunked bodies, bad statuses,
//! wrong SHA-1s, short bodies, oversized heads and bodies, garbage JSON and
//! a silent server; every failure installs nothing.

extern crate std;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::imgsrc::{IDLE_TIMEOUT_MS, Net, SOURCES_PROP, SOURCES_SLOTS, SOURCES_VOLUME};
use crate::tests::{BADGE, FROM_IMAGE, Fake, IMAGE, created_uuid, image_file, imgadm, run, server};
use libipc::interfaces::{VmadmImport, vmadm};
use crate::{Machine, ZoneServer};

/// A server's answer to a request's text: the bytes it sends then closes
/// with, or `None` to stay silent.
type Handler = Box<dyn FnMut(&str) -> Option<Vec<u8>>>;

struct Conn {
    server: ([u8; 4], u16),
    request: Vec<u8>,
    answer: Option<VecDeque<u8>>,
    silent: bool,
    quiet_turn: bool,
}

/// TCP as netd's sockets give it, to servers scripted here.
#[derive(Default)]
pub(crate) struct FakeNet {
    servers: BTreeMap<([u8; 4], u16), Handler>,
    conns: BTreeMap<u32, Conn>,
    next: u32,
    /// Bytes one `recv` hands out at most (0: as many as asked).
    piece: usize,
    /// Bytes one `send` takes at most (0: all).
    send_piece: usize,
    /// Request lines received, in order.
    requests: Vec<String>,
    closed: u32,
    slept_ms: u64,
}

impl Net for FakeNet {
    fn connect(&mut self, ip: [u8; 4], port: u16) -> Result<u32, String> {
        if !self.servers.contains_key(&(ip, port)) {
            return Err("socket: connection refused".into());
        }
        self.next += 1;
        let c = Conn { server: (ip, port), request: Vec::new(), answer: None, silent: false, quiet_turn: true };
        self.conns.insert(self.next, c);
        Ok(self.next)
    }
    fn send(&mut self, socket: u32, data: &[u8]) -> Result<usize, String> {
        let c = self.conns.get_mut(&socket).ok_or("socket: no socket")?;
        let n = if self.send_piece == 0 { data.len() } else { data.len().min(self.send_piece) };
        c.request.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn recv(&mut self, socket: u32, max: usize) -> Result<Option<Vec<u8>>, String> {
        let c = self.conns.get_mut(&socket).ok_or("socket: no socket")?;
        if c.answer.is_none() && !c.silent {
            let text = String::from_utf8_lossy(&c.request).into_owned();
            if !text.contains("\r\n\r\n") {
                return Ok(Some(Vec::new()));
            }
            self.requests.push(text.lines().next().unwrap_or("").to_string());
            match (self.servers.get_mut(&c.server).expect("server"))(&text) {
                Some(a) => c.answer = Some(a.into()),
                None => c.silent = true,
            }
        }
        // Every other look finds nothing yet, as a real connection would.
        c.quiet_turn = !c.quiet_turn;
        if c.silent || c.quiet_turn {
            return Ok(Some(Vec::new()));
        }
        let a = c.answer.as_mut().expect("answer");
        if a.is_empty() {
            return Ok(None);
        }
        let n = a.len().min(max).min(if self.piece == 0 { usize::MAX } else { self.piece });
        Ok(Some(a.drain(..n).collect()))
    }
    fn close(&mut self, socket: u32) {
        if self.conns.remove(&socket).is_some() {
            self.closed += 1;
        }
    }
    fn sleep_ms(&mut self, ms: u64) {
        self.slept_ms += ms;
    }
}

const SRC: &str = "http://10.0.2.2:8081";
const SRC_ADDR: ([u8; 4], u16) = ([10, 0, 2, 2], 8081);

fn path_of(request: &str) -> String {
    request.split_whitespace().nth(1).unwrap_or("").to_string()
}

fn answer(status: &str, body: &[u8]) -> Vec<u8> {
    let mut a = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
        .into_bytes();
    a.extend_from_slice(body);
    a
}

fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for c in body.chunks(size) {
        a.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
        a.extend_from_slice(c);
        a.extend_from_slice(b"\r\n");
    }
    a.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    a
}

/// An IMGAPI source serving `manifest` and its `file` as `file_answer`
/// makes the file's response.
fn source(s: &mut ZoneServer<Fake>, manifest: String, file: Vec<u8>, file_answer: fn(&[u8]) -> Vec<u8>) {
    let handler = move |req: &str| -> Option<Vec<u8>> {
        let path = path_of(req);
        Some(if path == "/images" {
            answer("200 OK", format!("[{manifest}]").as_bytes())
        } else if path == format!("/images/{IMAGE}") {
            answer("200 OK", manifest.as_bytes())
        } else if path == format!("/images/{IMAGE}/file") {
            file_answer(&file)
        } else {
            answer("404 Not Found", br#"{"code": "ResourceNotFound", "message": "no such image"}"#)
        })
    };
    s.host.machine.net.servers.insert(SRC_ADDR, Box::new(handler));
}

fn serve(s: &mut ZoneServer<Fake>, handler: impl FnMut(&str) -> Option<Vec<u8>> + 'static) {
    s.host.machine.net.servers.insert(SRC_ADDR, Box::new(handler));
}

/// Nothing of an image on the pool: no image, no partial volume.
fn nothing_installed(s: &mut ZoneServer<Fake>) {
    assert_eq!(imgadm(s, &["list", "-H"], "").stdout, "");
    let names: Vec<String> = s.host.machine.images().list().into_iter().map(|d| d.name).collect();
    assert!(!names.iter().any(|n| n.contains(IMAGE)), "{names:?}");
    // Every connection was closed.
    assert!(s.host.machine.net.conns.is_empty());
}

/// A list an earlier build kept as one plain property is read; the next
/// change keeps it in a slot and empties the plain one.
#[test]
fn sources_of_an_earlier_build_are_read_and_moved_to_the_slots() {
    let mut s = crate::tests::server();
    let mut props = alloc::collections::BTreeMap::new();
    props.insert(SOURCES_PROP.to_string(), "http://10.0.2.2:8081\n".to_string());
    s.host.machine.volumes.insert(SOURCES_VOLUME.into(), (8192, props));
    assert_eq!(imgadm(&mut s, &["sources"], "").stdout, "http://10.0.2.2:8081\n");
    assert_eq!(imgadm(&mut s, &["sources", "-a", "http://192.168.1.9/imgapi"], "").code, 0);
    assert_eq!(imgadm(&mut s, &["sources"], "").stdout, "http://10.0.2.2:8081\nhttp://192.168.1.9/imgapi\n");
    assert_eq!(s.host.machine.volumes[SOURCES_VOLUME].1[SOURCES_PROP], "");
}

#[test]
fn sources_are_added_listed_deleted_and_kept_on_the_pool() {
    let mut s = server();
    let out = imgadm(&mut s, &["sources"], "");
    assert_eq!((out.code, out.stdout.as_str()), (0, ""));
    let out = imgadm(&mut s, &["sources", "-a", "http://10.0.2.2:8081/"], "");
    assert_eq!(out.stdout, "Added image source \"http://10.0.2.2:8081\"\n", "{out:?}");
    let out = imgadm(&mut s, &["sources", "-a", "http://192.168.1.9/imgapi"], "");
    assert_eq!(out.code, 0, "{out:?}");
    let out = imgadm(&mut s, &["sources", "-a", SRC], "");
    assert!(out.code == 0 && out.stdout.contains("no change"), "{out:?}");
    assert_eq!(imgadm(&mut s, &["sources"], "").stdout, "http://10.0.2.2:8081\nhttp://192.168.1.9/imgapi\n");
    let j: serde_json::Value = serde_json::from_str(&imgadm(&mut s, &["sources", "-j"], "").stdout).unwrap();
    assert_eq!(j[1]["url"], "http://192.168.1.9/imgapi");
    assert_eq!(j[1]["type"], "imgapi");
    // Kept on the pool: a restarted zone-server has them.
    let props = &s.host.machine.volumes[SOURCES_VOLUME].1;
    let kept: Vec<&str> = SOURCES_SLOTS.iter().filter_map(|k| crate::host::decode_record(props.get(*k)?)).map(|(_, t)| t).collect();
    assert_eq!(kept, ["http://10.0.2.2:8081\nhttp://192.168.1.9/imgapi\n"], "one whole slot, the other emptied");
    assert!(props.get(SOURCES_PROP).is_none_or(|v| v.is_empty()));
    let machine = core::mem::take(&mut s.host.machine);
    let mut s = ZoneServer::new(machine, alloc::vec![5]);
    assert_eq!(imgadm(&mut s, &["sources"], "").stdout, "http://10.0.2.2:8081\nhttp://192.168.1.9/imgapi\n");
    let out = imgadm(&mut s, &["sources", "-d", "http://192.168.1.9/imgapi"], "");
    assert_eq!(out.stdout, "Deleted image source \"http://192.168.1.9/imgapi\"\n");
    let out = imgadm(&mut s, &["sources", "-d", "http://192.168.1.9/imgapi"], "");
    assert!(out.code == 0 && out.stdout.contains("Do not have"), "{out:?}");
    assert_eq!(imgadm(&mut s, &["sources"], "").stdout, "http://10.0.2.2:8081\n");
}

#[test]
fn bad_sources_are_refused_by_name_and_change_nothing() {
    let mut s = server();
    let long = format!("http://10.0.2.2/{}", "a".repeat(600));
    for bad in [
        "https://images.smartos.org",
        "http://images.smartos.org",
        "ftp://10.0.2.2",
        "http://10.0.2.2:0",
        "http://10.0.2.2:99999",
        "http://10.0.2.2/../etc",
        "http://user@10.0.2.2",
        "http://10.0.2.2/?q=1",
        "http://10.0.2.2\r\nHost: evil",
        "http://300.0.2.2",
        "http://10.0.2",
        "",
        long.as_str(),
    ] {
        let out = imgadm(&mut s, &["sources", "-a", bad], "");
        assert!(out.code == 1 && out.stderr.starts_with("imgadm: error ("), "{bad:?}: {out:?}");
        assert!(out.stderr.contains("image source") || out.stderr.contains("address"), "{bad:?}: {out:?}");
    }
    for args in [&["sources", "-a"][..], &["sources", "-x", SRC], &["sources", "-a", SRC, SRC]] {
        let out = imgadm(&mut s, args, "");
        assert!(out.code == 1 && out.stderr.contains("usage"), "{args:?}: {out:?}");
    }
    assert!(!s.host.machine.volumes.contains_key(SOURCES_VOLUME));
    for _ in 0..crate::imgsrc::SOURCES_MAX {
        let n = s.host.machine.net.next;
        s.host.machine.net.next += 1;
        assert_eq!(imgadm(&mut s, &["sources", "-a", &format!("http://10.0.0.{}", n % 250 + 1)], "").code, 0);
    }
    let out = imgadm(&mut s, &["sources", "-a", "http://10.9.9.9"], "");
    assert!(out.code == 1 && out.stderr.contains("at most"), "{out:?}");
}

#[test]
fn avail_lists_what_the_sources_offer() {
    let mut s = server();
    let (file, manifest) = image_file(64 << 10);
    source(&mut s, manifest, file, |f| answer("200 OK", f));
    let out = imgadm(&mut s, &["avail"], "");
    assert!(out.code == 1 && out.stderr.contains("no image sources"), "{out:?}");
    imgadm(&mut s, &["sources", "-a", SRC], "");
    s.host.machine.net.piece = 5;
    let out = imgadm(&mut s, &["avail"], "");
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["UUID", "NAME", "VERSION", "OS", "TYPE", "PUB"]);
    assert_eq!(lines[1].split_whitespace().take(5).collect::<Vec<_>>(), [IMAGE, "test-disk", "1.0", "linux", "zvol"]);
    let out = imgadm(&mut s, &["avail", "-j", "os=linux"], "");
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((j[0]["manifest"]["uuid"].as_str(), j[0]["source"].as_str()), (Some(IMAGE), Some(SRC)));
    let out = imgadm(&mut s, &["avail", "-j", "os=smartos"], "");
    assert_eq!(out.stdout.trim(), "[]");
    assert_eq!(s.host.machine.net.requests.last().map(String::as_str), Some("GET /images HTTP/1.1"));
    // A second source that is down is named; the first one's images still show.
    imgadm(&mut s, &["sources", "-a", "http://10.0.2.3:81"], "");
    let out = imgadm(&mut s, &["avail", "-H", "-o", "uuid"], "");
    assert_eq!((out.code, out.stdout.trim()), (1, IMAGE), "{out:?}");
    assert!(out.stderr.contains("http://10.0.2.3:81") && out.stderr.contains("connection refused"), "{out:?}");
    assert!(s.host.machine.net.conns.is_empty());
}

#[test]
fn avail_refuses_garbage_and_oversized_answers() {
    let mut s = server();
    imgadm(&mut s, &["sources", "-a", SRC], "");
    let big = alloc::vec![b' '; crate::imgsrc::LIST_BODY_MAX + 1];
    let cases: Vec<(Vec<u8>, &str)> = alloc::vec![
        (answer("200 OK", b"<html>not json</html>"), "not JSON"),
        (answer("200 OK", b"{\"uuid\": 1}"), "must be a JSON list"),
        (answer("500 Internal Server Error", br#"{"code": "InternalError", "message": "db down"}"#), "500 InternalError: db down"),
        (answer("200 OK", &big), "runs past"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(), "malformed response"),
        (format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n", "p".repeat(70_000)).into_bytes(), "header runs past"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[]".to_vec(), "ended in the middle"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), "not hexadecimal"),
    ];
    for (bytes, why) in cases {
        serve(&mut s, move |_| Some(bytes.clone()));
        let out = imgadm(&mut s, &["avail"], "");
        assert!(out.code == 1 && out.stderr.contains(why) && out.stderr.contains(SRC), "{why}: {out:?}");
        assert!(s.host.machine.net.conns.is_empty());
    }
}

#[test]
fn import_streams_the_file_into_the_store_and_vms_clone_it() {
    for (piece, send_piece, chunk) in [(0, 0, 0), (7, 3, 0), (2048, 100, 1000), (1, 0, 4096)] {
        let mut s = server();
        let (file, manifest) = image_file(if piece == 1 { 8 << 10 } else { 1 << 20 });
        s.host.machine.net.piece = piece;
        s.host.machine.net.send_piece = send_piece;
        if chunk == 0 {
            source(&mut s, manifest, file.clone(), |f| answer("200 OK", f));
        } else {
            source(&mut s, manifest, file.clone(), |f| chunked(f, 1000));
        }
        imgadm(&mut s, &["sources", "-a", SRC], "");
        let out = imgadm(&mut s, &["import", IMAGE], "");
        assert_eq!(out.code, 0, "{out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], format!("Importing {IMAGE} (test-disk@1.0) from \"{SRC}\""));
        assert!(lines[1].starts_with("Downloading image 0b7b3b7e [====================] 100%"), "{lines:?}");
        assert_eq!(lines[2], format!("Imported image {IMAGE} (test-disk@1.0)"));
        let list = imgadm(&mut s, &["list", "-H", "-o", "uuid,name,source"], "");
        assert_eq!(list.stdout.split_whitespace().collect::<Vec<_>>(), [IMAGE, "test-disk", SRC], "{list:?}");
        let mut back = alloc::vec![0u8; file.len()];
        s.host.machine.images().read(&format!("zones/{IMAGE}@final"), 0, &mut back).unwrap();
        assert!(back == file);
        assert!(s.host.machine.net.conns.is_empty());
        // Again: already there, nothing fetched but the check.
        let before = s.host.machine.net.requests.len();
        let out = imgadm(&mut s, &["import", IMAGE], "");
        assert!(out.code == 0 && out.stdout.contains("already installed"), "{out:?}");
        assert_eq!(s.host.machine.net.requests.len(), before);
        // A VM's disk is a clone of it.
        let vm = created_uuid(&run(&mut s, &["create"], FROM_IMAGE));
        let info = s.host.machine.images().get(&format!("zones/{vm}-disk0")).unwrap();
        assert_eq!(info.origin, Some(format!("zones/{IMAGE}@final")));
    }
}

#[test]
fn import_with_dash_s_needs_no_configured_source_and_q_is_quiet() {
    let mut s = server();
    let (file, manifest) = image_file(64 << 10);
    source(&mut s, manifest, file, |f| answer("200 OK", f));
    let out = imgadm(&mut s, &["import", IMAGE], "");
    assert!(out.code == 1 && out.stderr.contains("no image sources"), "{out:?}");
    let out = imgadm(&mut s, &["import", "-q", IMAGE, "-S", SRC], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("Downloading"), "{out:?}");
    assert!(!s.host.machine.volumes.contains_key(SOURCES_VOLUME));
}

/// A gzip'd image: decompressed as it arrives.
#[test]
fn a_gzip_image_is_decompressed() {
    use std::io::Write;
    let mut s = server();
    let (raw, manifest) = image_file(256 << 10);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&raw).unwrap();
    let gz = enc.finish().unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    use sha1::Digest;
    let sha: String = sha1::Sha1::digest(&gz).iter().map(|x| format!("{x:02x}")).collect();
    m["files"][0] = serde_json::json!({"sha1": sha, "size": gz.len(), "compression": "gzip"});
    source(&mut s, m.to_string(), gz, |f| chunked(f, 3000));
    s.host.machine.net.piece = 700;
    let out = imgadm(&mut s, &["import", IMAGE, "-S", SRC], "");
    assert_eq!(out.code, 0, "{out:?}");
    let mut back = alloc::vec![0u8; raw.len()];
    s.host.machine.images().read(&format!("zones/{IMAGE}@final"), 0, &mut back).unwrap();
    assert!(back == raw);
}

/// An xz image: decompressed as it arrives; one with a dictionary over the
/// limit is refused by name (imgadm's UncompressionError) before any of it
/// is decompressed, and installs nothing.
#[test]
fn an_xz_image_is_decompressed_and_a_huge_dictionary_refused() {
    use sha1::Digest;
    use std::io::Write;
    let (raw, manifest) = image_file(256 << 10);
    let xz = |dict: u32| {
        let mut o = lzma_rust2::XzOptions::with_preset(1);
        o.lzma_options.dict_size = dict;
        let mut w = lzma_rust2::XzWriter::new(Vec::new(), o).unwrap();
        w.write_all(&raw).unwrap();
        w.finish().unwrap()
    };
    let with_file = |file: &[u8]| {
        let mut m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let sha: String = sha1::Sha1::digest(file).iter().map(|x| format!("{x:02x}")).collect();
        m["files"][0] = serde_json::json!({"sha1": sha, "size": file.len(), "compression": "xz"});
        m.to_string()
    };
    let mut s = server();
    let file = xz(64 << 10);
    source(&mut s, with_file(&file), file, |f| chunked(f, 3000));
    s.host.machine.net.piece = 700;
    let out = imgadm(&mut s, &["import", IMAGE, "-S", SRC], "");
    assert_eq!(out.code, 0, "{out:?}");
    let mut back = alloc::vec![0u8; raw.len()];
    s.host.machine.images().read(&format!("zones/{IMAGE}@final"), 0, &mut back).unwrap();
    assert!(back == raw);

    // The first block header's LZMA2 property byte says 1.5 GiB (37), its
    // CRC32 made right: only the dictionary is wrong.
    let mut s = server();
    let mut file = xz(64 << 10);
    let size = (usize::from(file[12]) + 1) * 4;
    assert_eq!(&file[14..16], &[0x21, 1], "one LZMA2 filter, no sizes");
    file[16] = 37;
    let crc = crc32fast::hash(&file[12..12 + size - 4]);
    file[12 + size - 4..12 + size].copy_from_slice(&crc.to_le_bytes());
    source(&mut s, with_file(&file), file, |f| answer("200 OK", f));
    let out = imgadm(&mut s, &["import", IMAGE, "-S", SRC], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("(UncompressionError)") && out.stderr.contains("1536 MiB") && out.stderr.contains("limit of 64 MiB"),
        "{out:?}"
    );
    assert!(s.host.machine.images().get(&format!("zones/{IMAGE}")).is_err());
    assert!(s.host.machine.images().get(&format!("zones/{IMAGE}-partial")).is_err());
}

#[test]
fn a_bad_download_is_refused_by_name_and_installs_nothing() {
    let (file, manifest) = image_file(64 << 10);
    let mut wrong = file.clone();
    wrong[10] ^= 1;
    let len = file.len();
    type Case = (&'static str, Handler);
    let m = manifest.clone();
    let serve_file = move |bytes: Vec<u8>| -> Handler {
        let m = m.clone();
        Box::new(move |req: &str| {
            let p = path_of(req);
            Some(if p.ends_with("/file") { bytes.clone() } else { answer("200 OK", m.as_bytes()) })
        })
    };
    let mut longer = file.clone();
    longer.extend_from_slice(b"more");
    let other = manifest.replace(IMAGE, "11111111-2222-4333-8444-555555555555");
    let cases: Vec<Case> = alloc::vec![
        ("DownloadError", serve_file(answer("200 OK", &wrong))),
        ("files[0].sha1 says", serve_file(answer("200 OK", &wrong))),
        ("ended in the middle", serve_file(answer("200 OK", &file)[..len + 40].to_vec())),
        ("Content-Length", serve_file(answer("200 OK", &file[..len - 100]))),
        ("longer than files[0].size", serve_file(chunked(&longer, 1000))),
        ("is truncated", serve_file(chunked(&file[..len - 1], 1000))),
        ("500 InternalError: disk on fire", serve_file(answer("500 Oops", br#"{"code":"InternalError","message":"disk on fire"}"#))),
        ("header runs past", serve_file(format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "x".repeat(80_000)).into_bytes())),
        ("sent nothing for 30 s", {
            let m = manifest.clone();
            Box::new(move |req: &str| if path_of(req).ends_with("/file") { None } else { Some(answer("200 OK", m.as_bytes())) })
        }),
        ("was not found in any image source", Box::new(|_: &str| Some(answer("404 Not Found", b"{}")))),
        ("InvalidManifest", Box::new(|_: &str| Some(answer("200 OK", b"{\"v\": 2, \"uuid\": 7}")))),
        ("not valid JSON", Box::new(|_: &str| Some(answer("200 OK", b"\x00\xff garbage")))),
        ("answered image 11111111", { let o = other.clone(); Box::new(move |_: &str| Some(answer("200 OK", o.as_bytes()))) }),
        ("runs past 65536 bytes", Box::new(|_: &str| Some(answer("200 OK", &alloc::vec![b' '; 70_000])))),
        ("sent nothing for 30 s", Box::new(|_: &str| None)),
    ];
    for (why, handler) in cases {
        // Each case twice: `imgadm import` whole, and stepped (the shell's).
        let handler = alloc::rc::Rc::new(core::cell::RefCell::new(handler));
        for stepped in [false, true] {
            let mut s = server();
            let h = handler.clone();
            s.host.machine.net.servers.insert(SRC_ADDR, Box::new(move |req: &str| (h.borrow_mut())(req)));
            s.host.machine.net.piece = 1500;
            imgadm(&mut s, &["sources", "-a", SRC], "");
            let (code, stderr) = if stepped {
                let (_, end) = step_import(&mut s, BADGE, &["import", IMAGE]);
                (end.code, end.stderr)
            } else {
                let out = imgadm(&mut s, &["import", IMAGE], "");
                (out.code, out.stderr)
            };
            assert!(code == 1 && stderr.starts_with("imgadm: error (") && stderr.contains(why), "{why} (stepped {stepped}): {stderr:?}");
            if why.contains("30 s") {
                assert!(s.host.machine.net.slept_ms >= IDLE_TIMEOUT_MS, "{why}");
            }
            nothing_installed(&mut s);
            // Nothing of it is kept for a step.
            assert_eq!(call(&mut s, BADGE, vmadm::Request::import_step {}).code, 1);
        }
    }
}

/// `vmadm.import_*` from client `badge`, through the dispatch as IPC
/// brings it.
fn call(s: &mut ZoneServer<Fake>, badge: u64, r: vmadm::Request) -> VmadmImport {
    use libipc::Dispatch;
    let req = libipc::wire::encode(&r).unwrap();
    let reply = s.dispatch_from(badge, vmadm::ID, &req).expect("dispatch");
    match libipc::wire::decode(&reply).expect("a reply") {
        vmadm::Reply::import_begin(r) | vmadm::Reply::import_step(r) => r,
        other => panic!("{other:?}"),
    }
}

fn begin(s: &mut ZoneServer<Fake>, badge: u64, args: &[&str]) -> VmadmImport {
    call(s, badge, vmadm::Request::import_begin { args: args.iter().map(|a| a.to_string()).collect() })
}

/// An import stepped to its end as the operator shell steps it: the
/// answers to `import_begin` and each `import_step` (the last is the end).
fn step_import(s: &mut ZoneServer<Fake>, badge: u64, args: &[&str]) -> (Vec<VmadmImport>, VmadmImport) {
    let mut seen = alloc::vec![begin(s, badge, args)];
    while seen.last().unwrap().running {
        assert!(seen.len() < 10_000, "the import never ends");
        seen.push(call(s, badge, vmadm::Request::import_step {}));
    }
    let end = seen.pop().unwrap();
    (seen, end)
}

/// The operator shell's import: each step draws a new percentage (so a
/// terminal shows the download advance), a step reads at most
/// `STEP_BYTES`, and the end says what was imported; the image is then
/// installed as by `imgadm import` whole.
#[test]
fn a_stepped_import_shows_each_percentage_as_it_downloads() {
    let mut s = server();
    let (file, manifest) = image_file(256 << 10);
    source(&mut s, manifest, file.clone(), |f| answer("200 OK", f));
    s.host.machine.net.piece = 2048;
    imgadm(&mut s, &["sources", "-a", SRC], "");
    let (steps, end) = step_import(&mut s, BADGE, &["import", IMAGE]);
    let first = &steps[0];
    assert_eq!(first.stdout, format!("Importing {IMAGE} (test-disk@1.0) from \"{SRC}\"\n"));
    assert_eq!((first.done_bytes, first.total_bytes, first.line.as_str()), (0, file.len() as u64, ""));
    // 16 KiB read at a time from a 256 KiB file: 6% a read, each a step.
    let lines: Vec<&str> = steps[1..].iter().map(|p| p.line.as_str()).collect();
    assert!(lines.len() >= 10, "{lines:?}");
    let mut last = 0;
    for (p, line) in steps[1..].iter().zip(&lines) {
        assert!(p.running && p.code == 0 && p.stdout.is_empty() && p.total_bytes == file.len() as u64, "{p:?}");
        assert!(p.done_bytes > last && p.done_bytes - last <= crate::imgsrc::STEP_BYTES as u64, "{p:?}");
        last = p.done_bytes;
        let pct = (p.done_bytes * 100 / p.total_bytes) as usize;
        assert!(line.starts_with("Downloading image 0b7b3b7e [") && line.contains(&format!("{pct:>3}%")), "{line}");
    }
    assert!(end.line.starts_with("Downloading image 0b7b3b7e [====================] 100%  0.2MiB of 0.2MiB"), "{end:?}");
    assert_eq!((end.running, end.code, end.stderr.as_str()), (false, 0, ""));
    assert_eq!(end.stdout, format!("Imported image {IMAGE} (test-disk@1.0)\n"));
    let mut back = alloc::vec![0u8; file.len()];
    s.host.machine.images().read(&format!("zones/{IMAGE}@final"), 0, &mut back).unwrap();
    assert!(back == file);
    assert!(s.host.machine.net.conns.is_empty());
    // Nothing more to step; importing it again ends at once.
    let after = call(&mut s, BADGE, vmadm::Request::import_step {});
    assert!(after.code == 1 && after.stderr.contains("no import of yours is under way"), "{after:?}");
    let again = begin(&mut s, BADGE, &["import", IMAGE]);
    assert!(!again.running && again.code == 0 && again.stdout.contains("already installed"), "{again:?}");
    // -q: no progress lines.
    let mut s = server();
    let (file, manifest) = image_file(64 << 10);
    source(&mut s, manifest, file, |f| answer("200 OK", f));
    let (steps, end) = step_import(&mut s, BADGE, &["import", "-q", IMAGE, "-S", SRC]);
    assert!(steps.len() > 1 && steps.iter().all(|p| p.line.is_empty()) && end.line.is_empty(), "{steps:?} {end:?}");
    assert_eq!(end.code, 0, "{end:?}");
}

/// One import at a time: another client's begin, import and install are
/// refused while it is stepped, its steps are not theirs to take, and an
/// import nobody steps for a minute is given up for the next one.
#[test]
fn one_import_at_a_time_and_an_abandoned_one_is_given_up() {
    const OTHER: u64 = BADGE + 1;
    let mut s = ZoneServer::new(Fake::default(), alloc::vec![BADGE, OTHER]);
    let (file, manifest) = image_file(256 << 10);
    source(&mut s, manifest, file.clone(), |f| answer("200 OK", f));
    imgadm(&mut s, &["sources", "-a", SRC], "");
    assert!(begin(&mut s, BADGE, &["import", IMAGE]).running);
    let p = call(&mut s, BADGE, vmadm::Request::import_step {});
    assert!(p.running && p.done_bytes > 0, "{p:?}");
    let conns = s.host.machine.net.conns.len();
    let busy = begin(&mut s, OTHER, &["import", IMAGE]);
    assert!(!busy.running && busy.code == 1, "{busy:?}");
    assert_eq!(
        busy.stderr,
        format!("imgadm: error (ImportInProgress): image {IMAGE} is being imported by another client; try again when it is done\n")
    );
    s.caller = OTHER;
    for args in [&["import", IMAGE][..], &["install", "-m", "-", "-f", "zones/file"]] {
        let out = imgadm(&mut s, args, "{}");
        assert!(out.code == 1 && out.stderr.contains("ImportInProgress"), "{args:?}: {out:?}");
    }
    let theirs = call(&mut s, OTHER, vmadm::Request::import_step {});
    assert!(theirs.code == 1 && theirs.stderr.contains("no import of yours"), "{theirs:?}");
    // Nothing of those touched the first import: it goes on to the end.
    assert_eq!(s.host.machine.net.conns.len(), conns);
    let mut last = call(&mut s, BADGE, vmadm::Request::import_step {});
    while last.running {
        last = call(&mut s, BADGE, vmadm::Request::import_step {});
    }
    assert_eq!(last.code, 0, "{last:?}");
    imgadm(&mut s, &["delete", IMAGE], "");
    assert!(s.host.machine.images().get(&format!("zones/{IMAGE}")).is_err());

    // Begun and left (the client gone): within the minute still refused,
    // after it given up for another client, whose import completes.
    assert!(begin(&mut s, BADGE, &["import", IMAGE]).running);
    assert!(call(&mut s, BADGE, vmadm::Request::import_step {}).running);
    s.host.machine.later_secs += libipc::interfaces::IMPORT_STALE_SECS - 1;
    assert_eq!(begin(&mut s, OTHER, &["import", IMAGE]).code, 1);
    s.host.machine.later_secs += 1;
    let (_, end) = step_import(&mut s, OTHER, &["import", IMAGE]);
    assert_eq!(end.code, 0, "{end:?}");
    let gone = call(&mut s, BADGE, vmadm::Request::import_step {});
    assert!(gone.code == 1 && gone.stderr.contains("no import of yours"), "{gone:?}");
    assert!(s.host.machine.net.conns.is_empty());
    imgadm(&mut s, &["delete", IMAGE], "");

    // A client that begins again gives up its own earlier import; `imgadm
    // import` whole from the same client does too.
    assert!(begin(&mut s, BADGE, &["import", IMAGE]).running);
    assert!(call(&mut s, BADGE, vmadm::Request::import_step {}).running);
    let (_, end) = step_import(&mut s, BADGE, &["import", IMAGE]);
    assert_eq!(end.code, 0, "{end:?}");
    assert!(s.host.machine.net.conns.is_empty());
    imgadm(&mut s, &["delete", IMAGE], "");
    assert!(begin(&mut s, BADGE, &["import", IMAGE]).running);
    s.caller = BADGE;
    let whole = imgadm(&mut s, &["import", IMAGE], "");
    assert_eq!(whole.code, 0, "{whole:?}");
    assert!(s.host.machine.net.conns.is_empty());
}

/// Bad requests to the stepped import: refused by name, nothing begun;
/// clients not named by `vmadm-clients=` find no such interface.
#[test]
fn stepped_import_refuses_bad_requests() {
    use libipc::Dispatch;
    let mut s = server();
    let step = call(&mut s, BADGE, vmadm::Request::import_step {});
    assert_eq!(
        (step.running, step.code, step.stderr.as_str()),
        (false, 1, "imgadm: error: no import of yours is under way (imgadm import UUID begins one)\n")
    );
    let huge = "x".repeat(4000);
    for args in [
        &[][..],
        &["import"],
        &["import", "-S"],
        &["import", IMAGE, "extra"],
        &["import", "../../etc/passwd"],
        &["import", IMAGE, "-S", "https://images.smartos.org"],
        &["import", IMAGE, "-S", "http://10.0.2.2:8081/\u{0}x"],
        &["list"],
        &["import", huge.as_str()],
    ] {
        let r = begin(&mut s, BADGE, args);
        assert!(!r.running && r.code != 0 && r.stderr.starts_with("imgadm: "), "{args:?}: {r:?}");
        assert!(r.stdout.len() + r.stderr.len() <= libipc::interfaces::VMADM_REPLY_MAX as usize);
        assert_eq!(call(&mut s, BADGE, vmadm::Request::import_step {}).code, 1, "{args:?}");
    }
    assert!(s.host.machine.net.requests.is_empty());
    for r in [vmadm::Request::import_begin { args: alloc::vec!["import".into(), IMAGE.into()] }, vmadm::Request::import_step {}] {
        let req = libipc::wire::encode(&r).unwrap();
        assert_eq!(s.dispatch_from(BADGE + 1, vmadm::ID, &req), Err(libipc::RemoteError::WrongInterface));
        assert_eq!(s.dispatch_from(0, vmadm::ID, &req), Err(libipc::RemoteError::WrongInterface));
    }
}

#[test]
fn import_arguments_are_checked() {
    let mut s = server();
    for args in [
        &["import"][..],
        &["import", "-S"],
        &["import", IMAGE, "extra"],
        &["import", "-x", IMAGE],
        &["import", "../../etc/passwd"],
        &["import", IMAGE, "-S", "https://images.smartos.org"],
    ] {
        let out = imgadm(&mut s, args, "");
        assert!(out.code == 1 && out.stderr.starts_with("imgadm: error (Usage)"), "{args:?}: {out:?}");
    }
    assert!(s.host.machine.net.requests.is_empty());
}
