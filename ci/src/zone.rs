//! The `zone` system case's machine: the blank drive storaged makes its
//! pool on, and the two test kernels its VMs boot (synthetic bzImages,
//! Linux boot protocol 2.15 with a 64-bit entry, as vmm-server loads
//! Debian's kernel): each writes a line to its UART; `zone-guest-halt`
//! then spins for ever, `zone-guest-off` powers the VM off through the
//! ACPI PM1a control port (0x604, SLP_TYP 5 | SLP_EN) at once. The
//! spinning guest watches the ACPI power button (PWRBTN_STS in PM1a_STS,
//! port 0x600) as an OS does and powers off when it is pressed
//! (`vmadm stop`); `zone-guest-deaf` spins and ignores it (a stop falls
//! back to halting the VM after its timeout). `zone-guest-mdata` asks the
//! metadata port (COM2) for its hostname and two `customer_metadata` keys
//! (one of 2 KiB, a cloud-init user-data), sets one with a v2 `PUT`,
//! copies the answers to its console and powers off. `zone-guest-echo`
//! (the shell case's VM) echoes what its COM1 receives, upper-cased, until
//! the power button. `zone-guest-tick-a` and `-b` print their line again
//! and again until the power button: the VMs that run through
//! zone-server's restart, whose lines must go on after it. netd (`NETD_CONF`) has one
//! etherstub, `stub0`, with the host's address on it; the suite's VMs with
//! `nics[]` get their VNICs there. The suite is in
//! `servers/ktest-user/src/zone.rs`, the manifest `initrd/manifests/zone.toml`.

use crate::Result;
use std::path::PathBuf;

/// What the powering-off guest prints (the case fails without it).
pub const GUEST_OFF_LINE: &str = "zone-guest: powering off";
/// What the spinning guest prints.
pub const GUEST_HALT_LINE: &str = "zone-guest: running";
/// What the VMM of the suite's first VM (`zone-guest-halt`, alias
/// `zone-halt`) prints when its guest powered off on `vmadm stop`'s ACPI
/// power button.
pub const BUTTON_END_LINE: &str = "vm zone-halt: ended: poweroff";

/// netd's configuration in the zone case: the etherstub the suite's VMs'
/// NICs are on, and the host's TCP/IP on it (the suite's own granted VNIC
/// asks it for its MAC).
pub const NETD_CONF: &str = "etherstub stub0\nhost switch=stub0 mac=02:08:20:ff:00:01 ip=10.9.0.1/24\n";

/// netd's lines when the VMMs of the suite's two VMs with a NIC attached
/// their VNICs (through the grants zone-server gave them).
pub const VNIC_ATTACHED_LINES: [&str; 2] = ["(02:08:20:07:00:01) attached on stub0", "(02:08:20:07:00:02) attached on stub0"];

/// The lines of netd's restart in the suite's last case (netd stopped
/// while the VM `zone-netd-keep` runs with a NIC): init restarts netd and
/// tells zone-server, which makes the VM's VNIC grant again and tells its
/// VMM; the VMM attaches its NIC again through the capability it was
/// started with.
pub const NETD_RESTART_LINES: [&str; 6] = [
    "server \"netd\" exited with code 1; restarting (1)",
    "server \"zone-server\" told that \"netd\" was restarted",
    "of an earlier netd made again: VNICs",
    "made again (1 VNICs); its VMM told",
    "nics: netd was restarted (the starter says so); attaching every NIC again",
    "nics: every NIC attached again to netd (relink 1)",
];

/// The VMs whose `vmadm create` the zone suite times: from the 2 MiB
/// image twice, then from the same file as a 1 GiB image.
pub const TIMED_CREATES: [&str; 3] = ["img-a", "img-b", "img-big"];

/// `vmadm create` (the image already installed) to the VMM's first guest
/// entry, for each of [`TIMED_CREATES`], from the zone suite's serial: the
/// suite's `zone: vmadm create of ALIAS sent at T ns since boot` and the
/// VMM's `vm ALIAS: first guest entry at T ns since boot` (both the
/// kernel's clock). A missing or out-of-order pair is a problem.
pub fn create_figures(serial: &str, problems: &mut Vec<String>) -> Vec<crate::bench::Figure> {
    let at = |prefix: &str, suffix: &str| -> Option<u64> {
        serial.lines().find_map(|l| {
            let rest = l.trim_end_matches('\r');
            let rest = &rest[rest.find(prefix)? + prefix.len()..];
            rest.strip_suffix(suffix)?.parse().ok()
        })
    };
    let mut figures = Vec::new();
    for alias in TIMED_CREATES {
        let sent = at(&format!("zone: vmadm create of {alias} sent at "), " ns since boot");
        let entered = at(&format!("vm {alias}: first guest entry at "), " ns since boot");
        match (sent, entered) {
            (Some(s), Some(e)) if e >= s => {
                let name = format!("vmadm_create_to_first_entry_{}", alias.replace('-', "_"));
                figures.push(crate::bench::Figure::new(&name, format!("{:.1}", (e - s) as f64 / 1e6), "ms"));
            }
            _ => problems.push(format!("{alias}: create sent at {sent:?}, first guest entry at {entered:?}")),
        }
    }
    figures
}

/// The stages of a timed `vmadm create` on its way to the guest's first
/// instruction, in order: (figure name, where its end is, the mark's
/// name). The ends come from the suite's `sent` line, zone-server's,
/// init's and the VMM's `create stages` lines (`NAME=NS` on the kernel's
/// clock) and the VMM's first guest entry; each stage's figure is the time
/// from the end of the one before.
pub const CREATE_STAGES: [(&str, Stage, &str); 21] = [
    ("request", Stage::Zone, "received"),
    ("refresh", Stage::Zone, "refreshed"),
    ("validate", Stage::Zone, "image_asked"),
    ("image", Stage::Zone, "image_read"),
    ("instance", Stage::Zone, "validated"),
    ("record_volume", Stage::Zone, "record_volume"),
    ("clone", Stage::Zone, "cloned"),
    ("zone_start", Stage::Zone, "vmm_asked"),
    ("grant", Stage::Init, "asked"),
    ("init_process", Stage::Init, "process"),
    ("init_elf", Stage::Init, "elf"),
    ("init_caps", Stage::Init, "caps"),
    ("init_files", Stage::Init, "files"),
    ("init_resume", Stage::Init, "resumed"),
    ("vmm_scheduled", Stage::Vmm, "main"),
    ("vmm_parse", Stage::Vmm, "parsed"),
    ("vmm_ram_alloc", Stage::Vmm, "ram_allocated"),
    ("vmm_load", Stage::Vmm, "loaded"),
    ("vmm_ram_map", Stage::Vmm, "ram_mapped"),
    ("vmm_vcpus", Stage::Vmm, "vcpus"),
    ("vmm_devices", Stage::Vmm, "devices"),
];

/// Whose line a stage's end is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage {
    Zone,
    Init,
    Vmm,
}

/// The per-stage breakdown of each of [`TIMED_CREATES`] (`bench
/// vmadm_create_STAGE_ALIAS MS ms`, [`CREATE_STAGES`] then the VMM's
/// threads to the first guest entry, `threads`), and zone-server's record
/// write and answer after init started the VMM (`answer`, beside the
/// path). A missing line or mark, or a stage that ends before the one
/// before it, is a problem.
pub fn stage_figures(serial: &str, problems: &mut Vec<String>) -> Vec<crate::bench::Figure> {
    // Every line containing `head` and then `WHO) NAME=NS ...`: (WHO, marks).
    let lines = |head: &str| -> Vec<(String, Vec<(String, u64)>)> {
        serial
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find(head)? + head.len()..];
                let (who, rest) = rest.split_once(')')?;
                let marks = rest
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('=').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
                    .collect();
                Some((who.to_string(), marks))
            })
            .collect()
    };
    let number = |prefix: &str, suffix: &str| -> Option<u64> {
        serial.lines().find_map(|l| {
            let rest = l.trim_end_matches('\r');
            let rest = &rest[rest.find(prefix)? + prefix.len()..];
            rest.strip_suffix(suffix)?.parse().ok()
        })
    };
    let ms = |from: u64, to: u64| format!("{:.1}", (to - from) as f64 / 1e6);
    let mut figures = Vec::new();
    for alias in TIMED_CREATES {
        let tag = alias.replace('-', "_");
        let stages = lines(&format!("vm {alias}: create stages ("));
        let zone = stages.iter().find(|(who, _)| who == "zone-server").cloned();
        let vmm = stages.into_iter().find(|(who, _)| who != "zone-server");
        let init = vmm.as_ref().and_then(|(process, _)| {
            lines("init: start stages (").into_iter().find(|(who, _)| who == process)
        });
        let sent = number(&format!("zone: vmadm create of {alias} sent at "), " ns since boot");
        let entered = number(&format!("vm {alias}: first guest entry at "), " ns since boot");
        let (Some(zone), Some(init), Some(vmm), Some(sent), Some(entered)) = (zone, init, vmm, sent, entered) else {
            problems.push(format!(
                "{alias}: a create stages line (zone-server, init, VMM), the sent time or the first entry is missing"
            ));
            continue;
        };
        let find = |line: &[(String, u64)], mark: &str| line.iter().find(|(k, _)| k == mark).map(|(_, v)| *v);
        let mut last = ("sent", sent);
        let mut ok = true;
        for (name, whose, mark) in CREATE_STAGES {
            let line = match whose {
                Stage::Zone => &zone.1,
                Stage::Init => &init.1,
                Stage::Vmm => &vmm.1,
            };
            match find(line, mark) {
                Some(t) if t >= last.1 => {
                    figures.push(crate::bench::Figure::new(&format!("vmadm_create_{name}_{tag}"), ms(last.1, t), "ms"));
                    last = (mark, t);
                }
                t => {
                    problems.push(format!("{alias}: stage {name} ends at {t:?}, before {} ({})", last.0, last.1));
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        if entered >= last.1 {
            figures.push(crate::bench::Figure::new(&format!("vmadm_create_threads_{tag}"), ms(last.1, entered), "ms"));
        } else {
            problems
                .push(format!("{alias}: the first guest entry ({entered}) comes before the VMM's devices ({})", last.1));
        }
        match (find(&zone.1, "vmm_started"), find(&zone.1, "answered")) {
            (Some(a), Some(b)) if b >= a => {
                figures.push(crate::bench::Figure::new(&format!("vmadm_create_answer_{tag}"), ms(a, b), "ms"))
            }
            (a, b) => problems.push(format!("{alias}: zone-server's VMM started at {a:?}, answered at {b:?}")),
        }
    }
    figures
}

/// The pool drive: blank, 64 MiB, serial `alcove-d1` (zone.toml).
pub fn pool_drive() -> Vec<String> {
    let img = crate::out_dir().join("zone-pool.img");
    let _ = std::fs::remove_file(&img);
    let _ = std::fs::create_dir_all(crate::out_dir());
    let _ = std::fs::File::create(&img).and_then(|f| f.set_len(64 << 20));
    pool_drive_of(&img)
}

/// QEMU's arguments for the pool drive `img` as it stands (serial
/// `alcove-d1`): a machine started again on the same file finds its pool.
pub fn pool_drive_of(img: &std::path::Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("file={},if=none,id=d1,format=raw", img.display()),
        "-device".into(),
        "virtio-blk-pci,drive=d1,disable-legacy=on,serial=alcove-d1".into(),
    ]
}

/// What a test guest does after its line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Then {
    /// Powers the VM off at once.
    Off,
    /// Powers it off once the ACPI power button is pressed.
    Button,
    /// Spins for ever.
    Spin,
}

/// 20 bytes of guest code that write the NUL-ended message at offset
/// `msg` of the code to the serial port at `port`, then go on at 20.
fn print_message(port: u16, msg: usize) -> Vec<u8> {
    let mut c = vec![0xfc]; // 0: cld
    c.extend([0x66, 0xba]); // 1: mov dx, port
    c.extend(port.to_le_bytes());
    // 5: lea rsi, [rip + msg - 12]: the instruction ends at 12.
    c.extend([0x48, 0x8d, 0x35]);
    c.extend(((msg - 12) as u32).to_le_bytes());
    c.push(0xac); // 12: lodsb
    c.extend([0x84, 0xc0]); // test al, al
    c.extend([0x74, 0x03]); // jz 20
    c.push(0xee); // out dx, al
    c.extend([0xeb, 0xf8]); // jmp 12
    assert_eq!(c.len(), 20);
    c
}

/// Ends a test guest's code `c`: spins (`1: pause; jmp 1b`), then pads
/// with NOPs to offset `msg`, where the NUL-ended message `text` and a
/// newline go (what [`print_message`] prints).
fn spin_then_message(mut c: Vec<u8>, msg: usize, text: &str) -> Vec<u8> {
    c.extend(SPIN);
    assert!(c.len() <= msg);
    c.resize(msg, 0x90);
    c.extend(text.as_bytes());
    c.extend(b"\n\0");
    c
}

/// Guest code that spins for ever: `1: pause; jmp 1b`.
const SPIN: [u8; 4] = [0xf3, 0x90, 0xeb, 0xfc];

/// Appends guest code that writes S5 with SLP_EN to the ACPI PM1a control
/// register (port 0x604): the VMM powers the VM off.
fn power_off(c: &mut Vec<u8>) {
    c.extend([0x66, 0xba, 0x04, 0x06]); // mov dx, 0x604
    c.extend([0x66, 0xb8, 0x01, 0x34]); // mov ax, 0x3401 (S5 | SLP_EN)
    c.extend([0x66, 0xef]); // out dx, ax
}

/// The guest's code at the 64-bit entry: prints `line` (then a newline) on
/// COM1, then does what `then` says.
fn code(line: &str, then: Then) -> Vec<u8> {
    const MSG: usize = 96;
    let mut c = print_message(0x3f8, MSG);
    if then == Then::Button {
        c.extend([0x66, 0xba, 0x00, 0x06]); // 20: mov dx, 0x600 (PM1a_STS)
        c.extend([0xb9, 0x00, 0x00, 0x10, 0x00]); // 24: mov ecx, 0x100000
        c.extend([0xf3, 0x90, 0xe2, 0xfc]); // 29: pause; loop 29
        c.extend([0x66, 0xed]); // 33: in ax, dx
        c.extend([0xf6, 0xc4, 0x01]); // test ah, 1 (PWRBTN_STS, bit 8)
        c.extend([0x74, 0xf0]); // jz 24
        assert_eq!(c.len(), 40);
    }
    if then != Then::Spin {
        power_off(&mut c);
    }
    spin_then_message(c, MSG, line)
}

/// What the metadata guest's VM is given (the suite's payload) and the
/// guest copies to its console from the metadata port: its
/// `sdc:hostname` and its `customer_metadata` keys `role` and
/// [`MDATA_USER_DATA_KEY`].
pub const MDATA_HOSTNAME: &str = "zone-md-host";
pub const MDATA_ROLE: &str = "mdata-role-value";

/// The metadata guest's large `customer_metadata` key: a cloud-init
/// user-data of [`MDATA_USER_DATA_LINES`] lines ([`mdata_user_data_line`]),
/// 2 KiB that make its VM's `vm.json` longer than one `proc.start`
/// message, so it crosses to init in pieces (`proc.append_start_data`);
/// the guest copies every line to its console and the harness requires
/// each. The suite (`servers/ktest-user/src/zone.rs`) makes the same
/// lines; the payload stays within one `vmadm` request (3 KiB).
pub const MDATA_USER_DATA_KEY: &str = "cloud-init:user-data";
pub const MDATA_USER_DATA_LINES: usize = 32;

/// Line `i` (below [`MDATA_USER_DATA_LINES`]) of the metadata guest's
/// user-data: 62 bytes, each line's own.
pub fn mdata_user_data_line(i: usize) -> String {
    let letters = "abcdefghijklmnopqrstuvwxyz0123456789-".repeat(2);
    format!("zone-md-user-data {i:02}/{MDATA_USER_DATA_LINES} {}", &letters[i..i + 38])
}

/// What the metadata guest sets with a `PUT` (protocol v2, as
/// `mdata-put guest-said put-by-the-guest` sends it): its VMM writes it
/// back to the VM's record, where the suite finds it in `vmadm get` once
/// the VM has stopped.
pub const MDATA_PUT_KEY: &str = "guest-said";
pub const MDATA_PUT_VALUE: &str = "put-by-the-guest";

/// A protocol v2 `PUT` of `key` = `value`: `V2 <length> <crc32> <body>`,
/// the body `<request id> PUT <base64 of base64(key) SP base64(value)>`.
pub fn mdata_put_frame(key: &str, value: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let body = format!("0000abcd PUT {}", b64(&format!("{} {}", b64(key), b64(value))));
    format!("V2 {} {} {body}", body.len(), alcove_mdata::crc32_hex(body.as_bytes()))
}

/// The metadata guest's code: writes `GET sdc:hostname`, `GET role`,
/// `GET cloud-init:user-data`, a v2 `PUT` ([`MDATA_PUT_KEY`]) and a
/// malformed `BOGUS` to COM2 (the metadata port, SmartOS's protocol),
/// copies COM2's answers to COM1 until it has seen their 7 +
/// [`MDATA_USER_DATA_LINES`] + 3 lines (`SUCCESS`, the value's lines, `.`
/// three times, the `PUT`'s `SUCCESS` frame, then `FAILURE`), then powers
/// off.
fn mdata_code() -> Vec<u8> {
    const MSG: usize = 96;
    let lines = 7 + MDATA_USER_DATA_LINES as u8 + 3;
    let mut c = print_message(0x2f8, MSG);
    copy_com2_lines(&mut c, lines); // 20
    assert_eq!(c.len(), 50);
    power_off(&mut c);
    let put = mdata_put_frame(MDATA_PUT_KEY, MDATA_PUT_VALUE);
    spin_then_message(c, MSG, &format!("GET sdc:hostname\nGET role\nGET {MDATA_USER_DATA_KEY}\n{put}\nBOGUS"))
}

/// Appends guest code (30 bytes, position-independent) that copies
/// `lines` lines from COM2 (the metadata port) to COM1, polling COM2's
/// LSR for each byte.
fn copy_com2_lines(c: &mut Vec<u8>, lines: u8) {
    c.extend([0xb9, lines, 0, 0, 0]); // +0: mov ecx, lines
    c.extend([0x66, 0xba, 0xfd, 0x02]); // +5: mov dx, 0x2fd (COM2 LSR)
    c.push(0xec); // +9: in al, dx
    c.extend([0xa8, 0x01]); // +10: test al, 1 (data ready)
    c.extend([0x74, 0xf7]); // +12: jz +5
    c.extend([0x66, 0xba, 0xf8, 0x02]); // +14: mov dx, 0x2f8
    c.push(0xec); // +18: in al, dx
    c.extend([0x66, 0xba, 0xf8, 0x03]); // +19: mov dx, 0x3f8
    c.push(0xee); // +23: out dx, al
    c.extend([0x3c, 0x0a]); // +24: cmp al, 10
    c.extend([0x75, 0xe9]); // +26: jne +5
    c.extend([0xe2, 0xe7]); // +28: loop +5
}

/// The key the live-metadata guest asks for (absent at create, set by
/// `vmadm update` of the running VM) and the value it is set to.
pub const MDATA_LIVE_KEY: &str = "live-key";
pub const MDATA_LIVE_VALUE: &str = "set-while-running";
/// The live-metadata guest's VM.
pub const MDATA_LIVE_ALIAS: &str = "zone-md-live";

/// The live-metadata guest's code (`zone-guest-mdata-live`): asks the
/// metadata port (COM2, protocol v1) `GET live-key` and copies the first
/// line of the answer to COM1, again and again (about every few ms) while
/// it is not `SUCCESS` (`NOTFOUND`: the VM was made without the key);
/// once it is, copies the value and the `.` line too and powers the VM
/// off. Its VMM was started without the key, so a value it prints can
/// only have come from a live update.
fn mdata_live_code() -> Vec<u8> {
    const MSG: usize = 128;
    let mut c = print_message(0x2f8, MSG);
    c.extend([0x31, 0xdb]); // 20: xor ebx, ebx (bl: the line's first byte)
    c.extend([0x66, 0xba, 0xfd, 0x02]); // 22: mov dx, 0x2fd (COM2 LSR)
    c.push(0xec); // 26: in al, dx
    c.extend([0xa8, 0x01]); // 27: test al, 1 (data ready)
    c.extend([0x74, 0xf7]); // 29: jz 22
    c.extend([0x66, 0xba, 0xf8, 0x02]); // 31: mov dx, 0x2f8
    c.push(0xec); // 35: in al, dx
    c.extend([0x84, 0xdb]); // 36: test bl, bl
    c.extend([0x75, 0x02]); // 38: jnz 42
    c.extend([0x88, 0xc3]); // 40: mov bl, al
    c.extend([0x66, 0xba, 0xf8, 0x03]); // 42: mov dx, 0x3f8
    c.push(0xee); // 46: out dx, al
    c.extend([0x3c, 0x0a]); // 47: cmp al, 10
    c.extend([0x75, 0xe3]); // 49: jne 22
    c.extend([0x80, 0xfb, b'S']); // 51: cmp bl, 'S'
    c.extend([0x74, 0x0b]); // 54: je 67
    c.extend([0xb9, 0x00, 0x00, 0x10, 0x00]); // 56: mov ecx, 0x100000
    c.extend([0xf3, 0x90, 0xe2, 0xfc]); // 61: pause; loop 61
    c.extend([0xeb, 0xbd]); // 65: jmp 0 (ask again)
    assert_eq!(c.len(), 67);
    copy_com2_lines(&mut c, 2); // 67: the value and `.`
    assert_eq!(c.len(), 97);
    power_off(&mut c);
    spin_then_message(c, MSG, &format!("GET {MDATA_LIVE_KEY}"))
}

/// What is wrong with the live-metadata case as the console shows it:
/// the guest printed the value set while it ran (after its `NOTFOUND`s,
/// if any), and its VMM started once (no restart brought the value).
pub fn mdata_live_problems(serial: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let notfound = serial.find("NOTFOUND");
    let value = serial.lines().position(|l| l.trim_end() == MDATA_LIVE_VALUE).map(|_| serial.find(MDATA_LIVE_VALUE).unwrap_or(0));
    // (Its first answers are NOTFOUND unless the update came before its
    // first question; a value seen without a restart came live either way.)
    match (notfound, value) {
        (_, None) => problems.push(format!("the live-metadata guest never printed {MDATA_LIVE_VALUE:?}: the update of its running VM did not reach it")),
        (Some(n), Some(v)) if n > v => problems.push(format!("the live-metadata guest printed NOTFOUND after {MDATA_LIVE_VALUE:?}")),
        _ => {}
    }
    let started = format!("vm {MDATA_LIVE_ALIAS}: started");
    let n = serial.lines().filter(|l| l.starts_with(&started)).count();
    if n != 1 {
        problems.push(format!("VM {MDATA_LIVE_ALIAS}'s VMM started {n} times, not once"));
    }
    problems
}

/// The echo guest's code (`zone-guest-echo`, the shell case's VM): prints
/// [`GUEST_HALT_LINE`], then, polling COM1 about every millisecond,
/// echoes what it receives upper-cased (so the test tells the guest's echo
/// from the shell's) with CR as LF; between polls it watches the ACPI
/// power button (the port read also makes the vCPU exit, so the VMM's
/// serial rules are fresh when input arrives) and powers off when pressed.
fn echo_code() -> Vec<u8> {
    const MSG: usize = 96;
    let mut c = print_message(0x3f8, MSG);
    c.extend([0xb9, 0x00, 0x00, 0x04, 0x00]); // 20: mov ecx, 0x40000
    c.extend([0xf3, 0x90, 0xe2, 0xfc]); // 25: pause; loop 25
    c.extend([0x66, 0xba, 0xfd, 0x03]); // 29: mov dx, 0x3fd (COM1 LSR)
    c.push(0xec); // 33: in al, dx
    c.extend([0xa8, 0x01]); // 34: test al, 1 (data ready)
    c.extend([0x74, 0x18]); // 36: jz 62
    c.extend([0x66, 0xba, 0xf8, 0x03]); // 38: mov dx, 0x3f8
    c.push(0xec); // 42: in al, dx
    c.extend([0x3c, 0x0d]); // 43: cmp al, 13
    c.extend([0x75, 0x02]); // 45: jne 49
    c.extend([0xb0, 0x0a]); // 47: mov al, 10
    c.extend([0x3c, 0x61]); // 49: cmp al, 'a'
    c.extend([0x72, 0x06]); // 51: jb 59
    c.extend([0x3c, 0x7a]); // 53: cmp al, 'z'
    c.extend([0x77, 0x02]); // 55: ja 59
    c.extend([0x2c, 0x20]); // 57: sub al, 32
    c.push(0xee); // 59: out dx, al
    c.extend([0xeb, 0xdf]); // 60: jmp 29
    assert_eq!(c.len(), 62);
    c.extend([0x66, 0xba, 0x00, 0x06]); // 62: mov dx, 0x600 (PM1a_STS)
    c.extend([0x66, 0xed]); // 66: in ax, dx
    c.extend([0xf6, 0xc4, 0x01]); // 68: test ah, 1 (PWRBTN_STS)
    c.extend([0x74, 0xcb]); // 71: jz 20
    assert_eq!(c.len(), 73);
    power_off(&mut c);
    spin_then_message(c, MSG, GUEST_HALT_LINE)
}

/// What the two ticking guests of the zone-server restart case
/// (`zone-guest-tick-a`, `zone-guest-tick-b`) print, again and again.
pub const TICK_LINES: [&str; 2] = ["zone-guest: tick a", "zone-guest: tick b"];
/// What each ticking guest prints once it sees the ACPI power button
/// pressed, before it powers off.
pub const TICK_BUTTON_LINES: [&str; 2] = ["zone-guest: tick a: power button pressed", "zone-guest: tick b: power button pressed"];
/// Polls of the power button (each after 0x40000 `pause`s) between two
/// ticks.
const POLLS_PER_TICK: u8 = 2;

/// A ticking guest's code: prints `line` on COM1, polls the ACPI power
/// button [`POLLS_PER_TICK`] times (after every 0x40000 `pause`s), then
/// prints the line again, until the button
/// is pressed; then it prints `button` and powers off. Its lines, coming
/// on after zone-server was restarted, show the guest still running; its
/// `button` line, that the restarted zone-server's stop pressed the
/// button.
fn tick_code(line: &str, button: &str) -> Vec<u8> {
    const BUTTON_MSG: usize = 128;
    const MSG: usize = 96;
    let mut c = print_message(0x3f8, MSG);
    c.extend([0xbb, POLLS_PER_TICK, 0x00, 0x00, 0x00]); // 20: mov ebx, POLLS_PER_TICK
    c.extend([0x66, 0xba, 0x00, 0x06]); // 25: mov dx, 0x600 (PM1a_STS)
    c.extend([0xb9, 0x00, 0x00, 0x04, 0x00]); // 29: mov ecx, 0x40000
    c.extend([0xf3, 0x90, 0xe2, 0xfc]); // 34: pause; loop 34
    c.extend([0x66, 0xed]); // 38: in ax, dx
    c.extend([0xf6, 0xc4, 0x01]); // 40: test ah, 1 (PWRBTN_STS)
    c.extend([0x75, 0x06]); // 43: jnz 51
    c.extend([0xff, 0xcb]); // 45: dec ebx
    c.extend([0x75, 0xec]); // 47: jnz 29
    c.extend([0xeb, 0xcd]); // 49: jmp 0 (the line again)
    assert_eq!(c.len(), 51);
    // 51: print `button` (print_message's `lea` is relative to its own
    // start, here 51).
    c.extend(print_message(0x3f8, BUTTON_MSG - 51));
    power_off(&mut c);
    let mut c = spin_then_message(c, MSG, line);
    assert!(c.len() <= BUTTON_MSG);
    c.resize(BUTTON_MSG, 0x90);
    c.extend(button.as_bytes());
    c.extend(b"\n\0");
    c
}

/// The suite's lines around the ticking guests' watch: zone-server has
/// been restarted; the restarted zone-server is about to stop the VMs.
pub const RESTARTED_LINE: &str = "zone: zone-server restarted with two VMs running";
pub const STOPPING_LINE: &str = "zone: stopping the two VMs through the restarted zone-server";

/// The suite's lines around the deaf VM's first stop (`stop -t 8` begun
/// with `vmadm.begin`, then nothing asked until past its deadline), and
/// what zone-server logs when its timer halts that VM at the deadline.
pub const DEAF_BEGUN_LINE: &str = "zone: stop -t 8 of the deaf VM ";
pub const DEAF_DEADLINE_LINE: &str = "zone: the deaf VM's stop deadline passed with nobody asking";
pub const DEADLINE_HALT_LINE: &str = ": the guest did not power off by its deadline: halted, stopped";

/// What is wrong with the deaf VM's waiting stop as the console shows it:
/// zone-server halted it at its deadline exactly once between
/// [`DEAF_BEGUN_LINE`] and [`DEAF_DEADLINE_LINE`], when the suite asked
/// it nothing: its timer, not a request, ended the stop.
pub fn deaf_stop_problems(serial: &str) -> Vec<String> {
    let (Some(from), Some(to)) = (serial.find(DEAF_BEGUN_LINE), serial.find(DEAF_DEADLINE_LINE)) else {
        return vec![format!("the console never showed {DEAF_BEGUN_LINE:?} then {DEAF_DEADLINE_LINE:?}")];
    };
    let n = serial.get(from..to).unwrap_or("").lines().filter(|l| l.contains(DEADLINE_HALT_LINE)).count();
    if n == 1 {
        Vec::new()
    } else {
        vec![format!(
            "between the deaf VM's stop and its deadline line, zone-server logged {DEADLINE_HALT_LINE:?} {n} times (once: its timer halts it)"
        )]
    }
}

/// What the VMM of `zone-keep` prints when its guest powered off (on the
/// restarted zone-server's power button).
pub const KEEP_POWEROFF_LINE: &str = "vm zone-keep: ended: poweroff";

/// What is wrong with the zone-server restart test as the console shows
/// it: each ticking guest ticks at least twice between [`RESTARTED_LINE`]
/// and [`STOPPING_LINE`] (it runs on after zone-server was killed), and
/// each of the two VMs' VMMs started once (the restarted zone-server found
/// them running rather than booting them again). After the stop line,
/// `zone-keep`'s guest saw the power button (its own line, once) and
/// powered off (its VMM's [`KEEP_POWEROFF_LINE`]), while `zone-keep-net`,
/// stopped with `-F`, never saw it.
pub fn restart_ticks_problems(serial: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let (Some(from), Some(to)) = (serial.find(RESTARTED_LINE), serial.find(STOPPING_LINE)) else {
        return vec![format!("the console never showed {RESTARTED_LINE:?} then {STOPPING_LINE:?}")];
    };
    let window = serial.get(from..to).unwrap_or("");
    for line in TICK_LINES {
        let n = window.lines().filter(|l| l.trim_end() == line).count();
        if n < 2 {
            problems.push(format!("after zone-server's restart, the guest printed {line:?} {n} times (2 at least before the stop)"));
        }
    }
    let after = serial.get(to..).unwrap_or("");
    let count = |text: &str, line: &str| text.lines().filter(|l| l.trim_end() == line).count();
    match (count(serial, TICK_BUTTON_LINES[0]), count(after, TICK_BUTTON_LINES[0])) {
        (1, 1) => {}
        (all, after) => problems.push(format!(
            "zone-keep's guest printed {:?} {all} times ({after} after the stop line): once, on the restarted zone-server's stop",
            TICK_BUTTON_LINES[0]
        )),
    }
    if !after.lines().any(|l| l.contains(KEEP_POWEROFF_LINE)) {
        problems.push(format!("after the stop line, no {KEEP_POWEROFF_LINE:?}: the guest did not power off on the button"));
    }
    let n = count(serial, TICK_BUTTON_LINES[1]);
    if n != 0 {
        problems.push(format!("zone-keep-net's guest, stopped with -F, printed {:?} {n} times", TICK_BUTTON_LINES[1]));
    }
    for alias in ["zone-keep", "zone-keep-net"] {
        let started = format!("vm {alias}: started");
        let n = serial.lines().filter(|l| l.starts_with(&started)).count();
        if n != 1 {
            problems.push(format!("VM {alias}'s VMM started {n} times, not once"));
        }
    }
    problems
}

/// A bzImage of `code` at the 64-bit entry (protected-mode kernel + 0x200).
fn bzimage(code: &[u8]) -> Vec<u8> {
    let sects = 4usize;
    let kernel_len = 0x1000usize;
    let mut img = vec![0u8; (sects + 1) * 512 + kernel_len];
    img[0x1f1] = sects as u8;
    img[0x1f4..0x1f8].copy_from_slice(&((kernel_len / 16) as u32).to_le_bytes());
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x200] = 0xeb; // the jump over the header, as boot.rst says
    img[0x201] = 0x6a;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = 1; // LOADED_HIGH
    img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    img[0x234] = 1; // relocatable
    img[0x236..0x238].copy_from_slice(&3u16.to_le_bytes()); // XLF_KERNEL_64 | above 4G
    img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
    img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
    img[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes()); // init_size
    let entry = (sects + 1) * 512 + 0x200;
    img[entry..entry + code.len()].copy_from_slice(code);
    img
}

/// A test kernel that prints `line` on COM1 and powers its VM off when
/// the ACPI power button is pressed (as `zone-guest-halt`; the demo's
/// `demo-guest`).
pub fn button_guest(line: &str) -> Vec<u8> {
    bzimage(&code(line, Then::Button))
}

/// Writes the test kernels: (boot-file name, host path) for the archive.
pub fn guests() -> Result<Vec<(String, PathBuf)>> {
    let dir = crate::out_dir().join("zone");
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for (name, line, then) in [
        ("zone-guest-halt", GUEST_HALT_LINE, Then::Button),
        ("zone-guest-off", GUEST_OFF_LINE, Then::Off),
        ("zone-guest-deaf", GUEST_HALT_LINE, Then::Spin),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bzimage(&code(line, then)))?;
        out.push((name.to_string(), path));
    }
    let path = dir.join("zone-guest-mdata");
    std::fs::write(&path, bzimage(&mdata_code()))?;
    out.push(("zone-guest-mdata".to_string(), path));
    let path = dir.join("zone-guest-mdata-live");
    std::fs::write(&path, bzimage(&mdata_live_code()))?;
    out.push(("zone-guest-mdata-live".to_string(), path));
    for (name, line, button) in
        [("zone-guest-tick-a", TICK_LINES[0], TICK_BUTTON_LINES[0]), ("zone-guest-tick-b", TICK_LINES[1], TICK_BUTTON_LINES[1])]
    {
        let path = dir.join(name);
        std::fs::write(&path, bzimage(&tick_code(line, button)))?;
        out.push((name.to_string(), path));
    }
    let path = dir.join("zone-guest-echo");
    std::fs::write(&path, bzimage(&echo_code()))?;
    out.push(("zone-guest-echo".to_string(), path));
    Ok(out)
}

/// The zone case's netd.conf (its etherstub and VNIC admins), apart from
/// [`guests`], which other cases with their own netd.conf use too.
pub fn netd_conf() -> Result<(String, PathBuf)> {
    let dir = crate::out_dir().join("zone");
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("netd.conf");
    std::fs::write(&conf, NETD_CONF)?;
    Ok(("netd.conf".to_string(), conf))
}

#[cfg(test)]
mod create_figure_tests {
    use super::*;

    /// A serial with every stage line of `alias`, its marks 1 ms apart
    /// from `base` ms (the VMM's and zone-server's lines in either order).
    fn staged(alias: &str, process: &str, base: u64, vmm_first: bool) -> String {
        let at = |i: u64| (base + i) * 1_000_000;
        let zone = format!(
            "vm {alias}: create stages (zone-server) received={} refreshed={} image_asked={} image_read={} \
             validated={} record_volume={} cloned={} vmm_asked={} vmm_started={} answered={}\n",
            at(1), at(2), at(3), at(4), at(5), at(6), at(7), at(8), at(22), at(24)
        );
        let init = format!(
            "init: start stages ({process}) asked={} process={} elf={} caps={} files={} resumed={}\n",
            at(9), at(10), at(11), at(12), at(13), at(14)
        );
        let vmm = format!(
            "vm {alias}: create stages ({process}) main={} parsed={} ram_allocated={} loaded={} ram_mapped={} \
             vcpus={} devices={}\r\n",
            at(15), at(16), at(17), at(18), at(19), at(20), at(21)
        );
        let sent = format!("zone: vmadm create of {alias} sent at {} ns since boot\n", at(0));
        let entry = format!("vm {alias}: first guest entry at {} ns since boot\n", at(23));
        if vmm_first { format!("{init}{vmm}{entry}{zone}{sent}") } else { format!("{init}{zone}{sent}{vmm}{entry}") }
    }

    #[test]
    fn stages_are_the_times_between_the_marks_on_the_way_and_a_gap_is_a_problem() {
        let serial = staged("img-a", "vmm-server-3", 1000, true)
            + &staged("img-b", "vmm-server-4", 2000, false)
            + &staged("img-big", "vmm-server-5", 3000, true);
        let mut problems = Vec::new();
        let f = stage_figures(&serial, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        // The 21 stages, the threads to the first entry, the answer.
        assert_eq!(f.len(), 3 * 23);
        for tag in ["img_a", "img_b", "img_big"] {
            for (name, _, _) in CREATE_STAGES {
                let fig = f.iter().find(|x| x.name == format!("vmadm_create_{name}_{tag}")).expect(name);
                assert_eq!(fig.value, "1.0", "{name}");
            }
            assert_eq!(f.iter().find(|x| x.name == format!("vmadm_create_threads_{tag}")).unwrap().value, "2.0");
            assert_eq!(f.iter().find(|x| x.name == format!("vmadm_create_answer_{tag}")).unwrap().value, "2.0");
        }
        // init's line of another instance is not this VM's.
        let wrong = serial.replace("init: start stages (vmm-server-4)", "init: start stages (vmm-server-9)");
        let mut problems = Vec::new();
        assert_eq!(stage_figures(&wrong, &mut problems).len(), 2 * 23);
        assert!(problems[0].starts_with("img-b:"), "{problems:?}");
        // A mark missing, or one before the stage before it.
        let missing =
            serial.replace("vm img-a: create stages (vmm-server-3) main", "vm img-a: create stages (vmm-server-3) xmain");
        let mut problems = Vec::new();
        stage_figures(&missing, &mut problems);
        assert!(problems.len() == 1 && problems[0].contains("vmm_scheduled"), "{problems:?}");
        let backwards = serial.replace("cloned=3007000000", "cloned=3005500000");
        let mut problems = Vec::new();
        stage_figures(&backwards, &mut problems);
        assert!(problems.len() == 1 && problems[0].starts_with("img-big: stage clone"), "{problems:?}");
    }

    #[test]
    fn create_times_pair_each_alias_and_refuse_what_is_missing_or_backwards() {
        let serial = "zone: vmadm create of img-a sent at 1000000000 ns since boot\n\
            [INFO ] x\n\
            vm img-a: first guest entry at 1042500000 ns since boot\r\n\
            zone: vmadm create of img-b sent at 2000000000 ns since boot\n\
            vm img-b: first guest entry at 2030000000 ns since boot\n\
            zone: vmadm create of img-big sent at 3000000000 ns since boot\n\
            vm img-big: first guest entry at 3031000000 ns since boot\n";
        let mut problems = Vec::new();
        let f = create_figures(serial, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let got: Vec<(String, String)> = f.iter().map(|f| (f.name.clone(), f.value.clone())).collect();
        assert_eq!(got, [
            ("vmadm_create_to_first_entry_img_a".to_string(), "42.5".to_string()),
            ("vmadm_create_to_first_entry_img_b".to_string(), "30.0".to_string()),
            ("vmadm_create_to_first_entry_img_big".to_string(), "31.0".to_string()),
        ]);
        let backwards = serial.replace("3031000000", "2999000000");
        let mut problems = Vec::new();
        assert_eq!(create_figures(&backwards, &mut problems).len(), 2);
        assert!(problems[0].starts_with("img-big:"), "{problems:?}");
        let mut problems = Vec::new();
        assert!(create_figures("vm img-a: first guest entry at x ns since boot", &mut problems).is_empty());
        assert_eq!(problems.len(), 3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live-metadata watch: the value printed after NOTFOUNDs by a VMM
    /// started once passes; no value, a second start, or NOTFOUND after
    /// the value fail.
    #[test]
    fn the_live_metadata_watch_wants_the_value_from_the_first_vmm() {
        let start = format!("vm {MDATA_LIVE_ALIAS}: started: 1 vCPUs, 64 MiB\r\n");
        let good = format!("{start}NOTFOUND\r\nNOTFOUND\r\nSUCCESS\r\n{MDATA_LIVE_VALUE}\r\n.\r\n");
        assert_eq!(mdata_live_problems(&good), Vec::<String>::new());
        assert_eq!(mdata_live_problems(&format!("{start}SUCCESS\r\n{MDATA_LIVE_VALUE}\r\n.\r\n")), Vec::<String>::new());
        let p = mdata_live_problems(&format!("{start}NOTFOUND\r\nNOTFOUND\r\n"));
        assert!(p.len() == 1 && p[0].contains("never printed"), "{p:?}");
        let p = mdata_live_problems(&format!("{start}NOTFOUND\r\n{start}SUCCESS\r\n{MDATA_LIVE_VALUE}\r\n.\r\n"));
        assert!(p.len() == 1 && p[0].contains("started 2 times"), "{p:?}");
        let p = mdata_live_problems(&format!("{start}SUCCESS\r\n{MDATA_LIVE_VALUE}\r\n.\r\nNOTFOUND\r\n"));
        assert!(p.len() == 1 && p[0].contains("after"), "{p:?}");
    }

    /// Ticks of both guests between the restart and the stop, each VMM
    /// started once: no problem; a guest that stopped ticking, or a VM
    /// booted again by the restarted zone-server, is one.
    #[test]
    fn the_restart_watch_wants_both_guests_ticking_on_in_their_first_vmm() {
        let tick = |l: &str| format!("{l}\r\n");
        let start = "vm zone-keep: started: 1 vCPUs, 64 MiB\r\nvm zone-keep-net: started: 1 vCPUs, 64 MiB\r\n";
        let ticks = [tick(TICK_LINES[0]), tick(TICK_LINES[1]), tick(TICK_LINES[0]), tick(TICK_LINES[1])].concat();
        let stop = format!("{}[INFO ] {KEEP_POWEROFF_LINE}\r\n", tick(TICK_BUTTON_LINES[0]));
        let good = format!("{start}{ticks}{RESTARTED_LINE}\r\n{ticks}{STOPPING_LINE}\r\n{stop}");
        assert_eq!(restart_ticks_problems(&good), Vec::<String>::new());
        let silent = format!("{start}{ticks}{RESTARTED_LINE}\r\n{}{STOPPING_LINE}\r\n{ticks}{stop}", tick(TICK_LINES[1]).repeat(2));
        let p = restart_ticks_problems(&silent);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("tick a") && p[0].contains("0 times"), "{p:?}");
        let booted_again =
            format!("{start}{RESTARTED_LINE}\r\nvm zone-keep: started: 1 vCPUs, 64 MiB\r\n{ticks}{STOPPING_LINE}\r\n{stop}");
        let p = restart_ticks_problems(&booted_again);
        assert!(p.len() == 1 && p[0].contains("zone-keep's VMM started 2 times"), "{p:?}");
        // Halted rather than stopped by its button: neither the guest's
        // line nor the poweroff.
        let halted = format!("{start}{ticks}{RESTARTED_LINE}\r\n{ticks}{STOPPING_LINE}\r\n");
        let p = restart_ticks_problems(&halted);
        assert!(p.len() == 2 && p[0].contains("0 times") && p[1].contains("did not power off"), "{p:?}");
        // The button pressed before the stop line (by someone else) does
        // not count.
        let early = format!("{start}{ticks}{RESTARTED_LINE}\r\n{ticks}{stop}{STOPPING_LINE}\r\n");
        let p = restart_ticks_problems(&early);
        assert!(p.len() == 2 && p[0].contains("0 after the stop line"), "{p:?}");
        // The -F guest saw a button.
        let net_button = format!("{good}{}", tick(TICK_BUTTON_LINES[1]));
        let p = restart_ticks_problems(&net_button);
        assert!(p.len() == 1 && p[0].contains("zone-keep-net's guest, stopped with -F"), "{p:?}");
        assert_eq!(restart_ticks_problems("nothing").len(), 1);
    }

    /// The timer's halt between the two lines: no problem; none, or one
    /// only after the deadline line (a request's), is one.
    #[test]
    fn the_deaf_stop_wants_the_timer_s_halt_before_the_deadline_line() {
        let begun = format!("{DEAF_BEGUN_LINE}5e3c: pending\r\n");
        let halt = format!("[INFO ] VM 5e3c{DEADLINE_HALT_LINE}\r\n");
        let end = format!("{DEAF_DEADLINE_LINE}\r\n");
        assert_eq!(deaf_stop_problems(&format!("{begun}{halt}{end}")), Vec::<String>::new());
        let late = deaf_stop_problems(&format!("{begun}{end}{halt}"));
        assert!(late.len() == 1 && late[0].contains("0 times"), "{late:?}");
        assert_eq!(deaf_stop_problems(&format!("{begun}{halt}{halt}{end}")).len(), 1);
        assert_eq!(deaf_stop_problems(&halt).len(), 1);
    }

    /// vmm-server's own loader takes the kernels, with the entry where the
    /// code is.
    #[test]
    fn vmm_server_accepts_the_test_kernels() {
        for then in [Then::Off, Then::Button, Then::Spin] {
            let img = bzimage(&code("x", then));
            let bz = vmm_server::boot::linux::BzImage::parse(&img).unwrap();
            assert_eq!(bz.entry_64() - bz.load_addr(), 0x200);
            let at = 5 * 512 + 0x200;
            assert_eq!(img[at], 0xfc);
        }
        let img = bzimage(&echo_code());
        let bz = vmm_server::boot::linux::BzImage::parse(&img).unwrap();
        assert_eq!(bz.entry_64() - bz.load_addr(), 0x200);
        let img = bzimage(&tick_code(TICK_LINES[0], TICK_BUTTON_LINES[0]));
        let bz = vmm_server::boot::linux::BzImage::parse(&img).unwrap();
        assert_eq!(bz.entry_64() - bz.load_addr(), 0x200);
        let img = bzimage(&mdata_code());
        let bz = vmm_server::boot::linux::BzImage::parse(&img).unwrap();
        assert_eq!(bz.entry_64() - bz.load_addr(), 0x200);
    }
}
