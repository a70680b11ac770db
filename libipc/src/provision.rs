//! A VM's pool volumes made ready and granted: what init does at boot for a
//! VMM whose manifest entry lists `volumes`, and what the control plane
//! (zone-server) does when it starts an HVM instance at run time.
//!
//! Each volume comes as a [`VolumeSpec`] (one line of text, as the boot
//! manifest carries it): a name, and what to do when the pool lacks it.
//! [`provision`] looks each up, creates the absent ones (empty with a
//! `volsize`, or as a clone of an image's snapshot), then asks storaged for
//! one grant naming them all in order: the capability that comes with the
//! reply is the VMM's `storaged` endpoint, through which `storage.disks`
//! lists exactly these volumes and `open(i)` opens the i-th (the VM's
//! `disks[i]`).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::interfaces::{Granted, POOL_GRANT_MAX, PoolError, pool};
use crate::{IpcError, Transport};

/// Bytes of a spec's text at most (a manifest argument's bound).
pub const SPEC_MAX_BYTES: usize = 256;

/// What to do when the pool has no volume of that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfAbsent {
    /// Refuse: the volume must exist.
    Fail,
    /// Create it empty (sparse) with this `volsize` in bytes.
    Create {
        /// Bytes.
        volsize: u64,
    },
    /// Clone it from this snapshot (`zones/<image_uuid>@final`).
    Clone {
        /// `POOL/VOLUME@SNAP`.
        origin: String,
    },
}

/// One volume a VM uses: `NAME`, `NAME volsize=BYTES` or
/// `NAME origin=VOLUME@SNAP` as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSpec {
    /// `zones/<uuid>-disk<N>`.
    pub name: String,
    /// What to do when the pool lacks it.
    pub if_absent: IfAbsent,
}

/// A volume or snapshot name the pool would take: `POOL/NAME`, each part
/// 1..=200 of `A-Z a-z 0-9 - _ . :`, and for a snapshot one `@SNAP` of the
/// same characters.
pub fn check_name(name: &str, snapshot: bool) -> Result<(), String> {
    let part = |s: &str| !s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    let (dataset, snap) = match name.split_once('@') {
        Some((d, s)) => (d, Some(s)),
        None => (name, None),
    };
    let ok = match dataset.split_once('/') {
        Some((pool, vol)) => part(pool) && part(vol),
        None => false,
    };
    match (ok, snap, snapshot) {
        (true, None, false) => Ok(()),
        (true, Some(s), true) if part(s) => Ok(()),
        (_, _, false) => Err(format!(
            "{name:?} is not a volume name (POOL/NAME, e.g. zones/<uuid>-disk0: letters, digits, - _ . :)"
        )),
        (_, _, true) => Err(format!("{name:?} is not a snapshot name (POOL/VOLUME@SNAP)")),
    }
}

impl VolumeSpec {
    /// Parses a spec's text; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > SPEC_MAX_BYTES {
            return Err(format!("volume spec of {} bytes (at most {SPEC_MAX_BYTES})", text.len()));
        }
        let mut words = text.split(' ').filter(|w| !w.is_empty());
        let name = words.next().ok_or_else(|| String::from("an empty volume spec"))?;
        check_name(name, false)?;
        let if_absent = match words.next() {
            None => IfAbsent::Fail,
            Some(w) => match w.split_once('=') {
                Some(("volsize", v)) => match v.parse::<u64>() {
                    Ok(n) if n > 0 => IfAbsent::Create { volsize: n },
                    _ => return Err(format!("{name}: volsize={v:?}: a size in bytes above 0")),
                },
                Some(("origin", o)) => {
                    check_name(o, true).map_err(|e| format!("{name}: origin: {e}"))?;
                    IfAbsent::Clone { origin: o.to_string() }
                }
                _ => return Err(format!("{name}: {w:?}: expected volsize=BYTES or origin=VOLUME@SNAP")),
            },
        };
        if let Some(w) = words.next() {
            return Err(format!("{name}: {w:?}: one of volsize= or origin= at most"));
        }
        Ok(Self { name: name.to_string(), if_absent })
    }

    /// The text [`VolumeSpec::parse`] reads back.
    pub fn to_text(&self) -> String {
        match &self.if_absent {
            IfAbsent::Fail => self.name.clone(),
            IfAbsent::Create { volsize } => format!("{} volsize={volsize}", self.name),
            IfAbsent::Clone { origin } => format!("{} origin={origin}", self.name),
        }
    }
}

/// Why a VM's volumes could not be made ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProvisionError {
    /// The list itself is wrong (empty, too long, a name twice).
    Specs(String),
    /// storaged refused a step for this volume.
    Pool {
        /// The volume (all of them for the grant).
        volume: String,
        /// What was being done: look up, create, clone, grant.
        step: &'static str,
        /// storaged's answer.
        error: PoolError,
    },
    /// The volume is absent and the spec says not to create it.
    Absent {
        /// Its name.
        volume: String,
    },
    /// The call itself failed.
    Ipc(IpcError),
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProvisionError::Specs(why) => write!(f, "volumes: {why}"),
            ProvisionError::Pool { volume, step, error } => write!(f, "volume {volume}: {step}: {error}"),
            ProvisionError::Absent { volume } => {
                write!(f, "volume {volume}: no such volume in the pool, and no size or image to create it from")
            }
            ProvisionError::Ipc(e) => write!(f, "volumes: storaged: {e}"),
        }
    }
}

impl core::error::Error for ProvisionError {}

/// What [`provision`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// The grant (its capability came with the reply, on the caller's
    /// transport).
    pub granted: Granted,
    /// The volumes it created (empty or cloned), in order.
    pub created: Vec<String>,
}

/// Makes `specs` ready in storaged's pool and grants them, in order, to one
/// holder. `pool` must be an admin's (init's or the control plane's) client
/// whose transport takes the grant's capability with the reply.
pub fn provision<T: Transport>(pool: &pool::Client<T>, specs: &[VolumeSpec]) -> Result<Provisioned, ProvisionError> {
    let created = prepare(pool, specs)?;
    let names = specs.iter().map(|s| s.name.clone()).collect();
    let granted = pool.grant(names).map_err(ProvisionError::Ipc)?.map_err(|e| fail_all(specs, e))?;
    Ok(Provisioned { granted, created })
}

/// Makes `specs` ready in storaged's pool without granting them (the
/// control plane's `vmadm create` of a VM that is not started yet): each
/// is looked up, and an absent one created or cloned as its spec says.
/// Returns the volumes it created, in order.
pub fn prepare<T: Transport>(pool: &pool::Client<T>, specs: &[VolumeSpec]) -> Result<Vec<String>, ProvisionError> {
    if specs.is_empty() || specs.len() > POOL_GRANT_MAX as usize {
        return Err(ProvisionError::Specs(format!("1 to {POOL_GRANT_MAX} volumes, got {}", specs.len())));
    }
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(ProvisionError::Specs(format!("{} is named twice", s.name)));
        }
    }
    let mut created = Vec::new();
    for s in specs {
        let fail = |step, error| ProvisionError::Pool { volume: s.name.clone(), step, error };
        match pool.get(s.name.clone()).map_err(ProvisionError::Ipc)? {
            Ok(info) if info.snapshot => {
                return Err(fail("look up", PoolError::Invalid { why: format!("{} is a snapshot, not a volume", s.name) }));
            }
            Ok(_) => continue,
            Err(PoolError::NotFound { .. }) => {}
            Err(e) => return Err(fail("look up", e)),
        }
        match &s.if_absent {
            IfAbsent::Fail => return Err(ProvisionError::Absent { volume: s.name.clone() }),
            IfAbsent::Create { volsize } => {
                pool.create(s.name.clone(), *volsize, 0).map_err(ProvisionError::Ipc)?.map_err(|e| fail("create", e))?
            }
            IfAbsent::Clone { origin } => pool
                .clone_snapshot(origin.clone(), s.name.clone())
                .map_err(ProvisionError::Ipc)?
                .map_err(|e| fail("clone", e))?,
        }
        created.push(s.name.clone());
    }
    Ok(created)
}

fn fail_all(specs: &[VolumeSpec], error: PoolError) -> ProvisionError {
    let volume = specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
    ProvisionError::Pool { volume, step: "grant", error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for text in ["zones/a-disk0", "zones/a-disk0 volsize=1048576", "zones/a-disk0 origin=zones/img@final"] {
            assert_eq!(VolumeSpec::parse(text).unwrap().to_text(), text);
        }
        assert_eq!(
            VolumeSpec::parse("zones/x volsize=4096").unwrap().if_absent,
            IfAbsent::Create { volsize: 4096 }
        );
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        for (text, says) in [
            ("", "empty"),
            ("zones", "not a volume name"),
            ("zones/", "not a volume name"),
            ("/a", "not a volume name"),
            ("zones/a b", "expected volsize"),
            ("zones/a/b", "not a volume name"),
            ("zones/a@s", "not a volume name"),
            ("zones/a volsize=0", "above 0"),
            ("zones/a volsize=x", "above 0"),
            ("zones/a origin=zones/img", "not a snapshot name"),
            ("zones/a volsize=1 origin=zones/i@s", "at most"),
            ("zones/a\u{e9}", "not a volume name"),
        ] {
            let e = VolumeSpec::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        assert!(VolumeSpec::parse(&format!("zones/{}", "a".repeat(300))).is_err());
    }
}
