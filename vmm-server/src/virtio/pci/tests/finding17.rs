//! Issue 10, finding 17: no lock the vCPUs contend for is held while a
//! disk request waits on its backend (on Alcove, an IPC call to storaged).
//!
//! The VMM's device lock is modelled by a `Mutex` around the [`PciBus`],
//! guest RAM by [`SharedRam`] (reachable without that lock, as the VMM's
//! `RamMap` is), and each "vCPU" is a thread that handles a notification
//! as the VMM's exit path does: the MMIO write under the lock, then
//! `Disk::execute` with it released, then `VirtioPci::complete` under it
//! again. No test here waits on time: the backend blocks until the test
//! releases it, and whether the lock is free is asked with `try_lock`.

extern crate std;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;

use super::*;
use crate::virtio::MemError;

/// Guest RAM that any thread reaches on its own, each access whole.
#[derive(Clone)]
struct SharedRam(Arc<Mutex<VecMemory>>);

impl SharedRam {
    fn new(mem: VecMemory) -> Self {
        Self(Arc::new(Mutex::new(mem)))
    }

    fn byte(&self, gpa: u64) -> u8 {
        let mut b = [0u8];
        self.0.lock().unwrap().read(gpa, &mut b).unwrap();
        b[0]
    }
}

impl GuestMemory for SharedRam {
    fn check_range(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        self.0.lock().unwrap().check_range(gpa, len)
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.0.lock().unwrap().read(gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.0.lock().unwrap().write(gpa, data)
    }
}

/// A disk whose first operation waits until the test releases it (a
/// storaged that takes its time), after saying it has started.
struct GatedDisk {
    disk: MemBackend,
    gate: Option<(Sender<()>, Receiver<()>)>,
}

impl GatedDisk {
    fn new() -> (Self, Receiver<()>, Sender<()>) {
        let (entered_tx, entered_rx) = channel();
        let (release_tx, release_rx) = channel();
        (Self { disk: disk(), gate: Some((entered_tx, release_rx)) }, entered_rx, release_tx)
    }

    fn wait(&mut self) {
        if let Some((entered, release)) = self.gate.take() {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
    }
}

impl BlockBackend for GatedDisk {
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.wait();
        self.disk.read(sector, buf)
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        self.wait();
        self.disk.write(sector, data)
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        self.wait();
        self.disk.flush()
    }
    fn capacity_sectors(&self) -> u64 {
        self.disk.capacity_sectors()
    }
    fn id(&self) -> [u8; ID_BYTES] {
        self.disk.id()
    }
}

/// The VMM's device lock around the bus.
type Platform = Arc<Mutex<PciBus>>;

/// One vCPU's notification of queue 0, handled as the VMM's exit path
/// does; returns the MSI messages it raised.
fn notify<B: BlockBackend + Send + 'static>(platform: &Platform, mut ram: SharedRam, slot: PciSlot, bar: u64) -> Vec<MsiMessage> {
    assert!(platform.lock().unwrap().mmio_write(bar + NOTIFY_OFFSET, 2, 0, &mut ram));
    let disk = platform.lock().unwrap().device::<VirtioPci<Block<B>>>(slot).unwrap().device().disk().clone();
    let mut p = if disk.execute(&mut ram).to_complete {
        let mut p = platform.lock().unwrap();
        p.device_mut::<VirtioPci<Block<B>>>(slot).unwrap().complete(&mut ram);
        p
    } else {
        platform.lock().unwrap()
    };
    p.take_msi()
}

/// Splits a guest into its bus behind the device lock and its RAM.
fn share(g: Guest) -> (Platform, SharedRam, PciSlot, u64) {
    let Guest { bus, mem, slot, bar, .. } = g;
    (Arc::new(Mutex::new(bus)), SharedRam::new(mem), slot, bar)
}

/// Puts a guest back together once every vCPU thread has ended.
fn unshare<B: BlockBackend + Send + 'static>(platform: Platform, ram: SharedRam, slot: PciSlot, bar: u64) -> Guest {
    let bus = Arc::try_unwrap(platform).ok().unwrap().into_inner().unwrap();
    let mem = Arc::try_unwrap(ram.0).ok().unwrap().into_inner().unwrap();
    let mut g = Guest { bus, mem, slot, bar, disk: None };
    g.attach_disk::<B>();
    g
}

#[test]
fn finding17_a_request_waiting_on_its_backend_holds_no_device_lock() {
    let (backend, entered, release) = GatedDisk::new();
    let mut g = Guest::with_disk(backend);
    let mut mock = g.linux_init(true, u64::MAX);
    g.post_read(&mut mock, 5);
    let (platform, ram, slot, bar) = share(g);
    // vCPU A notifies; its read waits in the backend.
    let a = thread::spawn({
        let (platform, ram) = (platform.clone(), ram.clone());
        move || notify::<GatedDisk>(&platform, ram, slot, bar)
    });
    entered.recv().unwrap();
    // vCPU B, meanwhile: an MMIO read of the same device's status.
    let b = platform.try_lock().ok().and_then(|mut p| p.mmio_read(bar + COMMON_DEVICE_STATUS, 1));
    release.send(()).unwrap();
    let msi = a.join().unwrap();
    assert_eq!(
        b,
        Some(0x0F),
        "vCPU B could not take the device lock while vCPU A's disk request waited for its backend"
    );
    // A's request completed as ever.
    assert_eq!(msi, [QUEUE_MSI]);
    assert_eq!(ram.byte(STATUS_BYTE), VIRTIO_BLK_S_OK);
    let g = unshare::<GatedDisk>(platform, ram, slot, bar);
    assert_eq!(mock.used_idx(&g.mem), 1);
    assert_eq!(mock.used_elem(&g.mem, 0).1, 513);
    let mut got = vec![0u8; 512];
    g.mem.read(DATA, &mut got).unwrap();
    assert_eq!(got, disk().data[5 * 512..6 * 512]);
}

#[test]
fn finding17_a_reset_during_a_request_writes_nothing_into_the_new_ring() {
    let (backend, entered, release) = GatedDisk::new();
    let mut g = Guest::with_disk(backend);
    let mut mock = g.linux_init(true, u64::MAX);
    g.post_read(&mut mock, 5);
    let (platform, ram, slot, bar) = share(g);
    let a = thread::spawn({
        let (platform, ram) = (platform.clone(), ram.clone());
        move || notify::<GatedDisk>(&platform, ram, slot, bar)
    });
    entered.recv().unwrap();
    // While A's read waits: the driver resets the device and sets it up
    // again, its new ring where the old one was (zeroed).
    let mut new_mock = {
        let mut p = platform.lock().unwrap();
        let mut m = ram.0.lock().unwrap();
        let bus = core::mem::take(&mut *p);
        let mem = core::mem::replace(&mut *m, VecMemory::new(0, 0));
        let mut g = Guest { bus, mem, slot, bar, disk: None };
        let new_mock = g.linux_init(true, u64::MAX);
        g.mem.write(STATUS_BYTE, &[0xFF]).unwrap();
        g.bus.take_msi();
        (*p, *m) = (g.bus, g.mem);
        new_mock
    };
    release.send(()).unwrap();
    let msi = a.join().unwrap();
    let mut g = unshare::<GatedDisk>(platform, ram, slot, bar);
    assert_eq!(new_mock.used_idx(&g.mem), 0, "a request from before the reset was completed into the new ring");
    assert_eq!(g.mem.as_slice()[STATUS_BYTE as usize], 0xFF, "its status byte was written after the reset");
    assert!(msi.is_empty(), "its interrupt was raised: {msi:?}");
    assert!(g.transport::<Block<GatedDisk>>().is_live());
    // The new ring works.
    g.block_read(&mut new_mock, 7);
    assert_eq!(g.bus.take_msi(), [QUEUE_MSI]);
    assert_eq!(new_mock.used_idx(&g.mem), 1);
    assert_eq!(new_mock.used_elem(&g.mem, 0), (0, 513));
    assert_eq!(g.mem.as_slice()[STATUS_BYTE as usize], VIRTIO_BLK_S_OK);
    assert_eq!(g.mem.as_slice()[DATA as usize..DATA as usize + 512], disk().data[7 * 512..8 * 512]);
}

/// Where request `k` of the concurrent test keeps its parts.
const fn part(k: u64) -> (u64, u64, u64, u64) {
    (HDR + 16 * k, DATA + 512 * k, STATUS_BYTE + k, 0x7_0000 + 0x40 * k)
}

#[test]
fn finding17_two_vcpus_notifying_one_queue_complete_every_chain_once() {
    const PER_VCPU: u64 = 30;
    for round in 0..20 {
        let mut g = Guest::block();
        // Indirect chains: one table entry each, so every head is its own
        // and the used ring (64 entries) shows each chain once.
        let mock = g.linux_init(true, u64::MAX);
        let (platform, ram, slot, bar) = share(g);
        let driver = Arc::new(Mutex::new(mock));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let vcpus: Vec<_> = (0..2u64)
            .map(|vcpu| {
                let (platform, ram, driver, heads) = (platform.clone(), ram.clone(), driver.clone(), heads.clone());
                thread::spawn(move || {
                    for i in 0..PER_VCPU {
                        let k = vcpu * PER_VCPU + i;
                        let (hdr, data, status, table) = part(k);
                        {
                            let mut mock = driver.lock().unwrap();
                            let mut mem = ram.0.lock().unwrap();
                            let mut h = [0u8; 16];
                            h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
                            h[8..].copy_from_slice(&(k % 64).to_le_bytes());
                            mem.write(hdr, &h).unwrap();
                            mem.write(status, &[0xFF]).unwrap();
                            let bufs = [(hdr, 16, false), (data, 512, true), (status, 1, true)];
                            let head = mock.add_indirect_chain(&mut mem, table, &bufs);
                            heads.lock().unwrap().push((head, k));
                        }
                        notify::<MemBackend>(&platform, ram.clone(), slot, bar);
                    }
                })
            })
            .collect();
        for v in vcpus {
            v.join().unwrap();
        }
        let mock = Arc::try_unwrap(driver).ok().unwrap().into_inner().unwrap();
        let g = unshare::<MemBackend>(platform, ram, slot, bar);
        let total = 2 * PER_VCPU;
        assert_eq!(u64::from(mock.used_idx(&g.mem)), total, "round {round}: used entries");
        let mut used: Vec<(u32, u32)> = (0..total as u16).map(|i| mock.used_elem(&g.mem, i)).collect();
        used.sort();
        let mut heads = heads.lock().unwrap().clone();
        heads.sort();
        let want: Vec<(u32, u32)> = heads.iter().map(|&(h, _)| (u32::from(h), 513)).collect();
        assert_eq!(used, want, "round {round}: each chain used exactly once");
        for &(_, k) in &heads {
            let (_, data, status, _) = part(k);
            assert_eq!(g.mem.as_slice()[status as usize], VIRTIO_BLK_S_OK, "round {round}: request {k}");
            let sector = (k % 64) as usize;
            assert_eq!(
                g.mem.as_slice()[data as usize..data as usize + 512],
                disk().data[sector * 512..(sector + 1) * 512],
                "round {round}: request {k}'s data"
            );
        }
    }
}
