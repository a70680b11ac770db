//! `GET /vms/:uuid/console` through apid's backend, with zone-server's
//! `vmadm.console` answers mocked and the real console server behind
//! `console.tail`: what a VMM put comes back as JSON, with the offsets.

extern crate std;

use super::backend::{CONSOLE_ANSWER_MAX, Vmadm, VmadmBackend};
use super::settings;
use alcove_api::Server;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use console::Console;
use libipc::interfaces::{ConsoleRefusal, ConsoleTail, VmadmConsole, VmadmOutput, console as con, proc_instance_badge};

const TOKEN: &str = "s3cret-token-0123456789";
const RUNNING: &str = "54f1cc77-68f1-42ab-acac-5c4f64f5d6e0";
const STOPPED: &str = "54f1cc77-68f1-42ab-acac-5c4f64f5d6e1";
/// apid's badge at the console.
const APID: u64 = 11;
/// The running VM's VMM.
const VMM: u64 = proc_instance_badge(6);
/// The operator shell, the console's input reader.
const SHELL: u64 = 12;

/// zone-server (its `vmadm.console`) and the console server.
struct Machine {
    console: Console,
    console_calls: Vec<String>,
}

impl Vmadm for Machine {
    fn run(&mut self, _program: &str, _args: Vec<String>, _stdin: String) -> Result<VmadmOutput, String> {
        Err("not in this test".into())
    }
    fn console(&mut self, uuid: &str) -> Result<VmadmConsole, String> {
        self.console_calls.push(uuid.to_string());
        let unable = |why: &str| VmadmConsole {
            code: 1,
            stderr: std::format!("Unable to connect to console of VM {uuid}: {why}\n"),
            ..VmadmConsole::default()
        };
        Ok(match uuid {
            RUNNING => VmadmConsole { code: 0, stderr: String::new(), target: VMM, alias: "web".into() },
            STOPPED => unable("VM is not running"),
            _ => unable("VM not found"),
        })
    }
    fn tail(&mut self, target: u64, from: u64) -> Result<Result<ConsoleTail, ConsoleRefusal>, String> {
        self.console.set_caller(APID);
        Ok(con::Server::tail(&mut self.console, target, from))
    }
    fn feed(&mut self, target: u64, bytes: Vec<u8>) -> Result<Result<u32, ConsoleRefusal>, String> {
        self.console.set_caller(APID);
        Ok(con::Server::feed(&mut self.console, target, bytes))
    }
}

impl Machine {
    fn guest_writes(&mut self, bytes: &[u8]) {
        self.console.set_caller(VMM);
        for piece in bytes.chunks(1024) {
            assert_eq!(con::Server::put(&mut self.console, piece.to_vec()).taken as usize, piece.len());
        }
    }
}

fn api(tailers: &[u64]) -> Server<VmadmBackend<Machine>> {
    let rate = console::rate::Rate { bytes_per_s: u64::MAX / 4, burst: u64::MAX / 4 };
    let console = Console::new(alloc::boxed::Box::new(|_| {}))
        .with_rate(alloc::boxed::Box::new(|| 1), rate)
        .with_tailers(tailers)
        .with_feeders(tailers)
        .with_input_readers(&[SHELL]);
    let s = settings(&["token=".to_string() + TOKEN]).unwrap();
    Server::new(VmadmBackend::new(Machine { console, console_calls: Vec::new() }), s.config)
}

/// One request's status and JSON body.
fn get(s: &mut Server<VmadmBackend<Machine>>, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let auth = token.map(|t| std::format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    exchange(s, &std::format!("GET {path} HTTP/1.1\r\nHost: alcove\r\n{auth}\r\n"))
}

fn post(s: &mut Server<VmadmBackend<Machine>>, path: &str, body: &str) -> (u16, serde_json::Value) {
    let n = body.len();
    exchange(s, &std::format!("POST {path} HTTP/1.1\r\nHost: alcove\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {n}\r\n\r\n{body}"))
}

fn exchange(s: &mut Server<VmadmBackend<Machine>>, req: &str) -> (u16, serde_json::Value) {
    let id = s.accept(0).unwrap();
    assert_eq!(s.receive(id, req.as_bytes(), 0), req.len());
    let out = String::from_utf8(s.output(id).to_vec()).unwrap();
    s.close(id);
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn a_guests_console_line_comes_back_over_http() {
    let mut s = api(&[APID]);
    let path = std::format!("/vms/{RUNNING}/console");
    // Nothing written yet.
    let (status, v) = get(&mut s, &path, Some(TOKEN));
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["data"].as_str(), v["next"].as_u64(), v["end"].as_u64()), (Some(""), Some(0), Some(0)));
    s.backend_mut().vmadm.guest_writes(b"zone-guest: hello from the guest\r\n");
    let (status, v) = get(&mut s, &path, Some(TOKEN));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["uuid"], RUNNING);
    assert_eq!(v["data"], "zone-guest: hello from the guest\r\n");
    assert_eq!((v["offset"].as_u64(), v["next"].as_u64(), v["lost"].as_u64()), (Some(0), Some(34), Some(0)));
    // Following: from `next`, only what is new.
    let (_, v) = get(&mut s, &std::format!("{path}?offset=34"), Some(TOKEN));
    assert_eq!((v["data"].as_str(), v["next"].as_u64()), (Some(""), Some(34)));
    s.backend_mut().vmadm.guest_writes("second line \u{e9}\n".as_bytes());
    let (_, v) = get(&mut s, &std::format!("{path}?offset=34"), Some(TOKEN));
    assert_eq!((v["data"].as_str(), v["next"].as_u64()), (Some("second line \u{e9}\n"), Some(49)));
    // A character split across two writes waits for its second byte.
    s.backend_mut().vmadm.guest_writes(b"\xc3");
    let (_, v) = get(&mut s, &std::format!("{path}?offset=49"), Some(TOKEN));
    assert_eq!((v["data"].as_str(), v["next"].as_u64(), v["end"].as_u64()), (Some(""), Some(49), Some(50)));
    s.backend_mut().vmadm.guest_writes(b"\xa9!");
    let (_, v) = get(&mut s, &std::format!("{path}?offset=49"), Some(TOKEN));
    assert_eq!((v["data"].as_str(), v["next"].as_u64()), (Some("\u{e9}!"), Some(52)));
}

#[test]
fn a_long_console_is_answered_in_bounded_pieces_saying_what_was_lost() {
    let mut s = api(&[APID]);
    let path = std::format!("/vms/{RUNNING}/console");
    let text: String = (0..2000).map(|i| std::format!("line {i:05}\n")).collect();
    s.backend_mut().vmadm.guest_writes(text.as_bytes());
    let total = text.len() as u64;
    let (status, v) = get(&mut s, &path, Some(TOKEN));
    assert_eq!(status, 200);
    let kept = libipc::interfaces::CONSOLE_TAIL_BYTES as u64;
    assert_eq!((v["offset"].as_u64(), v["lost"].as_u64()), (Some(total - kept), Some(total - kept)));
    assert_eq!(v["data"].as_str().unwrap().len(), CONSOLE_ANSWER_MAX);
    assert!(text.ends_with(v["data"].as_str().unwrap()));
    assert_eq!((v["next"].as_u64(), v["end"].as_u64()), (Some(total), Some(total)));
    // A huge offset (the console restarted since): what is kept, from its start.
    let (status, v) = get(&mut s, &std::format!("{path}?offset={}", u64::MAX), Some(TOKEN));
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["offset"].as_u64(), v["lost"].as_u64()), (Some(total - kept), Some(0)));
}

#[test]
fn console_errors_are_4xx_and_say_why() {
    let mut s = api(&[APID]);
    let path = std::format!("/vms/{RUNNING}/console");
    assert_eq!(get(&mut s, &path, None).0, 401);
    assert_eq!(get(&mut s, &path, Some("another-token-0123456789")).0, 403);
    let (status, v) = get(&mut s, &std::format!("{path}?offset=-3"), Some(TOKEN));
    assert_eq!(status, 400, "{v}");
    assert!(s.backend().vmadm.console_calls.is_empty(), "zone-server was asked for a refused request");
    let (status, v) = get(&mut s, "/vms/00000000-0000-4000-8000-000000000000/console", Some(TOKEN));
    assert_eq!(status, 404, "{v}");
    assert!(v["message"].as_str().unwrap().contains("VM not found"), "{v}");
    let (status, v) = get(&mut s, &std::format!("/vms/{STOPPED}/console"), Some(TOKEN));
    assert_eq!(status, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("not running"), "{v}");
    // A console whose tail= does not name apid: the API says so (500),
    // and answers the next request.
    let mut s = api(&[]);
    let (status, v) = get(&mut s, &path, Some(TOKEN));
    assert_eq!(status, 500, "{v}");
    assert!(v["message"].as_str().unwrap().contains("tail="), "{v}");
    assert_eq!(get(&mut s, &path, Some(TOKEN)).0, 500);
}

/// `POST /vms/:uuid/console`: the bytes reach the VMM's `read`s (and not
/// the shell's), as much as its queue holds; the answer says how much.
#[test]
fn typing_at_a_vms_console_over_http_reaches_its_vmm() {
    let mut s = api(&[APID]);
    let path = std::format!("/vms/{RUNNING}/console");
    let (status, v) = post(&mut s, &path, r#"{"data": "uname -a\r"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["taken"], 9);
    let c = &mut s.backend_mut().vmadm.console;
    c.set_caller(SHELL);
    assert!(con::Server::read(c, 64).is_empty(), "the shell got what was typed over HTTP");
    c.set_caller(VMM);
    assert_eq!(con::Server::read(c, 64), b"uname -a\r");
    // A full queue takes what fits; the rest is the client's to send again.
    // (Two posts of 2 KiB fill the queue.)
    let long = "x".repeat(2048);
    let (_, v) = post(&mut s, &path, &std::format!("{{\"data\": \"{long}\"}}"));
    assert_eq!(v["taken"], 2048);
    let (_, v) = post(&mut s, &path, &std::format!("{{\"data\": \"{long}more\"}}"));
    assert_eq!(v["taken"], 2048);
    let (_, v) = post(&mut s, &path, r#"{"data": "more"}"#);
    assert_eq!((v["taken"].as_u64(), v["uuid"].as_str()), (Some(0), Some(RUNNING)));
    // Unknown and stopped VMs as for GET; a console without feed=apid: 500.
    let (status, _) = post(&mut s, "/vms/00000000-0000-4000-8000-000000000000/console", r#"{"data": "x"}"#);
    assert_eq!(status, 404);
    let (status, _) = post(&mut s, &std::format!("/vms/{STOPPED}/console"), r#"{"data": "x"}"#);
    assert_eq!(status, 409);
    let mut s = api(&[]);
    let (status, v) = post(&mut s, &path, r#"{"data": "x"}"#);
    assert_eq!(status, 500, "{v}");
    assert!(v["message"].as_str().unwrap().contains("feed="), "{v}");
}
