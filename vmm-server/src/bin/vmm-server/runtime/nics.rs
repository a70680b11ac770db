//! The VM's NICs: each `nics[]` entry a virtio-net device on the PCI bus,
//! fed by the frame ring of the VNIC netd gave this VMM
//! (`libipc::interfaces::vnic`; the matching and the pump are
//! `vmm_server::vm::nics`). The rings are pumped whenever the devices'
//! state is delivered (after exits and on the timer thread's pass, at
//! least every 20 ms), under the platform lock, and netd's doorbell is
//! rung when frames went into a ring: on a vCPU thread by signalling
//! netd's doorbell (a notification netd gives with each `attach` reply),
//! which never blocks, so the vCPU keeps its CPU (a `kick` call handed
//! it to whichever thread of its priority ran next there, often the other
//! VM's vCPU, and it came back only when that one's 10 ms slice ended:
//! the milliseconds of guest-to-guest round trips); on the timer thread,
//! or without netd's doorbell, by the `kick` call, whose answer also tells
//! a lost link. Each `attach` gives netd this
//! VMM's doorbell the other way: a copy of the timer thread's
//! notification that can only be signalled, which netd rings when a ring
//! got frames, so they wait for no timer.
//!
//! netd restarted by init (issue 13): the VMM's netd capability is a
//! badged copy of init's endpoint, which outlives netd, but the new netd
//! knows none of the earlier one's attachments. A `kick` then fails (the
//! call itself if netd died answering it; else `NoSuchHandle`) and the
//! link is lost ([`NetdLink`]): on that pump and later ones when due, the
//! VMM lists its VNICs again, attaches each NIC's, maps the new ring at
//! the other of its two places and moves the device onto it
//! ([`NicPort::relink`]); then it unmaps and deletes the old ring. The
//! guests' devices are untouched; frames in the old rings are lost, as
//! on a link that flapped. A kick made while netd is down waits for the
//! new netd (the endpoint queues it), holding the platform lock so long.

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
use vmm_server::config::VmConfig;
use vmm_server::vm::nics::{KickOutcome, NetdLink, NicPort, match_vnics};

use super::{Resources, VmSpec};

// A NIC's frames on the heap stay within a sixth of it (a guest, or a
// capped VNIC, fills them; an allocation that fails panics the VMM).
const _: () = assert!(vmm_server::virtio::net::MAX_HELD_FRAMES * vmm_server::virtio::net::MAX_FRAME <= alcove_rt::HEAP_BYTES / 6);

/// Where VNIC rings are mapped (one slot of 1 MiB each).
const RING_VA: u64 = 0x23_0000_0000;
const RING_STRIDE: u64 = 0x10_0000;
/// Where the other ring of a NIC goes (its rings alternate between the
/// two places when netd restarts).
const RING_BANK: u64 = 0x8000_0000;

/// What the VMM keeps of a NIC to attach it again.
struct Attachment {
    /// The capability slots of its two ring places, and which one holds
    /// the ring now.
    rings: [CapSlot; 2],
    bank: usize,
    /// netd's doorbell (signal right only), if its `attach` reply brought
    /// one, in the slot beside its ring's.
    bell: Option<CapSlot>,
    bells: [CapSlot; 2],
}

/// The VM's NICs and netd's doorbell. Dropping it detaches every VNIC.
pub(super) struct Nics {
    netd: Option<vnic::Client<KernelTransport>>,
    ports: Vec<NicPort<SharedMemory>>,
    /// A ring netd broke: reported once, not pumped again (until the NIC
    /// is attached again).
    broken: Vec<bool>,
    attachments: Vec<Attachment>,
    /// The netd endpoint, the timer notification (copied as each
    /// attach's doorbell) and a slot for that copy.
    ep: CapSlot,
    timer: CapSlot,
    doorbell: CapSlot,
    config: Option<VmConfig>,
    link: NetdLink,
}

impl Nics {
    /// No NICs.
    pub(super) fn none() -> Self {
        Self {
            netd: None,
            ports: Vec::new(),
            broken: Vec::new(),
            attachments: Vec::new(),
            ep: 0,
            timer: 0,
            doorbell: 0,
            config: None,
            link: NetdLink::default(),
        }
    }

    /// Moves frames both ways on every NIC; returns whether a device was
    /// kicked (an interrupt may be pending: pass it on). On a vCPU thread
    /// (`from_vcpu`) netd is told of frames by its doorbell, never by a
    /// blocking call (see the module's description).
    pub(super) fn pump(&mut self, bus: &mut PciBus, mem: &mut dyn GuestMemory, from_vcpu: bool) -> bool {
        let mut kicked = false;
        for (i, port) in self.ports.iter_mut().enumerate() {
            if self.broken[i] {
                continue;
            }
            match port.pump(bus, mem) {
                Ok(r) => {
                    kicked |= r.kicked_device;
                    let bell = self.attachments.get(i).and_then(|a| a.bell);
                    if r.kick_netd
                        && from_vcpu
                        && !self.link.lost()
                        && let Some(bell) = bell
                    {
                        // A lost netd never hears it: the timer thread's
                        // kick finds out once the ring is full.
                        let _ = sys::signal(bell, 1);
                    } else if (r.kick_netd || (!from_vcpu && r.unconsumed))
                        && !self.link.lost()
                        && let Some(netd) = &self.netd
                    {
                        // On the timer thread also when frames a vCPU's
                        // doorbell announced are still in the ring: a
                        // restarted netd never heard it, and its answer
                        // to the kick says so.
                        let result = netd.kick(port.handle);
                        match self.link.kicked(&result, alcove_rt::clock_ns()) {
                            KickOutcome::Fine => {}
                            KickOutcome::Lost(why) => log::warn!("nics[{i}]: netd's doorbell: {why}; attaching every NIC again"),
                            KickOutcome::Refused(why) => log::warn!("nics[{i}]: netd's doorbell: {why}"),
                        }
                    }
                }
                Err(e) => {
                    log::error!("nics[{i}]: netd broke the frame ring: {e}; the NIC is stopped");
                    self.broken[i] = true;
                }
            }
        }
        let now = alcove_rt::clock_ns();
        if self.link.due(now) {
            match self.reattach() {
                Ok(()) => {
                    self.link.relinked();
                    log::info!("nics: every NIC attached again to netd (relink {})", self.link.relinks);
                }
                Err(e) => {
                    let at = self.link.failed(now);
                    log::warn!("nics: attaching again to netd: {e}; next try in {} ms", at.saturating_sub(now) / 1_000_000);
                }
            }
        }
        kicked
    }

    /// The starter says netd was restarted (`VMM_CONTROL_NETD_RESTARTED`):
    /// the next pump attaches every NIC again.
    pub(super) fn netd_restarted(&mut self) {
        if self.ports.is_empty() {
            return;
        }
        log::info!("nics: netd was restarted (the starter says so); attaching every NIC again");
        self.link.restarted(alcove_rt::clock_ns());
    }

    /// Attaches every NIC again to the VNIC netd lists for it now and
    /// moves its device onto the new ring (see the module's description).
    fn reattach(&mut self) -> Result<(), String> {
        let (Some(netd), Some(config)) = (&self.netd, &self.config) else { return Ok(()) };
        let offered = netd.vnics().map_err(|e| format!("netd: {e}"))?;
        let ids = match_vnics(config, &offered)?;
        for (index, &id) in ids.iter().enumerate() {
            let (Some(port), Some(att)) = (self.ports.get_mut(index), self.attachments.get_mut(index)) else { break };
            let what = |e: &dyn core::fmt::Display| format!("nics[{index}]: {e}");
            let next = 1 - att.bank;
            let slot = att.rings[next];
            sys::cap_copy(self.timer, self.doorbell, Rights::WRITE, 0).map_err(|e| what(&format!("copy the doorbell: {e}")))?;
            let bell_slot = att.bells[next];
            let transport =
                CapTransport::new(Cap::<Endpoint>::from_slot(self.ep), &[slot, bell_slot]).sending(&[self.doorbell]);
            let attached = vnic::Client::new(&transport).attach(id, 0);
            let _ = sys::cap_delete(self.doorbell);
            let received = transport.received();
            let got_ring = received >= 1;
            if received < 2 || !is_doorbell(bell_slot) {
                let _ = sys::cap_delete(bell_slot);
            }
            let attached = match attached {
                Ok(Ok(a)) if got_ring => a,
                other => {
                    if got_ring {
                        let _ = sys::cap_delete(slot);
                    }
                    let _ = sys::cap_delete(bell_slot);
                    return Err(match other {
                        Ok(Ok(_)) => what(&"netd sent no ring"),
                        Ok(Err(e)) => what(&e),
                        Err(e) => what(&e),
                    });
                }
            };
            let pages = u64::from(attached.ring_pages);
            let region = if pages * PAGE_SIZE > RING_STRIDE {
                Err(what(&format!("ring of {pages} pages is too large")))
            } else {
                SharedMemory::map_frame(slot, ring_va(index, next), pages).map_err(|e| what(&format!("map the ring: {e}")))
            };
            let region = match region {
                Ok(r) => r,
                Err(e) => {
                    let _ = sys::cap_delete(slot);
                    let _ = sys::cap_delete(bell_slot);
                    return Err(e);
                }
            };
            match port.relink(region, attached.handle) {
                Ok(old) => {
                    // Unmapped (its last handle), then its capability goes.
                    drop(old);
                    let _ = sys::cap_delete(att.rings[att.bank]);
                    let _ = sys::cap_delete(att.bells[att.bank]);
                    att.bell = (received >= 2 && is_doorbell(bell_slot)).then_some(bell_slot);
                    att.bank = next;
                    self.broken[index] = false;
                    log::info!("nics[{index}]: VNIC {id} attached again as handle {}", attached.handle);
                }
                Err((new, e)) => {
                    drop(new);
                    let _ = sys::cap_delete(slot);
                    let _ = sys::cap_delete(bell_slot);
                    let _ = netd.detach(attached.handle);
                    return Err(what(&e));
                }
            }
        }
        Ok(())
    }
}

/// Whether `slot` holds a notification this VMM may signal (netd's
/// doorbell); anything else netd sent is not used.
fn is_doorbell(slot: CapSlot) -> bool {
    sys::cap_identify(slot).is_ok_and(|i| i.object_type == abi::ObjectType::Notification && i.rights.contains(Rights::WRITE))
}

/// Where NIC `index`'s ring is mapped in place `bank` (0 or 1).
fn ring_va(index: usize, bank: usize) -> u64 {
    RING_VA + bank as u64 * RING_BANK + index as u64 * RING_STRIDE
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
    let doorbell = res.next;
    res.next += 1;
    let mut nics = Nics {
        netd: Some(netd),
        ports: Vec::new(),
        broken: Vec::new(),
        attachments: Vec::new(),
        ep,
        timer,
        doorbell,
        config: Some(spec.config.clone()),
        link: NetdLink::default(),
    };
    for (index, &id) in ids.iter().enumerate() {
        let what = |e: &dyn core::fmt::Display| format!("vmadm: property \"nics[{index}]\": {e}");
        // The doorbell: the timer's notification, signal right only.
        let doorbell = res.next;
        sys::cap_copy(timer, doorbell, Rights::WRITE, 0).map_err(|e| what(&format!("copy the doorbell: {e}")))?;
        res.next += 1;
        let slot = res.next;
        // netd's doorbell comes in the slot after the ring's.
        let bell_slot = slot + 1;
        let transport = CapTransport::new(Cap::<Endpoint>::from_slot(ep), &[slot, bell_slot]).sending(&[doorbell]);
        let attached = vnic::Client::new(&transport).attach(id, 0);
        // netd holds its own copy now (or none, if the call failed).
        let _ = sys::cap_delete(doorbell);
        let received = transport.received();
        let attached = attached.map_err(|e| what(&e))?.map_err(|e| what(&e))?;
        if received == 0 {
            return Err(what(&"netd sent no ring"));
        }
        res.next += 2;
        res.slots.push(slot);
        res.slots.push(bell_slot);
        let bell = (received >= 2 && is_doorbell(bell_slot)).then_some(bell_slot);
        if bell.is_none() {
            let _ = sys::cap_delete(bell_slot);
        }
        let pages = u64::from(attached.ring_pages);
        if pages * PAGE_SIZE > RING_STRIDE {
            return Err(what(&format!("ring of {pages} pages is too large")));
        }
        let region = SharedMemory::map_frame(slot, ring_va(index, 0), pages)
            .map_err(|e| what(&format!("map the ring: {e}")))?;
        let port = NicPort::add(bus, attached.mac, region, attached.handle).map_err(|e| what(&e))?;
        log::info!("nics[{index}]: VNIC {id} ({}) on {}", vmm_server::config::MacAddr(attached.mac), spec.config.nics[index].nic_tag);
        nics.ports.push(port);
        nics.broken.push(false);
        // The other ring place's slot, for an attach after a netd restart.
        let (other, other_bell) = (res.next, res.next + 1);
        res.next += 2;
        res.slots.push(other);
        res.slots.push(other_bell);
        nics.attachments.push(Attachment { rings: [slot, other], bank: 0, bell, bells: [bell_slot, other_bell] });
    }
    Ok(nics)
}
