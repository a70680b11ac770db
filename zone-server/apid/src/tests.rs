//! apid over netd's real socket server (its smoltcp host stack, through
//! libipc's in-process transport), with a peer machine's stack as the HTTP
//! client, and a zone-server that records the commands it is sent.

extern crate std;

use super::backend::VmadmBackend;
use super::pump::Pump;
use super::settings;
use alcove_api::Server;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use libipc::in_process::{ClientEnd, channel};
use libipc::interfaces::{VmadmOutput, socket};
use netd::sockets::PER_CLIENT_SOCKETS;
use netd::stack::{HostStack, LISTEN_BACKLOG, SocketId, TcpState};
use netd_testkit::{HOST_IP, NoBuffer, SocketRig};
use std::sync::{Arc, Mutex};
const TOKEN: &str = "s3cret-token-0123456789";
const VM: &str = "54f1cc77-68f1-42ab-acac-5c4f64f5d6e0";

type Calls = Arc<Mutex<Vec<(Vec<String>, String)>>>;
type Vmadm = std::boxed::Box<dyn FnMut(&str, Vec<String>, String) -> Result<VmadmOutput, String>>;

/// A zone-server with one VM, `VM`.
fn zone_server(calls: Calls) -> Vmadm {
    std::boxed::Box::new(move |program: &str, mut args: Vec<String>, stdin: String| {
        if program == "imgadm" {
            args.insert(0, program.into()); // recorded and matched as one list
        }
        calls.lock().unwrap().push((args.clone(), stdin.clone()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let ok = |stdout: &str, stderr: &str| Ok(VmadmOutput { stdout: stdout.into(), stderr: stderr.into(), code: 0 });
        let vm = std::format!("{{\"uuid\":\"{VM}\",\"brand\":\"bhyve\",\"state\":\"running\"}}\n");
        match a.as_slice() {
            ["lookup", "-j", ..] => ok(&std::format!("[{}]\n", vm.trim()), ""),
            ["get", u] if *u == VM => ok(&vm, ""),
            ["get", u] => Ok(VmadmOutput { stdout: String::new(), stderr: std::format!("Unable to get VM {u}: VM not found\n"), code: 1 }),
            ["create"] if stdin.contains("\"ram\":\"lots\"") => Ok(VmadmOutput {
                stdout: String::new(),
                stderr: "{\"bad_values\":[\"ram\"],\"bad_properties\":[],\"missing_properties\":[]}\n".into(),
                code: 1,
            }),
            ["create"] => ok("", &std::format!("Successfully created VM {VM}\n")),
            ["stop", u, ..] if *u == VM => ok("", &std::format!("Successfully completed stop for VM {VM}\n")),
            ["delete", _] => ok("", "Successfully deleted VM\n"),
            ["imgadm", ..] => Ok(VmadmOutput { stdout: String::new(), stderr: "vmadm: unknown command imgadm\n".into(), code: 2 }),
            _ => Ok(VmadmOutput { stdout: String::new(), stderr: "vmadm: usage\n".into(), code: 2 }),
        }
    })
}

struct Rig {
    peer: Arc<Mutex<HostStack>>,
    net: socket::Client<ClientEnd>,
    api: Server<VmadmBackend<Vmadm>>,
    pump: Pump,
    now_ms: u64,
    calls: Calls,
    netd: Option<SocketRig<NoBuffer>>,
}

impl Rig {
    fn new() -> Self {
        Self::with_limits(|l| l)
    }

    /// A rig whose apid serves with `limits` made of the configured ones.
    fn with_limits(limits: impl FnOnce(alcove_api::Limits) -> alcove_api::Limits) -> Self {
        let netd = SocketRig::<NoBuffer>::start(&[]);
        let peer = netd.peer.clone();
        let calls: Calls = Arc::default();
        let mut s = settings(&["token=".to_string() + TOKEN, "port=8080".into()]).unwrap();
        s.config.limits = limits(s.config.limits);
        let api = Server::new(VmadmBackend::new(zone_server(calls.clone())), s.config);
        let net = socket::Client::new(netd.client.badged(3));
        let mut r = Rig { peer, net, api, pump: Pump::new(s.port, super::NETD_SOCKETS), now_ms: 0, calls, netd: Some(netd) };
        r.step(); // listening before anyone connects
        r
    }

    fn step(&mut self) {
        self.now_ms += 1;
        self.pump.step(&mut self.api, &mut self.net, self.now_ms).unwrap();
    }

    fn connect(&mut self) -> SocketId {
        let pc = self.peer.lock().unwrap().connect(HOST_IP, 8080).unwrap();
        for _ in 0..50 {
            self.step();
            if self.peer.lock().unwrap().tcp_state(pc) == Ok(TcpState::Established) {
                return pc;
            }
        }
        panic!("the connection was not established");
    }

    fn send(&mut self, pc: SocketId, bytes: &[u8]) {
        let mut sent = 0;
        for _ in 0..10_000 {
            if sent == bytes.len() {
                return;
            }
            sent += self.peer.lock().unwrap().send(pc, &bytes[sent..]).unwrap();
            self.step();
        }
        panic!("sent only {sent} of {} bytes", bytes.len());
    }

    /// Reads responses until `n` whole ones came (or the connection ended).
    fn responses(&mut self, pc: SocketId, n: usize) -> Vec<(u16, String)> {
        let mut got = Vec::new();
        for _ in 0..2000 {
            self.step();
            let r = self.peer.lock().unwrap().recv(pc, 65536);
            match r {
                Ok(b) => got.extend(b),
                Err(_) => break,
            }
            if parse(&got).len() >= n {
                break;
            }
        }
        parse(&got)
    }

    fn exchange(&mut self, request: &str) -> (u16, String) {
        let pc = self.connect();
        self.send(pc, request.as_bytes());
        let r = self.responses(pc, 1);
        let _ = self.peer.lock().unwrap().close(pc);
        r.into_iter().next().unwrap_or((0, String::new()))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(netd) = self.netd.take() {
            drop(core::mem::replace(&mut self.net, socket::Client::new(channel(1).0)));
            netd.finish();
        }
    }
}

/// Whole HTTP responses in `bytes`: status and body (Content-Length framed).
fn parse(bytes: &[u8]) -> Vec<(u16, String)> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(head_end) = rest.find("\r\n\r\n") {
        let head = &rest[..head_end];
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        let body_start = head_end + 4;
        if rest.len() < body_start + len {
            break;
        }
        out.push((status, rest[body_start..body_start + len].to_string()));
        rest = &rest[body_start + len..];
    }
    out
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token.map(|t| std::format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    std::format!("GET {path} HTTP/1.1\r\nHost: alcove\r\n{auth}\r\n")
}

fn post(path: &str, body: &str) -> String {
    std::format!(
        "POST {path} HTTP/1.1\r\nHost: alcove\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn requests_over_netd_become_vmadm_commands() {
    let mut r = Rig::new();
    let (status, body) = r.exchange(&get("/vms?state=running", Some(TOKEN)));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["uuid"], VM);
    let (status, body) = r.exchange(&post("/vms", r#"{"brand":"bhyve","ram":256}"#));
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(VM));
    let (status, body) = r.exchange(&post(&std::format!("/vms/{VM}?action=stop&force=true"), ""));
    assert_eq!(status, 200, "{body}");
    let (status, _) = r.exchange(&std::format!("DELETE /vms/{VM} HTTP/1.1\r\nHost: alcove\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"));
    assert_eq!(status, 204);
    let calls: Vec<Vec<String>> = r.calls.lock().unwrap().iter().map(|c| c.0.clone()).collect();
    let want: Vec<Vec<&str>> = vec![
        vec!["lookup", "-j", "state=running"],
        vec!["create"],
        vec!["get", VM],
        vec!["stop", VM, "-F"],
        vec!["get", VM],
        vec!["delete", VM],
    ];
    assert_eq!(calls, want);
    assert_eq!(r.calls.lock().unwrap()[1].1, r#"{"brand":"bhyve","ram":256}"#);
}

#[test]
fn errors_say_why_with_a_4xx() {
    let mut r = Rig::new();
    // No token, a wrong token: 401, and zone-server hears nothing.
    assert_eq!(r.exchange(&get("/vms", None)).0, 401);
    let (status, body) = r.exchange(&get("/vms", Some("wrong-token-0123456789")));
    assert_eq!(status, 403, "{body}");
    assert!(r.calls.lock().unwrap().is_empty());
    // Bad JSON, a payload vmadm refuses, a VM that is not there.
    let (status, body) = r.exchange(&post("/vms", "{\"brand\": "));
    assert_eq!(status, 400, "{body}");
    let (status, body) = r.exchange(&post("/vms", r#"{"brand":"bhyve","ram":"lots"}"#));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("bad_values"), "{body}");
    let (status, body) = r.exchange(&get("/vms/00000000-0000-4000-8000-000000000000", Some(TOKEN)));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("VM not found"), "{body}");
    // A body over the limit: 413 before it is read, naming the limit.
    // (Its head alone: apid answers and closes before the body comes.)
    let big = post("/vms", &"x".repeat(libipc::interfaces::VMADM_STDIN_MAX as usize + 1));
    let head = &big[..big.find("\r\n\r\n").unwrap() + 4];
    let (status, body) = r.exchange(head);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains(&std::format!("at most {} bytes", libipc::interfaces::VMADM_STDIN_MAX)), "{body}");
    // A header section that never ends: 431 once past 8 KiB.
    let mut endless = String::from("GET /vms HTTP/1.1\r\n");
    for i in 0..400 {
        endless.push_str(&std::format!("X-Filler-{i}: aaaaaaaaaaaaaaaaaaaa\r\n"));
    }
    let (status, _) = r.exchange(&endless);
    assert_eq!(status, 431);
    // imgadm is not at zone-server yet: its usage error, 400.
    let (status, body) = r.exchange(&get("/images", Some(TOKEN)));
    assert_eq!(status, 400, "{body}");
}

/// An apid whose heap could not grow at start (`degraded`) still serves:
/// a small body as ever, a larger one 413 naming its smaller limit; and
/// seven bodies at that limit, with their heads, take a small part of the
/// fixed arena.
#[test]
fn a_degraded_apid_serves_small_bodies_and_refuses_large_ones() {
    let mut r = Rig::with_limits(super::degraded);
    let (status, body) = r.exchange(&post("/vms", r#"{"brand":"bhyve","ram":"lots"}"#));
    assert_eq!(status, 422, "{body}");
    let big = post("/vms", &"x".repeat(super::DEGRADED_BODY_BYTES + 1));
    let head = &big[..big.find("\r\n\r\n").unwrap() + 4];
    let (status, body) = r.exchange(head);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains(&std::format!("at most {} bytes", super::DEGRADED_BODY_BYTES)), "{body}");
    let l = super::degraded(settings(&["token=".to_string() + TOKEN]).unwrap().config.limits);
    // A body parses to a few times its size at most.
    assert!(l.max_connections * (l.max_header_bytes + 4 * l.max_body_bytes) <= alcove_rt::HEAP_BYTES / 2);
}

#[test]
fn pipelined_and_split_requests() {
    let mut r = Rig::new();
    let pc = r.connect();
    // Two requests in one write, then one in 3-byte pieces.
    let two = get(&std::format!("/vms/{VM}"), Some(TOKEN)) + &get("/vms", Some(TOKEN));
    r.send(pc, two.as_bytes());
    let third = get("/ping", None);
    for piece in third.as_bytes().chunks(3) {
        r.send(pc, piece);
    }
    let got = r.responses(pc, 3);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [200, 200, 200], "{got:?}");
    assert!(got[0].1.contains("\"uuid\""));
    assert!(got[2].1.contains("pong"));
}

#[test]
fn many_connections_at_once_stay_within_netds_limits() {
    assert_eq!(super::NETD_SOCKETS, PER_CLIENT_SOCKETS);
    assert_eq!(super::NETD_LISTEN_BACKLOG, LISTEN_BACKLOG);
    let mut r = Rig::new();
    // 20 connections opened one after another and held, then each asks
    // for the list: 7 are served, the next ones were told 503, the rest
    // waited in netd's backlog or were refused (reset) there; apid never
    // holds as many sockets as netd gives it.
    let mut pcs = Vec::new();
    for _ in 0..20 {
        let pc = r.peer.lock().unwrap().connect(HOST_IP, 8080).unwrap();
        for _ in 0..50 {
            r.step();
            assert!(r.pump.connections() + LISTEN_BACKLOG < PER_CLIENT_SOCKETS, "{} connections held", r.pump.connections());
            if r.peer.lock().unwrap().tcp_state(pc) != Ok(TcpState::Pending) {
                break;
            }
        }
        pcs.push(pc);
    }
    let mut bytes: Vec<Vec<u8>> = vec![Vec::new(); pcs.len()];
    for &pc in &pcs {
        let _ = r.peer.lock().unwrap().send(pc, get("/vms", Some(TOKEN)).as_bytes());
    }
    for _ in 0..300 {
        r.step();
        assert!(r.pump.connections() + LISTEN_BACKLOG < PER_CLIENT_SOCKETS, "{} connections held", r.pump.connections());
        for (i, &pc) in pcs.iter().enumerate() {
            if let Ok(b) = r.peer.lock().unwrap().recv(pc, 65536) {
                bytes[i].extend(b);
            }
        }
    }
    let statuses: Vec<u16> = bytes.iter().flat_map(|b| parse(b).into_iter().map(|(s, _)| s)).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), super::MAX_CONNECTIONS, "{statuses:?}");
    assert!(statuses.contains(&503), "some were told to come back: {statuses:?}");
    for pc in pcs {
        let _ = r.peer.lock().unwrap().close(pc);
    }
    // Idle ones are dropped after a minute; then the API serves again.
    for _ in 0..100 {
        r.step();
    }
    r.now_ms += 61_000;
    for _ in 0..100 {
        r.step();
    }
    let (status, body) = r.exchange(&get("/vms", Some(TOKEN)));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_listener_netd_lost_is_made_again() {
    let mut r = Rig::new();
    assert_eq!(r.exchange(&get("/ping", None)).0, 200);
    // netd forgets apid's listener (as a restarted netd knows none of the
    // old one's sockets): here it is closed behind the pump's back.
    let l = r.pump.listener().expect("listening");
    let other = socket::Client::new(r.netd.as_ref().unwrap().client.badged(3));
    other.close(l).unwrap().unwrap();
    r.step();
    r.step();
    assert_eq!(r.pump.relistens, 1);
    assert_ne!(r.pump.listener(), Some(l));
    for _ in 0..3 {
        let (status, body) = r.exchange(&get("/ping", None));
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn settings_need_a_token() {
    assert!(settings(&[]).is_err());
    assert!(settings(&["token=short".into()]).is_err());
    assert!(settings(&["token=".to_string() + TOKEN, "port=0".into()]).is_err());
    assert_eq!(settings(&["token=".to_string() + TOKEN]).unwrap().port, 8080);
}
