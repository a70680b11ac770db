//! Requests whose answer is to come ([`alcove_api::Begun::Pending`]: a
//! graceful stop that waits for its guest): the other connections are
//! served meanwhile, the request is answered once the backend says it is
//! over, and nothing behind it on its own connection jumps the queue.

mod common;

use alcove_api::server::PENDING_POLL_MS;
use alcove_api::{Config, ConnId, Limits, Server, Token};
use common::{Mock, TOKEN};
use serde_json::{Value, json};

const VM: &str = "5b5e2c3a-4e7e-4a4c-9a0f-3f9c1e2d7b10";

fn req(method: &str, target: &str) -> String {
    let len = if method == "POST" { "Content-Length: 0\r\n" } else { "" };
    format!("{method} {target} HTTP/1.1\r\nHost: alcove\r\nAuthorization: Bearer {TOKEN}\r\n{len}\r\n")
}

fn server(limits: Limits) -> Server<Mock> {
    let mut m = Mock::default();
    m.stops_wait = true;
    m.vms.insert(VM.into(), json!({"uuid": VM, "state": "running", "ram": 64}));
    Server::new(m, Config { token: Token::new(TOKEN).unwrap(), limits })
}

/// Everything the connection has to send, as (status, JSON body) pairs.
fn take(s: &mut Server<Mock>, id: ConnId, now: u64) -> Vec<(u16, Value)> {
    let mut bytes = Vec::new();
    loop {
        let out = s.output(id).to_vec();
        if out.is_empty() {
            break;
        }
        s.sent(id, out.len(), now);
        bytes.extend(out);
    }
    let mut answers = Vec::new();
    while !bytes.is_empty() {
        let mut d = alcove_api::client::ResponseDecoder::new();
        d.push(&bytes);
        let (mut status, mut body) = (0, Vec::new());
        loop {
            match d.next_event().expect("a well-formed response") {
                Some(alcove_api::client::Event::Head(h)) => status = h.status,
                Some(alcove_api::client::Event::Data(b)) => body.extend(b),
                Some(alcove_api::client::Event::End) => break,
                None => panic!("cut short"),
            }
        }
        answers.push((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
        bytes = d.leftover().to_vec();
    }
    answers
}

fn stop() -> String {
    req("POST", &format!("/vms/{VM}?action=stop&timeout=2"))
}

#[test]
fn another_connection_is_answered_while_a_stop_waits_then_the_stop_is() {
    let mut s = server(Limits::default());
    let a = s.accept(0).unwrap();
    s.receive(a, stop().as_bytes(), 0);
    assert_eq!(take(&mut s, a, 0), vec![], "the stop is answered only once it is over");
    assert_eq!(s.pending(), 1);
    // Meanwhile another client lists the VMs: answered, the VM stopping.
    let b = s.accept(10).unwrap();
    s.receive(b, req("GET", "/vms").as_bytes(), 10);
    let listed = take(&mut s, b, 10);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, 200);
    assert_eq!(listed[0].1[0]["state"], "stopping", "{listed:?}");
    // Not asked again before PENDING_POLL_MS, and still waiting after.
    assert!(!s.poll(PENDING_POLL_MS - 1));
    assert!(s.backend().polled.is_empty());
    assert!(!s.poll(PENDING_POLL_MS));
    assert_eq!(s.backend().polled, vec![1]);
    assert_eq!(take(&mut s, a, PENDING_POLL_MS), vec![]);
    // The guest powered off: the next poll answers the stop with the VM.
    s.backend_mut().over.push(1);
    assert!(s.poll(2 * PENDING_POLL_MS));
    let answered = take(&mut s, a, 2 * PENDING_POLL_MS);
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].0, 200);
    assert_eq!(answered[0].1["state"], "stopped");
    assert_eq!(s.pending(), 0);
    assert!(!s.wants_close(a), "the connection stays open for the next request");
}

#[test]
fn a_request_pipelined_behind_a_waiting_stop_is_answered_after_it() {
    let mut s = server(Limits::default());
    let a = s.accept(0).unwrap();
    let both = format!("{}{}", stop(), req("GET", &format!("/vms/{VM}")));
    s.receive(a, both.as_bytes(), 0);
    assert_eq!(take(&mut s, a, 0), vec![]);
    assert!(!s.backend().calls.iter().any(|c| c.starts_with("get_vm")), "the GET jumped the queue: {:?}", s.backend().calls);
    s.backend_mut().over.push(1);
    s.poll(PENDING_POLL_MS);
    let answers = take(&mut s, a, PENDING_POLL_MS);
    assert_eq!(answers.iter().map(|a| a.0).collect::<Vec<_>>(), vec![200, 200]);
    assert_eq!(answers[0].1["state"], "stopped");
    assert_eq!(answers[1].1["state"], "stopped");
}

#[test]
fn a_waiting_stop_is_not_timed_out_by_the_server_and_its_closed_connection_is_forgotten() {
    let limits = Limits { request_timeout_ms: 1_000, idle_timeout_ms: 2_000, ..Limits::default() };
    let mut s = server(limits);
    let a = s.accept(0).unwrap();
    s.receive(a, stop().as_bytes(), 0);
    // Far past both timeouts: no 408, not dropped (the stop's -t bounds it).
    assert_eq!(s.expire(10_000), vec![]);
    assert_eq!(take(&mut s, a, 10_000), vec![]);
    // The client goes away: the backend is told at the next poll and
    // never asked about the ticket again.
    s.close(a);
    assert_eq!(s.pending(), 0);
    s.poll(20_000);
    assert_eq!(s.backend().forgotten, vec![1]);
    assert!(s.backend().waiting.is_empty());
    let polled = s.backend().polled.len();
    s.poll(30_000);
    assert_eq!(s.backend().polled.len(), polled);
}

#[test]
fn pending_stops_are_bounded_by_the_connections() {
    let limits = Limits { max_connections: 3, ..Limits::default() };
    let mut s = server(limits);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = s.accept(0).unwrap();
        s.receive(id, stop().as_bytes(), 0);
        ids.push(id);
    }
    assert_eq!(s.pending(), 3);
    // A fourth connection is told 503 while three stops wait, and its
    // stop is never begun.
    let d = s.accept(0).unwrap();
    s.receive(d, stop().as_bytes(), 0);
    let told = take(&mut s, d, 0);
    assert_eq!(told.iter().map(|a| a.0).collect::<Vec<_>>(), vec![503]);
    assert!(s.wants_close(d));
    s.close(d);
    // Each connection holds at most one: a flood of stops on one waits in
    // its input, never more tickets.
    let flood = stop().repeat(50);
    s.receive(ids[0], flood.as_bytes(), 0);
    assert_eq!(s.backend().waiting.len(), 3);
}

#[test]
fn a_backend_that_does_not_know_the_ticket_answers_an_error_not_a_hang() {
    let mut s = server(Limits::default());
    let a = s.accept(0).unwrap();
    s.receive(a, stop().as_bytes(), 0);
    // The backend lost it (restarted, say): the poll's error is the answer.
    s.backend_mut().waiting.clear();
    s.poll(PENDING_POLL_MS);
    let answers = take(&mut s, a, PENDING_POLL_MS);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, 500);
    assert!(answers[0].1["message"].as_str().unwrap().contains("no stop 1 is under way"), "{answers:?}");
}

#[test]
fn a_forced_stop_is_answered_at_once() {
    let mut s = server(Limits::default());
    let a = s.accept(0).unwrap();
    s.receive(a, req("POST", &format!("/vms/{VM}?action=stop&force=true")).as_bytes(), 0);
    let answers = take(&mut s, a, 0);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].1["state"], "stopped");
    assert_eq!(s.pending(), 0);
}
