//! The control plane's flow against a fake machine: what a verb creates,
//! starts, stops and gives back on the pool and through init.

extern crate std;

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use std::collections::BTreeMap;

use libipc::in_process::Loopback;
use libipc::interfaces::{
    PROC_START_DATA_MAX, PROC_START_DATA_TOTAL_MAX, PciFunction, ProcError, ProcState, ProcUsage, VmadmOutput, proc, vmadm,
};
use libipc::provision::{IfAbsent, VolumeSpec};

use crate::{Machine, ZoneServer};

/// Volumes (name → bytes, user properties), VMM instances (id → running,
/// volumes, json, budget) and grants, as storaged and init would keep them.
#[derive(Default)]
pub(crate) struct Fake {
    /// The image store's pool (a real one, in memory): images, and the
    /// instance disks cloned from them.
    pool: Option<alcove_pool::Pool<alcove_pool::MemDisk>>,
    /// Volumes that hold an image file a client put there.
    files: BTreeMap<String, Vec<u8>>,
    pub(crate) volumes: BTreeMap<String, (u64, BTreeMap<String, String>)>,
    vmms: BTreeMap<u32, (bool, Vec<String>, String, u32)>,
    grants: Vec<u64>,
    next: u32,
    seed: u64,
    fail_create_of: Option<String>,
    /// Instances whose power button was pressed, in order.
    buttons: Vec<u32>,
    /// Whether the guests power off when the button is pressed.
    guests_listen: bool,
    /// VMMs that end after this many more looks (`vmm_running`): the
    /// guest powers off between two of zone-server's looks.
    end_after_looks: BTreeMap<u32, u32>,
    /// What `wake_at` last asked for (`Some(None)`: no wake-up).
    pub(crate) wake_at: Option<Option<u64>>,
    /// Live VNIC grants (badge → lines), as netd keeps them.
    vnic_grants: BTreeMap<u64, Vec<String>>,
    /// VNIC grants made, in all.
    vnic_grants_made: u64,
    /// The image sources it reaches (crate::imgsrc_tests).
    pub(crate) net: crate::imgsrc_tests::FakeNet,
    /// Grants `regrant_vnics` made again, in all.
    vnic_regrants: u64,
    /// VMMs told that netd was restarted, in order.
    told_netd_restarted: Vec<u32>,
    /// `wake_after_reply` calls (the wake-ups the serve loop would deliver).
    wakes: u32,
    /// Whether `wake_after_reply` can wake the server.
    can_wake: bool,
    /// Seconds the clock has moved on (`unix_seconds`).
    pub(crate) later_secs: u64,
    /// init's `proc` as far as a VMM's start data goes.
    pub(crate) init: FakeInit,
    /// Snapshots taken and rollbacks made, in order.
    pub(crate) snapshot_calls: Vec<String>,
    /// `set_property` calls that still reach the pool (`None`: all).
    pub(crate) sets_left: Option<u32>,
    /// VMMs told that their VM's metadata changed, in order.
    pub(crate) told_metadata: Vec<u32>,
}

/// init's `proc` for start data, reached through a real `proc::Client`
/// (so every request must fit one message): chunks staged with
/// `append_start_data` under init's rules, then `start` takes them and its
/// own bytes. A request that breaks the rules fails the test.
#[derive(Default)]
pub(crate) struct FakeInit {
    staged: Vec<u8>,
    /// Each start's whole start data, in order.
    pub(crate) started: Vec<Vec<u8>>,
    /// `append_start_data` calls, in all.
    pub(crate) appends: u32,
}

impl proc::Server for FakeInit {
    fn start(&mut self, template: String, start_data: Vec<u8>, _budget_kib: u32) -> Result<u32, ProcError> {
        assert_eq!(template, crate::host::VMM_TEMPLATE);
        assert!(start_data.len() <= PROC_START_DATA_MAX as usize, "start with {} bytes", start_data.len());
        assert!(!start_data.is_empty(), "a start with nothing of its own");
        let mut whole = core::mem::take(&mut self.staged);
        whole.extend(start_data);
        assert!(whole.len() <= PROC_START_DATA_TOTAL_MAX as usize);
        self.started.push(whole);
        Ok(self.started.len() as u32)
    }
    fn append_start_data(&mut self, offset: u32, chunk: Vec<u8>) -> Result<u32, ProcError> {
        self.appends += 1;
        assert!(chunk.len() <= PROC_START_DATA_MAX as usize, "a chunk of {} bytes", chunk.len());
        if offset == 0 {
            self.staged.clear();
        }
        assert_eq!(offset as usize, self.staged.len(), "chunks in order");
        self.staged.extend(chunk);
        assert!(self.staged.len() <= PROC_START_DATA_TOTAL_MAX as usize);
        Ok(self.staged.len() as u32)
    }
    fn state(&mut self, instance: u32) -> Result<ProcState, ProcError> {
        Err(ProcError::NoSuchInstance { instance })
    }
    fn stop(&mut self, instance: u32) -> Result<ProcState, ProcError> {
        Err(ProcError::NoSuchInstance { instance })
    }
    fn usage(&mut self) -> ProcUsage {
        ProcUsage::default()
    }
    fn give(&mut self, name: String) -> Result<(), ProcError> {
        Err(ProcError::BadCapability { name, why: "not in this fake".into() })
    }
    fn pci_claim(&mut self, function: PciFunction) -> Result<(), ProcError> {
        Err(ProcError::PciClaim { function, why: "not in this fake".into() })
    }
    fn control(&mut self, _instance: u32) -> Result<(), ProcError> {
        Err(ProcError::BadCapability { name: "control".into(), why: "not in this fake".into() })
    }
}

libipc::impl_dispatch!(FakeInit: proc);

/// An image file's bytes, read from the front.
pub(crate) struct FileBytes(Vec<u8>, usize);

impl alcove_images::store::FileReader for FileBytes {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, alcove_images::Error> {
        let n = buf.len().min(self.0.len() - self.1);
        buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

impl Machine for Fake {
    type Images = alcove_pool::Pool<alcove_pool::MemDisk>;
    type File = FileBytes;
    fn images(&mut self) -> &mut Self::Images {
        self.pool.get_or_insert_with(|| {
            alcove_pool::Pool::create("zones", vec![alcove_pool::MemDisk::new(48 << 20)], 0x1234).expect("pool")
        })
    }
    type Net = crate::imgsrc_tests::FakeNet;
    fn net_and_images(&mut self) -> (&mut Self::Net, &mut Self::Images) {
        self.images();
        (&mut self.net, self.pool.as_mut().expect("the pool was made"))
    }
    fn open_file(&mut self, volume: &str, bytes: u64) -> Result<FileBytes, String> {
        let data = self.files.get(volume).ok_or_else(|| alloc::format!("pool: {volume}: not found"))?;
        if (data.len() as u64) < bytes {
            return Err(alloc::format!("the volume holds {} bytes, files[0].size says {bytes}", data.len()));
        }
        Ok(FileBytes(data[..bytes as usize].to_vec(), 0))
    }
    fn unix_seconds(&mut self) -> u64 {
        1_764_782_733 + self.later_secs
    }
    fn random(&mut self, buf: &mut [u8]) {
        for b in buf {
            // A 64-bit LCG (Knuth's MMIX constants), top byte.
            self.seed = self.seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            *b = (self.seed >> 56) as u8;
        }
    }
    fn create_volume(&mut self, name: &str, bytes: u64) -> Result<(), String> {
        if self.fail_create_of.as_deref() == Some(name) {
            return Err("pool: out of space".into());
        }
        if self.volumes.contains_key(name) {
            return Err(alloc::format!("pool: {name}: already exists"));
        }
        self.volumes.insert(name.into(), (bytes, BTreeMap::new()));
        Ok(())
    }
    fn destroy_volume(&mut self, name: &str) -> Result<(), String> {
        if self.vmms.values().any(|(run, vols, _, _)| *run && vols.iter().any(|v| v == name)) {
            return Err(alloc::format!("pool: busy: {name} is granted"));
        }
        if self.images().get(name).is_ok() {
            self.images().destroy(name, true).map_err(|e| alloc::format!("pool: {e}"))?;
        }
        // Recursive, as zone-server asks: its snapshots go with it.
        self.volumes.retain(|n, _| !n.strip_prefix(name).is_some_and(|rest| rest.starts_with('@')));
        self.volumes.remove(name).map(|_| ()).ok_or_else(|| alloc::format!("pool: {name}: not found"))
    }
    fn snapshot_volume(&mut self, snapshot: &str) -> Result<(), String> {
        let (volume, _) = snapshot.split_once('@').ok_or("pool: not a snapshot name")?;
        let bytes = self.volumes.get(volume).ok_or_else(|| alloc::format!("pool: {volume}: not found"))?.0;
        if self.volumes.contains_key(snapshot) {
            return Err(alloc::format!("pool: {snapshot}: already exists"));
        }
        self.volumes.insert(snapshot.into(), (bytes, BTreeMap::new()));
        self.snapshot_calls.push(alloc::format!("snapshot {snapshot}"));
        Ok(())
    }
    fn rollback_volume(&mut self, snapshot: &str) -> Result<(), String> {
        let (volume, _) = snapshot.split_once('@').ok_or("pool: not a snapshot name")?;
        if self.vmms.values().any(|(run, vols, _, _)| *run && vols.iter().any(|v| v == volume)) {
            return Err(alloc::format!("pool: busy: {volume} is granted"));
        }
        if !self.volumes.contains_key(snapshot) {
            return Err(alloc::format!("pool: {snapshot}: not found"));
        }
        self.snapshot_calls.push(alloc::format!("rollback {snapshot}"));
        Ok(())
    }
    fn set_property(&mut self, name: &str, key: &str, value: &str, append: bool) -> Result<(), String> {
        // The machine's power goes after this many more (each committed).
        if let Some(left) = self.sets_left.as_mut() {
            if *left == 0 {
                return Err("pool: the machine lost power".into());
            }
            *left -= 1;
        }
        let (_, props) = self.volumes.get_mut(name).ok_or_else(|| alloc::format!("pool: {name}: not found"))?;
        let v = props.entry(key.into()).or_default();
        if !append {
            v.clear();
        }
        v.push_str(value);
        Ok(())
    }
    fn prepare_volumes(&mut self, specs: &[VolumeSpec]) -> Result<Vec<String>, String> {
        let mut created = Vec::new();
        for s in specs {
            if self.volumes.contains_key(&s.name) {
                continue;
            }
            match &s.if_absent {
                IfAbsent::Fail => return Err(alloc::format!("volume {}: no such volume", s.name)),
                IfAbsent::Create { volsize } => self.create_volume(&s.name, *volsize)?,
                IfAbsent::Clone { origin } => {
                    self.images().clone_snapshot(origin, &s.name).map_err(|e| alloc::format!("pool: {e}"))?;
                    let bytes = self.images().get(&s.name).map_err(|e| alloc::format!("pool: {e}"))?.volsize;
                    self.volumes.insert(s.name.clone(), (bytes, BTreeMap::new()));
                }
            }
            created.push(s.name.clone());
        }
        Ok(created)
    }
    fn start_vmm(&mut self, specs: &[VolumeSpec], vm_json: &str, budget_kib: u32) -> Result<(u32, u64), String> {
        self.prepare_volumes(specs)?;
        let volumes: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        // vm.json through init's `proc` as the binary sends it: staged in
        // pieces when it is longer than one message; what the VMM gets is
        // what init put together.
        let procs = proc::Client::new(Loopback::new(core::mem::take(&mut self.init)));
        let started = crate::host::stage_start_data(&procs, vm_json.as_bytes()).and_then(|last| {
            procs.start(crate::host::VMM_TEMPLATE.into(), last, budget_kib).map_err(|e| e.to_string())?.map_err(|e| e.to_string())
        });
        self.init = procs.into_transport().into_inner();
        started?;
        let got = self.init.started.last().cloned().unwrap_or_default();
        let vm_json = String::from_utf8(got).map_err(|_| "vm.json: not UTF-8".to_string())?;
        self.next += 1;
        self.vmms.insert(self.next, (true, volumes, vm_json, budget_kib));
        self.grants.push(u64::from(self.next) + 100);
        Ok((self.next, u64::from(self.next) + 100))
    }
    fn vmm_running(&mut self, instance: u32) -> Result<bool, String> {
        if let Some(n) = self.end_after_looks.get_mut(&instance) {
            if *n == 0 {
                self.end_after_looks.remove(&instance);
                if let Some(v) = self.vmms.get_mut(&instance) {
                    v.0 = false;
                }
            } else {
                *n -= 1;
            }
        }
        self.vmms.get(&instance).map(|v| v.0).ok_or_else(|| "proc: no instance".into())
    }
    fn stop_vmm(&mut self, instance: u32) -> Result<(), String> {
        self.vmms.remove(&instance).map(|_| ()).ok_or_else(|| "proc: no instance".into())
    }
    fn power_button(&mut self, instance: u32) -> Result<(), String> {
        let vmm = self.vmms.get_mut(&instance).ok_or("proc: no instance")?;
        self.buttons.push(instance);
        // A guest listening to the button powers off (its VMM ends).
        if self.guests_listen {
            vmm.0 = false;
        }
        Ok(())
    }
    fn wake_at(&mut self, unix_ms: Option<u64>) {
        self.wake_at = Some(unix_ms);
    }
    fn revoke(&mut self, grant: u64) -> Result<(), String> {
        let at = self.grants.iter().position(|&g| g == grant).ok_or("pool: no grant")?;
        self.grants.remove(at);
        Ok(())
    }
    fn grant_vnics(&mut self, lines: &[String]) -> Result<u64, String> {
        // netd's switches here: an etherstub and a nic_tag.
        for (i, l) in lines.iter().enumerate() {
            let switch = l.split_whitespace().find_map(|w| w.strip_prefix("switch=")).unwrap_or("");
            if switch != "stub0" && switch != "admin" {
                return Err(alloc::format!("vnic: VNIC {i}: property \"switch\": {switch:?} is no etherstub or nic_tag of netd"));
            }
        }
        self.vnic_grants_made += 1;
        let badge = (1 << 48) + self.vnic_grants_made;
        self.vnic_grants.insert(badge, lines.to_vec());
        Ok(badge)
    }
    fn revoke_vnics(&mut self, badge: u64) -> Result<(), String> {
        self.vnic_grants.remove(&badge).map(|_| ()).ok_or_else(|| alloc::format!("vnic: no grant {badge:#x}"))
    }
    fn regrant_vnics(&mut self, badge: u64, lines: &[String]) -> Result<bool, String> {
        // As netd: a live grant is not made twice, a MAC is on a switch once.
        if self.vnic_grants.contains_key(&badge) {
            return Ok(false);
        }
        let mac = |l: &String| l.split_whitespace().find(|w| w.starts_with("mac=")).map(String::from);
        if self.vnic_grants.values().flatten().any(|l| lines.iter().any(|n| mac(n) == mac(l))) {
            return Err("vnic: property \"mac\": already on switch".into());
        }
        self.vnic_grants.insert(badge, lines.to_vec());
        self.vnic_regrants += 1;
        Ok(true)
    }
    fn metadata_changed(&mut self, instance: u32) -> Result<(), String> {
        match self.vmms.get(&instance) {
            Some((true, ..)) => {
                self.told_metadata.push(instance);
                Ok(())
            }
            _ => Err("no such VMM".into()),
        }
    }
    fn netd_restarted(&mut self, instance: u32) -> Result<(), String> {
        match self.vmms.get(&instance) {
            Some((true, ..)) => {
                self.told_netd_restarted.push(instance);
                Ok(())
            }
            _ => Err("no such VMM".into()),
        }
    }
    fn list_volumes(&mut self) -> Result<Vec<String>, String> {
        Ok(self.volumes.keys().cloned().collect())
    }
    fn get_property(&mut self, name: &str, key: &str) -> Result<Option<String>, String> {
        let (_, props) = self.volumes.get(name).ok_or_else(|| alloc::format!("pool: {name}: not found"))?;
        Ok(props.get(key).cloned())
    }
    fn vmm_instances(&mut self) -> Result<u32, String> {
        Ok(self.vmms.len() as u32)
    }
    fn wake_after_reply(&mut self) -> bool {
        self.wakes += 1;
        self.can_wake
    }
}

pub(crate) const BADGE: u64 = 5;

pub(crate) fn server() -> ZoneServer<Fake> {
    ZoneServer::new(Fake::default(), vec![BADGE])
}

/// `vmadm ARGS` as the shell and apid send it (`vmadm.begin`, then
/// `vmadm.step` while it waits for a guest, a second passing between two
/// steps).
pub(crate) fn run(s: &mut ZoneServer<Fake>, args: &[&str], stdin: &str) -> VmadmOutput {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut step = s.begin("vmadm", &args, stdin.into());
    while step.pending {
        s.host.machine.later_secs += 1;
        step = s.step();
    }
    let out = s.outputs[&s.caller].clone();
    assert_eq!((out.stdout.len() as u32, out.stderr.len() as u32, out.code), (step.stdout_bytes, step.stderr_bytes, step.code));
    out
}

const PAYLOAD: &str = r#"{
  "brand": "bhyve",
  "alias": "web0",
  "ram": 64,
  "vcpus": 1,
  "kernel": "/zone-guest",
  "disks": [{"size": 16}, {"size": 8}]
}"#;

pub(crate) fn created_uuid(out: &VmadmOutput) -> String {
    assert_eq!(out.code, 0, "{out:?}");
    // vmadm: "Successfully created VM <uuid>" on stderr.
    out.stderr.trim().rsplit(' ').next().unwrap().to_string()
}

#[test]
fn create_list_stop_delete_gives_everything_back() {
    let mut s = server();
    let out = run(&mut s, &["create"], PAYLOAD);
    let uuid = created_uuid(&out);
    let f = &s.host.machine;
    // The record volume and one volume per disk, with the disk's size.
    let disk0 = alloc::format!("zones/{uuid}-disk0");
    let disk1 = alloc::format!("zones/{uuid}-disk1");
    assert_eq!(f.volumes.get(&disk0).map(|v| v.0), Some(16 << 20));
    assert_eq!(f.volumes.get(&disk1).map(|v| v.0), Some(8 << 20));
    assert!(f.volumes.contains_key(&alloc::format!("zones/{uuid}-vm")));
    // The record holds the instance, running.
    let record: serde_json::Value = serde_json::from_str(&stored_record(f, &uuid)).unwrap();
    assert_eq!(record["uuid"], uuid.as_str());
    assert_eq!(record["state"], "running");
    // One VMM holding exactly its volumes, in disk order, with a budget
    // that covers its RAM and a description vmm-server accepts.
    assert_eq!(f.vmms.len(), 1);
    let (_, vols, json, budget) = f.vmms.values().next().unwrap().clone();
    assert_eq!(vols, [disk0.clone(), disk1.clone()]);
    let config = vmm_server::config::VmConfig::from_json(&json).unwrap();
    assert_eq!((config.ram_mib, config.disks.len(), config.kernel.as_str()), (64, 2, "/zone-guest"));
    assert!((64 * 1024..80 * 1024).contains(&budget), "{budget}");

    let list = run(&mut s, &["list", "-p", "-o", "uuid,state,alias"], "");
    assert_eq!(list.stdout, alloc::format!("{uuid}:running:web0\n"));

    let out = run(&mut s, &["stop", &uuid], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(s.host.machine.vmms.is_empty() && s.host.machine.grants.is_empty());
    let list = run(&mut s, &["list", "-p", "-o", "state"], "");
    assert_eq!(list.stdout, "stopped\n");

    // Started again: a new VMM.
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    assert_eq!(s.host.machine.vmms.len(), 1);

    // Delete halts it and gives back every volume.
    let out = run(&mut s, &["delete", &uuid], "");
    assert_eq!(out.code, 0, "{out:?}");
    let f = &s.host.machine;
    assert!(f.volumes.is_empty(), "{:?}", f.volumes.keys().collect::<Vec<_>>());
    assert!(f.vmms.is_empty() && f.grants.is_empty());
    assert_eq!(run(&mut s, &["list", "-p"], "").stdout, "");
}

/// `vmadm create-snapshot` snapshots every disk volume of the VM on the
/// pool (`@vmsnap-NAME`), all or none; `rollback-snapshot` rolls each
/// back (a running VM halted first and started again after);
/// `delete-snapshot` destroys them; `delete` takes the rest with the
/// volumes.
#[test]
fn a_vm_s_snapshots_are_pool_snapshots_of_every_disk() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let snap = |d: u32, n: &str| alloc::format!("zones/{uuid}-disk{d}@vmsnap-{n}");
    for n in ["one", "two"] {
        let out = run(&mut s, &["create-snapshot", &uuid, n], "");
        assert_eq!((out.code, out.stderr.clone()), (0, alloc::format!("Created snapshot {n} for VM {uuid}\n")), "{out:?}");
    }
    for d in 0..2 {
        assert!(s.host.machine.volumes.contains_key(&snap(d, "one")) && s.host.machine.volumes.contains_key(&snap(d, "two")));
    }
    // A disk whose snapshot fails: the other's is destroyed again.
    s.host.machine.volumes.insert(snap(1, "three"), (0, BTreeMap::new()));
    let out = run(&mut s, &["create-snapshot", &uuid, "three"], "");
    assert!(out.code == 1 && out.stderr.contains("already exists"), "{out:?}");
    assert!(!s.host.machine.volumes.contains_key(&snap(0, "three")));
    s.host.machine.volumes.remove(&snap(1, "three"));
    // Running: halted (its grant revoked, so the disks roll back), then
    // started again by a new VMM.
    let before: Vec<u32> = s.host.machine.vmms.keys().copied().collect();
    let out = run(&mut s, &["rollback-snapshot", &uuid, "one"], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        s.host.machine.snapshot_calls[5..],
        [alloc::format!("rollback {}", snap(0, "one")), alloc::format!("rollback {}", snap(1, "one"))]
    );
    let after: Vec<u32> = s.host.machine.vmms.keys().copied().collect();
    assert!(after.len() == 1 && after != before, "{before:?} -> {after:?}");
    assert_eq!(run(&mut s, &["list", "-p", "-o", "state"], "").stdout, "running\n");
    assert_eq!(run(&mut s, &["stop", &uuid, "-F"], "").code, 0);
    assert_eq!(run(&mut s, &["rollback-snapshot", &uuid, "one"], "").code, 0);
    assert!(!s.host.machine.volumes.contains_key(&snap(0, "two")) && !s.host.machine.volumes.contains_key(&snap(1, "two")));
    let got: serde_json::Value = serde_json::from_str(&run(&mut s, &["get", &uuid], "").stdout).unwrap();
    assert_eq!(got["snapshots"].as_array().map(|a| a.len()), Some(1), "{got}");
    // The record on the pool lists it too.
    let rec: serde_json::Value =
        serde_json::from_str(&stored_record(&s.host.machine, &uuid)).unwrap();
    assert_eq!(rec["snapshots"][0]["name"], "one");
    assert_eq!(run(&mut s, &["delete-snapshot", &uuid, "one"], "").code, 0);
    assert!(!s.host.machine.volumes.keys().any(|k| k.contains('@')), "{:?}", s.host.machine.volumes.keys().collect::<Vec<_>>());
    assert_eq!(run(&mut s, &["create-snapshot", &uuid, "kept"], "").code, 0);
    assert_eq!(run(&mut s, &["delete", &uuid], "").code, 0);
    assert!(s.host.machine.volumes.is_empty(), "{:?}", s.host.machine.volumes.keys().collect::<Vec<_>>());
}

#[test]
fn a_bad_payload_gets_vmadm_s_error_json_and_changes_nothing() {
    let mut s = server();
    let bad = r#"{"brand": "bhyve", "ram": "lots", "kernel": "/k", "bogus": 1}"#;
    let out = run(&mut s, &["create"], bad);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("Invalid value(s) for: ram") && out.stderr.contains("\"bogus\""), "{out:?}");
    // validate prints SmartOS's problem object.
    let out = run(&mut s, &["validate", "create"], bad);
    assert_eq!(out.code, 1, "{out:?}");
    let json = &out.stderr[out.stderr.find('{').unwrap_or_else(|| panic!("{out:?}"))..];
    let err: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|_| panic!("{out:?}"));
    assert!(err["bad_values"].as_array().unwrap().iter().any(|v| v == "ram"), "{err}");
    assert!(err["bad_properties"].as_array().unwrap().iter().any(|v| v == "bogus"), "{err}");
    assert!(s.host.machine.volumes.is_empty() && s.host.machine.vmms.is_empty());
    assert_eq!(run(&mut s, &["list", "-p"], "").stdout, "");
    // Not JSON at all.
    let out = run(&mut s, &["create"], "{not json");
    assert_eq!(out.code, 1);
    assert!(s.host.machine.volumes.is_empty());
    // No payload.
    assert_eq!(run(&mut s, &["create"], "").code, 1);
    // Too large a payload, staged or not.
    let huge = "x".repeat(libipc::interfaces::VMADM_STDIN_MAX as usize + 1);
    let out = run(&mut s, &["create"], &huge);
    assert!(out.code == 1 && out.stderr.contains("at most"), "{out:?}");
}

/// `vmadm ARGS` from client `badge` over the kernel's message limits.
struct Badged<'a>(&'a core::cell::RefCell<ZoneServer<Fake>>, u64);

impl libipc::Transport for Badged<'_> {
    fn call(&self, interface: u32, request: &[u8]) -> Result<Vec<u8>, libipc::IpcError> {
        if request.len() > libipc::wire::MAX_PAYLOAD_BYTES {
            return Err(libipc::IpcError::MessageTooLong);
        }
        let r = libipc::Dispatch::dispatch_from(&mut *self.0.borrow_mut(), self.1, interface, request);
        match r {
            Ok(bytes) if bytes.len() > libipc::wire::MAX_PAYLOAD_BYTES => Err(libipc::IpcError::ServerError(libipc::RemoteError::ReplyTooLong)),
            other => other.map_err(libipc::IpcError::from),
        }
    }
}

/// `vmadm update` of a running VM's metadata (`set_customer_metadata`,
/// `tags`, ...) takes effect at once, as SmartOS's: zone-server signals
/// its VMM (`VMM_CONTROL_METADATA`), which reads its description again
/// through `mdata.config` in pieces (its own VM's alone; another badge
/// finds no VM). Other live properties still wait for the next start,
/// said so; a stopped VM's VMM is not told.
#[test]
fn a_running_vm_s_metadata_updates_reach_its_vmm() {
    use libipc::interfaces::{MDATA_PIECE_MAX, mdata, proc_instance_badge};
    let s = core::cell::RefCell::new(ZoneServer::new(Fake::default(), vec![0]));
    let payload = r#"{"brand": "bhyve", "alias": "live", "ram": 64, "kernel": "/k", "disks": [{"size": 8}], "customer_metadata": {"old": "1"}}"#;
    let a = created_uuid(&run(&mut s.borrow_mut(), &["create"], payload));
    let ia = s.borrow().host.running.get(&alcove_vmadm::uuid::Uuid::parse(&a).unwrap()).map(|r| r.instance).unwrap();
    let long = "u".repeat(5000);
    let update = alloc::format!(r#"{{"set_customer_metadata": {{"user-script": "{long}"}}, "set_tags": {{"role": "db"}}}}"#);
    let out = run(&mut s.borrow_mut(), &["update", &a], &update);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(s.borrow().host.machine.told_metadata, [ia]);
    // The VMM reads its description again, in pieces.
    let t = Badged(&s, proc_instance_badge(ia));
    let c = mdata::Client::new(&t);
    let mut json = Vec::new();
    loop {
        let piece = c.config(json.len() as u32).unwrap().unwrap();
        assert!(piece.len() <= MDATA_PIECE_MAX as usize);
        if piece.is_empty() {
            break;
        }
        json.extend(piece);
    }
    let config = vmm_server::config::VmConfig::from_json(core::str::from_utf8(&json).unwrap()).unwrap();
    assert_eq!(config.customer_metadata.get("user-script"), Some(&long));
    assert_eq!(config.metadata["tags"]["role"], "db");
    let stranger = Badged(&s, proc_instance_badge(ia + 100));
    assert!(mdata::Client::new(&stranger).config(0).is_err());
    // cpu_cap still waits for the next start, and says so.
    let out = run(&mut s.borrow_mut(), &["update", &a, "cpu_cap=50"], "");
    assert!(out.code == 1 && out.stderr.contains("cpu_cap") && out.stderr.contains("next start"), "{out:?}");
    // Stopped: nobody to tell.
    assert_eq!(run(&mut s.borrow_mut(), &["stop", &a, "-F"], "").code, 0);
    assert_eq!(run(&mut s.borrow_mut(), &["update", &a], r#"{"set_customer_metadata": {"k": "v"}}"#).code, 0);
    assert_eq!(s.borrow().host.machine.told_metadata, [ia]);
}

/// A guest's metadata changes come back from its VMM (`mdata.change`,
/// called with the VMM instance's badge) and land in the VM's record, as
/// `vmadm update`'s `set_customer_metadata`/`remove_customer_metadata`
/// would (`_pw` keys in `internal_metadata`); a value longer than one
/// message in pieces. vmadm's limits hold (the change is refused, the
/// record unchanged); a badge that is no running VM's VMM finds no such
/// interface, and a VMM reaches only its own VM.
#[test]
fn a_guests_metadata_changes_are_written_back_to_its_record() {
    use libipc::interfaces::{MDATA_PIECE_MAX, mdata, proc_instance_badge};
    let s = core::cell::RefCell::new(ZoneServer::new(Fake::default(), vec![0]));
    let payload = |alias: &str| alloc::format!(r#"{{"brand": "bhyve", "alias": "{alias}", "ram": 64, "kernel": "/k", "disks": [{{"size": 8}}], "customer_metadata": {{"old": "1"}}}}"#);
    let a = created_uuid(&run(&mut s.borrow_mut(), &["create"], &payload("md-a")));
    let b = created_uuid(&run(&mut s.borrow_mut(), &["create"], &payload("md-b")));
    let instance = |u: &str| s.borrow().host.running.get(&alcove_vmadm::uuid::Uuid::parse(u).unwrap()).map(|r| r.instance).unwrap();
    let (ia, ib) = (instance(&a), instance(&b));
    let ta = Badged(&s, proc_instance_badge(ia));
    let ca = mdata::Client::new(&ta);
    let get = |u: &str| -> serde_json::Value { serde_json::from_str(&run(&mut s.borrow_mut(), &["get", u], "").stdout).unwrap() };
    assert_eq!(ca.change(false, "role".into(), Some("db".into()), false).unwrap(), Ok(2));
    assert_eq!(ca.change(true, "root_pw".into(), Some("s3cret".into()), false).unwrap(), Ok(6));
    assert_eq!(ca.change(false, "old".into(), None, false).unwrap(), Ok(0));
    // 5000 bytes in three pieces.
    let long = "x".repeat(5000);
    for (i, piece) in long.as_bytes().chunks(MDATA_PIECE_MAX as usize).enumerate() {
        let last = (i + 1) * MDATA_PIECE_MAX as usize >= long.len();
        assert!(ca.change(false, "script".into(), Some(core::str::from_utf8(piece).unwrap().into()), !last).unwrap().is_ok());
    }
    let vm = get(&a);
    assert_eq!(vm["customer_metadata"], serde_json::json!({"role": "db", "script": long}));
    assert_eq!(vm["internal_metadata"]["root_pw"], "s3cret");
    // Saved: the record on the pool says so too.
    let stored = stored_record(&s.borrow().host.machine, &a);
    assert!(stored.contains("\"role\":\"db\""), "{stored}");
    // The other VM is untouched: A's VMM cannot name it.
    assert_eq!(get(&b)["customer_metadata"], serde_json::json!({"old": "1"}));
    // Refused as vmadm refuses, the record unchanged.
    let before = get(&a);
    let too_long = "k".repeat(300);
    assert!(ca.change(false, too_long, Some("v".into()), false).unwrap().is_err());
    assert!(ca.change(false, "big".into(), Some("y".repeat(MDATA_PIECE_MAX as usize + 1)), false).unwrap().is_err());
    let piece = "z".repeat(MDATA_PIECE_MAX as usize);
    let mut refused = false;
    for _ in 0..(alcove_vmadm::properties::MAX_META_VALUE / MDATA_PIECE_MAX as usize + 1) {
        if ca.change(false, "huge".into(), Some(piece.clone()), true).unwrap().is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a value past MAX_META_VALUE");
    let mut after = get(&a);
    after.as_object_mut().unwrap().remove("last_modified");
    let mut before = before;
    before.as_object_mut().unwrap().remove("last_modified");
    assert_eq!(after, before);
    // Not a running VM's VMM: no such interface. A stopped VM's VMM is gone.
    let stranger = Badged(&s, proc_instance_badge(ia.max(ib) + 100));
    let r = mdata::Client::new(&stranger).change(false, "k".into(), Some("v".into()), false);
    assert!(r.is_err(), "{r:?}");
    assert_eq!(run(&mut s.borrow_mut(), &["stop", &b, "-F"], "").code, 0);
    let tb = Badged(&s, proc_instance_badge(ib));
    assert!(mdata::Client::new(&tb).change(false, "k".into(), Some("v".into()), false).is_err());
    // A vmadm client is no VMM either.
    let admin = Badged(&s, 0);
    assert!(mdata::Client::new(&admin).change(false, "k".into(), Some("v".into()), false).is_err());
}

/// A SmartOS payload with a 6 KiB `user-script`: more than one
/// message, so `vmadm_run_whole` stages it in pieces (`vmadm.stage_stdin`)
/// and the VM is made with every byte of it. Staging's refusals (a piece
/// too large, a payload past `VMADM_STDIN_MAX`) drop the caller's staging;
/// `first` drops a restarted client's leftovers; one client's staging is
/// never another's payload.
#[test]
fn payloads_larger_than_one_message_are_staged() {
    use libipc::interfaces::{VMADM_STAGE_PIECE_MAX, VMADM_STDIN_MAX, vmadm_run_whole};
    let s = core::cell::RefCell::new(ZoneServer::new(Fake::default(), vec![1, 2]));
    let (one, two) = (Badged(&s, 1), Badged(&s, 2));
    let (c1, c2) = (vmadm::Client::new(&one), vmadm::Client::new(&two));
    // Multi-byte characters across the pieces' cuts too.
    let script: String = (0..6 * 1024 / 8).map(|i| if i % 3 == 0 { "é—ab\n".to_string() } else { alloc::format!("{i:07}\n") }).collect();
    let payload = serde_json::json!({"brand": "bhyve", "alias": "big", "ram": 64, "kernel": "/k", "disks": [{"size": 8}],
        "customer_metadata": {"user-script": script}})
    .to_string();
    assert!(payload.len() > 2 * libipc::interfaces::VMADM_REQUEST_MAX as usize);
    assert!(c1.run(vec!["create".into()], payload.clone()).is_err(), "one message cannot carry it");
    let out = vmadm_run_whole(&c1, "vmadm", vec!["create".into()], payload.clone(), || {}).unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let uuid = created_uuid(&out);
    let got = vmadm_run_whole(&c1, "vmadm", vec!["get".into(), uuid.clone()], String::new(), || {}).unwrap();
    let vm: serde_json::Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(vm["customer_metadata"]["user-script"].as_str(), Some(script.as_str()));
    // A piece over the limit: refused, and the caller's staging with it.
    assert_eq!(c1.stage_stdin("{\"brand\": ".into(), true).unwrap(), Ok(10));
    let big = "x".repeat(VMADM_STAGE_PIECE_MAX as usize + 1);
    assert!(c1.stage_stdin(big, false).unwrap().unwrap_err().contains("at most"));
    let out = c1.run(vec!["validate".into(), "create".into()], "{\"brand\": \"bhyve\", \"kernel\": \"/k\"}".into()).unwrap();
    assert_eq!(out.code, 0, "the refused staging was dropped: {out:?}");
    // Past VMADM_STDIN_MAX in all: refused at the piece that passes it.
    let piece = "y".repeat(VMADM_STAGE_PIECE_MAX as usize);
    let mut refused = None;
    for i in 0..(VMADM_STDIN_MAX / VMADM_STAGE_PIECE_MAX + 2) {
        if let Err(why) = c1.stage_stdin(piece.clone(), i == 0).unwrap() {
            refused = Some((i, why));
            break;
        }
    }
    let (at, why) = refused.expect("staging past VMADM_STDIN_MAX was refused");
    assert_eq!(at, VMADM_STDIN_MAX / VMADM_STAGE_PIECE_MAX, "{why}");
    assert_eq!(c1.run(vec!["create".into()], String::new()).unwrap().code, 1, "nothing staged: no payload");
    // Client 2's staging is not client 1's payload, and `first` drops
    // what client 2 left.
    assert!(c2.stage_stdin("garbage that is no JSON".into(), true).unwrap().is_ok());
    let list = c1.run(vec!["validate".into(), "create".into()], "{\"brand\": \"bhyve\", \"kernel\": \"/k\"}".into()).unwrap();
    assert_eq!(list.code, 0, "{list:?}");
    assert!(c2.stage_stdin("{\"brand\": \"bhyve\", ".into(), true).unwrap().is_ok());
    let out = c2.run(vec!["validate".into(), "create".into()], "\"kernel\": \"/k\"}".into()).unwrap();
    assert_eq!(out.code, 0, "the staged piece and the message's stdin, in order: {out:?}");
    // Only the one VM was made.
    assert_eq!(s.borrow().registry.len(), 1);
}

const NIC_PAYLOAD: &str = r#"{"brand": "bhyve", "alias": "net0", "ram": 64, "kernel": "/k", "disks": [{"size": 8}],
    "nics": [{"nic_tag": "stub0", "ips": ["10.0.0.5/24"], "vlan_id": 12, "primary": true},
             {"nic_tag": "admin", "mac": "02:08:20:aa:bb:cc", "ips": ["dhcp"], "allow_ip_spoofing": true}]}"#;

/// A VM's `nics[]` become a netd VNIC grant at each start (MAC given or
/// made stable from the uuid, VLAN, IP, protections), held by its VMM
/// alone; the grant goes back when the VMM ends and at delete.
#[test]
fn nics_become_a_vnic_grant_for_each_start_and_go_back_at_stop() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], NIC_PAYLOAD));
    let f = &s.host.machine;
    // The nic_tag check and provisioning's check were granted and given
    // back, then the start's.
    assert_eq!(f.vnic_grants_made, 3);
    assert_eq!(f.vnic_grants.len(), 1);
    let (badge, lines) = f.vnic_grants.iter().next().map(|(b, l)| (*b, l.clone())).unwrap();
    assert_eq!(lines.len(), 2);
    // vmadm made the first NIC's MAC (SmartOS's 90:b8:d0 prefix) and keeps it.
    assert!(lines[0].starts_with("switch=stub0 mac=90:b8:d0:") && lines[0].contains(" vlan_id=12 ip=10.0.0.5 "), "{lines:?}");
    assert!(lines[0].contains("allow_ip_spoofing=false allow_mac_spoofing=false"), "{lines:?}");
    assert_eq!(lines[1], "switch=admin mac=02:08:20:aa:bb:cc vlan_id=0 allow_ip_spoofing=true allow_mac_spoofing=false allow_dhcp_spoofing=false allow_restricted_traffic=false");
    // The VMM is started with both NICs (it attaches them through the grant).
    let (_, _, json, _) = f.vmms.values().next().unwrap().clone();
    assert_eq!(vmm_server::config::VmConfig::from_json(&json).unwrap().nics.len(), 2);
    // Where a restarted zone-server finds both grants.
    let rec = alloc::format!("zones/{uuid}-vm");
    let prop = &f.volumes[&rec].1[crate::host::VMM_PROP];
    assert!(prop.ends_with(&alloc::format!(":{badge}")), "{prop}");

    assert_eq!(run(&mut s, &["stop", &uuid, "-F"], "").code, 0);
    assert!(s.host.machine.vnic_grants.is_empty());
    // Started again: the same VNICs (the generated MAC is stable).
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    let again: Vec<Vec<String>> = s.host.machine.vnic_grants.values().cloned().collect();
    assert_eq!(again, [lines]);
    // A VMM that ends by itself gives its VNICs back at the next look.
    let instance = *s.host.machine.vmms.keys().next().unwrap();
    s.host.machine.vmms.get_mut(&instance).unwrap().0 = false;
    assert_eq!(run(&mut s, &["list", "-p", "-o", "state"], "").stdout, "stopped\n");
    assert!(s.host.machine.vnic_grants.is_empty());
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    assert_eq!(run(&mut s, &["delete", &uuid], "").code, 0);
    let f = &s.host.machine;
    assert!(f.vnic_grants.is_empty() && f.vmms.is_empty() && f.grants.is_empty() && f.volumes.is_empty());
}

/// Bad `nics[]` values are refused naming the property, and nothing is
/// made: a wrong MAC, a multicast MAC, vlan_id out of range, an unknown
/// nic_tag (netd's answer), 9 NICs, a missing nic_tag, a wrong type.
#[test]
fn bad_nics_are_refused_by_name_and_make_nothing() {
    let mut s = server();
    let with = |nics: &str| {
        alloc::format!(r#"{{"brand": "bhyve", "ram": 64, "kernel": "/k", "disks": [{{"size": 8}}], "nics": {nics}}}"#)
    };
    let nine: Vec<String> = (0..9).map(|_| String::from(r#"{"nic_tag": "stub0"}"#)).collect();
    let nine = alloc::format!("[{}]", nine.join(","));
    let cases = [
        (with(r#"[{"nic_tag": "stub0", "mac": "zz:00:00:00:00:01"}]"#), "mac"),
        (with(r#"[{"nic_tag": "stub0", "mac": "01:00:5e:00:00:01"}]"#), "mac"),
        (with(r#"[{"nic_tag": "stub0", "vlan_id": 4095}]"#), "vlan_id"),
        (with(r#"[{"nic_tag": "stub0", "vlan_id": -1}]"#), "vlan_id"),
        (with(r#"[{"nic_tag": "nosuch"}]"#), "nics"),
        (with(&nine), "nics"),
        (with(r#"[{"ips": ["dhcp"]}]"#), "nic_tag"),
        (with(r#"[{"nic_tag": 7}]"#), "nic_tag"),
        (with(r#""stub0""#), "nics"),
    ];
    for (payload, property) in cases {
        let out = run(&mut s, &["create"], &payload);
        assert_eq!(out.code, 1, "{payload}: {out:?}");
        assert!(out.stderr.contains(property), "{payload}: {out:?}");
        let f = &s.host.machine;
        assert!(f.volumes.is_empty() && f.vmms.is_empty() && f.vnic_grants.is_empty(), "{payload}");
        assert_eq!(run(&mut s, &["list", "-p"], "").stdout, "", "{payload}");
    }
    // The unknown nic_tag's message is netd's.
    let out = run(&mut s, &["create"], &with(r#"[{"nic_tag": "nosuch"}]"#));
    assert!(out.stderr.contains("\"nosuch\" is no etherstub or nic_tag"), "{out:?}");
}

#[test]
fn a_vmm_that_ends_by_itself_leaves_the_vm_stopped() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    assert_eq!(run(&mut s, &["list", "-p", "-o", "state"], "").stdout, "running\n");
    // The guest powers off: its VMM exits.
    s.host.machine.vmms.values_mut().for_each(|v| v.0 = false);
    assert_eq!(run(&mut s, &["list", "-p", "-o", "state"], "").stdout, "stopped\n");
    // Reaped and its grant revoked; the record says stopped.
    assert!(s.host.machine.vmms.is_empty() && s.host.machine.grants.is_empty());
    let rec = &stored_record(&s.host.machine, &uuid);
    assert!(rec.contains("\"state\":\"stopped\""), "{rec}");
    // It starts again.
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    assert_eq!(run(&mut s, &["list", "-p", "-o", "state"], "").stdout, "running\n");
}

#[test]
fn stop_presses_the_power_button_then_halts_after_its_timeout_and_dash_f_halts_at_once() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let first = *s.host.machine.vmms.keys().next().unwrap();
    // A guest that listens powers off: the first step finds it ended.
    s.host.machine.guests_listen = true;
    let t0 = s.host.machine.later_secs;
    assert_eq!(run(&mut s, &["stop", &uuid], "").code, 0);
    assert_eq!(s.host.machine.buttons, [first]);
    assert_eq!(s.host.machine.later_secs - t0, 1);
    assert!(s.host.machine.vmms.is_empty() && s.host.machine.grants.is_empty());
    assert_eq!(run(&mut s, &["list", "-p", "-o", "state"], "").stdout, "stopped\n");

    // A guest that ignores it: the button, `-t` seconds of steps, then
    // the VMM is ended all the same.
    s.host.machine.guests_listen = false;
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    let second = *s.host.machine.vmms.keys().next().unwrap();
    let t0 = s.host.machine.later_secs;
    let out = run(&mut s, &["stop", &uuid, "-t", "3"], "");
    assert_eq!((out.code, out.stderr), (0, alloc::format!("Successfully completed stop for VM {uuid}\n")));
    assert_eq!(s.host.machine.buttons, [first, second]);
    assert_eq!(s.host.machine.later_secs - t0, 3);
    assert!(s.host.machine.vmms.is_empty() && s.host.machine.grants.is_empty());
    assert_eq!(run(&mut s, &["list", "-p", "-o", "state"], "").stdout, "stopped\n");

    // -F: no button, no waiting.
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    let t0 = s.host.machine.later_secs;
    assert_eq!(run(&mut s, &["stop", &uuid, "-F"], "").code, 0);
    assert_eq!(s.host.machine.buttons.len(), 2);
    assert_eq!(s.host.machine.later_secs, t0);
    assert!(s.host.machine.vmms.is_empty());
}

#[test]
fn a_failed_disk_takes_back_what_was_made() {
    let mut s = server();
    s.host.machine.fail_create_of = Some(String::new()); // armed below
    // The uuid is not known before; fail every second disk by its suffix.
    let payload = r#"{"brand": "bhyve", "uuid": "0b0e0e0e-0000-4000-8000-000000000001", "ram": 64,
        "kernel": "/k", "disks": [{"size": 8}, {"size": 8}]}"#;
    s.host.machine.fail_create_of = Some("zones/0b0e0e0e-0000-4000-8000-000000000001-disk1".into());
    let out = run(&mut s, &["create"], payload);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("out of space"), "{out:?}");
    // Only the record remains (vmadm keeps the failed VM until deleted).
    let names: Vec<&String> = s.host.machine.volumes.keys().collect();
    assert_eq!(names, ["zones/0b0e0e0e-0000-4000-8000-000000000001-vm"]);
    assert!(s.host.machine.vmms.is_empty());
    assert_eq!(run(&mut s, &["delete", "0b0e0e0e-0000-4000-8000-000000000001"], "").code, 0);
    assert!(s.host.machine.volumes.is_empty());
}

#[test]
fn only_the_named_clients_reach_vmadm() {
    use libipc::Dispatch;
    let mut s = server();
    let req = libipc::wire::encode(&vmadm::Request::run { args: vec!["list".into()], stdin: String::new() }).unwrap();
    assert_eq!(s.dispatch_from(BADGE + 1, vmadm::ID, &req), Err(libipc::RemoteError::WrongInterface));
    assert_eq!(s.dispatch_from(0, vmadm::ID, &req), Err(libipc::RemoteError::WrongInterface));
    assert!(s.dispatch_from(BADGE, vmadm::ID, &req).is_ok());
    // The same for imgadm and the long-output calls; one client's kept
    // output is not another's.
    let more = [
        vmadm::Request::imgadm { args: vec!["list".into()], stdin: String::new() },
        vmadm::Request::start { program: "vmadm".into(), args: vec!["list".into()], stdin: String::new() },
        vmadm::Request::read { stream: libipc::interfaces::VmadmStream::Stdout, offset: 0 },
    ];
    for r in &more {
        let req = libipc::wire::encode(r).unwrap();
        assert_eq!(s.dispatch_from(BADGE + 1, vmadm::ID, &req), Err(libipc::RemoteError::WrongInterface), "{r:?}");
    }
    let mut s = ZoneServer::new(Fake::default(), vec![BADGE, BADGE + 1]);
    created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let start = libipc::wire::encode(&more[1]).unwrap();
    let read = libipc::wire::encode(&more[2]).unwrap();
    assert!(s.dispatch_from(BADGE, vmadm::ID, &start).is_ok());
    let theirs = s.dispatch_from(BADGE + 1, vmadm::ID, &read).unwrap();
    let mine = s.dispatch_from(BADGE, vmadm::ID, &read).unwrap();
    assert_ne!(theirs, mine, "another client read this one's output");
    // status is for everyone.
    let st = libipc::wire::encode(&libipc::interfaces::status::Request::echo { value: 3 }).unwrap();
    assert!(s.dispatch_from(BADGE + 1, libipc::interfaces::status::ID, &st).is_ok());
}

#[test]
fn timestamps_are_iso_8601() {
    assert_eq!(crate::host::iso8601(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(crate::host::iso8601(1_764_782_733), "2025-12-03T17:25:33.000Z");
    assert_eq!(crate::host::iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
}

/// zone-server restarted while a VM runs: the new one finds the VM
/// running (its VMM untouched) and can stop and delete it.
#[test]
fn a_restarted_zone_server_finds_its_running_vms() {
    let mut s = server();
    let running = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let stopped = created_uuid(&run(&mut s, &["create"], &PAYLOAD.replace("web0", "web1")));
    let netted = created_uuid(&run(&mut s, &["create"], NIC_PAYLOAD));
    assert_eq!(run(&mut s, &["stop", &stopped], "").code, 0);
    let machine = s.host.machine;
    let mut s = ZoneServer::new(machine, vec![BADGE]);
    assert_eq!(s.restore(), Vec::<String>::new());
    let list = run(&mut s, &["list", "-p", "-s", "alias", "-o", "uuid,state"], "").stdout;
    assert_eq!(list, alloc::format!("{netted}:running\n{running}:running\n{stopped}:stopped\n"));
    // The same VMMs: nothing was started again.
    assert_eq!(s.host.machine.vmms.len(), 2);
    assert_eq!(s.host.machine.vnic_grants.len(), 1);
    for u in [&running, &netted] {
        assert_eq!(run(&mut s, &["stop", u], "").code, 0);
    }
    assert!(s.host.machine.vmms.is_empty() && s.host.machine.grants.is_empty() && s.host.machine.vnic_grants.is_empty());
    for u in [&running, &stopped, &netted] {
        assert_eq!(run(&mut s, &["delete", u], "").code, 0);
    }
    assert!(s.host.machine.volumes.is_empty());
}

/// After a machine boot no VMM survives: running VMs come back stopped,
/// and those with autoboot (set by create and start) start again.
#[test]
fn after_a_machine_boot_autoboot_vms_start() {
    let mut s = server();
    let auto = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let manual = created_uuid(&run(&mut s, &["create"], &PAYLOAD.replace("web0", "web1")));
    // `vmadm stop` clears autoboot (as SmartOS).
    assert_eq!(run(&mut s, &["stop", &manual], "").code, 0);
    let mut machine = s.host.machine;
    machine.vmms.clear();
    machine.grants.clear();
    let mut s = ZoneServer::new(machine, vec![BADGE]);
    assert_eq!(s.restore(), Vec::<String>::new());
    let list = run(&mut s, &["list", "-p", "-s", "alias", "-o", "uuid,state"], "").stdout;
    assert_eq!(list, alloc::format!("{auto}:running\n{manual}:stopped\n"));
    assert_eq!(s.host.machine.vmms.len(), 1);
}

/// At machine boot the autoboot VMs start once init's `status` (its
/// ready round) is answered: `status` asks the serve loop for one wake-up
/// and the wake-up restores, before any `vmadm` request. A machine that
/// cannot wake the server leaves the restore to the first request; a
/// wake-up without a pending restore, or with other bits, does nothing.
#[test]
fn at_machine_boot_autoboot_vms_start_after_the_first_status_answer() {
    use libipc::Dispatch;
    use libipc::interfaces::status::Server as _;
    let mut s = server();
    let auto = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let booted = |s: ZoneServer<Fake>| {
        let mut machine = s.host.machine;
        machine.vmms.clear();
        machine.grants.clear();
        machine.wakes = 0;
        machine
    };
    let mut machine = booted(s);
    machine.can_wake = true;
    let mut s = ZoneServer::new(machine, vec![BADGE]);
    s.restore_before_first_request();
    // Other bits (the lifecycle's) do not restore.
    s.notified(1);
    assert!(s.host.machine.vmms.is_empty());
    s.status();
    s.status();
    assert_eq!(s.host.machine.wakes, 1, "one wake-up asked for");
    assert!(s.host.machine.vmms.is_empty(), "nothing started before the answer");
    s.notified(crate::WAKE_RESTORE);
    assert_eq!(s.host.machine.vmms.len(), 1, "the autoboot VM started on the wake-up");
    // A second wake-up finds nothing pending: no second VMM.
    s.notified(crate::WAKE_RESTORE);
    assert_eq!(s.host.machine.vmms.len(), 1);
    let list = run(&mut s, &["list", "-p", "-o", "uuid,state"], "").stdout;
    assert_eq!(list, alloc::format!("{auto}:running\n"));
    assert_eq!(s.host.machine.vmms.len(), 1);
    // No wake-up possible: the first request restores.
    let mut machine = booted(s);
    machine.can_wake = false;
    let mut s = ZoneServer::new(machine, vec![BADGE]);
    s.restore_before_first_request();
    s.status();
    assert!(s.host.machine.vmms.is_empty());
    let list = run(&mut s, &["list", "-p", "-o", "uuid,state"], "").stdout;
    assert_eq!(list, alloc::format!("{auto}:running\n"));
    assert_eq!(s.host.machine.vmms.len(), 1);
}

/// The record of VM `uuid` as the pool holds it (read as zone-server's
/// restore reads it).
pub(crate) fn stored_record(f: &Fake, uuid: &str) -> String {
    let props = &f.volumes[&alloc::format!("zones/{uuid}-vm")].1;
    let slots: Vec<(u64, &str)> = crate::host::RECORD_SLOTS.iter().filter_map(|k| crate::host::decode_record(props.get(*k)?)).collect();
    slots.iter().max_by_key(|(seq, _)| *seq).map(|(_, r)| r.to_string()).expect("a whole slot")
}

/// A record rewritten in pieces, the power lost after some of them: the
/// torn slot is known by its length and checksum, and the record before
/// it is read at the next start (it used to be rewritten in place, and
/// the VM was skipped). A whole save empties the slot written before.
#[test]
fn a_record_torn_by_a_power_cut_gives_way_to_the_one_before() {
    let mut s = server();
    // A record of three pieces (RECORD_CHUNK each at most).
    let long = "x".repeat(2 * crate::host::RECORD_CHUNK + 500);
    let payload = PAYLOAD.replacen('{', &alloc::format!("{{\"customer_metadata\": {{\"user-script\": \"{long}\"}},"), 1);
    let uuid = created_uuid(&run(&mut s, &["create"], &payload));
    assert_eq!(run(&mut s, &["update", &uuid, "alias=second"], "").code, 0);
    let props = |s: &ZoneServer<Fake>| s.host.machine.volumes[&alloc::format!("zones/{uuid}-vm")].1.clone();
    let slots = props(&s);
    let whole: Vec<&str> = crate::host::RECORD_SLOTS.iter().filter(|k| slots.get(**k).is_some_and(|v| !v.is_empty())).copied().collect();
    assert_eq!(whole.len(), 1, "one slot holds the record, the other was emptied: {:?}", slots.keys());
    // The next save loses power after the first of its pieces.
    s.host.machine.sets_left = Some(1);
    let out = run(&mut s, &["update", &uuid, "alias=third"], "");
    assert_eq!(out.code, 1, "{out:?}");
    let torn = props(&s);
    assert!(crate::host::RECORD_SLOTS.iter().any(|k| torn.get(*k).is_some_and(|v| !v.is_empty() && crate::host::decode_record(v).is_none())));
    let mut machine = s.host.machine;
    machine.sets_left = None;
    let mut s = ZoneServer::new(machine, vec![BADGE]);
    assert_eq!(s.restore(), Vec::<String>::new());
    let got: serde_json::Value = serde_json::from_str(&run(&mut s, &["get", &uuid], "").stdout).unwrap();
    assert_eq!((got["alias"].as_str(), got["customer_metadata"]["user-script"].as_str()), (Some("second"), Some(long.as_str())));
    // And it is saved again from there, over the torn slot.
    assert_eq!(run(&mut s, &["update", &uuid, "alias=fourth"], "").code, 0);
    let mut s = ZoneServer::new(s.host.machine, vec![BADGE]);
    assert_eq!(s.restore(), Vec::<String>::new());
    assert_eq!(run(&mut s, &["list", "-p", "-o", "alias"], "").stdout, "fourth\n");
}

/// A record that is not JSON is skipped with a message, the others stay.
#[test]
fn a_damaged_record_is_skipped() {
    let mut s = server();
    let good = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let mut machine = s.host.machine;
    machine.volumes.insert("zones/0b0e0e0e-0000-4000-8000-000000000009-vm".into(), (8192, BTreeMap::new()));
    machine
        .volumes
        .get_mut("zones/0b0e0e0e-0000-4000-8000-000000000009-vm")
        .unwrap()
        .1
        .insert(crate::host::RECORD_PROP.into(), "{not json".into());
    let mut s = ZoneServer::new(machine, vec![BADGE]);
    let problems = s.restore();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(run(&mut s, &["list", "-p", "-o", "uuid"], "").stdout, alloc::format!("{good}\n"));
}

pub(crate) const IMAGE: &str = "0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d";

/// A raw disk image of `len` bytes (data, then zeros) and its manifest.
pub(crate) fn image_file(len: usize) -> (Vec<u8>, String) {
    use sha1::{Digest, Sha1};
    let mut file = vec![0u8; len];
    for (i, b) in file.iter_mut().enumerate().take(len / 2) {
        *b = (i * 7 % 251) as u8;
    }
    let sha1: String = Sha1::digest(&file).iter().map(|x| alloc::format!("{x:02x}")).collect();
    let manifest = serde_json::json!({
        "v": 2, "uuid": IMAGE, "owner": "930896af-bf8c-48d4-885c-6573a94b1853",
        "name": "test-disk", "version": "1.0", "type": "zvol", "os": "linux",
        "state": "active", "disabled": false, "public": true, "image_size": 2,
        "files": [{"sha1": sha1, "size": len, "compression": "none"}]
    });
    (file, manifest.to_string())
}

pub(crate) fn imgadm(s: &mut ZoneServer<Fake>, args: &[&str], stdin: &str) -> VmadmOutput {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    s.imgadm(&args, stdin.into())
}

pub(crate) const FROM_IMAGE: &str = r#"{"brand": "bhyve", "ram": 64, "kernel": "/k",
    "disks": [{"boot": true, "image_uuid": "0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d"}]}"#;

/// `imgadm install` takes the file from a pool volume, checks it and keeps
/// it as `zones/<uuid>@final`; VMs created from it get clones of that
/// snapshot; the image cannot be deleted while they exist.
#[test]
fn vms_from_an_installed_image_are_clones_of_it() {
    let mut s = server();
    let (file, manifest) = image_file(1 << 20);
    s.host.machine.files.insert("zones/upload".into(), file.clone());
    // Not installed yet: create names the disk's image.
    let out = run(&mut s, &["create"], FROM_IMAGE);
    assert!(out.code == 1 && out.stderr.contains("disks.0.image_uuid") && out.stderr.contains("not installed"), "{out:?}");
    let out = imgadm(&mut s, &["install", "-m", "-", "-f", "zones/upload"], &manifest);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, alloc::format!("Installed image {IMAGE} (test-disk@1.0)\n"));
    let list = imgadm(&mut s, &["list", "-H", "-o", "uuid,name,version"], "");
    assert_eq!(list.stdout.split_whitespace().collect::<Vec<_>>(), [IMAGE, "test-disk", "1.0"], "{list:?}");
    // The image's volume holds the file.
    let mut back = vec![0u8; file.len()];
    s.host.machine.images().read(&alloc::format!("zones/{IMAGE}@final"), 0, &mut back).unwrap();
    assert!(back == file);

    let a = created_uuid(&run(&mut s, &["create"], FROM_IMAGE));
    let b = created_uuid(&run(&mut s, &["create"], FROM_IMAGE));
    for vm in [&a, &b] {
        let disk = alloc::format!("zones/{vm}-disk0");
        let info = s.host.machine.images().get(&disk).unwrap();
        assert_eq!(info.origin.as_deref(), Some(alloc::format!("zones/{IMAGE}@final").as_str()));
        // The VMM was started with that volume, and the disk got the image's size.
        assert!(s.host.machine.vmms.values().any(|v| v.1 == [disk.clone()]));
        let got = run(&mut s, &["get", vm], "").stdout;
        assert!(got.contains("\"image_size\": 2"), "{got}");
    }
    let out = imgadm(&mut s, &["delete", IMAGE], "");
    assert!(out.code == 1 && out.stderr.contains("ImageHasDependentClones") && out.stderr.contains(&a), "{out:?}");
    for vm in [&a, &b] {
        assert_eq!(run(&mut s, &["delete", vm], "").code, 0);
    }
    let out = imgadm(&mut s, &["delete", IMAGE], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(imgadm(&mut s, &["list", "-H"], "").stdout, "");
}

/// `imgadm install -f` of an xz file (the shell's and the API's path):
/// decompressed from the volume as it is read (16 KiB at a time); a corrupt
/// one is imgadm's UncompressionError and installs nothing.
#[test]
fn imgadm_install_takes_an_xz_file() {
    use sha1::Digest;
    use std::io::Write;
    let (raw, manifest) = image_file(512 << 10);
    let mut o = lzma_rust2::XzOptions::with_preset(1);
    o.lzma_options.dict_size = 64 << 10;
    let mut w = lzma_rust2::XzWriter::new(Vec::new(), o).unwrap();
    w.write_all(&raw).unwrap();
    let xz = w.finish().unwrap();
    let with_file = |file: &[u8]| {
        let mut m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let sha: String = sha1::Sha1::digest(file).iter().map(|x| alloc::format!("{x:02x}")).collect();
        m["files"][0] = serde_json::json!({"sha1": sha, "size": file.len(), "compression": "xz"});
        m.to_string()
    };
    let mut s = server();
    let mut bad = xz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    s.host.machine.files.insert("zones/bad".into(), bad.clone());
    let out = imgadm(&mut s, &["install", "-m", "-", "-f", "zones/bad"], &with_file(&bad));
    assert!(out.code == 1 && out.stderr.contains("(UncompressionError)") && out.stderr.contains("xz:"), "{out:?}");
    assert!(s.host.machine.images().list().is_empty());
    s.host.machine.files.insert("zones/upload".into(), xz.clone());
    let out = imgadm(&mut s, &["install", "-m", "-", "-f", "zones/upload"], &with_file(&xz));
    assert_eq!(out.code, 0, "{out:?}");
    let mut back = vec![0u8; raw.len()];
    s.host.machine.images().read(&alloc::format!("zones/{IMAGE}@final"), 0, &mut back).unwrap();
    assert!(back == raw);
}

/// A file whose SHA-1 or size is not the manifest's is refused, naming the
/// figure, and nothing is installed; so are bad arguments.
#[test]
fn a_bad_image_file_is_refused_and_leaves_nothing() {
    let mut s = server();
    let (mut file, manifest) = image_file(64 * 1024);
    file[100] ^= 1;
    s.host.machine.files.insert("zones/upload".into(), file);
    let out = imgadm(&mut s, &["install", "-m", "-", "-f", "zones/upload"], &manifest);
    assert!(out.code == 1 && out.stderr.contains("SHA-1"), "{out:?}");
    s.host.machine.files.insert("zones/short".into(), vec![1; 1000]);
    let out = imgadm(&mut s, &["install", "-m", "-", "-f", "zones/short"], &manifest);
    assert!(out.code == 1 && out.stderr.contains("files[0].size"), "{out:?}");
    for (args, says) in [
        (&["install", "-f", "zones/upload"][..], "usage"),
        (&["install", "-m", "-", "-f", "../etc/passwd"][..], "pool volume"),
        (&["install", "-m", "-", "-f", "zones/none"][..], "not found"),
    ] {
        let out = imgadm(&mut s, args, &manifest);
        assert!(out.code == 1 && out.stderr.contains(says), "{args:?}: {out:?}");
    }
    let out = imgadm(&mut s, &["install", "-m", "-", "-f", "zones/upload"], "{\"v\": 2}");
    assert!(out.code == 1 && out.stderr.contains("InvalidManifest"), "{out:?}");
    let names: Vec<String> = s.host.machine.images().list().into_iter().map(|d| d.name).collect();
    assert!(names.is_empty(), "{names:?}");
}

/// An output longer than one reply (`vmadm lookup -j` of VMs with large
/// metadata): `run` says so instead of failing the call, and
/// `vmadm.start` + `vmadm.read` (`vmadm_run_whole`) bring all of it,
/// over the in-process transport with the kernel's message limits.
#[test]
fn outputs_longer_than_one_reply_are_read_in_pieces() {
    use libipc::in_process::Loopback;
    let mut s = ZoneServer::new(Fake::default(), vec![0]);
    let big = "x".repeat(2000);
    for i in 0..4 {
        let payload = alloc::format!(
            r#"{{"brand": "bhyve", "alias": "vm{i}", "ram": 64, "kernel": "/k", "disks": [{{"size": 8}}],
              "customer_metadata": {{"blob": "{big}"}}}}"#
        );
        created_uuid(&run(&mut s, &["create"], &payload));
    }
    let whole = run(&mut s, &["lookup", "-j"], "");
    assert_eq!(whole.code, 0);
    assert!(whole.stdout.len() > 8000, "{}", whole.stdout.len());
    let t = Loopback::new(s);
    let c = vmadm::Client::new(&t);
    let out = c.run(vec!["lookup".into(), "-j".into()], String::new()).unwrap();
    assert!(out.code == 1 && out.stderr.contains("vmadm.read"), "{out:?}");
    let got = libipc::interfaces::vmadm_run_whole(&c, "vmadm", vec!["lookup".into(), "-j".into()], String::new(), || {}).unwrap();
    assert_eq!(got, whole);
    let vms: serde_json::Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(vms.as_array().map(Vec::len), Some(4));
    // Short outputs still come in the reply; unknown programs are named.
    assert_eq!(c.run(vec!["list".into(), "-H".into(), "-o".into(), "alias".into(), "-s".into(), "alias".into()], String::new()).unwrap().stdout, "vm0\nvm1\nvm2\nvm3\n");
    let bad = libipc::interfaces::vmadm_run_whole(&c, "zfs", vec![], String::new(), || {}).unwrap();
    assert!(bad.code == 2 && bad.stderr.contains("\"zfs\""), "{bad:?}");
    assert_eq!(c.read(libipc::interfaces::VmadmStream::Stdout, u32::MAX).unwrap(), Vec::<u8>::new());
}

/// Disks added and removed by `update` of a stopped VM: the next start
/// makes the new volume and hands the VMM exactly the VM's disks; delete
/// takes back every volume, the removed disk's too.
#[test]
fn disks_updated_take_effect_at_start_and_delete_takes_back_every_volume() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    assert_eq!(run(&mut s, &["stop", &uuid], "").code, 0);
    let update = alloc::format!(r#"{{"remove_disks": ["/dev/zvol/rdsk/zones/{uuid}/disk0"], "add_disks": [{{"size": 4}}]}}"#);
    let out = run(&mut s, &["update", &uuid], &update);
    assert_eq!(out.code, 0, "{out:?}");
    let out = run(&mut s, &["start", &uuid], "");
    assert_eq!(out.code, 0, "{out:?}");
    let (_, vols, _, _) = s.host.machine.vmms.values().next().unwrap().clone();
    assert_eq!(vols.len(), 2, "{vols:?}");
    assert!(vols[0].ends_with("-disk1") && !vols.iter().any(|v| v.ends_with("-disk0")), "{vols:?}");
    assert_eq!(s.host.machine.volumes[&vols[1]].0, 4 << 20);
    assert_eq!(run(&mut s, &["delete", &uuid], "").code, 0);
    assert!(s.host.machine.volumes.is_empty(), "{:?}", s.host.machine.volumes.keys().collect::<Vec<_>>());
}

/// `vmadm.console`: a running VM answers its VMM's console badge and its
/// alias; an unknown or malformed uuid, a stopped VM and a VM whose guest
/// powered off meanwhile get vmadm's messages and exit codes; another
/// client finds no such interface; `vmadm console` through `run` (no
/// terminal behind it) says where to attach from.
#[test]
fn console_answers_the_running_vm_s_vmm_and_refuses_the_rest() {
    use libipc::Dispatch;
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let instance = *s.host.machine.vmms.keys().next().unwrap();
    let c = s.console(&uuid);
    assert_eq!((c.code, c.stderr.as_str(), c.alias.as_str()), (0, "", "web0"));
    assert_eq!(c.target, libipc::interfaces::proc_instance_badge(instance));
    assert!(c.target > u64::from(u32::MAX), "an instance badge is above every server's");

    let unknown = "00000000-0000-4000-8000-00000000dead";
    let c = s.console(unknown);
    assert_eq!((c.code, c.target), (1, 0));
    assert_eq!(c.stderr, alloc::format!("Unable to connect to console of VM {unknown}: VM not found\n"));
    for bad in ["", "nope", "\u{1b}[2J", &"f".repeat(5000)] {
        let c = s.console(bad);
        assert_ne!(c.code, 0, "{bad:?}");
        assert_eq!(c.target, 0);
        assert!(!c.stderr.contains('\u{1b}'), "the escape was echoed: {:?}", c.stderr);
    }
    assert_eq!(s.console("nope").code, 2, "a malformed uuid is a usage error");
    assert!(s.console("nope").stderr.starts_with("Invalid or missing UUID for console\nUsage: vmadm"));

    // Through `run`: refused with a reason, exit 1.
    let out = run(&mut s, &["console", &uuid], "");
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with(&alloc::format!("Unable to connect to console of VM {uuid}: ")), "{out:?}");

    // Stopped: vmadm's "not running".
    assert_eq!(run(&mut s, &["stop", &uuid, "-F"], "").code, 0);
    let c = s.console(&uuid);
    assert_eq!((c.code, c.target), (1, 0));
    assert_eq!(c.stderr, alloc::format!("Unable to connect to console of VM {uuid}: VM is not running\n"));
    // Started again: a new VMM, a new badge.
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    let again = *s.host.machine.vmms.keys().next().unwrap();
    assert_ne!(again, instance);
    assert_eq!(s.console(&uuid).target, libipc::interfaces::proc_instance_badge(again));
    // The guest powered off by itself: stopped before it is attached to.
    s.host.machine.vmms.values_mut().for_each(|v| v.0 = false);
    assert_eq!(s.console(&uuid).code, 1);

    // Only vmadm's clients may ask.
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    let req = libipc::wire::encode(&vmadm::Request::console { uuid: uuid.clone() }).unwrap();
    assert_eq!(s.dispatch_from(BADGE + 1, vmadm::ID, &req), Err(libipc::RemoteError::WrongInterface));
    assert_eq!(s.dispatch_from(0, vmadm::ID, &req), Err(libipc::RemoteError::WrongInterface));
    assert!(s.dispatch_from(BADGE, vmadm::ID, &req).is_ok());
}

/// netd restarted (its grants gone): zone-server makes the grant of every
/// VM whose VMM runs again, under the same badge and with the same VNICs;
/// a stopped or deleted VM's do not come back, nothing is made twice, and
/// a delete afterwards gives the VNICs back.
#[test]
fn a_restarted_netd_gets_the_running_vms_grants_again() {
    let mut s = server();
    let a = created_uuid(&run(&mut s, &["create"], NIC_PAYLOAD));
    let b = created_uuid(&run(&mut s, &["create"], &NIC_PAYLOAD.replace("net0", "net1").replace("aa:bb:cc", "aa:bb:cd")));
    let stopped = created_uuid(&run(&mut s, &["create"], &NIC_PAYLOAD.replace("net0", "net2").replace("aa:bb:cc", "aa:bb:ce")));
    let gone = created_uuid(&run(&mut s, &["create"], &NIC_PAYLOAD.replace("net0", "net3").replace("aa:bb:cc", "aa:bb:cf")));
    assert_eq!(run(&mut s, &["stop", &stopped, "-F"], "").code, 0);
    assert_eq!(run(&mut s, &["delete", &gone], "").code, 0);
    let before = s.host.machine.vnic_grants.clone();
    assert_eq!(before.len(), 2);
    // netd restarts: what it granted is gone.
    s.host.machine.vnic_grants.clear();
    let said = s.regrant_vnics();
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(said.iter().all(|l| l.contains("made again (2 VNICs)")), "{said:?}");
    // The same badges (the VMMs' capabilities carry them) and VNICs.
    assert_eq!(s.host.machine.vnic_grants, before);
    assert_eq!(s.host.machine.vnic_regrants, 2);
    // Each VMM was told (it attaches its NICs again).
    let mut told = s.host.machine.told_netd_restarted.clone();
    told.sort();
    let mut vmms: Vec<u32> = s.host.running.values().map(|r| r.instance).collect();
    vmms.sort();
    assert_eq!(told, vmms);
    assert!(said.iter().all(|l| l.ends_with("its VMM told")), "{said:?}");
    // Told twice (or netd was not restarted after all): nothing is made twice.
    let said = s.regrant_vnics();
    assert!(said.iter().all(|l| l.contains("holds VNIC grant")), "{said:?}");
    assert_eq!(s.host.machine.vnic_regrants, 2);
    assert_eq!(s.host.machine.told_netd_restarted.len(), 2, "a VMM whose grant was not made again is not told");
    assert_eq!(s.host.machine.vnic_grants, before);
    // A VMM that ended by itself meanwhile gets nothing back.
    let instance = s.host.running[&alcove_vmadm::uuid::Uuid::parse(&b).unwrap()].instance;
    s.host.machine.vmms.get_mut(&instance).unwrap().0 = false;
    s.host.machine.vnic_grants.clear();
    let said = s.regrant_vnics();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with(&alloc::format!("VM {a}:")), "{said:?}");
    assert_eq!(s.host.machine.vnic_grants.len(), 1);
    // Delete gives the regranted VNICs back.
    assert_eq!(run(&mut s, &["delete", &a], "").code, 0);
    assert!(s.host.machine.vnic_grants.is_empty());
    assert_eq!(s.regrant_vnics(), Vec::<String>::new());
    assert!(s.host.machine.vnic_grants.is_empty());
}

/// netd refuses a regrant (its MAC was granted to someone else meanwhile):
/// zone-server says so for that VM and goes on with the others.
#[test]
fn a_refused_regrant_is_reported_and_the_others_go_on() {
    let mut s = server();
    let a = created_uuid(&run(&mut s, &["create"], NIC_PAYLOAD));
    let b = created_uuid(&run(&mut s, &["create"], &NIC_PAYLOAD.replace("net0", "net1").replace("aa:bb:cc", "aa:bb:cd")));
    let ua = alcove_vmadm::uuid::Uuid::parse(&a).unwrap();
    let badge_a = s.host.running[&ua].vnics;
    let lines_a = s.host.machine.vnic_grants[&badge_a].clone();
    s.host.machine.vnic_grants.clear();
    // Another grant holds VM a's MACs in the new netd.
    s.host.machine.vnic_grants.insert(7 << 48, lines_a);
    let said = s.regrant_vnics();
    assert_eq!(said.len(), 2, "{said:?}");
    let for_a = said.iter().find(|l| l.starts_with(&alloc::format!("VM {a}:"))).unwrap();
    assert!(for_a.contains("not made again") && for_a.contains("already on switch"), "{for_a}");
    assert!(said.iter().any(|l| l.starts_with(&alloc::format!("VM {b}:")) && l.contains("made again")), "{said:?}");
    assert!(!s.host.machine.vnic_grants.contains_key(&badge_a));
}

// ---- stops that wait for the guest, without holding zone-server ----

const OTHER: u64 = 6;

/// `vmadm ARGS` through `vmadm.run` as client `badge` (what never waits).
fn run_as(s: &mut ZoneServer<Fake>, badge: u64, args: &[&str]) -> VmadmOutput {
    s.caller = badge;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    s.vmadm(&args, String::new())
}

/// `vmadm.begin` of `vmadm ARGS` as client `badge`.
fn begin_as(s: &mut ZoneServer<Fake>, badge: u64, args: &[&str]) -> libipc::interfaces::VmadmStep {
    s.caller = badge;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    s.begin("vmadm", &args, String::new())
}

fn step_as(s: &mut ZoneServer<Fake>, badge: u64) -> (libipc::interfaces::VmadmStep, VmadmOutput) {
    s.caller = badge;
    let step = s.step();
    (step, s.outputs.get(&badge).cloned().unwrap_or_default())
}

fn now_ms(s: &mut ZoneServer<Fake>) -> u64 {
    s.host.machine.unix_seconds() * 1000
}

#[test]
fn while_a_stop_waits_for_a_deaf_guest_zone_server_answers_everyone() {
    use libipc::Dispatch;
    let mut s = ZoneServer::new(Fake::default(), vec![BADGE, OTHER]);
    s.caller = BADGE;
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let vmm = *s.host.machine.vmms.keys().next().unwrap();
    // BADGE's stop: the button pressed, pending at once.
    let step = begin_as(&mut s, BADGE, &["stop", &uuid, "-t", "10"]);
    assert!(step.pending, "{step:?}");
    assert_eq!(s.host.machine.buttons, [vmm]);
    let deadline = now_ms(&mut s) + 10_000;
    // Meanwhile the other client is answered: the VM is stopping, a
    // second stop is vmadm's "already not running", start is refused,
    // and it has no command of its own to step.
    assert_eq!(run_as(&mut s, OTHER, &["list", "-p", "-o", "state"]).stdout, "stopping\n");
    let out = run_as(&mut s, OTHER, &["stop", &uuid]);
    assert_eq!((out.code, out.stderr), (0, alloc::format!("VM {uuid} is already not 'running' (currently: stopping)\n")));
    let out = run_as(&mut s, OTHER, &["start", &uuid]);
    assert_eq!(
        (out.code, out.stderr),
        (1, alloc::format!("Unable to start VM {uuid}: VM is stopping; start it once it has stopped\n"))
    );
    let (step, out) = step_as(&mut s, OTHER);
    assert_eq!((step.pending, out.code), (false, 1));
    assert!(out.stderr.contains("no command of yours"), "{out:?}");
    // The stop's owner: still pending; the timer is asked for the next look.
    assert!(step_as(&mut s, BADGE).0.pending);
    s.publish_wake();
    let next = now_ms(&mut s) + crate::TRANSITION_POLL_MS;
    assert_eq!(s.host.machine.wake_at, Some(Some(next)));
    // Its client gone (nobody steps): the timer's tick at the deadline
    // halts the VM, with no request at all.
    s.host.machine.later_secs += 9;
    s.notified(crate::WAKE_TIMER);
    assert!(s.host.machine.vmms.contains_key(&vmm), "halted before its deadline");
    s.host.machine.later_secs += 1;
    assert_eq!(now_ms(&mut s), deadline);
    s.notified(crate::WAKE_TIMER);
    assert!(s.host.machine.vmms.is_empty() && s.host.machine.grants.is_empty());
    // Nothing stops any more: no wake-up asked for.
    assert_eq!(s.host.machine.wake_at, Some(None));
    let rec = &stored_record(&s.host.machine, &uuid);
    assert!(rec.contains("\"state\":\"stopped\"") && !rec.contains("transition"), "{rec}");
    // The owner's next step has vmadm's answer.
    let (step, out) = step_as(&mut s, BADGE);
    assert!(!step.pending);
    assert_eq!((out.code, out.stderr), (0, alloc::format!("Successfully completed stop for VM {uuid}\n")));
    // Stepping again: nothing under way.
    assert_eq!(step_as(&mut s, BADGE).1.code, 1);
}

#[test]
fn run_refuses_a_stop_that_would_wait_and_changes_nothing() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    for args in [&["stop", uuid.as_str()][..], &["stop", &uuid, "-t", "5"], &["reboot", &uuid]] {
        let out = run_as(&mut s, BADGE, args);
        assert_eq!(out.code, 1, "{args:?}");
        assert!(out.stderr.contains("vmadm.begin"), "{out:?}");
        assert!(s.host.machine.buttons.is_empty());
        assert_eq!(run_as(&mut s, BADGE, &["list", "-p", "-o", "state"]).stdout, "running\n");
    }
    // What does not wait runs as before: -F, and a stop of a stopped VM.
    assert_eq!(run_as(&mut s, BADGE, &["stop", &uuid, "-F"]).code, 0);
    let out = run_as(&mut s, BADGE, &["stop", &uuid]);
    assert_eq!((out.code, out.stderr), (0, alloc::format!("VM {uuid} is already not 'running' (currently: stopped)\n")));
}

#[test]
fn a_stop_ends_when_the_guest_powers_off_or_another_client_forces_or_deletes_it() {
    use libipc::Dispatch;
    let mut s = ZoneServer::new(Fake::default(), vec![BADGE, OTHER]);
    s.caller = BADGE;
    let a = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let b = created_uuid(&run(&mut s, &["create"], &PAYLOAD.replace("web0", "web1")));
    let c = created_uuid(&run(&mut s, &["create"], &PAYLOAD.replace("web0", "web2")));
    // The largest -t: the timer is asked for the next look, not the deadline.
    assert!(begin_as(&mut s, BADGE, &["stop", &a, "-t", "86400"]).pending);
    s.publish_wake();
    let next = now_ms(&mut s) + crate::TRANSITION_POLL_MS;
    assert_eq!(s.host.machine.wake_at, Some(Some(next)));
    // The guest powers off (its VMM ends) while nobody asks: the tick sees it.
    let vmm_a = s.host.machine.buttons[0];
    s.host.machine.vmms.get_mut(&vmm_a).unwrap().0 = false;
    s.notified(crate::WAKE_TIMER);
    assert!(!s.host.machine.vmms.contains_key(&vmm_a));
    assert_eq!(step_as(&mut s, BADGE).1.stderr, alloc::format!("Successfully completed stop for VM {a}\n"));
    // Another client's -F ends BADGE's stop at once.
    assert!(begin_as(&mut s, BADGE, &["stop", &b]).pending);
    assert_eq!(run_as(&mut s, OTHER, &["stop", &b, "-F"]).code, 0);
    assert_eq!(step_as(&mut s, BADGE).1.stderr, alloc::format!("Successfully completed stop for VM {b}\n"));
    // Another client's delete: the waiter is told; a stop of the deleted
    // VM is vmadm's "not found".
    assert!(begin_as(&mut s, BADGE, &["stop", &c]).pending);
    assert_eq!(run_as(&mut s, OTHER, &["delete", &c]).code, 0);
    let (_, out) = step_as(&mut s, BADGE);
    assert_eq!((out.code, out.stderr), (1, alloc::format!("Unable to stop VM {c}: VM was deleted while it was stopping\n")));
    let out = run_as(&mut s, OTHER, &["stop", &c]);
    assert_eq!((out.code, out.stderr), (1, alloc::format!("Unable to stop VM {c}: VM not found\n")));
    assert!(s.host.machine.vmms.is_empty() && s.host.machine.grants.is_empty());
}

#[test]
fn a_client_that_begins_another_command_no_longer_waits_but_the_stop_goes_on() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    assert!(begin_as(&mut s, BADGE, &["stop", &uuid, "-t", "2"]).pending);
    // A new command of the same client (it restarted): answered, and its
    // earlier stop is no longer its to step.
    assert!(!begin_as(&mut s, BADGE, &["list"]).pending);
    assert_eq!(step_as(&mut s, BADGE).1.code, 1);
    s.host.machine.later_secs += 2;
    assert_eq!(run_as(&mut s, BADGE, &["list", "-p", "-o", "state"]).stdout, "stopped\n");
    assert!(s.host.machine.vmms.is_empty());
}

#[test]
fn a_zone_server_restarted_during_a_stop_finishes_it() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let other = created_uuid(&run(&mut s, &["create"], &PAYLOAD.replace("web0", "web1")));
    assert!(begin_as(&mut s, BADGE, &["stop", &uuid, "-t", "30"]).pending);
    assert!(begin_as(&mut s, OTHER, &["reboot", &other]).pending);
    let machine = s.host.machine;
    let mut s = ZoneServer::new(machine, vec![BADGE]);
    assert_eq!(s.restore(), Vec::<String>::new());
    // Both found stopping, their VMMs untouched, the deadlines kept.
    assert_eq!(run_as(&mut s, BADGE, &["list", "-p", "-s", "alias", "-o", "state"]).stdout, "stopping\nstopping\n");
    assert_eq!(s.host.machine.vmms.len(), 2);
    assert!(s.next_wake_ms().is_some());
    // The old life's waiter is gone: nothing to step.
    assert_eq!(step_as(&mut s, BADGE).1.code, 1);
    // At the deadline both are halted; the reboot's VM starts again.
    s.host.machine.later_secs += 180;
    s.tick();
    let list = run_as(&mut s, BADGE, &["list", "-p", "-s", "alias", "-o", "alias,state"]).stdout;
    assert_eq!(list, "web0:stopped\nweb1:running\n");
    assert_eq!(s.host.machine.vmms.len(), 1);
    assert_eq!(s.next_wake_ms(), None);
}

#[test]
fn a_reboot_waits_for_the_guest_and_starts_a_new_vmm() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let first = *s.host.machine.vmms.keys().next().unwrap();
    s.host.machine.guests_listen = true;
    let out = run(&mut s, &["reboot", &uuid], "");
    assert_eq!((out.code, out.stderr), (0, alloc::format!("Successfully completed reboot for VM {uuid}\n")));
    assert_eq!(s.host.machine.buttons, [first]);
    let vmms: Vec<u32> = s.host.machine.vmms.keys().copied().collect();
    assert!(vmms.len() == 1 && vmms[0] != first, "{vmms:?}");
    let out = run(&mut s, &["list", "-p", "-o", "state"], "");
    assert_eq!(out.stdout, "running\n");
    let get: serde_json::Value = serde_json::from_str(&run(&mut s, &["get", &uuid], "").stdout).unwrap();
    assert_eq!((get["autoboot"].as_bool(), get.get("transition_to")), (Some(true), None));
}

/// The guest powers off between `settle`'s look and the look for VMMs
/// that ended by themselves: the reboot still starts it again (the VM is
/// its transition's, not reaped as a guest that powered off).
#[test]
fn a_guest_that_powers_off_between_two_looks_is_rebooted_all_the_same() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], PAYLOAD));
    let first = *s.host.machine.vmms.keys().next().unwrap();
    assert!(begin_as(&mut s, BADGE, &["reboot", &uuid]).pending);
    s.host.machine.end_after_looks.insert(first, 1);
    let (step, out) = step_as(&mut s, BADGE);
    let (step, out) = if step.pending { step_as(&mut s, BADGE) } else { (step, out) };
    assert!(!step.pending);
    assert_eq!((out.code, out.stderr), (0, alloc::format!("Successfully completed reboot for VM {uuid}\n")));
    let vmms: Vec<u32> = s.host.machine.vmms.keys().copied().collect();
    assert!(vmms.len() == 1 && vmms[0] != first, "{vmms:?}");
    assert_eq!(run(&mut s, &["list", "-p", "-o", "state"], "").stdout, "running\n");
}

/// A cloud-init user-data of `bytes` bytes: numbered lines, so a piece
/// lost, doubled or out of order shows.
fn user_data(tag: &str, bytes: usize) -> String {
    let mut s = String::from("#cloud-config\n");
    let mut i = 0;
    while s.len() < bytes {
        s.push_str(&alloc::format!("# {tag} line {i:04}: the quick brown fox jumps over the lazy dog\n"));
        i += 1;
    }
    s.truncate(bytes);
    s
}

/// Whether init's last start got exactly `json` (said briefly when not).
fn last_start_was(s: &ZoneServer<Fake>, json: &str) -> Result<(), String> {
    let got = s.host.machine.init.started.last().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    if got == json {
        return Ok(());
    }
    let at = got.bytes().zip(json.bytes()).position(|(a, b)| a != b).unwrap_or(got.len().min(json.len()));
    Err(alloc::format!("init got {} bytes, vmadm made {}; they part at {at}: {:?} / {:?}", got.len(), json.len(),
        &got[at.saturating_sub(40)..(at + 40).min(got.len())], &json[at.saturating_sub(40)..(at + 40).min(json.len())]))
}

/// The `vm.json` zone-server's vmadm makes for VM `uuid`.
fn vm_json_of(s: &ZoneServer<Fake>, uuid: &str) -> String {
    let vm = s.registry.get(&alcove_vmadm::uuid::Uuid::parse(uuid).unwrap()).unwrap();
    alcove_vmadm::vmm::vm_config_json(&vm.props, &s.registry.server_uuid)
}

/// A VM with 6 KiB of customer_metadata (a cloud-init user-data: what
/// its record, kept on the pool, has room for) is
/// created (the payload staged with `vmadm`) and started: its `vm.json`
/// crosses to init in one-message
/// pieces, init gets all of it, and vmm-server's parser reads the
/// metadata back whole. A VM whose `vm.json` fits one message stages
/// nothing.
#[test]
fn a_vm_with_6_kib_of_customer_metadata_starts_with_its_whole_vm_json() {
    let mut s = server();
    let small = created_uuid(&run(&mut s, &["create"], r#"{"brand": "bhyve", "ram": 64, "kernel": "/k", "customer_metadata": {"role": "db"}}"#));
    assert_eq!((s.host.machine.init.appends, s.host.machine.init.started.len()), (0, 1));
    last_start_was(&s, &vm_json_of(&s, &small)).unwrap();

    let data = user_data("6k", 6 * 1024);
    let payload = serde_json::json!({"brand": "bhyve", "alias": "cloudy", "ram": 64, "kernel": "/k", "disks": [{"size": 8}],
        "customer_metadata": {"cloud-init:user-data": data, "role": "web"}})
    .to_string();
    let uuid = created_uuid(&run(&mut s, &["create"], &payload));
    let expected = vm_json_of(&s, &uuid);
    assert!(expected.len() > 6 * 1024, "{}", expected.len());
    let f = &s.host.machine;
    // Every piece but the last staged, the last with start.
    let max = PROC_START_DATA_MAX as usize;
    assert_eq!(f.init.appends as usize, (expected.len() - 1) / max);
    let instance = s.host.running[&alcove_vmadm::uuid::Uuid::parse(&uuid).unwrap()].instance;
    let (running, _, json, _) = f.vmms[&instance].clone();
    assert!(running);
    assert_eq!(json, expected);
    let config = vmm_server::config::VmConfig::from_json(&json).unwrap();
    assert_eq!(config.customer_metadata.get("cloud-init:user-data"), Some(&data));
    assert_eq!(config.customer_metadata.get("role").map(String::as_str), Some("web"));
    assert_eq!(config.alias.as_deref(), Some("cloudy"));
    // Started again, whole again (from offset 0: nothing left over; the
    // stop made `autoboot` false, the start makes it true after).
    assert_eq!(run(&mut s, &["stop", &uuid, "-F"], "").code, 0);
    let stopped = vm_json_of(&s, &uuid);
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    last_start_was(&s, &stopped).unwrap();
}

/// A VM's metadata grown by updates (each one message): past one message
/// its starts stage, and the update that would take its record past what
/// the pool keeps (8 KiB) is refused naming `customer_metadata`, the VM
/// unchanged and still starting.
#[test]
fn metadata_grown_by_updates_starts_whole_until_it_would_not_fit() {
    let mut s = server();
    let uuid = created_uuid(&run(&mut s, &["create"], r#"{"brand": "bhyve", "ram": 64, "kernel": "/k", "autoboot": false, "disks": [{"size": 8}]}"#));
    assert!(s.host.machine.init.started.is_empty());
    let mut keys = 0;
    let refused = loop {
        let set = serde_json::json!({"set_customer_metadata": {alloc::format!("part{keys:02}"): user_data(&alloc::format!("p{keys}"), 2200)}});
        let out = run(&mut s, &["update", &uuid], &set.to_string());
        if out.code != 0 {
            break out;
        }
        keys += 1;
        assert!(vm_json_of(&s, &uuid).len() <= PROC_START_DATA_TOTAL_MAX as usize);
        if keys == 2 {
            // About 4.5 KiB: it starts with all of it.
            let json = vm_json_of(&s, &uuid);
            assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
            assert!(json.len() > 4 * 1024 && s.host.machine.init.appends > 0);
            last_start_was(&s, &json).unwrap();
            let config = vmm_server::config::VmConfig::from_json(&json).unwrap();
            assert_eq!(config.customer_metadata.len(), 2);
            assert_eq!(config.customer_metadata["part01"], user_data("p1", 2200));
            assert_eq!(run(&mut s, &["stop", &uuid, "-F"], "").code, 0);
        }
    };
    // Refused only when the next key (about 2.3 KiB of JSON) would not fit.
    let record = |s: &ZoneServer<Fake>| {
        let vm = s.registry.get(&alcove_vmadm::uuid::Uuid::parse(&uuid).unwrap()).unwrap();
        serde_json::Value::Object(vm.to_json(&s.registry.server_uuid)).to_string().len()
    };
    assert!(keys >= 2 && record(&s) > alcove_vmadm::properties::MAX_RECORD - 2400 - 512, "{keys} {refused:?}");
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.starts_with(&alloc::format!("Unable to update VM {uuid}: Invalid value(s) for: customer_metadata\nvmadm: property \"customer_metadata\": ")),
        "{refused:?}"
    );
    let json = vm_json_of(&s, &uuid);
    assert_eq!(vmm_server::config::VmConfig::from_json(&json).unwrap().customer_metadata.len(), keys);
    assert_eq!(run(&mut s, &["start", &uuid], "").code, 0);
    last_start_was(&s, &json).unwrap();
}

/// A payload within what `vmadm` takes (64 KiB) whose record would be
/// longer than the pool keeps for it (8 KiB: its `customer_metadata`,
/// above all) is refused by `validate` and by `create`, naming
/// `customer_metadata`, and nothing is made.
#[test]
fn an_oversize_customer_metadata_is_refused_at_validate_and_create() {
    let mut s = server();
    let payload = |script: usize| {
        serde_json::json!({"brand": "bhyve", "ram": 64, "kernel": "/k", "disks": [{"size": 8}],
            "customer_metadata": {"user-script": "x".repeat(script)}})
        .to_string()
    };
    let stdin_max = libipc::interfaces::VMADM_STDIN_MAX as usize;
    let payload = payload(stdin_max - 40 - payload(0).len());
    assert_eq!(payload.len(), stdin_max - 40);
    let out = run(&mut s, &["validate", "create"], &payload);
    assert_eq!(out.code, 1, "{out:?}");
    let err: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap_or_else(|_| panic!("{out:?}"));
    assert_eq!(err["bad_values"], serde_json::json!(["customer_metadata"]));
    let out = run(&mut s, &["create"], &payload);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("Failed to create VM: Invalid value(s) for: customer_metadata\nvmadm: property \"customer_metadata\": "), "{out:?}");
    assert!(out.stderr.contains("more than the 8192 the pool keeps for it"), "{out:?}");
    let f = &s.host.machine;
    assert!(f.volumes.is_empty() && f.vmms.is_empty() && f.init.started.is_empty() && f.init.appends == 0);
    assert_eq!(run(&mut s, &["list", "-p"], "").stdout, "");
}

/// The staging helper on its own: pieces of one message each, in order,
/// the last (never empty) for `start`; a `vm.json` over the total is
/// refused before anything is sent.
#[test]
fn stage_start_data_splits_at_one_message() {
    let max = PROC_START_DATA_MAX as usize;
    for len in [1, max, max + 1, 2 * max, 2 * max + 1, PROC_START_DATA_TOTAL_MAX as usize] {
        let data: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let procs = proc::Client::new(Loopback::new(FakeInit::default()));
        let last = crate::host::stage_start_data(&procs, &data).unwrap();
        assert!(last.len() <= max && (len == 0 || !last.is_empty()), "{len}: {}", last.len());
        procs.start(crate::host::VMM_TEMPLATE.into(), last, 1).unwrap().unwrap_or_else(|e| panic!("{len}: {e}"));
        let init = procs.into_transport().into_inner();
        assert_eq!(init.started, [data], "{len}");
        assert_eq!(init.appends as usize, len.saturating_sub(1) / max, "{len}");
    }
    let procs = proc::Client::new(Loopback::new(FakeInit::default()));
    let over = vec![b'x'; PROC_START_DATA_TOTAL_MAX as usize + 1];
    let e = crate::host::stage_start_data(&procs, &over).unwrap_err();
    assert!(e.contains("65537 bytes, more than the 65536"), "{e}");
    assert_eq!(procs.into_transport().into_inner().appends, 0);
}
