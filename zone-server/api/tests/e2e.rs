//! End to end on the host: the blocking client and the host binaries
//! against the sans-IO server run over real localhost sockets
//! (`std_server`, a thread per connection), with the mock backend.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;

use alcove_api::blocking::{Client, ClientError};
use alcove_api::std_server::{Shared, serve};
use alcove_api::{Config, Limits, Server, Token, Uuid};
use common::{Mock, TOKEN};
use serde_json::{Value, json};

/// A server on a free localhost port: its base URL and the shared server.
fn start(limits: Limits) -> (String, Shared<Mock>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = Arc::new(Mutex::new(Server::new(Mock::default(), Config { token: Token::new(TOKEN).unwrap(), limits })));
    let s = Arc::clone(&server);
    thread::spawn(move || serve(listener, s));
    (url, server)
}

#[test]
fn client_and_server_over_tcp() {
    let (url, server) = start(Limits::default());
    let c = Client::new(&url, Some(TOKEN)).unwrap();
    let vm = c.call("POST", "/vms", Some(&json!({"brand": "bhyve", "ram": 512, "alias": "web"}))).unwrap();
    let uuid = vm["uuid"].as_str().unwrap().to_string();
    assert_eq!(c.call("GET", &format!("/vms/{uuid}"), None).unwrap()["alias"], "web");
    assert_eq!(c.call("POST", &format!("/vms/{uuid}?action=start"), None).unwrap()["state"], "running");
    assert_eq!(c.call("GET", "/vms?state=running", None).unwrap().as_array().unwrap().len(), 1);
    assert_eq!(c.call("DELETE", &format!("/vms/{uuid}"), None).unwrap(), Value::Null);

    // A 4xx: the server's code and message.
    match c.call("GET", &format!("/vms/{uuid}"), None) {
        Err(ClientError::Api { status: 404, code, message, .. }) => {
            assert_eq!((code.as_str(), message), ("ResourceNotFound", format!("VM {uuid} not found")));
        }
        other => panic!("{other:?}"),
    }
    match c.call("POST", "/vms", Some(&json!({"ram": "lots"}))) {
        Err(e @ ClientError::Api { status: 422, .. }) => {
            assert_eq!(e.to_string(), "Invalid VM payload (422 ValidationFailed)");
            let ClientError::Api { body, .. } = e else { unreachable!() };
            assert_eq!(body["errors"]["bad_values"], json!(["ram"]));
        }
        other => panic!("{other:?}"),
    }
    // No token, a wrong one.
    let e = Client::new(&url, None).unwrap().call("GET", "/vms", None).unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized(_)), "{e:?}");
    assert!(e.to_string().starts_with("the API wants a token (set ALCOVE_TOKEN"), "{e}");
    let e = Client::new(&url, Some("not-the-token-at-all-0000")).unwrap().call("GET", "/vms", None).unwrap_err();
    assert!(matches!(e, ClientError::Forbidden(_)), "{e:?}");
    // Ping needs none.
    assert_eq!(Client::new(&url, None).unwrap().call("GET", "/ping", None).unwrap(), json!({"ping": "pong"}));
    // Every connection was closed (the client asks for it).
    for _ in 0..100 {
        if server.lock().unwrap().connections() == 0 {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(server.lock().unwrap().connections(), 0);
}

#[test]
fn connection_refused_is_said_plainly() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = Client::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN)).unwrap().call("GET", "/vms", None).unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("cannot connect to http://127.0.0.1:{port}: connection refused (is Alcove's API up there? ALCOVE_URL sets the address)")
    );
    let e = Client::new("https://127.0.0.1", None).unwrap_err();
    assert_eq!(e.to_string(), "API address: https://127.0.0.1: only http:// addresses are taken (no TLS here)");
    let e = Client::new("http://127.0.0.1", Some("short")).unwrap_err();
    assert!(e.to_string().contains("needs 16 to 512"), "{e}");
}

#[test]
fn pipelined_and_split_over_a_real_socket() {
    let (url, _server) = start(Limits::default());
    let mut s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    let one = format!("GET /vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let last = "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let all = format!("{one}{one}{last}");
    // In small writes, with pauses the server reads between.
    for piece in all.as_bytes().chunks(7) {
        s.write_all(piece).unwrap();
        s.flush().unwrap();
    }
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
    assert!(out.ends_with("{\"ping\":\"pong\"}"), "{out}");
}

#[test]
fn oversized_request_over_a_real_socket() {
    let (url, _server) = start(Limits { max_body_bytes: 1000, ..Limits::default() });
    let mut s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    s.write_all(format!("POST /vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 5000\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 413 Content Too Large\r\n"), "{out}");
    assert!(out.contains("Connection: close"));
    assert!(out.ends_with(r#"{"code":"RequestEntityTooLarge","message":"the body is 5000 bytes; this API takes at most 1000 bytes"}"#), "{out}");
}

fn cli(bin: &str, url: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("ALCOVE_URL", url).env_remove("ALCOVE_TOKEN").env_remove("ALCOVE_TOKEN_FILE");
    if let Some(t) = token {
        cmd.env("ALCOVE_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn host_binaries_against_the_server() {
    let (url, server) = start(Limits::default());
    let vmadm = env!("CARGO_BIN_EXE_vmadm");
    let imgadm = env!("CARGO_BIN_EXE_imgadm");
    let dir = std::env::temp_dir().join(format!("alcove-api-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let payload = dir.join("vm.json");
    std::fs::write(&payload, r#"{"brand":"bhyve","ram":512,"alias":"db"}"#).unwrap();

    // As SmartOS's vmadm: the verbs' messages on stderr, nothing on stdout.
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["validate", "create", "-f", payload.to_str().unwrap()]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", "VALID 'create' payload for bhyve brand VMs.\n"));
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["create", "-f", payload.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let uuid = err.strip_prefix("Successfully created VM ").and_then(|u| u.strip_suffix('\n')).expect(&err).to_string();
    assert!(Uuid::parse(&uuid).is_some(), "{err}");
    let (code, out, _) = cli(vmadm, &url, Some(TOKEN), &["get", &uuid]);
    assert_eq!((code, serde_json::from_str::<Value>(&out).unwrap()["alias"].clone()), (0, json!("db")));
    let (code, out, _) = cli(vmadm, &url, Some(TOKEN), &["lookup", "alias=db"]);
    assert_eq!((code, out), (0, format!("{uuid}\n")));
    // `vmadm list` as vmadm prints it: the default columns, or -o/-p/-H.
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines, [vec!["UUID", "TYPE", "RAM", "STATE", "ALIAS"], vec![uuid.as_str(), "BHYV", "512", "stopped", "db"]], "{out}");
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["list", "-p", "-o", "alias,ram", "alias=db"]);
    assert_eq!((code, out.as_str()), (0, "db:512\n"), "{err}");
    let (code, out, _) = cli(vmadm, &url, Some(TOKEN), &["list", "-H", "alias=nobody"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["start", &uuid]);
    assert_eq!((code, out.as_str(), err), (0, "", format!("Successfully started VM {uuid}\n")));
    // A refusal: vmadm's message (the backend's here) and exit 1.
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["start", &uuid]);
    assert_eq!((code, out.as_str(), err), (1, "", format!("VM {uuid} is running already\n")));
    let (code, _, err) = cli(vmadm, &url, Some(TOKEN), &["reboot", &uuid]);
    assert_eq!((code, err), (0, format!("Successfully completed reboot for VM {uuid}\n")));
    let (code, _, err) = cli(vmadm, &url, Some(TOKEN), &["update", &uuid, "alias=db2"]);
    assert_eq!((code, err), (0, format!("Successfully updated VM {uuid}\n")));
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["stop", &uuid, "-F"]);
    assert_eq!((code, out.as_str(), err), (0, "", format!("Successfully completed stop for VM {uuid}\n")));
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["delete", &uuid]);
    assert_eq!((code, out.as_str(), err), (0, "", format!("Successfully deleted VM {uuid}\n")));
    let (code, _, err) = cli(vmadm, &url, Some(TOKEN), &["get", &uuid]);
    assert_eq!((code, err), (1, format!("VM {uuid} not found\n")));
    for verb in ["start", "stop", "reboot"] {
        let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &[verb, &uuid]);
        assert_eq!((code, out.as_str(), err), (1, "", format!("VM {uuid} not found\n")), "{verb}");
    }
    let (code, _, err) = cli(vmadm, &url, Some(TOKEN), &["delete", &uuid]);
    assert_eq!((code, err), (1, format!("Failed to delete VM {uuid}: VM {uuid} not found\n")));
    let (code, _, err) = cli(vmadm, &url, Some(TOKEN), &["validate", "create", "-f", dir.join("none.json").to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    std::fs::write(&payload, r#"{"ram":"lots"}"#).unwrap();
    let (code, _, err) = cli(vmadm, &url, Some(TOKEN), &["validate", "create", "-f", payload.to_str().unwrap()]);
    assert_eq!(code, 1);
    // vmadm validate prints the problems' JSON alone.
    assert!(err.starts_with("{\n  \"bad_properties\""), "{err}");
    let problems: Value = serde_json::from_str(&err).expect(&err);
    assert!(problems.get("bad_properties").is_some(), "{err}");
    // create of the same payload: the message, then the problems.
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["create", "-f", payload.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.starts_with("Invalid VM payload\n{\n  \"bad_properties\""), "{err}");
    let (code, _, err) = cli(vmadm, &url, None, &["list"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("vmadm: the API wants a token"), "{err}");
    let (code, _, err) = cli(vmadm, &url, Some(TOKEN), &["bogus"]);
    assert_eq!(code, 2, "{err}");
    // The token from a file (with the line end an editor leaves).
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let out = Command::new(imgadm)
        .args(["list"])
        .env("ALCOVE_URL", &url)
        .env_remove("ALCOVE_TOKEN")
        .env("ALCOVE_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    // imgadm's table (the header alone: no image yet); -j its JSON.
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "UUID  NAME  VERSION  OS  TYPE  PUB\n"));
    let (code, out, _) = cli(imgadm, &url, Some(TOKEN), &["list", "-j"]);
    assert_eq!((code, out.trim()), (0, "[]"));
    let img = "01b2c898-945f-11e1-a523-af1afbe22822";
    let (code, out, err) = cli(imgadm, &url, Some(TOKEN), &["import", img, "-S", "http://10.0.2.2:8081"]);
    assert_eq!((code, out, err), (0, format!("Imported image {img} (remote@-)\n"), String::new()));
    assert!(server.lock().unwrap().backend().images.contains_key(img));
    let (code, out, _) = cli(imgadm, &url, Some(TOKEN), &["list", "-H"]);
    assert_eq!((code, out), (0, format!("{img}  remote  -  -  -  -\n")));
    let (code, out, err) = cli(imgadm, &url, Some(TOKEN), &["delete", img]);
    assert_eq!((code, out, err), (0, format!("Deleted image {img}\n"), String::new()));
    let (code, _, err) = cli(imgadm, &url, Some(TOKEN), &["delete", img]);
    assert_eq!(code, 1);
    assert!(err.starts_with("imgadm: ") && err.contains("not found"), "{err}");
    // Nothing listening.
    let (code, _, err) = cli(vmadm, "http://127.0.0.1:1", Some(TOKEN), &["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("connection refused"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn many_connections_at_once_over_tcp() {
    let (url, server) = start(Limits { max_connections: 4, ..Limits::default() });
    let addr = url.trim_start_matches("http://").to_string();
    let one = format!("GET /vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n");
    // Four clients each send half a request and wait.
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    for s in &mut held {
        s.write_all(&one.as_bytes()[..20]).unwrap();
    }
    // Wait until the server has all four.
    while server.lock().unwrap().connections() < 4 {
        thread::yield_now();
    }
    // A fifth is told the server is busy.
    let mut busy = TcpStream::connect(&addr).unwrap();
    let mut out = String::new();
    busy.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{out}");
    // The four finish their requests and are answered.
    for s in &mut held {
        s.write_all(&one.as_bytes()[20..]).unwrap();
    }
    for mut s in held {
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    }
}

/// The host `vmadm console UUID`: prints the guest's output and follows it
/// until the VM stops (exit 0); an unknown VM gets vmadm's message, exit 1.
#[test]
fn host_vmadm_console_follows_until_the_vm_stops() {
    use std::io::BufRead;
    let (url, server) = start(Limits::default());
    let vmadm = env!("CARGO_BIN_EXE_vmadm");
    let vm = "5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10";
    server.lock().unwrap().backend_mut().vms.insert(vm.into(), json!({"uuid": vm, "state": "running"}));
    let mut child = Command::new(vmadm)
        .args(["console", vm])
        .env("ALCOVE_URL", &url)
        .env("ALCOVE_TOKEN", TOKEN)
        .env_remove("ALCOVE_TOKEN_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "zone-guest: hello\r\n");
    // Standard input (not a terminal) goes to the guest as it comes.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all("uname -a\r\u{e9}".as_bytes()).unwrap();
    drop(stdin);
    while server.lock().unwrap().backend().typed.len() < 11 {
        thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(server.lock().unwrap().backend().typed, "uname -a\r\u{e9}".as_bytes());
    // It keeps polling from where it is, until the VM stops.
    let polls = |s: &std::sync::Mutex<Server<common::Mock>>| s.lock().unwrap().backend().calls.iter().filter(|c| c.starts_with("vm_console ")).count();
    while polls(&server) < 3 {
        thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(server.lock().unwrap().backend().calls.iter().skip(1).all(|c| !c.starts_with("vm_console ") || c.ends_with(" 19")));
    server.lock().unwrap().backend_mut().vms.get_mut(vm).unwrap()["state"] = json!("stopped");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("ended") && err.contains("not running"), "{err}");
    let (code, out, err) = cli(vmadm, &url, Some(TOKEN), &["console", "00000000-0000-4000-8000-000000000009"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("not found"), "{err}");
}

/// On a terminal (a pty from script(1)): raw mode, each key sent as typed,
/// ^] detaches with exit 0, and the terminal is put back.
#[test]
fn host_vmadm_console_on_a_terminal_detaches_on_the_escape() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no script(1) here: skipped");
        return;
    }
    let (url, server) = start(Limits::default());
    let vmadm = env!("CARGO_BIN_EXE_vmadm");
    let vm = "5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b11";
    server.lock().unwrap().backend_mut().vms.insert(vm.into(), json!({"uuid": vm, "state": "running"}));
    // After the console, the pty's settings: raw mode must be gone.
    let inner = format!("{vmadm} console {vm}; echo \"exit=$?\"; stty -a");
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("ALCOVE_URL", &url)
        .env("ALCOVE_TOKEN", TOKEN)
        .env_remove("ALCOVE_TOKEN_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Wait until it follows, then type (no Enter: raw mode sends each key).
    let polls = |s: &std::sync::Mutex<Server<common::Mock>>| s.lock().unwrap().backend().calls.iter().filter(|c| c.starts_with("vm_console ")).count();
    while polls(&server) < 2 {
        thread::sleep(std::time::Duration::from_millis(20));
    }
    stdin.write_all(b"ls").unwrap();
    stdin.flush().unwrap();
    while server.lock().unwrap().backend().typed.len() < 2 {
        thread::sleep(std::time::Duration::from_millis(20));
    }
    stdin.write_all(b"\x1d").unwrap();
    stdin.flush().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(server.lock().unwrap().backend().typed, b"ls");
    assert!(text.contains("zone-guest: hello"), "{text}");
    assert!(text.contains("^] detaches"), "{text}");
    assert!(text.contains("exit=0"), "{text}");
    // stty -a after it: canonical mode and echo are back.
    let settings: Vec<&str> = text.rsplit("exit=0").next().unwrap().split_whitespace().collect();
    for want in ["icanon", "echo", "isig", "icrnl", "ixon"] {
        assert!(settings.contains(&want), "{want} not back: {settings:?}");
    }
}
