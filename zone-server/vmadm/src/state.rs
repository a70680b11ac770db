//! The instance state machine, as vmadm(8) "VM STATES" describes it for
//! HVM instances: `provisioning` until the instance is set up, then
//! `running` (autoboot) or `stopped`; `stopping` while the guest has been
//! asked to power off; `failed` when provisioning failed (it stays so until
//! deleted). Each refused transition is an error saying why.

use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Provisioning,
    Stopped,
    Running,
    Stopping,
    Failed,
}

impl State {
    /// vmadm's name (`state` property).
    pub fn name(self) -> &'static str {
        match self {
            State::Provisioning => "provisioning",
            State::Stopped => "stopped",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Failed => "failed",
        }
    }

    /// The state of the zone holding the VM (`zone_state`): a stopped or
    /// failed HVM instance's zone is `installed`; a running or stopping
    /// one's is `running`.
    pub fn zone_state(self) -> &'static str {
        match self {
            State::Provisioning | State::Stopped | State::Failed => "installed",
            State::Running | State::Stopping => "running",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "provisioning" => State::Provisioning,
            "stopped" => State::Stopped,
            "running" => State::Running,
            "stopping" => State::Stopping,
            "failed" => State::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happened to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Provisioning finished; `boot` is the instance's `autoboot`.
    Provisioned { boot: bool },
    /// Provisioning failed.
    ProvisionFailed,
    /// `vmadm start` (or autoboot at machine boot).
    Start,
    /// `vmadm stop`: the guest was asked to power off (ACPI power button).
    StopRequested,
    /// `vmadm reboot`: the guest was asked to power off, to be started
    /// again once it has (`autoboot` unchanged).
    RebootRequested,
    /// The new vmm-server of a rebooting VM runs.
    Restarted,
    /// `vmadm stop -F`, or the stop timeout ran out: the VM was halted.
    Halted,
    /// The guest powered itself off, or its vmm-server exited.
    Exited,
    /// `vmadm reboot`.
    Reboot,
}

/// Why a transition was refused: the sentence vmadm prints after
/// `Unable to <verb> VM <uuid>: `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The state after `event` in `state`, or why it cannot happen.
pub fn next(state: State, event: Event) -> Result<State, Refused> {
    use Event::*;
    use State::*;
    match (state, event) {
        (Provisioning, Provisioned { boot: true }) => Ok(Running),
        (Provisioning, Provisioned { boot: false }) => Ok(Stopped),
        (Provisioning, ProvisionFailed) => Ok(Failed),
        (_, Provisioned { .. } | ProvisionFailed) => Err(Refused("VM is not provisioning")),
        (Failed, _) => Err(Refused("VM failed to provision; delete it and create it again")),
        (Provisioning, _) => Err(Refused("VM is still provisioning")),
        (Stopped, Start) => Ok(Running),
        (Running, Start) => Err(Refused("VM is already running")),
        (Stopping, Start) => Err(Refused("VM is stopping; start it once it has stopped")),
        (Running, StopRequested) => Ok(Stopping),
        (Stopping, StopRequested) => Ok(Stopping),
        (Running, RebootRequested) => Ok(Stopping),
        (Stopping, RebootRequested) => Err(Refused("VM is stopping")),
        (Stopped, RebootRequested) => Err(Refused("VM is not running")),
        (Stopping, Restarted) => Ok(Running),
        (Running | Stopped, Restarted) => Err(Refused("VM is not rebooting")),
        (Stopped, StopRequested | Halted) => Err(Refused("VM is already not 'running' (currently: stopped)")),
        (Running | Stopping, Halted | Exited) => Ok(Stopped),
        (Stopped, Exited) => Err(Refused("VM is not running")),
        (Running, Reboot) => Ok(Running),
        (Stopped, Reboot) => Err(Refused("VM is not running")),
        (Stopping, Reboot) => Err(Refused("VM is stopping")),
    }
}
