//! What the API serves: the [`Backend`] trait zone-server implements (and
//! the tests mock), and the routes that reach it, VMAPI/IMGAPI-style:
//!
//! | method and path | backend call |
//! |---|---|
//! | `GET /ping` (no token needed) | [`Backend::ping`] |
//! | `GET /vms?field=value...` | [`Backend::list_vms`] |
//! | `POST /vms` (payload) | [`Backend::create_vm`] (201) |
//! | `POST /vms?action=validate` (payload) | [`Backend::validate_vm`] |
//! | `GET /vms/:uuid` | [`Backend::get_vm`] |
//! | `POST /vms/:uuid?action=start` | [`Backend::vm_action`] [`VmAction::Start`] |
//! | `POST /vms/:uuid?action=stop[&force=true][&timeout=S]` | [`VmAction::Stop`] |
//! | `POST /vms/:uuid?action=reboot[&force=true][&timeout=S]` | [`VmAction::Reboot`] |
//! | `POST /vms/:uuid?action=update` (properties) | [`VmAction::Update`] |
//! | `POST /vms/:uuid?action=create_snapshot&snapshot_name=N` | [`VmAction::CreateSnapshot`] |
//! | `POST /vms/:uuid?action=rollback_snapshot&snapshot_name=N` | [`VmAction::RollbackSnapshot`] |
//! | `POST /vms/:uuid?action=delete_snapshot&snapshot_name=N` | [`VmAction::DeleteSnapshot`] |
//! | `DELETE /vms/:uuid` | [`Backend::delete_vm`] (204 when it returns `null`) |
//! | `GET /vms/:uuid/console[?offset=N]` | [`Backend::vm_console`] (the guest's serial output from byte N) |
//! | `GET /vms/:uuid/console.txt[?offset=N]` | [`Backend::vm_console`], the bytes as `text/plain` (for `curl`; the offsets in `X-Console-*` headers) |
//! | `POST /vms/:uuid/console` (`{"data": TEXT}`) | [`Backend::vm_console_write`] (typed at the guest's serial console) |
//! | `GET /images?field=value...` | [`Backend::list_images`] |
//! | `GET /images/:uuid` | [`Backend::get_image`] |
//! | `POST /images?action=import` (manifest) | [`Backend::import_image`] (201) |
//! | `POST /images/:uuid?action=import` (manifest) | [`Backend::import_image`] (201; the uuid must agree) |
//! | `POST /images/:uuid?action=import-remote[&source=URL]` | [`Backend::import_remote_image`] |
//! | `DELETE /images/:uuid` | [`Backend::delete_image`] (204 when it returns `null`) |
//! | `GET /sources` | [`Backend::image_sources`] |
//! | `POST /sources?url=URL`, `DELETE /sources?url=URL` | [`Backend::change_source`] (`imgadm sources -a\|-d URL`) |
//! | `GET /sources/images?field=value...` | [`Backend::available_images`] (`imgadm avail`) |
//!
//! Paths and query parameters are checked here (a UUID where one belongs,
//! known actions and parameters, `force` a boolean, `timeout` a number of
//! seconds); bodies are checked to be JSON objects. What the JSON means is
//! the backend's to judge (alcove-vmadm's validation, alcove-images').

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode, quote};
use crate::query::Query;
use crate::uuid::Uuid;

/// What `POST /vms/:uuid?action=...` asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum VmAction {
    /// Boot the VM.
    Start,
    /// Stop it: the ACPI power button, then forced after `timeout_s` (the
    /// backend's default when `None`); at once with `force`.
    Stop { force: bool, timeout_s: Option<u32> },
    /// Reboot it, with the same `force` and `timeout_s` as a stop.
    Reboot { force: bool, timeout_s: Option<u32> },
    /// Change these properties (a JSON object, as `vmadm update -f`).
    Update(Value),
    /// `vmadm create-snapshot` (VMAPI's `action=create_snapshot&snapshot_name=`).
    CreateSnapshot(String),
    /// `vmadm rollback-snapshot` of the stopped VM.
    RollbackSnapshot(String),
    /// `vmadm delete-snapshot`.
    DeleteSnapshot(String),
}

/// How [`Backend::vm_action_begin`] went.
#[derive(Clone, Debug, PartialEq)]
pub enum Begun {
    /// Over: the answer.
    Done(Value),
    /// Under way: the backend's ticket for [`Backend::vm_action_poll`].
    Pending(u64),
}

/// The control plane behind the API. Each method takes and returns JSON;
/// an error becomes its status and a `{"code", "message"}` body.
pub trait Backend {
    /// `GET /ping`: the service's health (answered without a token).
    fn ping(&mut self) -> Result<Value, ApiError>;
    /// `GET /vms`: the VMs matching every `field=value` filter.
    fn list_vms(&mut self, filters: &[(String, String)]) -> Result<Value, ApiError>;
    /// `POST /vms`: create a VM from a SmartOS payload (a JSON object).
    fn create_vm(&mut self, payload: Value) -> Result<Value, ApiError>;
    /// `POST /vms?action=validate`: validate a create payload.
    fn validate_vm(&mut self, payload: Value) -> Result<Value, ApiError>;
    /// `GET /vms/:uuid`.
    fn get_vm(&mut self, uuid: Uuid) -> Result<Value, ApiError>;
    /// `POST /vms/:uuid?action=...`.
    fn vm_action(&mut self, uuid: Uuid, action: VmAction) -> Result<Value, ApiError>;
    /// `POST /vms/:uuid?action=...` where the action may wait on its
    /// guest (a graceful stop or reboot): [`Begun::Pending`] with a
    /// ticket of the backend's own keeps the request open, and the server
    /// asks [`Backend::vm_action_poll`] for it between serving its other
    /// connections. The default runs [`Backend::vm_action`] to its end.
    fn vm_action_begin(&mut self, uuid: Uuid, action: VmAction) -> Result<Begun, ApiError> {
        self.vm_action(uuid, action).map(Begun::Done)
    }
    /// Whether the action of `ticket` is over: its answer, or `None`
    /// while it waits. Never waits itself. A ticket the backend does not
    /// hold is an error.
    fn vm_action_poll(&mut self, ticket: u64) -> Option<Result<Value, ApiError>> {
        Some(Err(ApiError::internal(format!("no action {ticket} is under way"))))
    }
    /// The request of `ticket` is gone (its connection closed or timed
    /// out): the backend forgets it (the action itself carries on).
    fn vm_action_forget(&mut self, ticket: u64) {
        let _ = ticket;
    }
    /// `DELETE /vms/:uuid`.
    fn delete_vm(&mut self, uuid: Uuid) -> Result<Value, ApiError>;
    /// `GET /images`: the installed images matching every filter.
    fn list_images(&mut self, filters: &[(String, String)]) -> Result<Value, ApiError>;
    /// `GET /images/:uuid`.
    fn get_image(&mut self, uuid: Uuid) -> Result<Value, ApiError>;
    /// `POST /images?action=import`: add an image from its manifest (a JSON
    /// object; its file comes by another way).
    fn import_image(&mut self, manifest: Value) -> Result<Value, ApiError>;
    /// `POST /images/:uuid?action=import-remote`: fetch the image from an
    /// image source (`source`, or the configured ones).
    fn import_remote_image(&mut self, uuid: Uuid, source: Option<&str>) -> Result<Value, ApiError>;
    /// `DELETE /images/:uuid`.
    fn delete_image(&mut self, uuid: Uuid) -> Result<Value, ApiError>;
    /// `GET /sources`: the configured image sources.
    fn image_sources(&mut self) -> Result<Value, ApiError>;
    /// `GET /sources/images`: the images the sources offer.
    fn available_images(&mut self, filters: &[(String, String)]) -> Result<Value, ApiError>;
    /// `POST /sources?url=URL` (`add`) or `DELETE /sources?url=URL`: the
    /// sources afterwards.
    fn change_source(&mut self, add: bool, url: &str) -> Result<Value, ApiError> {
        let _ = (add, url);
        Err(ApiError::not_implemented("changing the image sources is not offered by this backend"))
    }
    /// `GET /vms/:uuid/console?offset=N`: what the running VM's guest
    /// wrote to its serial console from byte `offset` of all it wrote
    /// (0 when not given): a JSON object `{"uuid", "offset", "next",
    /// "lost", "end", "data"}` (see [`console_answer`]).
    fn vm_console(&mut self, uuid: Uuid, offset: u64) -> Result<Value, ApiError> {
        let _ = (uuid, offset);
        Err(ApiError::not_implemented("reading a VM's console is not offered by this backend"))
    }
    /// `POST /vms/:uuid/console` with `{"data": TEXT}`: `data` (at most
    /// [`CONSOLE_WRITE_MAX`] bytes) typed at the running VM's serial
    /// console. Answers `{"uuid", "taken"}`: how many bytes the console
    /// took (its queue for the VM is bounded; the client sends the rest
    /// again later).
    fn vm_console_write(&mut self, uuid: Uuid, data: &[u8]) -> Result<Value, ApiError> {
        let _ = (uuid, data);
        Err(ApiError::not_implemented("writing to a VM's console is not offered by this backend"))
    }
}

/// The most bytes one `POST /vms/:uuid/console` carries (what the
/// console queues for a VM at most).
pub const CONSOLE_WRITE_MAX: usize = 4096;

/// The answer to `GET /vms/:uuid/console`, JSON as the rest of the API:
/// `offset` is where `data` starts in all the guest wrote (the asked offset,
/// or the oldest byte kept when that one is forgotten), `lost` how many
/// bytes asked for are forgotten, `next` the offset to ask from next, `end`
/// all the guest wrote so far (`next < end`: ask again at once). `data` is
/// the bytes as text: UTF-8, with U+FFFD for what is not; an incomplete
/// UTF-8 sequence at the end is left for the next answer (`next` is before
/// it), so a character is never cut in two.
pub fn console_answer(uuid: Uuid, offset: u64, lost: u64, end: u64, bytes: &[u8]) -> Value {
    let mut keep = bytes.len();
    // A trailing lead byte (and its continuations so far) whose sequence
    // is not complete yet.
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xc0 == 0x80 {
            continue;
        }
        let need = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        if need > back {
            keep = bytes.len() - back;
        }
        break;
    }
    let data = String::from_utf8_lossy(&bytes[..keep]);
    serde_json::json!({
        "uuid": uuid.text(),
        "offset": offset,
        "next": offset + keep as u64,
        "lost": lost,
        "end": end,
        "data": data,
    })
}

/// A resource of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Ping,
    Vms,
    Vm(Uuid),
    VmConsole(Uuid),
    /// `console.txt`: the same bytes as plain text.
    VmConsoleText(Uuid),
    Images,
    Image(Uuid),
    Sources,
    SourceImages,
}

/// Methods HTTP defines; any other is answered 501, these 405 where the
/// resource does not take them.
pub(crate) const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

impl Route {
    /// Resolves the path of a request target (no query).
    pub(crate) fn resolve(path: &str) -> Result<Route, ApiError> {
        let trimmed = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        let not_found = || ApiError::not_found(format!("no such resource: {}", quote(path)));
        let Some(rest) = trimmed.strip_prefix('/') else { return Err(not_found()) };
        let mut segs = rest.split('/');
        let (a, b, c) = (segs.next(), segs.next(), segs.next());
        let uuid = |s: &str| Uuid::parse(s).ok_or_else(|| ApiError::invalid_argument(format!("{} is not a UUID", quote(s))));
        Ok(match (a, b, c) {
            (Some("ping"), None, _) => Route::Ping,
            (Some("vms"), None, _) => Route::Vms,
            (Some("vms"), Some(id), None) => Route::Vm(uuid(id)?),
            (Some("vms"), Some(id), Some("console")) if segs.next().is_none() => Route::VmConsole(uuid(id)?),
            (Some("vms"), Some(id), Some("console.txt")) if segs.next().is_none() => Route::VmConsoleText(uuid(id)?),
            (Some("images"), None, _) => Route::Images,
            (Some("images"), Some(id), None) => Route::Image(uuid(id)?),
            (Some("sources"), None, _) => Route::Sources,
            (Some("sources"), Some("images"), None) => Route::SourceImages,
            _ => return Err(not_found()),
        })
    }

    /// The methods it takes (what a 405's `Allow` lists).
    pub(crate) fn allowed(self) -> &'static [&'static str] {
        match self {
            Route::Ping | Route::SourceImages | Route::VmConsoleText(_) => &["GET"],
            Route::VmConsole(_) => &["GET", "POST"],
            Route::Vms | Route::Images => &["GET", "POST"],
            Route::Vm(_) | Route::Image(_) | Route::Sources => &["GET", "POST", "DELETE"],
        }
    }

    /// Answered without a token.
    pub(crate) fn public(self) -> bool {
        self == Route::Ping
    }
}

/// A successful answer: its status and JSON body (none for 204), or a
/// plain-text body with headers of its own (`console.txt`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Option<Value>,
    pub location: Option<String>,
    pub text: Option<String>,
    pub headers: Vec<(&'static str, String)>,
    /// The answer is to come: the backend's ticket ([`Begun::Pending`]).
    pub pending: Option<u64>,
}

fn ok(body: Value) -> Answer {
    Answer { status: 200, body: Some(body), location: None, text: None, headers: Vec::new(), pending: None }
}

/// `console.txt`'s answer from the console's JSON ([`console_answer`]):
/// the text, and the offsets as `X-Console-Offset`, `-Next`, `-End` and
/// `-Lost`, so a reader can go on from `next`.
fn console_text(v: Value) -> Answer {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0).to_string();
    let headers =
        vec![("X-Console-Offset", n("offset")), ("X-Console-Next", n("next")), ("X-Console-End", n("end")), ("X-Console-Lost", n("lost"))];
    let text = v.get("data").and_then(Value::as_str).unwrap_or("").to_string();
    Answer { status: 200, body: None, location: None, text: Some(text), headers, pending: None }
}

fn created(body: Value, collection: &str) -> Answer {
    let location = body.get("uuid").and_then(Value::as_str).filter(|u| Uuid::parse(u).is_some()).map(|u| format!("/{collection}/{u}"));
    Answer { status: 201, body: Some(body), location, text: None, headers: Vec::new(), pending: None }
}

fn deleted(body: Value) -> Answer {
    if body.is_null() { Answer { status: 204, body: None, location: None, text: None, headers: Vec::new(), pending: None } } else { ok(body) }
}

/// The body as a JSON object.
fn object_body(body: &[u8], what: &str) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(ErrorCode::InvalidContent, format!("the body is empty: {what} takes a JSON object")));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidContent, format!("the body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::new(ErrorCode::InvalidContent, format!("the body must be a JSON object, not {}", kind(&other)))),
    }
}

/// Nothing, or an empty object.
fn no_body(body: &[u8], what: &str) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Err(e) => Err(ApiError::new(ErrorCode::InvalidContent, format!("the body is not valid JSON: {e}"))),
        Ok(Value::Object(m)) if m.is_empty() => Ok(()),
        Ok(_) => Err(ApiError::new(ErrorCode::InvalidContent, format!("{what} takes no body (its parameters go in the query)"))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Refuses any query parameter outside `allowed`.
fn only(query: &Query, allowed: &[&str], what: &str) -> Result<(), ApiError> {
    match query.pairs().iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some((k, _)) => Err(ApiError::invalid_argument(format!("{what} takes no query parameter {}", quote(k)))),
    }
}

fn boolean(query: &Query, key: &str) -> Result<bool, ApiError> {
    match query.get(key) {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(v) => Err(ApiError::invalid_argument(format!("{key}={}: must be true or false", quote(v)))),
    }
}

/// The longest stop timeout taken, in seconds (a day).
pub const MAX_TIMEOUT_S: u32 = 86_400;

fn timeout(query: &Query) -> Result<Option<u32>, ApiError> {
    let Some(v) = query.get("timeout") else { return Ok(None) };
    match v.parse::<u32>() {
        Ok(s) if s <= MAX_TIMEOUT_S => Ok(Some(s)),
        _ => Err(ApiError::invalid_argument(format!("timeout={}: must be a number of seconds from 0 to {MAX_TIMEOUT_S}", quote(v)))),
    }
}

/// `offset=N`: a byte offset, 0 when absent.
fn offset(query: &Query) -> Result<u64, ApiError> {
    let Some(v) = query.get("offset") else { return Ok(0) };
    match v.parse::<u64>() {
        Ok(n) if !v.starts_with('+') => Ok(n),
        _ => Err(ApiError::invalid_argument(format!("offset={}: must be a byte offset, a number from 0 to {}", quote(v), u64::MAX))),
    }
}

fn action<'q>(query: &'q Query, what: &str, choices: &[&str]) -> Result<Option<&'q str>, ApiError> {
    match query.get("action") {
        None => Ok(None),
        Some(a) if choices.contains(&a) => Ok(Some(a)),
        Some(a) => Err(ApiError::invalid_argument(format!("action={}: {what} takes action={}", quote(a), choices.join("|")))),
    }
}

/// Calls the backend for `method` on `route` (both checked already).
pub(crate) fn dispatch<B: Backend + ?Sized>(backend: &mut B, route: Route, method: &str, query: &Query, body: &[u8]) -> Result<Answer, ApiError> {
    match (route, method) {
        (Route::Ping, _) => {
            only(query, &[], "GET /ping")?;
            backend.ping().map(ok)
        }
        (Route::Vms, "GET") => {
            no_body(body, "GET /vms")?;
            backend.list_vms(query.pairs()).map(ok)
        }
        (Route::Vms, _) => {
            only(query, &["action"], "POST /vms")?;
            match action(query, "POST /vms", &["create", "validate"])? {
                Some("validate") => backend.validate_vm(Value::Object(object_body(body, "POST /vms?action=validate")?)).map(ok),
                _ => backend.create_vm(Value::Object(object_body(body, "POST /vms")?)).map(|v| created(v, "vms")),
            }
        }
        (Route::Vm(uuid), "GET") => {
            only(query, &[], "GET /vms/:uuid")?;
            no_body(body, "GET /vms/:uuid")?;
            backend.get_vm(uuid).map(ok)
        }
        (Route::Vm(uuid), "DELETE") => {
            only(query, &[], "DELETE /vms/:uuid")?;
            no_body(body, "DELETE /vms/:uuid")?;
            backend.delete_vm(uuid).map(deleted)
        }
        (Route::Vm(uuid), _) => {
            const ACTIONS: &[&str] = &["start", "stop", "reboot", "update", "create_snapshot", "rollback_snapshot", "delete_snapshot"];
            let Some(a) = action(query, "POST /vms/:uuid", ACTIONS)? else {
                return Err(ApiError::invalid_argument(format!("POST /vms/:uuid needs action={}", ACTIONS.join("|"))));
            };
            let what = format!("POST /vms/:uuid?action={a}");
            let act = match a {
                "start" => {
                    only(query, &["action"], &what)?;
                    no_body(body, &what)?;
                    VmAction::Start
                }
                "update" => {
                    only(query, &["action"], &what)?;
                    VmAction::Update(Value::Object(object_body(body, &what)?))
                }
                "create_snapshot" | "rollback_snapshot" | "delete_snapshot" => {
                    only(query, &["action", "snapshot_name"], &what)?;
                    no_body(body, &what)?;
                    let Some(name) = query.get("snapshot_name").filter(|n| !n.is_empty()) else {
                        return Err(ApiError::invalid_argument(format!("{what} needs snapshot_name=NAME")));
                    };
                    let name = name.to_string();
                    match a {
                        "create_snapshot" => VmAction::CreateSnapshot(name),
                        "rollback_snapshot" => VmAction::RollbackSnapshot(name),
                        _ => VmAction::DeleteSnapshot(name),
                    }
                }
                _ => {
                    only(query, &["action", "force", "timeout"], &what)?;
                    no_body(body, &what)?;
                    let (force, timeout_s) = (boolean(query, "force")?, timeout(query)?);
                    if a == "stop" { VmAction::Stop { force, timeout_s } } else { VmAction::Reboot { force, timeout_s } }
                }
            };
            match backend.vm_action_begin(uuid, act)? {
                Begun::Done(v) => Ok(ok(v)),
                Begun::Pending(ticket) => Ok(Answer { pending: Some(ticket), ..ok(Value::Null) }),
            }
        }
        (Route::VmConsole(uuid), "GET") => {
            only(query, &["offset"], "GET /vms/:uuid/console")?;
            no_body(body, "GET /vms/:uuid/console")?;
            backend.vm_console(uuid, offset(query)?).map(ok)
        }
        (Route::VmConsoleText(uuid), _) => {
            only(query, &["offset"], "GET /vms/:uuid/console.txt")?;
            no_body(body, "GET /vms/:uuid/console.txt")?;
            backend.vm_console(uuid, offset(query)?).map(console_text)
        }
        (Route::VmConsole(uuid), _) => {
            const WHAT: &str = "POST /vms/:uuid/console";
            only(query, &[], WHAT)?;
            let m = object_body(body, WHAT)?;
            if let Some(k) = m.keys().find(|k| k.as_str() != "data") {
                return Err(ApiError::new(ErrorCode::InvalidContent, format!("{WHAT} takes {{\"data\": TEXT}}, not {}", quote(k))));
            }
            let data = match m.get("data") {
                Some(Value::String(d)) => d.as_bytes(),
                Some(other) => {
                    return Err(ApiError::new(ErrorCode::InvalidContent, format!("{WHAT}: data must be a string, not {}", kind(other))));
                }
                None => return Err(ApiError::new(ErrorCode::InvalidContent, format!("{WHAT} takes {{\"data\": TEXT}}"))),
            };
            if data.len() > CONSOLE_WRITE_MAX {
                let e = format!("{WHAT}: data is {} bytes; at most {CONSOLE_WRITE_MAX} a request", data.len());
                return Err(ApiError::new(ErrorCode::InvalidContent, e));
            }
            backend.vm_console_write(uuid, data).map(ok)
        }
        (Route::Images, "GET") => {
            no_body(body, "GET /images")?;
            backend.list_images(query.pairs()).map(ok)
        }
        (Route::Images, _) => {
            only(query, &["action"], "POST /images")?;
            if action(query, "POST /images", &["import"])?.is_none() {
                return Err(ApiError::invalid_argument("POST /images needs action=import (and the manifest as the body)"));
            }
            backend.import_image(Value::Object(object_body(body, "POST /images?action=import")?)).map(|v| created(v, "images"))
        }
        (Route::Image(uuid), "GET") => {
            only(query, &[], "GET /images/:uuid")?;
            no_body(body, "GET /images/:uuid")?;
            backend.get_image(uuid).map(ok)
        }
        (Route::Image(uuid), "DELETE") => {
            only(query, &[], "DELETE /images/:uuid")?;
            no_body(body, "DELETE /images/:uuid")?;
            backend.delete_image(uuid).map(deleted)
        }
        (Route::Image(uuid), _) => match action(query, "POST /images/:uuid", &["import", "import-remote"])? {
            Some("import") => {
                only(query, &["action"], "POST /images/:uuid?action=import")?;
                let mut m = object_body(body, "POST /images/:uuid?action=import")?;
                let want = uuid.text();
                match m.get("uuid") {
                    None => {
                        m.insert("uuid".to_string(), Value::String(want));
                    }
                    Some(Value::String(s)) if Uuid::parse(s) == Some(uuid) => {}
                    Some(other) => {
                        let shown = other.as_str().map_or_else(|| other.to_string(), ToOwned::to_owned);
                        return Err(ApiError::invalid_argument(format!("the manifest's uuid {} is not the path's {want}", quote(&shown))));
                    }
                }
                backend.import_image(Value::Object(m)).map(|v| created(v, "images"))
            }
            Some(_) => {
                only(query, &["action", "source"], "POST /images/:uuid?action=import-remote")?;
                no_body(body, "POST /images/:uuid?action=import-remote")?;
                backend.import_remote_image(uuid, query.get("source")).map(ok)
            }
            None => Err(ApiError::invalid_argument("POST /images/:uuid needs action=import|import-remote")),
        },
        (Route::Sources, "GET") => {
            only(query, &[], "GET /sources")?;
            no_body(body, "GET /sources")?;
            backend.image_sources().map(ok)
        }
        (Route::Sources, m) => {
            let what = format!("{m} /sources");
            only(query, &["url"], &what)?;
            no_body(body, &what)?;
            let url = query.get("url").ok_or_else(|| ApiError::invalid_argument(format!("{what} needs url=SOURCE_URL")))?;
            backend.change_source(m == "POST", url).map(ok)
        }
        (Route::SourceImages, _) => backend.available_images(query.pairs()).map(ok),
    }
}

/// `Allow`'s value for `route`.
pub(crate) fn allow_header(route: Route) -> String {
    route.allowed().join(", ")
}
