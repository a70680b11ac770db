//! quota, reservation and refreservation (ZFS's semantics for volumes and
//! their snapshots and clones), and the caller-driven commit policy: the
//! dirty-byte bound.

use alcove_pool::pool::{Error, PROP_QUOTA, PROP_REFRESERVATION, PROP_RESERVATION};
use alcove_pool::{MemDisk, Pool};

const MIB: u64 = 1024 * 1024;
const K64: usize = 64 * 1024;

fn data(seed: u8) -> Vec<u8> {
    let mut rng = alcove_pool::fault::Rng(u64::from(seed) + 11);
    (0..K64).map(|_| rng.next() as u8 | 1).collect()
}

fn pool(mib: u64) -> Pool<MemDisk> {
    Pool::create("tank", vec![MemDisk::new((mib * MIB) as usize)], 7).unwrap()
}

/// Writes 64 KiB chunks from `at` until the pool refuses; returns how many
/// went in and the error that stopped it.
fn fill(p: &mut Pool<MemDisk>, vol: &str, at: u64, max: u64, seed: u8) -> (u64, Error) {
    let mut n = 0;
    loop {
        if n == max {
            return (n, Error::Invalid("max reached".into()));
        }
        match p.write(vol, at + n * K64 as u64, &data(seed.wrapping_add(n as u8))) {
            Ok(()) => n += 1,
            Err(e) => return (n, e),
        }
        if n % 4 == 0 {
            p.sync().unwrap();
        }
    }
}

#[test]
fn quota_bounds_used_including_snapshots() {
    let mut p = pool(32);
    p.create_volume("tank/a", 16 * MIB, 8192).unwrap();
    p.set_prop("tank/a", PROP_QUOTA, "1M").unwrap();
    p.sync().unwrap();
    assert_eq!(p.usage("tank/a").unwrap().quota, MIB);
    // 1 MiB of data fits (indirect blocks are charged once written, so the
    // last chunk may not): at least 14 of the 16 chunks, never 17.
    let (n, e) = fill(&mut p, "tank/a", 0, 32, 1);
    assert!((14..=16).contains(&n), "{n} chunks under a 1 MiB quota");
    assert!(matches!(e, Error::Quota(_)), "{e}");
    assert!(e.to_string().contains("quota"), "{e}");
    p.sync().unwrap();
    let u = p.usage("tank/a").unwrap();
    assert!(u.used <= MIB + 64 * 1024, "used {} past the quota by more than a group's metadata", u.used);
    // Overwriting blocks only the volume holds costs nothing extra.
    p.write("tank/a", 0, &data(99)).unwrap();
    p.sync().unwrap();
    // After a snapshot the old blocks stay charged (usedbysnapshots): an
    // overwrite now needs new space and the quota refuses it.
    p.snapshot("tank/a@s1").unwrap();
    let e = p.write("tank/a", 0, &data(50)).unwrap_err();
    assert!(matches!(e, Error::Quota(_)), "{e}");
    p.set_prop("tank/a", PROP_QUOTA, "1536K").unwrap();
    let (n, e) = fill(&mut p, "tank/a", 0, 32, 50);
    assert!((5..=8).contains(&n), "{n} overwrites in 512K more quota");
    assert!(matches!(e, Error::Quota(_)), "{e}");
    p.sync().unwrap();
    let u = p.usage("tank/a").unwrap();
    assert!(u.usedbysnapshots > 0, "{u:?}");
    // Destroying the snapshot gives the space back to the quota.
    p.destroy("tank/a@s1", false).unwrap();
    let u2 = p.usage("tank/a").unwrap();
    assert_eq!(u2.usedbysnapshots, 0);
    assert!(u2.used < u.used);
    fill(&mut p, "tank/a", 0, 4, 70);
    // A quota below what is used is refused; none lifts it.
    let e = p.set_prop("tank/a", PROP_QUOTA, "64K").unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    p.set_prop("tank/a", PROP_QUOTA, "none").unwrap();
    p.write("tank/a", 4 * MIB, &data(3)).unwrap();
    p.sync().unwrap();
    // The accounting kept by commits equals a fresh walk after import.
    let before = p.usage("tank/a").unwrap();
    let mut p = Pool::import(p.into_disks()).unwrap();
    assert_eq!(p.usage("tank/a").unwrap(), before);
    p.verify(false).unwrap();
}

#[test]
fn quota_persists_and_clone_is_charged_only_its_own_blocks() {
    let mut p = pool(32);
    p.create_volume("tank/a", 8 * MIB, 8192).unwrap();
    fill(&mut p, "tank/a", 0, 16, 1);
    p.sync().unwrap();
    p.snapshot("tank/a@s").unwrap();
    p.clone_snapshot("tank/a@s", "tank/c").unwrap();
    assert_eq!(p.usage("tank/c").unwrap().used, 0, "a clone shares its origin's blocks");
    p.set_prop("tank/c", PROP_QUOTA, "256K").unwrap();
    p.sync().unwrap();
    let mut p = Pool::import(p.into_disks()).unwrap();
    assert_eq!(p.usage("tank/c").unwrap().quota, 256 * 1024);
    // Overwriting the origin's blocks in the clone costs new space.
    let (n, e) = fill(&mut p, "tank/c", 0, 16, 9);
    assert!((2..=4).contains(&n), "{n} chunks in a 256K quota");
    assert!(matches!(e, Error::Quota(_)), "{e}");
    // Bad values are refused with a clear error, snapshots are read-only.
    assert!(matches!(p.set_prop("tank/c", PROP_QUOTA, "lots"), Err(Error::Invalid(_))));
    assert!(matches!(p.set_prop("tank/a@s", PROP_QUOTA, "1M"), Err(Error::Invalid(_))));
    p.sync().unwrap();
    p.verify(false).unwrap();
}

#[test]
fn reservation_holds_space_for_its_volume_only() {
    let mut p = pool(16);
    p.create_volume("tank/a", 64 * MIB, 8192).unwrap();
    p.create_volume("tank/b", 64 * MIB, 8192).unwrap();
    let free = p.free_bytes();
    // More than the pool has: refused, with figures.
    let e = p.set_prop("tank/a", PROP_RESERVATION, &format!("{}", free * 2)).unwrap_err();
    assert!(matches!(e, Error::Space(_)), "{e}");
    assert!(e.to_string().contains("unreserved"), "{e}");
    p.set_prop("tank/a", PROP_RESERVATION, "6M").unwrap();
    p.sync().unwrap();
    // b fills the pool but cannot take a's 6 MiB.
    let (nb, e) = fill(&mut p, "tank/b", 0, 1000, 1);
    assert_eq!(e, Error::NoSpace);
    p.sync().unwrap();
    assert!(p.free_bytes() >= 6 * MIB, "{} free after b filled the pool", p.free_bytes());
    // a still writes its 6 MiB.
    let (na, _) = fill(&mut p, "tank/a", 0, 6 * MIB / K64 as u64, 2);
    // The reservation covers `used`, indirect blocks included: 6 MiB of
    // data less their tree (ZFS counts metadata the same way).
    assert!(na >= 90, "a wrote {na} of 96 chunks of its reservation (b wrote {nb})");
    p.sync().unwrap();
    assert!(p.usage("tank/a").unwrap().used >= 6 * MIB - 128 * 1024);
    let mut p = Pool::import(p.into_disks()).unwrap();
    assert_eq!(p.usage("tank/a").unwrap().reservation, 6 * MIB);
    p.verify(false).unwrap();
    // Dropping the reservation gives the space back to b.
    p.set_prop("tank/a", PROP_RESERVATION, "none").unwrap();
    assert!(p.usage("tank/b").unwrap().available > 0);
}

#[test]
fn refreservation_and_snapshots() {
    let mut p = pool(16);
    p.create_volume("tank/a", 4 * MIB, 8192).unwrap();
    p.create_volume("tank/b", 64 * MIB, 8192).unwrap();
    p.set_prop("tank/a", PROP_REFRESERVATION, "4M").unwrap();
    p.sync().unwrap();
    let u = p.usage("tank/a").unwrap();
    assert_eq!(u.usedbyrefreservation, 4 * MIB);
    assert_eq!(u.used, 4 * MIB);
    fill(&mut p, "tank/a", 0, 64, 1);
    p.sync().unwrap();
    let u = p.usage("tank/a").unwrap();
    assert!(u.usedbyrefreservation < 64 * 1024, "{u:?}: the volume's own blocks now cover it");
    // b fills what is left.
    let e = fill(&mut p, "tank/b", 0, 1000, 3).1;
    assert_eq!(e, Error::NoSpace);
    p.sync().unwrap();
    // A snapshot of a would share all its blocks and need the whole
    // refreservation again: there is no room, so it is refused.
    let e = p.snapshot("tank/a@s").unwrap_err();
    assert!(matches!(e, Error::Space(_)), "{e}");
    assert!(e.to_string().contains("refreservation"), "{e}");
    // Once b gives space back, the snapshot goes in and a can overwrite
    // all of its volume.
    p.destroy("tank/b", true).unwrap();
    p.snapshot("tank/a@s").unwrap();
    assert_eq!(p.usage("tank/a").unwrap().usedbyrefreservation, 4 * MIB);
    let (n, _) = fill(&mut p, "tank/a", 0, 64, 9);
    assert_eq!(n, 64);
    p.sync().unwrap();
    p.verify(false).unwrap();
}

#[test]
fn dirty_bound_refuses_until_commit() {
    let mut p = pool(32);
    p.create_volume("tank/a", 16 * MIB, 8192).unwrap();
    assert_eq!(p.dirty_bytes(), 0);
    p.set_dirty_limit(Some(256 * 1024));
    for i in 0..4u64 {
        p.write("tank/a", i * K64 as u64, &data(i as u8)).unwrap();
    }
    assert_eq!(p.dirty_bytes(), 256 * 1024);
    // Rewriting dirty blocks adds nothing; a new block is refused.
    p.write("tank/a", 0, &data(9)).unwrap();
    let e = p.write("tank/a", 4 * K64 as u64, &data(4)).unwrap_err();
    assert_eq!(e, Error::DirtyFull { dirty: 256 * 1024, limit: 256 * 1024 });
    let mut back = vec![0u8; K64];
    p.read("tank/a", 4 * K64 as u64, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0), "a refused write changed nothing");
    p.sync().unwrap();
    assert_eq!(p.dirty_bytes(), 0);
    p.write("tank/a", 4 * K64 as u64, &data(4)).unwrap();
    // One request larger than the bound still goes into an empty group.
    p.sync().unwrap();
    p.write("tank/a", MIB, &vec![5u8; 512 * 1024]).unwrap();
    assert_eq!(p.dirty_bytes(), 512 * 1024);
    p.sync().unwrap();
    // A receive keeps to the bound by committing as it goes.
    p.snapshot("tank/a@s").unwrap();
    let mut stream = Vec::new();
    p.send("tank/a@s", None, &mut |b| stream.extend_from_slice(b)).unwrap();
    p.set_dirty_limit(Some(64 * 1024));
    p.receive("tank/r", &stream).unwrap();
    let (mut x, mut y) = (vec![0u8; 2 * MIB as usize], vec![0u8; 2 * MIB as usize]);
    p.read("tank/a", 0, &mut x).unwrap();
    p.read("tank/r", 0, &mut y).unwrap();
    assert!(x == y);
    p.verify(false).unwrap();
}

/// A pool filled one block per commit until a write is refused: every
/// write it accepted commits. The room a write holds for the commit (the
/// tree above the group's blocks, twice the MOS's estimate) leaves out the
/// next group's 32 KiB log block, which the commit allocated before the
/// MOS: at the edge the MOS found no room, the commit failed "out of space"
/// and the pool was suspended (every later request an I/O error until
/// imported again) where the next write should have been refused. The log
/// block now comes after the MOS, when there is room.
#[test]
fn every_write_a_full_pool_accepted_commits() {
    for (mib, bs) in [(2, 4096u32), (3, 8192), (4, 512)] {
        let mut p = pool(mib);
        p.create_volume("tank/v", 64 * MIB, bs).unwrap();
        let block = |i: u64| -> Vec<u8> { (0..u64::from(bs)).map(|j| (j * 7 + i) as u8 | 1).collect() };
        let mut i = 0;
        loop {
            match p.write("tank/v", i * u64::from(bs), &block(i)) {
                Err(Error::NoSpace) => break,
                r => r.unwrap(),
            }
            p.sync().unwrap_or_else(|e| panic!("{mib} MiB, {bs}-byte blocks: the commit after write {i}: {e}"));
            i += 1;
        }
        assert!(i > 100, "{i} blocks");
        p.verify(false).unwrap();
        let mut q = Pool::import(p.into_disks()).unwrap();
        let mut last = vec![0u8; bs as usize];
        q.read("tank/v", (i - 1) * u64::from(bs), &mut last).unwrap();
        assert!(last == block(i - 1));
        q.verify(false).unwrap();
    }
}
