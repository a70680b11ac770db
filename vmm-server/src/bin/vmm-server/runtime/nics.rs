//! The VM's NICs: each `nics[]` entry a virtio-net device on the PCI bus,
//! fed by the frame ring of the VNIC netd gave this VMM
//! (`libipc::interfaces::vnic`; the matching and the pump are
//! `vmm_server::vm::nics`). The rings are pumped whenever the devices'
//! state is delivered (after exits and on the timer thread's pass, at
//! least every 20 ms), under the platform lock, and netd's doorbell is
//! rung when frames went into a ring. Each `attach` gives netd this
//! VMM's doorbell the other way: a copy of the timer thread's
//! notification that can only be signalled, which netd rings when a ring
//! got frames, so they wait for no timer.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use abi::{CapSlot, PAGE_SIZE, Rights};
use libipc::sys;
use alcove_rt::SharedMemory;
use libipc::cap::{Cap, Endpoint};
use libipc::interfaces::vnic;
use libipc::kernel::{CapTransport, KernelTransport};
use vmm_server::pci::PciBus;
use vmm_server::virtio::GuestMemory;
use vmm_server::vm::nics::{NicPort, match_vnics};

use super::{Resources, VmSpec};

/// Where VNIC rings are mapped (one slot of 1 MiB each).
const RING_VA: u64 = 0x23_0000_0000;
const RING_STRIDE: u64 = 0x10_0000;

/// The VM's NICs and netd's doorbell. Dropping it detaches every VNIC.
pub(super) struct Nics {
    netd: Option<vnic::Client<KernelTransport>>,
    ports: Vec<NicPort<SharedMemory>>,
    /// A ring netd broke: reported once, not pumped again.
    broken: Vec<bool>,
}

impl Nics {
    /// No NICs.
    pub(super) const fn none() -> Self {
        Self { netd: None, ports: Vec::new(), broken: Vec::new() }
    }

    /// Moves frames both ways on every NIC; returns whether a device was
    /// kicked (an interrupt may be pending: pass it on).
    pub(super) fn pump(&mut self, bus: &mut PciBus, mem: &mut dyn GuestMemory) -> bool {
        let mut kicked = false;
        for (i, port) in self.ports.iter_mut().enumerate() {
            if self.broken[i] {
                continue;
            }
            match port.pump(bus, mem) {
                Ok(r) => {
                    kicked |= r.kicked_device;
                    if r.kick_netd
                        && let Some(netd) = &self.netd
                        && let Err(e) = netd.kick(port.handle)
                    {
                        log::warn!("nics[{i}]: netd's doorbell: {e}");
                    }
                }
                Err(e) => {
                    log::error!("nics[{i}]: netd broke the frame ring: {e}; the NIC is stopped");
                    self.broken[i] = true;
                }
            }
        }
        kicked
    }
}

impl Nics {
    /// One line per NIC with its device's counters, for the operator at
    /// the end of a boot.
    pub(super) fn report(&self, vm: &str, bus: &PciBus) {
        for (i, port) in self.ports.iter().enumerate() {
            let Some(s) = port.stats(bus) else { continue };
            log::info!(
                "vm {vm}: nics[{i}]: sent {} frames ({} bytes; dropped: {} malformed, {} oversized), received {} frames ({} bytes; dropped: {} ring overflow, {} buffer too small){}",
                s.tx_frames,
                s.tx_bytes,
                s.tx_malformed,
                s.tx_oversized,
                s.rx_frames,
                s.rx_bytes,
                s.rx_overflow,
                s.rx_small_buffer,
                if self.broken[i] { "; ring refused" } else { "" },
            );
        }
    }
}

impl Drop for Nics {
    fn drop(&mut self) {
        if let Some(netd) = &self.netd {
            for port in &self.ports {
                let _ = netd.detach(port.handle);
            }
        }
    }
}

/// Attaches the VM's NICs to the VNICs netd holds for this VMM and puts
/// a virtio-net device for each on `bus`.
pub(super) fn attach(res: &mut Resources, spec: &VmSpec, bus: &mut PciBus, timer: CapSlot) -> Result<Nics, String> {
    if spec.config.nics.is_empty() {
        return Ok(Nics::none());
    }
    let ep = spec.netd.ok_or_else(|| String::from("vmadm: property \"nics\": no netd endpoint was granted to this VM"))?;
    let netd = vnic::Client::new(KernelTransport::new(Cap::<Endpoint>::from_slot(ep)));
    let offered = netd.vnics().map_err(|e| format!("vmadm: property \"nics\": netd: {e}"))?;
    let ids = match_vnics(&spec.config, &offered)?;
    let mut nics = Nics { netd: Some(netd), ports: Vec::new(), broken: Vec::new() };
    for (index, &id) in ids.iter().enumerate() {
        let what = |e: &dyn core::fmt::Display| format!("vmadm: property \"nics[{index}]\": {e}");
        // The doorbell: the timer's notification, signal right only.
        let doorbell = res.next;
        sys::cap_copy(timer, doorbell, Rights::WRITE, 0).map_err(|e| what(&format!("copy the doorbell: {e}")))?;
        res.next += 1;
        let slot = res.next;
        let transport = CapTransport::new(Cap::<Endpoint>::from_slot(ep), &[slot]).sending(&[doorbell]);
        let attached = vnic::Client::new(&transport).attach(id, 0);
        // netd holds its own copy now (or none, if the call failed).
        let _ = sys::cap_delete(doorbell);
        let attached = attached.map_err(|e| what(&e))?.map_err(|e| what(&e))?;
        if transport.received() != 1 {
            return Err(what(&"netd sent no ring"));
        }
        res.next += 1;
        res.slots.push(slot);
        let pages = u64::from(attached.ring_pages);
        if pages * PAGE_SIZE > RING_STRIDE {
            return Err(what(&format!("ring of {pages} pages is too large")));
        }
        let region = SharedMemory::map_frame(slot, RING_VA + index as u64 * RING_STRIDE, pages)
            .map_err(|e| what(&format!("map the ring: {e}")))?;
        let port = NicPort::add(bus, attached.mac, region, attached.handle).map_err(|e| what(&e))?;
        log::info!("nics[{index}]: VNIC {id} ({}) on {}", vmm_server::config::MacAddr(attached.mac), spec.config.nics[index].nic_tag);
        nics.ports.push(port);
        nics.broken.push(false);
    }
    Ok(nics)
}
