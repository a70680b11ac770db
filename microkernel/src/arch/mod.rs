//! Architecture glue. Only x86-64 exists; the portable kernel calls
//! `arch::…` and never names the architecture.

#[macro_use]
mod x86_64;
pub use self::x86_64::*;
