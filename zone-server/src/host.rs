//! vmadm's [`Host`] on Alcove: what a verb does to the machine, over the
//! two services zone-server drives, storaged's `pool` (volumes, their
//! grants, the instance records) and init's `proc` (one vmm-server process
//! per running VM, its `vm.json` staged in pieces when it is longer than
//! one message: [`stage_start_data`]). Those calls go through the
//! [`Machine`] trait, which the binary implements over IPC and the host
//! tests with a fake, so the flow
//! (which volumes, in which order, what the VMM is started with, what is
//! given back) is tested here.
//!
//! Names on the pool: disk `N` of VM `UUID` is volume `zones/UUID-diskN`
//! (made by `libipc::provision`: empty, or a clone of an installed
//! image's `zones/IMAGE@final`); an image is `zones/IMAGE`
//! ([`alcove_images`]); the VM's record
//! (`vmadm get` JSON) is a user property of its small record volume
//! `zones/UUID-vm`, so it survives a restart: two slots,
//! [`RECORD_SLOTS`], each `v2 SEQ LEN FNV\n` and the JSON, written in
//! turns ([`RecordSlots`]). A record longer than one `pool.set` is
//! written in pieces, each committed by storaged; a power cut between two
//! leaves that slot torn (its length or checksum says so) and the other,
//! the record before, is read. The slot written before is emptied once
//! the new one is whole. (Before: one property, rewritten in place; a cut
//! mid-way left a truncated record and the VM was skipped at the next
//! start.) [`RECORD_PROP`], a plain record, is read when neither slot
//! holds one (a pool written by an earlier zone-server).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use alcove_vmadm::registry::Instance;
use alcove_vmadm::uuid::Uuid;
use alcove_vmadm::verbs::Host;
use alcove_images::PoolOps;
use alcove_images::store::FileReader;
use libipc::interfaces::{PROC_START_DATA_MAX, PROC_START_DATA_TOTAL_MAX, proc};
use libipc::provision::VolumeSpec;

/// The user property an earlier zone-server kept the record in (read
/// when no slot holds one; emptied at the next save).
pub const RECORD_PROP: &str = "alcove:vmadm";
/// The two user properties holding the record, in turns.
pub const RECORD_SLOTS: [&str; 2] = ["alcove:vmadm.a", "alcove:vmadm.b"];

/// FNV-1a, 64 bits: tells a whole slot from a torn one.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A record as a slot holds it: the header, then the JSON.
pub fn encode_record(seq: u64, record: &str) -> String {
    format!("v2 {seq} {} {:016x}\n{record}", record.len(), fnv64(record.as_bytes()))
}

/// The sequence number and the JSON of a whole slot (`None`: empty, torn
/// or not a slot).
pub fn decode_record(slot: &str) -> Option<(u64, &str)> {
    let (head, body) = slot.split_once('\n')?;
    let mut f = head.split(' ');
    if f.next()? != "v2" {
        return None;
    }
    let seq = f.next()?.parse().ok()?;
    let len: usize = f.next()?.parse().ok()?;
    let sum = u64::from_str_radix(f.next()?, 16).ok()?;
    (f.next().is_none() && body.len() == len && fnv64(body.as_bytes()) == sum).then_some((seq, body))
}

/// Where a VM's record stands: the slot holding it and its sequence
/// number, and whether a plain record of an earlier zone-server is there
/// too (emptied at the next save).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordSlots {
    pub current: Option<(usize, u64)>,
    pub legacy: bool,
}

/// Reads a VM's record from its record volume `volume`: the whole slot
/// with the higher sequence number, else a plain record. `Ok(None)`: no
/// record at all.
pub fn load_record<M: Machine>(m: &mut M, volume: &str) -> Result<Option<(String, RecordSlots)>, String> {
    load_slotted(m, volume, RECORD_SLOTS, RECORD_PROP)
}

/// A value kept in two slots in turns (`keys`, as a record is): the whole
/// slot with the higher sequence number, else the plain property `legacy`
/// (non-empty). `Ok(None)`: neither.
pub fn load_slotted<M: Machine>(m: &mut M, volume: &str, keys: [&str; 2], legacy: &str) -> Result<Option<(String, RecordSlots)>, String> {
    let mut best: Option<(usize, u64, String)> = None;
    for (i, key) in keys.iter().enumerate() {
        if let Some(v) = m.get_property(volume, key)?
            && let Some((seq, body)) = decode_record(&v)
            && best.as_ref().is_none_or(|(_, s, _)| seq > *s)
        {
            best = Some((i, seq, body.into()));
        }
    }
    let legacy = m.get_property(volume, legacy)?.filter(|v| !v.is_empty());
    Ok(match (best, legacy) {
        (Some((i, seq, body)), legacy) => Some((body, RecordSlots { current: Some((i, seq)), legacy: legacy.is_some() })),
        (None, Some(plain)) => Some((plain, RecordSlots { current: None, legacy: true })),
        (None, None) => None,
    })
}

/// Writes `text` into the slot of `keys` that does not hold the value
/// `was` says is current, in [`RECORD_CHUNK`] pieces, with the next
/// sequence number; once it is whole, empties the other slot (and the
/// plain property `legacy` if it held a value). Returns where the value
/// stands now. A failure mid-way leaves the slot torn and `was` current.
pub fn save_slotted<M: Machine>(
    m: &mut M,
    volume: &str,
    keys: [&str; 2],
    legacy: &str,
    text: &str,
    was: RecordSlots,
) -> Result<RecordSlots, String> {
    let (slot, seq) = match was.current {
        Some((i, seq)) => (1 - i, seq + 1),
        None => (0, 1),
    };
    let encoded = encode_record(seq, text);
    let mut rest = encoded.as_str();
    let mut first = true;
    while first || !rest.is_empty() {
        let mut end = rest.len().min(RECORD_CHUNK);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        m.set_property(volume, keys[slot], &rest[..end], !first)?;
        rest = &rest[end..];
        first = false;
    }
    let mut now = RecordSlots { current: Some((slot, seq)), legacy: was.legacy };
    // Whole: the value before it goes (a failure only leaves it there,
    // older, to be overwritten next time).
    if was.current.is_some() && m.set_property(volume, keys[1 - slot], "", false).is_err() {
        return Ok(now);
    }
    if was.legacy && m.set_property(volume, legacy, "", false).is_ok() {
        now.legacy = false;
    }
    Ok(now)
}

/// The user property of the record volume naming the running VMM: its
/// init instance, its pool grant and its netd VNIC grant
/// (`INSTANCE:GRANT:VNICS`, 0 for none), so a restarted zone-server finds
/// it again and can give both grants back when it stops it.
pub const VMM_PROP: &str = "alcove:vmm";
/// The record volume's size (the smallest the pool makes).
pub const RECORD_VOLSIZE: u64 = 8192;
/// Bytes of a record one `pool.set` carries (longer ones are appended;
/// storaged commits each `set`, so fewer pieces are fewer commits).
pub const RECORD_CHUNK: usize = 2048;
// A piece with the volume's name, the key and the message's framing fits
// one IPC message.
const _: () = assert!(RECORD_CHUNK + 1024 <= abi::MSG_MAX_WORDS * 8);
/// The properties a running VM takes at once (its metadata service
/// answers them: `VMM_CONTROL_METADATA`).
pub const LIVE_METADATA: &[&str] = &["customer_metadata", "internal_metadata", "tags"];
/// The template init starts a VM's VMM from (manifest `spawns`).
pub const VMM_TEMPLATE: &str = "vmm-server";
/// What the VMM's budget assumes for the template's own boot files (the
/// kernel): their page tables are a few KiB per MiB.
const BOOT_FILES_BOUND: u64 = 64 << 20;

/// The services a VM's life goes through (storaged's `pool`, init's
/// `proc`), each call's error as a message.
pub trait Machine {
    /// The image store's view of the pool (`imgadm`).
    type Images: PoolOps;
    /// An image file being read (`imgadm install -f`).
    type File: FileReader;
    fn images(&mut self) -> &mut Self::Images;
    /// TCP connections to image sources (netd's sockets).
    type Net: crate::imgsrc::Net;
    /// The connections and the image store at once (`imgadm import`
    /// streams one into the other).
    fn net_and_images(&mut self) -> (&mut Self::Net, &mut Self::Images);
    /// Opens the image file held in pool volume `volume` (its first
    /// `bytes` bytes): a client put it there. Closed when dropped.
    fn open_file(&mut self, volume: &str, bytes: u64) -> Result<Self::File, String>;
    /// Seconds since 1970 (0 if the machine has no clock).
    fn unix_seconds(&mut self) -> u64;
    fn random(&mut self, buf: &mut [u8]);
    fn create_volume(&mut self, name: &str, bytes: u64) -> Result<(), String>;
    /// Makes the VM's disk volumes exist, creating or cloning the absent
    /// ones as their specs say ([`libipc::provision::prepare`]): the
    /// volumes it created.
    fn prepare_volumes(&mut self, specs: &[VolumeSpec]) -> Result<Vec<String>, String>;
    fn destroy_volume(&mut self, name: &str) -> Result<(), String>;
    /// Takes snapshot `snapshot` (`VOLUME@NAME`) of a volume.
    fn snapshot_volume(&mut self, snapshot: &str) -> Result<(), String>;
    /// Rolls a volume back to its latest snapshot `snapshot`.
    fn rollback_volume(&mut self, snapshot: &str) -> Result<(), String>;
    /// Sets user property `key` (appending to it with `append`).
    fn set_property(&mut self, name: &str, key: &str, value: &str, append: bool) -> Result<(), String>;
    /// Makes `volumes` ready and grants them ([`libipc::provision::provision`])
    /// and starts a VMM instance holding the grant, with `vm_json` (staged
    /// with [`stage_start_data`] when it is longer than one message) and a
    /// budget of `budget_kib`: (the instance, the grant; 0 without volumes).
    fn start_vmm(&mut self, volumes: &[VolumeSpec], vm_json: &str, budget_kib: u32) -> Result<(u32, u64), String>;
    /// Whether the instance still runs (`Err`: init does not know it).
    fn vmm_running(&mut self, instance: u32) -> Result<bool, String>;
    /// Ends the instance and frees it.
    fn stop_vmm(&mut self, instance: u32) -> Result<(), String>;
    /// Presses the ACPI power button of the instance's guest (through the
    /// `control` notification it was started with: for a VMM an earlier
    /// zone-server started, the copy init kept, `proc.control`); `Err`
    /// when there is none to signal (the stop then halts the VMM).
    fn power_button(&mut self, instance: u32) -> Result<(), String>;
    /// Ends a grant: its rings close.
    fn revoke(&mut self, grant: u64) -> Result<(), String>;
    /// Has netd make the VNICs `lines` describe (`vnic.grant`: `switch=…
    /// mac=… …` each) for one VMM: the grant's badge. The next
    /// [`Machine::start_vmm`] hands the VMM the grant's endpoint as its
    /// `netd` (through `proc.give`), so it reaches exactly these VNICs.
    fn grant_vnics(&mut self, lines: &[String]) -> Result<u64, String>;
    /// Ends a VNIC grant: netd detaches and deletes its VNICs (and a
    /// capability kept for the next start goes).
    fn revoke_vnics(&mut self, badge: u64) -> Result<(), String>;
    /// Has a restarted netd make VNIC grant `badge` of an earlier netd
    /// again (`vnic.regrant`, the same `lines` as its `grant_vnics`): the
    /// VMM's capability, badged `badge`, reaches the new VNICs. `Ok(false)`:
    /// netd holds that grant already (it was not restarted since).
    fn regrant_vnics(&mut self, badge: u64, lines: &[String]) -> Result<bool, String>;
    /// Tells the VMM of `instance` that netd was restarted and its VNIC
    /// grant made again (its `control` notification, bit
    /// `VMM_CONTROL_NETD_RESTARTED`): it attaches its NICs again (a VMM
    /// an earlier zone-server started, through the copy init kept). `Err`
    /// when there is none to signal: it finds out at its next `kick`.
    fn netd_restarted(&mut self, instance: u32) -> Result<(), String>;
    /// Tells the VMM of `instance` that its VM's metadata changed (its
    /// `control` notification, bit `VMM_CONTROL_METADATA`): it reads its
    /// description again (`mdata.config`).
    fn metadata_changed(&mut self, instance: u32) -> Result<(), String>;
    /// Every dataset of the pool, by name.
    fn list_volumes(&mut self) -> Result<Vec<String>, String>;
    /// User property `key` of `name` (`None`: it has none).
    fn get_property(&mut self, name: &str, key: &str) -> Result<Option<String>, String>;
    /// How many VMM instances of this zone-server init runs (0 after a
    /// machine boot).
    fn vmm_instances(&mut self) -> Result<u32, String>;
    /// Arranges for the server's serve loop to be woken, once the request
    /// being served is answered, with [`crate::WAKE_RESTORE`] in
    /// `Dispatch::notified`'s bits: `false` if it cannot (the restore then
    /// waits for the first `vmadm` request).
    fn wake_after_reply(&mut self) -> bool {
        false
    }
    /// Has the server's timer wake it (with [`crate::WAKE_TIMER`] in
    /// `Dispatch::notified`'s bits) at `unix_ms` (ms since 1970), or
    /// never (`None`); replaces the time asked for before. Without a
    /// timer, stopping VMs are looked at only at requests.
    fn wake_at(&mut self, unix_ms: Option<u64>) {
        let _ = unix_ms;
    }
}

/// The volume of disk `index` of `vm`.
pub fn disk_volume(vm: &Uuid, index: usize) -> String {
    format!("zones/{vm}-disk{index}")
}

/// Whether `name` is a disk volume of `vm` (`zones/<vm>-disk<N>`).
pub fn is_disk_of(vm: &Uuid, name: &str) -> bool {
    name.strip_prefix(&format!("zones/{vm}-disk")).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The pool snapshot of disk volume `volume` standing for VM snapshot
/// `name` (SmartOS names them `@vmsnap-NAME` too).
pub fn vm_snapshot(volume: &str, name: &str) -> String {
    format!("{volume}@vmsnap-{name}")
}

/// The record volume of `vm`.
pub fn record_volume(vm: &Uuid) -> String {
    format!("zones/{vm}-vm")
}

/// A running VM's VMM: the instance init runs and the grants it holds
/// (storaged's, netd's; 0 for none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Running {
    pub instance: u32,
    pub grant: u64,
    pub vnics: u64,
}

impl Running {
    /// [`VMM_PROP`]'s value.
    pub fn to_prop(&self) -> String {
        format!("{}:{}:{}", self.instance, self.grant, self.vnics)
    }

    /// [`VMM_PROP`]'s value read back (`INSTANCE:GRANT` of an older
    /// zone-server: no VNICs).
    pub fn from_prop(v: &str) -> Option<Self> {
        let mut parts = v.split(':');
        let instance = parts.next()?.parse().ok()?;
        let grant = parts.next()?.parse().ok()?;
        let vnics = match parts.next() {
            None => 0,
            Some(n) => n.parse().ok()?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self { instance, grant, vnics })
    }
}

/// The VNIC lines (`vnic.grant`) for the VM `vm_json` describes, one per
/// `nics[]` entry, as vmm-server reads them (`vm::nics::netd_conf`): the
/// switch is the NIC's `nic_tag`, its MAC the given one or the stable one
/// made from the VM's uuid and the NIC's index, its VLAN, `ip` and link
/// protections.
pub fn vnic_lines(vm_json: &str) -> Result<Vec<String>, String> {
    let config = vmm_server::config::VmConfig::from_json(vm_json).map_err(|e| e.to_string())?;
    let conf = vmm_server::vm::nics::netd_conf(&config, 0);
    Ok(conf.lines().map(|l| l.strip_prefix("vnic client=0 ").unwrap_or(l).to_string()).collect())
}

// vmadm refuses a VM whose `vm.json` init would not start a VMM with.
const _: () = assert!(alcove_vmadm::properties::MAX_VM_JSON == PROC_START_DATA_TOTAL_MAX as usize);

/// Hands `start_data` (a VM's `vm.json`) to init for the caller's next
/// `proc.start`: when it is longer than one message, every
/// [`PROC_START_DATA_MAX`] bytes but the last piece go ahead through
/// `proc.append_start_data`, from offset 0 (so nothing an unfinished
/// earlier staging left comes before them). Returns what `start` itself
/// carries: the last piece, or all of a short `start_data`. Call it right
/// before that `start`: a staging no `start` follows would stay with init
/// and come before the next start's own bytes if that one stages none.
pub fn stage_start_data<T: libipc::Transport>(procs: &proc::Client<T>, start_data: &[u8]) -> Result<Vec<u8>, String> {
    let max = PROC_START_DATA_MAX as usize;
    if start_data.len() > PROC_START_DATA_TOTAL_MAX as usize {
        return Err(format!(
            "vm.json: {} bytes, more than the {PROC_START_DATA_TOTAL_MAX} a VMM is started with",
            start_data.len()
        ));
    }
    if start_data.len() <= max {
        return Ok(start_data.to_vec());
    }
    // The last piece is 1 to `max` bytes: `start` never goes empty.
    let last = (start_data.len() - 1) / max * max;
    for (i, chunk) in start_data[..last].chunks(max).enumerate() {
        let offset = i * max;
        let staged = procs
            .append_start_data(offset as u32, chunk.to_vec())
            .map_err(|e| format!("proc.append_start_data: {e}"))?
            .map_err(|e| e.to_string())?;
        if staged as usize != offset + chunk.len() {
            return Err(format!("proc.append_start_data: init holds {staged} bytes after {} sent", offset + chunk.len()));
        }
    }
    Ok(start_data[last..].to_vec())
}

/// vmadm's [`Host`] over a [`Machine`]. `stdin` is the payload of the
/// request being served (what `-f FILE` or stdin reads: over IPC the client
/// sends the file's text).
pub struct ZoneHost<M> {
    pub machine: M,
    pub stdin: String,
    pub running: BTreeMap<Uuid, Running>,
    /// The stages of the `vmadm create` being served, for its line.
    pub stages: Stages,
    /// Where each VM's record stands ([`RecordSlots`]): which slot the
    /// next save writes.
    pub records: BTreeMap<Uuid, RecordSlots>,
}

/// When each stage of one `vmadm create` ended (the kernel's clock),
/// printed as one line once it is answered (`vm ALIAS: create stages
/// (zone-server) NAME=NS ...`): `cargo xtask bench --case
/// bench/vmadm-create` breaks the time to the guest's first instruction
/// down with it.
#[derive(Default)]
pub struct Stages {
    /// The VM's name as its VMM reports it (alias, or uuid).
    pub vm: Option<String>,
    pub marks: Vec<(&'static str, u64)>,
}

impl Stages {
    pub fn mark(&mut self, stage: &'static str) {
        self.marks.push((stage, alcove_rt::clock_ns()));
    }

    /// The line, once a VM was named (a create that got that far).
    pub fn line(&self, who: &str) -> Option<String> {
        let vm = self.vm.as_ref()?;
        let mut line = format!("vm {vm}: create stages ({who})");
        for (stage, ns) in &self.marks {
            line.push_str(&format!(" {stage}={ns}"));
        }
        Some(line)
    }
}

impl<M: Machine> ZoneHost<M> {
    pub fn new(machine: M) -> Self {
        Self { machine, stdin: String::new(), running: BTreeMap::new(), stages: Stages::default(), records: BTreeMap::new() }
    }

    /// The pool volumes of the VMM described by `vm_json`, as vmm-server
    /// reads them (`VmConfig::volume_specs`): `zones/<uuid>-disk<N>`, made
    /// from `size` or cloned from `zones/<image_uuid>@final`.
    pub fn volume_specs(vm_json: &str) -> Result<Vec<VolumeSpec>, String> {
        let config = vmm_server::config::VmConfig::from_json(vm_json).map_err(|e| e.to_string())?;
        let specs = config.volume_specs();
        for (i, d) in config.disks.iter().enumerate() {
            // A disk is one of the VM's own volumes (what delete destroys).
            let own = config.uuid.zip(d.volume()).is_some_and(|(u, v)| is_disk_of(&u, v));
            if !own {
                return Err(format!(
                    "vmadm: property \"disks.{i}.path\": a VM's disk is its own pool volume zones/<uuid>-disk<N>, got {:?}",
                    d.path
                ));
            }
        }
        Ok(specs)
    }

    /// Gives back what an ended VMM held: its pool grant and its VNICs.
    pub fn give_back(&mut self, r: Running) -> Result<(), String> {
        let revoked = self.machine.revoke(r.grant);
        let vnics = if r.vnics == 0 { Ok(()) } else { self.machine.revoke_vnics(r.vnics) };
        revoked.and(vnics)
    }

    /// The kernel memory (KiB) a VMM for `vm_json` needs, as vmm-server
    /// computes it (`vmm_server::vm::sizing`), or the description's error.
    pub fn vmm_budget_kib(vm_json: &str) -> Result<u32, String> {
        let config = vmm_server::config::VmConfig::from_json(vm_json).map_err(|e| e.to_string())?;
        config.check_supported().map_err(|e| e.to_string())?;
        let mut need = vmm_server::vm::sizing::KernelMemory::for_vm(
            config.ram_bytes(),
            config.vcpus,
            (config.disks.len() + config.nics.len()) as u32,
            &[vm_json.len() as u64, BOOT_FILES_BOUND, BOOT_FILES_BOUND],
        );
        // The firmware image's copy: SeaBIOS is 256 KiB, Debian's OVMF 2 MiB
        // (4 MiB builds exist); the VMM checks its real size against this.
        match config.bootrom {
            Some(vmm_server::config::Bootrom::Bios) => need = need.with_firmware(1 << 20),
            Some(vmm_server::config::Bootrom::Uefi) => need = need.with_firmware(4 << 20),
            None => {}
        }
        u32::try_from(need.total_kib()).map_err(|_| format!("vmadm: property \"ram\": a VMM of {} KiB is too large", need.total_kib()))
    }
}

/// ISO 8601 (`2026-12-03T17:32:13.000Z`) of `secs` since 1970.
pub use libipc::time::iso8601;

impl<M: Machine> Host for ZoneHost<M> {
    fn now(&mut self) -> String {
        iso8601(self.machine.unix_seconds())
    }

    fn random(&mut self, buf: &mut [u8]) {
        self.machine.random(buf);
    }

    fn read_payload(&mut self, _file: Option<&str>) -> Result<String, String> {
        if self.stdin.is_empty() {
            return Err("vmadm: no payload: send the JSON with the request".into());
        }
        Ok(core::mem::take(&mut self.stdin))
    }

    fn image(&mut self, image: &Uuid) -> Result<alcove_vmadm::verbs::ImageFacts, String> {
        let uuid = image.to_string();
        self.stages.mark("image_asked");
        // The image's own volume, not the pool's every dataset (`get`).
        let manifest = alcove_images::store::manifest(self.machine.images(), &uuid);
        self.stages.mark("image_read");
        manifest
            .map(|m| alcove_vmadm::verbs::ImageFacts {
                size_mib: m.image_size_mib,
                bootrom: m.requirements.bootrom.map(|b| match b {
                    alcove_images::manifest::Bootrom::Bios => "bios".to_string(),
                    alcove_images::manifest::Bootrom::Uefi => "uefi".to_string(),
                }),
            })
            .map_err(|e| match e {
                alcove_images::Error::NotFound { .. } => "is not installed (imgadm install)".to_string(),
                e => e.to_string(),
            })
    }

    fn provision(&mut self, vm: &Instance, vmm_json: &str) -> Result<(), String> {
        self.stages.mark("validated");
        let alias = vm.props.get("alias").and_then(|a| a.as_str());
        self.stages.vm = Some(alias.map_or_else(|| vm.uuid.to_string(), String::from));
        Self::vmm_budget_kib(vmm_json)?;
        let specs = Self::volume_specs(vmm_json)?;
        // The NICs: netd checks them (their nic_tag exists, their MAC is
        // free on it) by granting them once; they are made for real at
        // each start, as SmartOS makes a VM's VNICs when it boots.
        let lines = vnic_lines(vmm_json)?;
        if !lines.is_empty() {
            let badge = self.machine.grant_vnics(&lines).map_err(|e| format!("vmadm: property \"nics\": {e}"))?;
            self.machine.revoke_vnics(badge)?;
        }
        self.machine.create_volume(&record_volume(&vm.uuid), RECORD_VOLSIZE)?;
        self.stages.mark("record_volume");
        if specs.is_empty() {
            return Ok(());
        }
        let prepared = self.machine.prepare_volumes(&specs);
        self.stages.mark("cloned");
        if let Err(e) = prepared {
            // The names are the new VM's own: whatever exists of them was
            // made just now.
            for s in specs.iter().rev() {
                let _ = self.machine.destroy_volume(&s.name);
            }
            return Err(e);
        }
        Ok(())
    }

    fn start(&mut self, vm: &Instance, vmm_json: &str) -> Result<u64, String> {
        if let Some(r) = self.running.get(&vm.uuid).copied() {
            if self.machine.vmm_running(r.instance).unwrap_or(false) {
                return Err(format!("VM {} already has a VMM (instance {})", vm.uuid, r.instance));
            }
            // It ended on its own (the guest powered off): tidy up first.
            let _ = self.machine.stop_vmm(r.instance);
            let _ = self.give_back(r);
            self.running.remove(&vm.uuid);
        }
        let budget = Self::vmm_budget_kib(vmm_json)?;
        let specs = Self::volume_specs(vmm_json)?;
        let lines = vnic_lines(vmm_json)?;
        let vnics = if lines.is_empty() {
            0
        } else {
            self.machine.grant_vnics(&lines).map_err(|e| format!("vmadm: property \"nics\": {e}"))?
        };
        self.stages.mark("vmm_asked");
        let started = self.machine.start_vmm(&specs, vmm_json, budget);
        self.stages.mark("vmm_started");
        let (instance, grant) = match started {
            Ok(started) => started,
            Err(e) => {
                if vnics != 0 {
                    let _ = self.machine.revoke_vnics(vnics);
                }
                return Err(e);
            }
        };
        let running = Running { instance, grant, vnics };
        self.running.insert(vm.uuid, running);
        // Where a restarted zone-server finds this VMM again.
        if let Err(e) = self.machine.set_property(&record_volume(&vm.uuid), VMM_PROP, &running.to_prop(), false) {
            log::warn!("VM {}: its VMM is not recorded (a restarted zone-server will not find it): {e}", vm.uuid);
        }
        Ok(u64::from(instance))
    }

    fn now_ms(&mut self) -> u64 {
        self.machine.unix_seconds().saturating_mul(1000)
    }

    fn power_button(&mut self, vm: &Instance) -> Result<(), String> {
        // As SmartOS: the guest's ACPI power button; the stop's deadline
        // and the look at whether the guest has powered off are the
        // caller's (`ops::settle`).
        let Some(&Running { instance, .. }) = self.running.get(&vm.uuid) else {
            return Err("no VMM of zone-server's runs it".into());
        };
        self.machine.power_button(instance).inspect_err(|e| log::warn!("VM {}: {e}: halting it", vm.uuid))
    }

    fn vmm_running(&mut self, vm: &Instance) -> bool {
        self.running.get(&vm.uuid).is_some_and(|r| self.machine.vmm_running(r.instance) == Ok(true))
    }

    fn halt(&mut self, vm: &Instance) -> Result<(), String> {
        // No VMM of ours runs it (zone-server restarted and found none):
        // nothing to end.
        let Some(r) = self.running.remove(&vm.uuid) else { return Ok(()) };
        let stopped = self.machine.stop_vmm(r.instance);
        let revoked = self.give_back(r);
        stopped.and(revoked)
    }

    fn update_live(&mut self, vm: &Instance, changed: &[String]) -> Result<(), String> {
        // What the metadata service answers: the VMM reads it again.
        let (metadata, rest): (Vec<&String>, Vec<&String>) = changed.iter().partition(|p| LIVE_METADATA.contains(&p.as_str()));
        if !metadata.is_empty() {
            let r = self.running.get(&vm.uuid).ok_or_else(|| String::from("its VMM is not known to zone-server"))?;
            self.machine.metadata_changed(r.instance)?;
        }
        if rest.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "live updates of {} are not supported yet: they apply at the next start",
                rest.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
            ))
        }
    }

    fn destroy(&mut self, vm: &Instance) -> Result<(), String> {
        // Every disk volume of the VM's, listed or not: a failed
        // provisioning may have made only some, and a disk `update`
        // removed keeps its volume until now.
        let names = self.machine.list_volumes()?;
        for name in names.iter().filter(|n| is_disk_of(&vm.uuid, n)) {
            if let Err(e) = self.machine.destroy_volume(name)
                && !e.contains("not found")
            {
                return Err(e);
            }
        }
        match self.machine.destroy_volume(&record_volume(&vm.uuid)) {
            Err(e) if !e.contains("not found") => Err(e),
            _ => Ok(()),
        }
    }

    fn snapshot(&mut self, vm: &Instance, name: &str) -> Result<(), String> {
        let disks = self.disk_volumes(vm)?;
        if disks.is_empty() {
            return Err("the VM has no disks on the pool to snapshot".into());
        }
        for (i, d) in disks.iter().enumerate() {
            if let Err(e) = self.machine.snapshot_volume(&vm_snapshot(d, name)) {
                // All or none: the disks done so far lose theirs.
                for done in &disks[..i] {
                    let _ = self.machine.destroy_volume(&vm_snapshot(done, name));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn destroy_snapshot(&mut self, vm: &Instance, name: &str) -> Result<(), String> {
        for d in self.disk_volumes(vm)? {
            match self.machine.destroy_volume(&vm_snapshot(&d, name)) {
                Err(e) if !e.contains("not found") => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn rollback(&mut self, vm: &Instance, name: &str) -> Result<(), String> {
        for d in self.disk_volumes(vm)? {
            self.machine.rollback_volume(&vm_snapshot(&d, name))?;
        }
        Ok(())
    }

    fn console(&mut self, _vm: &Instance) -> Result<(), String> {
        // `vmadm.run` has no terminal behind it: the operator shell
        // attaches through `vmadm.console` and the console's `feed`.
        Err("the serial console is attached from the operator shell on the system console".into())
    }

    fn persist(&mut self, uuid: &Uuid, record: Option<&str>) -> Result<(), String> {
        let Some(record) = record else {
            self.records.remove(uuid);
            return Ok(()); // destroy took the volume
        };
        let was = self.records.get(uuid).copied().unwrap_or_default();
        let now = save_slotted(&mut self.machine, &record_volume(uuid), RECORD_SLOTS, RECORD_PROP, record, was)?;
        self.records.insert(*uuid, now);
        Ok(())
    }
}

/// Bytes of an image file read at a time (zone-server's heap is small): a
/// raw image or a send stream goes to the pool as it is read.
pub const INSTALL_READ_BYTES: usize = 16 * 1024;

impl<M: Machine> ZoneHost<M> {
    /// The VM's disk volumes on the pool (`zones/UUID-diskN`), in order.
    fn disk_volumes(&mut self, vm: &Instance) -> Result<Vec<String>, String> {
        let mut disks: Vec<String> = self.machine.list_volumes()?.into_iter().filter(|n| is_disk_of(&vm.uuid, n)).collect();
        disks.sort_by_key(|n| n.rsplit("-disk").next().and_then(|i| i.parse::<u32>().ok()));
        Ok(disks)
    }

    /// Runs `imgadm ARGS...`; `stdin` is the manifest for `install`,
    /// whose `-f` names the pool volume holding the image file.
    pub fn imgadm(&mut self, args: &[&str], stdin: &str) -> alcove_images::cli::Output {
        use alcove_images::cli;
        match args.first() {
            Some(&"install") => {}
            Some(&"sources") => return cli::output(crate::imgsrc::sources_cmd(&mut self.machine, &args[1..])),
            Some(&"avail") => return crate::imgsrc::avail(&mut self.machine, &args[1..]),
            Some(&"import") => return crate::imgsrc::import(&mut self.machine, &args[1..]),
            _ => return cli::run(self.machine.images(), args),
        }
        let r = cli::parse_install(args, stdin).and_then(|req| {
            libipc::provision::check_name(&req.file, false)
                .map_err(|e| alcove_images::Error::Invalid(format!("imgadm install -f: the file is a pool volume: {e}")))?;
            let mut file = self
                .machine
                .open_file(&req.file, req.manifest.file.size)
                .map_err(|e| alcove_images::Error::Invalid(format!("imgadm install -f {}: {e}", req.file)))?;
            let limits = cli::InstallLimits { read_bytes: INSTALL_READ_BYTES, grow_heap: Some(crate::grow_heap) };
            cli::install(self.machine.images(), req, &mut file, &limits)
        });
        cli::output(r)
    }
}
