//! IMGAPI v2 image manifests: parsed from JSON into checked values, with an
//! error that names the property for anything wrong (IMGAPI's "Image
//! Manifests" reference: `v`, `uuid`, `owner`, `name`, `version`, `type`,
//! `os`, `state`, `disabled`, `public`, `published_at`, `files[]`,
//! `requirements`, `image_size`, …). The JSON itself is kept as given, so
//! `imgadm show` prints every property, known or not.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

use serde_json::{Map, Value};

/// The largest manifest accepted (bytes of JSON). IMGAPI's are a few KiB.
pub const MAX_MANIFEST: usize = 64 * 1024;
/// The largest image (MiB of disk) and image file (bytes) accepted: the
/// pool's largest volume.
pub const MAX_IMAGE_MIB: u64 = alcove_pool::pool::MAX_VOLSIZE >> 20;
pub const MAX_FILE_SIZE: u64 = alcove_pool::pool::MAX_VOLSIZE;

/// A manifest property that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The property, as a path (`files[0].sha1`); empty for the whole.
    pub property: String,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.property.is_empty() {
            write!(f, "manifest: {}", self.message)
        } else {
            write!(f, "manifest property \"{}\": {}", self.property, self.message)
        }
    }
}

fn err(property: &str, message: impl Into<String>) -> ManifestError {
    ManifestError { property: property.to_string(), message: message.into() }
}

/// `type`: only `zvol` images run here (HVM instances); the others are
/// known and refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    Zvol,
}

const OTHER_TYPES: &[&str] = &["zone-dataset", "lx-dataset", "docker", "lxd", "other"];
const OSES: &[&str] = &["smartos", "linux", "windows", "bsd", "illumos", "other"];
const STATES: &[&str] = &["active", "unactivated", "disabled", "creating", "failed"];

/// `files[0].compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
        }
    }
}

/// `requirements.bootrom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootrom {
    Bios,
    Uefi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub sha1: [u8; 20],
    /// Bytes of the file as stored and transferred (compressed).
    pub size: u64,
    pub compression: Compression,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    pub bootrom: Option<Bootrom>,
    pub min_ram_mib: Option<u64>,
    pub max_ram_mib: Option<u64>,
    pub brand: Option<String>,
}

/// A checked manifest. `json` is the manifest as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub uuid: String,
    pub owner: Option<String>,
    pub name: String,
    pub version: String,
    pub image_type: ImageType,
    pub os: String,
    /// The disk the image becomes (MiB).
    pub image_size_mib: u64,
    pub file: ImageFile,
    pub requirements: Requirements,
    pub published_at: Option<String>,
    pub state: String,
    pub disabled: bool,
    pub public: bool,
    pub json: Value,
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower-case hex (as IMGAPI and
/// vmadm write them; the form the pool's volume names use).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 { format!("{}…", &s[..s.floor_char_boundary(60)]) } else { s }
}

fn string<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>, ManifestError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(err(path, format!("must be a string, got {}", show(v)))),
    }
}

fn required_string<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, ManifestError> {
    string(m, key, path)?.ok_or_else(|| err(path, "is required"))
}

fn boolean(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ManifestError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(err(key, format!("must be true or false, got {}", show(v)))),
    }
}

/// A whole number from `min` to `max` (JSON numbers only: IMGAPI writes
/// them as numbers; a negative, fractional or too large one is refused).
fn number(m: &Map<String, Value>, key: &str, path: &str, min: u64, max: u64) -> Result<Option<u64>, ManifestError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(err(path, format!("must be a whole number from {min} to {max}, got {}", show(v)))),
        },
    }
}

fn text(s: &str, path: &str, max: usize) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > max {
        return Err(err(path, format!("must be 1 to {max} characters, got {}", s.len())));
    }
    if s.chars().any(|c| c.is_control()) || s.contains('/') || s.contains('\\') || s == "." || s == ".." {
        return Err(err(path, format!("{s:?}: control characters, slashes, \".\" and \"..\" are not allowed")));
    }
    Ok(())
}

/// `2024-01-31T12:00:00Z` or with fractional seconds (ISO 8601, UTC).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: core::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() >= 20
        && b.len() <= 40
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z')
        && s[19..s.len() - 1].bytes().all(|c| c == b'.' || c.is_ascii_digit())
}

fn hex20(s: &str) -> Option<[u8; 20]> {
    if s.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2)?;
        if !pair.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return None;
        }
        *o = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    /// Parses and checks a manifest from its JSON text.
    pub fn parse(text: &[u8]) -> Result<Manifest, ManifestError> {
        if text.len() > MAX_MANIFEST {
            return Err(err("", format!("{} bytes, at most {MAX_MANIFEST}", text.len())));
        }
        let json: Value = serde_json::from_slice(text).map_err(|e| err("", format!("not valid JSON: {e}")))?;
        Manifest::from_json(json)
    }

    /// Checks a manifest already parsed as JSON.
    pub fn from_json(json: Value) -> Result<Manifest, ManifestError> {
        let m = json.as_object().ok_or_else(|| err("", "must be a JSON object"))?;
        match m.get("v") {
            None => {}
            Some(v) if v.as_u64() == Some(2) => {}
            Some(v) => {
                return Err(err("v", format!("only IMGAPI v2 manifests are read, got {}", show(v))));
            }
        }
        let uuid = required_string(m, "uuid", "uuid")?;
        if !is_uuid(uuid) {
            return Err(err("uuid", format!("{uuid:?}: must be a lower-case UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")));
        }
        let owner = string(m, "owner", "owner")?;
        if let Some(o) = owner
            && !is_uuid(o)
        {
            return Err(err("owner", format!("{o:?}: must be a lower-case UUID")));
        }
        let name = required_string(m, "name", "name")?;
        text(name, "name", 512)?;
        let version = required_string(m, "version", "version")?;
        if version.is_empty()
            || version.len() > 128
            || !version.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-+".contains(&c))
            || version == "."
            || version == ".."
        {
            return Err(err("version", format!("{version:?}: must be 1 to 128 letters, digits and ._-+")));
        }
        let image_type = match required_string(m, "type", "type")? {
            "zvol" => ImageType::Zvol,
            t if OTHER_TYPES.contains(&t) => {
                return Err(err(
                    "type",
                    format!("{t:?} images are not supported yet: Alcove runs HVM instances from \"zvol\" images"),
                ));
            }
            t => {
                return Err(err("type", format!("{t:?}: must be one of zvol, {}", OTHER_TYPES.join(", "))));
            }
        };
        let os = required_string(m, "os", "os")?;
        if !OSES.contains(&os) {
            return Err(err("os", format!("{os:?}: must be one of {}", OSES.join(", "))));
        }
        let state = string(m, "state", "state")?.unwrap_or("active");
        if !STATES.contains(&state) {
            return Err(err("state", format!("{state:?}: must be one of {}", STATES.join(", "))));
        }
        let disabled = boolean(m, "disabled")?.unwrap_or(false);
        let public = boolean(m, "public")?.unwrap_or(false);
        let published_at = string(m, "published_at", "published_at")?;
        if let Some(p) = published_at
            && !is_timestamp(p)
        {
            return Err(err("published_at", format!("{p:?}: must be an ISO 8601 UTC time (2024-01-31T12:00:00Z)")));
        }
        if m.get("origin").is_some_and(|o| !o.is_null()) {
            return Err(err("origin", "incremental images (with an origin) are not supported yet"));
        }
        let image_size_mib = number(m, "image_size", "image_size", 1, MAX_IMAGE_MIB)?
            .ok_or_else(|| err("image_size", "is required for zvol images (MiB)"))?;
        let file = Self::files(m)?;
        let requirements = Self::requirements(m)?;
        for key in ["description", "homepage", "eula", "nic_driver", "disk_driver", "cpu_type"] {
            string(m, key, key)?;
        }
        for key in ["tags", "billing_tags", "traits"] {
            if let Some(v) = m.get(key).filter(|v| !v.is_null())
                && !(v.is_object() || (key == "billing_tags" && v.is_array()))
            {
                return Err(err(
                    key,
                    format!("must be {}, got {}", if key == "billing_tags" { "a list" } else { "an object" }, show(v)),
                ));
            }
        }
        Ok(Manifest {
            uuid: uuid.to_owned(),
            owner: owner.map(str::to_owned),
            name: name.to_owned(),
            version: version.to_owned(),
            image_type,
            os: os.to_owned(),
            image_size_mib,
            file,
            requirements,
            published_at: published_at.map(str::to_owned),
            state: state.to_owned(),
            disabled,
            public,
            json,
        })
    }

    fn files(m: &Map<String, Value>) -> Result<ImageFile, ManifestError> {
        let files = match m.get("files") {
            None | Some(Value::Null) => {
                return Err(err("files", "is required: a list of one file"));
            }
            Some(Value::Array(a)) => a,
            Some(v) => {
                return Err(err("files", format!("must be a list of one file, got {}", show(v))));
            }
        };
        if files.len() != 1 {
            return Err(err("files", format!("must hold exactly one file, got {}", files.len())));
        }
        let f = files[0].as_object().ok_or_else(|| err("files[0]", "must be an object"))?;
        let sha1s = required_string(f, "sha1", "files[0].sha1")?;
        let sha1 = hex20(sha1s).ok_or_else(|| err("files[0].sha1", format!("{sha1s:?}: must be 40 lower-case hex digits")))?;
        let size = number(f, "size", "files[0].size", 1, MAX_FILE_SIZE)?.ok_or_else(|| err("files[0].size", "is required"))?;
        let compression = match required_string(f, "compression", "files[0].compression")? {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "xz" => Compression::Xz,
            "bzip2" => {
                return Err(err("files[0].compression", "\"bzip2\" is not supported; recompress the file with gzip or xz"));
            }
            c => {
                return Err(err("files[0].compression", format!("{c:?}: must be gzip, xz or none")));
            }
        };
        Ok(ImageFile { sha1, size, compression })
    }

    fn requirements(m: &Map<String, Value>) -> Result<Requirements, ManifestError> {
        let r = match m.get("requirements") {
            None | Some(Value::Null) => return Ok(Requirements::default()),
            Some(Value::Object(r)) => r,
            Some(v) => {
                return Err(err("requirements", format!("must be an object, got {}", show(v))));
            }
        };
        let bootrom = match string(r, "bootrom", "requirements.bootrom")? {
            None => None,
            Some("bios") => Some(Bootrom::Bios),
            Some("uefi") => Some(Bootrom::Uefi),
            Some(b) => {
                return Err(err("requirements.bootrom", format!("{b:?}: must be bios or uefi")));
            }
        };
        let min_ram_mib = number(r, "min_ram", "requirements.min_ram", 1, 1 << 30)?;
        let max_ram_mib = number(r, "max_ram", "requirements.max_ram", 1, 1 << 30)?;
        if let (Some(lo), Some(hi)) = (min_ram_mib, max_ram_mib)
            && lo > hi
        {
            return Err(err("requirements.min_ram", format!("{lo} is above requirements.max_ram {hi}")));
        }
        let brand = string(r, "brand", "requirements.brand")?.map(str::to_owned);
        if let Some(v) = r.get("networks").filter(|v| !v.is_null())
            && !v.is_array()
        {
            return Err(err("requirements.networks", format!("must be a list, got {}", show(v))));
        }
        if let Some(v) = r.get("ssh_key").filter(|v| !v.is_null())
            && !v.is_boolean()
        {
            return Err(err("requirements.ssh_key", format!("must be true or false, got {}", show(v))));
        }
        Ok(Requirements { bootrom, min_ram_mib, max_ram_mib, brand })
    }

    /// Bytes of the disk the image becomes.
    pub fn image_bytes(&self) -> u64 {
        self.image_size_mib << 20
    }

    /// `published_at`'s date (`2024-01-31`), as `imgadm list`'s PUB column.
    pub fn pub_date(&self) -> Option<&str> {
        self.published_at.as_deref().map(|p| &p[..10])
    }

    /// The manifest as compact JSON.
    pub fn to_json_string(&self) -> String {
        self.json.to_string()
    }
}
