//! The metadata protocol as a guest's tools speak it: real request lines
//! (some copied byte for byte from the specification and from frames built
//! with Python's `zlib.crc32`), CRC32 computed here by a bitwise reference
//! independent of the crate's, and hostile input.

use alcove_mdata::{MAX_LINE, MetadataServer, Store, Update};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

/// CRC32 (IEEE, reflected, 0xEDB88320) one bit at a time.
fn crc32_ref(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn frame(reqid: &str, code: &str, payload: Option<&[u8]>) -> String {
    let mut body = format!("{reqid} {code}");
    if let Some(p) = payload {
        body.push(' ');
        body.push_str(&B64.encode(p));
    }
    format!("V2 {} {:08x} {body}\n", body.len(), crc32_ref(body.as_bytes()))
}

/// Parses one answer frame, checking its length and CRC32 here.
fn answer(out: &[u8]) -> (String, String, Option<String>) {
    let s = std::str::from_utf8(out).expect("answer is text");
    let line = s.strip_suffix('\n').expect("answer ends in a newline");
    assert!(!line.contains('\n'), "one frame expected, got {s:?}");
    let rest = line.strip_prefix("V2 ").expect("a V2 frame");
    let (len, rest) = rest.split_once(' ').unwrap();
    let (crc, body) = rest.split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), body.len(), "body length in {s:?}");
    assert_eq!(crc, format!("{:08x}", crc32_ref(body.as_bytes())), "crc32 in {s:?}");
    let mut parts = body.splitn(3, ' ');
    let reqid = parts.next().unwrap().to_string();
    let code = parts.next().unwrap().to_string();
    let payload = parts.next().map(|p| String::from_utf8(B64.decode(p).unwrap()).unwrap());
    (reqid, code, payload)
}

fn vm() -> serde_json::Value {
    json!({
        "uuid": "2a1b8c34-6f0e-4d1e-9a7b-0c3d5e6f7a8b",
        "alias": "web01",
        "hostname": "web01",
        "brand": "bhyve",
        "ram": 1024,
        "resolvers": ["8.8.8.8", "8.8.4.4"],
        "nics": [{"interface": "net0", "mac": "02:08:20:aa:bb:cc", "nic_tag": "admin", "ip": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.1"}],
        "routes": {"10.2.0.0/16": "10.0.0.254", "10.3.0.0/16": "nics[0]"},
        "tags": {"role": "web"},
        "internal_metadata_namespaces": ["triton"],
        "customer_metadata": {
            "user-script": "#!/bin/sh\necho hi\n.hidden\n",
            "root_authorized_keys": "ssh-ed25519 AAAA test",
            "count": 3,
            "root_pw": "should not be served from customer_metadata"
        },
        "internal_metadata": {"root_pw": "s3cret", "triton:role": "db", "operator-script": "#!/bin/sh\ntrue\n"}
    })
}

#[test]
fn reference_crc_matches_python_zlib() {
    // zlib.crc32 values, computed outside Rust.
    assert_eq!(crc32_ref(b""), 0);
    assert_eq!(crc32_ref(b"a"), 0xe8b7be43);
    assert_eq!(crc32_ref(b"123456789"), 0xcbf43926);
    assert_eq!(alcove_mdata::crc32_hex(b"123456789"), "cbf43926");
}

#[test]
fn answers_the_specification_example_byte_for_byte() {
    // Spec §4.4: a GET answered with the payload "[]" and request id dc4fae17.
    let mut s = MetadataServer::new(json!({"customer_metadata": {"list": "[]"}}));
    let out = s.feed(&frame("dc4fae17", "GET", Some(b"list")).into_bytes());
    assert_eq!(out, b"V2 21 265ae1d8 dc4fae17 SUCCESS W10=\n");
}

#[test]
fn frames_built_by_python_are_answered() {
    let mut s = MetadataServer::new(vm());
    // Built with Python's base64 and zlib.crc32 (GET sdc:hostname).
    let out = s.feed(b"V2 29 043d230f 0000abcd GET c2RjOmhvc3RuYW1l\n");
    assert_eq!(out, b"V2 25 a7ea933f 0000abcd SUCCESS d2ViMDE=\n");
    let out = s.feed(b"V2 29 c2963edd 1234beef GET dXNlci1zY3JpcHQ=\n");
    let (id, code, payload) = answer(&out);
    assert_eq!((id.as_str(), code.as_str()), ("1234beef", "SUCCESS"));
    assert_eq!(payload.as_deref(), Some("#!/bin/sh\necho hi\n.hidden\n"));
}

#[test]
fn probe_and_negotiation_as_mdata_client_does_them() {
    let mut s = MetadataServer::new(vm());
    assert_eq!(s.feed(b"\n"), b"invalid command\n");
    assert_eq!(s.feed(b"NEGOTIATE V2\n"), b"V2_OK\n");
    assert_eq!(s.feed(b"NEGOTIATE V3\n"), b"FAILURE\n");
    assert_eq!(s.feed(b"NEGOTIATE\n"), b"invalid command\n");
    assert_eq!(s.feed(b"GET\n"), b"invalid command\n");
    assert_eq!(s.feed(b"FROB x\n"), b"FAILURE\n");
    // A CR before the newline (a guest writing through a tty) is ignored.
    assert_eq!(s.feed(b"NEGOTIATE V2\r\n"), b"V2_OK\n");
}

#[test]
fn v1_get_dot_stuffs_and_terminates() {
    let mut s = MetadataServer::new(vm());
    assert_eq!(s.feed(b"GET user-script\n"), b"SUCCESS\n#!/bin/sh\necho hi\n..hidden\n\n.\n");
    assert_eq!(s.feed(b"GET sdc:uuid\n"), b"SUCCESS\n2a1b8c34-6f0e-4d1e-9a7b-0c3d5e6f7a8b\n.\n");
    assert_eq!(s.feed(b"GET count\n"), b"SUCCESS\n3\n.\n");
    assert_eq!(s.feed(b"GET nothing-here\n"), b"NOTFOUND\n");
    // v1 cannot write.
    assert_eq!(s.feed(b"PUT a b\n"), b"FAILURE\n");
    assert!(s.take_updates().is_empty());
}

fn get(s: &mut MetadataServer, key: &str) -> (String, Option<String>) {
    let out = s.feed(frame("0badf00d", "GET", Some(key.as_bytes())).as_bytes());
    let (id, code, payload) = answer(&out);
    assert_eq!(id, "0badf00d");
    (code, payload)
}

#[test]
fn v2_get_serves_customer_internal_and_sdc_keys() {
    let mut s = MetadataServer::new(vm());
    assert_eq!(get(&mut s, "root_authorized_keys"), ("SUCCESS".into(), Some("ssh-ed25519 AAAA test".into())));
    // _pw keys and listed namespaces come from internal_metadata.
    assert_eq!(get(&mut s, "root_pw"), ("SUCCESS".into(), Some("s3cret".into())));
    assert_eq!(get(&mut s, "triton:role"), ("SUCCESS".into(), Some("db".into())));
    assert_eq!(get(&mut s, "hostname"), ("NOTFOUND".into(), None), "hostname is a customer_metadata key");
    assert_eq!(get(&mut s, "sdc:hostname"), ("SUCCESS".into(), Some("web01".into())));
    assert_eq!(get(&mut s, "sdc:alias"), ("SUCCESS".into(), Some("web01".into())));
    assert_eq!(get(&mut s, "sdc:ram"), ("SUCCESS".into(), Some("1024".into())));
    assert_eq!(get(&mut s, "sdc:tags.role"), ("SUCCESS".into(), Some("web".into())));
    assert_eq!(get(&mut s, "sdc:operator-script"), ("SUCCESS".into(), Some("#!/bin/sh\ntrue\n".into())));
    let (code, nics) = get(&mut s, "sdc:nics");
    assert_eq!(code, "SUCCESS");
    let nics: serde_json::Value = serde_json::from_str(&nics.unwrap()).unwrap();
    assert_eq!(nics[0]["mac"], "02:08:20:aa:bb:cc");
    let (_, resolvers) = get(&mut s, "sdc:resolvers");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&resolvers.unwrap()).unwrap(), json!(["8.8.8.8", "8.8.4.4"]));
    let (_, routes) = get(&mut s, "sdc:routes");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&routes.unwrap()).unwrap(),
        json!([
            {"linklocal": false, "dst": "10.2.0.0/16", "gateway": "10.0.0.254"},
            {"linklocal": true, "dst": "10.3.0.0/16", "gateway": "10.0.0.5"}
        ])
    );
    // Not an sdc field, and an object value: not served.
    assert_eq!(get(&mut s, "sdc:customer_metadata").0, "NOTFOUND");
    assert_eq!(get(&mut s, "sdc:tags").0, "FAILURE");
}

#[test]
fn v2_keys_lists_custom_keys_with_internal_ones() {
    let mut s = MetadataServer::new(vm());
    let (_, code, payload) = answer(&s.feed(frame("00000001", "KEYS", None).as_bytes()));
    assert_eq!(code, "SUCCESS");
    let mut keys: Vec<String> = payload.unwrap().split('\n').map(String::from).collect();
    keys.sort();
    assert_eq!(keys, ["count", "root_authorized_keys", "root_pw", "triton:role", "user-script"]);
}

fn put(s: &mut MetadataServer, key: &str, value: &str) -> (String, Option<String>) {
    let inner = format!("{} {}", B64.encode(key), B64.encode(value));
    let (_, code, payload) = answer(&s.feed(frame("cafe0001", "PUT", Some(inner.as_bytes())).as_bytes()));
    (code, payload)
}

#[test]
fn v2_put_and_delete_change_customer_metadata_and_report_updates() {
    let mut s = MetadataServer::new(vm());
    assert_eq!(put(&mut s, "booted", "yes please"), ("SUCCESS".into(), None));
    assert_eq!(get(&mut s, "booted"), ("SUCCESS".into(), Some("yes please".into())));
    assert_eq!(put(&mut s, "admin_pw", "pw"), ("SUCCESS".into(), None));
    assert_eq!(s.instance()["internal_metadata"]["admin_pw"], "pw");
    let (_, code, _) = answer(&s.feed(frame("cafe0002", "DELETE", Some(b"booted")).as_bytes()));
    assert_eq!(code, "SUCCESS");
    assert_eq!(get(&mut s, "booted").0, "NOTFOUND");
    assert_eq!(
        s.take_updates(),
        [
            Update { store: Store::Customer, key: "booted".into(), value: Some("yes please".into()) },
            Update { store: Store::Internal, key: "admin_pw".into(), value: Some("pw".into()) },
            Update { store: Store::Customer, key: "booted".into(), value: None },
        ]
    );
}

#[test]
fn v2_put_refuses_read_only_namespaces() {
    let mut s = MetadataServer::new(vm());
    assert_eq!(put(&mut s, "sdc:hostname", "evil"), ("FAILURE".into(), Some("Cannot update the \"sdc\" Namespace.".into())));
    assert_eq!(put(&mut s, "triton:role", "evil"), ("FAILURE".into(), Some("Cannot update the \"triton\" Namespace.".into())));
    let (_, code, msg) = answer(&s.feed(frame("cafe0003", "DELETE", Some(b"sdc:uuid")).as_bytes()));
    assert_eq!((code.as_str(), msg.as_deref()), ("FAILURE", Some("Cannot update the \"sdc\" Namespace.")));
    // Malformed PUT payloads.
    let (_, code, msg) = answer(&s.feed(frame("cafe0004", "PUT", Some(b"onlyonefield")).as_bytes()));
    assert_eq!((code.as_str(), msg.as_deref()), ("FAILURE", Some("Invalid PUT Request")));
    let (_, code, _) = answer(&s.feed(frame("cafe0005", "PUT", Some(b"!!! ???")).as_bytes()));
    assert_eq!(code, "FAILURE");
    assert_eq!(get(&mut s, "sdc:hostname").1.as_deref(), Some("web01"));
    assert!(s.take_updates().is_empty());
}

#[test]
fn frames_with_a_bad_crc_or_length_get_no_answer() {
    let mut s = MetadataServer::new(vm());
    let good = frame("0000abcd", "GET", Some(b"sdc:hostname"));
    // One bit of the checksum changed.
    let bad_crc = good.replacen(&good[6..14], &format!("{:08x}", u32::from_str_radix(&good[6..14], 16).unwrap() ^ 1), 1);
    assert_ne!(bad_crc, good);
    assert_eq!(s.feed(bad_crc.as_bytes()), b"");
    // The body altered after the checksum was computed.
    assert_eq!(s.feed(good.replace("GET", "GEt").as_bytes()), b"");
    // The length off by one.
    assert_eq!(s.feed(good.replacen("V2 29 ", "V2 30 ", 1).as_bytes()), b"");
    // Upper-case checksum digits are not the protocol's (043d230f has letters).
    assert_eq!(&good[6..14], "043d230f");
    assert_eq!(s.feed(good.replace("043d230f", "043D230F").as_bytes()), b"");
    assert_eq!(s.stats().bad_frames, 4);
    // The stream is still in step: the good frame is answered.
    assert_eq!(answer(&s.feed(good.as_bytes())).2.as_deref(), Some("web01"));
}

#[test]
fn bytes_one_at_a_time_give_the_same_answers() {
    let script = [
        "\n".to_string(),
        "NEGOTIATE V2\n".into(),
        frame("00000010", "GET", Some(b"user-script")),
        frame("00000011", "KEYS", None),
        "GET sdc:uuid\n".into(),
    ]
    .concat();
    let whole = MetadataServer::new(vm()).feed(script.as_bytes());
    let mut s = MetadataServer::new(vm());
    let mut trickle = Vec::new();
    for b in script.as_bytes() {
        trickle.extend(s.feed(std::slice::from_ref(b)));
    }
    assert_eq!(trickle, whole);
    assert!(whole.starts_with(b"invalid command\nV2_OK\nV2 "));
}

#[test]
fn a_guest_that_never_sends_a_newline_cannot_grow_the_buffer() {
    let mut s = MetadataServer::new(vm());
    let junk = vec![b'A'; 64 * 1024];
    for _ in 0..64 {
        assert_eq!(s.feed(&junk), b"");
        assert!(s.pending() <= MAX_LINE, "buffer grew to {}", s.pending());
    }
    // The end of the over-long line is dropped with it; the next line works.
    assert_eq!(s.feed(b"tail of the long line\n"), b"");
    assert_eq!(s.stats().long_lines, 1);
    assert_eq!(s.feed(b"GET sdc:alias\n"), b"SUCCESS\nweb01\n.\n");
}

#[test]
fn a_put_of_a_large_value_within_the_line_bound_is_kept() {
    let mut s = MetadataServer::new(vm());
    let value: String = (0..100_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    assert_eq!(put(&mut s, "user-data", &value).0, "SUCCESS");
    assert_eq!(get(&mut s, "user-data").1.as_deref(), Some(value.as_str()));
}

#[test]
fn garbage_never_panics_and_keeps_the_bound() {
    let mut s = MetadataServer::new(vm());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let pieces: [&[u8]; 8] = [b"V2 ", b" ", b"\n", b"GET ", b"\xff\xfe", b"00000001", b"PUT", b"=="];
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut buf = Vec::new();
        for k in 0..(x % 8) {
            let r = x.rotate_left(k as u32 * 8);
            if r & 1 == 0 {
                buf.extend_from_slice(pieces[(r >> 1) as usize % pieces.len()]);
            } else {
                buf.push((r >> 8) as u8);
            }
        }
        let out = s.feed(&buf);
        // Every answer is a whole line.
        assert!(out.is_empty() || out.ends_with(b"\n"));
        assert!(s.pending() <= MAX_LINE);
    }
    // Still answers after it all.
    s.feed(b"\n");
    assert_eq!(s.feed(b"GET sdc:alias\n"), b"SUCCESS\nweb01\n.\n");
}

#[test]
fn an_instance_without_metadata_answers_notfound() {
    let mut s = MetadataServer::new(json!({"uuid": "x"}));
    assert_eq!(s.feed(b"GET user-script\n"), b"NOTFOUND\n");
    assert_eq!(s.feed(b"KEYS\n"), b"SUCCESS\n\n.\n");
    let mut s = MetadataServer::new(json!("not an object"));
    assert_eq!(get(&mut s, "sdc:uuid").0, "NOTFOUND");
    assert_eq!(put(&mut s, "k", "v").0, "FAILURE");
}

#[test]
fn puts_cannot_grow_the_metadata_without_bound() {
    let mut s = MetadataServer::new(vm());
    let value = "v".repeat(100_000);
    let mut ok = 0;
    for i in 0..40 {
        let (code, msg) = put(&mut s, &format!("k{i}"), &value);
        if code == "SUCCESS" {
            ok += 1;
        } else {
            assert!(msg.unwrap().contains("at most 1048576"), "k{i}");
        }
    }
    assert_eq!(ok, 10, "ten 100 KB values fit in 1 MiB beside the rest");
    // Replacing a value with one of the same size still works; deleting frees room.
    assert_eq!(put(&mut s, "k0", &value).0, "SUCCESS");
    assert_eq!(answer(&s.feed(frame("cafe0009", "DELETE", Some(b"k0")).as_bytes())).1, "SUCCESS");
    assert_eq!(put(&mut s, "k30", &value).0, "SUCCESS");
    assert_eq!(s.take_updates().len(), 13);
}
