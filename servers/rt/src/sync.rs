//! A lock for data the threads of one process share (a VMM's device
//! state): a spin lock that gives the CPU away while another thread holds
//! it. A plain spin lock lets waiting threads burn their time slices
//! spinning while the holder, preempted or blocked in an IPC call, cannot
//! run to release it; here a waiter spins briefly (the usual case: the
//! holder is running on another CPU and about to release) and then yields
//! to let the holder run.

/// A mutual-exclusion lock around a `T`.
pub struct Mutex<T> {
    inner: spin::Mutex<T>,
}

/// The guard [`Mutex::lock`] returns.
pub type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;

/// Spins this many times before yielding.
const SPINS: u32 = 128;

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Self { inner: spin::Mutex::new(value) }
    }

    /// Takes the lock, yielding the CPU while someone else holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        loop {
            for _ in 0..SPINS {
                if let Some(guard) = self.inner.try_lock() {
                    return guard;
                }
                core::hint::spin_loop();
            }
            #[cfg(target_os = "none")]
            let _ = libipc::sys::yield_now();
        }
    }

    /// The lock if it is free now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.inner.try_lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_and_releases() {
        let m = Mutex::new(1);
        {
            let mut g = m.lock();
            *g += 1;
            assert!(m.try_lock().is_none(), "held");
        }
        assert_eq!(*m.lock(), 2);
    }
}
