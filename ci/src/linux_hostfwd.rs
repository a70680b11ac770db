//! `linux/net-hostfwd` (issue 13): the machine's NIC, from outside QEMU.
//! One VM whose NIC is on `admin` at 10.0.2.20; the machine's virtio-net
//! is that switch's uplink, on QEMU's user network with two forwards from
//! this host: one to the guest's port 5000, one to netd's echo (10.0.2.15,
//! port 7).
//!
//! ```text
//!  test ─ 127.0.0.1:P1 ─ QEMU slirp ─ machine NIC ─ netd (admin switch) ─ VNIC ─ guest nc -l -p 5000 -e cat
//!  test ─ 127.0.0.1:P2 ─ QEMU slirp ─ machine NIC ─ netd (admin switch) ─ host VNIC ─ netd's echo
//!  guest nc ─ 10.0.2.2:S (QEMU's gateway) ─ ... ─ the test's TCP server on 127.0.0.1:S
//! ```
//!
//! The guest (`alcove.net-hostfwd=S`) first sends 64 KiB of random bytes
//! to the test's server, which answers with 64 KiB of its own; then it
//! listens on port 5000 and echoes one connection. The test sends 64 KiB
//! through each forward and wants them back, and wants what the guest and
//! its server sent each other to arrive with the same SHA-256. In the
//! linux tier after three passes in a row; `cargo xtask test --tier linux
//! --case hostfwd` runs it alone.
//!
//! `linux/net-hostfwd-polled` is the same with the machine's NIC offering
//! no MSI-X (QEMU's `vectors=0`): netd has no receive interrupt for it and
//! polls it on its timer; the test also wants netd to have said so (the
//! machine it meant to make), and then the same bytes through it.

use crate::Result;
use crate::emu::{Run, capture_timed_answering, log_path};
use crate::guest_images::Images;
use crate::harness::Ending;
use crate::image;
use crate::vm::{HOST_ADDRESS, HostFwd, VmLog, VmPlan, free_port, random_bytes};
use kcore::testproto::{EXIT_PASS, qemu_status};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const CASE: &str = "linux/net-hostfwd";
pub const ALIAS: &str = "net-hostfwd";
pub const POLLED_CASE: &str = "linux/net-hostfwd-polled";
pub const POLLED_ALIAS: &str = "hostfwd-polled";
/// What netd logs of a NIC it polls.
const POLLED_LINE: &str = "polled (no receive interrupt)";
/// The guest's address on `admin`, and the port its `nc` listens on.
pub const GUEST_IP: &str = "10.0.2.20";
pub const GUEST_PORT: u16 = 5000;
/// Bytes each way in every exchange.
pub const BYTES: usize = 65_536;
/// The line the guest prints when it listens.
const LISTENING: &str = "alcove-guest: listening on 5000";

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The VM: 1 vCPU, 256 MiB, one NIC on `admin`; `server_port` is the
/// test's server on this host (10.0.2.2 to the guest).
pub fn vm_json(images: &Images, server_port: u16) -> String {
    format!(
        "{{\n  \"alias\": \"{ALIAS}\",\n  \"brand\": \"bhyve\",\n  \"ram\": 256,\n  \"vcpus\": 1,\n  \
         \"nics\": [\n    {{\"nic_tag\": \"admin\", \"mac\": \"02:08:20:00:00:01\", \"ip\": \"{GUEST_IP}\", \"netmask\": \"255.255.255.0\", \"gateway\": \"10.0.2.2\"}}\n  ],\n  \
         \"kernel\": {},\n  \"initrd\": {},\n  \"cmdline\": \"console=ttyS0 panic=-1 alcove.net-hostfwd={server_port}\"\n}}\n",
        json_string(&images.vmlinuz.display().to_string()),
        json_string(&images.initramfs.display().to_string()),
    )
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads until the peer closes, at most `deadline` from now.
fn read_all(s: &mut TcpStream, deadline: Duration) -> std::io::Result<Vec<u8>> {
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{} bytes, then nothing", got.len())));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf)? {
            0 => return Ok(got),
            n => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// What the test's server saw: the bytes it got and the ones it sent.
struct Served {
    got: Vec<u8>,
    sent: Vec<u8>,
}

/// The test's TCP server: one connection, everything it sends read, then
/// [`BYTES`] of its own sent back.
fn serve(listener: TcpListener, deadline: Duration) -> std::result::Result<Served, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let end = Instant::now() + deadline;
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("no connection from the guest: {e}")),
        }
    };
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    let got = read_all(&mut s, deadline).map_err(|e| format!("reading what the guest sent: {e}"))?;
    let sent = random_bytes(BYTES);
    s.write_all(&sent).map_err(|e| format!("answering the guest: {e}"))?;
    let _ = s.shutdown(Shutdown::Write);
    Ok(Served { got, sent })
}

/// One exchange through a forward, tried again (up to 20 times, a
/// second apart) while QEMU's end resets it with nothing echoed: the
/// guest prints that it listens just before its `nc` does, and QEMU
/// accepts on this host before it knows whether the guest will.
fn exchange_retrying(port: u16, what: &str) -> std::result::Result<(), String> {
    let mut last = String::new();
    for _ in 0..20 {
        match exchange(port, what) {
            Err(Attempt::Refused(why)) => {
                last = why;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(Attempt::Failed(why)) => return Err(why),
            Ok(()) => return Ok(()),
        }
    }
    Err(last)
}

enum Attempt {
    /// Reset or closed with nothing echoed: nobody listened yet.
    Refused(String),
    Failed(String),
}

/// One exchange through a forward: [`BYTES`] sent, the peer's echo read.
fn exchange(port: u16, what: &str) -> std::result::Result<(), Attempt> {
    exchange_once(port, what).map_err(|(why, echoed)| if echoed == 0 { Attempt::Refused(why) } else { Attempt::Failed(why) })
}

/// As [`exchange`]; an error comes with the bytes echoed before it.
fn exchange_once(port: u16, what: &str) -> std::result::Result<(), (String, usize)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| (format!("{what}: connect to 127.0.0.1:{port}: {e}"), 0))?;
    let sent = random_bytes(BYTES);
    // Written from a thread of its own: the echo answers while we send.
    let mut w = s.try_clone().map_err(|e| (format!("{what}: {e}"), 0))?;
    let data = sent.clone();
    let writer = std::thread::spawn(move || {
        let r = w.write_all(&data);
        let _ = w.shutdown(Shutdown::Write);
        r
    });
    let back = read_all(&mut s, Duration::from_secs(120)).map_err(|e| (format!("{what}: reading the echo: {e}"), 0))?;
    let wrote = writer.join().map_err(|_| (format!("{what}: the writer panicked"), back.len()))?;
    if back.is_empty() {
        return Err((format!("{what}: closed with nothing echoed"), 0));
    }
    wrote.map_err(|e| (format!("{what}: sending: {e}"), back.len()))?;
    if back != sent {
        return Err((format!(
            "{what}: sent {} bytes (sha256 {}), got back {} bytes (sha256 {})",
            sent.len(),
            sha256(&sent),
            back.len(),
            sha256(&back)
        ), back.len()));
    }
    Ok(())
}

/// Waits for `line` in the growing serial log at `log` (at most `deadline`).
fn wait_for_line(log: &Path, line: &str, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if std::fs::read(log).is_ok_and(|b| String::from_utf8_lossy(&b).lines().any(|l| l.trim_end_matches('\r') == line)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// What is wrong with the guest's lines about its exchange with the
/// test's server (`served`: what the server saw).
pub fn judge(serial: &str, vm_name: &str, served: Option<(&[u8], &[u8])>) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    let field = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    match served {
        None => problems.push("the test's server got no exchange with the guest".into()),
        Some((got, sent)) => {
            let want_up = format!("{} {}", sha256(got), got.len());
            match field("alcove-guest: to host sent ") {
                Some(s) if s == want_up && got.len() == BYTES => {}
                other => problems.push(format!(
                    "what the guest sent to the host ({other:?}) is not what the host's server got ({want_up})"
                )),
            }
            let want_down = format!("{} {}", sha256(sent), sent.len());
            match field("alcove-guest: to host back ") {
                Some(s) if s == want_down => {}
                other => problems.push(format!("the guest got {other:?} from the host's server, which sent {want_down}")),
            }
        }
    }
    if !lines.contains(&"alcove-guest: served") {
        problems.push("the guest's nc -l did not serve a connection".into());
    }
    let log = VmLog::read(lines.iter().copied(), vm_name);
    problems.extend(log.problems.iter().cloned());
    match log.ending() {
        Some(e) if e.to_string().contains("poweroff") => {}
        other => problems.push(format!("the VM did not power off: {other:?}")),
    }
    problems
}

/// Boots the VM on Alcove under QEMU's SVM with the forwards, talks to it
/// from this host and judges the run.
pub fn run(kernel: &Path, images: &Images, timeout: Duration) -> Result<(Run, Vec<String>)> {
    run_case(CASE, false, kernel, images, timeout)
}

/// `linux/net-hostfwd-polled`: the machine's NIC without MSI-X.
pub fn run_polled(kernel: &Path, images: &Images, timeout: Duration) -> Result<(Run, Vec<String>)> {
    run_case(POLLED_CASE, true, kernel, images, timeout)
}

fn run_case(case: &str, polled: bool, kernel: &Path, images: &Images, timeout: Duration) -> Result<(Run, Vec<String>)> {
    let dir = crate::out_dir().join("linux-e2e").join(case.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let server_port = listener.local_addr()?.port();
    let json_path = dir.join("vm.json");
    std::fs::write(&json_path, vm_json(images, server_port))?;
    let plan = VmPlan::load(&json_path)?;
    let system = plan.write_boot_files(&dir.join("boot"))?;
    let name = case.replace('/', "-");
    let iso = image::iso_of(kernel, &format!("test-{name}"), "", &system)?;
    let (to_guest, to_echo) = (free_port()?, free_port()?);
    let forwards = [
        HostFwd::parse(&format!("tcp:127.0.0.1:{to_guest}-{GUEST_IP}:{GUEST_PORT}")).map_err(|e| e.to_string())?,
        HostFwd::parse(&format!("tcp:127.0.0.1:{to_echo}-{HOST_ADDRESS}:7")).map_err(|e| e.to_string())?,
    ];
    let mut q = plan.qemu_forwarding(&forwards);
    if polled {
        for a in q.extra.iter_mut().filter(|a| a.starts_with("virtio-net-pci,netdev=admin")) {
            a.push_str(",vectors=0");
        }
    }
    let mut c = q.command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);

    let (served_tx, served_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = served_tx.send(serve(listener, timeout));
    });
    // The log is made afresh by the capture below; an old one must not
    // answer for this run.
    let log = log_path(&name)?;
    let _ = std::fs::remove_file(&log);
    let (talk_tx, talk_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut problems = Vec::new();
        if wait_for_line(&log, LISTENING, timeout) {
            // netd's echo first: the guest powers off (and so ends the
            // machine, and with it QEMU's end of every forward) once its
            // nc -l served, so an echo after it raced the machine's end
            // (CI once got 1460 of the 65536 bytes back, then EOF). The
            // guest listens for 300 s.
            for (port, what) in [(to_echo, "netd's echo through the machine's NIC"), (to_guest, "the guest's nc -l")] {
                if let Err(e) = exchange_retrying(port, what) {
                    problems.push(e);
                }
            }
        } else {
            problems.push(format!("the guest never said {LISTENING:?}"));
        }
        let _ = talk_tx.send(problems);
    });
    let t = capture_timed_answering(c, &name, Some(timeout), false, None)?;
    let served = served_rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| Err("the server did not finish".into()));
    let mut problems = talk_rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| vec!["the test's client did not finish".into()]);
    let (served, why) = match &served {
        Ok(s) => (Some((s.got.as_slice(), s.sent.as_slice())), None),
        Err(e) => (None, Some(e.clone())),
    };
    problems.extend(why);
    problems.extend(judge(&t.run.serial, &plan.name, served));
    if polled && !t.run.serial.contains(POLLED_LINE) {
        problems.push(format!("netd did not poll the machine's NIC (no {POLLED_LINE:?} line): the NIC had its MSI-X after all"));
    }
    match t.run.ending {
        Ending::Qemu(s) if s == qemu_status(EXIT_PASS) => {}
        Ending::Qemu(s) => problems.push(format!("QEMU exited with status {s} (a powered-off VM ends it with 33)")),
        Ending::Timeout(s) => problems.push(format!("timed out after {s} s")),
        Ending::Bochs { .. } => {}
    }
    Ok((t.run, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guests_exchange_is_checked_both_ways() {
        let (up, down) = (vec![1u8; BYTES], vec![2u8; BYTES]);
        let log = |sent: &str, back: &str| {
            format!(
                "vm {ALIAS}: started: 1 vCPUs, 256 MiB\r\nalcove-guest: to host sent {sent} {BYTES}\r\n\
                 alcove-guest: to host back {back} {BYTES}\r\n{LISTENING}\r\nalcove-guest: served\r\n\
                 vm {ALIAS}: ended: poweroff\r\n"
            )
        };
        let good = log(&sha256(&up), &sha256(&down));
        assert_eq!(judge(&good, ALIAS, Some((&up, &down))), Vec::<String>::new());
        let p = judge(&log(&sha256(&down), &sha256(&down)), ALIAS, Some((&up, &down)));
        assert!(p.len() == 1 && p[0].starts_with("what the guest sent to the host"), "{p:?}");
        let p = judge(&log(&sha256(&up), &sha256(&up)), ALIAS, Some((&up, &down)));
        assert!(p.len() == 1 && p[0].starts_with("the guest got"), "{p:?}");
        let p = judge(&good.replace("alcove-guest: served\r\n", ""), ALIAS, Some((&up, &down)));
        assert!(p.iter().any(|p| p.contains("did not serve")), "{p:?}");
        assert!(!judge(&good, ALIAS, None).is_empty());
    }

    #[test]
    fn the_vm_has_its_nic_on_admin_and_the_servers_port() {
        let images = Images {
            vmlinuz: "/k/vmlinuz".into(),
            initramfs: "/k/initramfs.cpio".into(),
            modules: "/k/modules".into(),
            release: String::new(),
            kernel_package: String::new(),
        };
        let json = vm_json(&images, 41234);
        let plan = VmPlan::from_text(&json, Path::new("vm.json"), Path::new("/k")).unwrap();
        assert!(plan.on_admin());
        assert!(plan.config.cmdline.contains("alcove.net-hostfwd=41234"), "{json}");
    }
}
