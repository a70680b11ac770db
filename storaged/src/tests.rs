//! Host tests: storaged's logic with memory disks and vector rings, its
//! interfaces over the in-process transport, and the block ring end to end
//! through `storage.kick`.

extern crate std;

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use libipc::blkring::{
    BlkError, Doorbell, KickError, MemDisk, Op, PAGE_BYTES, RingClient, RingRegion, SECTOR_BYTES, Status,
};
use libipc::in_process::Loopback;
use libipc::interfaces::{StorageError, status, storage};
use libipc::Dispatch;

use super::*;

/// Rings in vectors; slot numbers counted from 300; `fail` makes creation
/// fail. Clients are numbers: `caller` is the one the request comes from
/// (`None`: it brought no process capability), `ended` those that ended.
struct VecRings {
    next_slot: CapSlot,
    live: usize,
    fail: bool,
    bounce: Vec<u8>,
    caller: Option<u32>,
    ended: Vec<u32>,
    watched: usize,
}

impl Default for VecRings {
    fn default() -> Self {
        Self {
            next_slot: 0,
            live: 0,
            fail: false,
            bounce: vec![0; 16 * PAGE_BYTES],
            caller: Some(1),
            ended: Vec::new(),
            watched: 0,
        }
    }
}

impl RingFactory for VecRings {
    type Ring = Vec<u8>;
    type Client = u32;
    fn create(&mut self, pages: usize) -> Result<(Vec<u8>, CapSlot), String> {
        if self.fail {
            return Err("out of budget".into());
        }
        self.live += 1;
        self.next_slot += 1;
        Ok((vec![0xa5; pages * PAGE_BYTES], 300 + self.next_slot))
    }
    fn destroy(&mut self, _ring: Vec<u8>) {
        self.live -= 1;
    }
    fn bounce(&mut self) -> &mut [u8] {
        &mut self.bounce
    }
    fn watch_caller(&mut self) -> Result<u32, String> {
        let c = self.caller.ok_or_else(|| String::from("the request brought no capability"))?;
        self.watched += 1;
        Ok(c)
    }
    fn has_ended(&self, client: &u32) -> bool {
        self.ended.contains(client)
    }
    fn release(&mut self, _client: u32) {
        self.watched -= 1;
    }
}

type Server = Storaged<MemDisk, VecRings>;

fn server() -> Server {
    let mut ro = MemDisk::new(32, "ro-disk");
    ro.read_only = true;
    ro.data[0] = 0x42;
    Storaged::new(
        vec![Disk::new("mem 0", MemDisk::new(1024, "disk-zero")), Disk::new("mem 1", ro)],
        VecRings::default(),
    )
}

/// The in-process client's doorbell: its view of the ring is copied into
/// storaged's before the kick and back after it, as shared pages would be.
struct SharedDoorbell<D: BlockDevice = MemDisk> {
    storaged: Rc<RefCell<Storaged<D, VecRings>>>,
    handle: u32,
}

impl<D: BlockDevice> Doorbell for SharedDoorbell<D> {
    fn kick(&mut self, region: &mut dyn RingRegion) -> Result<(), KickError> {
        let mut s = self.storaged.borrow_mut();
        let theirs = s.ring_memory(self.handle).ok_or(KickError::Refused(StorageError::NoSuchHandle { handle: self.handle }))?;
        region.read(0, &mut theirs[..]);
        storage::Server::kick(&mut *s, self.handle).map_err(KickError::Refused)?;
        region.write(0, s.ring_memory(self.handle).expect("still open"));
        Ok(())
    }
}

fn open<D: BlockDevice>(storaged: &Rc<RefCell<Storaged<D, VecRings>>>, index: u32) -> RingClient<Vec<u8>, SharedDoorbell<D>> {
    let opened = storage::Server::open(&mut *storaged.borrow_mut(), index).unwrap();
    let region = storaged.borrow_mut().ring_memory(opened.handle).unwrap().clone();
    assert_eq!(region.len(), opened.ring_pages as usize * PAGE_BYTES);
    RingClient::new(region, SharedDoorbell { storaged: storaged.clone(), handle: opened.handle }).unwrap()
}

#[test]
fn lists_disks_with_serials() {
    let mut s = server();
    let disks = storage::Server::disks(&mut s);
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0].name, "mem 0");
    assert_eq!(disks[0].serial, "disk-zero");
    assert_eq!(disks[0].capacity_sectors, 1024);
    assert!(!disks[0].read_only);
    assert!(disks[1].read_only);
}

#[test]
fn a_ring_reads_writes_flushes_and_gets_the_id() {
    let storaged = Rc::new(RefCell::new(server()));
    let mut c = open(&storaged, 0);
    assert_eq!(c.capacity_sectors(), 1024);
    let pattern: Vec<u8> = (0..200 * SECTOR_BYTES).map(|i| (i * 7 + 3) as u8).collect();
    c.write(500, &pattern).unwrap();
    c.flush().unwrap();
    let mut back = vec![0; pattern.len()];
    c.read(500, &mut back).unwrap();
    assert_eq!(back, pattern);
    assert_eq!(&c.get_id().unwrap()[..9], b"disk-zero");
    let s = storaged.borrow();
    let disk = s.device(0).unwrap();
    assert_eq!(&disk.data[500 * SECTOR_BYTES..700 * SECTOR_BYTES], &pattern[..]);
    assert_eq!(disk.flushes, 1);
}

#[test]
fn bad_requests_fail_and_storaged_goes_on() {
    let storaged = Rc::new(RefCell::new(server()));
    let mut c = open(&storaged, 0);
    let mut buf = vec![0; SECTOR_BYTES];
    assert_eq!(c.read(1024, &mut buf), Err(BlkError::Status { op: Op::Read, sector: 1024, status: Status::OutOfRange }));
    let mut ro = open(&storaged, 1);
    assert_eq!(ro.write(0, &buf), Err(BlkError::Status { op: Op::Write, sector: 0, status: Status::ReadOnly }));
    ro.read(0, &mut buf).unwrap();
    assert_eq!(buf[0], 0x42);
    c.read(1023, &mut buf).unwrap();
}

#[test]
fn handles_disks_and_ring_limits_are_checked() {
    let mut s = server();
    assert_eq!(storage::Server::open(&mut s, 2), Err(StorageError::NoSuchDisk { index: 2, disks: 2 }));
    assert_eq!(storage::Server::kick(&mut s, 77), Err(StorageError::NoSuchHandle { handle: 77 }));
    assert_eq!(storage::Server::close(&mut s, 77), Err(StorageError::NoSuchHandle { handle: 77 }));
    let mut handles = vec![];
    for _ in 0..MAX_RINGS {
        handles.push(storage::Server::open(&mut s, 0).unwrap().handle);
        libipc::reply_caps::discard();
    }
    assert_eq!(storage::Server::open(&mut s, 1), Err(StorageError::TooManyRings { limit: MAX_RINGS as u32 }));
    for h in &handles {
        storage::Server::close(&mut s, *h).unwrap();
    }
    assert_eq!(s.open_rings(), 0);
    assert_eq!(s.factory.live, 0);
    s.factory.fail = true;
    assert!(matches!(storage::Server::open(&mut s, 0), Err(StorageError::RingSetup { .. })));
    assert_eq!(s.factory.watched, 0, "a failed open keeps no watch");
}

/// Finding 18: a client that ends without closing its rings (a VMM's panic
/// path runs no destructors) gives them back: storaged closes them when it
/// hears of the end, or at the latest when an open finds every ring taken.
#[test]
fn rings_of_a_client_that_ended_are_reclaimed() {
    let mut s = server();
    s.factory.caller = Some(7);
    for _ in 0..MAX_RINGS {
        storage::Server::open(&mut s, 0).unwrap();
        libipc::reply_caps::discard();
    }
    s.factory.caller = Some(8);
    assert_eq!(storage::Server::open(&mut s, 0), Err(StorageError::TooManyRings { limit: MAX_RINGS as u32 }));
    // Client 7 dies; the kernel signals storaged's notification.
    s.factory.ended.push(7);
    s.notified(CLIENT_ENDED);
    assert_eq!(s.open_rings(), 0);
    assert_eq!((s.factory.live, s.factory.watched), (0, 0));
    // More opens than the machine-wide limit, all told, now succeed.
    let mut handles = vec![];
    for _ in 0..MAX_RINGS {
        handles.push(storage::Server::open(&mut s, 1).unwrap().handle);
        libipc::reply_caps::discard();
    }
    // Client 8 dies too, and nobody signals: a full open reclaims first.
    s.factory.ended.push(8);
    s.factory.caller = Some(9);
    storage::Server::open(&mut s, 0).unwrap();
    assert_eq!(s.open_rings(), 1);
    assert_eq!((s.factory.live, s.factory.watched), (1, 1));
    for h in handles {
        assert_eq!(storage::Server::kick(&mut s, h), Err(StorageError::NoSuchHandle { handle: h }));
    }
}

#[test]
fn open_without_a_client_to_watch_is_refused() {
    let mut s = server();
    s.factory.caller = None;
    assert!(matches!(storage::Server::open(&mut s, 0), Err(StorageError::NoClientWatch { .. })));
    assert_eq!(libipc::reply_caps::take().1, 0);
    assert_eq!((s.open_rings(), s.factory.live, s.factory.watched), (0, 0, 0));
}

#[test]
fn open_attaches_the_ring_frame_to_the_reply() {
    let mut s = server();
    libipc::reply_caps::discard();
    let opened = storage::Server::open(&mut s, 0).unwrap();
    let (slots, n) = libipc::reply_caps::take();
    assert_eq!(n, 1);
    assert_eq!(slots[0], 301);
    assert_eq!(opened.info.serial, "disk-zero");
    // A failing open attaches nothing.
    let _ = storage::Server::open(&mut s, 9);
    assert_eq!(libipc::reply_caps::take().1, 0);
}

#[test]
fn a_hostile_client_overrunning_the_ring_is_refused() {
    let storaged = Rc::new(RefCell::new(server()));
    let c = open(&storaged, 0);
    let (_, bell) = c.into_parts();
    let mut s = storaged.borrow_mut();
    let region = s.ring_memory(bell.handle).unwrap();
    region[48..52].copy_from_slice(&1000u32.to_le_bytes());
    let r = storage::Server::kick(&mut *s, bell.handle);
    assert_eq!(r, Err(StorageError::RingOverrun { pending: 1000, slots: 64 }));
}

#[test]
fn interfaces_over_the_in_process_transport() {
    let t = Loopback::new(server());
    let st = status::Client::new(&t).status().unwrap();
    assert_eq!(st.name, "storaged");
    let c = storage::Client::new(&t);
    assert_eq!(c.disks().unwrap().len(), 2);
    let opened = c.open(1).unwrap().unwrap();
    assert!(opened.info.read_only);
    // No capabilities in-process: the attached frame was dropped.
    assert_eq!(libipc::reply_caps::take().1, 0);
    assert_eq!(c.kick(opened.handle).unwrap(), Ok(0));
    assert_eq!(c.close(opened.handle).unwrap(), Ok(()));
    assert_eq!(c.close(opened.handle).unwrap(), Err(StorageError::NoSuchHandle { handle: opened.handle }));
    let mut s = t.into_inner();
    assert_eq!(s.dispatch(99, &[]), Err(libipc::RemoteError::WrongInterface));
    assert_eq!(s.dispatch(storage::ID, &[0xff, 0xff, 0xff]), Err(libipc::RemoteError::BadRequest));
}

/// Ring handles are small sequential numbers: any process holding the
/// storaged endpoint could guess another client's and kick or close its
/// ring. The endpoint's badge names the caller, and a ring answers only the
/// client that opened it; to the others it does not exist.
#[test]
fn a_client_cannot_kick_or_close_another_clients_ring() {
    let (unbadged, mut server_end) = libipc::in_process::channel(4);
    let vmm_a = unbadged.badged(1);
    let vmm_b = unbadged.badged(2);
    let t = std::thread::spawn(move || {
        let mut s = server();
        server_end.serve_until_closed(&mut s);
        s.open_rings()
    });
    let a = storage::Client::new(vmm_a);
    let b = storage::Client::new(vmm_b);
    let opened = a.open(0).unwrap().unwrap();
    let h = opened.handle;
    for thief in [&b, &storage::Client::new(unbadged)] {
        assert_eq!(thief.kick(h).unwrap(), Err(StorageError::NoSuchHandle { handle: h }));
        assert_eq!(thief.close(h).unwrap(), Err(StorageError::NoSuchHandle { handle: h }));
    }
    // The owner's ring is still open and answers it.
    assert_eq!(a.kick(h).unwrap(), Ok(0));
    let mine = b.open(0).unwrap().unwrap();
    assert_ne!(mine.handle, h);
    assert_eq!(a.close(mine.handle).unwrap(), Err(StorageError::NoSuchHandle { handle: mine.handle }));
    assert_eq!(b.close(mine.handle).unwrap(), Ok(()));
    assert_eq!(a.close(h).unwrap(), Ok(()));
    drop((a, b));
    assert_eq!(t.join().unwrap(), 0);
}

/// A RAM disk over a boot file serves through the same ring as any disk;
/// a hostile client's raw requests (sectors past the end, an overflowing
/// sector, a length past the data area, a write over the memory limit)
/// each get a failing status and storaged goes on.
#[test]
fn a_ram_disk_serves_the_ring_and_refuses_bad_requests() {
    use crate::ramdisk::{CHUNK_BYTES, ChunkAlloc, RamDisk};
    let src: Vec<u8> = (0..256 * SECTOR_BYTES).map(|i| (i * 31) as u8).collect();
    let alloc: ChunkAlloc<Vec<u8>> = alloc::boxed::Box::new(|n| Ok(vec![0; n]));
    let ram = RamDisk::new(src.clone(), "boot-disk.img", CHUNK_BYTES as u64, alloc).unwrap();
    let storaged = Rc::new(RefCell::new(Storaged::new(vec![Disk::new("ram 0", ram)], VecRings::default())));
    let mut c = open(&storaged, 0);
    assert_eq!(c.capacity_sectors(), 256);
    assert!(!c.read_only());
    let mut buf = vec![0; 100 * SECTOR_BYTES];
    c.read(10, &mut buf).unwrap();
    assert_eq!(buf, src[10 * SECTOR_BYTES..110 * SECTOR_BYTES]);
    c.write(20, &vec![7; 4 * SECTOR_BYTES]).unwrap();
    c.read(10, &mut buf).unwrap();
    assert_eq!(&buf[10 * SECTOR_BYTES..14 * SECTOR_BYTES], &[7; 4 * SECTOR_BYTES][..]);
    assert_eq!(&buf[..10 * SECTOR_BYTES], &src[10 * SECTOR_BYTES..20 * SECTOR_BYTES]);
    // Past the end, through the client.
    let one = vec![0; SECTOR_BYTES];
    assert_eq!(c.write(256, &one), Err(BlkError::Status { op: Op::Write, sector: 256, status: Status::OutOfRange }));
    // Over the memory limit (one chunk: 16 blocks, 1 used): 64 KiB of new
    // blocks at sector 128 need 16 more.
    let e = c.write(128, &vec![1; 128 * SECTOR_BYTES]).unwrap_err();
    assert!(matches!(e, BlkError::Status { op: Op::Write, status: Status::IoError, .. }), "{e:?}");
    // Raw hostile slots: a huge sector, a huge length.
    let (_, bell) = c.into_parts();
    let mut s = storaged.borrow_mut();
    let region = s.ring_memory(bell.handle).unwrap();
    let prod = u32::from_le_bytes(region[48..52].try_into().unwrap());
    let post = |region: &mut Vec<u8>, k: u32, op: u8, len: u32, sector: u64| {
        let at = 64 + ((prod + k) % 64) as usize * 32;
        region[at] = op;
        region[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
        region[at + 8..at + 12].copy_from_slice(&0u32.to_le_bytes());
        region[at + 16..at + 24].copy_from_slice(&sector.to_le_bytes());
    };
    let (read, write) = (Op::Read as u8, Op::Write as u8);
    post(region, 0, read, 512, u64::MAX);
    post(region, 1, write, 512, u64::MAX / 512);
    post(region, 2, read, u32::MAX, 0);
    post(region, 3, write, 0x7fff_fe00, 0);
    region[48..52].copy_from_slice(&(prod + 4).to_le_bytes());
    assert_eq!(storage::Server::kick(&mut *s, bell.handle), Ok(4));
    let region = s.ring_memory(bell.handle).unwrap();
    let statuses: Vec<u8> = (0..4).map(|k| region[64 + ((prod + k) % 64) as usize * 32 + 1]).collect();
    assert_eq!(
        statuses,
        vec![Status::OutOfRange as u8, Status::OutOfRange as u8, Status::BadBuffer as u8, Status::BadBuffer as u8]
    );
    let ram = s.device(0).unwrap();
    assert_eq!(ram.written_blocks(), 1, "the refused requests wrote nothing");
}
