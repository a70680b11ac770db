//! Bringing up the application processors with INIT-SIPI-SIPI (SDM Vol. 3A
//! §9.4.4.1, the universal start-up algorithm), one at a time.

use super::{apic, cpu, paging, percpu, time, MAX_CPUS, PHYS_OFFSET};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

/// The gate an AP passes at the top of its entry, before it touches
/// anything of the CPU index it was given: `index << 1 | 1` while the BSP
/// waits for that index, `index << 1` once the AP has passed, 0 when the
/// BSP gave up. An AP that comes too late (its SIPI long answered, under
/// an emulator whose thread did not run for hundreds of milliseconds) finds
/// the gate shut and parks: it once came up with the index the BSP had
/// given the next CPU, on that CPU's stack, and the kernel panicked on a
/// run queue it did not have.
static GATE: AtomicU64 = AtomicU64::new(0);

/// How long the BSP waits for an AP after its second start-up IPI (Linux
/// waits 10 s too): a loaded host can leave an emulated CPU unscheduled for
/// much longer than a real one takes.
const AP_WAIT_US: u64 = 10_000_000;

/// Called first by each AP with the index it was given: whether it may go
/// on (the BSP still waits for that index); otherwise it must park.
pub fn pass_gate(cpu: usize) -> bool {
    let index = cpu as u64;
    GATE.compare_exchange(index << 1 | 1, index << 1, Ordering::AcqRel, Ordering::Acquire).is_ok()
}

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
        let index = next_cpu as u64;
        GATE.store(index << 1 | 1, Ordering::Release);
        apic::send_init(id);
        time::spin_us(10_000);
        let page = (TRAMPOLINE_PHYS >> 12) as u8;
        apic::send_startup(id, page);
        let mut up = wait_gate(index, 1_000);
        if !up {
            apic::send_startup(id, page);
            up = wait_gate(index, AP_WAIT_US);
        }
        // Shut the gate; an AP that passes it meanwhile is up after all.
        if !up && GATE.compare_exchange(index << 1 | 1, 0, Ordering::AcqRel, Ordering::Acquire).is_err() {
            up = true;
        }
        if up {
            // Past the gate it finishes its set-up and signals.
            while STARTED.load(Ordering::Acquire) == before {
                core::hint::spin_loop();
            }
            next_cpu += 1;
        } else {
            // Should it run after all, INIT holds it in wait-for-SIPI
            // (and the gate, shut, parks it if it is past the INIT).
            apic::send_init(id);
            time::spin_us(10_000);
            log::warn!("smp: CPU with APIC id {id} did not start");
        }
    }
    next_cpu - 1
}

/// Whether the AP given `index` passed the gate within `us`.
fn wait_gate(index: u64, us: u64) -> bool {
    let deadline = time::nanos_since_boot() + us * 1000;
    loop {
        if GATE.load(Ordering::Acquire) == index << 1 {
            return true;
        }
        if time::nanos_since_boot() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
}
