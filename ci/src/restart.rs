//! The `restart/machine-qemu` system case: the whole machine restarted on the
//! same pool, seen from this host through the host `vmadm` and `imgadm`
//! (the API case's machine, manifest `api.toml`, [`crate::api`]).
//!
//! First boot, on a blank pool file: `imgadm import` of the good image
//! from the image source the harness serves ([`crate::imgsource`]),
//! `vmadm create` of `rs-auto` (its boot disk a clone of that image,
//! `autoboot` by default: it runs) and of `rs-manual` (`"autoboot":
//! false`: created stopped), `vmadm list` (one running, one stopped).
//! Then QEMU is killed while `rs-auto`'s guest runs (a power cut: nothing
//! is shut down) and started again on the same pool file. Second boot:
//! `rs-auto`'s guest prints its line before any request is made (autoboot
//! VMs start with the machine); `vmadm list` shows both VMs, `rs-auto` `running` and `rs-manual` `stopped`;
//! `imgadm list` shows the image; `vmadm get` of `rs-auto` still names the
//! image its disk came from; the second boot's console shows `rs-auto`'s
//! VMM started and its guest's line (the guest runs again), and nothing
//! of `rs-manual`. Then `vmadm stop` of `rs-auto` (the guest powers off on
//! the ACPI power button), both deleted, the image deleted, `vmadm list`
//! and `imgadm list` empty.

use crate::Result;
use crate::api::{self, cli};
use crate::emu::log_path;
use crate::imgsource::GOOD;
use std::path::Path;
use std::time::{Duration, Instant};

pub const CASE: &str = "restart/machine-qemu";
const AUTO: &str = "5e57a470-0000-4000-8000-0000000000c1";
const MANUAL: &str = "5e57a470-0000-4000-8000-0000000000c2";

/// What the case found.
pub type Outcome = crate::harness::Checks;

fn auto_payload() -> String {
    format!(
        r#"{{"uuid": "{AUTO}", "brand": "bhyve", "alias": "rs-auto", "ram": 64, "vcpus": 1, "kernel": "/zone-guest-halt", "disks": [{{"boot": true, "image_uuid": "{GOOD}"}}]}}"#
    )
}

fn manual_payload() -> String {
    format!(
        r#"{{"uuid": "{MANUAL}", "brand": "bhyve", "alias": "rs-manual", "ram": 64, "vcpus": 1, "autoboot": false, "kernel": "/zone-guest-halt", "disks": [{{"size": 8}}]}}"#
    )
}

/// `vmadm list -p -s alias -o uuid,state,alias`'s lines for the two VMs
/// in these states.
fn listed(auto: &str, manual: &str) -> String {
    format!("{AUTO}:{auto}:rs-auto\n{MANUAL}:{manual}:rs-manual\n")
}

/// The console's text of a boot (its log file).
fn serial(log: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned()
}

/// Waits up to 30 s for `line` on the console of a boot (its log file).
fn wait_for_line(log: &Path, line: &str) -> bool {
    let waited = Instant::now();
    while !serial(log).contains(line) {
        if waited.elapsed() > Duration::from_secs(30) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

/// Runs the case.
pub fn run(kernel: &Path, timeout: Duration) -> Result<Outcome> {
    let (vmadm, imgadm) = api::host_tools()?;
    let source = crate::imgsource::start()?;
    let iso = api::iso(kernel)?;
    let dir = crate::out_dir().join("restart");
    std::fs::create_dir_all(&dir)?;
    let pool = dir.join("pool.img");
    let _ = std::fs::remove_file(&pool);
    std::fs::File::create(&pool)?.set_len(64 << 20)?;
    let (auto, manual) = (dir.join("rs-auto.json"), dir.join("rs-manual.json"));
    std::fs::write(&auto, auto_payload())?;
    std::fs::write(&manual, manual_payload())?;
    let name = CASE.replace('/', "-");
    let logs = [log_path(&format!("{name}-boot1"))?, log_path(&format!("{name}-boot2"))?];
    let start = Instant::now();
    let mut o = Outcome::new(CASE, Duration::ZERO, logs[1].clone());
    let url = format!("http://10.0.2.2:{}", source.port);
    let a = auto.display().to_string();
    let m = manual.display().to_string();

    // First boot: the image imported, the two VMs made.
    let (mut child, port) = api::boot(&iso, crate::zone::pool_drive_of(&pool), &logs[0])?;
    let first = (|| -> std::result::Result<(), String> {
        api::wait_for_ping(port, start, timeout)?;
        let (ok, out, err) = cli(&imgadm, port, &["sources", "-a", &url])?;
        o.check(ok, || format!("imgadm sources -a {url}: {out:?} {err:?}"));
        let (ok, out, err) = cli(&imgadm, port, &["import", GOOD])?;
        o.check(ok && out.contains(GOOD), || format!("imgadm import {GOOD}: {out:?} {err:?}"));
        for (file, uuid) in [(&a, AUTO), (&m, MANUAL)] {
            let (ok, out, err) = cli(&vmadm, port, &["create", "-f", file])?;
            // As SmartOS's vmadm prints it.
            o.check(ok && err == format!("Successfully created VM {uuid}\n"), || format!("vmadm create -f {file}: {out:?} {err:?}"));
        }
        let (ok, out, err) = cli(&vmadm, port, &["list", "-p", "-s", "alias", "-o", "uuid,state,alias"])?;
        o.check(ok && out == listed("running", "stopped"), || {
            format!("before the restart, vmadm list printed {out:?} {err:?}, not {:?}", listed("running", "stopped"))
        });
        // The power is cut once the guest runs.
        o.check(wait_for_line(&logs[0], crate::zone::GUEST_HALT_LINE), || {
            format!("rs-auto's guest never printed its line on the first boot ({})", logs[0].display())
        });
        Ok(())
    })();
    // The power cut: QEMU killed with the VM running.
    crate::emu::stop(&mut child);
    if let Err(e) = first {
        o.problems.push(format!("first boot: {e}"));
        o.elapsed = start.elapsed();
        return Ok(o);
    }

    // Second boot, on the same pool file.
    let (mut child, port) = api::boot(&iso, crate::zone::pool_drive_of(&pool), &logs[1])?;
    let second = (|| -> std::result::Result<(), String> {
        api::wait_for_ping(port, start, timeout)?;
        // The autoboot VM starts with the machine, before anybody asks
        // zone-server anything (as SmartOS boots autoboot VMs).
        o.check(wait_for_line(&logs[1], crate::zone::GUEST_HALT_LINE), || {
            format!("rs-auto's guest printed nothing within 30 s of the second boot's API answering, before any vmadm request ({})", logs[1].display())
        });
        let (ok, out, err) = cli(&vmadm, port, &["list", "-p", "-s", "alias", "-o", "uuid,state,alias"])?;
        o.check(ok && out == listed("running", "stopped"), || {
            format!("after the restart, vmadm list printed {out:?} {err:?}, not {:?}", listed("running", "stopped"))
        });
        let (ok, out, err) = cli(&vmadm, port, &["list"])?;
        o.check(
            ok && out.lines().any(|l| l.split_whitespace().eq([AUTO, "BHYV", "64", "running", "rs-auto"]))
                && out.lines().any(|l| l.split_whitespace().eq([MANUAL, "BHYV", "64", "stopped", "rs-manual"])),
            || format!("after the restart, vmadm list printed {out:?} {err:?}"),
        );
        let (ok, out, err) = cli(&imgadm, port, &["list"])?;
        o.check(ok && out.contains(GOOD) && out.contains("imported-disk"), || {
            format!("after the restart, imgadm list printed {out:?} {err:?}, without {GOOD}")
        });
        let (ok, out, err) = cli(&vmadm, port, &["get", AUTO])?;
        let vm: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        o.check(ok && vm["disks"][0]["image_uuid"] == GOOD && vm["autoboot"] == true, || {
            format!("after the restart, vmadm get {AUTO} printed {out:?} {err:?}")
        });
        // The autoboot VM's guest runs again: its VMM's and its own line
        // on this boot's console.
        let text = serial(&logs[1]);
        o.check(text.contains("vm rs-auto: started") && text.contains(crate::zone::GUEST_HALT_LINE), || {
            format!("the second boot's console does not show rs-auto's VMM started and its guest's line ({})", logs[1].display())
        });
        o.check(!text.contains("vm rs-manual: started"), || "rs-manual (autoboot false) was started on the second boot".into());
        // The VMs are the restarted zone-server's to stop and delete.
        let (ok, out, err) = cli(&vmadm, port, &["stop", AUTO])?;
        o.check(ok && err == format!("Successfully completed stop for VM {AUTO}\n"), || {
            format!("vmadm stop {AUTO} after the restart: {out:?} {err:?}")
        });
        let (ok, out, err) = cli(&vmadm, port, &["list", "-p", "-s", "alias", "-o", "uuid,state,alias"])?;
        o.check(ok && out == listed("stopped", "stopped"), || format!("after vmadm stop, vmadm list printed {out:?} {err:?}"));
        o.check(serial(&logs[1]).contains("vm rs-auto: ended: poweroff"), || {
            "rs-auto's guest did not power off on vmadm stop's power button".into()
        });
        for uuid in [AUTO, MANUAL] {
            let (ok, out, err) = cli(&vmadm, port, &["delete", uuid])?;
            o.check(ok, || format!("vmadm delete {uuid}: {out:?} {err:?}"));
        }
        let (ok, out, err) = cli(&imgadm, port, &["delete", GOOD])?;
        o.check(ok, || format!("imgadm delete {GOOD}: {out:?} {err:?}"));
        let (ok, out, err) = cli(&vmadm, port, &["list", "-H"])?;
        o.check(ok && out.trim().is_empty(), || format!("vmadm list -H after the deletes: {out:?} {err:?}"));
        let (ok, out, err) = cli(&imgadm, port, &["list"])?;
        o.check(ok && !out.contains(GOOD), || format!("imgadm list after the delete: {out:?} {err:?}"));
        Ok(())
    })();
    crate::emu::stop(&mut child);
    o.elapsed = start.elapsed();
    if let Err(e) = second {
        o.problems.push(format!("second boot: {e}"));
    }
    for log in &logs {
        o.check(!serial(log).contains("panicked"), || format!("a server or the kernel panicked ({})", log.display()));
    }
    Ok(o)
}
