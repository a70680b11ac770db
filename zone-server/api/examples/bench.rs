//! API requests per second for `GET /vms/:uuid` with 100 VMs (the issue's
//! benchmark), on the host: through the sans-IO server alone, and over a
//! localhost keep-alive TCP connection to `std_server`. Prints
//! `bench <name> <value> <unit>`.
//!
//! `cargo run --release -p alcove-api --example bench`

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use alcove_api::client::{BufferedResponse, Request, Url};
use alcove_api::{ApiError, Backend, Config, Limits, Server, Token, Uuid, VmAction};
use serde_json::{Value, json};

const TOKEN: &str = "bench-token-0123456789abcdef";
const REQUESTS: usize = 20_000;

struct Vms(BTreeMap<Uuid, Value>);

impl Backend for Vms {
    fn ping(&mut self) -> Result<Value, ApiError> {
        Ok(json!({}))
    }
    fn list_vms(&mut self, _: &[(String, String)]) -> Result<Value, ApiError> {
        Ok(Value::Array(self.0.values().cloned().collect()))
    }
    fn create_vm(&mut self, _: Value) -> Result<Value, ApiError> {
        Err(ApiError::not_implemented("bench"))
    }
    fn validate_vm(&mut self, _: Value) -> Result<Value, ApiError> {
        Err(ApiError::not_implemented("bench"))
    }
    fn get_vm(&mut self, uuid: Uuid) -> Result<Value, ApiError> {
        self.0.get(&uuid).cloned().ok_or_else(|| ApiError::not_found("no VM"))
    }
    fn vm_action(&mut self, _: Uuid, _: VmAction) -> Result<Value, ApiError> {
        Err(ApiError::not_implemented("bench"))
    }
    fn delete_vm(&mut self, _: Uuid) -> Result<Value, ApiError> {
        Err(ApiError::not_implemented("bench"))
    }
    fn list_images(&mut self, _: &[(String, String)]) -> Result<Value, ApiError> {
        Ok(json!([]))
    }
    fn get_image(&mut self, _: Uuid) -> Result<Value, ApiError> {
        Err(ApiError::not_found("no image"))
    }
    fn import_image(&mut self, _: Value) -> Result<Value, ApiError> {
        Err(ApiError::not_implemented("bench"))
    }
    fn import_remote_image(&mut self, _: Uuid, _: Option<&str>) -> Result<Value, ApiError> {
        Err(ApiError::not_implemented("bench"))
    }
    fn delete_image(&mut self, _: Uuid) -> Result<Value, ApiError> {
        Err(ApiError::not_implemented("bench"))
    }
    fn image_sources(&mut self) -> Result<Value, ApiError> {
        Ok(json!([]))
    }
    fn available_images(&mut self, _: &[(String, String)]) -> Result<Value, ApiError> {
        Ok(json!([]))
    }
}

fn vms() -> (Vms, Vec<Uuid>) {
    let mut m = BTreeMap::new();
    let mut ids = Vec::new();
    for i in 0..100u32 {
        let u = Uuid::parse(&format!("00000000-0000-4000-8000-{i:012x}")).unwrap();
        // A VM about the size vmadm get prints.
        m.insert(
            u,
            json!({"uuid": u.to_string(), "brand": "bhyve", "alias": format!("vm{i}"), "ram": 1024, "vcpus": 2,
                   "state": "running", "nics": [{"mac": "02:08:20:00:00:01", "nic_tag": "admin", "ip": "10.0.0.5", "netmask": "255.255.255.0"}],
                   "disks": [{"boot": true, "image_uuid": "01b2c898-945f-11e1-a523-af1afbe22822", "size": 10240, "model": "virtio"}],
                   "customer_metadata": {"user-script": "#!/bin/sh\necho hello\n"}}),
        );
        ids.push(u);
    }
    (Vms(m), ids)
}

fn config() -> Config {
    Config { token: Token::new(TOKEN).unwrap(), limits: Limits::default() }
}

fn main() {
    let url = Url::parse("http://alcove").unwrap();
    let (backend, ids) = vms();
    let requests: Vec<Vec<u8>> = ids.iter().map(|u| Request::new("GET", format!("/vms/{u}")).bearer(TOKEN).encode(&url, false)).collect();

    // The sans-IO server alone: parse, authenticate, route, serialize.
    let mut s = Server::new(backend, config());
    let id = s.accept(0).unwrap();
    let start = Instant::now();
    let mut bytes_out = 0;
    for i in 0..REQUESTS {
        let r = &requests[i % requests.len()];
        assert_eq!(s.receive(id, r, 0), r.len());
        let n = s.output(id).len();
        assert!(s.output(id).starts_with(b"HTTP/1.1 200 "));
        bytes_out += n;
        s.sent(id, n, 0);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("bench api_get_vm_sansio {:.0} req/s", REQUESTS as f64 / secs);
    println!("bench api_get_vm_response_size {} bytes", bytes_out / REQUESTS);

    // Over localhost TCP, one keep-alive connection, one request at a time.
    let (backend, _) = vms();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Mutex::new(Server::new(backend, config())));
    std::thread::spawn(move || alcove_api::std_server::serve(listener, shared));
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = REQUESTS / 4;
    let start = Instant::now();
    for i in 0..n {
        c.write_all(&requests[i % requests.len()]).unwrap();
        let mut resp = BufferedResponse::new(1 << 20);
        let r = loop {
            if let Some(r) = resp.poll().unwrap() {
                break r;
            }
            let got = c.read(&mut buf).unwrap();
            assert!(got > 0, "the server closed the connection");
            resp.push(&buf[..got]);
        };
        assert_eq!(r.head.status, 200);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("bench api_get_vm_tcp_keepalive {:.0} req/s", n as f64 / secs);
}
