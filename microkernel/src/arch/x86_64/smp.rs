//! Bringing up the application processors with INIT-SIPI-SIPI (SDM Vol. 3A
//! §9.4.4.1, the universal start-up algorithm), one at a time.

use super::{apic, cpu, paging, percpu, time, MAX_CPUS, PHYS_OFFSET};
use core::sync::atomic::{AtomicUsize, Ordering};

core::arch::global_asm!(include_str!("trampoline.s"));

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_param_cr3: u8;
    static ap_param_efer_extra: u8;
    static ap_param_stack: u8;
    static ap_param_cpu: u8;
    static ap_param_entry: u8;
}

const TRAMPOLINE_PHYS: u64 = 0x8000;

/// APs that reached `ap_entry` and signalled.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Called by each AP once it runs Rust code on its own stack.
pub fn signal_started() {
    STARTED.fetch_add(1, Ordering::Release);
}

/// Starts every CPU in `apic_ids` other than this one; returns how many came
/// up. `entry(cpu_index)` runs on each with its kernel stack.
pub fn start_aps(apic_ids: &[u32], entry: extern "C" fn(u64) -> !) -> usize {
    let me = apic::id();
    let start = &raw const ap_trampoline_start as u64;
    let end = &raw const ap_trampoline_end as u64;
    let len = (end - start) as usize;
    let dst = TRAMPOLINE_PHYS + PHYS_OFFSET;
    let param = |sym: *const u8| dst + (sym as u64 - start);
    // SAFETY: physical 0x8000..0x9000 lies in the first MiB, which the frame
    // allocator never hands out, and is mapped by the direct map; nothing
    // else uses it. The parameter slots are 8-byte aligned inside the copy.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, dst as *mut u8, len);
        (param(&raw const ap_param_cr3) as *mut u64).write_volatile(paging::boot_cr3());
        let nx = if cpu::features().nx { 1 << 11 } else { 0 };
        (param(&raw const ap_param_efer_extra) as *mut u64).write_volatile(nx);
        (param(&raw const ap_param_entry) as *mut u64).write_volatile(entry as usize as u64);
    }
    let mut next_cpu = 1usize;
    for &id in apic_ids.iter().filter(|&&id| id != me) {
        if next_cpu >= MAX_CPUS {
            log::warn!("smp: more than {MAX_CPUS} CPUs; the rest stay parked");
            break;
        }
        let before = STARTED.load(Ordering::Acquire);
        // SAFETY: as above; the AP reads these only after the SIPI below.
        unsafe {
            (param(&raw const ap_param_stack) as *mut u64).write_volatile(percpu::kernel_stack_top(next_cpu));
            (param(&raw const ap_param_cpu) as *mut u64).write_volatile(next_cpu as u64);
        }
        apic::send_init(id);
        time::spin_us(10_000);
        let page = (TRAMPOLINE_PHYS >> 12) as u8;
        apic::send_startup(id, page);
        let mut up = wait_started(before, 1_000);
        if !up {
            apic::send_startup(id, page);
            up = wait_started(before, 200_000);
        }
        if up {
            next_cpu += 1;
        } else {
            log::warn!("smp: CPU with APIC id {id} did not start");
        }
    }
    next_cpu - 1
}

fn wait_started(before: usize, us: u64) -> bool {
    let deadline = time::nanos_since_boot() + us * 1000;
    while time::nanos_since_boot() < deadline {
        if STARTED.load(Ordering::Acquire) > before {
            return true;
        }
        core::hint::spin_loop();
    }
    STARTED.load(Ordering::Acquire) > before
}
