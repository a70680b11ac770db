//! The sans-IO server with a mock backend: every status it sends, the
//! framing (pipelining, bytes split anywhere, keep-alive and close), the
//! bounds (sizes, connections, timeouts) and hostile input.

mod common;

use alcove_api::client::{Event, ResponseDecoder, ResponseHead};
use alcove_api::{Config, ConnId, Http, Limits, Server, Token, VmAction};
use common::{Mock, TOKEN};
use serde_json::{Value, json};

#[derive(Debug)]
struct Resp {
    head: ResponseHead,
    body: Value,
}

impl Resp {
    fn status(&self) -> u16 {
        self.head.status
    }
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// Every response in `bytes`, in order (interim 100s skipped).
fn responses(mut bytes: Vec<u8>) -> Vec<Resp> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut d = ResponseDecoder::new();
        d.push(&bytes);
        let (mut head, mut body) = (None, Vec::new());
        loop {
            match d.next_event().expect("a well-formed response") {
                Some(Event::Head(h)) => head = Some(h),
                Some(Event::Data(b)) => body.extend(b),
                Some(Event::End) => break,
                None => panic!("a response cut short: {:?}", String::from_utf8_lossy(&bytes)),
            }
        }
        let head = head.unwrap();
        let body = if body.is_empty() {
            Value::Null
        } else if head.header("Content-Type") == Some("text/plain; charset=utf-8") {
            Value::String(String::from_utf8(body).expect("UTF-8 text"))
        } else {
            assert_eq!(head.header("Content-Type"), Some("application/json"));
            serde_json::from_slice(&body).expect("a JSON body")
        };
        out.push(Resp { head, body });
        bytes = d.leftover().to_vec();
    }
    out
}

fn config(limits: Limits) -> Config {
    Config { token: Token::new(TOKEN).unwrap(), limits }
}

fn server() -> Server<Mock> {
    Server::new(Mock::default(), config(Limits::default()))
}

/// Takes everything the connection has to send.
fn drain(s: &mut Server<Mock>, id: ConnId) -> Vec<u8> {
    let mut all = Vec::new();
    loop {
        let out = s.output(id).to_vec();
        if out.is_empty() {
            return all;
        }
        s.sent(id, out.len(), 0);
        all.extend(out);
    }
}

/// Feeds `bytes` in pieces of `chunk`, taking the output as it comes.
fn feed(s: &mut Server<Mock>, id: ConnId, bytes: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        let mut at = 0;
        while at < piece.len() {
            let took = s.receive(id, &piece[at..], 0);
            at += took;
            out.extend(drain(s, id));
            if took == 0 && s.wants_close(id) {
                return out;
            }
            assert!(took > 0 || s.room(id) > 0 || s.wants_close(id), "stuck: no room and nothing to send");
        }
    }
    out.extend(drain(s, id));
    out
}

fn one(s: &mut Server<Mock>, raw: &str) -> Resp {
    let id = s.accept(0).unwrap();
    let mut r = responses(feed(s, id, raw.as_bytes(), usize::MAX));
    assert_eq!(r.len(), 1, "{r:?}");
    s.close(id);
    r.remove(0)
}

fn req(method: &str, target: &str, body: Option<&str>) -> String {
    let body = body.unwrap_or("");
    let len = if body.is_empty() && method != "POST" { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    format!("{method} {target} HTTP/1.1\r\nHost: alcove\r\nAuthorization: Bearer {TOKEN}\r\n{len}\r\n{body}")
}

const VM: &str = "5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10";

#[test]
fn ping_needs_no_token() {
    let mut s = server();
    let r = one(&mut s, "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, json!({"ping": "pong"}));
}

#[test]
fn token_missing_is_401_wrong_is_403() {
    let mut s = server();
    let r = one(&mut s, "GET /vms HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status(), r.code()), (401, "Unauthorized"));
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer realm=\"alcove\""));
    assert!(r.message().contains("Authorization: Bearer"), "{}", r.message());

    let r = one(&mut s, "GET /vms HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n");
    assert_eq!((r.status(), r.code()), (401, "Unauthorized"));
    assert!(r.message().contains("\"Basic\""), "{}", r.message());

    for wrong in ["s3cret-token-0123456789_abcdeg", "s3cret-token-0123456789_abcde", "s3cret-token-0123456789_abcdeff", "x", ""] {
        let r = one(&mut s, &format!("GET /vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {wrong}\r\n\r\n"));
        assert_eq!((r.status(), r.code()), (403, "Forbidden"), "{wrong:?}");
    }
    // Unknown routes say nothing to a caller without the token.
    let r = one(&mut s, "GET /secret/things HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status(), 401);
    // The backend was never reached.
    assert!(s.backend().calls.is_empty(), "{:?}", s.backend().calls);

    let r = one(&mut s, &req("GET", "/vms", None));
    assert_eq!((r.status(), &r.body), (200, &json!([])));
}

#[test]
fn token_rules() {
    let t = Token::new(TOKEN).unwrap();
    assert!(t.matches(TOKEN.as_bytes()));
    assert!(!t.matches(&TOKEN.as_bytes()[..TOKEN.len() - 1]));
    assert!(!t.matches(format!("{TOKEN}x").as_bytes()));
    assert!(!t.matches(b""));
    assert!(Token::new("short").is_err());
    assert!(Token::new("has spaces in it, quite long").is_err());
    assert!(Token::new("line\nbreak-0123456789abcdef").is_err());
    assert!(Token::new("================").is_err());
    assert!(Token::new("abcdefghijklmnop==").is_ok());
    assert_eq!(format!("{t:?}"), "Token(..)", "the token never shows in logs");
}

#[test]
fn vm_lifecycle_routes_reach_the_backend() {
    let mut s = server();
    let payload = format!(r#"{{"uuid":"{VM}","brand":"bhyve","ram":1024,"alias":"web"}}"#);
    let r = one(&mut s, &req("POST", "/vms", Some(&payload)));
    assert_eq!(r.status(), 201, "{:?}", r.body);
    assert_eq!(r.header("Location"), Some(format!("/vms/{VM}").as_str()));
    assert_eq!(r.body["state"], "stopped");

    let r = one(&mut s, &req("GET", &format!("/vms/{}", VM.to_uppercase()), None));
    assert_eq!((r.status(), &r.body["alias"]), (200, &json!("web")));

    let r = one(&mut s, &req("GET", "/vms?state=stopped&alias=web", None));
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let r = one(&mut s, &req("GET", "/vms?state=running", None));
    assert_eq!(r.body, json!([]));

    let r = one(&mut s, &req("POST", &format!("/vms/{VM}?action=start"), None));
    assert_eq!((r.status(), &r.body["state"]), (200, &json!("running")));
    let r = one(&mut s, &req("POST", &format!("/vms/{VM}?action=start"), Some("{}")));
    assert_eq!((r.status(), r.code()), (409, "Conflict"));

    let r = one(&mut s, &req("POST", &format!("/vms/{VM}?action=stop&force=true&timeout=30"), None));
    assert_eq!(r.status(), 200);
    let r = one(&mut s, &req("POST", &format!("/vms/{VM}/?action=reboot&force"), None));
    assert_eq!(r.status(), 200);
    let r = one(&mut s, &req("POST", &format!("/vms/{VM}?action=update"), Some(r#"{"ram": 2048}"#)));
    assert_eq!((r.status(), &r.body["ram"]), (200, &json!(2048)));
    // Snapshots, VMAPI's way; a name is needed.
    let r = one(&mut s, &req("POST", &format!("/vms/{VM}?action=create_snapshot&snapshot_name=before"), None));
    assert_eq!((r.status(), &r.body["snapshots"][0]["name"]), (200, &json!("before")));
    let r = one(&mut s, &req("POST", &format!("/vms/{VM}?action=rollback_snapshot&snapshot_name=before"), None));
    assert_eq!(r.status(), 200);
    let r = one(&mut s, &req("POST", &format!("/vms/{VM}?action=delete_snapshot"), None));
    assert_eq!((r.status(), r.code()), (400, "InvalidArgument"), "{:?}", r.body);
    assert!(r.message().contains("snapshot_name"), "{}", r.message());
    let r = one(&mut s, &req("POST", &format!("/vms/{VM}?action=delete_snapshot&snapshot_name=before&force=true"), None));
    assert_eq!((r.status(), r.code()), (400, "InvalidArgument"), "{:?}", r.body);
    let actions: Vec<VmAction> = s.backend().actions.iter().map(|(_, a)| a.clone()).collect();
    assert_eq!(
        actions,
        [
            VmAction::Start,
            VmAction::Start,
            VmAction::Stop { force: true, timeout_s: Some(30) },
            VmAction::Reboot { force: true, timeout_s: None },
            VmAction::Update(json!({"ram": 2048})),
            VmAction::CreateSnapshot("before".into()),
            VmAction::RollbackSnapshot("before".into()),
        ]
    );

    let r = one(&mut s, &req("DELETE", &format!("/vms/{VM}"), None));
    assert_eq!(r.status(), 204);
    assert_eq!(r.header("Content-Length"), None);
    let r = one(&mut s, &req("GET", &format!("/vms/{VM}"), None));
    assert_eq!((r.status(), r.code()), (404, "ResourceNotFound"));
    assert_eq!(r.message(), format!("VM {VM} not found"));
}

#[test]
fn backend_errors_become_statuses_and_bodies() {
    let mut s = server();
    let r = one(&mut s, &req("POST", "/vms", Some(r#"{"ram": "lots"}"#)));
    assert_eq!((r.status(), r.code()), (422, "ValidationFailed"));
    assert_eq!(r.body["errors"]["bad_values"], json!(["ram"]));
    let r = one(&mut s, &req("POST", "/vms?action=validate", Some(r#"{"ram": "lots"}"#)));
    assert_eq!(r.status(), 422);
    let r = one(&mut s, &req("POST", "/vms?action=validate", Some(r#"{"ram": 512}"#)));
    assert_eq!((r.status(), &r.body), (200, &json!({"valid": true})));
    let r = one(&mut s, &req("POST", "/vms", Some(r#"{"brand": "joyent"}"#)));
    assert_eq!((r.status(), r.code()), (501, "NotImplemented"));
    let r = one(&mut s, &req("POST", "/vms", Some(r#"{"alias": "explode"}"#)));
    assert_eq!((r.status(), r.code()), (500, "InternalError"));
    assert!(r.message().contains("out of space"));
    let r = one(&mut s, &req("POST", "/vms", Some(&format!(r#"{{"uuid": "{VM}"}}"#))));
    assert_eq!(r.status(), 201);
    let r = one(&mut s, &req("POST", "/vms", Some(&format!(r#"{{"uuid": "{VM}"}}"#))));
    assert_eq!((r.status(), r.code()), (409, "Conflict"));
}

#[test]
fn bad_json_is_400_naming_the_error() {
    let mut s = server();
    for (body, want) in [
        ("{\"ram\": 1024,", "the body is not valid JSON: EOF while parsing a value at line 1 column 13"),
        ("{'ram': 1}", "the body is not valid JSON: key must be a string at line 1 column 2"),
        ("[1, 2]", "the body must be a JSON object, not an array"),
        ("\"vm\"", "the body must be a JSON object, not a string"),
        ("   ", "the body is empty: POST /vms takes a JSON object"),
        ("", "the body is empty: POST /vms takes a JSON object"),
        ("{\"a\":1} x", "the body is not valid JSON: trailing characters at line 1 column 9"),
    ] {
        let r = one(&mut s, &req("POST", "/vms", Some(body)));
        assert_eq!((r.status(), r.code(), r.message()), (400, "InvalidContent", want), "{body:?}");
    }
    // 10,000 nested arrays: serde_json's depth limit, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = one(&mut s, &req("POST", "/vms", Some(&deep)));
    assert_eq!(r.status(), 400);
    assert!(r.message().contains("recursion limit"), "{}", r.message());
    // Invalid UTF-8.
    let mut raw = req("POST", "/vms", Some("{\"a\":\"xx\"}")).into_bytes();
    let n = raw.len();
    raw[n - 3] = 0xff;
    let id = s.accept(0).unwrap();
    let r = responses(feed(&mut s, id, &raw, usize::MAX));
    assert_eq!(r[0].status(), 400);
    assert!(s.backend().calls.is_empty(), "{:?}", s.backend().calls);
}

#[test]
fn routes_methods_and_parameters_are_checked() {
    let mut s = server();
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("GET", "/nothing", None, 404, "ResourceNotFound"),
        ("GET", "/", None, 404, "ResourceNotFound"),
        ("GET", "/vms/../etc/passwd", None, 404, "ResourceNotFound"),
        ("GET", "//vms", None, 404, "ResourceNotFound"),
        ("GET", &format!("/vms/{VM}/extra"), None, 404, "ResourceNotFound"),
        ("GET", "/vms/not-a-uuid", None, 400, "InvalidArgument"),
        ("GET", "/vms/%2e%2e", None, 400, "InvalidArgument"),
        ("GET", "/images/web01", None, 400, "InvalidArgument"),
        ("PUT", &format!("/vms/{VM}"), Some("{}"), 405, "MethodNotAllowed"),
        ("DELETE", "/vms", None, 405, "MethodNotAllowed"),
        ("POST", "/ping", None, 405, "MethodNotAllowed"),
        ("HEAD", "/vms", None, 405, "MethodNotAllowed"),
        ("BREW", "/vms", None, 501, "NotImplemented"),
        ("POST", &format!("/vms/{VM}"), None, 400, "InvalidArgument"),
        ("POST", &format!("/vms/{VM}?action=explode"), None, 400, "InvalidArgument"),
        ("POST", &format!("/vms/{VM}?action=stop&force=maybe"), None, 400, "InvalidArgument"),
        ("POST", &format!("/vms/{VM}?action=stop&timeout=86401"), None, 400, "InvalidArgument"),
        ("POST", &format!("/vms/{VM}?action=stop&timeout=-1"), None, 400, "InvalidArgument"),
        ("POST", &format!("/vms/{VM}?action=start&force=true"), None, 400, "InvalidArgument"),
        ("POST", &format!("/vms/{VM}?action=stop&action=start"), None, 400, "InvalidArgument"),
        ("POST", &format!("/vms/{VM}?action=stop"), Some(r#"{"force": true}"#), 400, "InvalidContent"),
        ("POST", &format!("/vms/{VM}?action=update"), None, 400, "InvalidContent"),
        ("POST", "/vms?action=start", Some("{}"), 400, "InvalidArgument"),
        ("GET", &format!("/vms/{VM}?x=%zz"), None, 400, "InvalidArgument"),
        ("POST", "/images", Some("{}"), 400, "InvalidArgument"),
        ("POST", &format!("/images/{VM}?action=import"), Some(r#"{"uuid": "00000000-0000-4000-8000-000000000001"}"#), 400, "InvalidArgument"),
        ("POST", &format!("/images/{VM}?action=import"), Some(r#"{"uuid": 7}"#), 400, "InvalidArgument"),
    ];
    for (method, target, body, status, code) in cases {
        let r = one(&mut s, &req(method, target, *body));
        assert_eq!((r.status(), r.code()), (*status, *code), "{method} {target}: {:?}", r.body);
        assert!(!r.message().is_empty());
    }
    let r = one(&mut s, &req("PUT", &format!("/vms/{VM}"), Some("{}")));
    assert_eq!(r.header("Allow"), Some("GET, POST, DELETE"));
    assert_eq!(r.message(), format!("PUT /vms/{VM}: this resource takes GET, POST, DELETE"));
    let r = one(&mut s, &req("DELETE", "/images", None));
    assert_eq!(r.header("Allow"), Some("GET, POST"));
    // Nothing of the above reached the backend.
    assert!(s.backend().calls.is_empty(), "{:?}", s.backend().calls);
}

#[test]
fn image_routes() {
    let mut s = server();
    let img = "01b2c898-945f-11e1-a523-af1afbe22822";
    let r = one(&mut s, &req("POST", "/images?action=import", Some(&format!(r#"{{"uuid":"{img}","name":"debian","type":"zvol"}}"#))));
    assert_eq!((r.status(), r.header("Location")), (201, Some(format!("/images/{img}").as_str())));
    let r = one(&mut s, &req("GET", "/images?type=zvol", None));
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let other = "11111111-2222-4333-8444-555555555555";
    let r = one(&mut s, &req("POST", &format!("/images/{other}?action=import"), Some(r#"{"name":"x"}"#)));
    assert_eq!((r.status(), &r.body["uuid"]), (201, &json!(other)));
    let r = one(&mut s, &req("POST", &format!("/images/{other}?action=import-remote&source=http%3A%2F%2F10.0.2.2%3A8081"), None));
    assert_eq!(r.status(), 200);
    assert!(s.backend().calls.contains(&format!("import_remote_image {other} Some(\"http://10.0.2.2:8081\")")));
    let vm = format!(r#"{{"image_uuid":"{img}"}}"#);
    assert_eq!(one(&mut s, &req("POST", "/vms", Some(&vm))).status(), 201);
    let r = one(&mut s, &req("DELETE", &format!("/images/{img}"), None));
    assert_eq!((r.status(), r.code()), (409, "Conflict"));
    let r = one(&mut s, &req("DELETE", &format!("/images/{other}"), None));
    assert_eq!(r.status(), 204);
    let r = one(&mut s, &req("GET", "/sources", None));
    assert_eq!(r.body[0]["type"], "imgapi");
    let r = one(&mut s, &req("GET", "/sources/images?os=linux", None));
    assert_eq!((r.status(), &r.body), (200, &json!([])));
    let r = one(&mut s, &req("POST", "/sources?url=http%3A%2F%2F10.0.2.2%3A8082", None));
    assert_eq!((r.status(), &r.body[0]["url"]), (200, &json!("http://10.0.2.2:8082")));
    let r = one(&mut s, &req("DELETE", "/sources?url=http%3A%2F%2F10.0.2.2%3A8082", None));
    assert_eq!(r.status(), 200);
    assert!(s.backend().calls.contains(&"change_source true http://10.0.2.2:8082".to_string()));
    assert!(s.backend().calls.contains(&"change_source false http://10.0.2.2:8082".to_string()));
    // Changing the sources needs url= and nothing else.
    let before = s.backend().calls.len();
    for (m, target, body) in [
        ("POST", "/sources", None),
        ("POST", "/sources?url=http%3A%2F%2Fx&action=add", None),
        ("DELETE", "/sources?uri=http%3A%2F%2Fx", None),
        ("POST", "/sources?url=http%3A%2F%2Fx", Some("[1]")),
        ("GET", "/sources?url=http%3A%2F%2Fx", None),
    ] {
        let r = one(&mut s, &req(m, target, body));
        assert_eq!(r.status(), 400, "{m} {target}: {:?}", r.body);
    }
    assert_eq!(s.backend().calls.len(), before);
    let r = one(&mut s, &req("PUT", "/sources?url=http%3A%2F%2Fx", None));
    assert_eq!(r.status(), 405);
    let r = one(&mut s, &req("POST", "/images?action=import", Some(r#"{"name":"no uuid"}"#)));
    assert_eq!((r.status(), &r.body["errors"][0]["field"]), (422, &json!("uuid")));
}

#[test]
fn framing_errors_say_why_and_close() {
    let mut s = server();
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("POST /vms HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\n{{}}   \r\n0\r\n\r\n"), 411, "chunked request bodies are not taken: send the body with Content-Length"),
        (format!("POST /vms HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{{}}"), 501, "Transfer-Encoding \"gzip\": not implemented; send the body with Content-Length"),
        (format!("POST /vms HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2000000\r\n\r\n"), 413, "the body is 2000000 bytes; this API takes at most 1048576 bytes"),
        (format!("POST /vms HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 99999999999999999999999\r\n\r\n"), 400, "Content-Length \"99999999999999999999999\" is not a length"),
        (format!("POST /vms HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: -1\r\n\r\n"), 400, "Content-Length \"-1\" is not a length"),
        (format!("POST /vms HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"), 400, "two Content-Length header fields that disagree"),
        (format!("GET /vms HTTP/1.1\r\n{auth}\r\n"), 400, "an HTTP/1.1 request needs a Host header field"),
        (format!("GET /vms HTTP/1.1\r\nHost: a\r\nHost: b\r\n{auth}\r\n"), 400, "more than one Host header field"),
        (format!("GET /vms HTTP/1.1\r\nHost: a\r\n{auth}{auth}\r\n"), 400, "more than one Authorization header field"),
        (format!("POST /vms HTTP/1.1\r\nHost: x\r\n{auth}Expect: 200-ok\r\nContent-Length: 2\r\n\r\n"), 417, "Expect \"200-ok\": only 100-continue is understood"),
        (format!("GET /vms HTTP/2.0\r\nHost: x\r\n{auth}\r\n"), 505, "only HTTP/1.1 and HTTP/1.0 are spoken here"),
        ("GET /vms HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n".to_string(), 400, "malformed request: invalid header name"),
        ("\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03 TLS hello\r\n\r\n".to_string(), 400, "malformed request: invalid token"),
        (format!("GET /vms HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000)), 431, "the request line and header fields take 9039 bytes; at most 8192 are taken"),
        // Never finished: refused once past the bound, not kept waiting.
        (format!("GET /vms HTTP/1.1\r\nHost: x\r\nX-Big: {}", "a".repeat(9000)), 431, "the request line and header fields run past 8192 bytes"),
        (format!("GET /vms HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: b\r\n".repeat(40)), 431, "more than 32 header fields"),
    ];
    for (raw, status, message) in cases {
        let id = s.accept(0).unwrap();
        let shown = &raw[..raw.len().min(80)];
        let r = responses(feed(&mut s, id, raw.as_bytes(), usize::MAX));
        assert_eq!(r.len(), 1, "{shown:?}");
        assert_eq!((r[0].status(), r[0].message()), (status, message), "{shown:?}");
        assert_eq!(r[0].header("Connection"), Some("close"), "{shown:?}");
        assert!(s.wants_close(id), "{shown:?}");
        assert_eq!(s.room(id), 0);
        s.close(id);
    }
    assert!(s.backend().calls.is_empty(), "{:?}", s.backend().calls);
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let mut s = server();
    let id = s.accept(0).unwrap();
    let mut raw = String::new();
    raw += &req("POST", "/vms", Some(&format!(r#"{{"uuid":"{VM}"}}"#)));
    // Some clients end a body with a line break it does not count: RFC
    // 9112 §2.2 says to skip empty lines before a request line.
    raw += "\r\n";
    raw += &req("GET", &format!("/vms/{VM}"), None);
    raw += &req("GET", "/nope", None);
    raw += &req("POST", &format!("/vms/{VM}?action=start"), None);
    raw += &req("GET", "/vms?state=running", None);
    let r = responses(feed(&mut s, id, raw.as_bytes(), usize::MAX));
    let statuses: Vec<u16> = r.iter().map(Resp::status).collect();
    assert_eq!(statuses, [201, 200, 404, 200, 200]);
    assert_eq!(r[4].body.as_array().unwrap().len(), 1);
    assert!(r.iter().all(|r| r.header("Connection").is_none()), "kept alive");
    assert!(!s.wants_close(id));
    // The peer closes: nothing more, and the connection is done.
    s.peer_closed(id, 0);
    assert!(s.wants_close(id));
}

#[test]
fn bytes_split_anywhere_give_the_same_answers() {
    let mut raw = String::new();
    raw += &req("POST", "/vms", Some(&format!(r#"{{"uuid":"{VM}","alias":"a b"}}"#)));
    raw += &req("GET", &format!("/vms/{VM}"), None);
    raw += &req("DELETE", &format!("/vms/{VM}"), None);
    let whole = {
        let mut s = server();
        let id = s.accept(0).unwrap();
        feed(&mut s, id, raw.as_bytes(), usize::MAX)
    };
    assert_eq!(responses(whole.clone()).iter().map(Resp::status).collect::<Vec<_>>(), [201, 200, 204]);
    for chunk in [1, 2, 3, 7, 64] {
        let mut s = server();
        let id = s.accept(0).unwrap();
        assert_eq!(feed(&mut s, id, raw.as_bytes(), chunk), whole, "pieces of {chunk}");
    }
    // Split in two at every position.
    for cut in 1..raw.len() {
        let mut s = server();
        let id = s.accept(0).unwrap();
        let mut out = feed(&mut s, id, &raw.as_bytes()[..cut], usize::MAX);
        out.extend(feed(&mut s, id, &raw.as_bytes()[cut..], usize::MAX));
        assert_eq!(out, whole, "cut at {cut}");
    }
}

#[test]
fn keep_alive_and_close() {
    let mut s = server();
    let id = s.accept(0).unwrap();
    let raw = format!("GET /vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\nGET /vms HTTP/1.1\r\n");
    let r = responses(feed(&mut s, id, raw.as_bytes(), usize::MAX));
    assert_eq!(r.len(), 1, "nothing is answered after Connection: close");
    assert_eq!(r[0].header("Connection"), Some("close"));
    assert!(s.wants_close(id));

    // HTTP/1.0: closes unless asked to keep alive.
    let id = s.accept(0).unwrap();
    let r = responses(feed(&mut s, id, format!("GET /vms HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes(), usize::MAX));
    assert_eq!((r[0].status(), r[0].header("Connection")), (200, Some("close")));
    assert!(s.wants_close(id));
    let id = s.accept(0).unwrap();
    let raw = format!("GET /vms HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let r = responses(feed(&mut s, id, raw.as_bytes(), usize::MAX));
    assert_eq!((r[0].status(), r[0].header("Connection")), (200, Some("keep-alive")));
    assert!(!s.wants_close(id));

    // A refusal whose body has arrived keeps the connection.
    let id = s.accept(0).unwrap();
    let raw = format!("POST /nothing HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}{}", req("GET", "/vms", None));
    let r = responses(feed(&mut s, id, raw.as_bytes(), usize::MAX));
    assert_eq!(r.iter().map(Resp::status).collect::<Vec<_>>(), [404, 200]);
    assert!(!s.wants_close(id));
}

#[test]
fn a_refusal_before_the_body_arrives_closes_without_waiting() {
    let mut s = server();
    let id = s.accept(0).unwrap();
    let out = feed(&mut s, id, b"POST /vms HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n{\"ram\":", usize::MAX);
    let r = responses(out);
    assert_eq!((r[0].status(), r[0].header("Connection")), (401, Some("close")));
    assert!(s.wants_close(id));
    assert_eq!(s.room(id), 0, "the rest of the body is not taken");
}

#[test]
fn expect_100_continue() {
    let mut s = server();
    let id = s.accept(0).unwrap();
    let body = format!(r#"{{"uuid":"{VM}"}}"#);
    let head = format!("POST /vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len());
    let out = feed(&mut s, id, head.as_bytes(), usize::MAX);
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    let out = feed(&mut s, id, body.as_bytes(), 5);
    let r = responses(out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status(), 201);

    // Without the token: the final answer at once, no 100.
    let id = s.accept(0).unwrap();
    let out = feed(&mut s, id, b"POST /vms HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", usize::MAX);
    assert!(out.starts_with(b"HTTP/1.1 401"), "{}", String::from_utf8_lossy(&out));
    assert!(s.wants_close(id));
}

#[test]
fn a_client_that_does_not_read_holds_one_buffer_and_one_response() {
    let limits = Limits { max_header_bytes: 1024, max_body_bytes: 4096, ..Limits::default() };
    let mut s = Server::new(Mock::default(), config(limits));
    let id = s.accept(0).unwrap();
    let one_req = req("GET", "/vms", None);
    let flood = one_req.repeat(10_000);
    // The client sends and never reads what comes back.
    let mut taken = 0;
    loop {
        let n = s.receive(id, &flood.as_bytes()[taken..], 0);
        if n == 0 {
            break;
        }
        taken += n;
    }
    // The first request was answered and left the input; then it filled.
    assert_eq!(taken, one_req.len() + 1024 + 4096, "the input holds at most a header and a body's worth");
    assert_eq!(s.room(id), 0);
    let pending = s.output(id).len();
    assert_eq!(responses(s.output(id).to_vec()).len(), 1, "one response waits, no more");
    assert_eq!(s.backend().calls.len(), 1);
    // Reading one response lets the next request through.
    s.sent(id, pending, 0);
    assert_eq!(responses(s.output(id).to_vec()).len(), 1);
    assert_eq!(s.backend().calls.len(), 2);
    assert!(s.room(id) > 0);
}

#[test]
fn connections_are_bounded() {
    let limits = Limits { max_connections: 3, ..Limits::default() };
    let mut s = Server::new(Mock::default(), config(limits));
    let ids: Vec<ConnId> = (0..3).map(|_| s.accept(0).unwrap()).collect();
    let busy = s.accept(0).unwrap();
    let r = responses(s.output(busy).to_vec());
    assert_eq!((r[0].status(), r[0].code()), (503, "ServiceUnavailable"));
    assert_eq!(r[0].message(), "all 3 connections of this API are in use; try again");
    assert_eq!(s.room(busy), 0);
    drain(&mut s, busy);
    assert!(s.wants_close(busy));
    s.accept(0).unwrap();
    s.accept(0).unwrap();
    assert_eq!(s.accept(0), None, "past twice the bound: refused without a word");
    assert_eq!(s.connections(), 6);
    // The ones served still work, each on its own.
    let r = responses(feed(&mut s, ids[1], req("GET", "/vms", None).as_bytes(), usize::MAX));
    assert_eq!(r[0].status(), 200);
    s.close(ids[0]);
    s.close(busy);
    assert_eq!(s.connections(), 4);
}

#[test]
fn slow_requests_get_408_and_idle_connections_are_dropped() {
    let limits = Limits { request_timeout_ms: 1000, idle_timeout_ms: 5000, ..Limits::default() };
    let mut s = Server::new(Mock::default(), config(limits));
    let slow = s.accept(0).unwrap();
    let idle = s.accept(0).unwrap();
    let busy = s.accept(0).unwrap();
    // A byte at a time, never finishing (slowloris).
    for t in 0..5u64 {
        s.receive(slow, &b"GET /vms HTTP/1.1\r\n"[t as usize..=t as usize], t * 200);
        assert!(s.expire(t * 200).is_empty());
    }
    // The busy one finishes its request in time.
    s.receive(busy, req("GET", "/vms", None).as_bytes(), 900);
    let n = s.output(busy).len();
    s.sent(busy, n, 900);
    assert!(s.expire(999).is_empty());
    assert!(s.output(slow).is_empty());
    assert!(s.expire(1000).is_empty());
    let r = responses(s.output(slow).to_vec());
    assert_eq!((r[0].status(), r[0].code()), (408, "RequestTimeout"));
    assert_eq!(r[0].header("Connection"), Some("close"));
    assert!(!s.wants_close(busy));
    // Idle: nothing moved for 5 s (the slow one's 408 is not read).
    assert_eq!(s.expire(4999), vec![]);
    assert_eq!(s.expire(5000), vec![idle]);
    assert_eq!(s.expire(5800), vec![slow]);
    assert_eq!(s.expire(5899), vec![]);
    assert_eq!(s.expire(5900), vec![busy]);
    assert_eq!(s.connections(), 0);
}

#[test]
fn hostile_bytes_never_panic_and_every_connection_ends() {
    // xorshift: reproducible garbage, and garbage shaped like requests.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pieces: [&[u8]; 12] = [
        b"GET ", b"POST ", b"/vms", b"/vms/5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10", b"?action=stop&force=1", b" HTTP/1.1\r\n",
        b"Host: x\r\n", b"Content-Length: 5\r\n", b"\r\n", b"{}", b"Authorization: Bearer s3cret-token-0123456789_abcdef\r\n",
        b"Transfer-Encoding: chunked\r\n",
    ];
    let limits = Limits { max_header_bytes: 512, max_body_bytes: 256, max_connections: 4, ..Limits::default() };
    let mut s = Server::new(Mock::default(), config(limits));
    for round in 0..2000 {
        let Some(id) = s.accept(round) else { panic!("connections leak") };
        let mut bytes = Vec::new();
        for _ in 0..(rnd() % 40) {
            if rnd() % 3 == 0 {
                bytes.extend((0..rnd() % 16).map(|_| rnd() as u8));
            } else {
                bytes.extend_from_slice(pieces[(rnd() % pieces.len() as u64) as usize]);
            }
        }
        let out = feed(&mut s, id, &bytes, (rnd() % 17 + 1) as usize);
        assert!(s.room(id) <= 512 + 256);
        // Whatever came back is well-formed HTTP.
        for r in responses(out) {
            assert!((200..600).contains(&r.status()), "{r:?}");
        }
        s.peer_closed(id, round);
        drain(&mut s, id);
        assert!(s.wants_close(id));
        s.close(id);
    }
    assert_eq!(s.connections(), 0);
}

#[test]
fn http_serves_a_backend_the_caller_keeps() {
    // zone-server's shape: the state is its own, lent to each call.
    let mut state = Mock::default();
    let mut http = Http::new(config(Limits::default()));
    let id = http.accept(0).unwrap();
    let raw = req("POST", "/vms", Some("{}"));
    assert_eq!(http.receive(&mut state, id, raw.as_bytes(), 0), raw.len());
    assert_eq!(responses(http.output(id).to_vec())[0].status(), 201);
    assert_eq!(state.vms.len(), 1);
    state.vms.clear();
    let n = http.output(id).len();
    http.sent(&mut state, id, n, 0);
    http.receive(&mut state, id, req("GET", "/vms", None).as_bytes(), 0);
    assert_eq!(responses(http.output(id).to_vec())[0].body, json!([]));
}

/// `GET /vms/:uuid/console`: the token as everywhere, the offset checked
/// before the backend hears of it (400 naming it), only GET, an unknown VM
/// 404, a stopped one 409, and the guest's bytes as JSON with the offsets.
#[test]
fn a_vms_console_is_read_with_a_checked_offset() {
    let mut s = server();
    s.backend_mut().vms.insert(VM.into(), json!({"uuid": VM, "state": "running"}));
    let path = format!("/vms/{VM}/console");
    let r = one(&mut s, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(r.status(), 401);
    let r = one(&mut s, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-the-token-0123456789\r\n\r\n"));
    assert_eq!(r.status(), 403);
    for bad in ["abc", "-1", "+5", "1.5", "", "18446744073709551616", "0x10", "5%00"] {
        let r = one(&mut s, &req("GET", &format!("{path}?offset={bad}"), None));
        assert_eq!((r.status(), r.code()), (400, "InvalidArgument"), "offset={bad}: {:?}", r.body);
        assert!(r.message().contains("offset="), "{}", r.message());
    }
    let r = one(&mut s, &req("GET", &format!("{path}?offset=1&follow=1"), None));
    assert_eq!(r.status(), 400, "{:?}", r.body);
    assert!(s.backend().calls.is_empty(), "the backend was called for a refused request: {:?}", s.backend().calls);
    let r = one(&mut s, &req("GET", &path, None));
    assert_eq!(r.status(), 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"uuid": VM, "offset": 0, "next": 19, "lost": 0, "end": 19, "data": "zone-guest: hello\r\n"}));
    let r = one(&mut s, &req("GET", &format!("{path}?offset=12"), None));
    assert_eq!((r.body["data"].as_str(), r.body["next"].as_u64()), (Some("hello\r\n"), Some(19)));
    let r = one(&mut s, &req("GET", &format!("{path}?offset=18446744073709551615"), None));
    assert_eq!(r.status(), 200, "{:?}", r.body);
    assert_eq!(s.backend().calls.last().map(String::as_str), Some(format!("vm_console {VM} 18446744073709551615").as_str()));
    // Only GET; a path under it or a bad uuid is refused.
    let r = one(&mut s, &req("DELETE", &path, None));
    assert_eq!((r.status(), r.header("Allow")), (405, Some("GET, POST")));
    assert_eq!(one(&mut s, &req("GET", &format!("{path}/more"), None)).status(), 404);
    assert_eq!(one(&mut s, &req("GET", "/vms/not-a-uuid/console", None)).status(), 400);
    // Unknown, stopped.
    let r = one(&mut s, &req("GET", "/vms/00000000-0000-4000-8000-000000000001/console", None));
    assert_eq!(r.status(), 404);
    s.backend_mut().vms.insert(VM.into(), json!({"uuid": VM, "state": "stopped"}));
    let r = one(&mut s, &req("GET", &path, None));
    assert_eq!((r.status(), r.code()), (409, "Conflict"));
    assert!(r.message().contains("not running"), "{}", r.message());
}

/// `GET /vms/:uuid/console.txt`: the same bytes as `text/plain` (what
/// `curl` shows as it is), the offsets in `X-Console-*` headers; the token,
/// the offset, the method, a body and a path under it are checked as for
/// `console`; errors stay JSON.
#[test]
fn a_vms_console_reads_as_plain_text() {
    let mut s = server();
    s.backend_mut().vms.insert(VM.into(), json!({"uuid": VM, "state": "running"}));
    let path = format!("/vms/{VM}/console.txt");
    let r = one(&mut s, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!((r.status(), r.code()), (401, "Unauthorized"));
    let r = one(&mut s, &req("GET", &path, None));
    assert_eq!(r.status(), 200, "{:?}", r.body);
    assert_eq!(r.body, json!("zone-guest: hello\r\n"));
    let h = |r: &Resp, k: &str| r.header(k).map(String::from);
    assert_eq!(
        [h(&r, "X-Console-Offset"), h(&r, "X-Console-Next"), h(&r, "X-Console-End"), h(&r, "X-Console-Lost")],
        [Some("0".into()), Some("19".into()), Some("19".into()), Some("0".into())]
    );
    let r = one(&mut s, &req("GET", &format!("{path}?offset=12"), None));
    assert_eq!((r.body.as_str(), h(&r, "X-Console-Offset").as_deref()), (Some("hello\r\n"), Some("12")));
    // At the end: an empty text, 200, Content-Length 0.
    let r = one(&mut s, &req("GET", &format!("{path}?offset=19"), None));
    assert_eq!((r.status(), r.body.clone(), h(&r, "Content-Length").as_deref()), (200, Value::Null, Some("0")));
    let calls = s.backend().calls.len();
    for bad in ["abc", "-1", "", "18446744073709551616"] {
        let r = one(&mut s, &req("GET", &format!("{path}?offset={bad}"), None));
        assert_eq!((r.status(), r.code()), (400, "InvalidArgument"), "offset={bad}: {:?}", r.body);
    }
    assert_eq!(one(&mut s, &req("GET", &format!("{path}?follow=1"), None)).status(), 400);
    assert_eq!(one(&mut s, &req("GET", &path, Some(r#"{"offset": 3}"#))).status(), 400);
    let r = one(&mut s, &req("POST", &path, Some(r#"{"data": "x"}"#)));
    assert_eq!((r.status(), r.header("Allow")), (405, Some("GET")));
    assert_eq!(one(&mut s, &req("GET", &format!("{path}/more"), None)).status(), 404);
    assert_eq!(one(&mut s, &req("GET", "/vms/not-a-uuid/console.txt", None)).status(), 400);
    assert_eq!(one(&mut s, &req("GET", &format!("/vms/{VM}/console.json"), None)).status(), 404);
    assert_eq!(s.backend().calls.len(), calls, "refused requests reached the backend: {:?}", s.backend().calls);
    // Unknown, stopped: JSON errors as everywhere.
    let r = one(&mut s, &req("GET", "/vms/00000000-0000-4000-8000-000000000001/console.txt", None));
    assert_eq!((r.status(), r.code()), (404, "ResourceNotFound"));
    s.backend_mut().vms.insert(VM.into(), json!({"uuid": VM, "state": "stopped"}));
    let r = one(&mut s, &req("GET", &path, None));
    assert_eq!((r.status(), r.code()), (409, "Conflict"));
}

/// The text of a console answer: U+FFFD for bytes that are not UTF-8, and
/// a character cut at the end of the bytes left for the next answer.
#[test]
fn console_answers_never_cut_a_character() {
    use alcove_api::backend::console_answer;
    let u = alcove_api::Uuid::parse(VM).unwrap();
    let a = console_answer(u, 10, 0, 14, "a\u{e9}b".as_bytes());
    assert_eq!((a["data"].as_str(), a["next"].as_u64()), (Some("a\u{e9}b"), Some(14)));
    // "é" is c3 a9: the c3 alone waits.
    let a = console_answer(u, 10, 0, 12, b"a\xc3");
    assert_eq!((a["data"].as_str(), a["next"].as_u64()), (Some("a"), Some(11)));
    // A 4-byte character with 3 of its bytes here.
    let a = console_answer(u, 0, 0, 100, b"x\xf0\x9f\x98");
    assert_eq!((a["data"].as_str(), a["next"].as_u64()), (Some("x"), Some(1)));
    // Bytes that are not UTF-8 (a stray continuation, 0xff) do not wait.
    let a = console_answer(u, 0, 0, 3, b"x\xff\x80");
    assert_eq!((a["data"].as_str(), a["next"].as_u64()), (Some("x\u{fffd}\u{fffd}"), Some(3)));
    let a = console_answer(u, 0, 0, 0, b"");
    assert_eq!((a["data"].as_str(), a["next"].as_u64()), (Some(""), Some(0)));
}

/// `POST /vms/:uuid/console`: `{"data": TEXT}` and nothing else, at most
/// CONSOLE_WRITE_MAX bytes; each refusal a 400 that says why, before the
/// backend hears of it; without the token 401.
#[test]
fn writing_to_a_vms_console_takes_data_and_nothing_else() {
    let mut s = server();
    let path = format!("/vms/{VM}/console");
    let r = one(&mut s, &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{{\"data\":\"ls\"}}"));
    assert_eq!(r.status(), 401);
    let big = format!("{{\"data\":\"{}\"}}", "a".repeat(alcove_api::backend::CONSOLE_WRITE_MAX + 1));
    for (body, says) in [
        ("", "empty"),
        ("[]", "JSON object"),
        ("{\"data\": 5}", "must be a string"),
        ("{\"data\": null}", "must be a string"),
        ("{}", "takes {\"data\": TEXT}"),
        ("{\"data\": \"x\", \"more\": 1}", "not \"more\""),
        ("{\"data\": \"x\"", "not valid JSON"),
        (big.as_str(), "at most 4096"),
    ] {
        let r = one(&mut s, &req("POST", &path, Some(body)));
        assert_eq!(r.status(), 400, "{body:.40}: {:?}", r.body);
        assert!(r.message().contains(says), "{body:.40}: {}", r.message());
    }
    let r = one(&mut s, &req("POST", &format!("{path}?offset=3"), Some("{\"data\":\"x\"}")));
    assert_eq!(r.status(), 400);
    assert!(s.backend().calls.is_empty(), "{:?}", s.backend().calls);
    let r = one(&mut s, &req("POST", &path, Some("{\"data\":\"ls\\r\"}")));
    assert_eq!(r.status(), 404, "{:?}", r.body);
    s.backend_mut().vms.insert(VM.into(), json!({"uuid": VM, "state": "running"}));
    let r = one(&mut s, &req("POST", &path, Some("{\"data\":\"ls\\r\"}")));
    assert_eq!((r.status(), r.body["taken"].as_u64()), (200, Some(3)));
    assert_eq!(s.backend().typed, b"ls\r");
}
