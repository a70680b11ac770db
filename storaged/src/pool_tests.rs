//! Host tests of the pool as storaged serves it: the boot (import or
//! create, foreign disks left alone), the `pool` interface (admins only,
//! bounded replies, streams in chunks), grants (a VMM reaches exactly its
//! volumes; another client's open, kick, close and pool calls are refused
//! and change nothing).

extern crate std;

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use libipc::blkring::{Doorbell, KickError, MemDisk, PAGE_BYTES, RingClient, RingRegion, SECTOR_BYTES};
use libipc::in_process::Loopback;
use libipc::interfaces::{PoolError, StorageError, pool, storage};

use super::*;
use crate::lifecycle::{PoolPlan, bring_up, parse_args};

const MIB: u64 = 1 << 20;

/// Rings in vectors; every caller is a live client; grants mint fake slots.
#[derive(Default)]
struct Rings {
    bounce: Vec<u8>,
    next_slot: CapSlot,
    minted: Vec<CapSlot>,
    /// [`RingFactory::wake`] calls.
    wakes: u32,
}

impl RingFactory for Rings {
    type Ring = Vec<u8>;
    type Client = ();
    fn create(&mut self, pages: usize) -> Result<(Vec<u8>, CapSlot), String> {
        self.next_slot += 1;
        Ok((vec![0; pages * PAGE_BYTES], 500 + self.next_slot))
    }
    fn destroy(&mut self, _ring: Vec<u8>) {}
    fn bounce(&mut self) -> &mut [u8] {
        if self.bounce.is_empty() {
            self.bounce = vec![0; 16 * PAGE_BYTES];
        }
        &mut self.bounce
    }
    fn watch_caller(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn has_ended(&self, _client: &()) -> bool {
        false
    }
    fn release(&mut self, _client: ()) {}
    fn mint(&mut self, _badge: u64) -> Result<CapSlot, String> {
        self.next_slot += 1;
        self.minted.push(900 + self.next_slot);
        Ok(900 + self.next_slot)
    }
    fn unmint(&mut self, slot: CapSlot) {
        self.minted.retain(|&s| s != slot);
    }
    fn wake(&mut self) {
        self.wakes += 1;
    }
}

type Server = Storaged<MemDisk, Rings>;

/// The control plane's badge in these tests (init's is 0).
const ADMIN: u64 = 5;
/// A client init started from the manifest, not an admin.
const MANIFEST_VMM: u64 = 3;

fn disk(name: &str, mib: u64) -> Disk<MemDisk> {
    Disk::new(name, MemDisk::new((mib * MIB) as usize / SECTOR_BYTES, name))
}

fn plan(name: &str, mirror: bool, disks: &[&str]) -> PoolPlan {
    PoolPlan { name: name.into(), mirror, disks: disks.iter().map(|s| s.to_string()).collect() }
}

/// Back from a pool to machine disks, as the next boot finds them.
fn power_cycle(s: Server) -> Vec<Disk<MemDisk>> {
    let Storaged { pool, disks, .. } = s;
    let mut out = disks;
    if let Some(p) = pool {
        let p = Rc::try_unwrap(p).ok().expect("no volume open").into_inner();
        for (i, d) in p.into_disks().into_iter().enumerate() {
            out.push(Disk::new(&format!("pool side {i}"), d.0));
        }
    }
    out
}

fn booted(disks: Vec<Disk<MemDisk>>, plan: Option<&PoolPlan>) -> Server {
    let mut s = Storaged::from_boot(bring_up(disks, plan, 0x5eed), Rings::default());
    s.set_admins(&[ADMIN]);
    s
}

fn as_(s: &mut Server, badge: u64) -> &mut Server {
    s.set_caller(badge);
    s
}

/// The client's doorbell: sets the caller's badge, copies the client's view
/// of the ring in and out around the kick (as shared pages would be).
struct Bell {
    storaged: Rc<RefCell<Server>>,
    handle: u32,
    badge: u64,
}

impl Doorbell for Bell {
    fn kick(&mut self, region: &mut dyn RingRegion) -> Result<(), KickError> {
        let mut s = self.storaged.borrow_mut();
        s.set_caller(self.badge);
        let theirs = s.ring_memory(self.handle).ok_or(KickError::Refused(StorageError::NoSuchHandle { handle: self.handle }))?;
        region.read(0, &mut theirs[..]);
        storage::Server::kick(&mut *s, self.handle).map_err(KickError::Refused)?;
        region.write(0, s.ring_memory(self.handle).expect("still open"));
        Ok(())
    }
}

fn open(s: &Rc<RefCell<Server>>, badge: u64, index: u32) -> Result<RingClient<Vec<u8>, Bell>, StorageError> {
    let opened = storage::Server::open(as_(&mut s.borrow_mut(), badge), index)?;
    libipc::reply_caps::discard();
    let region = s.borrow_mut().ring_memory(opened.handle).unwrap().clone();
    Ok(RingClient::new(region, Bell { storaged: s.clone(), handle: opened.handle, badge }).unwrap())
}

#[test]
fn boot_arguments() {
    let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(args(&["other=1"]), Ok(None));
    assert_eq!(args(&["pool=zones", "pool-vdev=mirror", "pool-disks=0,1"]), Ok(Some(plan("zones", true, &["0", "1"]))));
    assert_eq!(args(&["pool=zones", "pool-disks=serial-a"]), Ok(Some(plan("zones", false, &["serial-a"]))));
    assert!(args(&["pool=zones", "pool-vdev=mirror", "pool-disks=0"]).unwrap_err().contains("2 to 8"));
    assert!(args(&["pool=zones", "pool-vdev=raidz", "pool-disks=0"]).unwrap_err().contains("disk or mirror"));
    assert!(args(&["pool-disks=0"]).is_err());
    assert!(args(&["pool=zones"]).is_err());
    assert!(args(&["pool=zones", "pool-disk=0"]).unwrap_err().contains("unknown"));
}

/// Item 9: blank disks named by the configuration become the pool; the next
/// boot imports it from its labels (same pool, same data), whatever the
/// configuration says then; a disk with data storaged does not recognise
/// is reported and not written, and still served whole.
#[test]
fn boot_creates_then_imports_and_leaves_foreign_disks_alone() {
    let mut foreign = MemDisk::new((4 * MIB / 512) as usize, "ext4-ish");
    foreign.data[1024..1030].copy_from_slice(b"\x53\xefEXT4");
    let foreign_bytes = foreign.data.clone();
    let disks = vec![disk("vd0", 8), disk("vd1", 8), Disk::new("vd2", foreign)];
    let mut s = booted(disks, Some(&plan("zones", true, &["0", "vd1"])));
    assert_eq!(s.reports().len(), 1);
    assert_eq!(s.reports()[0].disk, "vd2");
    assert!(s.reports()[0].what.contains("does not recognise"), "{:?}", s.reports());
    let st = pool::Server::status(as_(&mut s, 0)).unwrap();
    assert_eq!((st.name.as_str(), st.vdev.as_str(), st.state.as_str()), ("zones", "mirror", "ONLINE"));
    assert_eq!(st.children.iter().map(|c| c.disk.as_str()).collect::<Vec<_>>(), ["vd0", "vd1"]);
    assert_eq!(st.reports_total, 1);
    pool::Server::create(as_(&mut s, ADMIN), "zones/vm-disk0".into(), 2 * MIB, 0).unwrap();
    s.pool().unwrap().write("zones/vm-disk0", 4096, &[0x5a; 8192]).unwrap();
    s.pool().unwrap().sync().unwrap();
    let guid = st.guid;
    // The machine serves the foreign disk whole; nothing wrote it.
    assert_eq!(storage::Server::disks(as_(&mut s, MANIFEST_VMM)).len(), 1);
    assert_eq!(s.device(0).unwrap().data, foreign_bytes);

    // Next boot, disks in another order, another configuration: imported.
    let mut disks = power_cycle(s);
    disks.reverse();
    let mut s = booted(disks, Some(&plan("other", false, &["0"])));
    let st = pool::Server::status(as_(&mut s, ADMIN)).unwrap();
    assert_eq!((st.name.as_str(), st.guid, st.state.as_str()), ("zones", guid, "ONLINE"));
    let mut back = vec![0u8; 8192];
    s.pool().unwrap().read("zones/vm-disk0", 4096, &mut back).unwrap();
    assert_eq!(back, [0x5a; 8192]);
    assert_eq!(s.device(0).unwrap().data, foreign_bytes, "the foreign disk is still untouched");

    // One side of the mirror gone: imported DEGRADED from the other.
    let mut disks = power_cycle(s);
    disks.retain(|d| d.info().name != "pool side 1");
    let mut s = booted(disks, None);
    let st = pool::Server::status(as_(&mut s, ADMIN)).unwrap();
    assert_eq!((st.state.as_str(), st.children.len(), st.children_total), ("DEGRADED", 1, 2));
}

/// No configuration, blank disks: no pool, nothing written, disks served
/// whole. A configuration naming a disk that holds data creates nothing.
#[test]
fn boot_never_writes_a_disk_it_was_not_given_blank() {
    let s = booted(vec![disk("vd0", 4)], None);
    assert!(s.pool.is_none());
    assert!(s.device(0).unwrap().data.iter().all(|&b| b == 0));
    let mut used = MemDisk::new((4 * MIB / 512) as usize, "used");
    let last = used.data.len() - 1;
    used.data[last] = 1; // e.g. a GPT backup header at the end
    let before = used.data.clone();
    let mut s = booted(vec![Disk::new("vd0", used), disk("vd1", 4)], Some(&plan("zones", true, &["0", "1"])));
    assert!(s.pool.is_none());
    assert_eq!(s.device(0).unwrap().data, before);
    assert!(s.device(1).unwrap().data.iter().all(|&b| b == 0), "the blank half of the mirror was not written either");
    assert!(s.reports().iter().any(|r| r.disk == "vd0" && r.what.contains("not blank")), "{:?}", s.reports());
    assert_eq!(pool::Server::status(as_(&mut s, 0)), Err(PoolError::NoPool));
}

/// A pool on vd0 with volumes a and b, and a machine disk `raw` holding
/// data, served whole to the manifest's clients (and only to them).
/// `status` fits in one message with every disk and report at its longest.
#[test]
fn status_is_bounded() {
    let mut disks = vec![];
    for i in 0..8 {
        disks.push(disk(&format!("{}{i}", "m".repeat(300)), 2));
    }
    for i in 0..20 {
        let mut d = MemDisk::new(4096, "junk");
        d.data[i] = 1;
        disks.push(Disk::new(&format!("{}{i:02}", "j".repeat(500)), d));
    }
    let sels: Vec<String> = (0..8).map(|i| i.to_string()).collect();
    let plan = PoolPlan { name: "z".repeat(200), mirror: true, disks: sels };
    let s = booted(disks, Some(&plan));
    let t = Loopback::new(s);
    let st = pool::Client::new(&t).status().unwrap().unwrap();
    assert_eq!((st.children.len(), st.reports.len(), st.reports_total), (8, 8, 20));
    assert!(st.reports[0].what.contains("does not recognise"));
}

fn pool_server() -> Server {
    let mut raw = MemDisk::new(2048, "raw");
    raw.data[0] = 0xeb;
    let mut s = booted(vec![disk("vd0", 16), Disk::new("raw", raw)], Some(&plan("zones", false, &["0"])));
    assert_eq!(s.disks().len(), 1);
    assert!(s.pool.is_some());
    for v in ["zones/a-disk0", "zones/b-disk0"] {
        pool::Server::create(as_(&mut s, ADMIN), v.into(), 4 * MIB, 4096).unwrap();
    }
    s
}

/// Item 11: VMM A's grant reaches its volume alone; VMM B (another grant)
/// and a manifest client try A's volume, ring and the pool interface and
/// are refused, while A's I/O goes on and nothing else changes.
#[test]
fn a_grant_reaches_exactly_its_volumes() {
    let mut s = pool_server();
    let ga = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/a-disk0".into()]).unwrap().badge;
    assert_eq!(libipc::reply_caps::take().1, 1, "the grant's capability goes with the reply");
    let gb = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/b-disk0".into()]).unwrap().badge;
    libipc::reply_caps::discard();
    assert!(ga >= GRANT_BADGE_BASE && gb != ga);
    let s = Rc::new(RefCell::new(s));
    let listed = storage::Server::disks(as_(&mut s.borrow_mut(), ga));
    assert_eq!(listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["zones/a-disk0"]);
    assert_eq!(listed[0].capacity_sectors, 4 * MIB / 512);
    let mut a = open(&s, ga, 0).unwrap();
    let data: Vec<u8> = (0..64 * 512).map(|i| (i * 7 + 1) as u8).collect();
    a.write(8, &data).unwrap();
    a.flush().unwrap();
    let handle = a.doorbell().handle;
    let txg = s.borrow().pool().unwrap().txg();

    for (thief, what) in [(gb, "VMM B"), (MANIFEST_VMM, "a manifest client"), (GRANT_BADGE_BASE + 99, "a forged grant badge")] {
        let mut st = s.borrow_mut();
        let st = as_(&mut st, thief);
        assert!(storage::Server::disks(st).iter().all(|d| d.name != "zones/a-disk0"), "{what} sees A's volume");
        if thief != MANIFEST_VMM {
            assert!(storage::Server::disks(st).iter().all(|d| d.name != "raw"), "{what} sees a machine disk");
        }
        let r = storage::Server::open(st, 1);
        assert!(matches!(r, Err(StorageError::NoSuchDisk { index: 1, .. })), "{what}: {r:?}");
        assert_eq!(storage::Server::kick(st, handle), Err(StorageError::NoSuchHandle { handle }), "{what}");
        assert_eq!(storage::Server::close(st, handle), Err(StorageError::NoSuchHandle { handle }), "{what}");
        assert_eq!(pool::Server::list(st, String::new()), Err(PoolError::NotPermitted), "{what}");
        assert_eq!(pool::Server::destroy(st, "zones/a-disk0".into(), true), Err(PoolError::NotPermitted));
        assert_eq!(pool::Server::grant(st, vec!["zones/a-disk0".into()]), Err(PoolError::NotPermitted));
        assert_eq!(pool::Server::revoke(st, ga), Err(PoolError::NotPermitted));
        assert_eq!(pool::Server::rollback(st, "zones/a-disk0@x".into()), Err(PoolError::NotPermitted));
        assert_eq!(libipc::reply_caps::take().1, 0, "{what} got no capability");
    }
    // B opens its own volume, index 0, and it is not A's.
    let mut b = open(&s, gb, 0).unwrap();
    let mut got = vec![0u8; data.len()];
    b.read(8, &mut got).unwrap();
    assert!(got.iter().all(|&x| x == 0), "B's volume is its own");
    // Nothing changed for A: its ring answers, its data is there.
    a.read(8, &mut got).unwrap();
    assert_eq!(got, data);
    assert_eq!(s.borrow().pool().unwrap().txg(), txg, "no commit came from the refused calls");
    // The control plane cannot destroy a volume a VMM holds.
    let r = pool::Server::destroy(as_(&mut s.borrow_mut(), ADMIN), "zones/a-disk0".into(), true);
    assert!(matches!(r, Err(PoolError::Busy { .. })), "{r:?}");
    // Revoked: A's ring closes, its capability opens nothing.
    assert_eq!(pool::Server::revoke(as_(&mut s.borrow_mut(), ADMIN), ga), Ok(1));
    assert!(a.read(8, &mut got).is_err());
    assert_eq!(storage::Server::open(as_(&mut s.borrow_mut(), ga), 0), Err(StorageError::NoSuchDisk { index: 0, disks: 0 }));
    assert!(storage::Server::disks(as_(&mut s.borrow_mut(), ga)).is_empty(), "a revoked grant falls back to nothing");
    // The manifest's client has the machine disk, whole.
    let mut raw = open(&s, MANIFEST_VMM, 0).unwrap();
    raw.read(0, &mut got[..512]).unwrap();
    assert_eq!(got[0], 0xeb);
    assert_eq!(s.borrow().factory.minted.len(), 1, "the revoked grant's capability was taken back");
    pool::Server::destroy(as_(&mut s.borrow_mut(), ADMIN), "zones/a-disk0".into(), true).unwrap();
}

/// The same refusals through the in-process transport: the badges are the
/// ones `dispatch_from` hands storaged, as the kernel's endpoint badges.
#[test]
fn grants_over_the_transport() {
    let (unbadged, mut server_end) = libipc::in_process::channel(4);
    let admin = pool::Client::new(unbadged.badged(ADMIN));
    let t = std::thread::spawn(move || {
        let mut s = pool_server();
        server_end.serve_until_closed(&mut s);
        s.open_rings()
    });
    let ga = admin.grant(vec!["zones/a-disk0".into()]).unwrap().unwrap().badge;
    let vmm_a = storage::Client::new(unbadged.badged(ga));
    let opened = vmm_a.open(0).unwrap().unwrap();
    assert_eq!(opened.info.name, "zones/a-disk0");
    let gb = admin.grant(vec!["zones/b-disk0".into()]).unwrap().unwrap().badge;
    let vmm_b = storage::Client::new(unbadged.badged(gb));
    let h = opened.handle;
    assert_eq!(vmm_b.kick(h).unwrap(), Err(StorageError::NoSuchHandle { handle: h }));
    assert_eq!(vmm_b.close(h).unwrap(), Err(StorageError::NoSuchHandle { handle: h }));
    assert_eq!(vmm_b.open(1).unwrap(), Err(StorageError::NoSuchDisk { index: 1, disks: 1 }));
    let b_pool = pool::Client::new(unbadged.badged(gb));
    assert_eq!(b_pool.status().unwrap(), Err(PoolError::NotPermitted));
    assert_eq!(b_pool.create("zones/x".into(), MIB, 0).unwrap(), Err(PoolError::NotPermitted));
    assert_eq!(vmm_a.kick(h).unwrap(), Ok(0), "A's ring still answers A");
    assert_eq!(admin.list(String::new()).unwrap().unwrap().datasets.len(), 2, "nothing was created");
    // init (unbadged) is an admin too.
    assert!(pool::Client::new(unbadged).status().unwrap().is_ok());
    assert_eq!(vmm_a.close(h).unwrap(), Ok(()));
    drop((admin, vmm_a, vmm_b, b_pool));
    assert_eq!(t.join().unwrap(), 0);
}

/// Every reply fits in one message however long the names and values
/// (the loopback refuses a reply longer than a message), and long values
/// and lists come whole in pieces.
#[test]
fn replies_are_bounded_and_pages_and_pieces_add_up() {
    let t = Loopback::new(pool_server());
    let c = pool::Client::new(&t);
    let long = |i: usize| format!("zones/{}{i:03}", "v".repeat(240));
    for i in 0..12 {
        c.create(long(i), MIB, 0).unwrap().unwrap();
        c.snapshot(format!("{}@{}", long(i), "s".repeat(200))).unwrap().unwrap();
    }
    let mut names = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = c.list(after.clone()).unwrap().unwrap();
        pages += 1;
        names.extend(page.datasets.iter().map(|d| d.name.clone()));
        match page.next {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(names.len(), 2 + 24);
    assert!(pages > 2, "{pages} pages");
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, names, "each once, in order");
    // An 8 KiB user property set in pieces, read back in pieces.
    let value: String = (0..8192).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    for (k, piece) in value.as_bytes().chunks(2000).enumerate() {
        let piece = String::from_utf8(piece.to_vec()).unwrap();
        c.set(long(0), "sdc:json".into(), piece, k > 0).unwrap().unwrap();
    }
    let r = c.set(long(0), "sdc:json".into(), "x".into(), true).unwrap();
    assert!(matches!(r, Err(PoolError::TooLarge { .. })), "{r:?}");
    let mut got = Vec::new();
    loop {
        let chunk = c.get_prop(long(0), "sdc:json".into(), got.len() as u32).unwrap().unwrap();
        assert_eq!(chunk.total_bytes, 8192);
        if chunk.bytes.is_empty() {
            break;
        }
        got.extend(chunk.bytes);
    }
    assert_eq!(got, value.as_bytes());
    for k in 0..30 {
        c.set(long(1), format!("{}:{k:02}", "m".repeat(200)), "v".into(), false).unwrap().unwrap();
    }
    let (mut keys, mut after) = (0, String::new());
    loop {
        let p = c.props(long(1), after.clone()).unwrap().unwrap();
        keys += p.keys.len();
        match p.next {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(keys, 30);
    let info = c.get(long(0)).unwrap().unwrap();
    assert_eq!((info.user_props, info.volsize, info.compression.as_str()), (1, MIB, "off"));
    c.set(long(0), "compression".into(), "lz4".into(), false).unwrap().unwrap();
    c.set(long(0), "quota".into(), "1M".into(), false).unwrap().unwrap();
    let info = c.get(long(0)).unwrap().unwrap();
    assert_eq!((info.compression.as_str(), info.quota), ("lz4", MIB));
    let r = c.set(long(0), "compression".into(), "gzip".into(), false).unwrap();
    assert!(matches!(r, Err(PoolError::Invalid { .. })), "{r:?}");
    // checksum: `on` (fletcher4) until set; `off` refused by name.
    assert_eq!(info.checksum, "on");
    c.set(long(0), "checksum".into(), "sha256".into(), false).unwrap().unwrap();
    assert_eq!(c.get(long(0)).unwrap().unwrap().checksum, "sha256");
    let r = c.set(long(0), "checksum".into(), "off".into(), false).unwrap();
    assert!(matches!(&r, Err(PoolError::Invalid { why }) if why.contains("off is not supported")), "{r:?}");
    let r = c.set(long(0), "checksum".into(), "256".into(), true).unwrap();
    assert!(matches!(&r, Err(PoolError::Invalid { why }) if why.contains("append")), "{r:?}");
    assert!(c.get("zones/nope".into()).unwrap().is_err());
}

/// Send and receive move through many bounded messages, one piece of the
/// stream in storaged at a time: 2 MiB of data (twice what storaged could
/// once hold of a stream) moves whole; the received
/// volume equals the source; a stream altered or cut short is refused and
/// makes nothing.
#[test]
fn send_and_receive_in_chunks() {
    let s = pool_server();
    let data: Vec<u8> = (0..2 * MIB as usize).map(|i| ((i * 31) >> 3) as u8 | 1).collect();
    s.pool().unwrap().write("zones/a-disk0", 0, &data).unwrap();
    let t = Loopback::new(s);
    let c = pool::Client::new(&t);
    c.snapshot("zones/a-disk0@one".into()).unwrap().unwrap();
    let opened = c.send("zones/a-disk0@one".into(), None).unwrap().unwrap();
    assert_eq!(opened.bytes, u64::MAX, "a stream made in pieces: its length is known at its end");
    let mut stream = Vec::new();
    loop {
        let chunk = c.send_chunk(opened.stream, stream.len() as u64).unwrap().unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= libipc::interfaces::POOL_CHUNK_BYTES as usize);
        stream.extend(chunk);
    }
    assert!(stream.len() > 2 * MIB as usize, "{} bytes", stream.len());
    c.close_stream(opened.stream).unwrap().unwrap();
    let receive = |bytes: &[u8], target: &str| -> Result<String, PoolError> {
        let id = c.receive(target.into()).unwrap()?;
        for chunk in bytes.chunks(2048) {
            c.receive_chunk(id, chunk.to_vec()).unwrap()?;
        }
        c.receive_end(id).unwrap()
    };
    let mut altered = stream.clone();
    altered[stream.len() / 2] ^= 0x10;
    assert!(matches!(receive(&altered, "zones/copy"), Err(PoolError::Corrupt { .. } | PoolError::Invalid { .. })));
    assert!(receive(&stream[..stream.len() - 100], "zones/copy").is_err());
    assert!(c.get("zones/copy".into()).unwrap().is_err(), "a refused stream made nothing");
    assert_eq!(receive(&stream, "zones/copy").unwrap(), "zones/copy@one");
    let mut s = t.into_inner();
    let mut back = vec![0u8; data.len()];
    s.pool().unwrap().read("zones/copy", 0, &mut back).unwrap();
    assert!(back == data);
    // Oversized chunks and other callers' streams are refused.
    let id = pool::Server::receive(as_(&mut s, ADMIN), "zones/other".into()).unwrap();
    let r = pool::Server::receive_chunk(&mut s, id, vec![0; 4096]);
    assert!(matches!(r, Err(PoolError::TooLarge { .. })), "{r:?}");
    assert_eq!(pool::Server::receive_end(as_(&mut s, 0), id), Err(PoolError::NoSuchStream { stream: id }));
    let report = pool::Server::scrub(as_(&mut s, ADMIN)).unwrap();
    assert_eq!((report.state.as_str(), report.repaired_bytes), ("ONLINE", 0));
    assert!(report.blocks > 0);
}

/// The stream calls abused: reads out of order, past the piece or
/// backwards; another caller's or a non-admin's calls; a piece claiming a
/// huge length (refused on its first chunk, the stream gone); a receive
/// closed half way or ended cut short (its hidden volume destroyed, the
/// space back); a receive into a granted volume; the sent snapshot destroyed
/// mid-send; more streams than allowed.
#[test]
fn stream_calls_refuse_abuse_and_leave_nothing() {
    let mut s = pool_server();
    let data: Vec<u8> = (0..MIB as usize).map(|i| ((i * 7) >> 5) as u8 | 1).collect();
    s.pool().unwrap().write("zones/a-disk0", 0, &data).unwrap();
    pool::Server::snapshot(as_(&mut s, ADMIN), "zones/a-disk0@one".into()).unwrap();
    let free = s.pool().unwrap().free_bytes();
    let opened = pool::Server::send(as_(&mut s, ADMIN), "zones/a-disk0@one".into(), None).unwrap();
    let id = opened.stream;
    let mut stream = Vec::new();
    for _ in 0..40 {
        stream.extend(pool::Server::send_chunk(&mut s, id, stream.len() as u64).unwrap());
    }
    // The same chunk again is fine (a retry); backwards past the piece, or
    // ahead of it, is refused.
    let again = pool::Server::send_chunk(&mut s, id, stream.len() as u64 - 2048).unwrap();
    assert_eq!(again[..], stream[stream.len() - 2048..]);
    for bad in [0, stream.len() as u64 + 200_000, u64::MAX] {
        let r = pool::Server::send_chunk(&mut s, id, bad);
        assert!(matches!(&r, Err(PoolError::Invalid { why }) if why.contains("read it in order")), "offset {bad}: {r:?}");
    }
    // Not the caller's: a non-admin, another admin (badge 0 is init).
    assert_eq!(pool::Server::send_chunk(as_(&mut s, MANIFEST_VMM), id, 0), Err(PoolError::NotPermitted));
    assert_eq!(pool::Server::send_chunk(as_(&mut s, 0), id, stream.len() as u64), Err(PoolError::NoSuchStream { stream: id }));
    assert!(matches!(pool::Server::receive_chunk(as_(&mut s, ADMIN), id, vec![1]), Err(PoolError::Invalid { .. })));
    assert!(matches!(pool::Server::receive_end(as_(&mut s, ADMIN), id), Err(PoolError::Invalid { .. })));
    // Two streams open: a third is refused.
    let r2 = pool::Server::receive(as_(&mut s, ADMIN), "zones/copy".into()).unwrap();
    assert_eq!(pool::Server::receive(as_(&mut s, ADMIN), "zones/copy2".into()), Err(PoolError::TooManyStreams { limit: 2 }));
    // The snapshot destroyed mid-send: the next piece is refused, the stream gone.
    pool::Server::destroy(as_(&mut s, ADMIN), "zones/a-disk0@one".into(), false).unwrap();
    let mut r = Ok(Vec::new());
    for _ in 0..40 {
        r = pool::Server::send_chunk(as_(&mut s, ADMIN), id, stream.len() as u64);
        match &r {
            Ok(c) if !c.is_empty() => stream.extend(c.iter().copied()),
            _ => break,
        }
    }
    assert!(matches!(&r, Err(PoolError::Invalid { why }) if why.contains("destroyed")), "{r:?}");
    assert_eq!(pool::Server::send_chunk(as_(&mut s, ADMIN), id, stream.len() as u64), Err(PoolError::NoSuchStream { stream: id }));
    // Receive the first 20 KiB of the stream (header and some pieces), then
    // a piece claiming 4 GiB: refused at once, the stream and what it made gone.
    pool::Server::snapshot(as_(&mut s, ADMIN), "zones/a-disk0@two".into()).unwrap();
    let free = free.min(s.pool().unwrap().free_bytes());
    let opened = pool::Server::send(as_(&mut s, ADMIN), "zones/a-disk0@two".into(), None).unwrap();
    let mut full = Vec::new();
    loop {
        let c = pool::Server::send_chunk(as_(&mut s, ADMIN), opened.stream, full.len() as u64).unwrap();
        if c.is_empty() {
            break;
        }
        full.extend(c);
    }
    pool::Server::close_stream(as_(&mut s, ADMIN), opened.stream).unwrap();
    let first_piece = 12 + 4 + u32::from_le_bytes(full[12..16].try_into().unwrap()) as usize + 32;
    for chunk in full[..first_piece].chunks(2048) {
        pool::Server::receive_chunk(as_(&mut s, ADMIN), r2, chunk.to_vec()).unwrap();
    }
    let r = pool::Server::receive_chunk(as_(&mut s, ADMIN), r2, u32::MAX.to_le_bytes().to_vec());
    assert!(matches!(&r, Err(PoolError::Invalid { why }) if why.contains("a piece of 4294967295 bytes")), "{r:?}");
    assert_eq!(pool::Server::receive_chunk(as_(&mut s, ADMIN), r2, vec![0]), Err(PoolError::NoSuchStream { stream: r2 }));
    let names = |s: &mut Server| s.pool().unwrap().list().into_iter().map(|d| d.name).collect::<Vec<_>>();
    assert!(!names(&mut s).iter().any(|n| n.starts_with("zones/copy")));
    // Closed half way: the hidden volume it filled is destroyed.
    let r3 = pool::Server::receive(as_(&mut s, ADMIN), "zones/copy".into()).unwrap();
    for chunk in full[..full.len() / 2].chunks(2048) {
        pool::Server::receive_chunk(as_(&mut s, ADMIN), r3, chunk.to_vec()).unwrap();
    }
    assert!(s.pool().unwrap().free_bytes() < free, "half the stream is in the hidden volume");
    assert!(pool::Server::get(as_(&mut s, ADMIN), "zones/copy%recv".into()).is_err(), "hidden from get");
    let g = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/copy%recv".into()]);
    assert!(g.is_err(), "a hidden volume cannot be granted: {g:?}");
    pool::Server::close_stream(as_(&mut s, ADMIN), r3).unwrap();
    s.pool().unwrap().sync().unwrap();
    assert_eq!(s.pool().unwrap().free_bytes(), free, "closing it freed what it received");
    // Ended cut short: refused, nothing left.
    let r4 = pool::Server::receive(as_(&mut s, ADMIN), "zones/copy".into()).unwrap();
    for chunk in full[..full.len() - 40].chunks(2048) {
        pool::Server::receive_chunk(as_(&mut s, ADMIN), r4, chunk.to_vec()).unwrap();
    }
    let r = pool::Server::receive_end(as_(&mut s, ADMIN), r4);
    assert!(matches!(&r, Err(PoolError::Invalid { why }) if why.contains("cut short")), "{r:?}");
    s.pool().unwrap().sync().unwrap();
    assert_eq!(s.pool().unwrap().free_bytes(), free);
    assert!(!names(&mut s).iter().any(|n| n.starts_with("zones/copy")));
    // Into a volume with a ring open: refused at the start and at the end.
    let ga = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/b-disk0".into()]).unwrap().badge;
    libipc::reply_caps::discard();
    let s = Rc::new(RefCell::new(s));
    let _ring = open(&s, ga, 0).unwrap();
    let mut s = s.borrow_mut();
    let r = pool::Server::receive(as_(&mut s, ADMIN), "zones/b-disk0".into());
    assert!(matches!(r, Err(PoolError::Busy { .. })), "{r:?}");
    s.pool().unwrap().verify(false).unwrap();
}

/// Issue 12, a VM on pool volumes: `libipc::provision` (what init runs at
/// boot for a VMM with `volumes`, and the control plane at run time) keeps
/// an existing volume, creates an absent one with its `volsize`, clones
/// one from an image's snapshot, and grants exactly those, in order: the
/// VM's disk i is the grant's disk i. Run again (the next boot) it creates
/// nothing and the data is there. A volume that is absent with nothing to
/// make it from, a missing origin, and a caller that is not an admin each
/// get a clear error, and nothing is created or granted.
#[test]
fn provisioning_makes_a_vms_volumes_and_grants_exactly_those() {
    use libipc::provision::{IfAbsent, ProvisionError, VolumeSpec, provision};
    let mut s = pool_server();
    let image: Vec<u8> = (0..8192).map(|i| (i * 13 + 5) as u8).collect();
    {
        let mut p = s.pool().unwrap();
        p.write("zones/a-disk0", 0, &image).unwrap();
        p.sync().unwrap();
    }
    pool::Server::snapshot(as_(&mut s, ADMIN), "zones/a-disk0@final".into()).unwrap();
    let specs = [
        VolumeSpec::parse("zones/b-disk0").unwrap(),
        VolumeSpec::parse(&format!("zones/vm-disk1 volsize={}", 2 * MIB)).unwrap(),
        VolumeSpec::parse("zones/vm-disk2 origin=zones/a-disk0@final").unwrap(),
    ];
    let t = Loopback::new(s);
    let done = provision(&pool::Client::new(&t), &specs).unwrap();
    assert_eq!(done.created, ["zones/vm-disk1", "zones/vm-disk2"]);
    let mut s = t.into_inner();
    let listed = storage::Server::disks(as_(&mut s, done.granted.badge));
    let names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["zones/b-disk0", "zones/vm-disk1", "zones/vm-disk2"]);
    assert_eq!(listed[1].capacity_sectors, 2 * MIB / 512);
    let s = Rc::new(RefCell::new(s));
    let mut clone = open(&s, done.granted.badge, 2).unwrap();
    let mut got = vec![0u8; image.len()];
    clone.read(0, &mut got).unwrap();
    assert_eq!(got, image, "the clone holds the image's data");
    clone.write(0, &[0xffu8; 512]).unwrap();
    clone.flush().unwrap();
    drop(clone);
    let mut s = Rc::try_unwrap(s).ok().unwrap().into_inner();
    let mut origin = vec![0u8; 512];
    s.pool().unwrap().read("zones/a-disk0", 0, &mut origin).unwrap();
    assert_eq!(origin, image[..512], "the clone's write left the origin alone");
    assert_eq!(pool::Server::revoke(as_(&mut s, ADMIN), done.granted.badge), Ok(1), "the ring on the clone closes");

    // The next boot: the same specs find every volume and create nothing.
    let t = Loopback::new(s);
    let again = provision(&pool::Client::new(&t), &specs).unwrap();
    assert!(again.created.is_empty(), "{:?}", again.created);
    assert_ne!(again.granted.badge, done.granted.badge);

    // Refusals: nothing is created, nothing granted.
    let absent = VolumeSpec { name: "zones/nope-disk0".into(), if_absent: IfAbsent::Fail };
    let r = provision(&pool::Client::new(&t), &[specs[0].clone(), absent]);
    assert_eq!(r, Err(ProvisionError::Absent { volume: "zones/nope-disk0".into() }));
    assert!(r.unwrap_err().to_string().contains("no such volume in the pool"));
    let r = provision(&pool::Client::new(&t), &[VolumeSpec::parse("zones/c-disk0 origin=zones/img@final").unwrap()]);
    assert!(matches!(&r, Err(ProvisionError::Pool { step: "clone", error: PoolError::NotFound { .. }, .. })), "{r:?}");
    let r = provision(&pool::Client::new(&t), &[specs[0].clone(), specs[0].clone()]);
    assert!(matches!(&r, Err(ProvisionError::Specs(why)) if why.contains("twice")), "{r:?}");
    assert!(matches!(provision(&pool::Client::new(&t), &[]), Err(ProvisionError::Specs(_))));
    let mut s = t.into_inner();
    let before = pool::Server::list(as_(&mut s, ADMIN), String::new()).unwrap().datasets.len();
    let grants = s.grants.len();
    let t = Badged(RefCell::new(s), MANIFEST_VMM);
    let r = provision(&pool::Client::new(&t), &[VolumeSpec::parse("zones/d-disk0 volsize=4096").unwrap()]);
    assert!(matches!(&r, Err(ProvisionError::Pool { error: PoolError::NotPermitted, .. })), "{r:?}");
    let mut s = t.0.into_inner();
    assert_eq!(pool::Server::list(as_(&mut s, ADMIN), String::new()).unwrap().datasets.len(), before);
    assert_eq!(s.grants.len(), grants);
}

/// A transport whose calls carry `badge` (the loopback's carry 0, init's).
struct Badged(RefCell<Server>, u64);

impl libipc::Transport for Badged {
    fn call(&self, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::IpcError> {
        let r = libipc::Dispatch::dispatch_from(&mut *self.0.borrow_mut(), self.1, interface, request);
        libipc::reply_caps::discard();
        r.map_err(libipc::IpcError::from)
    }
}

/// `pool.rename` (the image store's `-partial` volume becoming the image):
/// a volume moves with its snapshots, a snapshot within its volume; a
/// volume a grant holds, a non-admin and a bad name are refused.
#[test]
fn rename_moves_a_volume_with_its_snapshots_and_refuses_a_granted_one() {
    let mut s = pool_server();
    let st = as_(&mut s, ADMIN);
    pool::Server::snapshot(st, "zones/a-disk0@s1".into()).unwrap();
    pool::Server::rename(st, "zones/a-disk0".into(), "zones/img".into()).unwrap();
    assert!(matches!(pool::Server::get(st, "zones/a-disk0".into()), Err(PoolError::NotFound { .. })));
    assert_eq!(pool::Server::get(st, "zones/img@s1".into()).unwrap().name, "zones/img@s1");
    pool::Server::rename(st, "zones/img@s1".into(), "zones/img@final".into()).unwrap();
    assert!(pool::Server::get(st, "zones/img@final".into()).unwrap().snapshot);
    let r = pool::Server::rename(st, "zones/img@final".into(), "zones/b-disk0@final".into());
    assert!(matches!(r, Err(PoolError::Invalid { .. })), "{r:?}");
    let r = pool::Server::rename(st, "zones/img".into(), "zones/b-disk0".into());
    assert!(matches!(r, Err(PoolError::Exists { .. })), "{r:?}");
    let g = pool::Server::grant(st, vec!["zones/b-disk0".into()]).unwrap().badge;
    libipc::reply_caps::discard();
    let r = pool::Server::rename(st, "zones/b-disk0".into(), "zones/c".into());
    assert!(matches!(r, Err(PoolError::Busy { .. })), "{r:?}");
    pool::Server::revoke(st, g).unwrap();
    pool::Server::rename(st, "zones/b-disk0".into(), "zones/c".into()).unwrap();
    let r = pool::Server::rename(as_(&mut s, MANIFEST_VMM), "zones/c".into(), "zones/d".into());
    assert_eq!(r, Err(PoolError::NotPermitted));
}

/// The fake clock of [`writes_nobody_flushes_commit_after_the_txg_timeout`]
/// (milliseconds).
static FAKE_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn fake_clock() -> u64 {
    FAKE_MS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Commit by time: a guest that writes and never FLUSHes has its writes
/// committed once the open group is `TXG_TIMEOUT_MS` old (at the next
/// request storaged handles), not before; after a power cut they are there.
#[test]
fn writes_nobody_flushes_commit_after_the_txg_timeout() {
    use core::sync::atomic::Ordering::Relaxed;
    let mut s = pool_server();
    s.set_ticks_per_ms(1);
    s.set_clock(Some(fake_clock));
    let ga = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/a-disk0".into()]).unwrap().badge;
    libipc::reply_caps::discard();
    let s = Rc::new(RefCell::new(s));
    let mut a = open(&s, ga, 0).unwrap();
    let txg = s.borrow().pool().unwrap().txg();
    FAKE_MS.store(1_000, Relaxed);
    let data: Vec<u8> = (0..16 * 512).map(|i| (i * 5 + 3) as u8).collect();
    a.write(16, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    FAKE_MS.store(1_000 + alcove_pool::pool::TXG_TIMEOUT_MS - 1, Relaxed);
    a.read(16, &mut back).unwrap();
    assert_eq!(s.borrow().pool().unwrap().txg(), txg, "no commit before the timeout");
    FAKE_MS.store(1_000 + alcove_pool::pool::TXG_TIMEOUT_MS, Relaxed);
    a.read(16, &mut back).unwrap();
    assert_eq!(s.borrow().pool().unwrap().txg(), txg + 1, "the open group committed by time");
    assert_eq!(back, data);
    // Nothing new: no more commits however long it waits.
    FAKE_MS.store(100_000, Relaxed);
    a.read(16, &mut back).unwrap();
    assert_eq!(s.borrow().pool().unwrap().txg(), txg + 1);
    let handle = a.doorbell().handle;
    drop(a);
    storage::Server::close(as_(&mut s.borrow_mut(), ga), handle).unwrap();
    let s = Rc::try_unwrap(s).ok().expect("one owner").into_inner();
    // Power cut: no FLUSH ever came, the data is there.
    let s = booted(power_cycle(s), None);
    let mut got = vec![0u8; data.len()];
    s.pool().unwrap().read("zones/a-disk0", 16 * 512, &mut got).unwrap();
    assert_eq!(got, data, "the writes committed by time survived");
}

/// The fake clock of [`an_idle_pool_commits_when_its_timer_wakes_it`]
/// (milliseconds), apart from [`FAKE_MS`]: tests run in parallel.
static IDLE_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn idle_clock() -> u64 {
    IDLE_MS.load(core::sync::atomic::Ordering::Relaxed)
}

/// What the commit waker of that test was told, in order.
static WAKER_TOLD: std::sync::Mutex<Vec<Option<u64>>> = std::sync::Mutex::new(Vec::new());

fn record_waker(due_in_ms: Option<u64>) {
    WAKER_TOLD.lock().unwrap().push(due_in_ms);
}

/// Commit by time with no request after the write: storaged tells its
/// commit waker when the open group is due (the full timeout at the write,
/// the rest of it later), and the waker's tick alone (a notification, no
/// request) commits it then and tells the waker nothing more is due. An
/// early tick commits nothing.
#[test]
fn an_idle_pool_commits_when_its_timer_wakes_it() {
    use core::sync::atomic::Ordering::Relaxed;
    use libipc::Dispatch;
    let timeout = alcove_pool::pool::TXG_TIMEOUT_MS;
    let mut s = pool_server();
    s.set_ticks_per_ms(1);
    s.set_clock(Some(idle_clock));
    s.set_commit_waker(Some(record_waker));
    let ga = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/a-disk0".into()]).unwrap().badge;
    libipc::reply_caps::discard();
    let s = Rc::new(RefCell::new(s));
    let mut a = open(&s, ga, 0).unwrap();
    let txg = s.borrow().pool().unwrap().txg();
    WAKER_TOLD.lock().unwrap().clear();
    IDLE_MS.store(2_000, Relaxed);
    let data: Vec<u8> = (0..16 * 512).map(|i| (i * 7 + 1) as u8).collect();
    a.write(16, &data).unwrap();
    assert_eq!(WAKER_TOLD.lock().unwrap().last(), Some(&Some(timeout)), "due a whole timeout after the write");
    // More writes to the same group, and a notification before it is
    // due: nothing committed, and the waker is not told again (the
    // deadline stands).
    IDLE_MS.store(2_000 + timeout - 300, Relaxed);
    a.write(48, &data).unwrap();
    s.borrow_mut().notified(crate::COMMIT_TICK);
    assert_eq!(s.borrow().pool().unwrap().txg(), txg);
    assert_eq!(*WAKER_TOLD.lock().unwrap(), [Some(timeout)]);
    // The tick at the deadline, with no request: committed.
    IDLE_MS.store(2_000 + timeout, Relaxed);
    s.borrow_mut().notified(crate::COMMIT_TICK);
    assert_eq!(s.borrow().pool().unwrap().txg(), txg + 1, "the waker's tick committed the idle pool's group");
    assert_eq!(*WAKER_TOLD.lock().unwrap(), [Some(timeout), None], "nothing more is due");
    let mut back = vec![0u8; data.len()];
    a.read(16, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(s.borrow().pool().unwrap().txg(), txg + 1);
    // The next group's first write: due a whole timeout after it.
    IDLE_MS.store(20_000, Relaxed);
    a.write(16, &back).unwrap();
    assert_eq!(*WAKER_TOLD.lock().unwrap(), [Some(timeout), None, Some(timeout)]);
}

/// A clock that moves on by one tick each time it is read.
static TICKS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn ticking_clock() -> u64 {
    TICKS.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
}

/// storaged counts a ring's kicks and the time it spent serving them (the
/// bench's `kicks served in` figure): every kick counted, each at least a
/// tick of a clock that moves whenever it is read; a kick of another ring
/// or of a handle that is not open counts nowhere.
#[test]
fn each_ring_counts_its_kicks_and_serving_time() {
    let mut s = pool_server();
    s.set_ticks_per_ms(1);
    s.set_clock(Some(ticking_clock));
    let ga = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/a-disk0".into()]).unwrap().badge;
    libipc::reply_caps::discard();
    let s = Rc::new(RefCell::new(s));
    let mut a = open(&s, ga, 0).unwrap();
    let handle = a.doorbell().handle;
    assert_eq!(s.borrow().ring_service(handle), Some((0, 0)), "nothing served yet");
    let data: Vec<u8> = (0..8 * 512).map(|i| (i * 7 + 1) as u8).collect();
    a.write(0, &data).unwrap();
    a.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    a.read(0, &mut back).unwrap();
    assert_eq!(back, data);
    let (kicks, ticks) = s.borrow().ring_service(handle).unwrap();
    assert_eq!(kicks, 3, "a write, a flush and a read: a kick each");
    assert!(ticks >= kicks, "each kick took at least a tick: {ticks}");
    assert!(storage::Server::kick(as_(&mut s.borrow_mut(), ga), handle + 100).is_err(), "no such ring");
    assert_eq!(s.borrow().ring_service(handle).unwrap().0, kicks, "the refused kick counted nowhere");
    assert_eq!(s.borrow().ring_service(handle + 100), None);
}

/// A scrub that finds blocks no copy can repair (a single-disk pool) walks
/// on and names them, the first `POOL_REPORTS_MAX` with the longest names
/// cut, and counts them all, in one message; the undamaged volume is not
/// named.
#[test]
fn scrub_names_permanent_errors_in_one_message() {
    let mut s = pool_server();
    let long = |i: usize| format!("zones/{}{i:02}", "v".repeat(253));
    let block = |i: usize| -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
        (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    for i in 0..10 {
        pool::Server::create(as_(&mut s, ADMIN), long(i), MIB, 4096).unwrap();
        s.pool().unwrap().write(&long(i), 8192, &block(i)).unwrap();
        s.pool().unwrap().sync().unwrap();
        // The longest name there is: the snapshot holds the block too.
        pool::Server::snapshot(as_(&mut s, ADMIN), format!("{}@{}", long(i), "s".repeat(255))).unwrap();
    }
    s.pool().unwrap().write("zones/a-disk0", 0, &block(99)).unwrap();
    s.pool().unwrap().sync().unwrap();
    {
        let mut p = s.pool().unwrap();
        let bytes = &mut p.disks_mut()[0].0.data;
        for i in 0..10 {
            let b = block(i);
            let at = bytes.chunks(4096).position(|c| c == &b[..]).expect("the block on the disk");
            bytes[at * 4096 + 10] ^= 1;
        }
    }
    let t = Loopback::new(s);
    let r = pool::Client::new(&t).scrub().unwrap().unwrap();
    assert_eq!((r.data_error_count, r.data_errors.len(), r.checksum_errors, r.repaired_bytes), (20, 8, 10, 0));
    for e in &r.data_errors {
        assert!(e.starts_with("zones/vvv") && e.len() <= libipc::interfaces::POOL_TEXT_MAX as usize, "{e}");
        assert!(e.contains(" bytes 8192..12288 (data block at 0x"), "{e}");
    }
    assert_eq!(r.state, "ONLINE");
}

/// `pool.status`'s scan, as the admin sees it.
fn scan(s: &Rc<RefCell<Server>>) -> libipc::interfaces::PoolScan {
    pool::Server::status(as_(&mut s.borrow_mut(), ADMIN)).unwrap().scan.expect("a scan to report")
}

/// `zpool scrub` in storaged: the scrub runs in steps
/// ([`libipc::Dispatch::background`]) between a VMM's ring requests, whose
/// writes land and are neither refused nor reported; status tells the
/// progress, then the result; a second scrub is refused; `-s` cancels.
#[test]
fn a_background_scrub_runs_between_ring_requests() {
    let mut s = pool_server();
    let ga = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/a-disk0".into()]).unwrap().badge;
    libipc::reply_caps::discard();
    let s = Rc::new(RefCell::new(s));
    let mut a = open(&s, ga, 0).unwrap();
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8 | 1
            })
            .collect()
    };
    const CHUNK: usize = 32 * 1024;
    let mut model = vec![0u8; 4 * MIB as usize];
    for (i, c) in model.chunks_mut(CHUNK).enumerate().take(96) {
        c.copy_from_slice(&random(CHUNK));
        a.write((i * CHUNK / 512) as u64, c).unwrap();
    }
    a.flush().unwrap();
    for thief in [ga, MANIFEST_VMM] {
        assert_eq!(pool::Server::scrub_start(as_(&mut s.borrow_mut(), thief)), Err(PoolError::NotPermitted));
        assert_eq!(pool::Server::scrub_stop(as_(&mut s.borrow_mut(), thief)), Err(PoolError::NotPermitted));
    }
    assert_eq!(libipc::Dispatch::background(&mut *s.borrow_mut()), None, "no scrub, nothing to do");
    pool::Server::scrub_start(as_(&mut s.borrow_mut(), ADMIN)).unwrap();
    let first = scan(&s);
    assert!(first.running && first.bytes == 0 && first.total > 3 * MIB, "{first:?}");
    let again = pool::Server::scrub_start(as_(&mut s.borrow_mut(), ADMIN));
    assert!(matches!(&again, Err(PoolError::Busy { why }) if why.contains("scrub is in progress")), "{again:?}");
    let blocking = pool::Server::scrub(as_(&mut s.borrow_mut(), ADMIN));
    assert!(matches!(blocking, Err(PoolError::Busy { .. })), "{blocking:?}");
    let (mut steps, mut last) = (0usize, 0);
    loop {
        // The VMM's I/O between two steps: a write, a read, a flush.
        let at = (steps * 37 + 5) % 128 * CHUNK;
        let data = random(CHUNK);
        a.write((at / 512) as u64, &data).unwrap();
        model[at..at + CHUNK].copy_from_slice(&data);
        let mut got = vec![0u8; CHUNK];
        let from = (steps * 53) % 127 * CHUNK;
        a.read((from / 512) as u64, &mut got).unwrap();
        assert!(got == model[from..from + CHUNK], "read during the scrub");
        if steps % 3 == 0 {
            a.flush().unwrap();
        }
        let p = scan(&s);
        if !p.running {
            break;
        }
        assert!(p.bytes >= last && p.bytes <= p.total, "{p:?}");
        last = p.bytes;
        steps += 1;
        libipc::Dispatch::background(&mut *s.borrow_mut());
    }
    let done = scan(&s);
    assert!(steps >= 8, "{steps} steps of {SCRUB_STEP_BYTES} bytes");
    assert!(!done.running && !done.canceled && done.errors == 0 && done.repaired == 0, "{done:?}");
    assert!(done.bytes > 3 * MIB && done.bytes <= first.total, "{done:?} of {first:?}");
    let st = pool::Server::status(as_(&mut s.borrow_mut(), ADMIN)).unwrap();
    assert!(st.children.iter().all(|c| c.checksum_errors == 0 && c.read_errors == 0), "{st:?}");
    assert_eq!(libipc::Dispatch::background(&mut *s.borrow_mut()), None, "the scrub is over");
    let mut all = vec![0u8; model.len()];
    for (i, c) in all.chunks_mut(CHUNK).enumerate() {
        a.read((i * CHUNK / 512) as u64, c).unwrap();
    }
    assert!(all == model, "every write made during the scrub is there");

    // `zpool scrub -s`.
    pool::Server::scrub_start(as_(&mut s.borrow_mut(), ADMIN)).unwrap();
    assert_eq!(libipc::Dispatch::background(&mut *s.borrow_mut()), Some(0), "more to do; no clock, no pause");
    pool::Server::scrub_stop(as_(&mut s.borrow_mut(), ADMIN)).unwrap();
    let c = scan(&s);
    assert!(c.canceled && !c.running && c.bytes == SCRUB_STEP_BYTES.min(c.bytes) && c.bytes > 0, "{c:?}");
    let r = pool::Server::scrub_stop(as_(&mut s.borrow_mut(), ADMIN));
    assert!(matches!(&r, Err(PoolError::Invalid { why }) if why == "no scrub is in progress"), "{r:?}");
    assert_eq!(libipc::Dispatch::background(&mut *s.borrow_mut()), None);
    s.borrow().pool().unwrap().verify(false).unwrap();
}

/// After any request answered while a scrub runs, storaged asks to be
/// woken ([`RingFactory::wake`]), so the scrub's next step runs once the
/// reply is out; with no scrub it does not. A client that keeps storaged
/// busy does not stop the scrub: every [`SCRUB_STEP_EVERY_REQUESTS`]th
/// request runs a step.
#[test]
fn requests_during_a_scrub_wake_storaged_and_do_not_starve_it() {
    let s = pool_server();
    s.pool().unwrap().write("zones/a-disk0", 0, &vec![7u8; 2 * MIB as usize]).unwrap();
    let t = Loopback::new(s);
    let c = pool::Client::new(&t);
    c.status().unwrap().unwrap();
    c.scrub_start().unwrap().unwrap();
    let walked = || c.status().unwrap().unwrap().scan.filter(|s| s.running).map(|s| s.bytes);
    let seen: Vec<Option<u64>> = (0..SCRUB_STEP_EVERY_REQUESTS + 1).map(|_| walked()).collect();
    // scrub_start is the first request of the scrub, the statuses the next.
    let n = SCRUB_STEP_EVERY_REQUESTS as usize;
    assert!(seen[..n - 1].iter().all(|&b| b == Some(0)), "{seen:?}");
    assert!(seen[n - 1] == Some(SCRUB_STEP_BYTES.min(seen[n - 1].unwrap_or(0))) && seen[n - 1] > Some(0), "{seen:?}");
    assert_eq!(seen[n], seen[n - 1], "{seen:?}");
    let s = t.into_inner();
    assert_eq!(s.factory.wakes, SCRUB_STEP_EVERY_REQUESTS + 2, "after scrub_start and each status that followed, not before");
}

/// What the shell's `zfs rename`, `zfs destroy -R` and `zfs send | zfs
/// receive` reach, abused: a non-admin; bad names (another pool, empty, a
/// second `@`, 5000 bytes, characters outside the pool's); the hidden
/// volume of a receive under way (not renamed, destroyed, snapshotted,
/// cloned, sent or set: it is no dataset until the receive ends); a forged
/// stream (the right magic, then garbage), one whose header claims an 8 EiB
/// volume, one cut short, each refused with nothing left behind; the pool
/// then imports at the next boot with exactly the datasets it had.
#[test]
fn rename_and_receive_refuse_abuse_and_the_pool_imports_after() {
    let mut s = pool_server();
    let data: Vec<u8> = (0..MIB as usize).map(|i| ((i * 13) >> 4) as u8 | 1).collect();
    s.pool().unwrap().write("zones/a-disk0", 0, &data).unwrap();
    pool::Server::snapshot(as_(&mut s, ADMIN), "zones/a-disk0@one".into()).unwrap();
    let names = |s: &mut Server| {
        let mut n: Vec<String> = s.pool().unwrap().list().into_iter().map(|d| d.name).collect();
        n.sort();
        n
    };
    let before = names(&mut s);
    // A non-admin: refused before anything is looked at.
    for badge in [MANIFEST_VMM, 0x77] {
        let st = as_(&mut s, badge);
        assert_eq!(pool::Server::rename(st, "zones/a-disk0".into(), "zones/z".into()), Err(PoolError::NotPermitted));
        assert_eq!(pool::Server::receive(st, "zones/z".into()), Err(PoolError::NotPermitted));
        assert_eq!(pool::Server::send(st, "zones/a-disk0@one".into(), None), Err(PoolError::NotPermitted));
        assert_eq!(pool::Server::destroy(st, "zones/a-disk0".into(), true), Err(PoolError::NotPermitted));
    }
    let long = format!("zones/{}", "n".repeat(5000));
    let st = as_(&mut s, ADMIN);
    for bad in ["other/z", "zones/", "", "zones/a@b@c", "zones/x y", "zones/../b-disk0", "zones/é", long.as_str(), "zones/z%recv"] {
        let r = pool::Server::rename(st, "zones/a-disk0".into(), bad.into());
        assert!(matches!(r, Err(PoolError::Invalid { .. })), "rename to {bad:?}: {r:?}");
        let r = pool::Server::receive(st, bad.into());
        assert!(matches!(r, Err(PoolError::Invalid { .. })), "receive into {bad:?}: {r:?}");
    }
    for bad in ["zones/a-disk0@", "zones/a-disk0@x@y", "zones/a-disk0@two words"] {
        let r = pool::Server::rename(st, "zones/a-disk0@one".into(), bad.into());
        assert!(matches!(r, Err(PoolError::Invalid { .. })), "rename to {bad:?}: {r:?}");
    }
    let r = pool::Server::rename(st, "zones/nope".into(), "zones/z".into());
    assert!(matches!(r, Err(PoolError::NotFound { .. })), "{r:?}");
    assert!(matches!(pool::Server::rename(st, long.clone(), "zones/z".into()), Err(PoolError::NotFound { .. })));
    assert_eq!(names(&mut s), before);
    // A receive under way: its hidden volume is nobody's to touch.
    let opened = pool::Server::send(as_(&mut s, ADMIN), "zones/a-disk0@one".into(), None).unwrap();
    let mut stream = Vec::new();
    loop {
        let c = pool::Server::send_chunk(as_(&mut s, ADMIN), opened.stream, stream.len() as u64).unwrap();
        if c.is_empty() {
            break;
        }
        stream.extend(c);
    }
    let st = as_(&mut s, ADMIN);
    pool::Server::close_stream(st, opened.stream).unwrap();
    let free_before = st.pool().unwrap().free_bytes();
    let rx = pool::Server::receive(st, "zones/copy".into()).unwrap();
    for chunk in stream[..stream.len() / 2].chunks(2048) {
        pool::Server::receive_chunk(st, rx, chunk.to_vec()).unwrap();
    }
    let hidden = "zones/copy%recv";
    assert!(st.pool().unwrap().free_bytes() < free_before, "the hidden volume holds half the stream by now");
    let r = pool::Server::rename(st, hidden.into(), "zones/stolen".into());
    assert!(matches!(r, Err(PoolError::NotFound { .. })), "{r:?}");
    let r = pool::Server::destroy(st, hidden.into(), true);
    assert!(matches!(r, Err(PoolError::NotFound { .. })), "{r:?}");
    let r = pool::Server::snapshot(st, format!("{hidden}@s"));
    assert!(matches!(r, Err(PoolError::NotFound { .. })), "{r:?}");
    let r = pool::Server::send(st, format!("{hidden}@x"), None);
    assert!(matches!(r, Err(PoolError::NotFound { .. })), "{r:?}");
    let r = pool::Server::set(st, hidden.into(), "user:k".into(), "v".into(), false);
    assert!(matches!(r, Err(PoolError::NotFound { .. })), "{r:?}");
    for chunk in stream[stream.len() / 2..].chunks(2048) {
        pool::Server::receive_chunk(st, rx, chunk.to_vec()).unwrap();
    }
    assert_eq!(pool::Server::receive_end(st, rx).unwrap(), "zones/copy@one");
    pool::Server::destroy(st, "zones/copy".into(), true).unwrap();
    assert_eq!(names(&mut s), before);
    // Forged: the magic and version, then bytes that are no piece.
    let mut forged = stream[..12].to_vec();
    forged.extend((0..6000u32).map(|i| (i * 131 % 251) as u8));
    // A header claiming an 8 EiB volume, sealed as a real piece would be.
    let mut huge = stream[..12].to_vec();
    let mut header = Vec::new();
    header.extend(0u32.to_le_bytes());
    header.extend((8u64 << 60).to_le_bytes());
    header.extend(4096u32.to_le_bytes());
    header.extend(7u64.to_le_bytes());
    header.extend(3u32.to_le_bytes());
    header.extend(b"big");
    header.extend(0u64.to_le_bytes());
    huge.extend((header.len() as u32).to_le_bytes());
    huge.extend(&header);
    huge.extend(alcove_pool::pool::piece_tag(&[0; 32], &header));
    let cut = stream[..stream.len() - 1].to_vec();
    s.pool().unwrap().sync().unwrap();
    let free = s.pool().unwrap().free_bytes();
    for (what, bytes) in [("forged", &forged), ("huge", &huge), ("cut short", &cut)] {
        let st = as_(&mut s, ADMIN);
        let rx = pool::Server::receive(st, "zones/copy".into()).unwrap();
        let mut r = Ok(0);
        for chunk in bytes.chunks(2048) {
            r = pool::Server::receive_chunk(st, rx, chunk.to_vec());
            if r.is_err() {
                break;
            }
        }
        let end = if r.is_ok() { pool::Server::receive_end(st, rx).map(drop) } else { r.map(drop) };
        assert!(matches!(end, Err(PoolError::Invalid { .. } | PoolError::Corrupt { .. })), "{what}: {end:?}");
        assert_eq!(pool::Server::close_stream(st, rx), Err(PoolError::NoSuchStream { stream: rx }), "{what}: the stream is gone");
        assert_eq!(names(&mut s), before, "{what}: nothing left behind");
        s.pool().unwrap().sync().unwrap();
        assert_eq!(s.pool().unwrap().free_bytes(), free, "{what}: its space is back");
    }
    s.pool().unwrap().verify(false).unwrap();
    // The next boot imports the pool with what it had.
    let mut s = booted(power_cycle(s), None);
    assert_eq!(names(&mut s), before);
    s.pool().unwrap().verify(false).unwrap();
}

/// Item 5 at the block ring: a volume's `quota` fails the writes past it
/// as I/O errors (what a guest's virtio-blk reports, Linux's EIO), what
/// was written before reads back, another volume's ring goes on meanwhile,
/// and once the quota is lifted the same write goes through.
#[test]
fn a_quota_fails_ring_writes_past_it_and_nothing_else() {
    let mut s = pool_server();
    pool::Server::set(as_(&mut s, ADMIN), "zones/a-disk0".into(), "quota".into(), "1M".into(), false).unwrap();
    let ga = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/a-disk0".into()]).unwrap().badge;
    libipc::reply_caps::discard();
    let gb = pool::Server::grant(as_(&mut s, ADMIN), vec!["zones/b-disk0".into()]).unwrap().badge;
    libipc::reply_caps::discard();
    let s = Rc::new(RefCell::new(s));
    let (mut a, mut b) = (open(&s, ga, 0).unwrap(), open(&s, gb, 0).unwrap());
    // Incompressible 64 KiB chunks, each flushed (committed or logged).
    let chunk = |i: u64| -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ i.wrapping_mul(0xff51_afd7_ed55_8ccd);
        (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let sectors = (64 * 1024 / SECTOR_BYTES) as u64;
    let mut written = 0;
    let refused = loop {
        assert!(written < 64, "4 MiB written under a 1 MiB quota");
        let r = a.write(written * sectors, &chunk(written)).and_then(|()| a.flush());
        match r {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert!((12..=16).contains(&written), "{written} chunks of 64 KiB under a 1 MiB quota");
    assert!(matches!(refused, libipc::blkring::BlkError::Status { status: libipc::blkring::Status::IoError, .. }), "{refused:?}");
    // The other volume's ring goes on, and its data is its own.
    b.write(0, &chunk(100)).unwrap();
    b.flush().unwrap();
    // What was written before the quota reads back whole.
    let mut back = vec![0u8; 64 * 1024];
    for i in 0..written {
        a.read(i * sectors, &mut back).unwrap();
        assert!(back == chunk(i), "chunk {i} changed");
    }
    b.read(0, &mut back).unwrap();
    assert!(back == chunk(100));
    // The quota lifted: the refused write goes through.
    pool::Server::set(as_(&mut s.borrow_mut(), ADMIN), "zones/a-disk0".into(), "quota".into(), "none".into(), false).unwrap();
    a.write(written * sectors, &chunk(written)).unwrap();
    a.flush().unwrap();
    a.read(written * sectors, &mut back).unwrap();
    assert!(back == chunk(written));
}
