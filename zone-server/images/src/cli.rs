//! `imgadm`'s local verbs as one function the operator shell and the API
//! call: `list`, `show`, `get`, `delete`, `help`, with imgadm's output,
//! errors (`imgadm: error (CODE): message` on stderr) and exit statuses
//! (0, 1, 3 for an image that is not installed). The verbs that move a file
//! (`import`, `install`, `avail`) need a transport and are driven by the
//! caller with [`crate::imgapi`] and [`crate::store::install_from`].

use alloc::format;
use alloc::string::String;

use crate::output::{self, ListOptions};
use crate::{Error, PoolOps, store};

/// What a command printed and its exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: i32,
}

pub const HELP: &str = "\
Usage: imgadm COMMAND [ARGS]

  imgadm list [-H] [-j] [-o FIELD,...] [-s FIELD,...] [FIELD=VALUE ...]
  imgadm show UUID          the image's manifest (JSON)
  imgadm get UUID           the image's manifest, zpool and clones (JSON)
  imgadm delete UUID        refused while an instance's disk is a clone of it

import, install and avail come with the control plane's image transport.
";

fn fail(e: &Error) -> Output {
    Output { stdout: String::new(), stderr: format!("imgadm: error ({}): {e}\n", e.code()), status: e.exit_status() }
}

fn one_uuid<'a>(verb: &str, args: &[&'a str]) -> Result<&'a str, Error> {
    match args {
        [u] if !u.starts_with('-') => Ok(u),
        _ => Err(Error::Invalid(format!("imgadm {verb}: give one image UUID"))),
    }
}

/// Runs `imgadm ARGS…` (without the leading `imgadm`) on the pool.
pub fn run<P: PoolOps>(pool: &mut P, args: &[&str]) -> Output {
    let Some((&verb, rest)) = args.split_first() else {
        return Output { stdout: String::new(), stderr: String::from(HELP), status: 1 };
    };
    let r: Result<String, Error> = match verb {
        "help" | "-h" | "--help" => Ok(String::from(HELP)),
        "list" => ListOptions::parse(rest).map(|o| output::list(&store::list(pool), &o)),
        "show" => one_uuid(verb, rest).and_then(|u| store::get(pool, u)).map(|r| output::show(&r)),
        "get" => one_uuid(verb, rest).and_then(|u| store::get(pool, u)).map(|r| output::get(&r)),
        "delete" => one_uuid(verb, rest).and_then(|u| {
            store::delete(pool, u)?;
            Ok(format!("Deleted image {u}\n"))
        }),
        "import" | "install" | "avail" | "sources" => {
            Err(Error::Invalid(format!("imgadm {verb}: needs the control plane's image transport (not wired yet)")))
        }
        other => Err(Error::Invalid(format!("unknown command: \"{other}\""))),
    };
    match r {
        Ok(stdout) => Output { stdout, stderr: String::new(), status: 0 },
        Err(e) => fail(&e),
    }
}
