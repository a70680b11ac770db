//! What `imgadm list`, `avail`, `show` and `get` print, as SmartOS's
//! imgadm does: `list`'s columns `UUID NAME VERSION OS TYPE PUB` (PUB is
//! the date of `published_at`), each padded to its widest value with two
//! spaces between, `-` for a missing value, sorted by `published_at,name`;
//! `-H` leaves the header out, `-o` picks the columns (any manifest
//! property, dotted for nested ones, plus `pub`, `clones`, `source`,
//! `zpool`), `-s` the sort fields (`-` before one: descending), `FIELD=VALUE`
//! arguments keep only the images whose field shows that value, `-j` prints
//! a JSON list of `{manifest, zpool, clones, source}`. `show` prints the
//! manifest, `get` the record, both as JSON indented by two spaces.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::Error;
use crate::imgapi::Listing;
use crate::manifest::Manifest;
use crate::store::ImageRecord;

pub const DEFAULT_COLUMNS: &[&str] = &["uuid", "name", "version", "os", "type", "pub"];
pub const DEFAULT_SORT: &[&str] = &["published_at", "name"];

/// `imgadm list`'s options.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `-H`: no header line.
    pub no_header: bool,
    /// `-o a,b,c`; empty: [`DEFAULT_COLUMNS`].
    pub columns: Vec<String>,
    /// `-s a,-b`; empty: [`DEFAULT_SORT`].
    pub sort: Vec<String>,
    /// `FIELD=VALUE` arguments.
    pub filters: Vec<(String, String)>,
    /// `-j`.
    pub json: bool,
}

fn check_field(what: &str, c: &str) -> Result<(), Error> {
    if c.is_empty() || c.len() > 128 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
        return Err(Error::Invalid(format!("imgadm list: bad field name {c:?} in {what}")));
    }
    Ok(())
}

impl ListOptions {
    /// Reads `-H`, `-j`, `-o LIST`, `-s LIST` and `FIELD=VALUE` arguments.
    pub fn parse(args: &[&str]) -> Result<ListOptions, Error> {
        let mut o = ListOptions::default();
        let mut it = args.iter();
        while let Some(&a) = it.next() {
            match a {
                "-H" => o.no_header = true,
                "-j" => o.json = true,
                "-o" | "-s" => {
                    let list = it.next().ok_or_else(|| Error::Invalid(format!("imgadm list: {a} needs a list of fields")))?;
                    let fields = list.split(',').map(ToString::to_string).collect();
                    if a == "-o" {
                        o.columns = fields;
                    } else {
                        o.sort = fields;
                    }
                }
                f if !f.starts_with('-') && f.contains('=') => {
                    let (k, v) = f.split_once('=').unwrap_or((f, ""));
                    check_field("a filter", k)?;
                    o.filters.push((k.to_string(), v.to_string()));
                }
                other => {
                    return Err(Error::Invalid(format!("imgadm list: unknown option {other:?}")));
                }
            }
        }
        for c in &o.columns {
            check_field("-o", c)?;
        }
        for c in &o.sort {
            check_field("-s", c.strip_prefix('-').unwrap_or(c))?;
        }
        Ok(o)
    }
}

/// One row's source: an installed image, or one a source offers.
struct Row<'a> {
    manifest: &'a Manifest,
    record: Option<&'a ImageRecord>,
}

fn field(r: &Row<'_>, name: &str) -> String {
    let v = match (name, r.record) {
        ("pub", _) => return r.manifest.pub_date().unwrap_or("-").to_string(),
        ("clones", Some(rec)) => return rec.clones.len().to_string(),
        ("zpool", Some(rec)) => return rec.pool.clone(),
        ("source", Some(rec)) => return rec.source.clone().unwrap_or_else(|| "-".into()),
        ("clones" | "zpool" | "source", None) => return "-".into(),
        _ => {
            let mut v = Some(&r.manifest.json);
            for p in name.split('.') {
                v = v.and_then(|x| x.get(p));
            }
            v
        }
    };
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Filters, sorts and lays out rows (every line ends in `\n`).
fn table(mut rows: Vec<Row<'_>>, opts: &ListOptions) -> String {
    rows.retain(|r| opts.filters.iter().all(|(k, v)| field(r, k) == *v));
    let sort: Vec<&str> =
        if opts.sort.is_empty() { DEFAULT_SORT.to_vec() } else { opts.sort.iter().map(String::as_str).collect() };
    rows.sort_by(|a, b| {
        for key in &sort {
            let (desc, key) = match key.strip_prefix('-') {
                Some(k) => (true, k),
                None => (false, *key),
            };
            let (x, y) = (field(a, key), field(b, key));
            // Numbers sort as numbers.
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
    let cols: Vec<&str> =
        if opts.columns.is_empty() { DEFAULT_COLUMNS.to_vec() } else { opts.columns.iter().map(String::as_str).collect() };
    let mut cells: Vec<Vec<String>> = Vec::new();
    if !opts.no_header {
        cells.push(cols.iter().map(|c| c.to_uppercase()).collect());
    }
    for r in &rows {
        cells.push(cols.iter().map(|c| field(r, c)).collect());
    }
    let widths: Vec<usize> = (0..cols.len()).map(|i| cells.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                for _ in cell.chars().count()..widths[i] {
                    line.push(' ');
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table `imgadm list` prints.
pub fn list_table(records: &[ImageRecord], opts: &ListOptions) -> String {
    table(records.iter().map(|r| Row { manifest: &r.manifest, record: Some(r) }).collect(), opts)
}

/// The table `imgadm avail` prints: the images a source offers that this
/// store can install.
pub fn avail_table(listing: &Listing, opts: &ListOptions) -> String {
    table(listing.images.iter().map(|m| Row { manifest: m, record: None }).collect(), opts)
}

/// `imgadm avail -j`: each image a source offers (those `opts`' filters
/// keep) as `{"manifest": ..., "source": URL}`; `images` pairs a manifest
/// with the source that offers it.
pub fn avail_json(images: &[(Manifest, String)], opts: &ListOptions) -> String {
    let kept = images
        .iter()
        .filter(|(m, _)| opts.filters.iter().all(|(k, v)| field(&Row { manifest: m, record: None }, k) == *v))
        .map(|(m, source)| {
            let mut o = Map::new();
            o.insert("manifest".into(), m.json.clone());
            o.insert("source".into(), Value::String(source.clone()));
            Value::Object(o)
        })
        .collect();
    pretty(&Value::Array(kept))
}

fn record_json(r: &ImageRecord, with_names: bool) -> Value {
    let mut m = Map::new();
    m.insert("manifest".into(), r.manifest.json.clone());
    m.insert("zpool".into(), Value::String(r.pool.clone()));
    if with_names {
        m.insert("cloneNames".into(), Value::Array(r.clones.iter().cloned().map(Value::String).collect()));
    }
    m.insert("clones".into(), Value::from(r.clones.len()));
    if let Some(s) = &r.source {
        m.insert("source".into(), Value::String(s.clone()));
    }
    Value::Object(m)
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// `imgadm list -j`.
pub fn list_json(records: &[ImageRecord]) -> String {
    pretty(&Value::Array(records.iter().map(|r| record_json(r, false)).collect()))
}

/// `imgadm list` with its options.
pub fn list(records: &[ImageRecord], opts: &ListOptions) -> String {
    if opts.json {
        let kept: Vec<ImageRecord> = records
            .iter()
            .filter(|r| opts.filters.iter().all(|(k, v)| field(&Row { manifest: &r.manifest, record: Some(r) }, k) == *v))
            .cloned()
            .collect();
        list_json(&kept)
    } else {
        list_table(records, opts)
    }
}

/// `imgadm show UUID`: the manifest.
pub fn show(r: &ImageRecord) -> String {
    pretty(&r.manifest.json)
}

/// `imgadm get UUID`: the manifest with where the image lives and its clones.
pub fn get(r: &ImageRecord) -> String {
    pretty(&record_json(r, true))
}
