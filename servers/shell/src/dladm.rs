//! `dladm show-link`, `show-vnic` and `show-etherstub`, from netd's `vnic`
//! interface (`switches` and `show`, for netd's admins: its `vnic-admin=`
//! names the shell), in illumos's columns.
//!
//! The links: each machine NIC netd drives (class `phys`, named `vioif<N>`
//! as illumos names virtio-net links), each etherstub, and each VNIC
//! (`vnic<N>`, N being netd's number for it) over its etherstub or its
//! nic_tag's NIC. netd makes VNICs only for a VM's `nics[]` (`vnic.grant`,
//! zone-server's) and its etherstubs only from netd.conf, so
//! `create-vnic`, `delete-vnic`, `create-etherstub` and `delete-etherstub`
//! are refused with that reason.

use crate::{Reply, Shell, System, printable};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libipc::interfaces::{SwitchInfo, VnicError, VnicInfo};

const USAGE: &str = "\
usage:  dladm <subcommand> <args> ...
    show-link       [<link>]
    show-vnic       [<link>]
    show-etherstub  [<link>]
";

fn fail(text: String) -> Reply {
    Reply::fail(text, 1)
}

fn answer<T>(r: Result<Result<T, VnicError>, String>) -> Result<T, Reply> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(VnicError::NotPermitted)) => Err(fail("dladm: insufficient privileges (netd's vnic-admin= does not name the shell)\n".into())),
        Ok(Err(e)) => Err(fail(format!("dladm: {e}\n"))),
        Err(e) => Err(fail(format!("dladm: netd did not answer: {e}\n"))),
    }
}

/// A MAC as illumos prints it: `2:8:20:ff:0:1`.
pub fn mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:x}")).collect::<Vec<_>>().join(":")
}

/// What a VNIC is over: its etherstub, or its nic_tag's NIC (the nic_tag's
/// name when netd drives no NIC for it).
fn over(v: &VnicInfo, switches: &[SwitchInfo]) -> String {
    switches.iter().find(|s| s.name == v.switch).and_then(|s| s.uplink.clone()).unwrap_or_else(|| v.switch.clone())
}

impl<S: System> Shell<S> {
    /// `dladm SUBCOMMAND ...`.
    pub(crate) fn dladm(&mut self, args: &[String]) -> Reply {
        let Some((verb, rest)) = args.split_first() else { return fail(USAGE.into()) };
        let show = verb.starts_with("show-");
        let filter = match rest {
            [] => None,
            [one] if !one.starts_with('-') => Some(one.as_str()),
            _ if show => return fail(format!("dladm: {}: takes at most one link and no options here\n{USAGE}", printable(verb))),
            _ => None,
        };
        match verb.as_str() {
            "show-link" => self.show_link(filter),
            "show-vnic" => self.show_vnic(filter),
            "show-etherstub" => self.show_etherstub(filter),
            v @ ("create-vnic" | "delete-vnic") => {
                fail(format!("dladm: {v}: not supported: netd makes VNICs only for a VM's nics[] (vmadm create, update)\n"))
            }
            v @ ("create-etherstub" | "delete-etherstub") => {
                fail(format!("dladm: {v}: not supported: netd's etherstubs are netd.conf's, made at boot\n"))
            }
            other => fail(format!("dladm: unknown subcommand '{}'\n{USAGE}", printable(other))),
        }
    }

    fn switches_and_vnics(&mut self) -> Result<(Vec<SwitchInfo>, Vec<VnicInfo>), Reply> {
        let switches = answer(self.system.vnic_switches())?;
        let vnics = answer(self.system.vnic_show())?;
        Ok((switches, vnics))
    }

    fn show_link(&mut self, filter: Option<&str>) -> Reply {
        let (switches, vnics) = match self.switches_and_vnics() {
            Ok(x) => x,
            Err(r) => return r,
        };
        // (LINK, CLASS, MTU, STATE, OVER)
        let mut rows: Vec<(String, &str, u32, &str, String)> = Vec::new();
        for s in &switches {
            match (&s.uplink, s.etherstub) {
                (Some(link), false) => rows.push((link.clone(), "phys", s.mtu, "up", "--".into())),
                (_, true) => rows.push((s.name.clone(), "etherstub", s.mtu, "unknown", "--".into())),
                // A nic_tag without a NIC is no link.
                (None, false) => {}
            }
        }
        for v in &vnics {
            let mtu = switches.iter().find(|s| s.name == v.switch).map_or(0, |s| s.mtu);
            rows.push((format!("vnic{}", v.vnic), "vnic", mtu, if v.attached { "up" } else { "down" }, over(v, &switches)));
        }
        if let Some(f) = filter {
            rows.retain(|r| r.0 == f);
            if rows.is_empty() {
                return fail(format!("dladm: failed to show link {}: object not found\n", printable(f)));
            }
        }
        let mut t = format!("{:<11} {:<9} {:<6} {:<8} {:<10} {}\n", "LINK", "CLASS", "MTU", "STATE", "BRIDGE", "OVER");
        for (link, class, mtu, state, over) in rows {
            t.push_str(&format!("{:<11} {class:<9} {mtu:<6} {state:<8} {:<10} {}\n", printable(&link), "--", printable(&over)));
        }
        Reply::ok(t)
    }

    fn show_vnic(&mut self, filter: Option<&str>) -> Reply {
        let (switches, mut vnics) = match self.switches_and_vnics() {
            Ok(x) => x,
            Err(r) => return r,
        };
        if let Some(f) = filter {
            vnics.retain(|v| format!("vnic{}", v.vnic) == f);
            if vnics.is_empty() {
                return fail(format!("dladm: invalid vnic name '{}': object not found\n", printable(f)));
            }
        }
        let mut t = format!("{:<12} {:<12} {:<6} {:<17} {:<17} {}\n", "LINK", "OVER", "SPEED", "MACADDRESS", "MACADDRTYPE", "VID");
        for v in &vnics {
            t.push_str(&format!(
                "{:<12} {:<12} {:<6} {:<17} {:<17} {}\n",
                format!("vnic{}", v.vnic),
                printable(&over(v, &switches)),
                0,
                mac(&v.mac),
                "fixed",
                v.vlan_id
            ));
        }
        Reply::ok(t)
    }

    fn show_etherstub(&mut self, filter: Option<&str>) -> Reply {
        let switches = match answer(self.system.vnic_switches()) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let mut stubs: Vec<&SwitchInfo> = switches.iter().filter(|s| s.etherstub).collect();
        if let Some(f) = filter {
            stubs.retain(|s| s.name == f);
            if stubs.is_empty() {
                return fail(format!("dladm: failed to show etherstub {}: object not found\n", printable(f)));
            }
        }
        let mut t = String::from("LINK\n");
        for s in stubs {
            t.push_str(&printable(&s.name));
            t.push('\n');
        }
        Reply::ok(t)
    }
}
