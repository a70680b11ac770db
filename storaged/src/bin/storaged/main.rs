//! The storaged process: maps the PCI windows and enables the configuration
//! ports init granted, finds the machine's virtio-blk disks, and serves
//! `status` and `storage` on its endpoint (the logic is the library's).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod disks;
#[cfg(target_os = "none")]
mod dma;

#[cfg(target_os = "none")]
mod rings {
    //! Rings in DMA frames: the disk's DMA lands in the shared pages.
    use abi::CapSlot;
    use alloc::format;
    use alloc::string::String;

    use crate::dma::{self, DmaFrame};

    pub struct DmaRings;

    pub struct DmaRing {
        frame: DmaFrame,
        bytes: &'static mut [u8],
    }

    impl storaged::RingMemory for DmaRing {
        fn bytes(&mut self) -> &mut [u8] {
            self.bytes
        }
    }

    impl storaged::RingFactory for DmaRings {
        type Ring = DmaRing;

        fn create(&mut self, pages: usize) -> Result<(DmaRing, CapSlot), String> {
            let (frame, bytes) = dma::alloc_frame(pages).map_err(|e| format!("DMA frame of {pages} pages: {e}"))?;
            Ok((DmaRing { frame, bytes }, frame.slot))
        }

        fn destroy(&mut self, ring: DmaRing) {
            let DmaRing { frame, bytes } = ring;
            let _ = bytes;
            dma::free_frame(frame);
        }
    }
}

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    let info = start.server("storaged");
    let Some(slot) = info.serves("storaged") else {
        log::error!("no \"storaged\" endpoint was granted");
        return 1;
    };
    let pci_ports = info.ioports.iter().find(|&&(first, count, _)| first <= 0xcf8 && u32::from(first) + u32::from(count) >= 0xd00);
    let mut found = alloc::vec::Vec::new();
    match pci_ports {
        None => log::info!("no PCI configuration ports (0xcf8..0xcff) granted: serving no disks"),
        Some(&(_, _, ports)) => {
            match libipc::sys::io_port_enable(ports) {
                Ok(()) => found = disks::find(&info.device_memory, info.device_memory_root),
                Err(e) => log::error!("PCI configuration ports: cannot enable: {e}"),
            }
        }
    }
    let disks = found.into_iter().map(|(name, disk)| storaged::Disk::new(&name, disk)).collect();
    let server = storaged::Storaged::new(disks, rings::DmaRings);
    log::info!("serving {} disk(s)", server.disks().len());
    alcove_rt::serve_forever(slot, server)
}

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("storaged runs only on Alcove (build it for x86_64-unknown-none)");
}
