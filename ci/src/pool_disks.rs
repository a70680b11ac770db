//! Host files as pool volumes for `cargo xtask run --vm FILE.json`
//! (issue 12): storaged serves a VM's disks from the pool `zones`, so a
//! disk the description gives as a host file is imported into a volume of
//! the pool image before the boot and exported back into the file after
//! it, and what the guest wrote lands in the file as it did when the file
//! was the machine's disk.
//!
//! [`to_volumes`] rewrites the description: each `disks[i].path` that is
//! a host file becomes `zones/<uuid>-disk<i>` (`zones/<vm-alias>-disk<i>`
//! without a uuid); disks with a `size` or an `image_uuid` are volumes
//! already. [`import`] copies each file into its volume (created at the
//! file's size; where it exists, only the blocks that differ are written),
//! making the pool on blank files first; [`export`] writes the volume's
//! blocks that differ back into the file, whose length never changes. Both
//! use the pool library, as the host tool `alcove-pool` does
//! (`import-raw`, `export-raw`).

use alcove_pool::Pool;
use alcove_pool::disk::{Disk, FileDisk};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A host file's size must be a multiple of this (a sector).
pub const SECTOR: u64 = 512;
/// Bytes copied at a time.
const CHUNK: u64 = 1 << 20;
/// The pool's name (`vmm_server::config`'s volumes are `zones/...`).
const POOL: &str = "zones";

/// One VM disk that is a host file, and the volume standing in for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDisk {
    /// Its index in `disks`.
    pub index: usize,
    pub file: PathBuf,
    pub volume: String,
    /// The file's length in bytes.
    pub bytes: u64,
}

impl HostDisk {
    /// The volume's block size: the largest power of two from 512 to
    /// 8 KiB (the pool's default) that divides the file's length, so the
    /// volume is exactly as long as the file.
    pub fn volblocksize(&self) -> u32 {
        let mut bs = alcove_pool::pool::DEFAULT_VOLBLOCKSIZE;
        while bs > SECTOR as u32 && !self.bytes.is_multiple_of(u64::from(bs)) {
            bs /= 2;
        }
        bs
    }
}

/// The description `json` (whose relative paths resolve against `dir`)
/// with every host-file disk turned into a pool volume, and those disks.
/// A file that is missing, empty or not a multiple of [`SECTOR`] bytes is
/// refused with the property named.
pub fn to_volumes(json: &str, dir: &Path) -> Result<(String, Vec<HostDisk>), String> {
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let name = match (value.get("uuid").and_then(|v| v.as_str()), value.get("alias").and_then(|v| v.as_str())) {
        (Some(uuid), _) => uuid.to_string(),
        (None, alias) => crate::vm::sanitize(&format!("vm-{}", alias.unwrap_or("guest"))),
    };
    let mut found = Vec::new();
    let Some(disks) = value.get_mut("disks").and_then(|d| d.as_array_mut()) else {
        return Ok((json.to_string(), found));
    };
    for (index, disk) in disks.iter_mut().enumerate() {
        let Some(path) = disk.get("path").and_then(|p| p.as_str()) else { continue };
        if path.starts_with(&format!("{POOL}/")) {
            continue;
        }
        let file = if Path::new(path).is_absolute() { PathBuf::from(path) } else { dir.join(path) };
        let property = format!("vmadm: property \"disks[{index}].path\"");
        let meta = std::fs::metadata(&file).map_err(|e| format!("{property}: {}: {e}", file.display()))?;
        if !meta.is_file() {
            return Err(format!("{property}: {} is not a file", file.display()));
        }
        let bytes = meta.len();
        if bytes == 0 || !bytes.is_multiple_of(SECTOR) {
            return Err(format!(
                "{property}: {} is {bytes} bytes, not a non-zero multiple of the {SECTOR}-byte block size; a \
                 disk image must be whole blocks (truncate -s to round it up)",
                file.display()
            ));
        }
        let volume = format!("{POOL}/{name}-disk{index}");
        if let Some(o) = disk.as_object_mut() {
            o.insert("path".into(), serde_json::Value::String(volume.clone()));
        }
        found.push(HostDisk { index, file, volume, bytes });
    }
    if found.is_empty() {
        return Ok((json.to_string(), found));
    }
    let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
    Ok((text, found))
}

fn open_disks(files: &[PathBuf]) -> Result<Vec<FileDisk>, String> {
    files.iter().map(|f| FileDisk::open(f).map_err(|e| format!("{}: {e}", f.display()))).collect()
}

/// Whether a pool file is blank: no pool label, and its first MiB zero.
fn blank(file: &Path) -> Result<bool, String> {
    let mut d = FileDisk::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if alcove_pool::pool::read_label(&mut d).is_some() {
        return Ok(false);
    }
    let mut head = vec![0u8; CHUNK.min(d.size()) as usize];
    d.read(0, &mut head).map_err(|_| format!("{}: cannot read it", file.display()))?;
    Ok(head.iter().all(|&b| b == 0))
}

/// Imports the pool in `files` (in any order), making the pool `zones`
/// first when every file is blank (absent ones are made, `mib` MiB,
/// sparse). A file holding something else is left untouched.
fn open_pool(files: &[PathBuf], mib: u64) -> Result<Pool<FileDisk>, String> {
    let mut fresh = true;
    for f in files {
        if !f.exists() {
            if let Some(dir) = f.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::File::create(f).and_then(|h| h.set_len(mib << 20)).map_err(|e| format!("{}: {e}", f.display()))?;
        } else if !blank(f)? {
            fresh = false;
        }
    }
    let disks = open_disks(files)?;
    if fresh {
        let guid = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        return Pool::create(POOL, disks, guid).map_err(|e| format!("creating the pool {POOL}: {e}"));
    }
    let pool = Pool::import(disks).map_err(|e| {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        format!("{}: the pool does not import ({e}); the files are left untouched", names.join(", "))
    })?;
    if pool.name() != POOL {
        return Err(format!("the pool in these files is {:?}, not {POOL}", pool.name()));
    }
    Ok(pool)
}

/// What [`import`] and [`export`] did, for the user.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Volumes created.
    pub created: Vec<String>,
    /// Bytes that differed (in whole 512-byte sectors; written in 1 MiB
    /// pieces).
    pub bytes: u64,
}

/// Bytes of the 512-byte sectors in which `new` differs from `old`.
fn changed_bytes(new: &[u8], old: &[u8]) -> u64 {
    new.chunks(SECTOR as usize).zip(old.chunks(SECTOR as usize)).filter(|(a, b)| a != b).map(|(a, _)| a.len() as u64).sum()
}

/// Copies each host file into its volume of the pool in `files` (made on
/// blank files). A new volume is the file's length; an existing one must
/// be too, and only the blocks that differ from the file are written.
pub fn import(files: &[PathBuf], disks: &[HostDisk], mib: u64) -> Result<Copied, String> {
    let mut pool = open_pool(files, mib)?;
    let mut done = Copied::default();
    for d in disks {
        let e = |e: alcove_pool::Error| format!("{}: {e}", d.volume);
        match pool.get(&d.volume) {
            Ok(info) if info.volsize != d.bytes => {
                return Err(format!(
                    "{} is {} bytes but {} in the pool is {} bytes: destroy the volume (alcove-pool {} destroy {}) \
                     or use a file of its size",
                    d.file.display(),
                    d.bytes,
                    d.volume,
                    info.volsize,
                    files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" "),
                    d.volume
                ));
            }
            Ok(_) => {}
            Err(_) => {
                pool.create_volume(&d.volume, d.bytes, d.volblocksize()).map_err(e)?;
                done.created.push(d.volume.clone());
            }
        }
        let mut f = std::fs::File::open(&d.file).map_err(|e| format!("{}: {e}", d.file.display()))?;
        let (mut want, mut have) = (vec![0u8; CHUNK as usize], vec![0u8; CHUNK as usize]);
        let mut at = 0;
        while at < d.bytes {
            let n = (d.bytes - at).min(CHUNK) as usize;
            f.read_exact(&mut want[..n]).map_err(|e| format!("{}: {e}", d.file.display()))?;
            pool.read(&d.volume, at, &mut have[..n]).map_err(e)?;
            if want[..n] != have[..n] {
                pool.write(&d.volume, at, &want[..n]).map_err(e)?;
                done.bytes += changed_bytes(&want[..n], &have[..n]);
            }
            at += n as u64;
            // Bounded memory: commit as the host tool's import-raw does.
            if pool.dirty_bytes() >= 64 * CHUNK {
                pool.sync().map_err(|e| format!("sync: {e}"))?;
            }
        }
    }
    pool.sync().map_err(|e| format!("sync: {e}"))?;
    Ok(done)
}

/// Writes each volume back into its host file: the blocks of the file's
/// length that differ. The pool is left as it is.
pub fn export(files: &[PathBuf], disks: &[HostDisk]) -> Result<Copied, String> {
    let mut pool = Pool::import(open_disks(files)?).map_err(|e| format!("the pool does not import: {e}"))?;
    let mut done = Copied::default();
    for d in disks {
        let info = pool.get(&d.volume).map_err(|e| format!("{}: {e}", d.volume))?;
        if info.volsize != d.bytes {
            return Err(format!("{} is {} bytes, {} {}: not written back", d.file.display(), d.bytes, d.volume, info.volsize));
        }
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&d.file).map_err(|e| format!("{}: {e}", d.file.display()))?;
        let (mut vol, mut old) = (vec![0u8; CHUNK as usize], vec![0u8; CHUNK as usize]);
        let mut at = 0;
        while at < d.bytes {
            let n = (d.bytes - at).min(CHUNK) as usize;
            pool.read(&d.volume, at, &mut vol[..n]).map_err(|e| format!("{}: {e}", d.volume))?;
            f.read_exact(&mut old[..n]).map_err(|e| format!("{}: {e}", d.file.display()))?;
            if vol[..n] != old[..n] {
                f.seek(SeekFrom::Start(at)).and_then(|_| f.write_all(&vol[..n])).map_err(|e| format!("{}: {e}", d.file.display()))?;
                done.bytes += changed_bytes(&vol[..n], &old[..n]);
            }
            at += n as u64;
        }
        f.sync_all().map_err(|e| format!("{}: {e}", d.file.display()))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("alcove-pool-disks-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const JSON: &str = r#"{"uuid":"5e1f0c2a-7b3d-4e9f-a1c2-3d4e5f6a7b8c","alias":"files","brand":"bhyve","ram":256,
        "disks":[{"path":"a.img","model":"virtio"},{"size":16},{"path":"zones/data-disk0"}],
        "kernel":"/images/vmlinuz","cmdline":"console=ttyS0"}"#;

    /// Host-file disks become `zones/<uuid>-disk<i>`; volumes and `size`
    /// disks stay; the result is a description vmm-server takes (no mix).
    #[test]
    fn host_files_become_volumes_named_by_the_vm() {
        let dir = temp("names");
        std::fs::write(dir.join("a.img"), vec![7u8; 3 * 512]).unwrap();
        let (json, disks) = to_volumes(JSON, &dir).unwrap();
        let want = HostDisk { index: 0, file: dir.join("a.img"), volume: "zones/5e1f0c2a-7b3d-4e9f-a1c2-3d4e5f6a7b8c-disk0".into(), bytes: 1536 };
        assert_eq!(disks, [want]);
        assert_eq!(disks[0].volblocksize(), 512, "1536 bytes: 512-byte blocks, so the volume is the file's length");
        let c = vmm_server::config::VmConfig::from_json(&json).unwrap();
        let paths: Vec<&str> = c.disks.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, [disks[0].volume.as_str(), "zones/5e1f0c2a-7b3d-4e9f-a1c2-3d4e5f6a7b8c-disk1", "zones/data-disk0"]);
        // Without a uuid: the VM's alias names them.
        let no_uuid = JSON.replace("\"uuid\":\"5e1f0c2a-7b3d-4e9f-a1c2-3d4e5f6a7b8c\",", "").replace(",{\"size\":16}", "");
        let (_, disks) = to_volumes(&no_uuid, &dir).unwrap();
        assert_eq!(disks[0].volume, "zones/vm-files-disk0");
        // Nothing to do: the text is kept.
        let (same, none) = to_volumes(r#"{"alias":"x","disks":[{"size":4}]}"#, &dir).unwrap();
        assert!(none.is_empty());
        assert_eq!(same, r#"{"alias":"x","disks":[{"size":4}]}"#);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Abuse: a file that is not whole 512-byte blocks, an empty one, a
    /// missing one and a directory are refused, naming the property.
    #[test]
    fn a_file_that_is_not_whole_blocks_is_refused() {
        let dir = temp("refused");
        for (bytes, why) in [(1000usize, "1000 bytes, not a non-zero multiple"), (0, "0 bytes")] {
            std::fs::write(dir.join("a.img"), vec![1u8; bytes]).unwrap();
            let e = to_volumes(JSON, &dir).unwrap_err();
            assert!(e.contains("\"disks[0].path\"") && e.contains(why), "{e}");
        }
        std::fs::remove_file(dir.join("a.img")).unwrap();
        let e = to_volumes(JSON, &dir).unwrap_err();
        assert!(e.contains("\"disks[0].path\"") && e.contains("a.img"), "{e}");
        std::fs::create_dir(dir.join("a.img")).unwrap();
        assert!(to_volumes(JSON, &dir).unwrap_err().contains("is not a file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The round trip `run --vm` makes: the file goes into a new volume of
    /// a new pool, the "guest" (the pool library here) writes to the
    /// volume, and the export puts exactly that into the file, whose
    /// length stays. A second import finds the volume and writes only what
    /// changed in the file; a file of another size is refused; a pool file
    /// holding something else is left untouched.
    #[test]
    fn a_file_goes_into_its_volume_and_the_guests_writes_come_back() {
        let dir = temp("roundtrip");
        let file = dir.join("a.img");
        let bytes: Vec<u8> = (0..(3u64 << 20) + 4096).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(&file, &bytes).unwrap();
        let (_, disks) = to_volumes(JSON, &dir).unwrap();
        let pool = vec![dir.join("pool.img")];
        let done = import(&pool, &disks, 64).unwrap();
        assert_eq!(done.created, [disks[0].volume.clone()]);
        assert_eq!(done.bytes, bytes.len() as u64);
        // The guest overwrites one block.
        {
            let mut p = Pool::import(open_disks(&pool).unwrap()).unwrap();
            assert_eq!(p.get(&disks[0].volume).unwrap().volsize, bytes.len() as u64);
            p.write(&disks[0].volume, 2 << 20, &[0xabu8; 4096]).unwrap();
            p.sync().unwrap();
        }
        let back = export(&pool, &disks).unwrap();
        assert_eq!(back.bytes, 4096, "the guest's 4096 bytes differed (counted in sectors)");
        let mut want = bytes.clone();
        want[2 << 20..(2 << 20) + 4096].fill(0xab);
        assert_eq!(std::fs::read(&file).unwrap(), want, "the guest's write is in the file, nothing else changed");
        // The next run: the volume exists and matches; nothing is written.
        let again = import(&pool, &disks, 64).unwrap();
        assert_eq!(again, Copied::default());
        // The user edits the file between runs: only that goes in.
        let mut edited = want.clone();
        edited[0] ^= 1;
        std::fs::write(&file, &edited).unwrap();
        assert_eq!(import(&pool, &disks, 64).unwrap().bytes, 512, "one byte: its sector");
        // A file of another size than its volume is refused.
        std::fs::write(&file, &edited[..4096]).unwrap();
        let (_, short) = to_volumes(JSON, &dir).unwrap();
        let e = import(&pool, &short, 64).unwrap_err();
        assert!(e.contains("4096 bytes") && e.contains("destroy"), "{e}");
        // A pool file that holds something else: left untouched.
        let other = dir.join("other.img");
        std::fs::write(&other, vec![0x55u8; 2 << 20]).unwrap();
        let e = import(std::slice::from_ref(&other), &disks, 64).unwrap_err();
        assert!(e.contains("left untouched"), "{e}");
        assert!(std::fs::read(&other).unwrap().iter().all(|&b| b == 0x55));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
