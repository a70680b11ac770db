//! The argument plumbing of the host's `vmadm` and `imgadm`: each command
//! line becomes one API [`Call`], which [`run`] sends and whose answer (or
//! error) it prints. Exit codes as vmadm's: 0 done, 1 failed, 2 usage.
//!
//! `vmadm` prints what SmartOS's vmadm prints (`sbin/vmadm.js`), on
//! stderr: `Successfully created VM <uuid>`, `Successfully started VM
//! <uuid>`, `Successfully completed stop for VM <uuid>` (`reboot` alike),
//! `Successfully updated VM <uuid>`, `Successfully deleted VM <uuid>`,
//! `VALID 'create' payload for <brand> brand VMs.`; a failure prints
//! vmadm's own message (zone-server's, which the API passes on), a failed
//! delete as `Failed to delete VM <uuid>: <why>`, a payload's problems as
//! vmadm's JSON (`bad_values`, `bad_properties`, `missing_properties`), and
//! exits 1. `get`, `list` and `lookup` print to stdout as vmadm does.
//!
//! Two seams are left for alcove-vmadm (the instance model) to plug into
//! once merged, so the host CLI speaks exactly as the console's `vmadm`:
//! * [`vmadm_call`] is a plain argv reader; alcove-vmadm's argv parser
//!   replaces it, producing the same [`Call`];
//! * [`print_vm_list`] prints `vmadm list`'s VMs with alcove-vmadm's own
//!   list formatter (columns, `-o`, `-s`, `-p`, `-H`), as the console's
//!   `vmadm list` does.

use std::io::{self, Write};
use std::string::{String, ToString};
use std::vec::Vec;
use std::{eprint, eprintln, format, println, vec};

use serde_json::{Map, Value};

use crate::blocking::{Client, ClientError};
use crate::query::{encode, encode_pairs};
use crate::uuid::Uuid;

/// Success.
pub const EXIT_OK: i32 = 0;
/// The call failed.
pub const EXIT_ERROR: i32 = 1;
/// The command line is wrong.
pub const EXIT_USAGE: i32 = 2;

/// How the answer is printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The JSON, indented (as `vmadm get`).
    Json,
    /// `vmadm list`: through [`print_vm_list`], in this format.
    VmList(alcove_vmadm::list::ListFormat),
    /// `vmadm lookup`: each VM's uuid on a line (`one`: exactly one match).
    Uuids { one: bool },
    /// `vmadm create`: `Successfully created VM <uuid>` (the answer's
    /// uuid) on stderr.
    Created,
    /// `vmadm validate create`: `VALID 'create' payload for <brand>
    /// brand VMs.` on stderr.
    Validated,
    /// A verb on one VM (`start`, `stop`, `reboot`, `update`, `delete`):
    /// vmadm's line on stderr (`Successfully ... VM <uuid>`); the `String`
    /// is the line, the `&str` the verb (for a failed delete's `Failed to
    /// delete VM <uuid>: ` prefix).
    Done(&'static str, String),
    /// `vmadm console`: the guest's output, followed ([`follow_console`]).
    Console(Uuid),
    /// `imgadm list` / `avail`: imgadm's table ([`print_image_table`]).
    ImageTable(ImageTable),
    /// `imgadm sources`: one URL a line.
    Sources,
    /// `imgadm show`: the image's manifest, as JSON.
    Manifest,
    /// `imgadm import`: `Imported image UUID (NAME@VERSION)`.
    Imported,
    /// `imgadm delete`: `Deleted image UUID`.
    ImageDeleted(Uuid),
    /// `imgadm sources -a|-d URL`: `Added image source "URL"` or `Deleted
    /// image source "URL"` (as zone-server's imgadm says it).
    SourceChanged { added: bool, url: String },
}

/// How `imgadm list` and `avail` lay out their table (SmartOS's imgadm:
/// columns `UUID NAME VERSION OS TYPE PUB`, sorted by `published_at,name`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageTable {
    /// `-H`: no header line.
    pub no_header: bool,
    /// `-o a,b`; empty: the default columns.
    pub columns: Vec<String>,
    /// `-s a,-b`; empty: `published_at,name`.
    pub sort: Vec<String>,
}

/// One request of a command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The HTTP method.
    pub method: &'static str,
    /// The path and query.
    pub target: String,
    /// The body, as JSON.
    pub body: Option<Value>,
    /// How the answer is printed.
    pub output: Output,
}

/// Why a command line makes no call: its exit code and what to print
/// (help goes to stdout with exit 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// [`EXIT_USAGE`], [`EXIT_ERROR`], or [`EXIT_OK`] for `-h`.
    pub exit: i32,
    /// The message.
    pub message: String,
}

fn usage(tool: &str, message: impl Into<String>, help: &str) -> Refusal {
    Refusal { exit: EXIT_USAGE, message: format!("{tool}: {}\n{help}", message.into()) }
}

/// `vmadm`'s usage.
pub const VMADM_USAGE: &str = "usage: vmadm create [-f FILE]
       vmadm validate create [-f FILE]
       vmadm list [field=value ...]
       vmadm lookup [-j] [-1] [field=value ...]
       vmadm get UUID
       vmadm start UUID
       vmadm stop UUID [-F] [-t SECONDS]
       vmadm reboot UUID [-F]
       vmadm update UUID [-f FILE | property=value ...]
       vmadm delete UUID
       vmadm console UUID
       vmadm create-snapshot|rollback-snapshot|delete-snapshot UUID SNAPNAME
(talks to the API at $ALCOVE_URL with the token $ALCOVE_TOKEN or the file $ALCOVE_TOKEN_FILE)";

/// `imgadm`'s usage.
pub const IMGADM_USAGE: &str = "usage: imgadm list [-j] [-H] [-o FIELD,...] [-s FIELD,...] [field=value ...]
       imgadm show UUID
       imgadm get UUID
       imgadm import UUID [-S SOURCE_URL]
       imgadm delete UUID
       imgadm sources [-j] [-a URL | -d URL]
       imgadm avail [-j] [-H] [-o FIELD,...] [-s FIELD,...] [field=value ...]
(talks to the API at $ALCOVE_URL with the token $ALCOVE_TOKEN or the file $ALCOVE_TOKEN_FILE)";

fn uuid_arg(tool: &str, verb: &str, arg: Option<&String>, help: &str) -> Result<Uuid, Refusal> {
    let Some(a) = arg else { return Err(usage(tool, format!("{verb}: a UUID is needed"), help)) };
    Uuid::parse(a).ok_or_else(|| Refusal { exit: EXIT_ERROR, message: format!("{tool} {verb}: {a:?} is not a UUID") })
}

fn filters(tool: &str, verb: &str, args: &[String], help: &str) -> Result<Vec<(String, String)>, Refusal> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.starts_with('-') => Ok((k.to_string(), v.to_string())),
            _ => Err(usage(tool, format!("{verb}: {a:?} is not field=value"), help)),
        })
        .collect()
}

/// Reads `-f FILE` (or standard input for `-` or no `-f`) as a JSON payload.
fn payload(tool: &str, verb: &str, file: Option<&str>, read: &mut dyn FnMut(Option<&str>) -> io::Result<String>) -> Result<Value, Refusal> {
    let shown = file.unwrap_or("standard input");
    let text = read(file.filter(|f| *f != "-")).map_err(|e| Refusal { exit: EXIT_ERROR, message: format!("{tool} {verb}: {shown}: {e}") })?;
    serde_json::from_str(&text).map_err(|e| Refusal { exit: EXIT_ERROR, message: format!("{tool} {verb}: {shown} is not valid JSON: {e}") })
}

/// The one `-f FILE` option of `args`, refusing anything else.
fn only_file(tool: &str, verb: &str, args: &[String], help: &str) -> Result<Option<String>, Refusal> {
    match args {
        [] => Ok(None),
        [f, path] if f == "-f" => Ok(Some(path.clone())),
        _ => Err(usage(tool, format!("{verb}: expected [-f FILE], got {:?}", args.join(" ")), help)),
    }
}

fn help(args: &[String], text: &str) -> Option<Refusal> {
    (args.is_empty() || matches!(args[0].as_str(), "-h" | "--help" | "help")).then(|| Refusal {
        exit: if args.is_empty() { EXIT_USAGE } else { EXIT_OK },
        message: text.to_string(),
    })
}

/// The call a `vmadm` command line makes (`args` without the program
/// name); `read` reads a payload file, or standard input for `None`.
///
/// This is the seam for alcove-vmadm's argv parser: it is to replace
/// this function, making the same [`Call`]s.
pub fn vmadm_call(args: &[String], read: &mut dyn FnMut(Option<&str>) -> io::Result<String>) -> Result<Call, Refusal> {
    const T: &str = "vmadm";
    let h = VMADM_USAGE;
    if let Some(r) = help(args, h) {
        return Err(r);
    }
    let verb = args[0].as_str();
    let rest = &args[1..];
    let call = |method, target: String, body, output| Ok(Call { method, target, body, output });
    match verb {
        "create" => {
            let file = only_file(T, verb, rest, h)?;
            call("POST", "/vms".to_string(), Some(payload(T, verb, file.as_deref(), read)?), Output::Created)
        }
        "validate" => {
            if rest.first().map(String::as_str) != Some("create") {
                return Err(usage(T, "validate: only `validate create` is known", h));
            }
            let file = only_file(T, verb, &rest[1..], h)?;
            call("POST", "/vms?action=validate".to_string(), Some(payload(T, verb, file.as_deref(), read)?), Output::Validated)
        }
        "list" => {
            let mut fmt = alcove_vmadm::list::ListFormat::default();
            let mut pairs = Vec::new();
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-o" | "-s" => {
                        let Some(v) = it.next() else { return Err(usage(T, format!("list {a}: needs a field list"), h)) };
                        let fields: Vec<String> = v.split(',').map(str::to_string).collect();
                        alcove_vmadm::list::check_fields(&fields, a == "-s").map_err(|e| usage(T, e, h))?;
                        if a == "-o" { fmt.fields = fields } else { fmt.sort = fields }
                    }
                    "-p" => {
                        fmt.parsable = true;
                        fmt.header = false;
                    }
                    "-H" => fmt.header = false,
                    o if o.starts_with('-') => return Err(usage(T, format!("list: unknown option {o}"), h)),
                    _ => pairs.push(a.clone()),
                }
            }
            let f = filters(T, verb, &pairs, h)?;
            call("GET", format!("/vms{}", encode_pairs(&f)), None, Output::VmList(fmt))
        }
        "lookup" => {
            let (mut json, mut one, mut rest2) = (false, false, Vec::new());
            for a in rest {
                match a.as_str() {
                    "-j" => json = true,
                    "-1" => one = true,
                    _ => rest2.push(a.clone()),
                }
            }
            let f = filters(T, verb, &rest2, h)?;
            let output = if json { Output::Json } else { Output::Uuids { one } };
            call("GET", format!("/vms{}", encode_pairs(&f)), None, output)
        }
        "get" | "start" | "delete" => {
            let u = uuid_arg(T, verb, rest.first(), h)?;
            if rest.len() > 1 {
                return Err(usage(T, format!("{verb}: unexpected {:?}", rest[1..].join(" ")), h));
            }
            match verb {
                "get" => call("GET", format!("/vms/{u}"), None, Output::Json),
                "start" => call("POST", format!("/vms/{u}?action=start"), None, Output::Done("start", format!("Successfully started VM {u}"))),
                _ => call("DELETE", format!("/vms/{u}"), None, Output::Done("delete", format!("Successfully deleted VM {u}"))),
            }
        }
        "stop" | "reboot" => {
            // Options before or after the uuid, as the machine's vmadm.
            let mut q = vec![("action".to_string(), verb.to_string())];
            let mut uuid = None;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-F" => q.push(("force".to_string(), "true".to_string())),
                    "-t" if verb == "stop" => {
                        let Some(t) = it.next().filter(|t| t.parse::<u32>().is_ok()) else {
                            return Err(usage(T, "stop -t: a number of seconds is needed", h));
                        };
                        q.push(("timeout".to_string(), t.clone()));
                    }
                    other if uuid.is_none() && !other.starts_with('-') => uuid = Some(a),
                    other => return Err(usage(T, format!("{verb}: unknown option {other:?}"), h)),
                }
            }
            let u = uuid_arg(T, verb, uuid, h)?;
            let done = Output::Done(if verb == "stop" { "stop" } else { "reboot" }, format!("Successfully completed {verb} for VM {u}"));
            call("POST", format!("/vms/{u}{}", encode_pairs(&q)), None, done)
        }
        "update" => {
            let u = uuid_arg(T, verb, rest.first(), h)?;
            let rest = &rest[1..];
            let body = if rest.first().is_some_and(|a| a == "-f") || rest.is_empty() {
                let file = only_file(T, verb, rest, h)?;
                payload(T, verb, file.as_deref(), read)?
            } else {
                // vmadm coerces these strings into each property's type;
                // the server does the same.
                let mut m = Map::new();
                for (k, v) in filters(T, verb, rest, h)? {
                    m.insert(k, Value::String(v));
                }
                Value::Object(m)
            };
            call("POST", format!("/vms/{u}?action=update"), Some(body), Output::Done("update", format!("Successfully updated VM {u}")))
        }
        "create-snapshot" | "rollback-snapshot" | "delete-snapshot" => {
            let u = uuid_arg(T, verb, rest.first(), h)?;
            let [_, name] = rest else {
                return Err(usage(T, format!("{verb}: expected UUID SNAPNAME"), h));
            };
            let (action, done): (&str, fn(&str, &Uuid) -> String) = match verb {
                "create-snapshot" => ("create_snapshot", |n, u| format!("Created snapshot {n} for VM {u}")),
                "rollback-snapshot" => ("rollback_snapshot", |n, u| format!("Rolled back VM {u} to snapshot {n}")),
                _ => ("delete_snapshot", |n, u| format!("Deleted snapshot {n} for VM {u}")),
            };
            let q = vec![("action".to_string(), action.to_string()), ("snapshot_name".to_string(), name.clone())];
            call("POST", format!("/vms/{u}{}", encode_pairs(&q)), None, Output::Done("snapshot", done(name, &u)))
        }
        "console" => {
            let u = uuid_arg(T, verb, rest.first(), h)?;
            if rest.len() > 1 {
                return Err(usage(T, format!("{verb}: unexpected {:?}", rest[1..].join(" ")), h));
            }
            call("GET", format!("/vms/{u}/console"), None, Output::Console(u))
        }
        "info" | "sysrq" | "send" | "receive" | "events" => Err(Refusal {
            exit: EXIT_ERROR,
            message: format!("vmadm {verb}: not available over the HTTP API yet; use the operator shell on Alcove's console"),
        }),
        other => Err(usage(T, format!("unknown command {other:?}"), h)),
    }
}

/// The call an `imgadm` command line makes (`args` without the program
/// name).
pub fn imgadm_call(args: &[String]) -> Result<Call, Refusal> {
    const T: &str = "imgadm";
    let h = IMGADM_USAGE;
    if let Some(r) = help(args, h) {
        return Err(r);
    }
    let verb = args[0].as_str();
    let rest = &args[1..];
    let call = |method, target: String, output| Ok(Call { method, target, body: None, output });
    match verb {
        "list" | "avail" => {
            let (mut table, mut json, mut pairs) = (ImageTable::default(), false, Vec::new());
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-j" => json = true,
                    "-H" => table.no_header = true,
                    "-o" | "-s" => {
                        let Some(v) = it.next() else { return Err(usage(T, format!("{verb} {a}: needs a list of fields"), h)) };
                        let fields: Vec<String> = v.split(',').map(str::to_string).collect();
                        if let Some(bad) = fields.iter().find(|f| !image_field_name(f.strip_prefix('-').unwrap_or(f))) {
                            return Err(usage(T, format!("{verb} {a}: bad field name {bad:?}"), h));
                        }
                        if a == "-o" { table.columns = fields } else { table.sort = fields }
                    }
                    o if o.starts_with('-') => return Err(usage(T, format!("{verb}: unknown option {o}"), h)),
                    _ => pairs.push(a.clone()),
                }
            }
            let path = if verb == "list" { "/images" } else { "/sources/images" };
            let output = if json { Output::Json } else { Output::ImageTable(table) };
            call("GET", format!("{path}{}", encode_pairs(&filters(T, verb, &pairs, h)?)), output)
        }
        "sources" => match rest {
            [] => call("GET", "/sources".to_string(), Output::Sources),
            [j] if j == "-j" => call("GET", "/sources".to_string(), Output::Json),
            [flag, url] if flag == "-a" || flag == "-d" => {
                let added = flag == "-a";
                let output = Output::SourceChanged { added, url: url.clone() };
                call(if added { "POST" } else { "DELETE" }, format!("/sources?url={}", encode(url)), output)
            }
            more => Err(usage(T, format!("sources: unexpected {:?}", more.join(" ")), h)),
        },
        "show" | "get" | "delete" => {
            let u = uuid_arg(T, verb, rest.first(), h)?;
            if rest.len() > 1 {
                return Err(usage(T, format!("{verb}: unexpected {:?}", rest[1..].join(" ")), h));
            }
            match verb {
                "delete" => call("DELETE", format!("/images/{u}"), Output::ImageDeleted(u)),
                // `show` is the manifest alone, `get` the whole record.
                "show" => call("GET", format!("/images/{u}"), Output::Manifest),
                _ => call("GET", format!("/images/{u}"), Output::Json),
            }
        }
        "import" => {
            let u = uuid_arg(T, verb, rest.first(), h)?;
            let target = match &rest[1..] {
                [] => format!("/images/{u}?action=import-remote"),
                [s, url] if s == "-S" => format!("/images/{u}?action=import-remote&source={}", encode(url)),
                more => return Err(usage(T, format!("import: unexpected {:?}", more.join(" ")), h)),
            };
            call("POST", target, Output::Imported)
        }
        "install" => Err(Refusal {
            exit: EXIT_ERROR,
            message: "imgadm install: uploading an image file is not over the HTTP API yet; use `imgadm import` from an image source, or the operator shell on Alcove's console".to_string(),
        }),
        other => Err(usage(T, format!("unknown command {other:?}"), h)),
    }
}

/// Prints `vmadm list`'s VMs: for now their JSON.
///
/// This is the seam for alcove-vmadm's list formatter (SmartOS's columns
/// `UUID TYPE RAM STATE ALIAS`, `-o`, `-s`, `-p`, `-H`): it is to replace
/// this function's body.
pub fn print_vm_list(vms: &Value, fmt: &alcove_vmadm::list::ListFormat, out: &mut dyn Write) -> io::Result<()> {
    let list = vms.as_array().ok_or_else(|| io::Error::other("the answer to GET /vms is not a list"))?;
    let texts: Vec<String> = list.iter().map(Value::to_string).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let server_uuid =
        list.first().and_then(|v| v.get("server_uuid")).and_then(Value::as_str).unwrap_or("00000000-0000-0000-0000-000000000000");
    // The VMs as zone-server keeps them (not a machine boot: states stay).
    let (reg, _, problems) = alcove_vmadm::registry::Registry::restore(server_uuid, &texts, false, "");
    if let Some(p) = problems.first() {
        return Err(io::Error::other(format!("a VM in the answer is not one vmadm reads: {p}")));
    }
    write!(out, "{}", alcove_vmadm::list::render(reg.select(&[]), server_uuid, fmt))
}

/// Whether `f` is a field name `imgadm list -o|-s` takes (a manifest
/// property, dotted for nested ones, or `pub`, `clones`, `source`, `zpool`).
fn image_field_name(f: &str) -> bool {
    !f.is_empty() && f.len() <= 128 && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// One image's `field` as imgadm's table shows it (`-` when missing).
fn image_field(image: &Value, field: &str) -> String {
    let m = image.get("manifest").unwrap_or(image);
    let v = match field {
        "pub" => {
            return m.get("published_at").and_then(Value::as_str).and_then(|p| p.get(..10)).unwrap_or("-").to_string();
        }
        "clones" | "zpool" | "source" => image.get(field),
        _ => field.split('.').try_fold(m, |v, p| v.get(p)),
    };
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `imgadm list` and `avail` as SmartOS's imgadm prints them: the columns
/// (`UUID NAME VERSION OS TYPE PUB` unless `-o`), each padded to its widest
/// value with two spaces between, `-` for a missing value, sorted by
/// `published_at,name` unless `-s` (`-` before a field: descending),
/// numbers as numbers. `images` is the API's list (`{manifest, ...}` each,
/// or manifests).
pub fn print_image_table(images: &Value, t: &ImageTable, out: &mut dyn Write) -> io::Result<()> {
    const COLUMNS: &[&str] = &["uuid", "name", "version", "os", "type", "pub"];
    const SORT: &[&str] = &["published_at", "name"];
    let list = images.as_array().ok_or_else(|| io::Error::other("the answer is not a list of images"))?;
    let cols: Vec<&str> = if t.columns.is_empty() { COLUMNS.to_vec() } else { t.columns.iter().map(String::as_str).collect() };
    let sort: Vec<&str> = if t.sort.is_empty() { SORT.to_vec() } else { t.sort.iter().map(String::as_str).collect() };
    let mut rows: Vec<&Value> = list.iter().collect();
    rows.sort_by(|a, b| {
        for key in &sort {
            let (desc, key) = key.strip_prefix('-').map_or((false, *key), |k| (true, k));
            let (x, y) = (image_field(a, key), image_field(b, key));
            let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                (Ok(p), Ok(q)) => p.cmp(&q),
                _ => x.cmp(&y),
            };
            let ord = if desc { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        core::cmp::Ordering::Equal
    });
    let mut cells: Vec<Vec<String>> = Vec::new();
    if !t.no_header {
        cells.push(cols.iter().map(|c| c.to_uppercase()).collect());
    }
    cells.extend(rows.iter().map(|r| cols.iter().map(|c| image_field(r, c)).collect::<Vec<_>>()));
    let widths: Vec<usize> = (0..cols.len()).map(|i| cells.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
    for row in cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(core::iter::repeat_n(' ', widths[i] - cell.chars().count()));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn print_json(v: &Value, out: &mut dyn Write) -> io::Result<()> {
    if v.is_null() {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(v).map_err(|e| io::Error::other(format!("{e}")))?;
    writeln!(out, "{text}")
}

/// Sends `call` with `client` and prints the answer as [`print_answer`].
/// Returns the exit code.
pub fn run(tool: &str, call: &Call, client: &Client, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    print_answer(tool, call, client.call(call.method, &call.target, call.body.as_ref()), out, err)
}

/// Prints the API's answer to `call` as the tool does: the answer to
/// `out`, or vmadm's message to `err` (see the module's description); an
/// error to `err` (an API error as vmadm's message, with the details of a
/// validation failure; a 5xx, or one of the connection or the token, as
/// `TOOL: message`). Returns the exit code.
pub fn print_answer(tool: &str, call: &Call, answer: Result<Value, ClientError>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match answer {
        Ok(v) => {
            let printed = match &call.output {
                Output::Json => print_json(&v, out),
                Output::Created => match v.get("uuid").and_then(Value::as_str) {
                    Some(u) => writeln!(err, "Successfully created VM {u}"),
                    None => Err(io::Error::other("the answer to the create names no uuid")),
                },
                Output::Validated => match v.get("message").and_then(Value::as_str).filter(|m| m.starts_with("VALID")) {
                    Some(m) => writeln!(err, "{m}"),
                    None => {
                        let brand = call.body.as_ref().and_then(|b| b.get("brand")).and_then(Value::as_str).unwrap_or("undefined");
                        writeln!(err, "VALID 'create' payload for {brand} brand VMs.")
                    }
                },
                Output::Done(_, line) => writeln!(err, "{line}"),
                Output::Console(_) => match v.get("data").and_then(Value::as_str) {
                    Some(d) => write!(out, "{d}"),
                    None => Err(io::Error::other("the answer to GET /vms/:uuid/console has no data")),
                },
                Output::ImageTable(t) => print_image_table(&v, t, out),
                Output::Sources => match v.as_array() {
                    Some(list) => list
                        .iter()
                        .filter_map(|s| s.get("url").and_then(Value::as_str).or_else(|| s.as_str()))
                        .try_for_each(|u| writeln!(out, "{u}")),
                    None => Err(io::Error::other("the answer to GET /sources is not a list")),
                },
                Output::Imported => {
                    let m = v.get("manifest").unwrap_or(&v);
                    let text = |k: &str| m.get(k).and_then(Value::as_str);
                    match text("uuid") {
                        Some(u) => writeln!(out, "Imported image {u} ({}@{})", text("name").unwrap_or("-"), text("version").unwrap_or("-")),
                        None => Err(io::Error::other("the answer to the import names no image uuid")),
                    }
                }
                Output::Manifest => print_json(v.get("manifest").unwrap_or(&v), out),
                Output::ImageDeleted(u) => writeln!(out, "Deleted image {u}"),
                Output::SourceChanged { added: true, url } => writeln!(out, "Added image source \"{url}\""),
                Output::SourceChanged { added: false, url } => writeln!(out, "Deleted image source \"{url}\""),
                Output::VmList(fmt) => print_vm_list(&v, fmt, out),
                Output::Uuids { one } => {
                    let uuids: Vec<&str> = v.as_array().map(|a| a.iter().filter_map(|vm| vm.get("uuid")?.as_str()).collect()).unwrap_or_default();
                    if *one && uuids.len() != 1 {
                        let _ = writeln!(err, "{tool}: lookup -1: {} VMs match, not one", uuids.len());
                        return EXIT_ERROR;
                    }
                    uuids.iter().try_for_each(|u| writeln!(out, "{u}"))
                }
            };
            match printed {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    let _ = writeln!(err, "{tool}: writing the answer: {e}");
                    EXIT_ERROR
                }
            }
        }
        // vmadm's own refusal (4xx; a 5xx is the API's or zone-server's
        // trouble, printed as `vmadm: message (status code)` below).
        Err(ClientError::Api { status, message, body, .. }) if tool == "vmadm" && status < 500 => {
            let details = body.get("errors").filter(|d| !d.is_null());
            match (&call.output, details) {
                // vmadm validate prints the problems alone.
                (Output::Validated, Some(d)) => {
                    let _ = print_json(d, err);
                }
                (output, details) => {
                    let _ = match output {
                        Output::Done("delete", _) if !message.starts_with("Failed to delete VM") => {
                            let u = call.target.trim_start_matches("/vms/");
                            writeln!(err, "Failed to delete VM {u}: {message}")
                        }
                        _ => writeln!(err, "{message}"),
                    };
                    if let Some(d) = details {
                        let _ = print_json(d, err);
                    }
                }
            }
            EXIT_ERROR
        }
        Err(e) => {
            let _ = writeln!(err, "{tool}: {e}");
            if let ClientError::Api { body, .. } = &e
                && let Some(details) = body.get("errors")
            {
                let _ = print_json(details, err);
            }
            EXIT_ERROR
        }
    }
}

/// The whole of a host binary: parse `args`, build the client from the
/// environment, run. Returns the exit code.
pub fn main(tool: &str, args: &[String]) -> i32 {
    let mut read = |path: Option<&str>| -> io::Result<String> {
        match path {
            Some(p) => std::fs::read_to_string(p),
            None => io::read_to_string(io::stdin()),
        }
    };
    let call = match tool {
        "vmadm" => vmadm_call(args, &mut read),
        _ => imgadm_call(args),
    };
    let call = match call {
        Ok(c) => c,
        Err(r) => {
            if r.exit == EXIT_OK {
                println!("{}", r.message);
            } else {
                eprintln!("{}", r.message);
            }
            return r.exit;
        }
    };
    let client = match Client::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{tool}: {e}");
            return EXIT_ERROR;
        }
    };
    if let Output::Console(u) = call.output {
        return console_main(u, &client);
    }
    run(tool, &call, &client, &mut io::stdout().lock(), &mut io::stderr().lock())
}

/// How long `vmadm console` waits between polls when nothing is new.
pub const CONSOLE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// SmartOS's escape that detaches `vmadm console`: ^] (0x1d).
pub const CONSOLE_DETACH: u8 = 0x1d;

/// The most typed bytes one `POST /vms/:uuid/console` carries.
pub const CONSOLE_POST_MAX: usize = 1024;

/// What `vmadm console` heard from the keyboard while it waited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Typed {
    /// Nothing (the wait ran out).
    Nothing,
    /// Bytes to type at the guest's console.
    Bytes(Vec<u8>),
    /// ^] (or the end of the test's script): detach.
    Detach,
}

/// The terminal in raw-ish mode while `vmadm console` runs (each key as
/// it is typed, no echo, ^C and ^Z to the guest as SmartOS's console
/// passes them), put back as it was when dropped. Done with stty(1): the
/// host tools stay free of `unsafe`.
struct RawTerminal(Option<String>);

impl RawTerminal {
    fn new() -> Self {
        use std::io::IsTerminal;
        use std::process::{Command, Stdio};
        if !io::stdin().is_terminal() {
            return RawTerminal(None);
        }
        let saved = Command::new("stty").arg("-g").stdin(Stdio::inherit()).output().ok().filter(|o| o.status.success());
        let Some(saved) = saved.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()) else {
            return RawTerminal(None);
        };
        let raw = ["-icanon", "-echo", "-isig", "-ixon", "-icrnl", "min", "1", "time", "0"];
        let ok = Command::new("stty").args(raw).stdin(Stdio::inherit()).status().is_ok_and(|s| s.success());
        RawTerminal(ok.then_some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = std::process::Command::new("stty").arg(saved).stdin(std::process::Stdio::inherit()).status();
        }
    }
}

/// The host `vmadm console UUID`: the terminal raw while attached, what is
/// typed sent to the guest, ^] detaches (without a terminal: standard input
/// is sent as it comes, and ^C ends it).
fn console_main(uuid: Uuid, client: &Client) -> i32 {
    use std::sync::mpsc;
    let raw = RawTerminal::new();
    if raw.0.is_some() {
        eprint!("[vmadm console: attached to VM {uuid}; ^] detaches]\r\n");
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 512];
        let mut stdin = io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let (mut ended, mut detach) = (false, false);
    let mut wait = || -> Typed {
        if detach {
            return Typed::Detach;
        }
        if ended {
            std::thread::sleep(CONSOLE_POLL);
            return Typed::Nothing;
        }
        match rx.recv_timeout(CONSOLE_POLL) {
            Ok(bytes) => match bytes.iter().position(|&b| b == CONSOLE_DETACH) {
                Some(0) => Typed::Detach,
                Some(i) => {
                    detach = true;
                    Typed::Bytes(bytes[..i].to_vec())
                }
                None => Typed::Bytes(bytes),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => Typed::Nothing,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                ended = true; // standard input ended: follow on
                Typed::Nothing
            }
        }
    };
    let mut get = |target: &str| client.call("GET", target, None);
    let mut post = |target: &str, body: &Value| client.call("POST", target, Some(body));
    let code = follow_console(uuid, &mut get, &mut post, &mut wait, &mut io::stdout().lock(), &mut io::stderr().lock());
    drop(raw);
    code
}

/// `vmadm console UUID` over the API: prints what the guest wrote (the
/// last 16 KiB the machine keeps, then what comes) as it comes, polling
/// `GET /vms/:uuid/console?offset=N` with `get`, and between polls that
/// found nothing new calls `wait`, which waits for typing (the binary:
/// up to [`CONSOLE_POLL`]); what was typed goes to the guest with `post`
/// (`POST /vms/:uuid/console`, as UTF-8 text, [`CONSOLE_POST_MAX`] bytes
/// a request; what the machine's queue did not take is sent again after
/// the next poll). [`Typed::Detach`] ends it with exit 0. Bytes the
/// machine forgot before they were read (a guest faster than the polls)
/// are counted on `err`. A VM that is unknown or not running at the start
/// gets vmadm's message and exit 1; one that stops while followed ends it
/// with exit 0, as SmartOS's console ends when the VM halts.
pub fn follow_console(
    uuid: Uuid,
    get: &mut dyn FnMut(&str) -> Result<Value, ClientError>,
    post: &mut dyn FnMut(&str, &Value) -> Result<Value, ClientError>,
    wait: &mut dyn FnMut() -> Typed,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut offset = 0u64;
    let mut first = true;
    let mut typed: Vec<u8> = Vec::new();
    let ended = |message: &str, err: &mut dyn Write| {
        let _ = writeln!(err, "\nvmadm console: the console of VM {uuid} ended: {message}");
        EXIT_OK
    };
    loop {
        // What was typed first, as far as the guest's queue takes it.
        while !typed.is_empty() {
            let n = typed.len().min(CONSOLE_POST_MAX);
            let valid = match std::str::from_utf8(&typed[..n]) {
                Ok(t) => t.len(),
                Err(e) => e.valid_up_to(),
            };
            if valid == 0 {
                if n < 4 && typed.len() < 4 && std::str::from_utf8(&typed).err().is_some_and(|e| e.error_len().is_none()) {
                    break; // a character still being typed
                }
                let _ = writeln!(err, "\n[vmadm console: a byte that is not UTF-8 was not sent]");
                typed.remove(0);
                continue;
            }
            let text = String::from_utf8_lossy(&typed[..valid]).into_owned();
            match post(&format!("/vms/{uuid}/console"), &serde_json::json!({ "data": text })) {
                Ok(v) => {
                    let taken = v.get("taken").and_then(Value::as_u64).map_or(0, |t| (t as usize).min(valid));
                    typed.drain(..taken);
                    if taken < valid {
                        break; // the queue is full: again after the next poll
                    }
                }
                Err(ClientError::Api { status: 409, message, .. }) => return ended(&message, err),
                Err(ClientError::Api { status, message, .. }) if status < 500 => {
                    let _ = writeln!(err, "\n{message}");
                    return EXIT_ERROR;
                }
                Err(e) => {
                    let _ = writeln!(err, "\nvmadm: {e}");
                    return EXIT_ERROR;
                }
            }
        }
        let v = match get(&format!("/vms/{uuid}/console?offset={offset}")) {
            Ok(v) => v,
            Err(ClientError::Api { status: 409, message, .. }) if !first => return ended(&message, err),
            Err(ClientError::Api { status, message, .. }) if status < 500 => {
                let _ = writeln!(err, "{message}");
                return EXIT_ERROR;
            }
            Err(e) => {
                let _ = writeln!(err, "vmadm: {e}");
                return EXIT_ERROR;
            }
        };
        let field = |k: &str| v.get(k).and_then(Value::as_u64);
        let (Some(start), Some(next), Some(end), Some(data)) =
            (field("offset"), field("next"), field("end"), v.get("data").and_then(Value::as_str))
        else {
            let _ = writeln!(err, "vmadm: the API's console answer makes no sense: {v}");
            return EXIT_ERROR;
        };
        let lost = field("lost").unwrap_or(0);
        if lost > 0 && !first {
            let _ = writeln!(err, "\n[vmadm console: {lost} bytes of output came and went between two polls]");
        }
        if start < offset && lost == 0 && !first {
            let _ = writeln!(err, "\n[vmadm console: the machine's console restarted; from what it kept]");
        }
        if !data.is_empty() && (write!(out, "{data}").is_err() || out.flush().is_err()) {
            return EXIT_OK; // the reader went away (a pipe closed)
        }
        first = false;
        if next < start || next > end {
            let _ = writeln!(err, "vmadm: the API's console answer makes no sense: {v}");
            return EXIT_ERROR;
        }
        let more = next < end && next != offset;
        offset = next;
        if !more {
            match wait() {
                Typed::Nothing => {}
                Typed::Bytes(b) => typed.extend(b),
                Typed::Detach => return EXIT_OK,
            }
        }
    }
}
