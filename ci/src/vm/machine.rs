//! One Alcove machine running one or several VMs from their descriptions
//! (`cargo xtask run --vm A.json --vm B.json`, and the two-VM Linux
//! network cases): one boot manifest with console, storaged, netd (when a
//! VM has NICs) and a `vmm-server` instance per VM, each holding its own
//! description and its own VNICs (netd.conf names each VNIC's client by
//! the badge init gives that VMM: its index in the manifest plus one).
//!
//! With one VM everything is as it always was: its description is the
//! boot file `vm.json` and its VMM ends the machine. With several, VM i's
//! description is the boot file `<server>.json` (the VMM's `config=`
//! argument names it), and the machine ends with the last VM given; the
//! others end alone (their VMMs are not restarted).

use super::{MACHINE_EXTRA_MIB, NETD_IRQ, QEMU_CPU, VmPlan, admin_nic, basename};
use crate::Result;
use crate::emu::Qemu;
use crate::image::BootSystem;
use crate::vm::HostFwd;
use initrd::manifest::MAX_NAME_LEN;
use std::path::{Path, PathBuf};

/// The VMs of one machine, in the order given.
#[derive(Clone, Debug)]
pub struct Machine {
    pub vms: Vec<VmPlan>,
    /// netd's arguments in the manifest (test cases only, as
    /// `linux/net-restart`'s `test-exit-after-frames=N`); none by default.
    pub netd_args: Vec<String>,
}

/// The servers before the first VMM in the manifest (console, storaged,
/// and netd when some VM has NICs).
fn servers_before(nets: bool) -> u64 {
    if nets { 3 } else { 2 }
}

impl Machine {
    /// A machine with `vm` alone.
    pub fn one(vm: &VmPlan) -> Self {
        Self { vms: vec![vm.clone()], netd_args: Vec::new() }
    }

    /// A machine with `vms` (at least one). Refused, naming the VM and
    /// the property: two VMs with one server name (their aliases), two
    /// boot files of one name from different host files, and disks on a
    /// machine with several VMs (each VM's disks are machine disks
    /// numbered from 0; not shared out yet).
    pub fn new(vms: Vec<VmPlan>) -> std::result::Result<Self, String> {
        if vms.is_empty() {
            return Err("a machine needs at least one VM".into());
        }
        let m = Self { vms, netd_args: Vec::new() };
        if m.vms.len() > 1 {
            for (i, vm) in m.vms.iter().enumerate() {
                let who = vm.source.display();
                if let Some(j) = m.vms[..i].iter().position(|o| o.server == vm.server) {
                    return Err(format!(
                        "{who}: property \"alias\": gives the server name {:?}, as {} does; give each VM its own alias",
                        vm.server,
                        m.vms[j].source.display()
                    ));
                }
                if !vm.config.disks.is_empty() {
                    return Err(format!(
                        "{who}: property \"disks\": a machine with several VMs runs them without disks for now \
                         (each VM's disks would be the machine's disks from 0)"
                    ));
                }
            }
            let mut seen: Vec<(String, PathBuf, String)> = Vec::new();
            for vm in &m.vms {
                for (name, host) in m.vm_files(vm) {
                    match seen.iter().find(|(n, _, _)| *n == name) {
                        Some((_, other, by)) if *other != host => {
                            return Err(format!(
                                "{}: the boot file {name:?} ({}) has the name of {by}'s ({}); the VMs find their \
                                 files by name: copy or link one under another name",
                                vm.source.display(),
                                host.display(),
                                other.display()
                            ));
                        }
                        Some(_) => {}
                        None => seen.push((name, host, vm.source.display().to_string())),
                    }
                }
            }
        }
        Ok(m)
    }

    /// Whether netd runs (some VM has NICs).
    pub fn nets(&self) -> bool {
        self.vms.iter().any(|v| !v.config.nics.is_empty())
    }

    /// The badge init gives VM `i`'s VMM (its index in the manifest plus
    /// one): the VNICs' `client` in netd.conf.
    pub fn badge(&self, i: usize) -> u64 {
        servers_before(self.nets()) + i as u64 + 1
    }

    /// The boot file that holds VM `i`'s description.
    pub fn config_file(&self, i: usize) -> String {
        if self.vms.len() == 1 {
            return "vm.json".into();
        }
        let mut s = self.vms[i].server.clone();
        s.truncate(MAX_NAME_LEN - ".json".len());
        s + ".json"
    }

    /// A VM's kernel (or firmware) and initrd: boot file name and host
    /// path.
    fn vm_files(&self, vm: &VmPlan) -> Vec<(String, PathBuf)> {
        let mut v = vec![(vm.kernel_file().to_string(), vm.kernel.clone())];
        if let (Some(name), Some(path)) = (&vm.config.initrd, &vm.initrd) {
            v.push((basename(name).to_string(), path.clone()));
        }
        v
    }

    /// The VMM entry of VM `i`.
    fn vmm_entry(&self, i: usize) -> String {
        let vm = &self.vms[i];
        let mut files = vec![format!("\"{}\"", self.config_file(i)), format!("\"{}\"", vm.kernel_file())];
        if let Some(initrd) = &vm.config.initrd {
            files.push(format!("\"{}\"", basename(initrd)));
        }
        let calls = if self.nets() { "\"console\", \"storaged\", \"netd\"" } else { "\"console\", \"storaged\"" };
        let last = i + 1 == self.vms.len();
        let mut args = Vec::new();
        if last {
            args.push("\"exit-machine\"".to_string());
        }
        if self.vms.len() > 1 {
            args.push(format!("\"config={}\"", self.config_file(i)));
        }
        let ends = if last {
            "machine_exit = true\n"
        } else {
            "# Ends alone: the machine ends with the last VM.\n"
        };
        format!(
            "[[server]]\n\
             name = \"{server}\"\n\
             binary = \"vmm-server\"\n\
             priority = 100\n\
             # {breakdown} (vmm_server::vm::sizing)\n\
             budget_kib = {budget}\n\
             calls = [{calls}]\n\
             files = [{files}]\n\
             args = [{args}]\n\
             {volumes}\
             {ends}\
             restart = \"never\"\n",
            server = vm.server,
            budget = vm.budget_kib(),
            breakdown = vm.kernel_memory().breakdown(),
            files = files.join(", "),
            args = args.join(", "),
            volumes = vm.volumes_line(),
        )
    }

    /// The boot manifest: console and storaged as in `demo.toml`, netd
    /// when a VM has NICs, and one vmm-server instance per VM; the last
    /// one ends the machine with its VM.
    pub fn manifest_toml(&self) -> String {
        let first = &self.vms[0];
        let source = self
            .vms
            .iter()
            .map(|v| v.source.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
            .replace(['\n', '\r'], " ");
        // With NICs, netd (before the VMMs, whose calls it answers) holds
        // the VMs' VNICs from its boot configuration.
        // netd drives the machine's NIC (the `admin` uplink): it shares
        // the PCI configuration ports with storaged and holds an IRQ line
        // to allocate its MSI-X vector with.
        let netd = if self.nets() {
            let what = if self.vms.len() == 1 { "The VM's VNICs" } else { "The VMs' VNICs" };
            format!(
                "# {what} and their switches (netd.conf), and the machine's NIC.\n\
                 [[server]]\n\
                 name = \"netd\"\n\
                 priority = 160\n\
                 budget_kib = 4096\n\
                 serves = [\"netd\"]\n\
                 calls = [\"console\", \"storaged\", \"proc\"]\n\
                 ioports = [[0xcf8, 8]]\n\
                 irqs = [{NETD_IRQ}]\n\
                 pci_bars = true\n\
                 files = [\"netd.conf\"]\n\
                 {args}\
                 restart = 3\n\
                 \n",
                args = if self.netd_args.is_empty() {
                    String::new()
                } else {
                    let quoted: Vec<String> = self.netd_args.iter().map(|a| format!("{a:?}")).collect();
                    format!("args = [{}]\n", quoted.join(", "))
                },
            )
        } else {
            String::new()
        };
        let (name, description) = if self.vms.len() == 1 {
            (first.server.clone(), "one VM from a VM description".to_string())
        } else {
            (format!("vms-{}", self.vms.len()), format!("{} VMs from their descriptions", self.vms.len()))
        };
        let vmms: Vec<String> = (0..self.vms.len()).map(|i| self.vmm_entry(i)).collect();
        // RAM disks (Bochs): storaged holds the disks' copies as boot files.
        let (ram_files, ram_budget) = first.storaged_ram_disks();
        format!(
            "# Generated by `cargo xtask run --vm` from {source}.\n\
             [system]\n\
             name = \"{name}\"\n\
             description = \"{description}\"\n\
             \n\
             [[server]]\n\
             name = \"console\"\n\
             priority = 200\n\
             budget_kib = 256\n\
             serves = [\"console\"]\n\
             ioports = [[0x3f8, 8]]\n\
             irqs = [4]\n\
             restart = \"always\"\n\
             \n\
             # The machine's disk i is the VM's disk i, or the disks hold\n\
             # the pool whose volumes the VM's disks are.\n\
             [[server]]\n\
             name = \"storaged\"\n\
             priority = 160\n\
             budget_kib = {storaged_budget}\n\
             serves = [\"storaged\"]\n\
             calls = [\"console\", \"proc\"]\n\
             ioports = [[0xcf8, 8]]\n\
             pci_bars = true\n\
             {storaged_files}\
             {storaged_args}\
             restart = 3\n\
             \n\
             {netd}\
             {vmms}",
            storaged_args = first.storaged_args(),
            storaged_files = ram_files,
            storaged_budget = super::STORAGED_BUDGET_KIB + ram_budget,
            vmms = vmms.join("\n"),
        )
    }

    /// netd's boot configuration: the nic_tag `admin`, whose uplink is the
    /// machine's NIC ([`admin_nic`]: NIC 0, netd's default), an etherstub
    /// for each other nic_tag the VMs' NICs name (the machine has one
    /// NIC), and each VM's VNICs for its VMM's badge. With a NIC on
    /// `admin`, the host's own TCP/IP sits on that switch too: address
    /// [`super::HOST_ADDRESS`] (QEMU user networking's usual guest address) with
    /// its TCP echo diagnostic on port 7.
    pub fn netd_conf(&self) -> String {
        let sources = self.vms.iter().map(|v| v.source.display().to_string()).collect::<Vec<_>>().join(", ");
        let mut out = format!("# Generated by `cargo xtask run --vm` from {sources}.\n").replace(['\r'], " ");
        let mut tags: Vec<&str> = self.vms.iter().flat_map(|v| v.config.nics.iter().map(|n| n.nic_tag.as_str())).collect();
        tags.sort_unstable();
        tags.dedup();
        for t in &tags {
            let kind = if *t == "admin" { "nic_tag" } else { "etherstub" };
            out.push_str(&format!("{kind} {t}\n"));
        }
        for (i, vm) in self.vms.iter().enumerate() {
            out.push_str(&vmm_server::vm::nics::netd_conf(&vm.config, self.badge(i)));
        }
        if tags.contains(&"admin") {
            out.push_str(&super::admin_host_line());
        }
        out
    }

    /// What the boot archive is packed from (the descriptions and
    /// netd.conf with empty host paths: [`Self::write_boot_files`] writes
    /// them).
    pub fn boot_system(&self) -> BootSystem {
        let mut host_files: Vec<(String, PathBuf)> = Vec::new();
        for (i, vm) in self.vms.iter().enumerate() {
            let mut files = vec![(self.config_file(i), PathBuf::new())];
            files.extend(self.vm_files(vm));
            for f in files {
                if !host_files.iter().any(|(n, _)| *n == f.0) {
                    host_files.push(f);
                }
            }
        }
        for f in self.vms[0].ram_disk_files() {
            host_files.push(f);
        }
        if self.nets() {
            host_files.push(("netd.conf".to_string(), PathBuf::new()));
        }
        let sources = self.vms.iter().map(|v| v.source.display().to_string()).collect::<Vec<_>>().join(", ");
        BootSystem { origin: format!("the manifest generated from {sources}"), toml: self.manifest_toml(), host_files }
    }

    /// The descriptions and netd.conf as host files in `dir` (the boot
    /// archive takes files from host paths), and the boot system.
    pub fn write_boot_files(&self, dir: &Path) -> Result<BootSystem> {
        std::fs::create_dir_all(dir)?;
        let mut system = self.boot_system();
        for (i, vm) in self.vms.iter().enumerate() {
            let name = self.config_file(i);
            let path = dir.join(&name);
            std::fs::write(&path, &vm.json)?;
            if let Some(f) = system.host_files.iter_mut().find(|(n, _)| *n == name) {
                f.1 = path;
            }
        }
        if let Some(f) = system.host_files.iter_mut().find(|(n, _)| n == "netd.conf") {
            let conf = dir.join("netd.conf");
            std::fs::write(&conf, self.netd_conf())?;
            f.1 = conf;
        }
        Ok(system)
    }

    /// Whether a NIC of some VM is on `admin` (the machine then has its
    /// NIC).
    pub fn on_admin(&self) -> bool {
        self.vms.iter().any(VmPlan::on_admin)
    }

    /// The QEMU machine: EPYC with SVM and NPT, 2 CPUs emulated by one
    /// host thread (as [`VmPlan::qemu`]'s: with QEMU 7.2's thread per CPU
    /// this machine, the only one with nested guests that still had it,
    /// now and then reset whole, QEMU's SVM fault of README's "QEMU's
    /// threads"), the VMs' RAM plus [`MACHINE_EXTRA_MIB`], the disks (one VM
    /// only), and with a NIC on `admin` the machine's NIC with `forwards`.
    pub fn qemu_forwarding(&self, forwards: &[HostFwd]) -> Qemu {
        let mut extra = self.vms[0].qemu_drives();
        if self.on_admin() {
            extra.extend(admin_nic(forwards));
        }
        let ram: u64 = self.vms.iter().map(|v| v.config.ram_mib).sum();
        Qemu { smp: 2, mem_mib: (ram + MACHINE_EXTRA_MIB) as u32, cpu: QEMU_CPU.into(), one_thread: true, extra, ..Qemu::default() }
    }
}

impl Machine {
    /// What the serial log says about VM `i` (the other VMs' `vm NAME:`
    /// lines are theirs, not a problem of this one's).
    pub fn log_of(&self, serial: &str, i: usize) -> super::VmLog {
        let others: Vec<String> =
            self.vms.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, v)| format!("vm {}: ", v.name)).collect();
        let lines = serial.lines().filter(|l| !others.iter().any(|o| l.starts_with(o.as_str())));
        super::VmLog::read(lines, &self.vms[i].name)
    }
}
