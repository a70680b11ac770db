//! The xz reader against files made by the `xz` tool (XZ Utils 5.4.1,
//! kept in tests/data) and by lzma-rust2's encoder (independent of the
//! decoder): every check type, filters, several blocks and streams, stream
//! padding, input a byte at a time; and corrupted, truncated, oversized and
//! over-long input that must fail cleanly.

use std::io::Write;
use std::num::NonZeroU64;

use alcove_images::Error;
use alcove_images::xz::{MAX_DICT, OUT_CHUNK, XzReader};
use lzma_rust2::{CheckType, XzOptions, XzWriter};

fn decode_with(mut x: XzReader, file: &[u8], piece: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for p in file.chunks(piece.max(1)) {
        x.feed(p, &mut |b| {
            assert!(b.len() <= OUT_CHUNK);
            out.extend_from_slice(b);
            Ok(())
        })?;
    }
    x.finish()?;
    Ok(out)
}

fn decode(file: &[u8], limit: u64, piece: usize) -> Result<Vec<u8>, Error> {
    decode_with(XzReader::new(limit), file, piece)
}

fn xz_msg(r: Result<Vec<u8>, Error>) -> String {
    match r {
        Err(Error::Xz(s)) => s,
        other => panic!("expected an xz error, got {other:?}"),
    }
}

/// What tests/data/plain-*.xz hold.
fn plain() -> Vec<u8> {
    let mut s = String::new();
    for i in 0..4000usize {
        let c = b"abcdefghij"[i % 10] as char;
        s.push_str(&format!("sector {i:05} of the xz test image: {}\n", c.to_string().repeat(i % 37)));
    }
    s.into_bytes()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7919) % 251) as u8 ^ (i >> 10) as u8).collect()
}

fn encode(d: &[u8], preset: u32, check: CheckType, block: Option<u64>) -> Vec<u8> {
    encode_dict(d, preset, check, block, None)
}

/// With a dictionary of `dict` bytes instead of the preset's (the tests
/// that decode a file thousands of times keep it small).
fn encode_dict(d: &[u8], preset: u32, check: CheckType, block: Option<u64>, dict: Option<u32>) -> Vec<u8> {
    let mut o = XzOptions::with_preset(preset);
    if let Some(n) = dict {
        o.lzma_options.dict_size = n;
    }
    o.set_check_sum_type(check);
    o.set_block_size(block.and_then(NonZeroU64::new));
    let mut w = XzWriter::new(Vec::new(), o).unwrap();
    w.write_all(d).unwrap();
    w.finish().unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The offsets of a one-stream file's parts from its footer: (index start,
/// footer start).
fn index_at(file: &[u8]) -> (usize, usize) {
    let footer = file.len() - 12;
    let backward = u32::from_le_bytes(file[footer + 4..footer + 8].try_into().unwrap()) as usize;
    (footer - (backward + 1) * 4, footer)
}

/// Rewrites the first block header's LZMA2 property byte (its dictionary
/// size) and the header's CRC32, so only the dictionary is wrong.
fn with_dict_prop(file: &[u8], prop: u8) -> Vec<u8> {
    let mut f = file.to_vec();
    let size = (usize::from(f[12]) + 1) * 4;
    let h = &mut f[12..12 + size];
    // No sizes in the header, one filter: LZMA2 (0x21), 1 byte of props.
    assert_eq!(h[1], 0, "the fixture's block header has one filter and no sizes");
    assert_eq!(&h[2..4], &[0x21, 1]);
    h[4] = prop;
    let crc = crc32fast::hash(&h[..size - 4]);
    h[size - 4..].copy_from_slice(&crc.to_le_bytes());
    f
}

#[test]
fn files_of_the_xz_tool_decode_with_every_check_and_filter() {
    let want = plain();
    for (name, dict) in [
        ("plain-6-crc64.xz", 8 << 20),
        ("plain-9e-crc32.xz", 64 << 20),
        ("plain-0-none.xz", 256 << 10),
        ("plain-x86-lzma2.xz", 2 << 20),
        ("plain-blocks.xz", 8 << 20),
    ] {
        let file = fixture(name);
        for piece in [1, 7, 4096, 1 << 20] {
            let mut x = XzReader::new(1 << 20);
            let mut out = Vec::new();
            for p in file.chunks(piece) {
                x.feed(p, &mut |b| {
                    out.extend_from_slice(b);
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{name} in pieces of {piece}: {e}"));
            }
            x.finish().unwrap();
            assert!(out == want, "{name} in pieces of {piece}: wrong output");
            assert_eq!(x.dict_bytes(), dict, "{name}");
            assert_eq!(x.streams(), 1);
        }
    }
}

#[test]
fn sha256_checks_are_refused_by_name() {
    let e = xz_msg(decode(&fixture("plain-1-sha256.xz"), 1 << 20, 4096));
    assert!(e.contains("SHA-256") && e.contains("crc64"), "{e}");
}

#[test]
fn files_of_an_independent_encoder_round_trip() {
    let d = data(300_000);
    for (preset, check, block) in [
        (0, CheckType::Crc64, None),
        (6, CheckType::Crc32, None),
        (1, CheckType::None, Some(70_000)),
        (3, CheckType::Crc64, Some(100_000)),
    ] {
        let file = encode(&d, preset, check, block);
        for piece in [1, 333, 65536] {
            assert!(decode(&file, 1 << 20, piece).unwrap() == d, "preset {preset} {check:?} pieces {piece}");
        }
    }
    // Nothing at all compressed: a stream with no blocks.
    let empty = encode(b"", 6, CheckType::Crc64, None);
    assert_eq!(decode(&empty, 10, 1).unwrap(), b"");
}

#[test]
fn streams_one_after_another_with_padding_are_one_file() {
    let a = data(70_000);
    let b = plain();
    let sa = encode(&a, 2, CheckType::Crc32, None);
    let sb = fixture("plain-6-crc64.xz");
    let want = [a.clone(), b.clone()].concat();
    for pad in [0, 4, 8, 1024] {
        let file = [sa.clone(), vec![0; pad], sb.clone(), vec![0; pad]].concat();
        for piece in [1, 5, 4096] {
            let mut x = XzReader::new(1 << 20);
            let mut out = Vec::new();
            for p in file.chunks(piece) {
                x.feed(p, &mut |b| {
                    out.extend_from_slice(b);
                    Ok(())
                })
                .unwrap();
            }
            x.finish().unwrap();
            assert!(out == want, "padding {pad}, pieces {piece}");
            assert_eq!(x.streams(), 2);
        }
    }
    // Padding is whole 4-byte words, between streams and at the end.
    for pad in [1, 3, 6] {
        let between = [sa.clone(), vec![0; pad], sb.clone()].concat();
        assert!(xz_msg(decode(&between, 1 << 20, 100)).contains("multiple of 4"), "{pad}");
        let after = [sa.clone(), vec![0; pad]].concat();
        assert!(xz_msg(decode(&after, 1 << 20, 100)).contains("multiple of 4"), "{pad}");
    }
    // Padding before the first stream, or garbage after a stream, is not xz.
    let before = [vec![0; 4], sa.clone()].concat();
    assert!(xz_msg(decode(&before, 1 << 20, 100)).contains("bad magic"));
    let garbage = [sa.clone(), b"trailing garbage".to_vec()].concat();
    assert!(xz_msg(decode(&garbage, 1 << 20, 100)).contains("bad magic"));
}

#[test]
fn output_past_the_limit_is_refused_and_a_bomb_stops_there() {
    let file = fixture("plain-6-crc64.xz");
    let n = plain().len() as u64;
    assert_eq!(decode(&file, n, 4096).unwrap().len() as u64, n, "exactly the limit is fine");
    assert_eq!(decode(&file, n - 1, 4096), Err(Error::TooLarge { limit: n - 1 }));
    // 256 MiB of zeros in about 40 KiB: the output stops at the limit,
    // after about as much decoding as the limit needs.
    let bomb = encode(&vec![0u8; 256 << 20], 0, CheckType::Crc64, None);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let mut x = XzReader::new(1 << 20);
    let mut out = 0usize;
    let mut fed = 0;
    let mut r = Ok(());
    for p in bomb.chunks(256) {
        fed += p.len();
        r = x.feed(p, &mut |b| {
            out += b.len();
            Ok(())
        });
        if r.is_err() {
            break;
        }
    }
    assert_eq!(r, Err(Error::TooLarge { limit: 1 << 20 }));
    assert!(out <= 1 << 20, "{out}");
    assert!(fed < bomb.len() / 8, "fed {fed} of {}", bomb.len());
}

#[test]
fn every_cut_of_a_file_is_refused() {
    let file = encode_dict(&data(20_000), 6, CheckType::Crc64, Some(8192), Some(8192));
    for cut in 0..file.len() {
        let e = decode(&file[..cut], 1 << 20, 64).unwrap_err();
        let Error::Xz(s) = &e else { panic!("cut at {cut}: {e}") };
        assert!(s.contains("truncated") || s.contains("empty file"), "cut at {cut}: {s}");
    }
}

#[test]
fn every_bit_flip_of_a_checked_file_is_caught() {
    // With a check no corruption gets through: the stream header, block
    // headers, index and footer have CRC32s, the data its CRC64 or CRC32.
    // (A flip may leave the data as it was: the range coder's first byte
    // is not used, so a flip there decodes to the same bytes.)
    for check in [CheckType::Crc64, CheckType::Crc32] {
        let d = data(3000);
        let file = encode_dict(&d, 1, check, None, Some(4096));
        let mut same = Vec::new();
        for at in 0..file.len() {
            for bit in [0, 3, 7] {
                let mut bad = file.clone();
                bad[at] ^= 1 << bit;
                match decode(&bad, 1 << 20, 1 + at % 50) {
                    Ok(out) if out == d => same.push((at, bit)),
                    Ok(out) => panic!("{check:?}: a flip of bit {bit} at {at} decoded to other data ({} bytes)", out.len()),
                    Err(Error::Xz(_)) | Err(Error::TooLarge { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // Only the range coder's first byte, after the stream header (12),
        // the block header (12) and the LZMA2 chunk header (6).
        assert!(same.iter().all(|&(at, _)| at == 30), "{check:?}: {same:?}");
    }
}

#[test]
fn a_wrong_check_is_named() {
    let file = fixture("plain-6-crc64.xz");
    let (index, footer) = index_at(&file);
    // The block's CRC64 is the 8 bytes before the index.
    let mut bad = file.clone();
    bad[index - 3] ^= 0x40;
    assert!(xz_msg(decode(&bad, 1 << 20, 4096)).contains("CRC64"));
    // An error ends the file: the rest of it, or its end, does not undo it.
    let mut x = XzReader::new(1 << 20);
    assert!(x.feed(&bad[..index], &mut |_| Ok(())).is_err());
    assert_eq!(x.feed(&bad[index..], &mut |_| Ok(())), Err(Error::Xz("the file was refused already".into())));
    assert!(x.finish().is_err());
    let mut bad = fixture("plain-9e-crc32.xz");
    let (index, _) = index_at(&bad);
    bad[index - 1] ^= 1;
    assert!(xz_msg(decode(&bad, 1 << 20, 4096)).contains("CRC32"));
    // The index's own CRC32 is its last 4 bytes.
    let mut bad = file.clone();
    bad[footer - 2] ^= 0x10;
    let e = xz_msg(decode(&bad, 1 << 20, 4096));
    assert!(e.contains("index") && e.contains("CRC32"), "{e}");
}

#[test]
fn a_dictionary_above_the_limit_is_refused_before_decoding() {
    let file = fixture("plain-6-crc64.xz");
    // Property 37: 3 << 29 bytes (1.5 GiB); 39: 3 GiB; 35: 768 MiB.
    for (prop, mib) in [(37u8, 1536), (39, 3072), (35, 768), (29, 96), (30, 128)] {
        let bad = with_dict_prop(&file, prop);
        let mut x = XzReader::new(1 << 20);
        let mut out = 0;
        let e = x.feed(&bad, &mut |b| {
            out += b.len();
            Ok(())
        });
        let Err(Error::Xz(e)) = e else { panic!("{e:?}") };
        assert!(e.contains(&format!("{mib} MiB")) && e.contains("limit of 64 MiB"), "{e}");
        assert_eq!(out, 0);
        // Refused for good: more input, or the end, is no way round it.
        assert!(x.feed(&bad, &mut |_| Ok(())).is_err());
        assert!(x.finish().is_err());
    }
    // 64 MiB itself is fine (xz -9's, as plain-9e-crc32.xz shows), and a
    // lower limit is kept: 8 MiB refused under 4 MiB.
    assert_eq!(MAX_DICT, 64 << 20);
    let e = xz_msg(decode_with(XzReader::with_dict_limit(1 << 20, 4 << 20), &file, 4096));
    assert!(e.contains("8 MiB") && e.contains("limit of 4 MiB"), "{e}");
    assert!(decode_with(XzReader::with_dict_limit(1 << 20, 8 << 20), &file, 4096).unwrap() == plain());
}

#[test]
fn a_property_past_the_format_s_range_is_corrupt() {
    let file = fixture("plain-6-crc64.xz");
    for prop in [40u8, 41, 0xff] {
        let e = xz_msg(decode(&with_dict_prop(&file, prop), 1 << 20, 4096));
        assert!(e.contains("corrupt"), "{prop}: {e}");
    }
}

#[test]
fn corrupted_files_fail_without_panicking() {
    let d = data(50_000);
    let file = encode_dict(&d, 6, CheckType::Crc64, Some(16384), Some(16384));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut failed = 0;
    for _ in 0..400 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bad = file.clone();
        for k in 0..1 + (x >> 60) as usize {
            let at = ((x >> (k * 3)) % bad.len() as u64) as usize;
            bad[at] = bad[at].wrapping_add(1 + (x >> 32) as u8 % 255);
        }
        if x & 0x100 != 0 {
            bad.truncate((x >> 40) as usize % bad.len());
        }
        match decode(&bad, 1 << 20, 1 + (x >> 50) as usize % 5000) {
            Ok(out) => assert!(out == d, "a corruption decoded to different data without an error"),
            Err(_) => failed += 1,
        }
    }
    assert_eq!(failed, 400);
    assert!(xz_msg(decode(b"", 10, 1)).contains("empty"));
    assert!(xz_msg(decode(b"\xfd7zXZ", 10, 1)).contains("truncated"));
    assert!(xz_msg(decode(b"\x1f\x8b\x08\0\0\0\0\0", 10, 1)).contains("bad magic"), "gzip is not xz");
}
