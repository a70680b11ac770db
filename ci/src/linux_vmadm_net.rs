//! `linux/vmadm-net` (issue 15's network tests): two Linux VMs created at
//! run time by zone-server from an imported image, on one etherstub.
//!
//! The machine is the shell case's (manifest `initrd/manifests/vmnet.toml`:
//! the operator shell on the serial console, zone-server, storaged's pool
//! on a blank drive, netd with etherstub `stub0` and the machine's NIC on
//! QEMU's user network), its VMM template carrying SeaBIOS. The harness
//! makes the GRUB test disk ([`crate::fwboot`]: Debian's cloud kernel and
//! the test initramfs, BIOS GRUB only, kernel command line
//! `alcove.mdata-net`), serves it xz-compressed as a `zvol` image from its
//! image source on this host ([`crate::imgsource`]), and types on the
//! console: `imgadm sources -a`, `imgadm import`, `zfs list -Hp` (the
//! pool's datasets and their `used`), two `vmadm create`s of SmartOS
//! payloads (`brand` bhyve, `bootrom` bios, `disks[0]` a clone of the
//! image with `boot: true`, a NIC on `stub0` with a fixed `mac` and
//! `ips`, `hostname`, `customer_metadata` with the guest's role, address
//! and peer). Each guest's `/init` reads `sdc:hostname` and its
//! `customer_metadata` keys over the metadata port (ttyS1, protocol v1),
//! takes its address from them, pings the other, and the sender sends
//! 1 MiB of random bytes to the receiver with busybox `nc`. Once the
//! receiver says it is done, the harness types `vmadm list`, `zfs list
//! -Hp` and `dladm show-vnic`; then takes the sender through its life
//! cycle: `vmadm stop` (the ACPI power button: the guest's `/init` powers
//! it off), `vmadm update ram=`[`NEW_RAM_MIB`], `vmadm start` (its guest
//! boots again from its clone, reads its metadata, writes its disk and
//! pings the receiver through its VNIC again), `vmadm reboot` (the button
//! again, and the same once more); then deletes both VMs, and lists the
//! datasets and VNICs again before `poweroff`.
//!
//! It wants: the import and both creates to succeed; both VMs `running`;
//! each guest's metadata values equal to its payload's; 3 of 3 pings
//! answered each way; the receiver's SHA-256 and length equal to the
//! sender's; each disk a clone of the image's snapshot, and the sum of
//! the datasets' `used` after both guests ran grown by at least what the
//! guests wrote (256 KiB each, at the end of their disks) and by less
//! than a quarter of the image's own `used` (the clones share the
//! snapshot's blocks); the sender stopped, updated, started and rebooted
//! with vmadm's messages, its guest powered off by the power button at the
//! stop and at the reboot, its VMM started again with the new RAM each
//! time, its guest done (pings answered) after each boot, `vmadm list`
//! showing it running with the new RAM; after the deletes, only the image
//! and its snapshot left and no VNIC; the machine ended by `poweroff`.

use crate::Result;
use crate::emu::{Qemu, capture_timed_script};
use crate::guest_images::{self, Images};
use crate::harness::{Ending, First, Transcript};
use crate::image::{self, BootSystem};
use kcore::testproto::{EXIT_PASS, qemu_status};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub const CASE: &str = "linux/vmadm-net";
pub const ALIAS: &str = "vmadm-net";
const HOSTNAME: &str = "vmnettest";
/// The image (the GRUB test disk).
pub const IMAGE: &str = "1a9e0000-0000-4000-8000-0000000000e1";
const IMAGE_NAME: &str = "alcove-grub-linux";
/// The guests' RAM (MiB).
const RAM_MIB: u32 = 128;
/// The sender's RAM after its `vmadm update` (taken at its next start).
const NEW_RAM_MIB: u32 = 192;
const MEM_MIB: u32 = 1024;
/// Bytes the sender sends (the guest's `/init` sends 1 MiB).
pub const BYTES: u64 = 1 << 20;
/// Bytes each guest writes at the end of its disk.
pub const WRITTEN: u64 = 256 << 10;
/// The pool drive.
const POOL_BYTES: u64 = 256 << 20;

/// One of the two VMs.
#[derive(Clone, Copy, Debug)]
pub struct Vm {
    pub uuid: &'static str,
    pub alias: &'static str,
    pub hostname: &'static str,
    pub role: &'static str,
    pub ip: &'static str,
    pub peer: &'static str,
    pub mac: &'static str,
    /// The MAC as dladm prints it.
    pub dladm_mac: &'static str,
}

/// The sender, then the receiver (which prints last).
pub const VMS: [Vm; 2] = [
    Vm {
        uuid: "7e7e0000-0000-4000-8000-0000000000a1",
        alias: "vmnet-a",
        hostname: "guest-alpha",
        role: "send",
        ip: "10.0.0.11/24",
        peer: "10.0.0.12",
        mac: "02:08:20:7e:00:a1",
        dladm_mac: "2:8:20:7e:0:a1",
    },
    Vm {
        uuid: "7e7e0000-0000-4000-8000-0000000000a2",
        alias: "vmnet-b",
        hostname: "guest-bravo",
        role: "recv",
        ip: "10.0.0.12/24",
        peer: "10.0.0.11",
        mac: "02:08:20:7e:00:a2",
        dladm_mac: "2:8:20:7e:0:a2",
    },
];

/// The payloads' `resolvers` (what `sdc:resolvers` answers the guests).
const RESOLVER: &str = "10.0.0.53";

/// What is wrong with a guest's `sdc:nics` answer (`json`, one line) for
/// `vm`: it must list one NIC, the payload's, with its MAC and address.
fn nics_problem(vm: &Vm, json: Option<&str>) -> Option<String> {
    let nics: serde_json::Value = match json.map(serde_json::from_str) {
        Some(Ok(v)) => v,
        other => return Some(format!("guest {} got no JSON for sdc:nics: {json:?} ({other:?})", vm.hostname)),
    };
    let n = &nics[0];
    let ok = nics.as_array().map(Vec::len) == Some(1)
        && n["mac"] == vm.mac
        && n["ips"] == serde_json::json!([vm.ip])
        && n["nic_tag"] == "stub0"
        && n["primary"] == true;
    (!ok).then(|| format!("guest {}'s sdc:nics is not its payload's NIC ({} {} on stub0, primary): {nics}", vm.hostname, vm.mac, vm.ip))
}

/// The VM's SmartOS payload.
pub fn payload(vm: &Vm) -> String {
    serde_json::json!({
        "uuid": vm.uuid,
        "brand": "bhyve",
        "alias": vm.alias,
        "hostname": vm.hostname,
        "ram": RAM_MIB,
        "vcpus": 1,
        "bootrom": "bios",
        "disks": [{"image_uuid": IMAGE, "boot": true, "model": "virtio"}],
        "nics": [{"nic_tag": "stub0", "mac": vm.mac, "ips": [vm.ip], "model": "virtio"}],
        "customer_metadata": {"alcove-role": vm.role, "alcove-ip": vm.ip, "alcove-peer": vm.peer},
        "resolvers": [RESOLVER],
    })
    .to_string()
}

/// netd's configuration: etherstub `stub0` and the machine's NIC on
/// `admin` (the image source at 10.0.2.2).
const NETD_CONF: &str = "# linux/vmadm-net (ci/src/linux_vmadm_net.rs)\netherstub stub0\nnic_tag admin\n";

/// The GRUB disk (BIOS GRUB only: smaller than `fwboot::grub_disk`'s, which
/// carries the EFI one too), raw, and the same xz-compressed.
fn image_files(dir: &Path, images: &Images) -> Result<(u64, Vec<u8>)> {
    grub_image_files(dir, images, "console=ttyS0 panic=-1 alcove.mdata-net", "i386-pc")
}

/// A GRUB disk of one platform's GRUB (`i386-pc`: BIOS, `x86_64-efi`:
/// UEFI) booting the test guest with `cmdline`, raw, and the same
/// xz-compressed (kept beside it while the raw disk is unchanged:
/// compressing takes seconds): an image file for the harness's image
/// source.
pub(crate) fn grub_image_files(dir: &Path, images: &Images, cmdline: &str, platform: &str) -> Result<(u64, Vec<u8>)> {
    let tree = dir.join("grub-tree");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(tree.join("boot/grub"))?;
    fs::copy(&images.vmlinuz, tree.join("boot/vmlinuz"))?;
    fs::copy(&images.initramfs, tree.join("boot/initrd.img"))?;
    fs::write(tree.join("boot/grub/grub.cfg"), crate::fwboot::grub_cfg(cmdline))?;
    let disk = dir.join("boot-disk.img");
    let _ = fs::remove_file(&disk);
    guest_images::output(
        Command::new("grub-mkrescue")
            .arg("-d")
            .arg(format!("/usr/lib/grub/{platform}"))
            .args(["--fonts=", "--locales=", "--themes=", "--compress=xz", "-o"])
            .arg(&disk)
            .arg(&tree),
        "grub-mkrescue",
    )?;
    fs::remove_dir_all(&tree)?;
    let raw = fs::read(&disk)?;
    let hash = crate::vm::sha256_file(&disk)?;
    let (xz, stamp) = (dir.join("boot-disk.img.xz"), dir.join("boot-disk.img.xz.sha256"));
    if fs::read_to_string(&stamp).is_ok_and(|s| s == hash)
        && let Ok(bytes) = fs::read(&xz)
    {
        return Ok((raw.len() as u64, bytes));
    }
    use std::io::Write;
    let mut o = lzma_rust2::XzOptions::with_preset(1);
    o.lzma_options.dict_size = 1 << 20;
    let mut w = lzma_rust2::XzWriter::new(Vec::new(), o)?;
    w.write_all(&raw)?;
    let bytes = w.finish()?;
    fs::write(&xz, &bytes)?;
    fs::write(&stamp, hash)?;
    Ok((raw.len() as u64, bytes))
}

/// What is typed, step by step: each waits for a line that contains its
/// first part.
fn script(source_port: u16, expected_done: &str) -> Vec<(String, Vec<u8>)> {
    let [a, b] = VMS;
    vec![
        (format!("Alcove operator shell on {HOSTNAME}"), format!("imgadm sources -a http://10.0.2.2:{source_port}\r").into_bytes()),
        ("Added image source".into(), format!("imgadm import {IMAGE}\r").into_bytes()),
        (format!("Imported image {IMAGE}"), b"zfs list -Hp -t all -o name,used,origin\r".to_vec()),
        (format!("zones/{IMAGE}@"), format!("vmadm create <<< '{}'\r", payload(&a)).into_bytes()),
        (format!("Successfully created VM {}", a.uuid), format!("vmadm create <<< '{}'\r", payload(&b)).into_bytes()),
        (format!("Successfully created VM {}", b.uuid), b"vmadm list\r".to_vec()),
        // The receiver's last line: both guests are done printing.
        (expected_done.into(), b"vmadm list\r".to_vec()),
        ("UUID".into(), b"zfs list -Hp -t all -o name,used,origin\r".to_vec()),
        (format!("zones/{}-disk0\t", b.uuid), b"dladm show-vnic\r".to_vec()),
        // The sender's life cycle; each boot ends in its `done` line.
        ("MACADDRTYPE".into(), format!("vmadm stop {}\r", a.uuid).into_bytes()),
        (format!("Successfully completed stop for VM {}", a.uuid), format!("vmadm update {} ram={NEW_RAM_MIB}\r", a.uuid).into_bytes()),
        (format!("Successfully updated VM {}", a.uuid), format!("vmadm start {}\r", a.uuid).into_bytes()),
        (format!("Successfully started VM {}", a.uuid), b"vmadm list\r".to_vec()),
        (done_line(&a), format!("vmadm reboot {}\r", a.uuid).into_bytes()),
        (format!("Successfully completed reboot for VM {}", a.uuid), b"vmadm list\r".to_vec()),
        (done_line(&a), b"vmadm list\r".to_vec()),
        ("UUID".into(), format!("vmadm delete {}\r", a.uuid).into_bytes()),
        (format!("Successfully deleted VM {}", a.uuid), format!("vmadm delete {}\r", b.uuid).into_bytes()),
        (format!("Successfully deleted VM {}", b.uuid), b"zfs list -Hp -t all -o name,used,origin\r".to_vec()),
        (format!("zones/{IMAGE}@"), b"dladm show-vnic\r".to_vec()),
        ("MACADDRTYPE".into(), b"poweroff\r".to_vec()),
    ]
}

/// The line the receiver prints last.
fn done_line(vm: &Vm) -> String {
    format!("alcove-guest: vmnet {} done", vm.hostname)
}

/// A run's result.
pub struct Outcome {
    pub run: crate::emu::Run,
    pub problems: Vec<String>,
    /// What was measured (import, creates to done, pool growth).
    pub summary: String,
}

/// Runs the case.
pub fn run(kernel: &Path, images: &Images, timeout: Duration) -> Result<Outcome> {
    run_expecting(kernel, images, timeout, &VMS)
}

/// As [`run`], judging the guests' lines against `expect` (VMS, or a
/// changed copy to show the judge fails).
pub fn run_expecting(kernel: &Path, images: &Images, timeout: Duration, expect: &[Vm; 2]) -> Result<Outcome> {
    let dir = crate::out_dir().join("vmadm-net");
    fs::create_dir_all(&dir)?;
    let (raw_bytes, file) = image_files(&dir, images)?;
    let source = crate::imgsource::start_with(vec![crate::imgsource::Extra::zvol(IMAGE, IMAGE_NAME, raw_bytes, file, "xz")])?;
    let mut system = BootSystem::named("vmnet")?;
    system.host_files.push((vmm_server::firmware::SEABIOS_FILE.into(), crate::fwboot::seabios()?));
    let conf = dir.join("netd.conf");
    fs::write(&conf, format!("{NETD_CONF}{}", crate::vm::admin_host_line()))?;
    system.host_files.push(("netd.conf".into(), conf));
    let iso = image::iso_of(kernel, "test-linux-vmadm-net", "", &system)?;
    let c = shell_machine(&dir, &iso, MEM_MIB, true)?;
    // The script waits for the receiver's line as the payload makes it.
    let t = capture_timed_script(c, &CASE.replace('/', "-"), Some(timeout), false, script(source.port, &done_line(&VMS[1])))?;
    drop(source);
    let (problems, summary) = judge(&t.run.serial, t.run.ending, expect, &t.lines);
    Ok(Outcome { run: t.run, problems, summary })
}

/// The QEMU command of a machine driven from its console shell: 2 CPUs
/// on one emulator thread, `mem_mib`, a blank pool drive of
/// [`POOL_BYTES`] (`dir/pool.img`, made afresh), with `admin_nic` the
/// machine's NIC on QEMU's user network (no forwards), the serial console
/// on stdio for the script.
pub(crate) fn shell_machine(dir: &Path, iso: &Path, mem_mib: u32, admin_nic: bool) -> Result<Command> {
    let pool = dir.join("pool.img");
    let _ = fs::remove_file(&pool);
    fs::File::create(&pool)?.set_len(POOL_BYTES)?;
    let mut extra = crate::zone::pool_drive_of(&pool);
    if admin_nic {
        extra.extend(crate::vm::admin_nic(&[]));
    }
    let q = Qemu { smp: 2, mem_mib, cpu: crate::vm::QEMU_CPU.into(), one_thread: true, extra, ..Qemu::default() };
    let mut c = q.command(iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    Ok(c)
}

/// Console lines that other writers put between the shell's lines: the
/// servers' logs, the VMMs' lines, the guests' (firmware, kernel, init).
fn other_writer(line: &str) -> bool {
    const OTHERS: [&str; 7] = ["[INFO ] ", "[WARN ] ", "[ERROR] ", "[DEBUG] ", "ALCOVE-BENCH ", "init: ready: ", "vm vmnet-"];
    OTHERS.iter().any(|m| line.contains(m))
}

/// The datasets of a `zfs list -Hp -t all -o name,used,origin` answer.
fn datasets(text: &str) -> Vec<(String, u64, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 3).then(|| Some((f[0].to_string(), f[1].parse().ok()?, f[2].to_string()))).flatten()
        })
        .collect()
}

/// `vmadm list`'s header.
const VMADM_HEADER: First = First::Header(&["UUID", "TYPE", "RAM", "STATE", "ALIAS"]);
/// `dladm show-vnic`'s header.
const VNIC_HEADER: First = First::Header(&["LINK", "OVER", "SPEED", "MACADDRESS", "MACADDRTYPE", "VID"]);

/// What is wrong with the sender's life cycle (stop, update of its RAM,
/// start, reboot): vmadm's messages; its guest powering off at the power
/// button (its line, then its VMM's `ended: poweroff`), at the stop and at
/// the reboot, and at nothing else; its VMM started with the payload's RAM
/// and then twice with the new; its guest done (metadata read, pings
/// answered through its VNIC) after each of its three boots; `vmadm list`
/// after the last one showing it running with the new RAM.
fn lifecycle_problems(text: &str, shell: &Transcript, problems: &mut Vec<String>) {
    let a = &VMS[0];
    for said in [
        format!("Successfully completed stop for VM {}", a.uuid),
        format!("Successfully updated VM {}", a.uuid),
        format!("Successfully started VM {}", a.uuid),
        format!("Successfully completed reboot for VM {}", a.uuid),
    ] {
        if !text.contains(&said) {
            problems.push(format!("vmadm did not say {said:?}"));
        }
    }
    // Only the sender is stopped or rebooted (the deletes halt).
    let pressed = text.lines().filter(|l| l.contains("alcove-guest: power button")).count();
    let powered_off = text.lines().filter(|l| l.contains(&format!("vm {}: ended: poweroff", a.alias))).count();
    if pressed != 2 || powered_off < 2 {
        problems.push(format!(
            "the sender's guest saw the power button {pressed} times and powered off {powered_off} times, not 2 and at least 2 (vmadm stop, vmadm reboot)"
        ));
    }
    let started = format!("vm {}: started: 1 vCPUs, ", a.alias);
    let rams: Vec<&str> = text.lines().filter_map(|l| Some(l[l.find(&started)? + started.len()..].trim_end())).collect();
    let (old, new) = (format!("{RAM_MIB} MiB"), format!("{NEW_RAM_MIB} MiB"));
    if rams != [old.as_str(), new.as_str(), new.as_str()] {
        problems.push(format!("{}'s VMM started with {rams:?}, not {old} and then twice {new} (create, start after the update, reboot)", a.alias));
    }
    let done = done_line(a);
    let boots = text.lines().filter(|l| l.contains(&done)).count();
    let pinged = text
        .lines()
        .filter(|l| l.contains(&format!("alcove-guest: vmnet {} ping: ", a.hostname)) && l.contains("3 packets transmitted, 3 packets received"))
        .count();
    if boots != 3 || pinged != 3 {
        problems.push(format!(
            "guest {} was done {boots} times with {pinged} rounds of pings answered, not 3 and 3 (its boot at create, after start, after reboot)",
            a.hostname
        ));
    }
    let list = shell.after_last(&done).and_then(|at| shell.answer_after(at, &VMADM_HEADER)).map(|a| a.text()).unwrap_or_default();
    let ram = NEW_RAM_MIB.to_string();
    let want = [a.uuid, "BHYV", ram.as_str(), "running", a.alias];
    if !list.lines().any(|l| l.split_whitespace().eq(want.iter().copied())) {
        problems.push(format!("`vmadm list` after the reboot does not show {} running with {NEW_RAM_MIB} MiB: {list:?}", a.alias));
    }
}

/// What is wrong with the run (empty: it passed), and a summary of what
/// it measured.
pub fn judge(serial: &str, ending: Ending, expect: &[Vm; 2], lines: &[(Duration, String)]) -> (Vec<String>, String) {
    let mut problems = Vec::new();
    let text = serial.replace("\r\n", "\n").replace('\r', "\n");
    let shell: Vec<&str> = text.lines().filter(|l| !other_writer(l)).collect();
    let prompt = format!("[root@{HOSTNAME} ~]# ");
    // Each answer is found by its content after a line that comes before
    // its command is typed, not by counting the echoes of the command:
    // another writer's line (a VMM's, a guest's) may swallow an echo.
    let shell = Transcript::new(shell, &prompt);
    let answer_after = |after: &str, first: &First| -> Option<String> { shell.answer_after(shell.after_last(after)?, first).map(|a| a.text()) };
    let (imported, done, deleted) = (format!("Imported image {IMAGE}"), done_line(&VMS[1]), format!("Successfully deleted VM {}", VMS[1].uuid));
    if !text.contains(&format!("Imported image {IMAGE} ({IMAGE_NAME}@1.0)")) {
        problems.push("`imgadm import` of the GRUB disk image did not say `Imported image`".into());
    }
    for vm in &VMS {
        if !text.contains(&format!("Successfully created VM {}", vm.uuid)) {
            problems.push(format!("`vmadm create` of {} ({}) did not succeed", vm.alias, vm.uuid));
        }
    }
    // Both running once the guests are done: the listing after the
    // receiver's last line. (The first `vmadm list` is typed while the
    // second VM starts: CI lost its echo in a line of another writer's.)
    let list = answer_after(&done, &VMADM_HEADER).unwrap_or_default();
    for vm in &VMS {
        let ram = RAM_MIB.to_string();
        let want = [vm.uuid, "BHYV", ram.as_str(), "running", vm.alias];
        if !list.lines().any(|l| l.split_whitespace().eq(want.iter().copied())) {
            problems.push(format!("`vmadm list` after the guests were done does not show {} running: {list:?}", vm.alias));
        }
    }
    // The guests' lines.
    let guest = |vm: &Vm, what: &str| -> Vec<String> {
        let p = format!("alcove-guest: vmnet {} {what}", vm.hostname);
        // (The first may follow a prompt on its line.)
        text.lines().filter_map(|l| l.find(&p).map(|i| l[i + p.len()..].to_string())).collect()
    };
    let mut hashes = Vec::new();
    for (vm, want) in VMS.iter().zip(expect) {
        let md = guest(vm, "mdata ");
        let resolvers = format!("[\"{RESOLVER}\"]");
        let mut values = vec![
            ("sdc:hostname", want.hostname),
            ("alcove-role", want.role),
            ("alcove-ip", want.ip),
            ("alcove-peer", want.peer),
            ("sdc:resolvers", resolvers.as_str()),
        ];
        if md.is_empty() {
            problems.push(format!(
                "no metadata lines from a guest named {:?} (the payload's hostname); lines with `vmnet`: {:?}",
                vm.hostname,
                text.lines().filter(|l| l.contains("alcove-guest: vmnet")).take(12).collect::<Vec<_>>()
            ));
            continue;
        }
        for (key, value) in values.drain(..) {
            let line = format!("{key}={value}");
            if !md.contains(&line) {
                problems.push(format!("guest {} did not read {key} = {value:?} over the metadata port; it printed {md:?}", vm.hostname));
            }
        }
        if let Some(p) = nics_problem(want, md.iter().find_map(|l| l.strip_prefix("sdc:nics="))) {
            problems.push(p);
        }
        let disk = guest(vm, "disk ");
        if !disk.iter().any(|l| l.starts_with(&format!("wrote {WRITTEN} at "))) {
            problems.push(format!("guest {} did not write its {WRITTEN} bytes to its disk: {disk:?}", vm.hostname));
        }
        let ping = guest(vm, "ping: ");
        if !ping.iter().any(|l| l.contains("3 packets transmitted, 3 packets received")) {
            problems.push(format!("guest {}'s 3 pings of {} were not all answered: {ping:?}", vm.hostname, vm.peer));
        }
        let what = if vm.role == "send" { "sent " } else { "got " };
        hashes.push(guest(vm, what).first().cloned());
        if guest(vm, "done").is_empty() {
            problems.push(format!("guest {} did not say it was done", vm.hostname));
        }
    }
    if hashes.len() == 2 {
        let want_len = BYTES.to_string();
        match (&hashes[0], &hashes[1]) {
            (Some(s), Some(g)) if s == g && s.split_whitespace().nth(1) == Some(want_len.as_str()) => {}
            (s, g) => problems.push(format!("the receiver did not get the sender's {BYTES} bytes: sent {s:?}, got {g:?}")),
        }
    }
    // The pool: each disk a clone of the image's snapshot; the datasets'
    // `used` grown by far less than the image.
    // (`zfs list -Hp` after the import, once the guests are done, after
    // the deletes.)
    let zfs = First::starts("zones/");
    let before = datasets(&answer_after(&imported, &zfs).unwrap_or_default());
    let running = datasets(&answer_after(&done, &zfs).unwrap_or_default());
    let after = datasets(&answer_after(&deleted, &zfs).unwrap_or_default());
    let image_used = before.iter().find(|d| d.0 == format!("zones/{IMAGE}")).map(|d| d.1);
    let snapshot = before.iter().find(|d| d.0.starts_with(&format!("zones/{IMAGE}@"))).map(|d| d.0.clone());
    let sum = |d: &[(String, u64, String)]| d.iter().map(|d| d.1).sum::<u64>();
    let mut grown = None;
    match (image_used, &snapshot) {
        (Some(image_used), Some(snap)) if image_used > 0 => {
            for vm in &VMS {
                let disk = format!("zones/{}-disk0", vm.uuid);
                match running.iter().find(|d| d.0 == disk) {
                    Some(d) if d.2 == *snap && d.1 >= WRITTEN => {}
                    other => problems.push(format!("{disk} is not a clone of {snap} holding the {WRITTEN} bytes its guest wrote: {other:?}")),
                }
            }
            let g = sum(&running).saturating_sub(sum(&before));
            grown = Some((g, image_used));
            if running.len() <= before.len() || g < 2 * WRITTEN || g >= image_used / 4 {
                problems.push(format!(
                    "the pool's datasets grew by {g} bytes with both VMs (image: {image_used} bytes): not the {} bytes the guests \
                     wrote and far less than two copies ({} datasets before, {} after)",
                    2 * WRITTEN,
                    before.len(),
                    running.len()
                ));
            }
        }
        _ => problems.push(format!("`zfs list -Hp` after the import shows no image volume and snapshot: {before:?}")),
    }
    let names = |d: &[(String, u64, String)]| d.iter().map(|d| d.0.clone()).collect::<Vec<_>>();
    if names(&after) != names(&before) {
        problems.push(format!("after `vmadm delete` of both the datasets are {:?}, not {:?}", names(&after), names(&before)));
    }
    // The VNICs: both on stub0 with their MACs while running, none after.
    let vnics = answer_after(&done, &VNIC_HEADER).unwrap_or_default();
    for vm in &VMS {
        if !vnics.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 6 && f[1] == "stub0" && f[3] == vm.dladm_mac
        }) {
            problems.push(format!("`dladm show-vnic` shows no VNIC {} on stub0 for {}: {vnics:?}", vm.dladm_mac, vm.alias));
        }
    }
    let left = answer_after(&deleted, &VNIC_HEADER).unwrap_or_default();
    if left.lines().count() != 1 || !left.starts_with("LINK") {
        problems.push(format!("`dladm show-vnic` after the deletes is not its header alone: {left:?}"));
    }
    for vm in &VMS {
        if !text.contains(&format!("Successfully deleted VM {}", vm.uuid)) {
            problems.push(format!("`vmadm delete` of {} did not succeed", vm.alias));
        }
    }
    lifecycle_problems(&text, &shell, &mut problems);
    if let Some(l) = text.lines().find(|l| l.starts_with("ALCOVE-FATAL")) {
        problems.push(format!("the kernel reported a fatal error: {l}"));
    }
    if ending != Ending::Qemu(qemu_status(EXIT_PASS)) {
        problems.push(format!("the machine did not end by `poweroff` ({ending:?})"));
    }
    // Figures: when the import, the creates and the receiver's last line came.
    let at = |needle: &str| lines.iter().find(|(_, l)| l.contains(needle)).map(|(t, _)| t.as_secs_f64());
    let figures = [
        ("import", at(&format!("imgadm import {IMAGE}")), at(&format!("Imported image {IMAGE}"))),
        ("creates to receiver done", at("# vmadm create <<< '"), at(&done_line(&VMS[1]))),
    ];
    let mut summary: Vec<String> = figures
        .iter()
        .filter_map(|&(what, a, b)| Some(format!("{what} {:.1} s", b? - a?)))
        .collect();
    if let Some((g, image)) = grown {
        summary.push(format!("pool used +{} KiB with both VMs (image {} KiB)", g / 1024, image / 1024));
    }
    (problems, summary.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ab12";

    /// A transcript as the console gives it: the shell's answers, the
    /// guests' lines, a VMM's line between them.
    fn transcript(recv_got: &str, bravo_vnic_left: bool) -> String {
        let p = format!("[root@{HOSTNAME} ~]# ");
        let [a, b] = VMS;
        let img = format!("zones/{IMAGE}\t40000000\t-\nzones/{IMAGE}@final\t0\t-\n");
        let vms = |used: u64| {
            format!(
                "zones/{a}-disk0\t{used}\tzones/{IMAGE}@final\nzones/{a}-vm\t65536\t-\nzones/{b}-disk0\t{used}\tzones/{IMAGE}@final\nzones/{b}-vm\t65536\t-\n",
                a = a.uuid,
                b = b.uuid
            )
        };
        let list = format!(
            "UUID                                  TYPE  RAM  STATE    ALIAS\n{}  BHYV  128  running  vmnet-a\n{}  BHYV  128  running  vmnet-b\n",
            a.uuid, b.uuid
        );
        let vnic = |vm: &Vm| format!("vnic0        stub0        0      {:<17} fixed             0\n", vm.dladm_mac);
        let header = "LINK         OVER         SPEED  MACADDRESS        MACADDRTYPE       VID\n";
        let mut guest = String::new();
        for (vm, last) in [(a, format!("sent {SHA} 1048576")), (b, recv_got.to_string())] {
            let n = vm.hostname;
            for (k, v) in [("sdc:hostname", vm.hostname), ("alcove-role", vm.role), ("alcove-ip", vm.ip), ("alcove-peer", vm.peer)] {
                guest.push_str(&format!("alcove-guest: vmnet {n} mdata {k}={v}\n"));
            }
            guest.push_str(&format!("alcove-guest: vmnet {n} mdata sdc:resolvers=[\"{RESOLVER}\"]\n"));
            let nics = serde_json::json!([{"interface": "net0", "mac": vm.mac, "nic_tag": "stub0", "primary": true, "ips": [vm.ip]}]);
            guest.push_str(&format!("alcove-guest: vmnet {n} mdata sdc:nics={nics}\n"));
            guest.push_str(&format!("alcove-guest: vmnet {n} disk wrote 262144 at 18612224\n"));
            guest.push_str(&format!("alcove-guest: vmnet {n} ping: 3 packets transmitted, 3 packets received, 0% packet loss\n"));
            guest.push_str(&format!("alcove-guest: vmnet {n} {last}\nalcove-guest: vmnet {n} done\n"));
        }
        let left = if bravo_vnic_left { vnic(&b) } else { String::new() };
        // The sender's life cycle: stop, update, start, reboot; done after
        // each boot.
        let list_new = format!(
            "UUID                                  TYPE  RAM  STATE    ALIAS\n{}  BHYV  {NEW_RAM_MIB}  running  vmnet-a\n{}  BHYV  128  running  vmnet-b\n",
            a.uuid, b.uuid
        );
        let again = format!(
            "alcove-guest: vmnet {n} ping: 3 packets transmitted, 3 packets received, 0% packet loss\nalcove-guest: vmnet {n} done\n",
            n = a.hostname
        );
        let u = a.uuid;
        let life = format!(
            "{p}vmadm stop {u}\nalcove-guest: power button\nvm vmnet-a: ended: poweroff\nSuccessfully completed stop for VM {u}\n{p}vmadm update {u} ram={NEW_RAM_MIB}\nSuccessfully updated VM {u}\n\
             {p}vmadm start {u}\nSuccessfully started VM {u}\nvm vmnet-a: started: 1 vCPUs, {NEW_RAM_MIB} MiB\n{p}vmadm list\n{list_new}{again}\
             {p}vmadm reboot {u}\nalcove-guest: power button\nvm vmnet-a: ended: poweroff\nSuccessfully completed reboot for VM {u}\nvm vmnet-a: started: 1 vCPUs, {NEW_RAM_MIB} MiB\n\
             {p}vmadm list\n{list_new}{again}{p}vmadm list\n{list_new}"
        );
        format!(
            "Alcove operator shell on {HOSTNAME}\n{p}imgadm import {IMAGE}\nImported image {IMAGE} ({IMAGE_NAME}@1.0)\n\
             {p}zfs list -Hp -t all -o name,used,origin\n{img}\
             {p}vmadm create <<< 'x'\nSuccessfully created VM {}\n{p}vmadm create <<< 'y'\nSuccessfully created VM {}\n\
             {p}vmadm list\n{list}vm vmnet-a: started: 1 vCPUs, 128 MiB\n{p}{guest}vmadm list\n{list}\
             {p}zfs list -Hp -t all -o name,used,origin\n{img}{}{p}dladm show-vnic\n{header}{}{}{life}\
             {p}vmadm delete {}\nSuccessfully deleted VM {}\n{p}vmadm delete {}\nSuccessfully deleted VM {}\n\
             {p}zfs list -Hp -t all -o name,used,origin\n{img}{p}dladm show-vnic\n{header}{left}{p}poweroff\n",
            a.uuid,
            b.uuid,
            vms(262144),
            vnic(&a),
            vnic(&b),
            a.uuid,
            a.uuid,
            b.uuid,
            b.uuid,
        )
    }

    fn judged(serial: &str, expect: &[Vm; 2]) -> Vec<String> {
        judge(serial, Ending::Qemu(qemu_status(EXIT_PASS)), expect, &[]).0
    }

    /// The transcript of a good run passes; a wrong expected hostname, a
    /// different hash, a VNIC left behind or a crash each fail it.
    #[test]
    fn the_judge_wants_metadata_pings_bytes_pool_and_cleanup() {
        let good = transcript(&format!("got {SHA} 1048576"), false);
        assert_eq!(judged(&good, &VMS), Vec::<String>::new());
        let mut wrong = VMS;
        wrong[1].hostname = "guest-charlie";
        let p = judged(&good, &wrong);
        assert!(p.len() == 1 && p[0].contains("sdc:hostname"), "{p:?}");
        let p = judged(&transcript("got ffff 1048576", false), &VMS);
        assert!(p.len() == 1 && p[0].contains("did not get the sender's"), "{p:?}");
        let p = judged(&transcript(&format!("got {SHA} 1048576"), true), &VMS);
        assert!(p.len() == 1 && p[0].contains("after the deletes"), "{p:?}");
        // Each guest's pings, and the sender's again after each boot.
        let p = judged(&good.replace("3 packets received", "2 packets received"), &VMS);
        assert_eq!(p.len(), 3, "{p:?}");
        let p = judged(&good.replace("\t262144\t", "\t30000000\t"), &VMS);
        assert!(p.len() == 1 && p[0].contains("grew by"), "{p:?}");
        // The first `vmadm list`'s echo lost in a VMM's line (as when the
        // second VM starts while it is typed) changes nothing; nor does
        // any other command's.
        let echo = format!("[root@{HOSTNAME} ~]# vmadm list\n");
        let lost = good.replacen(&echo, "vm vmnet-b: create stagesvmadm list\n", 1);
        assert_ne!(lost, good);
        assert_eq!(judged(&lost, &VMS), Vec::<String>::new());
        for cmd in ["vmadm list", "zfs list -Hp -t all -o name,used,origin", "dladm show-vnic"] {
            let echo = format!("[root@{HOSTNAME} ~]# {cmd}\n");
            for n in 0..good.matches(&echo).count() {
                let at = good.match_indices(&echo).nth(n).unwrap().0;
                let lost = format!("{}vm vmnet-a: ended: poweroff{cmd}\n{}", &good[..at], &good[at + echo.len()..]);
                assert_eq!(judged(&lost, &VMS), Vec::<String>::new(), "echo {n} of {cmd} lost");
            }
        }
        // ... and a wrong answer still fails with its echo lost: a VNIC
        // left after the deletes.
        let left = transcript(&format!("got {SHA} 1048576"), true);
        let at = left.rfind("[root@vmnettest ~]# dladm show-vnic\n").unwrap();
        let lost = format!("{}vm vmnet-b: ended{}", &left[..at], &left[at + "[root@vmnettest ~]# ".len()..]);
        let p = judged(&lost, &VMS);
        assert!(p.len() == 1 && p[0].contains("after the deletes"), "{p:?}");
        // A VM not running after the guests are done fails it.
        let b_stopped = format!("{}  BHYV  128  stopped  vmnet-b\n", VMS[1].uuid);
        // (The second listing: the one after the receiver's last line.)
        let late = good.match_indices("  BHYV  128  running  vmnet-b").nth(1).unwrap().0;
        let stopped = format!("{}{}{}", &good[..late - VMS[1].uuid.len()], b_stopped, &good[late + "  BHYV  128  running  vmnet-b\n".len()..]);
        let p = judged(&stopped, &VMS);
        assert!(p.len() == 1 && p[0].contains("vmnet-b running"), "{p:?}");
        // Another MAC in a guest's sdc:nics fails it.
        let p = judged(&good.replacen("\"mac\":\"02:08:20:7e:00:a1\"", "\"mac\":\"02:08:20:7e:00:ff\"", 1), &VMS);
        assert!(p.len() == 1 && p[0].contains("sdc:nics"), "{p:?}");
        let p = judge(&good, Ending::Timeout(600), &VMS, &[]).0;
        assert!(p.len() == 1 && p[0].contains("poweroff"), "{p:?}");
        // The sender's life cycle: its VMM not started with the new RAM,
        // a boot of its guest that never got done, a refused update.
        let last = good.rfind("started: 1 vCPUs, 192 MiB").unwrap();
        let p = judged(&format!("{}started: 1 vCPUs, 128 MiB{}", &good[..last], &good[last + 25..]), &VMS);
        assert!(p.len() == 1 && p[0].contains("VMM started with"), "{p:?}");
        let done_a = format!("alcove-guest: vmnet {} done\n", VMS[0].hostname);
        let last = good.rfind(&done_a).unwrap();
        let p = judged(&format!("{}{}", &good[..last], &good[last + done_a.len()..]), &VMS);
        assert!(!p.is_empty() && p.iter().any(|p| p.contains("was done 2 times")), "{p:?}");
        let p = judged(&good.replace("Successfully updated VM", "Unable to update VM"), &VMS);
        assert!(p.len() == 1 && p[0].contains("Successfully updated"), "{p:?}");
        // A stop that had to halt the guest (no power-button line).
        let p = judged(&good.replacen("alcove-guest: power button\n", "", 1), &VMS);
        assert!(p.len() == 1 && p[0].contains("power button 1 times"), "{p:?}");
    }

    #[test]
    fn payloads_are_smartos_payloads_cloning_the_image() {
        let v: serde_json::Value = serde_json::from_str(&payload(&VMS[0])).unwrap();
        assert_eq!(v["disks"][0]["image_uuid"], IMAGE);
        assert_eq!(v["bootrom"], "bios");
        assert_eq!(v["customer_metadata"]["alcove-role"], "send");
        assert!(!payload(&VMS[1]).contains('\''), "typed inside single quotes");
    }
}
