//! vmadm's command line, parsed into a [`Command`].
//!
//! ```text
//! vmadm create [-f FILE]
//! vmadm validate create [-f FILE]
//! vmadm validate update BRAND [-f FILE]
//! vmadm list [-p] [-H] [-o field,..] [-s field,..] [field=value ..]
//! vmadm get UUID
//! vmadm lookup [-j] [-1] [-o field,..] [field=value ..]
//! vmadm info UUID [type,..]
//! vmadm start UUID
//! vmadm stop UUID [-F] [-t TIMEOUT]
//! vmadm reboot UUID [-F]
//! vmadm update UUID [-f FILE]
//! vmadm update UUID prop=value [prop=value ..]
//! vmadm delete UUID
//! vmadm console UUID
//! vmadm create-snapshot UUID SNAPNAME
//! vmadm delete-snapshot UUID SNAPNAME
//! vmadm rollback-snapshot UUID SNAPNAME
//! ```
//! A usage error ([`ArgError::Usage`]) is printed before the usage summary
//! with exit code 2; a bad field, filter or option combination
//! ([`ArgError::Invalid`]) is printed alone with exit code 1, as vmadm.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::list::{self, ListFormat};
use crate::registry::Filter;
use crate::uuid::Uuid;
use crate::validate::Action;

/// The default seconds `stop` waits for the guest before halting it (as
/// vmadm for HVM instances).
pub const DEFAULT_STOP_TIMEOUT: u32 = 180;
/// The longest `stop -t`.
pub const MAX_STOP_TIMEOUT: u32 = 24 * 3600;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Create { file: Option<String> },
    Validate { action: Action, brand: Option<String>, file: Option<String> },
    List { format: ListFormat, filters: Vec<Filter> },
    Get { uuid: Uuid },
    Lookup { json: bool, one: bool, fields: Option<Vec<String>>, filters: Vec<Filter> },
    Info { uuid: Uuid, types: Vec<String> },
    Start { uuid: Uuid },
    Stop { uuid: Uuid, force: bool, timeout: u32 },
    Reboot { uuid: Uuid, force: bool },
    Update { uuid: Uuid, file: Option<String>, props: Vec<(String, String)> },
    Delete { uuid: Uuid },
    Console { uuid: Uuid },
    CreateSnapshot { uuid: Uuid, name: String },
    DeleteSnapshot { uuid: Uuid, name: String },
    RollbackSnapshot { uuid: Uuid, name: String },
    Help,
}

/// Why the command line was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// Printed before the usage summary; exit 2.
    Usage(String),
    /// Printed alone; exit 1.
    Invalid(String),
}

pub const USAGE: &str = "Usage: vmadm <command> [options]

create [-f <filename>]
create-snapshot <uuid> <snapname>
console <uuid>
delete <uuid>
delete-snapshot <uuid> <snapname>
get <uuid>
info <uuid> [type,...]
list [-p] [-H] [-o field,...] [-s field,...] [field=value ...]
lookup [-j|-1] [-o field,...] [field=value ...]
reboot <uuid> [-F]
rollback-snapshot <uuid> <snapname>
start <uuid>
stop <uuid> [-F] [-t timeout]
update <uuid> [-f <filename>]
 -or- update <uuid> property=value [property=value ...]
validate create [-f <filename>]
validate update <brand> [-f <filename>]

For more detailed information on the use of this command,type 'man vmadm'.
";

const INFO_TYPES: &[&str] = &["all", "block", "blockstats", "chardev", "cpus", "kvm", "pci", "spice", "version", "vnc"];

fn usage(msg: impl Into<String>) -> ArgError {
    ArgError::Usage(msg.into())
}

fn invalid(msg: impl Into<String>) -> ArgError {
    ArgError::Invalid(msg.into())
}

fn uuid_arg(verb: &str, arg: Option<&str>) -> Result<Uuid, ArgError> {
    match arg {
        None => Err(usage(format!("Invalid or missing UUID for {verb}"))),
        Some(s) => Uuid::parse(s).ok_or_else(|| usage(format!("Invalid or missing UUID for {verb}"))),
    }
}

/// An argument shown in a message, cut to a readable length.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

fn fields(verb: &str, flag: &str, v: Option<&&str>) -> Result<Vec<String>, ArgError> {
    let v = v.ok_or_else(|| usage(format!("{verb}: {flag} needs a comma-separated list of fields")))?;
    let list: Vec<String> = v.split(',').map(str::to_owned).collect();
    if list.iter().any(String::is_empty) || list.len() > 64 {
        return Err(usage(format!("{verb}: {flag}: bad field list \"{}\"", clip(v))));
    }
    Ok(list)
}

/// The longest snapshot name (vmadm's).
pub const MAX_SNAPNAME: usize = 64;

/// A snapshot name as vmadm takes it: 1 to [`MAX_SNAPNAME`] of
/// `[A-Za-z0-9_.:-]` (it becomes part of a pool snapshot's name).
fn snapshot_name(verb: &str, name: &str) -> Result<String, ArgError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    if name.is_empty() || name.len() > MAX_SNAPNAME || !name.chars().all(ok) {
        return Err(invalid(format!(
            "{verb}: invalid snapname \"{}\": 1 to {MAX_SNAPNAME} letters, digits, '_', '.', ':' or '-'",
            clip(name)
        )));
    }
    Ok(name.into())
}

/// Parses vmadm's arguments (without the program name).
pub fn parse(args: &[&str]) -> Result<Command, ArgError> {
    let Some((&verb, rest)) = args.split_first() else { return Err(usage("")) };
    match verb {
        "help" | "-h" | "-?" | "--help" => Ok(Command::Help),
        "create" => match rest {
            [] => Ok(Command::Create { file: None }),
            ["-f", f] => Ok(Command::Create { file: Some((*f).into()) }),
            _ => Err(usage("create: expected [-f <filename>]")),
        },
        "validate" => {
            let (action, brand, more) = match rest {
                ["create", more @ ..] => (Action::Create, None, more),
                ["update", brand, more @ ..] if !brand.starts_with('-') => {
                    (Action::Update, Some((*brand).into()), more)
                }
                ["update", ..] => return Err(usage("Will not validate without a valid action and brand.")),
                _ => return Err(usage("Will not validate without a valid action.")),
            };
            let file = match more {
                [] => None,
                ["-f", f] => Some((*f).into()),
                _ => return Err(usage("validate: expected [-f <filename>]")),
            };
            Ok(Command::Validate { action, brand, file })
        }
        "list" | "lookup" => {
            let mut format = ListFormat::default();
            let (mut json, mut one, mut out_fields, mut filters) = (false, false, None, Vec::new());
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match (verb, *a) {
                    (_, "-o") => out_fields = Some(fields(verb, "-o", it.next())?),
                    ("list", "-s") => format.sort = fields(verb, "-s", it.next())?,
                    ("list", "-p") => format.parsable = true,
                    ("list", "-H") => format.header = false,
                    ("lookup", "-j") => json = true,
                    ("lookup", "-1") => one = true,
                    (_, s) if s.starts_with('-') => {
                        return Err(usage(format!("{verb}: unknown option \"{}\"", clip(s))));
                    }
                    (_, s) => {
                        filters.push(
                            Filter::parse(s)
                                .map_err(|e| if e.starts_with("Bad arguments") { usage(e) } else { invalid(e) })?,
                        )
                    }
                }
            }
            if filters.len() > 64 {
                return Err(usage(format!("{verb}: at most 64 filters")));
            }
            for f in &filters {
                if !list::filter_key(&f.field) {
                    let what = if verb == "list" { "filter" } else { "lookup" };
                    return Err(invalid(format!("Invalid {what} key: \"{}\"", clip(&f.field))));
                }
            }
            if verb == "list" {
                if let Some(f) = out_fields {
                    format.fields = f;
                }
                for (keys, what) in [(&format.fields, "order"), (&format.sort, "sort")] {
                    if let Some(k) = keys.iter().find(|k| k.contains(".*")) {
                        return Err(invalid(format!("Invalid {what} key: \"{}\"", clip(k))));
                    }
                }
                list::check_fields(&format.fields, false).map_err(invalid)?;
                list::check_fields(&format.sort, true).map_err(invalid)?;
                if format.parsable {
                    format.header = false;
                }
                Ok(Command::List { format, filters })
            } else {
                if out_fields.is_some() && !json {
                    return Err(invalid("Cannot specify -o without -j"));
                }
                Ok(Command::Lookup { json, one, fields: out_fields, filters })
            }
        }
        "get" | "start" | "delete" | "console" => {
            let uuid = uuid_arg(verb, rest.first().copied())?;
            if rest.len() > 1 {
                return Err(usage(format!("{verb}: unexpected argument \"{}\"", clip(rest[1]))));
            }
            Ok(match verb {
                "get" => Command::Get { uuid },
                "start" => Command::Start { uuid },
                "delete" => Command::Delete { uuid },
                _ => Command::Console { uuid },
            })
        }
        "info" => {
            let uuid = uuid_arg(verb, rest.first().copied())?;
            let mut types = Vec::new();
            for a in rest.iter().skip(1) {
                for t in a.split(',').filter(|t| !t.is_empty()) {
                    if !INFO_TYPES.contains(&t) {
                        return Err(usage(format!("Invalid info type: {}", clip(t))));
                    }
                    types.push(t.to_owned());
                }
            }
            Ok(Command::Info { uuid, types })
        }
        "stop" | "reboot" => {
            // Options before or after the uuid (`vmadm stop -F UUID` as
            // SmartOS's takes it, and `vmadm stop UUID -F` as its usage
            // shows).
            let (mut force, mut timeout, mut uuid) = (false, DEFAULT_STOP_TIMEOUT, None);
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match *a {
                    "-F" => force = true,
                    "-t" if verb == "stop" => {
                        let t = it.next().ok_or_else(|| usage("stop: -t needs a timeout in seconds"))?;
                        timeout =
                            t.parse::<u32>().ok().filter(|t| (1..=MAX_STOP_TIMEOUT).contains(t)).ok_or_else(|| {
                                usage(format!(
                                    "stop: -t: expected 1 to {MAX_STOP_TIMEOUT} seconds, got \"{}\"",
                                    clip(t)
                                ))
                            })?;
                    }
                    other if uuid.is_none() && !other.starts_with('-') => uuid = Some(other),
                    other => return Err(usage(format!("{verb}: unexpected argument \"{}\"", clip(other)))),
                }
            }
            let uuid = uuid_arg(verb, uuid)?;
            Ok(if verb == "stop" { Command::Stop { uuid, force, timeout } } else { Command::Reboot { uuid, force } })
        }
        "update" => {
            let uuid = uuid_arg(verb, rest.first().copied())?;
            match &rest[1..] {
                [] => Ok(Command::Update { uuid, file: None, props: Vec::new() }),
                ["-f", f] => Ok(Command::Update { uuid, file: Some((*f).into()), props: Vec::new() }),
                pairs => {
                    let mut props = Vec::new();
                    for p in pairs {
                        match p.split_once('=') {
                            Some((k, v)) if !k.is_empty() && !k.starts_with('-') => props.push((k.into(), v.into())),
                            _ => return Err(usage(format!("update: expected property=value, got \"{}\"", clip(p)))),
                        }
                    }
                    Ok(Command::Update { uuid, file: None, props })
                }
            }
        }
        "create-snapshot" | "delete-snapshot" | "rollback-snapshot" => {
            let uuid = uuid_arg(verb, rest.first().copied())?;
            let name = match rest {
                [_, name] => snapshot_name(verb, name)?,
                [_] => return Err(usage(format!("{verb}: missing snapname"))),
                _ => return Err(usage(format!("{verb}: unexpected argument \"{}\"", clip(rest[2])))),
            };
            Ok(match verb {
                "create-snapshot" => Command::CreateSnapshot { uuid, name },
                "delete-snapshot" => Command::DeleteSnapshot { uuid, name },
                _ => Command::RollbackSnapshot { uuid, name },
            })
        }
        other => Err(usage(format!("Invalid command: \"{}\".", clip(other)))),
    }
}
