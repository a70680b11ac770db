//! `cargo xtask images`: the Linux test guest. Fetches Debian's cloud kernel
//! and busybox-static with `apt-get download` into `images/downloads/`
//! (git-ignored) and builds, in `target/alcove/images/`:
//!
//! * `vmlinuz`: the bzImage of the newest `linux-image-*-cloud-amd64`,
//! * `modules/<release>/`: that kernel's modules directory,
//! * `initramfs.cpio`: a newc archive with busybox, `/init` (from
//!   `images/linux/init`) and the virtio modules, uncompressed,
//! * `stamp`: what was built from what; a re-run with the same package
//!   versions and the same recipe does nothing.
//!
//! It also fetches Debian's memtest86+ (a third-party Linux boot-protocol
//! image, the `linux` tier's second guest) into
//! `target/alcove/images/memtest86-x64.bin`.
//!
//! `--check` parses both kernels with vmm-server's own bzImage parser and
//! lists the archive; `--boot-direct` boots both under QEMU TCG (no Alcove) as a
//! check of the images themselves.

use crate::{Result, out_dir, root};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use vmm_server::boot::linux::BzImage;

pub const USAGE: &str = "\
Usage: cargo xtask images [--check] [--boot-direct] [--timeout SECS]

Fetches Debian's cloud kernel (the package linux-image-cloud-amd64 points to)
and busybox-static with `apt-get download` into images/downloads/ and builds
target/alcove/images/vmlinuz, modules/<release>/ and initramfs.cpio (busybox,
images/linux/init, the virtio modules); fetches memtest86+ the same way into
target/alcove/images/memtest86-x64.bin. Does nothing when they are up to date.

Options:
  --check          also parse vmlinuz and memtest86-x64.bin with vmm-server's
                   bzImage parser and list the initramfs entries
  --boot-direct    also boot the images under QEMU TCG (2 CPUs, 256 MiB, a
                   1 MiB virtio disk) and check what /init reports; prints the
                   wall time. The serial log goes to
                   target/alcove/logs/images-boot-direct.log
  --timeout SECS   limit for --boot-direct (default 120)
  -h, --help       this text";

/// The metapackage whose Depends names the current cloud kernel.
const KERNEL_META: &str = "linux-image-cloud-amd64";
const BUSYBOX: &str = "busybox-static";
/// The guest's `/init`.
const INIT: &str = include_str!("../../images/linux/init");

/// `/bin/cf9-reset` in the initramfs: a static x86-64 ELF of 173 bytes
/// that asks for port 0xCF9 (`ioperm`) and writes 6 to it (PCI reset
/// control: hard reset), then exits 2; 1 if `ioperm` was refused. The
/// reset stress resets with it: Debian's cloud kernel has no `/dev/port`
/// (`CONFIG_DEVPORT` is off), and sysrq b prints first, which can strand
/// another CPU's printk lines (a guest-side loss, not the VMM's).
pub fn cf9_reset_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    #[rustfmt::skip]
    let code: [u8; 53] = [
        0xbf, 0xf9, 0x0c, 0x00, 0x00, // mov edi, 0xcf9   (from)
        0xbe, 0x01, 0x00, 0x00, 0x00, // mov esi, 1       (count)
        0xba, 0x01, 0x00, 0x00, 0x00, // mov edx, 1       (turn on)
        0xb8, 0xad, 0x00, 0x00, 0x00, // mov eax, 173     (ioperm)
        0x0f, 0x05,                   // syscall
        0x48, 0x85, 0xc0,             // test rax, rax
        0x75, 0x0e,                   // jnz refused
        0x66, 0xba, 0xf9, 0x0c,       // mov dx, 0xcf9
        0xb0, 0x06,                   // mov al, 6
        0xee,                         // out dx, al
        0xbf, 0x02, 0x00, 0x00, 0x00, // mov edi, 2       (still here)
        0xeb, 0x05,                   // jmp exit
        0xbf, 0x01, 0x00, 0x00, 0x00, // refused: mov edi, 1
        0xb8, 0x3c, 0x00, 0x00, 0x00, // exit: mov eax, 60 (exit)
        0x0f, 0x05,                   // syscall
    ];
    let size = HEADERS + code.len() as u64;
    let mut e = Vec::new();
    // ELF header (System V gABI; x86-64 psABI): 64-bit, little-endian, executable.
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // program headers
    e.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    e.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    // One PT_LOAD, read and execute, the whole file at BASE.
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&5u32.to_le_bytes());
    for v in [0, BASE, BASE, size, size, 0x1000] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&code);
    e
}
/// Busybox applets linked into `/bin` (what `/init` uses, and a few more for
/// looking around).
const APPLETS: &[&str] = &[
    "sh", "mount", "umount", "uname", "insmod", "lsmod", "nproc", "sha256sum", "dd", "printf", "echo", "sync",
    "poweroff", "cat", "ls", "dmesg", "sleep", "mkdir", "head", "hexdump", "stty", "taskset", "usleep", "cut",
    "ip", "arping", "grep", "ping", "nc", "wc", "udhcpc", "udhcpd", "chmod", "kill",
];
/// Modules `/init` loads, and whether the image is useless without them
/// (unless built in). Their dependencies are added from each module's
/// `.modinfo`, ahead of it.
const MODULES: &[(&str, bool)] = &[
    ("virtio", true),
    ("virtio_ring", true),
    ("virtio_pci", true),
    ("virtio_blk", true),
    ("virtio_rng", false),
    ("virtio_console", false),
    ("virtio_net", false),
    // The ACPI power button as an input device (`/init` powers the guest
    // off when it is pressed: a graceful `vmadm stop`).
    ("button", false),
    ("evdev", false),
];
/// Bump when the recipe changes in a way the stamp's hash does not see.
const RECIPE: u32 = 2;
/// The file in the initramfs's modules directory that lists the load order.
const LOAD_LIST: &str = "modules.alcove";

/// What `cargo xtask images` built.
#[derive(Clone, Debug)]
pub struct Images {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    /// `modules/<release>/`.
    pub modules: PathBuf,
    /// The kernel release (`uname -r`).
    pub release: String,
    /// The kernel package and its version.
    pub kernel_package: String,
}

/// `target/alcove/images/`.
pub fn dir() -> PathBuf {
    out_dir().join("images")
}

pub(crate) fn downloads() -> PathBuf {
    root().join("images").join("downloads")
}

pub fn main(args: &[String]) -> Result<ExitCode> {
    let (mut check_it, mut boot, mut timeout) = (false, false, 120u64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => check_it = true,
            "--boot-direct" => boot = true,
            "--timeout" => {
                timeout = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--timeout needs a number of seconds")?;
            }
            other => return Err(format!("unknown option {other:?} (see --help)").into()),
        }
    }
    let images = ensure()?;
    let memtest = memtest()?;
    if check_it {
        check(&images)?;
        check_memtest(&memtest)?;
    }
    if boot {
        let run = boot_direct(&images, 2, Duration::from_secs(timeout))?;
        for l in run.serial.lines().filter(|l| l.starts_with("alcove-guest: ")) {
            println!("  {l}");
        }
        let to_init = run.to_init.map(|t| format!("{:.2} s", t.as_secs_f64())).unwrap_or_else(|| "?".into());
        println!(
            "images: direct boot under QEMU TCG passed in {:.2} s, {to_init} to init (serial log {})",
            run.elapsed.as_secs_f64(),
            run.log.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// Commands

/// Runs `c`; on failure the error says `what` failed and why (the last lines
/// of its stderr).
pub(crate) fn output(c: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| format!("{what} failed: {e}"))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join("; ");
    Err(format!("{what} failed ({}): {tail}", out.status).into())
}

fn text(c: &mut Command, what: &str) -> Result<String> {
    Ok(String::from_utf8_lossy(&output(c, what)?).into_owned())
}

fn as_root(args: &[&str]) -> Command {
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
    let mut c = if is_root {
        Command::new(args[0])
    } else {
        let mut c = Command::new("sudo");
        c.arg(args[0]);
        c
    };
    c.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// `apt-get update`, at most once a run (a fresh machine has no lists).
fn apt_update_once() -> Result<bool> {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return Ok(false);
    }
    eprintln!("images: apt-get update");
    output(&mut as_root(&["apt-get", "update", "-q"]), "apt-get update")?;
    Ok(true)
}

// ---------------------------------------------------------------------------
// Which packages

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pkg {
    pub(crate) name: String,
    pub(crate) version: String,
}

/// The candidate version of `name`, updating the package lists once if
/// there is none.
pub(crate) fn candidate(name: &str) -> Result<String> {
    loop {
        let policy = text(Command::new("apt-cache").args(["policy", name]), &format!("apt-cache policy {name}"))?;
        let cand = policy.lines().find_map(|l| l.trim().strip_prefix("Candidate: ")).map(str::to_string);
        match cand {
            Some(v) if v != "(none)" => return Ok(v),
            _ if apt_update_once()? => continue,
            _ => return Err(format!("apt-cache policy {name}: no installable version (is the package in the sources?)").into()),
        }
    }
}

/// The versioned kernel package the cloud metapackage depends on.
fn kernel_package() -> Result<Pkg> {
    let what = format!("apt-cache depends {KERNEL_META}");
    let deps = loop {
        match text(Command::new("apt-cache").args(["depends", KERNEL_META]), &what) {
            Ok(d) => break d,
            Err(_) if apt_update_once()? => continue,
            Err(e) => return Err(e),
        }
    };
    let name = deps
        .lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends: "))
        .map(|d| d.trim().trim_matches(|c| c == '<' || c == '>'))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64"))
        .ok_or_else(|| format!("{what}: no linux-image-*-cloud-amd64 in its Depends:\n{deps}"))?
        .to_string();
    let version = candidate(&name)?;
    Ok(Pkg { name, version })
}

/// A field of a .deb's control file.
fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let what = format!("dpkg-deb -f {} {field}", deb.display());
    Ok(text(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field), &what)?.trim().to_string())
}

/// The .deb of `pkg` in `images/downloads/`, downloading it if it is not
/// there. Other versions of the same package, and older packages of the same
/// family (`stale`), are removed.
pub(crate) fn fetch(pkg: &Pkg, stale: impl Fn(&str) -> bool) -> Result<PathBuf> {
    let dir = downloads();
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let prefix = format!("{}_", pkg.name);
    let find = || -> Result<Option<PathBuf>> {
        let mut found = None;
        for e in fs::read_dir(&dir)? {
            let path = e?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if !name.ends_with(".deb") {
                continue;
            }
            let ours = name.starts_with(&prefix);
            if ours && found.is_none() && deb_field(&path, "Version").is_ok_and(|v| v == pkg.version) {
                found = Some(path);
            } else if ours || stale(&name) {
                fs::remove_file(&path)?;
            }
        }
        Ok(found)
    };
    if let Some(deb) = find()? {
        return Ok(deb);
    }
    eprintln!("images: apt-get download {} ({})", pkg.name, pkg.version);
    let spec = format!("{}={}", pkg.name, pkg.version);
    output(
        Command::new("apt-get").args(["download", "-q", &spec]).current_dir(&dir),
        &format!("apt-get download {}", pkg.name),
    )?;
    find()?.ok_or_else(|| format!("apt-get download {}: no {prefix}*.deb in {}", pkg.name, dir.display()).into())
}

// ---------------------------------------------------------------------------
// memtest86+: a third-party boot-protocol guest

/// The Debian package of memtest86+.
const MEMTEST: &str = "memtest86+";
/// Its 64-bit Linux boot-protocol image, inside the package.
const MEMTEST_IN_PACKAGE: &str = "boot/memtest86+x64.bin";
/// Where it is installed: a name a boot file may have (no `+`).
pub const MEMTEST_FILE: &str = "memtest86-x64.bin";

/// `target/alcove/images/memtest86-x64.bin` from the memtest86+ version
/// apt-cache names (fetched with `apt-get download` into
/// `images/downloads/` unless the stamp says it is there).
pub fn memtest() -> Result<PathBuf> {
    let out = dir();
    let (bin, stamp_path) = (out.join(MEMTEST_FILE), out.join("memtest.stamp"));
    let pkg = Pkg { name: MEMTEST.into(), version: candidate(MEMTEST)? };
    let stamp = format!("{} {}\n", pkg.name, pkg.version);
    if bin.is_file() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(bin);
    }
    let deb = fetch(&pkg, |_| false)?;
    let work = out.join(".work-memtest");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&work), &format!("dpkg-deb -x {}", deb.display()))?;
    let from = work.join(MEMTEST_IN_PACKAGE);
    if !from.is_file() {
        return Err(format!("{}: no {MEMTEST_IN_PACKAGE} in the package", deb.display()).into());
    }
    let _ = fs::remove_file(&stamp_path);
    fs::rename(&from, &bin)?;
    fs::write(&stamp_path, stamp)?;
    fs::remove_dir_all(&work)?;
    eprintln!("images: {} from {} {}", bin.display(), pkg.name, pkg.version);
    Ok(bin)
}

/// Parses memtest86+'s image with vmm-server's bzImage parser.
pub fn check_memtest(bin: &Path) -> Result<()> {
    let bytes = fs::read(bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    let bz = BzImage::parse(&bytes).map_err(|e| format!("{}: {e}", bin.display()))?;
    let v = bz.protocol_version();
    println!(
        "{}: {} bytes, boot protocol {}.{:02}, load address {:#x}, 64-bit entry {:#x}, init_size {:#x}, \
         relocatable {}, protected-mode kernel {} bytes",
        bin.display(),
        bytes.len(),
        v >> 8,
        v & 0xff,
        bz.load_addr(),
        bz.entry_64(),
        bz.init_size(),
        bz.relocatable(),
        bz.kernel().len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Building

/// FNV-1a: a stable hash of the recipe for the stamp.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for b in p.iter().chain(b"\0") {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// The stamp line that names the recipe: a hash of `/init`, the applets and
/// the module list.
fn recipe_line() -> String {
    let modules: Vec<String> = MODULES.iter().map(|(m, r)| format!("{m}:{r}")).collect();
    let hash = fnv(&[INIT.as_bytes(), APPLETS.join(" ").as_bytes(), modules.join(" ").as_bytes(), &cf9_reset_elf()]);
    format!("recipe {RECIPE} {hash:016x}\n")
}

/// The stamp's first lines: what the build is made from. The release line
/// follows once the kernel is unpacked.
fn stamp_head(kernel: &Pkg, busybox: &Pkg) -> String {
    format!(
        "kernel {} {}\nbusybox {} {}\n{}",
        kernel.name,
        kernel.version,
        busybox.name,
        busybox.version,
        recipe_line()
    )
}

/// The images the stamp describes, if they are all there.
fn stamped(stamp: &str) -> Option<Images> {
    let field = |key: &str| stamp.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' '));
    let mut k = field("kernel")?.split(' ');
    let kernel = Pkg { name: k.next()?.into(), version: k.next()?.into() };
    let img = images_from(field("release")?, &kernel);
    (img.vmlinuz.is_file() && img.initramfs.is_file() && img.modules.is_dir()).then_some(img)
}

fn images_from(release: &str, kernel: &Pkg) -> Images {
    let d = dir();
    Images {
        vmlinuz: d.join("vmlinuz"),
        initramfs: d.join("initramfs.cpio"),
        modules: d.join("modules").join(release),
        release: release.to_string(),
        kernel_package: format!("{} {}", kernel.name, kernel.version),
    }
}

/// Builds the images unless the stamp says they are current: same recipe,
/// and the same package versions (not asked of apt-cache, which takes a
/// while, when the stamp is newer than the package lists).
pub fn ensure() -> Result<Images> {
    let stamp_path = dir().join("stamp");
    let stamp = fs::read_to_string(&stamp_path).unwrap_or_default();
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let lists_older = match (mtime(Path::new("/var/lib/apt/lists")), mtime(&stamp_path)) {
        (Some(lists), Some(stamp)) => lists < stamp,
        _ => false,
    };
    if lists_older && stamp.lines().any(|l| format!("{l}\n") == recipe_line())
        && let Some(img) = stamped(&stamp)
    {
        return Ok(img);
    }
    let kernel = kernel_package()?;
    let busybox = Pkg { name: BUSYBOX.into(), version: candidate(BUSYBOX)? };
    let head = stamp_head(&kernel, &busybox);
    if stamp.starts_with(&head)
        && let Some(img) = stamped(&stamp)
    {
        // Current, but the stamp predates the lists: renew it.
        fs::write(&stamp_path, &stamp)?;
        return Ok(img);
    }
    build(&kernel, &busybox, &head)
}

fn build(kernel: &Pkg, busybox: &Pkg, head: &str) -> Result<Images> {
    let kdeb = fetch(kernel, |f| f.starts_with("linux-image-") && f.contains("-cloud-amd64_"))?;
    let bdeb = fetch(busybox, |_| false)?;
    let out = dir();
    let work = out.join(".work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    eprintln!("images: building {} from {} and {} {}", out.display(), kernel.name, busybox.name, busybox.version);

    // The kernel and its modules.
    let kx = work.join("kernel");
    output(Command::new("dpkg-deb").arg("-x").arg(&kdeb).arg(&kx), &format!("dpkg-deb -x {}", kdeb.display()))?;
    let vmlinuz = single(&kx.join("boot"), "vmlinuz-")?;
    let release = vmlinuz.file_name().unwrap_or_default().to_string_lossy()["vmlinuz-".len()..].to_string();
    let kmods = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| kx.join(d).join(&release))
        .find(|d| d.is_dir())
        .ok_or_else(|| format!("{}: no lib/modules/{release}/", kdeb.display()))?;

    // Busybox.
    let bx = work.join("busybox");
    output(Command::new("dpkg-deb").arg("-x").arg(&bdeb).arg(&bx), &format!("dpkg-deb -x {}", bdeb.display()))?;
    let bb = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| bx.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{}: no bin/busybox", bdeb.display()))?;
    let list = text(Command::new(&bb).arg("--list"), &format!("{} --list", bb.display()))?;
    let have: BTreeSet<&str> = list.lines().collect();
    if let Some(a) = APPLETS.iter().find(|a| !have.contains(*a)) {
        return Err(format!("{} {}: no applet {a}", busybox.name, busybox.version).into());
    }

    // The initramfs tree.
    let st = work.join("initramfs");
    for d in ["bin", "dev", "proc", "sys", "tmp", "root"] {
        fs::create_dir_all(st.join(d))?;
    }
    let stmods = st.join("lib/modules").join(&release);
    fs::create_dir_all(&stmods)?;
    fs::copy(&bb, st.join("bin/busybox"))?;
    set_mode(&st.join("bin/busybox"), 0o755)?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", st.join("bin").join(a))?;
    }
    fs::write(st.join("bin/cf9-reset"), cf9_reset_elf())?;
    set_mode(&st.join("bin/cf9-reset"), 0o755)?;
    fs::write(st.join("init"), INIT)?;
    set_mode(&st.join("init"), 0o755)?;
    let mut load = String::new();
    for (name, bytes) in module_order(&kmods)? {
        fs::write(stmods.join(format!("{name}.ko")), bytes)?;
        load += &name;
        load.push('\n');
    }
    fs::write(stmods.join(LOAD_LIST), load)?;
    let cpio = work.join("initramfs.cpio");
    pack_newc(&st, &cpio)?;

    // Install: the stamp goes last, so an interrupted build starts over.
    let img = images_from(&release, kernel);
    let _ = fs::remove_file(out.join("stamp"));
    let _ = fs::remove_dir_all(out.join("modules"));
    fs::create_dir_all(out.join("modules"))?;
    fs::rename(&kmods, &img.modules)?;
    fs::rename(&vmlinuz, &img.vmlinuz)?;
    fs::rename(&cpio, &img.initramfs)?;
    fs::write(out.join("stamp"), format!("{head}release {release}\n"))?;
    fs::remove_dir_all(&work)?;
    Ok(img)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The one file in `dir` whose name starts with `prefix`.
fn single(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(format!("{}: {n} files named {prefix}*, expected one", dir.display()).into()),
    }
}

/// Packs `tree` into a newc archive with the system cpio: entries sorted,
/// owned by root.
fn pack_newc(tree: &Path, archive: &Path) -> Result<()> {
    let mut names = Vec::new();
    walk(tree, Path::new(""), &mut |rel, _| names.push(rel.to_string_lossy().into_owned()))?;
    names.sort();
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--reproducible", "--quiet"])
        .current_dir(tree)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(archive)?)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cpio -o -H newc failed: {e} (apt-get install cpio)"))?;
    child.stdin.take().ok_or("cpio: no stdin")?.write_all((names.join("\n") + "\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("cpio -o -H newc failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(())
}

/// Calls `f(relative path, file type)` for everything under `base/rel`,
/// parents first; symlinks are not followed.
fn walk(base: &Path, rel: &Path, f: &mut dyn FnMut(&Path, fs::FileType)) -> Result<()> {
    for e in fs::read_dir(base.join(rel)).map_err(|e| format!("{}: {e}", base.join(rel).display()))? {
        let e = e?;
        let (r, ty) = (rel.join(e.file_name()), e.file_type()?);
        f(&r, ty);
        if ty.is_dir() {
            walk(base, &r, f)?;
        }
    }
    Ok(())
}

/// A module's name from its file name: `virtio-rng.ko.xz` is `virtio_rng`.
fn module_name(file: &str) -> Option<String> {
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"].iter().find_map(|s| file.strip_suffix(s))?;
    Some(stem.replace('-', "_"))
}

/// The modules to load, dependencies first, each uncompressed.
fn module_order(moddir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = BTreeMap::new();
    walk(moddir, Path::new(""), &mut |rel, ty| {
        if ty.is_file()
            && let Some(n) = rel.file_name().and_then(|n| module_name(&n.to_string_lossy()))
        {
            files.insert(n, moddir.join(rel));
        }
    })?;
    let builtin: BTreeSet<String> = fs::read_to_string(moddir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(l.rsplit('/').next()?))
        .collect();

    struct Walk<'a> {
        files: &'a BTreeMap<String, PathBuf>,
        builtin: &'a BTreeSet<String>,
        seen: BTreeSet<String>,
        order: Vec<(String, Vec<u8>)>,
    }
    impl Walk<'_> {
        fn visit(&mut self, name: &str, required: bool, needed_by: &str) -> Result<()> {
            if self.builtin.contains(name) || !self.seen.insert(name.to_string()) {
                return Ok(());
            }
            let Some(path) = self.files.get(name) else {
                return if required {
                    Err(format!("module {name}{needed_by} is neither in the kernel package nor built in").into())
                } else {
                    Ok(())
                };
            };
            let bytes = uncompressed(path)?;
            let deps = modinfo(&bytes, "depends").map_err(|e| format!("{}: {e}", path.display()))?;
            for d in deps.iter().flat_map(|d| d.split(',')).filter(|d| !d.is_empty()) {
                self.visit(d, true, &format!(" (needed by {name})"))?;
            }
            self.order.push((name.to_string(), bytes));
            Ok(())
        }
    }
    let mut w = Walk { files: &files, builtin: &builtin, seen: BTreeSet::new(), order: Vec::new() };
    for (m, required) in MODULES {
        w.visit(m, *required, "")?;
    }
    Ok(w.order)
}

/// A module file's bytes, decompressed with the host's tool if it is
/// compressed (busybox insmod cannot read zstd).
fn uncompressed(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let (tool, pkg) = if name.ends_with(".xz") {
        ("xz", "xz-utils")
    } else if name.ends_with(".zst") {
        ("zstd", "zstd")
    } else if name.ends_with(".gz") {
        ("gzip", "gzip")
    } else {
        return Ok(fs::read(path)?);
    };
    output(Command::new(tool).arg("-dc").arg(path), &format!("{tool} -dc {name} (from the package {pkg})"))
}

/// The values of `key` in an ELF64 module's `.modinfo` section.
fn modinfo(ko: &[u8], key: &str) -> std::result::Result<Vec<String>, String> {
    let u16_at = |o: usize| ko.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| ko.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
    let u64_at = |o: usize| ko.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    if ko.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err("not a little-endian ELF64 module".into());
    }
    let bad = || "malformed ELF section headers".to_string();
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28).ok_or_else(bad)?, u16_at(0x3a).ok_or_else(bad)?, u16_at(0x3c).ok_or_else(bad)?, u16_at(0x3e).ok_or_else(bad)?);
    let section = |i: usize| -> Option<(usize, &[u8])> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let (off, size) = (u64_at(h + 0x18)?, u64_at(h + 0x20)?);
        Some((u32_at(h)?, ko.get(off..off.checked_add(size)?)?))
    };
    let (_, names) = section(shstrndx).ok_or_else(bad)?;
    for i in 0..shnum {
        let (name_off, data) = section(i).ok_or_else(bad)?;
        let name = names.get(name_off..).and_then(|n| n.split(|b| *b == 0).next()).unwrap_or_default();
        if name == b".modinfo" {
            let prefix = format!("{key}=");
            return Ok(data
                .split(|b| *b == 0)
                .filter_map(|s| s.strip_prefix(prefix.as_bytes()))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect());
        }
    }
    Err("no .modinfo section".into())
}

// ---------------------------------------------------------------------------
// Checking

/// Parses the kernel with vmm-server's bzImage parser and lists the
/// initramfs; fails if either is not what the recipe makes.
pub fn check(img: &Images) -> Result<()> {
    let bytes = fs::read(&img.vmlinuz).map_err(|e| format!("{}: {e}", img.vmlinuz.display()))?;
    let bz = BzImage::parse(&bytes).map_err(|e| format!("{}: {e}", img.vmlinuz.display()))?;
    let v = bz.protocol_version();
    println!("{}: {} bytes, {} ({})", img.vmlinuz.display(), bytes.len(), img.release, img.kernel_package);
    println!(
        "  boot protocol {}.{:02}, load address {:#x}, 64-bit entry {:#x}, init_size {:#x} ({:.1} MiB)",
        v >> 8,
        v & 0xff,
        bz.load_addr(),
        bz.entry_64(),
        bz.init_size(),
        bz.init_size() as f64 / (1 << 20) as f64
    );
    println!(
        "  relocatable {}, kernel_alignment {:#x}, above 4 GiB {}, cmdline max {}, protected-mode kernel {} bytes",
        bz.relocatable(),
        bz.kernel_alignment(),
        bz.can_load_above_4g(),
        bz.cmdline_max(),
        bz.kernel().len()
    );

    let size = fs::metadata(&img.initramfs)?.len();
    let list = text(
        Command::new("cpio").args(["-t", "--quiet", "-F"]).arg(&img.initramfs),
        &format!("cpio -t -F {}", img.initramfs.display()),
    )?;
    let entries: Vec<&str> = list.lines().collect();
    println!("{}: {size} bytes, newc, {} entries:", img.initramfs.display(), entries.len());
    for e in &entries {
        println!("  {e}");
    }
    let mods = format!("lib/modules/{}/", img.release);
    let needed = ["init".to_string(), "bin/busybox".into(), "bin/sh".into(), format!("{mods}{LOAD_LIST}")];
    let missing: Vec<&String> = needed.iter().filter(|n| !entries.contains(&n.as_str())).collect();
    if !missing.is_empty() {
        return Err(format!("{}: missing {missing:?}", img.initramfs.display()).into());
    }
    if !entries.iter().any(|e| e.starts_with(&mods) && e.ends_with(".ko")) {
        return Err(format!("{}: no modules under {mods}", img.initramfs.display()).into());
    }
    Ok(())
}

/// A direct boot's outcome.
pub struct DirectBoot {
    pub serial: String,
    pub log: PathBuf,
    /// From starting QEMU to its exit.
    pub elapsed: Duration,
    /// From starting QEMU to the guest's first line from /init.
    pub to_init: Option<Duration>,
}

/// Boots the images under QEMU TCG without Alcove (`-kernel`, `-initrd`) with
/// `smp` CPUs and a 1 MiB virtio disk, and checks that `/init` ran to the
/// end: the lines it prints, the disk hash it saw, the marker it wrote, and
/// that the machine powered off.
pub fn boot_direct(img: &Images, smp: u32, timeout: Duration) -> Result<DirectBoot> {
    let logs = out_dir().join("logs");
    fs::create_dir_all(&logs)?;
    let log = logs.join("images-boot-direct.log");
    let disk = logs.join("images-boot-direct.disk");
    let _ = fs::remove_file(&log);
    let pattern: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
    fs::write(&disk, &pattern)?;
    let sum = text(Command::new("sha256sum").arg(&disk), "sha256sum")?;
    let hash = sum.split_whitespace().next().unwrap_or_default().to_string();

    let mut c = crate::emu::emulator("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-display", "none", "-no-reboot", "-monitor", "none"])
        .args(["-m", "256", "-smp", &smp.to_string()])
        .arg("-kernel")
        .arg(&img.vmlinuz)
        .arg("-initrd")
        .arg(&img.initramfs)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", disk.display()))
        .args(["-serial", "stdio"]);
    let timed = crate::emu::capture_timed(c, "images-boot-direct", Some(timeout), false)?;
    let to_init = timed.time_of("alcove-guest: init started");
    let (elapsed, serial) = (timed.run.elapsed, timed.run.serial);
    let status = match timed.run.ending {
        crate::harness::Ending::Qemu(code) => Some(code),
        _ => None,
    };

    let mut problems = Vec::new();
    match status {
        None => problems.push(format!("QEMU still running after {} s (no power-off)", timeout.as_secs())),
        Some(s) if s != 0 => problems.push(format!("QEMU exited with status {s}")),
        Some(_) => {}
    }
    let expect = [
        "alcove-guest: init started".to_string(),
        format!("alcove-guest: nproc={smp}"),
        format!("alcove-guest: vda-sha256 {hash}  /dev/vda"),
        "alcove-guest: vda-marker written".into(),
        "alcove-guest: poweroff".into(),
    ];
    for e in &expect {
        if !serial.lines().any(|l| l.trim_end() == e) {
            problems.push(format!("no line {e:?}"));
        }
    }
    if serial.lines().any(|l| l.starts_with("alcove-guest: insmod ")) {
        problems.push("a module failed to load".into());
    }
    let written = fs::read(&disk)?;
    let marker = format!("ALCOVE-GUEST-MARKER nproc={smp}\n");
    let ok_marker = written.len() == pattern.len()
        && written.starts_with(marker.as_bytes())
        && written[marker.len()..512].iter().all(|b| *b == 0)
        && written[512..] == pattern[512..];
    if !ok_marker {
        problems.push("the disk's first block is not the marker (or more was written)".into());
    }
    if !problems.is_empty() {
        let tail: Vec<&str> = serial.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(format!(
            "direct boot failed: {}\n--- last lines of {} ---\n{}",
            problems.join("; "),
            log.display(),
            tail.join("\n")
        )
        .into());
    }
    Ok(DirectBoot { serial, log, elapsed, to_init })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reset program is a well-formed ELF whose one segment covers the
    /// file and whose entry is its first instruction. (Never run on the
    /// host: it would reset the machine it runs on.)
    #[test]
    fn the_reset_program_is_one_loadable_segment() {
        let e = cf9_reset_elf();
        let u16_at = |o: usize| u16::from_le_bytes([e[o], e[o + 1]]);
        let u64_at = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap());
        assert_eq!(&e[..4], b"\x7fELF");
        assert_eq!((e[4], e[5], u16_at(16), u16_at(18)), (2, 1, 2, 0x3e), "64-bit LE x86-64 executable");
        assert_eq!((u64_at(32), u16_at(54), u16_at(56)), (64, 56, 1), "one program header after the ELF header");
        let (vaddr, filesz, memsz) = (u64_at(64 + 16), u64_at(64 + 32), u64_at(64 + 40));
        assert_eq!((filesz, memsz), (e.len() as u64, e.len() as u64));
        assert_eq!(u64_at(24), vaddr + 120, "entry at the code after the headers");
        // ioperm(0xCF9, 1, 1), then `out dx, al` with DX = 0xCF9, AL = 6.
        let code = &e[120..];
        assert_eq!(&code[..5], &[0xbf, 0xf9, 0x0c, 0, 0]);
        assert_eq!(&code[15..22], &[0xb8, 173, 0, 0, 0, 0x0f, 0x05]);
        let out = code.windows(7).position(|w| w == [0x66, 0xba, 0xf9, 0x0c, 0xb0, 0x06, 0xee]);
        assert!(out.is_some());
        // Both branches end in exit(60).
        assert_eq!(&code[code.len() - 7..], &[0xb8, 60, 0, 0, 0, 0x0f, 0x05]);
    }
}
