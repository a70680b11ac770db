//! The netd process: reads its boot configuration (`netd.conf`, the
//! switches and VNICs: `netd::vnics::NetConfig`), then serves `status`
//! and `vnic` on its endpoint (the logic is the library's). Each VNIC's
//! ring region is a frame netd makes and maps, whose capability goes to
//! the VMM with the `attach` reply. VMMs pump their rings on their own
//! timer, so netd signals nobody yet; the machine's NIC (the nic_tags'
//! uplink) is not driven yet, so frames for it are counted and dropped.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod frames {
    //! Ring regions: frames netd creates, maps at a slot of its own
    //! address space and reaches by volatile copies.
    use abi::{CapSlot, ObjectType};
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use alcove_rt::SharedMemory;
    use alcove_rt::start::SLOT_FREE;
    use libipc::blkring::RingRegion;
    use libipc::sys;

    /// Where regions are mapped, one slot of 1 MiB each (the largest
    /// region, 224 slots a ring, is 900 KiB).
    const REGION_VA: u64 = 0x40_0000_0000;
    const REGION_STRIDE: u64 = 0x10_0000;
    const MAX_REGIONS: u64 = 1024;

    pub struct Region {
        mem: SharedMemory,
        slot: CapSlot,
        index: u64,
    }

    impl RingRegion for Region {
        fn len(&self) -> usize {
            RingRegion::len(&self.mem)
        }
        fn read(&self, offset: usize, buf: &mut [u8]) {
            RingRegion::read(&self.mem, offset, buf)
        }
        fn write(&mut self, offset: usize, data: &[u8]) {
            RingRegion::write(&mut self.mem, offset, data)
        }
    }

    pub struct Frames {
        next_slot: CapSlot,
        free_slots: Vec<CapSlot>,
        free_places: Vec<u64>,
        next_place: u64,
        /// Frames for a nic_tag's uplink, dropped (no NIC driver yet).
        pub uplink_dropped: u64,
    }

    impl Frames {
        pub const fn new() -> Self {
            Self { next_slot: SLOT_FREE, free_slots: Vec::new(), free_places: Vec::new(), next_place: 0, uplink_dropped: 0 }
        }
    }

    impl netd::vnics::VnicPlatform for Frames {
        type Region = Region;

        fn create(&mut self, pages: usize) -> Result<(Region, CapSlot), String> {
            if pages as u64 * 4096 > REGION_STRIDE {
                return Err(format!("a region of {pages} pages does not fit its place"));
            }
            let index = match self.free_places.pop() {
                Some(i) => i,
                None if self.next_place < MAX_REGIONS => {
                    self.next_place += 1;
                    self.next_place - 1
                }
                None => return Err(format!("all {MAX_REGIONS} region places are in use")),
            };
            let slot = self.free_slots.pop().unwrap_or_else(|| {
                self.next_slot += 1;
                self.next_slot - 1
            });
            let made = sys::create(ObjectType::Frame, slot, pages as u64)
                .map_err(|e| format!("frame of {pages} pages: {e}"))
                .and_then(|()| {
                    SharedMemory::map_frame(slot, REGION_VA + index * REGION_STRIDE, pages as u64).map_err(|e| {
                        let _ = sys::cap_delete(slot);
                        format!("map a frame of {pages} pages: {e}")
                    })
                });
            match made {
                Ok(mem) => Ok((Region { mem, slot, index }, slot)),
                Err(e) => {
                    self.free_slots.push(slot);
                    self.free_places.push(index);
                    Err(e)
                }
            }
        }

        fn destroy(&mut self, region: Region) {
            let Region { mem, slot, index } = region;
            // Unmapped first (the last handle's drop), then the capability
            // goes; the VMM's copy keeps the frame alive until it deletes it.
            drop(mem);
            let _ = sys::cap_delete(slot);
            self.free_slots.push(slot);
            self.free_places.push(index);
        }

        fn signal(&mut self, _client: u64, _vnic: u32) {}

        fn uplink(&mut self, _switch: &str, _frame: &[u8]) {
            self.uplink_dropped += 1;
        }

        fn now_ns(&self) -> u64 {
            alcove_rt::clock_ns()
        }
    }
}

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    use abi::Rights;
    use alcove_rt::start::SLOT_SELF;

    let info = start.server("netd");
    let Some(slot) = info.serves("netd") else {
        log::error!("no \"netd\" endpoint was granted");
        return 1;
    };
    // The boot configuration, if init gave one: otherwise no switches.
    let config = match info.files.iter().find(|(n, _, _)| n == "netd.conf") {
        None => netd::vnics::NetConfig::default(),
        Some((_, file, len)) => {
            const CONF_VA: u64 = 0x30_0000_0000;
            if let Err(e) = libipc::sys::map(SLOT_SELF, *file, CONF_VA, Rights::READ) {
                log::error!("netd.conf: cannot map the boot file: {e}");
                return 1;
            }
            let bytes = alcove_rt::user_bytes(CONF_VA, *len as usize);
            let Ok(text) = core::str::from_utf8(bytes) else {
                log::error!("netd.conf: not UTF-8");
                return 1;
            };
            match netd::vnics::NetConfig::parse(text) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("{e}");
                    return 1;
                }
            }
        }
    };
    let server = netd::vnics::VnicServer::new(&config, frames::Frames::new());
    log::info!("{} switch(es), {} VNIC(s)", config.switches.len(), config.vnics.len());
    alcove_rt::serve_forever(slot, server)
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("netd runs only on Alcove (build it for x86_64-unknown-none)");
}
