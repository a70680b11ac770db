//! The host CLIs' argument plumbing: which request each command line makes,
//! and the exit codes of what makes none.

use std::io;

use alcove_api::cli::{Call, EXIT_ERROR, EXIT_OK, EXIT_USAGE, Output, follow_console, imgadm_call, vmadm_call};
use serde_json::json;

const U: &str = "5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10";

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn vmadm(s: &str) -> Result<Call, (i32, String)> {
    let mut read = |path: Option<&str>| -> io::Result<String> {
        match path {
            Some("vm.json") => Ok(r#"{"brand":"bhyve","ram":512}"#.into()),
            Some("bad.json") => Ok("{nope".into()),
            Some(p) => Err(io::Error::new(io::ErrorKind::NotFound, format!("no file {p}"))),
            None => Ok(r#"{"from":"stdin"}"#.into()),
        }
    };
    vmadm_call(&args(s), &mut read).map_err(|r| (r.exit, r.message))
}

fn target(r: Result<Call, (i32, String)>) -> (&'static str, String) {
    let c = r.unwrap();
    (c.method, c.target)
}

#[test]
fn vmadm_verbs_make_their_requests() {
    let c = vmadm("create -f vm.json").unwrap();
    assert_eq!((c.method, c.target.as_str(), c.body), ("POST", "/vms", Some(json!({"brand":"bhyve","ram":512}))));
    assert_eq!(vmadm("create").unwrap().body, Some(json!({"from":"stdin"})));
    assert_eq!(vmadm("create -f -").unwrap().body, Some(json!({"from":"stdin"})));
    assert_eq!(target(vmadm("validate create -f vm.json")), ("POST", "/vms?action=validate".into()));
    let c = vmadm("list state=running alias=web 01").unwrap_err();
    assert_eq!(c.0, EXIT_USAGE, "01 is not field=value");
    let c = vmadm("list state=running brand=bhyve").unwrap();
    assert_eq!((c.target.as_str(), c.output), ("/vms?state=running&brand=bhyve", Output::VmList(Default::default())));
    assert_eq!(vmadm("lookup -1 alias=web").unwrap().output, Output::Uuids { one: true });
    assert_eq!(vmadm("lookup -j alias=web").unwrap().output, Output::Json);
    assert_eq!(target(vmadm(&format!("get {U}"))), ("GET", format!("/vms/{U}")));
    assert_eq!(target(vmadm(&format!("start {U}"))), ("POST", format!("/vms/{U}?action=start")));
    assert_eq!(target(vmadm(&format!("stop {U}"))), ("POST", format!("/vms/{U}?action=stop")));
    assert_eq!(target(vmadm(&format!("stop {U} -F -t 30"))), ("POST", format!("/vms/{U}?action=stop&force=true&timeout=30")));
    assert_eq!(target(vmadm(&format!("reboot {U} -F"))), ("POST", format!("/vms/{U}?action=reboot&force=true")));
    // Options before the uuid too, as the machine's vmadm takes them.
    assert_eq!(target(vmadm(&format!("stop -F -t 30 {U}"))), ("POST", format!("/vms/{U}?action=stop&force=true&timeout=30")));
    assert_eq!(target(vmadm(&format!("reboot -F {U}"))), ("POST", format!("/vms/{U}?action=reboot&force=true")));
    assert_eq!(vmadm(&format!("stop {U} {U}")).unwrap_err().0, EXIT_USAGE, "two uuids");
    assert_eq!(vmadm("stop -F").unwrap_err().0, EXIT_USAGE, "no uuid");
    assert_eq!(target(vmadm(&format!("delete {U}"))), ("DELETE", format!("/vms/{U}")));
    let c = vmadm(&format!("update {U} ram=1024 alias=db")).unwrap();
    assert_eq!((c.target, c.body), (format!("/vms/{U}?action=update"), Some(json!({"ram": "1024", "alias": "db"}))));
    assert_eq!(vmadm(&format!("update {U} -f vm.json")).unwrap().body, Some(json!({"brand":"bhyve","ram":512})));
    for (verb, action) in [("create-snapshot", "create_snapshot"), ("rollback-snapshot", "rollback_snapshot"), ("delete-snapshot", "delete_snapshot")] {
        assert_eq!(target(vmadm(&format!("{verb} {U} before"))), ("POST", format!("/vms/{U}?action={action}&snapshot_name=before")));
    }
}

#[test]
fn vmadm_refusals_and_exit_codes() {
    for (line, exit, says) in [
        ("", EXIT_USAGE, "usage: vmadm create"),
        ("-h", EXIT_OK, "usage: vmadm create"),
        ("frobnicate", EXIT_USAGE, "vmadm: unknown command \"frobnicate\""),
        ("start", EXIT_USAGE, "vmadm: start: a UUID is needed"),
        ("start web01", EXIT_ERROR, "vmadm start: \"web01\" is not a UUID"),
        ("stop 5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10 -t soon", EXIT_USAGE, "stop -t: a number of seconds is needed"),
        ("reboot 5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10 -t 5", EXIT_USAGE, "reboot: unknown option \"-t\""),
        ("create -f nope.json", EXIT_ERROR, "vmadm create: nope.json: no file nope.json"),
        ("create -f bad.json", EXIT_ERROR, "vmadm create: bad.json is not valid JSON: key must be a string at line 1 column 2"),
        ("create vm.json", EXIT_USAGE, "create: expected [-f FILE]"),
        ("validate update -f vm.json", EXIT_USAGE, "only `validate create` is known"),
        ("list -o uuid,bogus", EXIT_USAGE, "invalid order field: bogus"),
        ("list -s -nope", EXIT_USAGE, "invalid sort field: -nope"),
        ("list -o", EXIT_USAGE, "list -o: needs a field list"),
        ("list -x", EXIT_USAGE, "list: unknown option -x"),
        ("console", EXIT_USAGE, "console: a UUID is needed"),
        ("console web01", EXIT_ERROR, "vmadm console: \"web01\" is not a UUID"),
        ("console 5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10 -f", EXIT_USAGE, "console: unexpected \"-f\""),
        ("info 5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10", EXIT_ERROR, "not available over the HTTP API yet"),
        ("create-snapshot 5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10", EXIT_USAGE, "create-snapshot: expected UUID SNAPNAME"),
        ("delete-snapshot 5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10 a b", EXIT_USAGE, "delete-snapshot: expected UUID SNAPNAME"),
    ] {
        let (code, message) = vmadm(line).unwrap_err();
        assert_eq!(code, exit, "{line:?}: {message}");
        assert!(message.contains(says), "{line:?}: {message}");
    }
}

#[test]
fn imgadm_verbs_make_their_requests() {
    let i = |s: &str| imgadm_call(&args(s)).map_err(|r| (r.exit, r.message));
    assert_eq!(target(i("list type=zvol")), ("GET", "/images?type=zvol".into()));
    assert_eq!(target(i("list -j -H -o uuid,name -s -name type=zvol")), ("GET", "/images?type=zvol".into()));
    assert_eq!(i("list -j").unwrap().output, Output::Json);
    assert!(matches!(i("list").unwrap().output, Output::ImageTable(_)));
    assert!(matches!(i("avail -H").unwrap().output, Output::ImageTable(_)));
    assert_eq!(i("list -o").unwrap_err().0, EXIT_USAGE);
    assert_eq!(i("list -o uuid,../x").unwrap_err().0, EXIT_USAGE);
    assert_eq!(i("list -x").unwrap_err().0, EXIT_USAGE);
    assert_eq!(i("sources -j").unwrap().output, Output::Json);
    assert_eq!(i("sources").unwrap().output, Output::Sources);
    assert_eq!(target(i("avail os=linux")), ("GET", "/sources/images?os=linux".into()));
    assert_eq!(target(i("sources")), ("GET", "/sources".into()));
    assert_eq!(target(i(&format!("show {U}"))), ("GET", format!("/images/{U}")));
    assert_eq!(target(i(&format!("get {U}"))), ("GET", format!("/images/{U}")));
    assert_eq!(target(i(&format!("delete {U}"))), ("DELETE", format!("/images/{U}")));
    assert_eq!(target(i(&format!("import {U}"))), ("POST", format!("/images/{U}?action=import-remote")));
    assert_eq!(
        target(i(&format!("import {U} -S http://10.0.2.2:8081"))),
        ("POST", format!("/images/{U}?action=import-remote&source=http%3A%2F%2F10.0.2.2%3A8081"))
    );
    assert_eq!(i("import").unwrap_err().0, EXIT_USAGE);
    assert_eq!(i("import debian").unwrap_err().0, EXIT_ERROR);
    assert_eq!(target(i("sources -a http://10.0.2.2:8081")), ("POST", "/sources?url=http%3A%2F%2F10.0.2.2%3A8081".into()));
    assert_eq!(target(i("sources -d http://10.0.2.2:8081")), ("DELETE", "/sources?url=http%3A%2F%2F10.0.2.2%3A8081".into()));
    assert_eq!(i("sources -a").unwrap_err().0, EXIT_USAGE);
    assert_eq!(i("sources -x http://x").unwrap_err().0, EXIT_USAGE);
    assert_eq!(i("sources -a http://x http://y").unwrap_err().0, EXIT_USAGE);
    let (code, msg) = i("install -m m.json -f f.zfs").unwrap_err();
    assert_eq!(code, EXIT_ERROR);
    assert!(msg.contains("not over the HTTP API yet"), "{msg}");
}

/// What `vmadm` prints for an answer, as SmartOS's vmadm: (exit, stdout,
/// stderr).
fn printed(s: &str, answer: Result<serde_json::Value, alcove_api::blocking::ClientError>) -> (i32, String, String) {
    let call = vmadm(s).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = alcove_api::cli::print_answer("vmadm", &call, answer, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn api_error(status: u16, code: &str, message: &str, errors: Option<serde_json::Value>) -> alcove_api::blocking::ClientError {
    let mut body = json!({"code": code, "message": message});
    if let Some(e) = errors {
        body["errors"] = e;
    }
    alcove_api::blocking::ClientError::Api { status, code: code.into(), message: message.into(), body }
}

/// Each verb's line on stderr and nothing on stdout, exit 0; vmadm's
/// message and exit 1 on a refusal; the API's own trouble (5xx) and an
/// answer that makes no sense still exit 1 with a message.
#[test]
fn vmadm_prints_smartos_s_messages_and_exit_codes() {
    let vm = json!({"uuid": U, "state": "running"});
    let ok = |s: &str| printed(s, Ok(vm.clone()));
    assert_eq!(ok("create -f vm.json"), (EXIT_OK, String::new(), format!("Successfully created VM {U}\n")));
    assert_eq!(ok(&format!("start {U}")), (EXIT_OK, String::new(), format!("Successfully started VM {U}\n")));
    assert_eq!(ok(&format!("stop {U}")), (EXIT_OK, String::new(), format!("Successfully completed stop for VM {U}\n")));
    assert_eq!(ok(&format!("stop {U} -F")), (EXIT_OK, String::new(), format!("Successfully completed stop for VM {U}\n")));
    assert_eq!(ok(&format!("reboot {U}")), (EXIT_OK, String::new(), format!("Successfully completed reboot for VM {U}\n")));
    assert_eq!(ok(&format!("update {U} ram=1024")), (EXIT_OK, String::new(), format!("Successfully updated VM {U}\n")));
    assert_eq!(printed(&format!("delete {U}"), Ok(serde_json::Value::Null)), (EXIT_OK, String::new(), format!("Successfully deleted VM {U}\n")));
    assert_eq!(ok(&format!("create-snapshot {U} s1")), (EXIT_OK, String::new(), format!("Created snapshot s1 for VM {U}\n")));
    assert_eq!(ok(&format!("rollback-snapshot {U} s1")), (EXIT_OK, String::new(), format!("Rolled back VM {U} to snapshot s1\n")));
    assert_eq!(ok(&format!("delete-snapshot {U} s1")), (EXIT_OK, String::new(), format!("Deleted snapshot s1 for VM {U}\n")));
    // validate: zone-server's line as it is, or one made from the payload.
    let valid = "VALID 'create' payload for bhyve brand VMs.";
    assert_eq!(printed("validate create -f vm.json", Ok(json!({"valid": true, "message": valid}))).2, format!("{valid}\n"));
    assert_eq!(printed("validate create -f vm.json", Ok(json!({"valid": true}))).2, format!("{valid}\n"));
    // get prints the JSON on stdout.
    let (code, out, err) = ok(&format!("get {U}"));
    assert_eq!((code, err.as_str()), (EXIT_OK, ""));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), vm);

    // Refusals: vmadm's message alone.
    let refused = format!("Unable to start VM {U}: VM is already running");
    assert_eq!(printed(&format!("start {U}"), Err(api_error(409, "Conflict", &refused, None))), (EXIT_ERROR, String::new(), format!("{refused}\n")));
    let nf = api_error(404, "ResourceNotFound", &format!("VM {U} not found"), None);
    assert_eq!(printed(&format!("delete {U}"), Err(nf)).2, format!("Failed to delete VM {U}: VM {U} not found\n"));
    let already = format!("Failed to delete VM {U}: its volumes are busy");
    assert_eq!(printed(&format!("delete {U}"), Err(api_error(409, "Conflict", &already, None))).2, format!("{already}\n"));
    let problems = json!({"bad_values": ["ram"], "bad_properties": [], "missing_properties": []});
    let (code, out, err) = printed("validate create -f vm.json", Err(api_error(422, "ValidationFailed", "the payload is not valid", Some(problems.clone()))));
    assert_eq!((code, out.as_str()), (EXIT_ERROR, ""));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&err).unwrap(), problems, "vmadm validate prints the JSON alone: {err}");
    let (code, _, err) = printed("create -f vm.json", Err(api_error(422, "ValidationFailed", "Failed to create VM: bad ram", Some(problems))));
    assert_eq!(code, EXIT_ERROR);
    assert!(err.starts_with("Failed to create VM: bad ram\n{"), "{err}");

    // Not vmadm's: the API or zone-server in trouble, the token, an
    // answer without the uuid.
    let (code, _, err) = printed(&format!("stop {U}"), Err(api_error(503, "ServiceUnavailable", "zone-server is not answering", None)));
    assert_eq!((code, err.as_str()), (EXIT_ERROR, "vmadm: zone-server is not answering (503 ServiceUnavailable)\n"));
    let (code, _, err) = printed("list", Err(alcove_api::blocking::ClientError::Forbidden("bad token".into())));
    assert_eq!(code, EXIT_ERROR);
    assert!(err.starts_with("vmadm: the API refused the token"), "{err}");
    let (code, out, err) = printed("create -f vm.json", Ok(json!({"state": "running"})));
    assert_eq!((code, out.as_str()), (EXIT_ERROR, ""));
    assert!(err.contains("names no uuid"), "{err}");
}

/// `vmadm console UUID` asks `GET /vms/UUID/console` and follows it.
#[test]
fn vmadm_console_makes_its_request() {
    let c = vmadm(&format!("console {U}")).unwrap();
    assert_eq!((c.method, c.target.as_str()), ("GET", format!("/vms/{U}/console").as_str()));
    assert!(matches!(c.output, Output::Console(_)));
}

/// A console answer as the API gives it.
fn answer(offset: u64, next: u64, end: u64, lost: u64, data: &str) -> serde_json::Value {
    json!({"uuid": U, "offset": offset, "next": next, "end": end, "lost": lost, "data": data})
}

/// The follow loop against scripted answers: (exit, stdout, stderr, the
/// targets it asked for, the pauses it made).
fn follow(answers: Vec<Result<serde_json::Value, alcove_api::blocking::ClientError>>, max_pauses: usize) -> (i32, String, String, Vec<String>, usize) {
    let (code, out, err, asked, _, pauses) = follow_typing(answers, vec![], max_pauses);
    (code, out, err, asked, pauses)
}

/// As [`follow`], with `keys` typed at successive waits and each POST's
/// `taken` scripted: also what was posted.
#[allow(clippy::type_complexity)]
fn follow_typing(
    answers: Vec<Result<serde_json::Value, alcove_api::blocking::ClientError>>,
    posts: Vec<Result<serde_json::Value, alcove_api::blocking::ClientError>>,
    max_pauses: usize,
) -> (i32, String, String, Vec<String>, Vec<serde_json::Value>, usize) {
    follow_keys(answers, posts, vec![], max_pauses)
}

#[allow(clippy::type_complexity)]
fn follow_keys(
    answers: Vec<Result<serde_json::Value, alcove_api::blocking::ClientError>>,
    posts: Vec<Result<serde_json::Value, alcove_api::blocking::ClientError>>,
    keys: Vec<alcove_api::cli::Typed>,
    max_pauses: usize,
) -> (i32, String, String, Vec<String>, Vec<serde_json::Value>, usize) {
    use alcove_api::cli::Typed;
    let mut answers = answers.into_iter();
    let mut posts = posts.into_iter();
    let mut keys = keys.into_iter();
    let mut asked = Vec::new();
    let mut posted = Vec::new();
    let none = || Err(alcove_api::blocking::ClientError::Protocol("no more answers in the script".into()));
    let mut get = |t: &str| {
        asked.push(t.to_string());
        answers.next().unwrap_or_else(none)
    };
    let mut post = |t: &str, body: &serde_json::Value| {
        assert_eq!(t, format!("/vms/{U}/console"));
        posted.push(body.clone());
        posts.next().unwrap_or_else(none)
    };
    let mut pauses = 0;
    let mut wait = || {
        pauses += 1;
        if pauses > max_pauses { Typed::Detach } else { keys.next().unwrap_or(Typed::Nothing) }
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = follow_console(alcove_api::Uuid::parse(U).unwrap(), &mut get, &mut post, &mut wait, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap(), asked, posted, pauses)
}

/// Typing: each wait's keys are posted as text before the next poll; what
/// the queue did not take is posted again; a 409 while typing ends it; a
/// byte that is not UTF-8 is dropped, saying so.
#[test]
fn vmadm_console_sends_what_is_typed() {
    use alcove_api::cli::Typed;
    let idle = |n: u64| Ok(answer(n, n, n, 0, ""));
    let taken = |n: u64| Ok(json!({"uuid": U, "taken": n}));
    let (code, out, err, _, posted, _) = follow_keys(
        vec![idle(0), idle(0), idle(0), idle(0)],
        vec![taken(2), taken(1), taken(2), taken(1)],
        vec![Typed::Bytes(b"ls\r".to_vec()), Typed::Nothing, Typed::Bytes(b"\xc3\xa9\xff!".to_vec())],
        3,
    );
    assert_eq!((code, out.as_str()), (EXIT_OK, ""), "{err}");
    let sent: Vec<&str> = posted.iter().map(|p| p["data"].as_str().unwrap()).collect();
    // "ls\r": 2 taken, then the "\r" again; then "é", the 0xff dropped, "!".
    assert_eq!(sent, ["ls\r", "\r", "\u{e9}", "!"]);
    assert!(err.contains("not UTF-8"), "{err}");
    let (code, _, err, _, _, _) = follow_keys(
        vec![idle(0)],
        vec![Err(console_error(409, "Unable to connect to console of VM x: VM is not running"))],
        vec![Typed::Bytes(b"x".to_vec())],
        5,
    );
    assert_eq!(code, EXIT_OK);
    assert!(err.contains("ended"), "{err}");
    // ^] at once: detached, nothing sent.
    let (code, _, _, _, posted, _) = follow_keys(vec![idle(0)], vec![], vec![Typed::Detach], 5);
    assert_eq!((code, posted.len()), (EXIT_OK, 0));
}

fn console_error(status: u16, message: &str) -> alcove_api::blocking::ClientError {
    alcove_api::blocking::ClientError::Api { status, code: "Conflict".into(), message: message.into(), body: json!({}) }
}

#[test]
fn vmadm_console_follows_from_each_answers_next() {
    let (code, out, err, asked, pauses) = follow(
        vec![
            Ok(answer(0, 6, 9, 0, "hello\n")),
            Ok(answer(6, 9, 9, 0, "ab\n")),
            Ok(answer(9, 9, 9, 0, "")),
            Ok(answer(9, 12, 12, 0, "xy\n")),
            Err(console_error(409, &format!("Unable to connect to console of VM {U}: VM is not running"))),
        ],
        10,
    );
    assert_eq!(code, EXIT_OK, "{err}");
    assert_eq!(out, "hello\nab\nxy\n");
    let offsets: Vec<&str> = asked.iter().map(|t| t.rsplit('=').next().unwrap()).collect();
    assert_eq!(offsets, ["0", "6", "9", "9", "12"]);
    assert!(asked[0].starts_with(&format!("/vms/{U}/console?offset=")), "{asked:?}");
    // It paused only when nothing more was waiting.
    assert_eq!(pauses, 3);
    assert!(err.contains("ended: Unable to connect to console") && err.contains("not running"), "{err}");
}

#[test]
fn vmadm_console_says_what_it_lost_and_stops_on_errors() {
    // Output forgotten between two polls is counted; the first answer's
    // (the history cut to what is kept) is not.
    let (code, out, err, _, _) = follow(vec![Ok(answer(100, 110, 110, 100, "0123456789")), Ok(answer(5000, 5003, 5003, 4890, "abc"))], 1);
    assert_eq!((code, out.as_str()), (EXIT_OK, "0123456789abc"));
    assert_eq!(err.matches("came and went").count(), 1, "{err}");
    assert!(err.contains("4890 bytes"), "{err}");
    // Unknown VM, not running at the start: vmadm's message, exit 1.
    let (code, out, err, _, _) = follow(vec![Err(console_error(404, "Unable to connect to console of VM x: VM not found"))], 5);
    assert_eq!((code, out.as_str(), err.as_str()), (EXIT_ERROR, "", "Unable to connect to console of VM x: VM not found\n"));
    let (code, _, err, _, _) = follow(vec![Err(console_error(409, "Unable to connect to console of VM x: VM is not running"))], 5);
    assert_eq!((code, err.as_str()), (EXIT_ERROR, "Unable to connect to console of VM x: VM is not running\n"));
    // A 5xx, an answer that makes no sense: `vmadm: ...`, exit 1.
    let (code, _, err, _, _) = follow(vec![Err(console_error(503, "zone-server did not answer"))], 5);
    assert_eq!(code, EXIT_ERROR);
    assert!(err.starts_with("vmadm: "), "{err}");
    for bad in [json!({"data": "x"}), json!([]), answer(10, 5, 20, 0, "x"), answer(0, 30, 20, 0, "x")] {
        let (code, _, err, _, _) = follow(vec![Ok(bad.clone())], 5);
        assert_eq!(code, EXIT_ERROR, "{bad}");
        assert!(err.contains("makes no sense"), "{bad}: {err}");
    }
}

/// What the host `imgadm` prints, as SmartOS's imgadm: (exit, stdout, stderr).
fn img_printed(s: &str, answer: serde_json::Value) -> (i32, String, String) {
    let call = imgadm_call(&args(s)).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = alcove_api::cli::print_answer("imgadm", &call, Ok(answer), &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn imgadm_prints_smartos_messages_and_tables() {
    let rec = |uuid: &str, name: &str, version: &str, published: &str| {
        json!({"manifest": {"uuid": uuid, "name": name, "version": version, "os": "linux", "type": "zvol", "published_at": published}, "zpool": "zones", "clones": 0})
    };
    let (a, b) = ("01b2c898-945f-11e1-a523-af1afbe22822", "11111111-945f-11e1-a523-af1afbe22822");
    let list = json!([rec(b, "ubuntu", "24.04", "2025-02-01T00:00:00Z"), rec(a, "debian", "12", "2024-06-30T10:00:00.000Z")]);
    let (code, out, err) = img_printed("list", list.clone());
    assert_eq!((code, err.as_str()), (0, ""));
    let want = format!(
        "UUID                                  NAME    VERSION  OS     TYPE  PUB\n\
         {a}  debian  12       linux  zvol  2024-06-30\n\
         {b}  ubuntu  24.04    linux  zvol  2025-02-01\n"
    );
    assert_eq!(out, want);
    let (_, out, _) = img_printed("list -H -o name,version -s -name", list.clone());
    assert_eq!(out, "ubuntu  24.04\ndebian  12\n");
    let (_, out, _) = img_printed("list -j", list.clone());
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), list);
    // avail: the same table, from {manifest, source} entries.
    let (_, out, _) = img_printed("avail -o uuid,source", json!([{"manifest": {"uuid": a}, "source": "http://10.0.2.2:8081"}]));
    assert_eq!(out, format!("UUID                                  SOURCE\n{a}  http://10.0.2.2:8081\n"));
    // import, delete, sources.
    assert_eq!(img_printed(&format!("import {a}"), rec(a, "debian", "12", "x")).1, format!("Imported image {a} (debian@12)\n"));
    assert_eq!(img_printed(&format!("delete {a}"), serde_json::Value::Null).1, format!("Deleted image {a}\n"));
    let sources = json!([{"type": "imgapi", "url": "http://10.0.2.2:8081"}, {"type": "imgapi", "url": "http://10.0.2.3"}]);
    assert_eq!(img_printed("sources", sources.clone()).1, "http://10.0.2.2:8081\nhttp://10.0.2.3\n");
    assert_eq!(img_printed("sources -a http://10.0.2.3", sources.clone()).1, "Added image source \"http://10.0.2.3\"\n");
    assert_eq!(img_printed("sources -d http://10.0.2.3", sources).1, "Deleted image source \"http://10.0.2.3\"\n");
    // show: the manifest alone; get: the record.
    let shown: serde_json::Value = serde_json::from_str(&img_printed(&format!("show {a}"), rec(a, "debian", "12", "x")).1).unwrap();
    assert_eq!(shown["name"], "debian");
    let got: serde_json::Value = serde_json::from_str(&img_printed(&format!("get {a}"), rec(a, "debian", "12", "x")).1).unwrap();
    assert_eq!(got["zpool"], "zones");
    // An answer that is not what the verb expects: exit 1, not a panic.
    for (line, bad) in [("list", json!({})), ("sources", json!("x")), (&*format!("import {a}"), json!([]))] {
        let (code, _, err) = img_printed(line, bad);
        assert_eq!(code, EXIT_ERROR, "{line}");
        assert!(err.starts_with("imgadm: writing the answer"), "{line}: {err}");
    }
}
