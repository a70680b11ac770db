//! The machine's NICs: virtio-net functions on PCI bus 0 (configuration
//! mechanism #1, as storaged finds its disks), driven with
//! `virtio-drivers` over the modern PCI transport (virtio 1.2 §4.1), each
//! the uplink of the nic_tag netd.conf gives it.
//!
//! Receiving is interrupt-driven: the receive queue's used-buffer
//! notifications come as an MSI-X message (PCI 3.0 §6.8.2; virtio 1.2
//! §4.1.4.3 `queue_msix_vector`) on a vector netd allocates from its IRQ
//! capability, bound to a bit of the serving thread's notification, so an
//! idle NIC costs nothing. Sending waits for the device to take the frame
//! (a few microseconds; the transmit queue has no interrupt).
//!
//! What the NIC hands in is checked here (the used length against the
//! buffer and the header) and counted when wrong; what it carries is the
//! switch's to check (`netd_switch::Switch::from_uplink`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use alcove_hal::dma::{self, AlcoveHal};
use alcove_hal::pci::{self, PortCam};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use virtio_drivers::transport::DeviceType;

/// Receive and transmit queue size (QEMU offers 256).
const QUEUE: usize = 64;
/// One receive buffer: the virtio-net header (12 bytes) and a frame with
/// a VLAN tag (1522), rounded up; two to a page.
const RX_BUF: usize = 2048;
/// The largest frame netd sends.
const TX_MAX: usize = 1522;
/// virtio-net's header with VIRTIO_F_VERSION_1 (virtio 1.2 §5.1.6).
const NET_HDR: usize = 12;
/// PCI capability IDs (PCI 3.0 Appendix H).
const CAP_MSIX: u8 = 0x11;
const CAP_VENDOR: u8 = 0x09;
/// virtio's common configuration structure (cfg_type 1) and its fields
/// (virtio 1.2 §4.1.4.3).
const VIRTIO_COMMON_CFG: u8 = 1;
const COMMON_MSIX_CONFIG: u64 = 0x10;
const COMMON_QUEUE_SELECT: u64 = 0x16;
const COMMON_QUEUE_MSIX_VECTOR: u64 = 0x1a;
const NO_VECTOR: u32 = 0xffff;

/// Counters an operator reads in netd's status.
#[derive(Clone, Copy, Debug, Default)]
pub struct NicStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Buffers the device gave back with a length that cannot be a frame
    /// (shorter than the header, longer than the buffer), or an error.
    pub rx_malformed: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames too large to send, or the device refused them.
    pub tx_failed: u64,
}

/// One machine NIC.
pub struct Nic {
    /// `virtio-net 00:03.0`.
    pub name: String,
    /// The nic_tag it is the uplink of.
    pub tag: String,
    net: VirtIONetRaw<AlcoveHal, PciTransport, QUEUE>,
    /// Receive buffers the device holds, by token.
    rx: Vec<Option<&'static mut [u8]>>,
    tx: &'static mut [u8],
    /// The MSI vector's capability.
    msi: Option<abi::CapSlot>,
    pub stats: NicStats,
}

impl Nic {
    /// The NIC's MAC, as its config space says.
    pub fn mac(&self) -> [u8; 6] {
        self.net.mac_address()
    }

    /// The capability of the receive queue's MSI vector (bound to the
    /// serving thread's notification once that exists).
    pub fn msi(&self) -> Option<abi::CapSlot> {
        self.msi
    }

    /// Whether netd polls this NIC on its timer: it has no MSI-X vector
    /// (none offered, or none could be set up).
    pub fn polled(&self) -> bool {
        self.msi.is_none()
    }

    /// The next frame received, as it came off the wire (without the
    /// virtio-net header); buffers the device returned malformed are
    /// counted, given back to it, and skipped.
    pub fn receive(&mut self) -> Option<Vec<u8>> {
        loop {
            let token = self.net.poll_receive()?;
            let Some(buf) = self.rx.get_mut(usize::from(token)).and_then(Option::take) else {
                // The device named a buffer it was not given: nothing can
                // be trusted of this queue any more.
                log::error!("{}: the device completed receive buffer {token}, which it does not hold", self.name);
                self.stats.rx_malformed += 1;
                return None;
            };
            // SAFETY: `buf` is the buffer `receive_begin` returned `token`
            // for, untouched since (it sat in `self.rx`).
            let done = unsafe { self.net.receive_complete(token, buf) };
            let frame = match done {
                Ok((hdr, len)) if hdr == NET_HDR && hdr + len <= buf.len() && len > 0 => Some(buf[hdr..hdr + len].to_vec()),
                _ => None,
            };
            self.give(buf);
            match frame {
                Some(f) => {
                    self.stats.rx_frames += 1;
                    self.stats.rx_bytes += f.len() as u64;
                    return Some(f);
                }
                None => self.stats.rx_malformed += 1,
            }
        }
    }

    /// Hands a receive buffer (back) to the device.
    fn give(&mut self, buf: &'static mut [u8]) {
        // SAFETY: `buf` is one of the NIC's own receive buffers (a private
        // DMA frame, 'static); it is kept in `self.rx` under its token and
        // not touched until the device returns it.
        match unsafe { self.net.receive_begin(buf) } {
            Ok(t) => {
                if let Some(slot) = self.rx.get_mut(usize::from(t)) {
                    *slot = Some(buf);
                }
            }
            Err(e) => log::error!("{}: a receive buffer could not be queued: {e}", self.name),
        }
    }

    /// Sends `frame` (as it goes on the wire).
    pub fn send(&mut self, frame: &[u8]) {
        if frame.is_empty() || frame.len() > TX_MAX.min(self.tx.len()) {
            self.stats.tx_failed += 1;
            return;
        }
        self.tx[..frame.len()].copy_from_slice(frame);
        match self.net.send(&self.tx[..frame.len()]) {
            Ok(()) => {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += frame.len() as u64;
            }
            Err(e) => {
                self.stats.tx_failed += 1;
                log::warn!("{}: send: {e}", self.name);
            }
        }
    }

    /// One line of netd's status.
    pub fn status(&self, index: usize) -> String {
        let m = self.mac();
        let s = &self.stats;
        format!(
            "nic {index} {} mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} uplink of {}: in {} frames {} bytes ({} malformed), out {} frames {} bytes ({} failed)\n",
            self.name, m[0], m[1], m[2], m[3], m[4], m[5], self.tag, s.rx_frames, s.rx_bytes, s.rx_malformed, s.tx_frames, s.tx_bytes, s.tx_failed
        )
    }
}

/// Starts the virtio-net functions on bus 0 that `tag_of` gives a
/// nic_tag (by their number in PCI order); `root` is the device-memory
/// capability (manifest `pci_bars`), `irq` the IRQ capability netd
/// allocates MSI vectors with. One that cannot be started is logged and
/// skipped. Each is registered with init through `proc` (see
/// `alcove_hal::pci::enable`).
pub fn find(
    tag_of: impl Fn(u32) -> Option<String>,
    root: abi::CapSlot,
    irq: Option<abi::CapSlot>,
    proc: Option<abi::CapSlot>,
) -> Vec<Nic> {
    let mut pci = PciRoot::new(pci::cam());
    let functions: Vec<_> = pci.enumerate_bus(0).filter(|(_, info)| virtio_device_type(info) == Some(DeviceType::Network)).collect();
    let mut nics = Vec::new();
    for (index, (df, _)) in functions.into_iter().enumerate() {
        let name = format!("virtio-net {:02x}:{:02x}.{}", df.bus, df.device, df.function);
        let Some(tag) = tag_of(index as u32) else {
            log::info!("{name}: NIC {index} is no nic_tag's uplink (netd.conf); not used");
            continue;
        };
        match start(&mut pci, df, name.clone(), tag, root, irq, proc) {
            Ok(nic) => {
                let m = nic.mac();
                log::info!(
                    "{name}: NIC {index}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, the uplink of {}{}",
                    m[0], m[1], m[2], m[3], m[4], m[5], nic.tag,
                    if nic.polled() { ", polled (no receive interrupt)" } else { "" }
                );
                nics.push(nic);
            }
            Err(why) => log::error!("{name}: not used: {why}"),
        }
    }
    nics
}

fn start(
    pci: &mut PciRoot<pci::Cam>,
    df: DeviceFunction,
    name: String,
    tag: String,
    root: abi::CapSlot,
    irq: Option<abi::CapSlot>,
    proc: Option<abi::CapSlot>,
) -> Result<Nic, String> {
    let bars = pci::map_bars(pci, df, Some(root), "netd")?;
    let bar_address = |i: usize| bars.get(i).copied().flatten();
    pci::enable(pci, df, proc, "netd")?;
    let transport = PciTransport::new::<AlcoveHal, _>(pci, df).map_err(|e| format!("virtio PCI transport: {e}"))?;
    let net = VirtIONetRaw::<AlcoveHal, _, QUEUE>::new(transport).map_err(|e| format!("virtio-net start: {e}"))?;
    let rx_area = dma::alloc_private(QUEUE * RX_BUF / 4096).map_err(|e| format!("receive buffers: {e}"))?;
    let tx = dma::alloc_private(1).map_err(|e| format!("transmit buffer: {e}"))?;
    let mut nic = Nic { name, tag, net, rx: (0..QUEUE).map(|_| None).collect(), tx, msi: None, stats: NicStats::default() };
    for buf in rx_area.chunks_mut(RX_BUF) {
        nic.give(buf);
    }
    // Without its receive interrupt the NIC is still used: netd polls it
    // on its timer (often while frames come, rarely when idle).
    let msi = irq
        .ok_or_else(|| String::from("netd holds no IRQ capability to allocate an MSI-X vector with (manifest irqs)"))
        .and_then(|irq| msix(pci, df, &bar_address, irq));
    match msi {
        Ok(slot) => nic.msi = Some(slot),
        Err(why) => log::warn!("{}: no receive interrupt ({why}): polled on netd's timer instead", nic.name),
    }
    Ok(nic)
}

/// Allocates an MSI vector, points the function's MSI-X table entry 0 at
/// it and makes entry 0 the receive queue's vector (the transmit queue
/// and configuration changes get none); returns the vector's capability.
fn msix(
    pci: &mut PciRoot<pci::Cam>,
    df: DeviceFunction,
    bar_address: &dyn Fn(usize) -> Option<(u64, u64)>,
    irq: abi::CapSlot,
) -> Result<abi::CapSlot, String> {
    let cam = PortCam;
    let caps: Vec<_> = pci.capabilities(df).collect();
    let msix = caps.iter().find(|c| c.id == CAP_MSIX).ok_or_else(|| String::from("no MSI-X capability"))?;
    let table = cam.read_word(df, msix.offset + 4);
    let (table_bar, table_offset) = ((table & 7) as usize, u64::from(table & !7));
    let (bar, _) = bar_address(table_bar).ok_or_else(|| format!("the MSI-X table's BAR{table_bar} is not memory"))?;
    let entry = bar + table_offset;
    let common = caps
        .iter()
        .filter(|c| c.id == CAP_VENDOR && (c.private_header >> 8) as u8 == VIRTIO_COMMON_CFG)
        .find_map(|c| {
            let bar = cam.read_word(df, c.offset + 4) as u8;
            let offset = cam.read_word(df, c.offset + 8);
            bar_address(usize::from(bar)).map(|(a, _)| a + u64::from(offset))
        })
        .ok_or_else(|| String::from("no virtio common configuration in a memory BAR"))?;

    let slot = dma::take_slot();
    libipc::sys::create_from(abi::ObjectType::Irq, slot, 1, irq).map_err(|e| {
        dma::give_slot(slot);
        format!("allocating an MSI vector: {e}")
    })?;
    let undo = |why: String| {
        let _ = libipc::sys::cap_delete(slot);
        dma::give_slot(slot);
        why
    };
    let (address, data) = libipc::sys::irq_msi_info(slot).map_err(|e| undo(format!("MSI info: {e}")))?;
    // The table entry (PCI 3.0 §6.8.2.6..9): address, data, unmasked.
    let wrote = dma::mmio_write(entry, address as u32, 4)
        && dma::mmio_write(entry + 4, (address >> 32) as u32, 4)
        && dma::mmio_write(entry + 8, data as u32, 4)
        && dma::mmio_write(entry + 12, 0, 4);
    if !wrote {
        return Err(undo(format!("the MSI-X table at {entry:#x} is outside the mapped BARs")));
    }
    // Message control: MSI-X enable (bit 15), function mask (bit 14) clear.
    let word = cam.read_word(df, msix.offset);
    let control = ((word >> 16) | 0x8000) & !0x4000;
    PortCam.write_word(df, msix.offset, (word & 0xffff) | (control << 16));
    // virtio: no vector for configuration changes or the transmit queue
    // (1), entry 0 for the receive queue (0). The device answers a vector
    // it cannot use with NO_VECTOR.
    let set = |queue: u32, vector: u32| {
        dma::mmio_write(common + COMMON_QUEUE_SELECT, queue, 2) && dma::mmio_write(common + COMMON_QUEUE_MSIX_VECTOR, vector, 2)
    };
    let ok = dma::mmio_write(common + COMMON_MSIX_CONFIG, NO_VECTOR, 2)
        && set(1, NO_VECTOR)
        && set(0, 0)
        && dma::mmio_read(common + COMMON_QUEUE_MSIX_VECTOR, 2) == Some(0);
    if !ok {
        return Err(undo(String::from("the device did not take MSI-X vector 0 for its receive queue")));
    }
    Ok(slot)
}
