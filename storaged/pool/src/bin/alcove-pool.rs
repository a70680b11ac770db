//! alcove-pool: the pool tool on the host, built from the same library
//! storaged uses (as `zdb` and `zfs` on an exported pool). The pool is one
//! or more image files (two or more make a mirror):
//!
//! ```text
//! alcove-pool POOL.img... create [NAME] [--size MIB]
//! alcove-pool POOL.img... status|scrub [-v]
//! alcove-pool POOL.img... scrub -s
//! alcove-pool POOL.img... list
//! alcove-pool POOL.img... get NAME
//! alcove-pool POOL.img... set NAME compression=off|lz4
//! alcove-pool POOL.img... set NAME checksum=on|fletcher4|blake3|sha256
//! alcove-pool POOL.img... set NAME quota|reservation|refreservation=SIZE|none
//! alcove-pool POOL.img... set NAME module:key=value
//! alcove-pool POOL.img... volume NAME SIZE_MIB [VOLBLOCKSIZE]
//! alcove-pool POOL.img... snapshot VOLUME@SNAP
//! alcove-pool POOL.img... clone VOLUME@SNAP NEWVOLUME
//! alcove-pool POOL.img... rollback VOLUME@SNAP
//! alcove-pool POOL.img... destroy [-r] NAME
//! alcove-pool POOL.img... rename FROM TO
//! alcove-pool POOL.img... send VOLUME@SNAP [--from VOLUME@EARLIER] FILE
//! alcove-pool POOL.img... receive VOLUME FILE
//! alcove-pool POOL.img... import-raw FILE VOLUME
//! alcove-pool POOL.img... export-raw VOLUME FILE
//! ```

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use alcove_pool::Pool;
use alcove_pool::disk::FileDisk;
use alcove_pool::pool::DEFAULT_VOLBLOCKSIZE;

const COMMANDS: &[&str] = &[
    "create", "status", "list", "get", "set", "volume", "snapshot", "clone", "rollback", "destroy", "rename", "scrub",
    "import-raw", "export-raw", "send", "receive",
];

const MIB: u64 = 1024 * 1024;
/// Bytes gathered in memory before a commit during import-raw.
const COMMIT_EVERY: u64 = 64 * MIB;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alcove-pool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    format!("usage: alcove-pool POOL.img... COMMAND ARGS (commands: {})", COMMANDS.join(", "))
}

fn open(files: &[PathBuf]) -> Result<Vec<FileDisk>, String> {
    files.iter().map(|f| FileDisk::open(f).map_err(|e| format!("{}: {e}", f.display()))).collect()
}

/// Imports the pool; `files` is put in the pool's child order (as the
/// labels say) so that status lines name the right file.
fn import(files: &mut [PathBuf]) -> Result<Pool<FileDisk>, String> {
    let mut disks = open(files)?;
    let mut order: Vec<(u32, usize)> = Vec::new();
    for (i, d) in disks.iter_mut().enumerate() {
        let h = alcove_pool::pool::read_label(d).ok_or_else(|| format!("{}: no pool label; left untouched", files[i].display()))?;
        order.push((h.child, i));
    }
    order.sort();
    let sorted: Vec<PathBuf> = order.iter().map(|&(_, i)| files[i].clone()).collect();
    files.clone_from_slice(&sorted);
    let mut pool = Pool::import(open(files)?).map_err(|e| e.to_string())?;
    pool.set_wall_clock(now);
    Ok(pool)
}

/// `-v` or nothing (status, scrub).
fn flag_v(rest: &[String]) -> Result<bool, String> {
    match rest {
        [] => Ok(false),
        [v] if v == "-v" => Ok(true),
        _ => Err(format!("unexpected arguments {rest:?}; only -v")),
    }
}

fn progress(what: &str, done: u64, total: u64) {
    if std::io::stderr().is_terminal() {
        if total == u64::MAX {
            eprint!("\r{what}: {} MiB", done / MIB);
            return;
        }
        eprint!("\r{what}: {} of {} MiB", done / MIB, total.div_ceil(MIB));
        if done >= total {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let Some(ci) = args.iter().position(|a| COMMANDS.contains(&a.as_str())) else { return Err(usage()) };
    let mut files: Vec<PathBuf> = args[..ci].iter().map(PathBuf::from).collect();
    if files.is_empty() {
        return Err(usage());
    }
    let cmd = args[ci].as_str();
    let rest = &args[ci + 1..];
    let arg = |i: usize, what: &str| rest.get(i).map(String::as_str).ok_or_else(|| format!("{cmd}: missing {what}"));
    let e = |e: alcove_pool::Error| e.to_string();
    match cmd {
        "create" => {
            let mut name = "zones".to_string();
            let mut size_mib = None;
            let mut i = 0;
            while i < rest.len() {
                if rest[i] == "--size" {
                    size_mib = Some(arg(i + 1, "size in MiB")?.parse::<u64>().map_err(|_| "--size: MiB as a number".to_string())?);
                    i += 2;
                } else {
                    name = rest[i].clone();
                    i += 1;
                }
            }
            for f in &files {
                if !f.exists() {
                    let size = size_mib.ok_or_else(|| format!("{}: does not exist; give --size MIB to make it", f.display()))?;
                    let file = std::fs::File::create(f).map_err(|e| format!("{}: {e}", f.display()))?;
                    file.set_len(size * MIB).map_err(|e| format!("{}: {e}", f.display()))?;
                }
            }
            let mut disks = open(&files)?;
            for (f, d) in files.iter().zip(disks.iter_mut()) {
                if alcove_pool::pool::read_label(d).is_some() {
                    return Err(format!("{}: already holds a pool; not touched", f.display()));
                }
            }
            let guid = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
            let pool = Pool::create(&name, disks, guid).map_err(e)?;
            println!("created pool {} ({} disk{}, {} MiB)", pool.name(), files.len(), if files.len() > 1 { "s, mirror" } else { "" }, pool.size_bytes() / MIB);
        }
        "status" => {
            let verbose = flag_v(rest)?;
            let pool = import(&mut files)?;
            print_status(&pool, &files, verbose);
        }
        "scrub" => {
            // Exits non-zero when blocks no copy can repair were found
            // (after printing the status that names them).
            if rest.len() == 1 && rest[0] == "-s" {
                // `zpool scrub -s`: the scrub an import resumed stops, and
                // the commit records that none is under way.
                let mut pool = import(&mut files)?;
                let Some(p) = pool.scrub_progress() else { return Err("no scrub is in progress".into()) };
                pool.scrub_cancel();
                pool.sync().map_err(e)?;
                println!("scrub of txg {} canceled after {} of {}", p.txg, size(p.bytes), size(p.total));
                return Ok(());
            }
            let verbose = flag_v(rest)?;
            let mut pool = import(&mut files)?;
            // Allocated space counts a block the walk does not (the intent
            // log's first): the last line is the walk's own total.
            let mut last = (0, 0);
            let r = if let Some(p) = pool.scrub_progress() {
                // A scrub a power cut or an export interrupted: it goes on
                // from where its last commit recorded it.
                println!("resuming the scrub of txg {} in progress since {} ({} of {} walked)", p.txg, when(p.start), size(p.bytes), size(p.total));
                loop {
                    let step = pool.scrub_step(16 * MIB).map_err(e)?;
                    if let Some(p) = pool.scrub_progress() {
                        last = (p.bytes, p.total);
                        progress("scrub", p.bytes, p.total);
                    }
                    if let Some(r) = step {
                        break r;
                    }
                }
            } else {
                pool.scrub_with_progress(Some(&mut |done, total| {
                    last = (done, total);
                    progress("scrub", done, total)
                }))
                .map_err(e)?
            };
            if last.0 < last.1 {
                progress("scrub", last.0, last.0);
            }
            print_status(&pool, &files, verbose);
            if !r.errors.is_empty() {
                return Err(format!("scrub found {} permanent error{}", r.errors.len(), if r.errors.len() == 1 { "" } else { "s" }));
            }
        }
        "list" => {
            let pool = import(&mut files)?;
            println!("{:<56} {:>12} {:>8}  ORIGIN", "NAME", "VOLSIZE", "VOLBLOCK");
            for d in pool.list() {
                println!("{:<56} {:>12} {:>8}  {}", d.name, d.volsize, d.volblocksize, d.origin.unwrap_or_else(|| "-".into()));
            }
        }
        "get" => {
            let mut pool = import(&mut files)?;
            let name = arg(0, "dataset")?;
            let d = pool.get(name).map_err(e)?;
            let space = pool.space_of(name).map_err(e)?;
            println!("type\t{}", if d.snapshot { "snapshot" } else { "volume" });
            println!("volsize\t{}", d.volsize);
            println!("volblocksize\t{}", d.volblocksize);
            println!("creation\t{}", if d.creation == 0 { "-".to_string() } else { libipc::time::ctime(d.creation) });
            println!("creation_txg\t{}", d.creation_txg);
            println!("origin\t{}", d.origin.unwrap_or_else(|| "-".into()));
            // The function of the volume's new data blocks, as set (`on`:
            // fletcher4, ZFS's default); each block pointer names its own,
            // so blocks written under an earlier setting read unchanged.
            println!("checksum\t{}", d.props.get("checksum").map_or("on", String::as_str));
            println!("compression\t{}", d.props.get("compression").map_or("off", String::as_str));
            println!("referenced\t{}", space.referenced);
            println!("logicalreferenced\t{}", space.logical);
            let r = space.compressratio_x100();
            println!("compressratio\t{}.{:02}x", r / 100, r % 100);
            let u = pool.usage(name).map_err(e)?;
            let none = |v: u64| if v == 0 { "none".to_string() } else { v.to_string() };
            println!("used\t{}", u.used);
            println!("usedbydataset\t{}", u.usedbydataset);
            println!("usedbysnapshots\t{}", u.usedbysnapshots);
            println!("usedbyrefreservation\t{}", u.usedbyrefreservation);
            println!("available\t{}", u.available);
            println!("quota\t{}", none(u.quota));
            println!("reservation\t{}", none(u.reservation));
            println!("refreservation\t{}", none(u.refreservation));
            for (k, v) in d.props.iter().filter(|(k, _)| k.contains(':')) {
                println!("{k}\t{v}");
            }
        }
        "set" => {
            let mut pool = import(&mut files)?;
            let (k, v) = arg(1, "module:key=value")?.split_once('=').ok_or("set: give module:key=value")?;
            pool.set_prop(arg(0, "dataset")?, k, v).map_err(e)?;
            pool.sync().map_err(e)?;
        }
        "volume" => {
            let mut pool = import(&mut files)?;
            let size: u64 = arg(1, "size in MiB")?.parse().map_err(|_| "volume: size in MiB as a number".to_string())?;
            let bs: u32 = match rest.get(2) {
                Some(b) => b.parse().map_err(|_| "volume: volblocksize in bytes".to_string())?,
                None => DEFAULT_VOLBLOCKSIZE,
            };
            pool.create_volume(arg(0, "volume name")?, size * MIB, bs).map_err(e)?;
        }
        "snapshot" => import(&mut files)?.snapshot(arg(0, "VOLUME@SNAP")?).map_err(e)?,
        "clone" => import(&mut files)?.clone_snapshot(arg(0, "VOLUME@SNAP")?, arg(1, "new volume")?).map_err(e)?,
        "rollback" => import(&mut files)?.rollback(arg(0, "VOLUME@SNAP")?).map_err(e)?,
        "rename" => import(&mut files)?.rename(arg(0, "from")?, arg(1, "to")?).map_err(e)?,
        "destroy" => {
            let recursive = rest.first().is_some_and(|a| a == "-r");
            let name = arg(usize::from(recursive), "dataset")?;
            import(&mut files)?.destroy(name, recursive).map_err(e)?;
        }
        "send" => {
            let snap = arg(0, "VOLUME@SNAP")?;
            let (from, file) = if rest.get(1).is_some_and(|a| a == "--from") {
                (Some(arg(2, "base snapshot")?), arg(3, "stream file")?)
            } else {
                (None, arg(1, "stream file")?)
            };
            let mut pool = import(&mut files)?;
            let mut out = std::io::BufWriter::new(std::fs::File::create(file).map_err(|e| format!("{file}: {e}"))?);
            let mut werr = None;
            let mut sent = 0u64;
            let n = pool
                .send(snap, from, &mut |b| {
                    sent += b.len() as u64;
                    if werr.is_none() {
                        werr = out.write_all(b).err();
                    }
                    if sent % (16 * MIB) < b.len() as u64 {
                        progress("send", sent, u64::MAX);
                    }
                })
                .map_err(e)?;
            if let Some(err) = werr {
                return Err(format!("{file}: {err}"));
            }
            out.flush().map_err(|e| format!("{file}: {e}"))?;
            println!("sent {snap}{}: {n} bytes", from.map(|f| format!(" since {f}")).unwrap_or_default());
        }
        "receive" => {
            let vol = arg(0, "volume")?;
            let file = arg(1, "stream file")?;
            // In pieces: the stream is checked as it goes, never held whole.
            let mut f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
            let total = f.metadata().map_err(|e| format!("{file}: {e}"))?.len();
            let mut pool = import(&mut files)?;
            let mut rx = pool.receive_start(vol).map_err(e)?;
            let mut buf = vec![0u8; MIB as usize];
            loop {
                let n = match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(err) => {
                        pool.receive_abort(rx);
                        return Err(format!("{file}: {err}"));
                    }
                };
                pool.receive_bytes(&mut rx, &buf[..n]).map_err(e)?;
                if rx.bytes() % (16 * MIB) < n as u64 {
                    progress("receive", rx.bytes(), total);
                }
            }
            let snap = pool.receive_finish(rx).map_err(e)?;
            println!("received {snap}");
        }
        "import-raw" => {
            let src = arg(0, "raw file")?;
            let vol = arg(1, "volume")?;
            let mut f = std::fs::File::open(src).map_err(|e| format!("{src}: {e}"))?;
            let len = f.metadata().map_err(|e| format!("{src}: {e}"))?.len();
            let bs = u64::from(DEFAULT_VOLBLOCKSIZE);
            let mut pool = import(&mut files)?;
            pool.create_volume(vol, len.div_ceil(bs).max(1) * bs, DEFAULT_VOLBLOCKSIZE).map_err(e)?;
            let mut buf = vec![0u8; MIB as usize];
            let mut at = 0u64;
            let mut since_commit = 0u64;
            while at < len {
                let n = (len - at).min(MIB) as usize;
                f.read_exact(&mut buf[..n]).map_err(|e| format!("{src}: {e}"))?;
                let padded = n.div_ceil(512) * 512;
                buf[n..padded].fill(0);
                match pool.write(vol, at, &buf[..padded]) {
                    // Each write reserves its commit's worst case (a new
                    // path of indirect blocks per block): committing what
                    // is gathered gives that back; then it may fit.
                    Err(alcove_pool::Error::NoSpace) if since_commit > 0 => {
                        pool.sync().map_err(e)?;
                        since_commit = 0;
                        pool.write(vol, at, &buf[..padded]).map_err(e)?;
                    }
                    r => r.map_err(e)?,
                }
                at += n as u64;
                since_commit += n as u64;
                if since_commit >= COMMIT_EVERY {
                    pool.sync().map_err(e)?;
                    since_commit = 0;
                }
                progress("import-raw", at, len);
            }
            pool.sync().map_err(e)?;
        }
        "export-raw" => {
            let vol = arg(0, "volume")?;
            let dst = arg(1, "raw file")?;
            let mut pool = import(&mut files)?;
            let size = pool.get(vol).map_err(e)?.volsize;
            let mut out = std::fs::File::create(dst).map_err(|e| format!("{dst}: {e}"))?;
            let mut buf = vec![0u8; MIB as usize];
            let mut at = 0u64;
            while at < size {
                let n = (size - at).min(MIB) as usize;
                pool.read(vol, at, &mut buf[..n]).map_err(e)?;
                out.write_all(&buf[..n]).map_err(|e| format!("{dst}: {e}"))?;
                at += n as u64;
                progress("export-raw", at, size);
            }
            out.sync_all().map_err(|e| format!("{dst}: {e}"))?;
        }
        _ => return Err(usage()),
    }
    Ok(())
}

/// `zpool status` (`-v`: the permanent errors, by dataset and bytes).
fn print_status(pool: &Pool<FileDisk>, files: &[PathBuf], verbose: bool) {
    println!("  pool: {}", pool.name());
    println!(" state: {}", pool.state());
    let stats = pool.child_stats();
    match (pool.scrub_progress(), pool.last_scrub()) {
        (Some(p), _) => {
            // As `zpool status` while a scrub runs (here: one an import
            // resumed; `scrub` goes on with it, `scrub -s` stops it).
            println!("  scan: scrub in progress since {}", when(p.start));
            let pct = if p.total == 0 { 100.0 } else { p.bytes as f64 * 100.0 / p.total as f64 };
            println!(
                "\t{} scanned of {} (txg {}), {} repaired, {:.2}% done, {} error{} so far",
                size(p.bytes),
                size(p.total),
                p.txg,
                size(p.repaired),
                pct.min(100.0),
                p.errors,
                if p.errors == 1 { "" } else { "s" }
            );
        }
        (None, None) => println!("  scan: none requested"),
        (None, Some(r)) => println!(
            "  scan: scrub repaired {} in {} with {} error{} on {} (txg {}: {} blocks, {} verified)",
            size(r.repaired),
            duration(r.end - r.start),
            r.errors_total,
            if r.errors_total == 1 { "" } else { "s" },
            when(r.end),
            r.txg,
            r.blocks,
            size(r.bytes),
        ),
    }
    println!("   txg: {}", pool.txg());
    println!("  size: {} MiB, {} MiB free", pool.size_bytes() / MIB, pool.free_bytes() / MIB);
    println!("config:");
    println!();
    let row = |indent: usize, name: &str, state: &str, r: u64, w: u64, c: u64, rep: Option<u64>| {
        let name = format!("{:indent$}{name}", "");
        let rep = rep.map(size).unwrap_or_default();
        println!("\t{name:<44} {state:<8} {r:>5} {w:>5} {c:>5}  {rep}");
    };
    println!("\t{:<44} {:<8} {:>5} {:>5} {:>5}  REPAIRED", "NAME", "STATE", "READ", "WRITE", "CKSUM");
    let sum = |f: fn(&alcove_pool::vdev::ChildStats) -> u64| stats.iter().map(f).sum::<u64>();
    let (r, w, c) = (sum(|s| s.read_errors), sum(|s| s.write_errors), sum(|s| s.checksum_errors));
    row(0, pool.name(), pool.state(), r, w, c, None);
    let mirror = pool.children_total() > 1;
    if mirror {
        row(2, "mirror-0", pool.state(), r, w, c, None);
    }
    let indent = if mirror { 4 } else { 2 };
    for (f, s) in files.iter().zip(stats) {
        let state = if s.faulted { "FAULTED" } else { "ONLINE" };
        row(indent, &f.display().to_string(), state, s.read_errors, s.write_errors, s.checksum_errors, Some(s.repaired_bytes));
    }
    for i in files.len()..pool.children_total() {
        row(indent, &format!("(disk {i} of the mirror)"), "UNAVAIL", 0, 0, 0, None);
    }
    if stats.iter().any(|s| s.faulted) {
        println!("\tFAULTED: a write or a flush failed on that disk; out of service until the pool is imported again");
    }
    println!();
    match pool.last_scrub() {
        None => println!("errors: not known (no scrub has run)"),
        Some(r) if r.errors_total == 0 => println!("errors: No known data errors"),
        Some(r) if !verbose => {
            println!("errors: {} data error{}, use '-v' for a list", r.errors_total, if r.errors_total == 1 { "" } else { "s" })
        }
        Some(r) => {
            println!("errors: Permanent errors have been detected in the following datasets:");
            println!();
            for e in &r.errors {
                println!("\t{e}");
            }
            if r.errors_total > r.errors.len() as u64 {
                println!("\t... and {} more (the pool keeps the first {})", r.errors_total - r.errors.len() as u64, r.errors.len());
            }
        }
    }
    if pool.last_scrub().is_some_and(|r| r.resumed) {
        println!("note: the last scrub was resumed after an import: its walk was not checked against the space map");
    } else if pool.last_scrub().is_some_and(|r| !r.space_checked) {
        println!("note: an unreadable indirect block hid the blocks below it: the space map was not checked against them");
    }
}

/// A time as `zpool status` prints it (`Fri Dec  4 14:50:41 2026`, UTC).
fn when(secs: u64) -> String {
    if secs == 0 { "an unknown date".into() } else { libipc::time::ctime(secs) }
}

/// A scrub's length as `zpool status` gives it: `00:00:01`, `1 days 02:03:04`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 { format!("{d} days {h:02}:{m:02}:{s:02}") } else { format!("{h:02}:{m:02}:{s:02}") }
}

/// Seconds since 1970, from the host's clock.
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Bytes as `zpool status` gives them: 0B, 8K, 1.5M.
fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v >= 10.0 || v.fract() == 0.0 { format!("{v:.0}{}", UNITS[u]) } else { format!("{v:.1}{}", UNITS[u]) }
}
