//! `interface!`: an interface defined once, both sides derived from it (as
//! Hubris derives client and server from one `.idol` file).
//!
//! `macro_rules!` cannot build identifiers (`Status` → `StatusServer`) on
//! stable Rust, and nightly's `${concat(..)}` would need a feature gate in
//! every crate that expands the macro, so each interface becomes a module
//! whose items have fixed names: `status::Server`, `status::Client`, …

/// Defines an IPC interface as a module holding both sides of it.
///
/// ```
/// use libipc::interfaces::ServerStatus;
///
/// libipc::interface! {
///     /// What every server answers.
///     pub interface status = 1 {
///         /// Name, version and uptime of the server.
///         fn status() -> ServerStatus;
///         /// Returns `value`.
///         fn echo(value: u64) -> u64;
///         /// No `->` means the reply is `()`.
///         fn reset(counter: u32, hard: bool);
///     }
/// }
/// # fn main() {}
/// ```
///
/// expands to `pub mod status` with:
///
/// * `ID: u32` (= 1, the `MsgInfo` label; not 0 nor
///   `MsgInfo::NOTIFICATION_LABEL`, checked at compile time) and
///   `NAME: &str` (= `"status"`);
/// * `enum Request { status {}, echo { value: u64 }, reset { counter: u32, hard: bool } }`
///   and `enum Reply { status(ServerStatus), echo(u64), reset(()) }`, with
///   `Debug, Clone, PartialEq, Serialize, Deserialize` (postcard on the wire);
/// * `trait Server { fn status(&mut self) -> ServerStatus; fn echo(&mut self, value: u64) -> u64; … }`;
/// * `fn dispatch<S: Server + ?Sized>(server: &mut S, interface: u32, request: &[u8]) -> Result<Vec<u8>, RemoteError>`:
///   rejects another interface id, decodes, calls the trait, encodes the
///   reply; malformed bytes give `Err(RemoteError::BadRequest)`, never a panic;
/// * `struct Client<T: Transport>` with `new(transport)`, `transport()`,
///   `into_transport()` and one method per operation:
///   `fn echo(&self, value: u64) -> Result<u64, IpcError>`.
///
/// Types in the signatures are resolved in the module where `interface!` is
/// invoked (the generated module does `use super::*`) and must implement
/// `Debug, Clone, PartialEq, Serialize, DeserializeOwned`. The invoking crate
/// must depend on this crate under the name `libipc`. Operation names must
/// differ from `new`, `transport` and `into_transport`.
#[macro_export]
macro_rules! interface {
    (
        $(#[$meta:meta])*
        $vis:vis interface $name:ident = $id:literal {
            $(
                $(#[$op_meta:meta])*
                fn $op:ident ( $($arg:ident : $arg_ty:ty),* $(,)? ) $(-> $ret:ty)? ;
            )*
        }
    ) => {
        $(#[$meta])*
        #[allow(non_camel_case_types, clippy::unused_unit)]
        $vis mod $name {
            #[allow(unused_imports)]
            use super::*;

            /// The interface id, carried in the `MsgInfo` label.
            pub const ID: u32 = $id;
            /// The interface's name, for logs.
            pub const NAME: &str = ::core::stringify!($name);

            const _: () = ::core::assert!(
                ID != 0 && ID != $crate::__private::abi::MsgInfo::NOTIFICATION_LABEL,
                "interface ids 0 and MsgInfo::NOTIFICATION_LABEL are reserved",
            );

            /// A request: one variant per operation, holding its arguments.
            #[allow(missing_docs)]
            #[derive(Debug, Clone, PartialEq, $crate::__private::serde::Serialize, $crate::__private::serde::Deserialize)]
            #[serde(crate = "libipc::__private::serde")]
            pub enum Request {
                $( $(#[$op_meta])* $op { $($arg: $arg_ty),* }, )*
            }

            /// A reply: one variant per operation, holding its result.
            #[derive(Debug, Clone, PartialEq, $crate::__private::serde::Serialize, $crate::__private::serde::Deserialize)]
            #[serde(crate = "libipc::__private::serde")]
            pub enum Reply {
                $( $(#[$op_meta])* $op($crate::__reply_type!($($ret)?)), )*
            }

            /// The server side: implement this, answer through [`dispatch`].
            pub trait Server {
                $(
                    $(#[$op_meta])*
                    fn $op(&mut self $(, $arg: $arg_ty)*) -> $crate::__reply_type!($($ret)?);
                )*
            }

            /// Answers one encoded request on `interface`: the encoded reply,
            /// or the error to send back. Never panics on `request`.
            pub fn dispatch<S: Server + ?Sized>(
                server: &mut S,
                interface: u32,
                request: &[u8],
            ) -> $crate::__private::Result<$crate::__private::Vec<u8>, $crate::RemoteError> {
                if interface != ID {
                    return $crate::__private::Result::Err($crate::RemoteError::WrongInterface);
                }
                let request: Request = $crate::wire::decode(request)
                    .map_err(|_| $crate::RemoteError::BadRequest)?;
                let reply = match request {
                    $( Request::$op { $($arg),* } => Reply::$op(<S as Server>::$op(server $(, $arg)*)), )*
                };
                $crate::wire::encode(&reply).map_err(|_| $crate::RemoteError::EncodeFailed)
            }

            /// The client side: one method per operation, over any transport.
            #[derive(Debug, Clone)]
            pub struct Client<T: $crate::Transport> {
                transport: T,
            }

            impl<T: $crate::Transport> Client<T> {
                /// A client that calls through `transport`.
                pub const fn new(transport: T) -> Self {
                    Self { transport }
                }

                /// The transport this client calls through.
                pub fn transport(&self) -> &T {
                    &self.transport
                }

                /// Gives the transport back.
                pub fn into_transport(self) -> T {
                    self.transport
                }

                $(
                    $(#[$op_meta])*
                    #[allow(unreachable_patterns)]
                    pub fn $op(&self $(, $arg: $arg_ty)*)
                        -> $crate::__private::Result<$crate::__reply_type!($($ret)?), $crate::IpcError>
                    {
                        let request = $crate::wire::encode(&Request::$op { $($arg),* })?;
                        let reply = $crate::Transport::call(&self.transport, ID, &request)?;
                        match $crate::wire::decode::<Reply>(&reply)? {
                            Reply::$op(value) => $crate::__private::Result::Ok(value),
                            _ => $crate::__private::Result::Err($crate::IpcError::Decode),
                        }
                    }
                )*
            }
        }
    };
}

/// The reply type of an operation: its `-> T`, or `()` without one.
#[doc(hidden)]
#[macro_export]
macro_rules! __reply_type {
    () => { () };
    ($ret:ty) => { $ret };
}

/// Implements [`Dispatch`](crate::Dispatch) for a server type by routing each
/// interface id to that interface's `dispatch`; other ids get
/// `RemoteError::WrongInterface`.
///
/// ```
/// # use libipc::interfaces::ServerStatus;
/// use libipc::interfaces::{console, status};
///
/// struct Console { lines: u64 }
/// impl status::Server for Console {
///     fn status(&mut self) -> ServerStatus { ServerStatus::default() }
///     fn echo(&mut self, value: u64) -> u64 { value }
/// }
/// impl console::Server for Console {
///     fn write(&mut self, _text: String) { self.lines += 1 }
///     fn read(&mut self, _max: u32) -> Vec<u8> { Vec::new() }
///     fn put(&mut self, bytes: Vec<u8>) -> libipc::interfaces::Put {
///         libipc::interfaces::Put { taken: bytes.len() as u32, retry_ns: 0 }
///     }
///     fn feed(&mut self, _target: u64, _bytes: Vec<u8>) -> Result<u32, libipc::interfaces::ConsoleRefusal> {
///         Err(libipc::interfaces::ConsoleRefusal::NotReader)
///     }
///     fn tail(&mut self, _target: u64, _from: u64) -> Result<libipc::interfaces::ConsoleTail, libipc::interfaces::ConsoleRefusal> {
///         Err(libipc::interfaces::ConsoleRefusal::NotTailer)
///     }
/// }
/// libipc::impl_dispatch!(Console: status, console);
/// ```
///
/// Interfaces are named by their module path (`libipc::interfaces::status`
/// works too).
#[macro_export]
macro_rules! impl_dispatch {
    ($server:ty : $($($iface:ident)::+),+ $(,)?) => {
        impl $crate::Dispatch for $server {
            fn dispatch(
                &mut self,
                interface: u32,
                request: &[u8],
            ) -> $crate::__private::Result<$crate::__private::Vec<u8>, $crate::RemoteError> {
                $(
                    if interface == $($iface)::+::ID {
                        return $($iface)::+::dispatch(self, interface, request);
                    }
                )+
                $crate::__private::Result::Err($crate::RemoteError::WrongInterface)
            }
        }
    };
}
