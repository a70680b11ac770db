//! The operator shell on the system console, as SmartOS's global-zone
//! prompt: `vmadm` and `imgadm` (forwarded to zone-server's `vmadm`
//! interface, so the shell, the HTTP API and the host CLI share one
//! implementation), `sysinfo`, `svcs`, `svcadm` (init's `svc`), `zpool`
//! and `zfs` (storaged's `pool`), `dladm` (netd's `vnic`), `help`,
//! `poweroff`.
//!
//! The logic is here (host-testable): [`editor`] turns typed bytes into
//! lines (editing, history), [`parse`] splits a line into words, [`Shell`]
//! runs it against a [`System`], which the process (`src/bin/shell.rs`)
//! implements over IPC and the tests mock.
//!
//! `vmadm console UUID` attaches the terminal to a running VM's serial
//! console (COM1): zone-server checks the VM (`vmadm.console`) and names
//! its VMM; what the operator types then goes to that VMM's queue at the
//! console server (`console.feed`), which the VMM gives to its guest's
//! UART; what the guest prints reaches the terminal as it always does.
//! `^]` (0x1d, as vmadm(8) documents for bhyve and kvm VMs) detaches.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod admin;
pub mod dladm;
pub mod editor;
pub mod parse;
pub mod progress;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use editor::{Editor, Input, MAX_LINE};
use libipc::interfaces::{
    DatasetEntry, MachineInfo, PoolError, PoolStatus, SvcError, SvcInfo, SvcState, SwitchInfo, VmadmConsole, VmadmImport,
    VmadmOutput, VnicError, VnicInfo, VolumeInfo,
};

/// A server's answer: `Err(String)` when the call itself failed (no
/// endpoint, the server gone), else what the server said.
pub type Answer<T, E> = Result<Result<T, E>, String>;

/// What the shell needs of the machine.
pub trait System {
    /// Runs `program ARGS...` (`program` is `vmadm` or `imgadm`) at
    /// zone-server with `stdin` as the payload.
    fn vmadm(&mut self, program: &str, args: Vec<String>, stdin: String) -> Result<VmadmOutput, String>;
    /// zone-server's `vmadm.import_begin`: starts `imgadm import ARGS`
    /// (`args` begins with `import`), to be stepped.
    fn import_begin(&mut self, args: Vec<String>) -> Result<VmadmImport, String>;
    /// zone-server's `vmadm.import_step`: the import's next part.
    fn import_step(&mut self) -> Result<VmadmImport, String>;
    /// init's servers and their states.
    fn services(&mut self) -> Result<Vec<SvcInfo>, String>;
    /// What init can tell of the machine.
    fn machine(&mut self) -> Result<MachineInfo, String>;
    /// storaged's pool (`zpool status`).
    fn pool_status(&mut self) -> Result<PoolStatus, String>;
    /// Starts a scrub of the pool in the background (`zpool scrub`), or
    /// cancels the one under way (`stop`: `zpool scrub -s`).
    fn pool_scrub(&mut self, stop: bool) -> Result<(), String>;
    /// The pool's volumes and snapshots, by name (`zfs list`).
    fn datasets(&mut self) -> Result<Vec<DatasetEntry>, String>;
    /// A dataset's native properties (`pool.get`).
    fn pool_get(&mut self, name: &str) -> Answer<VolumeInfo, PoolError>;
    /// Its user properties (`module:key`) and their values, by key.
    fn pool_user_props(&mut self, name: &str) -> Answer<Vec<(String, String)>, PoolError>;
    /// `pool.set` of a native or user property.
    fn pool_set(&mut self, name: &str, key: &str, value: &str) -> Answer<(), PoolError>;
    /// `pool.snapshot` of `VOLUME@SNAP`.
    fn pool_snapshot(&mut self, name: &str) -> Answer<(), PoolError>;
    /// `pool.clone_snapshot`: volume `name` from `snapshot`.
    fn pool_clone(&mut self, snapshot: &str, name: &str) -> Answer<(), PoolError>;
    /// `pool.rollback` to `snapshot`.
    fn pool_rollback(&mut self, snapshot: &str) -> Answer<(), PoolError>;
    /// `pool.destroy` (a volume with its snapshots if `recursive`).
    fn pool_destroy(&mut self, name: &str, recursive: bool) -> Answer<(), PoolError>;
    /// `pool.rename` of a volume (its snapshots follow) or a snapshot.
    fn pool_rename(&mut self, from: &str, to: &str) -> Answer<(), PoolError>;
    /// `pool.send`: opens the stream of `snapshot` (incremental from
    /// `from`); its number.
    fn pool_send(&mut self, snapshot: &str, from: Option<&str>) -> Answer<u32, PoolError>;
    /// `pool.send_chunk`: the stream's bytes from `offset` (empty at its end).
    fn pool_send_chunk(&mut self, stream: u32, offset: u64) -> Answer<Vec<u8>, PoolError>;
    /// `pool.receive`: opens a receive into volume `target`; its number.
    fn pool_receive(&mut self, target: &str) -> Answer<u32, PoolError>;
    /// `pool.receive_chunk`: the stream's bytes taken so far.
    fn pool_receive_chunk(&mut self, stream: u32, bytes: &[u8]) -> Answer<u64, PoolError>;
    /// `pool.receive_end`: the snapshot the stream made.
    fn pool_receive_end(&mut self, stream: u32) -> Answer<String, PoolError>;
    /// `pool.close_stream`: drops a stream (a receive's volume goes).
    fn pool_close_stream(&mut self, stream: u32) -> Answer<(), PoolError>;
    /// init's `svc.restart`, `svc.disable` or `svc.enable` (`verb`) of
    /// server `name`.
    fn svcadm(&mut self, verb: &str, name: &str) -> Answer<(), SvcError>;
    /// netd's switches (`vnic.switches`).
    fn vnic_switches(&mut self) -> Answer<Vec<SwitchInfo>, VnicError>;
    /// Every VNIC of netd's (`vnic.show`, all pages).
    fn vnic_show(&mut self) -> Answer<Vec<VnicInfo>, VnicError>;
    /// The operators' VNICs' names by number (`vnic.vnic_names`, all pages).
    fn vnic_names(&mut self) -> Answer<Vec<(u32, String)>, VnicError>;
    /// Every VNIC's counters (`vnic.stats`, all pages).
    fn vnic_stats(&mut self) -> Answer<Vec<libipc::interfaces::VnicStats>, VnicError>;
    /// A change of netd's links (`vnic.create_etherstub`, …); a VNIC made
    /// answers its number, the rest 0.
    fn dladm(&mut self, op: dladm::LinkOp) -> Answer<u32, VnicError>;
    /// Seconds since the Unix epoch now, and since boot.
    fn clock(&mut self) -> (u64, u64);
    /// Ends the machine; returns only if it could not, saying why.
    fn poweroff(&mut self) -> String;
    /// zone-server's `vmadm.console`: whether the VM may be attached to,
    /// and its VMM's console badge.
    fn console_attach(&mut self, uuid: &str) -> Result<VmadmConsole, String>;
    /// Hands typed bytes to the VMM whose console badge is `target`
    /// (`console.feed`); returns how many it took.
    fn console_feed(&mut self, target: u64, bytes: &[u8]) -> Result<usize, String>;
}

/// The byte that detaches from a VM's console: `^]`, as vmadm(8) says
/// for bhyve and kvm VMs ("CTRL-] will terminate the session").
pub const ESCAPE: u8 = 0x1d;

/// A VM's serial console the terminal is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub uuid: String,
    /// Its VMM's console badge.
    pub target: u64,
    /// Typed bytes the console had no room for yet (at most one read's).
    pub pending: Vec<u8>,
}

/// The boot configuration's part in what the shell shows.
#[derive(Clone, Debug)]
pub struct Config {
    /// `Hostname` in `sysinfo` and the prompt.
    pub hostname: String,
    /// `UUID` in `sysinfo` (the machine's).
    pub uuid: String,
    /// `Live Image` in `sysinfo`.
    pub live_image: String,
}

impl Config {
    /// From the manifest arguments `hostname=` and `uuid=` (defaults
    /// `alcove` and zone-server's `server_uuid`, all zeros).
    pub fn from_args(args: &[String]) -> Self {
        let arg = |k: &str| args.iter().find_map(|a| a.strip_prefix(k)).map(String::from);
        Self {
            hostname: arg("hostname=").unwrap_or_else(|| "alcove".into()),
            uuid: arg("uuid=").unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into()),
            live_image: format!("alcove-{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What a command printed and its exit status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub code: i32,
}

impl Reply {
    pub(crate) fn ok(text: String) -> Self {
        Self { text, code: 0 }
    }
    pub(crate) fn fail(text: String, code: i32) -> Self {
        Self { text, code }
    }
}

pub const HELP: &str = "\
Alcove operator shell. Commands:
  vmadm ARGS...           SmartOS's vmadm (create, validate, list, get, start, stop,
                          reboot, update, delete, ...); a payload with <<< 'JSON'
                          e.g. vmadm create <<< '{\"brand\":\"bhyve\",\"ram\":256}'
  imgadm ARGS...          SmartOS's imgadm, at zone-server
  sysinfo                 the machine, as JSON
  svcs                    the servers init runs, their states and start times
  svcadm restart|disable|enable SERVICE
                          restart a server, stop it and keep it stopped, start it
                          again (the servers whose manifest lifecycle-stop= names
                          the shell)
  dladm show-link | show-vnic | show-etherstub [LINK]
                          netd's links: machine NICs, etherstubs, VNICs
  dladm create-etherstub | delete-etherstub | delete-vnic NAME
  dladm create-vnic -l LINK [-m MAC] [-v VID] NAME
                          make and delete etherstubs and VNICs (until netd restarts)
  dlstat [show-link] [LINK]
                          each VNIC's frames and bytes in and out, and the frames
                          netd dropped (link protection, caps, full rings) by reason
  zpool status | list     storaged's pool, its disks and their errors
  zpool scrub [-s] POOL   verify (and repair) every block in the background; -s stops it
  zfs list [-H] [-p] [-t volume|snapshot|all] [-o FIELD,...] [NAME...]
                          the pool's volumes and snapshots (NAME USED AVAIL REFER
                          MOUNTPOINT; -t volume adds VOLSIZE)
  zfs get [-H] [-p] PROP[,PROP...]|all NAME...
  zfs set PROP=VALUE NAME compression, checksum, quota, reservation, refreservation, module:key
  zfs snapshot VOLUME@SNAP...
  zfs clone SNAPSHOT VOLUME
  zfs rollback [-r] SNAPSHOT
  zfs destroy [-nvrR] NAME
                          -r: a volume with its snapshots; -R: and every clone of
                          them (and theirs); -n -v: list what would go
  zfs rename NAME NEWNAME a volume (its snapshots follow) or VOLUME@SNAP VOLUME@NEW
  zfs send [-i SNAP] SNAPSHOT | zfs receive [-nvF] NAME
                          copy a snapshot (or what changed since SNAP) into NAME;
                          -F: roll NAME back to its latest snapshot first
  vmadm console UUID      attach to a running VM's serial console; ^] detaches
  help                    this text
  poweroff                end the machine
Editing: Backspace, ^U (line), ^W (word), ^C (drop the line), Up/Down (history).
Quoting: 'single', \"double\", \\x; # starts a comment.
";

/// The shell: the line being typed and the system it drives.
pub struct Shell<S> {
    pub system: S,
    pub config: Config,
    pub editor: Editor,
    /// The last command's exit status.
    pub status: i32,
    /// The VM console typed input goes to (`vmadm console`), if any.
    pub attached: Option<Attached>,
}

impl<S: System> Shell<S> {
    pub fn new(system: S, config: Config) -> Self {
        Self { system, config, editor: Editor::new(), status: 0, attached: None }
    }

    /// `[root@HOSTNAME ~]# `, as SmartOS's.
    pub fn prompt(&self) -> String {
        format!("[root@{} ~]# ", self.config.hostname)
    }

    /// Takes typed bytes; returns what the terminal shows: the echo, the
    /// output of every line they completed and a new prompt after each
    /// (lines end in LF: the kernel's console sends CR LF).
    pub fn input(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut all = Vec::new();
        self.input_to(bytes, &mut |b| all.extend_from_slice(b));
        all
    }

    /// As [`Shell::input`], but hands what the terminal shows to `show` as
    /// it comes: the echo of a completed line goes out before the command
    /// runs, so a slow command (a `vmadm delete` halting a VM) never holds
    /// back the echo of what was typed.
    pub fn input_to(&mut self, bytes: &[u8], show: &mut dyn FnMut(&[u8])) {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if self.attached.is_some() {
                // Up to the escape the bytes are the guest's; the shell
                // neither echoes nor edits them (the guest echoes).
                let rest = &bytes[at..];
                let end = rest.iter().position(|&b| b == ESCAPE).unwrap_or(rest.len());
                if let Some(a) = self.attached.as_mut() {
                    a.pending.extend_from_slice(&rest[..end]);
                }
                at += end;
                self.pump_to(&mut |b| out.extend_from_slice(b));
                if at < bytes.len() && self.attached.is_some() {
                    at += 1; // the escape itself
                    self.detach(None, &mut |b| out.extend_from_slice(b));
                }
                continue;
            }
            let b = bytes[at];
            at += 1;
            let Some(input) = self.editor.feed(b, &mut out) else { continue };
            if !out.is_empty() {
                show(&out);
                out.clear();
            }
            let reply = match input {
                Input::Line(line) => self.run_showing(&line, show),
                Input::TooLong(n) => {
                    Reply::fail(format!("shell: the line is {n} bytes, longer than {MAX_LINE}: ignored\n"), 2)
                }
                Input::Cancelled => Reply::fail(String::new(), 130),
            };
            self.status = reply.code;
            out.extend_from_slice(reply.text.as_bytes());
            if self.attached.is_none() {
                out.extend_from_slice(self.prompt().as_bytes());
            }
        }
        if !out.is_empty() {
            show(&out);
        }
    }

    /// Whether typed bytes wait for room at the VM's console: the caller
    /// reads no more input until [`Shell::pump_to`] has passed them on (so
    /// a long paste waits in the console server and the UART, not here).
    pub fn holding(&self) -> bool {
        self.attached.as_ref().is_some_and(|a| !a.pending.is_empty())
    }

    /// Offers the bytes held for the attached VM again; a console that
    /// refuses them (not ours to feed) detaches, saying why.
    pub fn pump_to(&mut self, show: &mut dyn FnMut(&[u8])) {
        let Some(a) = self.attached.as_mut() else { return };
        if a.pending.is_empty() {
            return;
        }
        match self.system.console_feed(a.target, &a.pending) {
            Ok(n) => {
                a.pending.drain(..n.min(a.pending.len()));
            }
            Err(e) => self.detach(Some(format!("the console refused the input: {e}")), show),
        }
    }

    /// Detaches from the VM's console if it is no longer the one running
    /// (stopped, deleted, restarted with another VMM): asked of zone-server
    /// from time to time while attached.
    pub fn check_attached(&mut self, show: &mut dyn FnMut(&[u8])) {
        let Some(a) = self.attached.as_ref() else { return };
        let uuid = a.uuid.clone();
        let target = a.target;
        match self.system.console_attach(&uuid) {
            Ok(c) if c.code == 0 && c.target == target => {}
            Ok(c) if c.code == 0 => self.detach(Some("its VMM was restarted".into()), show),
            Ok(c) => {
                let why = c.stderr.trim_end().rsplit(": ").next().unwrap_or("").to_string();
                self.detach(Some(why), show)
            }
            // zone-server busy or restarting: stay attached.
            Err(_) => {}
        }
    }

    /// Ends the attachment: the closing line (with why, when it was not
    /// the escape) and the prompt.
    fn detach(&mut self, why: Option<String>, show: &mut dyn FnMut(&[u8])) {
        let Some(a) = self.attached.take() else { return };
        let mut t = format!("\n[Connection to console of VM {} closed", a.uuid);
        if let Some(why) = why {
            t.push_str(&format!(": {why}"));
        }
        t.push_str("]\n");
        t.push_str(&self.prompt());
        show(t.as_bytes());
    }

    /// `vmadm console UUID`: attaches when zone-server says the VM runs.
    fn console(&mut self, uuid: &str) -> Reply {
        let c = match self.system.console_attach(uuid) {
            Ok(c) => c,
            Err(e) => return Reply::fail(format!("vmadm: zone-server did not answer: {e}\n"), 1),
        };
        if c.code != 0 || c.target == 0 {
            let mut text = c.stderr;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            return Reply::fail(text, if c.code == 0 { 1 } else { c.code });
        }
        let name = if c.alias.is_empty() { String::new() } else { format!(" ({})", printable(&c.alias)) };
        self.attached = Some(Attached { uuid: uuid.into(), target: c.target, pending: Vec::new() });
        Reply::ok(format!("[Connected to console of VM {uuid}{name}. Escape sequence is ^]]\n"))
    }

    /// Runs one command line, showing what a command draws as it goes
    /// (`imgadm import`'s progress) through `show`; the rest is the reply.
    pub fn run_showing(&mut self, line: &str, show: &mut dyn FnMut(&[u8])) -> Reply {
        if let Ok(cmd) = parse::parse(line)
            && cmd.piped.is_empty()
            && cmd.stdin.is_none()
            && cmd.words.first().is_some_and(|w| w == "imgadm")
            && cmd.words.get(1).is_some_and(|w| w == "import")
        {
            return self.imgadm_import(&cmd.words[1..], show);
        }
        self.run(line)
    }

    /// `imgadm import ...`: zone-server's import stepped here, its
    /// progress line drawn over itself as the download goes (as imgadm
    /// draws it on a terminal), then the lines that end it.
    fn imgadm_import(&mut self, args: &[String], show: &mut dyn FnMut(&[u8])) -> Reply {
        let gone = |e: String| format!("imgadm: zone-server did not answer: {e}\n");
        let mut p = match self.system.import_begin(args.to_vec()) {
            Ok(p) => p,
            Err(e) => return Reply::fail(gone(e), 1),
        };
        show(p.stdout.as_bytes());
        let mut drawer = progress::ProgressDrawer::new(true);
        while p.running {
            p = match self.system.import_step() {
                Ok(p) => p,
                Err(e) => {
                    let mut text = drawer.finish();
                    text.push_str(&gone(e));
                    return Reply::fail(text, 1);
                }
            };
            if p.running {
                show(drawer.draw(&p.line).as_bytes());
            }
        }
        // The end: its last line (100% when it completed) drawn too.
        let mut text = drawer.draw(&p.line);
        text.push_str(&drawer.finish());
        text.push_str(&p.stdout);
        text.push_str(&p.stderr);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        Reply { text, code: p.code }
    }

    /// Runs one command line.
    pub fn run(&mut self, line: &str) -> Reply {
        let cmd = match parse::parse(line) {
            Ok(c) => c,
            Err(e) => return Reply::fail(format!("shell: syntax error: {e}\n"), 2),
        };
        if !cmd.piped.is_empty() {
            return self.pipeline(&cmd);
        }
        let Some((name, args)) = cmd.words.split_first() else { return Reply::default() };
        match name.as_str() {
            "help" => Reply::ok(HELP.into()),
            "vmadm" if args.len() == 2 && args[0] == "console" => self.console(&args[1]),
            "vmadm" | "imgadm" => {
                match self.system.vmadm(name, args.to_vec(), cmd.stdin.unwrap_or_default()) {
                    Ok(o) => {
                        let mut text = o.stdout;
                        text.push_str(&o.stderr);
                        if !text.is_empty() && !text.ends_with('\n') {
                            text.push('\n');
                        }
                        Reply { text, code: o.code }
                    }
                    Err(e) => Reply::fail(format!("{name}: zone-server did not answer: {e}\n"), 1),
                }
            }
            "sysinfo" if args.is_empty() => self.sysinfo(),
            "svcs" if args.is_empty() => self.svcs(),
            "poweroff" if args.is_empty() => Reply::fail(format!("poweroff: {}\n", self.system.poweroff()), 1),
            "sysinfo" | "svcs" | "poweroff" => Reply::fail(format!("{name}: takes no arguments\n"), 2),
            "zpool" => match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["status"] => self.zpool(true),
                ["list"] => self.zpool(false),
                ["scrub", pool] => self.zpool_scrub(pool, false),
                ["scrub", "-s", pool] => self.zpool_scrub(pool, true),
                _ => Reply::fail("zpool: usage: zpool status | zpool list | zpool scrub [-s] POOL\n".into(), 2),
            },
            "zfs" => self.zfs(args),
            "svcadm" => self.svcadm(args),
            "dladm" => self.dladm(args),
            "dlstat" => self.dlstat(args),
            _ => Reply::fail(format!("shell: {}: command not found (try help)\n", printable(name)), 127),
        }
    }

    /// A pipeline: the one the shell has is `zfs send ... | zfs receive
    /// ...` (the stream goes from storaged through the shell back to
    /// storaged, a chunk at a time); anything else is refused.
    fn pipeline(&mut self, cmd: &parse::Command) -> Reply {
        fn word(w: &[String], i: usize) -> &str {
            w.get(i).map_or("", String::as_str)
        }
        let (send, recv) = (&cmd.words, &cmd.piped[0]);
        if cmd.piped.len() == 1
            && cmd.stdin.is_none()
            && word(send, 0) == "zfs"
            && word(send, 1) == "send"
            && word(recv, 0) == "zfs"
            && matches!(word(recv, 1), "receive" | "recv")
        {
            return self.zfs_send_receive(&send[2..], &recv[2..]);
        }
        Reply::fail(
            "shell: the one pipeline this shell runs is `zfs send [-i SNAP] SNAPSHOT | zfs receive [-nvF] NAME`\n".into(),
            2,
        )
    }

    /// `sysinfo`: the machine as JSON, with SmartOS's property names.
    fn sysinfo(&mut self) -> Reply {
        let m = match self.system.machine() {
            Ok(m) => m,
            Err(e) => return Reply::fail(format!("sysinfo: init did not answer: {e}\n"), 1),
        };
        let (now, up) = self.system.clock();
        let mut o = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            o.insert(k.to_string(), v);
        };
        put("Live Image", self.config.live_image.clone().into());
        put("System Type", "Alcove".into());
        // SmartOS gives the boot time as a string of Unix seconds; 0 when
        // the machine has no clock.
        put("Boot Time", (if now == 0 { 0 } else { now.saturating_sub(up) }).to_string().into());
        put("UUID", self.config.uuid.clone().into());
        put("Hostname", self.config.hostname.clone().into());
        put("VM Capable", true.into());
        put("CPU Total Cores", m.cpus.into());
        put("MiB of Memory", (m.memory_kib / 1024).to_string().into());
        put("Servers", m.servers.into());
        let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(o)).unwrap_or_default();
        text.push('\n');
        Reply::ok(text)
    }

    /// `svcs`: one line per server, SmartOS's `STATE ... FMRI` columns.
    fn svcs(&mut self) -> Reply {
        let list = match self.system.services() {
            Ok(l) => l,
            Err(e) => return Reply::fail(format!("svcs: init did not answer: {e}\n"), 1),
        };
        let (now, up) = self.system.clock();
        let mut text = format!("{:<12} {:>8} {:>8} {:>9}  {}\n", "STATE", "STIME", "RESTARTS", "INSTANCES", "FMRI");
        for s in list {
            let state = match s.state {
                SvcState::Online => "online",
                SvcState::Maintenance => "maintenance",
                SvcState::OnDemand => "on-demand",
                SvcState::Disabled => "disabled",
            };
            let stime = admin::stime(s.started_ns, now, up);
            text.push_str(&format!(
                "{state:<12} {stime:>8} {:>8} {:>9}  svc:/alcove/{}:default\n",
                s.restarts, s.instances, s.name
            ));
        }
        Reply::ok(text)
    }
}

impl<S: System> Shell<S> {
    /// `zpool scrub [-s] POOL`: prints nothing when it worked, as ZFS.
    fn zpool_scrub(&mut self, pool: &str, stop: bool) -> Reply {
        let name = match self.system.pool_status() {
            Ok(p) => p.name,
            Err(e) => return Reply::fail(format!("zpool: {e}\n"), 1),
        };
        if pool != name {
            return Reply::fail(format!("cannot open '{}': no such pool\n", printable(pool)), 1);
        }
        match self.system.pool_scrub(stop) {
            Ok(()) => Reply::ok(String::new()),
            Err(e) if stop => Reply::fail(format!("cannot cancel scrubbing {name}: {e}\n"), 1),
            Err(e) => Reply::fail(format!("cannot scrub {name}: {e}\n"), 1),
        }
    }

    /// `zpool status` (as ZFS prints it) or `zpool list`.
    fn zpool(&mut self, status: bool) -> Reply {
        let p = match self.system.pool_status() {
            Ok(p) => p,
            Err(e) => return Reply::fail(format!("zpool: {e}\n"), 1),
        };
        if !status {
            let used = p.size_bytes.saturating_sub(p.free_bytes);
            return Reply::ok(format!(
                "{:<10} {:>7} {:>7} {:>7}  {}\n{:<10} {:>7} {:>7} {:>7}  {}\n",
                "NAME", "SIZE", "ALLOC", "FREE", "HEALTH",
                p.name, human(p.size_bytes), human(used), human(p.free_bytes), p.state
            ));
        }
        let date = |t: u64| if t == 0 { String::from("an unknown date") } else { libipc::time::ctime(t) };
        let scan = match &p.scan {
            None => String::from("none requested"),
            Some(s) if s.running => {
                let repaired = if s.repaired < 1024 { format!("{}B", s.repaired) } else { human(s.repaired) };
                let scanned = if s.bytes < 1024 { format!("{}B", s.bytes) } else { human(s.bytes) };
                let total = if s.total < 1024 { format!("{}B", s.total) } else { human(s.total) };
                // Hundredths of a percent, cut, as integers (no_std).
                let pct = (u128::from(s.bytes) * 10_000).checked_div(u128::from(s.total)).unwrap_or(0).min(10_000);
                format!(
                    "scrub in progress since {}\n\t{scanned} scanned out of {total}\n\t{repaired} repaired, {}.{:02}% done",
                    date(s.start),
                    pct / 100,
                    pct % 100
                )
            }
            Some(s) if s.canceled => format!("scrub canceled on {}", date(s.end)),
            Some(s) => {
                let secs = s.end.saturating_sub(s.start);
                let on = if s.end == 0 { String::from("an unknown date") } else { libipc::time::ctime(s.end) };
                let repaired = if s.repaired < 1024 { format!("{}B", s.repaired) } else { human(s.repaired) };
                format!(
                    "scrub repaired {repaired} in {:02}:{:02}:{:02} with {} errors on {on}",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60,
                    s.errors
                )
            }
        };
        let mut t = format!(" pool: {}\nstate: {}\n  txg: {}\n scan: {scan}\nconfig:\n\n", p.name, p.state, p.txg);
        let row = |t: &mut String, indent: usize, name: &str, state: &str, r: u64, w: u64, c: u64| {
            let name = format!("{}{name}", " ".repeat(indent));
            t.push_str(&format!("\t{name:<28} {state:<9} {r:>5} {w:>5} {c:>5}\n"));
        };
        t.push_str(&format!("\t{:<28} {:<9} {:>5} {:>5} {:>5}\n", "NAME", "STATE", "READ", "WRITE", "CKSUM"));
        let sum = |f: fn(&libipc::interfaces::PoolChild) -> u64| p.children.iter().map(f).sum::<u64>();
        let (r, w, c) = (sum(|d| d.read_errors), sum(|d| d.write_errors), sum(|d| d.checksum_errors));
        row(&mut t, 0, &p.name, &p.state, r, w, c);
        let disk_indent = if p.vdev == "mirror" {
            row(&mut t, 2, "mirror-0", &p.state, r, w, c);
            4
        } else {
            2
        };
        for d in &p.children {
            row(&mut t, disk_indent, &d.disk, &d.state, d.read_errors, d.write_errors, d.checksum_errors);
        }
        let missing = (p.children_total as usize).saturating_sub(p.children.len());
        for _ in 0..missing {
            row(&mut t, disk_indent, "(missing)", "UNAVAIL", 0, 0, 0);
        }
        for rep in &p.reports {
            t.push_str(&format!("\nleft out: {}: {}", rep.disk, rep.what));
        }
        match p.scan.as_ref().map_or(0, |s| s.errors) {
            0 if r + w + c == 0 => t.push_str("\nerrors: No known data errors\n"),
            0 => t.push_str("\nerrors: see the counts above\n"),
            n => t.push_str(&format!("\nerrors: {n} data error{} found by the last scrub\n", if n == 1 { "" } else { "s" })),
        }
        Reply::ok(t)
    }
}

/// Bytes as ZFS shows them: `512`, `64M`, `1.50G`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut unit = 0;
    let mut div: u128 = 1024;
    while u128::from(bytes) / div >= 1024 && unit + 1 < UNITS.len() {
        div *= 1024;
        unit += 1;
    }
    // In hundredths of the unit, cut (not rounded), as integers (no_std).
    let v = u128::from(bytes) * 100 / div;
    let u = UNITS[unit];
    if v >= 10_000 || v.is_multiple_of(100) {
        format!("{}{u}", v / 100)
    } else if v >= 1000 {
        format!("{}.{}{u}", v / 100, v % 100 / 10)
    } else {
        format!("{}.{:02}{u}", v / 100, v % 100)
    }
}

/// `s` with control characters shown as `^X` (an error message must not
/// carry the terminal escapes someone typed).
pub(crate) fn printable(s: &str) -> String {
    let mut t = String::new();
    for c in s.chars() {
        if (c as u32) < 0x20 || c as u32 == 0x7f {
            t.push('^');
            t.push(((c as u8) ^ 0x40) as char);
        } else {
            t.push(c);
        }
    }
    t
}

#[cfg(test)]
mod tests;
