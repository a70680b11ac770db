//! send / receive between two pools: a received volume equals its source
//! byte for byte, full and incremental; a stream cut short or altered is
//! refused with a clear error and leaves the receiving pool as it was.
//! Streams move in pieces: a volume much larger than a piece is sent and
//! received one piece at a time; cuts at every piece boundary, flipped
//! bytes, pieces of another stream, absurd piece lengths and a power cut
//! in the middle of a receive leave nothing half-received.

use alcove_pool::fault::{CrashDisk, Power, Rng};
use alcove_pool::pool::{PIECE_MAX, RECV_SUFFIX};
use alcove_pool::{Error, MemDisk, Pool};
use std::rc::Rc;

const MIB: usize = 1024 * 1024;
const SIZE: usize = 4 * MIB;

fn send(pool: &mut Pool<MemDisk>, snap: &str, from: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let n = pool.send(snap, from, &mut |b| out.extend_from_slice(b)).unwrap();
    assert_eq!(n as usize, out.len());
    out
}

fn read(pool: &mut Pool<MemDisk>, name: &str) -> Vec<u8> {
    let mut v = vec![0u8; SIZE];
    pool.read(name, 0, &mut v).unwrap();
    v
}

fn scribble(pool: &mut Pool<MemDisk>, vol: &str, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let len = 512 * (1 + rng.below(32) as usize);
        let at = rng.below(((SIZE - len) / 512) as u64) * 512;
        let data: Vec<u8> = if rng.below(4) == 0 { vec![0; len] } else { (0..len).map(|_| rng.next() as u8).collect() };
        pool.write(vol, at, &data).unwrap();
    }
}

#[test]
fn full_and_incremental_round_trip() {
    let mut rng = Rng(21);
    let mut a = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 1).unwrap();
    let mut b = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 2).unwrap();
    a.create_volume("zones/src", SIZE as u64, 4096).unwrap();
    scribble(&mut a, "zones/src", &mut rng, 60);
    a.snapshot("zones/src@one").unwrap();
    let full = send(&mut a, "zones/src@one", None);
    assert_eq!(b.receive("zones/dst", &full).unwrap(), "zones/dst@one");
    assert!(read(&mut b, "zones/dst") == read(&mut a, "zones/src@one"));
    // Incremental: a few changes (zeros among them: holes again).
    scribble(&mut a, "zones/src", &mut rng, 8);
    a.write("zones/src", 0, &vec![0; 64 * 1024]).unwrap();
    a.snapshot("zones/src@two").unwrap();
    let inc = send(&mut a, "zones/src@two", Some("zones/src@one"));
    assert!(inc.len() < full.len() / 3, "incremental {} bytes against full {}", inc.len(), full.len());
    b.receive("zones/dst", &inc).unwrap();
    assert!(read(&mut b, "zones/dst") == read(&mut a, "zones/src@two"));
    assert!(read(&mut b, "zones/dst@one") == read(&mut a, "zones/src@one"));
    b.verify(false).unwrap();
    // The same incremental again: its base is no longer the latest snapshot.
    let err = b.receive("zones/dst", &inc).unwrap_err().to_string();
    assert!(err.contains("already exists") || err.contains("not the stream's base"), "{err}");
    // And onto a volume that changed since its base.
    b.write("zones/dst", 0, &[1; 512]).unwrap();
    scribble(&mut a, "zones/src", &mut rng, 2);
    a.snapshot("zones/src@three").unwrap();
    let inc3 = send(&mut a, "zones/src@three", Some("zones/src@two"));
    let err = b.receive("zones/dst", &inc3).unwrap_err().to_string();
    assert!(err.contains("changed since"), "{err}");
    b.rollback("zones/dst@two").unwrap();
    b.receive("zones/dst", &inc3).unwrap();
    assert!(read(&mut b, "zones/dst@three") == read(&mut a, "zones/src@three"));
    b.verify(false).unwrap();
}

#[test]
fn cut_or_altered_streams_are_refused_and_change_nothing() {
    let mut rng = Rng(22);
    let mut a = Pool::create("zones", vec![MemDisk::new(16 * MIB)], 3).unwrap();
    a.create_volume("zones/src", SIZE as u64, 8192).unwrap();
    scribble(&mut a, "zones/src", &mut rng, 20);
    a.snapshot("zones/src@s").unwrap();
    let full = send(&mut a, "zones/src@s", None);
    let mut b = Pool::create("zones", vec![MemDisk::new(16 * MIB)], 4).unwrap();
    let free = b.free_bytes();
    let cuts: Vec<usize> = (0..full.len()).step_by(full.len() / 97 + 1).chain([full.len() - 1, full.len() - 32, 10]).collect();
    for cut in cuts {
        let err = b.receive("zones/dst", &full[..cut]).unwrap_err().to_string();
        assert!(err.contains("cut short") || err.contains("checksum"), "cut at {cut}: {err}");
    }
    for _ in 0..50 {
        let mut bad = full.clone();
        let i = rng.below(bad.len() as u64) as usize;
        bad[i] ^= 1 << rng.below(8);
        let err = b.receive("zones/dst", &bad).unwrap_err().to_string();
        assert!(err.starts_with("receive:") || err.contains("stream"), "flip at {i}: {err}");
    }
    // A receive checks as it goes and may have written some pieces: all
    // undone, nothing visible.
    assert_eq!(b.free_bytes(), free, "everything received was freed");
    assert!(b.list().is_empty());
    b.verify(false).unwrap();
    b.receive("zones/dst", &full).unwrap();
    assert!(read(&mut b, "zones/dst") == read(&mut a, "zones/src"));
}


/// The stream of `snap` as its pieces, one `send_piece` each.
fn pieces(pool: &mut Pool<MemDisk>, snap: &str, from: Option<&str>) -> Vec<Vec<u8>> {
    let mut c = pool.send_start(snap, from).unwrap();
    let mut out = Vec::new();
    let mut piece = Vec::new();
    while pool.send_piece(&mut c, &mut piece).unwrap() {
        out.push(piece.clone());
    }
    assert!(c.done());
    assert_eq!(c.bytes() as usize, out.iter().map(Vec::len).sum::<usize>());
    out
}

/// Nothing of a failed receive is left: no hidden volume, the space back,
/// the pool consistent.
fn nothing_left(pool: &mut Pool<MemDisk>, free: u64, names: &[&str], what: &str) {
    let listed: Vec<String> = pool.list().into_iter().map(|d| d.name).collect();
    assert_eq!(listed, names, "{what}: datasets after the failed receive");
    assert!(pool.get(&format!("zones/dst{RECV_SUFFIX}")).is_err(), "{what}: the hidden volume is gone");
    assert_eq!(pool.free_bytes(), free, "{what}: space back");
    pool.verify(false).unwrap_or_else(|e| panic!("{what}: verify: {e}"));
}

/// A 48 MiB volume (1500 times a piece's target) with data all over it:
/// sent and received one piece at a time, each piece bounded, the receiver
/// never holding more than one piece, and the result equal byte for byte.
#[test]
fn a_large_volume_moves_in_bounded_pieces() {
    const BIG: usize = 48 * MIB;
    let mut rng = Rng(31);
    let mut a = Pool::create("zones", vec![MemDisk::new(160 * MIB)], 1).unwrap();
    let mut b = Pool::create("zones", vec![MemDisk::new(160 * MIB)], 2).unwrap();
    a.create_volume("zones/src", BIG as u64, 4096).unwrap();
    // Every 3rd 64 KiB run written (16 MiB of data), the rest holes.
    for run in (0..BIG / (64 * 1024)).step_by(3) {
        let data: Vec<u8> = (0..64 * 1024).map(|_| rng.next() as u8).collect();
        a.write("zones/src", (run * 64 * 1024) as u64, &data).unwrap();
    }
    a.snapshot("zones/src@big").unwrap();
    b.set_dirty_block_limit(Some(1024));
    let mut c = a.send_start("zones/src@big", None).unwrap();
    let mut rx = b.receive_start("zones/dst").unwrap();
    let (mut piece, mut n, mut most) = (Vec::new(), 0, 0);
    while a.send_piece(&mut c, &mut piece).unwrap() {
        n += 1;
        most = most.max(piece.len());
        assert!(piece.len() <= PIECE_MAX + 36 + 12, "piece {n}: {} bytes", piece.len());
        // Fed in odd splits, as a pipe or an IPC chunk would.
        for part in piece.chunks(2048 + n % 7) {
            b.receive_bytes(&mut rx, part).unwrap();
            assert!(rx.buffered() <= PIECE_MAX + 36, "the receiver holds {} bytes", rx.buffered());
        }
        assert_eq!(rx.buffered(), 0, "piece {n} applied whole");
        if n == 50 {
            // Mid-stream: nothing visible yet.
            assert!(b.list().is_empty(), "a receive under way is hidden");
        }
    }
    assert!(n > 400, "{n} pieces");
    assert!(most <= 40 * 1024, "pieces of at most {most} bytes");
    assert_eq!(b.receive_finish(rx).unwrap(), "zones/dst@big");
    let mut x = vec![0u8; 4 * MIB];
    let mut y = vec![0u8; 4 * MIB];
    for at in (0..BIG).step_by(4 * MIB) {
        a.read("zones/src@big", at as u64, &mut x).unwrap();
        b.read("zones/dst", at as u64, &mut y).unwrap();
        assert!(x == y, "at {at}");
    }
    b.verify(false).unwrap();
    println!("bench send-pieces {n} pieces, largest {most} bytes, {} bytes in all", c.bytes());
}

/// A full and an incremental stream, cut at every piece boundary and in
/// the middle of pieces, refused with "cut short"; a flipped byte in any
/// piece, a piece of another stream, a huge or zero claimed length: each
/// refused, and nothing of any of them left.
#[test]
fn pieces_cut_altered_spliced_or_oversized_are_refused() {
    let mut rng = Rng(32);
    let mut a = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 1).unwrap();
    a.create_volume("zones/src", SIZE as u64, 4096).unwrap();
    scribble(&mut a, "zones/src", &mut rng, 80);
    a.snapshot("zones/src@one").unwrap();
    scribble(&mut a, "zones/src", &mut rng, 40);
    a.snapshot("zones/src@two").unwrap();
    a.create_volume("zones/other", SIZE as u64, 4096).unwrap();
    scribble(&mut a, "zones/other", &mut rng, 80);
    a.snapshot("zones/other@one").unwrap();
    let full = pieces(&mut a, "zones/src@one", None);
    let inc = pieces(&mut a, "zones/src@two", Some("zones/src@one"));
    let other = pieces(&mut a, "zones/other@one", None);
    assert!(full.len() > 10 && inc.len() > 3, "{} and {} pieces", full.len(), inc.len());

    let mut b = Pool::create("zones", vec![MemDisk::new(64 * MIB)], 2).unwrap();
    b.set_dirty_block_limit(Some(64));
    let free = b.free_bytes();
    let recv = |b: &mut Pool<MemDisk>, target: &str, ps: &[Vec<u8>]| -> Result<String, String> {
        let mut rx = b.receive_start(target).map_err(|e| e.to_string())?;
        for p in ps {
            b.receive_bytes(&mut rx, p).map_err(|e| e.to_string())?;
        }
        b.receive_finish(rx).map_err(|e| e.to_string())
    };
    // Cut after every piece (the last piece carries END: all of them is whole).
    for k in 0..full.len() {
        let err = recv(&mut b, "zones/dst", &full[..k]).unwrap_err();
        assert!(err.contains("cut short"), "full cut after {k} pieces: {err}");
        nothing_left(&mut b, free, &[], &format!("full cut after {k}"));
    }
    // Cut in the middle of a piece.
    for k in [1, full.len() / 2, full.len() - 1] {
        let mut ps = full[..k].to_vec();
        ps.push(full[k][..full[k].len() / 2].to_vec());
        let err = recv(&mut b, "zones/dst", &ps).unwrap_err();
        assert!(err.contains("cut short"), "cut inside piece {k}: {err}");
        nothing_left(&mut b, free, &[], "cut inside a piece");
    }
    // A flipped bit in each piece in turn (length, payload or tag).
    for k in 0..full.len() {
        let mut ps = full.clone();
        let i = rng.below(ps[k].len() as u64) as usize;
        ps[k][i] ^= 1 << rng.below(8);
        let err = recv(&mut b, "zones/dst", &ps).unwrap_err();
        assert!(err.starts_with("receive:"), "flip in piece {k} at {i}: {err}");
        nothing_left(&mut b, free, &[], &format!("flip in piece {k}"));
    }
    // A piece of another stream in place of one of this one's (same index).
    for k in 1..full.len().min(other.len()) - 1 {
        let mut ps = full.clone();
        ps[k] = other[k].clone();
        let err = recv(&mut b, "zones/dst", &ps).unwrap_err();
        assert!(err.contains("another stream"), "piece {k} of another stream: {err}");
        nothing_left(&mut b, free, &[], "a spliced piece");
    }
    // Pieces in the wrong order, one dropped, one twice.
    for ps in [
        [&full[..2], &full[3..]].concat(),
        [&full[..3], &full[2..]].concat(),
        [&full[..1], &full[2..3], &full[1..2], &full[3..]].concat(),
    ] {
        let err = recv(&mut b, "zones/dst", &ps).unwrap_err();
        assert!(err.contains("another stream") || err.contains("bytes after"), "reordered: {err}");
        nothing_left(&mut b, free, &[], "reordered pieces");
    }
    // A huge claimed length is refused on its 4 bytes, before any buffering.
    for len in [u32::MAX, (PIECE_MAX + 1) as u32, 0] {
        let mut ps = full[..3].to_vec();
        let mut rx = b.receive_start("zones/dst").unwrap();
        for p in &ps {
            b.receive_bytes(&mut rx, p).unwrap();
        }
        ps.clear();
        let err = b.receive_bytes(&mut rx, &len.to_le_bytes()).unwrap_err().to_string();
        assert!(err.contains(&format!("a piece of {len} bytes")), "{err}");
        assert_eq!(rx.buffered(), 0);
        let err = b.receive_bytes(&mut rx, &[0; 16]).unwrap_err().to_string();
        assert!(err.contains("already failed"), "{err}");
        assert!(b.receive_finish(rx).is_err());
        nothing_left(&mut b, free, &[], "a huge piece length");
    }
    // Bytes after the end.
    let mut ps = full.clone();
    ps.push(vec![0; 5]);
    assert!(recv(&mut b, "zones/dst", &ps).unwrap_err().contains("bytes after"));
    nothing_left(&mut b, free, &[], "bytes after the end");
    // A stream of the older version (one piece, a trailer) is refused by its header.
    let mut v1 = full.concat();
    v1[8] = 1;
    assert!(recv(&mut b, "zones/dst", &[v1]).unwrap_err().contains("stream version 1"));

    // The whole stream works, then the incremental's abuse leaves the
    // received volume exactly at its base.
    recv(&mut b, "zones/dst", &full).unwrap();
    let base = read(&mut b, "zones/dst");
    let free = b.free_bytes();
    let names = ["zones/dst", "zones/dst@one"];
    for k in 0..inc.len() {
        let err = recv(&mut b, "zones/dst", &inc[..k]).unwrap_err();
        assert!(err.contains("cut short"), "incremental cut after {k}: {err}");
        nothing_left(&mut b, free, &names, "incremental cut");
        assert!(read(&mut b, "zones/dst") == base, "the target is unchanged");
    }
    for k in 0..inc.len() {
        let mut ps = inc.clone();
        let i = rng.below(ps[k].len() as u64) as usize;
        ps[k][i] ^= 1 << rng.below(8);
        let err = recv(&mut b, "zones/dst", &ps).unwrap_err();
        assert!(err.starts_with("receive:"), "incremental flip in piece {k}: {err}");
        nothing_left(&mut b, free, &names, "incremental flip");
    }
    // The full stream's pieces after the incremental's header.
    let mut ps = inc[..1].to_vec();
    ps.extend_from_slice(&full[1..]);
    assert!(recv(&mut b, "zones/dst", &ps).unwrap_err().contains("another stream"));
    nothing_left(&mut b, free, &names, "full pieces after an incremental header");
    recv(&mut b, "zones/dst", &inc).unwrap();
    assert!(read(&mut b, "zones/dst") == read(&mut a, "zones/src@two"));
    assert!(read(&mut b, "zones/dst@one") == read(&mut a, "zones/src@one"));
    b.verify(false).unwrap();
}

/// What changes beside a receive under way: the target made by someone
/// else (full), written (incremental), or the sent snapshot destroyed
/// (send): each refused at the end or the next piece, nothing left.
#[test]
fn changes_beside_a_send_or_receive_are_refused() {
    let mut rng = Rng(33);
    let mut a = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 1).unwrap();
    a.create_volume("zones/src", SIZE as u64, 4096).unwrap();
    scribble(&mut a, "zones/src", &mut rng, 60);
    a.snapshot("zones/src@one").unwrap();
    scribble(&mut a, "zones/src", &mut rng, 20);
    a.snapshot("zones/src@two").unwrap();
    let full = pieces(&mut a, "zones/src@one", None);
    let inc = pieces(&mut a, "zones/src@two", Some("zones/src@one"));
    // The sent snapshot destroyed between two pieces.
    let mut c = a.send_start("zones/src@two", None).unwrap();
    let mut piece = Vec::new();
    assert!(a.send_piece(&mut c, &mut piece).unwrap());
    a.destroy("zones/src@two", false).unwrap();
    let err = a.send_piece(&mut c, &mut piece).unwrap_err().to_string();
    assert!(err.contains("destroyed during the send"), "{err}");
    // A snapshot of the same name made again is another snapshot.
    a.snapshot("zones/src@two").unwrap();
    assert!(a.send_piece(&mut c, &mut piece).unwrap_err().to_string().contains("destroyed"));

    let mut b = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 2).unwrap();
    let free = b.free_bytes();
    let mut rx = b.receive_start("zones/dst").unwrap();
    for p in &full[..full.len() - 1] {
        b.receive_bytes(&mut rx, p).unwrap();
    }
    b.create_volume("zones/dst", MIB as u64, 4096).unwrap();
    b.receive_bytes(&mut rx, full.last().unwrap()).unwrap();
    let err = b.receive_finish(rx).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(b.list().len(), 1);
    b.destroy("zones/dst", false).unwrap();
    nothing_left(&mut b, free, &[], "target made beside a receive");
    // A receive dropped half way (receive_abort) leaves nothing either.
    let mut rx = b.receive_start("zones/dst").unwrap();
    b.receive_bytes(&mut rx, &full[..3].concat()).unwrap();
    b.receive_abort(rx);
    nothing_left(&mut b, free, &[], "an aborted receive");

    let mut rx = b.receive_start("zones/dst").unwrap();
    b.receive_bytes(&mut rx, &full.concat()).unwrap();
    b.receive_finish(rx).unwrap();
    let mut rx = b.receive_start("zones/dst").unwrap();
    b.receive_bytes(&mut rx, &inc[..2].concat()).unwrap();
    b.write("zones/dst", 0, &[7; 4096]).unwrap();
    b.receive_bytes(&mut rx, &inc[2..].concat()).unwrap();
    let err = b.receive_finish(rx).unwrap_err().to_string();
    assert!(err.contains("changed since"), "{err}");
    let mut x = [0u8; 4096];
    b.read("zones/dst", 0, &mut x).unwrap();
    assert_eq!(x, [7; 4096], "the target's own write stays");
    let listed: Vec<String> = b.list().into_iter().map(|d| d.name).collect();
    assert_eq!(listed, ["zones/dst", "zones/dst@one"]);
    b.verify(false).unwrap();
}

/// The power goes off in the middle of a receive (after some of its
/// pieces were committed): at the next import nothing of it is visible,
/// its space is free again, and the stream can be received again whole.
#[test]
fn a_power_cut_in_the_middle_of_a_receive_leaves_nothing() {
    let mut rng = Rng(34);
    let mut a = Pool::create("zones", vec![MemDisk::new(32 * MIB)], 1).unwrap();
    a.create_volume("zones/src", SIZE as u64, 4096).unwrap();
    scribble(&mut a, "zones/src", &mut rng, 200);
    a.snapshot("zones/src@one").unwrap();
    let full = pieces(&mut a, "zones/src@one", None);
    for seed in 0..4u64 {
        let power = Rc::new(Power::default());
        let disks = vec![CrashDisk::new(vec![0u8; 32 * MIB], power.clone(), seed)];
        let mut b = Pool::create("zones", disks, 2).unwrap();
        b.set_dirty_block_limit(Some(32));
        b.create_volume("zones/keep", MIB as u64, 4096).unwrap();
        b.write("zones/keep", 0, &[5; 8192]).unwrap();
        b.sync().unwrap();
        let free = b.free_bytes();
        let mut rx = b.receive_start("zones/dst").unwrap();
        let half = full.len() / 2;
        for p in &full[..half] {
            b.receive_bytes(&mut rx, p).unwrap();
        }
        // Some of it committed (the dirty bound forces commits) ...
        assert!(b.free_bytes() < free, "seed {seed}: part of the stream is on disk");
        // ... then the power goes off a few writes into the rest.
        power.cut_at.set(Some(power.writes.get() + 1 + seed * 3));
        for p in &full[half..] {
            if b.receive_bytes(&mut rx, p).is_err() {
                break;
            }
        }
        assert!(power.off.get(), "seed {seed}: the power went off");
        let images: Vec<Vec<u8>> = b.into_disks().into_iter().map(CrashDisk::after_power_cut).collect();
        let power = Rc::new(Power::default());
        let disks = images.into_iter().map(|im| CrashDisk::new(im, power.clone(), 9)).collect();
        let mut b = Pool::import(disks).unwrap_or_else(|e| panic!("seed {seed}: import: {e}"));
        let listed: Vec<String> = b.list().into_iter().map(|d| d.name).collect();
        assert_eq!(listed, ["zones/keep"], "seed {seed}");
        assert!(b.get(&format!("zones/dst{RECV_SUFFIX}")).is_err(), "seed {seed}: the partial receive was destroyed at import");
        assert_eq!(b.free_bytes(), free, "seed {seed}: its space is free again");
        b.verify(false).unwrap_or_else(|e| panic!("seed {seed}: verify: {e}"));
        let mut rx = b.receive_start("zones/dst").unwrap();
        b.receive_bytes(&mut rx, &full.concat()).unwrap();
        b.receive_finish(rx).unwrap();
        let mut x = vec![0u8; SIZE];
        b.read("zones/dst", 0, &mut x).unwrap();
        assert!(x == read(&mut a, "zones/src@one"), "seed {seed}");
    }
}

/// A receive of a volume of 512-byte blocks into a pool with room for it:
/// a write's worst-case commit counts a path of indirect blocks (2 × 4 KiB
/// here) for every block the open group holds, so before the stream's end
/// the estimate (about 6 MiB) passed the free space (5.7 MiB) though the
/// stream takes 2 MiB, and the receive failed "out of space". It commits
/// then, as at the dirty bound, and goes on.
#[test]
fn a_receive_commits_when_its_open_group_would_not_fit_the_free_space() {
    const VOL: usize = 256 * 1024;
    let mut a = Pool::create("zones", vec![MemDisk::new(8 * MIB)], 1).unwrap();
    a.create_volume("zones/small", VOL as u64, 512).unwrap();
    let data: Vec<u8> = (0..VOL).map(|i| (i * 7 % 251 + 1) as u8).collect();
    a.write("zones/small", 0, &data).unwrap();
    a.snapshot("zones/small@s").unwrap();
    let stream = send(&mut a, "zones/small@s", None);
    let (free, commits) = (a.free_bytes(), a.meter().commits);
    assert!(free > 5 * MIB as u64 && free < 6 * MIB as u64, "free {free}");
    assert_eq!(a.receive("zones/copy", &stream).unwrap(), "zones/copy@s");
    // Four commits of its own (the hidden volume, the snapshot's two, the
    // rename), and at least one before the stream's end.
    assert!(a.meter().commits > commits + 4, "{} commits", a.meter().commits - commits);
    let mut got = vec![0u8; VOL];
    a.read("zones/copy", 0, &mut got).unwrap();
    assert!(got == data);
    a.verify(false).unwrap();
    assert!(a.free_bytes() < free - 2 * MIB as u64, "the copy's 512 blocks, 4 KiB each");
    // A pool too full for the data itself still refuses it (a commit
    // cannot make room), leaving nothing of that receive, and goes on.
    let mut n = 0;
    let err = loop {
        match a.receive(&format!("zones/more{n}"), &stream) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::NoSpace), "{err}");
    assert!(a.get(&format!("zones/more{n}")).is_err() && a.get(&format!("zones/more{n}{RECV_SUFFIX}")).is_err());
    a.sync().unwrap();
    a.verify(false).unwrap();
}
