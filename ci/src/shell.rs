//! The `shell/console-qemu` system case: the operator shell
//! (`servers/shell`, manifest `initrd/manifests/shell.toml`) driven over the
//! serial console as an operator would: the harness types lines on QEMU's
//! `-serial stdio` and reads what comes back. It types `vmadm list`,
//! `help`, `sysinfo`, `svcs`, an unknown command, a line with an
//! unterminated quote, lines edited with backspace, ^U, ^W and the up
//! arrow, control characters, a 64 KiB line, then `vmadm list` again (the
//! shell still answers), `zpool status` and `zfs list` (storaged's new pool
//! on a blank drive), `vmadm create <<< PAYLOAD` (a VM booting the zone
//! case's test kernel), `vmadm list`, `zfs list`, a 1510-byte unknown
//! command typed while the VM runs (all of it must reach the shell: the
//! VM's VMM used to take typed input), `vmadm console` of an unknown VM,
//! `vmadm console` of the VM (its guest, `zone-guest-echo`, echoes what it
//! receives upper-cased): a line and a 2000-byte line typed to the guest,
//! `^]` to detach, `^]` again at the prompt (nothing to detach) before
//! `vmadm list`, `vmadm create-snapshot`, `zfs list -t snapshot` (the
//! disk's `@vmsnap-` snapshot), `vmadm rollback-snapshot` of the running
//! VM (halted, rolled back, started again: `vmadm list` shows it
//! running), `vmadm stop`, `vmadm console` of the stopped VM,
//! `vmadm delete-snapshot`, `vmadm delete`, `zpool scrub -s zones` with no scrub (refused),
//! `zpool scrub zones` and `zpool status` (the scrub in progress or done,
//! no errors), the zfs verbs on the VM's volume while it runs (`zfs
//! snapshot`, `zfs list -t snapshot`, `zfs destroy` refused for the
//! snapshot, `zfs set`/`zfs get` of a user property, `zfs rename` of the
//! volume refused (busy), its snapshot copied with `zfs send | zfs receive
//! -v`, the copy's snapshot renamed and cloned, the clone renamed, a second
//! snapshot sent incrementally onto the copy (`zfs receive -Fv`),
//! `zfs destroy -nvR` and `-R` of the copy, the snapshots destroyed),
//! `dladm show-link`, `show-vnic` and `show-etherstub` (netd's
//! etherstub `stub0` and the VM's VNIC on it), `dladm create-etherstub`,
//! `create-vnic`, `delete-vnic`, `delete-etherstub` (made, shown, refused
//! while in use or as duplicates, the VM's VNIC and stub0 refused,
//! deleted), `svcadm restart zone-server` (svcs: online, a new STIME),
//! `svcadm disable console` (refused: the manifest does not let the shell
//! stop it), `svcadm restart bogus`, `svcadm disable zone-server` (svcs:
//! disabled) and `enable` (vmadm answers again), `imgadm sources -a` and
//! `imgadm import` from the harness's image source ([`crate::imgsource`],
//! 10.0.2.2 over the machine's NIC on QEMU's user network: its progress
//! line drawn over itself as it downloads), `imgadm list`, and `poweroff`
//! (which ends the machine).

use crate::emu::{Qemu, capture_timed_script};
use crate::harness::{Answer, Ending, First, Transcript};
use crate::image::{self, BootSystem};
use crate::Result;
use kcore::testproto::{EXIT_PASS, qemu_status};
use std::path::Path;
use std::time::Duration;

pub const CASE: &str = "shell/console-qemu";
const HOSTNAME: &str = "shelltest";
const UUID: &str = "5e11c0de-0000-4000-8000-000000000001";
const CPUS: u32 = 2;
/// The VM created from the shell: the zone case's echoing test kernel.
const VM: &str = "5e11c0de-0000-4000-8000-0000000000a1";
const PAYLOAD: &str = r#"{"uuid": "5e11c0de-0000-4000-8000-0000000000a1", "brand": "bhyve", "alias": "web", "ram": 64, "vcpus": 1, "kernel": "/zone-guest-echo", "disks": [{"size": 16}], "nics": [{"nic_tag": "stub0", "mac": "02:08:20:5e:11:01", "ips": ["10.9.0.5/24"]}]}"#;
/// The VM's VNIC's MAC as dladm prints it.
const VNIC_MAC: &str = "2:8:20:5e:11:1";
/// A VM nobody created (`vmadm console` of it fails as vmadm's does).
const UNKNOWN_VM: &str = "5e11c0de-0000-4000-8000-0000000000ff";
/// The `q`s of the long line typed to the guest.
const LONG_QS: usize = 2000;
const MEM_MIB: u32 = 512;
/// The over-long line typed (a paste): 16 times the shell's limit. It
/// found the console's lost-interrupt bug (a byte arriving between the
/// last read and the IRQ ack left the rest of the input waiting for ever);
/// with input flow control every byte of it reaches the shell.
const FLOOD_BYTES: usize = 64 * 1024;
/// The word of a long unknown command typed while the VM runs: every byte
/// must reach the shell (a running VM's VMM used to take typed input).
fn long_word() -> String {
    format!("frobnicate{}", "y".repeat(1500))
}

/// What the case found.
pub type Outcome = crate::harness::Checks;

/// What is typed, step by step: each waits for a line of output that
/// contains its first part.
fn script(source_port: u16) -> Vec<(String, Vec<u8>)> {
    let mut flood = b"vmadm ".to_vec();
    flood.extend(std::iter::repeat_n(b'x', FLOOD_BYTES));
    flood.push(b'\r');
    vec![
        // The banner, then one line at a time after each answer.
        (format!("Alcove operator shell on {HOSTNAME}"), b"vmadm list\r".to_vec()),
        ("UUID".into(), b"help\r".to_vec()),
        ("poweroff".into(), b"frobnicate now\r".to_vec()),
        ("command not found".into(), b"vmadm get 'oops\r".to_vec()),
        ("syntax error".into(), b"sysinfo\r".to_vec()),
        ("Hostname".into(), b"svcs\r".to_vec()),
        // Backspace, then ^U, then ^W, then the up arrow: each line, as
        // edited, is `svcs`.
        ("svc:/alcove/shell".into(), b"svcx\x7fs\r".to_vec()),
        ("svc:/alcove/shell".into(), b"vmadm delete everything\x15svcs\r".to_vec()),
        ("svc:/alcove/shell".into(), b"svcs junk  \x17\r".to_vec()),
        ("svc:/alcove/shell".into(), b"sysinfo\r\x1b[A\x1b[A\r".to_vec()),
        // Control characters are dropped: `v\x01m\x02a...` is vmadm.
        ("svc:/alcove/shell".into(), b"\x01v\x02m\x04a\x05d\x06m \x0el\x0fi\x10s\x11t\r".to_vec()),
        ("UUID".into(), flood),
        ("longer than 4096".into(), b"vmadm list\r".to_vec()),
        ("UUID".into(), b"zpool status\r".to_vec()),
        ("errors:".into(), b"zfs list\r".to_vec()),
        ("no datasets available".into(), format!("vmadm create <<< '{PAYLOAD}'\r").into_bytes()),
        ("Successfully created VM".into(), b"vmadm list\r".to_vec()),
        ("BHYV".into(), b"zfs list\r".to_vec()),
        // The VM's volume: a snapshot, listed; its destroy refused while
        // the snapshot is there; a user property set and read; the
        // snapshot destroyed.
        // (Commands that print nothing are typed together with one that
        // does: its output is the cue; the shell runs them in turn.)
        ("-disk0".into(), format!("zfs snapshot zones/{VM}-disk0@s1\rzfs list -t snapshot\r").into_bytes()),
        ("@s1 ".into(), format!("zfs destroy zones/{VM}-disk0\r").into_bytes()),
        (
            "volume has children".into(),
            format!("zfs set alcove:note=hi zones/{VM}-disk0\rzfs get -H alcove:note,volsize zones/{VM}-disk0\r").into_bytes(),
        ),
        // The running VM's volume cannot be renamed; its snapshot is
        // copied with `zfs send | zfs receive`, the copy's snapshot renamed
        // and cloned, the clone renamed, listed, then `destroy -R` (after
        // `-nv` shows what it would take) removes the copy and its clone.
        ("\tvolsize\t".into(), format!("zfs rename zones/{VM}-disk0 zones/moved\r").into_bytes()),
        ("dataset is busy".into(), format!("zfs send zones/{VM}-disk0@s1 | zfs receive -v zones/copy\r").into_bytes()),
        (
            "stream in".into(),
            b"zfs rename zones/copy@s1 zones/copy@base\rzfs clone zones/copy@base zones/copy2\rzfs rename zones/copy2 zones/clone\rzfs list -H -t all -o name,origin\r".to_vec(),
        ),
        // An incremental stream onto the copy (its base renamed: found by
        // guid), `-F` rolling the copy back to it first.
        (
            "\tzones/copy@base".into(),
            format!("zfs snapshot zones/{VM}-disk0@s2\rzfs send -i @s1 zones/{VM}-disk0@s2 | zfs receive -Fv zones/copy\r").into_bytes(),
        ),
        ("stream in".into(), b"zfs destroy -nvR zones/copy\r".to_vec()),
        (
            "would destroy zones/copy@base".into(),
            format!("zfs destroy -R zones/copy\rzfs list -H -t all -o name\rzfs destroy zones/{VM}-disk0@s1\rzfs destroy zones/{VM}-disk0@s2\rzfs list -t snapshot\r").into_bytes(),
        ),
        // netd's links: the etherstub and the VM's VNIC on it.
        ("no datasets available".into(), b"dladm show-link\r".to_vec()),
        ("BRIDGE".into(), b"dladm show-vnic\r".to_vec()),
        ("MACADDRTYPE".into(), b"dladm show-etherstub\r".to_vec()),
        // Links made and deleted at run time: an etherstub and a VNIC
        // over it, shown; deleting the etherstub in use, the VM's VNIC
        // (vnic0) and stub0 (the VM and the host on it) refused; making
        // them again refused; then deleted.
        ("LINK".into(), b"dladm create-etherstub stub5\rdladm create-vnic -l stub5 -v 7 op0\rdladm show-vnic op0\r".to_vec()),
        (
            "MACADDRTYPE".into(),
            b"dladm delete-etherstub stub5\rdladm delete-vnic vnic0\rdladm delete-etherstub stub0\rdladm create-etherstub stub5\r\
dladm create-vnic -l stub5 op0\rdladm delete-vnic op0\rdladm delete-etherstub stub5\rdladm show-etherstub\r"
                .to_vec(),
        ),
        ("LINK".into(), format!("{}\r", long_word()).into_bytes()),
        ("command not found".into(), format!("vmadm console {UNKNOWN_VM}\r").into_bytes()),
        ("Unable to connect".into(), format!("vmadm console {VM}\r").into_bytes()),
        // Attached: typed lines go to the guest, which echoes them
        // upper-cased; then ^] detaches.
        ("[Connected to console".into(), b"hello guest\r".to_vec()),
        ("HELLO GUEST".into(), format!("long {} end\r", "q".repeat(LONG_QS)).into_bytes()),
        ("Q END".into(), b"\x1d".to_vec()),
        // ^] with nothing attached is dropped like any control character.
        ("[Connection to console".into(), b"\x1dvmadm list\r".to_vec()),
        // The running VM's snapshot verbs: its rollback halts it, rolls
        // its disk back and starts it again.
        ("UUID".into(), format!("vmadm create-snapshot {VM} before\r").into_bytes()),
        ("Created snapshot before".into(), b"zfs list -H -t snapshot -o name\r".to_vec()),
        ("@vmsnap-before".into(), format!("vmadm rollback-snapshot {VM} before\r").into_bytes()),
        ("Rolled back VM".into(), b"vmadm list\r".to_vec()),
        ("UUID".into(), format!("vmadm stop {VM}\r").into_bytes()),
        ("Successfully completed stop".into(), format!("vmadm console {VM}\r").into_bytes()),
        ("Unable to connect".into(), format!("vmadm delete-snapshot {VM} before\r").into_bytes()),
        ("Deleted snapshot before".into(), format!("vmadm delete {VM}\r").into_bytes()),
        ("Successfully deleted VM".into(), b"zpool scrub -s zones\r".to_vec()),
        // `zpool scrub` prints nothing: its echo is the cue.
        ("cannot cancel scrubbing zones".into(), b"zpool scrub zones\r".to_vec()),
        ("~]# zpool scrub zones".into(), b"zpool status\r".to_vec()),
        // svcadm: zone-server restarted (a new STIME), a refusal (the
        // console is not the shell's to stop), an unknown service,
        // zone-server disabled (svcs shows it) and enabled (vmadm answers).
        (" scan: scrub".into(), b"svcadm restart zone-server\rsvcs\r".to_vec()),
        ("svc:/alcove/shell".into(), b"svcadm disable console\r".to_vec()),
        ("Permission denied".into(), b"svcadm restart bogus\r".to_vec()),
        ("doesn't match any instances".into(), b"svcadm disable zone-server\rsvcs\r".to_vec()),
        ("svc:/alcove/shell".into(), b"svcadm enable zone-server\rvmadm list\r".to_vec()),
        // imgadm from the harness's image source (10.0.2.2 through QEMU's
        // user network and netd's sockets): the progress line drawn over
        // itself as the download goes, then the image listed.
        ("UUID".into(), format!("imgadm sources -a {}\r", source_url(source_port)).into_bytes()),
        ("Added image source".into(), format!("imgadm import {}\r", crate::imgsource::GOOD).into_bytes()),
        ("Imported image".into(), b"imgadm list\r".to_vec()),
        ("imported-disk".into(), b"poweroff\r".to_vec()),
    ]
}

/// The harness's image source as the machine reaches it.
fn source_url(port: u16) -> String {
    format!("http://10.0.2.2:{port}")
}

/// netd's configuration: the zone case's etherstub `stub0` (the shell's VM
/// gets its VNIC there) and the machine's NIC on `admin`, with the host's
/// address there (QEMU's user network: the image source at 10.0.2.2).
const NETD_CONF: &str = "# The shell case (ci/src/shell.rs)\netherstub stub0\nnic_tag admin\n";

/// Runs the case.
pub fn run(kernel: &Path, timeout: Duration) -> Result<Outcome> {
    let source = crate::imgsource::start()?;
    let mut system = BootSystem::named("shell")?;
    system.host_files.extend(crate::zone::guests()?);
    let dir = crate::out_dir().join("shell");
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("netd.conf");
    std::fs::write(&conf, format!("{NETD_CONF}{}", crate::vm::admin_host_line()))?;
    system.host_files.push(("netd.conf".into(), conf));
    let iso = image::iso_of(kernel, "test-shell-console", "", &system)?;
    // storaged makes its pool `zones` on a blank drive (as the zone case's);
    // the NIC is on QEMU's user network.
    let mut extra = crate::zone::pool_drive();
    extra.extend(crate::vm::admin_nic(&[]));
    let q = Qemu { smp: CPUS, mem_mib: MEM_MIB, one_thread: true, extra, ..Qemu::default() };
    let mut c = q.command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    let script = script(source.port);
    let typed = typed_lines(&script);
    let t = capture_timed_script(c, &CASE.replace('/', "-"), Some(timeout), false, script)?;
    drop(source);
    let mut o = Outcome::new(CASE, t.run.elapsed, t.run.log.clone());
    judge(&t.run.serial, t.run.ending, &typed, &mut o);
    Ok(o)
}

/// `text` without the servers' log lines and the VM's console lines (its
/// VMM's and its guest's), which the console writes whole but may put
/// between a prompt and the echo, or in the middle of the echo, of a line
/// being typed.
fn strip_logs(text: &str) -> String {
    // init's ready line too: its ready round runs beside the servers and
    // may end after the shell's first prompt. (The judge finds answers by
    // their content ([`steps`]), but another writer's line left here is
    // taken for part of the answer it follows.)
    const OTHERS: [&str; 9] = [
        "[INFO ] ",
        "[WARN ] ",
        "[ERROR] ",
        "[DEBUG] ",
        "vm web: ",
        "ALCOVE-BENCH ",
        "init: ready: ",
        // init's when it starts the VM's VMM.
        "init: start stages ",
        crate::zone::GUEST_HALT_LINE,
    ];
    // Line by line: what comes before another writer's line stays, joined
    // to the line after it.
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match OTHERS.iter().filter_map(|m| line.find(m)).min() {
            Some(i) => out.push_str(&line[..i]),
            None => out.push_str(line),
        }
    }
    out
}

/// What is wrong with `imgadm import`'s transcript in the raw serial
/// output (CR LF line ends, lone CRs kept): the `Importing` line, then
/// progress lines each drawn over the last with a lone CR (at least three,
/// percentages rising, the last 100%) on one line, then `Imported image`;
/// no warning that the download buffer could not be shared with netd;
/// and `imgadm list` showing the image.
fn import_problems(raw: &str) -> Vec<String> {
    let text = strip_logs(&raw.replace("\r\n", "\n"));
    let uuid = crate::imgsource::GOOD;
    let mut problems = Vec::new();
    let Some(start) = text.find(&format!("Importing {uuid} (imported-disk@1.0) from \"http://10.0.2.2:")) else {
        return vec![format!("`imgadm import` printed no `Importing {uuid}` line")];
    };
    let rest = &text[start..];
    let Some(end) = rest.find(&format!("\nImported image {uuid} (imported-disk@1.0)\n")) else {
        return vec![format!("`imgadm import` did not end with `Imported image {uuid}`: {:?}", &rest[..rest.len().min(2000)])];
    };
    let mut lines = rest[..end].split('\n');
    let _importing = lines.next();
    let progress = lines.next().unwrap_or_default();
    if lines.next().is_some() {
        problems.push(format!("the progress was not drawn on one line: {:?}", &rest[..end]));
    }
    let drawn: Vec<&str> = progress.split('\r').filter(|p| !p.is_empty()).map(str::trim_end).collect();
    let percents: Vec<u32> = drawn
        .iter()
        .filter_map(|d| d.strip_prefix("Downloading image 1a9e0000 ["))
        .filter_map(|d| d.split(']').nth(1))
        .filter_map(|d| d.trim_start().split('%').next()?.parse().ok())
        .collect();
    if percents.len() != drawn.len() || drawn.len() < 3 || !progress.starts_with('\r') {
        problems.push(format!("fewer than three progress lines drawn over each other with CR: {progress:?}"));
    }
    if !percents.windows(2).all(|w| w[0] < w[1]) || percents.last() != Some(&100) {
        problems.push(format!("the progress did not rise to 100%: {percents:?}"));
    }
    // The download came through the buffer zone-server shares with netd
    // (`socket.share_buffer`, `recv_buffered`), not 2 KiB messages.
    if raw.contains("no buffer shared with netd") {
        problems.push("zone-server could not share its download buffer with netd".into());
    }
    let listed = text[start + end..].lines().any(|l| l.split_whitespace().take(3).eq([uuid, "imported-disk", "1.0"]));
    if !listed {
        problems.push("`imgadm list` after the import does not list the image".into());
    }
    problems
}

const VMADM_HEADER: First = First::Header(&["UUID", "TYPE", "RAM", "STATE", "ALIAS"]);
const SVCS_HEADER: First = First::Header(&["STATE", "STIME", "RESTARTS", "INSTANCES", "FMRI"]);
const VNIC_HEADER: First = First::Header(&["LINK", "OVER", "SPEED", "MACADDRESS", "MACADDRTYPE", "VID"]);

/// Each line [`script`] types at the shell, in order, as the judge names
/// it, with what the first line of its answer looks like (`None`: it
/// prints nothing, or it goes to the attached guest): how the judge finds
/// each answer by its content ([`Transcript::in_order`]), not by counting
/// the echoes of its command, which another writer's line (a VMM's, the
/// guest's) may swallow. A shape says what kind of answer comes (a
/// table's header, a refusal's first words), not the answer the judge
/// wants, so that a wrong answer is found and judged.
fn steps() -> Vec<(String, Option<First>)> {
    let disk = format!("zones/{VM}-disk0");
    let vmadm = || Some(VMADM_HEADER);
    let svcs = || Some(SVCS_HEADER);
    let zfs_list = || Some(First::AnyOf(vec![First::Header(&["NAME", "USED", "AVAIL", "REFER", "MOUNTPOINT"]), First::is("no datasets available")]));
    let starts = |p: &str| Some(First::starts(p));
    let quiet = || None;
    let steps = [
        ("vmadm list".into(), vmadm()),
        ("help".into(), starts("Alcove operator shell.")),
        ("frobnicate now".into(), starts("shell: ")),
        ("vmadm get 'oops".into(), starts("shell: ")),
        ("sysinfo".into(), Some(First::is("{"))),
        ("svcs".into(), svcs()),
        // The edited lines, each `svcs` as edited.
        ("svcs (backspace)".into(), svcs()),
        (ERASED.into(), svcs()),
        ("svcs (^W)".into(), svcs()),
        ("sysinfo".into(), Some(First::is("{"))),
        ("svcs (up arrow)".into(), svcs()),
        // Typed among control characters.
        ("vmadm list".into(), vmadm()),
        (format!("vmadm {}", "x".repeat(FLOOD_BYTES)), starts("shell: ")),
        ("vmadm list".into(), vmadm()),
        ("zpool status".into(), starts(" pool: ")),
        ("zfs list".into(), zfs_list()),
        (format!("vmadm create <<< '{PAYLOAD}'"), starts("Successfully created VM")),
        ("vmadm list".into(), vmadm()),
        ("zfs list".into(), zfs_list()),
        (format!("zfs snapshot {disk}@s1"), quiet()),
        ("zfs list -t snapshot".into(), zfs_list()),
        (format!("zfs destroy {disk}"), starts("cannot destroy")),
        (format!("zfs set alcove:note=hi {disk}"), quiet()),
        (format!("zfs get -H alcove:note,volsize {disk}"), starts(&format!("{disk}\t"))),
        (format!("zfs rename {disk} zones/moved"), starts("cannot rename")),
        (format!("zfs send {disk}@s1 | zfs receive -v zones/copy"), starts("receiving ")),
        ("zfs rename zones/copy@s1 zones/copy@base".into(), quiet()),
        ("zfs clone zones/copy@base zones/copy2".into(), quiet()),
        ("zfs rename zones/copy2 zones/clone".into(), quiet()),
        ("zfs list -H -t all -o name,origin".into(), starts("zones/")),
        (format!("zfs snapshot {disk}@s2"), quiet()),
        (format!("zfs send -i @s1 {disk}@s2 | zfs receive -Fv zones/copy"), starts("receiving ")),
        ("zfs destroy -nvR zones/copy".into(), starts("would destroy ")),
        ("zfs destroy -R zones/copy".into(), quiet()),
        ("zfs list -H -t all -o name".into(), starts("zones/")),
        (format!("zfs destroy {disk}@s1"), quiet()),
        (format!("zfs destroy {disk}@s2"), quiet()),
        ("zfs list -t snapshot".into(), zfs_list()),
        ("dladm show-link".into(), Some(First::Header(&["LINK", "CLASS", "MTU", "STATE", "BRIDGE", "OVER"]))),
        ("dladm show-vnic".into(), Some(VNIC_HEADER)),
        ("dladm show-etherstub".into(), Some(First::Header(&["LINK"]))),
        ("dladm create-etherstub stub5".into(), quiet()),
        ("dladm create-vnic -l stub5 -v 7 op0".into(), quiet()),
        ("dladm show-vnic op0".into(), Some(VNIC_HEADER)),
        ("dladm delete-etherstub stub5".into(), starts("dladm: ")),
        ("dladm delete-vnic vnic0".into(), starts("dladm: ")),
        ("dladm delete-etherstub stub0".into(), starts("dladm: ")),
        ("dladm create-etherstub stub5".into(), starts("dladm: ")),
        ("dladm create-vnic -l stub5 op0".into(), starts("dladm: ")),
        ("dladm delete-vnic op0".into(), quiet()),
        ("dladm delete-etherstub stub5".into(), quiet()),
        ("dladm show-etherstub".into(), Some(First::Header(&["LINK"]))),
        (long_word(), starts("shell: ")),
        (format!("vmadm console {UNKNOWN_VM}"), starts("Unable to connect")),
        (format!("vmadm console {VM}"), starts("[Connected to console")),
        // To the guest, which echoes them in the console's answer.
        ("hello guest".into(), quiet()),
        (format!("long {} end", "q".repeat(LONG_QS)), quiet()),
        // After ^] (twice).
        ("vmadm list".into(), vmadm()),
        (format!("vmadm create-snapshot {VM} before"), starts("Created snapshot")),
        ("zfs list -H -t snapshot -o name".into(), starts("zones/")),
        (format!("vmadm rollback-snapshot {VM} before"), starts("Rolled back VM")),
        ("vmadm list".into(), vmadm()),
        (format!("vmadm stop {VM}"), starts("Successfully completed stop")),
        (format!("vmadm console {VM}"), starts("Unable to connect")),
        (format!("vmadm delete-snapshot {VM} before"), starts("Deleted snapshot")),
        (format!("vmadm delete {VM}"), starts("Successfully deleted VM")),
        ("zpool scrub -s zones".into(), starts("cannot ")),
        ("zpool scrub zones".into(), quiet()),
        ("zpool status".into(), starts(" pool: ")),
        ("svcadm restart zone-server".into(), quiet()),
        ("svcs".into(), svcs()),
        ("svcadm disable console".into(), starts("svcadm: ")),
        ("svcadm restart bogus".into(), starts("svcadm: ")),
        ("svcadm disable zone-server".into(), quiet()),
        ("svcs".into(), svcs()),
        ("svcadm enable zone-server".into(), quiet()),
        ("vmadm list".into(), vmadm()),
        // (Named without the image source's port.)
        ("imgadm sources -a".into(), starts("Added image source")),
        (format!("imgadm import {}", crate::imgsource::GOOD), starts("Importing ")),
        ("imgadm list".into(), Some(First::Header(&["UUID", "NAME", "VERSION", "OS", "TYPE", "PUB"]))),
        ("poweroff".into(), quiet()),
    ];
    steps.into()
}

/// The line killed with ^U, then `svcs` typed on it.
const ERASED: &str = "svcs (^U after vmadm delete everything)";

/// The lines [`script`] types (split at CR; the bytes typed without one
/// join the next line), control characters left out: as the shell echoes
/// them, but for the edited lines.
fn typed_lines(script: &[(String, Vec<u8>)]) -> Vec<String> {
    let all = script.iter().map(|(_, typed)| typed.as_slice()).collect::<Vec<_>>().concat();
    let mut lines: Vec<String> =
        all.split(|&b| b == b'\r').map(|l| String::from_utf8_lossy(l).chars().filter(|c| !c.is_control()).collect()).collect();
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// Judges the run: `typed`, the lines [`script`] typed.
fn judge(serial: &str, ending: Ending, typed: &[String], o: &mut Outcome) {
    for p in import_problems(serial) {
        o.problems.push(p);
    }
    o.checks += 1;
    let mut check = |ok: bool, what: String| {
        o.checks += 1;
        if !ok {
            o.problems.push(what);
        }
    };
    let serial = &strip_logs(&serial.replace("\r\n", "\n").replace('\r', ""));
    // The shell's answer to the `n`th (from 0) of the [`steps`] named
    // `cmd`, found by its content: the text after its echo up to the next
    // prompt, as the echo would give it (lines end in \n here; on the
    // wire, \r\n). For a command that prints nothing, what came between
    // the answers before and after it.
    let prompt = format!("[root@{HOSTNAME} ~]# ");
    let steps = steps();
    let shell = Transcript::new(serial.lines().collect(), &prompt).with_typed(typed.iter().cloned());
    let from = shell.after_first(&format!("Alcove operator shell on {HOSTNAME}")).unwrap_or(0);
    let found = shell.in_order(from, &steps.iter().map(|(_, first)| first.clone()).collect::<Vec<_>>());
    let answer = |cmd: &str, n: usize| -> Option<String> {
        steps.iter().zip(&found).filter(|((name, _), _)| name == cmd).nth(n)?.1.as_ref().map(Answer::text)
    };
    let list = answer("vmadm list", 0);
    let header_alone = |t: &str| {
        t.lines().count() == 1 && t.split_whitespace().eq(["UUID", "TYPE", "RAM", "STATE", "ALIAS"])
    };
    check(
        list.as_deref().is_some_and(header_alone),
        format!("`vmadm list` with no VMs printed {list:?}, not vmadm's header alone"),
    );
    let help = answer("help", 0).unwrap_or_default();
    check(help.contains("vmadm ARGS") && help.contains("sysinfo"), format!("`help` printed {help:?}"));
    let unknown = answer("frobnicate now", 0);
    check(
        unknown.as_deref() == Some("shell: frobnicate: command not found (try help)\n"),
        format!("an unknown command got {unknown:?}"),
    );
    let quote = answer("vmadm get 'oops", 0);
    check(
        quote.as_deref() == Some("shell: syntax error: unterminated single quote\n"),
        format!("a bad quote got {quote:?}"),
    );
    match answer("sysinfo", 0).map(|t| serde_json::from_str::<serde_json::Value>(&t)) {
        Some(Ok(v)) => {
            check(v["Hostname"] == HOSTNAME, format!("sysinfo Hostname {}", v["Hostname"]));
            check(v["UUID"] == UUID, format!("sysinfo UUID {}", v["UUID"]));
            check(v["CPU Total Cores"] == CPUS, format!("sysinfo CPU Total Cores {} on a {CPUS}-CPU machine", v["CPU Total Cores"]));
            let mib: u32 = v["MiB of Memory"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            // What the kernel left free for init: the machine's memory less
            // the firmware's, the kernel's and the boot archive's.
            check(
                (MEM_MIB - 96..MEM_MIB).contains(&mib),
                format!("sysinfo MiB of Memory {} on a {MEM_MIB} MiB machine", v["MiB of Memory"]),
            );
            check(v["Live Image"].as_str().is_some_and(|s| s.starts_with("alcove-")), format!("sysinfo Live Image {}", v["Live Image"]));
            check(v["Boot Time"].as_str().is_some_and(|s| s.parse::<u64>().is_ok()), format!("sysinfo Boot Time {}", v["Boot Time"]));
        }
        other => check(false, format!("`sysinfo` printed no JSON: {other:?}")),
    }
    let svcs = answer("svcs", 0).unwrap_or_default();
    for (state, name) in [("online", "console"), ("online", "zone-server"), ("online", "shell"), ("on-demand", "vmm-server")] {
        check(
            svcs.lines().any(|l| l.starts_with(state) && l.ends_with(&format!("svc:/alcove/{name}:default"))),
            format!("`svcs` does not show {name} {state}: {svcs:?}"),
        );
    }
    // The edited lines ran `svcs` (the ^U'd delete never reached vmadm).
    let runs = serial.matches("svc:/alcove/shell:default").count();
    check(runs == 7, format!("`svcs` answered {runs} times, not 7 (one typed, three edited, one recalled, two after svcadm)"));
    // Each edited line's answer is `svcs`'s table alone.
    let svcs_alone = |t: &str| {
        let mut lines = t.lines();
        lines.next().is_some_and(|h| SVCS_HEADER.accepts(h)) && lines.all(|l| l.contains(" svc:/alcove/"))
    };
    for (step, what) in [("svcs (backspace)", "edited with backspace"), ("svcs (^W)", "edited with ^W"), ("svcs (up arrow)", "recalled with the up arrow")] {
        let got = answer(step, 0);
        check(got.as_deref().is_some_and(svcs_alone), format!("the line {what} did not run `svcs` alone: it got {got:?}"));
    }
    let erased = answer(ERASED, 0);
    check(
        erased.as_deref().is_some_and(svcs_alone),
        format!("the line killed with ^U ran: the line typed on it got {erased:?}, not `svcs`'s answer alone"),
    );
    // After the control characters, `vmadm list` again: header alone.
    let lists = serial.lines().filter(|l| header_alone(l)).count();
    check(lists == 7, format!("vmadm's header came {lists} times, not 7 (list; list typed among control characters; list after the flood; list of the VM; list after the console; list after the rollback; list after svcadm enable)"));
    // Every byte of the paste reached the shell: the console takes from
    // the UART only what it has room for (it used to keep 4 KiB and drop
    // the oldest).
    let refused = format!("shell: the line is {} bytes, longer than 4096: ignored", FLOOD_BYTES + 6);
    check(
        serial.lines().any(|l| l == refused),
        format!(
            "the over-long line was not refused whole ({:?})",
            serial.lines().find(|l| l.starts_with("shell: the line is"))
        ),
    );
    let zpool = answer("zpool status", 0).unwrap_or_default();
    check(
        zpool.starts_with(" pool: zones\nstate: ONLINE\n")
            && zpool.contains("\n scan: none requested\n")
            && zpool.lines().any(|l| l.trim_start().starts_with("virtio-blk") && l.contains("ONLINE"))
            && zpool.ends_with("errors: No known data errors\n"),
        format!("`zpool status` printed {zpool:?}"),
    );
    // The background scrub, started from the shell after the VM was
    // deleted (the pool's few blocks: it may be done by `zpool status`).
    let stop = answer("zpool scrub -s zones", 0);
    check(
        stop.as_deref() == Some("cannot cancel scrubbing zones: pool: no scrub is in progress\n"),
        format!("`zpool scrub -s` with no scrub printed {stop:?}"),
    );
    let start = answer("zpool scrub zones", 0);
    check(start.as_deref() == Some(""), format!("`zpool scrub zones` printed {start:?}, expected nothing"));
    let after = answer("zpool status", 1).unwrap_or_default();
    let scan_ok = after.contains("\n scan: scrub in progress since ")
        || (after.contains("\n scan: scrub repaired 0B in ") && after.contains(" with 0 errors on "));
    check(
        scan_ok && after.ends_with("errors: No known data errors\n"),
        format!("`zpool status` after `zpool scrub` printed {after:?}"),
    );
    let zfs = answer("zfs list", 0);
    check(zfs.as_deref() == Some("no datasets available\n"), format!("`zfs list` on a new pool printed {zfs:?}"));
    // A VM made from a payload given with <<<, running, its volumes on
    // the pool, then deleted.
    let create = answer(&format!("vmadm create <<< '{PAYLOAD}'"), 0).unwrap_or_default();
    check(create.contains(&format!("Successfully created VM {VM}")), format!("`vmadm create` printed {create:?}"));
    let list = answer("vmadm list", 3).unwrap_or_default();
    check(
        list.lines().any(|l| l.split_whitespace().eq([VM, "BHYV", "64", "running", "web"])),
        format!("`vmadm list` does not show the VM running: {list:?}"),
    );
    let zfs = answer("zfs list", 1).unwrap_or_default();
    let disk = format!("zones/{VM}-disk0");
    check(
        zfs.lines().next().is_some_and(|h| h.split_whitespace().eq(["NAME", "USED", "AVAIL", "REFER", "MOUNTPOINT"]))
            && zfs.lines().skip(1).all(|l| l.starts_with("zones/"))
            && zfs.lines().any(|l| l.starts_with(&format!("{disk} ")) && l.ends_with("  -")),
        format!("`zfs list` does not show the VM's volume: {zfs:?}"),
    );
    // The zfs verbs on the running VM's volume.
    let snap = answer(&format!("zfs snapshot {disk}@s1"), 0);
    check(snap.as_deref() == Some(""), format!("`zfs snapshot` printed {snap:?}, expected nothing"));
    let snaps = answer("zfs list -t snapshot", 0).unwrap_or_default();
    check(
        snaps.lines().count() == 2 && snaps.lines().nth(1).is_some_and(|l| l.starts_with(&format!("{disk}@s1 "))),
        format!("`zfs list -t snapshot` printed {snaps:?}"),
    );
    let refused = answer(&format!("zfs destroy {disk}"), 0);
    check(
        refused.as_deref()
            == Some(&format!("cannot destroy '{disk}': volume has children\nuse '-r' to destroy the following datasets:\n{disk}@s1\n")),
        format!("`zfs destroy` of a volume with a snapshot printed {refused:?}"),
    );
    let set = answer(&format!("zfs set alcove:note=hi {disk}"), 0);
    check(set.as_deref() == Some(""), format!("`zfs set` printed {set:?}"));
    let got = answer(&format!("zfs get -H alcove:note,volsize {disk}"), 0);
    check(
        got.as_deref() == Some(&format!("{disk}\talcove:note\thi\tlocal\n{disk}\tvolsize\t16M\tlocal\n")),
        format!("`zfs get` printed {got:?}"),
    );
    // rename, send | receive, clone, destroy -R.
    let busy = answer(&format!("zfs rename {disk} zones/moved"), 0);
    check(
        busy.as_deref() == Some("cannot rename to 'zones/moved': dataset is busy\n"),
        format!("`zfs rename` of the running VM's volume printed {busy:?}"),
    );
    let copied = answer(&format!("zfs send {disk}@s1 | zfs receive -v zones/copy"), 0).unwrap_or_default();
    check(
        copied.starts_with(&format!("receiving full stream of {disk}@s1 into zones/copy@s1\nreceived "))
            && copied.lines().count() == 2
            && copied.contains(" stream in "),
        format!("`zfs send | zfs receive -v` printed {copied:?}"),
    );
    for quiet in ["zfs rename zones/copy@s1 zones/copy@base", "zfs clone zones/copy@base zones/copy2", "zfs rename zones/copy2 zones/clone", "zfs destroy -R zones/copy"] {
        let r = answer(quiet, 0);
        check(r.as_deref() == Some(""), format!("`{quiet}` printed {r:?}, expected nothing"));
    }
    let all = answer("zfs list -H -t all -o name,origin", 0);
    check(
        all.as_deref()
            == Some(&format!("{disk}\t-\n{disk}@s1\t-\nzones/{VM}-vm\t-\nzones/clone\tzones/copy@base\nzones/copy\t-\nzones/copy@base\t-\n")),
        format!("`zfs list -t all -o name,origin` after the copy printed {all:?}"),
    );
    let incremental = format!("zfs send -i @s1 {disk}@s2 | zfs receive -Fv zones/copy");
    let r = answer(&incremental, 0).unwrap_or_default();
    check(
        r.starts_with(&format!("receiving incremental stream of {disk}@s2 into zones/copy@s2\nreceived ")) && r.lines().count() == 2,
        format!("`{incremental}` printed {r:?}"),
    );
    let would = answer("zfs destroy -nvR zones/copy", 0);
    check(
        would.as_deref()
            == Some("would destroy zones/clone\nwould destroy zones/copy@s2\nwould destroy zones/copy@base\nwould destroy zones/copy\n"),
        format!("`zfs destroy -nvR zones/copy` printed {would:?}"),
    );
    let left = answer("zfs list -H -t all -o name", 0);
    check(
        left.as_deref() == Some(&format!("{disk}\n{disk}@s1\n{disk}@s2\nzones/{VM}-vm\n")),
        format!("`zfs list -t all` after `destroy -R` printed {left:?}"),
    );
    for snap in ["s1", "s2"] {
        let destroyed = answer(&format!("zfs destroy {disk}@{snap}"), 0);
        check(destroyed.as_deref() == Some(""), format!("`zfs destroy` of the snapshot @{snap} printed {destroyed:?}"));
    }
    let none = answer("zfs list -t snapshot", 1);
    check(none.as_deref() == Some("no datasets available\n"), format!("`zfs list -t snapshot` after the destroy printed {none:?}"));
    // dladm: the etherstub, and the VM's VNIC over it.
    let links = answer("dladm show-link", 0).unwrap_or_default();
    let rows: Vec<Vec<&str>> = links.lines().map(|l| l.split_whitespace().collect()).collect();
    check(
        rows.first().is_some_and(|h| *h == ["LINK", "CLASS", "MTU", "STATE", "BRIDGE", "OVER"])
            && rows.iter().any(|r| r.len() == 6 && r[0] == "stub0" && r[1] == "etherstub" && r[3] == "unknown")
            && rows.iter().any(|r| r.len() == 6 && r[0].starts_with("vnic") && r[1] == "vnic" && r[5] == "stub0"),
        format!("`dladm show-link` printed {links:?}"),
    );
    let vnics = answer("dladm show-vnic", 0).unwrap_or_default();
    let rows: Vec<Vec<&str>> = vnics.lines().map(|l| l.split_whitespace().collect()).collect();
    check(
        rows.first().is_some_and(|h| *h == ["LINK", "OVER", "SPEED", "MACADDRESS", "MACADDRTYPE", "VID"])
            && rows.iter().any(|r| r.len() == 6 && r[1] == "stub0" && r[3] == VNIC_MAC && r[4] == "fixed" && r[5] == "0"),
        format!("`dladm show-vnic` does not show the VM's VNIC {VNIC_MAC}: {vnics:?}"),
    );
    let stubs = answer("dladm show-etherstub", 0);
    check(stubs.as_deref() == Some("LINK\nstub0\n"), format!("`dladm show-etherstub` printed {stubs:?}"));
    // dladm's run-time links (netd's vnic.create_etherstub, …).
    for (cmd, n, want) in [
        ("dladm create-etherstub stub5", 0, ""),
        ("dladm create-vnic -l stub5 -v 7 op0", 0, ""),
        ("dladm delete-etherstub stub5", 0, "dladm: etherstub deletion failed: link busy (1 VNIC(s) on it)\n"),
        ("dladm delete-vnic vnic0", 0, "dladm: vnic deletion failed: link busy (a VM's VNIC, attached)\n"),
        ("dladm delete-etherstub stub0", 0, "dladm: etherstub deletion failed: link busy (1 VNIC(s) on it)\n"),
        ("dladm create-etherstub stub5", 1, "dladm: etherstub creation failed: object already exists\n"),
        ("dladm create-vnic -l stub5 op0", 0, "dladm: vnic creation failed: object already exists\n"),
        ("dladm delete-vnic op0", 0, ""),
        ("dladm delete-etherstub stub5", 1, ""),
        ("dladm show-etherstub", 1, "LINK\nstub0\n"),
    ] {
        let got = answer(cmd, n);
        check(got.as_deref() == Some(want), format!("`{cmd}` printed {got:?}, not {want:?}"));
    }
    let op = answer("dladm show-vnic op0", 0).unwrap_or_default();
    let rows: Vec<Vec<&str>> = op.lines().map(|l| l.split_whitespace().collect()).collect();
    check(
        rows.len() == 2 && rows[1].len() == 6 && rows[1][0] == "op0" && rows[1][1] == "stub5" && rows[1][3].starts_with("2:8:20:") && rows[1][5] == "7",
        format!("`dladm show-vnic op0` printed {op:?}"),
    );
    // svcadm: restart, refusals, disable and enable.
    let restart = answer("svcadm restart zone-server", 0);
    check(restart.as_deref() == Some(""), format!("`svcadm restart zone-server` printed {restart:?}"));
    // The typed `svcs` answers (not the edited lines'): the first, then
    // the two after svcadm.
    let zone_line = |n: usize| {
        answer("svcs", n)
            .unwrap_or_default()
            .lines()
            .find(|l| l.ends_with("svc:/alcove/zone-server:default"))
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let (before, after) = (zone_line(0), zone_line(1));
    check(
        after.len() == 5 && after[0] == "online" && before.len() == 5 && after[1] != before[1] && after[2] == before[2],
        format!("`svcs` after `svcadm restart zone-server` shows {after:?} (before: {before:?}): not online with a new STIME and the same RESTARTS"),
    );
    let denied = answer("svcadm disable console", 0);
    check(
        denied.as_deref() == Some("svcadm: svc:/alcove/console:default: Permission denied.\n"),
        format!("`svcadm disable console` printed {denied:?}"),
    );
    let unknown = answer("svcadm restart bogus", 0);
    check(
        unknown.as_deref() == Some("svcadm: Pattern 'bogus' doesn't match any instances\n"),
        format!("`svcadm restart bogus` printed {unknown:?}"),
    );
    let disabled = zone_line(2);
    check(disabled.first().is_some_and(|s| s == "disabled"), format!("`svcs` after `svcadm disable zone-server` shows {disabled:?}"));
    let enabled = answer("vmadm list", 6);
    check(
        enabled.as_deref().is_some_and(header_alone),
        format!("`vmadm list` after `svcadm enable zone-server` printed {enabled:?}"),
    );
    // Typed while the VM ran: all of it reached the shell.
    let word = long_word();
    let unknown = answer(&word, 0);
    check(
        unknown.as_deref() == Some(&format!("shell: {word}: command not found (try help)\n")),
        format!(
            "a {}-byte line typed while the VM ran got {:?}",
            word.len(),
            unknown.map(|u| if u.len() > 120 { format!("{}…({} bytes)", &u[..120], u.len()) } else { u })
        ),
    );
    // `vmadm console`: of an unknown VM, vmadm's error; of the running VM,
    // attached: the guest's echo of what was typed, none of it run by the
    // shell; ^] detaches and the prompt works; of the stopped VM, vmadm's
    // error.
    let unknown = answer(&format!("vmadm console {UNKNOWN_VM}"), 0);
    check(
        unknown.as_deref() == Some(&format!("Unable to connect to console of VM {UNKNOWN_VM}: VM not found\n")),
        format!("`vmadm console` of an unknown VM got {unknown:?}"),
    );
    let connected = format!("[Connected to console of VM {VM} (web). Escape sequence is ^]]\n");
    check(serial.contains(&connected), "`vmadm console` of the running VM did not say it connected".into());
    check(serial.lines().any(|l| l == "HELLO GUEST"), "the guest's echo of `hello guest` did not come".into());
    let long = format!("LONG {} END", "Q".repeat(LONG_QS));
    check(
        serial.lines().any(|l| l == long),
        format!(
            "the guest's echo of the {}-byte line did not come whole ({:?})",
            LONG_QS + 9,
            serial.lines().find(|l| l.starts_with("LONG")).map(|l| l.len())
        ),
    );
    check(
        !serial.contains("shell: hello: command not found") && !serial.contains("shell: long: command not found"),
        "what was typed while attached reached the shell".into(),
    );
    // The console's answer ends when ^] detaches, and the shell ran the
    // `vmadm list` typed after it.
    let console = answer(&format!("vmadm console {VM}"), 0).unwrap_or_default();
    let closed = format!("[Connection to console of VM {VM} closed]");
    check(
        console.lines().last() == Some(closed.as_str()) && answer("vmadm list", 4).is_some(),
        format!("^] did not detach to a prompt that ran `vmadm list`: the console printed {:?}", console.lines().last()),
    );
    let list = answer("vmadm list", 4).unwrap_or_default();
    check(
        list.lines().any(|l| l.split_whitespace().eq([VM, "BHYV", "64", "running", "web"])),
        format!("`vmadm list` after the console does not show the VM running: {list:?}"),
    );
    let stopped = answer(&format!("vmadm console {VM}"), 1);
    check(
        stopped.as_deref() == Some(&format!("Unable to connect to console of VM {VM}: VM is not running\n")),
        format!("`vmadm console` of the stopped VM got {stopped:?}"),
    );
    // The snapshot verbs: a pool snapshot of the VM's disk, rolled back
    // to and deleted.
    for (cmd, want) in [
        (format!("vmadm create-snapshot {VM} before"), format!("Created snapshot before for VM {VM}")),
        ("zfs list -H -t snapshot -o name".to_string(), format!("zones/{VM}-disk0@vmsnap-before")),
        (format!("vmadm rollback-snapshot {VM} before"), format!("Rolled back VM {VM} to snapshot before")),
        (format!("vmadm delete-snapshot {VM} before"), format!("Deleted snapshot before for VM {VM}")),
    ] {
        let got = answer(&cmd, 0).unwrap_or_default();
        check(got.lines().any(|l| l == want), format!("`{cmd}` printed {got:?}, not {want:?}"));
    }
    // Rolled back while it ran: started again.
    let list = answer("vmadm list", 5).unwrap_or_default();
    check(
        list.lines().any(|l| l.split_whitespace().eq([VM, "BHYV", "64", "running", "web"])),
        format!("`vmadm list` after the rollback does not show the VM running again: {list:?}"),
    );
    let deleted = answer(&format!("vmadm delete {VM}"), 0).unwrap_or_default();
    check(
        deleted.lines().any(|l| l == format!("Successfully deleted VM {VM}")),
        format!("`vmadm delete` did not say it deleted the VM: {deleted:?}"),
    );
    check(
        ending == Ending::Qemu(qemu_status(EXIT_PASS)),
        format!("the machine did not end by `poweroff` ({ending:?})"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "[root@shelltest ~]# ";

    /// The answers of a good run, one for each of [`steps`], as the shell
    /// prints them.
    fn answers() -> Vec<String> {
        let disk = format!("zones/{VM}-disk0");
        let g = crate::imgsource::GOOD;
        let list = "UUID                                  TYPE  RAM      STATE             ALIAS\n";
        let running = format!("{list}{VM}  BHYV  64       running           web\n");
        let sysinfo = format!(
            "{{\n  \"Boot Time\": \"1796519804\",\n  \"CPU Total Cores\": {CPUS},\n  \"Hostname\": \"{HOSTNAME}\",\n  \
             \"Live Image\": \"alcove-0.1.0\",\n  \"MiB of Memory\": \"437\",\n  \"UUID\": \"{UUID}\"\n}}\n"
        );
        let svcs = |zone: &str| {
            format!(
                "STATE           STIME RESTARTS INSTANCES  FMRI\nonline       01:16:44        0         0  svc:/alcove/console:default\n\
                 {zone}        0         0  svc:/alcove/zone-server:default\non-demand           -        0         0  svc:/alcove/vmm-server:default\n\
                 online       01:16:44        0         0  svc:/alcove/shell:default\n"
            )
        };
        let online = svcs("online       01:16:44");
        let zpool = |scan: &str| {
            format!(
                " pool: zones\nstate: ONLINE\n  txg: 1\n scan: {scan}\nconfig:\n\n\tNAME     STATE      READ WRITE CKSUM\n\
                 \tzones    ONLINE        0     0     0\n\t  virtio-blk 00:03.0         ONLINE        0     0     0\n\nerrors: No known data errors\n"
            )
        };
        let vnic_header = "LINK         OVER         SPEED  MACADDRESS        MACADDRTYPE       VID\n";
        let progress = |p: u32| format!("\rDownloading image 1a9e0000 [{:<20}] {p:>3}%  0.0MiB of 0.2MiB", "=".repeat(p as usize / 5));
        [
            list.to_string(),
            "Alcove operator shell. Commands:\n  vmadm ARGS...           SmartOS's vmadm\n  sysinfo                 the machine, as JSON\n".into(),
            "shell: frobnicate: command not found (try help)\n".into(),
            "shell: syntax error: unterminated single quote\n".into(),
            sysinfo.clone(),
            online.clone(),
            online.clone(),
            online.clone(),
            online.clone(),
            sysinfo,
            online.clone(),
            list.into(),
            format!("shell: the line is {} bytes, longer than 4096: ignored\n", FLOOD_BYTES + 6),
            list.into(),
            zpool("none requested"),
            "no datasets available\n".into(),
            format!("init: start stages (vmm-server-1) asked=1 process=2\nSuccessfully created VM {VM}\n"),
            running.clone(),
            format!("NAME                                              USED  AVAIL  REFER  MOUNTPOINT\n{disk}     0  63.4M      0  -\nzones/{VM}-vm        0  63.4M      0  -\n"),
            String::new(),
            format!("NAME                                                 USED  AVAIL  REFER  MOUNTPOINT\n{disk}@s1     0      -      0  -\n"),
            format!("cannot destroy '{disk}': volume has children\nuse '-r' to destroy the following datasets:\n{disk}@s1\n"),
            String::new(),
            format!("{disk}\talcove:note\thi\tlocal\n{disk}\tvolsize\t16M\tlocal\n"),
            "cannot rename to 'zones/moved': dataset is busy\n".into(),
            format!("receiving full stream of {disk}@s1 into zones/copy@s1\nreceived 123 stream in 1 seconds (123/sec)\n"),
            String::new(),
            String::new(),
            String::new(),
            format!("{disk}\t-\n{disk}@s1\t-\nzones/{VM}-vm\t-\nzones/clone\tzones/copy@base\nzones/copy\t-\nzones/copy@base\t-\n"),
            String::new(),
            format!("receiving incremental stream of {disk}@s2 into zones/copy@s2\nreceived 123 stream in 1 seconds (123/sec)\n"),
            "would destroy zones/clone\nwould destroy zones/copy@s2\nwould destroy zones/copy@base\nwould destroy zones/copy\n".into(),
            String::new(),
            format!("{disk}\n{disk}@s1\n{disk}@s2\nzones/{VM}-vm\n"),
            String::new(),
            String::new(),
            "no datasets available\n".into(),
            "LINK        CLASS     MTU    STATE    BRIDGE     OVER\nstub0       etherstub 1500   unknown  --         --\n\
             vioif0      phys      1500   up       --         --\nvnic0       vnic      1500   up       --         stub0\n"
                .into(),
            format!("{vnic_header}vnic0        stub0        0      {VNIC_MAC}    fixed             0\n"),
            "LINK\nstub0\n".into(),
            String::new(),
            String::new(),
            format!("{vnic_header}op0          stub5        0      2:8:20:22:36:6e   fixed             7\n"),
            "dladm: etherstub deletion failed: link busy (1 VNIC(s) on it)\n".into(),
            "dladm: vnic deletion failed: link busy (a VM's VNIC, attached)\n".into(),
            "dladm: etherstub deletion failed: link busy (1 VNIC(s) on it)\n".into(),
            "dladm: etherstub creation failed: object already exists\n".into(),
            "dladm: vnic creation failed: object already exists\n".into(),
            String::new(),
            String::new(),
            "LINK\nstub0\n".into(),
            format!("shell: {}: command not found (try help)\n", long_word()),
            format!("Unable to connect to console of VM {UNKNOWN_VM}: VM not found\n"),
            format!(
                "[Connected to console of VM {VM} (web). Escape sequence is ^]]\nHELLO GUEST\nLONG {} END\n\n[Connection to console of VM {VM} closed]\n",
                "Q".repeat(LONG_QS)
            ),
            String::new(),
            String::new(),
            running.clone(),
            format!("Created snapshot before for VM {VM}\n"),
            format!("{disk}@vmsnap-before\n"),
            format!("init: start stages (vmm-server-2) asked=1 process=2\nRolled back VM {VM} to snapshot before\n"),
            running,
            format!("Successfully completed stop for VM {VM}\n"),
            format!("Unable to connect to console of VM {VM}: VM is not running\n"),
            format!("Deleted snapshot before for VM {VM}\n"),
            format!("Successfully deleted VM {VM}\n"),
            "cannot cancel scrubbing zones: pool: no scrub is in progress\n".into(),
            String::new(),
            zpool("scrub repaired 0B in 00:00:00 with 0 errors on Sun Dec  6 01:16:46 2026"),
            String::new(),
            svcs("online       01:16:46"),
            "svcadm: svc:/alcove/console:default: Permission denied.\n".into(),
            "svcadm: Pattern 'bogus' doesn't match any instances\n".into(),
            String::new(),
            svcs("disabled            -"),
            String::new(),
            list.into(),
            "Added image source \"http://10.0.2.2:4000\"\n".into(),
            format!(
                "Importing {g} (imported-disk@1.0) from \"http://10.0.2.2:4000\"\n{}{}{}\nImported image {g} (imported-disk@1.0)\n",
                progress(6),
                progress(50),
                progress(100)
            ),
            format!("UUID  NAME  VERSION  OS  TYPE  PUB\n{g}  imported-disk  1.0  linux  zvol  -\n"),
            String::new(),
        ]
        .into()
    }

    /// A good run's console: each line typed echoed after a prompt (but
    /// those typed to the attached guest), then its answer; servers' and
    /// the VMM's lines between.
    fn transcript() -> String {
        let mut t = String::from("[INFO ] init: console: console v1 up\n\nAlcove operator shell on shelltest (type help)\n");
        let typed = typed_lines(&script(4000));
        for (((name, _), answer), typed) in steps().iter().zip(answers()).zip(typed) {
            if !name.starts_with("hello") && !name.starts_with("long ") {
                t.push_str(&format!("{P}{typed}\n"));
            }
            t.push_str(&answer);
            if name.starts_with("vmadm create") {
                t.push_str("vm web: started: 1 vCPUs, 64 MiB\n[INFO ] storaged: zones/x: ring 1 open\n");
            }
        }
        t
    }

    fn judged(serial: &str) -> Vec<String> {
        let mut o = Outcome::new(CASE, Duration::ZERO, std::path::PathBuf::new());
        static TYPED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        judge(serial, Ending::Qemu(qemu_status(EXIT_PASS)), TYPED.get_or_init(|| typed_lines(&script(4000))), &mut o);
        o.problems
    }

    /// The judge's steps are the lines the script types.
    #[test]
    fn the_steps_are_the_lines_typed() {
        let typed = typed_lines(&script(4000));
        let steps = steps();
        assert_eq!(typed.len(), steps.len());
        assert_eq!(answers().len(), steps.len());
        for (t, (name, _)) in typed.iter().zip(&steps) {
            assert!(
                t == name || name.starts_with("svcs (") || (name == "imgadm sources -a" && t.starts_with("imgadm sources -a ")),
                "typed {t:?}, step {name:?}"
            );
        }
    }

    /// A good run passes, however the echoes of what was typed fare: each
    /// lost with its prompt inside another writer's line (a VMM's, taken
    /// out of the shell's text whole with it), its prompt alone lost (the
    /// echo after a server's line), or split by the guest's line (the rest
    /// on a line of its own).
    #[test]
    fn the_judge_finds_answers_whatever_became_of_the_echoes() {
        let good = transcript();
        assert_eq!(judged(&good), Vec::<String>::new());
        let mut at = 0;
        let mut lost_all = good.clone();
        while let Some(i) = good[at..].find(P).map(|i| at + i) {
            let end = i + good[i..].find('\n').unwrap() + 1;
            let echo = &good[i + P.len()..end - 1];
            at = end;
            // Lost in a VMM's line.
            let lost = format!("{}vm web: create stages (zone-server) received=1{echo}\n{}", &good[..i], &good[end..]);
            assert_eq!(judged(&lost), Vec::<String>::new(), "echo of {:?} lost", &echo[..echo.len().min(60)]);
            // Its prompt lost in one, the echo on a line of its own.
            let alone = format!("{}zone-guest: running{P}[INFO ] storaged: x\n{echo}\n{}", &good[..i], &good[end..]);
            assert_eq!(judged(&alone), Vec::<String>::new(), "prompt of {:?} lost", &echo[..echo.len().min(60)]);
            lost_all = lost_all.replacen(&good[i..end], &format!("vm web: ended: poweroff{echo}\n"), 1);
            // Split by the guest's line.
            let cut = echo.char_indices().nth(echo.chars().count() / 2).map_or(0, |(c, _)| c);
            if cut > 0 && echo.is_ascii() {
                let split = format!("{}zone-guest: runn{P}{}ing\n{}\n{}", &good[..i], &echo[..cut], &echo[cut..], &good[end..]);
                assert_eq!(judged(&split), Vec::<String>::new(), "echo of {:?} split", &echo[..echo.len().min(60)]);
            }
        }
        // Every echo lost.
        assert!(!lost_all.contains(P));
        assert_eq!(judged(&lost_all), Vec::<String>::new());
    }

    /// Wrong answers fail, with the echoes or without: a VM not running, a
    /// row missing, output from a command that prints nothing, the line
    /// killed with ^U run, a refusal missing, a restart that kept its
    /// STIME.
    #[test]
    fn the_judge_still_fails_wrong_answers() {
        let good = transcript();
        let row = format!("{VM}  BHYV  64       running           web\n");
        let stopped = good.replacen(&row, &row.replace("running", "stopped"), 1);
        let no_row = good.replacen(&row, "", 1);
        let snap = format!("{P}zfs snapshot zones/{VM}-disk0@s1\n");
        let loud = good.replacen(&snap, &format!("{snap}cannot create snapshot 'zones/{VM}-disk0@s1': dataset already exists\n"), 1);
        let erased = format!("{P}vmadm delete everythingsvcs\n");
        let killed = good.replacen(&erased, &format!("{erased}VM everything not found\n"), 1);
        let unrefused = good.replacen("dladm: vnic deletion failed: link busy (a VM's VNIC, attached)\n", "", 1);
        let same_stime = good.replacen("online       01:16:46", "online       01:16:44", 1);
        let wrong = [
            (stopped, "does not show the VM running"),
            (no_row, "does not show the VM running"),
            (loud, "zfs snapshot"),
            (killed, "killed with ^U"),
            (unrefused, "dladm delete-vnic vnic0"),
            (same_stime, "new STIME"),
        ];
        for (bad, why) in wrong {
            assert_ne!(bad, good);
            let p = judged(&bad);
            assert!(p.iter().any(|p| p.contains(why)), "{why}: {p:?}");
            // Still a failure with any one echo near the wrong answer lost
            // (with its prompt, in a VMM's line), or all of them. (Which
            // command printed a line cannot always be told then: the
            // failure may name the one before.)
            let changed = good.bytes().zip(bad.bytes()).position(|(g, b)| g != b).unwrap();
            let prompts: Vec<usize> = bad.match_indices(P).map(|(i, _)| i).collect();
            let near = prompts.iter().position(|&i| i > changed).unwrap_or(prompts.len());
            for &i in &prompts[near.saturating_sub(3)..(near + 2).min(prompts.len())] {
                let lost = format!("{}vm web: ended: poweroff{}", &bad[..i], &bad[i + P.len()..]);
                assert!(!judged(&lost).is_empty(), "{why}, echo at {i} lost: passed");
            }
            let p = judged(&bad.replace(P, "vm web: ended: poweroff"));
            assert!(!p.is_empty(), "{why}, every echo lost: passed");
        }
    }

    /// The import's transcript as the console gives it passes; progress
    /// printed as plain lines, only the last line, or no list fails.
    #[test]
    fn the_import_transcript_needs_progress_drawn_in_place() {
        let g = crate::imgsource::GOOD;
        let line = |p: u32| format!("Downloading image 1a9e0000 [{:<20}] {p:>3}%  0.0MiB of 0.2MiB", "=".repeat(p as usize / 5));
        let head = format!("[root@shelltest ~]# imgadm import {g}\r\nImporting {g} (imported-disk@1.0) from \"http://10.0.2.2:4000\"\r\n");
        let tail = format!("\r\nImported image {g} (imported-disk@1.0)\r\n[root@shelltest ~]# imgadm list\r\nUUID  NAME  VERSION  OS  TYPE  PUB\r\n{g}  imported-disk  1.0  linux  zvol  -\r\n");
        let good = format!("{head}\r{}\r{}\r[INFO ] netd: something\r\n\r{}{tail}", line(6), line(50), line(100));
        assert_eq!(import_problems(&good), Vec::<String>::new());
        let plain = format!("{head}{}\r\n{}\r\n{}{tail}", line(6), line(50), line(100));
        assert!(import_problems(&plain)[0].contains("not drawn on one line"), "{:?}", import_problems(&plain));
        let last_only = format!("{head}\r{}{tail}", line(100));
        assert!(import_problems(&last_only)[0].contains("fewer than three"));
        let falling = format!("{head}\r{}\r{}\r{}{tail}", line(50), line(6), line(100));
        assert!(import_problems(&falling)[0].contains("did not rise"));
        let unlisted = good.replace("imported-disk  1.0", "other  1.0");
        assert!(import_problems(&unlisted)[0].contains("does not list"));
        assert!(import_problems("nothing")[0].contains("no `Importing"));
    }

    /// Lines other writers put between a prompt and its echo are taken
    /// out whole, init's late ready line among them.
    #[test]
    fn other_writers_lines_are_stripped_from_the_shell_s_text() {
        let text = "[root@alcove ~]# init: ready: 3 of 3 endpoints answered status (1 us)\nvmadm list\nUUID  TYPE\n[INFO ] x: y\n[root@alcove ~]# ";
        assert_eq!(strip_logs(text), "[root@alcove ~]# vmadm list\nUUID  TYPE\n[root@alcove ~]# ");
    }
}
