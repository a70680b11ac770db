//! The gzip reader against files made by flate2 (an independent encoder):
//! optional header fields, several members, input a byte at a time, and
//! corrupted input that must fail cleanly.

use std::io::Write;

use alcove_images::Error;
use alcove_images::gzip::GzipReader;

fn decode(file: &[u8], limit: u64, piece: usize) -> Result<Vec<u8>, Error> {
    let mut g = GzipReader::new(limit);
    let mut out = Vec::new();
    for p in file.chunks(piece.max(1)) {
        g.feed(p, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })?;
    }
    g.finish()?;
    Ok(out)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7919) % 251) as u8 ^ (i >> 10) as u8).collect()
}

#[test]
fn every_optional_header_field_is_skipped() {
    let d = data(200_000);
    let mut e = flate2::GzBuilder::new()
        .filename("disk.img")
        .comment("made for the test")
        .extra(vec![1, 2, 3, 4, 5])
        .write(Vec::new(), flate2::Compression::default());
    e.write_all(&d).unwrap();
    let file = e.finish().unwrap();
    assert_eq!(decode(&file, 1 << 20, 1 << 16).unwrap(), d);
    assert_eq!(decode(&file, 1 << 20, 1).unwrap(), d, "a byte at a time");
}

#[test]
fn members_one_after_another_are_one_file() {
    let a = data(70_000);
    let b = data(30_000);
    let mut file = Vec::new();
    for part in [&a, &b] {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(part).unwrap();
        file.extend(e.finish().unwrap());
    }
    let out = decode(&file, 1 << 20, 333).unwrap();
    assert_eq!(out, [a, b].concat());
}

#[test]
fn output_past_the_limit_is_refused() {
    let d = vec![0u8; 1 << 20];
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&d).unwrap();
    let file = e.finish().unwrap();
    assert_eq!(decode(&file, 1 << 20, 4096).unwrap().len(), 1 << 20, "exactly the limit is fine");
    assert_eq!(decode(&file, (1 << 20) - 1, 4096), Err(Error::TooLarge { limit: (1 << 20) - 1 }));
}

#[test]
fn corrupted_files_fail_without_panicking() {
    let d = data(50_000);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&d).unwrap();
    let file = e.finish().unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut failed = 0;
    for _ in 0..400 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bad = file.clone();
        let at = (x % bad.len() as u64) as usize;
        bad[at] ^= 1 << ((x >> 32) % 8);
        // Sometimes also cut the file short.
        if x & 0x100 != 0 {
            bad.truncate((x >> 40) as usize % bad.len());
        }
        match decode(&bad, 1 << 20, 1 + (x >> 50) as usize % 5000) {
            Ok(out) => assert_eq!(out, d, "a corruption decoded to different data without an error"),
            Err(_) => failed += 1,
        }
    }
    assert!(failed > 350, "only {failed} of 400 corruptions were caught");
    assert!(decode(b"", 10, 1).is_err());
    assert!(decode(&[0x1f, 0x8b, 8, 0xe0, 0, 0, 0, 0, 0, 3], 10, 1).is_err(), "reserved flags");
    assert!(decode(&[0x1f, 0x8b, 7], 10, 1).is_err(), "not deflate");
}

#[test]
fn a_long_header_costs_its_length_and_too_long_is_refused() {
    let d = data(10_000);
    let gz = |name_len: usize| {
        let mut e = flate2::GzBuilder::new()
            .filename(vec![b'n'; name_len])
            .comment(vec![b'c'; 1000])
            .write(Vec::new(), flate2::Compression::default());
        e.write_all(&d).unwrap();
        e.finish().unwrap()
    };
    // 600 KB of file name, a byte at a time: each byte is looked at once.
    let file = gz(600_000);
    assert_eq!(decode(&file, 1 << 20, 1).unwrap(), d);
    let e = decode(&gz((1 << 20) + 10), 1 << 20, 4096).unwrap_err();
    assert_eq!(e, Error::Gzip("header longer than 1 MiB".into()));
}
