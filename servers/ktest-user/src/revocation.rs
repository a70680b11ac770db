//! Security issue finding 12, the derived roots: objects a process makes
//! from a capability it holds (a sub-range of I/O ports, an MSI vector from
//! an interrupt right) hang under that capability in the derivation tree,
//! so whoever revokes it takes them back too. They used to be installed as
//! new roots that `CapRevoke` of the source never reached: a driver whose
//! port range was revoked kept every sub-range it had cut from it. And an
//! MSI vector is freed with its last capability.

use crate::tests::Env;
use abi::{Error, ObjectType};
use alloc::format;
use alloc::string::String;
use libipc::sys;

/// Cuts a sub-range from an I/O-port capability and an MSI vector from an
/// IRQ capability, revokes each source, and finds both results gone, while
/// the sources themselves stay.
pub fn revocation_reaches_objects_created_from_a_capability(env: &mut Env) -> Result<(), String> {
    let &(first, _, ports) = env.info().ioports.first().ok_or_else(|| String::from("no I/O ports granted"))?;
    let &(_, irq) = env.info().irqs.first().ok_or_else(|| String::from("no IRQ granted"))?;
    let sub = env.slot();
    sys::create_from(ObjectType::IoPorts, sub, u64::from(first) | 1 << 16, ports).map_err(|e| format!("io ports: {e}"))?;
    let msi = env.slot();
    sys::create_from(ObjectType::Irq, msi, 1, irq).map_err(|e| format!("allocate an MSI vector: {e}"))?;
    sys::cap_revoke(ports).map_err(|e| format!("revoke the ports: {e}"))?;
    sys::cap_revoke(irq).map_err(|e| format!("revoke the IRQ: {e}"))?;
    let sub_left = sys::cap_identify(sub).map(|c| c.object_type);
    let msi_left = sys::cap_identify(msi).map(|c| c.object_type);
    // Whatever survived is deleted, so no later test trips on it.
    let _ = sys::cap_delete(sub);
    let _ = sys::cap_delete(msi);
    if sub_left != Err(Error::EmptySlot) {
        return Err(format!("a port sub-range survived the revocation of its source: {sub_left:?}"));
    }
    if msi_left != Err(Error::EmptySlot) {
        return Err(format!("an MSI vector survived the revocation of its IRQ capability: {msi_left:?}"));
    }
    for (what, slot) in [("ports", ports), ("IRQ", irq)] {
        sys::cap_identify(slot).map_err(|e| format!("the revoked {what} capability itself is gone: {e}"))?;
    }
    Ok(())
}

/// Allocates and deletes an MSI vector more times than the machine has
/// vectors (160): each is free again once its last capability goes. They
/// used to stay allocated forever, so a driver that restarted often ran
/// the machine out of them.
pub fn msi_vectors_are_freed_with_their_last_capability(env: &mut Env) -> Result<(), String> {
    let &(_, irq) = env.info().irqs.first().ok_or_else(|| String::from("no IRQ granted"))?;
    let msi = env.slot();
    for round in 0..400 {
        sys::create_from(ObjectType::Irq, msi, 1, irq).map_err(|e| format!("allocation {round} of an MSI vector: {e}"))?;
        sys::cap_delete(msi).map_err(|e| format!("delete MSI {round}: {e}"))?;
    }
    Ok(())
}
