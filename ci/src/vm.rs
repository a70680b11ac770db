//! One VM on Alcove from a VM description: what `cargo xtask run --vm
//! FILE.json`, the Linux end-to-end test and the Linux benchmarks share.
//!
//! The description is JSON with SmartOS's property names, checked here with
//! vmm-server's own parser before anything is built, so a bad one fails at
//! once with the property named. From it come a boot manifest (console,
//! storaged and one `vmm-server` instance holding `vm.json`, the kernel and
//! the initrd as boot files), the QEMU machine (each disk a virtio-blk drive
//! that storaged serves to the VM as the same disk number) and, after the
//! run, a reading of the serial log: `vm NAME: started: ...`, the guest's
//! console, `ALCOVE-BENCH vmm_overhead_kib N KiB` and one
//! `vm NAME: ended: WORD`.

use crate::Result;
use crate::emu::{Bochs, Qemu};
use crate::image::BootSystem;
use initrd::manifest::{MAX_BUDGET_KIB, MAX_NAME_LEN};
use std::path::{Path, PathBuf};
use vmm_server::config::VmConfig;
use vmm_server::firmware::image_file;
use vmm_server::vm::sizing::KernelMemory;

/// The QEMU CPU the VM tests and `run --vm` use: SVM with nested paging.
pub const QEMU_CPU: &str = "EPYC,+svm,+npt";
/// netd's host address on the `admin` switch of a `run --vm` machine.
pub const HOST_ADDRESS: &str = "10.0.2.15";
/// The MAC of netd's host VNIC there.
pub const HOST_MAC: &str = "02:08:20:ff:00:01";
/// The port on netd's host address `run --vm` forwards a host port to by
/// default: HTTP, where the control plane's API listens.
pub const ADMIN_PORT: u16 = 80;
/// The IOAPIC line netd holds, not for the line (nothing drives it) but as
/// the authority to allocate its NIC's MSI-X vector.
pub const NETD_IRQ: u8 = 23;

/// A forward from a host port to an address on the machine's `admin` NIC
/// (QEMU user networking's `hostfwd`): `tcp:HOSTPORT-IP:PORT`, or QEMU's
/// own `tcp:[HOSTADDR]:HOSTPORT-[IP]:PORT` (`udp:` alike).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFwd {
    pub udp: bool,
    /// The host address it listens on (empty: every address).
    pub host_addr: String,
    pub host_port: u16,
    /// The address on the user network (empty: QEMU's first guest
    /// address, 10.0.2.15, which is netd's).
    pub guest_addr: String,
    pub guest_port: u16,
}

impl HostFwd {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let bad = |why: &str| format!("--hostfwd {text:?}: {why} (tcp:HOSTPORT-IP:PORT, as QEMU's hostfwd)");
        let (proto, rest) = text.split_once(':').ok_or_else(|| bad("no protocol"))?;
        let udp = match proto {
            "tcp" => false,
            "udp" => true,
            _ => return Err(bad("the protocol is tcp or udp")),
        };
        let (host, guest) = rest.split_once('-').ok_or_else(|| bad("no '-' between the host and the guest side"))?;
        let (host_addr, host_port) = match host.rsplit_once(':') {
            Some((a, p)) => (a, p),
            None => ("", host),
        };
        let (guest_addr, guest_port) = guest.rsplit_once(':').ok_or_else(|| bad("the guest side is IP:PORT"))?;
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad(&format!("{p:?} is no port")));
        for a in [host_addr, guest_addr] {
            if !a.is_empty() && a.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(bad(&format!("{a:?} is no IPv4 address")));
            }
        }
        Ok(Self {
            udp,
            host_addr: host_addr.into(),
            host_port: port(host_port)?,
            guest_addr: guest_addr.into(),
            guest_port: port(guest_port)?,
        })
    }

    /// As QEMU's `hostfwd=` takes it.
    pub fn qemu(&self) -> String {
        let proto = if self.udp { "udp" } else { "tcp" };
        format!("{proto}:{}:{}-{}:{}", self.host_addr, self.host_port, self.guest_addr, self.guest_port)
    }
}

/// The machine's NIC on the `admin` nic_tag: a modern virtio-net on
/// QEMU's user network (10.0.2.0/24, gateway 10.0.2.2), with `forwards`.
pub fn admin_nic(forwards: &[HostFwd]) -> Vec<String> {
    let mut netdev = String::from("user,id=admin,net=10.0.2.0/24");
    for f in forwards {
        netdev.push_str(",hostfwd=");
        netdev.push_str(&f.qemu());
    }
    vec!["-netdev".into(), netdev, "-device".into(), "virtio-net-pci,netdev=admin,disable-legacy=on".into()]
}

/// netd.conf's `host` line of a machine whose NIC is on `admin`: netd's own
/// TCP/IP at [`HOST_ADDRESS`] (QEMU user networking's usual guest
/// address, gateway 10.0.2.2) with its TCP echo diagnostic on port 7.
pub fn admin_host_line() -> String {
    format!("host switch=admin mac={HOST_MAC} ip={HOST_ADDRESS}/24 gateway=10.0.2.2 echo=7\n")
}

/// A forward from `port` on 127.0.0.1 (reachable from this host alone) to
/// `guest_port` on netd's admin address.
pub fn admin_forward(port: u16, guest_port: u16) -> HostFwd {
    HostFwd { udp: false, host_addr: "127.0.0.1".into(), host_port: port, guest_addr: HOST_ADDRESS.into(), guest_port }
}

/// A TCP port on 127.0.0.1 free now (for a forward).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
/// Machine memory beyond the guest's RAM: Alcove, its servers and the
/// VMM's own overhead (its budget beyond guest RAM, from
/// `vmm_server::vm::sizing`, is a few MiB: page tables, vCPUs).
pub const MACHINE_EXTRA_MIB: u64 = 768;

/// A checked VM description and what the driver makes of it.
#[derive(Clone, Debug)]
pub struct VmPlan {
    /// Where the description came from (messages name it).
    pub source: PathBuf,
    /// The text packed as `vm.json`.
    pub json: String,
    pub config: VmConfig,
    /// The name in the VM's serial lines (`vm NAME: ...`): its alias, else
    /// its uuid, else the server's name, as vmm-server chooses.
    pub name: String,
    /// The manifest's server (and system) name: `vm-<alias>` made a name.
    pub server: String,
    /// Host paths: relative paths in the JSON resolve against its folder.
    /// `kernel` is the firmware image for a VM with `bootrom` (Debian's,
    /// fetched by [`crate::fwboot::image`]).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Host files attached as machine disks, `disks[i]` as disk i (empty
    /// when the disks are pool volumes).
    pub disks: Vec<PathBuf>,
    /// The pool's image files when the disks are pool volumes (one: a
    /// single disk, two: a mirror), attached as the machine's disks; where
    /// storaged finds (or, on blank files, creates) the pool `zones`.
    pub pool: Vec<PathBuf>,
    /// The boot files' sizes in bytes (`vm.json`, kernel, initrd), for the
    /// VMM's budget: the kernel and initrd count as 0 until [`VmPlan::load`]
    /// has looked at them.
    pub boot_file_bytes: Vec<u64>,
    /// The disks are RAM disks storaged serves from copies packed into the
    /// boot archive ([`VmPlan::with_ram_disks`]), not virtio-blk drives:
    /// how a machine without virtio-blk (Bochs) gives the VM its disks.
    /// Each may keep this many KiB of written blocks in memory.
    pub ram_disk_kib: Option<u64>,
}

/// The boot-archive name of RAM disk `i` ([`VmPlan::with_ram_disks`]).
pub fn ram_disk_file(i: usize) -> String {
    format!("ramdisk{i}.img")
}

/// The largest disk packed into the boot archive as a RAM disk: the whole
/// archive is loaded into the machine's memory by its boot loader.
pub const RAM_DISK_MAX_BYTES: u64 = 256 << 20;

/// A RAM disk's memory for written blocks unless told otherwise.
pub const RAM_DISK_KIB: u64 = 16 * 1024;

/// storaged's budget in the generated manifest, before RAM disks.
pub const STORAGED_BUDGET_KIB: u64 = 4096;

/// `name` made into a manifest name: lower case, a-z 0-9 - _, at most
/// [`MAX_NAME_LEN`] bytes, starting with a letter.
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert_str(0, "vm-");
    }
    s.truncate(MAX_NAME_LEN);
    s
}

/// The last component of a path as the JSON gives it (vmm-server looks its
/// boot files up by this).
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A boot file's name as the boot archive and the manifest need it.
fn boot_file_name<'a>(property: &str, path: &'a str) -> std::result::Result<&'a str, String> {
    let b = basename(path);
    let ok = !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b != "vm.json"
        && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if ok {
        Ok(b)
    } else {
        Err(format!(
            "vmadm: property \"{property}\": the file name {b:?} cannot be a boot file (1..={MAX_NAME_LEN} of \
             A-Z a-z 0-9 . - _, not vm.json); copy or link the file under such a name"
        ))
    }
}

impl VmPlan {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let json = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::load_text(&json, path)
    }

    /// As [`Self::load`], with the description's text given (`run --vm`'s
    /// rewritten one, [`crate::pool_disks`]); `path` names it and its
    /// folder resolves relative paths.
    pub fn load_text(json: &str, path: &Path) -> Result<Self> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let mut plan = Self::from_text(json, path, &dir).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(bootrom) = plan.config.bootrom {
            plan.kernel = crate::fwboot::image(bootrom)?;
        }
        if plan.has_volumes() {
            plan.pool = vec![crate::out_dir().join("pool.img")];
        }
        for (property, host) in plan.host_paths() {
            if !host.is_file() {
                return Err(format!("{}: property \"{property}\": {} is not a file", path.display(), host.display()).into());
            }
        }
        plan.boot_file_bytes = plan.boot_files_on_disk()?;
        plan.check_budget().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(plan)
    }

    /// Checks a description (pure: paths are not looked at). Relative paths
    /// resolve against `dir`.
    pub fn from_text(json: &str, source: &Path, dir: &Path) -> std::result::Result<Self, String> {
        let config = VmConfig::from_json(json).map_err(|e| e.to_string())?;
        config.check_supported().map_err(|e| e.to_string())?;
        let kernel_name = match config.bootrom {
            Some(b) => image_file(b),
            None => boot_file_name("kernel", &config.kernel)?,
        };
        if let Some(i) = &config.initrd {
            let initrd_name = boot_file_name("initrd", i)?;
            if initrd_name == kernel_name {
                return Err(format!(
                    "vmadm: property \"initrd\": has the same file name as \"kernel\" ({initrd_name:?}); the VM \
                     finds each by its file name"
                ));
            }
        }
        let resolve = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { dir.join(p) };
        let server = sanitize(&format!("vm-{}", config.alias.as_deref().unwrap_or("guest")));
        let name = match (&config.alias, &config.uuid) {
            (Some(a), _) => a.clone(),
            (None, Some(u)) => u.to_string(),
            (None, None) => server.clone(),
        };
        let mut boot_file_bytes = vec![json.len() as u64, 0];
        if config.initrd.is_some() {
            boot_file_bytes.push(0);
        }
        let plan = Self {
            ram_disk_kib: None,
            boot_file_bytes,
            source: source.to_path_buf(),
            json: json.to_string(),
            kernel: match config.bootrom {
                Some(b) => crate::guest_images::dir().join(image_file(b)),
                None => resolve(&config.kernel),
            },
            initrd: config.initrd.as_deref().map(resolve),
            disks: config.disks.iter().filter(|d| d.volume().is_none()).map(|d| resolve(&d.path)).collect(),
            pool: Vec::new(),
            config,
            name,
            server,
        };
        plan.check_budget()?;
        Ok(plan)
    }

    /// Whether the VM's disks are pool volumes.
    pub fn has_volumes(&self) -> bool {
        self.config.disks.iter().any(|d| d.volume().is_some())
    }

    /// The same VM on the pool in `files` (one file, or two for a mirror):
    /// they are the machine's disks. Absent files are made blank (sparse,
    /// `mib` MiB each), where storaged creates the pool at boot.
    pub fn with_pool(mut self, files: &[PathBuf], mib: u64) -> Result<Self> {
        if !(1..=2).contains(&files.len()) {
            return Err(format!("a pool is one file or two (a mirror), got {}", files.len()).into());
        }
        for f in files {
            if !f.exists() {
                if let Some(dir) = f.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::File::create(f)?.set_len(mib << 20)?;
            }
        }
        self.pool = files.to_vec();
        Ok(self)
    }

    /// storaged's arguments: the pool on the machine's disks, or the RAM
    /// disks and their memory limit.
    fn storaged_args(&self) -> String {
        if let Some(kib) = self.ram_disk_kib {
            let mut args: Vec<String> = (0..self.disks.len()).map(|i| format!("\"ramdisk={}\"", ram_disk_file(i))).collect();
            args.push(format!("\"ramdisk-mem-kib={kib}\""));
            return format!("args = [{}]\n", args.join(", "));
        }
        match self.pool.len() {
            0 => String::new(),
            1 => "args = [\"pool=zones\", \"pool-disks=0\"]\n".into(),
            _ => "args = [\"pool=zones\", \"pool-vdev=mirror\", \"pool-disks=0,1\"]\n".into(),
        }
    }

    /// The RAM disks' boot files: archive name and host path.
    pub fn ram_disk_files(&self) -> Vec<(String, PathBuf)> {
        match self.ram_disk_kib {
            Some(_) => self.disks.iter().enumerate().map(|(i, d)| (ram_disk_file(i), d.clone())).collect(),
            None => Vec::new(),
        }
    }

    /// storaged's `files` line and the budget it needs on top of its
    /// usual [`STORAGED_BUDGET_KIB`]: for each RAM disk its memory limit,
    /// the page tables of that memory and of the mapped file. Disk sizes
    /// are read from the host files (0 when unreadable: the run fails on
    /// the missing file anyway).
    pub fn storaged_ram_disks(&self) -> (String, u64) {
        let Some(kib) = self.ram_disk_kib else { return (String::new(), 0) };
        let files = self.ram_disk_files();
        let mut extra = 0;
        for (_, path) in &files {
            let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            // A page table (4 KiB) maps 2 MiB; chunks of 64 KiB have a
            // guard page after each, so their tables cover 68/64 as much.
            extra += kib + (kib * 68 / 64).div_ceil(2048) * 4 + (bytes >> 21) * 4 + 16;
        }
        let names: Vec<String> = files.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        (format!("files = [{}]\n", names.join(", ")), extra)
    }

    /// The same VM with its disks (host files) as RAM disks: each packed
    /// into the boot archive as `ramdisk<i>.img` and served by storaged
    /// from there (reads from the archive's read-only frames, writes kept
    /// in memory, at most `kib` KiB a disk, lost when the machine ends),
    /// for a machine with no virtio-blk (Bochs). The VM's description is
    /// unchanged: its disk i is storaged's disk i. Disks on pool volumes
    /// cannot be RAM disks.
    pub fn with_ram_disks(mut self, kib: u64) -> std::result::Result<Self, String> {
        if self.has_volumes() {
            return Err("vmadm: property \"disks\": pool volumes cannot be RAM disks (give the disks as host files)".into());
        }
        if kib == 0 || !kib.is_multiple_of(64) || kib > 1 << 20 {
            return Err(format!("a RAM disk's memory limit of {kib} KiB: must be a non-zero multiple of 64 KiB, at most 1 GiB"));
        }
        for (i, d) in self.disks.iter().enumerate() {
            let len = std::fs::metadata(d).map_err(|e| format!("vmadm: property \"disks[{i}].path\": {}: {e}", d.display()))?.len();
            if len == 0 || len % 512 != 0 {
                return Err(format!(
                    "vmadm: property \"disks[{i}].path\": {} is {len} bytes, not a non-zero multiple of the 512-byte sector",
                    d.display()
                ));
            }
            if len > RAM_DISK_MAX_BYTES {
                return Err(format!(
                    "vmadm: property \"disks[{i}].path\": {} is {len} bytes, more than a RAM disk in the boot archive may be \
                     ({RAM_DISK_MAX_BYTES} bytes)",
                    d.display()
                ));
            }
        }
        self.ram_disk_kib = Some(kib);
        Ok(self)
    }

    /// The VMM's `volumes` line: what init provisions and grants it.
    fn volumes_line(&self) -> String {
        let specs = self.config.volume_specs();
        if specs.is_empty() {
            return String::new();
        }
        let texts: Vec<String> = specs.iter().map(|s| serde_json::Value::String(s.to_text()).to_string()).collect();
        format!("volumes = [{}]\n", texts.join(", "))
    }

    /// The boot files' sizes as they are on the host.
    fn boot_files_on_disk(&self) -> Result<Vec<u64>> {
        let mut v = vec![self.json.len() as u64];
        for p in std::iter::once(&self.kernel).chain(self.initrd.iter()) {
            v.push(std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?.len());
        }
        Ok(v)
    }

    /// The kernel memory the VM's vmm-server needs: its budget
    /// (`vmm_server::vm::sizing`, the same figures the VMM checks itself).
    pub fn kernel_memory(&self) -> KernelMemory {
        let k = KernelMemory::for_vm(
            self.config.ram_bytes(),
            self.config.vcpus,
            // A VNIC's frame ring is mapped as a disk's block ring is.
            (self.config.disks.len() + self.config.nics.len()) as u32,
            &self.boot_file_bytes,
        );
        // With `bootrom` the second boot file is the firmware, which the
        // VMM copies into frames the guest may execute.
        match (self.config.bootrom, self.boot_file_bytes.get(1)) {
            (Some(_), Some(&len)) => k.with_firmware(len),
            _ => k,
        }
    }

    /// The manifest's `budget_kib` for the VM's vmm-server.
    pub fn budget_kib(&self) -> u64 {
        self.kernel_memory().total_kib()
    }

    /// A budget the manifest cannot hold is the description's fault: name
    /// the property.
    fn check_budget(&self) -> std::result::Result<(), String> {
        let k = self.kernel_memory();
        if k.total_kib() > u64::from(MAX_BUDGET_KIB) {
            return Err(format!(
                "vmadm: property \"ram\": {} (MiB) needs a kernel-memory budget of {} KiB ({}), more than a \
                 server's budget can be ({MAX_BUDGET_KIB} KiB)",
                self.config.ram_mib,
                k.total_kib(),
                k.breakdown()
            ));
        }
        Ok(())
    }

    /// Each host file the description names, with its property.
    pub fn host_paths(&self) -> Vec<(String, &Path)> {
        let first = if self.config.bootrom.is_some() { "bootrom" } else { "kernel" };
        let mut v = vec![(first.to_string(), self.kernel.as_path())];
        if let Some(i) = &self.initrd {
            v.push(("initrd".into(), i.as_path()));
        }
        for (i, d) in self.disks.iter().enumerate() {
            v.push((format!("disks[{i}].path"), d.as_path()));
        }
        v
    }

    /// The same VM without its disks (for Bochs, which has no virtio-blk
    /// device to attach them as).
    pub fn without_disks(&self) -> Result<Self> {
        let mut value: serde_json::Value = serde_json::from_str(&self.json)?;
        if let Some(o) = value.as_object_mut() {
            o.remove("disks");
        }
        let json = serde_json::to_string_pretty(&value)?;
        let mut plan = self.clone();
        plan.config = VmConfig::from_json(&json).map_err(|e| e.to_string())?;
        if let Some(len) = plan.boot_file_bytes.first_mut() {
            *len = json.len() as u64;
        }
        plan.json = json;
        plan.disks.clear();
        Ok(plan)
    }

    /// The boot file that holds the kernel, or the firmware with `bootrom`.
    fn kernel_file(&self) -> &str {
        match self.config.bootrom {
            Some(b) => image_file(b),
            None => basename(&self.config.kernel),
        }
    }

    /// The boot manifest: console and storaged as in `demo.toml`, and one
    /// vmm-server instance for this VM that ends the machine with it
    /// ([`Machine::manifest_toml`] with this VM alone).
    #[cfg(test)]
    pub fn manifest_toml(&self) -> String {
        Machine::one(self).manifest_toml()
    }

    /// The badge init gives the VMM's endpoints: its index in
    /// [`Self::manifest_toml`] plus one (console, storaged, netd, the VMM).
    #[cfg(test)]
    pub const VMM_BADGE: u64 = 4;

    /// netd's boot configuration for this VM ([`Machine::netd_conf`] with
    /// this VM alone).
    #[cfg(test)]
    pub fn netd_conf(&self) -> String {
        Machine::one(self).netd_conf()
    }

    /// What the boot archive is packed from.
    #[cfg(test)]
    pub fn boot_system(&self) -> BootSystem {
        Machine::one(self).boot_system()
    }

    /// `vm.json` as a host file: written next to the ISO tree, since the
    /// boot archive takes files from host paths.
    pub fn write_boot_files(&self, dir: &Path) -> Result<BootSystem> {
        Machine::one(self).write_boot_files(dir)
    }

    /// QEMU's drive options: machine disk i is `disks[i]`, or the pool's
    /// file i.
    /// No drives for RAM disks (storaged serves them from the archive).
    pub fn qemu_drives(&self) -> Vec<String> {
        let mut v = Vec::new();
        let disks = if self.ram_disk_kib.is_some() { &[][..] } else { &self.disks[..] };
        for (i, d) in disks.iter().chain(&self.pool).enumerate() {
            // QEMU's option syntax doubles a comma inside a value.
            let file = d.display().to_string().replace(',', ",,");
            v.push("-drive".into());
            v.push(format!("file={file},if=none,id=d{i},format=raw"));
            v.push("-device".into());
            v.push(format!("virtio-blk-pci,drive=d{i},disable-legacy=on,serial=vm-disk-{i}"));
        }
        v
    }

    /// Whether a NIC of the VM is on `admin` (the machine then has its NIC).
    pub fn on_admin(&self) -> bool {
        self.config.nics.iter().any(|n| n.nic_tag == "admin")
    }

    /// The QEMU machine: EPYC with SVM and NPT, 2 CPUs emulated by one host
    /// thread (`Qemu::one_thread`: with QEMU 7.2's thread per CPU, nested
    /// guests now and then wrecked the emulated CPU's own paging; README,
    /// "QEMU's threads"), guest RAM plus [`MACHINE_EXTRA_MIB`], the disks,
    /// and with a NIC on `admin` the machine's NIC (no forwards).
    pub fn qemu(&self) -> Qemu {
        self.qemu_forwarding(&[])
    }

    /// As [`VmPlan::qemu`], the machine's NIC with `forwards`.
    pub fn qemu_forwarding(&self, forwards: &[HostFwd]) -> Qemu {
        let mut extra = self.qemu_drives();
        if self.on_admin() {
            extra.extend(admin_nic(forwards));
        }
        Qemu {
            smp: 2,
            mem_mib: (self.config.ram_mib + MACHINE_EXTRA_MIB) as u32,
            cpu: QEMU_CPU.into(),
            one_thread: true,
            extra,
            ..Qemu::default()
        }
    }

    /// The Bochs machine: one CPU with VMX (Debian's Bochs has no SMP; the
    /// VM's vCPUs share it).
    pub fn bochs(&self) -> Bochs {
        Bochs { mem_mib: (self.config.ram_mib + MACHINE_EXTRA_MIB) as u32, ..Bochs::default() }
    }
}

/// How the VM ended, from its `ended:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEnding {
    PowerOff,
    Reboot,
    Halted,
    TripleFault,
    Error(String),
}

impl VmEnding {
    fn parse(word: &str) -> Self {
        match word {
            "poweroff" => VmEnding::PowerOff,
            "reboot" => VmEnding::Reboot,
            "halted" => VmEnding::Halted,
            "triple-fault" => VmEnding::TripleFault,
            other => VmEnding::Error(other.strip_prefix("error: ").unwrap_or(other).to_string()),
        }
    }

    /// `cargo xtask run --vm`'s exit status for this ending.
    pub fn status(&self) -> u8 {
        match self {
            VmEnding::PowerOff => 0,
            VmEnding::Reboot => 2,
            VmEnding::Halted => 3,
            VmEnding::TripleFault => 4,
            VmEnding::Error(_) => 5,
        }
    }
}

impl std::fmt::Display for VmEnding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmEnding::PowerOff => f.write_str("poweroff"),
            VmEnding::Reboot => f.write_str("reboot"),
            VmEnding::Halted => f.write_str("halted"),
            VmEnding::TripleFault => f.write_str("triple-fault"),
            VmEnding::Error(why) => write!(f, "error: {why}"),
        }
    }
}

/// `run --vm`'s status when the log has no `ended:` line (the machine
/// stopped or was stopped first).
pub const STATUS_NO_ENDING: u8 = 6;

/// What the serial log says about the VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmLog {
    /// Index (in the lines given) of the first `vm NAME: started: ...`.
    pub started: Option<usize>,
    /// `vm NAME: guest reboot` lines (the VM starts again after each).
    pub reboots: usize,
    /// The VMM's "every frame and capability returned" lines (one per
    /// boot of the VM).
    pub budget_returned: usize,
    /// The `ended:` lines, in order (one is right).
    pub endings: Vec<VmEnding>,
    pub overhead_kib: Option<u64>,
    /// Problems with the lines themselves (several starts, lines for
    /// another VM name).
    pub problems: Vec<String>,
}

impl VmLog {
    /// Reads the VM's lines (each without its line end) for the VM `name`.
    pub fn read<'a>(lines: impl IntoIterator<Item = &'a str>, name: &str) -> Self {
        let mut v = VmLog::default();
        let started = format!("vm {name}: started: ");
        let ended = format!("vm {name}: ended: ");
        let rebooted = format!("vm {name}: guest reboot");
        let mut starts = 0;
        for (i, line) in lines.into_iter().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.contains("every frame and capability returned") {
                v.budget_returned += 1;
            } else if line.contains("kernel memory not returned") {
                v.problems.push(format!("the VMM did not return everything: {line:?}"));
            }
            if line.starts_with(&started) {
                starts += 1;
                if starts > v.reboots + 1 {
                    v.problems.push(format!("the VM started again without a guest reboot: {line:?}"));
                }
                v.started.get_or_insert(i);
            } else if line == rebooted {
                v.reboots += 1;
            } else if let Some(word) = line.strip_prefix(&ended) {
                // (An ending without a start is a VM that failed to set up.)
                v.endings.push(VmEnding::parse(word.trim_end()));
            } else if line.starts_with("vm ") && (line.contains(": started: ") || line.contains(": ended: ")) {
                v.problems.push(format!("a line for another VM (expected \"vm {name}\"): {line:?}"));
            } else if let Some(rest) = line.strip_prefix("ALCOVE-BENCH vmm_overhead_kib ") {
                v.overhead_kib = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            }
        }
        v
    }

    /// The one ending, if there was exactly one.
    pub fn ending(&self) -> Option<&VmEnding> {
        match self.endings.as_slice() {
            [e] => Some(e),
            _ => None,
        }
    }
}

/// The marker the guest writes into sector 0 of its disk.
pub fn marker(nproc: u32) -> String {
    format!("ALCOVE-GUEST-MARKER nproc={nproc}\n")
}

/// Checks the disk after the run against what it held before: sector 0
/// must be the marker padded with zero bytes, the rest unchanged. `None` =
/// as expected.
pub fn check_disk_after(before: &[u8], after: &[u8], nproc: u32) -> Option<String> {
    let m = marker(nproc);
    if after.len() != before.len() {
        return Some(format!("the disk image is {} bytes now, {} before", after.len(), before.len()));
    }
    if after.len() < 512 {
        return Some("the disk image is smaller than a sector".into());
    }
    if !after.starts_with(m.as_bytes()) {
        let shown = String::from_utf8_lossy(&after[..m.len().min(after.len())]).into_owned();
        let untouched = after[..512] == before[..512];
        return Some(format!(
            "sector 0 does not start with {m:?}: it holds {shown:?}{}",
            if untouched { " (unchanged: the guest's write did not reach the image)" } else { "" }
        ));
    }
    if let Some(i) = after[m.len()..512].iter().position(|b| *b != 0) {
        return Some(format!("sector 0 has byte {:#04x} at offset {} after the marker (expected zero padding)", after[m.len() + i], m.len() + i));
    }
    if let Some(i) = (512..after.len()).find(|&i| after[i] != before[i]) {
        return Some(format!("the image changed beyond sector 0, first at byte {i} (sector {})", i / 512));
    }
    None
}

/// `len` bytes that differ on every call (xorshift64*, seeded from the
/// clock and the process id): the test disk's content.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut x = (nanos as u64) ^ (u64::from(std::process::id()) << 32) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The SHA-256 of a file, from the host's `sha256sum`.
pub fn sha256_file(path: &Path) -> Result<String> {
    let out = std::process::Command::new("sha256sum").arg(path).output().map_err(|e| format!("sha256sum: {e}"))?;
    if !out.status.success() {
        return Err(format!("sha256sum {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let hash = text.split_whitespace().next().unwrap_or_default();
    if hash.len() != 64 {
        return Err(format!("sha256sum {}: unexpected output {text:?}", path.display()).into());
    }
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests;

mod machine;
pub use machine::Machine;

mod linux_check;
pub use linux_check::{check_linux_run, check_linux_run_typed, check_stress_run};
