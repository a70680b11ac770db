//! The VM's disks: each a virtio-blk device whose backend is a block ring
//! to storaged (`libipc::blkring`), the threads' part in carrying their
//! requests out, and the entropy source of the virtio-rng.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;

use abi::{PAGE_SIZE, Rights};
use alcove_rt::start::SLOT_SELF;
use alcove_rt::SharedMemory;
use libipc::blkring::{RingClient, StorageDoorbell};
use libipc::cap::{Cap, Endpoint};
use libipc::interfaces::storage;
use libipc::kernel::{CapTransport, KernelTransport};
use libipc::sys;
use vmm_server::pci::PciSlot;
use vmm_server::virtio::block::{BackendError, Block, BlockBackend, Disk, ID_BYTES};
use vmm_server::virtio::pci::VirtioPci;
use vmm_server::virtio::rng::EntropySource;
use vmm_server::vm::memory::GuestRam;
use vmm_server::vm::port_counts::AddrCounts;

use super::{Resources, Shared, VmSpec};

/// Where disk rings are mapped (one slot of 1 MiB each).
const RING_VA: u64 = 0x22_0000_0000;
const RING_STRIDE: u64 = 0x10_0000;

/// A VM disk served by storaged through a block ring: the guest's
/// virtio-blk requests become ring requests, and each batch one `kick`
/// IPC, from whichever thread carries the disk's requests out (one at a
/// time: `Disk::execute`; each thread has an IPC buffer of its own) and
/// never under the platform lock.
pub(super) struct RingBackend {
    ring: RingClient<SharedMemory, StorageDoorbell<KernelTransport>>,
    id: [u8; ID_BYTES],
    handle: u32,
    /// The ring's reads (in) and writes (out) by size in bytes, with the
    /// TSC ticks each took, logged when the VM ends.
    sizes: AddrCounts,
    /// Reads that began where the one before ended.
    sequential: u64,
    next_sector: u64,
    index: usize,
}

impl RingBackend {
    /// Counts one transfer of `len` bytes at `sector` begun at TSC `start`.
    fn count(&mut self, write: bool, sector: u64, len: usize, start: u64) {
        if !write && sector == self.next_sector {
            self.sequential += 1;
        }
        self.next_sector = sector.saturating_add((len / 512) as u64);
        self.sizes.add_timed(len as u64, write, 1, alcove_rt::rdtsc().wrapping_sub(start));
    }
}

impl Drop for RingBackend {
    fn drop(&mut self) {
        let per_ms = sys::tsc_khz().unwrap_or(1_000_000).max(1);
        log::info!(
            "disks[{}]: ring transfers by size (bytes): {}; {} ms in all; {} reads sequential",
            self.index,
            self.sizes.summary_timed(6, per_ms),
            self.sizes.total_time() / per_ms,
            self.sequential
        );
        // The VM is over (the main thread drops the devices): give the ring
        // back to storaged.
        let _ = self.ring.doorbell().client().close(self.handle);
    }
}

impl BlockBackend for RingBackend {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let start = alcove_rt::rdtsc();
        let r = self.ring.read(sector, buf).map_err(|_| BackendError::Io);
        self.count(false, sector, buf.len(), start);
        r
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        let start = alcove_rt::rdtsc();
        let r = self.ring.write(sector, data).map_err(|_| BackendError::Io);
        self.count(true, sector, data.len(), start);
        r
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        self.ring.flush().map_err(|_| BackendError::Io)
    }
    fn capacity_sectors(&self) -> u64 {
        self.ring.capacity_sectors()
    }
    fn id(&self) -> [u8; ID_BYTES] {
        self.id
    }
    fn read_only(&self) -> bool {
        self.ring.read_only()
    }
}

/// A VM disk on the PCI bus: where its device sits, and its request side.
pub(super) struct VmDisk {
    pub(super) slot: PciSlot,
    pub(super) requests: Arc<Disk<RingBackend>>,
}

/// Carries out the disk requests the guest's notifications queued, then
/// completes them (issue 10, finding 17): the data moves and storaged's
/// doorbell rings with the platform lock released, so the other vCPUs'
/// exits and the timer go on meanwhile; only the completion (status
/// bytes, used ring, interrupt) takes the lock. Each thread calls it after
/// an exit or a timer pass; one that finds a disk's ring being driven by
/// another thread leaves its requests to that thread.
pub(super) fn run_disks(sh: &Shared) {
    for disk in &sh.disks {
        let mut mem = GuestRam::physical(&sh.ram);
        // Requests held back by the bound on those in flight (or by a
        // pass's bound) are taken as completions make room, a few rounds
        // at most per call: the rest waits for the next exit or the
        // timer's pass, as does what is past one execute's budget.
        for _ in 0..DISK_ROUNDS {
            if !disk.requests.execute(&mut mem).to_complete {
                break;
            }
            let now = sh.now();
            let mut p = sh.platform.lock();
            let Some(dev) = p.pci().device_mut::<VirtioPci<Block<RingBackend>>>(disk.slot) else { break };
            dev.complete(&mut mem);
            let more = dev.has_deferred() && dev.run_deferred(&mut mem);
            // Passes the completion's interrupt on.
            p.tick(now);
            drop(p);
            if !more {
                break;
            }
        }
    }
}

/// Rounds of [`run_disks`] per disk and call.
const DISK_ROUNDS: usize = 4;

/// The guest's entropy: the host CPU's RDRAND, 8 bytes at a time.
pub(super) struct CpuRng;

impl EntropySource for CpuRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            // The device exists only when RDRAND works; should it fail
            // later, wait a little and try again rather than hand out
            // predictable bytes.
            let v = loop {
                match alcove_rt::rdrand_u64() {
                    Some(v) => break v,
                    None => {
                        let _ = sys::yield_now();
                    }
                }
            };
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Opens storaged's disk `index` for the VM's `disks[index]`.
pub(super) fn open_disk(res: &mut Resources, spec: &VmSpec, index: usize) -> Result<RingBackend, String> {
    let what = |e: &dyn core::fmt::Display| format!("vmadm: property \"disks[{index}]\": {e}");
    let ep = spec.storaged.ok_or_else(|| what(&"no storaged endpoint was granted to this VM (see init's log)"))?;
    let slot = res.next;
    // storaged watches this process through a copy of its capability (no
    // rights) and closes the ring should the VMM end without closing it.
    let token = slot + 1;
    sys::cap_copy(SLOT_SELF, token, Rights::NONE, 0).map_err(|e| what(&format!("copy of the process capability: {e}")))?;
    let transport = CapTransport::new(Cap::<Endpoint>::from_slot(ep), &[slot]).sending(&[token]);
    let opened = storage::Client::new(&transport).open(index as u32);
    let _ = sys::cap_delete(token);
    let opened = opened.map_err(|e| what(&e))?.map_err(|e| what(&e))?;
    // On pool volumes the grant lists exactly the VM's volumes in order:
    // disk i must be the volume `disks[i]` names.
    let expected = spec.config.disks.get(index).and_then(|d| d.volume());
    if let Some(v) = expected.filter(|v| *v != opened.info.name) {
        let _ = storage::Client::new(KernelTransport::new(Cap::<Endpoint>::from_slot(ep))).close(opened.handle);
        return Err(what(&format!("storaged's disk {index} is {:?}, not the volume {v}", opened.info.name)));
    }
    if transport.received() != 1 {
        return Err(what(&"storaged sent no ring"));
    }
    res.next += 1;
    res.slots.push(slot);
    let pages = u64::from(opened.ring_pages);
    if pages * PAGE_SIZE > RING_STRIDE {
        return Err(what(&format!("ring of {pages} pages is too large")));
    }
    let va = RING_VA + index as u64 * RING_STRIDE;
    let region = SharedMemory::map_frame(slot, va, pages).map_err(|e| what(&format!("map the ring: {e}")))?;
    let bell = StorageDoorbell::new(KernelTransport::new(Cap::from_slot(ep)), opened.handle);
    let ring = RingClient::new(region, bell).map_err(|e| what(&e))?;
    let mut id = [0u8; ID_BYTES];
    let serial = opened.info.serial.as_bytes();
    let n = serial.len().min(ID_BYTES);
    id[..n].copy_from_slice(&serial[..n]);
    log::info!("disks[{index}]: storaged disk {} ({} sectors)", opened.info.name, ring.capacity_sectors());
    Ok(RingBackend {
        ring,
        id,
        handle: opened.handle,
        sizes: AddrCounts::named("sizes"),
        sequential: 0,
        next_sector: u64::MAX,
        index,
    })
}

