//! `dladm show-link`, `show-vnic` and `show-etherstub`, from netd's `vnic`
//! interface (`switches` and `show`, for netd's admins: its `vnic-admin=`
//! names the shell), in illumos's columns.
//!
//! The links: each machine NIC netd drives (class `phys`, named `vioif<N>`
//! as illumos names virtio-net links), each etherstub, and each VNIC (a
//! VM's `vnic<N>`, N being netd's number for it, or an operator's by the
//! name it was made with) over its etherstub or its nic_tag's NIC.
//!
//! `create-etherstub`, `delete-etherstub`, `create-vnic -l LINK [-m MAC]
//! [-v VID] NAME` and `delete-vnic` ask netd (`vnic.create_etherstub`, …,
//! admins only), which checks the names (illumos link names) and refuses
//! duplicates, deleting an etherstub a VNIC is on and deleting a VM's VNIC;
//! the shell checks the syntax and says netd's refusals in dladm's words
//! (`dladm: vnic creation failed: object already exists`, exit 1). What
//! they make lives as long as that netd: as with `-t` (which is taken),
//! nothing is persistent.

use crate::{Reply, Shell, System, printable};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libipc::interfaces::{SwitchInfo, VnicError, VnicInfo, VnicStats};

const USAGE: &str = "\
usage:  dladm <subcommand> <args> ...
    show-link       [<link>]
    show-vnic       [<link>]
    show-etherstub  [<link>]
    create-vnic     [-t] -l <link> [-m <mac>|random|auto] [-v <vid>] <vnic-link>
    delete-vnic     [-t] <vnic-link>
    create-etherstub [-t] <link>
    delete-etherstub [-t] <link>
";

const DLSTAT_USAGE: &str = "\
usage:  dlstat [show-link] [<link>]
";

/// A VNIC with its link name.
type Named = (String, VnicInfo);

/// A change of netd's links (`dladm create-…`/`delete-…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkOp {
    CreateEtherstub(String),
    DeleteEtherstub(String),
    /// A VNIC named `name` from a `vnic.grant` line.
    CreateVnic { name: String, line: String },
    DeleteVnic(String),
}

/// A MAC for `create-vnic` without `-m` (or `-m random|auto`): locally
/// administered, `2:8:20` and three bytes of the name's FNV-1a hash (netd
/// refuses it if that MAC is on the switch and VLAN already).
fn mac_for(name: &str) -> String {
    let h = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("02:08:20:{:02x}:{:02x}:{:02x}", (h >> 16) as u8, (h >> 8) as u8, h as u8)
}

/// Why netd refused a link change, in dladm's words (`what`: `vnic` or
/// `etherstub`; `doing`: `creation` or `deletion`).
fn refusal(what: &str, doing: &str, e: VnicError) -> Reply {
    match e {
        VnicError::NotPermitted => fail("dladm: insufficient privileges (netd's vnic-admin= does not name the shell)\n".into()),
        VnicError::Exists { .. } => fail(format!("dladm: {what} {doing} failed: object already exists\n")),
        VnicError::NotFound { .. } => fail(format!("dladm: {what} {doing} failed: object not found\n")),
        VnicError::Busy { why, .. } => fail(format!("dladm: {what} {doing} failed: link busy ({})\n", printable(&why))),
        VnicError::BadName { name, why } => fail(format!("dladm: invalid link name '{}' ({})\n", printable(&name), printable(&why))),
        VnicError::TooMany { what: which, limit } => {
            fail(format!("dladm: {what} {doing} failed: too many links (netd holds {limit} {} at most)\n", printable(&which)))
        }
        VnicError::Invalid { why } => fail(format!("dladm: {what} {doing} failed: invalid argument ({})\n", printable(&why))),
        other => fail(format!("dladm: {what} {doing} failed: {other}\n")),
    }
}

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
        if verb.starts_with("create-") || verb.starts_with("delete-") {
            return self.change(verb, rest);
        }
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
            other => fail(format!("dladm: unknown subcommand '{}'\n{USAGE}", printable(other))),
        }
    }

    /// `dlstat [show-link] [LINK]`: each VNIC's counters from netd
    /// (`vnic.stats`), from the link's side as illumos counts them: IPKTS
    /// and RBYTES what it received (the switch delivered to its guest),
    /// OPKTS and OBYTES what it sent that the switch took. IDROPS and
    /// ODROPS (Alcove's, not illumos's columns) are the frames dropped on
    /// the way to it and from it, by reason (`ip_spoof=2,mac_spoof=1`),
    /// `--` for none. Counters start when a VM's VMM attaches the VNIC; a
    /// VNIC nobody attached shows `--` throughout.
    pub(crate) fn dlstat(&mut self, args: &[String]) -> Reply {
        let rest = match args.split_first() {
            Some((verb, rest)) if verb == "show-link" => rest,
            _ => args,
        };
        let filter = match rest {
            [] => None,
            [one] if !one.starts_with('-') => Some(one.as_str()),
            _ => return Reply::fail(format!("dlstat: takes at most one link and no options here\n{DLSTAT_USAGE}"), 2),
        };
        let renamed = |r: Reply| Reply { text: r.text.replacen("dladm: ", "dlstat: ", 1), code: r.code };
        let (_, vnics) = match self.switches_and_vnics() {
            Ok(x) => x,
            Err(r) => return renamed(r),
        };
        let stats = match answer(self.system.vnic_stats()) {
            Ok(s) => s,
            Err(r) => return renamed(r),
        };
        let link = |s: &VnicStats| vnics.iter().find(|(_, v)| v.vnic == s.vnic).map_or_else(|| format!("vnic{}", s.vnic), |(l, _)| l.clone());
        let mut rows: Vec<(String, &VnicStats)> = stats.iter().map(|s| (link(s), s)).collect();
        if let Some(f) = filter {
            rows.retain(|(l, _)| l == f);
            if rows.is_empty() {
                return fail(format!("dlstat: failed to show link {}: object not found\n", printable(f)));
            }
        }
        let drops = |d: &[(String, u64)]| {
            if d.is_empty() { String::from("--") } else { d.iter().map(|(r, n)| format!("{}={n}", printable(r))).collect::<Vec<_>>().join(",") }
        };
        let mut t = format!("{:<12} {:>9} {:>11} {:<20} {:>9} {:>11} {}\n", "LINK", "IPKTS", "RBYTES", "IDROPS", "OPKTS", "OBYTES", "ODROPS");
        for (l, s) in rows {
            if !s.attached {
                t.push_str(&format!("{:<12} {:>9} {:>11} {:<20} {:>9} {:>11} {}\n", printable(&l), "--", "--", "--", "--", "--", "--"));
                continue;
            }
            t.push_str(&format!(
                "{:<12} {:>9} {:>11} {:<20} {:>9} {:>11} {}\n",
                printable(&l),
                s.received_frames,
                s.received_bytes,
                drops(&s.received_drops),
                s.sent_frames,
                s.sent_bytes,
                drops(&s.sent_drops)
            ));
        }
        Reply::ok(t)
    }

    /// `create-…` and `delete-…`: the syntax checked here, the rest by netd.
    fn change(&mut self, verb: &str, rest: &[String]) -> Reply {
        let usage = || fail(format!("dladm: {}: bad arguments\n{USAGE}", printable(verb)));
        let (mut link, mut mac, mut vid, mut name) = (None, None, None, None);
        let mut it = rest.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-t" => {}
                "-l" if verb == "create-vnic" => link = it.next(),
                "-m" if verb == "create-vnic" => mac = it.next(),
                "-v" if verb == "create-vnic" => vid = it.next(),
                o if o.starts_with('-') => {
                    return fail(format!("dladm: {}: option {} is not supported here\n{USAGE}", printable(verb), printable(o)));
                }
                _ if name.is_none() => name = Some(a.clone()),
                _ => return usage(),
            }
        }
        let Some(name) = name else { return usage() };
        let (what, doing) = match verb {
            "create-vnic" => ("vnic", "creation"),
            "delete-vnic" => ("vnic", "deletion"),
            "create-etherstub" => ("etherstub", "creation"),
            "delete-etherstub" => ("etherstub", "deletion"),
            other => return fail(format!("dladm: unknown subcommand '{}'\n{USAGE}", printable(other))),
        };
        let op = match verb {
            "create-etherstub" => LinkOp::CreateEtherstub(name),
            "delete-etherstub" => LinkOp::DeleteEtherstub(name),
            "delete-vnic" => LinkOp::DeleteVnic(name),
            _ => {
                let Some(link) = link else {
                    return fail(format!("dladm: create-vnic: a link is needed (-l)\n{USAGE}"));
                };
                // Over an etherstub, or a NIC (its nic_tag's switch).
                let switches = match answer(self.system.vnic_switches()) {
                    Ok(s) => s,
                    Err(r) => return r,
                };
                let Some(switch) = switches.iter().find(|s| (s.etherstub && s.name == *link) || s.uplink.as_deref() == Some(link)) else {
                    return fail(format!("dladm: vnic creation failed: object not found (no etherstub or NIC {})\n", printable(link)));
                };
                let mac = match mac.map(String::as_str) {
                    None | Some("random" | "auto") => mac_for(&name),
                    Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') => m.into(),
                    Some(m) => return fail(format!("dladm: invalid MAC address '{}'\n", printable(m))),
                };
                let mut line = format!("switch={} mac={mac}", switch.name);
                if let Some(v) = vid {
                    match v.parse::<u16>() {
                        Ok(n) if (1..=4094).contains(&n) && v.bytes().all(|b| b.is_ascii_digit()) => line.push_str(&format!(" vlan_id={n}")),
                        _ => return fail(format!("dladm: invalid VLAN identifier '{}' (1 to 4094)\n", printable(v))),
                    }
                }
                LinkOp::CreateVnic { name, line }
            }
        };
        match self.system.dladm(op) {
            Ok(Ok(_)) => Reply::ok(String::new()),
            Ok(Err(e)) => refusal(what, doing, e),
            Err(e) => fail(format!("dladm: netd did not answer: {e}\n")),
        }
    }

    /// netd's switches, its VNICs each with its link name.
    fn switches_and_vnics(&mut self) -> Result<(Vec<SwitchInfo>, Vec<Named>), Reply> {
        let switches = answer(self.system.vnic_switches())?;
        let vnics = answer(self.system.vnic_show())?;
        // Operators' VNICs by their names (`show` carries none).
        let names = answer(self.system.vnic_names())?;
        let named = vnics
            .into_iter()
            .map(|v| {
                let link = names.iter().find(|(n, _)| *n == v.vnic).map_or_else(|| format!("vnic{}", v.vnic), |(_, name)| name.clone());
                (link, v)
            })
            .collect();
        Ok((switches, named))
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
        for (link, v) in &vnics {
            let mtu = switches.iter().find(|s| s.name == v.switch).map_or(0, |s| s.mtu);
            rows.push((link.clone(), "vnic", mtu, if v.attached { "up" } else { "down" }, over(v, &switches)));
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
            vnics.retain(|(link, _)| link == f);
            if vnics.is_empty() {
                return fail(format!("dladm: invalid vnic name '{}': object not found\n", printable(f)));
            }
        }
        let mut t = format!("{:<12} {:<12} {:<6} {:<17} {:<17} {}\n", "LINK", "OVER", "SPEED", "MACADDRESS", "MACADDRTYPE", "VID");
        for (link, v) in &vnics {
            t.push_str(&format!(
                "{:<12} {:<12} {:<6} {:<17} {:<17} {}\n",
                printable(link),
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
