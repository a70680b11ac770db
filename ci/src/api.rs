//! The `api/http-qemu` system case: the HTTP API reached from this host
//! over the network, as an operator's laptop would reach it.
//!
//! ```text
//!  test ─ 127.0.0.1:P ─ QEMU slirp (hostfwd) ─ machine virtio-net ─ netd (admin, 10.0.2.15) ─ socket ─ apid ─ zone-server
//! ```
//!
//! Manifest `initrd/manifests/api.toml`. The case waits for `GET /ping`,
//! then: `GET /vms` without a token (401) and with a wrong one (403),
//! with the token (200, `[]`), bad JSON (400), vmadm's table of hostile
//! payloads ([`hostile_steps`]: each a 4xx naming the property, nothing
//! made), `POST /vms` with a payload
//! (201, the VM booting the zone case's spinning test kernel), the same
//! uuid again (a 4xx: it already exists), `GET /vms`
//! (the VM `running`), the host `vmadm list` against the same address
//! (vmadm's table with the VM), the guest's console line through `GET
//! /vms/:uuid/console` and the host `vmadm console` (and that route's 401,
//! 400 for a bad offset, 404 for an unknown VM), the same text through
//! `GET /vms/:uuid/console.txt` (`text/plain`, `X-Console-Next`; 401
//! without the token), `POST
//! /vms/:uuid/console` (the bytes taken; 400 for a bad body), `DELETE /vms/:uuid`, and
//! `GET /vms` again (`[]`). Then images, with the host `imgadm` against an IMGAPI
//! source the harness serves on this host ([`crate::imgsource`], reached
//! from the machine as 10.0.2.2:P through netd's sockets): `imgadm
//! sources -a`, `sources`, `avail` (its three images), `import` of the
//! good one, `import` of one with a wrong SHA-1 and of one whose file is
//! cut short (both refused, naming why), `list` (only the good one),
//! `POST /vms` of a VM whose disk is a clone of the imported image
//! (running), its forced stop (its console then 409), the host `vmadm
//! create-snapshot`, `rollback-snapshot` (and one of an unknown
//! snapshot, refused) and `delete-snapshot` of it, its delete, and
//! `sources -d`. Also a graceful `vmadm stop -t 3` (host CLI) of a guest
//! deaf to the power button, under way while `GET /vms/:uuid` and `GET
//! /vms` answer it `stopping`, then returning, forced at its deadline.
//! Then the machine is ended
//! (apid cannot power it off).
//! In the system tier (three passes in a row beside two CPU hogs).

use crate::Result;
use crate::emu::{Qemu, log_path};
use crate::image::{self, BootSystem};
use crate::vm::{HOST_ADDRESS, HOST_MAC, HostFwd, admin_nic, free_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CASE: &str = "api/http-qemu";
pub(crate) const TOKEN: &str = "api-case-token-4b1d";
const API_PORT: u16 = 8080;
const VM: &str = "a91c0de0-0000-4000-8000-0000000000b2";
const PAYLOAD: &str = r#"{"uuid": "a91c0de0-0000-4000-8000-0000000000b2", "brand": "bhyve", "alias": "api-web", "ram": 64, "vcpus": 1, "kernel": "/zone-guest-halt", "disks": [{"size": 16}]}"#;

/// What the case found.
pub type Outcome = crate::harness::Checks;

/// An HTTP/1.1 answer: the status, the head's lines, and the body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One request on a connection of its own; `token` as a bearer token.
pub(crate) fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    // Generous: a loaded host runs the emulated machine slowly.
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: alcove\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status line in {:?}", text.get(..80).unwrap_or(&text))))?;
    let (head, body) = text.split_once("\r\n\r\n").map_or((text.clone(), String::new()), |(h, b)| (h.to_string(), b.to_string()));
    Ok(Answer { status, head, body })
}

/// The host `vmadm` and `imgadm` (alcove-api's CLIs), built for this host.
pub(crate) fn host_tools() -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(crate::root())
        .args(["build", "-q", "-p", "alcove-api", "--bin", "vmadm", "--bin", "imgadm"])
        .status()?;
    if !st.success() {
        return Err("building the host vmadm and imgadm (cargo build -p alcove-api --bin vmadm --bin imgadm) failed".into());
    }
    Ok((crate::root().join("target/debug/vmadm"), crate::root().join("target/debug/imgadm")))
}

/// A VM whose boot disk is a clone of the imported image.
const IMAGE_VM: &str = "a91c0de0-0000-4000-8000-0000000000b3";

/// Runs the host CLI `tool ARGS` against the machine: (success, stdout, stderr).
pub(crate) fn cli(tool: &Path, port: u16, args: &[&str]) -> std::result::Result<(bool, String, String), String> {
    let out = Command::new(tool)
        .args(args)
        .env("ALCOVE_URL", format!("http://127.0.0.1:{port}"))
        .env("ALCOVE_TOKEN", TOKEN)
        .env_remove("ALCOVE_TOKEN_FILE")
        .output()
        .map_err(|e| format!("running {}: {e}", tool.display()))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((out.status.success(), text(&out.stdout), text(&out.stderr)))
}

/// The running VM's console: the guest's line (`zone-guest: running`)
/// comes back through `GET /vms/:uuid/console` and through the host
/// `vmadm console` (followed until the line shows, then detached with
/// ^]); the route's errors.
fn console_steps(port: u16, vmadm: &Path, o: &mut Outcome) -> std::result::Result<(), String> {
    let line = crate::zone::GUEST_HALT_LINE;
    let path = format!("/vms/{VM}/console");
    let req = |path: &str, token: Option<&str>| http(port, "GET", path, token, None).map_err(|e| format!("GET {path}: {e}"));
    // The guest writes its line soon after the VMM starts: poll for it.
    let since = Instant::now();
    let found = loop {
        let a = req(&path, Some(TOKEN))?;
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
        if a.status != 200 {
            break Err(format!("GET {path}: {a:?}, not 200"));
        }
        if v["data"].as_str().is_some_and(|d| d.contains(line)) {
            break Ok(v);
        }
        if since.elapsed() > Duration::from_secs(60) {
            break Err(format!("GET {path}: no {line:?} within 60 s; last answer {a:?}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    match found {
        Err(e) => o.problems.push(e),
        Ok(v) => {
            let (next, end) = (v["next"].as_u64(), v["end"].as_u64());
            o.check(v["offset"] == 0 && v["lost"] == 0 && next.is_some() && next == end, || format!("GET {path}: the offsets of {v}"));
            // From `next`: nothing new (the guest wrote one line and halted).
            let a = req(&format!("{path}?offset={}", next.unwrap_or(0)), Some(TOKEN))?;
            let w: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
            o.check(a.status == 200 && w["data"] == "" && w["next"].as_u64() == next, || format!("GET {path}?offset=NEXT: {a:?}"));
            // The same as plain text (`console.txt`), the offsets in headers.
            let txt = format!("{path}.txt");
            let a = req(&txt, Some(TOKEN))?;
            let next_header = format!("X-Console-Next: {}\r\n", next.unwrap_or(0));
            o.check(
                a.status == 200
                    && a.head.contains("Content-Type: text/plain; charset=utf-8\r\n")
                    && a.head.contains(&next_header)
                    && v["data"].as_str() == Some(a.body.as_str()),
                || format!("GET {txt}: {a:?}, not 200 with the text {:?}", v["data"]),
            );
            let a = req(&txt, None)?;
            o.check(a.status == 401, || format!("GET {txt} without a token: {a:?}, not 401"));
        }
    }
    // Typing at it: the guest's queue takes the bytes.
    let a = http(port, "POST", &path, Some(TOKEN), Some(r#"{"data": "x\r"}"#)).map_err(|e| format!("POST {path}: {e}"))?;
    o.check(a.status == 200 && a.body.contains("\"taken\":2"), || format!("POST {path}: {a:?}, not 200 taking 2 bytes"));
    let a = http(port, "POST", &path, Some(TOKEN), Some(r#"{"data": 7}"#)).map_err(|e| format!("POST {path}: {e}"))?;
    o.check(a.status == 400, || format!("POST {path} with a number for data: {a:?}, not 400"));
    let a = req(&path, None)?;
    o.check(a.status == 401, || format!("GET {path} without a token: {a:?}, not 401"));
    let a = req(&format!("{path}?offset=-1"), Some(TOKEN))?;
    o.check(a.status == 400 && a.body.contains("offset="), || format!("GET {path}?offset=-1: {a:?}, not 400"));
    let unknown = "a91c0de0-0000-4000-8000-0000000000ff";
    let a = req(&format!("/vms/{unknown}/console"), Some(TOKEN))?;
    o.check(a.status == 404, || format!("GET /vms/{unknown}/console: {a:?}, not 404"));
    // The host `vmadm console`: it prints the line, and goes on following.
    let mut child = Command::new(vmadm)
        .args(["console", VM])
        .env("ALCOVE_URL", format!("http://127.0.0.1:{port}"))
        .env("ALCOVE_TOKEN", TOKEN)
        .env_remove("ALCOVE_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {} console: {e}", vmadm.display()))?;
    let stdout = child.stdout.take().ok_or("vmadm console: no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(line) => break true,
            Ok(l) => seen.push(l),
            Err(_) => break false,
        }
    };
    // Still following (not ended by itself), then detached with ^]
    // (SmartOS's escape): it ends its request and exits 0. (Killed in the
    // middle of a request instead, it left netd resetting the next
    // connections for a second.)
    let running = matches!(child.try_wait(), Ok(None));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&[0x1d]);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let detached = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                break false;
            }
        }
    };
    let out = child.wait_with_output().map_err(|e| format!("vmadm console: {e}"))?;
    let _ = reader.join();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    o.check(got, || format!("the host `vmadm console {VM}` did not print {line:?} within 60 s: {seen:?} {err:?}"));
    o.check(running, || format!("the host `vmadm console {VM}` ended by itself: {err:?}"));
    o.check(detached, || format!("the host `vmadm console {VM}` did not detach on ^] with exit 0 within 20 s: {err:?}"));
    Ok(())
}

/// New requests made at once after a connection was cut off: how many
/// of `n` were answered 200, and the first failure.
fn pings_after(port: u16, n: usize) -> (usize, Option<String>) {
    let mut ok = 0;
    let mut first = None;
    for i in 0..n {
        match http(port, "GET", "/ping", None, None) {
            Ok(a) if a.status == 200 => ok += 1,
            Ok(a) => {
                first.get_or_insert(format!("request {}: {a:?}", i + 1));
            }
            Err(e) => {
                first.get_or_insert(format!("request {}: {e}", i + 1));
            }
        }
    }
    (ok, first)
}

/// Requests cut off by this host, and the API right after: a host
/// `vmadm console` killed (SIGKILL) in the middle of its polling; a
/// connection reset (RST: closed with its answer unread) in the middle of
/// a second, pipelined request; 40 connections opened at once (more than
/// netd's listen backlog and apid's connections), each asking `GET
/// /ping` (each answered, 503, or reset, none left hanging), three
/// connections dropped in their handshake. After each, at once, 8 new
/// requests: every one answered. Then 40 more cut off at once after half a
/// request: refused while netd's backlog and apid clear them, served again
/// within 30 s, then 8 more all answered.
fn abort_steps(port: u16, vmadm: &Path, o: &mut Outcome) -> std::result::Result<(), String> {
    const AFTER: usize = 8;
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(vmadm)
        .args(["console", VM])
        .env("ALCOVE_URL", &url)
        .env("ALCOVE_TOKEN", TOKEN)
        .env_remove("ALCOVE_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("running {} console: {e}", vmadm.display()))?;
    // Polling by now (a poll every CONSOLE_POLL; killed in one of them or
    // between two).
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let _ = child.wait();
    let (ok, first) = pings_after(port, AFTER);
    o.check(ok == AFTER, || format!("after `vmadm console` was killed: {ok} of {AFTER} new requests answered 200; {first:?}"));

    // Pipelined: `GET /ping` whole, then half of `GET /vms`; the first
    // answer arrives and is left unread, so the close is a reset.
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: alcove\r\n\r\nGET /vms HTTP/1.1\r\nHost: al").map_err(|e| format!("send: {e}"))?;
    let mut byte = [0u8; 1];
    let answered = matches!(s.peek(&mut byte), Ok(1));
    drop(s);
    o.check(answered, || "the pipelined GET /ping was not answered".into());
    let (ok, first) = pings_after(port, AFTER);
    o.check(ok == AFTER, || format!("after a connection was reset mid-request: {ok} of {AFTER} new requests answered 200; {first:?}"));

    // 40 at once, each a whole request.
    const BURST: usize = 40;
    let conns: Vec<_> = (0..BURST)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
            s.write_all(b"GET /ping HTTP/1.1\r\nHost: alcove\r\nConnection: close\r\n\r\n").ok()?;
            Some(s)
        })
        .collect();
    let (mut served, mut busy, mut reset, mut hung) = (0, 0, 0, 0);
    for mut s in conns {
        let mut raw = Vec::new();
        match s.read_to_end(&mut raw) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => hung += 1,
            _ if raw.starts_with(b"HTTP/1.1 200") => served += 1,
            _ if raw.starts_with(b"HTTP/1.1 503") => busy += 1,
            _ if raw.is_empty() => reset += 1,
            _ => hung += 1,
        }
    }
    o.check(hung == 0 && served >= 1 && served + busy + reset == BURST, || {
        format!("{BURST} requests at once: {served} answered 200, {busy} 503, {reset} refused (reset or closed), {hung} hung or garbled")
    });
    let (ok, first) = pings_after(port, AFTER);
    o.check(ok == AFTER, || format!("after {BURST} requests at once: {ok} of {AFTER} new requests answered 200; {first:?}"));

    // Three connections closed as soon as they are made: QEMU's user
    // network has accepted them on this host and is still shaking hands
    // with the machine, which it then leaves half-open (what a client
    // killed at that moment does). Fewer than netd's backlog: nothing
    // waits for them.
    for _ in 0..3 {
        drop(TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?);
    }
    let (ok, first) = pings_after(port, AFTER);
    o.check(ok == AFTER, || format!("after 3 connections were dropped in their handshake: {ok} of {AFTER} new requests answered 200; {first:?}"));

    // 40 opened at once and dropped after half a request: more half-open
    // handshakes and unfinished requests than the backlog and apid take,
    // refused until they are cleared; then served.
    let conns: Vec<_> = (0..BURST)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /vms HTTP/1.1\r\nHost: al").ok()?;
            Some(s)
        })
        .collect();
    drop(conns);
    let since = Instant::now();
    let mut refused = 0;
    let recovered = loop {
        match http(port, "GET", "/ping", None, None) {
            Ok(a) if a.status == 200 => break true,
            _ if since.elapsed() > Duration::from_secs(30) => break false,
            _ => refused += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("bench api_served_again_after_{BURST}_dropped {} ms", since.elapsed().as_millis());
    o.check(recovered, || format!("after {BURST} connections were dropped at once: not served again within 30 s ({refused} refused)"));
    let (ok, first) = pings_after(port, AFTER);
    o.check(ok == AFTER, || format!("served again after {BURST} dropped connections: {ok} of {AFTER} next requests answered 200; {first:?}"));
    Ok(())
}

/// netd's `test-exit-on-connect=` port in api.toml: a connection there
/// ends netd (as if killed).
const TRIPWIRE_PORT: u16 = 9;

/// netd ended (a connection to its tripwire port, through the machine's
/// NIC) while apid and zone-server run: init turns the NIC's bus mastering
/// off and restarts netd, which finds the NIC again, resets it and takes
/// its address; apid listens again. The API answers through the NIC
/// within 60 s, then 8 requests in a row; the serial log shows netd's one
/// exit and its NIC driven twice. The image steps that follow go out
/// through the restarted netd (zone-server's downloads from this host).
fn restart_steps(port: u16, tripwire: u16, log: &Path, o: &mut Outcome) -> std::result::Result<(), String> {
    let serial = || String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    let exits = |s: &str| s.lines().filter(|l| l.contains("server \"netd\" exited with code 3; restarting")).count();
    let before = exits(&serial());
    // QEMU accepts at once; netd exits when the connection reaches it.
    let s = TcpStream::connect(("127.0.0.1", tripwire)).map_err(|e| format!("connect to the tripwire port: {e}"))?;
    let since = Instant::now();
    let mut exited = false;
    while since.elapsed() < Duration::from_secs(60) {
        if exits(&serial()) > before {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(s);
    o.check(exited, || "netd did not exit within 60 s of the connection to its tripwire port".into());
    if !exited {
        return Ok(());
    }
    let down = Instant::now();
    let back = loop {
        match http(port, "GET", "/ping", None, None) {
            Ok(a) if a.status == 200 => break true,
            _ if down.elapsed() > Duration::from_secs(60) => break false,
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    println!("bench api_served_again_after_netd_restart {} ms", down.elapsed().as_millis());
    o.check(back, || "the API did not answer through the machine's NIC within 60 s of netd's restart".into());
    let (ok, first) = pings_after(port, 8);
    o.check(ok == 8, || format!("after netd's restart: {ok} of 8 requests answered 200; {first:?}"));
    let text = serial();
    let nic = text.lines().filter(|l| l.contains("netd: virtio-net") && l.contains("the uplink of admin")).count();
    o.check(exits(&text) == before + 1 && nic == 2, || {
        format!("netd's restart: {} exits (not 1), its NIC found {nic} times (not 2: at boot and after the restart)", exits(&text) - before)
    });
    Ok(())
}

/// The image steps: sources, avail, import (good, wrong SHA-1, cut short),
/// list, a VM cloned from the image.
fn image_steps(port: u16, vmadm: &Path, imgadm: &Path, source_port: u16, o: &mut Outcome) -> std::result::Result<(), String> {
    use crate::imgsource::{BAD_SHA1, GOOD, SHORT, XZ, XZ_BIG_DICT, XZ_HUGE_DICT};
    let url = format!("http://10.0.2.2:{source_port}");
    let (ok, out, err) = cli(imgadm, port, &["sources", "-a", &url])?;
    o.check(ok && out.contains(&url), || format!("imgadm sources -a {url}: {out:?} {err:?}"));
    let (ok, out, err) = cli(imgadm, port, &["sources"])?;
    o.check(ok && out.contains(&url), || format!("imgadm sources: {out:?} {err:?}"));
    let (ok, out, err) = cli(imgadm, port, &["avail"])?;
    o.check(ok && [GOOD, BAD_SHA1, SHORT, XZ, XZ_BIG_DICT, XZ_HUGE_DICT].iter().all(|u| out.contains(u)), || {
        format!("imgadm avail: {out:?} {err:?}")
    });
    let (ok, out, err) = cli(imgadm, port, &["import", GOOD])?;
    o.check(ok && out.starts_with(&format!("Imported image {GOOD} (imported-disk@")), || format!("imgadm import {GOOD}: {out:?} {err:?}"));
    let (ok, out, err) = cli(imgadm, port, &["import", BAD_SHA1])?;
    o.check(!ok && err.contains("SHA-1") && err.contains("DownloadError"), || {
        format!("imgadm import of a file with the wrong SHA-1 was not refused by name: {ok} {out:?} {err:?}")
    });
    let (ok, out, err) = cli(imgadm, port, &["import", SHORT])?;
    o.check(!ok && err.contains("ended in the middle"), || {
        format!("imgadm import of a file cut short was not refused by name: {ok} {out:?} {err:?}")
    });
    // xz: decompressed as it arrives (its CRC64 and index checked). xz's
    // default 8 MiB dictionary does not fit zone-server's 512 KiB heap:
    // it grows the heap (frames from its own budget) and imports; a
    // dictionary its budget cannot pay for is refused by name, nothing
    // imported.
    let (ok, out, err) = cli(imgadm, port, &["import", XZ])?;
    o.check(ok && out.starts_with(&format!("Imported image {XZ} (xz-disk@")), || {
        format!("imgadm import {XZ} (xz): {out:?} {err:?}")
    });
    let (ok, out, err) = cli(imgadm, port, &["import", XZ_BIG_DICT])?;
    o.check(ok && out.starts_with(&format!("Imported image {XZ_BIG_DICT} (xz-big-dict-disk@")), || {
        format!("imgadm import of an xz file with xz's default 8 MiB dictionary: {ok} {out:?} {err:?}")
    });
    let (ok, out, err) = cli(imgadm, port, &["import", XZ_HUGE_DICT])?;
    o.check(!ok && err.contains("UncompressionError") && err.contains("dictionary of 33554432 bytes"), || {
        format!("imgadm import of an xz file with a 32 MiB dictionary was not refused by name: {ok} {out:?} {err:?}")
    });
    let (ok, out, err) = cli(imgadm, port, &["list"])?;
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    o.check(
        ok && rows.len() == 4
            && rows[0] == ["UUID", "NAME", "VERSION", "OS", "TYPE", "PUB"]
            && rows[1].first() == Some(&GOOD)
            && rows[1].get(1) == Some(&"imported-disk")
            // imgadm's order: by name.
            && rows[2].first() == Some(&XZ_BIG_DICT)
            && rows[2].get(1) == Some(&"xz-big-dict-disk")
            && rows[3].first() == Some(&XZ)
            && rows[3].get(1) == Some(&"xz-disk"),
        || format!("imgadm list after the imports: {out:?} {err:?} (imgadm's table with {GOOD}, {XZ} and {XZ_BIG_DICT} is to be there)"),
    );
    let payload = format!(
        r#"{{"uuid": "{IMAGE_VM}", "brand": "bhyve", "alias": "api-img", "ram": 64, "vcpus": 1, "kernel": "/zone-guest-halt", "disks": [{{"boot": true, "image_uuid": "{GOOD}"}}]}}"#
    );
    let a = http(port, "POST", "/vms", Some(TOKEN), Some(&payload)).map_err(|e| format!("POST /vms (from the image): {e}"))?;
    o.check(a.status == 201, || format!("POST /vms with a disk from the imported image: {a:?}, not 201"));
    let a = http(port, "GET", &format!("/vms/{IMAGE_VM}"), Some(TOKEN), None).map_err(|e| format!("GET /vms/{IMAGE_VM}: {e}"))?;
    let vm: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    o.check(vm["state"] == "running" && vm["disks"][0]["image_uuid"] == GOOD, || format!("the VM from the image: {a:?}"));
    let a = http(port, "POST", &format!("/vms/{IMAGE_VM}?action=stop&force=true"), Some(TOKEN), None).map_err(|e| format!("stop: {e}"))?;
    o.check(a.status == 200, || format!("POST /vms/{IMAGE_VM}?action=stop&force=true: {a:?}, not 200"));
    let a = http(port, "GET", &format!("/vms/{IMAGE_VM}/console"), Some(TOKEN), None).map_err(|e| format!("GET console: {e}"))?;
    o.check(a.status == 409 && a.body.contains("not running"), || format!("GET /vms/{IMAGE_VM}/console of a stopped VM: {a:?}, not 409"));
    // The snapshot verbs through the host vmadm (the disk, a clone of the
    // image, snapshotted, rolled back to, the snapshot deleted), and one
    // refused naming why.
    for (verb, says) in [
        ("create-snapshot", format!("Created snapshot s1 for VM {IMAGE_VM}\n")),
        ("rollback-snapshot", format!("Rolled back VM {IMAGE_VM} to snapshot s1\n")),
    ] {
        let (ok, out, err) = cli(vmadm, port, &[verb, IMAGE_VM, "s1"])?;
        o.check(ok && out.is_empty() && err == says, || format!("vmadm {verb} {IMAGE_VM} s1: {ok} {out:?} {err:?}, not {says:?}"));
    }
    let a = http(port, "GET", &format!("/vms/{IMAGE_VM}"), Some(TOKEN), None).map_err(|e| format!("GET /vms/{IMAGE_VM}: {e}"))?;
    let vm: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    o.check(vm["snapshots"][0]["name"] == "s1", || format!("GET /vms/{IMAGE_VM} after create-snapshot: {}, no snapshot s1", a.body));
    let (ok, out, err) = cli(vmadm, port, &["rollback-snapshot", IMAGE_VM, "nope"])?;
    o.check(!ok && err.contains("snapshot \"nope\" not found"), || format!("vmadm rollback-snapshot of an unknown snapshot: {ok} {out:?} {err:?}"));
    let (ok, out, err) = cli(vmadm, port, &["delete-snapshot", IMAGE_VM, "s1"])?;
    o.check(ok && err == format!("Deleted snapshot s1 for VM {IMAGE_VM}\n"), || format!("vmadm delete-snapshot: {ok} {out:?} {err:?}"));
    let a = http(port, "DELETE", &format!("/vms/{IMAGE_VM}"), Some(TOKEN), None).map_err(|e| format!("DELETE: {e}"))?;
    o.check((200..300).contains(&a.status), || format!("DELETE /vms/{IMAGE_VM}: {a:?}, not 2xx"));
    let (ok, out, err) = cli(imgadm, port, &["sources", "-d", &url])?;
    o.check(ok && out == format!("Deleted image source \"{url}\"\n"), || format!("imgadm sources -d {url}: {out:?} {err:?}"));
    let (ok, out, err) = cli(imgadm, port, &["sources", "-j"])?;
    o.check(ok && out.trim() == "[]", || format!("imgadm sources -j after the delete: {out:?} {err:?}"));
    Ok(())
}

/// The API case's boot image (manifest `api.toml`, the zone case's test
/// kernels, a netd.conf with the `admin` NIC).
pub(crate) fn iso(kernel: &Path) -> Result<std::path::PathBuf> {
    let mut system = BootSystem::named("api")?;
    system.host_files.extend(crate::zone::guests()?);
    let dir = crate::out_dir().join("api");
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("netd.conf");
    std::fs::write(
        &conf,
        format!("# The API case (ci/src/api.rs)\nnic_tag admin\nhost switch=admin mac={HOST_MAC} ip={HOST_ADDRESS}/24 gateway=10.0.2.2\n"),
    )?;
    system.host_files.push(("netd.conf".into(), conf));
    image::iso_of(kernel, "test-api-http", "", &system)
}

/// Starts QEMU on `iso` with `pool` (QEMU's arguments for the pool drive)
/// and the machine's NIC, its API forwarded from a free host port, the
/// serial console written to `log`: the child and that port.
pub(crate) fn boot(iso: &Path, pool: Vec<String>, log: &Path) -> Result<(std::process::Child, u16)> {
    boot_forwarding(iso, pool, log, &[API_PORT]).map(|(c, ports)| (c, ports[0]))
}

/// [`boot`], forwarding a free port of this host to each of `guest_ports`
/// on netd's address (returned in that order).
pub(crate) fn boot_forwarding(iso: &Path, pool: Vec<String>, log: &Path, guest_ports: &[u16]) -> Result<(std::process::Child, Vec<u16>)> {
    let mut fwds = Vec::new();
    for &guest_port in guest_ports {
        fwds.push(HostFwd {
            udp: false,
            host_addr: "127.0.0.1".into(),
            host_port: free_port()?,
            guest_addr: HOST_ADDRESS.into(),
            guest_port,
        });
    }
    let ports = fwds.iter().map(|f| f.host_port).collect();
    let mut extra = pool;
    extra.extend(admin_nic(&fwds));
    let q = Qemu { smp: 2, mem_mib: 512, one_thread: true, extra, ..Qemu::default() };
    let _ = std::fs::remove_file(log);
    let mut c = q.command(iso);
    c.args(["-monitor", "none", "-serial"]).arg(format!("file:{}", log.display()));
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(log.with_extension("stderr"))?);
    let child = c.spawn().map_err(|e| format!("starting qemu-system-x86_64: {e}"))?;
    Ok((child, ports))
}

/// Waits until apid answers `GET /ping` (it listens once netd has its
/// address), `start` being when QEMU started.
pub(crate) fn wait_for_ping(port: u16, start: Instant, timeout: Duration) -> std::result::Result<(), String> {
    loop {
        match http(port, "GET", "/ping", None, None) {
            Ok(a) if a.status == 200 => return Ok(()),
            _ if start.elapsed() > timeout => return Err(format!("apid did not answer GET /ping within {timeout:?}")),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Instances `bench/api-list` makes.
pub const LIST_VMS: usize = 100;

/// `bench/api-list` (issue 15's benchmark): the API machine with
/// [`LIST_VMS`] instances (made through `POST /vms` with `autoboot:
/// false`, so no VMM runs), then `GET /vms`, the host `vmadm list` and
/// `GET /vms/:uuid` timed against `GET /ping` in the same run (wall time
/// on a shared machine: the ratios are the figures to compare). Figures:
/// the mean create, the list's and the host CLI's times, requests a
/// second for `GET /vms/:uuid`, and each over a ping.
pub fn bench_list(kernel: &Path, timeout: Duration) -> Result<(Vec<crate::bench::Figure>, Vec<String>)> {
    use crate::bench::Figure;
    let (vmadm, _) = host_tools()?;
    let iso = iso(kernel)?;
    let log = log_path("bench-api-list")?;
    let start = Instant::now();
    let (mut child, port) = boot(&iso, crate::zone::pool_drive(), &log)?;
    let r = (|| -> std::result::Result<Vec<Figure>, String> {
        wait_for_ping(port, start, timeout)?;
        let req = |method: &str, path: &str, body: Option<&str>| {
            http(port, method, path, Some(TOKEN), body).map_err(|e| format!("{method} {path}: {e}"))
        };
        // The same request `n` times: the mean, in ms.
        let mean_ms = |path: &str, n: u32| -> std::result::Result<f64, String> {
            let t = Instant::now();
            for _ in 0..n {
                let a = req("GET", path, None)?;
                if a.status != 200 {
                    return Err(format!("GET {path}: {} {:.200}", a.status, a.body));
                }
            }
            Ok(t.elapsed().as_secs_f64() * 1000.0 / f64::from(n))
        };
        let t = Instant::now();
        let mut uuids = Vec::new();
        for i in 0..LIST_VMS {
            let body = format!(r#"{{"brand": "bhyve", "alias": "list-{i:03}", "ram": 64, "kernel": "/zone-guest-halt", "autoboot": false}}"#);
            let a = req("POST", "/vms", Some(&body))?;
            let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
            match (a.status, v["uuid"].as_str()) {
                (201, Some(u)) => uuids.push(u.to_string()),
                _ => return Err(format!("POST /vms of instance {i}: {} {:.200}", a.status, a.body)),
            }
        }
        let create_ms = t.elapsed().as_secs_f64() * 1000.0 / LIST_VMS as f64;
        let a = req("GET", "/vms", None)?;
        let listed: Vec<serde_json::Value> = serde_json::from_str(&a.body).unwrap_or_default();
        if listed.len() != LIST_VMS {
            return Err(format!("GET /vms lists {} instances, {LIST_VMS} were made: {} {:.300}", listed.len(), a.status, a.body));
        }
        let ping = mean_ms("/ping", 20)?;
        let list = mean_ms("/vms", 5)?;
        let get = mean_ms(&format!("/vms/{}", uuids[LIST_VMS / 2]), 20)?;
        let t = Instant::now();
        for _ in 0..3 {
            let (ok, out, err) = cli(&vmadm, port, &["list"])?;
            if !ok || out.lines().count() != LIST_VMS + 1 {
                return Err(format!("the host vmadm list: {} lines ({err})", out.lines().count()));
            }
        }
        let cli_ms = t.elapsed().as_secs_f64() * 1000.0 / 3.0;
        Ok(vec![
            Figure::new("api_create_autoboot_false_mean", format!("{create_ms:.1}"), "ms"),
            Figure::new("api_ping", format!("{ping:.2}"), "ms"),
            Figure::new("api_list_100", format!("{list:.1}"), "ms"),
            Figure::new("api_list_100_over_ping", format!("{:.2}", list / ping), "ratio"),
            Figure::new("vmadm_cli_list_100", format!("{cli_ms:.1}"), "ms"),
            Figure::new("api_get_vm_per_s", format!("{:.1}", 1000.0 / get), "requests/s"),
            Figure::new("api_get_vm_over_ping", format!("{:.2}", get / ping), "ratio"),
        ])
    })();
    crate::emu::stop(&mut child);
    Ok(match r {
        Ok(f) => (f, Vec::new()),
        Err(e) => (Vec::new(), vec![format!("bench/api-list: {e} (log: {})", log.display())]),
    })
}

/// Runs the case.
pub fn run(kernel: &Path, timeout: Duration) -> Result<Outcome> {
    let (vmadm, imgadm) = host_tools()?;
    let source = crate::imgsource::start()?;
    let iso = iso(kernel)?;
    let log = log_path(&CASE.replace('/', "-"))?;
    let start = Instant::now();
    let (mut child, ports) = boot_forwarding(&iso, crate::zone::pool_drive(), &log, &[API_PORT, TRIPWIRE_PORT])?;
    let (port, tripwire) = (ports[0], ports[1]);
    let mut o = Outcome::new(CASE, Duration::ZERO, log.clone());
    let steps = steps(port, &vmadm, start, timeout, &mut o)
        .and_then(|()| restart_steps(port, tripwire, &log, &mut o))
        .and_then(|()| image_steps(port, &vmadm, &imgadm, source.port, &mut o));
    crate::emu::stop(&mut child);
    o.elapsed = start.elapsed();
    if let Err(e) = steps {
        o.problems.push(e);
    }
    let serial = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    o.check(!serial.contains("panicked"), || "a server or the kernel panicked (see the log)".into());
    Ok(o)
}

/// The requests, in order; `Err` when one could not be made at all.
fn steps(port: u16, vmadm: &Path, start: Instant, timeout: Duration, o: &mut Outcome) -> std::result::Result<(), String> {
    wait_for_ping(port, start, timeout)?;
    let req = |method: &str, path: &str, token: Option<&str>, body: Option<&str>| {
        http(port, method, path, token, body).map_err(|e| format!("{method} {path}: {e}"))
    };
    let a = req("GET", "/vms", None, None)?;
    o.check(a.status == 401, || format!("GET /vms without a token: {a:?}, not 401"));
    let a = req("GET", "/vms", Some("not-the-token"), None)?;
    o.check(a.status == 403, || format!("GET /vms with a wrong token: {a:?}, not 403"));
    let a = req("POST", "/vms", None, Some(PAYLOAD))?;
    o.check(a.status == 401, || format!("POST /vms without a token: {a:?}, not 401"));
    let a = req("GET", "/vms", Some(TOKEN), None)?;
    let list: Option<serde_json::Value> = serde_json::from_str(&a.body).ok();
    o.check(a.status == 200 && list.as_ref().is_some_and(|l| l.as_array().is_some_and(|v| v.is_empty())), || {
        format!("GET /vms on a new machine: {a:?}, not 200 and []")
    });
    let a = req("POST", "/vms", Some(TOKEN), Some("{\"brand\": \"bhyve\", "))?;
    o.check(a.status == 400, || format!("POST /vms with bad JSON: {a:?}, not 400"));
    hostile_steps(port, o)?;
    let a = req("POST", "/vms", Some(TOKEN), Some(PAYLOAD))?;
    o.check(a.status == 201 && a.body.contains(VM), || format!("POST /vms: {a:?}, not 201 naming {VM}"));
    // The same uuid again: refused, naming it; the first VM is untouched.
    let twin = PAYLOAD.replace("\"api-web\"", "\"api-twin\"");
    let a = req("POST", "/vms", Some(TOKEN), Some(&twin))?;
    o.check((400..500).contains(&a.status) && a.body.contains("already exists") && a.body.contains(VM), || {
        format!("POST /vms of a second VM with uuid {VM}: {a:?}, not a 4xx saying it already exists")
    });
    let a = req("GET", "/vms", Some(TOKEN), None)?;
    let vms: Vec<serde_json::Value> = serde_json::from_str(&a.body).unwrap_or_default();
    o.check(
        a.status == 200
            && vms.len() == 1
            && vms[0]["uuid"] == VM
            && vms[0]["state"] == "running"
            && vms[0]["alias"] == "api-web",
        || format!("GET /vms after the create: {a:?}, not the VM running"),
    );
    let out = Command::new(vmadm)
        .arg("list")
        .env("ALCOVE_URL", format!("http://127.0.0.1:{port}"))
        .env("ALCOVE_TOKEN", TOKEN)
        .env_remove("ALCOVE_TOKEN_FILE")
        .output()
        .map_err(|e| format!("running {}: {e}", vmadm.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    o.check(
        out.status.success()
            && text.lines().next().is_some_and(|h| h.split_whitespace().eq(["UUID", "TYPE", "RAM", "STATE", "ALIAS"]))
            && text.lines().any(|l| l.split_whitespace().eq([VM, "BHYV", "64", "running", "api-web"])),
        || format!("the host `vmadm list` printed {text:?} ({}; {})", out.status, String::from_utf8_lossy(&out.stderr)),
    );
    console_steps(port, vmadm, o)?;
    abort_steps(port, vmadm, o)?;
    let a = req("DELETE", &format!("/vms/{VM}"), Some(TOKEN), None)?;
    o.check((200..300).contains(&a.status), || format!("DELETE /vms/{VM}: {a:?}, not 2xx"));
    let a = req("GET", &format!("/vms/{VM}/console"), Some(TOKEN), None)?;
    o.check(a.status == 404, || format!("GET /vms/{VM}/console after the delete: {a:?}, not 404"));
    let a = req("GET", "/vms", Some(TOKEN), None)?;
    o.check(a.status == 200 && a.body.trim() == "[]", || format!("GET /vms after the delete: {a:?}, not []"));
    deaf_stop_steps(port, vmadm, o)
}

/// vmadm's table of hostile payloads (`alcove_vmadm::hostile`, the host
/// tests' own: wrong types, huge values, path tricks in names, duplicate
/// MACs and disk uuids, ...) over a payload the machine would run, each
/// sent to the machine: one vmadm refuses is refused with a 4xx naming the
/// property (`POST /vms`), one with only an unknown property is named by
/// `POST /vms?action=validate` (vmadm's `create` warns and goes on, as
/// SmartOS's does). Also payloads that are no object at all. Afterwards
/// `GET /vms` is still `[]`: none made anything.
fn hostile_steps(port: u16, o: &mut Outcome) -> std::result::Result<(), String> {
    use alcove_vmadm::hostile::{List, cases, payload_of};
    let base = serde_json::json!({"brand": "bhyve", "alias": "api-hostile", "ram": 64, "vcpus": 1,
        "kernel": "/zone-guest-halt", "disks": [{"size": 16}]});
    let cases = cases();
    let mut sent = 0;
    let max = libipc::interfaces::VMADM_STDIN_MAX as usize;
    for (what, extra, list, property) in &cases {
        let body = payload_of(&base, extra).to_string();
        let path = if *list == List::BadProperty { "/vms?action=validate" } else { "/vms" };
        let a = http(port, "POST", path, Some(TOKEN), Some(&body)).map_err(|e| format!("POST {path} ({what}): {e}"))?;
        sent += 1;
        if body.len() > max {
            // Past what the API takes: refused before it is read.
            o.check(a.status == 413 && a.body.contains(&format!("at most {max} bytes")), || {
                format!("POST {path} with a {}-byte payload ({what}): {} {:.300}, not 413", body.len(), a.status, a.body)
            });
            continue;
        }
        // Named as a property: quoted in vmadm's lists, or in its message
        // (escaped inside the JSON error).
        let named = a.body.contains(&format!("\"{property}\"")) || a.body.contains(&format!("\\\"{property}\\\""));
        o.check((400..500).contains(&a.status) && named, || {
            format!("POST {path} with a hostile payload ({what}): {} {:.300}, not a 4xx naming {property}", a.status, a.body)
        });
    }
    // A payload of 6 KiB (a user-script: more than one message) is taken
    // whole: validate answers it valid (it crosses to zone-server in
    // pieces); one of 40 KiB is read whole too, and refused naming
    // `customer_metadata` (the VM's record would be longer than the pool
    // keeps for it).
    for (kib, valid) in [(6, true), (40, false)] {
        let script: String = (0..kib * 1024 / 32).map(|i| format!("echo line {i:020}\n")).collect();
        let mut long = base.clone();
        long["customer_metadata"] = serde_json::json!({"user-script": script});
        let a = http(port, "POST", "/vms?action=validate", Some(TOKEN), Some(&long.to_string())).map_err(|e| format!("POST a {kib} KiB payload: {e}"))?;
        let ok = if valid { a.status == 200 && a.body.contains("VALID") } else { a.status == 422 && a.body.contains("\"customer_metadata\"") };
        o.check(ok, || format!("POST /vms?action=validate of a {kib} KiB payload: {} {:.300}, not {}", a.status, a.body, if valid { "200 VALID" } else { "422 naming customer_metadata" }));
    }
    for (what, body) in [("an array", "[1, 2]"), ("a string", "\"bhyve\""), ("nothing", ""), ("deep nesting", &*format!("{}1{}", "[".repeat(40), "]".repeat(40)))] {
        let a = http(port, "POST", "/vms", Some(TOKEN), Some(body)).map_err(|e| format!("POST /vms ({what}): {e}"))?;
        sent += 1;
        o.check(a.status == 400, || format!("POST /vms with {what}: {} {:.300}, not 400", a.status, a.body));
    }
    let a = http(port, "GET", "/vms", Some(TOKEN), None).map_err(|e| format!("GET /vms: {e}"))?;
    o.check(a.status == 200 && a.body.trim() == "[]", || format!("GET /vms after {sent} hostile payloads: {a:?}, not []"));
    o.check(sent >= 30, || format!("only {sent} hostile payloads sent"));
    Ok(())
}

/// A VM whose guest ignores the ACPI power button.
const DEAF_VM: &str = "a91c0de0-0000-4000-8000-0000000000b4";

/// A graceful stop does not hold apid's other connections: the host
/// `vmadm stop -t 3` of a guest deaf to the power button is under way
/// (its request open) while `GET /vms/:uuid` and `GET /vms` are answered,
/// the VM `stopping` in them, which a server that blocked on the stop
/// could never answer (it would answer once the VM was stopped); then the
/// stop returns, forced at its deadline, with vmadm's message and exit 0.
fn deaf_stop_steps(port: u16, vmadm: &Path, o: &mut Outcome) -> std::result::Result<(), String> {
    let payload = format!(
        r#"{{"uuid": "{DEAF_VM}", "brand": "bhyve", "alias": "api-deaf", "ram": 64, "vcpus": 1, "kernel": "/zone-guest-deaf", "disks": [{{"size": 16}}]}}"#
    );
    let a = http(port, "POST", "/vms", Some(TOKEN), Some(&payload)).map_err(|e| format!("POST /vms (deaf): {e}"))?;
    o.check(a.status == 201, || format!("POST /vms of the deaf VM: {a:?}, not 201"));
    let vmadm = vmadm.to_path_buf();
    let stop = std::thread::spawn(move || cli(&vmadm, port, &["stop", DEAF_VM, "-t", "3"]));
    // Until apid has begun the stop: the VM is running, then stopping.
    // The bound only ends a broken run; the check is on the state.
    let mut seen = String::new();
    for _ in 0..400 {
        let a = http(port, "GET", &format!("/vms/{DEAF_VM}"), Some(TOKEN), None).map_err(|e| format!("GET /vms/{DEAF_VM}: {e}"))?;
        let vm: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
        seen = vm["state"].as_str().unwrap_or("?").to_string();
        if seen != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let still_open = !stop.is_finished();
    o.check(seen == "stopping" && still_open, || {
        format!("while the host `vmadm stop` waited, GET /vms/{DEAF_VM} answered state {seen:?} (stopping wanted; the stop's request still open: {still_open})")
    });
    let a = http(port, "GET", "/vms", Some(TOKEN), None).map_err(|e| format!("GET /vms: {e}"))?;
    let vms: Vec<serde_json::Value> = serde_json::from_str(&a.body).unwrap_or_default();
    let still_open = !stop.is_finished();
    o.check(a.status == 200 && vms.iter().any(|v| v["uuid"] == DEAF_VM && v["state"] == "stopping") && still_open, || {
        format!("GET /vms while the stop waited: {a:?} (the deaf VM stopping wanted; the stop's request still open: {still_open})")
    });
    let (ok, out, err) = stop.join().map_err(|_| "the host vmadm stop's thread panicked".to_string())??;
    o.check(ok && err.contains(&format!("Successfully completed stop for VM {DEAF_VM}")), || {
        format!("the host `vmadm stop {DEAF_VM} -t 3`: {ok} {out:?} {err:?}")
    });
    let a = http(port, "GET", &format!("/vms/{DEAF_VM}"), Some(TOKEN), None).map_err(|e| format!("GET /vms/{DEAF_VM}: {e}"))?;
    let vm: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    o.check(a.status == 200 && vm["state"] == "stopped", || format!("GET /vms/{DEAF_VM} after the stop: {a:?}, not stopped"));
    let a = http(port, "DELETE", &format!("/vms/{DEAF_VM}"), Some(TOKEN), None).map_err(|e| format!("DELETE /vms/{DEAF_VM}: {e}"))?;
    o.check((200..300).contains(&a.status), || format!("DELETE /vms/{DEAF_VM}: {a:?}, not 2xx"));
    Ok(())
}
