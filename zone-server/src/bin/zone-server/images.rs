//! The image store's pool on Alcove: `alcove_images::PoolOps` over
//! storaged's `pool` interface. Image bytes never travel in IPC messages:
//! an image volume being written, and a volume holding an image file being
//! read (`imgadm install -f zones/NAME`), are each granted to zone-server
//! itself and opened as a block ring (`libipc::blkring`), shared pages
//! with a doorbell, as a VMM opens its disks.

use abi::{CapSlot, PAGE_SIZE, Rights};
use alcove_pool::{DatasetInfo, Error};
use alcove_rt::SharedMemory;
use alcove_rt::start::SLOT_SELF;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use libipc::blkring::{RingClient, StorageDoorbell};
use libipc::cap::Cap;
use libipc::interfaces::{POOL_CHUNK_BYTES, PoolError, pool, storage};
use libipc::kernel::{CapTransport, KernelTransport};
use libipc::sys;
use zone_server::slots;

type Ring = RingClient<SharedMemory, StorageDoorbell<KernelTransport>>;

/// Where a ring's capabilities and mapping go: one set for the volume
/// being written, one for the file being read.
#[derive(Clone, Copy)]
pub struct RingPlace {
    grant: CapSlot,
    frame: CapSlot,
    token: CapSlot,
    va: u64,
}

/// The image volume being written (its slots: `zone_server::slots`).
pub const WRITE_PLACE: RingPlace = RingPlace {
    grant: slots::WRITE_RING.grant,
    frame: slots::WRITE_RING.frame,
    token: slots::WRITE_RING.token,
    va: 0x3000_0000,
};
/// The image file being read.
pub const READ_PLACE: RingPlace = RingPlace {
    grant: slots::READ_RING.grant,
    frame: slots::READ_RING.frame,
    token: slots::READ_RING.token,
    va: 0x3800_0000,
};
/// The most address space one ring may take.
const RING_SPAN: u64 = 0x0800_0000;

/// Bytes of a user property one `pool.set` carries (longer ones are
/// appended in pieces).
const PROP_PIECE: usize = 1024;

fn pool_err(e: PoolError) -> Error {
    match e {
        PoolError::NotFound { name } => Error::NotFound(name),
        PoolError::Exists { name } => Error::Exists(name),
        PoolError::Busy { why } => Error::Busy(why),
        PoolError::Invalid { why } => Error::Invalid(why),
        PoolError::NoSpace => Error::NoSpace,
        PoolError::Quota { why } => Error::Quota(why),
        PoolError::Space { why } => Error::Space(why),
        e => Error::Io(e.to_string()),
    }
}

fn ipc_err(e: libipc::IpcError) -> Error {
    Error::Io(format!("storaged: {e}"))
}

/// One volume granted to zone-server and open as a block ring.
pub struct VolumeRing {
    ring: Option<Ring>,
    place: RingPlace,
    storaged: CapSlot,
    badge: u64,
    pub volume: String,
}

impl VolumeRing {
    /// Grants `volume` to this process and opens it.
    pub fn open(storaged: CapSlot, volume: &str, place: RingPlace) -> Result<Self, String> {
        let t = CapTransport::new(Cap::from_slot(storaged), &[place.grant]);
        let granted = pool::Client::new(&t)
            .grant(alloc::vec![volume.to_string()])
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut me = VolumeRing { ring: None, place, storaged, badge: granted.badge, volume: volume.into() };
        if t.received() != 1 {
            return Err("pool: the grant came without its capability".into());
        }
        me.ring = Some(me.open_ring()?);
        Ok(me)
    }

    fn open_ring(&self) -> Result<Ring, String> {
        let p = self.place;
        // storaged watches this process through a copy of its capability.
        sys::cap_copy(SLOT_SELF, p.token, Rights::NONE, 0).map_err(|e| format!("copy of the process capability: {e}"))?;
        let ep = Cap::from_slot(p.grant);
        let t = CapTransport::new(ep, &[p.frame]).sending(&[p.token]);
        let opened = storage::Client::new(&t).open(0);
        let _ = sys::cap_delete(p.token);
        let opened = opened.map_err(|e| format!("open: {e}"))?.map_err(|e| format!("open: {e}"))?;
        if t.received() != 1 {
            return Err("storaged sent no ring".into());
        }
        let pages = u64::from(opened.ring_pages);
        if pages * PAGE_SIZE > RING_SPAN {
            let _ = storage::Client::new(KernelTransport::new(ep)).close(opened.handle);
            let _ = sys::cap_delete(p.frame);
            return Err(format!("a ring of {pages} pages is too large"));
        }
        let region = match SharedMemory::map_frame(p.frame, p.va, pages) {
            Ok(r) => r,
            Err(e) => {
                let _ = storage::Client::new(KernelTransport::new(ep)).close(opened.handle);
                let _ = sys::cap_delete(p.frame);
                return Err(format!("map the ring: {e}"));
            }
        };
        let bell = StorageDoorbell::new(KernelTransport::new(ep), opened.handle);
        RingClient::new(region, bell).map_err(|e| format!("ring: {e}"))
    }

    fn io(&mut self, what: &str, f: impl FnOnce(&mut Ring) -> Result<(), libipc::blkring::BlkError>) -> Result<(), Error> {
        let r = match self.ring.as_mut() {
            Some(ring) => f(ring).map_err(|e| e.to_string()),
            None => Err("the ring is closed".into()),
        };
        r.map_err(|e| Error::Io(format!("{}: {what}: {e}", self.volume)))
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.ring.as_ref().map_or(0, |r| r.capacity_sectors() * 512)
    }
}

impl Drop for VolumeRing {
    /// Closes the ring, unmaps it and ends the grant.
    fn drop(&mut self) {
        if let Some(ring) = self.ring.take() {
            let handle = ring.doorbell().handle();
            let (region, bell) = ring.into_parts();
            let _ = bell.client().close(handle);
            drop(region);
            let _ = sys::cap_delete(self.place.frame);
        }
        let _ = sys::cap_delete(self.place.grant);
        let _ = pool::Client::new(KernelTransport::new(Cap::from_slot(self.storaged))).revoke(self.badge);
    }
}

/// An image file in a pool volume: its first `size` bytes.
pub struct VolumeFile {
    ring: VolumeRing,
    at: u64,
    size: u64,
    sectors: Vec<u8>,
}

impl VolumeFile {
    pub fn open(storaged: CapSlot, volume: &str, size: u64) -> Result<Self, String> {
        let ring = VolumeRing::open(storaged, volume, READ_PLACE)?;
        if ring.capacity_bytes() < size {
            return Err(format!("the volume holds {} bytes, files[0].size says {size}", ring.capacity_bytes()));
        }
        Ok(VolumeFile { ring, at: 0, size, sectors: Vec::new() })
    }
}

impl alcove_images::store::FileReader for VolumeFile {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, alcove_images::Error> {
        let n = (buf.len() as u64).min(self.size - self.at) as usize;
        if n == 0 {
            return Ok(0);
        }
        // The reader asks for whole pieces from a sector boundary; the
        // last piece is rounded up to a sector and cut.
        debug_assert!(self.at.is_multiple_of(512));
        self.sectors.resize(n.div_ceil(512) * 512, 0);
        let sector = self.at / 512;
        let sectors = &mut self.sectors;
        self.ring.io("read", |r| r.read(sector, sectors)).map_err(alcove_images::Error::Pool)?;
        buf[..n].copy_from_slice(&self.sectors[..n]);
        self.at += n as u64;
        Ok(n)
    }
}

/// The image store's pool: storaged's `pool` for names and properties,
/// a block ring for the volume being written.
pub struct IpcPool {
    pub storaged: Option<CapSlot>,
    writer: Option<VolumeRing>,
    /// The stream id of the receive open in storaged, if one is.
    recv: Option<u32>,
}

impl IpcPool {
    pub fn new(storaged: Option<CapSlot>) -> Self {
        IpcPool { storaged, writer: None, recv: None }
    }

    fn client(&self) -> Result<pool::Client<KernelTransport>, Error> {
        let ep = self.storaged.ok_or_else(|| Error::Io("zone-server: no storaged endpoint was granted".into()))?;
        Ok(pool::Client::new(KernelTransport::new(Cap::from_slot(ep))))
    }

    /// Flushes and closes the ring of the volume being written (before the
    /// volume is snapshotted, renamed or destroyed).
    fn close_writer(&mut self) -> Result<(), Error> {
        let Some(mut w) = self.writer.take() else { return Ok(()) };
        let flushed = w.io("flush", |r| r.flush());
        drop(w);
        flushed
    }

    /// A user property's whole value (`None`: the dataset has none).
    fn prop(c: &pool::Client<KernelTransport>, name: &str, key: &str) -> Option<String> {
        let mut bytes = Vec::new();
        loop {
            let offset = u32::try_from(bytes.len()).ok()?;
            let chunk = c.get_prop(name.into(), key.into(), offset).ok()?.ok()?;
            let done = chunk.bytes.is_empty() || bytes.len() + chunk.bytes.len() >= chunk.total_bytes as usize;
            bytes.extend(chunk.bytes);
            if done {
                return String::from_utf8(bytes).ok();
            }
        }
    }

    /// A dataset as [`alcove_images::PoolOps::list`] shows it: a volume's
    /// native properties and, on an image's volume, its stored manifest and
    /// source.
    fn info(c: &pool::Client<KernelTransport>, name: String, snapshot: bool, volsize: u64) -> DatasetInfo {
        let mut info = DatasetInfo {
            name,
            guid: 0,
            snapshot,
            volsize,
            volblocksize: 0,
            creation_txg: 0,
            creation: 0,
            origin: None,
            props: BTreeMap::new(),
        };
        if !info.snapshot {
            if let Some(v) = c.get(info.name.clone()).ok().and_then(Result::ok) {
                info.guid = v.guid;
                info.volblocksize = v.volblocksize;
                info.creation_txg = v.creation_txg;
                info.creation = v.creation;
                info.origin = v.origin;
            }
            Self::image_props(c, &mut info);
        }
        info
    }

    /// On an image's volume (`POOL/UUID`, or one being installed): its
    /// stored manifest and source, into `info.props`.
    fn image_props(c: &pool::Client<KernelTransport>, info: &mut DatasetInfo) {
        let base = info.name.split_once('/').map_or("", |(_, b)| b);
        if alcove_images::manifest::is_uuid(base.strip_suffix("-partial").unwrap_or(base)) {
            for i in 0.. {
                let key = format!("{}.{i}", alcove_images::store::PROP_MANIFEST);
                match Self::prop(c, &info.name, &key) {
                    Some(v) => info.props.insert(key, v),
                    None => break,
                };
            }
            if let Some(v) = Self::prop(c, &info.name, alcove_images::store::PROP_SOURCE) {
                info.props.insert(alcove_images::store::PROP_SOURCE.into(), v);
            }
        }
    }
}

impl alcove_images::PoolOps for IpcPool {
    fn pool_name(&self) -> String {
        self.client().ok().and_then(|c| c.status().ok()?.ok()).map_or_else(|| "zones".into(), |s| s.name)
    }

    fn list(&self) -> Vec<DatasetInfo> {
        let Ok(c) = self.client() else { return Vec::new() };
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let Some(page) = c.list(after).ok().and_then(Result::ok) else { return out };
            for d in page.datasets {
                out.push(Self::info(&c, d.name, d.snapshot, d.volsize));
            }
            match page.next {
                Some(n) => after = n,
                None => return out,
            }
        }
    }

    fn volume(&self, name: &str) -> Option<DatasetInfo> {
        // One volume's user properties, not the whole pool's datasets, nor
        // its native ones (storaged's `get` counts its space): what the
        // image store reads of an image. Its user-property keys are asked
        // for only to learn that it exists.
        if name.contains('@') {
            return None;
        }
        let c = self.client().ok()?;
        c.props(name.into(), String::new()).ok()?.ok()?;
        let mut info = DatasetInfo {
            name: name.into(),
            guid: 0,
            snapshot: false,
            volsize: 0,
            volblocksize: 0,
            creation_txg: 0,
            creation: 0,
            origin: None,
            props: BTreeMap::new(),
        };
        Self::image_props(&c, &mut info);
        Some(info)
    }

    fn create_volume(&mut self, name: &str, volsize: u64, volblocksize: u32) -> Result<(), Error> {
        self.client()?.create(name.into(), volsize, volblocksize).map_err(ipc_err)?.map_err(pool_err)
    }

    fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), Error> {
        if self.writer.as_ref().is_some_and(|w| w.volume != name) {
            self.close_writer()?;
        }
        if self.writer.is_none() {
            let ep = self.storaged.ok_or_else(|| Error::Io("zone-server: no storaged endpoint was granted".into()))?;
            self.writer = Some(VolumeRing::open(ep, name, WRITE_PLACE).map_err(|e| Error::Io(format!("{name}: {e}")))?);
        }
        let w = self.writer.as_mut().ok_or_else(|| Error::Io("no ring".into()))?;
        w.io("write", |r| r.write(offset / 512, data))
    }

    fn sync(&mut self) -> Result<(), Error> {
        match self.writer.as_mut() {
            Some(w) => w.io("flush", |r| r.flush()),
            None => Ok(()),
        }
    }

    fn set_user_prop(&mut self, name: &str, key: &str, value: &str) -> Result<(), Error> {
        let c = self.client()?;
        let mut rest = value;
        let mut first = true;
        while first || !rest.is_empty() {
            let mut end = rest.len().min(PROP_PIECE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            c.set(name.into(), key.into(), rest[..end].into(), !first).map_err(ipc_err)?.map_err(pool_err)?;
            rest = &rest[end..];
            first = false;
        }
        Ok(())
    }

    fn snapshot(&mut self, full: &str) -> Result<(), Error> {
        self.close_writer()?;
        self.client()?.snapshot(full.into()).map_err(ipc_err)?.map_err(pool_err)
    }

    fn clone_snapshot(&mut self, snap: &str, name: &str) -> Result<(), Error> {
        self.client()?.clone_snapshot(snap.into(), name.into()).map_err(ipc_err)?.map_err(pool_err)
    }

    fn destroy(&mut self, name: &str, recursive: bool) -> Result<(), Error> {
        if self.writer.as_ref().is_some_and(|w| w.volume == name) {
            // Whatever it held is going: a failed flush does not matter.
            let _ = self.close_writer();
        }
        self.client()?.destroy(name.into(), recursive).map_err(ipc_err)?.map_err(pool_err)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), Error> {
        self.close_writer()?;
        self.client()?.rename(from.into(), to.into()).map_err(ipc_err)?.map_err(pool_err)
    }

    fn receive_start(&mut self, target: &str) -> Result<(), Error> {
        if self.recv.is_some() {
            return Err(Error::Busy("receive: another receive is open".into()));
        }
        let c = self.client()?;
        self.recv = Some(c.receive(target.into()).map_err(ipc_err)?.map_err(pool_err)?);
        Ok(())
    }

    /// The bytes go to storaged in chunks as they come (storaged checks and
    /// applies each piece of the stream as its last chunk arrives).
    fn receive_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let id = self.recv.ok_or_else(|| Error::Invalid("receive: no receive is open".into()))?;
        let c = self.client()?;
        for piece in bytes.chunks(POOL_CHUNK_BYTES as usize) {
            if let Err(e) = c.receive_chunk(id, piece.to_vec()).map_err(ipc_err).and_then(|r| r.map_err(pool_err)) {
                // storaged ended the stream on its error; closing is harmless.
                let _ = c.close_stream(id);
                self.recv = None;
                return Err(e);
            }
        }
        Ok(())
    }

    fn receive_end(&mut self, finish: bool) -> Result<Option<String>, Error> {
        let id = self.recv.take().ok_or_else(|| Error::Invalid("receive: no receive is open".into()))?;
        let c = self.client()?;
        if !finish {
            // Destroys what the receive wrote.
            let _ = c.close_stream(id);
            return Ok(None);
        }
        c.receive_end(id).map_err(ipc_err)?.map_err(pool_err).map(Some)
    }
}
