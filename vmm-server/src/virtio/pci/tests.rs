//! The virtio-pci transport on a [`PciBus`], driven as Linux's
//! `virtio_pci_modern` drives it: ECAM configuration accesses, BAR 0 MMIO,
//! the driver-side mock queue in guest RAM, and the block and entropy
//! devices behind it.

use super::*;
use crate::devices::XorShift;
use crate::pci::{PciBus, PciSlot};
use crate::virtio::block::{BackendError, Block, BlockBackend, ID_BYTES, MemBackend, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN};
use crate::virtio::mock::MockQueue;
use crate::virtio::queue::VecMemory;
use crate::virtio::rng::{EntropySource, Rng};
use crate::virtio::{
    COMMON_FEATURES, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_STATUS_ACKNOWLEDGE, VIRTIO_STATUS_DRIVER,
    VIRTIO_STATUS_FAILED,
};
use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::vec;

const QUEUE_AT: u64 = 0x1000;
const HDR: u64 = 0x4_0000;
const DATA: u64 = 0x5_0000;
const STATUS_BYTE: u64 = 0x6_0000;
const CONFIG_MSI: MsiMessage = MsiMessage { address: 0xFEE0_1000, data: 0x30 };
const QUEUE_MSI: MsiMessage = MsiMessage { address: 0xFEE0_2000, data: 0x31 };

struct Counter(u8);

impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

/// A guest: the bus, its RAM, and what its driver found.
struct Guest {
    bus: PciBus,
    mem: VecMemory,
    slot: PciSlot,
    bar: u64,
    /// For a virtio-blk device: what the VMM does after each exit (carry
    /// out the queued requests with the device lock released, then
    /// complete them).
    disk: Option<DiskRunner>,
}

type DiskRunner = Box<dyn FnMut(&mut PciBus, PciSlot, &mut VecMemory)>;

fn disk() -> MemBackend {
    let mut b = MemBackend::new(64, b"pci-disk");
    for (i, byte) in b.data.iter_mut().enumerate() {
        *byte = (i * 7 + i / 512) as u8;
    }
    b
}

impl Guest {
    fn with<D: VirtioDevice + Send + 'static>(device: D) -> Self {
        let mut bus = PciBus::new();
        let slot = bus.add(Box::new(VirtioPci::new(device).unwrap())).unwrap();
        let bar = bus.config(slot).unwrap().bar(0).unwrap().address;
        Self { bus, mem: VecMemory::new(0, 0x10_0000), slot, bar, disk: None }
    }

    fn block() -> Self {
        Self::with_disk(disk())
    }

    /// A virtio-blk device on `backend`, its requests run after each exit.
    fn with_disk<B: BlockBackend + Send + 'static>(backend: B) -> Self {
        let mut g = Self::with(Block::new(backend));
        g.attach_disk::<B>();
        g
    }

    fn attach_disk<B: BlockBackend + Send + 'static>(&mut self) {
        let disk = self.bus.device::<VirtioPci<Block<B>>>(self.slot).unwrap().device().disk().clone();
        self.disk = Some(Box::new(move |bus, slot, mem| {
            if disk.execute(mem).to_complete {
                bus.device_mut::<VirtioPci<Block<B>>>(slot).unwrap().complete(mem);
            }
        }));
    }

    /// What the VMM does after an exit: run the disk's requests.
    fn after_exit(&mut self) {
        if let Some(run) = self.disk.as_mut() {
            run(&mut self.bus, self.slot, &mut self.mem);
        }
    }

    fn cfg_r(&mut self, reg: u16, size: u8) -> u32 {
        let gpa = crate::boot::layout::ECAM_BASE + (u64::from(self.slot.0) << 15) + u64::from(reg);
        self.bus.mmio_read(gpa, size).unwrap() as u32
    }

    fn cfg_w(&mut self, reg: u16, size: u8, v: u32) {
        let gpa = crate::boot::layout::ECAM_BASE + (u64::from(self.slot.0) << 15) + u64::from(reg);
        assert!(self.bus.mmio_write(gpa, size, u64::from(v), &mut self.mem));
        self.after_exit();
    }

    fn r(&mut self, off: u64, size: u8) -> u64 {
        self.bus.mmio_read(self.bar + off, size).unwrap()
    }

    fn w(&mut self, off: u64, size: u8, v: u64) {
        assert!(self.bus.mmio_write(self.bar + off, size, v, &mut self.mem));
        self.after_exit();
    }

    fn status(&mut self) -> u8 {
        self.r(COMMON_DEVICE_STATUS, 1) as u8
    }

    fn set_status(&mut self, bits: u8) {
        let s = self.status();
        self.w(COMMON_DEVICE_STATUS, 1, u64::from(s | bits));
    }

    fn transport<D: VirtioDevice + Send + 'static>(&mut self) -> &mut VirtioPci<D> {
        self.bus.device_mut::<VirtioPci<D>>(self.slot).unwrap()
    }

    /// The virtio capabilities: (cfg_type, bar, offset, length, cap offset).
    fn virtio_caps(&mut self) -> Vec<(u8, u8, u32, u32, u16)> {
        let mut caps = Vec::new();
        let mut at = self.cfg_r(0x34, 1) as u16;
        while at != 0 {
            if self.cfg_r(at, 1) == u32::from(PCI_CAP_ID_VNDR) {
                caps.push((
                    self.cfg_r(at + 3, 1) as u8,
                    self.cfg_r(at + 4, 1) as u8,
                    self.cfg_r(at + 8, 4),
                    self.cfg_r(at + 12, 4),
                    at,
                ));
            }
            at = self.cfg_r(at + 1, 1) as u16;
        }
        caps
    }

    fn msix_cap(&mut self) -> u16 {
        let mut at = self.cfg_r(0x34, 1) as u16;
        while at != 0 && self.cfg_r(at, 1) != 0x11 {
            at = self.cfg_r(at + 1, 1) as u16;
        }
        at
    }

    /// Programs MSI-X entries 0 (configuration) and 1 (queue 0) and
    /// enables MSI-X, function mask first as Linux's msix_capability_init.
    fn enable_msix(&mut self) {
        let cap = self.msix_cap();
        self.cfg_w(cap + 2, 2, 0xC000);
        for (i, m) in [(0u64, CONFIG_MSI), (1, QUEUE_MSI)] {
            let e = MSIX_TABLE_OFFSET + 16 * i;
            self.w(e, 4, m.address & 0xFFFF_FFFF);
            self.w(e + 4, 4, m.address >> 32);
            self.w(e + 8, 4, u64::from(m.data));
            self.w(e + 12, 4, 0);
        }
        self.cfg_w(cap + 2, 2, 0x8000);
    }

    /// Linux's probe and virtio core's init (§3.1.1) with queue 0 at the
    /// mock's addresses; returns the mock.
    fn linux_init(&mut self, msix: bool, want: u64) -> MockQueue {
        // pci_enable_device + pci_set_master.
        let cmd = self.cfg_r(4, 2);
        self.cfg_w(4, 2, cmd | 0x6);
        if msix {
            self.enable_msix();
        }
        self.w(COMMON_DEVICE_STATUS, 1, 0);
        assert_eq!(self.status(), 0);
        self.set_status(VIRTIO_STATUS_ACKNOWLEDGE);
        self.set_status(VIRTIO_STATUS_DRIVER);
        self.w(COMMON_DEVICE_FEATURE_SELECT, 4, 0);
        let lo = self.r(COMMON_DEVICE_FEATURE, 4);
        self.w(COMMON_DEVICE_FEATURE_SELECT, 4, 1);
        let hi = self.r(COMMON_DEVICE_FEATURE, 4);
        let offered = lo | hi << 32;
        let accept = offered & want;
        self.w(COMMON_DRIVER_FEATURE_SELECT, 4, 0);
        self.w(COMMON_DRIVER_FEATURE, 4, accept & 0xFFFF_FFFF);
        self.w(COMMON_DRIVER_FEATURE_SELECT, 4, 1);
        self.w(COMMON_DRIVER_FEATURE, 4, accept >> 32);
        self.set_status(VIRTIO_STATUS_FEATURES_OK);
        assert_ne!(self.status() & VIRTIO_STATUS_FEATURES_OK, 0, "features accepted");
        if msix {
            self.w(COMMON_CONFIG_MSIX_VECTOR, 2, 0);
            assert_eq!(self.r(COMMON_CONFIG_MSIX_VECTOR, 2), 0);
        }
        self.w(COMMON_QUEUE_SELECT, 2, 0);
        let max = self.r(COMMON_QUEUE_SIZE, 2) as u16;
        assert_eq!(self.r(COMMON_QUEUE_ENABLE, 2), 0);
        let size = max.min(64);
        let mock = MockQueue::new(&mut self.mem, QUEUE_AT, size);
        self.w(COMMON_QUEUE_SIZE, 2, u64::from(size));
        // 64-bit addresses as two dwords, as Linux's vp_iowrite64_twopart.
        for (reg, addr) in [
            (COMMON_QUEUE_DESC, mock.desc_table),
            (COMMON_QUEUE_DRIVER, mock.avail_ring),
            (COMMON_QUEUE_DEVICE, mock.used_ring),
        ] {
            self.w(reg, 4, addr & 0xFFFF_FFFF);
            self.w(reg + 4, 4, addr >> 32);
        }
        if msix {
            self.w(COMMON_QUEUE_MSIX_VECTOR, 2, 1);
            assert_eq!(self.r(COMMON_QUEUE_MSIX_VECTOR, 2), 1);
        }
        assert_eq!(self.r(COMMON_QUEUE_NOTIFY_OFF, 2), 0);
        self.w(COMMON_QUEUE_ENABLE, 2, 1);
        self.set_status(VIRTIO_STATUS_DRIVER_OK);
        mock
    }

    /// Queues a one-sector read of `sector`, asking (with the event index)
    /// for an interrupt when it is done, and notifies queue 0.
    fn block_read(&mut self, mock: &mut MockQueue, sector: u64) {
        let used = mock.used_idx(&self.mem);
        mock.set_used_event(&mut self.mem, used);
        self.block_read_no_event(mock, sector);
    }

    /// The same, leaving used_event as it is.
    fn block_read_no_event(&mut self, mock: &mut MockQueue, sector: u64) {
        self.post_read(mock, sector);
        self.w(NOTIFY_OFFSET, 2, 0);
    }

    /// Makes a one-sector read of `sector` available, without notifying.
    fn post_read(&mut self, mock: &mut MockQueue, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write(HDR, &h).unwrap();
        self.mem.write(STATUS_BYTE, &[0xFF]).unwrap();
        mock.add_chain(&mut self.mem, &[(HDR, 16, false), (DATA, 512, true), (STATUS_BYTE, 1, true)]);
    }
}

#[test]
fn identity_capabilities_and_bar() {
    let mut g = Guest::block();
    assert_eq!(g.cfg_r(0, 4), 0x1042_1AF4, "non-transitional virtio-blk");
    assert_eq!(g.cfg_r(8, 1), 1, "revision 1");
    assert_eq!(g.cfg_r(8, 4) >> 8, 0x01_00_00);
    assert_eq!(g.cfg_r(0x2C, 4), 0x1100_1AF4);
    assert_eq!(g.cfg_r(0x3D, 1), 1, "INTA#");
    assert_eq!(g.cfg_r(0x10, 4) & 0xF, 0b0100, "64-bit memory BAR");
    assert_eq!(g.bar % BAR_SIZE, 0);
    let caps = g.virtio_caps();
    let types: Vec<u8> = caps.iter().map(|c| c.0).collect();
    assert_eq!(
        types,
        [
            VIRTIO_PCI_CAP_COMMON_CFG,
            VIRTIO_PCI_CAP_ISR_CFG,
            VIRTIO_PCI_CAP_DEVICE_CFG,
            VIRTIO_PCI_CAP_NOTIFY_CFG,
            VIRTIO_PCI_CAP_PCI_CFG
        ]
    );
    for &(t, bar, offset, length, at) in &caps {
        assert_eq!(bar, 0);
        match t {
            VIRTIO_PCI_CAP_COMMON_CFG => assert_eq!((offset, length), (0, 0x1000)),
            VIRTIO_PCI_CAP_ISR_CFG => assert_eq!(offset, 0x1000),
            VIRTIO_PCI_CAP_DEVICE_CFG => assert_eq!(offset, 0x2000),
            VIRTIO_PCI_CAP_NOTIFY_CFG => {
                assert_eq!((offset, length), (0x3000, 4));
                assert_eq!(g.cfg_r(at + 2, 1), 20, "cap_len");
                assert_eq!(g.cfg_r(at + 16, 4), NOTIFY_OFF_MULTIPLIER);
            }
            _ => assert_eq!(g.cfg_r(at + 2, 1), 20),
        }
        assert!(u64::from(offset) + u64::from(length) <= BAR_SIZE);
    }
    // MSI-X: 2 vectors (config + 1 queue), table and PBA in BAR 0.
    let cap = g.msix_cap();
    assert_ne!(cap, 0);
    assert_eq!(g.cfg_r(cap + 2, 2), 1);
    assert_eq!(g.cfg_r(cap + 4, 4), MSIX_TABLE_OFFSET as u32);
    assert_eq!(g.cfg_r(cap + 8, 4), MSIX_PBA_OFFSET as u32);
    // Common configuration before the driver touches it.
    assert_eq!(g.r(COMMON_NUM_QUEUES, 2), 1);
    assert_eq!(g.r(COMMON_QUEUE_SIZE, 2), 256);
    assert_eq!(g.r(COMMON_CONFIG_MSIX_VECTOR, 2), u64::from(VIRTIO_MSI_NO_VECTOR));
    assert_eq!(g.r(COMMON_QUEUE_MSIX_VECTOR, 2), u64::from(VIRTIO_MSI_NO_VECTOR));
    assert_eq!(g.r(COMMON_DEVICE_FEATURE, 4), (COMMON_FEATURES | (1 << 2) | (1 << 6) | (1 << 9)) & 0xFFFF_FFFF);
    // Device configuration: capacity 64 sectors.
    assert_eq!(g.r(DEVICE_CFG_OFFSET, 8), 64);
    assert_eq!(g.r(DEVICE_CFG_OFFSET + 20, 4), 512, "blk_size");
    // Other class codes.
    assert_eq!(class_code(VIRTIO_ID_CONSOLE), 0x07_80_00);
    assert_eq!(class_code(VIRTIO_ID_ENTROPY), 0xFF_00_00);
}

#[test]
fn linux_init_and_a_block_read_ending_in_an_msix_message() {
    let mut g = Guest::block();
    let mut mock = g.linux_init(true, u64::MAX);
    assert_eq!(g.status(), 0x0F);
    let t = g.transport::<Block<MemBackend>>();
    assert!(t.is_live());
    assert_eq!(t.device().acked_features(), t.device().features());
    assert!(g.bus.take_msi().is_empty());
    g.block_read(&mut mock, 5);
    assert_eq!(g.bus.take_msi(), [QUEUE_MSI]);
    let mut status = [0u8];
    g.mem.read(STATUS_BYTE, &mut status).unwrap();
    assert_eq!(status[0], VIRTIO_BLK_S_OK);
    let mut got = vec![0u8; 512];
    g.mem.read(DATA, &mut got).unwrap();
    assert_eq!(got, disk().data[5 * 512..6 * 512]);
    assert_eq!(mock.used_idx(&g.mem), 1);
    assert_eq!(mock.used_elem(&g.mem, 0).1, 513);
    // No INTx and no ISR bit with MSI-X.
    assert_eq!(g.r(ISR_OFFSET, 1), 0);
    assert!(g.bus.intx_lines().iter().all(|l| !l.asserted));
    // A spurious notify (nothing new) raises nothing.
    g.w(NOTIFY_OFFSET, 2, 0);
    assert!(g.bus.take_msi().is_empty());
    // Event index: the driver asks for no interrupt until used index 5.
    mock.set_used_event(&mut g.mem, 5);
    g.block_read_no_event(&mut mock, 6);
    assert!(g.bus.take_msi().is_empty(), "used_event not reached");
    assert_eq!(mock.used_idx(&g.mem), 2);
}

#[test]
fn masked_queue_vector_pends_until_unmasked() {
    let mut g = Guest::block();
    let mut mock = g.linux_init(true, u64::MAX);
    g.w(MSIX_TABLE_OFFSET + 16 + 12, 4, 1);
    g.block_read(&mut mock, 1);
    assert!(g.bus.take_msi().is_empty());
    assert_eq!(g.r(MSIX_PBA_OFFSET, 8), 0b10);
    g.w(MSIX_TABLE_OFFSET + 16 + 12, 4, 0);
    assert_eq!(g.bus.take_msi(), [QUEUE_MSI]);
    assert_eq!(g.r(MSIX_PBA_OFFSET, 8), 0);
    // NO_VECTOR for the queue: no message at all.
    g.w(COMMON_QUEUE_MSIX_VECTOR, 2, u64::from(VIRTIO_MSI_NO_VECTOR));
    g.block_read(&mut mock, 2);
    assert!(g.bus.take_msi().is_empty());
    assert_eq!(g.r(MSIX_PBA_OFFSET, 8), 0);
}

#[test]
fn intx_fallback_through_the_isr() {
    let mut g = Guest::block();
    let mut mock = g.linux_init(false, u64::MAX);
    let irq = g.bus.intx_irq(g.slot).unwrap();
    g.block_read(&mut mock, 3);
    assert!(g.bus.take_msi().is_empty());
    assert!(g.bus.intx_lines().iter().any(|l| l.irq == irq && l.asserted));
    assert_ne!(g.cfg_r(6, 2) & 0x8, 0, "status shows the interrupt");
    // Reading the ISR acknowledges and deasserts.
    assert_eq!(g.r(ISR_OFFSET, 1), u64::from(VIRTIO_PCI_ISR_QUEUE));
    assert!(g.bus.intx_lines().iter().all(|l| !l.asserted));
    assert_eq!(g.cfg_r(6, 2) & 0x8, 0);
    assert_eq!(g.r(ISR_OFFSET, 1), 0);
    // Interrupt Disable masks the line but keeps the status bit.
    let cmd = g.cfg_r(4, 2);
    g.cfg_w(4, 2, cmd | 0x400);
    g.block_read(&mut mock, 4);
    assert!(g.bus.intx_lines().iter().all(|l| !l.asserted));
    assert_ne!(g.cfg_r(6, 2) & 0x8, 0);
    // Enabling MSI-X takes INTx away too.
    g.cfg_w(4, 2, cmd);
    assert!(g.bus.intx_lines().iter().any(|l| l.asserted));
    g.enable_msix();
    assert!(g.bus.intx_lines().iter().all(|l| !l.asserted));
}

#[test]
fn feature_negotiation_rules() {
    let mut g = Guest::block();
    g.set_status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    // A legacy driver (no VERSION_1): FEATURES_OK does not stick.
    g.w(COMMON_DRIVER_FEATURE_SELECT, 4, 0);
    g.w(COMMON_DRIVER_FEATURE, 4, 1 << VIRTIO_BLK_F_FLUSH_BIT);
    g.set_status(VIRTIO_STATUS_FEATURES_OK);
    assert_eq!(g.status() & VIRTIO_STATUS_FEATURES_OK, 0);
    // Features the device did not offer: refused as well.
    g.w(COMMON_DRIVER_FEATURE_SELECT, 4, 1);
    g.w(COMMON_DRIVER_FEATURE, 4, 1 | 1 << 2); // VERSION_1 | ACCESS_PLATFORM
    g.set_status(VIRTIO_STATUS_FEATURES_OK);
    assert_eq!(g.status() & VIRTIO_STATUS_FEATURES_OK, 0);
    // Only offered bits with VERSION_1: accepted, and frozen after.
    g.w(COMMON_DRIVER_FEATURE, 4, 1);
    g.set_status(VIRTIO_STATUS_FEATURES_OK);
    assert_ne!(g.status() & VIRTIO_STATUS_FEATURES_OK, 0);
    let acked = g.transport::<Block<MemBackend>>().device().acked_features();
    assert_eq!(acked, feature(VIRTIO_F_VERSION_1) | 1 << VIRTIO_BLK_F_FLUSH_BIT);
    g.w(COMMON_DRIVER_FEATURE_SELECT, 4, 0);
    g.w(COMMON_DRIVER_FEATURE, 4, 0);
    assert_eq!(g.r(COMMON_DRIVER_FEATURE, 4), 1 << VIRTIO_BLK_F_FLUSH_BIT);
    // Selects past 1 read 0.
    g.w(COMMON_DEVICE_FEATURE_SELECT, 4, 7);
    assert_eq!(g.r(COMMON_DEVICE_FEATURE, 4), 0);
    // The driver cannot clear status bits; 0 resets everything.
    g.w(COMMON_DEVICE_STATUS, 1, u64::from(VIRTIO_STATUS_ACKNOWLEDGE));
    assert_eq!(g.status(), 0x0B);
    g.w(COMMON_DEVICE_STATUS, 1, 0);
    assert_eq!(g.status(), 0);
    assert_eq!(g.transport::<Block<MemBackend>>().device().acked_features(), 0);
    assert_eq!(g.r(COMMON_DRIVER_FEATURE, 4), 0);
    // FAILED is just recorded.
    g.set_status(VIRTIO_STATUS_FAILED);
    assert_eq!(g.status(), VIRTIO_STATUS_FAILED);
}

const VIRTIO_BLK_F_FLUSH_BIT: u32 = crate::virtio::block::VIRTIO_BLK_F_FLUSH;

#[test]
fn driver_ok_without_features_ok_needs_reset() {
    let mut g = Guest::block();
    let cmd = g.cfg_r(4, 2);
    g.cfg_w(4, 2, cmd | 4);
    g.enable_msix();
    g.w(COMMON_CONFIG_MSIX_VECTOR, 2, 0);
    g.set_status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK);
    assert_ne!(g.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
    assert_eq!(g.transport::<Block<MemBackend>>().error(), Some(TransportError::DriverOkWithoutFeaturesOk));
    assert_eq!(g.bus.take_msi(), [CONFIG_MSI]);
    assert_eq!(g.r(ISR_OFFSET, 1), u64::from(VIRTIO_PCI_ISR_CONFIG));
    // The driver cannot clear DEVICE_NEEDS_RESET but by resetting.
    g.w(COMMON_DEVICE_STATUS, 1, 0x0F);
    assert_ne!(g.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
    g.w(COMMON_DEVICE_STATUS, 1, 0);
    assert_eq!(g.status(), 0);
    assert_eq!(g.transport::<Block<MemBackend>>().error(), None);
    // And it works afterwards.
    let mut mock = g.linux_init(true, u64::MAX);
    g.block_read(&mut mock, 0);
    assert_eq!(g.bus.take_msi(), [QUEUE_MSI]);
}

#[test]
fn bad_queue_setups_are_refused_at_driver_ok() {
    for (what, reg, value) in [
        ("misaligned descriptor table", COMMON_QUEUE_DESC, QUEUE_AT + 8),
        ("used ring outside RAM", COMMON_QUEUE_DEVICE, 0xFFFF_F000),
        ("size not a power of two", COMMON_QUEUE_SIZE, 48),
        ("size above the maximum", COMMON_QUEUE_SIZE, 512),
        ("size 0", COMMON_QUEUE_SIZE, 0),
    ] {
        let mut g = Guest::block();
        let cmd = g.cfg_r(4, 2);
        g.cfg_w(4, 2, cmd | 4);
        g.enable_msix();
        g.set_status(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
        g.w(COMMON_DRIVER_FEATURE_SELECT, 4, 1);
        g.w(COMMON_DRIVER_FEATURE, 4, 1);
        g.set_status(VIRTIO_STATUS_FEATURES_OK);
        g.w(COMMON_CONFIG_MSIX_VECTOR, 2, 0);
        let mock = MockQueue::new(&mut g.mem, QUEUE_AT, 64);
        g.w(COMMON_QUEUE_SIZE, 2, 64);
        g.w(COMMON_QUEUE_DESC, 8, mock.desc_table);
        g.w(COMMON_QUEUE_DRIVER, 8, mock.avail_ring);
        g.w(COMMON_QUEUE_DEVICE, 8, mock.used_ring);
        g.w(reg, if reg == COMMON_QUEUE_SIZE { 2 } else { 8 }, value);
        g.w(COMMON_QUEUE_ENABLE, 2, 1);
        g.set_status(VIRTIO_STATUS_DRIVER_OK);
        assert_ne!(g.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0, "{what}");
        assert!(
            matches!(
                g.transport::<Block<MemBackend>>().error(),
                Some(TransportError::Activate(ActivateError::Queue { index: 0, .. }))
            ),
            "{what}"
        );
        assert_eq!(g.bus.take_msi(), [CONFIG_MSI], "{what}");
        // Notifications do nothing now.
        g.w(NOTIFY_OFFSET, 2, 0);
        assert!(g.bus.take_msi().is_empty());
    }
}

#[test]
fn ring_protocol_error_sets_needs_reset_and_stops_the_device() {
    let mut g = Guest::block();
    let mut mock = g.linux_init(true, u64::MAX);
    // An available head past the queue.
    mock.publish(&mut g.mem, 200);
    g.w(NOTIFY_OFFSET, 2, 0);
    assert_ne!(g.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
    assert!(matches!(
        g.transport::<Block<MemBackend>>().error(),
        Some(TransportError::Queue { index: 0, error: QueueError::HeadOutOfRange { head: 200, .. } })
    ));
    assert_eq!(g.bus.take_msi(), [CONFIG_MSI]);
    assert!(g.transport::<Block<MemBackend>>().error().unwrap().to_string().contains("queue 0"));
    // A valid request afterwards is not served.
    g.block_read(&mut mock, 1);
    assert!(g.bus.take_msi().is_empty());
    assert_eq!(mock.used_idx(&g.mem), 0);
    // A second error keeps the first and sends nothing more.
    g.transport::<Block<MemBackend>>().kick(0, &mut VecMemory::new(0, 0));
    assert!(g.bus.take_msi().is_empty());
}

#[test]
fn queue_registers_guard_their_state() {
    let mut g = Guest::block();
    let mock = g.linux_init(true, u64::MAX);
    // Enabled queue: address and size writes are ignored, disable too.
    g.w(COMMON_QUEUE_DESC, 8, 0x9000);
    g.w(COMMON_QUEUE_SIZE, 2, 8);
    g.w(COMMON_QUEUE_ENABLE, 2, 0);
    assert_eq!(g.r(COMMON_QUEUE_DESC, 8), mock.desc_table);
    assert_eq!(g.r(COMMON_QUEUE_DESC + 4, 4), 0);
    assert_eq!(g.r(COMMON_QUEUE_SIZE, 2), 64);
    assert_eq!(g.r(COMMON_QUEUE_ENABLE, 2), 1);
    // A queue that does not exist reads 0 and takes nothing.
    g.w(COMMON_QUEUE_SELECT, 2, 5);
    assert_eq!(g.r(COMMON_QUEUE_SELECT, 2), 5);
    g.w(COMMON_QUEUE_SIZE, 2, 8);
    g.w(COMMON_QUEUE_ENABLE, 2, 1);
    g.w(COMMON_QUEUE_MSIX_VECTOR, 2, 0);
    assert_eq!(g.r(COMMON_QUEUE_SIZE, 2), 0);
    assert_eq!(g.r(COMMON_QUEUE_ENABLE, 2), 0);
    assert_eq!(g.r(COMMON_QUEUE_MSIX_VECTOR, 2), u64::from(VIRTIO_MSI_NO_VECTOR));
    // Vectors past the table map to NO_VECTOR.
    g.w(COMMON_QUEUE_SELECT, 2, 0);
    g.w(COMMON_QUEUE_MSIX_VECTOR, 2, 2);
    assert_eq!(g.r(COMMON_QUEUE_MSIX_VECTOR, 2), u64::from(VIRTIO_MSI_NO_VECTOR));
    g.w(COMMON_CONFIG_MSIX_VECTOR, 2, 0x7FF);
    assert_eq!(g.r(COMMON_CONFIG_MSIX_VECTOR, 2), u64::from(VIRTIO_MSI_NO_VECTOR));
    // Read-only fields.
    g.w(COMMON_NUM_QUEUES, 2, 9);
    g.w(COMMON_QUEUE_NOTIFY_OFF, 2, 9);
    g.w(COMMON_DEVICE_FEATURE, 4, 0);
    assert_eq!(g.r(COMMON_NUM_QUEUES, 2), 1);
    assert_eq!(g.r(COMMON_QUEUE_NOTIFY_OFF, 2), 0);
    assert_ne!(g.r(COMMON_DEVICE_FEATURE, 4), 0);
    // Odd-sized and straddling reads compose the fields' bytes.
    assert_eq!(g.r(COMMON_NUM_QUEUES, 4), 1 | 0x0F << 16);
    assert_eq!(g.r(COMMON_QUEUE_DESC + 1, 1), (mock.desc_table >> 8) & 0xFF);
    assert_eq!(g.r(0x40, 4), 0, "past the structure");
    // Writes to the ISR, PBA, past the regions and to other BARs change
    // nothing.
    g.w(ISR_OFFSET, 1, 0xFF);
    g.w(0x7FF8, 8, u64::MAX);
    assert_eq!(g.r(ISR_OFFSET, 1), 0);
    assert_eq!(g.r(0x7FF8, 8), 0);
    let t = g.transport::<Block<MemBackend>>();
    assert_eq!(t.bar_read(2, 0, 4), 0);
    t.bar_write(2, 0, 4, 1, &mut VecMemory::new(0, 0));
}

/// A device with two queues that does nothing with them.
struct TwoQueues {
    acked: u64,
}

impl VirtioDevice for TwoQueues {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }
    fn features(&self) -> u64 {
        COMMON_FEATURES
    }
    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }
    fn acked_features(&self) -> u64 {
        self.acked
    }
    fn queue_sizes(&self) -> &[u16] {
        &[16, 16]
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn process_queue(&mut self, _: usize, _: &mut [Queue], _: &mut dyn GuestMemory) -> Result<bool, QueueError> {
        Ok(true)
    }
    fn reset(&mut self) {
        self.acked = 0;
    }
}

#[test]
fn queue_enabled_after_driver_ok_is_checked_then() {
    let mut g = Guest::with(TwoQueues { acked: 0 });
    let _ = g.linux_init(true, u64::MAX);
    // Queue 1 configured and enabled late, with a misaligned used ring.
    g.w(COMMON_QUEUE_SELECT, 2, 1);
    g.w(COMMON_QUEUE_DESC, 8, 0x8_0000);
    g.w(COMMON_QUEUE_DRIVER, 8, 0x8_1000);
    g.w(COMMON_QUEUE_DEVICE, 8, 0x8_2002);
    g.w(COMMON_QUEUE_ENABLE, 2, 1);
    assert_ne!(g.status() & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
}

#[test]
fn pci_cfg_capability_window() {
    let mut g = Guest::block();
    let (_, _, _, _, at) = g.virtio_caps().into_iter().find(|c| c.0 == VIRTIO_PCI_CAP_PCI_CFG).unwrap();
    // Read num_queues (2 bytes at 18) through the window.
    g.cfg_w(at + 4, 1, 0);
    g.cfg_w(at + 8, 4, COMMON_NUM_QUEUES as u32);
    g.cfg_w(at + 12, 4, 2);
    assert_eq!(g.cfg_r(at + 16, 4) & 0xFFFF, 1);
    // Write queue_select through it.
    g.cfg_w(at + 8, 4, COMMON_QUEUE_SELECT as u32);
    g.cfg_w(at + 16, 4, 0xAB);
    assert_eq!(g.r(COMMON_QUEUE_SELECT, 2), 0xAB);
    // Unaligned offset, bad length or another BAR: no access.
    g.cfg_w(at + 8, 4, COMMON_QUEUE_SELECT as u32 + 1);
    g.cfg_w(at + 16, 4, 0xCD);
    g.cfg_w(at + 8, 4, COMMON_QUEUE_SELECT as u32);
    g.cfg_w(at + 12, 4, 3);
    g.cfg_w(at + 16, 4, 0xCD);
    g.cfg_w(at + 12, 4, 2);
    g.cfg_w(at + 4, 1, 2);
    g.cfg_w(at + 16, 4, 0xCD);
    g.cfg_w(at + 8, 4, 0xFFFF_FFFF);
    g.cfg_w(at + 4, 1, 0);
    g.cfg_w(at + 16, 4, 0xCD);
    assert_eq!(g.r(COMMON_QUEUE_SELECT, 2), 0xAB);
    // The capability's type and length stay read-only.
    g.cfg_w(at + 2, 2, 0xFFFF);
    assert_eq!(g.cfg_r(at + 2, 2), u32::from(VIRTIO_PCI_CAP_PCI_CFG) << 8 | 20);
}

#[test]
fn entropy_through_the_transport() {
    let mut g = Guest::with(Rng::new(Counter(0)));
    assert_eq!(g.cfg_r(0, 4), 0x1044_1AF4);
    let mut mock = g.linux_init(true, u64::MAX);
    mock.add_chain(&mut g.mem, &[(DATA, 16, true)]);
    g.w(NOTIFY_OFFSET, 2, 0);
    assert_eq!(g.bus.take_msi(), [QUEUE_MSI]);
    let mut got = [0u8; 16];
    g.mem.read(DATA, &mut got).unwrap();
    assert_eq!(got, core::array::from_fn::<u8, 16, _>(|i| i as u8 + 1));
    assert_eq!(g.r(DEVICE_CFG_OFFSET, 4), 0, "no configuration space");
}

#[test]
fn config_change_interrupt() {
    let mut g = Guest::block();
    // Before DRIVER_OK: a new generation, no interrupt.
    g.transport::<Block<MemBackend>>().config_changed();
    assert_eq!(g.r(COMMON_CONFIG_GENERATION, 1), 1);
    assert!(g.bus.take_msi().is_empty());
    let _ = g.linux_init(true, u64::MAX);
    g.transport::<Block<MemBackend>>().config_changed();
    assert_eq!(g.r(COMMON_CONFIG_GENERATION, 1), 2);
    assert_eq!(g.bus.take_msi(), [CONFIG_MSI]);
    assert_eq!(g.r(ISR_OFFSET, 1), u64::from(VIRTIO_PCI_ISR_CONFIG));
}

#[test]
fn fuzz_the_transport() {
    let mut rng = XorShift(0x1AF4_1042);
    for round in 0..40 {
        let mut g = Guest::block();
        let mut mock = if round % 2 == 0 { Some(g.linux_init(round % 4 == 0, u64::MAX)) } else { None };
        for _ in 0..3000 {
            let size = [1u8, 2, 4, 8, 3][rng.below(5) as usize];
            let v = match rng.below(4) {
                0 => rng.below(4),
                1 => QUEUE_AT + rng.below(0x1000),
                _ => rng.next(),
            };
            match rng.below(10) {
                0..=3 => {
                    let off = rng.below(64);
                    g.w(off, size, v);
                }
                4 => {
                    let off = [ISR_OFFSET, DEVICE_CFG_OFFSET, NOTIFY_OFFSET, MSIX_TABLE_OFFSET, MSIX_PBA_OFFSET]
                        [rng.below(5) as usize]
                        + rng.below(0x40);
                    if rng.below(2) == 0 {
                        g.w(off, size, v);
                    } else {
                        g.r(off, size);
                    }
                }
                5 => {
                    let reg = rng.below(0x100) as u16;
                    let s = [1u8, 2, 4][rng.below(3) as usize];
                    // Keep the BAR and memory decoding where they are.
                    if !(0x04..0x18).contains(&reg) {
                        g.cfg_w(reg, s, v as u32);
                    }
                }
                6 => {
                    g.r(rng.below(0x6000), size);
                }
                7 => {
                    if let Some(m) = mock.as_mut() {
                        let len = rng.below(0x3000) as u32;
                        let addr = rng.below(0x10_0000);
                        m.add_chain(&mut g.mem, &[(HDR, 16, false), (addr, len, rng.below(2) == 0)]);
                    }
                    g.w(NOTIFY_OFFSET + 4 * rng.below(2), 2, 0);
                }
                8 => {
                    // Scribble on the rings.
                    let at = QUEUE_AT + rng.below(0x1800);
                    let _ = g.mem.write(at, &v.to_le_bytes()[..usize::from(size.min(8))]);
                }
                _ => {
                    g.bus.take_msi();
                    g.bus.intx_lines();
                }
            }
        }
        // Whatever happened, a reset and a fresh init work.
        g.w(COMMON_DEVICE_STATUS, 1, 0);
        let mem_size = g.mem.as_slice().len();
        g.mem = VecMemory::new(0, mem_size);
        let bar = g.bus.config(g.slot).unwrap().bar(0).unwrap().address;
        assert_eq!(bar, g.bar);
        let mut mock = g.linux_init(
            true,
            feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_F_EVENT_IDX) | feature(VIRTIO_F_INDIRECT_DESC),
        );
        g.bus.take_msi();
        g.block_read(&mut mock, 9);
        assert_eq!(g.bus.take_msi(), [QUEUE_MSI], "round {round}");
    }
}

mod finding17;
