//! The pool at boot (issue 12, item 9): storaged looks at every machine
//! disk it found and
//! * **imports** the pool whose labels it finds (the one the boot
//!   configuration names if several pools are there; a mirror with a side
//!   missing imports DEGRADED);
//! * else **creates** the pool the boot configuration names, on the disks
//!   it names, if every one of them is blank;
//! * **reports** every other disk and leaves it untouched: one holding data
//!   storaged does not recognise, a member of another pool (or of a pool
//!   that failed to import), a blank disk nobody asked for.
//!
//! Disks outside the pool that are not pool members are still served whole
//! to the clients init started (as before the pool); members of a pool
//! storaged did not import are served to nobody (writing them whole would
//! damage that pool).
//!
//! "Blank" means the first and last [`BLANK_PROBE_BYTES`] read as zeros:
//! where partition tables (MBR, GPT and its backup), file-system
//! superblocks (ext4, XFS, btrfs, ISO 9660) and pool labels (ours, ZFS's)
//! live. A disk that fails a read while being looked at is reported too.
//!
//! The boot configuration is storaged's manifest arguments:
//! `pool=NAME` (create NAME when no pool is found), `pool-vdev=disk|mirror`
//! (default `disk`), `pool-disks=SEL,SEL…` where a selector is a disk's
//! index in PCI order, its serial or its name. `pool-admin=NAME,…` names
//! the servers that may use the pool interface besides init (default: the
//! control plane, `zone-server`), matched against the callers init lists
//! in storaged's start-up information.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use alcove_pool::Pool;
use alcove_pool::format::{LabelHeader, MAX_CHILDREN};
use alcove_pool::pool::read_label;
use libipc::blkring::{BlockDevice, SECTOR_BYTES};
use libipc::interfaces::DiskReport;

use crate::volume::MachineDisk;
use crate::{Disk, MachinePool};

/// Bytes at each end of a disk that must read as zeros for it to be blank.
pub const BLANK_PROBE_BYTES: u64 = 1 << 20;

/// The pool the boot configuration asks for when none is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolPlan {
    pub name: String,
    pub mirror: bool,
    /// Disk selectors: index (decimal), serial or name.
    pub disks: Vec<String>,
}

/// The boot configuration from storaged's arguments: `Ok(None)` when they
/// name no pool; `Err` names what is wrong (storaged then creates nothing,
/// and still imports what it finds).
pub fn parse_args(args: &[String]) -> Result<Option<PoolPlan>, String> {
    let (mut name, mut vdev, mut disks) = (None, None, None);
    for a in args {
        let Some((k, v)) = a.split_once('=') else { continue };
        match k {
            "pool" => name = Some(v.to_string()),
            "pool-vdev" => vdev = Some(v.to_string()),
            "pool-disks" => disks = Some(v.split(',').filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>()),
            "pool-admin" => {}
            k if k.starts_with("pool") => {
                return Err(format!("argument {a:?}: unknown (pool, pool-vdev, pool-disks, pool-admin)"));
            }
            _ => {}
        }
    }
    let Some(name) = name else {
        if vdev.is_some() || disks.is_some() {
            return Err("pool-vdev or pool-disks without pool=NAME".into());
        }
        return Ok(None);
    };
    let mirror = match vdev.as_deref() {
        None | Some("disk") => false,
        Some("mirror") => true,
        Some(v) => return Err(format!("pool-vdev={v}: must be disk or mirror")),
    };
    let disks = disks.ok_or_else(|| format!("pool={name}: pool-disks names no disks"))?;
    let want = if mirror { 2..=MAX_CHILDREN } else { 1..=1 };
    if !want.contains(&disks.len()) {
        return Err(format!(
            "pool={name}: a {} takes {} disks, pool-disks names {}",
            if mirror { "mirror" } else { "single-disk pool" },
            if mirror { format!("2 to {MAX_CHILDREN}") } else { "1".into() },
            disks.len()
        ));
    }
    Ok(Some(PoolPlan { name, mirror, disks }))
}

/// The servers (by manifest name) that may use the pool interface besides
/// init: `pool-admin=NAME,NAME…`, else the control plane, `zone-server`.
pub fn admin_names(args: &[String]) -> Vec<String> {
    args.iter()
        .find_map(|a| a.strip_prefix("pool-admin="))
        .map_or_else(|| vec![String::from("zone-server")], |v| v.split(',').map(String::from).collect())
}

/// What the boot found and did.
pub struct Booted<D: BlockDevice> {
    /// The pool, imported or created.
    pub pool: Option<MachinePool<D>>,
    /// Its disks' names, in the labels' order.
    pub pool_disks: Vec<String>,
    /// Disks served whole (not pool members).
    pub free: Vec<Disk<D>>,
    /// Every disk left out of the pool, and why.
    pub reports: Vec<DiskReport>,
    /// The pool was created at this start (not imported).
    pub created: bool,
}

enum Found {
    Member(LabelHeader),
    Blank,
    /// Not ours and not blank (why).
    Foreign(String),
}

fn classify<D: BlockDevice>(disk: &mut MachineDisk<D>) -> Found {
    if let Some(h) = read_label(disk) {
        return Found::Member(h);
    }
    let bytes = disk.0.capacity_sectors().saturating_mul(SECTOR_BYTES as u64);
    let probe = BLANK_PROBE_BYTES.min(bytes);
    let mut buf = vec![0u8; 64 * 1024];
    for start in [0, bytes - probe] {
        let mut at = start;
        while at < start + probe {
            let n = (buf.len() as u64).min(start + probe - at) as usize;
            if alcove_pool::Disk::read(disk, at, &mut buf[..n]).is_err() {
                return Found::Foreign(format!("read failed at byte {at}"));
            }
            if buf[..n].iter().any(|&b| b != 0) {
                return Found::Foreign("holds data storaged does not recognise (no pool label, not blank)".into());
            }
            at += n as u64;
        }
    }
    Found::Blank
}

/// Brings the pool up on `disks` (see the module): imports, or creates
/// what `plan` asks for (`guid` names a new pool), and reports the rest.
pub fn bring_up<D: BlockDevice>(disks: Vec<Disk<D>>, plan: Option<&PoolPlan>, guid: u64) -> Booted<D> {
    let mut seen: Seen<D> = Vec::new();
    for (i, Disk { info, device }) in disks.into_iter().enumerate() {
        let mut md = MachineDisk(device);
        let found = classify(&mut md);
        seen.push((i, info.name, info.serial, found, md));
    }
    let mut booted = Booted { pool: None, pool_disks: Vec::new(), free: Vec::new(), reports: Vec::new(), created: false };
    let report = |b: &mut Booted<D>, disk: &str, what: String| {
        log::warn!("{disk}: {what}");
        b.reports.push(DiskReport { disk: disk.into(), what });
    };

    // Pools on the disks: (guid, name), first seen first.
    let mut pools: Vec<(u64, String)> = Vec::new();
    for (_, _, _, f, _) in &seen {
        if let Found::Member(h) = f
            && !pools.iter().any(|(g, _)| *g == h.pool_guid)
        {
            pools.push((h.pool_guid, h.pool_name.clone()));
        }
    }
    let chosen = match plan {
        Some(p) if pools.iter().any(|(_, n)| *n == p.name) => pools.iter().find(|(_, n)| *n == p.name).map(|(g, _)| *g),
        _ if pools.len() == 1 => Some(pools[0].0),
        _ => None,
    };
    if let Some(pool_guid) = chosen {
        let mut members = Vec::new();
        let mut rest = Vec::new();
        for s in seen {
            match &s.3 {
                Found::Member(h) if h.pool_guid == pool_guid => members.push(s),
                _ => rest.push(s),
            }
        }
        seen = rest;
        members.sort_by_key(|s| if let Found::Member(h) = &s.3 { h.child } else { 0 });
        let names: Vec<String> = members.iter().map(|s| s.1.clone()).collect();
        let pool_name = pools.iter().find(|(g, _)| *g == pool_guid).map(|(_, n)| n.clone()).unwrap_or_default();
        match Pool::import(members.into_iter().map(|s| s.4).collect()) {
            Ok(pool) => {
                log::info!(
                    "pool {pool_name}: imported from {} ({}, txg {})",
                    names.join(", "),
                    pool.state(),
                    pool.txg()
                );
                if pool.log_replayed_damaged() > 0 {
                    // Acknowledged writes whose blocks were damaged since:
                    // their reads fail (scrub names them), the rest stay.
                    log::error!(
                        "pool {pool_name}: intent log: {} of {} replayed blocks failed their checksums; reads of them fail",
                        pool.log_replayed_damaged(),
                        pool.log_replayed()
                    );
                }
                if let Some(p) = pool.scrub_progress() {
                    // The scrub a power cut or a shutdown interrupted goes
                    // on (storaged walks it between requests).
                    log::info!(
                        "pool {pool_name}: scrub of txg {} in progress since {}: resumed at {} of {} bytes",
                        p.txg,
                        libipc::time::ctime(p.start),
                        p.bytes,
                        p.total
                    );
                }
                booted.pool = Some(pool);
                booted.pool_disks = names;
            }
            Err(e) => {
                for n in &names {
                    report(&mut booted, n, format!("member of pool {pool_name}, whose import failed: {e}; left untouched"));
                }
            }
        }
    }

    if booted.pool.is_none()
        && let Some(plan) = plan
    {
        if pools.iter().any(|(_, n)| *n == plan.name) {
            log::warn!("pool {}: not created: disks hold a pool of that name", plan.name);
        } else {
            create(&mut booted, &mut seen, plan, guid, &report);
        }
    }

    for (_, name, serial, found, md) in seen {
        // The disk as found at boot (its serial not asked for again).
        let info = libipc::interfaces::DiskInfo {
            name: name.clone(),
            serial,
            capacity_sectors: md.0.capacity_sectors(),
            read_only: md.0.read_only(),
        };
        match found {
            Found::Member(h) => report(
                &mut booted,
                &name,
                format!("member of pool {} (guid {:#x}), not imported; served to nobody", h.pool_name, h.pool_guid),
            ),
            Found::Foreign(why) => {
                report(&mut booted, &name, format!("{why}; left untouched"));
                booted.free.push(Disk { info, device: md.0 });
            }
            Found::Blank => {
                log::info!("{name}: blank, not in the pool");
                booted.free.push(Disk { info, device: md.0 });
            }
        }
    }
    booted
}

/// A disk looked at: index, name, serial, what is on it, the disk.
type SeenDisk<D> = (usize, String, String, Found, MachineDisk<D>);
type Seen<D> = Vec<SeenDisk<D>>;

fn create<D: BlockDevice>(
    booted: &mut Booted<D>,
    seen: &mut Seen<D>,
    plan: &PoolPlan,
    guid: u64,
    report: &dyn Fn(&mut Booted<D>, &str, String),
) {
    let mut picked = Vec::new();
    for sel in &plan.disks {
        let hit = seen.iter().position(|(i, name, serial, _, _)| {
            i.to_string() == *sel || (!serial.is_empty() && serial == sel) || name == sel
        });
        let Some(at) = hit else {
            log::warn!("pool {}: not created: no disk {sel:?}", plan.name);
            return;
        };
        if picked.contains(&at) {
            log::warn!("pool {}: not created: disk {sel:?} named twice", plan.name);
            return;
        }
        let (_, name, _, found, md) = &seen[at];
        if !matches!(found, Found::Blank) || md.0.read_only() {
            let why = if md.0.read_only() { "read-only" } else { "not blank" };
            report(booted, name, format!("named for pool {} but {why}: pool not created", plan.name));
            return;
        }
        picked.push(at);
    }
    // Take the picked disks out, in the plan's order.
    let mut chosen: Vec<Option<SeenDisk<D>>> = Vec::new();
    let mut order = picked.clone();
    order.sort_unstable();
    for &at in order.iter().rev() {
        chosen.push(Some(seen.remove(at)));
    }
    chosen.reverse();
    let mut disks = Vec::new();
    let mut names = Vec::new();
    for &at in &picked {
        let k = order.iter().position(|&o| o == at).unwrap_or(0);
        if let Some(s) = chosen[k].take() {
            names.push(s.1);
            disks.push(s.4);
        }
    }
    match Pool::create(&plan.name, disks, guid) {
        Ok(pool) => {
            log::info!(
                "pool {}: created on {} ({})",
                plan.name,
                names.join(", "),
                if plan.mirror { "mirror" } else { "single disk" }
            );
            booted.pool = Some(pool);
            booted.pool_disks = names;
            booted.created = true;
        }
        Err(e) => {
            for n in &names {
                report(booted, n, format!("creating pool {} on it failed: {e}; not served", plan.name));
            }
        }
    }
}
