//! `imgadm`'s local verbs as one function the operator shell and the API
//! call: `list`, `show`, `get`, `delete`, `help`, with imgadm's output,
//! errors (`imgadm: error (CODE): message` on stderr) and exit statuses
//! (0, 1, 3 for an image that is not installed). The verbs that move a file
//! or reach a source (`import`, `install`, `avail`, `sources`) need a
//! transport and are driven by the caller (zone-server's `imgsrc`) with
//! [`crate::imgapi`] and [`crate::store::Install`].

use alloc::format;
use alloc::string::String;

use crate::output::{self, ListOptions};
use crate::store::{FileReader, Install};
use crate::{Error, Manifest, PoolOps, store};

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
  imgadm install -m MANIFEST -f FILE
                            installs the image FILE holds (IMGAPI v2 manifest,
                            type zvol; size and files[0].sha1 checked)
  imgadm sources [-j]       the image sources (IMGAPI over http://IPV4[:PORT])
  imgadm sources -a URL     adds a source (kept on the pool)
  imgadm sources -d URL     deletes a source
  imgadm avail [-H] [-j] [-o FIELD,...] [-s FIELD,...] [FIELD=VALUE ...]
                            the images the sources offer
  imgadm import [-q] UUID [-S URL]
                            downloads the image from the first source that
                            has it (or URL): size and files[0].sha1 checked,
                            gzip decompressed; nothing installed on failure

Sources are http:// with an IPv4 host: no TLS or DNS on Alcove yet.
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
        "install" => Err(Error::Invalid(String::from("imgadm install: the caller reads MANIFEST and opens FILE (see cli::install)"))),
        "import" | "avail" | "sources" => {
            Err(Error::Invalid(format!("imgadm {verb}: needs a network transport to the image sources; zone-server serves it")))
        }
        other => Err(Error::Invalid(format!("unknown command: \"{other}\""))),
    };
    match r {
        Ok(stdout) => Output { stdout, stderr: String::new(), status: 0 },
        Err(e) => fail(&e),
    }
}

/// What `imgadm install` reads and how much memory it may use.
pub struct InstallLimits {
    /// Bytes of the file read at a time (a send stream or a raw image
    /// alike goes to the pool as it is read).
    pub read_bytes: usize,
    /// How the process may grow its heap for an xz dictionary that does
    /// not fit it (zone-server on Alcove: `alcove_rt::grow_heap`).
    pub grow_heap: Option<crate::xz::GrowHeap>,
}

/// `imgadm install -m MANIFEST -f FILE`, its arguments read.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    pub manifest: Manifest,
    /// FILE, as given.
    pub file: String,
}

/// Reads `imgadm install -m MANIFEST -f FILE` (the arguments after
/// `imgadm`) with `manifest`, the text MANIFEST names (the caller read it).
pub fn parse_install(args: &[&str], manifest: &str) -> Result<InstallRequest, Error> {
    let usage = || Error::Invalid(String::from("imgadm install: usage: imgadm install -m MANIFEST -f FILE"));
    let (mut m, mut f) = (None, None);
    let mut it = args.iter();
    if it.next() != Some(&"install") {
        return Err(usage());
    }
    while let Some(&a) = it.next() {
        match a {
            "-m" => m = Some(*it.next().ok_or_else(usage)?),
            "-f" => f = Some(*it.next().ok_or_else(usage)?),
            _ => return Err(usage()),
        }
    }
    let (Some(_), Some(file)) = (m, f) else { return Err(usage()) };
    let manifest = Manifest::parse(manifest.as_bytes())?;
    Ok(InstallRequest { manifest, file: String::from(file) })
}

/// Installs `req`'s image from `reader` as `store::Install` does (size,
/// SHA-1 and decompression checked before it is visible; any failure
/// leaves nothing behind): imgadm's line on success.
pub fn install<P: PoolOps, R: FileReader + ?Sized>(
    pool: &mut P,
    req: InstallRequest,
    reader: &mut R,
    limits: &InstallLimits,
) -> Result<String, Error> {
    let m = &req.manifest;
    let done = format!("Installed image {} ({}@{})\n", m.uuid, m.name, m.version);
    let mut inst = Install::begin(pool, req.manifest, None)?;
    if let Some(grow) = limits.grow_heap {
        inst.grow_heap_with(grow);
    }
    let mut buf = alloc::vec![0u8; limits.read_bytes.max(512)];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n.min(buf.len()),
            Err(e) => {
                inst.cancel();
                return Err(e);
            }
        };
        inst.write(&buf[..n])?;
    }
    inst.finish()?;
    Ok(done)
}

/// imgadm's output for a result.
pub fn output(r: Result<String, Error>) -> Output {
    match r {
        Ok(stdout) => Output { stdout, stderr: String::new(), status: 0 },
        Err(e) => fail(&e),
    }
}
