//! virtio-entropy (device ID 4, virtio 1.2 §5.4): the guest's hwrng.
//!
//! One queue, `requestq`. The driver posts device-writable buffers; the
//! device fills them from an [`EntropySource`] and returns them with the
//! number of bytes written. There is no configuration space and there are
//! no device-specific features (§5.4.3, §5.4.4).

use super::queue::Queue;
use super::{COMMON_FEATURES, GuestMemory, QueueError, VIRTIO_ID_ENTROPY, VirtioDevice};

/// Where the random bytes come from (the kernel's CSPRNG on Alcove; a
/// deterministic generator in tests). Filling cannot fail: a source that
/// has nothing must wait rather than hand the guest predictable bytes.
pub trait EntropySource {
    fn fill(&mut self, buf: &mut [u8]);
}

/// The most bytes one request gets. §5.4.6.2 lets the device use less than
/// the whole buffer, so one huge buffer cannot stall the monitor.
pub const MAX_BYTES_PER_REQUEST: u32 = 64 * 1024;
/// The requestq's maximum size.
pub const QUEUE_SIZE: u16 = 256;

const QUEUE_SIZES: [u16; 1] = [QUEUE_SIZE];

/// The virtio-entropy device.
pub struct Rng<E: EntropySource> {
    source: E,
    acked_features: u64,
}

impl<E: EntropySource> Rng<E> {
    pub fn new(source: E) -> Self {
        Self { source, acked_features: 0 }
    }

    pub fn source(&self) -> &E {
        &self.source
    }
}

impl<E: EntropySource> VirtioDevice for Rng<E> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_ENTROPY
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn queue_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// Fills each chain's device-writable buffers, up to
    /// [`MAX_BYTES_PER_REQUEST`]. Device-readable buffers (which §5.4.6.1
    /// forbids the driver to post) are left alone.
    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        if index != 0 {
            return Ok(false);
        }
        let Some(queue) = queues.get_mut(0) else { return Ok(false) };
        let mut chunk = [0u8; 256];
        while let Some(chain) = queue.pop(mem)? {
            let want = chain.writable_len().min(MAX_BYTES_PER_REQUEST);
            let mut written = 0u32;
            while written < want {
                let n = (want - written).min(chunk.len() as u32) as usize;
                self.source.fill(&mut chunk[..n]);
                // The chain's buffers were checked to be guest RAM.
                let put = chain.write_at(mem, u64::from(written), &chunk[..n])?;
                written += put as u32;
                if put < n {
                    break;
                }
            }
            queue.add_used(mem, chain.head_index(), written)?;
        }
        Ok(queue.needs_notification(mem))
    }

    fn reset(&mut self) {
        self.acked_features = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::VecMemory;
    use crate::virtio::mock::MockQueue;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A deterministic source: 1, 2, 3, ... (wrapping).
    struct Counter(u8);

    impl EntropySource for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    fn setup() -> (VecMemory, MockQueue, [Queue; 1], Rng<Counter>) {
        let mut mem = VecMemory::new(0, 0x10_0000);
        let mock = MockQueue::new(&mut mem, 0x1000, QUEUE_SIZE);
        let mut rng = Rng::new(Counter(0));
        rng.ack_features(u64::MAX);
        let queue = mock.device_queue();
        (mem, mock, [queue], rng)
    }

    #[test]
    fn identifies_itself() {
        let (_, _, _, mut rng) = setup();
        assert_eq!(rng.device_type(), 4);
        assert_eq!(rng.queue_sizes(), &[QUEUE_SIZE]);
        assert_eq!(rng.acked_features(), COMMON_FEATURES);
        let mut b = [0xffu8; 8];
        rng.read_config(0, &mut b);
        assert_eq!(b, [0; 8]);
        rng.reset();
        assert_eq!(rng.acked_features(), 0);
    }

    #[test]
    fn fills_writable_buffers_across_descriptors() {
        let (mut mem, mut mock, mut queues, mut rng) = setup();
        let head = mock.add_chain(&mut mem, &[(0x10000, 3, true), (0x20000, 300, true)]);
        assert!(rng.process_queue(0, &mut queues, &mut mem).unwrap());
        assert_eq!(mock.used_idx(&mem), 1);
        assert_eq!(mock.used_elem(&mem, 0), (u32::from(head), 303));
        let mut got = vec![0u8; 303];
        mem.read(0x10000, &mut got[..3]).unwrap();
        mem.read(0x20000, &mut got[3..]).unwrap();
        let want: Vec<u8> = (1..=303u32).map(|i| i as u8).collect();
        assert_eq!(got, want);
        // Nothing more to do, nothing to interrupt for.
        assert!(!rng.process_queue(0, &mut queues, &mut mem).unwrap());
    }

    #[test]
    fn caps_each_request_and_skips_readable_buffers() {
        let (mut mem, mut mock, mut queues, mut rng) = setup();
        mock.add_chain(&mut mem, &[(0x10000, 16, false), (0x20000, 0x2_0000, true)]);
        mock.add_chain(&mut mem, &[(0x10000, 16, false)]);
        assert!(rng.process_queue(0, &mut queues, &mut mem).unwrap());
        assert_eq!(mock.used_elem(&mem, 0).1, MAX_BYTES_PER_REQUEST);
        assert_eq!(mock.used_elem(&mem, 1).1, 0);
        let mut readable = [0u8; 16];
        mem.read(0x10000, &mut readable).unwrap();
        assert_eq!(readable, [0; 16]);
        let mut past_cap = [0u8; 4];
        mem.read(0x20000 + u64::from(MAX_BYTES_PER_REQUEST), &mut past_cap).unwrap();
        assert_eq!(past_cap, [0; 4]);
    }

    #[test]
    fn other_queues_and_malformed_chains() {
        let (mut mem, mut mock, mut queues, mut rng) = setup();
        assert_eq!(rng.process_queue(1, &mut queues, &mut mem), Ok(false));
        mock.add_chain(&mut mem, &[(0x10000, 8, true), (0x20000, 8, false)]);
        assert_eq!(rng.process_queue(0, &mut queues, &mut mem), Err(QueueError::ReadableAfterWritable));
    }
}
