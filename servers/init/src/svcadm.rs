//! svcadm through init's `svc` interface, as policy (pure, host-tested):
//! who may restart, disable and enable which server. init.rs ends and
//! starts the processes; what it may do comes from here.
//!
//! The manifest says who may stop a server: the callers its entry names in
//! `lifecycle-stop=NAME,...` (the same list its own `lifecycle.stop`
//! honours), so `svcadm` through init gives no one a power the manifest
//! did not. init itself is no server of the manifest (`svcadm restart
//! init` is an unknown service); a template (`on_demand`) has instances,
//! not a process of its own (its instances are their starter's, through
//! `proc`); and a caller may not stop itself (it would never get the
//! answer, and a shell that disabled itself leaves no one to enable it).
//! Which servers an operator may stop is the manifest's choice: the shell
//! manifests name the shell for netd, zone-server and storaged, never for
//! the console (the shell's own terminal).

use alloc::string::String;
use initrd::manifest::Manifest;
use libipc::interfaces::SvcError;

/// The index of server `name` if `caller` (a server index, from its
/// badge; `None`: init or an instance) may restart, disable or enable it.
pub fn check(manifest: &Manifest, caller: Option<usize>, name: &str) -> Result<usize, SvcError> {
    let t = manifest
        .servers
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| SvcError::NoSuchService { name: clip(name) })?;
    let server = &manifest.servers[t];
    let who = caller.and_then(|c| manifest.servers.get(c)).map(|s| s.name.as_str());
    let named = who.is_some_and(|who| {
        server
            .args
            .iter()
            .filter_map(|a| a.strip_prefix("lifecycle-stop="))
            .flat_map(|l| l.split(','))
            .any(|n| n == who)
    });
    if !named {
        return Err(SvcError::NotPermitted { name: server.name.clone() });
    }
    if server.on_demand {
        return Err(SvcError::Refused {
            name: server.name.clone(),
            why: "a template: its instances are their starter's (proc.stop)".into(),
        });
    }
    if caller == Some(t) {
        return Err(SvcError::Refused { name: server.name.clone(), why: "the caller itself".into() });
    }
    Ok(t)
}

/// At most 64 bytes of a name the caller sent (it goes back in the error).
fn clip(s: &str) -> String {
    String::from(crate::instances::cut(s, 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
        [system]
        name = "t"
        [[server]]
        name = "console"
        priority = 200
        budget_kib = 64
        serves = ["console"]
        [[server]]
        name = "netd"
        priority = 160
        budget_kib = 64
        serves = ["netd"]
        args = ["lifecycle-stop=shell,ops"]
        [[server]]
        name = "vmm-server"
        priority = 100
        budget_kib = 64
        on_demand = true
        args = ["lifecycle-stop=shell"]
        [[server]]
        name = "shell"
        priority = 100
        budget_kib = 64
        calls = ["console", "netd", "proc"]
        args = ["lifecycle-stop=shell"]
        [[server]]
        name = "ops"
        priority = 100
        budget_kib = 64
        calls = ["proc"]
    "#;

    fn manifest() -> Manifest {
        Manifest::from_toml(MANIFEST).unwrap()
    }

    #[test]
    fn only_the_servers_lifecycle_stop_callers_may() {
        let m = manifest();
        assert_eq!(check(&m, Some(3), "netd"), Ok(1));
        assert_eq!(check(&m, Some(4), "netd"), Ok(1));
        // The console names no one: the shell may not stop its terminal.
        let np = |n: &str| Err(SvcError::NotPermitted { name: n.into() });
        assert_eq!(check(&m, Some(3), "console"), np("console"));
        // A server the manifest does not name, an instance (no server
        // index) and a badge beyond the manifest are refused alike.
        assert_eq!(check(&m, Some(1), "netd"), np("netd"));
        assert_eq!(check(&m, None, "netd"), np("netd"));
        assert_eq!(check(&m, Some(99), "netd"), np("netd"));
    }

    #[test]
    fn unknown_names_init_templates_and_the_caller_itself_are_refused() {
        let m = manifest();
        let none = |n: &str| Err(SvcError::NoSuchService { name: n.into() });
        assert_eq!(check(&m, Some(3), "init"), none("init"));
        assert_eq!(check(&m, Some(3), ""), none(""));
        assert_eq!(check(&m, Some(3), "netd "), none("netd "));
        // A long name comes back clipped, never whole.
        let long = "x".repeat(5000);
        assert_eq!(check(&m, Some(3), &long), none(&"x".repeat(64)));
        let long = "é".repeat(100);
        assert!(matches!(check(&m, Some(3), &long), Err(SvcError::NoSuchService { name }) if name.len() <= 64));
        assert!(matches!(check(&m, Some(3), "vmm-server"), Err(SvcError::Refused { name, .. }) if name == "vmm-server"));
        assert!(matches!(check(&m, Some(3), "shell"), Err(SvcError::Refused { name, .. }) if name == "shell"));
    }
}
