//! What `imgadm list`, `show` and `get` print, as SmartOS's imgadm does:
//! `list`'s columns `UUID NAME VERSION OS TYPE PUB` (PUB is the date of
//! `published_at`), each padded to its widest value with two spaces
//! between, `-` for a missing value; `-H` leaves the header out, `-o` picks
//! the columns (any manifest property, dotted for nested ones, plus `pub`,
//! `clones`, `source`, `zpool`), `-j` prints a JSON list of
//! `{manifest, zpool, clones, source}`. `show` prints the manifest, `get`
//! the record, both as JSON indented by two spaces.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::{Map, Value};

use crate::Error;
use crate::store::ImageRecord;

pub const DEFAULT_COLUMNS: &[&str] = &["uuid", "name", "version", "os", "type", "pub"];

/// `imgadm list`'s options.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `-H`: no header line.
    pub no_header: bool,
    /// `-o a,b,c`; empty: [`DEFAULT_COLUMNS`].
    pub columns: Vec<String>,
    /// `-j`.
    pub json: bool,
}

impl ListOptions {
    /// Reads `-H`, `-j`, `-o LIST` from an argument list.
    pub fn parse(args: &[&str]) -> Result<ListOptions, Error> {
        let mut o = ListOptions::default();
        let mut it = args.iter();
        while let Some(&a) = it.next() {
            match a {
                "-H" => o.no_header = true,
                "-j" => o.json = true,
                "-o" => {
                    let list = it.next().ok_or_else(|| Error::Invalid("imgadm list: -o needs a list of fields".into()))?;
                    o.columns = list.split(',').map(ToString::to_string).collect();
                }
                other => {
                    return Err(Error::Invalid(format!("imgadm list: unknown option {other:?}")));
                }
            }
        }
        for c in &o.columns {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
                return Err(Error::Invalid(format!("imgadm list: bad field name {c:?} in -o")));
            }
        }
        Ok(o)
    }
}

fn field(r: &ImageRecord, name: &str) -> String {
    let v = match name {
        "pub" => return r.manifest.pub_date().unwrap_or("-").to_string(),
        "clones" => return r.clones.len().to_string(),
        "zpool" => return r.pool.clone(),
        "source" => return r.source.clone().unwrap_or_else(|| "-".into()),
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

/// The table `imgadm list` prints (every line ends in `\n`).
pub fn list_table(records: &[ImageRecord], opts: &ListOptions) -> String {
    let cols: Vec<&str> =
        if opts.columns.is_empty() { DEFAULT_COLUMNS.to_vec() } else { opts.columns.iter().map(String::as_str).collect() };
    let mut rows: Vec<Vec<String>> = Vec::new();
    if !opts.no_header {
        rows.push(cols.iter().map(|c| c.to_uppercase()).collect());
    }
    for r in records {
        rows.push(cols.iter().map(|c| field(r, c)).collect());
    }
    let widths: Vec<usize> = (0..cols.len()).map(|i| rows.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
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
    if opts.json { list_json(records) } else { list_table(records, opts) }
}

/// `imgadm show UUID`: the manifest.
pub fn show(r: &ImageRecord) -> String {
    pretty(&r.manifest.json)
}

/// `imgadm get UUID`: the manifest with where the image lives and its clones.
pub fn get(r: &ImageRecord) -> String {
    pretty(&record_json(r, true))
}
