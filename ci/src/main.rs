//! `cargo xtask`: the one driver for building, running, testing and
//! benchmarking Alcove. CI runs `cargo xtask test` and nothing else.

mod api;
mod bench;
mod bigvm;
mod demo;
mod emu;
mod fwboot;
mod guest_images;
mod harness;
mod image;
mod imgsource;
mod linux;
mod linux_hostfwd;
mod linux_net;
mod linux_pool;
mod linux_run_disk;
mod linux_vmadm_net;
mod linux_protect;
mod linux_vmadm_uefi;
mod memtest;
mod pool_disks;
mod restart;
mod setup;
mod tiers;
mod vm;
mod shell;
mod zone;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  build   Build the kernel, the boot archive and the ISO (target/alcove/alcove.iso)
  run     Build, then boot the ISO under QEMU with serial on this terminal
  test    Run every test tier CI runs (clippy, host, system, linux, harness)
  bochs   Build, then boot the ISO under Bochs with a VMX CPU model
  bench   Run the benchmarks; prints `bench <name> <value> <unit>` lines
  setup   Install the Debian packages and toolchain parts the others need
  images  Fetch Debian's cloud kernel and busybox; build the Linux test guest
  fuzz-syscalls  Run the system-call fuzzer with a seed and budget of your choosing

`cargo xtask <command> --help` tells more.";

const RUN_USAGE: &str = "\
Usage: cargo xtask run [options] [-- QEMU_ARGS...]
       cargo xtask run --vm FILE.json [--bochs] [--timeout SECS] [-- QEMU_ARGS...]
       cargo xtask run --vm A.json --vm B.json ... [--timeout SECS]

Builds the ISO and boots it under QEMU (TCG, SVM with nested paging) with the
serial console on this terminal. Ctrl-A X leaves QEMU.

The demo system (initrd/manifests/demo.toml, without --manifest) gets the
machine's NIC: a virtio-net on QEMU user networking (10.0.2.0/24, gateway
10.0.2.2), the uplink of netd's nic_tag admin, where netd's address is
10.0.2.15; a free host port on 127.0.0.1 is forwarded to 10.0.2.15:8080,
the HTTP API (apid). Each run gives apid a new random token, written to
target/alcove/demo-token (mode 0600). Both are printed at start, with the
host CLI's command line:
  ALCOVE_URL=http://127.0.0.1:PORT ALCOVE_TOKEN_FILE=target/alcove/demo-token \
    cargo run -q -p alcove-api --bin vmadm -- list

With --vm, Alcove boots with the VM that FILE.json describes (JSON with
SmartOS property names, checked before anything is built; see
vmm-server/src/config.rs), e.g.
  {\"alias\": \"linux-test\", \"brand\": \"bhyve\", \"ram\": 256, \"vcpus\": 2,
   \"disks\": [{\"path\": \"disk.img\", \"model\": \"virtio\"}],
   \"kernel\": \"vmlinuz\", \"initrd\": \"initramfs.cpio\",
   \"cmdline\": \"console=ttyS0 panic=-1\"}
Relative paths are taken from FILE.json's folder. The kernel and initrd go
into the boot archive (vm.json, the kernel and the initrd are the VM
server's boot files, found by their file names); disk i is attached to QEMU
as virtio-blk drive i, which storaged serves to the VM as its disk i, so
what the guest writes lands in that file. The machine is EPYC,+svm,+npt with
2 CPUs and the VM's ram + 768 MiB. QEMU stops when the VM ends; the exit
status says how:
  0 poweroff, 2 reboot, 3 halted (boot vCPU halted with interrupts off),
  4 triple-fault, 5 error (the VMM's reason is printed), 6 no ending was
  reported (the machine stopped, or --timeout), 1 the driver failed.
Disks may be pool volumes instead (issue 12): `\"path\": \"zones/NAME\"` names
a volume of the pool `zones`, and a disk without a path but with `size`
(MiB) or `image_uuid` is the volume `zones/<uuid>-disk<N>` (the VM needs a
`uuid`). At boot init creates an absent volume (empty, `size` MiB; or cloned
from `zones/<image_uuid>@final`) and hands the VMM a grant for exactly its
volumes. Either every disk is a volume or none is. The pool lives in
--pool FILE[,FILE] (two files make a mirror; default
target/alcove/pool.img), the machine's disks; a file that does not exist is
made blank and sparse (4 GiB) and storaged creates the pool on it.
Several --vm (issue 13) boot one machine with each VM in its own vmm-server
with its own VNICs (netd.conf lists each VM's VNICs for its VMM); each
description is its own boot file (<server>.json). The machine has the VMs'
ram + 768 MiB and ends with the last VM given (its ending is the exit
status); the others end alone. Under QEMU only, and without disks for now;
two VMs with one alias, or boot files of one name from different host files,
are refused.
--bochs runs the same under Bochs (corei7_skylake_x: VMX with EPT), which
has one CPU (the vCPUs share it; Linux with 2 vCPUs stalls bringing up the
second there) and no virtio-blk device: storaged serves the VM's disks
(host files) as RAM disks packed into the boot archive; what the guest
writes stays in memory (16 MiB a disk at most) and never reaches the files.

Options:
  --smp N          CPUs (default 2); `-- -smp N` works too
  --mem MIB        memory in MiB (default 512)
  --uefi           boot through OVMF (UEFI) instead of SeaBIOS
  --cmdline TEXT   extra kernel command line words
  --timeout SECS   stop QEMU after SECS seconds
  --manifest NAME  boot initrd/manifests/NAME.toml instead of demo
  --cpu MODEL      QEMU's -cpu (default qemu64,+svm,+npt; EPYC,+svm,+npt with --vm)
  --vm FILE.json   boot Alcove with this VM (above); repeatable
  --bochs          with --vm: under Bochs instead of QEMU
  --pool FILE[,F]  with --vm on pool volumes: the pool's files
  --hostfwd tcp:HOSTPORT-IP:PORT  with the demo system or --vm: forward a
                   host port to an address on the machine's NIC (QEMU's
                   hostfwd syntax; repeatable). A VM with a NIC on nic_tag
                   admin gives the machine a virtio-net on QEMU user
                   networking (10.0.2.0/24, gateway 10.0.2.2), the uplink of
                   netd's admin switch, and a free host port forwarded to
                   netd's admin address 10.0.2.15 port 80 (printed at start)
  -h, --help       this text

Exit status: 0 when QEMU was left by hand or the system reported success,
1 when the system reported a failure (a fault, a panic).";

const TEST_USAGE: &str = "\
Usage: cargo xtask test [--tier NAME]... [--slow] [--case TEXT]

Runs every tier CI runs, in order (clippy first), and exits with a non-zero
status if any check fails. Serial logs of every run are kept under target/alcove/logs/.

Tiers:
  clippy    cargo clippy -- -D warnings over the host crates (with their
            tests) and over the kernel and the processes built for
            x86_64-unknown-none
  host      cargo test for every host crate
  system    the boot, user, storage and vm suites under QEMU SeaBIOS, QEMU
            OVMF (UEFI) and Bochs (corei7_skylake_x VMX, ryzen SVM), and
            the fuzz suite (the system-call fuzzer, fixed seeds, 1 and 4
            CPUs; `cargo xtask fuzz-syscalls` for other seeds and budgets)
  linux     end to end: Debian's cloud kernel with the busybox initramfs
            (`cargo xtask images`, run first if needed) as a VM on Alcove
            nested in QEMU TCG (EPYC,+svm,+npt; 2 vCPUs, 256 MiB) with an
            8 MiB disk of random bytes: the guest must see nproc=2, print the
            disk's SHA-256 (compared with the host's), write a marker into
            sector 0 (read back from the image file) and power off; and
            Debian's memtest86+ (4 vCPUs, 256 MiB) must show the memory and
            CPUs it was given and test on all of them without errors
  harness   the harness's own test: a faulting, a panicking and a hung kernel
            must each fail the run, with the fault shown
  slow      not run by default: the same Linux guest under Bochs
            corei7_skylake_x (VMX), two vCPUs on Bochs's one CPU, no disk
            (Bochs has no virtio-blk); reports its time

Options:
  --tier NAME   run only this tier (repeatable)
  --slow        add the slow tier
  --case TEXT   run only the system and Linux cases whose name contains TEXT
  -h, --help    this text";

const BOCHS_USAGE: &str = "\
Usage: cargo xtask bochs [--cpu MODEL] [--timeout SECS]

Builds the ISO and boots it under Bochs; the serial console goes to
target/alcove/logs/bochs-run.log and is printed when Bochs stops.

Options:
  --cpu MODEL      Bochs CPU model (default corei7_skylake_x: VMX with EPT;
                   `ryzen` has SVM)
  --timeout SECS   stop Bochs after SECS seconds (default 60)
  -h, --help       this text";

const BENCH_USAGE: &str = "\
Usage: cargo xtask bench [--case TEXT]

`--case TEXT` runs only the runs whose name contains TEXT (bench/icount-user,
bench/icount-vm, bench/wall-user, bench/linux, bench/wall-boot, bench/fwboot...).
Boots the bench suite under QEMU with `-icount shift=0` (a TSC delta is then
exactly the instructions executed) and prints `bench <name> <value> <unit>`
lines. Wall-clock figures are given as ratios taken in the same run, except
for the Linux guest's:
  linux_boot_to_init     seconds from `vm NAME: started` to the guest's
                         `alcove-guest: init started` (serial lines stamped
                         as they arrive), on Alcove nested in QEMU TCG
  linux_boot_direct_tcg  the same kernel and initramfs booted directly by
                         QEMU TCG in the same run: seconds from starting QEMU
                         to the same line
  vmm_overhead_kib       the vmm-server's memory beyond guest RAM
  fwboot-<fw>-<path>     bench/fwboot: seconds to the guest's init from its
                         own GRUB disk through <fw> (ovmf, seabios; direct:
                         direct kernel boot) on <path> (alcove: nested, from
                         `vm NAME: started`; qemu: plain QEMU TCG from its
                         start), all in one run
  linux_<pool|disk>_<write|read>
                         bench/linux-disk: the guest's dd of 8 MiB (then its
                         read back) on a pool volume and on a whole machine
                         disk, MB/s between its serial lines as they arrive;
                         linux_pool_over_disk_<write|read> the rounds' median
                         ratio (ALCOVE_DISK_BENCH_ROUNDS rounds, default 3)
  linux_*_icount         bench/linux-disk-icount: the same under QEMU
                         -icount shift=0,sleep=off, timed by the guest's own
                         clock: MB/vs is MB per 10^9 instructions of the
                         whole machine; *_guest_ns the guest's nanoseconds;
                         linux_pool_checksum_icount storaged's checksum
                         instructions per byte (its meter line)
  fwboot-<fw>-ratio      (alcove_fw / alcove_direct) / (qemu_fw / qemu_direct):
                         1 or less, the firmware costs Alcove no more than
                         it costs QEMU; fwboot-<fw>-alcove-over-qemu the
                         plain time ratio

A run prints its figures only if it passed and printed every figure it
must; a run that failed prints none (its problems instead), and the
command then exits with status 1.";

const FUZZ_USAGE: &str = "\
Usage: cargo xtask fuzz-syscalls [--seed S] [--batches N] [--first K] [--ops M]
                                 [--smp CPUS] [--known F]... [--trace] [--timeout SECS]

Boots the fuzz system (initrd/manifests/fuzz.toml) under QEMU and runs the
system-call fuzzer (servers/ktest-fuzz): batches K..K+N of seed S, each a
random sequence of M system calls (default 60) followed by the invariant
checks. A failing batch prints the command that reruns it alone, e.g.
  cargo xtask fuzz-syscalls --seed 0xa1c07e57 --first 17 --batches 1
Without --seed a fresh one is taken (and printed). --known F turns the check
for open kernel bug F into a count (12: a mapping made through a revoked
copy survives; 5: a batch ends with less kernel memory charged than it
began; wide-slots: an IPC call takes a slot number modulo 2^32); CI passes
all three until they are fixed.
--trace prints every operation (with a failing batch: what led to it).

Options:
  --seed S        the run's seed (decimal or 0x hex; default: from the clock)
  --batches N     batches to run (default 1000)
  --first K       the first batch (default 0)
  --ops M         system calls per batch (default 60)
  --smp CPUS      CPUs of the machine (default 1)
  --known F       count, do not fail, open finding F (repeatable)
  --trace         print every operation
  --timeout SECS  stop QEMU after SECS seconds (default 3600)";

const BUILD_USAGE: &str = "\
Usage: cargo xtask build

Builds the kernel, packs the boot archive from initrd/manifests/demo.toml and
makes target/alcove/alcove.iso (GRUB, boots under BIOS and UEFI).";

const SETUP_USAGE: &str = "\
Usage: cargo xtask setup

Installs (apt-get) the Debian packages and (rustup) the toolchain components
(rust-src, clippy) and target that building and testing need. `run`, `test`,
`bochs` and `bench` do this themselves; it is quiet when nothing is missing.";

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("ci/ has a parent").to_path_buf()
}

/// Where builds, ISOs and logs go.
pub fn out_dir() -> PathBuf {
    root().join("target").join("alcove")
}

/// The cargo that runs us (same toolchain).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs a command, showing its output only if it fails.
pub fn run_quiet(c: &mut Command) -> Result<()> {
    let out = c.output().map_err(|e| format!("{:?}: {e}", c.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        eprint!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Err(format!("{:?} failed with {}", c.get_program(), out.status).into())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let help = |text: &str| -> Option<ExitCode> {
        let before_dashdash = rest.iter().take_while(|a| *a != "--");
        if before_dashdash.into_iter().any(|a| a == "-h" || a == "--help") {
            println!("{text}");
            Some(ExitCode::SUCCESS)
        } else {
            None
        }
    };
    let result = match cmd {
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "build" => help(BUILD_USAGE).map(Ok).unwrap_or_else(|| tiers::build().map(|_| ExitCode::SUCCESS)),
        "run" => help(RUN_USAGE).map(Ok).unwrap_or_else(|| tiers::run(rest)),
        "test" => help(TEST_USAGE).map(Ok).unwrap_or_else(|| tiers::test(rest)),
        "bochs" => help(BOCHS_USAGE).map(Ok).unwrap_or_else(|| tiers::bochs(rest)),
        "bench" => help(BENCH_USAGE).map(Ok).unwrap_or_else(|| tiers::bench(rest)),
        "fuzz-syscalls" => help(FUZZ_USAGE).map(Ok).unwrap_or_else(|| tiers::fuzz_syscalls(rest)),
        "images" => help(guest_images::USAGE).map(Ok).unwrap_or_else(|| guest_images::main(rest)),
        "setup" => help(SETUP_USAGE).map(Ok).unwrap_or_else(|| setup::ensure().map(|_| ExitCode::SUCCESS)),
        other => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
