//! Bytes a guest writes to its metadata port, in pieces whose sizes the
//! input also chooses: never a panic, the line buffer stays bounded, and
//! every answer is whole lines.
#![no_main]

use alcove_mdata::{MAX_LINE, MetadataServer};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut s = MetadataServer::new(json!({
        "uuid": "2a1b8c34-6f0e-4d1e-9a7b-0c3d5e6f7a8b",
        "hostname": "web01",
        "nics": [{"ip": "10.0.0.5"}],
        "routes": {"10.3.0.0/16": "nics[0]"},
        "internal_metadata_namespaces": ["triton"],
        "customer_metadata": {"user-script": "#!/bin/sh\n"},
        "internal_metadata": {"root_pw": "x"}
    }));
    for piece in rest.chunks(usize::from(split).max(1)) {
        let out = s.feed(piece);
        assert!(out.is_empty() || out.ends_with(b"\n"));
        assert!(s.pending() <= MAX_LINE);
    }
});
