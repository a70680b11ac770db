//! vmadm: SmartOS's instance model for Alcove, as pure logic.
//!
//! One implementation behind the operator shell, the HTTP API and the host
//! CLI: the `bhyve` property table as vmadm(8) documents it
//! ([`properties`]), payload validation with vmadm's coercions, defaults and
//! deprecated forms ([`validate`], [`coerce`]), the instance record and its
//! state machine ([`state`]), the set of instances ([`registry`]), the
//! verbs with vmadm's argv, output formats, messages and exit codes
//! ([`argv`], [`list`], [`update`], [`verbs`]; [`ops`] has the same
//! operations with structured results, for the HTTP API), and the bridge to the JSON a
//! `vmm-server` is started from ([`vmm`]).
//!
//! Nothing here touches hardware, IPC or storage: the side effects of a verb
//! (cloning volumes, creating VNICs, starting a vmm-server) go through the
//! [`verbs::Host`] trait the caller (zone-server) implements.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod argv;
pub mod coerce;
pub mod devices;
#[doc(hidden)]
pub mod hostile;
pub mod list;
pub mod ops;
pub mod properties;
pub mod registry;
pub mod state;
pub mod update;
pub mod uuid;
pub mod validate;
pub mod values;
pub mod verbs;
pub mod vmm;

#[cfg(test)]
mod tests;
