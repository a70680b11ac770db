//! The runtime every Alcove process links: the `_start` entry point, a heap,
//! `log` routed to the kernel console, a panic path that reports and exits,
//! and the start-up information init hands each server.
//!
//! A process is entered with `rdi` = its IPC buffer, `rsi` = the address of
//! its start-up information and `rdx` = that information's length (init
//! itself gets the boot archive there instead). The binary provides
//! `fn main(start: alcove_rt::Start) -> u64` through [`entry!`]; its return
//! value is the exit code.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

#[cfg(not(target_os = "none"))]
mod hostsys;
pub mod heap;
pub mod mapping;
pub mod start;
pub mod sync;
pub mod thread;

pub use heap::{HEAP_WINDOW_BASE, HEAP_WINDOW_BYTES, grow_heap, heap_grown_bytes};
pub use mapping::{PrivateMapping, RunPage, SharedMemory};
pub use thread::{Thread, ThreadSlots};

pub use start::{Start, StartInfo};

use abi::CapSlot;
use core::sync::atomic::{AtomicU32, Ordering};

/// The console capability's slot, once known (logging goes nowhere before).
static CONSOLE: AtomicU32 = AtomicU32::new(u32::MAX);

/// Who besides init may `lifecycle.stop` this server ([`start::StartInfo::stop_badges`]).
static STOPPERS: spin::Once<alloc::vec::Vec<u64>> = spin::Once::new();

/// Sets who besides init may stop this server (once; later calls are
/// ignored). Without it only init may.
pub fn set_stoppers(badges: alloc::vec::Vec<u64>) {
    STOPPERS.call_once(|| badges);
}

/// Whether a caller with `badge` may stop this server: init (its own,
/// unbadged endpoint) and the callers the manifest names, nobody else (a
/// VMM holding a grant, an instance, another server).
fn may_stop(badge: u64) -> bool {
    badge == 0 || STOPPERS.get().is_some_and(|b| b.contains(&badge))
}

/// Routes `log` and panics to the console capability in `slot`.
pub fn set_console(slot: CapSlot) {
    CONSOLE.store(slot, Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Writes text to the kernel console (no-op before `set_console`).
pub fn print(text: &str) {
    let slot = CONSOLE.load(Ordering::Relaxed);
    if slot != u32::MAX {
        #[cfg(target_os = "none")]
        for chunk in text.as_bytes().chunks(4096) {
            let _ = libipc::sys::debug_write(slot, chunk);
        }
    }
    #[cfg(not(target_os = "none"))]
    let _ = text;
}

/// `print!` for processes.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        $crate::print(&alloc::format!($($arg)*));
    }};
}

/// `println!` for processes: one console write per line, so lines from
/// different processes never interleave.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let mut s = alloc::format!($($arg)*);
        s.push('\n');
        $crate::print(&s);
    }};
}

struct ConsoleLogger;
static LOGGER: ConsoleLogger = ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let name = start::process_name();
            print(&alloc::format!("[{:5}] {name}: {}\n", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

/// The size of every process's heap arena (static, in its image); a
/// process adds more with [`grow_heap`] (see [`heap`]).
pub const HEAP_BYTES: usize = 512 * 1024;

/// Text written into a fixed buffer, cut at its end (at a character
/// boundary): what the panic handler formats its message into, as a
/// panic may come from a failed allocation.
#[cfg_attr(not(any(target_os = "none", test)), allow(dead_code))]
struct FixedText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

#[cfg_attr(not(any(target_os = "none", test)), allow(dead_code))]
impl<const N: usize> FixedText<N> {
    const fn new() -> Self {
        Self { bytes: [0; N], len: 0 }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> core::fmt::Write for FixedText<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// The panic message, formatted without the heap: a panic for a failed
/// allocation (the heap spent) used to format it with `format!`, whose
/// allocation failed again, and so on until the stack ran out (zone-server
/// out of heap: a page fault at the stack's bottom, no message).
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
fn panic_message(name: &str, info: &core::panic::PanicInfo<'_>) -> FixedText<512> {
    use core::fmt::Write as _;
    let mut text = FixedText::<512>::new();
    let _ = write!(text, "panic in {name}: {info}");
    // The line always ends, however long the message was: room is made
    // for the newline at a character boundary (not in a UTF-8
    // continuation byte).
    if text.len == 512 {
        text.len = 511;
        while text.len > 0 && text.bytes[text.len] & 0xc0 == 0x80 {
            text.len -= 1;
        }
    }
    let _ = text.write_str("\n");
    text
}

#[cfg(target_os = "none")]
mod target {
    use core::sync::atomic::{AtomicBool, Ordering};

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        // A panic while reporting one (or another thread's at the same
        // time): the process ends at once, with the first's message.
        static PANICKING: AtomicBool = AtomicBool::new(false);
        if !PANICKING.swap(true, Ordering::SeqCst) {
            super::print(super::panic_message(super::start::process_name(), info).as_str());
        }
        libipc::sys::exit(101)
    }
}

#[cfg(test)]
mod panic_message_tests {
    /// The panic message's buffer: cut at a character boundary.
    #[test]
    fn fixed_text_is_cut_at_a_character_boundary() {
        use core::fmt::Write as _;
        let mut text = super::FixedText::<16>::new();
        let _ = text.write_str("abcdefghijklmnoé");
        assert_eq!(text.as_str(), "abcdefghijklmno");
        let _ = write!(text, "more");
        assert_eq!(text.as_str(), "abcdefghijklmnom", "what fits");
        let _ = write!(text, "x");
        assert_eq!(text.as_str(), "abcdefghijklmnom", "full: nothing more");
    }
}

#[cfg(target_os = "none")]
pub use heap::target::{heap_grown_used, init_heap};

/// Writes bytes at an address of this process's that the caller mapped
/// writable (init fills frames through a scratch window this way).
///
/// # Safety
///
/// `addr..addr + bytes.len()` is mapped writable in this process, is not
/// memory Rust manages (a stack, the heap, a static) and no reference
/// points into it; nobody else writes it meanwhile.
pub unsafe fn poke(addr: u64, bytes: &[u8]) {
    #[cfg(target_os = "none")]
    {
        // SAFETY: the caller's contract above.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) }
    }
    #[cfg(not(target_os = "none"))]
    let _ = (addr, bytes);
}

/// Bytes of a region this process mapped readable (a file, guest RAM).
pub fn user_bytes(addr: u64, len: usize) -> &'static [u8] {
    user_slice(addr, len)
}

/// Bytes of a region this process mapped writable. Prefer
/// [`PrivateMapping`] (memory of one's own) or [`SharedMemory`] (memory
/// another party writes), which need no such promise.
///
/// # Safety
///
/// `addr..addr + len` is mapped readable and writable in this process and
/// stays mapped for as long as the slice is used; for that time nothing
/// else reads or writes it (no other reference, thread, process, device or
/// guest).
pub unsafe fn user_bytes_mut(addr: u64, len: usize) -> &'static mut [u8] {
    #[cfg(target_os = "none")]
    {
        // SAFETY: the caller's contract above.
        unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) }
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (addr, len);
        &mut []
    }
}

/// A `T` in a page this process mapped writable for it. Prefer
/// [`RunPage`] for a vCPU's run page.
///
/// # Safety
///
/// A writable mapping at `addr` holds a `T` for which every bit pattern is
/// valid (plain integers), aligned, and stays mapped while the reference
/// is used; for that time nothing else reads or writes it (no other
/// reference or thread, and no system call that makes the kernel write it,
/// such as `VcpuRun` on the vCPU whose run page it is).
pub unsafe fn user_mut<T>(addr: u64) -> &'static mut T {
    #[cfg(target_os = "none")]
    // SAFETY: the caller's contract above.
    unsafe {
        &mut *(addr as *mut T)
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = addr;
        panic!("user memory exists only on Alcove")
    }
}

/// The bytes at a user address the process was told about at start.
fn user_slice(addr: u64, len: usize) -> &'static [u8] {
    #[cfg(target_os = "none")]
    {
        // SAFETY: `addr..addr+len` is the start-up information (or boot
        // archive) that init (or the kernel) mapped read-only into this
        // process before starting it; it is never unmapped.
        unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (addr, len);
        &[]
    }
}

/// Declares the process's `main`. Expands to the `_start` symbol.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        #[unsafe(link_section = ".text._start")]
        extern "C" fn _start(ipc_buffer: u64, info: u64, info_len: u64) -> ! {
            $crate::init_heap();
            // SAFETY: the kernel (or init) mapped one writable page at
            // `ipc_buffer` for this, the process's only thread.
            unsafe { $crate::__private::set_ipc_buffer(ipc_buffer as *mut $crate::__private::IpcBuffer) };
            let start = $crate::Start::new(ipc_buffer, info, info_len);
            let code: u64 = $main(start);
            $crate::__private::exit(code)
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use abi::IpcBuffer;
    #[cfg(target_os = "none")]
    pub use libipc::sys::{exit, set_ipc_buffer};
}

/// Nanoseconds since boot (0 on the host).
pub fn clock_ns() -> u64 {
    #[cfg(target_os = "none")]
    {
        libipc::sys::clock_ns().unwrap_or(0)
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// What every server reports through the `status` interface: its identity,
/// when it started and how many requests it answered. Servers embed one and
/// delegate `status::Server` to it.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: alloc::string::String,
    pub version: u32,
    pub started_ns: u64,
    pub requests: u64,
}

impl Service {
    pub fn new(name: &str, version: u32) -> Self {
        Self { name: name.into(), version, started_ns: clock_ns(), requests: 0 }
    }

    /// Counts a request and answers `status`.
    pub fn status(&mut self) -> libipc::interfaces::ServerStatus {
        self.requests += 1;
        libipc::interfaces::ServerStatus {
            name: self.name.clone(),
            version: self.version,
            uptime_ns: clock_ns().saturating_sub(self.started_ns),
            requests_served: self.requests,
        }
    }

    pub fn echo(&mut self, value: u64) -> u64 {
        self.requests += 1;
        value
    }
}

/// Wraps a server with the `lifecycle` interface: `stop(code)` is answered,
/// then the process exits with `code` (the exit happens when the bound
/// notification, signalled by `stop`, comes back through the serve loop,
/// i.e. after the reply went out).
pub struct Managed<D> {
    pub inner: D,
    stop: Option<u32>,
    notification: CapSlot,
}

impl<D> Managed<D> {
    pub fn new(inner: D, notification: CapSlot) -> Self {
        Self { inner, stop: None, notification }
    }
}

struct Stopper<'a, D> {
    stop: &'a mut Option<u32>,
    notification: CapSlot,
    inner: &'a mut D,
    /// The caller's badge: `restarted` is init's (0) alone.
    badge: u64,
}

impl<D: libipc::Dispatch> libipc::interfaces::lifecycle::Server for Stopper<'_, D> {
    fn stop(&mut self, code: u32) -> Result<(), alloc::string::String> {
        if !may_stop(self.badge) {
            log::warn!("lifecycle.stop({code}) from badge {:#x} refused: init and the manifest's lifecycle-stop callers alone", self.badge);
            return Err(alloc::format!(
                "lifecycle.stop refused: badge {:#x} is neither init's nor a lifecycle-stop caller's in the manifest",
                self.badge
            ));
        }
        log::info!("stopping (exit code {code}) on request");
        *self.stop = Some(code);
        #[cfg(target_os = "none")]
        let _ = libipc::sys::signal(self.notification, 1);
        #[cfg(not(target_os = "none"))]
        let _ = self.notification;
        Ok(())
    }

    fn restarted(&mut self, server: alloc::string::String) {
        if self.badge != 0 {
            log::warn!("lifecycle.restarted({server:?}) from badge {:#x} ignored: init's alone", self.badge);
            return;
        }
        log::info!("init restarted \"{server}\", a server this one calls");
        self.inner.peer_restarted(&server);
    }
}

impl<D: libipc::Dispatch> libipc::Dispatch for Managed<D> {
    fn dispatch(&mut self, interface: u32, request: &[u8]) -> Result<alloc::vec::Vec<u8>, libipc::RemoteError> {
        self.dispatch_from(0, interface, request)
    }

    fn dispatch_from(
        &mut self,
        badge: u64,
        interface: u32,
        request: &[u8],
    ) -> Result<alloc::vec::Vec<u8>, libipc::RemoteError> {
        use libipc::interfaces::lifecycle;
        if interface == lifecycle::ID {
            let mut s = Stopper { stop: &mut self.stop, notification: self.notification, inner: &mut self.inner, badge };
            return lifecycle::dispatch(&mut s, interface, request);
        }
        self.inner.dispatch_from(badge, interface, request)
    }

    fn notified(&mut self, bits: u64) {
        if let Some(code) = self.stop {
            #[cfg(target_os = "none")]
            libipc::sys::exit(u64::from(code));
            #[cfg(not(target_os = "none"))]
            let _ = code;
        }
        self.inner.notified(bits);
    }

    fn background(&mut self) -> Option<u64> {
        self.inner.background()
    }
}

/// Serves `server` (plus `lifecycle`) on the endpoint in `slot` forever (on
/// Alcove); logs and exits if the endpoint is unusable.
#[cfg(target_os = "none")]
pub fn serve_forever<D: libipc::Dispatch>(slot: CapSlot, server: D) -> u64 {
    serve_forever_with(slot, server, |_| {})
}

/// As [`serve_forever`], after `setup` ran with the slot of the thread's
/// bound notification (bit 0 is the lifecycle's; a server may bind an IRQ
/// to other bits and learns of them in [`libipc::Dispatch::notified`]).
#[cfg(target_os = "none")]
pub fn serve_forever_with<D: libipc::Dispatch>(slot: CapSlot, server: D, setup: impl FnOnce(CapSlot)) -> u64 {
    use start::{SLOT_NOTIFY, SLOT_THREAD};
    if let Err(e) = libipc::sys::create(abi::ObjectType::Notification, SLOT_NOTIFY, 0)
        .and_then(|_| libipc::sys::thread_bind_notification(SLOT_THREAD, SLOT_NOTIFY))
    {
        log::error!("cannot set up the lifecycle notification: {e}");
        return 2;
    }
    setup(SLOT_NOTIFY);
    let mut managed = Managed::new(server, SLOT_NOTIFY);
    match libipc::kernel::serve(libipc::cap::Cap::from_slot(slot), &mut managed) {
        Ok(never) => match never {},
        Err(e) => {
            log::error!("cannot serve on slot {slot}: {e}");
            2
        }
    }
}

/// Defines a server type whose only interface so far is `status`: the
/// struct, its constructor, the `status::Server` implementation through a
/// [`Service`], `Dispatch`, and a host test over the in-process transport.
/// Each server starts here and grows its own interfaces.
#[macro_export]
macro_rules! status_server {
    ($(#[$meta:meta])* $ty:ident, $name:literal, $version:expr) => {
        $(#[$meta])*
        pub struct $ty {
            service: $crate::Service,
        }

        impl $ty {
            pub fn new() -> Self {
                Self { service: $crate::Service::new($name, $version) }
            }
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }

        impl libipc::interfaces::status::Server for $ty {
            fn status(&mut self) -> libipc::interfaces::ServerStatus {
                self.service.status()
            }
            fn echo(&mut self, value: u64) -> u64 {
                self.service.echo(value)
            }
        }

        libipc::impl_dispatch!($ty: libipc::interfaces::status);

        #[cfg(test)]
        mod status_server_tests {
            extern crate std;
            use libipc::interfaces::status;

            #[test]
            fn answers_status_over_the_in_process_transport() {
                let (client, mut server_end) = libipc::in_process::channel(4);
                let t = std::thread::spawn(move || {
                    let mut s = super::$ty::new();
                    server_end.serve_until_closed(&mut s)
                });
                let c = status::Client::new(client);
                let st = c.status().unwrap();
                assert_eq!(st.name, $name);
                assert_eq!(st.version, super::$ty::new().service.version);
                assert_eq!(c.echo(42).unwrap(), 42);
                assert_eq!(c.status().unwrap().requests_served, 3);
                drop(c);
                assert_eq!(t.join().unwrap(), 3);
            }
        }
    };
}

/// Unmaps `pages` pages at `va` from this process.
///
/// # Safety
///
/// Nothing uses the memory any more: no reference into it, no thread that
/// will touch it, no mapping object ([`SharedMemory`], [`PrivateMapping`],
/// [`RunPage`]) that owns it.
pub unsafe fn unmap_own(va: u64, pages: u64) -> Result<(), abi::Error> {
    #[cfg(target_os = "none")]
    {
        // SAFETY: the caller's contract above: nothing refers to the range.
        unsafe { libipc::sys::unmap(start::SLOT_SELF, va, pages) }
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (va, pages);
        Ok(())
    }
}

/// Starts `thread` (created in this process) at `entry(ipc, arg0, arg1)` on
/// the stack ending at `stack_top`.
///
/// With `shared_ipc_buffer` the thread uses the process's IPC buffer (the
/// one libipc knows). Without it the thread may make only register-only
/// system calls.
///
/// # Safety
///
/// 1. `entry` is the address of an `extern "C" fn(u64, u64, u64) -> !`.
/// 2. The stack below `stack_top` is mapped writable, this thread's alone,
///    and stays mapped while the thread lives.
/// 3. With `shared_ipc_buffer`, no two threads of the process do IPC at the
///    same time.
pub unsafe fn start_thread(
    thread: abi::CapSlot,
    entry: u64,
    stack_top: u64,
    shared_ipc_buffer: bool,
    arg0: u64,
    arg1: u64,
) -> Result<(), abi::Error> {
    #[cfg(target_os = "none")]
    {
        let ipc = if shared_ipc_buffer { start::IPC_BUFFER_ADDR } else { 0 };
        // SAFETY: the caller's contract above.
        unsafe { libipc::sys::thread_configure(thread, entry, stack_top, ipc, arg0, arg1)? };
        libipc::sys::thread_resume(thread)
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (thread, entry, stack_top, shared_ipc_buffer, arg0, arg1);
        Err(abi::Error::NoSyscall)
    }
}

/// 64 random bits from the CPU's RDRAND (Intel SDM Vol. 1 §7.3.17), or
/// `None` when the CPU has none or it keeps failing (the SDM's ten tries).
pub fn rdrand_u64() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID is unprivileged and only reads.
        let has_rdrand = core::arch::x86_64::__cpuid(1).ecx & (1 << 30) != 0;
        if !has_rdrand {
            return None;
        }
        #[target_feature(enable = "rdrand")]
        fn step() -> Option<u64> {
            let mut v = 0u64;
            // A safe intrinsic inside a function with its target feature.
            let ok = core::arch::x86_64::_rdrand64_step(&mut v);
            (ok == 1).then_some(v)
        }
        for _ in 0..10 {
            // SAFETY: RDRAND is present (checked above), which is all
            // `step`'s target feature requires.
            if let Some(v) = unsafe { step() } {
                return Some(v);
            }
        }
        None
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// The time-stamp counter (the guests' TSC too: Alcove gives them the
/// host's, unchanged).
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC only reads the counter; Alcove does not set CR4.TSD,
        // so it is allowed in ring 3.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}
