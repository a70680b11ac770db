//! apid's graceful stops: begun at zone-server (`vmadm.begin` answers
//! pending), then answered once `vmadm get` no longer says `stopping`;
//! the abuse cases (unknown tickets, too many at once, forgotten ones).

extern crate std;

use super::backend::{MAX_PENDING, Vmadm, VmadmBackend};
use alcove_api::{Backend, Begun, Uuid, VmAction};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libipc::interfaces::VmadmOutput;

const VM: &str = "54f1cc77-68f1-42ab-acac-5c4f64f5d6e0";

/// A zone-server with one VM whose state the test sets; a graceful stop
/// only begins (pending) and makes it `stopping`.
struct Zone {
    state: &'static str,
    exists: bool,
    began: Vec<Vec<String>>,
    gets: usize,
}

impl Vmadm for Zone {
    fn run(&mut self, _program: &str, args: Vec<String>, _stdin: String) -> Result<VmadmOutput, String> {
        let ok = |stdout: String| Ok(VmadmOutput { stdout, stderr: String::new(), code: 0 });
        match args.first().map(String::as_str) {
            Some("get") if self.exists => {
                self.gets += 1;
                ok(format!("{{\"uuid\":\"{VM}\",\"state\":\"{}\"}}\n", self.state))
            }
            Some("get") => Ok(VmadmOutput { stdout: String::new(), stderr: format!("Unable to get VM {VM}: VM not found\n"), code: 1 }),
            Some("stop") => {
                self.state = "stopped";
                ok(String::new())
            }
            _ => Ok(VmadmOutput { stdout: String::new(), stderr: "vmadm: usage\n".into(), code: 2 }),
        }
    }

    fn begin(&mut self, program: &str, args: Vec<String>, stdin: String) -> Result<Option<VmadmOutput>, String> {
        self.began.push(args.clone());
        if args.first().map(String::as_str) == Some("stop") && self.state == "running" {
            self.state = "stopping";
            return Ok(None);
        }
        if args.first().map(String::as_str) == Some("stop") && self.state == "stopped" {
            return Ok(Some(VmadmOutput { stdout: String::new(), stderr: format!("VM {VM} is already not 'running'\n"), code: 0 }));
        }
        self.run(program, args, stdin).map(Some)
    }
}

fn backend() -> VmadmBackend<Zone> {
    VmadmBackend::new(Zone { state: "running", exists: true, began: Vec::new(), gets: 0 })
}

fn uuid() -> Uuid {
    Uuid::parse(VM).unwrap()
}

const GRACEFUL: VmAction = VmAction::Stop { force: false, timeout_s: Some(2) };

#[test]
fn a_graceful_stop_is_pending_while_the_vm_stops_and_answered_with_the_stopped_vm() {
    let mut b = backend();
    let Ok(Begun::Pending(t)) = b.vm_action_begin(uuid(), GRACEFUL) else { panic!("not pending") };
    assert_eq!(b.vmadm.began, [["stop", VM, "-t", "2"]]);
    assert_eq!(b.vm_action_poll(t), None, "still stopping");
    // Another request meanwhile: answered, the VM stopping.
    assert_eq!(b.get_vm(uuid()).unwrap()["state"], "stopping");
    b.vmadm.state = "stopped";
    let done = b.vm_action_poll(t).expect("over").expect("the VM");
    assert_eq!(done["state"], "stopped");
    assert_eq!(b.pending(), 0);
    // Asked again once over: an error naming the ticket, no panic.
    let again = b.vm_action_poll(t).expect("an answer").unwrap_err();
    assert!(again.message.contains(&format!("no stop or reboot {t} is under way")), "{again:?}");
}

#[test]
fn a_stop_of_a_stopped_vm_or_a_forced_one_is_answered_at_once() {
    let mut b = backend();
    b.vmadm.state = "stopped";
    assert!(matches!(b.vm_action_begin(uuid(), GRACEFUL), Ok(Begun::Done(v)) if v["state"] == "stopped"));
    let mut b = backend();
    let forced = VmAction::Stop { force: true, timeout_s: None };
    assert!(matches!(b.vm_action_begin(uuid(), forced), Ok(Begun::Done(v)) if v["state"] == "stopped"));
    assert!(b.vmadm.began.is_empty(), "a forced stop goes through run, not begin");
}

#[test]
fn a_vm_deleted_while_it_stops_answers_not_found() {
    let mut b = backend();
    let Ok(Begun::Pending(t)) = b.vm_action_begin(uuid(), GRACEFUL) else { panic!("not pending") };
    b.vmadm.exists = false;
    let e = b.vm_action_poll(t).expect("over").unwrap_err();
    assert_eq!(e.status(), 404, "{e:?}");
    assert_eq!(b.pending(), 0);
}

#[test]
fn unknown_and_forgotten_tickets_and_too_many_stops_are_refused() {
    let mut b = backend();
    for t in [0, 1, u64::MAX] {
        let e = b.vm_action_poll(t).expect("an answer").unwrap_err();
        assert_eq!(e.status(), 500, "{e:?}");
    }
    let Ok(Begun::Pending(t)) = b.vm_action_begin(uuid(), GRACEFUL) else { panic!("not pending") };
    b.vm_action_forget(t);
    b.vm_action_forget(t); // twice, and unknown ones, are no-ops
    b.vm_action_forget(12345);
    assert_eq!(b.pending(), 0);
    let gets = b.vmadm.gets;
    assert!(b.vm_action_poll(t).expect("an answer").is_err());
    assert_eq!(b.vmadm.gets, gets, "a forgotten ticket costs zone-server nothing");
    // The table is bounded: past MAX_PENDING, 503 and nothing begun.
    for _ in 0..MAX_PENDING {
        b.vmadm.state = "running";
        assert!(matches!(b.vm_action_begin(uuid(), GRACEFUL), Ok(Begun::Pending(_))));
    }
    b.vmadm.state = "running";
    let began = b.vmadm.began.len();
    let e = b.vm_action_begin(uuid(), GRACEFUL).unwrap_err();
    assert_eq!(e.status(), 503, "{e:?}");
    assert_eq!(b.vmadm.began.len(), began);
    assert_eq!(b.pending(), MAX_PENDING);
}
