//! `svcadm` (init's `svc`) and the `zfs` verbs (storaged's `pool`), with
//! illumos's wording, columns and exit codes: 0 done, 1 refused or failed,
//! 2 a usage error (the usage is printed).
//!
//! What the pool has is volumes and their snapshots (no filesystems, no
//! root dataset `zones`): `zfs list` lists volumes by default, as ZFS does
//! for `-t filesystem,volume` on a pool without filesystems, and a
//! volume's MOUNTPOINT is `-`.

use crate::{Reply, Shell, System, human, printable};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use libipc::interfaces::{PoolError, SvcError, VolumeInfo};

/// `svcs`'s STIME of a server started `started_ns` after boot, on a
/// machine `up` seconds after boot at `now` (Unix seconds; 0: no clock):
/// `HH:MM:SS` (UTC) within a day, else `Mon_DD`, as illumos's svcs; `-`
/// when it does not run.
pub fn stime(started_ns: u64, now: u64, up: u64) -> String {
    if started_ns == 0 {
        return "-".into();
    }
    let started = now.saturating_sub(up) + started_ns / 1_000_000_000;
    if now.saturating_sub(started) < 86_400 {
        let t = started % 86_400;
        return format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
    }
    // ctime: `Sat Dec  5 00:11:49 2026`.
    let c = libipc::time::ctime(started);
    let mut w = c.split_whitespace().skip(1);
    let (month, day) = (w.next().unwrap_or("?"), w.next().unwrap_or("?"));
    format!("{month}_{day:0>2}")
}

const SVCADM_USAGE: &str = "\
Usage: svcadm [-v] [cmd [args ...]]

\tsvcadm enable [-s] <service> ...\t- enable and online service(s)
\tsvcadm disable [-s] <service> ...\t- disable and offline service(s)
\tsvcadm restart <service> ...\t\t- restart specified service(s)

\tServices can be specified using an FMRI, abbreviation, or fnmatch(5)
\tpattern, as shown in these examples for svc:/alcove/netd:default

\tsvcadm <cmd> svc:/alcove/netd:default
\tsvcadm <cmd> alcove/netd:default
\tsvcadm <cmd> netd
";

/// The server name an FMRI or abbreviation names: `netd`,
/// `alcove/netd`, `svc:/alcove/netd`, with or without `:default`.
pub fn service_name(fmri: &str) -> Option<&str> {
    let s = fmri.strip_prefix("svc:/").unwrap_or(fmri);
    let s = s.strip_suffix(":default").unwrap_or(s);
    let s = s.strip_prefix("alcove/").unwrap_or(s);
    (!s.is_empty() && !s.contains(['/', ':'])).then_some(s)
}

const ZFS_USAGE: &str = "\
usage: zfs command args ...
where 'command' is one of the following:

\tlist [-Hp] [-o property[,...]] [-t type[,...]] [filesystem|volume|snapshot] ...
\tget [-Hp] <\"all\" | property[,...]> <filesystem|volume|snapshot> ...
\tset <property=value> <filesystem|volume|snapshot>
\tsnapshot <filesystem|volume>@<snap> ...
\tclone <snapshot> <filesystem|volume>
\trollback [-r] <snapshot>
\tdestroy [-nvrR] <filesystem|volume>
\tdestroy [-nvR] <filesystem|volume>@<snap>
\trename [-f] <filesystem|volume|snapshot> <filesystem|volume|snapshot>
\tsend [-i snapshot] <snapshot>
\treceive [-nvF] <filesystem|volume|snapshot>
";

/// Properties `zfs get all` shows, in ZFS's order, and what `zfs list -o`
/// and `zfs get` take (`avail` and `refer` are ZFS's short names).
const NATIVE: [&str; 17] = [
    "type",
    "creation",
    "used",
    "available",
    "referenced",
    "compressratio",
    "reservation",
    "volsize",
    "volblocksize",
    "quota",
    "refreservation",
    "checksum",
    "compression",
    "origin",
    "guid",
    "createtxg",
    "mountpoint",
];
/// Those `zfs set` may change (storaged's `pool.set`).
const SETTABLE: [&str; 5] = ["compression", "checksum", "quota", "reservation", "refreservation"];

fn long_name(p: &str) -> &str {
    match p {
        "avail" => "available",
        "refer" => "referenced",
        "ratio" => "compressratio",
        "reserv" => "reservation",
        "refreserv" => "refreservation",
        "compress" => "compression",
        "volblock" => "volblocksize",
        other => other,
    }
}

fn user_prop(p: &str) -> bool {
    p.split_once(':').is_some_and(|(m, k)| !m.is_empty() && !k.is_empty())
}

/// A property's value and source as `zfs get` shows them (`parsable`:
/// exact numbers, `-p`).
fn native_value(v: &VolumeInfo, prop: &str, parsable: bool) -> (String, &'static str) {
    let size = |b: u64| if parsable { b.to_string() } else { human(b) };
    let none_or = |b: u64| if b == 0 { (String::from(if parsable { "0" } else { "none" }), "default") } else { (size(b), "local") };
    let ro = |s: String| (s, "-");
    let vol_only = |s: String| if v.snapshot { (String::from("-"), "-") } else { (s, "-") };
    match prop {
        "type" => ro(String::from(if v.snapshot { "snapshot" } else { "volume" })),
        "creation" => ro(match v.creation {
            0 => String::from("-"),
            t if parsable => t.to_string(),
            t => zfs_date(t),
        }),
        "used" => ro(size(v.used)),
        "available" => vol_only(size(v.available)),
        "referenced" => ro(size(v.referenced)),
        "compressratio" => ro(format!("{}.{:02}x", v.compressratio_x100 / 100, v.compressratio_x100 % 100)),
        "reservation" if !v.snapshot => none_or(v.reservation),
        "refreservation" if !v.snapshot => none_or(v.refreservation),
        "quota" if !v.snapshot => none_or(v.quota),
        "volsize" => (size(v.volsize), if v.snapshot { "-" } else { "local" }),
        "volblocksize" => (size(u64::from(v.volblocksize)), if v.snapshot { "-" } else { "default" }),
        "compression" if !v.snapshot => {
            let src = if v.compression == "off" { "default" } else { "local" };
            (v.compression.clone(), src)
        }
        "checksum" if !v.snapshot => {
            let src = if v.checksum == "on" { "default" } else { "local" };
            (v.checksum.clone(), src)
        }
        "origin" => ro(v.origin.clone().unwrap_or_else(|| "-".into())),
        "guid" => ro(v.guid.to_string()),
        "createtxg" => ro(v.creation_txg.to_string()),
        "mountpoint" => ro("-".into()),
        _ => (String::from("-"), "-"),
    }
}

/// ZFS's date for `creation`: `Sat Dec  5  0:11 2026`.
fn zfs_date(t: u64) -> String {
    // ctime: `Sat Dec  5 00:11:49 2026` → ZFS's `%a %b %e %k:%M %Y`.
    let c = libipc::time::ctime(t);
    let w: Vec<&str> = c.split_whitespace().collect();
    if w.len() != 5 {
        return c;
    }
    let hm: Vec<&str> = w[3].split(':').collect();
    let hour = hm.first().and_then(|h| h.parse::<u32>().ok()).unwrap_or(0);
    format!("{} {} {:>2} {:>2}:{} {}", w[0], w[1], w[2], hour, hm.get(1).unwrap_or(&"00"), w[4])
}

/// ZFS's wording of a pool refusal about `name` (`what`: `cannot open`,
/// `cannot destroy`, ...).
fn pool_error(what: &str, name: &str, e: &PoolError) -> String {
    let why = match e {
        PoolError::NotFound { .. } => return format!("cannot open '{name}': dataset does not exist\n"),
        PoolError::Exists { .. } => "dataset already exists".into(),
        PoolError::Busy { .. } => "dataset is busy".into(),
        PoolError::NoSpace | PoolError::Space { .. } => "out of space".into(),
        PoolError::Quota { .. } => "out of space".into(),
        PoolError::NotPermitted => "permission denied".into(),
        PoolError::NoPool => "no such pool".into(),
        other => {
            let t = other.to_string();
            t.strip_prefix("pool: ").unwrap_or(&t).to_string()
        }
    };
    format!("{what} '{name}': {why}\n")
}

fn ipc(cmd: &str, e: String) -> Reply {
    Reply::fail(format!("{cmd}: {e}\n"), 1)
}

fn usage(text: &str, why: &str) -> Reply {
    let mut t = String::new();
    if !why.is_empty() {
        t.push_str(why);
        t.push('\n');
    }
    t.push_str(text);
    Reply::fail(t, 2)
}

/// Options of `zfs list` and `zfs get`.
#[derive(Default)]
struct Flags {
    scripted: bool,
    parsable: bool,
    recursive: bool,
    /// `-R`: clones too.
    dependents: bool,
    dry_run: bool,
    verbose: bool,
    /// `zfs receive -F`: roll the target back to its latest snapshot first.
    rollback: bool,
    /// `-i SNAP` of `zfs send`.
    from: Option<String>,
    fields: Option<String>,
    types: Option<String>,
}

/// Splits leading `-X` options (`allowed` letters; `o` and `t` take a
/// value) from the operands.
fn options<'a>(args: &'a [String], allowed: &str) -> Result<(Flags, &'a [String]), String> {
    let mut f = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            i += 1;
            break;
        }
        let Some(letters) = a.strip_prefix('-').filter(|l| !l.is_empty()) else { break };
        let mut chars = letters.chars();
        while let Some(c) = chars.next() {
            if !allowed.contains(c) {
                return Err(format!("invalid option '{}'", printable(&c.to_string())));
            }
            match c {
                'H' => f.scripted = true,
                'p' => f.parsable = true,
                'r' => f.recursive = true,
                'R' => f.dependents = true,
                'n' => f.dry_run = true,
                'v' => f.verbose = true,
                'F' => f.rollback = true,
                // `-f` (force an unmount): volumes are not mounted.
                'f' => {}
                'o' | 't' | 'i' => {
                    let rest: String = chars.by_ref().collect();
                    let value = if rest.is_empty() {
                        i += 1;
                        args.get(i).cloned().ok_or_else(|| format!("missing argument for '{c}' option"))?
                    } else {
                        rest
                    };
                    match c {
                        'o' => f.fields = Some(value),
                        't' => f.types = Some(value),
                        _ => f.from = Some(value),
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    Ok((f, &args[i..]))
}

/// Rows as ZFS prints them: columns two spaces apart, numbers right-
/// aligned, the last column unpadded; `-H`: tabs, no header.
fn table(header: &[&str], rows: &[Vec<String>], right: &[bool], scripted: bool) -> String {
    let mut t = String::new();
    if scripted {
        for r in rows {
            t.push_str(&r.join("\t"));
            t.push('\n');
        }
        return t;
    }
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = width[i].saturating_sub(c.chars().count());
            let last = i + 1 == width.len();
            if right.get(i).copied().unwrap_or(false) {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            } else {
                l.push_str(c);
                if !last {
                    l.push_str(&" ".repeat(pad));
                }
            }
        }
        t.push_str(l.trim_end());
        t.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    t
}

impl<S: System> Shell<S> {
    /// `svcadm enable|disable|restart SERVICE...`: nothing printed when it
    /// worked, as illumos's.
    pub(crate) fn svcadm(&mut self, args: &[String]) -> Reply {
        let mut args = args;
        if args.first().is_some_and(|a| a == "-v") {
            args = &args[1..];
        }
        let Some((verb, rest)) = args.split_first() else { return usage(SVCADM_USAGE, "") };
        let verb = match verb.as_str() {
            v @ ("enable" | "disable" | "restart") => v,
            other => {
                return usage(SVCADM_USAGE, &format!("svcadm: unknown subcommand \"{}\"", printable(other)));
            }
        };
        let mut rest = rest;
        // `-s` (wait until it is done): init answers when it is.
        if verb != "restart" && rest.first().is_some_and(|a| a == "-s") {
            rest = &rest[1..];
        }
        if rest.is_empty() || rest.iter().any(|a| a.starts_with('-')) {
            return usage(SVCADM_USAGE, "");
        }
        let mut text = String::new();
        let mut code = 0;
        for fmri in rest {
            let Some(name) = service_name(fmri) else {
                text.push_str(&format!("svcadm: Pattern '{}' doesn't match any instances\n", printable(fmri)));
                code = 1;
                continue;
            };
            let full = format!("svc:/alcove/{name}:default");
            match self.system.svcadm(verb, name) {
                Ok(Ok(())) => {}
                Ok(Err(SvcError::NoSuchService { .. })) => {
                    text.push_str(&format!("svcadm: Pattern '{}' doesn't match any instances\n", printable(fmri)));
                    code = 1;
                }
                Ok(Err(SvcError::NotPermitted { .. })) => {
                    text.push_str(&format!("svcadm: {}: Permission denied.\n", printable(&full)));
                    code = 1;
                }
                Ok(Err(SvcError::Refused { why, .. })) => {
                    text.push_str(&format!("svcadm: {}: cannot {verb}: {}.\n", printable(&full), printable(&why)));
                    code = 1;
                }
                Ok(Err(SvcError::Start { why, .. })) => {
                    text.push_str(&format!("svcadm: {}: could not be started: {}.\n", printable(&full), printable(&why)));
                    code = 1;
                }
                Err(e) => {
                    text.push_str(&format!("svcadm: init did not answer: {e}\n"));
                    code = 1;
                }
            }
        }
        Reply { text, code }
    }

    /// `zfs VERB ...`.
    pub(crate) fn zfs(&mut self, args: &[String]) -> Reply {
        let Some((verb, rest)) = args.split_first() else { return usage(ZFS_USAGE, "missing command") };
        match verb.as_str() {
            "list" => self.zfs_list(rest),
            "get" => self.zfs_get(rest),
            "set" => self.zfs_set(rest),
            "snapshot" | "snap" => self.zfs_snapshot(rest),
            "clone" => self.zfs_clone(rest),
            "rollback" => self.zfs_rollback(rest),
            "destroy" => self.zfs_destroy(rest),
            "rename" => self.zfs_rename(rest),
            // Only in a pipeline (`Shell::pipeline`): here the other end
            // would be the terminal, which ZFS refuses too.
            "send" => Reply::fail("Error: Stream can not be written to a terminal.\nYou must redirect standard output.\n".into(), 1),
            "receive" | "recv" => {
                Reply::fail("Error: Backup stream can not be read from a terminal.\nYou must redirect standard input.\n".into(), 1)
            }
            other => usage(ZFS_USAGE, &format!("unrecognized command '{}'", printable(other))),
        }
    }

    /// The datasets, each with its properties (one `pool.get` each).
    fn zfs_infos(&mut self) -> Result<Vec<VolumeInfo>, Reply> {
        let list = self.system.datasets().map_err(|e| ipc("zfs", e))?;
        let mut out = Vec::with_capacity(list.len());
        for d in list {
            match self.system.pool_get(&d.name) {
                Ok(Ok(v)) => out.push(v),
                // Destroyed between the list and the get.
                Ok(Err(PoolError::NotFound { .. })) => {}
                Ok(Err(e)) => return Err(Reply::fail(pool_error("cannot open", &d.name, &e), 1)),
                Err(e) => return Err(ipc("zfs", e)),
            }
        }
        Ok(out)
    }

    fn zfs_list(&mut self, args: &[String]) -> Reply {
        let (f, names) = match options(args, "Hpo:t:") {
            Ok(x) => x,
            Err(why) => return usage(ZFS_USAGE, &why),
        };
        let (mut volumes, mut snapshots) = (true, false);
        if let Some(t) = &f.types {
            (volumes, snapshots) = (false, false);
            for t in t.split(',') {
                match t {
                    "volume" | "vol" => volumes = true,
                    "snapshot" | "snap" => snapshots = true,
                    "all" => (volumes, snapshots) = (true, true),
                    // No filesystems here: the type is known, none match.
                    "filesystem" | "fs" => {}
                    other => {
                        return usage(ZFS_USAGE, &format!("invalid type '{}'", printable(other)));
                    }
                }
            }
        }
        let default: &[&str] = if f.types.as_deref() == Some("volume") {
            &["name", "used", "available", "referenced", "volsize", "mountpoint"]
        } else {
            &["name", "used", "available", "referenced", "mountpoint"]
        };
        let fields: Vec<String> = match &f.fields {
            Some(o) => o.split(',').map(|p| long_name(p).to_string()).collect(),
            None => default.iter().map(|s| s.to_string()).collect(),
        };
        if let Some(bad) = fields.iter().find(|p| *p != "name" && !NATIVE.contains(&p.as_str()) && !user_prop(p)) {
            return usage(ZFS_USAGE, &format!("invalid property '{}'", printable(bad)));
        }
        let infos = match self.zfs_infos() {
            Ok(i) => i,
            Err(r) => return r,
        };
        let mut text = String::new();
        let mut code = 0;
        for n in names {
            if !infos.iter().any(|v| v.name == *n) {
                text.push_str(&format!("cannot open '{}': dataset does not exist\n", printable(n)));
                code = 1;
            }
        }
        let mut rows = Vec::new();
        for v in &infos {
            let shown = if names.is_empty() {
                if v.snapshot { snapshots } else { volumes }
            } else {
                // A volume named lists itself (and, with -t snapshot, its snapshots).
                names.iter().any(|n| {
                    *n == v.name && (f.types.is_none() || (if v.snapshot { snapshots } else { volumes }))
                        || (snapshots && v.snapshot && v.name.split_once('@').is_some_and(|(vol, _)| vol == n))
                })
            };
            if !shown {
                continue;
            }
            let mut row = Vec::new();
            for p in &fields {
                if p == "name" {
                    row.push(v.name.clone());
                } else if user_prop(p) {
                    let value = match self.system.pool_user_props(&v.name) {
                        Ok(Ok(props)) => props.into_iter().find(|(k, _)| k == p).map(|(_, v)| v),
                        _ => None,
                    };
                    row.push(value.unwrap_or_else(|| "-".into()));
                } else {
                    row.push(native_value(v, p, f.parsable).0);
                }
            }
            rows.push(row);
        }
        if rows.is_empty() && code == 0 && names.is_empty() {
            return Reply::ok("no datasets available\n".into());
        }
        let header: Vec<String> = fields.iter().map(|p| column_title(p)).collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let right: Vec<bool> = fields.iter().map(|p| numeric(p)).collect();
        let mut out = table(&header, &rows, &right, f.scripted);
        out.push_str(&text);
        Reply { text: out, code }
    }

    fn zfs_get(&mut self, args: &[String]) -> Reply {
        let (f, rest) = match options(args, "Hp") {
            Ok(x) => x,
            Err(why) => return usage(ZFS_USAGE, &why),
        };
        let Some((props, names)) = rest.split_first() else {
            return usage(ZFS_USAGE, "missing property argument");
        };
        if names.is_empty() {
            return usage(ZFS_USAGE, "missing dataset argument");
        }
        let all = props == "all";
        let asked: Vec<String> = if all { Vec::new() } else { props.split(',').map(|p| long_name(p).to_string()).collect() };
        if let Some(bad) = asked.iter().find(|p| *p != "name" && !NATIVE.contains(&p.as_str()) && !user_prop(p)) {
            return usage(ZFS_USAGE, &format!("bad property list: invalid property '{}'", printable(bad)));
        }
        let mut rows = Vec::new();
        let mut errors = String::new();
        for n in names {
            let v = match self.system.pool_get(n) {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    errors.push_str(&pool_error("cannot open", &printable(n), &e));
                    continue;
                }
                Err(e) => return ipc("zfs", e),
            };
            let user = if all || asked.iter().any(|p| user_prop(p)) {
                match self.system.pool_user_props(n) {
                    Ok(Ok(u)) => u,
                    Ok(Err(e)) => {
                        errors.push_str(&pool_error("cannot open", &printable(n), &e));
                        continue;
                    }
                    Err(e) => return ipc("zfs", e),
                }
            } else {
                Vec::new()
            };
            let props: Vec<String> = if all {
                let mut p: Vec<String> = NATIVE
                    .iter()
                    .filter(|p| {
                        !(v.snapshot && matches!(**p, "available" | "reservation" | "refreservation" | "quota" | "compression" | "checksum"))
                            && !(**p == "origin" && v.origin.is_none())
                    })
                    .map(|p| p.to_string())
                    .collect();
                p.extend(user.iter().map(|(k, _)| k.clone()));
                p
            } else {
                asked.clone()
            };
            for p in props {
                let (value, source) = if p == "name" {
                    (v.name.clone(), "-")
                } else if user_prop(&p) {
                    match user.iter().find(|(k, _)| *k == p) {
                        Some((_, value)) => (printable(value), "local"),
                        None => ("-".into(), "-"),
                    }
                } else {
                    native_value(&v, &p, f.parsable)
                };
                rows.push(alloc::vec![v.name.clone(), p, value, source.to_string()]);
            }
        }
        let mut text = if rows.is_empty() {
            String::new()
        } else {
            table(&["NAME", "PROPERTY", "VALUE", "SOURCE"], &rows, &[false; 4], f.scripted)
        };
        let code = if errors.is_empty() { 0 } else { 1 };
        text.push_str(&errors);
        Reply { text, code }
    }

    fn zfs_set(&mut self, args: &[String]) -> Reply {
        let [assign, names @ ..] = args else { return usage(ZFS_USAGE, "missing arguments") };
        if names.is_empty() {
            return usage(ZFS_USAGE, "missing dataset name(s)");
        }
        let Some((prop, value)) = assign.split_once('=') else {
            return usage(ZFS_USAGE, "missing '=' for property=value argument");
        };
        let prop = long_name(prop);
        let mut text = String::new();
        for n in names {
            let cannot = format!("cannot set property for '{}'", printable(n));
            if !SETTABLE.contains(&prop) && !user_prop(prop) {
                let why = if prop == "volsize" {
                    String::from("volsize cannot be changed on this pool (no resize yet)")
                } else if NATIVE.contains(&prop) {
                    format!("'{prop}' is readonly")
                } else {
                    format!("invalid property '{}'", printable(prop))
                };
                text.push_str(&format!("{cannot}: {why}\n"));
                continue;
            }
            match self.system.pool_set(n, prop, value) {
                Ok(Ok(())) => {}
                Ok(Err(PoolError::NotFound { .. })) => {
                    text.push_str(&format!("cannot open '{}': dataset does not exist\n", printable(n)))
                }
                Ok(Err(PoolError::Invalid { why } | PoolError::TooLarge { what: why, .. })) => {
                    text.push_str(&format!("{cannot}: {}\n", printable(&why)))
                }
                Ok(Err(e)) => text.push_str(&pool_error(&cannot, "", &e).replacen(" '': ", ": ", 1)),
                Err(e) => return ipc("zfs", e),
            }
        }
        let code = if text.is_empty() { 0 } else { 1 };
        Reply { text, code }
    }

    fn zfs_snapshot(&mut self, args: &[String]) -> Reply {
        if args.is_empty() {
            return usage(ZFS_USAGE, "missing snapshot argument");
        }
        if let Some(opt) = args.iter().find(|a| a.starts_with('-')) {
            return usage(ZFS_USAGE, &format!("invalid option '{}'", printable(opt)));
        }
        let mut text = String::new();
        for n in args {
            let shown = printable(n);
            let Some((vol, snap)) = n.split_once('@') else {
                text.push_str(&format!("cannot create snapshot '{shown}': missing '@' delimiter in snapshot name\n"));
                continue;
            };
            if vol.is_empty() || snap.is_empty() || snap.contains('@') {
                text.push_str(&format!("cannot create snapshot '{shown}': empty component or misplaced '@' or '#' delimiter in name\n"));
                continue;
            }
            match self.system.pool_snapshot(n) {
                Ok(Ok(())) => {}
                Ok(Err(PoolError::NotFound { .. })) => {
                    text.push_str(&format!("cannot open '{}': dataset does not exist\n", printable(vol)))
                }
                Ok(Err(e)) => text.push_str(&pool_error("cannot create snapshot", &shown, &e)),
                Err(e) => return ipc("zfs", e),
            }
        }
        let code = if text.is_empty() { 0 } else { 1 };
        Reply { text, code }
    }

    fn zfs_clone(&mut self, args: &[String]) -> Reply {
        let [snapshot, target] = args else {
            return usage(ZFS_USAGE, if args.len() < 2 { "missing source or target dataset" } else { "too many arguments" });
        };
        if snapshot.starts_with('-') || target.starts_with('-') {
            return usage(ZFS_USAGE, "invalid option");
        }
        if !snapshot.contains('@') {
            return Reply::fail(
                format!("cannot open '{}': operation not applicable to datasets of this type\n", printable(snapshot)),
                1,
            );
        }
        match self.system.pool_clone(snapshot, target) {
            Ok(Ok(())) => Reply::ok(String::new()),
            Ok(Err(PoolError::NotFound { name })) => {
                // The snapshot (or, should storaged say so, the target's parent).
                let which = if name.contains(target.as_str()) { target } else { snapshot };
                Reply::fail(format!("cannot open '{}': dataset does not exist\n", printable(which)), 1)
            }
            Ok(Err(e)) => Reply::fail(pool_error("cannot create", &printable(target), &e), 1),
            Err(e) => ipc("zfs", e),
        }
    }

    /// The snapshots of `volume` (in creation order) and the volumes
    /// cloned from any of them.
    fn dependents(&mut self, volume: &str) -> Result<(Snapshots, Clones), Reply> {
        let infos = self.zfs_infos()?;
        Ok(family(&infos, volume))
    }

    fn zfs_rollback(&mut self, args: &[String]) -> Reply {
        let (f, rest) = match options(args, "r") {
            Ok(x) => x,
            Err(why) => return usage(ZFS_USAGE, &why),
        };
        let [snapshot] = rest else {
            return usage(ZFS_USAGE, if rest.is_empty() { "missing dataset argument" } else { "too many arguments" });
        };
        let shown = printable(snapshot);
        let Some((volume, _)) = snapshot.split_once('@') else {
            return Reply::fail(format!("cannot open '{shown}': operation not applicable to datasets of this type\n"), 1);
        };
        let (snaps, clones) = match self.dependents(volume) {
            Ok(d) => d,
            Err(r) => return r,
        };
        let Some(at) = snaps.iter().position(|(_, n)| n == snapshot) else {
            return Reply::fail(format!("cannot open '{shown}': dataset does not exist\n"), 1);
        };
        let later: Vec<&String> = snaps[at + 1..].iter().map(|(_, n)| n).collect();
        if !later.is_empty() {
            if !f.recursive {
                let mut t = format!(
                    "cannot rollback to '{shown}': more recent snapshots or bookmarks exist\nuse '-r' to force deletion of the following snapshots and bookmarks:\n"
                );
                for n in &later {
                    t.push_str(&format!("{}\n", printable(n)));
                }
                return Reply::fail(t, 1);
            }
            if let Some((_, clone)) = clones.iter().find(|(o, _)| later.contains(&o)) {
                return Reply::fail(
                    format!("cannot rollback to '{shown}': clones of previous snapshots exist\nuse '-R' to force deletion of the following clones and dependents:\n{}\n", printable(clone)),
                    1,
                );
            }
            for n in later.iter().rev() {
                match self.system.pool_destroy(n, false) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Reply::fail(pool_error("cannot destroy", &printable(n), &e), 1),
                    Err(e) => return ipc("zfs", e),
                }
            }
        }
        match self.system.pool_rollback(snapshot) {
            Ok(Ok(())) => Reply::ok(String::new()),
            Ok(Err(PoolError::Busy { .. })) => Reply::fail(format!("cannot rollback '{}': dataset is busy\n", printable(volume)), 1),
            Ok(Err(e)) => Reply::fail(pool_error("cannot rollback to", &shown, &e), 1),
            Err(e) => ipc("zfs", e),
        }
    }

    fn zfs_destroy(&mut self, args: &[String]) -> Reply {
        let (f, rest) = match options(args, "rRnvf") {
            Ok(x) => x,
            Err(why) => return usage(ZFS_USAGE, &why),
        };
        let [name] = rest else {
            return usage(ZFS_USAGE, if rest.is_empty() { "missing dataset argument" } else { "too many arguments" });
        };
        let shown = printable(name);
        let infos = match self.zfs_infos() {
            Ok(i) => i,
            Err(r) => return r,
        };
        let Some(target) = infos.iter().find(|v| v.name == *name) else {
            return Reply::fail(format!("cannot open '{shown}': dataset does not exist\n"), 1);
        };
        let snapshot = target.snapshot;
        // -R takes in -r, as ZFS's.
        let recursive = f.recursive || f.dependents;
        let (snaps, clones) = family(&infos, name.split_once('@').map_or(name.as_str(), |(v, _)| v));
        if !f.dependents {
            // What depends on it, as ZFS lists it before refusing.
            let clones_of: Vec<&String> =
                clones.iter().filter(|(o, _)| if snapshot { o == name } else { true }).map(|(_, c)| c).collect();
            if !clones_of.is_empty() {
                let what = if snapshot { "snapshot has dependent clones" } else { "volume has dependent clones" };
                let mut t = format!("cannot destroy '{shown}': {what}\nuse '-R' to destroy the following datasets:\n");
                for c in clones_of {
                    t.push_str(&format!("{}\n", printable(c)));
                }
                return Reply::fail(t, 1);
            }
            if !snapshot && !snaps.is_empty() && !recursive {
                let mut t = format!("cannot destroy '{shown}': volume has children\nuse '-r' to destroy the following datasets:\n");
                for (_, s) in &snaps {
                    t.push_str(&format!("{}\n", printable(s)));
                }
                return Reply::fail(t, 1);
            }
        }
        // Every dataset that goes, dependents first (ZFS's order), and the
        // `pool.destroy` calls that destroy them.
        let mut plan = Plan::default();
        if snapshot {
            plan.snapshot(&infos, name, 0);
        } else {
            plan.volume(&infos, name, 0);
        }
        let mut text = String::new();
        if f.verbose {
            let will = if f.dry_run { "would" } else { "will" };
            for n in &plan.names {
                text.push_str(&format!("{will} destroy {}\n", printable(n)));
            }
        }
        if f.dry_run {
            return Reply::ok(text);
        }
        for (n, r) in &plan.calls {
            match self.system.pool_destroy(n, *r) {
                Ok(Ok(())) => {}
                Ok(Err(PoolError::NotFound { .. })) => {
                    text.push_str(&format!("cannot open '{}': dataset does not exist\n", printable(n)));
                    return Reply::fail(text, 1);
                }
                Ok(Err(e)) => {
                    text.push_str(&pool_error("cannot destroy", &printable(n), &e));
                    return Reply::fail(text, 1);
                }
                Err(e) => {
                    text.push_str(&format!("zfs: {e}\n"));
                    return Reply::fail(text, 1);
                }
            }
        }
        Reply::ok(text)
    }

    /// `zfs rename [-f] NAME NEWNAME`: a volume within its pool (its
    /// snapshots follow), a snapshot within its volume. storaged refuses a
    /// volume a grant or an open ring holds (a running VM's disk), as
    /// illumos refuses to rename a zvol that is open: `dataset is busy`.
    fn zfs_rename(&mut self, args: &[String]) -> Reply {
        let (_, rest) = match options(args, "f") {
            Ok(x) => x,
            Err(why) => return usage(ZFS_USAGE, &why),
        };
        let [from, to] = rest else {
            return usage(
                ZFS_USAGE,
                if rest.len() < 2 { "missing source or target dataset name" } else { "too many arguments" },
            );
        };
        let (from_shown, to_shown) = (printable(from), printable(to));
        let cannot = |why: &str| Reply::fail(format!("cannot rename to '{to_shown}': {why}\n"), 1);
        let volume = |n: &str| n.split_once('@').map_or(n, |(v, _)| v).to_string();
        let pool = |n: &str| n.split(['/', '@']).next().unwrap_or("").to_string();
        if from.contains('@') {
            if !to.contains('@') || volume(to) != volume(from) {
                return cannot("snapshots must be part of same dataset");
            }
        } else if to.contains('@') {
            return cannot("snapshot delimiter '@' is not expected here");
        } else if pool(from) != pool(to) {
            return cannot("datasets must be within same pool");
        }
        match self.system.pool_rename(from, to) {
            Ok(Ok(())) => Reply::ok(String::new()),
            Ok(Err(PoolError::NotFound { .. })) => {
                Reply::fail(format!("cannot open '{from_shown}': dataset does not exist\n"), 1)
            }
            Ok(Err(e)) => Reply::fail(pool_error("cannot rename to", &to_shown, &e), 1),
            Err(e) => ipc("zfs", e),
        }
    }

    /// `zfs send [-i SNAP] SNAPSHOT | zfs receive [-nvF] NAME`: storaged's
    /// send stream read a chunk at a time and handed to a receive stream
    /// of storaged's; the receive makes `NAME@SNAP` (a full stream: a new
    /// volume; an incremental one: onto NAME, whose latest snapshot must be
    /// SNAP's base, unchanged since). Anything that goes wrong closes both
    /// streams, and storaged destroys what the receive had made.
    pub(crate) fn zfs_send_receive(&mut self, send: &[String], recv: &[String]) -> Reply {
        let (sf, sargs) = match options(send, "i") {
            Ok(x) => x,
            Err(why) => return usage(ZFS_USAGE, &why),
        };
        let (rf, rargs) = match options(recv, "nvF") {
            Ok(x) => x,
            Err(why) => return usage(ZFS_USAGE, &why),
        };
        let [snapshot] = sargs else {
            return usage(ZFS_USAGE, if sargs.is_empty() { "missing snapshot argument" } else { "too many arguments" });
        };
        let [target] = rargs else {
            return usage(ZFS_USAGE, if rargs.is_empty() { "missing snapshot argument" } else { "too many arguments" });
        };
        let shown = printable(snapshot);
        let Some((volume, snap)) = snapshot.split_once('@') else {
            return Reply::fail(format!("cannot send '{shown}': operation not applicable to datasets of this type\n"), 1);
        };
        // `-i @a` is `-i VOLUME@a`, as ZFS's.
        let from = sf.from.map(|b| if b.starts_with('@') { format!("{volume}{b}") } else { b });
        if let Some(b) = &from
            && b.split_once('@').map(|(v, _)| v) != Some(volume)
        {
            return Reply::fail(format!("cannot send '{shown}': incremental source must be in same filesystem\n"), 1);
        }
        // A target VOLUME@NAME names the snapshot received; VOLUME alone
        // keeps the sent one's name.
        let (into, named) = match target.split_once('@') {
            Some((v, n)) => (v.to_string(), format!("{v}@{n}")),
            None => (target.clone(), format!("{target}@{snap}")),
        };
        let kind = if from.is_some() { "incremental" } else { "full" };
        let mut text = String::new();
        if rf.verbose || rf.dry_run {
            let would = if rf.dry_run { "would receive" } else { "receiving" };
            text.push_str(&format!("{would} {kind} stream of {shown} into {}\n", printable(&named)));
        }
        if rf.dry_run {
            return Reply::ok(text);
        }
        let fail = |mut text: String, more: String| {
            text.push_str(&more);
            Reply::fail(text, 1)
        };
        if rf.rollback {
            // `-F`: what was written to the target since its latest
            // snapshot goes, so an incremental stream applies. Over a
            // volume a full stream would replace: refused (ZFS would
            // destroy it; here the operator does that, knowingly).
            let infos = match self.zfs_infos() {
                Ok(i) => i,
                Err(r) => return fail(text, r.text),
            };
            if infos.iter().any(|v| v.name == into) {
                if from.is_none() {
                    let why = format!(
                        "cannot receive new filesystem stream: destination '{}' exists\n-F over an existing volume is not supported here: destroy it first\n",
                        printable(&into)
                    );
                    return fail(text, why);
                }
                if let Some((_, latest)) = family(&infos, &into).0.last() {
                    match self.system.pool_rollback(latest) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return fail(text, receive_error(kind, &into, &e)),
                        Err(e) => return fail(text, format!("zfs: {e}\n")),
                    }
                }
            }
        }
        let tx = match self.system.pool_send(snapshot, from.as_deref()) {
            Ok(Ok(s)) => s,
            Ok(Err(PoolError::NotFound { name })) => {
                let which = if from.as_deref().is_some_and(|b| name.contains(b)) { from.clone().unwrap_or_default() } else { snapshot.clone() };
                return fail(text, format!("cannot open '{}': dataset does not exist\n", printable(&which)));
            }
            Ok(Err(e)) => return fail(text, pool_error("cannot send", &shown, &e)),
            Err(e) => return fail(text, format!("zfs: {e}\n")),
        };
        let rx = match self.system.pool_receive(&into) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = self.system.pool_close_stream(tx);
                return fail(text, receive_error(kind, &into, &e));
            }
            Err(e) => {
                let _ = self.system.pool_close_stream(tx);
                return fail(text, format!("zfs: {e}\n"));
            }
        };
        let (now, _) = self.system.clock();
        let mut offset = 0u64;
        let failed = loop {
            let chunk = match self.system.pool_send_chunk(tx, offset) {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => break Some(format!("warning: {}cannot receive: failed to read from stream\n", pool_error("cannot send", &shown, &e))),
                Err(e) => break Some(format!("zfs: {e}\n")),
            };
            if chunk.is_empty() {
                break None;
            }
            offset += chunk.len() as u64;
            match self.system.pool_receive_chunk(rx, &chunk) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break Some(receive_error(kind, &into, &e)),
                Err(e) => break Some(format!("zfs: {e}\n")),
            }
        };
        let _ = self.system.pool_close_stream(tx);
        if let Some(why) = failed {
            // Gone already if the receive refused a piece.
            let _ = self.system.pool_close_stream(rx);
            return fail(text, why);
        }
        let made = match self.system.pool_receive_end(rx) {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return fail(text, receive_error(kind, &into, &e)),
            Err(e) => return fail(text, format!("zfs: {e}\n")),
        };
        if made != named {
            match self.system.pool_rename(&made, &named) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let more = format!("received {}, but {}", printable(&made), pool_error("cannot rename to", &printable(&named), &e));
                    return fail(text, more);
                }
                Err(e) => return fail(text, format!("zfs: {e}\n")),
            }
        }
        if rf.verbose {
            let (end, _) = self.system.clock();
            let secs = end.saturating_sub(now).max(1);
            text.push_str(&format!("received {} stream in {secs} seconds ({}/sec)\n", human(offset), human(offset / secs)));
        }
        Reply::ok(text)
    }
}

/// ZFS's wording of a receive refused by storaged.
fn receive_error(kind: &str, into: &str, e: &PoolError) -> String {
    let into = printable(into);
    let what = if kind == "full" { "new filesystem" } else { "incremental" };
    match e {
        PoolError::Exists { .. } => {
            format!("cannot receive new filesystem stream: destination '{into}' exists\nmust specify -F to overwrite it\n")
        }
        PoolError::NotFound { .. } => format!("cannot receive incremental stream: destination '{into}' does not exist\n"),
        PoolError::Corrupt { why } => format!("cannot receive: invalid stream ({})\n", printable(why)),
        PoolError::Invalid { why } if why.contains("not the stream's base") => format!(
            "cannot receive incremental stream: most recent snapshot of {into} does not\nmatch incremental source\n"
        ),
        PoolError::Busy { why } if why.contains("changed") => format!(
            "cannot receive incremental stream: destination {into} has been modified\nsince most recent snapshot\n"
        ),
        PoolError::Invalid { why } => format!("cannot receive {what} stream: {}\n", printable(why)),
        other => pool_error(&format!("cannot receive {what} stream:"), "", other).replacen(" '': ", " ", 1),
    }
}

/// What `zfs destroy` destroys, dependents first.
#[derive(Default)]
struct Plan {
    /// Every dataset that goes, in ZFS's order.
    names: Vec<String>,
    /// The `pool.destroy` calls (name, with its snapshots).
    calls: Vec<(String, bool)>,
}

/// Clones of clones deeper than this are not followed (a pool's origins
/// cannot loop; this bounds a mistaken listing).
const DEPTH_MAX: usize = 64;

impl Plan {
    /// Volume `vol`: the clones of its snapshots (and theirs), its
    /// snapshots newest first, then it.
    fn volume(&mut self, infos: &[VolumeInfo], vol: &str, depth: usize) {
        if depth > DEPTH_MAX || self.names.iter().any(|n| n == vol) {
            return;
        }
        let (snaps, _) = family(infos, vol);
        for (_, s) in snaps.iter().rev() {
            self.clones(infos, s, depth);
        }
        for (_, s) in snaps.iter().rev() {
            self.names.push(s.clone());
        }
        self.names.push(vol.to_string());
        self.calls.push((vol.to_string(), !snaps.is_empty()));
    }

    fn snapshot(&mut self, infos: &[VolumeInfo], snap: &str, depth: usize) {
        self.clones(infos, snap, depth);
        self.names.push(snap.to_string());
        self.calls.push((snap.to_string(), false));
    }

    fn clones(&mut self, infos: &[VolumeInfo], snap: &str, depth: usize) {
        for c in infos.iter().filter(|v| !v.snapshot && v.origin.as_deref() == Some(snap)) {
            self.volume(infos, &c.name, depth + 1);
        }
    }
}

/// The snapshots of `volume` (in creation order) and the volumes cloned
/// from any of them.
fn family(infos: &[VolumeInfo], volume: &str) -> (Snapshots, Clones) {
    let prefix = format!("{volume}@");
    let mut snaps: Vec<(u64, String)> =
        infos.iter().filter(|v| v.name.starts_with(&prefix)).map(|v| (v.creation_txg, v.name.clone())).collect();
    snaps.sort();
    let clones = infos
        .iter()
        .filter_map(|v| v.origin.as_ref().filter(|o| o.starts_with(&prefix)).map(|o| (o.clone(), v.name.clone())))
        .collect();
    (snaps, clones)
}

/// A volume's snapshots: (creation txg, name).
type Snapshots = Vec<(u64, String)>;
/// Clones of a volume's snapshots: (origin, clone).
type Clones = Vec<(String, String)>;

fn column_title(p: &str) -> String {
    match p {
        "available" => "AVAIL".into(),
        "referenced" => "REFER".into(),
        "compressratio" => "RATIO".into(),
        "reservation" => "RESERV".into(),
        "refreservation" => "REFRESERV".into(),
        "compression" => "COMPRESS".into(),
        "volblocksize" => "VOLBLOCK".into(),
        "createtxg" => "CREATETXG".into(),
        p => p.to_uppercase(),
    }
}

fn numeric(p: &str) -> bool {
    matches!(
        p,
        "used" | "available" | "referenced" | "volsize" | "volblocksize" | "quota" | "reservation" | "refreservation" | "compressratio"
    )
}
