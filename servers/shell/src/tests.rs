extern crate std;

use super::*;
use libipc::interfaces::{PoolError, SvcError, SwitchInfo, VmadmImport, VnicError, VnicInfo, VolumeInfo};
use std::collections::BTreeMap;
use alloc::vec;
use parse::{ParseError, parse};

/// A machine that records what reached zone-server.
#[derive(Default)]
struct Mock {
    calls: Vec<(Vec<String>, String)>,
    down: bool,
    /// The pool's last scrub, as `pool.status` gives it.
    scan: Option<libipc::interfaces::PoolScan>,
    /// `pool_scrub` calls (stop or not), and the refusal each gets.
    scrubs: Vec<bool>,
    scrub_refused: Option<String>,
    /// What the terminal had shown (through `input_to`) by each call.
    screen: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
    shown_at_calls: Vec<Vec<u8>>,
    /// Running VMs: uuid → (VMM console badge, alias).
    running: BTreeMap<String, (u64, String)>,
    /// What each VMM was fed, and how much room its queue has left.
    fed: BTreeMap<u64, Vec<u8>>,
    room: usize,
    /// The console refuses feeds (the shell is not its reader).
    feed_refused: bool,
    /// The pool's datasets (`None`: the three of [`Mock::pool`]) and
    /// their user properties; pool calls made, as words.
    pool: Option<BTreeMap<String, VolumeInfo>>,
    user: BTreeMap<(String, String), String>,
    pool_calls: Vec<String>,
    /// Datasets a grant uses (destroy and rollback are busy).
    busy: Vec<String>,
    /// svcadm: servers the shell may stop, and what init did.
    stoppable: Vec<String>,
    svc_calls: Vec<String>,
    /// netd: refuses the shell (not a vnic-admin), or is absent.
    netd_refuses: bool,
    netd_absent: bool,
    /// Etherstubs and operators' VNICs (number, name, line) made, and
    /// the link changes asked for.
    stubs: Vec<String>,
    ops: Vec<(u32, String, String)>,
    dladm_calls: Vec<crate::dladm::LinkOp>,
    /// Streams: send (number → the whole stream), receive (number →
    /// target, bytes so far); the next number; faults to inject.
    sends: BTreeMap<u32, Vec<u8>>,
    receives: BTreeMap<u32, (String, Vec<u8>)>,
    next_stream: u32,
    /// A receive refuses the piece that reaches this many bytes (a forged
    /// or damaged stream: the pool drops the receive).
    corrupt_at: Option<usize>,
    /// A send fails past this offset (its snapshot destroyed meanwhile).
    send_fails_at: Option<u64>,
    /// Offsets of `pool_send_chunk` calls.
    chunk_reads: Vec<u64>,
    /// zone-server's answers to `import_begin` then each `import_step`, in
    /// order (`None`: the call fails, zone-server gone); the calls made
    /// (`begin ARGS` or `step`) and what the terminal showed at each.
    imports: std::collections::VecDeque<Option<VmadmImport>>,
    import_calls: Vec<String>,
    shown_at_imports: Vec<Vec<u8>>,
}

/// The mock's send stream of `snap` (incremental from `from`): a header
/// line naming them, then bytes derived from them, 5000 in all (three
/// chunks of storaged's 2048).
fn mock_stream(snap: &str, from: Option<&str>) -> Vec<u8> {
    let mut v = std::format!("MOCKSEND {snap} {}\n", from.unwrap_or("-")).into_bytes();
    let seed = v.len();
    v.extend((0..5000 - seed).map(|i| (i * 7 + seed) as u8));
    v
}

impl Mock {
    fn pool(&mut self) -> &mut BTreeMap<String, VolumeInfo> {
        self.pool.get_or_insert_with(|| {
            let v = |name: &str, snapshot: bool, volsize: u64, txg: u64, origin: Option<&str>| {
                (
                    name.to_string(),
                    VolumeInfo {
                        name: name.into(),
                        snapshot,
                        volsize,
                        volblocksize: 8192,
                        creation_txg: txg,
                        creation: 1_796_395_839,
                        origin: origin.map(String::from),
                        compression: "off".into(),
                        checksum: "on".into(),
                        used: if snapshot { 0 } else { volsize / 2 },
                        available: if snapshot { 0 } else { 40 << 20 },
                        referenced: volsize / 2,
                        compressratio_x100: 100,
                        guid: txg * 1000,
                        ..Default::default()
                    },
                )
            };
            [
                v("zones/img", false, 1536 << 20, 5, None),
                v("zones/img@final", true, 1536 << 20, 6, None),
                v("zones/x-disk0", false, 512, 9, None),
            ]
            .into_iter()
            .collect()
        })
    }
}

const VM: &str = "5e11c0de-0000-4000-8000-0000000000a1";

impl System for Mock {
    fn vmadm(&mut self, program: &str, mut args: Vec<String>, stdin: String) -> Result<VmadmOutput, String> {
        if self.down {
            return Err("the endpoint is gone".into());
        }
        if program == "imgadm" {
            args.insert(0, "imgadm".into()); // recorded as one list below
        }
        self.calls.push((args.clone(), stdin));
        self.shown_at_calls.push(self.screen.borrow().clone());
        Ok(match args.first().map(String::as_str) {
            Some("list") => VmadmOutput { stdout: "UUID  TYPE  RAM  STATE  ALIAS\n".into(), stderr: String::new(), code: 0 },
            _ => VmadmOutput { stdout: String::new(), stderr: "vmadm: bad verb".into(), code: 2 },
        })
    }
    fn import_begin(&mut self, args: Vec<String>) -> Result<VmadmImport, String> {
        self.import_calls.push(std::format!("begin {}", args.join(" ")));
        self.shown_at_imports.push(self.screen.borrow().clone());
        self.imports.pop_front().flatten().ok_or_else(|| "the endpoint is gone".into())
    }
    fn import_step(&mut self) -> Result<VmadmImport, String> {
        self.import_calls.push("step".into());
        self.shown_at_imports.push(self.screen.borrow().clone());
        self.imports.pop_front().flatten().ok_or_else(|| "the endpoint is gone".into())
    }
    fn services(&mut self) -> Result<Vec<SvcInfo>, String> {
        Ok(vec![
            SvcInfo { name: "console".into(), state: SvcState::Online, restarts: 0, instances: 0, started_ns: 2_500_000_000 },
            SvcInfo { name: "vmm-server".into(), state: SvcState::OnDemand, restarts: 0, instances: 2, started_ns: 0 },
            SvcInfo { name: "netd".into(), state: SvcState::Maintenance, restarts: 3, instances: 0, started_ns: 0 },
            SvcInfo { name: "zone-server".into(), state: SvcState::Disabled, restarts: 0, instances: 0, started_ns: 0 },
        ])
    }
    fn machine(&mut self) -> Result<MachineInfo, String> {
        Ok(MachineInfo { cpus: 4, memory_kib: 450 * 1024 + 17, servers: 6 })
    }
    fn pool_status(&mut self) -> Result<PoolStatus, String> {
        if self.down {
            return Err("pool: no pool".into());
        }
        Ok(PoolStatus {
            name: "zones".into(),
            state: "ONLINE".into(),
            txg: 42,
            vdev: "mirror".into(),
            children: vec![
                libipc::interfaces::PoolChild { disk: "virtio-blk 00:04.0".into(), state: "ONLINE".into(), ..Default::default() },
                libipc::interfaces::PoolChild {
                    disk: "virtio-blk 00:05.0".into(),
                    state: "DEGRADED".into(),
                    checksum_errors: 3,
                    ..Default::default()
                },
            ],
            children_total: 2,
            size_bytes: 64 << 20,
            free_bytes: 48 << 20,
            scan: self.scan.clone(),
            ..Default::default()
        })
    }
    fn pool_scrub(&mut self, stop: bool) -> Result<(), String> {
        self.scrubs.push(stop);
        self.scrub_refused.clone().map_or(Ok(()), Err)
    }
    fn datasets(&mut self) -> Result<Vec<DatasetEntry>, String> {
        if self.down {
            return Err("the endpoint is gone".into());
        }
        Ok(self.pool().values().map(|v| DatasetEntry { name: v.name.clone(), snapshot: v.snapshot, volsize: v.volsize }).collect())
    }
    fn pool_get(&mut self, name: &str) -> Answer<VolumeInfo, PoolError> {
        Ok(self.pool().get(name).cloned().ok_or(PoolError::NotFound { name: name.into() }))
    }
    fn pool_user_props(&mut self, name: &str) -> Answer<Vec<(String, String)>, PoolError> {
        if !self.pool().contains_key(name) {
            return Ok(Err(PoolError::NotFound { name: name.into() }));
        }
        Ok(Ok(self.user.iter().filter(|((d, _), _)| d == name).map(|((_, k), v)| (k.clone(), v.clone())).collect()))
    }
    fn pool_set(&mut self, name: &str, key: &str, value: &str) -> Answer<(), PoolError> {
        self.pool_calls.push(std::format!("set {name} {key} {value}"));
        let Some(v) = self.pool().get_mut(name) else { return Ok(Err(PoolError::NotFound { name: name.into() })) };
        match key {
            "compression" if value == "lz4" || value == "off" => v.compression = value.into(),
            "compression" => return Ok(Err(PoolError::Invalid { why: std::format!("compression {value:?}: off or lz4") })),
            "checksum" if ["on", "fletcher4", "blake3", "sha256"].contains(&value) => v.checksum = value.into(),
            "checksum" => return Ok(Err(PoolError::Invalid { why: std::format!("checksum {value:?}: not a function") })),
            "quota" => match value.strip_suffix('M').and_then(|n| n.parse::<u64>().ok()) {
                Some(m) => v.quota = m << 20,
                None => return Ok(Err(PoolError::Invalid { why: std::format!("quota {value:?}: not a size") })),
            },
            _ => {
                self.user.insert((name.into(), key.into()), value.into());
            }
        }
        Ok(Ok(()))
    }
    fn pool_snapshot(&mut self, name: &str) -> Answer<(), PoolError> {
        self.pool_calls.push(std::format!("snapshot {name}"));
        let vol = name.split_once('@').map_or(name, |(v, _)| v).to_string();
        let txg = self.pool().values().map(|v| v.creation_txg).max().unwrap_or(0) + 1;
        let pool = self.pool();
        if pool.contains_key(name) {
            return Ok(Err(PoolError::Exists { name: name.into() }));
        }
        let Some(v) = pool.get(&vol).cloned() else { return Ok(Err(PoolError::NotFound { name: vol })) };
        pool.insert(name.into(), VolumeInfo { name: name.into(), snapshot: true, creation_txg: txg, used: 0, available: 0, ..v });
        Ok(Ok(()))
    }
    fn pool_clone(&mut self, snapshot: &str, name: &str) -> Answer<(), PoolError> {
        self.pool_calls.push(std::format!("clone {snapshot} {name}"));
        let pool = self.pool();
        let Some(s) = pool.get(snapshot).cloned() else { return Ok(Err(PoolError::NotFound { name: snapshot.into() })) };
        if pool.contains_key(name) {
            return Ok(Err(PoolError::Exists { name: name.into() }));
        }
        pool.insert(name.into(), VolumeInfo { name: name.into(), snapshot: false, origin: Some(snapshot.into()), creation_txg: s.creation_txg + 50, ..s });
        Ok(Ok(()))
    }
    fn pool_rollback(&mut self, snapshot: &str) -> Answer<(), PoolError> {
        self.pool_calls.push(std::format!("rollback {snapshot}"));
        if self.busy.iter().any(|b| snapshot.starts_with(&std::format!("{b}@"))) {
            return Ok(Err(PoolError::Busy { why: "a ring is open".into() }));
        }
        Ok(if self.pool().contains_key(snapshot) { Ok(()) } else { Err(PoolError::NotFound { name: snapshot.into() }) })
    }
    fn pool_destroy(&mut self, name: &str, recursive: bool) -> Answer<(), PoolError> {
        self.pool_calls.push(std::format!("destroy{} {name}", if recursive { " -r" } else { "" }));
        if self.busy.iter().any(|b| b == name) {
            return Ok(Err(PoolError::Busy { why: "granted".into() }));
        }
        let pool = self.pool();
        if pool.remove(name).is_none() {
            return Ok(Err(PoolError::NotFound { name: name.into() }));
        }
        if recursive {
            pool.retain(|k, _| !k.starts_with(&std::format!("{name}@")));
        }
        Ok(Ok(()))
    }
    fn pool_rename(&mut self, from: &str, to: &str) -> Answer<(), PoolError> {
        self.pool_calls.push(std::format!("rename {from} {to}"));
        let vol = from.split_once('@').map_or(from, |(v, _)| v);
        if self.busy.iter().any(|b| b == vol) {
            return Ok(Err(PoolError::Busy { why: std::format!("{vol}: granted to a VMM") }));
        }
        let pool = self.pool();
        if !pool.contains_key(from) {
            return Ok(Err(PoolError::NotFound { name: from.into() }));
        }
        if pool.contains_key(to) {
            return Ok(Err(PoolError::Exists { name: to.into() }));
        }
        if !to.starts_with("zones/") || to.len() > 200 {
            return Ok(Err(PoolError::Invalid { why: std::format!("volume name {to:?}: must be zones/NAME") }));
        }
        let moved: Vec<String> =
            pool.keys().filter(|k| *k == from || (!from.contains('@') && k.starts_with(&std::format!("{from}@")))).cloned().collect();
        for old in moved {
            let new = std::format!("{to}{}", &old[from.len()..]);
            let mut v = pool.remove(&old).unwrap();
            v.name = new.clone();
            pool.insert(new.clone(), v);
            for d in pool.values_mut() {
                if d.origin.as_deref() == Some(old.as_str()) {
                    d.origin = Some(new.clone());
                }
            }
        }
        Ok(Ok(()))
    }
    fn pool_send(&mut self, snapshot: &str, from: Option<&str>) -> Answer<u32, PoolError> {
        self.pool_calls.push(std::format!("send {snapshot} {}", from.unwrap_or("-")));
        for n in [Some(snapshot), from].into_iter().flatten() {
            if !self.pool().contains_key(n) {
                return Ok(Err(PoolError::NotFound { name: n.into() }));
            }
        }
        if self.sends.len() + self.receives.len() >= 2 {
            return Ok(Err(PoolError::TooManyStreams { limit: 2 }));
        }
        self.next_stream += 1;
        self.sends.insert(self.next_stream, mock_stream(snapshot, from));
        Ok(Ok(self.next_stream))
    }
    fn pool_send_chunk(&mut self, stream: u32, offset: u64) -> Answer<Vec<u8>, PoolError> {
        self.chunk_reads.push(offset);
        if self.send_fails_at.is_some_and(|at| offset > at) {
            self.sends.remove(&stream);
            return Ok(Err(PoolError::Invalid { why: "send: a snapshot of the stream was destroyed during the send".into() }));
        }
        let Some(v) = self.sends.get(&stream) else { return Ok(Err(PoolError::NoSuchStream { stream })) };
        let from = (offset as usize).min(v.len());
        Ok(Ok(v[from..(from + 2048).min(v.len())].to_vec()))
    }
    fn pool_receive(&mut self, target: &str) -> Answer<u32, PoolError> {
        self.pool_calls.push(std::format!("receive {target}"));
        if self.busy.iter().any(|b| b == target) {
            return Ok(Err(PoolError::Busy { why: std::format!("{target}: granted to a VMM") }));
        }
        if target.contains('@') {
            return Ok(Err(PoolError::Invalid { why: std::format!("receive: {target}: a receive target is a volume") }));
        }
        if self.sends.len() + self.receives.len() >= 2 {
            return Ok(Err(PoolError::TooManyStreams { limit: 2 }));
        }
        self.next_stream += 1;
        self.receives.insert(self.next_stream, (target.into(), Vec::new()));
        Ok(Ok(self.next_stream))
    }
    fn pool_receive_chunk(&mut self, stream: u32, bytes: &[u8]) -> Answer<u64, PoolError> {
        let Some((_, got)) = self.receives.get_mut(&stream) else { return Ok(Err(PoolError::NoSuchStream { stream })) };
        assert!(bytes.len() <= 2048, "a chunk of {} bytes", bytes.len());
        got.extend_from_slice(bytes);
        let n = got.len();
        if self.corrupt_at.is_some_and(|at| n >= at) {
            self.receives.remove(&stream);
            return Ok(Err(PoolError::Corrupt { why: "receive: piece 2: its tag does not match".into() }));
        }
        Ok(Ok(n as u64))
    }
    fn pool_receive_end(&mut self, stream: u32) -> Answer<String, PoolError> {
        let Some((target, got)) = self.receives.remove(&stream) else { return Ok(Err(PoolError::NoSuchStream { stream })) };
        let head = String::from_utf8_lossy(&got[..got.iter().position(|&b| b == b'\n').unwrap_or(0)]).into_owned();
        let mut w = head.split(' ').skip(1);
        let (snap, from) = (w.next().unwrap_or("").to_string(), w.next().filter(|f| *f != "-").map(String::from));
        if got != mock_stream(&snap, from.as_deref()) {
            return Ok(Err(PoolError::Invalid { why: "receive: the stream was cut short (no END); nothing received".into() }));
        }
        let short = snap.split_once('@').map_or("", |(_, s)| s);
        let made = std::format!("{target}@{short}");
        let txg = self.pool().values().map(|v| v.creation_txg).max().unwrap_or(0) + 1;
        let exists = self.pool().contains_key(&target);
        match from {
            None if exists => return Ok(Err(PoolError::Exists { name: target })),
            None => {
                let src = self.pool()[&snap].clone();
                let vol = VolumeInfo { name: target.clone(), snapshot: false, creation_txg: txg, origin: None, ..src.clone() };
                self.pool().insert(target.clone(), vol);
            }
            Some(base) => {
                let base_short = base.split_once('@').map_or("", |(_, s)| s);
                let latest = self
                    .pool()
                    .values()
                    .filter(|v| v.name.starts_with(&std::format!("{target}@")))
                    .max_by_key(|v| v.creation_txg)
                    .map(|v| v.name.clone());
                if latest.as_deref() != Some(&std::format!("{target}@{base_short}")) {
                    let why = std::format!("receive: {target}: its latest snapshot is not the stream's base (guid 0x1)");
                    return Ok(Err(PoolError::Invalid { why }));
                }
            }
        }
        let src = self.pool()[&snap].clone();
        self.pool().insert(made.clone(), VolumeInfo { name: made.clone(), creation_txg: txg + 1, ..src });
        Ok(Ok(made))
    }
    fn pool_close_stream(&mut self, stream: u32) -> Answer<(), PoolError> {
        if self.sends.remove(&stream).is_none() && self.receives.remove(&stream).is_none() {
            return Ok(Err(PoolError::NoSuchStream { stream }));
        }
        Ok(Ok(()))
    }
    fn vnic_switches(&mut self) -> Answer<Vec<SwitchInfo>, VnicError> {
        if self.netd_absent {
            return Err("no netd endpoint was granted (manifest: calls)".into());
        }
        if self.netd_refuses {
            return Ok(Err(VnicError::NotPermitted));
        }
        Ok(Ok(vec![
            SwitchInfo { name: "admin".into(), etherstub: false, mtu: 1500, uplink: Some("vioif0".into()) },
            SwitchInfo { name: "stub0".into(), etherstub: true, mtu: 9000, uplink: None },
            SwitchInfo { name: "external".into(), etherstub: false, mtu: 1500, uplink: None },
        ]
        .into_iter()
        .chain(self.stubs.iter().map(|n| SwitchInfo { name: n.clone(), etherstub: true, mtu: 9000, uplink: None }))
        .collect()))
    }
    fn vnic_stats(&mut self) -> Answer<Vec<libipc::interfaces::VnicStats>, VnicError> {
        if self.netd_refuses {
            return Ok(Err(VnicError::NotPermitted));
        }
        Ok(Ok(vec![
            libipc::interfaces::VnicStats {
                vnic: 0,
                attached: true,
                received_frames: 12,
                received_bytes: 1500,
                sent_frames: 7,
                sent_bytes: 640,
                received_drops: vec![("rate_limited".into(), 3)],
                sent_drops: vec![("mac_spoof".into(), 1), ("ip_spoof".into(), 2)],
                throttled: 0,
            },
            libipc::interfaces::VnicStats { vnic: 3, ..Default::default() },
        ]))
    }
    fn vnic_names(&mut self) -> Answer<Vec<(u32, String)>, VnicError> {
        Ok(Ok(self.ops.iter().map(|(n, name, _)| (*n, name.clone())).collect()))
    }
    /// netd's checks in small: names taken, etherstubs with VNICs on them,
    /// the VMs' VNICs (0 and 3) busy.
    fn dladm(&mut self, op: crate::dladm::LinkOp) -> Answer<u32, VnicError> {
        use crate::dladm::LinkOp;
        if self.netd_refuses {
            return Ok(Err(VnicError::NotPermitted));
        }
        self.dladm_calls.push(op.clone());
        let taken = |m: &Self, n: &str| n == "stub0" || m.stubs.iter().any(|s| s == n) || m.ops.iter().any(|o| o.1 == n);
        Ok(match op {
            LinkOp::CreateEtherstub(n) | LinkOp::CreateVnic { name: n, .. } if n.ends_with('x') => {
                Err(VnicError::BadName { name: n, why: "it must end in a number (vnic0, stub1)".into() })
            }
            LinkOp::CreateEtherstub(n) | LinkOp::CreateVnic { name: n, .. } if taken(self, &n) => Err(VnicError::Exists { name: n }),
            LinkOp::CreateEtherstub(n) => {
                self.stubs.push(n);
                Ok(0)
            }
            LinkOp::CreateVnic { name, line } => {
                let n = 10 + self.ops.len() as u32;
                self.ops.push((n, name, line));
                Ok(n)
            }
            LinkOp::DeleteEtherstub(n) if n == "stub0" || self.ops.iter().any(|o| o.2.contains(&std::format!("switch={n} "))) => {
                Err(VnicError::Busy { name: n, why: "1 VNIC(s) on it".into() })
            }
            LinkOp::DeleteEtherstub(n) => match self.stubs.iter().position(|s| *s == n) {
                Some(i) => {
                    self.stubs.remove(i);
                    Ok(0)
                }
                None => Err(VnicError::NotFound { name: n }),
            },
            LinkOp::DeleteVnic(n) if n == "vnic0" || n == "vnic3" => Err(VnicError::Busy { name: n, why: "a VM's VNIC, attached".into() }),
            LinkOp::DeleteVnic(n) => match self.ops.iter().position(|o| o.1 == n) {
                Some(i) => {
                    self.ops.remove(i);
                    Ok(0)
                }
                None => Err(VnicError::NotFound { name: n }),
            },
        })
    }
    fn vnic_show(&mut self) -> Answer<Vec<VnicInfo>, VnicError> {
        if self.netd_refuses {
            return Ok(Err(VnicError::NotPermitted));
        }
        let ops = self.ops.iter().map(|(n, _, line)| {
            let word = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("0").to_string();
            let mut mac = [0u8; 6];
            for (b, p) in mac.iter_mut().zip(word("mac=").split(':')) {
                *b = u8::from_str_radix(p, 16).unwrap_or(0);
            }
            VnicInfo { vnic: *n, mac, vlan_id: word("vlan_id=").parse().unwrap_or(0), switch: word("switch="), attached: false }
        });
        Ok(Ok(vec![
            VnicInfo { vnic: 0, mac: [2, 8, 0x20, 0xff, 0, 1], vlan_id: 0, switch: "stub0".into(), attached: true },
            VnicInfo { vnic: 3, mac: [2, 8, 0x20, 7, 0, 0x1a], vlan_id: 12, switch: "admin".into(), attached: false },
        ]
        .into_iter()
        .chain(ops)
        .collect()))
    }
    fn svcadm(&mut self, verb: &str, name: &str) -> Answer<(), SvcError> {
        if self.down {
            return Err("the endpoint is gone".into());
        }
        self.svc_calls.push(std::format!("{verb} {name}"));
        Ok(match name {
            "init" | "bogus" => Err(SvcError::NoSuchService { name: name.into() }),
            "vmm-server" => Err(SvcError::Refused { name: name.into(), why: "a template: its instances are their starter's (proc.stop)".into() }),
            n if self.stoppable.iter().any(|s| s == n) => Ok(()),
            n => Err(SvcError::NotPermitted { name: n.into() }),
        })
    }
    fn clock(&mut self) -> (u64, u64) {
        (1_700_000_100, 100)
    }
    fn poweroff(&mut self) -> String {
        "not permitted".into()
    }
    fn console_attach(&mut self, uuid: &str) -> Result<VmadmConsole, String> {
        if self.down {
            return Err("the endpoint is gone".into());
        }
        Ok(match self.running.get(uuid) {
            Some((target, alias)) => VmadmConsole { code: 0, stderr: String::new(), target: *target, alias: alias.clone() },
            None => VmadmConsole {
                code: 1,
                stderr: std::format!("Unable to connect to console of VM {uuid}: VM not found\n"),
                ..VmadmConsole::default()
            },
        })
    }
    fn console_feed(&mut self, target: u64, bytes: &[u8]) -> Result<usize, String> {
        if self.feed_refused {
            return Err("only the console's input reader (input=) may feed another client".into());
        }
        let n = bytes.len().min(self.room);
        self.room -= n;
        self.fed.entry(target).or_default().extend_from_slice(&bytes[..n]);
        Ok(n)
    }
}

/// A shell whose machine runs VM [`VM`] (alias `web`, VMM badge 77), its
/// console queue with `room` bytes free.
fn shell_with_vm(room: usize) -> Shell<Mock> {
    let mut s = shell();
    s.system.running.insert(VM.into(), (77, "web".into()));
    s.system.room = room;
    s
}

fn shell() -> Shell<Mock> {
    Shell::new(Mock::default(), Config::from_args(&["hostname=box1".into()]))
}

fn typed(s: &mut Shell<Mock>, bytes: &[u8]) -> String {
    String::from_utf8_lossy(&s.input(bytes)).into_owned()
}

fn words(line: &str) -> Vec<String> {
    parse(line).unwrap().words
}

#[test]
fn quoting_follows_posix() {
    assert_eq!(words("  vmadm   get  abc "), ["vmadm", "get", "abc"]);
    assert_eq!(words(r#"a 'b c' "d \"e\" \n" f\ g h''i"#), ["a", "b c", "d \"e\" \\n", "f g", "hi"]);
    assert_eq!(words("a '' b"), ["a", "", "b"]);
    assert_eq!(words("a # comment 'unclosed"), ["a"]);
    assert_eq!(words("a#b"), ["a#b"]);
    assert!(words("   ").is_empty());
    assert_eq!(parse("echo 'abc").unwrap_err(), ParseError::UnterminatedQuote('\''));
    assert_eq!(parse("echo \"a\\\"").unwrap_err(), ParseError::UnterminatedQuote('"'));
    assert_eq!(parse("echo a\\").unwrap_err(), ParseError::TrailingBackslash);
    assert_eq!(parse("vmadm create <<<").unwrap_err(), ParseError::MissingHereString);
    assert_eq!(parse("x <<< a <<< b").unwrap_err(), ParseError::TwoHereStrings);
}

#[test]
fn a_here_string_is_the_payload() {
    let c = parse(r#"vmadm create <<< '{"ram": 256}'"#).unwrap();
    assert_eq!(c.words, ["vmadm", "create"]);
    assert_eq!(c.stdin.as_deref(), Some("{\"ram\": 256}\n"));
    // Quoted, `<<<` is a word like any other.
    assert_eq!(words("echo '<<<' x"), ["echo", "<<<", "x"]);
}

#[test]
fn commands_reach_zone_server_with_their_words_and_payload() {
    let mut s = shell();
    let out = typed(&mut s, b"vmadm list\r");
    assert_eq!(out, "vmadm list\nUUID  TYPE  RAM  STATE  ALIAS\n[root@box1 ~]# ");
    assert_eq!(s.status, 0);
    let out = typed(&mut s, b"vmadm update 'a b' <<< '{}'\n");
    assert!(out.ends_with("vmadm: bad verb\n[root@box1 ~]# "), "{out:?}");
    assert_eq!(s.status, 2);
    let out = typed(&mut s, b"imgadm list\n");
    assert!(out.contains("vmadm: bad verb"));
    assert_eq!(
        s.system.calls,
        [
            (vec!["list".to_string()], String::new()),
            (vec!["update".into(), "a b".into()], "{}\n".into()),
            (vec!["imgadm".into(), "list".into()], String::new()),
        ]
    );
    s.system.down = true;
    assert_eq!(s.run("vmadm list"), Reply::fail("vmadm: zone-server did not answer: the endpoint is gone\n".into(), 1));
}

#[test]
fn unknown_commands_and_bad_quotes_get_an_error_and_reach_nobody() {
    let mut s = shell();
    let out = typed(&mut s, b"frobnicate now\r");
    assert_eq!(out, "frobnicate now\nshell: frobnicate: command not found (try help)\n[root@box1 ~]# ");
    assert_eq!(s.status, 127);
    let out = typed(&mut s, b"vmadm get 'oops\r");
    assert!(out.contains("shell: syntax error: unterminated single quote\n"), "{out:?}");
    assert_eq!(s.status, 2);
    assert!(s.system.calls.is_empty());
    // A name typed with escapes is shown without them.
    assert_eq!(s.run("a\u{1b}[2Jb").text, "shell: a^[[2Jb: command not found (try help)\n");
    assert_eq!(s.run("sysinfo -x").code, 2);
}

#[test]
fn help_sysinfo_svcs() {
    let mut s = shell();
    assert!(s.run("help").text.contains("vmadm ARGS"));
    let r = s.run("sysinfo");
    let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(v["Hostname"], "box1");
    assert_eq!(v["UUID"], "00000000-0000-0000-0000-000000000000");
    assert_eq!(v["CPU Total Cores"], 4);
    assert_eq!(v["MiB of Memory"], "450");
    assert_eq!(v["Boot Time"], "1700000000");
    assert!(v["Live Image"].as_str().unwrap().starts_with("alcove-"));
    let r = s.run("svcs");
    let lines: Vec<&str> = r.text.lines().collect();
    // STIME: booted at 1700000000 (22:13:20 UTC), console started 2.5 s later.
    assert_eq!(lines[0], "STATE           STIME RESTARTS INSTANCES  FMRI");
    assert_eq!(lines[1], "online       22:13:22        0         0  svc:/alcove/console:default");
    assert_eq!(lines[2], "on-demand           -        0         2  svc:/alcove/vmm-server:default");
    assert_eq!(lines[3], "maintenance         -        3         0  svc:/alcove/netd:default");
    assert_eq!(lines[4], "disabled            -        0         0  svc:/alcove/zone-server:default");
    assert_eq!(s.run("poweroff"), Reply::fail("poweroff: not permitted\n".into(), 1));
}

#[test]
fn backspace_ctrl_u_ctrl_w_edit_the_line() {
    let mut s = shell();
    // "vmadm lisx", backspace, "t": vmadm list.
    let out = typed(&mut s, b"vmadm lisx\x7ft\r");
    assert!(out.starts_with("vmadm lisx\x08 \x08t\n"), "{out:?}");
    assert_eq!(s.system.calls.len(), 1);
    typed(&mut s, b"garbage here\x15vmadm list\r");
    assert_eq!(s.system.calls.len(), 2);
    typed(&mut s, b"vmadm get junk  \x17list\r");
    assert_eq!(s.system.calls[2].0, ["get", "list"]);
    // ^H works as backspace too; backspace on an empty line does nothing.
    typed(&mut s, b"\x08\x08vmadm x\x08list\n");
    assert_eq!(s.system.calls[3].0, ["list"]);
    // ^C drops the line.
    let out = typed(&mut s, b"vmadm delete x\x03");
    assert!(out.ends_with("^C\n[root@box1 ~]# "));
    assert_eq!(s.system.calls.len(), 4);
    // A multi-byte character goes with one backspace.
    typed(&mut s, "vmadm é\x7flist\r".as_bytes());
    assert_eq!(s.system.calls[4].0, ["list"]);
}

#[test]
fn up_and_down_walk_the_history() {
    let mut s = shell();
    typed(&mut s, b"vmadm list\r");
    typed(&mut s, b"vmadm get a\r");
    typed(&mut s, b"\r"); // empty lines are not kept
    // Up twice: "vmadm list"; Enter runs it again.
    typed(&mut s, b"\x1b[A\x1b[A\r");
    assert_eq!(s.system.calls[2].0, ["list"]);
    // Up past the oldest stays there; down comes back to the draft.
    typed(&mut s, b"vmadm dr\x1b[A\x1b[A\x1b[A\x1b[A\x1b[B\x1b[B\x1b[B\x1bOB\r");
    assert_eq!(s.system.calls[3].0, ["dr"]);
    // Other sequences (left arrow, F5) are ignored whole.
    typed(&mut s, b"vmadm \x1b[D\x1b[15~li\x1bOAst\r");
    assert_eq!(s.system.calls[4].0, ["drst"], "ESC O A is up: the newest line replaced 'vmadm li', then 'st' was typed");
    typed(&mut s, b"vmadm \x1b[D\x1b[15~list\r");
    assert_eq!(s.system.calls[5].0, ["list"]);
    assert!(s.editor.history.len() <= editor::HISTORY_LINES);
}

#[test]
fn crlf_is_one_enter_and_lf_alone_is_one() {
    let mut s = shell();
    // CR LF, LF, then an empty line: two commands, and the empty line
    // is a prompt of its own.
    let out = typed(&mut s, b"vmadm list\r\nvmadm list\n\n");
    assert_eq!(s.system.calls.len(), 2);
    assert_eq!(out.matches("[root@box1 ~]# ").count(), 3);
}

/// Abuse: a 64 KiB line, every control character, a flood of lines.
#[test]
fn a_64_kib_line_is_refused_whole_and_echo_stays_bounded() {
    let mut s = shell();
    let mut line = b"vmadm ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 64 * 1024));
    line.push(b'\r');
    let out = s.input(&line);
    assert!(out.len() < MAX_LINE + 200, "echo of {} bytes", out.len());
    assert_eq!(out.iter().filter(|&&b| b == 0x07).count(), 1, "one bell");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(&format!("shell: the line is {} bytes, longer than {MAX_LINE}: ignored", 64 * 1024 + 6)));
    assert!(s.system.calls.is_empty());
    assert!(s.editor.history.is_empty(), "not kept in the history");
    // The next line is fine.
    typed(&mut s, b"vmadm list\r");
    assert_eq!(s.system.calls.len(), 1);
}

#[test]
fn control_characters_do_not_reach_commands_or_the_terminal() {
    let mut s = shell();
    let mut bytes: Vec<u8> = b"vmadm ".to_vec();
    for c in 0u8..0x20 {
        if ![b'\r', b'\n', 0x03, 0x08, 0x15, 0x17, 0x1b, b'\t'].contains(&c) {
            bytes.push(c);
        }
    }
    bytes.extend_from_slice(b"list\r");
    let out = s.input(&bytes);
    assert_eq!(s.system.calls[0].0, ["list"]);
    assert!(out.iter().all(|&b| b >= 0x20 || b == b'\r' || b == b'\n' || b == 0x08), "{out:?}");
}

#[test]
fn a_flood_of_random_bytes_never_panics_and_lines_stay_bounded() {
    let mut s = shell();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200 {
        let chunk: Vec<u8> = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = s.input(&chunk);
        assert!(s.editor.current().len() <= MAX_LINE);
    }
    for (args, stdin) in &s.system.calls {
        assert!(args.iter().map(String::len).sum::<usize>() + stdin.len() <= MAX_LINE + 1);
    }
    assert!(s.editor.history.len() <= editor::HISTORY_LINES);
}

#[test]
fn zpool_and_zfs_show_the_pool() {
    let mut s = shell();
    let r = s.run("zpool status");
    assert_eq!(r.code, 0);
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(&lines[..3], [" pool: zones", "state: ONLINE", "  txg: 42"]);
    let rows: Vec<Vec<&str>> = r.text.lines().filter(|l| l.starts_with('\t')).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "STATE", "READ", "WRITE", "CKSUM"]);
    assert_eq!(rows[1], ["zones", "ONLINE", "0", "0", "3"]);
    assert_eq!(rows[2], ["mirror-0", "ONLINE", "0", "0", "3"]);
    assert_eq!(rows[4], ["virtio-blk", "00:05.0", "DEGRADED", "0", "0", "3"]);
    assert!(r.text.ends_with("errors: see the counts above\n"));
    assert_eq!(lines[3], " scan: none requested");
    // The last scrub, as the pool keeps it.
    s.system.scan = Some(libipc::interfaces::PoolScan { start: 1_796_395_839, end: 1_796_395_841, bytes: 9 << 20, repaired: 4096, errors: 2, ..Default::default() });
    let r = s.run("zpool status");
    assert_eq!(r.text.lines().nth(3), Some(" scan: scrub repaired 4K in 00:00:02 with 2 errors on Fri Dec  4 14:50:41 2026"));
    assert!(r.text.ends_with("errors: 2 data errors found by the last scrub\n"), "{}", r.text);
    s.system.scan = Some(libipc::interfaces::PoolScan { repaired: 0, errors: 0, ..Default::default() });
    let r = s.run("zpool status");
    assert_eq!(r.text.lines().nth(3), Some(" scan: scrub repaired 0B in 00:00:00 with 0 errors on an unknown date"));
    // A scrub under way (`zpool scrub`), then one cancelled.
    s.system.scan = Some(libipc::interfaces::PoolScan {
        start: 1_796_395_839,
        bytes: 9 << 20,
        total: 20 << 20,
        repaired: 4096,
        errors: 0,
        running: true,
        ..Default::default()
    });
    let r = s.run("zpool status");
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(
        lines[3..6],
        [" scan: scrub in progress since Fri Dec  4 14:50:39 2026", "\t9M scanned out of 20M", "\t4K repaired, 45.00% done"],
        "{}",
        r.text
    );
    assert_eq!(lines[6], "config:");
    s.system.scan = Some(libipc::interfaces::PoolScan { total: 0, running: true, ..Default::default() });
    let r = s.run("zpool status");
    assert_eq!(r.text.lines().nth(5), Some("\t0B repaired, 0.00% done"), "no division by zero: {}", r.text);
    s.system.scan =
        Some(libipc::interfaces::PoolScan { start: 1_796_395_839, end: 1_796_395_841, bytes: 1 << 20, canceled: true, ..Default::default() });
    let r = s.run("zpool status");
    assert_eq!(r.text.lines().nth(3), Some(" scan: scrub canceled on Fri Dec  4 14:50:41 2026"));
    s.system.scan = None;
    let r = s.run("zpool list");
    assert_eq!(r.text.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(), ["zones", "64M", "16M", "48M", "ONLINE"]);
    let r = s.run("zfs list");
    let rows: Vec<Vec<&str>> = r.text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "USED", "AVAIL", "REFER", "MOUNTPOINT"],
            vec!["zones/img", "768M", "40M", "768M", "-"],
            vec!["zones/x-disk0", "256", "40M", "256", "-"]
        ]
    );
    assert_eq!(s.run("zpool").code, 2);
    // `zpool scrub [-s] POOL`: nothing printed when it worked, as ZFS.
    assert_eq!(s.run("zpool scrub zones"), Reply::ok(String::new()));
    assert_eq!(s.run("zpool scrub -s zones"), Reply::ok(String::new()));
    assert_eq!(s.system.scrubs, [false, true]);
    assert_eq!(s.run("zpool scrub tank"), Reply::fail("cannot open 'tank': no such pool\n".into(), 1));
    assert_eq!(s.run("zpool scrub").code, 2);
    assert_eq!(s.run("zpool scrub -x zones").code, 2);
    assert_eq!(s.system.scrubs.len(), 2, "refused before storaged was asked");
    s.system.scrub_refused = Some("pool: busy: a scrub is in progress".into());
    assert_eq!(s.run("zpool scrub zones"), Reply::fail("cannot scrub zones: pool: busy: a scrub is in progress\n".into(), 1));
    s.system.scrub_refused = Some("pool: no scrub is in progress".into());
    assert_eq!(s.run("zpool scrub -s zones"), Reply::fail("cannot cancel scrubbing zones: pool: no scrub is in progress\n".into(), 1));
    s.system.down = true;
    assert_eq!(s.run("zpool status"), Reply::fail("zpool: pool: no pool\n".into(), 1));
}

/// The lead's shell-case failure beside a CPU hog: the echo of the rest of
/// `vmadm delete UUID` never came while the delete ran (halting the VM), so
/// the line looked stuck at the first 14 bytes the UART's FIFO delivered.
/// The echo of a completed line (its newline included) now reaches the
/// terminal before the command runs; the output after it.
#[test]
fn the_echo_of_a_line_is_shown_before_its_command_runs() {
    let mut sh = shell();
    let screen = sh.system.screen.clone();
    let mut show = |b: &[u8]| screen.borrow_mut().extend_from_slice(b);
    sh.input_to(b"vmadm delete 5", &mut show);
    sh.input_to(b"e11\rvmadm list\r", &mut show);
    let calls = &sh.system.shown_at_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(std::string::String::from_utf8_lossy(&calls[0]), "vmadm delete 5e11\n");
    assert!(std::string::String::from_utf8_lossy(&calls[1]).ends_with("[root@box1 ~]# vmadm list\n"));
    let all = std::string::String::from_utf8(screen.borrow().clone()).unwrap();
    assert_eq!(all, "vmadm delete 5e11\nvmadm: bad verb\n[root@box1 ~]# vmadm list\nUUID  TYPE  RAM  STATE  ALIAS\n[root@box1 ~]# ");
    // `input` still gives the same bytes in one piece.
    let mut sh2 = shell();
    assert_eq!(sh2.input(b"vmadm delete 5e11\rvmadm list\r"), all.as_bytes());
}

/// `vmadm console`: attached, typed bytes go to the VM's VMM unechoed and
/// unedited (control characters and all), nothing reaches zone-server;
/// `^]` detaches with the closing line and the prompt, and what follows
/// the escape in the same read is the shell's again.
#[test]
fn console_attaches_feeds_the_vm_and_the_escape_detaches() {
    let mut s = shell_with_vm(usize::MAX);
    let out = typed(&mut s, format!("vmadm console {VM}\r").as_bytes());
    assert_eq!(
        out,
        format!("vmadm console {VM}\n[Connected to console of VM {VM} (web). Escape sequence is ^]]\n"),
        "no prompt while attached"
    );
    assert_eq!(s.status, 0);
    assert!(s.system.calls.is_empty(), "console went through vmadm.run");
    let out = typed(&mut s, b"ls -l\x7f\x03\x1b[A\r");
    assert_eq!(out, "", "the shell echoed what the guest should");
    assert_eq!(s.system.fed[&77], b"ls -l\x7f\x03\x1b[A\r");
    // The escape, then a command in the same read.
    let out = typed(&mut s, b"x\x1dvmadm list\r");
    assert_eq!(
        out,
        format!("\n[Connection to console of VM {VM} closed]\n[root@box1 ~]# vmadm list\nUUID  TYPE  RAM  STATE  ALIAS\n[root@box1 ~]# ")
    );
    assert_eq!(s.system.fed[&77], b"ls -l\x7f\x03\x1b[A\rx");
    assert!(s.attached.is_none());
    // ^] when not attached: nothing happens, the line goes on.
    let out = typed(&mut s, b"\x1d\x1dsvcs\r");
    assert!(out.starts_with("svcs\nSTATE"), "{out:?}");
    assert_eq!(s.system.fed[&77].len(), 12, "fed while not attached");
}

/// Unknown, malformed, stopped: vmadm's message and exit code, no
/// attachment; other argument counts go to zone-server's vmadm (usage).
#[test]
fn console_of_an_unknown_vm_says_so_and_stays_at_the_prompt() {
    let mut s = shell_with_vm(usize::MAX);
    let other = "5e11c0de-0000-4000-8000-0000000000ff";
    let out = typed(&mut s, format!("vmadm console {other}\r").as_bytes());
    assert!(out.ends_with(&format!("Unable to connect to console of VM {other}: VM not found\n[root@box1 ~]# ")), "{out:?}");
    assert_eq!(s.status, 1);
    assert!(s.attached.is_none());
    let out = typed(&mut s, b"vmadm console\r");
    assert!(out.ends_with("vmadm: bad verb\n[root@box1 ~]# "), "{out:?}");
    assert_eq!(s.system.calls, [(vec!["console".to_string()], String::new())]);
    s.system.down = true;
    let out = typed(&mut s, format!("vmadm console {VM}\r").as_bytes());
    assert!(out.contains("zone-server did not answer"), "{out:?}");
    assert!(s.attached.is_none());
}

/// A long typed line: what the VM's queue has no room for is held (the
/// shell then reads no more input) and passed on as room comes; nothing is
/// lost or reordered.
#[test]
fn a_long_line_waits_for_room_and_arrives_whole() {
    let mut s = shell_with_vm(100);
    typed(&mut s, format!("vmadm console {VM}\r").as_bytes());
    let mut line: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    line.push(b'\r');
    assert_eq!(typed(&mut s, &line), "");
    assert!(s.holding());
    assert_eq!(s.attached.as_ref().unwrap().pending.len(), 2901);
    let mut shown = Vec::new();
    while s.holding() {
        s.system.room = 700;
        s.pump_to(&mut |b| shown.extend_from_slice(b));
    }
    assert!(shown.is_empty());
    assert_eq!(s.system.fed[&77], line);
}

/// While attached the shell asks zone-server whether the VM still runs:
/// a stopped VM detaches with vmadm's reason; a console that refuses the
/// feed detaches with its reason; both give the prompt back.
#[test]
fn a_stopped_vm_or_a_refusing_console_detaches() {
    let mut s = shell_with_vm(usize::MAX);
    typed(&mut s, format!("vmadm console {VM}\r").as_bytes());
    let mut shown = Vec::new();
    s.check_attached(&mut |b| shown.extend_from_slice(b));
    assert!(shown.is_empty() && s.attached.is_some());
    s.system.running.clear();
    s.check_attached(&mut |b| shown.extend_from_slice(b));
    assert_eq!(
        String::from_utf8(shown).unwrap(),
        format!("\n[Connection to console of VM {VM} closed: VM not found]\n[root@box1 ~]# ")
    );
    assert!(s.attached.is_none());

    let mut s = shell_with_vm(usize::MAX);
    typed(&mut s, format!("vmadm console {VM}\r").as_bytes());
    s.system.running.insert(VM.into(), (78, "web".into()));
    let mut shown = Vec::new();
    s.check_attached(&mut |b| shown.extend_from_slice(b));
    assert!(String::from_utf8_lossy(&shown).contains("closed: its VMM was restarted]"));

    let mut s = shell_with_vm(usize::MAX);
    typed(&mut s, format!("vmadm console {VM}\r").as_bytes());
    s.system.feed_refused = true;
    let out = typed(&mut s, b"hello\r");
    assert!(out.contains("closed: the console refused the input: only the console's input reader"), "{out:?}");
    assert!(out.ends_with("[root@box1 ~]# "));
    assert!(s.attached.is_none());
    assert!(s.system.fed.is_empty());
}

#[test]
fn svcadm_asks_init_and_prints_illumos_s_refusals() {
    let mut s = shell();
    s.system.stoppable = vec!["netd".into(), "zone-server".into()];
    // Done: nothing printed, exit 0; every FMRI form names the server.
    assert_eq!(s.run("svcadm restart netd"), Reply::ok(String::new()));
    assert_eq!(s.run("svcadm disable -s svc:/alcove/zone-server:default"), Reply::ok(String::new()));
    assert_eq!(s.run("svcadm enable alcove/zone-server"), Reply::ok(String::new()));
    assert_eq!(s.run("svcadm -v restart netd:default zone-server").code, 0);
    assert_eq!(s.system.svc_calls, ["restart netd", "disable zone-server", "enable zone-server", "restart netd", "restart zone-server"]);
    // A server the manifest does not let the shell stop: init refuses.
    assert_eq!(s.run("svcadm disable console"), Reply::fail("svcadm: svc:/alcove/console:default: Permission denied.\n".into(), 1));
    // Unknown services (init is none), and FMRIs of another shape.
    let none = |p: &str| Reply::fail(std::format!("svcadm: Pattern '{p}' doesn't match any instances\n"), 1);
    assert_eq!(s.run("svcadm restart init"), none("init"));
    assert_eq!(s.run("svcadm restart bogus"), none("bogus"));
    assert_eq!(s.run("svcadm restart svc:/system/filesystem/local"), none("svc:/system/filesystem/local"));
    assert_eq!(s.run("svcadm restart ''"), none(""));
    let r = s.run("svcadm restart vmm-server");
    assert_eq!(r.text, "svcadm: svc:/alcove/vmm-server:default: cannot restart: a template: its instances are their starter's (proc.stop).\n");
    assert_eq!(r.code, 1);
    // One bad among good: the good ones are done, the exit is 1.
    let r = s.run("svcadm restart netd bogus");
    assert_eq!((r.text.as_str(), r.code), ("svcadm: Pattern 'bogus' doesn't match any instances\n", 1));
    // Usage errors never reach init.
    let before = s.system.svc_calls.len();
    for bad in ["svcadm", "svcadm restart", "svcadm frob netd", "svcadm restart -x netd", "svcadm disable -t netd", "svcadm mark maintenance netd"] {
        let r = s.run(bad);
        assert_eq!(r.code, 2, "{bad}");
        assert!(r.text.contains("Usage: svcadm"), "{bad}: {}", r.text);
    }
    assert_eq!(s.system.svc_calls.len(), before);
    // Escapes typed in a name are not echoed raw.
    assert_eq!(s.run("svcadm restart 'a\u{1b}[2J'").text, "svcadm: svc:/alcove/a^[[2J:default: Permission denied.\n");
    s.system.down = true;
    assert_eq!(s.run("svcadm restart netd"), Reply::fail("svcadm: init did not answer: the endpoint is gone\n".into(), 1));
    assert_eq!(admin::stime(0, 1_700_000_100, 100), "-");
    // Started more than a day ago: `Mon_DD`.
    assert_eq!(admin::stime(1_000_000_000, 1_700_000_000 + 3 * 86_400, 3 * 86_400), "Nov_14");
}

#[test]
fn zfs_get_and_set() {
    let mut s = shell();
    let r = s.run("zfs get volsize,compression,used zones/img");
    assert_eq!(
        r.text,
        "NAME       PROPERTY     VALUE  SOURCE\nzones/img  volsize      1.50G  local\nzones/img  compression  off    default\nzones/img  used         768M   -\n"
    );
    assert_eq!(s.run("zfs get -Hp volsize zones/x-disk0").text, "zones/x-disk0\tvolsize\t512\tlocal\n");
    let all = s.run("zfs get all zones/img@final");
    assert_eq!(all.code, 0);
    assert!(all.text.contains("zones/img@final  type           snapshot"), "{}", all.text);
    assert!(all.text.contains("creation       Fri Dec  4 14:50 2026"), "{}", all.text);
    assert!(!all.text.contains("quota") && !all.text.contains("available"), "{}", all.text);
    // ZFS's errors: a bad property is a usage error (2), a missing dataset 1.
    let r = s.run("zfs get frob zones/img");
    assert_eq!(r.code, 2);
    assert!(r.text.starts_with("bad property list: invalid property 'frob'\nusage: zfs"), "{}", r.text);
    assert_eq!(s.run("zfs get volsize zones/nope"), Reply::fail("cannot open 'zones/nope': dataset does not exist\n".into(), 1));
    assert_eq!(s.run("zfs get volsize").code, 2);
    // set: native and user properties; then get shows them.
    assert_eq!(s.run("zfs set compression=lz4 zones/img"), Reply::ok(String::new()));
    assert_eq!(s.run("zfs set quota=64M zones/img"), Reply::ok(String::new()));
    assert_eq!(s.run("zfs set alcove:note='hello world' zones/img"), Reply::ok(String::new()));
    let r = s.run("zfs get -H compression,quota,alcove:note,alcove:none zones/img");
    assert_eq!(
        r.text,
        "zones/img\tcompression\tlz4\tlocal\nzones/img\tquota\t64M\tlocal\nzones/img\talcove:note\thello world\tlocal\nzones/img\talcove:none\t-\t-\n"
    );
    // checksum: `on` (fletcher4) by default, as ZFS shows it; set, local.
    assert_eq!(s.run("zfs get -H checksum zones/img").text, "zones/img\tchecksum\ton\tdefault\n");
    assert_eq!(s.run("zfs set checksum=blake3 zones/img"), Reply::ok(String::new()));
    assert_eq!(s.run("zfs get -H checksum zones/img").text, "zones/img\tchecksum\tblake3\tlocal\n");
    assert!(!s.run("zfs get all zones/img@final").text.contains("checksum"), "a snapshot has none");
    let all = s.run("zfs get all zones/img").text;
    assert!(all.lines().any(|l| l.split_whitespace().eq(["zones/img", "alcove:note", "hello", "world", "local"])), "{all}");
    let set = |s: &mut Shell<Mock>, l: &str| s.run(l);
    assert_eq!(set(&mut s, "zfs set used=1 zones/img"), Reply::fail("cannot set property for 'zones/img': 'used' is readonly\n".into(), 1));
    assert_eq!(set(&mut s, "zfs set frob=1 zones/img"), Reply::fail("cannot set property for 'zones/img': invalid property 'frob'\n".into(), 1));
    assert_eq!(
        set(&mut s, "zfs set compression=gzip-9 zones/img"),
        Reply::fail("cannot set property for 'zones/img': compression \"gzip-9\": off or lz4\n".into(), 1)
    );
    assert_eq!(set(&mut s, "zfs set quota=1M zones/nope"), Reply::fail("cannot open 'zones/nope': dataset does not exist\n".into(), 1));
    assert_eq!(set(&mut s, "zfs set quota zones/img").code, 2);
    assert_eq!(set(&mut s, "zfs set quota=1M").code, 2);
    // Readonly and invalid ones never reach storaged.
    assert_eq!(s.system.pool_calls.len(), 6, "{:?}", s.system.pool_calls);
}

#[test]
fn zfs_snapshot_clone_list_rollback_destroy() {
    let mut s = shell();
    assert_eq!(s.run("zfs snapshot zones/x-disk0@a zones/x-disk0@b"), Reply::ok(String::new()));
    assert_eq!(
        s.run("zfs snapshot zones/x-disk0@a"),
        Reply::fail("cannot create snapshot 'zones/x-disk0@a': dataset already exists\n".into(), 1)
    );
    assert_eq!(s.run("zfs snapshot zones/nope@a"), Reply::fail("cannot open 'zones/nope': dataset does not exist\n".into(), 1));
    assert_eq!(
        s.run("zfs snapshot zones/x-disk0"),
        Reply::fail("cannot create snapshot 'zones/x-disk0': missing '@' delimiter in snapshot name\n".into(), 1)
    );
    assert_eq!(s.run("zfs snapshot zones/x-disk0@").code, 1);
    let r = s.run("zfs list -t snapshot");
    let rows: Vec<Vec<&str>> = r.text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "USED", "AVAIL", "REFER", "MOUNTPOINT"],
            vec!["zones/img@final", "0", "-", "768M", "-"],
            vec!["zones/x-disk0@a", "0", "-", "256", "-"],
            vec!["zones/x-disk0@b", "0", "-", "256", "-"]
        ]
    );
    assert_eq!(s.run("zfs list -H -o name -t snapshot zones/x-disk0").text, "zones/x-disk0@a\nzones/x-disk0@b\n");
    let r = s.run("zfs list -t volume");
    assert_eq!(r.text.lines().next(), Some("NAME           USED  AVAIL  REFER  VOLSIZE  MOUNTPOINT"));
    assert_eq!(r.text.lines().nth(1), Some("zones/img      768M    40M   768M    1.50G  -"));
    assert_eq!(s.run("zfs list -t all").text.lines().count(), 6);
    assert_eq!(s.run("zfs list -t frob").code, 2);
    assert_eq!(s.run("zfs list -o name,frob").code, 2);
    assert_eq!(s.run("zfs list zones/nope"), Reply::fail("NAME  USED  AVAIL  REFER  MOUNTPOINT\ncannot open 'zones/nope': dataset does not exist\n".into(), 1));
    // clone
    assert_eq!(s.run("zfs clone zones/x-disk0@a zones/c"), Reply::ok(String::new()));
    assert_eq!(s.run("zfs get -H origin zones/c").text, "zones/c\torigin\tzones/x-disk0@a\t-\n");
    assert_eq!(s.run("zfs clone zones/x-disk0@a zones/c"), Reply::fail("cannot create 'zones/c': dataset already exists\n".into(), 1));
    assert_eq!(s.run("zfs clone zones/x-disk0@zz zones/d"), Reply::fail("cannot open 'zones/x-disk0@zz': dataset does not exist\n".into(), 1));
    assert_eq!(
        s.run("zfs clone zones/x-disk0 zones/d"),
        Reply::fail("cannot open 'zones/x-disk0': operation not applicable to datasets of this type\n".into(), 1)
    );
    assert_eq!(s.run("zfs clone zones/x-disk0@a").code, 2);
    // rollback: to the latest, or -r past later snapshots.
    assert_eq!(s.run("zfs rollback zones/x-disk0@b"), Reply::ok(String::new()));
    assert_eq!(
        s.run("zfs rollback zones/x-disk0@a"),
        Reply::fail("cannot rollback to 'zones/x-disk0@a': more recent snapshots or bookmarks exist\nuse '-r' to force deletion of the following snapshots and bookmarks:\nzones/x-disk0@b\n".into(), 1)
    );
    assert_eq!(s.run("zfs rollback zones/x-disk0@nope"), Reply::fail("cannot open 'zones/x-disk0@nope': dataset does not exist\n".into(), 1));
    // destroy: dependents are listed and nothing is destroyed.
    assert_eq!(
        s.run("zfs destroy zones/x-disk0"),
        Reply::fail("cannot destroy 'zones/x-disk0': volume has dependent clones\nuse '-R' to destroy the following datasets:\nzones/c\n".into(), 1)
    );
    assert_eq!(
        s.run("zfs destroy zones/x-disk0@a"),
        Reply::fail("cannot destroy 'zones/x-disk0@a': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\nzones/c\n".into(), 1)
    );
    assert!(!s.system.pool_calls.iter().any(|c| c.starts_with("destroy")), "{:?}", s.system.pool_calls);
    assert_eq!(s.run("zfs destroy zones/c"), Reply::ok(String::new()));
    assert_eq!(
        s.run("zfs destroy zones/x-disk0"),
        Reply::fail("cannot destroy 'zones/x-disk0': volume has children\nuse '-r' to destroy the following datasets:\nzones/x-disk0@a\nzones/x-disk0@b\n".into(), 1)
    );
    assert_eq!(s.run("zfs rollback -r zones/x-disk0@a"), Reply::ok(String::new()));
    assert!(!s.system.pool().contains_key("zones/x-disk0@b"));
    s.system.busy.push("zones/x-disk0".into());
    assert_eq!(s.run("zfs rollback zones/x-disk0@a"), Reply::fail("cannot rollback 'zones/x-disk0': dataset is busy\n".into(), 1));
    assert_eq!(s.run("zfs destroy -r zones/x-disk0"), Reply::fail("cannot destroy 'zones/x-disk0': dataset is busy\n".into(), 1));
    s.system.busy.clear();
    assert_eq!(s.run("zfs destroy -r zones/x-disk0"), Reply::ok(String::new()));
    assert!(!s.system.pool().keys().any(|k| k.starts_with("zones/x-disk0")));
    assert_eq!(s.run("zfs destroy zones/x-disk0"), Reply::fail("cannot open 'zones/x-disk0': dataset does not exist\n".into(), 1));
    assert_eq!(s.run("zfs destroy -X zones/img").code, 2);
    assert_eq!(s.run("zfs destroy").code, 2);
    assert_eq!(s.run("zfs frob").code, 2);
    assert_eq!(s.run("zfs").code, 2);
    s.system.pool = Some(BTreeMap::new());
    assert_eq!(s.run("zfs list"), Reply::ok("no datasets available\n".into()));
}

#[test]
fn dladm_creates_and_deletes_etherstubs_and_vnics_through_netd() {
    use crate::dladm::LinkOp;
    let mut s = shell();
    assert_eq!(s.run("dladm create-etherstub stub1"), Reply::ok(String::new()));
    assert_eq!(s.run("dladm create-etherstub -t stub2"), Reply::ok(String::new()));
    assert_eq!(s.run("dladm show-etherstub"), Reply::ok("LINK\nstub0\nstub1\nstub2\n".into()));
    // Over an etherstub with a MAC and a VLAN; over the NIC with a
    // generated MAC (the same for the same name).
    assert_eq!(s.run("dladm create-vnic -l stub1 -m 2:8:20:aa:0:1 -v 5 op0"), Reply::ok(String::new()));
    assert_eq!(s.run("dladm create-vnic -t -l vioif0 web0"), Reply::ok(String::new()));
    let sent: Vec<_> = s.system.dladm_calls.iter().filter_map(|c| match c {
        LinkOp::CreateVnic { name, line } => Some((name.clone(), line.clone())),
        _ => None,
    }).collect();
    assert_eq!(sent[0], ("op0".to_string(), "switch=stub1 mac=2:8:20:aa:0:1 vlan_id=5".to_string()));
    assert!(sent[1].1.starts_with("switch=admin mac=02:08:20:"), "{:?}", sent[1]);
    assert_eq!(
        s.run("dladm show-vnic").text,
        std::format!(
            "\
LINK         OVER         SPEED  MACADDRESS        MACADDRTYPE       VID
vnic0        stub0        0      2:8:20:ff:0:1     fixed             0
vnic3        vioif0       0      2:8:20:7:0:1a     fixed             12
op0          stub1        0      2:8:20:aa:0:1     fixed             5
web0         vioif0       0      {:<17} fixed             0
",
            crate::dladm::mac(&{
                let mut m = [0u8; 6];
                for (b, p) in m.iter_mut().zip(sent[1].1["switch=admin mac=".len()..].split(':')) {
                    *b = u8::from_str_radix(p, 16).unwrap();
                }
                m
            })
        )
    );
    assert_eq!(s.run("dladm show-link op0").text.lines().nth(1).map(|l| l.split_whitespace().collect::<Vec<_>>()), Some(vec!["op0", "vnic", "9000", "down", "--", "stub1"]));
    // netd's refusals in dladm's words, exit 1.
    let refused = |s: &mut Shell<Mock>, line: &str, text: &str| {
        assert_eq!(s.run(line), Reply::fail(std::format!("{text}\n"), 1), "{line}");
    };
    refused(&mut s, "dladm create-etherstub stub1", "dladm: etherstub creation failed: object already exists");
    refused(&mut s, "dladm create-vnic -l stub1 op0", "dladm: vnic creation failed: object already exists");
    refused(&mut s, "dladm create-etherstub stubx", "dladm: invalid link name 'stubx' (it must end in a number (vnic0, stub1))");
    refused(&mut s, "dladm delete-etherstub stub1", "dladm: etherstub deletion failed: link busy (1 VNIC(s) on it)");
    refused(&mut s, "dladm delete-vnic vnic3", "dladm: vnic deletion failed: link busy (a VM's VNIC, attached)");
    refused(&mut s, "dladm delete-vnic op9", "dladm: vnic deletion failed: object not found");
    refused(&mut s, "dladm delete-etherstub stub9", "dladm: etherstub deletion failed: object not found");
    // The syntax, checked before netd is asked: nothing sent.
    let asked = s.system.dladm_calls.len();
    refused(&mut s, "dladm create-vnic -l nowhere0 op1", "dladm: vnic creation failed: object not found (no etherstub or NIC nowhere0)");
    refused(&mut s, "dladm create-vnic -l admin op1", "dladm: vnic creation failed: object not found (no etherstub or NIC admin)");
    refused(&mut s, "dladm create-vnic -l stub1 -m 2:8:20:0:0:1_client=3 op1", "dladm: invalid MAC address '2:8:20:0:0:1_client=3'");
    refused(&mut s, "dladm create-vnic -l stub1 -m \"2 client=3\" op1", "dladm: invalid MAC address '2 client=3'");
    refused(&mut s, "dladm create-vnic -l stub1 -v 4095 op1", "dladm: invalid VLAN identifier '4095' (1 to 4094)");
    refused(&mut s, "dladm create-vnic -l stub1 -v +5 op1", "dladm: invalid VLAN identifier '+5' (1 to 4094)");
    for bad in ["dladm create-vnic op1", "dladm create-vnic -l stub1", "dladm delete-vnic", "dladm create-etherstub a1 b1", "dladm create-vnic -l stub1 -p maxbw=10 op1", "dladm delete-etherstub -R stub1", "dladm create-frob x1"] {
        let r = s.run(bad);
        assert_eq!(r.code, 1, "{bad}");
        assert!(r.text.contains("usage:  dladm"), "{bad}: {}", r.text);
    }
    assert_eq!(s.system.dladm_calls.len(), asked, "nothing was sent to netd");
    // Deleted again.
    assert_eq!(s.run("dladm delete-vnic op0"), Reply::ok(String::new()));
    assert_eq!(s.run("dladm delete-etherstub -t stub1"), Reply::ok(String::new()));
    assert_eq!(s.run("dladm show-etherstub"), Reply::ok("LINK\nstub0\nstub2\n".into()));
    // Not an admin of netd's; netd absent.
    s.system.netd_refuses = true;
    let r = s.run("dladm create-etherstub stub3");
    assert_eq!((r.code, r.text.starts_with("dladm: insufficient privileges")), (1, true), "{}", r.text);
    s.system.netd_refuses = false;
    s.system.netd_absent = true;
    let r = s.run("dladm create-vnic -l stub2 op2");
    assert_eq!((r.code, r.text.starts_with("dladm: netd did not answer")), (1, true), "{}", r.text);
}

#[test]
fn dladm_shows_netd_s_links_in_illumos_s_columns() {
    let mut s = shell();
    let r = s.run("dladm show-link");
    assert_eq!(
        r.text,
        "\
LINK        CLASS     MTU    STATE    BRIDGE     OVER
vioif0      phys      1500   up       --         --
stub0       etherstub 9000   unknown  --         --
vnic0       vnic      9000   up       --         stub0
vnic3       vnic      1500   down     --         vioif0
"
    );
    assert_eq!(r.code, 0);
    assert_eq!(s.run("dladm show-link stub0").text.lines().count(), 2);
    assert_eq!(
        s.run("dladm show-link nope"),
        Reply::fail("dladm: failed to show link nope: object not found\n".into(), 1)
    );
    assert_eq!(
        s.run("dladm show-vnic").text,
        "\
LINK         OVER         SPEED  MACADDRESS        MACADDRTYPE       VID
vnic0        stub0        0      2:8:20:ff:0:1     fixed             0
vnic3        vioif0       0      2:8:20:7:0:1a     fixed             12
"
    );
    assert_eq!(s.run("dladm show-vnic vnic3").text.lines().count(), 2);
    assert_eq!(s.run("dladm show-vnic vnic9").code, 1);
    assert_eq!(s.run("dladm show-etherstub"), Reply::ok("LINK\nstub0\n".into()));
    assert_eq!(s.run("dladm show-etherstub admin").code, 1);
    for bad in ["dladm", "dladm frob", "dladm show-link -p", "dladm show-link a b"] {
        let r = s.run(bad);
        assert_eq!(r.code, 1, "{bad}");
        assert!(r.text.contains("usage:  dladm"), "{bad}: {}", r.text);
    }
    // A shell netd's vnic-admin= does not name is refused by netd.
    s.system.netd_refuses = true;
    let r = s.run("dladm show-vnic");
    assert_eq!((r.code, r.text.starts_with("dladm: insufficient privileges")), (1, true), "{}", r.text);
    s.system.netd_refuses = false;
    s.system.netd_absent = true;
    assert_eq!(
        s.run("dladm show-etherstub"),
        Reply::fail("dladm: netd did not answer: no netd endpoint was granted (manifest: calls)\n".into(), 1)
    );
}

/// `dlstat`: each VNIC's counters by its link name, from the link's side,
/// drops by reason; a VNIC nobody attached is all `--`; one link by name;
/// usage; netd's refusal in dlstat's words.
#[test]
fn dlstat_shows_each_vnics_counters_and_drops_by_reason() {
    let mut s = shell();
    let want = "\
LINK             IPKTS      RBYTES IDROPS                   OPKTS      OBYTES ODROPS
vnic0               12        1500 rate_limited=3               7         640 mac_spoof=1,ip_spoof=2
vnic3               --          -- --                          --          -- --
";
    assert_eq!(s.run("dlstat"), Reply::ok(want.into()));
    assert_eq!(s.run("dlstat show-link"), Reply::ok(want.into()));
    assert_eq!(s.run("dlstat show-link vnic3").text.lines().count(), 2);
    assert_eq!(s.run("dlstat vnic0").text.lines().nth(1), want.lines().nth(1));
    assert_eq!(s.run("dlstat vnic9"), Reply::fail("dlstat: failed to show link vnic9: object not found\n".into(), 1));
    for bad in ["dlstat -i 1", "dlstat show-link a b", "dlstat a b"] {
        let r = s.run(bad);
        assert_eq!(r.code, 2, "{bad}");
        assert!(r.text.contains("usage:  dlstat"), "{bad}: {}", r.text);
    }
    s.system.netd_refuses = true;
    let r = s.run("dlstat");
    assert_eq!((r.code, r.text.starts_with("dlstat: insufficient privileges")), (1, true), "{}", r.text);
}

/// `zfs rename`: a volume moves with its snapshots (a clone's origin
/// follows), a snapshot within its volume; ZFS's refusals, each before or
/// without a change: another pool, a snapshot into another volume, `@` in
/// a volume's new name, a missing source, a taken name, a volume a VMM
/// holds (busy), a name storaged refuses, usage.
#[test]
fn zfs_rename_follows_zfs_s_rules() {
    let mut s = shell();
    assert_eq!(s.run("zfs clone zones/img@final zones/c"), Reply::ok(String::new()));
    assert_eq!(s.run("zfs rename zones/img zones/base"), Reply::ok(String::new()));
    assert_eq!(s.run("zfs list -H -o name -t all").text, "zones/base\nzones/base@final\nzones/c\nzones/x-disk0\n");
    assert_eq!(s.run("zfs get -H -o value origin zones/c").code, 2, "-o is not a zfs get option here");
    assert_eq!(s.run("zfs get -H origin zones/c").text, "zones/c\torigin\tzones/base@final\t-\n");
    assert_eq!(s.run("zfs rename zones/base@final zones/base@v1"), Reply::ok(String::new()));
    assert!(s.system.pool().contains_key("zones/base@v1"));
    let refused = |s: &mut Shell<Mock>, line: &str, text: &str| {
        let calls = s.system.pool_calls.len();
        let before: Vec<String> = s.system.pool().keys().cloned().collect();
        assert_eq!(s.run(line), Reply::fail(text.into(), 1), "{line}");
        assert_eq!(s.system.pool().keys().cloned().collect::<Vec<_>>(), before, "{line} changed the pool");
        s.system.pool_calls.len() - calls
    };
    let asked = refused(&mut s, "zfs rename zones/base other/base", "cannot rename to 'other/base': datasets must be within same pool\n");
    assert_eq!(asked, 0, "refused before storaged is asked");
    refused(&mut s, "zfs rename zones/base@v1 zones/c@v1", "cannot rename to 'zones/c@v1': snapshots must be part of same dataset\n");
    refused(&mut s, "zfs rename zones/base@v1 v2", "cannot rename to 'v2': snapshots must be part of same dataset\n");
    refused(&mut s, "zfs rename zones/base zones/b@x", "cannot rename to 'zones/b@x': snapshot delimiter '@' is not expected here\n");
    refused(&mut s, "zfs rename zones/nope zones/new", "cannot open 'zones/nope': dataset does not exist\n");
    refused(&mut s, "zfs rename zones/base zones/c", "cannot rename to 'zones/c': dataset already exists\n");
    s.system.busy.push("zones/x-disk0".into());
    refused(&mut s, "zfs rename zones/x-disk0 zones/y", "cannot rename to 'zones/y': dataset is busy\n");
    refused(&mut s, "zfs rename zones/x-disk0@a zones/x-disk0@b", "cannot rename to 'zones/x-disk0@b': dataset is busy\n");
    let long = std::format!("zones/{}", "n".repeat(5000));
    let r = s.run(&std::format!("zfs rename zones/c {long}"));
    assert_eq!(r.code, 1);
    assert!(r.text.starts_with("cannot rename to 'zones/nnn") && r.text.contains("must be zones/NAME"), "{r:?}");
    assert_eq!(s.run("zfs rename zones/c").code, 2);
    assert_eq!(s.run("zfs rename zones/c a b").code, 2);
    assert_eq!(s.run("zfs rename -x zones/c zones/d").code, 2);
    assert_eq!(s.run("zfs rename -f zones/c zones/d"), Reply::ok(String::new()));
}

/// `zfs destroy -R`: every clone of the dataset's snapshots (and their
/// clones) goes first; `-n -v` lists them in that order and destroys
/// nothing; `-v` lists them as it destroys them. A clone a VMM holds
/// stops it there, saying which.
#[test]
fn zfs_destroy_dependents_with_capital_r() {
    let mut s = shell();
    for line in [
        "zfs clone zones/img@final zones/c1",
        "zfs snapshot zones/c1@s",
        "zfs clone zones/c1@s zones/c2",
        "zfs clone zones/img@final zones/c3",
    ] {
        assert_eq!(s.run(line), Reply::ok(String::new()), "{line}");
    }
    let before = s.system.pool().len();
    let r = s.run("zfs destroy -nvR zones/img");
    assert_eq!(
        r,
        Reply::ok(
            "would destroy zones/c2\nwould destroy zones/c1@s\nwould destroy zones/c1\nwould destroy zones/c3\nwould destroy zones/img@final\nwould destroy zones/img\n"
                .into()
        )
    );
    assert_eq!(s.system.pool().len(), before, "-n destroys nothing");
    assert_eq!(s.run("zfs destroy -n -R zones/c1@s"), Reply::ok(String::new()));
    assert_eq!(s.run("zfs destroy -nv zones/c2"), Reply::ok("would destroy zones/c2\n".into()));
    // A clone in use: the destroy stops at it, what went before it is gone.
    s.system.busy.push("zones/c3".into());
    let r = s.run("zfs destroy -R zones/img");
    assert_eq!(r, Reply::fail("cannot destroy 'zones/c3': dataset is busy\n".into(), 1));
    assert!(!s.system.pool().contains_key("zones/c1") && s.system.pool().contains_key("zones/img@final"));
    s.system.busy.clear();
    let r = s.run("zfs destroy -vR zones/img@final");
    assert_eq!(r, Reply::ok("will destroy zones/c3\nwill destroy zones/img@final\n".into()));
    assert_eq!(s.system.pool().keys().cloned().collect::<Vec<_>>(), ["zones/img", "zones/x-disk0"]);
    assert!(s.system.pool_calls.ends_with(&["destroy zones/c3".into(), "destroy zones/img@final".into()]), "{:?}", s.system.pool_calls);
    assert_eq!(s.run("zfs destroy -R zones/nope"), Reply::fail("cannot open 'zones/nope': dataset does not exist\n".into(), 1));
}

/// `zfs send SNAP | zfs receive NAME`: the stream goes through the shell a
/// chunk at a time, in order, and both streams are closed; `-v` and `-n`;
/// an incremental onto the copy; ZFS's refusals; a stream refused half way
/// (forged, or its snapshot destroyed) closes both ends and makes nothing;
/// `zfs send` and `zfs receive` alone and other pipelines are refused.
#[test]
fn zfs_send_into_zfs_receive() {
    let mut s = shell();
    let r = s.run("zfs send zones/img@final | zfs receive -v zones/copy");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.text,
        "receiving full stream of zones/img@final into zones/copy@final\nreceived 4.88K stream in 1 seconds (4.88K/sec)\n"
    );
    assert_eq!(s.system.chunk_reads, [0, 2048, 4096, 5000], "read in order to the empty chunk");
    assert!(s.system.sends.is_empty() && s.system.receives.is_empty(), "both streams closed");
    assert!(s.system.pool().contains_key("zones/copy@final") && s.system.pool().contains_key("zones/copy"));
    // Again: the copy exists.
    assert_eq!(
        s.run("zfs send zones/img@final | zfs recv zones/copy"),
        Reply::fail("cannot receive new filesystem stream: destination 'zones/copy' exists\nmust specify -F to overwrite it\n".into(), 1)
    );
    assert!(s.system.sends.is_empty() && s.system.receives.is_empty());
    // Incremental, `-i @final` short for `-i zones/img@final`; the target
    // names the snapshot.
    assert_eq!(s.run("zfs snapshot zones/img@later"), Reply::ok(String::new()));
    assert_eq!(s.run("zfs send -i @final zones/img@later | zfs receive zones/copy@v2"), Reply::ok(String::new()));
    assert!(s.system.pool_calls.contains(&"send zones/img@later zones/img@final".into()));
    assert!(s.system.pool().contains_key("zones/copy@v2") && !s.system.pool().contains_key("zones/copy@later"));
    assert_eq!(
        s.run("zfs send -i zones/img@final zones/img@later | zfs receive zones/x-disk0"),
        Reply::fail("cannot receive incremental stream: most recent snapshot of zones/x-disk0 does not\nmatch incremental source\n".into(), 1)
    );
    assert_eq!(
        s.run("zfs send -i zones/x-disk0@a zones/img@later | zfs receive zones/q").text,
        "cannot send 'zones/img@later': incremental source must be in same filesystem\n"
    );
    assert_eq!(
        s.run("zfs send zones/img@nope | zfs receive zones/q"),
        Reply::fail("cannot open 'zones/img@nope': dataset does not exist\n".into(), 1)
    );
    assert_eq!(
        s.run("zfs send zones/img | zfs receive zones/q"),
        Reply::fail("cannot send 'zones/img': operation not applicable to datasets of this type\n".into(), 1)
    );
    // -F: the target rolled back to its latest snapshot first (then the
    // stream's base must still be that snapshot); a full stream over an
    // existing volume is refused, nothing opened; a busy target refused.
    let calls = s.system.pool_calls.len();
    let r = s.run("zfs send -i @final zones/img@later | zfs receive -F zones/copy");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.text.contains("does not\nmatch incremental source"), "{r:?}");
    assert_eq!(s.system.pool_calls[calls..3 + calls], ["rollback zones/copy@v2", "send zones/img@later zones/img@final", "receive zones/copy"]);
    let calls = s.system.pool_calls.len();
    assert_eq!(
        s.run("zfs send zones/img@final | zfs receive -F zones/copy"),
        Reply::fail("cannot receive new filesystem stream: destination 'zones/copy' exists\n-F over an existing volume is not supported here: destroy it first\n".into(), 1)
    );
    assert_eq!(s.system.pool_calls.len(), calls, "nothing asked of storaged");
    s.system.busy.push("zones/copy".into());
    assert_eq!(
        s.run("zfs send -i @final zones/img@later | zfs receive -F zones/copy"),
        Reply::fail("cannot receive incremental stream: dataset is busy\n".into(), 1)
    );
    s.system.busy.clear();
    assert_eq!(s.run("zfs send zones/img@final | zfs receive -F zones/fresh"), Reply::ok(String::new()), "-F onto nothing");
    assert!(s.system.sends.is_empty() && s.system.receives.is_empty());
    // -n: nothing opened.
    let calls = s.system.pool_calls.len();
    assert_eq!(s.run("zfs send zones/img@final | zfs receive -n zones/q"), Reply::ok("would receive full stream of zones/img@final into zones/q@final\n".into()));
    assert_eq!(s.system.pool_calls.len(), calls);
    // A forged or damaged stream: refused at its second chunk, both ends
    // closed, nothing made.
    s.system.corrupt_at = Some(3000);
    let r = s.run("zfs send zones/img@final | zfs receive zones/forged");
    assert_eq!(r, Reply::fail("cannot receive: invalid stream (receive: piece 2: its tag does not match)\n".into(), 1));
    assert!(s.system.sends.is_empty() && s.system.receives.is_empty());
    assert!(!s.system.pool().keys().any(|k| k.starts_with("zones/forged")));
    s.system.corrupt_at = None;
    // The snapshot destroyed during the send.
    s.system.send_fails_at = Some(2048);
    let r = s.run("zfs send zones/img@final | zfs receive zones/cut");
    assert_eq!(r.code, 1);
    assert!(r.text.ends_with("cannot receive: failed to read from stream\n") && r.text.contains("destroyed during the send"), "{r:?}");
    assert!(s.system.sends.is_empty() && s.system.receives.is_empty());
    assert!(!s.system.pool().keys().any(|k| k.starts_with("zones/cut")));
    s.system.send_fails_at = None;
    // A target a VMM holds.
    s.system.busy.push("zones/x-disk0".into());
    let r = s.run("zfs send zones/img@final | zfs receive zones/x-disk0");
    assert_eq!(r, Reply::fail("cannot receive new filesystem stream: dataset is busy\n".into(), 1));
    assert!(s.system.sends.is_empty() && s.system.receives.is_empty());
    // Alone, or in another pipeline.
    assert_eq!(
        s.run("zfs send zones/img@final"),
        Reply::fail("Error: Stream can not be written to a terminal.\nYou must redirect standard output.\n".into(), 1)
    );
    assert_eq!(s.run("zfs receive zones/q").code, 1);
    for line in ["vmadm list | zfs receive zones/q", "zfs send zones/img@final | zfs list", "zfs send zones/img@final | zfs receive zones/q | zfs list"] {
        let r = s.run(line);
        assert_eq!(r.code, 2, "{line}: {r:?}");
        assert!(r.text.contains("the one pipeline this shell runs"), "{r:?}");
    }
    assert_eq!(s.run("zfs send | zfs receive zones/q").code, 2);
    assert_eq!(s.run("zfs send zones/img@final | zfs receive").code, 2);
    assert_eq!(s.run("zfs send zones/img@final |").code, 2);
    assert!(s.system.sends.is_empty() && s.system.receives.is_empty());
}

#[test]
fn a_pipe_splits_commands_unless_quoted() {
    let c = parse("zfs send a@b|zfs recv 'x|y' \"|\" z\\|").unwrap();
    assert_eq!(c.words, ["zfs", "send", "a@b"]);
    assert_eq!(c.piped, [vec!["zfs", "recv", "x|y", "|", "z|"]]);
    assert!(parse("a | b").unwrap().piped.len() == 1 && parse("a b").unwrap().piped.is_empty());
    for bad in ["| a", "a |", "a || b", "a | <<< x", "|"] {
        assert_eq!(parse(bad).unwrap_err(), ParseError::EmptyPipe, "{bad}");
    }
    assert_eq!(
        shell().run("a | b"),
        Reply::fail("shell: the one pipeline this shell runs is `zfs send [-i SNAP] SNAPSHOT | zfs receive [-nvF] NAME`\n".into(), 2)
    );
    assert_eq!(shell().run("a |"), Reply::fail("shell: syntax error: near unexpected token `|'\n".into(), 2));
}

const IMG: &str = "1a9e0000-0000-4000-8000-00000000000a";

fn downloading(pct: u32) -> String {
    std::format!("Downloading image 1a9e0000 [{:<20}] {pct:>3}%  0.{}MiB of 0.2MiB", "=".repeat(pct as usize / 5), pct / 50)
}

fn running(line: &str, stdout: &str) -> Option<VmadmImport> {
    Some(VmadmImport { running: true, done_bytes: 1, total_bytes: 4, line: line.into(), stdout: stdout.into(), ..Default::default() })
}

fn ended(line: &str, stdout: &str, stderr: &str, code: i32) -> Option<VmadmImport> {
    Some(VmadmImport { line: line.into(), stdout: stdout.into(), stderr: stderr.into(), code, ..Default::default() })
}

/// Types `line` with the terminal recorded as it is drawn.
fn typed_live(sh: &mut Shell<Mock>, line: &str) -> String {
    let screen = sh.system.screen.clone();
    screen.borrow_mut().clear();
    let mut show = |b: &[u8]| screen.borrow_mut().extend_from_slice(b);
    sh.input_to(line.as_bytes(), &mut show);
    std::string::String::from_utf8(screen.borrow().clone()).unwrap()
}

/// `imgadm import`: the `Importing` line, then each new progress line
/// drawn over the last while zone-server downloads (on the terminal
/// before the next step is asked for), the 100% line, one newline, and
/// `Imported image`; nothing goes through the one-shot `vmadm` call.
#[test]
fn imgadm_import_draws_its_progress_in_place_as_it_downloads() {
    let mut sh = shell();
    let importing = std::format!("Importing {IMG} (imported-disk@1.0) from \"http://10.0.2.2:8081\"\n");
    let done = std::format!("Imported image {IMG} (imported-disk@1.0)\n");
    sh.system.imports = [
        running("", &importing),
        running(&downloading(25), ""),
        running(&downloading(50), ""),
        running(&downloading(50), ""),
        running(&downloading(75), ""),
        ended(&downloading(100), &done, "", 0),
    ]
    .into();
    let all = typed_live(&mut sh, &std::format!("imgadm import {IMG}\r"));
    assert_eq!(
        all,
        std::format!(
            "imgadm import {IMG}\n{importing}\r{}\r{}\r{}\r{}\n{done}[root@box1 ~]# ",
            downloading(25),
            downloading(50),
            downloading(75),
            downloading(100)
        )
    );
    assert_eq!(sh.status, 0);
    assert_eq!(sh.system.import_calls, [std::format!("begin import {IMG}"), "step".into(), "step".into(), "step".into(), "step".into(), "step".into()]);
    // Live: each line was on the terminal before the next step was asked for.
    let at = |i: usize| std::string::String::from_utf8(sh.system.shown_at_imports[i].clone()).unwrap();
    assert!(at(1).ends_with(&importing), "{:?}", at(1));
    assert!(at(2).ends_with(&std::format!("\r{}", downloading(25))), "{:?}", at(2));
    assert!(at(5).ends_with(&std::format!("\r{}", downloading(75))), "{:?}", at(5));
    assert!(sh.system.calls.is_empty(), "{:?}", sh.system.calls);

    // -q: zone-server sends no lines; nothing is drawn, no stray newline.
    sh.system.imports = [running("", &importing), running("", ""), ended("", &done, "", 0)].into();
    let all = typed_live(&mut sh, &std::format!("imgadm import -q {IMG}\r"));
    assert_eq!(all, std::format!("imgadm import -q {IMG}\n{importing}{done}[root@box1 ~]# "));
    assert_eq!(sh.system.import_calls.last().map(String::as_str), Some("step"));
    assert!(sh.system.import_calls.contains(&std::format!("begin import -q {IMG}")));
}

/// A refused import: the line drawn so far stays, ended by a newline, then
/// imgadm's error and its exit status; refused at once (no such image,
/// usage), no progress at all. zone-server gone at the start or half way:
/// the shell says so and the prompt comes back.
#[test]
fn imgadm_import_failures_end_the_line_and_say_why() {
    let mut sh = shell();
    let why = "imgadm: error (DownloadError): GET http://10.0.2.2:8081/images/X/file: files[0].sha1 says a, the file is b\n";
    sh.system.imports = [running("", "Importing ...\n"), running(&downloading(50), ""), ended(&downloading(50), "", why, 1)].into();
    let all = typed_live(&mut sh, &std::format!("imgadm import {IMG}\r"));
    assert_eq!(all, std::format!("imgadm import {IMG}\nImporting ...\n\r{}\n{why}[root@box1 ~]# ", downloading(50)));
    assert_eq!(sh.status, 1);

    let usage = "imgadm: error (Usage): imgadm import: usage: imgadm import [-q] UUID [-S SOURCE_URL]\n";
    sh.system.imports = [ended("", "", usage, 1)].into();
    let all = typed_live(&mut sh, "imgadm import\r");
    assert_eq!(all, std::format!("imgadm import\n{usage}[root@box1 ~]# "));
    assert_eq!(sh.system.import_calls.last().map(String::as_str), Some("begin import"));

    sh.system.imports = [None].into();
    let all = typed_live(&mut sh, &std::format!("imgadm import {IMG}\r"));
    assert_eq!(all, std::format!("imgadm import {IMG}\nimgadm: zone-server did not answer: the endpoint is gone\n[root@box1 ~]# "));
    assert_eq!(sh.status, 1);

    sh.system.imports = [running("", "Importing ...\n"), running(&downloading(5), ""), None].into();
    let all = typed_live(&mut sh, &std::format!("imgadm import {IMG}\r"));
    assert_eq!(
        all,
        std::format!("imgadm import {IMG}\nImporting ...\n\r{}\nimgadm: zone-server did not answer: the endpoint is gone\n[root@box1 ~]# ", downloading(5))
    );
    assert_eq!(sh.status, 1);
    // The shell goes on.
    assert_eq!(typed_live(&mut sh, "vmadm list\r"), "vmadm list\nUUID  TYPE  RAM  STATE  ALIAS\n[root@box1 ~]# ");
}
