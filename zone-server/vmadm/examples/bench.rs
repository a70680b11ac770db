//! Host figures for the instance model (wall time on the host, not Alcove
//! time): `vmadm list` over 100 instances, `vmadm get`, and validating a
//! SmartOS payload. `cargo run --release -p alcove-vmadm --example bench`.
//! Prints `bench <name> <value> <unit>` lines.

use std::time::Instant;

use alcove_vmadm::list::{self, ListFormat};
use alcove_vmadm::registry::{Instance, Registry};
use alcove_vmadm::validate;
use serde_json::json;

fn payload(i: u32) -> serde_json::Value {
    json!({
        "brand": "bhyve",
        "alias": format!("vm{i}"),
        "ram": 256 * (1 + i % 8),
        "vcpus": 1 + i % 4,
        "customer_metadata": {"role": "web"},
        "disks": [{"boot": true, "image_uuid": "462d1d03-8457-e134-a408-cf9ea2b9be96"}, {"size": 10240}],
        "nics": [{"nic_tag": "admin", "ips": ["10.88.88.50/24"], "gateways": ["10.88.88.1"]}]
    })
}

fn per_op(name: &str, runs: u32, mut f: impl FnMut()) {
    f();
    let t = Instant::now();
    for _ in 0..runs {
        f();
    }
    println!("bench {name} {:.1} us", t.elapsed().as_secs_f64() * 1e6 / f64::from(runs));
}

fn main() {
    let mut reg = Registry::new("00000000-0000-0000-0000-0000000000aa");
    let mut n = 0u64;
    let mut random = |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *x = (n >> 33) as u8;
        }
    };
    for i in 0..100 {
        let c = validate::check_create(payload(i).as_object().unwrap());
        assert!(c.problems.is_empty());
        let mut p = c.payload;
        validate::create_defaults(&mut p, &mut random);
        reg.add(Instance::new(p, "2026-12-03T10:00:00.000Z").unwrap()).unwrap();
    }
    let text = payload(7).to_string();
    per_op("vmadm_validate_create", 2000, || {
        let m = validate::parse(&text).unwrap();
        assert!(validate::check_create(&m).problems.is_empty());
    });
    per_op("vmadm_list_100", 200, || {
        assert_eq!(list::render(reg.select(&[]), &reg.server_uuid, &ListFormat::default()).lines().count(), 101);
    });
    per_op("vmadm_lookup_j_100", 200, || {
        assert_eq!(reg.lookup(&[]).len(), 100);
    });
    let one = reg.iter().next().unwrap().uuid;
    per_op("vmadm_get", 2000, || {
        let s = list::get_json(&reg.get(&one).unwrap().to_json(&reg.server_uuid));
        assert!(s.len() > 100);
    });
}
