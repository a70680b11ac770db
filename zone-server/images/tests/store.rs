//! The image store on a pool over in-memory disks: installs of raw, gzip
//! and xz files and of the pool's own send streams, what a bad file leaves
//! behind (nothing), clones for instances, and delete.

mod common;

use alcove_images::store::{self, FINAL, Install};
use alcove_images::{Error, Manifest};
use common::*;
use serde_json::json;

#[test]
fn sha1_of_the_test_helper_matches_the_standard_vector() {
    // FIPS 180 "abc" — pins the helper the other tests trust.
    assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
}

#[test]
fn a_raw_image_installs_as_a_volume_with_a_final_snapshot() {
    let mut p = pool();
    let file = disk_image(1 << 20, 7);
    let rec = store::install(&mut p, manifest(IMAGE, &file, "none", 4), &file, Some("http://10.0.2.2:8080")).unwrap();
    assert_eq!(rec.volume, format!("zones/{IMAGE}"));
    let all = names(&p);
    assert!(all.contains(&format!("zones/{IMAGE}")), "{all:?}");
    assert!(all.contains(&format!("zones/{IMAGE}@{FINAL}")), "{all:?}");
    assert!(!all.iter().any(|n| n.contains("partial")), "{all:?}");
    let vol = p.get(&format!("zones/{IMAGE}")).unwrap();
    assert_eq!(vol.volsize, 4 << 20);
    // The disk reads back as the file, then zeros to image_size.
    let back = read_volume(&mut p, &format!("zones/{IMAGE}@{FINAL}"), 4 << 20);
    assert_eq!(&back[..file.len()], &file[..]);
    assert!(back[file.len()..].iter().all(|&b| b == 0));
    // The record survives a pool export and import.
    let disks = p.into_disks();
    let p = alcove_pool::Pool::import(disks).unwrap();
    let got = store::get(&p, IMAGE).unwrap();
    assert_eq!(got.manifest, rec.manifest);
    assert_eq!(got.source.as_deref(), Some("http://10.0.2.2:8080"));
    assert_eq!(store::list(&p).len(), 1);
}

#[test]
fn a_gzip_image_fed_in_odd_pieces_installs() {
    let mut p = pool();
    let disk = disk_image(700_000, 3);
    let file = gzip(&disk);
    let mut inst = Install::begin(&mut p, manifest(IMAGE, &file, "gzip", 1), None).unwrap();
    for piece in file.chunks(777) {
        inst.write(piece).unwrap();
    }
    inst.finish().unwrap();
    let back = read_volume(&mut p, &format!("zones/{IMAGE}"), disk.len());
    assert_eq!(back, disk);
}

#[test]
fn an_xz_image_fed_in_odd_pieces_installs() {
    let mut p = pool();
    let disk = disk_image(700_000, 3);
    let file = xz(&disk);
    let mut inst = Install::begin(&mut p, manifest(IMAGE, &file, "xz", 1), None).unwrap();
    for piece in file.chunks(777) {
        inst.write(piece).unwrap();
    }
    inst.finish().unwrap();
    let back = read_volume(&mut p, &format!("zones/{IMAGE}"), disk.len());
    assert_eq!(back, disk);
    assert_eq!(store::get(&p, IMAGE).unwrap().manifest.file.compression, alcove_images::manifest::Compression::Xz);
}

#[test]
fn an_xz_send_stream_installs_through_the_pool_s_receive() {
    // The pool's own send stream of a 2 MiB volume, compressed with xz.
    let mut src = pool();
    src.create_volume("zones/src", 2 << 20, 8192).unwrap();
    let disk = disk_image(1 << 20, 11);
    src.write("zones/src", 0, &disk).unwrap();
    src.snapshot("zones/src@v1").unwrap();
    let mut stream = Vec::new();
    src.send("zones/src@v1", None, &mut |b| stream.extend_from_slice(b)).unwrap();
    let file = xz(&stream);
    let mut p = pool();
    store::install(&mut p, manifest(IMAGE, &file, "xz", 2), &file, None).unwrap();
    let back = read_volume(&mut p, &format!("zones/{IMAGE}@{FINAL}"), disk.len());
    assert_eq!(back, disk);
}

#[test]
fn an_xz_bomb_stops_at_image_size() {
    let mut p = pool();
    // 64 MiB of zeros compress to about 10 KiB; image_size is 1 MiB.
    let file = xz(&vec![0u8; 64 << 20]);
    let mut inst = Install::begin(&mut p, manifest(IMAGE, &file, "xz", 1), None).unwrap();
    let mut result = Ok(());
    let mut fed = 0;
    for piece in file.chunks(256) {
        result = inst.write(piece);
        fed += piece.len();
        if result.is_err() {
            break;
        }
    }
    let e = result.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert_eq!(e.code(), "UncompressionError");
    assert!(fed < file.len() / 4, "refused only after {fed} of {} bytes", file.len());
    drop(inst);
    assert!(names(&p).is_empty(), "{:?}", names(&p));
}

#[test]
fn a_bad_xz_file_is_refused_and_leaves_nothing() {
    let mut p = pool();
    let good = xz(&disk_image(100_000, 2));
    let (footer, n) = (good.len() - 12, good.len());
    // The block's CRC64 sits just before the index (size and SHA-1
    // describe the corrupted file).
    let backward = u32::from_le_bytes(good[footer + 4..footer + 8].try_into().unwrap()) as usize;
    let mut file = good.clone();
    file[footer - (backward + 1) * 4 - 1] ^= 0x55;
    let e = store::install(&mut p, manifest(IMAGE, &file, "xz", 1), &file, None).unwrap_err();
    assert!(matches!(&e, Error::Xz(s) if s.contains("CRC64")), "{e}");
    assert_eq!(e.code(), "UncompressionError");
    assert!(e.to_string().starts_with("image file: xz: "), "{e}");
    assert!(names(&p).is_empty(), "{:?}", names(&p));
    // Cut inside the compressed data.
    let cut = &good[..n / 2];
    let e = store::install(&mut p, manifest(IMAGE, cut, "xz", 1), cut, None).unwrap_err();
    assert!(matches!(&e, Error::Xz(s) if s.contains("truncated")), "{e}");
    assert!(names(&p).is_empty());
    // gzip said to be xz.
    let gz = gzip(&disk_image(5000, 8));
    let e = store::install(&mut p, manifest(IMAGE, &gz, "xz", 1), &gz, None).unwrap_err();
    assert!(matches!(&e, Error::Xz(s) if s.contains("bad magic")), "{e}");
    assert!(names(&p).is_empty());
}

#[test]
fn a_big_manifest_is_kept_whole_across_several_properties() {
    let mut p = pool();
    let file = disk_image(4096, 5);
    let mut j = manifest_json(IMAGE, &file, "none", 1);
    let long: String = "ünïcödé ".repeat(3000); // 30,000 bytes with multi-byte characters
    j["description"] = json!(long);
    let m = Manifest::from_json(j).unwrap();
    store::install(&mut p, m.clone(), &file, None).unwrap();
    let props = p.get(&format!("zones/{IMAGE}")).unwrap().props;
    assert!(props.keys().filter(|k| k.starts_with("alcove:manifest.")).count() >= 4, "{:?}", props.keys());
    assert_eq!(store::get(&p, IMAGE).unwrap().manifest.json["description"], json!(long));
}

#[test]
fn the_pools_own_send_stream_installs_as_the_image() {
    // A source pool with a 2 MiB volume, snapshotted and sent.
    let mut src = pool();
    src.create_volume("zones/golden", 2 << 20, 8192).unwrap();
    let data = disk_image(1 << 20, 11);
    src.write("zones/golden", 4096, &data).unwrap();
    src.snapshot("zones/golden@v1").unwrap();
    let mut stream = Vec::new();
    src.send("zones/golden@v1", None, &mut |b| stream.extend_from_slice(b)).unwrap();
    let file = gzip(&stream);

    let mut p = pool();
    store::install(&mut p, manifest(IMAGE, &file, "gzip", 2), &file, None).unwrap();
    let all = names(&p);
    assert!(all.contains(&format!("zones/{IMAGE}@{FINAL}")), "{all:?}");
    let back = read_volume(&mut p, &format!("zones/{IMAGE}@{FINAL}"), 2 << 20);
    assert_eq!(&back[4096..4096 + data.len()], &data[..]);
    assert!(back[..4096].iter().all(|&b| b == 0));
    // image_size must be the stream's volume size.
    let mut q = pool();
    let e = store::install(&mut q, manifest(IMAGE, &file, "gzip", 3), &file, None).unwrap_err();
    assert!(matches!(e, Error::Stream(_)), "{e}");
    assert!(names(&q).is_empty(), "{:?}", names(&q));
}

#[test]
fn a_wrong_sha1_installs_nothing() {
    let mut p = pool();
    let file = disk_image(300_000, 9);
    let mut m = manifest_json(IMAGE, &file, "none", 1);
    m["files"][0]["sha1"] = json!(sha1_hex(b"something else"));
    let e = store::install(&mut p, Manifest::from_json(m).unwrap(), &file, None).unwrap_err();
    assert_eq!(e, Error::Sha1 { expected: sha1_hex(b"something else"), got: sha1_hex(&file) });
    assert!(e.to_string().contains("files[0].sha1"), "{e}");
    assert!(names(&p).is_empty(), "{:?}", names(&p));
    assert!(matches!(store::get(&p, IMAGE), Err(Error::NotFound { .. })));
}

#[test]
fn a_truncated_file_installs_nothing() {
    let mut p = pool();
    let file = gzip(&disk_image(300_000, 9));
    let m = manifest(IMAGE, &file, "gzip", 1);
    let e = store::install(&mut p, m, &file[..file.len() - 100], None).unwrap_err();
    assert_eq!(e, Error::Truncated { declared: file.len() as u64, got: file.len() as u64 - 100 });
    assert!(names(&p).is_empty(), "{:?}", names(&p));
}

#[test]
fn a_file_longer_than_its_size_is_refused_as_it_arrives() {
    let mut p = pool();
    let file = disk_image(10_000, 1);
    let m = manifest(IMAGE, &file[..5000], "none", 1);
    let e = store::install(&mut p, m, &file, None).unwrap_err();
    assert_eq!(e, Error::FileTooLong { declared: 5000 });
    assert!(names(&p).is_empty());
}

#[test]
fn a_gzip_bomb_stops_at_image_size() {
    let mut p = pool();
    // 64 MiB of zeros compress to about 64 KiB; image_size is 1 MiB.
    let file = gzip(&vec![0u8; 64 << 20]);
    assert!(file.len() < 1 << 20);
    let mut inst = Install::begin(&mut p, manifest(IMAGE, &file, "gzip", 1), None).unwrap();
    let mut result = Ok(());
    let mut fed = 0;
    for piece in file.chunks(4096) {
        result = inst.write(piece);
        fed += piece.len();
        if result.is_err() {
            break;
        }
    }
    let e = result.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(fed < file.len(), "refused only after the whole file");
    // Further bytes are refused too.
    assert!(inst.write(b"x").is_err());
    drop(inst);
    assert!(names(&p).is_empty(), "{:?}", names(&p));
}

#[test]
fn a_raw_file_larger_than_image_size_is_refused() {
    let mut p = pool();
    let file = disk_image((1 << 20) + 512, 4);
    let e = store::install(&mut p, manifest(IMAGE, &file, "none", 1), &file, None).unwrap_err();
    assert_eq!(e, Error::TooLarge { limit: 1 << 20 });
    assert!(names(&p).is_empty());
}

#[test]
fn a_gzip_file_with_a_bad_trailer_crc_is_refused() {
    let mut p = pool();
    let mut file = gzip(&disk_image(100_000, 2));
    let n = file.len();
    file[n - 8] ^= 0x55; // the trailer's CRC32; size and SHA-1 describe this file
    let e = store::install(&mut p, manifest(IMAGE, &file, "gzip", 1), &file, None).unwrap_err();
    assert!(matches!(&e, Error::Gzip(s) if s.contains("CRC32")), "{e}");
    assert!(names(&p).is_empty());
    // Cut inside the compressed data (with a manifest that describes the cut file).
    let cut = &gzip(&disk_image(100_000, 2))[..n / 2];
    let e = store::install(&mut p, manifest(IMAGE, cut, "gzip", 1), cut, None).unwrap_err();
    assert!(matches!(&e, Error::Gzip(s) if s.contains("truncated")), "{e}");
    assert!(names(&p).is_empty());
    // Not gzip at all.
    let raw = disk_image(5000, 8);
    let e = store::install(&mut p, manifest(IMAGE, &raw, "gzip", 1), &raw, None).unwrap_err();
    assert!(matches!(&e, Error::Gzip(_)), "{e}");
}

#[test]
fn an_image_installs_once() {
    let mut p = pool();
    let file = disk_image(4096, 1);
    store::install(&mut p, manifest(IMAGE, &file, "none", 1), &file, None).unwrap();
    let e = store::install(&mut p, manifest(IMAGE, &file, "none", 1), &file, None).unwrap_err();
    assert_eq!(e, Error::Exists(IMAGE.into()));
}

#[test]
fn an_interrupted_install_is_cleaned_up_by_the_next() {
    let mut p = pool();
    let file = disk_image(600_000, 6);
    {
        let mut inst = Install::begin(&mut p, manifest(IMAGE, &file, "none", 1), None).unwrap();
        inst.write(&file[..300_000]).unwrap();
        // Dropped: the transport went away.
    }
    assert!(names(&p).contains(&format!("zones/{IMAGE}-partial")));
    assert!(store::list(&p).is_empty(), "a partial install is not an image");
    store::install(&mut p, manifest(IMAGE, &file, "none", 1), &file, None).unwrap();
    assert!(!names(&p).iter().any(|n| n.contains("partial")));
    assert_eq!(read_volume(&mut p, &format!("zones/{IMAGE}"), file.len()), file);
}

#[test]
fn instances_clone_the_image_and_delete_waits_for_them() {
    let mut p = pool();
    let file = disk_image(200_000, 12);
    store::install(&mut p, manifest(IMAGE, &file, "none", 1), &file, None).unwrap();
    let disk0 = store::clone_for_instance(&mut p, IMAGE, INSTANCE, 0).unwrap();
    assert_eq!(disk0, format!("zones/{INSTANCE}-disk0"));
    assert_eq!(read_volume(&mut p, &disk0, file.len()), file);
    // The instance writes its disk; the image does not change.
    p.write(&disk0, 0, &[0xab; 4096]).unwrap();
    p.sync().unwrap();
    assert_eq!(read_volume(&mut p, &format!("zones/{IMAGE}@{FINAL}"), file.len()), file);

    let e = store::delete(&mut p, IMAGE).unwrap_err();
    assert_eq!(e, Error::InUse { image: IMAGE.into(), clones: vec![disk0.clone()] });
    assert!(e.to_string().contains(&disk0), "{e}");
    assert_eq!(store::get(&p, IMAGE).unwrap().clones, vec![disk0.clone()]);
    // Once the instance's disk is gone the image can go.
    p.destroy(&disk0, true).unwrap();
    store::delete(&mut p, IMAGE).unwrap();
    assert!(names(&p).is_empty(), "{:?}", names(&p));
    assert_eq!(store::delete(&mut p, IMAGE).unwrap_err(), Error::NotFound { uuid: IMAGE.into(), zpool: "zones".into() });
}

#[test]
fn clone_names_are_checked() {
    let mut p = pool();
    let file = disk_image(4096, 1);
    store::install(&mut p, manifest(IMAGE, &file, "none", 1), &file, None).unwrap();
    for bad in ["../etc", "zones/x", "", "5E4D3C2B-1A09-4F8E-8D7C-6B5A49382716", "5e4d3c2b-1a09-4f8e-8d7c-6b5a4938271"] {
        let e = store::clone_for_instance(&mut p, IMAGE, bad, 0).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e}");
    }
    assert!(matches!(store::clone_for_instance(&mut p, "../../x", INSTANCE, 0), Err(Error::Invalid(_))));
    let other = "11111111-2222-4333-8444-555555555555";
    assert_eq!(
        store::clone_for_instance(&mut p, other, INSTANCE, 0).unwrap_err(),
        Error::NotFound { uuid: other.into(), zpool: "zones".into() }
    );
    store::clone_for_instance(&mut p, IMAGE, INSTANCE, 1).unwrap();
    assert!(matches!(store::clone_for_instance(&mut p, IMAGE, INSTANCE, 1), Err(Error::Pool(_))));
    assert_eq!(names(&p).len(), 3);
}

#[test]
fn two_instances_share_the_images_blocks() {
    let mut p = pool();
    let file = disk_image(2 << 20, 21);
    store::install(&mut p, manifest(IMAGE, &file, "none", 4), &file, None).unwrap();
    let free_before = p.free_bytes();
    let a = store::clone_for_instance(&mut p, IMAGE, INSTANCE, 0).unwrap();
    let b = store::clone_for_instance(&mut p, IMAGE, "6f5e4d3c-2b1a-4098-8e7d-6c5b4a392817", 0).unwrap();
    assert_eq!(read_volume(&mut p, &a, file.len()), file);
    assert_eq!(read_volume(&mut p, &b, file.len()), file);
    // Clones cost metadata only, far less than the image's data.
    assert!(free_before - p.free_bytes() < 256 << 10, "clones used {} bytes", free_before - p.free_bytes());
}

/// A download that fails part way.
struct Flaky<'a> {
    data: &'a [u8],
    fail_at: usize,
    at: usize,
}

impl store::FileReader for Flaky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.at >= self.fail_at {
            return Err(Error::Invalid("connection reset by peer".into()));
        }
        let n = buf.len().min(1000).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_streamed_import_reports_progress_and_a_failed_download_leaves_nothing() {
    let mut p = pool();
    let file = gzip(&disk_image(900_000, 13));
    let mut lines = Vec::new();
    let mut r = Flaky { data: &file, fail_at: usize::MAX, at: 0 };
    store::install_from(&mut p, manifest(IMAGE, &file, "gzip", 1), &mut r, Some("http://10.0.2.2:8080"), &mut |l| lines.push(l))
        .unwrap();
    assert!(lines.last().unwrap().contains("100%"), "{lines:?}");
    assert!(lines.len() > 10);
    store::delete(&mut p, IMAGE).unwrap();

    let mut r = Flaky { data: &file, fail_at: file.len() / 2, at: 0 };
    let e = store::install_from(&mut p, manifest(IMAGE, &file, "gzip", 1), &mut r, None, &mut |_| {}).unwrap_err();
    assert_eq!(e, Error::Invalid("connection reset by peer".into()));
    assert!(names(&p).is_empty(), "{:?}", names(&p));
}

#[test]
fn a_send_stream_image_goes_to_the_pool_as_it_arrives() {
    let mut src = pool();
    src.create_volume("zones/golden", 1 << 20, 8192).unwrap();
    src.write("zones/golden", 0, &disk_image(512 << 10, 3)).unwrap();
    src.snapshot("zones/golden@final").unwrap();
    let mut stream = Vec::new();
    src.send("zones/golden@final", None, &mut |b| stream.extend_from_slice(b)).unwrap();
    let mut p = pool();
    p.sync().unwrap();
    let free = p.free_bytes();
    let mut inst = Install::begin(&mut p, manifest(IMAGE, &stream, "none", 1), None).unwrap();
    // Fed in odd pieces, nothing listed until the end (the pool receives
    // into a hidden volume).
    for c in stream.chunks(3001) {
        inst.write(c).unwrap();
    }
    drop(inst);
    assert!(names(&p).is_empty(), "an install never finished leaves nothing listed: {:?}", names(&p));
    assert_eq!(p.list().len(), 0);
    // A stream altered in its middle: refused when that piece arrives,
    // nothing left (the receive the dropped install left open is gone
    // too), and the pool's free space back.
    let mut bad = stream.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let mut inst = Install::begin(&mut p, manifest(IMAGE, &bad, "none", 1), None).unwrap();
    let e = bad.chunks(4096).try_for_each(|c| inst.write(c)).unwrap_err();
    assert!(matches!(&e, Error::Stream(s) if s.contains("receive:")), "{e}");
    drop(inst);
    p.sync().unwrap();
    assert!(names(&p).is_empty(), "{:?}", names(&p));
    assert_eq!(p.free_bytes(), free);
    // The right stream, a wrong SHA-1 in the manifest: found at the end,
    // the partly received volume destroyed.
    let mut m = manifest(IMAGE, &stream, "none", 1);
    m.file.sha1[0] ^= 1;
    let e = store::install(&mut p, m, &stream, None).unwrap_err();
    assert!(matches!(e, Error::Sha1 { .. }), "{e}");
    p.sync().unwrap();
    assert!(names(&p).is_empty(), "{:?}", names(&p));
    assert_eq!(p.free_bytes(), free);
    // Whole and right: installed, its snapshot already named final.
    store::install(&mut p, manifest(IMAGE, &stream, "none", 1), &stream, None).unwrap();
    assert_eq!(read_volume(&mut p, &format!("zones/{IMAGE}@final"), 512 << 10), disk_image(512 << 10, 3));
}

#[test]
fn a_volume_whose_stored_manifest_is_another_image_is_not_listed() {
    let mut p = pool();
    let file = disk_image(4096, 1);
    store::install(&mut p, manifest(IMAGE, &file, "none", 1), &file, None).unwrap();
    let other = "11111111-2222-4333-8444-555555555555";
    p.rename(&format!("zones/{IMAGE}"), &format!("zones/{other}")).unwrap();
    assert!(store::list(&p).is_empty());
    assert!(matches!(store::get(&p, other), Err(Error::Corrupt(_))));
}

/// The `image_file` fuzz target's property over generated files: with a
/// manifest that matches the file (size, SHA-1), an install either
/// succeeds with `@final` in place or fails leaving no volume.
#[test]
fn an_install_is_all_or_nothing_for_mangled_files() {
    let disk = disk_image(300_032, 17);
    let mut src = pool();
    src.create_volume("zones/s", 1 << 20, 8192).unwrap();
    src.write("zones/s", 0, &disk).unwrap();
    src.snapshot("zones/s@final").unwrap();
    let mut stream = Vec::new();
    src.send("zones/s@final", None, &mut |b| stream.extend_from_slice(b)).unwrap();
    // Each file with a compression that fits it or not.
    let seeds = [
        (gzip(&disk), "gzip"),
        (gzip(&stream), "none"),
        (stream.clone(), "gzip"),
        (disk.clone(), "none"),
        (xz(&disk), "xz"),
        (xz(&stream), "xz"),
        (disk.clone(), "xz"),
    ];
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let (mut ok, mut failed) = (0, 0);
    for case in 0..210 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (mut file, compression) = seeds[case % seeds.len()].clone();
        match (x >> 8) % 4 {
            0 => {}
            1 => {
                let at = (x >> 16) as usize % file.len();
                file[at] ^= 1 << (x % 8);
            }
            2 => file.truncate(1 + (x >> 16) as usize % file.len()),
            _ => file.extend_from_slice(&x.to_le_bytes()),
        }
        let mut p = pool();
        let mut inst = Install::begin(&mut p, manifest(IMAGE, &file, compression, 1), None).unwrap();
        let piece = 1 + (x >> 40) as usize % 9000;
        let r = file.chunks(piece).try_for_each(|c| inst.write(c)).and_then(|()| inst.finish());
        let all = names(&p);
        match r {
            Ok(_) => {
                ok += 1;
                assert!(all.contains(&format!("zones/{IMAGE}@{FINAL}")), "case {case}: {all:?}");
            }
            Err(e) => {
                failed += 1;
                assert!(all.is_empty(), "case {case} ({e}): left {all:?}");
            }
        }
    }
    assert!(ok > 10 && failed > 10, "ok {ok}, failed {failed}");
}

/// `manifest` (what `vmadm create` reads of a disk's image) reads the
/// image's volume alone, and agrees with `get`: the installed manifest, no
/// image where none is installed, a volume that is not the image's
/// refused.
#[test]
fn an_images_manifest_is_read_from_its_volume_alone() {
    let mut p = pool();
    assert!(matches!(store::manifest(&p, IMAGE), Err(Error::NotFound { .. })));
    assert!(matches!(store::manifest(&p, "not-a-uuid"), Err(Error::Invalid(_))));
    let file = disk_image(4096, 1);
    let rec = store::install(&mut p, manifest(IMAGE, &file, "none", 3), &file, None).unwrap();
    let got = store::manifest(&p, IMAGE).unwrap();
    assert_eq!(got, rec.manifest);
    assert_eq!(got.image_size_mib, 3);
    // A clone of it does not change its manifest; the clone is no image.
    store::clone_for_instance(&mut p, IMAGE, INSTANCE, 0).unwrap();
    assert_eq!(store::manifest(&p, IMAGE).unwrap(), got);
    assert!(matches!(store::manifest(&p, INSTANCE), Err(Error::NotFound { .. })));
    // A volume holding another image's manifest is refused, as by `get`.
    p.destroy(&format!("zones/{INSTANCE}-disk0"), false).unwrap();
    let other = "11111111-2222-4333-8444-555555555555";
    p.rename(&format!("zones/{IMAGE}"), &format!("zones/{other}")).unwrap();
    assert!(matches!(store::manifest(&p, other), Err(Error::Corrupt(_))));
    assert!(matches!(store::manifest(&p, IMAGE), Err(Error::NotFound { .. })));
}
