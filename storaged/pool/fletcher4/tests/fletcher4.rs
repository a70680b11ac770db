//! fletcher4's two ways agree with each other, with the closed form and
//! with known answers: every length from 0 to 1 KiB and more (whole words
//! or not), random data, every alignment, sums that wrap, and the pieces
//! the SSE2 code hands to the scalar code.

use alcove_fletcher4::{Sums, USES_SSE2, combine, fletcher4, scalar, update};

/// xorshift64: random bytes, reproducible from `seed`.
fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// fletcher4 from its closed form, not its recurrence: over n words
/// (a short tail zero-padded to one), word i counts k = n - i times in b,
/// k(k+1)/2 in c and k(k+1)(k+2)/6 in d, all modulo 2^64.
fn closed_form(data: &[u8]) -> Sums {
    let words: Vec<u128> = data
        .chunks(4)
        .map(|w| {
            let mut b = [0u8; 4];
            b[..w.len()].copy_from_slice(w);
            u128::from(u32::from_le_bytes(b))
        })
        .collect();
    let n = words.len() as u128;
    let m = 1u128 << 64;
    let mut s = [0u128; 4];
    for (i, &w) in words.iter().enumerate() {
        let k = n - i as u128;
        let coeff = [1, k, k * (k + 1) / 2, k * (k + 1) * (k + 2) / 6];
        for j in 0..4 {
            s[j] = (s[j] + (coeff[j] % m) * w % m) % m;
        }
    }
    s.map(|x| x as u64)
}

fn hex(s: Sums) -> String {
    s.iter().flat_map(|x| x.to_le_bytes()).map(|x| format!("{x:02x}")).collect()
}

type Way = (&'static str, fn(&[u8]) -> Sums);

/// Every way this build has.
fn ways() -> Vec<Way> {
    let mut v: Vec<Way> = vec![("scalar", scalar), ("fletcher4", fletcher4)];
    #[cfg(target_arch = "x86_64")]
    v.push(("sse2", alcove_fletcher4::sse2));
    #[cfg(target_arch = "x86_64")]
    v.push(("sse41", alcove_fletcher4::sse41));
    v
}

#[test]
fn known_answers() {
    for (name, f) in ways() {
        assert_eq!(f(&[]), [0; 4], "{name}: no words, all four sums zero");
        // Words 1, 2, 3: a = 6, b = 1+3+6, c = 1+4+10, d = 1+5+15.
        assert_eq!(f(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]), [6, 10, 15, 21], "{name}");
        // A short tail is a zero-padded word: "abc" is the word 0x636261.
        assert_eq!(f(b"abc"), [0x636261; 4], "{name}");
        // Python's integers from the definition (the pool's tests/checksum.rs
        // says how): bytes i % 256 for i in 0..4096; 0xff × 128 KiB (c and
        // d wrap).
        let ramp: Vec<u8> = (0..4096).map(|i| i as u8).collect();
        assert_eq!(hex(f(&ramp)), "00f8fd010602000000a885939df70300005433ab197f3e05004c8a0683b02234", "{name}");
        assert_eq!(hex(f(&vec![0xff; 128 * 1024])), "0080ffffff7f000000c0ffdfff3f00200080aa8aaa7a557500e0ff37556d55c7", "{name}");
    }
}

/// Every length from 0 to 1100 bytes: whole 64-byte pieces or not, whole
/// words or not (a tail is zero-padded), each against the closed form.
#[test]
fn every_length_agrees_with_the_closed_form() {
    let data = random(1, 1100);
    for len in 0..=data.len() {
        let d = &data[..len];
        let want = closed_form(d);
        for (name, f) in ways() {
            assert_eq!(f(d), want, "{name}, {len} bytes");
        }
    }
}

/// Blocks of every size the pool writes, random, at every alignment of
/// their first byte within 16 (and a few odd ones): the same sums.
#[test]
fn unaligned_buffers_give_the_same_sums() {
    let data = random(2, 128 * 1024 + 64);
    for len in [4096, 8192, 8192 + 4, 65536, 128 * 1024] {
        let want = closed_form(&data[..len]);
        for off in (0..=16).chain([31, 33, 63]) {
            let d = &data[off..off + len];
            let want = if off == 0 { want } else { closed_form(d) };
            for (name, f) in ways() {
                assert_eq!(f(d), want, "{name}, {len} bytes at +{off}");
            }
        }
    }
}

/// Random data of random lengths up to 256 KiB, the two ways against each
/// other (the closed form is too slow for all of them).
#[test]
fn random_data_the_two_ways_agree() {
    let mut x = 0x1234_5678_9abc_def0u64;
    let data = random(3, 256 * 1024 + 16);
    for round in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % (256 * 1024)) as usize;
        let off = (x >> 40) as usize % 16;
        let d = &data[off..off + len];
        let want = scalar(d);
        for (name, f) in ways() {
            assert_eq!(f(d), want, "{name}: round {round}, {len} bytes at +{off}");
        }
    }
}

/// Sums that wrap in every lane: all-ones words over 1 MiB (c and d pass
/// 2^64 many times), and the largest word in only one lane.
#[test]
fn wrapping_sums_agree() {
    let ones = vec![0xffu8; 1 << 20];
    let mut one_lane = vec![0u8; 1 << 20];
    for w in one_lane.chunks_exact_mut(16) {
        w[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    for (what, d) in [("ones", &ones), ("one lane", &one_lane)] {
        let want = closed_form(d);
        for (name, f) in ways() {
            assert_eq!(f(d), want, "{name}: {what}");
        }
    }
}

/// The SSE2 code hands the scalar code the sums of the pieces before: the
/// recurrence carried on is the recurrence over the whole.
#[test]
fn update_carries_the_sums_on() {
    let data = random(4, 4096 + 100);
    for cut in (0..=data.len()).step_by(4) {
        assert_eq!(update(scalar(&data[..cut]), &data[cut..]), scalar(&data), "cut at {cut}");
    }
}

/// The lanes of one group of four words combine into its sums, and lanes
/// of many groups do (lanes built here with the scalar recurrence over
/// every fourth word).
#[test]
fn combine_turns_lanes_into_the_block_sums() {
    for words in [4usize, 8, 64, 1024] {
        let data = random(words as u64, words * 4);
        let mut lanes = [[0u64; 4]; 4];
        for j in 0..4 {
            let lane: Vec<u8> = data.chunks_exact(4).skip(j).step_by(4).flatten().copied().collect();
            for (sum, value) in lanes.iter_mut().zip(scalar(&lane)) {
                sum[j] = value;
            }
        }
        assert_eq!(combine(&lanes), closed_form(&data), "{words} words");
    }
}

/// The machine running the tests has SSE4.1 (every x86_64 host since
/// 2008): the `sse41` way above runs its own loop, not `sse2`'s fallback.
#[test]
#[cfg(target_arch = "x86_64")]
fn the_host_has_sse41() {
    assert!(alcove_fletcher4::has_sse41(), "the sse41 tests would only test the SSE2 fallback");
}

/// The host's x86_64 has SSE2 on: `fletcher4` (and so the pool's own
/// tests) run the SSE2 code there.
#[test]
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn the_host_uses_sse2() {
    const { assert!(USES_SSE2) };
}
