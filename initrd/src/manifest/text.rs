//! The TOML front end (host only): parses `initrd/manifests/*.toml` into a
//! [`Manifest`], filling in defaults, and validates it.
//!
//! Numbers are read as `i64` first so that a value out of range is reported
//! in the manifest's own terms (`property "irqs": 99 is not an IOAPIC line`)
//! rather than as a type error; unknown keys are refused, so a misspelt
//! property does not pass silently.

use super::*;
use std::string::ToString;
use std::vec::Vec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    system: RawSystem,
    #[serde(default)]
    server: Vec<RawServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Option<String>,
    binary: Option<String>,
    priority: Option<i64>,
    budget_kib: Option<i64>,
    #[serde(default)]
    serves: Vec<String>,
    #[serde(default)]
    calls: Vec<String>,
    #[serde(default)]
    ioports: Vec<Vec<i64>>,
    #[serde(default)]
    irqs: Vec<i64>,
    #[serde(default)]
    device_memory: Vec<Vec<i64>>,
    restart: Option<RawRestart>,
    cpu: Option<i64>,
    #[serde(default)]
    machine_exit: bool,
    #[serde(default)]
    pci_bars: bool,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    spawns: Vec<String>,
    spawn_budget_kib: Option<i64>,
    #[serde(default)]
    on_demand: bool,
    #[serde(default)]
    volumes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRestart {
    Times(i64),
    Word(String),
}

impl Manifest {
    /// Parses and validates a manifest written in TOML.
    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = ::toml::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        let servers = raw.server.into_iter().enumerate().map(|(i, s)| s.cook(i)).collect::<Result<_, _>>()?;
        let manifest =
            Manifest { system: System { name: raw.system.name, description: raw.system.description }, servers };
        manifest.validate()?;
        Ok(manifest)
    }
}

impl RawServer {
    /// Fills in defaults and narrows numbers; `validate` does the rest.
    fn cook(self, index: usize) -> Result<Server, ManifestError> {
        let name = self.name.ok_or_else(|| {
            ManifestError::invalid(None, "name", format!("the server at position {} has no name", index + 1))
        })?;
        let who = Some(name.as_str());
        let missing = |property| ManifestError::invalid(who, property, "missing");
        let priority = self.priority.ok_or_else(|| missing("priority"))?;
        let priority = u8::try_from(priority).map_err(|_| {
            ManifestError::invalid(
                who,
                "priority",
                format!("{priority} is outside {}..={}", PRIORITIES.start(), PRIORITIES.end()),
            )
        })?;
        let budget = self.budget_kib.ok_or_else(|| missing("budget_kib"))?;
        let budget_kib = u32::try_from(budget).map_err(|_| {
            ManifestError::invalid(who, "budget_kib", format!("{budget} is outside 1..={MAX_BUDGET_KIB} (KiB)"))
        })?;
        let ioports = self
            .ioports
            .iter()
            .map(|pair| match pair[..] {
                [first, count] => match (u16::try_from(first), u16::try_from(count)) {
                    (Ok(first), Ok(count)) => Ok(IoPorts { first, count }),
                    _ => Err(ManifestError::invalid(
                        who,
                        "ioports",
                        format!("[{first:#x}, {count}] is not a range of ports"),
                    )),
                },
                _ => Err(ManifestError::invalid(who, "ioports", format!("{pair:?} is not [first, count]"))),
            })
            .collect::<Result<_, _>>()?;
        let irqs = self
            .irqs
            .iter()
            .map(|&irq| {
                u8::try_from(irq).map_err(|_| {
                    ManifestError::invalid(
                        who,
                        "irqs",
                        format!("{irq} is not an IOAPIC line ({}..={})", IOAPIC_LINES.start(), IOAPIC_LINES.end()),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let device_memory = self
            .device_memory
            .iter()
            .map(|pair| match pair[..] {
                [base, bytes] => match (u64::try_from(base), u64::try_from(bytes)) {
                    (Ok(phys_base), Ok(bytes)) => Ok(DeviceMemory { phys_base, bytes }),
                    _ => Err(ManifestError::invalid(
                        who,
                        "device_memory",
                        format!("[{base:#x}, {bytes:#x}] is not a range of physical memory"),
                    )),
                },
                _ => Err(ManifestError::invalid(who, "device_memory", format!("{pair:?} is not [phys_base, bytes]"))),
            })
            .collect::<Result<_, _>>()?;
        let restart = match self.restart {
            None => Restart::DEFAULT,
            Some(RawRestart::Times(0)) => Restart::Never,
            Some(RawRestart::Times(n)) => match u32::try_from(n) {
                Ok(n) => Restart::Times(n),
                Err(_) => {
                    return Err(ManifestError::invalid(
                        who,
                        "restart",
                        format!("{n} restarts is outside 0..={MAX_RESTARTS}; say \"never\" or \"always\""),
                    ));
                }
            },
            Some(RawRestart::Word(w)) if w == "never" => Restart::Never,
            Some(RawRestart::Word(w)) if w == "always" => Restart::Always,
            Some(RawRestart::Word(w)) => {
                return Err(ManifestError::invalid(
                    who,
                    "restart",
                    format!("{w:?} is not a restart policy (a count, \"never\" or \"always\")"),
                ));
            }
        };
        let cpu = self
            .cpu
            .map(|cpu| {
                u32::try_from(cpu).map_err(|_| ManifestError::invalid(who, "cpu", format!("{cpu} is not a CPU index")))
            })
            .transpose()?;
        let spawn_budget = self.spawn_budget_kib.unwrap_or(0);
        let spawn_budget_kib = u32::try_from(spawn_budget).map_err(|_| {
            ManifestError::invalid(who, "spawn_budget_kib", format!("{spawn_budget} is outside 0..={MAX_BUDGET_KIB} (KiB)"))
        })?;
        Ok(Server {
            spawns: self.spawns,
            spawn_budget_kib,
            on_demand: self.on_demand,
            binary: self.binary.unwrap_or_else(|| name.clone()),
            priority,
            budget_kib,
            serves: self.serves,
            calls: self.calls,
            ioports,
            irqs,
            device_memory,
            restart,
            cpu,
            machine_exit: self.machine_exit,
            pci_bars: self.pci_bars,
            files: self.files,
            args: self.args,
            volumes: self.volumes,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    const DEMO: &str = include_str!("../../manifests/demo.toml");
    const TEST: &str = include_str!("../../manifests/test.toml");

    fn error(text: &str) -> String {
        Manifest::from_toml(text).unwrap_err().to_string()
    }

    const BASE: &str = r#"
        [system]
        name = "t"
        [[server]]
        name = "console"
        priority = 200
        budget_kib = 256
        serves = ["console"]
        ioports = [[0x3f8, 8]]
        irqs = [4]
    "#;

    /// A VMM granted pool volumes (issue 12): the specs travel as text
    /// through the binary manifest; one that calls no storaged, too many,
    /// or an empty spec is refused.
    #[test]
    fn volumes_for_a_vmm() {
        let vmm = |calls: &str, volumes: &str| {
            format!(
                "{BASE}\n[[server]]\nname = \"storaged\"\npriority = 160\nbudget_kib = 256\nserves = [\"storaged\"]\n\
                 [[server]]\nname = \"vm\"\nbinary = \"vmm-server\"\npriority = 100\nbudget_kib = 256\nserves = []\ncalls = [{calls}]\nvolumes = [{volumes}]\n"
            )
        };
        let m = Manifest::from_toml(&vmm("\"storaged\"", "\"zones/a-disk0 volsize=1048576\", \"zones/b\"")).unwrap();
        let back = Manifest::decode(&m.encode().unwrap()).unwrap();
        assert_eq!(back.server("vm").unwrap().volumes, ["zones/a-disk0 volsize=1048576", "zones/b"]);
        assert!(back.server("storaged").unwrap().volumes.is_empty());
        assert!(error(&vmm("\"console\"", "\"zones/a\"")).contains("must call \"storaged\""));
        let nine = (0..9).map(|i| format!("\"zones/v{i}\"")).collect::<Vec<_>>().join(", ");
        assert!(error(&vmm("\"storaged\"", &nine)).contains("at most 8"));
        assert!(error(&vmm("\"storaged\"", "\"\"")).contains("1 to 256"));
    }

    #[test]
    fn shipped_manifests_are_valid() {
        let demo = Manifest::from_toml(DEMO).unwrap();
        assert_eq!(demo.system.name, "demo");
        let names: Vec<_> = demo.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["console", "storaged", "netd", "zone-server", "vmm-server", "apid", "shell"]);
        // The servers serve their endpoints; the API and the operator shell
        // are clients only (of zone-server, netd, init and storaged), the
        // VMM a template zone-server starts per VM.
        for s in &demo.servers {
            assert_eq!(s.binary, s.name);
            match s.name.as_str() {
                "vmm-server" => {
                    assert!(s.serves.is_empty() && s.on_demand);
                    // zone-server: the guest's metadata changes go back.
                    assert_eq!(s.calls, ["console", "storaged", "zone-server"]);
                    assert_eq!(s.files, ["demo-guest"]);
                }
                "zone-server" => {
                    assert_eq!(s.serves, ["zone-server"]);
                    assert_eq!(s.calls, ["console", "storaged", "proc", "netd"]);
                    assert_eq!(s.spawns, ["vmm-server"]);
                    assert!(s.spawn_budget_kib > 0);
                }
                "apid" => {
                    assert!(s.serves.is_empty());
                    assert_eq!(s.calls, ["console", "netd", "zone-server"]);
                }
                "shell" => {
                    assert!(s.serves.is_empty());
                    assert_eq!(s.calls, ["console", "zone-server", "proc", "storaged", "netd"]);
                }
                name => {
                    assert_eq!(s.serves, [name]);
                    if name == "storaged" {
                        // The driver registers its PCI functions with init.
                        assert_eq!(s.calls, ["console", "proc"]);
                    } else if name == "netd" {
                        // The NIC's driver: after storaged's look at the
                        // PCI bus, registering its function with init.
                        assert_eq!(s.calls, ["console", "storaged", "proc"]);
                        assert_eq!(s.files, ["netd.conf"]);
                    } else if name != "console" {
                        assert_eq!(s.calls, ["console"]);
                    }
                }
            }
        }
        let console = demo.server("console").unwrap();
        assert_eq!(console.ioports, [IoPorts { first: 0x3f8, count: 8 }]);
        assert_eq!(console.irqs, [4]);

        let test = Manifest::from_toml(TEST).unwrap();
        let ktest = test.server("ktest-user").unwrap();
        assert!(ktest.serves.is_empty());
        assert_eq!(ktest.priority, 100);
        let mut all: Vec<_> = test.endpoints().map(|(e, _)| e.to_string()).collect();
        let mut calls = ktest.calls.clone();
        all.sort();
        calls.sort();
        assert_eq!(calls, all, "ktest-user calls every endpoint");
        for s in demo.servers.iter().filter(|s| !s.serves.is_empty()) {
            assert!(test.server(&s.name).is_some(), "test.toml lacks {}", s.name);
        }
    }

    #[test]
    fn defaults() {
        let m = Manifest::from_toml(BASE).unwrap();
        let c = &m.servers[0];
        assert_eq!((c.binary.as_str(), c.restart, c.cpu), ("console", Restart::DEFAULT, None));
        assert!(c.calls.is_empty() && c.device_memory.is_empty());
        assert_eq!(m.system.description, "");
        let m = Manifest::from_toml(&format!("{BASE}binary = \"uart\"\nrestart = 0\ncpu = 1\n")).unwrap();
        assert_eq!(
            (m.servers[0].binary.as_str(), m.servers[0].restart, m.servers[0].cpu),
            ("uart", Restart::Never, Some(1))
        );
        let m = Manifest::from_toml(&format!("{BASE}restart = \"always\"\n")).unwrap();
        assert_eq!(m.servers[0].restart, Restart::Always);
    }

    /// A VMM's budget is its guest's RAM and more: 5 GiB (a 4 GiB guest)
    /// and the field's whole range are accepted; the old cap was 1 GiB.
    #[test]
    fn budgets_beyond_1_gib_are_accepted() {
        for kib in [1u64 << 20, (1 << 20) + 1, 5 << 20, u64::from(u32::MAX)] {
            let text: String = BASE
                .lines()
                .map(|l| if l.trim_start().starts_with("budget_kib ") { format!("budget_kib = {kib}") } else { l.to_string() })
                .map(|l| l + "\n")
                .collect();
            let m = Manifest::from_toml(&text).unwrap_or_else(|e| panic!("{kib} KiB: {e}"));
            assert_eq!(u64::from(m.servers[0].budget_kib), kib);
        }
    }

    #[test]
    fn errors_name_server_and_property() {
        let cases = [
            ("irqs = [99]", r#"manifest: server "console": property "irqs": 99 is not an IOAPIC line (0..=23)"#),
            ("irqs = [-1]", r#"manifest: server "console": property "irqs": -1 is not an IOAPIC line (0..=23)"#),
            ("priority = 300", r#"manifest: server "console": property "priority": 300 is outside 1..=254"#),
            ("budget_kib = 0", r#"manifest: server "console": property "budget_kib": 0 is outside 1..=4294967295 (KiB)"#),
            (
                "budget_kib = 4294967296",
                r#"manifest: server "console": property "budget_kib": 4294967296 is outside 1..=4294967295 (KiB)"#,
            ),
            ("ioports = [[0x3f8]]", r#"manifest: server "console": property "ioports": [1016] is not [first, count]"#),
            (
                "ioports = [[0x10000, 1]]",
                r#"manifest: server "console": property "ioports": [0x10000, 1] is not a range of ports"#,
            ),
            (
                "device_memory = [[0xfebf0010, 0x1000]]",
                r#"manifest: server "console": property "device_memory": [0xfebf0010, 0x1000] is not page-aligned (0x1000)"#,
            ),
            (
                "device_memory = [[-4096, 4096]]",
                r#"manifest: server "console": property "device_memory": [0xfffffffffffff000, 0x1000] is not a range of physical memory"#,
            ),
            (
                "restart = \"sometimes\"",
                r#"manifest: server "console": property "restart": "sometimes" is not a restart policy (a count, "never" or "always")"#,
            ),
            (
                "restart = -2",
                r#"manifest: server "console": property "restart": -2 restarts is outside 0..=1000; say "never" or "always""#,
            ),
            (
                "calls = [\"storaged\"]",
                r#"manifest: server "console": property "calls": no server serves endpoint "storaged""#,
            ),
            ("cpu = -1", r#"manifest: server "console": property "cpu": -1 is not a CPU index"#),
        ];
        for (extra, want) in cases {
            // Later keys override: append the edit as a second table would, by
            // rewriting the one property.
            let key = extra.split(' ').next().unwrap();
            let text: String = BASE
                .lines()
                .filter(|l| !l.trim_start().starts_with(&format!("{key} ")))
                .chain([extra])
                .collect::<Vec<_>>()
                .join("\n");
            assert_eq!(error(&text), want, "{extra}");
        }
    }

    #[test]
    fn structural_errors() {
        assert!(error(&format!("{BASE}irq = [5]\n")).contains("unknown field `irq`"));
        assert!(
            error("[system]\nname = \"x\"\n[[server]]\npriority = 1\n")
                .contains("the server at position 1 has no name")
        );
        let no_priority = "[system]\nname = \"x\"\n[[server]]\nname = \"a\"\nbudget_kib = 1\n";
        assert_eq!(error(no_priority), r#"manifest: server "a": property "priority": missing"#);
        assert!(
            error(&format!("{BASE}[[server]]\nname = \"init\"\npriority = 1\nbudget_kib = 1\n"))
                .contains("init is implicit")
        );
        let twin = format!(
            "{BASE}[[server]]\nname = \"uart2\"\npriority = 1\nbudget_kib = 1\nioports = [[0x3fc, 2]]\nirqs = [3]\n"
        );
        assert_eq!(
            error(&twin),
            r#"manifest: server "uart2": property "ioports": [0x3fc, 2] overlaps [0x3f8, 8] of server "console""#
        );
        assert!(error("[system]\nname = 3\n").starts_with("manifest: "));
        assert!(error("not toml at all").starts_with("manifest: "));
    }

    #[test]
    fn toml_to_binary_round_trip() {
        for text in [DEMO, TEST, BASE] {
            let m = Manifest::from_toml(text).unwrap();
            assert_eq!(Manifest::decode(&m.encode().unwrap()).unwrap(), m);
        }
    }
}
