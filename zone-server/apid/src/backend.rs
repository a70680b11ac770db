//! alcove-api's [`Backend`] as `vmadm`/`imgadm` commands at zone-server:
//!
//! | request | command (stdin) |
//! |---|---|
//! | `GET /vms?k=v` | `vmadm lookup -j k=v ...` |
//! | `POST /vms` | `vmadm create` (the payload), then `vmadm get UUID` |
//! | `POST /vms?action=validate` | `vmadm validate create` (the payload) |
//! | `GET /vms/:uuid` | `vmadm get UUID` |
//! | `POST /vms/:uuid?action=start\|stop\|reboot` | `vmadm start\|stop\|reboot UUID [-F] [-t S]`, then `get` |
//! | `POST /vms/:uuid?action=update` | `vmadm update UUID` (the properties), then `get` |
//! | `DELETE /vms/:uuid` | `vmadm delete UUID` |
//! | `GET /images`, `GET /images/:uuid`, `DELETE /images/:uuid` | `imgadm list -j k=v ...`, `imgadm get UUID`, `imgadm delete UUID` |
//! | `POST /images/:uuid?action=import-remote` | `imgadm import UUID [-S URL]` |
//! | `GET /sources`, `GET /sources/images` | `imgadm sources -j`, `imgadm avail -j` |
//! | `POST /sources?url=URL`, `DELETE /sources?url=URL` | `imgadm sources -a\|-d URL`, then `imgadm sources -j` |
//! | `GET /vms/:uuid/console?offset=N` | `vmadm.console UUID` (the VMM's badge), then `console.tail` |
//! | `POST /vms/:uuid/console` | `vmadm.console UUID`, then `console.feed` (apid is named by the console's `feed=`) |
//!
//! A failed command becomes an [`ApiError`] from its exit code and stderr:
//! 2 (usage) is 400; "not found" 404; a validation failure's JSON
//! (`bad_values`, `bad_properties`, `missing_properties`) or `Failed to
//! create VM` 422 with the text; any other refusal 409. zone-server not
//! answering is 503.
//!
//! A VM's console: zone-server maps the uuid to its VMM's console badge
//! (`vmadm.console`, as the operator shell's `vmadm console` does: vmadm's
//! messages for a VM that is unknown, 404, or not running, 409), and the
//! console server, whose `tail=` names apid, gives back what that VMM put,
//! up to [`CONSOLE_ANSWER_MAX`] bytes an answer.

use alcove_api::{ApiError, Backend, Begun, ErrorCode, Uuid, VmAction};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use libipc::interfaces::{CONSOLE_TAIL_BYTES, ConsoleRefusal, ConsoleTail, VmadmConsole, VmadmOutput};
use serde_json::{Value, json};

/// Runs `program ARGS` at zone-server (`program` is `vmadm` or
/// `imgadm`): its output, or why zone-server did not answer.
pub trait Vmadm {
    fn run(&mut self, program: &str, args: Vec<String>, stdin: String) -> Result<VmadmOutput, String>;
    /// `vmadm.begin`: as [`Vmadm::run`], but a command that waits on a
    /// guest (a graceful stop or reboot) only begins: `None`. zone-server
    /// carries it on by itself. The default runs it to its end.
    fn begin(&mut self, program: &str, args: Vec<String>, stdin: String) -> Result<Option<VmadmOutput>, String> {
        self.run(program, args, stdin).map(Some)
    }
    /// `vmadm.console UUID`: the running VM's console badge, or vmadm's
    /// refusal.
    fn console(&mut self, uuid: &str) -> Result<VmadmConsole, String> {
        let _ = uuid;
        Err("no console path to zone-server".into())
    }
    /// `console.tail(target, from)` at the console server.
    fn tail(&mut self, target: u64, from: u64) -> Result<Result<ConsoleTail, ConsoleRefusal>, String> {
        let _ = (target, from);
        Err("apid has no console endpoint (manifest: calls \"console\")".into())
    }
    /// `console.feed(target, bytes)` at the console server.
    fn feed(&mut self, target: u64, bytes: Vec<u8>) -> Result<Result<u32, ConsoleRefusal>, String> {
        let _ = (target, bytes);
        Err("apid has no console endpoint (manifest: calls \"console\")".into())
    }
}

/// The most bytes one `console.feed` carries (a request fits the IPC
/// buffer).
pub const FEED_CHUNK: usize = 2048;

/// The most bytes of a VM's console one `GET /vms/:uuid/console` answers
/// (as much as the console keeps).
pub const CONSOLE_ANSWER_MAX: usize = CONSOLE_TAIL_BYTES;

impl<F: FnMut(&str, Vec<String>, String) -> Result<VmadmOutput, String>> Vmadm for F {
    fn run(&mut self, program: &str, args: Vec<String>, stdin: String) -> Result<VmadmOutput, String> {
        self(program, args, stdin)
    }
}

/// The most graceful stops and reboots the API waits for at once (more
/// than its connections, which bound them: each holds at most one).
pub const MAX_PENDING: usize = 64;

/// The words of `vmadm ACTION UUID ...` and its stdin.
fn action_words(u: &str, action: VmAction) -> (Vec<String>, String) {
    match action {
        VmAction::Start => (words(&["start", u]), String::new()),
        VmAction::Stop { force, timeout_s } => {
            let mut a = words(&["stop", u]);
            if force {
                a.push("-F".into());
            }
            if let Some(t) = timeout_s {
                a.extend([String::from("-t"), t.to_string()]);
            }
            (a, String::new())
        }
        VmAction::Reboot { force, .. } => {
            let mut a = words(&["reboot", u]);
            if force {
                a.push("-F".into());
            }
            (a, String::new())
        }
        VmAction::Update(props) => (words(&["update", u]), props.to_string()),
        VmAction::CreateSnapshot(name) => (words(&["create-snapshot", u, &name]), String::new()),
        VmAction::RollbackSnapshot(name) => (words(&["rollback-snapshot", u, &name]), String::new()),
        VmAction::DeleteSnapshot(name) => (words(&["delete-snapshot", u, &name]), String::new()),
        }
}

/// The API's backend: every call one or two commands.
pub struct VmadmBackend<V> {
    pub vmadm: V,
    /// Requests answered (`GET /ping` reports it).
    pub calls: u64,
    /// Graceful stops and reboots under way (ticket → the VM's uuid):
    /// begun at zone-server, answered once `vmadm get` no longer says
    /// `stopping` ([`Backend::vm_action_poll`]).
    pending: BTreeMap<u64, String>,
    next_ticket: u64,
}

impl<V: Vmadm> VmadmBackend<V> {
    pub fn new(vmadm: V) -> Self {
        Self { vmadm, calls: 0, pending: BTreeMap::new(), next_ticket: 1 }
    }

    /// Actions under way.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Runs `args` with `stdin` (`imgadm ARGS` when the first word is
    /// `imgadm`); a non-zero exit is an error.
    fn call(&mut self, mut args: Vec<String>, stdin: String) -> Result<VmadmOutput, ApiError> {
        self.calls += 1;
        let tool = if args.first().is_some_and(|a| a == "imgadm") {
            args.remove(0);
            "imgadm"
        } else {
            "vmadm"
        };
        let out = self
            .vmadm
            .run(tool, args, stdin)
            .map_err(|e| ApiError::new(ErrorCode::ServiceUnavailable, format!("{tool}: zone-server did not answer: {e}")))?;
        if out.code == 0 { Ok(out) } else { Err(failure(tool, &out)) }
    }

    /// A command whose stdout is JSON.
    fn json(&mut self, args: Vec<String>, stdin: String) -> Result<Value, ApiError> {
        let out = self.call(args, stdin)?;
        serde_json::from_str(&out.stdout)
            .map_err(|e| ApiError::internal(format!("zone-server's answer is not JSON ({e}): {}", cut(&out.stdout))))
    }

    fn get(&mut self, uuid: &str) -> Result<Value, ApiError> {
        self.json(words(&["get", uuid]), String::new())
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// `k=v` words for vmadm's filters.
fn filter_words(filters: &[(String, String)]) -> Vec<String> {
    filters.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// At most 512 bytes of `s`, for an error message.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(512);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim_end()
}

/// The error a failed command stands for.
fn failure(tool: &str, out: &VmadmOutput) -> ApiError {
    let text = if out.stderr.trim().is_empty() { out.stdout.trim() } else { out.stderr.trim() };
    if out.code == 2 {
        return ApiError::invalid_argument(format!("{tool}: {}", cut(text)));
    }
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(text)
        && ["bad_values", "bad_properties", "missing_properties"].iter().any(|k| v.get(k).is_some())
    {
        return ApiError::validation("the payload is not valid", v);
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("not found") || lower.contains("no such") {
        return ApiError::not_found(cut(text));
    }
    if text.starts_with("Failed to create VM") || text.contains("Invalid value") || text.contains("property") {
        return ApiError::new(ErrorCode::ValidationFailed, cut(text));
    }
    ApiError::conflict(cut(text))
}

/// The uuid in `Successfully created VM <uuid>`.
fn created_uuid(out: &VmadmOutput) -> Option<String> {
    let all = format!("{}\n{}", out.stdout, out.stderr);
    all.lines()
        .find_map(|l| l.trim().strip_prefix("Successfully created VM "))
        .and_then(|u| Uuid::parse(u.trim()))
        .map(|u| u.to_string())
}

impl<V: Vmadm> VmadmBackend<V> {
    /// The running VM's console badge, from zone-server (vmadm's refusal
    /// for a VM that is unknown or not running).
    fn console_target(&mut self, uuid: Uuid) -> Result<u64, ApiError> {
        let unavailable = |e: String| ApiError::new(ErrorCode::ServiceUnavailable, format!("vmadm console: {e}"));
        let c = self.vmadm.console(&uuid.to_string()).map_err(unavailable)?;
        if c.code != 0 {
            return Err(failure("vmadm", &VmadmOutput { stdout: String::new(), stderr: c.stderr, code: c.code }));
        }
        if c.target == 0 {
            return Err(ApiError::internal(format!("zone-server named no console for VM {uuid}")));
        }
        Ok(c.target)
    }
}

impl<V: Vmadm> Backend for VmadmBackend<V> {
    fn ping(&mut self) -> Result<Value, ApiError> {
        Ok(json!({ "ping": "pong", "requests": self.calls }))
    }

    fn list_vms(&mut self, filters: &[(String, String)]) -> Result<Value, ApiError> {
        let mut args = words(&["lookup", "-j"]);
        args.extend(filter_words(filters));
        self.json(args, String::new())
    }

    fn create_vm(&mut self, payload: Value) -> Result<Value, ApiError> {
        let out = self.call(words(&["create"]), payload.to_string())?;
        let uuid = created_uuid(&out)
            .ok_or_else(|| ApiError::internal(format!("vmadm create said no uuid: {}", cut(&out.stderr))))?;
        self.get(&uuid)
    }

    fn validate_vm(&mut self, payload: Value) -> Result<Value, ApiError> {
        let out = self.call(words(&["validate", "create"]), payload.to_string())?;
        let message = format!("{}{}", out.stdout, out.stderr);
        Ok(json!({ "valid": true, "message": message.trim() }))
    }

    fn get_vm(&mut self, uuid: Uuid) -> Result<Value, ApiError> {
        self.get(&uuid.to_string())
    }

    fn vm_action(&mut self, uuid: Uuid, action: VmAction) -> Result<Value, ApiError> {
        let u = uuid.to_string();
        let (args, stdin) = action_words(&u, action);
        self.call(args, stdin)?;
        self.get(&u)
    }

    /// A graceful stop or reboot begins at zone-server and the request
    /// waits (a ticket) while apid serves its other connections; the rest
    /// run to their end.
    fn vm_action_begin(&mut self, uuid: Uuid, action: VmAction) -> Result<Begun, ApiError> {
        let waits = matches!(action, VmAction::Stop { force: false, .. } | VmAction::Reboot { force: false, .. });
        if !waits {
            return self.vm_action(uuid, action).map(Begun::Done);
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!("{MAX_PENDING} stops and reboots are already under way; try again once one is over"),
            ));
        }
        let u = uuid.to_string();
        let (args, stdin) = action_words(&u, action);
        self.calls += 1;
        let begun = self
            .vmadm
            .begin("vmadm", args, stdin)
            .map_err(|e| ApiError::new(ErrorCode::ServiceUnavailable, format!("vmadm: zone-server did not answer: {e}")))?;
        match begun {
            Some(out) if out.code != 0 => Err(failure("vmadm", &out)),
            // Over at once (the VM was not running, say).
            Some(_) => self.get(&u).map(Begun::Done),
            None => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                self.pending.insert(ticket, u);
                Ok(Begun::Pending(ticket))
            }
        }
    }

    /// Over once the VM is no longer `stopping` (stopped, or running
    /// again after a reboot): its `vmadm get`; a VM deleted meanwhile is
    /// vmadm's "not found" (404).
    fn vm_action_poll(&mut self, ticket: u64) -> Option<Result<Value, ApiError>> {
        let Some(u) = self.pending.get(&ticket).cloned() else {
            return Some(Err(ApiError::internal(format!("apid: no stop or reboot {ticket} is under way"))));
        };
        let got = self.get(&u);
        if matches!(&got, Ok(vm) if vm.get("state").and_then(Value::as_str) == Some("stopping")) {
            return None;
        }
        self.pending.remove(&ticket);
        Some(got)
    }

    fn vm_action_forget(&mut self, ticket: u64) {
        self.pending.remove(&ticket);
    }

    fn delete_vm(&mut self, uuid: Uuid) -> Result<Value, ApiError> {
        self.call(words(&["delete", &uuid.to_string()]), String::new())?;
        Ok(Value::Null)
    }

    fn list_images(&mut self, filters: &[(String, String)]) -> Result<Value, ApiError> {
        let mut args = words(&["imgadm", "list", "-j"]);
        args.extend(filter_words(filters));
        self.json(args, String::new())
    }

    fn get_image(&mut self, uuid: Uuid) -> Result<Value, ApiError> {
        self.json(words(&["imgadm", "get", &uuid.to_string()]), String::new())
    }

    fn import_image(&mut self, _manifest: Value) -> Result<Value, ApiError> {
        Err(ApiError::not_implemented(
            "imgadm install over the API needs the image file beside its manifest; import from a source (action=import-remote)",
        ))
    }

    fn import_remote_image(&mut self, uuid: Uuid, source: Option<&str>) -> Result<Value, ApiError> {
        let mut args = words(&["imgadm", "import", &uuid.to_string()]);
        if let Some(s) = source {
            args.extend([String::from("-S"), s.to_string()]);
        }
        self.call(args, String::new())?;
        self.get_image(uuid)
    }

    fn delete_image(&mut self, uuid: Uuid) -> Result<Value, ApiError> {
        self.call(words(&["imgadm", "delete", &uuid.to_string()]), String::new())?;
        Ok(Value::Null)
    }

    fn image_sources(&mut self) -> Result<Value, ApiError> {
        self.json(vec!["imgadm".into(), "sources".into(), "-j".into()], String::new())
    }

    fn available_images(&mut self, filters: &[(String, String)]) -> Result<Value, ApiError> {
        let mut args = words(&["imgadm", "avail", "-j"]);
        args.extend(filter_words(filters));
        self.json(args, String::new())
    }

    fn change_source(&mut self, add: bool, url: &str) -> Result<Value, ApiError> {
        self.call(words(&["imgadm", "sources", if add { "-a" } else { "-d" }, url]), String::new())?;
        self.image_sources()
    }

    fn vm_console_write(&mut self, uuid: Uuid, data: &[u8]) -> Result<Value, ApiError> {
        self.calls += 1;
        let target = self.console_target(uuid)?;
        let mut taken = 0;
        for chunk in data.chunks(FEED_CHUNK) {
            let n = match self.vmadm.feed(target, chunk.to_vec()) {
                Ok(Ok(n)) => (n as usize).min(chunk.len()),
                Ok(Err(refusal)) => return Err(ApiError::internal(format!("the console refused apid: {refusal}"))),
                Err(e) => return Err(ApiError::new(ErrorCode::ServiceUnavailable, format!("the console did not answer: {e}"))),
            };
            taken += n;
            if n < chunk.len() {
                break; // its queue is full: the client sends the rest later
            }
        }
        Ok(json!({ "uuid": uuid.to_string(), "taken": taken }))
    }

    fn vm_console(&mut self, uuid: Uuid, offset: u64) -> Result<Value, ApiError> {
        self.calls += 1;
        let target = self.console_target(uuid)?;
        let mut tail = |from: u64| -> Result<ConsoleTail, ApiError> {
            match self.vmadm.tail(target, from) {
                Ok(Ok(t)) if t.next == t.start + t.bytes.len() as u64 && t.next <= t.end => Ok(t),
                Ok(Ok(_)) => Err(ApiError::internal("the console's answer does not add up")),
                Ok(Err(refusal)) => Err(ApiError::internal(format!("the console refused apid: {refusal}"))),
                Err(e) => Err(ApiError::new(ErrorCode::ServiceUnavailable, format!("the console did not answer: {e}"))),
            }
        };
        let first = tail(offset)?;
        let (start, lost, mut end, mut next) = (first.start, first.lost, first.end, first.next);
        let mut bytes = first.bytes;
        while bytes.len() < CONSOLE_ANSWER_MAX && next < end {
            let t = tail(next)?;
            if t.start != next || t.bytes.is_empty() {
                break; // forgotten meanwhile: the next request says so
            }
            let room = CONSOLE_ANSWER_MAX - bytes.len();
            let take = t.bytes.len().min(room);
            bytes.extend_from_slice(&t.bytes[..take]);
            next += take as u64;
            end = t.end;
        }
        Ok(alcove_api::backend::console_answer(uuid, start, lost, end, &bytes))
    }
}
