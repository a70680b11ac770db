//! Firmware boot end to end: a VM with `"bootrom": "bios"` and no kernel
//! boots Debian's SeaBIOS (fetched with `apt-get download seabios` into
//! `images/downloads/`, as the guest images are) on Alcove nested in QEMU
//! TCG, and SeaBIOS boots the VM's virtio-blk disk marked `"boot": true`.
//!
//! The disk is made for the run: sector 0 is a boot sector (16-bit code
//! assembled here) that prints a line on COM1, reads sector 1 through the
//! BIOS (int 13h, i.e. SeaBIOS's virtio-blk driver) and prints it, then
//! powers the VM off through the ACPI PM block. Sector 1 holds a line with
//! a nonce new each run, so only a real read of the disk can print it.
//! The test reads the serial log: SeaBIOS's banner (its debug console,
//! port 0x402), the boot sector's line and the nonce line after it, the
//! VM's `poweroff` ending and everything returned.

use crate::Result;
use crate::guest_images::{self, Pkg};
use crate::image;
use crate::vm::{VmEnding, VmLog, VmPlan};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vmm_server::config::Bootrom;
use vmm_server::firmware::{OVMF_FILE, SEABIOS_FILE};

pub const CASE: &str = "linux/seabios-boot-disk-epyc-svm";
const TIMEOUT: Duration = Duration::from_secs(300);
const ALIAS: &str = "fwboot";
const SEABIOS: &str = "seabios";
const SEABIOS_IN_PACKAGE: &str = "usr/share/seabios/bios-256k.bin";
const OVMF: &str = "ovmf";
const OVMF_IN_PACKAGE: &str = "usr/share/ovmf/OVMF.fd";
pub const BOOT_SECTOR_LINE: &str = "ALCOVE-BOOTSECTOR: started by the firmware";

/// `target/alcove/images/bios-256k.bin` from the seabios version apt-cache
/// names (fetched into `images/downloads/` unless the stamp says it is
/// there).
pub fn seabios() -> Result<PathBuf> {
    firmware_image(SEABIOS, SEABIOS_IN_PACKAGE, SEABIOS_FILE)
}

/// `target/alcove/images/OVMF.fd` from Debian's `ovmf`, as [`seabios`].
pub fn ovmf() -> Result<PathBuf> {
    firmware_image(OVMF, OVMF_IN_PACKAGE, OVMF_FILE)
}

/// The firmware image of `bootrom`.
pub fn image(bootrom: Bootrom) -> Result<PathBuf> {
    match bootrom {
        Bootrom::Bios => seabios(),
        Bootrom::Uefi => ovmf(),
    }
}

/// `file` in the images folder: `in_package` of the Debian package
/// `package` at the version apt-cache names.
fn firmware_image(package: &str, in_package: &str, file: &str) -> Result<PathBuf> {
    let out = guest_images::dir();
    fs::create_dir_all(&out)?;
    let (bin, stamp_path) = (out.join(file), out.join(format!("{package}.stamp")));
    let pkg = Pkg { name: package.into(), version: guest_images::candidate(package)? };
    let stamp = format!("{} {}\n", pkg.name, pkg.version);
    if bin.is_file() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(bin);
    }
    let deb = guest_images::fetch(&pkg, |_| false)?;
    let work = out.join(format!(".work-{package}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    guest_images::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&work), &format!("dpkg-deb -x {}", deb.display()))?;
    let from = work.join(in_package);
    if !from.is_file() {
        return Err(format!("{}: no {in_package} in the package", deb.display()).into());
    }
    let _ = fs::remove_file(&stamp_path);
    fs::rename(&from, &bin)?;
    fs::write(&stamp_path, stamp)?;
    fs::remove_dir_all(&work)?;
    eprintln!("images: {} from {} {}", bin.display(), pkg.name, pkg.version);
    Ok(bin)
}

/// A tiny 16-bit assembler: bytes with labels and relative fix-ups.
struct Asm {
    code: Vec<u8>,
    org: u16,
    labels: Vec<(&'static str, usize)>,
    /// (where, label, width 1 or 2, relative?)
    fixups: Vec<(usize, &'static str, usize, bool)>,
}

impl Asm {
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.code.extend_from_slice(b);
        self
    }
    fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.push((name, self.code.len()));
        self
    }
    /// An opcode followed by a rel8 to `label`.
    fn rel8(&mut self, op: u8, label: &'static str) -> &mut Self {
        self.code.push(op);
        self.fixups.push((self.code.len(), label, 1, true));
        self.code.push(0);
        self
    }
    /// `call rel16`.
    fn call(&mut self, label: &'static str) -> &mut Self {
        self.code.push(0xE8);
        self.fixups.push((self.code.len(), label, 2, true));
        self.code.extend_from_slice(&[0, 0]);
        self
    }
    /// `mov si, imm16` with the label's absolute address.
    fn mov_si(&mut self, label: &'static str) -> &mut Self {
        self.abs16(&[0xBE], label)
    }
    /// Opcode bytes followed by the label's absolute address (imm16 or
    /// disp16).
    fn abs16(&mut self, op: &[u8], label: &'static str) -> &mut Self {
        self.code.extend_from_slice(op);
        self.fixups.push((self.code.len(), label, 2, false));
        self.code.extend_from_slice(&[0, 0]);
        self
    }
    fn finish(mut self) -> Vec<u8> {
        for (at, label, width, relative) in std::mem::take(&mut self.fixups) {
            let target = self.labels.iter().find(|(n, _)| *n == label).map(|l| l.1).expect("label defined");
            let v: i64 =
                if relative { target as i64 - (at + width) as i64 } else { i64::from(self.org) + target as i64 };
            self.code[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
        }
        self.code
    }
}

/// The boot sector: prints [`BOOT_SECTOR_LINE`], reads sector 1 to 0x8000
/// with int 13h AH=02 (drive in DL as the BIOS passed it; up to three
/// tries with a reset between, as boot sectors do, each failure printed
/// with its status), prints it (a NUL-ended string), powers off (PM1a_CNT
/// 0x604: SLP_TYP 5, SLP_EN).
pub fn boot_sector() -> Vec<u8> {
    let mut a = Asm { code: Vec::new(), org: 0x7C00, labels: Vec::new(), fixups: Vec::new() };
    a.bytes(&[0xFA, 0xFC]) // cli; cld
        .bytes(&[0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0]) // xor ax,ax; mov ds/es/ss,ax
        .bytes(&[0xBC, 0x00, 0x7C, 0xFB]) // mov sp,0x7c00; sti
        .mov_si("hello")
        .abs16(&[0x88, 0x16], "drive") // mov [drive],dl
        .call("print")
        .bytes(&[0xBF, 0x03, 0x00]) // mov di,3
        .label("retry")
        .abs16(&[0x8A, 0x16], "drive") // mov dl,[drive]
        .bytes(&[0xB8, 0x01, 0x02, 0xB9, 0x02, 0x00, 0xB6, 0x00, 0xBB, 0x00, 0x80]) // ax=0201 cx=0002 dh=0 bx=8000
        .bytes(&[0xCD, 0x13]) // int 13h
        .rel8(0x73, "ok") // jnc ok
        .abs16(&[0xBB], "hex") // mov bx,hex
        .bytes(&[0x88, 0xE0, 0xC0, 0xE8, 0x04, 0xD7]) // mov al,ah; shr al,4; xlat
        .abs16(&[0xA2], "status") // mov [status],al
        .bytes(&[0x88, 0xE0, 0x24, 0x0F, 0xD7]) // mov al,ah; and al,0xf; xlat
        .abs16(&[0xA2], "status1") // mov [status+1],al
        .mov_si("failed")
        .call("print")
        .abs16(&[0x8A, 0x16], "drive") // mov dl,[drive]
        .bytes(&[0x31, 0xC0, 0xCD, 0x13]) // xor ax,ax; int 13h (reset)
        .bytes(&[0x4F]) // dec di
        .rel8(0x75, "retry") // jnz retry
        .rel8(0xEB, "hang")
        .label("ok")
        .bytes(&[0xBE, 0x00, 0x80]) // mov si,0x8000
        .call("print")
        .bytes(&[0xBA, 0x04, 0x06, 0xB8, 0x00, 0x34, 0xEF]) // mov dx,0x604; mov ax,0x3400; out dx,ax
        .label("hang")
        .bytes(&[0xFA, 0xF4]) // cli; hlt
        .rel8(0xEB, "hang")
        .label("print")
        .bytes(&[0xAC, 0x84, 0xC0]) // lodsb; test al,al
        .rel8(0x74, "done")
        .bytes(&[0x88, 0xC3, 0xBA, 0xFD, 0x03]) // mov bl,al; mov dx,0x3fd
        .label("wait")
        .bytes(&[0xEC, 0xA8, 0x20]) // in al,dx; test al,0x20
        .rel8(0x74, "wait")
        .bytes(&[0xBA, 0xF8, 0x03, 0x88, 0xD8, 0xEE]) // mov dx,0x3f8; mov al,bl; out dx,al
        .rel8(0xEB, "print")
        .label("done")
        .bytes(&[0xC3])
        .label("drive")
        .bytes(&[0])
        .label("hex")
        .bytes(b"0123456789abcdef")
        .label("hello")
        .bytes(format!("{BOOT_SECTOR_LINE}\r\n\0").as_bytes())
        .label("failed")
        .bytes(FAILED_PREFIX.as_bytes())
        .label("status")
        .bytes(b"?")
        .label("status1")
        .bytes(b"?\r\n\0");
    let mut code = a.finish();
    assert!(code.len() <= 510, "boot sector too long");
    code.resize(510, 0);
    code.extend_from_slice(&[0x55, 0xAA]);
    code
}

/// What the boot sector prints before the status of a failed read.
pub const FAILED_PREFIX: &str = "ALCOVE-BOOTSECTOR: int 13h read failed, status 0x";

/// The line sector 1 holds for this run.
pub fn nonce_line(nonce: u64) -> String {
    format!("ALCOVE-BOOTDISK: sector 1 read through int 13h, nonce {nonce:016x}")
}

/// A 1 MiB disk: the boot sector, then sector 1 with the nonce line.
pub fn disk_image(nonce: u64) -> Vec<u8> {
    let mut d = boot_sector();
    let mut s1 = format!("{}\r\n\0", nonce_line(nonce)).into_bytes();
    s1.resize(512, 0);
    d.extend_from_slice(&s1);
    d.resize(1 << 20, 0);
    d
}

pub struct Outcome {
    pub problems: Vec<String>,
    pub seconds: f64,
    pub log: PathBuf,
    pub tail: Vec<String>,
}

pub fn run(kernel: &Path) -> Result<Outcome> {
    let dir = crate::out_dir().join("fwboot-e2e");
    fs::create_dir_all(&dir)?;
    let nonce = u64::from_le_bytes(crate::vm::random_bytes(8).try_into().unwrap_or([7; 8]));
    let disk = dir.join("boot-disk.img");
    fs::write(&disk, disk_image(nonce))?;
    let json_path = dir.join("vm.json");
    fs::write(
        &json_path,
        format!(
            "{{\n  \"alias\": \"{ALIAS}\",\n  \"brand\": \"bhyve\",\n  \"ram\": 128,\n  \"vcpus\": 2,\n  \
             \"bootrom\": \"bios\",\n  \"disks\": [{{\"path\": \"boot-disk.img\", \"boot\": true}}]\n}}\n"
        ),
    )?;
    let plan = VmPlan::load(&json_path)?;
    let system = plan.write_boot_files(&dir.join("boot"))?;
    let iso = image::iso_of(kernel, "test-fwboot", "", &system)?;
    let logs = crate::out_dir().join("logs");
    fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{}.log", CASE.replace('/', "-")));
    let mut c = plan.qemu().command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(fs::File::create(log.with_extension("stderr"))?);
    let start = Instant::now();
    let mut child = c.spawn().map_err(|e| format!("starting QEMU: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = out.read_to_end(&mut all);
        all
    });
    let mut timed_out = false;
    loop {
        if let Some(status) = child.try_wait()? {
            crate::emu::note_exit(&status);
            break;
        }
        if start.elapsed() >= TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seconds = start.elapsed().as_secs_f64();
    let serial = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    fs::write(&log, &serial)?;
    let mut problems = judge(&serial, &plan.name, nonce);
    if timed_out {
        problems.push(format!("timed out after {} s", TIMEOUT.as_secs()));
    }
    let tail = serial.lines().rev().take(25).map(str::to_string).collect::<Vec<_>>().into_iter().rev().collect();
    Ok(Outcome { problems, seconds, log, tail })
}

/// Everything that fails the run, from the serial log.
pub fn judge(serial: &str, vm_name: &str, nonce: u64) -> Vec<String> {
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    let log = VmLog::read(lines.iter().copied(), vm_name);
    let mut problems = log.problems.clone();
    let Some(started) = log.started else {
        problems.push(format!("no \"vm {vm_name}: started: ...\" line: the VM never started"));
        return problems;
    };
    let after = &lines[started..];
    let find = |needle: &str| after.iter().position(|l| l.contains(needle));
    let banner = find("SeaBIOS (version ");
    let sector = find(BOOT_SECTOR_LINE);
    let read = find(&nonce_line(nonce));
    match (banner, sector, read) {
        (None, _, _) => problems.push("no \"SeaBIOS (version ...)\" banner after the VM started".into()),
        (Some(_), None, _) => problems.push(format!("SeaBIOS started but the boot sector never ran ({BOOT_SECTOR_LINE:?})")),
        (Some(b), Some(s), _) if s < b => problems.push("the boot sector's line came before SeaBIOS's banner".into()),
        (_, Some(_), None) => problems.push(format!("the boot sector did not print sector 1 ({:?})", nonce_line(nonce))),
        (_, Some(s), Some(r)) if r < s => problems.push("sector 1's line came before the boot sector's".into()),
        _ => {}
    }
    let failures: Vec<&&str> = lines.iter().filter(|l| l.contains(FAILED_PREFIX)).collect();
    if read.is_none() && !failures.is_empty() {
        problems.push(format!("the boot sector's int 13h reads failed: {failures:?}"));
    }
    match log.ending() {
        Some(VmEnding::PowerOff) => {}
        Some(e) => problems.push(format!("the VM ended with {e}, expected poweroff")),
        None => problems.push(format!("expected one \"vm {vm_name}: ended: poweroff\" line, got {:?}", log.endings)),
    }
    if log.budget_returned != 1 {
        problems.push(format!("expected the VMM to return everything once, saw {} such lines", log.budget_returned));
    }
    if let Some(l) = lines.iter().find(|l| l.contains("ALCOVE-FATAL")) {
        problems.push(format!("the kernel reported a fatal error: {l}"));
    }
    problems
}

/// The Linux guest booted from its own disk through firmware: a GRUB
/// disk made with `grub-mkrescue` (GRUB for `i386-pc` in the MBR and for
/// `x86_64-efi` in an EFI system partition, both from the host's GRUB
/// packages; `xorriso` and `mtools` build it, no root or loop devices)
/// holding the Debian cloud kernel and the test initramfs, booted by
/// OVMF or SeaBIOS. The data disk (vda) is the direct-boot test's: the
/// same checks (nproc, hash, marker, console echo, one reboot, poweroff,
/// everything returned), and each boot must pass through the firmware and
/// GRUB again (the reboot goes back through the firmware).
pub const OVMF_LINUX_CASE: &str = "linux/ovmf-boot-disk-epyc-svm";
pub const SEABIOS_LINUX_CASE: &str = "linux/seabios-grub-disk-epyc-svm";
/// What the disk's grub.cfg prints before it loads Linux.
pub const GRUB_LINE: &str = "ALCOVE-GRUB: started by the firmware";
const FW_LINUX_TIMEOUT: Duration = Duration::from_secs(900);

/// The boot disk's `grub.cfg`: GRUB on COM1, its line, then Linux with
/// `cmdline`.
pub fn grub_cfg(cmdline: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\nset timeout=0\n\
         echo \"{GRUB_LINE} (${{grub_platform}})\"\n\
         linux /boot/vmlinuz {cmdline}\ninitrd /boot/initrd.img\nboot\n"
    )
}

/// `dir/boot-disk.img`: the GRUB disk with `images`' kernel and initramfs.
pub fn grub_disk(dir: &Path, images: &guest_images::Images, cmdline: &str) -> Result<PathBuf> {
    let tree = dir.join("grub-tree");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(tree.join("boot/grub"))?;
    fs::copy(&images.vmlinuz, tree.join("boot/vmlinuz"))?;
    fs::copy(&images.initramfs, tree.join("boot/initrd.img"))?;
    fs::write(tree.join("boot/grub/grub.cfg"), grub_cfg(cmdline))?;
    let disk = dir.join("boot-disk.img");
    let _ = fs::remove_file(&disk);
    guest_images::output(Command::new("grub-mkrescue").arg("-o").arg(&disk).arg(&tree), "grub-mkrescue")?;
    fs::remove_dir_all(&tree)?;
    Ok(disk)
}

/// The VM: the data disk first (the guest's vda), the boot disk second.
pub fn linux_vm_json(bootrom: Bootrom, vcpus: u32) -> String {
    let rom = match bootrom {
        Bootrom::Bios => "bios",
        Bootrom::Uefi => "uefi",
    };
    format!(
        "{{\n  \"alias\": \"{}\",\n  \"brand\": \"bhyve\",\n  \"ram\": {},\n  \"vcpus\": {vcpus},\n  \
         \"bootrom\": \"{rom}\",\n  \"disks\": [{{\"path\": \"disk.img\"}}, {{\"path\": \"boot-disk.img\", \"boot\": true}}]\n}}\n",
        crate::linux::ALIAS,
        crate::linux::RAM_MIB
    )
}

/// What a firmware prints once per boot.
pub fn firmware_banner(bootrom: Bootrom) -> &'static str {
    match bootrom {
        Bootrom::Bios => "SeaBIOS (version ",
        Bootrom::Uefi => "BdsDxe: starting ",
    }
}

/// The firmware and GRUB lines each of `boots` boots must show, in order.
pub fn judge_firmware_boots(serial: &str, bootrom: Bootrom, boots: usize) -> Vec<String> {
    let banner = firmware_banner(bootrom);
    let mut problems = Vec::new();
    let mut order = Vec::new();
    for l in serial.lines() {
        if l.contains(banner) {
            order.push('F');
        } else if l.contains(GRUB_LINE) {
            order.push('G');
        } else if l.contains("alcove-guest: init started") {
            order.push('L');
        }
    }
    let want: String = "FGL".repeat(boots);
    let got: String = order.iter().collect();
    // The firmware may print its banner line more than once per boot
    // (BdsDxe: one per option tried): collapse repeats.
    let mut collapsed = String::new();
    for c in got.chars() {
        if !collapsed.ends_with(c) {
            collapsed.push(c);
        }
    }
    // The VM's first disk is the data disk, the boot disk is second: a
    // firmware that follows `bootorder` goes to the boot disk first and
    // never tries (and fails on) the data disk.
    let tried_other = match bootrom {
        Bootrom::Uefi => "BdsDxe: failed to load ",
        Bootrom::Bios => "Boot failed: ",
    };
    if let Some(l) = serial.lines().find(|l| l.contains(tried_other)) {
        problems.push(format!(
            "the firmware tried another device before the disk marked \"boot\": true (bootorder not followed): {}",
            l.trim()
        ));
    }
    if collapsed != want {
        problems.push(format!(
            "expected {boots} boot(s) each through the firmware ({banner:?}), GRUB ({GRUB_LINE:?}) and the guest's init, \
             in that order; saw {collapsed:?} (F firmware, G GRUB, L init)"
        ));
    }
    problems
}

/// Boots the Linux test guest from the GRUB disk through `bootrom`.
pub fn run_linux(kernel: &Path, images: &guest_images::Images, bootrom: Bootrom, name: &str, timeout: Duration) -> Result<crate::linux::Outcome> {
    use crate::emu::capture_timed_answering;
    use crate::harness::Ending;
    use kcore::testproto::{EXIT_PASS, qemu_status};
    let dir = linux_run_dir(name);
    fs::create_dir_all(&dir)?;
    let vcpus = crate::linux::VCPUS;
    let disk = dir.join("disk.img");
    let before = crate::vm::random_bytes(crate::linux::DISK_BYTES);
    fs::write(&disk, &before)?;
    let hash = crate::vm::sha256_file(&disk)?;
    grub_disk(&dir, images, "console=ttyS0 panic=-1 alcove.reboot-once alcove.console-echo")?;
    let json_path = dir.join("vm.json");
    fs::write(&json_path, linux_vm_json(bootrom, vcpus))?;
    let plan = VmPlan::load(&json_path)?;
    let system = plan.write_boot_files(&dir.join("boot"))?;
    let iso = image::iso_of(kernel, &format!("test-{}", name.replace('/', "-")), "", &system)?;
    let mut c = plan.qemu().command(&iso);
    c.args(["-monitor", "none", "-serial", "stdio"]);
    let answer = Some(("alcove-guest: type a line".to_string(), format!("{}\n", crate::linux::TYPED).into_bytes()));
    let t = capture_timed_answering(c, &name.replace('/', "-"), Some(timeout), false, answer)?;
    let run = t.run.clone();
    let mut problems = crate::vm::check_linux_run(&run.serial, &plan.name, vcpus, Some(&hash), true);
    problems.extend(judge_firmware_boots(&run.serial, bootrom, 2));
    if let Some(l) = run.serial.lines().find(|l| l.starts_with("ALCOVE-FATAL")) {
        problems.push(format!("the kernel reported a fatal error: {}", l.trim_end()));
    }
    match run.ending {
        Ending::Qemu(s) if s == qemu_status(EXIT_PASS) => {}
        Ending::Qemu(s) => problems.push(format!("QEMU exited with status {s} (a powered-off VM ends it with 33)")),
        Ending::Timeout(s) => problems.push(format!("timed out after {s} s")),
        Ending::Bochs { .. } => problems.push("not a QEMU run".into()),
    }
    let after = fs::read(&disk)?;
    if let Some(p) = crate::vm::check_disk_after(&before, &after, vcpus) {
        problems.push(format!("{}: {p}", disk.display()));
    }
    let summary = problems.is_empty().then(|| {
        let init = crate::linux::Outcome::first_init(&t, &plan.name)
            .map(|d| format!(", {:.1} s from VM start to init", d.as_secs_f64()))
            .unwrap_or_default();
        let phases = boot_phases(&t.lines, &plan.name, bootrom).map(|p| format!(" ({p})")).unwrap_or_default();
        format!(
            "{} -> GRUB -> Linux twice (reboot through the firmware), nproc={vcpus}, disk hash matches, marker read \
             back, typed line received, powered off, everything returned after each boot{init}{phases}",
            if bootrom == Bootrom::Uefi { "OVMF" } else { "SeaBIOS" }
        )
    });
    Ok(crate::linux::Outcome {
        name: name.into(),
        run,
        timed: Some(t),
        vm_name: plan.name,
        problems,
        disk_checked: true,
        vcpus,
        summary,
    })
}

/// The GRUB disk booted through OVMF from RAM disks under Bochs VMX (slow
/// tier, by name): Bochs has no virtio-blk, so storaged serves the VM's
/// disks from copies in the boot archive.
pub const OVMF_BOCHS_CASE: &str = "linux/ovmf-grub-ram-disk-bochs-vmx";
/// The same through OVMF under QEMU with the disks as RAM disks (no
/// virtio-blk drives attached): the RAM-disk path on a faster machine.
pub const OVMF_RAM_QEMU_CASE: &str = "linux/ovmf-grub-ram-disk-epyc-svm";
/// Bochs: OVMF, GRUB reading 17 MB and Linux at Bochs's pace.
const OVMF_BOCHS_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

/// Boots the GRUB disk of [`OVMF_LINUX_CASE`] through OVMF with two vCPUs,
/// the VM's two disks (the data disk, then the boot disk) served by
/// storaged as RAM disks from the boot archive: under Bochs
/// `corei7_skylake_x` twice (one reboot through the firmware, the marker
/// found by the second boot) or under QEMU once (no drives attached). The
/// checks are the direct-boot guest's (nproc, the data disk's hash read
/// through the RAM disk, the marker written into its memory, poweroff,
/// everything returned), the firmware's banner and GRUB's line before
/// each init, and the host's disk files unchanged (writes stay in memory).
pub fn run_ram_disk(kernel: &Path, images: &guest_images::Images, bochs: bool, name: &str, timeout: Duration) -> Result<crate::linux::Outcome> {
    use crate::harness::Ending;
    use kcore::testproto::{EXIT_PASS, qemu_status};
    let dir = linux_run_dir(name);
    fs::create_dir_all(&dir)?;
    // Under Bochs the guest also reboots once through the firmware (the
    // QEMU case's reboot is `linux/ovmf-boot-disk-epyc-svm`'s); nobody
    // types at Bochs's serial port, so no typed line.
    let vcpus = crate::linux::VCPUS;
    let disk = dir.join("disk.img");
    let before = crate::vm::random_bytes(crate::linux::DISK_BYTES);
    fs::write(&disk, &before)?;
    let hash = crate::vm::sha256_file(&disk)?;
    let boot_disk = grub_disk(&dir, images, if bochs { "console=ttyS0 panic=-1 alcove.reboot-once" } else { "console=ttyS0 panic=-1" })?;
    let boot_before = fs::read(&boot_disk)?;
    let json_path = dir.join("vm.json");
    fs::write(&json_path, linux_vm_json(Bootrom::Uefi, vcpus))?;
    let plan = VmPlan::load(&json_path)?.with_ram_disks(crate::vm::RAM_DISK_KIB)?;
    let system = plan.write_boot_files(&dir.join("boot"))?;
    let log_name = name.replace('/', "-");
    let iso = image::iso_of(kernel, &format!("test-{log_name}"), "", &system)?;
    let (run, timed) = if bochs {
        (plan.bochs().run_captured(&iso, &log_name, timeout)?, None)
    } else {
        let mut c = plan.qemu().command(&iso);
        c.args(["-monitor", "none", "-serial", "stdio"]);
        let t = crate::emu::capture_timed_answering(c, &log_name, Some(timeout), false, None)?;
        (t.run.clone(), Some(t))
    };
    let mut problems = crate::vm::check_linux_run_typed(&run.serial, &plan.name, vcpus, Some(&hash), bochs, false);
    problems.extend(judge_firmware_boots(&run.serial, Bootrom::Uefi, if bochs { 2 } else { 1 }));
    if !run.serial.lines().any(|l| l.contains("storaged") && l.contains("ram ramdisk1.img: ")) {
        problems.push("storaged never said it serves the boot disk as a RAM disk (\"ram ramdisk1.img: ...\")".into());
    }
    if let Some(l) = run.serial.lines().find(|l| l.starts_with("ALCOVE-FATAL")) {
        problems.push(format!("the kernel reported a fatal error: {}", l.trim_end()));
    }
    match run.ending {
        Ending::Qemu(s) if !bochs && s == qemu_status(EXIT_PASS) => {}
        Ending::Bochs { shutdown: true } if bochs => {}
        Ending::Timeout(s) => problems.push(format!("timed out after {s} s")),
        e => problems.push(format!("the machine ended with {e:?}, not as a powered-off VM ends it")),
    }
    if fs::read(&disk)? != before || fs::read(&boot_disk)? != boot_before {
        problems.push("a disk's host file changed: a RAM disk's writes must stay in memory".into());
    }
    let summary = problems.is_empty().then(|| {
        let init = timed
            .as_ref()
            .and_then(|t| crate::linux::Outcome::first_init(t, &plan.name))
            .map(|d| format!(", {:.1} s from VM start to init", d.as_secs_f64()))
            .unwrap_or_default();
        format!(
            "OVMF -> GRUB -> Linux from RAM disks{}, nproc={vcpus}, disk hash matches, marker written (in memory; \
             the host files unchanged), powered off, everything returned{init}",
            if bochs { " under Bochs corei7_skylake_x, twice (one reboot through OVMF, the marker found)" } else { " under QEMU (no virtio-blk drives)" }
        )
    });
    Ok(crate::linux::Outcome {
        name: name.into(),
        run,
        timed,
        vm_name: plan.name,
        problems,
        disk_checked: true,
        vcpus,
        summary,
    })
}

/// The first boot's phases from the stamped serial lines: VM start to
/// the firmware's banner, banner to GRUB's line (the firmware finding and
/// starting GRUB), GRUB's line to Linux's first console line (GRUB reading
/// the kernel and initramfs through the firmware) and on to the guest's
/// init. `None` when a mark is missing.
pub fn boot_phases(lines: &[(Duration, String)], vm_name: &str, bootrom: Bootrom) -> Option<String> {
    let start = lines.iter().find(|(_, l)| l.starts_with(&format!("vm {vm_name}: started: ")))?.0;
    let after = |from: Duration, mark: &str| lines.iter().find(|(t, l)| *t >= from && l.contains(mark)).map(|(t, _)| *t);
    let banner = after(start, firmware_banner(bootrom))?;
    let grub = after(banner, GRUB_LINE)?;
    let linux = after(grub, "] Linux version ").or_else(|| after(grub, "] Command line: "))?;
    let init = after(linux, "alcove-guest: init started")?;
    let s = |a: Duration, b: Duration| b.saturating_sub(a).as_secs_f64();
    Some(format!(
        "start to firmware banner {:.1} s, firmware to GRUB {:.1} s, GRUB loading Linux {:.1} s, Linux to init {:.1} s",
        s(start, banner),
        s(banner, grub),
        s(grub, linux),
        s(linux, init)
    ))
}

/// Where [`run_linux`] keeps the files of run `name` (its boot disk too).
fn linux_run_dir(name: &str) -> PathBuf {
    crate::out_dir().join("fwboot-linux").join(name.replace('/', "-"))
}

/// Plain QEMU TCG (q35, EPYC, 2 CPUs, 256 MiB, no Alcove) boots `dir`'s
/// `boot-disk.img` through `bootrom`'s firmware image, the disk second
/// with `bootindex` as in the Alcove VM, a fresh data disk first. Returns
/// the time from starting QEMU to the guest's init.
pub fn boot_plain_qemu(bootrom: Bootrom, dir: &Path, timeout: Duration) -> Result<Duration> {
    let firmware = image(bootrom)?;
    let boot_disk = dir.join("boot-disk.img");
    if !boot_disk.is_file() {
        return Err(format!("{}: no boot disk (run the Alcove boot first)", boot_disk.display()).into());
    }
    let data = dir.join("plain-qemu-data.img");
    fs::write(&data, crate::vm::random_bytes(crate::linux::DISK_BYTES))?;
    let rom = if bootrom == Bootrom::Uefi { "ovmf" } else { "seabios" };
    let mut c = crate::emu::emulator("qemu-system-x86_64");
    c.args(["-machine", "q35", "-cpu", "EPYC", "-accel", "tcg", "-display", "none", "-no-reboot", "-monitor", "none"])
        .args(["-m", &crate::linux::RAM_MIB.to_string(), "-smp", &crate::linux::VCPUS.to_string()])
        .arg("-bios")
        .arg(&firmware)
        .arg("-drive")
        .arg(format!("file={},if=none,id=data,format=raw", data.display()))
        .args(["-device", "virtio-blk-pci,drive=data"])
        .arg("-drive")
        .arg(format!("file={},if=none,id=boot,format=raw,snapshot=on", boot_disk.display()))
        .args(["-device", "virtio-blk-pci,drive=boot,bootindex=0", "-serial", "stdio"]);
    let answer = Some(("alcove-guest: type a line".to_string(), format!("{}\n", crate::linux::TYPED).into_bytes()));
    let t = crate::emu::capture_timed_answering(c, &format!("fwboot-plain-qemu-{rom}"), Some(timeout), false, answer)?;
    let _ = fs::remove_file(&data);
    t.time_of("alcove-guest: init started")
        .ok_or_else(|| format!("plain QEMU with {rom}: the guest's init never started ({:.0} s)", t.run.elapsed.as_secs_f64()).into())
}

/// The same-run firmware benchmark (`cargo xtask bench --case bench/fwboot`):
/// the GRUB disk through OVMF and through SeaBIOS on Alcove nested in QEMU
/// TCG (seconds from `vm NAME: started` to the guest's init), direct
/// kernel boot on Alcove, and the same disks booted by plain QEMU TCG with
/// the same firmware images, plus the kernel booted directly by QEMU, all
/// in this run. Figures and the problems that void them.
pub fn bench(
    kernel: &Path,
    images: &guest_images::Images,
    timeout: Duration,
) -> Result<(Vec<crate::bench::Figure>, Vec<String>)> {
    use crate::bench::Figure;
    let mut figures = Vec::new();
    let mut problems = Vec::new();
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let mut alcove = std::collections::BTreeMap::new();
    let mut qemu = std::collections::BTreeMap::new();
    for (bootrom, fw) in [(Bootrom::Uefi, "ovmf"), (Bootrom::Bios, "seabios")] {
        let case = format!("bench/fwboot-{fw}");
        let run = run_linux(kernel, images, bootrom, &case, timeout)?;
        if !run.ok() {
            run.report();
            problems.extend(run.problems.iter().map(|p| format!("{case}: {p}")));
        }
        match run.timed.as_ref().and_then(|t| crate::linux::Outcome::first_init(t, &run.vm_name)) {
            Some(d) => {
                alcove.insert(fw, d.as_secs_f64());
                figures.push(Figure::new(&format!("fwboot-{fw}-alcove"), secs(d), "s"));
            }
            None => problems.push(format!("{case}: no time from VM start to init")),
        }
        match boot_plain_qemu(bootrom, &linux_run_dir(&case), timeout) {
            Ok(d) => {
                qemu.insert(fw, d.as_secs_f64());
                figures.push(Figure::new(&format!("fwboot-{fw}-qemu"), secs(d), "s"));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    let direct = crate::linux::run(kernel, images, crate::linux::Machine::QemuSvm, "bench/fwboot-direct", timeout)?;
    if !direct.ok() {
        direct.report();
        problems.extend(direct.problems.iter().map(|p| format!("bench/fwboot-direct: {p}")));
    }
    match direct.boot_to_init() {
        Some(d) => {
            alcove.insert("direct", d.as_secs_f64());
            figures.push(Figure::new("fwboot-direct-alcove", secs(d), "s"));
        }
        None => problems.push("bench/fwboot-direct: no time from VM start to init".into()),
    }
    match guest_images::boot_direct(images, crate::linux::VCPUS, timeout) {
        Ok(d) => match d.to_init {
            Some(t) => {
                qemu.insert("direct", t.as_secs_f64());
                figures.push(Figure::new("fwboot-direct-qemu", secs(t), "s"));
            }
            None => problems.push("plain QEMU direct boot: the guest's init never started".into()),
        },
        Err(e) => problems.push(format!("plain QEMU direct boot: {e}")),
    }
    figures.extend(fw_ratios(&alcove, &qemu));
    Ok((figures, problems))
}

/// The ratio lines: for each firmware, how many times longer than direct
/// boot the firmware boot takes on Alcove, over the same on plain QEMU
/// (`(alcove_fw / alcove_direct) / (qemu_fw / qemu_direct)`: 1 or less
/// means the firmware path costs Alcove no more than it costs QEMU, each
/// against its own direct boot, so the nesting's overall slowdown cancels
/// out), and the plain Alcove-over-QEMU time ratio.
pub fn fw_ratios(
    alcove: &std::collections::BTreeMap<&str, f64>,
    qemu: &std::collections::BTreeMap<&str, f64>,
) -> Vec<crate::bench::Figure> {
    let mut out = Vec::new();
    for fw in ["ovmf", "seabios"] {
        let (Some(a), Some(q)) = (alcove.get(fw), qemu.get(fw)) else { continue };
        if *q > 0.0 {
            out.push(crate::bench::Figure::new(&format!("fwboot-{fw}-alcove-over-qemu"), format!("{:.2}", a / q), "x"));
        }
        if let (Some(ad), Some(qd)) = (alcove.get("direct"), qemu.get("direct"))
            && *ad > 0.0
            && *qd > 0.0
            && *q > 0.0
        {
            out.push(crate::bench::Figure::new(&format!("fwboot-{fw}-ratio"), format!("{:.2}", (a / ad) / (q / qd)), "x"));
        }
    }
    out
}

pub fn run_tiers(
    kernel: &Path,
    chosen: &[&str],
    only: Option<&str>,
    failures: &mut Vec<String>,
    runs: &mut usize,
) -> Result<()> {
    // The GRUB disk from RAM disks: under Bochs in the slow tier (or by
    // name), under QEMU by name only (`--tier linux --case ram-disk`).
    for (case, bochs, tier) in [(OVMF_BOCHS_CASE, true, "slow"), (OVMF_RAM_QEMU_CASE, false, "linux")] {
        let asked = match only {
            Some(o) => case.contains(o) && chosen.contains(&tier),
            None => bochs && chosen.contains(&tier),
        };
        if !asked {
            continue;
        }
        let (machine, timeout) = if bochs {
            ("under Bochs's VMX (corei7_skylake_x, two vCPUs, one reboot)", OVMF_BOCHS_TIMEOUT)
        } else {
            ("under QEMU without virtio-blk drives", FW_LINUX_TIMEOUT)
        };
        println!("== {}: the GRUB boot disk through OVMF {machine}, its disks RAM disks from the boot archive", if bochs { "slow" } else { "linux" });
        *runs += 1;
        match guest_images::ensure().and_then(|images| run_ram_disk(kernel, &images, bochs, case, timeout)) {
            Ok(out) => {
                out.report();
                if !out.ok() {
                    failures.push(case.into());
                }
            }
            Err(e) => {
                println!("  FAIL {case}: {e}");
                crate::tiers::remember_failure(case, vec![e.to_string()]);
                failures.push(case.into());
            }
        }
    }
    if !chosen.contains(&"linux") {
        return Ok(());
    }
    // The GRUB-disk cases, in CI since session 11: at load ~10 on 2 cores
    // OVMF's took 79 s and SeaBIOS's 56-75 s after the read-ahead (240 s
    // and 46-234 s before); their timeout is 900 s.
    for (case, bootrom, in_ci) in [(OVMF_LINUX_CASE, Bootrom::Uefi, true), (SEABIOS_LINUX_CASE, Bootrom::Bios, true)] {
        let asked = match only {
            Some(o) => case.contains(o),
            None => in_ci,
        };
        if !asked {
            continue;
        }
        let fw = if bootrom == Bootrom::Uefi { "OVMF" } else { "SeaBIOS" };
        println!("== linux: a GRUB boot disk through {fw} (\"bootrom\") on Alcove: Linux, one reboot through the firmware");
        *runs += 1;
        let out = match guest_images::ensure().and_then(|images| {
            crate::tiers::once_more_after_emulator_crash(
                case,
                || run_linux(kernel, &images, bootrom, case, FW_LINUX_TIMEOUT),
                |o| !o.ok(),
            )
        }) {
            Ok(o) => o,
            Err(e) => {
                println!("  FAIL {case}: {e}");
                crate::tiers::remember_failure(case, vec![e.to_string()]);
                failures.push(case.into());
                continue;
            }
        };
        out.report();
        if !out.ok() {
            failures.push(case.into());
        }
    }
    if only.is_some_and(|o| !CASE.contains(o)) {
        return Ok(());
    }
    println!("== linux: SeaBIOS boots a VM's boot disk on Alcove (\"bootrom\": \"bios\")");
    *runs += 1;
    let out = match run(kernel) {
        Ok(o) => o,
        Err(e) => {
            println!("  FAIL {CASE}: {e}");
            crate::tiers::remember_failure(CASE, vec![e.to_string()]);
            failures.push(CASE.into());
            return Ok(());
        }
    };
    if out.problems.is_empty() {
        println!(
            "  ok   {CASE}: SeaBIOS banner, the boot sector ran and read sector 1 through int 13h, powered off, everything returned; {:.1} s",
            out.seconds
        );
    } else {
        println!("  FAIL {CASE} ({:.1} s):", out.seconds);
        for p in &out.problems {
            println!("         {p}");
        }
        for l in &out.tail {
            println!("         | {l}");
        }
        println!("       log: {}", out.log.display());
        let tail = out.tail.iter().map(|l| format!("| {l}"));
        crate::tiers::remember_failure(CASE, out.problems.iter().cloned().chain(tail).collect());
        failures.push(CASE.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_sector_is_a_boot_sector_with_its_strings() {
        let s = boot_sector();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        let text = String::from_utf8_lossy(&s);
        assert!(text.contains(BOOT_SECTOR_LINE));
        // mov si, hello points at the string (org 0x7C00).
        let at = s.windows(BOOT_SECTOR_LINE.len()).position(|w| w == BOOT_SECTOR_LINE.as_bytes()).unwrap();
        let si = u16::from_le_bytes([s[15], s[16]]);
        assert_eq!(s[14], 0xBE, "mov si, hello");
        assert_eq!(usize::from(si) - 0x7C00, at);
    }

    #[test]
    fn judge_wants_banner_sector_read_and_poweroff_in_order() {
        let good = "vm fwboot: started: 2 vCPUs, 128 MiB\nSeaBIOS (version 1.16.2-debian-1.16.2-1)\n\
                    ALCOVE-BOOTSECTOR: started by the firmware\r\n\
                    ALCOVE-BOOTDISK: sector 1 read through int 13h, nonce 00000000000000ff\r\n\
                    vm fwboot: every frame and capability returned (1 KiB in use, as before)\nvm fwboot: ended: poweroff\n";
        assert_eq!(judge(good, "fwboot", 0xff), Vec::<String>::new());
        assert_eq!(judge(good, "fwboot", 0xfe).len(), 1, "another nonce");
        assert_eq!(judge(&good.replace("SeaBIOS (version", "x"), "fwboot", 0xff).len(), 1);
        assert_eq!(judge(&good.replace("poweroff", "triple-fault"), "fwboot", 0xff).len(), 1);
    }

    #[test]
    fn firmware_boots_are_firmware_then_grub_then_init_each_time() {
        let boot = "BdsDxe: loading Boot0001\nBdsDxe: starting Boot0001 \"UEFI Misc Device\"\n\
                    ALCOVE-GRUB: started by the firmware (efi)\n[    0.0] Linux\nalcove-guest: init started\n";
        assert_eq!(judge_firmware_boots(&boot.repeat(2), Bootrom::Uefi, 2), Vec::<String>::new());
        // One boot only, or the second boot straight to init (no firmware).
        assert_eq!(judge_firmware_boots(boot, Bootrom::Uefi, 2).len(), 1);
        let direct = format!("{boot}alcove-guest: init started\n");
        assert_eq!(judge_firmware_boots(&direct, Bootrom::Uefi, 2).len(), 1);
        // The other firmware's banner does not count.
        assert_eq!(judge_firmware_boots(&boot.repeat(2), Bootrom::Bios, 2).len(), 1);
        // OVMF tried the data disk first: bootorder not followed.
        let data_first = format!(
            "BdsDxe: failed to load Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x1,0x0): Not Found\n{boot}"
        );
        let problems = judge_firmware_boots(&data_first.repeat(2), Bootrom::Uefi, 2);
        assert!(problems.len() == 1 && problems[0].contains("bootorder not followed"), "{problems:?}");
        let bios = "SeaBIOS (version 1.16.2)\nALCOVE-GRUB: started by the firmware (pc)\nalcove-guest: init started\n";
        assert_eq!(judge_firmware_boots(&bios.repeat(2), Bootrom::Bios, 2), Vec::<String>::new());
    }

    #[test]
    fn boot_phases_split_the_first_boot_at_banner_grub_linux_and_init() {
        let at = |s: u64, l: &str| (Duration::from_millis(s), l.to_string());
        let lines = [
            at(100, "SeaBIOS (version old, before the VM)"),
            at(1000, "vm linux-test: started: 2 vCPUs, 256 MiB"),
            at(1500, "SeaBIOS (version 1.16.2)"),
            at(4500, "ALCOVE-GRUB: started by the firmware (pc)"),
            at(14500, "[    0.000000] Linux version 6.1"),
            at(20500, "alcove-guest: init started"),
        ];
        assert_eq!(
            boot_phases(&lines, "linux-test", Bootrom::Bios).as_deref(),
            Some(
                "start to firmware banner 0.5 s, firmware to GRUB 3.0 s, GRUB loading Linux 10.0 s, Linux to init 6.0 s"
            )
        );
        assert_eq!(boot_phases(&lines, "linux-test", Bootrom::Uefi), None, "no OVMF banner");
        assert_eq!(boot_phases(&lines[..5], "linux-test", Bootrom::Bios), None, "no init");
    }

    #[test]
    fn the_ratio_is_the_firmware_slowdown_on_alcove_over_that_on_qemu() {
        let alcove = std::collections::BTreeMap::from([("ovmf", 60.0), ("direct", 6.0), ("seabios", 12.0)]);
        let qemu = std::collections::BTreeMap::from([("ovmf", 10.0), ("direct", 2.0)]);
        let lines: Vec<String> = fw_ratios(&alcove, &qemu).iter().map(ToString::to_string).collect();
        // OVMF: 10x direct on Alcove, 5x on QEMU: ratio 2. SeaBIOS: no QEMU figure, no line.
        assert_eq!(lines, ["bench fwboot-ovmf-alcove-over-qemu 6.00 x", "bench fwboot-ovmf-ratio 2.00 x"]);
        assert!(fw_ratios(&alcove, &Default::default()).is_empty());
    }

    #[test]
    fn the_grub_disk_config_prints_its_line_and_boots_the_kernel() {
        let cfg = grub_cfg("console=ttyS0 x");
        assert!(cfg.contains("serial --unit=0"));
        assert!(cfg.contains(&format!("echo \"{GRUB_LINE} (${{grub_platform}})\"")), "{cfg}");
        assert!(cfg.contains("linux /boot/vmlinuz console=ttyS0 x\ninitrd /boot/initrd.img\nboot\n"));
        let json = linux_vm_json(Bootrom::Uefi, 2);
        let c = vmm_server::config::VmConfig::from_json(&json).unwrap();
        assert_eq!((c.bootrom, c.boot_disk(), c.vcpus), (Some(Bootrom::Uefi), Some(1), 2));
    }
}
