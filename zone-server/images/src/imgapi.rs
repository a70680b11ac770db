//! An IMGAPI client's logic, without its transport (sans-IO): which URLs
//! to fetch from an image source, the answers parsed and checked, and the
//! progress line of an import. The caller does the HTTP: `GET /images`
//! (`imgadm avail`), `GET /images/:uuid` (the manifest), `GET
//! /images/:uuid/file` (the file, its bytes fed to
//! [`crate::store::Install::write`], which checks size and SHA-1).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::Value;

use crate::Error;
use crate::manifest::{Manifest, ManifestError, is_uuid};

/// The largest `/images` answer read (bytes of JSON).
pub const MAX_LIST_BODY: usize = 16 << 20;

/// An image source: `http://` or `https://` host, port and optional path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    url: String,
}

impl Source {
    pub fn new(url: &str) -> Result<Source, Error> {
        let bad = |why: &str| Error::Invalid(format!("image source {url:?}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| bad("must start with http:// or https://"))?;
        if url.len() > 2048 {
            return Err(bad("longer than 2048 characters"));
        }
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        if !url.bytes().all(|b| b.is_ascii_graphic()) || url.contains(['?', '#']) {
            return Err(bad("must be printable ASCII without spaces, a query or a fragment"));
        }
        if rest.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(bad("has a \".\" or \"..\" path segment"));
        }
        Ok(Source { url: url.trim_end_matches('/').to_string() })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `imgadm avail`: every image the source serves.
    pub fn images_url(&self) -> String {
        format!("{}/images", self.url)
    }

    /// One image's manifest.
    pub fn image_url(&self, uuid: &str) -> Result<String, Error> {
        Self::check(uuid)?;
        Ok(format!("{}/images/{uuid}", self.url))
    }

    /// One image's file.
    pub fn file_url(&self, uuid: &str) -> Result<String, Error> {
        Self::check(uuid)?;
        Ok(format!("{}/images/{uuid}/file", self.url))
    }

    fn check(uuid: &str) -> Result<(), Error> {
        if is_uuid(uuid) { Ok(()) } else { Err(Error::Invalid(format!("image {uuid:?}: must be a lower-case UUID"))) }
    }
}

/// The answer to `GET /images`: the images this store can install, and
/// those it cannot (each with why: other types, bad manifests), so `avail`
/// shows what is there and `import` names the reason.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub images: Vec<Manifest>,
    /// (the entry's uuid or `?`, why it was left out)
    pub skipped: Vec<(String, ManifestError)>,
}

/// Parses `GET /images`' body.
pub fn parse_list(body: &[u8]) -> Result<Listing, Error> {
    if body.len() > MAX_LIST_BODY {
        return Err(Error::Invalid(format!("image source answer of {} bytes, at most {MAX_LIST_BODY}", body.len())));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::Invalid(format!("image source answer: not JSON: {e}")))?;
    let Value::Array(list) = v else {
        return Err(Error::Invalid("image source answer: /images must be a JSON list".into()));
    };
    let mut out = Listing::default();
    for entry in list {
        let id = entry.get("uuid").and_then(Value::as_str).unwrap_or("?").to_string();
        match Manifest::from_json(entry) {
            Ok(m) => out.images.push(m),
            Err(e) => out.skipped.push((id, e)),
        }
    }
    Ok(out)
}

/// Parses `GET /images/:uuid`'s body; it must be the image asked for.
pub fn parse_image(body: &[u8], uuid: &str) -> Result<Manifest, Error> {
    let m = Manifest::parse(body)?;
    if m.uuid != uuid {
        return Err(Error::Invalid(format!("image source answered image {} for {uuid}", m.uuid)));
    }
    Ok(m)
}

/// The first line of an import, as imgadm prints it.
pub fn import_line(m: &Manifest, source: &Source) -> String {
    format!("Importing {} ({}@{}) from \"{}\"", m.uuid, m.name, m.version, source.url())
}

/// An import's progress: [`Progress::advance`] gives a new line each time
/// the whole percentage changes (at most 101 lines a file; on a terminal
/// the caller prints each over the last with `\r`).
#[derive(Debug, Clone)]
pub struct Progress {
    uuid: String,
    total: u64,
    done: u64,
    last_percent: Option<u64>,
}

fn mib(bytes: u64) -> String {
    format!("{}.{}MiB", bytes >> 20, ((bytes & 0xfffff) * 10) >> 20)
}

impl Progress {
    pub fn new(m: &Manifest) -> Progress {
        Progress { uuid: m.uuid.clone(), total: m.file.size, done: 0, last_percent: None }
    }

    fn percent(&self) -> u64 {
        (u128::from(self.done.min(self.total)) * 100 / u128::from(self.total.max(1))) as u64
    }

    /// `n` more bytes arrived.
    pub fn advance(&mut self, n: u64) -> Option<String> {
        self.done = self.done.saturating_add(n);
        let p = self.percent();
        if self.last_percent == Some(p) {
            return None;
        }
        self.last_percent = Some(p);
        Some(self.line())
    }

    /// `Downloading image 0b7b3b7e [=====>    ]  42%  12.3MiB of 29.1MiB`.
    pub fn line(&self) -> String {
        let p = self.percent();
        let filled = (p / 5) as usize;
        let mut bar = String::new();
        for i in 0..20 {
            bar.push(if i < filled {
                '='
            } else if i == filled {
                '>'
            } else {
                ' '
            });
        }
        format!("Downloading image {} [{bar}] {p:>3}%  {} of {}", &self.uuid[..8], mib(self.done), mib(self.total))
    }
}
