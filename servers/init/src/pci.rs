//! Which PCI functions each driver took (pure, host-tested), so that init
//! can stop a dead driver's devices from DMA-ing before it restarts it.
//!
//! There is no IOMMU: a function whose bus mastering a driver turned on
//! may write any physical memory, and keeps doing so (into frames the
//! kernel freed with the driver's process) after the driver died. A
//! driver (a manifest server granted the configuration ports 0xCF8..0xCFF)
//! therefore registers each function it enables through `proc.pci_claim`;
//! when it ends, init clears the Bus Master Enable bit of exactly those
//! functions before it starts the driver again.
//!
//! Rules: a function is one driver's (another's claim of it is refused,
//! the same driver claiming it again is no change); bus/device/function
//! must be a real address (device < 32, function < 8); a driver holds at
//! most [`PCI_CLAIMS_MAX`] functions; only a server that holds the
//! configuration ports may claim at all (it could reach config space
//! anyway, and nobody else can make init touch it).

use alloc::vec::Vec;
use initrd::manifest::Manifest;
use libipc::interfaces::{PCI_CLAIMS_MAX, PciFunction, ProcError};

/// The configuration-address port (mechanism #1); a claimant's manifest
/// `ioports` must cover it and the data port.
pub const CONFIG_PORTS: (u16, u16) = (0xcf8, 8);

/// Functions claimed, each with its driver (manifest server index).
#[derive(Debug, Default)]
pub struct Claims {
    list: Vec<(usize, PciFunction)>,
}

impl Claims {
    /// `owner` (the caller's server index, `None` if unbadged) claims `f`.
    pub fn claim(&mut self, manifest: &Manifest, owner: Option<usize>, f: PciFunction) -> Result<(), ProcError> {
        let refuse = |why: &str| ProcError::PciClaim { function: f, why: why.into() };
        let owner = owner.ok_or_else(|| refuse("the caller is not a manifest server"))?;
        let server = manifest.servers.get(owner).ok_or_else(|| refuse("the caller is not a manifest server"))?;
        let (first, count) = CONFIG_PORTS;
        let holds_ports = server
            .ioports
            .iter()
            .any(|r| r.first <= first && u32::from(r.first) + u32::from(r.count) >= u32::from(first) + u32::from(count));
        if !holds_ports {
            return Err(refuse("the caller does not hold the PCI configuration ports (manifest: ioports 0xcf8, 8)"));
        }
        if f.device >= 32 || f.function >= 8 {
            return Err(refuse("no such function (device < 32, function < 8)"));
        }
        match self.list.iter().find(|(_, g)| *g == f) {
            Some((o, _)) if *o == owner => return Ok(()),
            Some(_) => return Err(refuse("another driver holds it")),
            None => {}
        }
        if self.list.iter().filter(|(o, _)| *o == owner).count() >= PCI_CLAIMS_MAX {
            return Err(refuse(&alloc::format!("this driver holds {PCI_CLAIMS_MAX} functions already (the most one may)")));
        }
        self.list.push((owner, f));
        Ok(())
    }

    /// The functions `owner` held, released (it ended): the ones whose bus
    /// mastering init clears before the restart.
    pub fn release(&mut self, owner: usize) -> Vec<PciFunction> {
        let held = self.list.iter().filter(|(o, _)| *o == owner).map(|(_, f)| *f).collect();
        self.list.retain(|(o, _)| *o != owner);
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
        [system]
        name = "t"
        [[server]]
        name = "storaged"
        priority = 100
        budget_kib = 64
        calls = ["proc"]
        ioports = [[0xcf8, 8]]
        [[server]]
        name = "netd"
        priority = 100
        budget_kib = 64
        calls = ["proc"]
        ioports = [[0xcf8, 8]]
        [[server]]
        name = "intruder"
        priority = 100
        budget_kib = 64
        calls = ["proc"]
        ioports = [[0x3f8, 8]]
    "#;

    fn f(bus: u8, device: u8, function: u8) -> PciFunction {
        PciFunction { bus, device, function }
    }

    fn manifest() -> Manifest {
        Manifest::from_toml(MANIFEST).unwrap()
    }

    #[test]
    fn a_driver_gets_back_exactly_its_functions() {
        let m = manifest();
        let mut c = Claims::default();
        c.claim(&m, Some(0), f(0, 4, 0)).unwrap();
        c.claim(&m, Some(0), f(0, 5, 0)).unwrap();
        c.claim(&m, Some(0), f(0, 4, 0)).unwrap(); // again: no change
        c.claim(&m, Some(1), f(0, 3, 0)).unwrap();
        assert_eq!(c.release(0), [f(0, 4, 0), f(0, 5, 0)]);
        assert_eq!(c.release(0), []);
        // The restarted driver claims them again.
        c.claim(&m, Some(0), f(0, 4, 0)).unwrap();
        assert_eq!(c.release(1), [f(0, 3, 0)]);
    }

    #[test]
    fn another_drivers_function_is_refused() {
        let m = manifest();
        let mut c = Claims::default();
        c.claim(&m, Some(1), f(0, 3, 0)).unwrap();
        let e = c.claim(&m, Some(0), f(0, 3, 0)).unwrap_err();
        assert!(alloc::format!("{e}").contains("another driver holds it"), "{e}");
        assert_eq!(c.release(0), []);
        assert_eq!(c.release(1), [f(0, 3, 0)]);
    }

    #[test]
    fn bad_addresses_and_callers_are_refused() {
        let m = manifest();
        let mut c = Claims::default();
        for bad in [f(0, 32, 0), f(0, 255, 0), f(0, 1, 8), f(255, 0, 255)] {
            let e = c.claim(&m, Some(0), bad).unwrap_err();
            assert!(alloc::format!("{e}").contains("no such function"), "{e}");
        }
        for who in [None, Some(2), Some(99)] {
            assert!(matches!(c.claim(&m, who, f(0, 4, 0)), Err(ProcError::PciClaim { .. })), "{who:?}");
        }
        assert_eq!(c.release(0), []);
        assert_eq!(c.release(2), []);
    }

    #[test]
    fn claims_are_bounded_per_driver() {
        let m = manifest();
        let mut c = Claims::default();
        for d in 0..PCI_CLAIMS_MAX as u8 {
            c.claim(&m, Some(0), f(0, d, 0)).unwrap();
        }
        let e = c.claim(&m, Some(0), f(1, 0, 0)).unwrap_err();
        assert!(alloc::format!("{e}").contains("functions already"), "{e}");
        // Another driver is not charged for it.
        c.claim(&m, Some(1), f(1, 0, 0)).unwrap();
        assert_eq!(c.release(0).len(), PCI_CLAIMS_MAX);
    }
}
