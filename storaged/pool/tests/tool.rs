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
    assert_eq!(cols.get(3), Some(&"1"), "one checksum error on b.img:\n{status}");
    assert!(status.contains("state: ONLINE"), "{status}");
    let again = ok(&dir, &["a.img", "b.img", "scrub"]);
    let bline = again.lines().find(|l| l.contains("b.img")).unwrap_or_default().to_string();
    assert_eq!(bline.split_whitespace().nth(3), Some("0"), "repaired:\n{again}");
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
