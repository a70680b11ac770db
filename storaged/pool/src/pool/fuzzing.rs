//! What the fuzz targets (storaged/pool/fuzz) reach that the crate does not
//! export: the MOS decoder [`Pool::import`] runs on the newest uberblock's
//! MOS. The other parsers (labels, uberblocks, block pointers, intent-log
//! blocks, send streams) are public already and the targets call them
//! directly. Built only with the `fuzzing` feature.

use super::*;

/// What a MOS decoded to, for a target to check against what import makes
/// of the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MosSummary {
    /// Every dataset, hidden receives included: (id, name), in id order.
    pub datasets: Vec<(u64, String)>,
    pub next_id: u64,
    /// The space map's allocated and free bytes (together: the data region).
    pub allocated_bytes: u64,
    pub free_bytes: u64,
}

/// Decodes `b` as the MOS of txg `txg` of pool `guid` on children of
/// `asize` bytes, as import does (FORMAT.md "MOS"): an error, or what it
/// holds.
pub fn decode_mos(b: &[u8], guid: u64, txg: u64, asize: u64) -> Result<MosSummary, Error> {
    let m = super::decode_mos(b, guid, txg, asize)?;
    Ok(MosSummary {
        datasets: m.datasets.values().map(|d| (d.id, d.name.clone())).collect(),
        next_id: m.next_id,
        allocated_bytes: m.space.allocated().iter().map(|e| e.1).sum(),
        free_bytes: m.space.free_bytes(),
    })
}
