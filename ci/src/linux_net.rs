//! The Linux guest on a network (issue 13): one VM with two virtio NICs on
//! one etherstub. Its `/init` (`alcove.net-pair`) gives them 10.0.0.1 and
//! 10.0.0.2 and arpings 10.0.0.2 out of eth0: the request leaves the
//! guest's eth0, crosses the VMM's frame ring, netd's switch and the ring
//! of the VMM's other NIC into eth1, and eth1's reply comes back the same
//! way. The test wants each NIC with the MAC its `vm.json` gave it, at
//! least one reply from eth1's MAC, and the VM powered off.
//!
//! `linux/net-host` (issue 13): one VM whose NIC is on the `admin` switch
//! at 10.0.2.20, where netd's own TCP/IP holds the host address
//! ([`crate::vm::HOST_ADDRESS`], with its TCP echo on port 7): the guest
//! (`alcove.net-host`) pings it and sends a line and 128 KiB of random
//! bytes to the echo; the test wants 3 replies, the line back unchanged,
//! and the bytes back with the same SHA-256.
//!
//! `linux/net-two` (issue 13): two VMs (not one VM with two NICs), each
//! in its own vmm-server in one Alcove machine, on etherstub `stub0`: the
//! receiver at 10.0.0.2, the sender at 10.0.0.1 (`alcove.net-two=recv` /
//! `send` in the guest's `/init`). Each pings the other (ARP first), the
//! sender sends [`TWO_BYTES`] random bytes with busybox `nc`, and the test
//! wants the receiver's SHA-256 and length equal to the sender's, all 3
//! pings answered each way, and the receiver powered off (it ends the
//! machine). `bench/net-maxbw` (`cargo xtask bench --case bench/net`) runs
//! the same machine with the sender's VNIC capped at [`MAXBW_MBIT`] Mbit/s
//! and at [`MAXBW_REACHABLE_MBIT`] next to an uncapped run, and prints the
//! measured throughputs, each capped one over its cap, and the ping round
//! trip; in the same run the
//! same two guests under plain QEMU joined by `-netdev socket`
//! ([`run_qemu_two`], the Alcove figures over these as ratios), and
//! net-two's machine under `-icount shift=0` whose netd logs its kick
//! path ([`KickPath`]: instructions per forwarded frame).
//!
//! All are in the linux tier; `linux/net-two` and `linux/net-restart` joined
//! it once their machine ran QEMU with one thread for both CPUs (the
//! whole-machine reset was QEMU's; README). `cargo xtask test --tier linux
//! --case net-pair` (or `--case net-two`, ...) runs one.

use crate::Result;
use crate::emu::{Run, capture_timed_answering};
use crate::guest_images::Images;
use crate::harness::Ending;
use crate::image;
use crate::vm::{VmLog, VmPlan};
use kcore::testproto::{EXIT_PASS, qemu_status};
use std::path::Path;
use std::time::Duration;

pub const CASE: &str = "linux/net-pair";
pub const ALIAS: &str = "net-pair";
pub const HOST_CASE: &str = "linux/net-host";
pub const HOST_ALIAS: &str = "net-host";
/// The line the guest sends to netd's echo.
pub const ECHO_LINE: &str = "hello-from-the-guest";
/// Random bytes the guest sends to netd's echo.
pub const ECHO_BYTES: u64 = 131_072;
/// The NICs' MACs (given, so the test knows them).
pub const MACS: [&str; 2] = ["02:08:20:00:00:01", "02:08:20:00:00:02"];

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The VM: 1 vCPU, 256 MiB, no disk, two NICs on etherstub `stub0`.
pub fn vm_json(images: &Images) -> String {
    format!(
        "{{\n  \"alias\": \"{ALIAS}\",\n  \"brand\": \"bhyve\",\n  \"ram\": 256,\n  \"vcpus\": 1,\n  \
         \"nics\": [\n    {{\"nic_tag\": \"stub0\", \"mac\": \"{}\", \"ip\": \"10.0.0.1\", \"netmask\": \"255.255.255.0\"}},\n    \
         {{\"nic_tag\": \"stub0\", \"mac\": \"{}\", \"ip\": \"10.0.0.2\", \"netmask\": \"255.255.255.0\"}}\n  ],\n  \
         \"kernel\": {},\n  \"initrd\": {},\n  \"cmdline\": \"console=ttyS0 panic=-1 alcove.net-pair\"\n}}\n",
        MACS[0],
        MACS[1],
        json_string(&images.vmlinuz.display().to_string()),
        json_string(&images.initramfs.display().to_string()),
    )
}

/// The VM of `linux/net-host`: 1 vCPU, 256 MiB, one NIC on `admin`.
pub fn host_vm_json(images: &Images) -> String {
    format!(
        "{{\n  \"alias\": \"{HOST_ALIAS}\",\n  \"brand\": \"bhyve\",\n  \"ram\": 256,\n  \"vcpus\": 1,\n  \
         \"nics\": [\n    {{\"nic_tag\": \"admin\", \"mac\": \"{}\", \"ip\": \"10.0.2.20\", \"netmask\": \"255.255.255.0\"}}\n  ],\n  \
         \"kernel\": {},\n  \"initrd\": {},\n  \"cmdline\": \"console=ttyS0 panic=-1 alcove.net-host\"\n}}\n",
        MACS[0],
        json_string(&images.vmlinuz.display().to_string()),
        json_string(&images.initramfs.display().to_string()),
    )
}

/// What is wrong with `linux/net-host`'s serial log (empty: it passed).
pub fn judge_host(serial: &str, vm_name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    let field = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    let ping: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("alcove-guest: ping: ")).collect();
    // busybox: "3 packets transmitted, 3 packets received, 0% packet loss"
    if !ping.iter().any(|l| l.contains(" 3 packets transmitted, 3 packets received")) {
        problems.push(format!("netd's host address did not answer all 3 pings; ping said: {ping:?}"));
    }
    match field("alcove-guest: echo said ") {
        Some(s) if s == ECHO_LINE => {}
        other => problems.push(format!("netd's echo sent back {other:?}, not {ECHO_LINE:?}")),
    }
    let sent = field("alcove-guest: echo sent ");
    let back = field("alcove-guest: echo back ");
    let want_len = ECHO_BYTES.to_string();
    match (sent, back) {
        (Some(s), Some(b)) if s == b && s.split_whitespace().nth(1) == Some(want_len.as_str()) => {}
        (s, b) => problems.push(format!("the {ECHO_BYTES} random bytes did not all come back the same: sent {s:?}, back {b:?}")),
    }
    let log = VmLog::read(lines.iter().copied(), vm_name);
    problems.extend(log.problems.iter().cloned());
    match log.ending() {
        Some(e) if e.to_string().contains("poweroff") => {}
        other => problems.push(format!("the VM did not power off: {other:?}")),
    }
    problems
}

/// `a:b:c:d:e:f` in hex, one or two digits a byte.
fn mac_bytes(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// What is wrong with the run's serial log (empty: it passed).
pub fn judge(serial: &str, vm_name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    for (i, mac) in MACS.iter().enumerate() {
        let want = format!("alcove-guest: eth{i} {mac}");
        if !lines.contains(&want.as_str()) {
            problems.push(format!("the guest did not list eth{i} with {mac} (no line {want:?})"));
        }
    }
    // busybox prints the MAC as ether_ntoa does (no leading zeros).
    let from_eth1 = |l: &str| {
        let Some(rest) = l.strip_prefix("alcove-guest: arping: Unicast reply from 10.0.0.2 [") else { return false };
        rest.split(']').next().and_then(mac_bytes) == mac_bytes(MACS[1])
    };
    let replies = lines.iter().filter(|l| from_eth1(l)).count();
    if replies == 0 {
        let arping: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("alcove-guest: arping")).collect();
        problems.push(format!("no ARP reply from eth1 ({}) reached eth0; arping said: {arping:?}", MACS[1]));
    }
    let log = VmLog::read(lines.iter().copied(), vm_name);
    problems.extend(log.problems.iter().cloned());
    match log.ending() {
        Some(e) if e.to_string().contains("poweroff") => {}
        other => problems.push(format!("the VM did not power off: {other:?}")),
    }
    problems
}

pub const TWO_CASE: &str = "linux/net-two";
pub const TWO_ALIAS: &str = "net-two";
/// The sender's and the receiver's aliases (the receiver, given last,
/// ends the machine).
pub const SENDER: &str = "net-send";
pub const RECEIVER: &str = "net-recv";
/// What the sender sends: 8 MiB.
pub const TWO_BYTES: u64 = 8 << 20;
/// The cap of `bench/net-maxbw`, on the sender's VNIC.
pub const MAXBW_MBIT: u32 = 20;
/// A second cap of `bench/net-maxbw`, one the nested guests reach even on
/// a loaded host (uncapped they moved 8-11 Mbit/s with QEMU's thread per
/// CPU, some 46 with one thread), so that run shows the cap holding:
/// issue 13 wants the measured throughput within 20 % of the cap.
pub const MAXBW_REACHABLE_MBIT: u32 = 2;

/// One of `linux/net-two`'s VMs: 1 vCPU, 256 MiB, one NIC on `stub0`
/// (with `maxbw`, capped), the guest's `/init` told its `role`.
pub fn two_vm_json(images: &Images, role: &str, maxbw: Option<u32>, bytes: u64) -> String {
    let (alias, mac, ip) = if role == "send" { (SENDER, MACS[0], "10.0.0.1") } else { (RECEIVER, MACS[1], "10.0.0.2") };
    let cap = maxbw.map(|m| format!(", \"maxbw\": {m}")).unwrap_or_default();
    format!(
        "{{\n  \"alias\": \"{alias}\",\n  \"brand\": \"bhyve\",\n  \"ram\": 256,\n  \"vcpus\": 1,\n  \
         \"nics\": [\n    {{\"nic_tag\": \"stub0\", \"mac\": \"{mac}\", \"ip\": \"{ip}\", \"netmask\": \"255.255.255.0\"{cap}}}\n  ],\n  \
         \"kernel\": {},\n  \"initrd\": {},\n  \"cmdline\": \"console=ttyS0 panic=-1 alcove.net-two={role} alcove.net-two-bytes={bytes}\"\n}}\n",
        json_string(&images.vmlinuz.display().to_string()),
        json_string(&images.initramfs.display().to_string()),
    )
}

/// What `linux/net-two`'s log says: the transfer's length and time as the
/// sender saw them, and the average ping round trip each way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TwoFigures {
    pub bytes: u64,
    /// The sender's time for it (its uptime, in centiseconds).
    pub centis: u64,
    /// busybox ping's `round-trip min/avg/max`: the average, ms.
    pub send_rtt_ms: Option<f64>,
    pub recv_rtt_ms: Option<f64>,
}

impl TwoFigures {
    /// Throughput in Mbit/s.
    pub fn mbit_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e6 / (self.centis.max(1) as f64 / 100.0)
    }
}

/// What is wrong with `linux/net-two`'s serial log (empty: it passed), and
/// its figures.
pub fn judge_two(serial: &str, machine: &crate::vm::Machine, bytes: u64) -> (Vec<String>, TwoFigures) {
    let (mut problems, fig) = judge_two_guests(serial, bytes);
    for (i, vm) in machine.vms.iter().enumerate() {
        let log = machine.log_of(serial, i);
        problems.extend(log.problems.iter().map(|p| format!("vm {}: {p}", vm.name)));
        let last = i + 1 == machine.vms.len();
        if last {
            match log.ending() {
                Some(e) if e.to_string().contains("poweroff") => {}
                other => problems.push(format!("vm {}: did not power off: {other:?}", vm.name)),
            }
        } else if log.started.is_none() {
            problems.push(format!("vm {}: did not start", vm.name));
        }
    }
    (problems, fig)
}

/// What the two guests' own lines in `serial` say (both guests' consoles,
/// in any order): every ping answered each way, the receiver's bytes the
/// sender's, and the sender's report; and the figures.
pub fn judge_two_guests(serial: &str, bytes: u64) -> (Vec<String>, TwoFigures) {
    let mut problems = Vec::new();
    let mut fig = TwoFigures::default();
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    let field = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    for role in ["send", "recv"] {
        let prefix = format!("alcove-guest: net-two {role} ping: ");
        let ping: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix(prefix.as_str())).collect();
        if !ping.iter().any(|l| l.contains("3 packets transmitted, 3 packets received")) {
            problems.push(format!("the {role} VM's 3 pings were not all answered; ping said: {ping:?}"));
        }
        // "round-trip min/avg/max = 0.512/1.234/2.000 ms"
        let rtt = ping
            .iter()
            .find_map(|l| l.strip_prefix("round-trip min/avg/max = "))
            .and_then(|v| v.split('/').nth(1))
            .and_then(|v| v.parse::<f64>().ok());
        if role == "send" { fig.send_rtt_ms = rtt } else { fig.recv_rtt_ms = rtt }
    }
    let want_len = bytes.to_string();
    let sent = field("alcove-guest: net-two send sent ");
    let got = field("alcove-guest: net-two recv got ");
    match (sent, got) {
        (Some(s), Some(g)) if s == g && s.split_whitespace().nth(1) == Some(want_len.as_str()) => {}
        (s, g) => problems.push(format!("the receiver did not get the {bytes} bytes the sender sent: sent {s:?}, got {g:?}")),
    }
    match field("alcove-guest: net-two recv sender said ").map(|s| s.split_whitespace().collect::<Vec<_>>()) {
        Some(w) if w.len() == 3 && Some(w[0]) == sent.and_then(|s| s.split_whitespace().next()) => {
            fig.bytes = w[1].parse().unwrap_or(0);
            fig.centis = w[2].parse().unwrap_or(0);
        }
        other => problems.push(format!("the sender's report did not reach the receiver: {other:?}")),
    }
    (problems, fig)
}

/// Boots `linux/net-two`'s machine (the sender capped at `maxbw` Mbit/s if
/// given) under QEMU's SVM and judges its log; `case` names its log.
pub fn run_two(case: &str, kernel: &Path, images: &Images, maxbw: Option<u32>, bytes: u64, timeout: Duration) -> Result<(Run, Vec<String>, TwoFigures)> {
    run_two_with(case, kernel, images, bytes, &TwoOptions { maxbw, ..TwoOptions::default() }, timeout)
}

/// How [`run_two_with`] runs the machine besides its defaults.
#[derive(Clone, Debug, Default)]
struct TwoOptions {
    /// The sender's VNIC cap, Mbit/s.
    maxbw: Option<u32>,
    /// Arguments in netd's manifest entry.
    netd_args: Vec<String>,
    /// QEMU with `-icount shift=0` (a TSC delta is instructions).
    icount: bool,
}

/// [`run_two`] with `options`.
fn run_two_with(case: &str, kernel: &Path, images: &Images, bytes: u64, options: &TwoOptions, timeout: Duration) -> Result<(Run, Vec<String>, TwoFigures)> {
    let TwoOptions { maxbw, netd_args, icount } = options;
    let maxbw = *maxbw;
    let dir = crate::out_dir().join("linux-e2e").join(case.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let mut plans = Vec::new();
    for role in ["send", "recv"] {
        let path = dir.join(format!("{role}.json"));
        std::fs::write(&path, two_vm_json(images, role, if role == "send" { maxbw } else { None }, bytes))?;
        plans.push(VmPlan::load(&path)?);
    }
    let mut machine = crate::vm::Machine::new(plans)?;
    machine.netd_args = netd_args.to_vec();
    let system = machine.write_boot_files(&dir.join("boot"))?;
    let iso = image::iso_of(kernel, &format!("test-{}", case.replace('/', "-")), "", &system)?;
    let mut qemu = machine.qemu_forwarding(&[]);
    qemu.icount = *icount;
    // QEMU's CPU state if the whole machine resets (the two-VM fault).
    let reset_log = crate::emu::log_path(&case.replace('/', "-"))?.with_extension("qemu-reset.log");
    qemu.reset_log = Some(reset_log.clone());
    let mut c = qemu.command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    let t = capture_timed_answering(c, &case.replace('/', "-"), Some(timeout), false, None)?;
    let (mut problems, fig) = judge_two(&t.run.serial, &machine, bytes);
    problems.extend(crate::emu::reset_report(&reset_log));
    if netd_args.iter().any(|a| a.starts_with("test-exit-after-frames=")) {
        problems.extend(restart_problems(&t.run.serial, &machine));
    }
    match t.run.ending {
        Ending::Qemu(s) if s == qemu_status(EXIT_PASS) => {}
        Ending::Qemu(s) => problems.push(format!("QEMU exited with status {s} (a powered-off VM ends it with 33)")),
        Ending::Timeout(s) => problems.push(format!("timed out after {s} s")),
        Ending::Bochs { .. } => {}
    }
    Ok((t.run, problems, fig))
}

pub const RESTART_CASE: &str = "linux/net-restart";
pub const RESTART_ALIAS: &str = "net-restart";
/// What `linux/net-restart`'s sender sends: 1 MiB.
pub const RESTART_BYTES: u64 = 1 << 20;
/// netd exits once its switches took this many frames from the VNICs'
/// rings: past the pings (at most some 250 frames while the VMs wait for
/// each other), inside the 1 MiB transfer (some 1100 frames).
pub const RESTART_AFTER_FRAMES: u64 = 400;

/// `linux/net-restart`: `linux/net-two`'s machine with 1 MiB, whose netd
/// exits once mid-transfer (`test-exit-after-frames`); see
/// [`restart_problems`] for what it wants besides `linux/net-two`'s checks.
pub fn run_restart(kernel: &Path, images: &Images, timeout: Duration) -> Result<(Run, Vec<String>)> {
    let args = [format!("test-exit-after-frames={RESTART_AFTER_FRAMES}")];
    let options = TwoOptions { netd_args: args.to_vec(), ..TwoOptions::default() };
    let (run, problems, _) = run_two_with(RESTART_CASE, kernel, images, RESTART_BYTES, &options, timeout)?;
    Ok((run, problems))
}

/// What is wrong with a restart of netd in `serial` (empty: nothing):
/// netd exited once (its test exit) and init restarted it; the restarted
/// netd said it was one (a VMM named an earlier netd's handle) and did not
/// exit again; each VM's VMM attached its NIC again after the restart;
/// and each VM started once (never restarted).
pub fn restart_problems(serial: &str, machine: &crate::vm::Machine) -> Vec<String> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    let exited = lines.iter().position(|l| l.contains("server \"netd\" exited with code 3; restarting"));
    if count("test-exit-after-frames: exiting with") != 1 || count("server \"netd\" exited") != 1 {
        problems.push(format!(
            "netd did not exit exactly once by its test exit ({} test exits, {} exits seen by init)",
            count("test-exit-after-frames: exiting with"),
            count("server \"netd\" exited")
        ));
    }
    let Some(exited) = exited else {
        problems.push("init did not restart netd".into());
        return problems;
    };
    let after = &lines[exited..];
    if !after.iter().any(|l| l.contains("test-exit-after-frames: this netd was restarted")) {
        problems.push("the restarted netd did not see a VMM's handle of the earlier netd".into());
    }
    for vm in &machine.vms {
        let again = format!("{}: nics[0]: VNIC ", vm.server);
        if !after.iter().any(|l| l.contains(&again) && l.contains("attached again as handle")) {
            problems.push(format!("vm {}: its VMM did not attach its NIC again after netd's restart", vm.name));
        }
        let started = format!("vm {}: started:", vm.name);
        let n = count(&started);
        if n != 1 {
            problems.push(format!("vm {}: started {n} times, not once", vm.name));
        }
    }
    problems
}

/// The baseline of `bench/net-maxbw`: net-two's guests (the same kernel,
/// initramfs, `/init` roles, transfer and pings, 1 vCPU and 256 MiB each)
/// as two plain QEMU TCG processes, each with a virtio-net NIC (the MAC
/// net-two gives it) on a `-netdev socket` link: the receiver listens on
/// a free port of 127.0.0.1, the sender connects to it. The receiver ends
/// the run (it powers off); the sender, then sleeping, is killed. Both
/// consoles are judged as net-two's guest lines ([`judge_two_guests`]).
pub fn run_qemu_two(images: &Images, bytes: u64, timeout: Duration) -> Result<(Vec<String>, TwoFigures)> {
    let name = "bench-net-qemu";
    let port = crate::vm::free_port()?;
    let sender_log = crate::emu::log_path(&format!("{name}-send"))?;
    let _ = std::fs::remove_file(&sender_log);
    let guest = |role: &str, mac: &str, netdev: String| {
        let mut c = crate::emu::emulator("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-display", "none", "-no-reboot", "-monitor", "none"])
            .args(["-m", "256", "-smp", "1"])
            .arg("-kernel")
            .arg(&images.vmlinuz)
            .arg("-initrd")
            .arg(&images.initramfs)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 alcove.net-two={role} alcove.net-two-bytes={bytes}"))
            .args(["-netdev", &netdev, "-device"])
            .arg(format!("virtio-net-pci,netdev=n0,mac={mac},disable-legacy=on"));
        c
    };
    let mut recv = guest("recv", MACS[1], format!("socket,id=n0,listen=127.0.0.1:{port}"));
    recv.args(["-serial", "stdio"]);
    let mut send = guest("send", MACS[0], format!("socket,id=n0,connect=127.0.0.1:{port}"));
    send.arg("-serial").arg(format!("file:{}", sender_log.display()));
    let sender_err = std::fs::File::create(crate::emu::log_path(&format!("{name}-send-stderr"))?)?;
    send.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(sender_err);
    // Each QEMU dies with the thread that started it (`setpriv
    // --pdeathsig`, which follows the parent thread, not the process): the
    // receiver's run is captured on a thread that lives as long as it,
    // and the sender starts on this one once the receiver listens (its
    // QEMU must listen before the sender's connects).
    let receiver = std::thread::spawn(move || crate::emu::capture_timed(recv, name, Some(timeout), false).map_err(|e| e.to_string()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut problems = Vec::new();
    let mut child = None;
    loop {
        if listening(port) {
            match send.spawn() {
                Ok(c) => child = Some(c),
                Err(e) => problems.push(format!("the sender's QEMU: {e}")),
            }
            break;
        }
        if receiver.is_finished() || std::time::Instant::now() >= deadline {
            problems.push(format!("the receiver's QEMU did not listen on 127.0.0.1:{port}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Without a sender the receiver's run ends at its timeout.
    let t = match receiver.join() {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err("the thread capturing the receiver's QEMU panicked".into()),
    };
    let mut sender_serial = String::new();
    if let Some(mut child) = child {
        if let Ok(Some(status)) = child.try_wait() {
            crate::emu::note_exit(&status);
            problems.push(format!("the sender's QEMU exited before the receiver's run ended ({status})"));
        }
        let _ = child.kill();
        let _ = child.wait();
        sender_serial = std::fs::read_to_string(&sender_log).unwrap_or_default();
    }
    let both = format!("{}\n{sender_serial}", t.run.serial);
    let (p, fig) = judge_two_guests(&both, bytes);
    problems.extend(p);
    if !t.run.serial.lines().any(|l| l.trim_end() == "alcove-guest: poweroff") {
        problems.push("the receiver did not power off".into());
    }
    match t.run.ending {
        Ending::Qemu(0) => {}
        Ending::Qemu(s) => problems.push(format!("the receiver's QEMU exited with status {s}")),
        Ending::Timeout(s) => problems.push(format!("the receiver's QEMU timed out after {s} s")),
        Ending::Bochs { .. } => {}
    }
    Ok((problems, fig))
}

/// Whether a socket on 127.0.0.1:`port` is listening (`/proc/net/tcp`).
fn listening(port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 3 && w[1] == local && w[3] == "0A"
        })
    })
}

/// netd's kick-path counters (`log-kick-path=N`): kicks, frames into
/// rings, ticks, and the fewest ticks of a one-frame kick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KickPath {
    pub kicks: u64,
    pub frames: u64,
    pub ticks: u64,
    pub one_frame_min: Option<u64>,
}

impl KickPath {
    /// The last line netd logged of its kick path in `serial`
    /// ("kick path: K kicks, F frames into rings, T ticks (P a frame,
    /// one-frame kick at least M) (TSC ticks)").
    pub fn last_in(serial: &str) -> Option<Self> {
        serial.lines().rev().find_map(|l| Self::parse(&l[l.find("kick path: ")? + "kick path: ".len()..]))
    }

    fn parse(rest: &str) -> Option<Self> {
        let num = |s: &str, suffix: &str| s.trim().strip_suffix(suffix)?.trim().parse::<u64>().ok();
        let mut parts = rest.splitn(4, ',');
        let kicks = num(parts.next()?, "kicks")?;
        let frames = num(parts.next()?, "frames into rings")?;
        let ticks_part = parts.next()?;
        let ticks = num(ticks_part.split('(').next()?, "ticks")?;
        let one_frame_min = parts
            .next()
            .and_then(|p| p.trim().strip_prefix("one-frame kick at least "))
            .and_then(|p| p.split(')').next())
            .and_then(|p| p.trim().parse().ok());
        Some(Self { kicks, frames, ticks, one_frame_min })
    }
}

/// What `bench/net-icount`'s netd is told: log its kick path every this
/// many frames.
pub const KICK_LOG_FRAMES: u64 = 128;
/// What `bench/net-icount`'s sender sends (TCG under `-icount` is slow).
pub const ICOUNT_BYTES: u64 = 256 << 10;

/// `bench/net-maxbw`: the two-VM transfer uncapped, then with the sender
/// capped at [`MAXBW_MBIT`] and at [`MAXBW_REACHABLE_MBIT`]; figures only
/// from runs that passed.
pub fn bench(kernel: &Path, images: &Images, timeout: Duration) -> Result<(Vec<crate::bench::Figure>, Vec<String>)> {
    use crate::bench::Figure;
    let mut figures = Vec::new();
    let mut problems = Vec::new();
    let (_, p, free) = run_two("bench/net-two", kernel, images, None, TWO_BYTES, timeout)?;
    let free_ok = p.is_empty();
    if free_ok {
        figures.push(Figure::new("net_guest_to_guest", format!("{:.1}", free.mbit_s()), "Mbit/s"));
        if let Some(rtt) = free.send_rtt_ms {
            figures.push(Figure::new("net_guest_ping_rtt", format!("{rtt:.3}"), "ms"));
        }
    } else {
        problems.extend(p.into_iter().map(|p| format!("bench/net-two: {p}")));
    }
    // The same guests under plain QEMU, in the same run.
    let (p, qemu) = run_qemu_two(images, TWO_BYTES, timeout)?;
    if p.is_empty() {
        figures.push(Figure::new("net_qemu_guest_to_guest", format!("{:.1}", qemu.mbit_s()), "Mbit/s"));
        if let Some(rtt) = qemu.send_rtt_ms {
            figures.push(Figure::new("net_qemu_ping_rtt", format!("{rtt:.3}"), "ms"));
        }
        if free_ok {
            figures.push(Figure::new("net_guest_to_guest_over_qemu", format!("{:.3}", free.mbit_s() / qemu.mbit_s()), "ratio"));
        }
        if let (true, Some(a), Some(q)) = (free_ok, free.send_rtt_ms, qemu.send_rtt_ms) {
            figures.push(Figure::new("net_ping_rtt_over_qemu", format!("{:.2}", a / q), "ratio"));
        }
    } else {
        problems.extend(p.into_iter().map(|p| format!("bench/net-qemu: {p}")));
    }
    // Each cap's run: `net_maxbw_<cap>_measured` and its ratio to the cap.
    for (case, cap) in [("bench/net-maxbw", MAXBW_MBIT), ("bench/net-maxbw-reachable", MAXBW_REACHABLE_MBIT)] {
        let (_, p, capped) = run_two(case, kernel, images, Some(cap), TWO_BYTES, timeout)?;
        if p.is_empty() {
            figures.push(Figure::new(&format!("net_maxbw_{cap}_measured"), format!("{:.2}", capped.mbit_s()), "Mbit/s"));
            figures.push(Figure::new(&format!("net_maxbw_{cap}_ratio"), format!("{:.3}", capped.mbit_s() / f64::from(cap)), "ratio"));
            if free_ok && free.mbit_s() < f64::from(cap) {
                println!("  note {case}: uncapped the guests moved {:.2} Mbit/s in this run, below the {cap} Mbit/s cap: its ratio shows the guests, not the cap", free.mbit_s());
            }
        } else {
            problems.extend(p.into_iter().map(|p| format!("{case}: {p}")));
        }
    }
    // Instructions per forwarded frame: net-two's machine under
    // `-icount shift=0`, whose netd logs its kick path's TSC ticks.
    let options = TwoOptions { netd_args: vec![format!("log-kick-path={KICK_LOG_FRAMES}")], icount: true, ..TwoOptions::default() };
    let (run, p, _) = run_two_with("bench/net-icount", kernel, images, ICOUNT_BYTES, &options, timeout)?;
    match KickPath::last_in(&run.serial) {
        Some(k) if p.is_empty() && k.frames > 0 => {
            figures.push(Figure::new("net_switch_instructions_per_frame", k.ticks / k.frames, "instructions"));
            if let Some(m) = k.one_frame_min {
                figures.push(Figure::new("net_switch_instructions_one_frame_kick_min", m, "instructions"));
            }
            figures.push(Figure::new("net_switch_frames_counted", k.frames, "frames"));
        }
        _ if !p.is_empty() => problems.extend(p.into_iter().map(|p| format!("bench/net-icount: {p}"))),
        other => problems.push(format!("bench/net-icount: netd logged no kick path with frames ({other:?})")),
    }
    Ok((figures, problems))
}

/// Boots case `case`'s VM ([`CASE`] or [`HOST_CASE`]) on Alcove under
/// QEMU's SVM and judges its log.
pub fn run(case: &str, kernel: &Path, images: &Images, timeout: Duration) -> Result<(Run, Vec<String>)> {
    let dir = crate::out_dir().join("linux-e2e").join(case.replace('/', "-"));
    std::fs::create_dir_all(&dir)?;
    let json_path = dir.join("vm.json");
    let host = case == HOST_CASE;
    std::fs::write(&json_path, if host { host_vm_json(images) } else { vm_json(images) })?;
    let plan = VmPlan::load(&json_path)?;
    let system = plan.write_boot_files(&dir.join("boot"))?;
    let iso = image::iso_of(kernel, &format!("test-{}", case.replace('/', "-")), "", &system)?;
    let mut c = plan.qemu().command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    let t = capture_timed_answering(c, &case.replace('/', "-"), Some(timeout), false, None)?;
    let mut problems = if host { judge_host(&t.run.serial, &plan.name) } else { judge(&t.run.serial, &plan.name) };
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

    fn log(arping: &str) -> String {
        format!(
            "vm {ALIAS}: started: 1 vCPUs, 256 MiB\r\n\
             alcove-guest: init started\r\n\
             alcove-guest: eth0 02:08:20:00:00:01\r\n\
             alcove-guest: eth1 02:08:20:00:00:02\r\n\
             {arping}\
             alcove-guest: poweroff\r\n\
             vm {ALIAS}: ended: poweroff\r\n"
        )
    }

    #[test]
    fn a_reply_from_eth1_passes_and_its_absence_is_named() {
        let good = log(
            "alcove-guest: arping: ARPING 10.0.0.2 from 10.0.0.1 eth0\r\n\
             alcove-guest: arping: Unicast reply from 10.0.0.2 [2:8:20:0:0:2] 1.234ms\r\n",
        );
        let p = judge(&good, ALIAS);
        assert!(p.iter().all(|p| !p.contains("ARP") && !p.contains("eth")), "{p:?}");
        let none = log("alcove-guest: arping: Received 0 response(s)\r\n");
        let p = judge(&none, ALIAS);
        assert!(p.iter().any(|p| p.starts_with("no ARP reply from eth1")), "{p:?}");
        let wrong_mac = log("alcove-guest: arping: Unicast reply from 10.0.0.2 [02:08:20:00:00:09] 1.0ms\r\n")
            .replace("eth1 02:08:20:00:00:02", "eth1 02:08:20:00:00:09");
        let p = judge(&wrong_mac, ALIAS);
        assert!(p.iter().any(|p| p.contains("eth1 with 02:08:20:00:00:02")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("no ARP reply")), "{p:?}");
    }

    fn host_log(ping: &str, said: &str, back: &str) -> String {
        format!(
            "vm {HOST_ALIAS}: started: 1 vCPUs, 256 MiB\r\n\
             alcove-guest: init started\r\n\
             alcove-guest: ping: PING 10.0.2.15 (10.0.2.15): 56 data bytes\r\n\
             alcove-guest: ping: --- 10.0.2.15 ping statistics ---\r\n\
             alcove-guest: ping: {ping}\r\n\
             alcove-guest: echo said {said}\r\n\
             alcove-guest: echo sent 0123abcd 131072\r\n\
             alcove-guest: echo back {back}\r\n\
             alcove-guest: poweroff\r\n\
             vm {HOST_ALIAS}: ended: poweroff\r\n"
        )
    }

    #[test]
    fn the_host_case_wants_every_ping_the_line_and_the_same_bytes_back() {
        let all = "3 packets transmitted, 3 packets received, 0% packet loss";
        assert_eq!(judge_host(&host_log(all, ECHO_LINE, "0123abcd 131072"), HOST_ALIAS), Vec::<String>::new());
        let p = judge_host(&host_log("3 packets transmitted, 2 packets received, 33% packet loss", ECHO_LINE, "0123abcd 131072"), HOST_ALIAS);
        assert!(p.len() == 1 && p[0].starts_with("netd's host address did not answer"), "{p:?}");
        let p = judge_host(&host_log(all, "", "0123abcd 131072"), HOST_ALIAS);
        assert!(p.len() == 1 && p[0].starts_with("netd's echo sent back"), "{p:?}");
        let p = judge_host(&host_log(all, ECHO_LINE, "0123abcd 65536"), HOST_ALIAS);
        assert!(p.len() == 1 && p[0].contains("did not all come back"), "{p:?}");
        let p = judge_host(&host_log(all, ECHO_LINE, "e3b0c442 131072"), HOST_ALIAS);
        assert!(p.len() == 1 && p[0].contains("did not all come back"), "{p:?}");
    }

    #[test]
    fn the_last_kick_path_netd_logged_is_read_and_garbage_is_not() {
        let serial = "[INFO ] netd: kick path: 10 kicks, 128 frames into rings, 640000 ticks (5000 a frame) (TSC ticks)\r\n\
                      alcove-guest: net-two send sent abcd 100\r\n\
                      [INFO ] netd: kick path: 20 kicks, 256 frames into rings, 1024000 ticks (4000 a frame, one-frame kick at least 3100) (TSC ticks)\r\n\
                      [INFO ] netd: kick path: garbage\r\n";
        let k = KickPath::last_in(serial).unwrap();
        assert_eq!(k, KickPath { kicks: 20, frames: 256, ticks: 1_024_000, one_frame_min: Some(3100) });
        let first = KickPath::last_in(serial.split("alcove-guest").next().unwrap()).unwrap();
        assert_eq!((first.frames, first.one_frame_min), (128, None));
        for bad in ["", "kick path: ", "kick path: x kicks, 1 frames into rings, 2 ticks (2 a frame)", "kick path: 1 kicks, 1 frames, 2 ticks"] {
            assert_eq!(KickPath::last_in(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_qemu_guests_are_judged_on_their_own_lines_from_both_consoles() {
        let all = "3 packets transmitted, 3 packets received, 0% packet loss";
        let recv = format!(
            "alcove-guest: net-two recv ping: {all}\r\nalcove-guest: net-two recv got abcd 100\r\n\
             alcove-guest: net-two recv sender said abcd 100 50\r\nalcove-guest: poweroff\r\n"
        );
        let send = format!(
            "alcove-guest: net-two send ping: {all}\nalcove-guest: net-two send ping: round-trip min/avg/max = 0.100/0.200/0.300 ms\n\
             alcove-guest: net-two send sent abcd 100\n"
        );
        let (p, f) = judge_two_guests(&format!("{recv}\n{send}"), 100);
        assert_eq!(p, Vec::<String>::new());
        assert_eq!((f.bytes, f.centis, f.send_rtt_ms), (100, 50, Some(0.2)));
        // Without the sender's console: its pings and what it sent are missing.
        let (p, _) = judge_two_guests(&recv, 100);
        assert!(p.iter().any(|p| p.starts_with("the send VM's 3 pings")) && p.iter().any(|p| p.starts_with("the receiver did not get")), "{p:?}");
    }

    #[test]
    fn a_listening_port_is_seen_and_a_closed_one_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening(port));
        drop(l);
        assert!(!listening(port));
    }

    fn two_machine() -> crate::vm::Machine {
        let dir = Path::new("/img");
        let images = Images {
            vmlinuz: dir.join("vmlinuz"),
            initramfs: dir.join("initramfs.cpio"),
            modules: dir.into(),
            release: String::new(),
            kernel_package: String::new(),
        };
        let plans = ["send", "recv"]
            .iter()
            .map(|r| VmPlan::from_text(&two_vm_json(&images, r, None, 100), Path::new("/t/x.json"), dir).unwrap())
            .collect();
        crate::vm::Machine::new(plans).unwrap()
    }

    #[test]
    fn a_netd_restart_passes_only_once_with_both_vmms_attached_again_and_no_vm_restarted() {
        let m = two_machine();
        let good = format!(
            "[WARN ] netd: test-exit-after-frames: exiting with 400 frames taken from the VNICs and the VMs' rings attached\r\n\
             [WARN ] init: server \"netd\" exited with code 3; restarting (1)\r\n\
             [INFO ] netd: test-exit-after-frames: this netd was restarted (a VMM kicked an earlier netd's handle); not exiting again\r\n\
             [INFO ] vm-{SENDER}: nics[0]: VNIC 0 attached again as handle 77\r\n\
             [INFO ] vm-{RECEIVER}: nics[0]: VNIC 1 attached again as handle 78\r\n{}",
            two_log("abcd 100", "abcd 100 50", "3 packets transmitted, 3 packets received")
        );
        assert_eq!(restart_problems(&good, &m), Vec::<String>::new());
        let p = restart_problems("", &m);
        assert!(p.iter().any(|p| p.starts_with("netd did not exit exactly once")) && p.iter().any(|p| p == "init did not restart netd"), "{p:?}");
        let twice = good.replace("restarting (1)\r\n", "restarting (1)\r\n[WARN ] init: server \"netd\" exited with code 3; restarting (2)\r\n");
        assert!(restart_problems(&twice, &m).iter().any(|p| p.contains("1 test exits, 2 exits")), "{:?}", restart_problems(&twice, &m));
        let no_relink = good.replace(&format!("vm-{RECEIVER}: nics[0]: VNIC 1 attached again"), "x");
        let p = restart_problems(&no_relink, &m);
        assert!(p.len() == 1 && p[0].contains(RECEIVER) && p[0].contains("attach its NIC again"), "{p:?}");
        let not_seen = good.replace("this netd was restarted", "x");
        assert_eq!(restart_problems(&not_seen, &m).len(), 1);
        let rebooted = good.replace(&format!("vm {SENDER}: started: 1 vCPUs, 256 MiB\r\n"), &format!("vm {SENDER}: started: 1 vCPUs, 256 MiB\r\nvm {SENDER}: started: 1 vCPUs, 256 MiB\r\n"));
        let p = restart_problems(&rebooted, &m);
        assert!(p.len() == 1 && p[0].contains("started 2 times"), "{p:?}");
    }

    fn two_log(got: &str, said: &str, recv_ping: &str) -> String {
        format!(
            "vm {SENDER}: started: 1 vCPUs, 256 MiB\r\n\
             vm {RECEIVER}: started: 1 vCPUs, 256 MiB\r\n\
             alcove-guest: net-two send sent abcd 100\r\n\
             alcove-guest: net-two send ping: 3 packets transmitted, 3 packets received, 0% packet loss\r\n\
             alcove-guest: net-two send ping: round-trip min/avg/max = 0.500/1.250/2.000 ms\r\n\
             alcove-guest: net-two recv ping: {recv_ping}\r\n\
             vm {SENDER}: ended: poweroff\r\n\
             alcove-guest: net-two recv got {got}\r\n\
             alcove-guest: net-two recv sender said {said}\r\n\
             vm {RECEIVER}: ended: poweroff\r\n"
        )
    }

    #[test]
    fn two_vms_pass_only_with_every_ping_and_the_same_bytes() {
        let m = two_machine();
        let all = "3 packets transmitted, 3 packets received, 0% packet loss";
        let (p, f) = judge_two(&two_log("abcd 100", "abcd 100 50", all), &m, 100);
        assert_eq!(p, Vec::<String>::new());
        assert_eq!((f.bytes, f.centis, f.send_rtt_ms, f.recv_rtt_ms), (100, 50, Some(1.25), None));
        assert!((f.mbit_s() - 0.0016).abs() < 1e-9, "{}", f.mbit_s());
        let (p, _) = judge_two(&two_log("abce 100", "abcd 100 50", all), &m, 100);
        assert!(p.len() == 1 && p[0].starts_with("the receiver did not get"), "{p:?}");
        let (p, _) = judge_two(&two_log("abcd 99", "abcd 100 50", all), &m, 100);
        assert!(p.len() == 1 && p[0].starts_with("the receiver did not get"), "{p:?}");
        let (p, _) = judge_two(&two_log("abcd 100", "", all), &m, 100);
        assert!(p.len() == 1 && p[0].starts_with("the sender's report"), "{p:?}");
        let (p, _) = judge_two(&two_log("abcd 100", "abcd 100 50", "3 packets transmitted, 0 packets received, 100% packet loss"), &m, 100);
        assert!(p.len() == 1 && p[0].starts_with("the recv VM's 3 pings"), "{p:?}");
        let cut = two_log("abcd 100", "abcd 100 50", all).replace(&format!("vm {RECEIVER}: ended: poweroff"), "");
        let (p, _) = judge_two(&cut, &m, 100);
        assert!(p.len() == 1 && p[0].contains("did not power off"), "{p:?}");
    }
}
