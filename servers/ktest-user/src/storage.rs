//! The `storage` suite (manifest `storage.toml`, selected by the manifest
//! argument `storage`): a VMM's view of storaged. It opens disk 0 of the
//! machine (a virtio-blk drive QEMU gets from the test case) through the
//! `storage` interface, receives the ring's frame in the reply, maps it and
//! moves data through it with `libipc::blkring::RingClient`, the client
//! vmm-server uses. First, a client that dies holding every ring
//! (ktest-victim with `storage-client`) must not keep them. Then the pool
//! storaged created on the blank second disk (`storage.toml`'s arguments;
//! this process is its admin there): a grant's capability reaches exactly
//! its volume, and a scrub runs in the background while that volume moves
//! data. Last, the console server a VMM sends its guest's output to
//! limits a flooding client.

use abi::{CapSlot, ObjectType, PAGE_SIZE, Rights};
use alcove_rt::start::{SLOT_CONSOLE, SLOT_SELF};
use alcove_rt::{StartInfo, println};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use kcore::testproto::PREFIX;
use libipc::blkring::{BlkError, Op, RingClient, SECTOR_BYTES, Status, StorageDoorbell};
use libipc::cap::{Cap, Endpoint};
use libipc::interfaces::{StorageError, storage};
use libipc::kernel::{CapTransport, KernelTransport};
use alcove_rt::SharedMemory;
use libipc::sys;

/// What the test case put in sector 0 of the image.
const SIGNATURE: &[u8] = b"ALCOVE-STORAGE-TEST-DISK";
/// The sector the test writes.
const TEST_SECTOR: u64 = 5;

type Ring = RingClient<SharedMemory, StorageDoorbell<KernelTransport>>;

struct Env {
    storaged: Cap<Endpoint>,
    console: Option<CapSlot>,
    victim: Option<CapSlot>,
    next_slot: CapSlot,
    next_va: u64,
}

impl Env {
    /// A copy of this process's capability (no rights) in a fresh slot: what
    /// `open` hands storaged to watch.
    fn token(&mut self) -> Result<CapSlot, String> {
        let token = self.next_slot;
        self.next_slot += 1;
        sys::cap_copy(SLOT_SELF, token, Rights::NONE, 0).map_err(|e| format!("copy of the process capability: {e}"))?;
        Ok(token)
    }

    /// Opens disk `index`: the ring's frame arrives in a fresh slot and is
    /// mapped; returns the client and the frame's slot and address.
    fn open(&mut self, index: u32) -> Result<(Ring, CapSlot, SharedMemory), String> {
        self.open_via(self.storaged, index)
    }

    /// As [`Env::open`], through endpoint capability `ep` (a grant's).
    fn open_via(&mut self, ep: Cap<Endpoint>, index: u32) -> Result<(Ring, CapSlot, SharedMemory), String> {
        let token = self.token()?;
        let slot = self.next_slot;
        self.next_slot += 1;
        let t = CapTransport::new(ep, &[slot]).sending(&[token]);
        let opened = storage::Client::new(&t).open(index);
        let _ = sys::cap_delete(token);
        let opened = opened.map_err(|e| format!("open: {e}"))?.map_err(|e| format!("{e}"))?;
        if t.received() != 1 {
            return Err(format!("open replied with {} capabilities, expected the ring's frame", t.received()));
        }
        let id = sys::cap_identify(slot).map_err(|e| format!("identify the ring: {e}"))?;
        if id.object_type != ObjectType::Frame {
            return Err(format!("the ring capability is a {:?}", id.object_type));
        }
        let pages = u64::from(opened.ring_pages);
        let info = sys::frame_info(slot).map_err(|e| format!("ring frame info: {e}"))?;
        if info.pages != pages {
            return Err(format!("ring frame of {} pages, open said {pages}", info.pages));
        }
        let va = self.next_va;
        self.next_va += (pages + 1) * PAGE_SIZE;
        let region = SharedMemory::map_frame(slot, va, pages).map_err(|e| format!("map the ring: {e}"))?;
        let bell = StorageDoorbell::new(KernelTransport::new(ep), opened.handle);
        let ring = RingClient::new(region.clone(), bell).map_err(|e| format!("ring header: {e}"))?;
        if ring.capacity_sectors() != opened.info.capacity_sectors {
            return Err(format!("ring says {} sectors, open said {}", ring.capacity_sectors(), opened.info.capacity_sectors));
        }
        Ok((ring, slot, region))
    }

    fn close(&mut self, ring: Ring, slot: CapSlot, region: SharedMemory) -> Result<(), String> {
        let handle = ring.doorbell().handle();
        let (client_region, bell) = ring.into_parts();
        bell.client().close(handle).map_err(|e| format!("close: {e}"))?.map_err(|e| format!("close: {e}"))?;
        // The last handles on the mapping go: it is unmapped.
        drop((client_region, region));
        sys::cap_delete(slot).map_err(|e| format!("delete the ring frame: {e}"))
    }
}

type Test = fn(&mut Env) -> Result<(), String>;

pub fn main(info: StartInfo) -> u64 {
    let tests: Vec<(&str, Test)> = vec![
        // First: the victim holds every ring from its start until these tests.
        ("ring_handles_answer_only_their_opener", ring_handles_answer_only_their_opener),
        ("block_rings_leak_when_a_vmm_dies", rings_of_a_dead_client_are_reclaimed),
        ("storaged_lists_the_disk", lists_the_disk),
        ("read_write_flush_read_back", read_write_flush_read_back),
        ("bad_requests_are_failed", bad_requests_are_failed),
        ("plain_callers_receive_no_capabilities", plain_callers_receive_no_capabilities),
        ("a_pool_grant_reaches_exactly_its_volume", a_pool_grant_reaches_exactly_its_volume),
        ("a_second_grant_cannot_reach_another_vms_volume_or_ring", a_second_grant_cannot_reach_another_vms_volume_or_ring),
        ("a_scrub_runs_while_a_volume_serves", a_scrub_runs_while_a_volume_serves),
        // The console server, which VMMs send their guests' output to.
        ("console_limits_a_flooding_client", console_limits_a_flooding_client),
    ];
    println!("{PREFIX} suite storage {}", tests.len());
    let Some(slot) = info.calls("storaged") else {
        println!("{PREFIX} run {}", tests[0].0);
        println!("{PREFIX} fail {} no storaged endpoint granted", tests[0].0);
        println!("{PREFIX} end 0 1");
        let _ = sys::machine_exit(SLOT_CONSOLE, 1);
        return 1;
    };
    let mut env = Env { storaged: Cap::from_slot(slot), console: info.calls("console"), victim: info.calls("victim"), next_slot: 200, next_va: 0x2000_0000 };
    crate::tests::run_suite(&mut env, tests)
}

/// Ring handles are small numbers any client can guess: ktest-victim holds
/// every ring (handles from 1), and this process, which holds the storaged
/// endpoint too (badged with another identity), tries to kick and close
/// each handle it might have. storaged answers that none is open, and the
/// victim still holds them all (an open is still refused).
fn ring_handles_answer_only_their_opener(env: &mut Env) -> Result<(), String> {
    use libipc::interfaces::status;
    let victim = env.victim.ok_or_else(|| String::from("no victim endpoint (storage.toml)"))?;
    // It answers once it holds its rings.
    status::Client::new(KernelTransport::new(Cap::from_slot(victim))).status().map_err(|e| format!("victim status: {e}"))?;
    let c = storage::Client::new(KernelTransport::new(env.storaged));
    for h in 1..=64u32 {
        let k = c.kick(h).map_err(|e| format!("kick {h}: {e}"))?;
        let x = c.close(h).map_err(|e| format!("close {h}: {e}"))?;
        if k != Err(StorageError::NoSuchHandle { handle: h }) || x != Err(StorageError::NoSuchHandle { handle: h }) {
            return Err(format!("another client's ring {h}: kick gave {k:?}, close gave {x:?}"));
        }
    }
    let token = env.token()?;
    let probe = CapTransport::new(env.storaged, &[]).sending(&[token]);
    let r = storage::Client::new(&probe).open(0).map_err(|e| format!("open: {e}"));
    let _ = sys::cap_delete(token);
    match r? {
        Err(StorageError::TooManyRings { .. }) => Ok(()),
        other => Err(format!("after the kicks and closes of others' handles, open gave {other:?}, expected TooManyRings")),
    }
}

/// Finding 18 of the security issue: a client (ktest-victim) opened rings
/// until storaged refused and panics holding them (the panic path runs no
/// destructors, as a VMM's would not); storaged takes them back, so more
/// rings than the machine-wide limit open and work afterwards.
fn rings_of_a_dead_client_are_reclaimed(env: &mut Env) -> Result<(), String> {
    use libipc::interfaces::{fault_injection, status};
    let victim = env.victim.ok_or_else(|| String::from("no victim endpoint (storage.toml)"))?;
    let t = KernelTransport::new(Cap::from_slot(victim));
    // It answers once it holds its rings.
    status::Client::new(t).status().map_err(|e| format!("victim status: {e}"))?;
    let token = env.token()?;
    let probe = CapTransport::new(env.storaged, &[]).sending(&[token]);
    let r = storage::Client::new(&probe).open(0).map_err(|e| format!("open: {e}"));
    let _ = sys::cap_delete(token);
    let limit = match r? {
        Err(StorageError::TooManyRings { limit }) => limit,
        other => return Err(format!("with the victim holding rings, open gave {other:?}, expected TooManyRings")),
    };
    let r = fault_injection::Client::new(t).panic_now();
    if r != Err(libipc::IpcError::Kernel(abi::Error::Gone)) {
        return Err(format!("the victim's panic gave {r:?}"));
    }
    // As many rings as the limit, after the victim's: all open and work.
    let mut open = Vec::new();
    for i in 0..limit {
        let (mut ring, slot, region) = env.open(0).map_err(|e| format!("ring {} of {limit} after the victim died: {e}", i + 1))?;
        let mut sector0 = vec![0u8; SECTOR_BYTES];
        ring.read(0, &mut sector0).map_err(|e| format!("read through ring {}: {e}", i + 1))?;
        if !sector0.starts_with(SIGNATURE) {
            return Err(String::from("a reclaimed ring reads other data than the disk's"));
        }
        open.push((ring, slot, region));
    }
    println!("storage: {limit} rings open again after their holder died");
    for (ring, slot, region) in open {
        env.close(ring, slot, region)?;
    }
    Ok(())
}

fn lists_the_disk(env: &mut Env) -> Result<(), String> {
    let disks = storage::Client::new(KernelTransport::new(env.storaged)).disks().map_err(|e| format!("disks: {e}"))?;
    let d = disks.first().ok_or_else(|| String::from("storaged serves no disk"))?;
    println!("storage: disk 0: {} serial {:?}, {} sectors{}", d.name, d.serial, d.capacity_sectors, if d.read_only { ", read-only" } else { "" });
    if d.capacity_sectors < 2 * TEST_SECTOR || d.read_only {
        return Err(format!("disk 0 is {d:?}, expected a writable test image"));
    }
    if d.serial != "alcove-d0" {
        return Err(format!("disk 0's serial is {:?}, the case sets alcove-d0", d.serial));
    }
    Ok(())
}

fn read_write_flush_read_back(env: &mut Env) -> Result<(), String> {
    let (mut ring, slot, region) = env.open(0)?;
    let mut sector0 = vec![0u8; SECTOR_BYTES];
    ring.read(0, &mut sector0).map_err(|e| format!("read sector 0: {e}"))?;
    if !sector0.starts_with(SIGNATURE) {
        return Err(format!("sector 0 starts {:?}, not the image's signature", String::from_utf8_lossy(&sector0[..32])));
    }
    let id = ring.get_id().map_err(|e| format!("get id: {e}"))?;
    if !id.starts_with(b"alcove-d0") {
        return Err(format!("get id gave {id:?}"));
    }
    // A pattern that depends on when it ran, so a stale image cannot pass.
    let stamp = alcove_rt::clock_ns();
    let pattern: Vec<u8> = (0..3 * SECTOR_BYTES).map(|i| (i as u64).wrapping_mul(131).wrapping_add(stamp) as u8).collect();
    ring.write(TEST_SECTOR, &pattern).map_err(|e| format!("write: {e}"))?;
    ring.flush().map_err(|e| format!("flush: {e}"))?;
    let mut back = vec![0u8; pattern.len()];
    ring.read(TEST_SECTOR, &mut back).map_err(|e| format!("read back: {e}"))?;
    if back != pattern {
        return Err(String::from("read back differs from what was written"));
    }
    // A transfer larger than the ring's data area is split by the client.
    let big = ring.geometry().data_bytes + 2 * SECTOR_BYTES;
    let mut whole = vec![0u8; big];
    ring.read(0, &mut whole).map_err(|e| format!("large read: {e}"))?;
    if !whole.starts_with(SIGNATURE) || whole[TEST_SECTOR as usize * SECTOR_BYTES..][..pattern.len()] != pattern[..] {
        return Err(String::from("large read differs from sector-wise reads"));
    }
    env.close(ring, slot, region)?;
    // Through a new ring: the data came from the disk, not from a ring.
    let (mut ring, slot, region) = env.open(0)?;
    let mut again = vec![0u8; pattern.len()];
    ring.read(TEST_SECTOR, &mut again).map_err(|e| format!("read through a new ring: {e}"))?;
    env.close(ring, slot, region)?;
    if again != pattern {
        return Err(String::from("a new ring reads other data than was written"));
    }
    Ok(())
}

fn bad_requests_are_failed(env: &mut Env) -> Result<(), String> {
    let (mut ring, slot, region) = env.open(0)?;
    let cap = ring.capacity_sectors();
    let mut buf = vec![0u8; 2 * SECTOR_BYTES];
    let r = ring.read(cap - 1, &mut buf);
    if r != Err(BlkError::Status { op: Op::Read, sector: cap - 1, status: Status::OutOfRange }) {
        return Err(format!("a read past the end gave {r:?}"));
    }
    let r = ring.write(u64::MAX, &buf);
    if r != Err(BlkError::Status { op: Op::Write, sector: u64::MAX, status: Status::OutOfRange }) {
        return Err(format!("a write at sector 2^64-1 gave {r:?}"));
    }
    // Garbage straight into the shared region (a hostile VMM): storaged
    // refuses the kick and keeps serving.
    region.write(48, &0x7fff_0000u32.to_le_bytes());
    let handle = ring.doorbell().handle();
    let r = ring.doorbell().client().kick(handle).map_err(|e| format!("kick: {e}"))?;
    if !matches!(r, Err(StorageError::RingOverrun { .. })) {
        return Err(format!("an overrun ring gave {r:?}"));
    }
    let r = ring.doorbell().client().kick(handle + 1000).map_err(|e| format!("kick: {e}"))?;
    if r != Err(StorageError::NoSuchHandle { handle: handle + 1000 }) {
        return Err(format!("a kick of an unknown handle gave {r:?}"));
    }
    env.close(ring, slot, region)?;
    let r = storage::Client::new(KernelTransport::new(env.storaged)).open(99).map_err(|e| format!("open: {e}"))?;
    if !matches!(r, Err(StorageError::NoSuchDisk { index: 99, .. })) {
        return Err(format!("open of disk 99 gave {r:?}"));
    }
    // An open that brings no process capability to watch is refused.
    let r = storage::Client::new(KernelTransport::new(env.storaged)).open(0).map_err(|e| format!("open: {e}"))?;
    if !matches!(r, Err(StorageError::NoClientWatch { .. })) {
        return Err(format!("an open without a process capability gave {r:?}"));
    }
    // storaged still answers.
    let (mut ring, slot, region) = env.open(0)?;
    ring.read(0, &mut buf).map_err(|e| format!("read after the bad requests: {e}"))?;
    env.close(ring, slot, region)
}

/// The slots of this process's capability table that hold a frame.
fn frame_slots() -> Vec<CapSlot> {
    (0..abi::CSPACE_SLOTS).filter(|&s| sys::cap_identify(s).is_ok_and(|id| id.object_type == ObjectType::Frame)).collect()
}

/// A caller that names no receive slots gets none of the capabilities a
/// reply carries (the ring's frame stays storaged's): no slot of the whole
/// table holds a frame it did not hold before, not even a slot an earlier
/// call named for receiving.
fn plain_callers_receive_no_capabilities(env: &mut Env) -> Result<(), String> {
    let before = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    let token = env.token()?;
    let frames_before = frame_slots();
    let t = CapTransport::new(env.storaged, &[]).sending(&[token]);
    let opened = storage::Client::new(&t).open(0);
    let _ = sys::cap_delete(token);
    let opened = opened.map_err(|e| format!("open: {e}"))?.map_err(|e| format!("{e}"))?;
    let frames_after = frame_slots();
    if let Some(slot) = frames_after.iter().find(|s| !frames_before.contains(s)) {
        return Err(format!("slot {slot} holds a frame after a plain open"));
    }
    storage::Client::new(KernelTransport::new(env.storaged)).close(opened.handle).map_err(|e| format!("close: {e}"))?.map_err(|e| format!("{e}"))?;
    let after = sys::budget_info().map_err(|e| format!("{e}"))?.used_bytes;
    if after != before {
        return Err(format!("budget used {before} before, {after} after"));
    }
    Ok(())
}

/// Finding 16 of the security issue, the console's side: a client that
/// `put`s line after line (as a VMM whose guest floods its UART does) is
/// refused once its allowance is spent and told when to come back; after
/// that wait, on the machine's clock, its next line goes out.
fn console_limits_a_flooding_client(env: &mut Env) -> Result<(), String> {
    use libipc::interfaces::console;
    let ep = env.console.ok_or_else(|| String::from("no console endpoint (storage.toml)"))?;
    let c = console::Client::new(KernelTransport::new(Cap::from_slot(ep)));
    let mut line = String::from("console-flood ");
    line.push_str(&"x".repeat(2000));
    line.push('\n');
    let mut put_ok = 0u32;
    let mut refusal = None;
    // The allowance is 32 KiB at once: a console without one never refuses.
    for _ in 0..64 {
        let put = c.put(line.clone().into_bytes()).map_err(|e| format!("put: {e}"))?;
        if put.taken as usize == line.len() {
            put_ok += 1;
        } else {
            refusal = Some(put);
            break;
        }
    }
    let refusal = refusal.ok_or_else(|| format!("the console took {put_ok} lines of {} bytes, never refusing", line.len()))?;
    if refusal.taken != 0 || refusal.retry_ns == 0 || refusal.retry_ns > 1_000_000_000 {
        return Err(format!("a refused line gave {refusal:?}, expected nothing taken and a wait under 1 s"));
    }
    println!("console: took {put_ok} lines of {} bytes, then asked to wait {} us", line.len(), refusal.retry_ns / 1000);
    let n = env.next_slot;
    env.next_slot += 1;
    sys::create(ObjectType::Notification, n, 0).map_err(|e| format!("notification: {e}"))?;
    let _ = sys::wait(n, refusal.retry_ns);
    let _ = sys::cap_delete(n);
    let put = c.put(line.clone().into_bytes()).map_err(|e| format!("put: {e}"))?;
    if put.taken as usize != line.len() {
        return Err(format!("after the wait the console said {put:?}, expected the whole line taken"));
    }
    Ok(())
}

/// The pool storaged made at boot on the blank disk `alcove-d1`: this
/// process (the manifest's `pool-admin`) makes a volume and grants it; the
/// capability that comes with the reply is storaged's endpoint with the
/// grant's badge. Through it the volume is disk 0 and moves data; it
/// reaches no machine disk and not the pool interface; this process's own
/// endpoint sees the machine disk and not the volume; after `revoke` the
/// capability opens nothing.
fn a_pool_grant_reaches_exactly_its_volume(env: &mut Env) -> Result<(), String> {
    use libipc::interfaces::{PoolError, pool};
    let admin = pool::Client::new(KernelTransport::new(env.storaged));
    let st = admin.status().map_err(|e| format!("status: {e}"))?.map_err(|e| format!("status: {e}"))?;
    if st.name != "zones" || st.state != "ONLINE" || st.children.len() != 1 {
        return Err(format!("pool status {st:?}, expected zones ONLINE on one disk"));
    }
    println!("storage: pool {} {} on {}, {} disk(s) reported", st.name, st.state, st.children[0].disk, st.reports_total);
    let vol = String::from("zones/ktest-disk0");
    admin.create(vol.clone(), 1 << 20, 0).map_err(|e| format!("create: {e}"))?.map_err(|e| format!("create: {e}"))?;
    let slot = env.next_slot;
    env.next_slot += 1;
    let t = CapTransport::new(env.storaged, &[slot]);
    let granted = pool::Client::new(&t).grant(vec![vol.clone()]).map_err(|e| format!("grant: {e}"))?.map_err(|e| format!("grant: {e}"))?;
    if t.received() != 1 {
        return Err(format!("grant replied with {} capabilities, expected one endpoint", t.received()));
    }
    let id = sys::cap_identify(slot).map_err(|e| format!("identify the grant: {e}"))?;
    if id.object_type != ObjectType::Endpoint || id.badge != granted.badge {
        return Err(format!("the grant's capability is {id:?}, expected an endpoint with badge {:#x}", granted.badge));
    }
    let vmm = Cap::<Endpoint>::from_slot(slot);
    let disks = storage::Client::new(KernelTransport::new(vmm)).disks().map_err(|e| format!("disks: {e}"))?;
    if disks.len() != 1 || disks[0].name != vol {
        return Err(format!("the grant lists {disks:?}, expected only {vol}"));
    }
    let (mut ring, rslot, region) = env.open_via(vmm, 0)?;
    let stamp = alcove_rt::clock_ns();
    let pattern: Vec<u8> = (0..4 * SECTOR_BYTES).map(|i| (i as u64).wrapping_mul(29).wrapping_add(stamp) as u8 | 1).collect();
    ring.write(8, &pattern).map_err(|e| format!("volume write: {e}"))?;
    ring.flush().map_err(|e| format!("volume flush: {e}"))?;
    let mut back = vec![0u8; pattern.len()];
    ring.read(8, &mut back).map_err(|e| format!("volume read: {e}"))?;
    if back != pattern {
        return Err(String::from("the volume read back other data"));
    }
    // The grant reaches no machine disk and not the pool interface.
    let r = storage::Client::new(KernelTransport::new(vmm)).open(1).map_err(|e| format!("open: {e}"))?;
    if !matches!(r, Err(StorageError::NoSuchDisk { index: 1, disks: 1 })) {
        return Err(format!("the grant's open(1) gave {r:?}"));
    }
    let r = pool::Client::new(KernelTransport::new(vmm)).list(String::new()).map_err(|e| format!("list: {e}"))?;
    if r != Err(PoolError::NotPermitted) {
        return Err(format!("the grant's pool.list gave {r:?}, expected NotPermitted"));
    }
    // This process's own endpoint (another badge) cannot touch the ring,
    // and sees the machine disk, not the volume.
    let handle = ring.doorbell().handle();
    let mine = storage::Client::new(KernelTransport::new(env.storaged));
    let (k, c) = (mine.kick(handle).map_err(|e| format!("kick: {e}"))?, mine.close(handle).map_err(|e| format!("close: {e}"))?);
    if k != Err(StorageError::NoSuchHandle { handle }) || c != Err(StorageError::NoSuchHandle { handle }) {
        return Err(format!("another badge's kick gave {k:?}, close {c:?}"));
    }
    let whole = mine.disks().map_err(|e| format!("disks: {e}"))?;
    if whole.iter().any(|d| d.name == vol) || whole.first().is_none_or(|d| d.serial != "alcove-d0") {
        return Err(format!("this process's disks are {whole:?}"));
    }
    ring.read(8, &mut back).map_err(|e| format!("volume read after the refusals: {e}"))?;
    if back != pattern {
        return Err(String::from("the volume changed"));
    }
    env.close(ring, rslot, region)?;
    let closed = admin.revoke(granted.badge).map_err(|e| format!("revoke: {e}"))?.map_err(|e| format!("revoke: {e}"))?;
    // storaged revoked its copy, and with it ours (derived from it), or
    // the badge now names nothing: either way the grant reaches nothing.
    let r = storage::Client::new(KernelTransport::new(vmm)).disks();
    let _ = sys::cap_delete(slot);
    match r {
        Ok(listed) if !listed.is_empty() => return Err(format!("after revoke the grant lists {listed:?}")),
        Err(libipc::IpcError::Kernel(_)) | Ok(_) => {}
        Err(e) => return Err(format!("after revoke: disks gave {e}")),
    }
    if closed != 0 {
        return Err(format!("revoke closed {closed} rings; the one opened was closed already"));
    }
    admin.destroy(vol, false).map_err(|e| format!("destroy: {e}"))?.map_err(|e| format!("destroy: {e}"))
}

/// Two VMs' grants, as zone-server makes one per VMM: B's monitor tries
/// everything it can name against A's volume and ring (A's ring handle and
/// its neighbours, disk indices past its own, the pool interface, opening
/// with A's volume's index) between A's I/O, and every try is refused
/// while A's data stays A's and its ring goes on serving; B's own volume
/// is a different one (what B writes there never shows in A's); revoking
/// B leaves A's ring working.
fn a_second_grant_cannot_reach_another_vms_volume_or_ring(env: &mut Env) -> Result<(), String> {
    use libipc::interfaces::{PoolError, pool};
    let admin = pool::Client::new(KernelTransport::new(env.storaged));
    let (vol_a, vol_b) = (String::from("zones/ktest-vm-a-disk0"), String::from("zones/ktest-vm-b-disk0"));
    let mut grants = Vec::new();
    for vol in [&vol_a, &vol_b] {
        pool_ok("create", admin.create(vol.clone(), 1 << 20, 0))?;
        let slot = env.next_slot;
        env.next_slot += 1;
        let t = CapTransport::new(env.storaged, &[slot]);
        let granted = pool_ok("grant", pool::Client::new(&t).grant(vec![vol.clone()]))?;
        if t.received() != 1 {
            return Err(format!("grant of {vol} replied with {} capabilities", t.received()));
        }
        grants.push((Cap::<Endpoint>::from_slot(slot), slot, granted.badge));
    }
    let ((vmm_a, slot_a, _), (vmm_b, slot_b, badge_b)) = (grants[0], grants[1]);
    // A's VM writes and reads its volume.
    let (mut ring_a, rslot_a, region_a) = env.open_via(vmm_a, 0)?;
    let stamp = alcove_rt::clock_ns();
    let pattern: Vec<u8> = (0..2 * SECTOR_BYTES).map(|i| (i as u64).wrapping_mul(31).wrapping_add(stamp) as u8 | 1).collect();
    ring_a.write(16, &pattern).map_err(|e| format!("A's write: {e}"))?;
    ring_a.flush().map_err(|e| format!("A's flush: {e}"))?;
    let mut back = vec![0u8; pattern.len()];
    let mut a_reads_its_data = |ring: &mut Ring, when: &str| -> Result<(), String> {
        ring.read(16, &mut back).map_err(|e| format!("A's read {when}: {e}"))?;
        if back != pattern {
            return Err(format!("A's volume read back other data {when}"));
        }
        Ok(())
    };
    // B sees only its own volume, and index 0 is that one.
    let b = storage::Client::new(KernelTransport::new(vmm_b));
    let listed = b.disks().map_err(|e| format!("B's disks: {e}"))?;
    if listed.len() != 1 || listed[0].name != vol_b {
        return Err(format!("B's grant lists {listed:?}, expected only {vol_b}"));
    }
    for index in [1u32, 2, u32::MAX] {
        let r = b.open(index).map_err(|e| format!("B's open({index}): {e}"))?;
        if !matches!(r, Err(StorageError::NoSuchDisk { .. })) {
            return Err(format!("B's open({index}) gave {r:?}, expected NoSuchDisk"));
        }
    }
    a_reads_its_data(&mut ring_a, "after B's opens")?;
    // B guesses A's ring handle and its neighbours: kick and close.
    let handle = ring_a.doorbell().handle();
    for h in [handle, handle.wrapping_add(1), handle.wrapping_sub(1), 0, u32::MAX] {
        let k = b.kick(h).map_err(|e| format!("B's kick({h}): {e}"))?;
        let c = b.close(h).map_err(|e| format!("B's close({h}): {e}"))?;
        if k != Err(StorageError::NoSuchHandle { handle: h }) || c != Err(StorageError::NoSuchHandle { handle: h }) {
            return Err(format!("B's kick({h}) gave {k:?}, close({h}) {c:?}: expected NoSuchHandle"));
        }
        a_reads_its_data(&mut ring_a, &format!("after B's kick and close of handle {h}"))?;
    }
    // The pool interface is not B's: not to list, grant A's volume to
    // itself, revoke A's grant or destroy A's volume.
    let bp = pool::Client::new(KernelTransport::new(vmm_b));
    let tries = [
        ("list", bp.list(String::new()).map(|r| r.map(|_| ()))),
        ("grant A's volume", bp.grant(vec![vol_a.clone()]).map(|r| r.map(|_| ()))),
        ("destroy A's volume", bp.destroy(vol_a.clone(), false)),
        ("revoke A's grant", bp.revoke(grants[0].2).map(|r| r.map(|_| ()))),
    ];
    for (what, r) in tries {
        if r != Ok(Err(PoolError::NotPermitted)) {
            return Err(format!("B's pool {what} gave {r:?}, expected NotPermitted"));
        }
    }
    // B's own volume is another: its write there does not show in A's.
    let (mut ring_b, rslot_b, region_b) = env.open_via(vmm_b, 0)?;
    let other: Vec<u8> = pattern.iter().map(|b| !b).collect();
    ring_b.write(16, &other).map_err(|e| format!("B's write: {e}"))?;
    ring_b.flush().map_err(|e| format!("B's flush: {e}"))?;
    a_reads_its_data(&mut ring_a, "after B wrote its own volume")?;
    // A's own handle through B's endpoint, with B's ring open: refused
    // still (a handle is its opener's, not any grant's).
    if ring_b.doorbell().handle() != handle {
        let k = b.kick(handle).map_err(|e| format!("B's kick: {e}"))?;
        if k != Err(StorageError::NoSuchHandle { handle }) {
            return Err(format!("B's kick of A's handle with its own ring open gave {k:?}"));
        }
    }
    env.close(ring_b, rslot_b, region_b)?;
    // B's grant revoked: A's ring goes on.
    pool_ok("revoke B", admin.revoke(badge_b))?;
    let _ = sys::cap_delete(slot_b);
    ring_a.write(24, &pattern).map_err(|e| format!("A's write after B's revoke: {e}"))?;
    ring_a.flush().map_err(|e| format!("A's flush after B's revoke: {e}"))?;
    a_reads_its_data(&mut ring_a, "after B's grant was revoked")?;
    env.close(ring_a, rslot_a, region_a)?;
    let grants_a = grants[0].2;
    pool_ok("revoke A", admin.revoke(grants_a))?;
    let _ = sys::cap_delete(slot_a);
    for vol in [vol_a, vol_b] {
        pool_ok("destroy", admin.destroy(vol, false))?;
    }
    Ok(())
}

/// A pool call's answer, or what went wrong, named.
fn pool_ok<T>(what: &str, r: Result<Result<T, libipc::interfaces::PoolError>, libipc::IpcError>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))?.map_err(|e| format!("{what}: {e}"))
}

/// `zpool scrub` on Alcove: storaged walks the pool in steps between
/// requests. A volume granted as to a VMM is written, read and flushed
/// through its ring while the scrub runs: every request is answered while
/// `status` still says the scrub is in progress, its progress grows between
/// them (the scrub does not hold the ring up until it ends, nor the ring
/// the scrub), a second scrub is refused, and at the end the scrub found
/// no error and every write is there. Then a scrub is started and cancelled.
fn a_scrub_runs_while_a_volume_serves(env: &mut Env) -> Result<(), String> {
    use libipc::interfaces::{PoolError, pool};
    const CHUNK: usize = 32 * 1024;
    /// 10 MiB: the scrub takes 40 of storaged's 256 KiB steps or more.
    const CHUNKS: usize = 320;
    let admin = pool::Client::new(KernelTransport::new(env.storaged));
    let vol = String::from("zones/ktest-scrub-disk0");
    pool_ok("create", admin.create(vol.clone(), 16 << 20, 0))?;
    let slot = env.next_slot;
    env.next_slot += 1;
    let t = CapTransport::new(env.storaged, &[slot]);
    let granted = pool_ok("grant", pool::Client::new(&t).grant(vec![vol.clone()]))?;
    let vmm = Cap::<Endpoint>::from_slot(slot);
    let (mut ring, rslot, region) = env.open_via(vmm, 0)?;
    // Each chunk's data comes from its seed: the model is the seeds (this
    // process's heap holds a few chunks, not the volume).
    let data_of = |seed: u64| -> Vec<u8> {
        let mut x = seed | 1;
        (0..CHUNK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8 | 1
            })
            .collect()
    };
    let base = alcove_rt::clock_ns();
    let sector = |chunk: usize| (chunk * CHUNK / SECTOR_BYTES) as u64;
    let mut model: Vec<u64> = Vec::with_capacity(CHUNKS);
    for i in 0..CHUNKS {
        let seed = base.wrapping_add(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ring.write(sector(i), &data_of(seed)).map_err(|e| format!("volume write: {e}"))?;
        model.push(seed);
    }
    ring.flush().map_err(|e| format!("volume flush: {e}"))?;
    pool_ok("scrub_start", admin.scrub_start())?;
    let scan = |admin: &pool::Client<KernelTransport>| -> Result<libipc::interfaces::PoolScan, String> {
        pool_ok("status", admin.status())?.scan.ok_or_else(|| String::from("status tells no scan after scrub_start"))
    };
    let first = scan(&admin)?;
    if !first.running || first.total < (CHUNKS * CHUNK) as u64 {
        return Err(format!("status after scrub_start: {first:?}, expected a scrub in progress over the volume's data"));
    }
    match admin.scrub_start().map_err(|e| format!("scrub_start: {e}"))? {
        Err(PoolError::Busy { .. }) => {}
        r => return Err(format!("a second scrub_start gave {r:?}, expected Busy")),
    }
    let (mut rounds, mut grew, mut last) = (0usize, 0usize, first.bytes);
    let done = loop {
        // The VMM's I/O: a write, a read of another chunk, a flush.
        let w = (rounds * 7 + 3) % CHUNKS;
        let seed = model[w].wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(rounds as u64 + 1);
        ring.write(sector(w), &data_of(seed)).map_err(|e| format!("volume write during the scrub: {e}"))?;
        model[w] = seed;
        let r = (rounds * 5) % CHUNKS;
        let mut back = vec![0u8; CHUNK];
        ring.read(sector(r), &mut back).map_err(|e| format!("volume read during the scrub: {e}"))?;
        if back != data_of(model[r]) {
            return Err(format!("chunk {r} read back other data during the scrub"));
        }
        ring.flush().map_err(|e| format!("volume flush during the scrub: {e}"))?;
        let s = scan(&admin)?;
        if !s.running {
            break s;
        }
        if s.bytes < last || s.bytes > s.total {
            return Err(format!("scrub progress went from {last} to {s:?}"));
        }
        grew += usize::from(s.bytes > last);
        last = s.bytes;
        rounds += 1;
        if rounds > 10_000 {
            return Err(format!("the scrub never ended: {s:?}"));
        }
    };
    if rounds < 2 || grew < 2 {
        return Err(format!("{rounds} rounds of volume I/O while the scrub ran, it moved on in {grew}: not interleaved"));
    }
    if done.canceled || done.errors != 0 || done.repaired != 0 || done.bytes < (CHUNKS * CHUNK) as u64 {
        return Err(format!("the scrub ended with {done:?}"));
    }
    println!("storage: scrub of {} bytes beside {rounds} rounds of volume I/O; it moved on in {grew} of them", done.bytes);
    for (i, &seed) in model.iter().enumerate() {
        let mut back = vec![0u8; CHUNK];
        ring.read(sector(i), &mut back).map_err(|e| format!("volume read after the scrub: {e}"))?;
        if back != data_of(seed) {
            return Err(format!("chunk {i} lost a write made during the scrub"));
        }
    }
    // `zpool scrub -s`.
    pool_ok("scrub_start", admin.scrub_start())?;
    pool_ok("scrub_stop", admin.scrub_stop())?;
    let c = scan(&admin)?;
    if !c.canceled || c.running {
        return Err(format!("status after scrub_stop: {c:?}"));
    }
    match admin.scrub_stop().map_err(|e| format!("scrub_stop: {e}"))? {
        Err(PoolError::Invalid { .. }) => {}
        r => return Err(format!("scrub_stop with no scrub gave {r:?}, expected Invalid")),
    }
    env.close(ring, rslot, region)?;
    pool_ok("revoke", admin.revoke(granted.badge))?;
    let _ = sys::cap_delete(slot);
    pool_ok("destroy", admin.destroy(vol, false))
}
