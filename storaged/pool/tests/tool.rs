//! The host tool end to end: a mirror of two image files, a raw disk image
//! imported into a volume, snapshot and clone, exported back byte for byte;
//! one side damaged, scrub reports and repairs it.

use std::path::Path;
use std::process::Command;

fn tool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_alcove-pool")).current_dir(dir).args(args).output().expect("run alcove-pool");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = tool(dir, args);
    assert!(ok, "alcove-pool {args:?} failed:\n{text}");
    text
}

#[test]
fn mirror_import_snapshot_clone_export_scrub() {
    let dir = std::env::temp_dir().join(format!("alcove-pool-tool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = alcove_pool::fault::Rng(11);
    let raw: Vec<u8> = (0..3 * 1024 * 1024 + 4096).map(|_| rng.next() as u8).collect();
    std::fs::write(dir.join("disk.raw"), &raw).unwrap();
    ok(&dir, &["a.img", "b.img", "create", "zones", "--size", "16"]);
    let (refused, text) = tool(&dir, &["a.img", "create", "zones"]);
    assert!(!refused && text.contains("already holds a pool"), "{text}");
    ok(&dir, &["a.img", "b.img", "import-raw", "disk.raw", "zones/vm-disk0"]);
    ok(&dir, &["b.img", "a.img", "snapshot", "zones/vm-disk0@base"]);
    ok(&dir, &["a.img", "b.img", "clone", "zones/vm-disk0@base", "zones/vm2-disk0"]);
    ok(&dir, &["a.img", "b.img", "set", "zones/vm2-disk0", "alcove:alias=web"]);
    let list = ok(&dir, &["a.img", "b.img", "list"]);
    assert!(list.contains("zones/vm2-disk0") && list.contains("zones/vm-disk0@base"), "{list}");
    let get = ok(&dir, &["a.img", "b.img", "get", "zones/vm2-disk0"]);
    assert!(get.contains("origin\tzones/vm-disk0@base") && get.contains("alcove:alias\tweb"), "{get}");
    ok(&dir, &["a.img", "b.img", "set", "zones/vm2-disk0", "quota=8M"]);
    let get = ok(&dir, &["a.img", "b.img", "get", "zones/vm2-disk0"]);
    assert!(get.contains("quota\t8388608") && get.contains("reservation\tnone") && get.contains("\nused\t"), "{get}");
    ok(&dir, &["a.img", "b.img", "export-raw", "zones/vm2-disk0", "out.raw"]);
    let out = std::fs::read(dir.join("out.raw")).unwrap();
    assert_eq!(out.len(), raw.len().div_ceil(8192) * 8192);
    assert!(out[..raw.len()] == raw[..], "the clone exports the imported bytes");
    // Damage side b where the data is, then scrub.
    let mut b = std::fs::read(dir.join("b.img")).unwrap();
    let at = b.windows(64).position(|w| w == &raw[8192..8192 + 64]).expect("data on b");
    b[at + 5] ^= 0xff;
    std::fs::write(dir.join("b.img"), &b).unwrap();
    let status = ok(&dir, &["a.img", "b.img", "scrub"]);
    let bline = status.lines().find(|l| l.contains("b.img")).unwrap_or_default().to_string();
    let cols: Vec<&str> = bline.split_whitespace().collect();
    assert_eq!(cols, ["b.img", "ONLINE", "0", "0", "1", "8K"], "one checksum error on b.img, 8K repaired:\n{status}");
    assert!(status.contains("state: ONLINE"), "{status}");
    assert!(status.contains("scan: scrub repaired 8K in 00:") && status.contains(" with 0 errors on "), "{status}");
    assert!(status.contains("errors: No known data errors"), "{status}");
    let again = ok(&dir, &["a.img", "b.img", "scrub"]);
    let bline = again.lines().find(|l| l.contains("b.img")).unwrap_or_default().to_string();
    assert_eq!(bline.split_whitespace().nth(4), Some("0"), "repaired:\n{again}");
    // send / receive into another pool through files.
    ok(&dir, &["c.img", "create", "zones", "--size", "16"]);
    ok(&dir, &["a.img", "b.img", "send", "zones/vm-disk0@base", "full.stream"]);
    ok(&dir, &["c.img", "receive", "zones/copy-disk0", "full.stream"]);
    ok(&dir, &["c.img", "export-raw", "zones/copy-disk0", "copy.raw"]);
    assert!(std::fs::read(dir.join("copy.raw")).unwrap() == out, "received volume equals its source");
    let mut stream = std::fs::read(dir.join("full.stream")).unwrap();
    stream.truncate(stream.len() / 2);
    std::fs::write(dir.join("cut.stream"), &stream).unwrap();
    let (refused, text) = tool(&dir, &["c.img", "receive", "zones/other-disk0", "cut.stream"]);
    assert!(!refused && text.contains("cut short"), "{text}");
    let (refused, text) = tool(&dir, &["a.img", "b.img", "destroy", "zones/vm-disk0@base"]);
    assert!(!refused && text.contains("clones depend on it"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A single-disk pool with one block of a volume damaged: `scrub` walks
/// to the end, exits non-zero, and `-v` names the volume, its snapshot
/// (which shares the block) and the bytes; without `-v` a count.
#[test]
fn single_disk_scrub_names_the_damaged_volume() {
    let dir = std::env::temp_dir().join(format!("alcove-pool-tool-single-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = alcove_pool::fault::Rng(12);
    let raw: Vec<u8> = (0..1024 * 1024).map(|_| rng.next() as u8).collect();
    let other: Vec<u8> = (0..1024 * 1024).map(|_| rng.next() as u8).collect();
    std::fs::write(dir.join("disk.raw"), &raw).unwrap();
    std::fs::write(dir.join("other.raw"), &other).unwrap();
    ok(&dir, &["p.img", "create", "zones", "--size", "16"]);
    ok(&dir, &["p.img", "import-raw", "disk.raw", "zones/vm-disk0"]);
    ok(&dir, &["p.img", "import-raw", "other.raw", "zones/other-disk0"]);
    ok(&dir, &["p.img", "snapshot", "zones/vm-disk0@base"]);
    let status = ok(&dir, &["p.img", "status"]);
    assert!(status.contains("scan: none requested") && status.contains("errors: not known (no scrub has run)"), "{status}");
    // `creation`: this year, from the host's clock.
    let get = ok(&dir, &["p.img", "get", "zones/vm-disk0@base"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let creation = get.lines().find_map(|l| l.strip_prefix("creation\t")).unwrap_or_default();
    let day = |t: &str| t.get(..10).unwrap_or_default().to_string();
    let (today, yesterday) = (libipc::time::ctime(now), libipc::time::ctime(now - 86_400));
    assert!(creation.len() == 24 && [day(&today), day(&yesterday)].contains(&day(creation)), "{get}");
    let clean = ok(&dir, &["p.img", "scrub", "-v"]);
    assert!(clean.contains("errors: No known data errors"), "{clean}");
    let mut img = std::fs::read(dir.join("p.img")).unwrap();
    let block = 3 * 8192;
    let at = img.windows(64).position(|w| w == &raw[block..block + 64]).expect("data on the disk");
    img[at + 100] ^= 0x01;
    std::fs::write(dir.join("p.img"), &img).unwrap();
    let (good, text) = tool(&dir, &["p.img", "scrub"]);
    assert!(!good, "a scrub that finds permanent errors fails:\n{text}");
    assert!(text.contains("scrub found") && text.contains("permanent error"), "{text}");
    let line = text.lines().find(|l| l.trim_start().starts_with("p.img")).unwrap_or_default().to_string();
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["p.img", "ONLINE", "0", "0", "1", "0B"], "{text}");
    let (read, t) = tool(&dir, &["p.img", "export-raw", "zones/vm-disk0", "out.raw"]);
    assert!(!read && t.contains("checksum error: no good copy"), "the damaged block is an error, never wrong data: {t}");
    ok(&dir, &["p.img", "export-raw", "zones/other-disk0", "out.raw"]);
    let (good, verbose) = tool(&dir, &["p.img", "scrub", "-v"]);
    assert!(!good, "{verbose}");
    assert!(verbose.contains("errors: Permanent errors have been detected in the following datasets:"), "{verbose}");
    let named: Vec<&str> = verbose.lines().filter(|l| l.contains(" bytes 24576..32768 (data block at ")).collect();
    let mut who: Vec<&str> = named.iter().filter_map(|l| l.split_whitespace().next()).collect();
    who.sort();
    assert_eq!(who, ["zones/vm-disk0", "zones/vm-disk0@base"], "the volume and its snapshot, not the other volume:\n{verbose}");
    let (_, short) = tool(&dir, &["p.img", "scrub"]);
    assert!(short.contains("errors: 2 data errors, use '-v' for a list"), "{short}");
    // The scrub's record is the pool's: a new process's status shows it.
    let later = ok(&dir, &["p.img", "status"]);
    assert!(later.contains("scan: scrub repaired 0B in 00:") && later.contains(" with 2 errors on "), "{later}");
    assert!(later.contains("errors: 2 data errors, use '-v' for a list"), "{later}");
    let (refused, text) = tool(&dir, &["p.img", "scrub", "-x"]);
    assert!(!refused && text.contains("only -v"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An image half the pool's size imports: each write reserves its
/// commit's worst case, so the tool commits what it gathered when the
/// pool says "out of space" and tries again (it refused before).
#[test]
fn import_raw_fills_half_the_pool() {
    let dir = std::env::temp_dir().join(format!("alcove-pool-tool-half-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = alcove_pool::fault::Rng(13);
    let raw: Vec<u8> = (0..16 * 1024 * 1024).map(|_| rng.next() as u8).collect();
    std::fs::write(dir.join("disk.raw"), &raw).unwrap();
    ok(&dir, &["p.img", "create", "zones", "--size", "32"]);
    ok(&dir, &["p.img", "import-raw", "disk.raw", "zones/vm-disk0"]);
    ok(&dir, &["p.img", "export-raw", "zones/vm-disk0", "out.raw"]);
    assert!(std::fs::read(dir.join("out.raw")).unwrap() == raw, "exported as imported");
    // What truly does not fit is still refused, naming the cause.
    let big: Vec<u8> = (0..40 * 1024 * 1024).map(|_| rng.next() as u8).collect();
    std::fs::write(dir.join("big.raw"), &big).unwrap();
    let (fit, text) = tool(&dir, &["p.img", "import-raw", "big.raw", "zones/big-disk0"]);
    assert!(!fit && text.contains("out of space"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Full then incremental send/receive through stream files with the
/// tool; the received snapshots equal their sources byte for byte, and an
/// incremental stream with a byte altered is refused.
#[test]
fn incremental_send_receive_through_files() {
    use alcove_pool::Pool;
    use alcove_pool::disk::FileDisk;
    let dir = std::env::temp_dir().join(format!("alcove-pool-tool-incr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = alcove_pool::fault::Rng(14);
    let raw: Vec<u8> = (0..2 * 1024 * 1024).map(|_| rng.next() as u8).collect();
    std::fs::write(dir.join("disk.raw"), &raw).unwrap();
    ok(&dir, &["a.img", "create", "zones", "--size", "16"]);
    ok(&dir, &["b.img", "create", "zones", "--size", "16"]);
    ok(&dir, &["a.img", "import-raw", "disk.raw", "zones/vm-disk0"]);
    ok(&dir, &["a.img", "snapshot", "zones/vm-disk0@one"]);
    // The guest changes some blocks (written with the library, as storaged would).
    let changed: Vec<u8> = (0..100_000).map(|_| rng.next() as u8).collect();
    {
        let mut p = Pool::import(vec![FileDisk::open(&dir.join("a.img")).unwrap()]).unwrap();
        p.write("zones/vm-disk0", 512 * 1024, &changed[..98_304]).unwrap();
        p.sync().unwrap();
    }
    ok(&dir, &["a.img", "snapshot", "zones/vm-disk0@two"]);
    ok(&dir, &["a.img", "send", "zones/vm-disk0@one", "full.stream"]);
    ok(&dir, &["a.img", "send", "zones/vm-disk0@two", "--from", "zones/vm-disk0@one", "incr.stream"]);
    let (full, incr) = (std::fs::metadata(dir.join("full.stream")).unwrap().len(), std::fs::metadata(dir.join("incr.stream")).unwrap().len());
    assert!(incr < full / 4, "the incremental carries the changed blocks only: {incr} of {full} bytes");
    let mut bad = std::fs::read(dir.join("incr.stream")).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    std::fs::write(dir.join("bad.stream"), &bad).unwrap();
    ok(&dir, &["b.img", "receive", "zones/copy-disk0", "full.stream"]);
    let (refused, text) = tool(&dir, &["b.img", "receive", "zones/copy-disk0", "bad.stream"]);
    assert!(!refused && text.contains("receive:") && text.contains("nothing received"), "an altered stream is refused: {text}");
    ok(&dir, &["b.img", "receive", "zones/copy-disk0", "incr.stream"]);
    for snap in ["one", "two"] {
        ok(&dir, &["a.img", "export-raw", &format!("zones/vm-disk0@{snap}"), "src.raw"]);
        ok(&dir, &["b.img", "export-raw", &format!("zones/copy-disk0@{snap}"), "dst.raw"]);
        let (src, dst) = (std::fs::read(dir.join("src.raw")).unwrap(), std::fs::read(dir.join("dst.raw")).unwrap());
        assert!(src == dst, "@{snap} received byte for byte");
        assert_eq!(src[512 * 1024..512 * 1024 + 98_304] == changed[..98_304], snap == "two");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_scrub_cut_short_shows_in_progress_and_resumes() {
    let dir = std::env::temp_dir().join(format!("alcove-pool-tool-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = alcove_pool::fault::Rng(12);
    let raw: Vec<u8> = (0..2 * 1024 * 1024).map(|_| rng.next() as u8).collect();
    std::fs::write(dir.join("disk.raw"), &raw).unwrap();
    ok(&dir, &["a.img", "create", "zones", "--size", "16"]);
    ok(&dir, &["a.img", "import-raw", "disk.raw", "zones/vm-disk0"]);
    let whole = ok(&dir, &["a.img", "scrub"]);
    let walked = |s: &str| s.lines().find(|l| l.contains("scan: scrub repaired")).and_then(|l| l.split("(txg ").nth(1)).unwrap_or_default().to_string();
    let (n, _) = tool(&dir, &["a.img", "scrub", "-s"]);
    assert!(!n, "scrub -s with no scrub under way is refused");
    // A scrub cut short: walked in part, recorded by a commit, the process
    // gone (as at a power cut).
    let cut = |dir: &Path| {
        let disk = alcove_pool::disk::FileDisk::open(&dir.join("a.img")).unwrap();
        let mut pool = alcove_pool::Pool::import(vec![disk]).unwrap();
        pool.scrub_start().unwrap();
        for _ in 0..8 {
            assert!(pool.scrub_step(64 * 1024).unwrap().is_none());
        }
        pool.sync().unwrap();
    };
    cut(&dir);
    let status = ok(&dir, &["a.img", "status"]);
    assert!(status.contains("scan: scrub in progress since ") && status.contains("% done, 0 errors so far"), "{status}");
    let done = ok(&dir, &["a.img", "scrub"]);
    assert!(done.contains("resuming the scrub of txg "), "{done}");
    assert!(done.contains("scan: scrub repaired 0B in ") && done.contains("note: the last scrub was resumed"), "{done}");
    // The same blocks and bytes as the scrub nobody cut (one txg later).
    let (w, d) = (walked(&whole), walked(&done));
    assert_eq!(w.split_once(':').map(|x| x.1), d.split_once(':').map(|x| x.1), "{whole}\n{done}");
    assert!(!ok(&dir, &["a.img", "status"]).contains("in progress"));
    // `scrub -s` stops one: no longer in progress in a new process.
    cut(&dir);
    let stop = ok(&dir, &["a.img", "scrub", "-s"]);
    assert!(stop.contains("canceled after"), "{stop}");
    let status = ok(&dir, &["a.img", "status"]);
    assert!(!status.contains("in progress") && status.contains("scan: scrub repaired"), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
