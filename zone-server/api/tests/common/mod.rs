//! A mock backend: VMs and images in memory, each call recorded, with the
//! errors a real backend gives (validation, conflict, not found, not
//! implemented).
#![allow(dead_code)]

use std::collections::BTreeMap;

use alcove_api::{ApiError, Backend, Begun, Uuid, VmAction};
use serde_json::{Value, json};

pub const TOKEN: &str = "s3cret-token-0123456789_abcdef";

#[derive(Default)]
pub struct Mock {
    pub vms: BTreeMap<String, Value>,
    pub images: BTreeMap<String, Value>,
    pub calls: Vec<String>,
    pub actions: Vec<(String, VmAction)>,
    /// What `POST /vms/:uuid/console` typed.
    pub typed: Vec<u8>,
    next: u32,
    /// Graceful stops wait (`vm_action_begin` answers a ticket; the VM
    /// is `stopping` until the test moves the ticket to `over`).
    pub stops_wait: bool,
    /// Stops under way: ticket → the VM's uuid.
    pub waiting: BTreeMap<u64, String>,
    /// Tickets whose stop the test ended (the guest powered off).
    pub over: Vec<u64>,
    /// Tickets asked about, in order.
    pub polled: Vec<u64>,
    /// Tickets the server forgot.
    pub forgotten: Vec<u64>,
    next_ticket: u64,
}

fn matches(v: &Value, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, want)| match v.get(k) {
        Some(Value::String(s)) => s == want,
        Some(other) => want.parse::<Value>().is_ok_and(|w| w == *other),
        None => false,
    })
}

fn check_payload(p: &Value) -> Result<(), ApiError> {
    if let Some(r) = p.get("ram")
        && !r.is_u64()
    {
        return Err(ApiError::validation(
            "Invalid VM payload",
            json!({"bad_values": ["ram"], "bad_properties": [], "missing_properties": []}),
        ));
    }
    match p.get("brand").and_then(Value::as_str) {
        Some("joyent") => Err(ApiError::not_implemented("brand \"joyent\": not supported yet")),
        _ => Ok(()),
    }
}

impl Backend for Mock {
    fn ping(&mut self) -> Result<Value, ApiError> {
        self.calls.push("ping".into());
        Ok(json!({"ping": "pong"}))
    }

    fn list_vms(&mut self, filters: &[(String, String)]) -> Result<Value, ApiError> {
        self.calls.push(format!("list_vms {filters:?}"));
        Ok(Value::Array(self.vms.values().filter(|v| matches(v, filters)).cloned().collect()))
    }

    fn create_vm(&mut self, mut payload: Value) -> Result<Value, ApiError> {
        self.calls.push("create_vm".into());
        check_payload(&payload)?;
        let uuid = match payload.get("uuid").and_then(Value::as_str) {
            Some(u) => u.to_string(),
            None => {
                self.next += 1;
                format!("00000000-0000-4000-8000-{:012x}", self.next)
            }
        };
        if self.vms.contains_key(&uuid) {
            return Err(ApiError::conflict(format!("VM {uuid} exists already")));
        }
        if payload.get("alias").and_then(Value::as_str) == Some("explode") {
            return Err(ApiError::internal("storaged: the pool is out of space"));
        }
        payload["uuid"] = json!(uuid);
        payload["state"] = json!("stopped");
        self.vms.insert(uuid, payload.clone());
        Ok(payload)
    }

    fn validate_vm(&mut self, payload: Value) -> Result<Value, ApiError> {
        self.calls.push("validate_vm".into());
        check_payload(&payload)?;
        Ok(json!({"valid": true}))
    }

    fn get_vm(&mut self, uuid: Uuid) -> Result<Value, ApiError> {
        self.calls.push(format!("get_vm {uuid}"));
        self.vms.get(&uuid.to_string()).cloned().ok_or_else(|| ApiError::not_found(format!("VM {uuid} not found")))
    }

    fn vm_action(&mut self, uuid: Uuid, action: VmAction) -> Result<Value, ApiError> {
        self.calls.push(format!("vm_action {uuid}"));
        self.actions.push((uuid.to_string(), action.clone()));
        let vm = self.vms.get_mut(&uuid.to_string()).ok_or_else(|| ApiError::not_found(format!("VM {uuid} not found")))?;
        match action {
            VmAction::Start if vm["state"] == "running" => return Err(ApiError::conflict(format!("VM {uuid} is running already"))),
            VmAction::Start => vm["state"] = json!("running"),
            VmAction::Stop { .. } => vm["state"] = json!("stopped"),
            VmAction::Reboot { .. } => {}
            VmAction::Update(props) => {
                for (k, v) in props.as_object().into_iter().flatten() {
                    vm[k] = v.clone();
                }
            }
            VmAction::CreateSnapshot(name) => {
                let list = vm.as_object_mut().unwrap().entry("snapshots").or_insert(json!([]));
                list.as_array_mut().unwrap().push(json!({"name": name}));
            }
            VmAction::RollbackSnapshot(_) | VmAction::DeleteSnapshot(_) => {}
        }
        Ok(vm.clone())
    }

    fn vm_action_begin(&mut self, uuid: Uuid, action: VmAction) -> Result<Begun, ApiError> {
        if !(self.stops_wait && matches!(action, VmAction::Stop { force: false, .. })) {
            return self.vm_action(uuid, action).map(Begun::Done);
        }
        self.calls.push(format!("vm_action_begin {uuid}"));
        let vm = self.vms.get_mut(&uuid.to_string()).ok_or_else(|| ApiError::not_found(format!("VM {uuid} not found")))?;
        vm["state"] = json!("stopping");
        self.next_ticket += 1;
        self.waiting.insert(self.next_ticket, uuid.to_string());
        Ok(Begun::Pending(self.next_ticket))
    }

    fn vm_action_poll(&mut self, ticket: u64) -> Option<Result<Value, ApiError>> {
        self.polled.push(ticket);
        let Some(u) = self.waiting.get(&ticket).cloned() else {
            return Some(Err(ApiError::internal(format!("no stop {ticket} is under way"))));
        };
        if !self.over.contains(&ticket) {
            return None;
        }
        self.waiting.remove(&ticket);
        let vm = self.vms.get_mut(&u)?;
        vm["state"] = json!("stopped");
        Some(Ok(vm.clone()))
    }

    fn vm_action_forget(&mut self, ticket: u64) {
        self.forgotten.push(ticket);
        self.waiting.remove(&ticket);
    }

    /// A running VM's guest wrote `zone-guest: hello\r\n`.
    fn vm_console(&mut self, uuid: Uuid, offset: u64) -> Result<Value, ApiError> {
        self.calls.push(format!("vm_console {uuid} {offset}"));
        let vm = self.vms.get(&uuid.to_string()).ok_or_else(|| ApiError::not_found(format!("VM {uuid} not found")))?;
        if vm["state"] != "running" {
            return Err(ApiError::conflict(format!("Unable to connect to console of VM {uuid}: VM is not running")));
        }
        let out = b"zone-guest: hello\r\n";
        let start = if offset > out.len() as u64 { 0 } else { offset as usize };
        Ok(alcove_api::backend::console_answer(uuid, start as u64, 0, out.len() as u64, &out[start..]))
    }

    /// What is typed at a running VM's console is kept in `typed`.
    fn vm_console_write(&mut self, uuid: Uuid, data: &[u8]) -> Result<Value, ApiError> {
        self.calls.push(format!("vm_console_write {uuid}"));
        let vm = self.vms.get(&uuid.to_string()).ok_or_else(|| ApiError::not_found(format!("VM {uuid} not found")))?;
        if vm["state"] != "running" {
            return Err(ApiError::conflict(format!("Unable to connect to console of VM {uuid}: VM is not running")));
        }
        self.typed.extend_from_slice(data);
        Ok(json!({"uuid": uuid.to_string(), "taken": data.len()}))
    }

    fn delete_vm(&mut self, uuid: Uuid) -> Result<Value, ApiError> {
        self.calls.push(format!("delete_vm {uuid}"));
        self.vms.remove(&uuid.to_string()).map(|_| Value::Null).ok_or_else(|| ApiError::not_found(format!("VM {uuid} not found")))
    }

    fn list_images(&mut self, filters: &[(String, String)]) -> Result<Value, ApiError> {
        self.calls.push(format!("list_images {filters:?}"));
        Ok(Value::Array(self.images.values().filter(|v| matches(v, filters)).cloned().collect()))
    }

    fn get_image(&mut self, uuid: Uuid) -> Result<Value, ApiError> {
        self.calls.push(format!("get_image {uuid}"));
        self.images.get(&uuid.to_string()).cloned().ok_or_else(|| ApiError::not_found(format!("image {uuid} not found")))
    }

    fn import_image(&mut self, manifest: Value) -> Result<Value, ApiError> {
        self.calls.push("import_image".into());
        let Some(u) = manifest.get("uuid").and_then(Value::as_str) else {
            return Err(ApiError::validation("manifest has no uuid", json!([{"field": "uuid", "code": "MissingParameter"}])));
        };
        self.images.insert(u.to_string(), manifest.clone());
        Ok(manifest)
    }

    fn import_remote_image(&mut self, uuid: Uuid, source: Option<&str>) -> Result<Value, ApiError> {
        self.calls.push(format!("import_remote_image {uuid} {source:?}"));
        let m = json!({"uuid": uuid.to_string(), "name": "remote", "source": source});
        self.images.insert(uuid.to_string(), m.clone());
        Ok(m)
    }

    fn delete_image(&mut self, uuid: Uuid) -> Result<Value, ApiError> {
        self.calls.push(format!("delete_image {uuid}"));
        let u = uuid.to_string();
        if self.vms.values().any(|v| v.get("image_uuid").and_then(Value::as_str) == Some(&u)) {
            return Err(ApiError::conflict(format!("image {u} is used by a VM")));
        }
        self.images.remove(&u).map(|_| Value::Null).ok_or_else(|| ApiError::not_found(format!("image {u} not found")))
    }

    fn image_sources(&mut self) -> Result<Value, ApiError> {
        self.calls.push("image_sources".into());
        Ok(json!([{"url": "http://10.0.2.2:8081", "type": "imgapi"}]))
    }

    fn available_images(&mut self, filters: &[(String, String)]) -> Result<Value, ApiError> {
        self.calls.push(format!("available_images {filters:?}"));
        Ok(json!([]))
    }

    fn change_source(&mut self, add: bool, url: &str) -> Result<Value, ApiError> {
        self.calls.push(format!("change_source {add} {url}"));
        Ok(json!([{"url": url, "type": "imgapi"}]))
    }
}
