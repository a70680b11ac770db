//! Manifests: a real IMGAPI v2 manifest parses; hostile and malformed ones
//! are refused with an error naming the property.

mod common;

use alcove_images::manifest::{Bootrom, Compression, MAX_MANIFEST};
use alcove_images::{Manifest, ManifestError};
use common::*;
use serde_json::{Value, json};

fn base() -> Value {
    manifest_json(IMAGE, b"file bytes", "gzip", 10240)
}

fn refused(mut edit: impl FnMut(&mut Value)) -> ManifestError {
    let mut m = base();
    edit(&mut m);
    match Manifest::from_json(m.clone()) {
        Ok(_) => panic!("accepted {m}"),
        Err(e) => e,
    }
}

#[test]
fn an_imgapi_manifest_parses() {
    // The shape of a manifest from images.smartos.org (zvol, gzip).
    let text = br#"{
      "v": 2,
      "uuid": "0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d",
      "owner": "00000000-0000-0000-0000-000000000000",
      "name": "debian-12",
      "version": "20240131",
      "state": "active",
      "disabled": false,
      "public": true,
      "published_at": "2024-01-31T18:21:37.123Z",
      "type": "zvol",
      "os": "linux",
      "files": [{"sha1": "a9993e364706816aba3e25717850c26c9cd0d89d", "size": 393216000, "compression": "gzip"}],
      "description": "Debian 12 (bookworm) 64-bit image",
      "homepage": "https://docs.tritondatacenter.com/public-cloud/instances/virtual-machines/images/linux/debian",
      "requirements": {"networks": [{"name": "net0", "description": "public"}], "ssh_key": true, "bootrom": "uefi", "min_ram": 1024, "max_ram": 65536},
      "nic_driver": "virtio",
      "disk_driver": "virtio",
      "cpu_type": "host",
      "image_size": 10240,
      "tags": {"role": "os", "default_user": "debian"},
      "channels": ["release"]
    }"#;
    let m = Manifest::parse(text).unwrap();
    assert_eq!(m.uuid, "0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d");
    assert_eq!(m.image_size_mib, 10240);
    assert_eq!(m.file.size, 393216000);
    assert_eq!(m.file.compression, Compression::Gzip);
    assert_eq!(m.requirements.bootrom, Some(Bootrom::Uefi));
    assert_eq!(m.requirements.min_ram_mib, Some(1024));
    assert_eq!(m.pub_date(), Some("2024-01-31"));
    // Unknown properties are kept for `show`.
    assert_eq!(m.json["channels"], json!(["release"]));
}

#[test]
fn hostile_and_malformed_manifests_name_the_property() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("uuid", Box::new(|m| m["uuid"] = json!("../../etc/passwd"))),
        ("uuid", Box::new(|m| m["uuid"] = json!("0B7B3B7E-8D6C-4C8E-9D3A-2F1E5A6B7C8D"))),
        ("uuid", Box::new(|m| m["uuid"] = json!("0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8"))),
        ("uuid", Box::new(|m| m["uuid"] = json!("0b7b3b7e/8d6c-4c8e-9d3a-2f1e5a6b7c8d"))),
        ("uuid", Box::new(|m| m["uuid"] = json!(42))),
        ("uuid", Box::new(|m| m.as_object_mut().unwrap().remove("uuid").map(|_| ()).unwrap())),
        ("owner", Box::new(|m| m["owner"] = json!("root"))),
        ("name", Box::new(|m| m["name"] = json!("../../boot"))),
        ("name", Box::new(|m| m["name"] = json!("a\nb"))),
        ("name", Box::new(|m| m["name"] = json!(""))),
        ("name", Box::new(|m| m["name"] = json!("x".repeat(513)))),
        ("version", Box::new(|m| m["version"] = json!("1.0 beta"))),
        ("version", Box::new(|m| m["version"] = json!(".."))),
        ("type", Box::new(|m| m["type"] = json!("zone-dataset"))),
        ("type", Box::new(|m| m["type"] = json!("qcow2"))),
        ("os", Box::new(|m| m["os"] = json!("plan9"))),
        ("state", Box::new(|m| m["state"] = json!("deleted"))),
        ("disabled", Box::new(|m| m["disabled"] = json!("no"))),
        ("public", Box::new(|m| m["public"] = json!(1))),
        ("published_at", Box::new(|m| m["published_at"] = json!("yesterday"))),
        ("v", Box::new(|m| m["v"] = json!(1))),
        ("origin", Box::new(|m| m["origin"] = json!(IMAGE))),
        ("image_size", Box::new(|m| m["image_size"] = json!(-1))),
        ("image_size", Box::new(|m| m["image_size"] = json!(0))),
        ("image_size", Box::new(|m| m["image_size"] = json!(1e300))),
        ("image_size", Box::new(|m| m["image_size"] = json!(u64::MAX))),
        ("image_size", Box::new(|m| m["image_size"] = json!("10240"))),
        ("image_size", Box::new(|m| m["image_size"] = json!(1.5))),
        ("image_size", Box::new(|m| m.as_object_mut().unwrap().remove("image_size").map(|_| ()).unwrap())),
        ("files", Box::new(|m| m["files"] = json!([]))),
        (
            "files",
            Box::new(|m| {
                let f = m["files"][0].clone();
                m["files"] = json!([f.clone(), f]);
            }),
        ),
        ("files", Box::new(|m| m["files"] = json!({"sha1": "x"}))),
        ("files[0]", Box::new(|m| m["files"] = json!(["file"]))),
        ("files[0].sha1", Box::new(|m| m["files"][0]["sha1"] = json!("abc"))),
        ("files[0].sha1", Box::new(|m| m["files"][0]["sha1"] = json!("A9993E364706816ABA3E25717850C26C9CD0D89D"))),
        ("files[0].sha1", Box::new(|m| m["files"][0]["sha1"] = json!("g9993e364706816aba3e25717850c26c9cd0d89d"))),
        ("files[0].size", Box::new(|m| m["files"][0]["size"] = json!(-4096))),
        ("files[0].size", Box::new(|m| m["files"][0]["size"] = json!(0))),
        ("files[0].size", Box::new(|m| m["files"][0]["size"] = json!(18446744073709551615u64))),
        ("files[0].size", Box::new(|m| m["files"][0]["size"] = json!(99999999999999999999999999.0))),
        ("files[0].compression", Box::new(|m| m["files"][0]["compression"] = json!("XZ"))),
        ("files[0].compression", Box::new(|m| m["files"][0]["compression"] = json!("bzip2"))),
        ("files[0].compression", Box::new(|m| m["files"][0]["compression"] = json!("zstd"))),
        ("requirements", Box::new(|m| m["requirements"] = json!("big"))),
        ("requirements.bootrom", Box::new(|m| m["requirements"]["bootrom"] = json!("coreboot"))),
        ("requirements.min_ram", Box::new(|m| m["requirements"] = json!({"min_ram": 4096, "max_ram": 1024}))),
        ("requirements.max_ram", Box::new(|m| m["requirements"] = json!({"max_ram": -5}))),
        ("requirements.networks", Box::new(|m| m["requirements"] = json!({"networks": "net0"}))),
        ("tags", Box::new(|m| m["tags"] = json!(["a"]))),
        ("description", Box::new(|m| m["description"] = json!({"x": 1}))),
    ];
    assert!(cases.len() >= 40);
    for (property, edit) in cases {
        let e = refused(&edit);
        assert_eq!(e.property, property, "{e}");
        assert!(e.to_string().contains(&format!("\"{property}\"")), "{e}");
    }
}

#[test]
fn each_compression_parses() {
    for (name, c) in [("none", Compression::None), ("gzip", Compression::Gzip), ("xz", Compression::Xz)] {
        let m = Manifest::from_json(manifest_json(IMAGE, b"f", name, 1)).unwrap();
        assert_eq!(m.file.compression, c);
        assert_eq!(c.as_str(), name);
    }
}

#[test]
fn refusals_say_why() {
    let e = refused(|m| m["type"] = json!("zone-dataset"));
    assert!(e.message.contains("not supported yet") && e.message.contains("zvol"), "{e}");
    let e = refused(|m| m["files"][0]["compression"] = json!("bzip2"));
    assert!(e.message.contains("gzip or xz"), "{e}");
    let e = refused(|m| m["files"][0]["compression"] = json!("zstd"));
    assert!(e.message.contains("gzip, xz or none"), "{e}");
    let e = refused(|m| m["image_size"] = json!(-1));
    assert!(e.message.contains("whole number"), "{e}");
}

#[test]
fn whole_documents_that_are_not_manifests_are_refused() {
    for text in [&b"not json"[..], b"[]", b"\"a string\"", b"{\"uuid\": ", b"", b"\xff\xfe{}"] {
        assert!(Manifest::parse(text).is_err(), "{:?}", String::from_utf8_lossy(text));
    }
    let mut big = base();
    big["description"] = json!("x".repeat(MAX_MANIFEST));
    let e = Manifest::parse(big.to_string().as_bytes()).unwrap_err();
    assert!(e.message.contains("at most"), "{e}");
    // Deeply nested JSON is refused by the parser's depth limit, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(Manifest::parse(deep.as_bytes()).is_err());
}

#[test]
fn random_mutations_never_panic_and_accepted_ones_are_sane() {
    let hostile = [
        json!(null),
        json!(-1),
        json!(0),
        json!(1e308),
        json!(u64::MAX),
        json!(""),
        json!("../.."),
        json!("\u{0}"),
        json!([]),
        json!({}),
        json!(true),
        json!("x".repeat(5000)),
    ];
    let base = base();
    let keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
    let mut x: u64 = 0x853c_49e6_748f_ea9b;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut accepted = 0;
    for _ in 0..5000 {
        let mut m = base.clone();
        for _ in 0..1 + next() % 3 {
            let v = hostile[(next() % hostile.len() as u64) as usize].clone();
            match next() % 3 {
                0 => m[&keys[(next() % keys.len() as u64) as usize]] = v,
                1 => {
                    if let Some(f) = m.pointer_mut("/files/0").filter(|f| f.is_object()) {
                        f[["sha1", "size", "compression"][(next() % 3) as usize]] = v;
                    }
                }
                _ => {
                    if let Some(r) = m.pointer_mut("/requirements").filter(|r| r.is_object()) {
                        r[["bootrom", "min_ram", "max_ram"][(next() % 3) as usize]] = v;
                    }
                }
            }
        }
        // Also as text with a byte changed.
        let mut text = m.to_string().into_bytes();
        let at = (next() % text.len() as u64) as usize;
        let _ = Manifest::parse(&{
            let mut t = text.clone();
            t[at] = next() as u8;
            t
        });
        text.truncate(at);
        let _ = Manifest::parse(&text);
        if let Ok(ok) = Manifest::from_json(m) {
            accepted += 1;
            assert!(alcove_images::manifest::is_uuid(&ok.uuid));
            assert!(ok.image_size_mib >= 1 && ok.file.size >= 1);
            assert!(!ok.name.contains('/') && !ok.name.is_empty());
        }
    }
    assert!(accepted > 20, "{accepted}");
}
