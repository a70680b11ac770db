use super::*;

const JSON: &str = r#"{"alias":"linux-test","brand":"bhyve","ram":256,"vcpus":2,
    "disks":[{"path":"disk.img","model":"virtio"}],
    "kernel":"/images/vmlinuz","initrd":"initramfs.cpio","cmdline":"console=ttyS0 panic=-1"}"#;

fn plan(json: &str) -> std::result::Result<VmPlan, String> {
    VmPlan::from_text(json, Path::new("/vms/t.json"), Path::new("/vms"))
}

#[test]
fn a_description_becomes_a_plan() {
    let p = plan(JSON).unwrap();
    assert_eq!(p.name, "linux-test");
    assert_eq!(p.server, "vm-linux-test");
    assert_eq!(p.kernel, Path::new("/images/vmlinuz"));
    assert_eq!(p.initrd.as_deref(), Some(Path::new("/vms/initramfs.cpio")));
    assert_eq!(p.disks, [PathBuf::from("/vms/disk.img")]);
    let q = p.qemu();
    assert_eq!((q.smp, q.mem_mib, q.cpu.as_str()), (2, 1024, "EPYC,+svm,+npt"));
    assert_eq!(
        q.extra,
        [
            "-drive",
            "file=/vms/disk.img,if=none,id=d0,format=raw",
            "-device",
            "virtio-blk-pci,drive=d0,disable-legacy=on,serial=vm-disk-0"
        ]
    );
}

#[test]
fn the_manifest_is_valid_and_grants_what_the_vm_needs() {
    let p = plan(JSON).unwrap();
    let m = initrd::manifest::Manifest::from_toml(&p.manifest_toml()).unwrap();
    assert_eq!(m.system.name, "vm-linux-test");
    let names: Vec<&str> = m.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["console", "storaged", "vm-linux-test"]);
    let vm = m.server("vm-linux-test").unwrap();
    assert_eq!(vm.binary, "vmm-server");
    assert_eq!(vm.priority, 100);
    // Guest RAM, its page tables twice (130 pages each), 2 vCPUs, one
    // disk, the fixed part, the boot files' tables (sizes unknown here:
    // 3 pages each) and every mapping's range-map entry (64 RAM frames
    // twice, 3 per vCPU, the disk, 3 boot files, 32 fixed), as
    // vmm_server::vm::sizing counts them.
    let k = vmm_server::vm::sizing::KernelMemory::for_vm(256 << 20, 2, 1, &[JSON.len() as u64, 0, 0]);
    assert_eq!(u64::from(vm.budget_kib), k.total_kib());
    assert_eq!(
        k.total(),
        (256 << 20)
            + 260 * 4096
            + 2 * vmm_server::vm::sizing::PER_VCPU_BYTES
            + 3 * 4096
            + vmm_server::vm::sizing::FIXED_BYTES
            + 9 * 4096
            + (128 + 6 + 1 + 3 + 32) * vmm_server::vm::sizing::MAP_ENTRY
    );
    assert!(p.manifest_toml().contains("# 256 MiB RAM + 1040 KiB its page tables + 2 vCPUs x 86 KiB"));
    assert_eq!(vm.calls, ["console", "storaged"]);
    assert_eq!(vm.files, ["vm.json", "vmlinuz", "initramfs.cpio"]);
    assert_eq!(vm.args, ["exit-machine"]);
    assert!(vm.machine_exit);
    let st = m.server("storaged").unwrap();
    assert_eq!((st.priority, st.serves.as_slice()), (160, ["storaged".to_string()].as_slice()));
    assert_eq!((st.ioports[0].first, st.ioports[0].count), (0xcf8, 8));
    assert!(st.pci_bars && st.device_memory.is_empty(), "storaged maps the BARs it finds");
    // The archive's files: vm.json and the two boot files by their names.
    let sys = p.boot_system();
    let names: Vec<&str> = sys.host_files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["vm.json", "vmlinuz", "initramfs.cpio"]);
    assert_eq!(sys.host_files[2].1, Path::new("/vms/initramfs.cpio"));
}

/// RAM beyond the old 1008 MiB cap and 32 vCPUs: a budget above 1 GiB
/// and a machine with room for the guest.
#[test]
fn large_vms_get_the_budget_and_machine_they_need() {
    let p = plan(&JSON.replace("\"ram\":256", "\"ram\":4096").replace("\"vcpus\":2", "\"vcpus\":32")).unwrap();
    let m = initrd::manifest::Manifest::from_toml(&p.manifest_toml()).unwrap();
    let budget = u64::from(m.server("vm-linux-test").unwrap().budget_kib);
    // 4 GiB, about 16 MiB of page tables, 32 x 86 KiB.
    assert!(budget > (4 << 20) + 16 * 1024 + 32 * 82, "{budget}");
    assert!(budget < (4 << 20) + 24 * 1024, "{budget}");
    assert_eq!(p.qemu().mem_mib, 4096 + 768);
    // 1 TiB still fits a manifest's budget; the largest RAM the parser takes.
    let p = plan(&JSON.replace("\"ram\":256", "\"ram\":1048576")).unwrap();
    assert!(p.budget_kib() > 1 << 30);
}

#[test]
fn without_an_initrd_or_alias() {
    let p = plan(r#"{"brand":"kvm","kernel":"bz","uuid":"5a6b2c1e-0000-4000-8000-00000000abcd"}"#).unwrap();
    assert_eq!(p.name, "5a6b2c1e-0000-4000-8000-00000000abcd");
    assert_eq!(p.server, "vm-guest");
    let m = initrd::manifest::Manifest::from_toml(&p.manifest_toml()).unwrap();
    assert_eq!(m.server("vm-guest").unwrap().files, ["vm.json", "bz"]);
    assert!(p.qemu().extra.is_empty());
    assert_eq!(p.qemu().mem_mib, 256 + 768);
}

#[test]
fn bad_descriptions_name_the_property() {
    let e = plan(&JSON.replace("\"ram\":256", "\"ram\":16")).unwrap_err();
    assert!(e.contains("\"ram\"") && e.contains("at least 64"), "{e}");
    let e = plan(&JSON.replace("\"ram\":256", "\"ram\":1048577")).unwrap_err();
    assert!(e.contains("\"ram\"") && e.contains("at most 1048576"), "{e}");
    let e = plan(&JSON.replace("\"brand\":\"bhyve\"", "\"brand\":\"joyent\"")).unwrap_err();
    assert!(e.contains("\"brand\""), "{e}");
    let e = plan(&JSON.replace("\"vcpus\":2", "\"vcpus\":2,\"colour\":1")).unwrap_err();
    assert!(e.contains("\"colour\""), "{e}");
    let e = plan(&JSON.replace("\"model\":\"virtio\"", "\"model\":\"ide\"")).unwrap_err();
    assert!(e.contains("disks[0].model"), "{e}");
    let e = plan(&JSON.replace("/images/vmlinuz", "/images/vmlinuz with space")).unwrap_err();
    assert!(e.contains("\"kernel\"") && e.contains("boot file"), "{e}");
    let e = plan(&JSON.replace("initramfs.cpio", "/x/vmlinuz")).unwrap_err();
    assert!(e.contains("\"initrd\"") && e.contains("same file name"), "{e}");
    let e = plan(&JSON.replace("/images/vmlinuz", "/a/vm.json")).unwrap_err();
    assert!(e.contains("\"kernel\""), "{e}");
    let e = plan(&JSON.replace("\"disks\"", "\"nics\":[{\"nic_tag\":\"admin\",\"model\":\"e1000\"}],\"disks\"")).unwrap_err();
    assert!(e.contains("\"nics[0].model\""), "{e}");
}

#[test]
fn names_are_sanitized() {
    assert_eq!(sanitize("vm-Linux Test/1"), "vm-linux-test-1");
    assert_eq!(sanitize("9lives"), "vm-9lives");
    assert_eq!(sanitize(&"a".repeat(60)).len(), MAX_NAME_LEN);
}

#[test]
fn qemu_drive_paths_escape_commas() {
    let p = plan(&JSON.replace("disk.img", "a,b.img")).unwrap();
    assert_eq!(p.qemu_drives()[1], "file=/vms/a,,b.img,if=none,id=d0,format=raw");
}

#[test]
fn bochs_runs_without_disks() {
    let p = plan(JSON).unwrap().without_disks().unwrap();
    assert!(p.disks.is_empty() && p.config.disks.is_empty());
    assert!(!p.json.contains("disks"));
    assert_eq!(p.config.vcpus, 2);
    assert_eq!(p.bochs().mem_mib, 1024);
}

const HASH: &str = "5f2b8ac1e1ca7bdbd5e7d45f8cbc5cc3a3b8a7e43ab0e9bd95e6fb4b1b2c3d4e";

fn good_log() -> String {
    format!(
        "Alcove 0.1.0: 2 CPUs\r\nvm linux-test: started: 2 vCPUs, 256 MiB\r\nALCOVE-BENCH vmm_overhead_kib 1234 KiB\r\n\
         [    0.000000] Linux version 6.1\r\nalcove-guest: init started\r\nalcove-guest: kernel 6.1.0-cloud-amd64\r\n\
         alcove-guest: modules loaded virtio virtio_blk\r\nalcove-guest: nproc=2\r\n\
         alcove-guest: hwrng virtio_rng.0 3dd8a0bcba39d5d0\r\nalcove-guest: hvc0 says hello\r\n\
         alcove-guest: vda-sha256 {HASH}  /dev/vda\r\nalcove-guest: vda-marker written\r\nalcove-guest: poweroff\r\n\
         [    4.1] reboot: Power down\r\n\
         [INFO ] vm-linux-test: vm linux-test: every frame and capability returned (180 KiB in use, as before)\r\n\
         vm linux-test: ended: poweroff\r\n"
    )
}

/// The run with `alcove.reboot-once`: boot, reboot, boot, power off.
fn rebooting_log() -> String {
    let good = good_log();
    let (first, _) = good.split_once("alcove-guest: vda-sha256").unwrap();
    format!(
        "{first}alcove-guest: type a line\r\nalcove-guest: typed operator-says-hi\r\n\
         alcove-guest: vda-sha256 {HASH}  /dev/vda\r\nalcove-guest: vda-marker written\r\nalcove-guest: reboot\r\n\
         [    5.6] sysrq: Resetting\r\n\
         [INFO ] vm-linux-test: vm linux-test: every frame and capability returned (180 KiB in use, as before)\r\n\
         vm linux-test: guest reboot\r\nvm linux-test: started: 2 vCPUs, 256 MiB\r\nalcove-guest: init started\r\n\
         alcove-guest: kernel 6.1.0-cloud-amd64\r\nalcove-guest: modules loaded virtio\r\nalcove-guest: hvc0 says hello\r\n\
         alcove-guest: nproc=2\r\nalcove-guest: hwrng virtio_rng.0 0123456789abcdef\r\n\
         alcove-guest: marker found: second boot\r\nalcove-guest: poweroff\r\n\
         [INFO ] vm-linux-test: vm linux-test: every frame and capability returned (180 KiB in use, as before)\r\n\
         vm linux-test: ended: poweroff\r\n"
    )
}

#[test]
fn a_guest_reboot_restarts_the_vm_and_returns_everything_each_time() {
    assert_eq!(check_linux_run(&rebooting_log(), "linux-test", 2, Some(HASH), true), Vec::<String>::new());
    let log = VmLog::read(rebooting_log().lines(), "linux-test");
    assert_eq!((log.reboots, log.budget_returned), (1, 2));
    // Typed input that never arrived is named.
    let p = check_linux_run(
        &rebooting_log().replace("typed operator-says-hi", "nothing typed"),
        "linux-test",
        2,
        Some(HASH),
        true,
    );
    assert!(p.iter().any(|x| x.contains("the guest printed \"alcove-guest: nothing typed\"")), "{p:?}");
    // Expected a reboot, got none.
    let p = check_linux_run(&good_log(), "linux-test", 2, Some(HASH), true);
    assert!(p.iter().any(|x| x.contains("0 guest reboot(s) reported, expected 1")), "{p:?}");
    // A restart without a reboot; a VMM that kept memory.
    let p = check_linux_run(&rebooting_log().replace("vm linux-test: guest reboot\r\n", ""), "linux-test", 2, Some(HASH), true);
    assert!(p.iter().any(|x| x.contains("started again without a guest reboot")), "{p:?}");
    let leak = rebooting_log().replacen(
        "every frame and capability returned (180 KiB in use, as before)",
        "kernel memory not returned after the VM: 1 bytes before, 2 after",
        1,
    );
    let p = check_linux_run(&leak, "linux-test", 2, Some(HASH), true);
    assert!(p.iter().any(|x| x.contains("did not return everything")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("returned 1 time(s), expected once per boot (2)")), "{p:?}");
}

#[test]
fn a_good_run_passes() {
    assert_eq!(check_linux_run(&good_log(), "linux-test", 2, Some(HASH), false), Vec::<String>::new());
    let log = VmLog::read(good_log().lines(), "linux-test");
    assert_eq!(log.overhead_kib, Some(1234));
    assert_eq!(log.started, Some(1));
    assert_eq!(log.ending(), Some(&VmEnding::PowerOff));
}

#[test]
fn failures_name_what_differed() {
    let one = |log: String| -> Vec<String> { check_linux_run(&log, "linux-test", 2, Some(HASH), false) };
    let p = one(good_log().replace("nproc=2", "nproc=1"));
    assert_eq!(p, ["expected \"alcove-guest: nproc=2\", the guest printed \"alcove-guest: nproc=1\""]);
    // The devices the guest promises: virtio-rng and virtio-console.
    let p = one(good_log().replace("alcove-guest: hvc0 says hello\r\n", ""));
    assert_eq!(p, ["no line \"alcove-guest: hvc0 says hello\" (virtio-console)"]);
    let p = one(good_log().replace("alcove-guest: hwrng virtio_rng.0 3dd8a0bcba39d5d0\r\n", ""));
    assert!(p[0].starts_with("no line \"alcove-guest: hwrng"), "{p:?}");
    let p = one(good_log().replace("3dd8a0bcba39d5d0", "66687aadf862bd77"));
    assert!(p[0].contains("zero bytes"), "{p:?}");
    let p = one(good_log().replace("virtio_rng.0 3dd8a0bcba39d5d0", "virtio_rng.0 3dd8"));
    assert!(p[0].contains("16 hex digits"), "{p:?}");
    let p = one(good_log().replace("virtio_rng.0", "tpm-rng"));
    assert!(p[0].contains("not virtio_rng"), "{p:?}");
    // Lines out of order, and a line after the VM's ending line.
    let p = one(good_log().replace(
        "alcove-guest: vda-marker written\r\nalcove-guest: poweroff",
        "alcove-guest: poweroff\r\nalcove-guest: vda-marker written",
    ));
    assert!(p.iter().any(|x| x.contains("\"alcove-guest: poweroff\" came out of order")), "{p:?}");
    let p = one(good_log().replace("alcove-guest: poweroff\r\n", "") + "alcove-guest: poweroff\r\n");
    assert_eq!(p, ["\"alcove-guest: poweroff\" came after the VM's line that ended the boot"]);
    let p = one(good_log().replace(HASH, &"0".repeat(64)));
    assert!(p[0].starts_with("expected \"alcove-guest: vda-sha256 5f2b") && p[0].contains("0000"), "{p:?}");
    let p = one(good_log().replace("ended: poweroff", "ended: triple-fault"));
    assert_eq!(p, ["the VM ended with triple-fault, expected poweroff"]);
    let p = one(good_log().replace("ended: poweroff", "ended: error: exit 0x7b not handled"));
    assert_eq!(p, ["the VM ended with error: exit 0x7b not handled, expected poweroff"]);
    // No disk seen at all: each missing line is named.
    let no_disk: String = good_log().lines().filter(|l| !l.contains("vda")).map(|l| format!("{l}\n")).collect();
    let p = one(no_disk);
    assert!(p.iter().any(|x| x.contains("no line \"alcove-guest: vda-sha256")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("no line \"alcove-guest: vda-marker written\"")), "{p:?}");
    // A run that stopped early.
    let cut: String = good_log().lines().take(5).map(|l| format!("{l}\n")).collect();
    let p = one(cut);
    assert!(p.iter().any(|x| x.contains("no \"vm linux-test: ended")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("no line \"alcove-guest: poweroff\"")), "{p:?}");
    // Never started; two endings; another VM's lines.
    assert!(one(String::new()).iter().any(|x| x.contains("never started")));
    let p = one(good_log() + "vm linux-test: ended: reboot\n");
    assert!(p.iter().any(|x| x.contains("2 ending lines")), "{p:?}");
    let p = one(good_log().replace("vm linux-test: started", "vm other: started"));
    assert!(p.iter().any(|x| x.contains("another VM")), "{p:?}");
    // A module that did not load.
    let p = one(good_log().replace("alcove-guest: nproc=2", "alcove-guest: insmod virtio_blk failed\nalcove-guest: nproc=2"));
    assert!(p.iter().any(|x| x.contains("virtio_blk")), "{p:?}");
    // Without a disk the disk lines are not asked for.
    assert_eq!(check_linux_run(&good_log(), "linux-test", 2, None, false), Vec::<String>::new());
}

#[test]
fn endings_and_statuses() {
    for (word, status) in [("poweroff", 0), ("reboot", 2), ("halted", 3), ("triple-fault", 4), ("error: boom", 5)] {
        let e = VmEnding::parse(word);
        assert_eq!(e.status(), status);
        assert_eq!(e.to_string(), word);
    }
    assert_eq!(VmEnding::parse("error: x y"), VmEnding::Error("x y".into()));
}

#[test]
fn the_disk_check() {
    let before = random_bytes(4096);
    let mut after = before.clone();
    after[..512].fill(0);
    after[..marker(2).len()].copy_from_slice(marker(2).as_bytes());
    assert_eq!(check_disk_after(&before, &after, 2), None);
    let e = check_disk_after(&before, &before, 2).unwrap();
    assert!(e.contains("unchanged"), "{e}");
    let e = check_disk_after(&before, &after, 1).unwrap();
    assert!(e.contains("nproc=1"), "{e}");
    let mut pad = after.clone();
    pad[100] = 7;
    assert!(check_disk_after(&before, &pad, 2).unwrap().contains("offset 100"));
    let mut far = after.clone();
    far[3000] ^= 1;
    assert!(check_disk_after(&before, &far, 2).unwrap().contains("sector 5"));
    assert!(check_disk_after(&before, &after[..1024], 2).unwrap().contains("bytes now"));
}

#[test]
fn random_bytes_differ() {
    let a = random_bytes(1000);
    assert_eq!(a.len(), 1000);
    assert!(a.iter().any(|b| *b != a[0]));
}

#[test]
fn each_boot_has_its_own_lines_in_order() {
    let check = |log: &str| check_linux_run(log, "linux-test", 2, Some(HASH), true);
    // The second boot lost a line the first printed: asked per boot.
    let p = check(&rebooting_log().replacen("alcove-guest: nproc=2\r\nalcove-guest: hwrng virtio_rng.0 0123", "alcove-guest: hwrng virtio_rng.0 0123", 1));
    assert_eq!(p, ["boot 2: no line \"alcove-guest: nproc=2\""], "{p:?}");
    // The first boot's last lines arrived only after the reboot line.
    let p = check(&rebooting_log().replace(
        "alcove-guest: reboot\r\n[    5.6] sysrq: Resetting\r\n[INFO ] vm-linux-test: vm linux-test: every frame and capability returned (180 KiB in use, as before)\r\nvm linux-test: guest reboot\r\n",
        "[INFO ] vm-linux-test: vm linux-test: every frame and capability returned (180 KiB in use, as before)\r\nvm linux-test: guest reboot\r\nalcove-guest: reboot\r\n",
    ));
    assert!(p.iter().any(|x| x == "boot 1: \"alcove-guest: reboot\" came after the VM's line that ended the boot"), "{p:?}");
    // Both boots read the same "random" bytes.
    let p = check(&rebooting_log().replace("0123456789abcdef", "3dd8a0bcba39d5d0"));
    assert_eq!(p, ["both boots read the same bytes from /dev/hwrng (3dd8a0bcba39d5d0)"]);
}

/// A reset-stress run of `rounds` resets: round k's writer confirmed
/// `confirmed[k]` lines.
fn stress_log(confirmed: &[u64], drop_serial: Option<(usize, u64)>) -> String {
    let mut s = String::from("Alcove 0.1.0\r\n");
    let ret = "[INFO ] vm-linux-test: vm linux-test: every frame and capability returned (180 KiB in use, as before)\r\n";
    for (k, &n) in confirmed.iter().enumerate() {
        s += &format!("vm linux-test: started: 2 vCPUs, 256 MiB\r\nalcove-guest: stress round {k}\r\n");
        for i in 0..n {
            if drop_serial != Some((k, i)) {
                s += &format!("[    4.{i}] alcove-guest: s {k} {i}\r\n");
            }
            s += &format!("alcove-guest: c {k} {i}\r\n");
        }
        // The reset cut the next line short.
        s += &format!("[    4.9] alcove-guest: s {k} {n}\r\nalcove-guest: c {k} \r\n[    5.0] sysrq: Resetting\r\n{ret}vm linux-test: guest reboot\r\n");
    }
    let k = confirmed.len();
    s += &format!(
        "vm linux-test: started: 2 vCPUs, 256 MiB\r\nalcove-guest: stress round {k}\r\nalcove-guest: stress done\r\n\
         alcove-guest: poweroff\r\n{ret}vm linux-test: ended: poweroff\r\n"
    );
    s
}

#[test]
fn the_reset_stress_check() {
    let (p, confirmed) = check_stress_run(&stress_log(&[3, 40, 7], None), "linux-test", 3);
    assert_eq!(p, Vec::<String>::new());
    assert_eq!(confirmed, [3, 40, 7]);
    // A confirmed line that never reached the console.
    let (p, _) = check_stress_run(&stress_log(&[3, 40, 7], Some((1, 39))), "linux-test", 3);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("boot 2: line \"alcove-guest: s 1 39\" was confirmed"), "{p:?}");
    // Fewer rounds than asked; a round whose writer confirmed nothing.
    let (p, _) = check_stress_run(&stress_log(&[3, 40], None), "linux-test", 3);
    assert!(p.iter().any(|x| x.contains("2 guest reboot(s) reported, expected 3")), "{p:?}");
    let (p, _) = check_stress_run(&stress_log(&[3, 0, 7], None), "linux-test", 3);
    assert_eq!(p, ["boot 2: the writer confirmed no line before the reset"]);
    // The guest outlived its reset.
    let log = stress_log(&[2], None).replace("[    5.0] sysrq", "alcove-guest: stress: still running after the reset\r\n[    5.0] sysrq");
    let (p, _) = check_stress_run(&log, "linux-test", 1);
    assert!(p.iter().any(|x| x.contains("still running")), "{p:?}");
}

#[test]
fn a_vm_with_nics_gets_netd_and_its_vnics() {
    let json = JSON.replace(
        r#""kernel""#,
        r#""nics":[{"nic_tag":"stub0","ip":"10.0.0.20","netmask":"255.255.255.0"},{"nic_tag":"admin","vlan_id":4}],"kernel""#,
    );
    let p = plan(&json).unwrap();
    let m = initrd::manifest::Manifest::from_toml(&p.manifest_toml()).unwrap();
    let names: Vec<&str> = m.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["console", "storaged", "netd", "vm-linux-test"]);
    // init badges a caller's endpoints with its index + 1: the VNICs'
    // client in netd.conf must be that badge.
    let index = names.iter().position(|n| *n == "vm-linux-test").unwrap() as u64;
    assert_eq!(index + 1, VmPlan::VMM_BADGE);
    assert!(m.server("vm-linux-test").unwrap().calls.iter().any(|c| c == "netd"));
    assert_eq!(m.server("netd").unwrap().files, ["netd.conf"]);
    let conf = p.netd_conf();
    assert!(conf.contains("\nnic_tag admin\netherstub stub0\n"), "{conf}");
    // netd's host address on admin, as the demo's netd.conf has it.
    assert!(conf.ends_with(&crate::vm::admin_host_line()), "{conf}");
    assert!(crate::demo::netd_conf().ends_with(&crate::vm::admin_host_line()));
    // netd drives the machine's NIC: the PCI configuration ports (shared
    // with storaged, whose answer it waits for), the BARs, an IRQ to
    // allocate the MSI-X vector with; QEMU gives the machine that NIC.
    let netd = m.server("netd").unwrap();
    assert_eq!(netd.ioports, [initrd::manifest::PCI_CONFIG_PORTS]);
    assert!(netd.pci_bars && netd.irqs == [crate::vm::NETD_IRQ] && netd.calls.iter().any(|c| c == "storaged"));
    let q = p.qemu().extra.join(" ");
    assert!(q.contains("-netdev user,id=admin,net=10.0.2.0/24 -device virtio-net-pci,netdev=admin"), "{q}");
    let fw = [HostFwd::parse("tcp:4280-10.0.2.20:22").unwrap()];
    let q = p.qemu_forwarding(&fw).extra.join(" ");
    assert!(q.contains("user,id=admin,net=10.0.2.0/24,hostfwd=tcp::4280-10.0.2.20:22 "), "{q}");
    // A VM on etherstubs only: no machine NIC.
    let stub = plan(&JSON.replace(r#""kernel""#, r#""nics":[{"nic_tag":"stub0"}],"kernel""#)).unwrap();
    assert!(!stub.qemu().extra.iter().any(|a| a.contains("virtio-net")));
    assert!(conf.contains("vnic client=4 switch=stub0 mac=02:") && conf.contains(" ip=10.0.0.20 "), "{conf}");
    assert!(conf.contains("switch=admin") && conf.contains("vlan_id=4"), "{conf}");
    let system = p.boot_system();
    assert!(system.host_files.iter().any(|(n, _)| n == "netd.conf"));
    // Without NICs, no netd.
    let plain = plan(JSON).unwrap();
    assert!(!plain.manifest_toml().contains("netd"));
}

/// Issue 12: a VM on pool volumes gets storaged on the pool's files (one
/// or a mirror of two) and its manifest entry lists the volumes init
/// provisions and grants; host files are not attached.
#[test]
fn a_vm_on_pool_volumes_gets_the_pool_and_its_volumes() {
    let json = r#"{"uuid":"5e1f0c2a-7b3d-4e9f-a1c2-3d4e5f6a7b8c","alias":"on-pool","brand":"bhyve","ram":256,
        "disks":[{"size":32},{"path":"zones/data-disk0"}],
        "kernel":"/images/vmlinuz","cmdline":"console=ttyS0"}"#;
    let dir = std::env::temp_dir().join(format!("alcove-pool-plan-{}", std::process::id()));
    let files = [dir.join("a.img"), dir.join("b.img")];
    let p = plan(json).unwrap();
    assert!(p.has_volumes());
    assert!(p.disks.is_empty(), "no host file is attached: {:?}", p.disks);
    let p = p.with_pool(&files, 64).unwrap();
    assert_eq!(std::fs::metadata(&files[1]).unwrap().len(), 64 << 20, "a missing pool file is made blank");
    let m = initrd::manifest::Manifest::from_toml(&p.manifest_toml()).unwrap();
    assert_eq!(m.server("storaged").unwrap().args, ["pool=zones", "pool-vdev=mirror", "pool-disks=0,1"]);
    let vm = m.server("vm-on-pool").unwrap();
    assert_eq!(
        vm.volumes,
        ["zones/5e1f0c2a-7b3d-4e9f-a1c2-3d4e5f6a7b8c-disk0 volsize=33554432", "zones/data-disk0"]
    );
    assert!(m.server("storaged").unwrap().volumes.is_empty());
    let drives = p.qemu().extra.join(" ");
    assert!(drives.contains("a.img") && drives.contains("b.img") && drives.contains("id=d1"), "{drives}");
    // One file: a single-disk pool.
    let p = plan(json).unwrap().with_pool(&files[..1], 64).unwrap();
    let m = initrd::manifest::Manifest::from_toml(&p.manifest_toml()).unwrap();
    assert_eq!(m.server("storaged").unwrap().args, ["pool=zones", "pool-disks=0"]);
    assert!(plan(json).unwrap().with_pool(&[], 64).is_err());
    // Without volumes: no pool, no volumes line.
    let p = plan(JSON).unwrap();
    assert!(!p.has_volumes());
    let m = initrd::manifest::Manifest::from_toml(&p.manifest_toml()).unwrap();
    assert!(m.server("storaged").unwrap().args.is_empty());
    assert!(m.server("vm-linux-test").unwrap().volumes.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostfwd_takes_qemus_syntax_and_names_what_is_wrong() {
    let f = HostFwd::parse("tcp:8080-10.0.2.20:80").unwrap();
    assert_eq!((f.udp, f.host_addr.as_str(), f.host_port, f.guest_addr.as_str(), f.guest_port), (false, "", 8080, "10.0.2.20", 80));
    assert_eq!(f.qemu(), "tcp::8080-10.0.2.20:80");
    let f = HostFwd::parse("udp:127.0.0.1:5353-:53").unwrap();
    assert_eq!(f.qemu(), "udp:127.0.0.1:5353-:53");
    assert_eq!(HostFwd::parse("tcp::22-10.0.2.15:22").unwrap().qemu(), "tcp::22-10.0.2.15:22");
    for (bad, why) in [
        ("8080-10.0.2.20:80", "the protocol is tcp or udp"),
        ("tcp", "no protocol"),
        ("sctp:1-10.0.2.20:80", "the protocol is tcp or udp"),
        ("tcp:8080", "no '-'"),
        ("tcp:8080-10.0.2.20", "the guest side is IP:PORT"),
        ("tcp:0-10.0.2.20:80", "\"0\" is no port"),
        ("tcp:99999-10.0.2.20:80", "\"99999\" is no port"),
        ("tcp:1-10.0.2:80", "\"10.0.2\" is no IPv4 address"),
    ] {
        let e = HostFwd::parse(bad).unwrap_err();
        assert!(e.contains(why) && e.starts_with(&format!("--hostfwd {bad:?}")), "{bad}: {e}");
    }
}

fn two_vm(alias: &str, mac: &str, initrd: &str) -> VmPlan {
    let json = format!(
        r#"{{"alias":"{alias}","brand":"bhyve","ram":256,"vcpus":1,
        "nics":[{{"nic_tag":"stub0","mac":"{mac}","ip":"10.0.0.9","netmask":"255.255.255.0"}}],
        "kernel":"/images/vmlinuz","initrd":"{initrd}","cmdline":"console=ttyS0"}}"#
    );
    VmPlan::from_text(&json, Path::new(&format!("/vms/{alias}.json")), Path::new("/vms")).unwrap()
}

/// Issue 13: `run --vm A --vm B`: one manifest with a VMM per VM, each
/// with its own description and, in netd.conf, its own VNICs under the
/// badge init gives it; only the last ends the machine.
#[test]
fn several_vms_get_a_vmm_each_with_their_own_vnics() {
    let a = two_vm("net-send", "02:08:20:00:00:01", "initramfs.cpio");
    let b = two_vm("net-recv", "02:08:20:00:00:02", "initramfs.cpio");
    let m = Machine::new(vec![a, b]).unwrap();
    let manifest = initrd::manifest::Manifest::from_toml(&m.manifest_toml()).unwrap();
    let names: Vec<&str> = manifest.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["console", "storaged", "netd", "vm-net-send", "vm-net-recv"]);
    let conf = m.netd_conf();
    for (i, server) in ["vm-net-send", "vm-net-recv"].iter().enumerate() {
        let index = names.iter().position(|n| n == server).unwrap() as u64;
        assert_eq!(m.badge(i), index + 1);
        let vmm = manifest.server(server).unwrap();
        let config = format!("{server}.json");
        assert_eq!(vmm.files, [config.as_str(), "vmlinuz", "initramfs.cpio"]);
        assert!(vmm.args.contains(&format!("config={config}")), "{:?}", vmm.args);
        assert!(vmm.calls.iter().any(|c| c == "netd"));
        let mac = format!("02:08:20:00:00:0{}", i + 1);
        assert!(conf.contains(&format!("vnic client={} switch=stub0 mac={mac} ", index + 1)), "{conf}");
    }
    assert_eq!(conf.matches("etherstub stub0\n").count(), 1, "{conf}");
    // The machine ends with the last VM only.
    let (send, recv) = (manifest.server("vm-net-send").unwrap(), manifest.server("vm-net-recv").unwrap());
    assert!(!send.machine_exit && !send.args.iter().any(|a| a == "exit-machine"));
    assert!(recv.machine_exit && recv.args.iter().any(|a| a == "exit-machine"));
    // Each description is its own boot file; shared files once.
    let sys = m.boot_system();
    let files: Vec<&str> = sys.host_files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(files, ["vm-net-send.json", "vmlinuz", "initramfs.cpio", "vm-net-recv.json", "netd.conf"]);
    assert_eq!(m.qemu_forwarding(&[]).mem_mib as u64, 512 + MACHINE_EXTRA_MIB);
    // Nested guests on two CPUs: one QEMU thread for both (README, "QEMU's
    // threads"), as one VM's machine.
    assert!(m.qemu_forwarding(&[]).one_thread && m.vms[0].qemu().one_thread);
    // One VM alone is as before: vm.json, no config= argument.
    let one = Machine::one(&m.vms[0]);
    let manifest = initrd::manifest::Manifest::from_toml(&one.manifest_toml()).unwrap();
    let vmm = manifest.server("vm-net-send").unwrap();
    assert_eq!(vmm.files[0], "vm.json");
    assert_eq!(vmm.args, ["exit-machine"]);
}

#[test]
fn a_machine_refuses_what_its_vms_cannot_share() {
    let a = two_vm("net-send", "02:08:20:00:00:01", "initramfs.cpio");
    // The same alias: one server name.
    let e = Machine::new(vec![a.clone(), a.clone()]).unwrap_err();
    assert!(e.contains("property \"alias\"") && e.contains("vm-net-send"), "{e}");
    // Two initrds of one file name from different host files.
    let b = two_vm("net-recv", "02:08:20:00:00:02", "/other/initramfs.cpio");
    let e = Machine::new(vec![a.clone(), b]).unwrap_err();
    assert!(e.contains("\"initramfs.cpio\"") && e.contains("/other/initramfs.cpio"), "{e}");
    // Disks with several VMs.
    let d = plan(JSON).unwrap();
    let e = Machine::new(vec![a, d]).unwrap_err();
    assert!(e.contains("property \"disks\""), "{e}");
    assert!(Machine::new(vec![]).is_err());
}

/// The other VMs' `vm NAME:` lines are not a problem of this VM's log.
#[test]
fn each_vm_of_a_machine_reads_its_own_lines() {
    let a = two_vm("net-send", "02:08:20:00:00:01", "initramfs.cpio");
    let b = two_vm("net-recv", "02:08:20:00:00:02", "initramfs.cpio");
    let m = Machine::new(vec![a, b]).unwrap();
    let serial = "vm net-send: started: 1 vCPUs\nvm net-recv: started: 1 vCPUs\nvm net-send: ended: poweroff\nvm net-recv: ended: reboot\n";
    let s = m.log_of(serial, 0);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.ending(), Some(&VmEnding::PowerOff));
    let r = m.log_of(serial, 1);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.ending(), Some(&VmEnding::Reboot));
    // A third name is still a problem.
    let r = m.log_of(&format!("{serial}vm stranger: started: 1 vCPUs\n"), 1);
    assert!(r.problems.iter().any(|p| p.contains("another VM")), "{:?}", r.problems);
}

/// Under Bochs the VM's disks are RAM disks: packed into the boot archive
/// as storaged's files, named in its arguments, its budget raised by each
/// disk's memory limit and page tables; no virtio-blk drive for QEMU; the
/// VM's description (its disks) unchanged.
#[test]
fn ram_disks_are_storaged_boot_files() {
    let dir = std::env::temp_dir().join(format!("alcove-ramdisk-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("disk.img"), vec![0u8; 4 << 20]).unwrap();
    let json = JSON.replace("\"disk.img\"", "\"disk.img\"}, {\"path\": \"boot.img\"");
    std::fs::write(dir.join("boot.img"), vec![0u8; 1 << 20]).unwrap();
    let p = VmPlan::from_text(&json, &dir.join("t.json"), &dir).unwrap().with_ram_disks(1024).unwrap();
    assert!(p.qemu().extra.is_empty(), "no drives: {:?}", p.qemu().extra);
    assert_eq!(p.config.disks.len(), 2);
    let m = initrd::manifest::Manifest::from_toml(&p.manifest_toml()).unwrap();
    let st = m.server("storaged").unwrap();
    assert_eq!(st.files, ["ramdisk0.img", "ramdisk1.img"]);
    assert_eq!(st.args, ["ramdisk=ramdisk0.img", "ramdisk=ramdisk1.img", "ramdisk-mem-kib=1024"]);
    // 4096 KiB, then per disk 1024 KiB, its chunks' page tables (1088 KiB
    // of address space: one table), the file's tables (4 MiB: 2; 1 MiB: 0)
    // and 16 KiB for the upper levels.
    assert_eq!(u64::from(st.budget_kib), 4096 + (1024 + 4 + 8 + 16) + (1024 + 4 + 16));
    let files = p.boot_system().host_files;
    assert!(files.contains(&("ramdisk1.img".to_string(), dir.join("boot.img"))), "{files:?}");
    // Without RAM disks, nothing of this.
    let plain = VmPlan::from_text(&json, &dir.join("t.json"), &dir).unwrap();
    let m = initrd::manifest::Manifest::from_toml(&plain.manifest_toml()).unwrap();
    assert!(m.server("storaged").unwrap().files.is_empty());
    assert_eq!(m.server("storaged").unwrap().budget_kib, 4096);
    assert_eq!(plain.qemu().extra.len(), 8);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_ram_disks_are_refused_naming_the_disk() {
    let dir = std::env::temp_dir().join(format!("alcove-ramdisk-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = || VmPlan::from_text(JSON, &dir.join("t.json"), &dir).unwrap();
    let e = load().with_ram_disks(1024).unwrap_err();
    assert!(e.contains("\"disks[0].path\"") && e.contains("disk.img"), "{e}");
    std::fs::write(dir.join("disk.img"), vec![0u8; 1000]).unwrap();
    let e = load().with_ram_disks(1024).unwrap_err();
    assert!(e.contains("is 1000 bytes, not a non-zero multiple of the 512-byte sector"), "{e}");
    std::fs::write(dir.join("disk.img"), Vec::<u8>::new()).unwrap();
    assert!(load().with_ram_disks(1024).unwrap_err().contains("is 0 bytes"));
    // An absurd size (a sparse file).
    std::fs::File::create(dir.join("disk.img")).unwrap().set_len(RAM_DISK_MAX_BYTES + 512).unwrap();
    assert!(load().with_ram_disks(1024).unwrap_err().contains("more than a RAM disk in the boot archive may be"));
    std::fs::write(dir.join("disk.img"), vec![0u8; 512]).unwrap();
    for kib in [0, 100, 2 << 20] {
        assert!(load().with_ram_disks(kib).unwrap_err().contains("memory limit"), "{kib}");
    }
    assert!(load().with_ram_disks(64).is_ok());
    let vols = r#"{"alias":"v","brand":"bhyve","ram":256,"vcpus":1,"disks":[{"path":"zones/v-disk0"}],
        "kernel":"/images/vmlinuz"}"#;
    let e = VmPlan::from_text(vols, &dir.join("t.json"), &dir).unwrap().with_ram_disks(1024).unwrap_err();
    assert!(e.contains("pool volumes cannot be RAM disks"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
