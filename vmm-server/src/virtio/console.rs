//! virtio-console (device ID 3, virtio 1.2 §5.3): the guest's `hvc0`.
//!
//! One port, no VIRTIO_CONSOLE_F_MULTIPORT, so two queues (§5.3.2):
//! `receiveq` ([`RECEIVEQ`], device to driver) and `transmitq`
//! ([`TRANSMITQ`], driver to device). VIRTIO_CONSOLE_F_EMERG_WRITE is
//! offered: a write to `emerg_wr` in the configuration space puts one byte
//! out without any queue (§5.3.4, §5.3.6.2). VIRTIO_CONSOLE_F_SIZE is not:
//! the guest's terminal keeps its default size.
//!
//! The flow with the VMM:
//! * Output: the guest's transmit buffers are consumed when it notifies
//!   `transmitq`; the bytes collect until the VMM calls
//!   [`Console::take_output`]. At most [`OUTPUT_LIMIT`] bytes wait: beyond
//!   that the device leaves the guest's buffers in the ring (the guest
//!   blocks, no byte is lost) until the VMM has taken the output and kicked
//!   `transmitq` again ([`Console::transmit_stalled`] says when).
//! * Input: [`Console::push_input`] queues bytes (up to [`INPUT_LIMIT`]);
//!   they go into the receive buffers the guest posted when `receiveq` is
//!   processed: on the guest's next notification of it, or at once when the
//!   VMM calls `VirtioPci::kick(RECEIVEQ, mem)` after pushing. Either way
//!   the transport raises the queue's interrupt if the driver wants one,
//!   and the VMM finds it in `PciBus::take_msi()` (or on the INTx line).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::queue::Queue;
use super::{COMMON_FEATURES, GuestMemory, QueueError, VIRTIO_ID_CONSOLE, VirtioDevice, feature, read_config_space};

// Feature bits (§5.3.3).
pub const VIRTIO_CONSOLE_F_SIZE: u32 = 0;
pub const VIRTIO_CONSOLE_F_MULTIPORT: u32 = 1;
pub const VIRTIO_CONSOLE_F_EMERG_WRITE: u32 = 2;

/// Port 0's receive queue (device to driver).
pub const RECEIVEQ: usize = 0;
/// Port 0's transmit queue (driver to device).
pub const TRANSMITQ: usize = 1;
/// Each queue's maximum size.
pub const QUEUE_SIZE: u16 = 256;
/// Output bytes the device holds before it stops taking transmit buffers.
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Input bytes the device holds for the guest.
pub const INPUT_LIMIT: usize = 64 * 1024;

// Configuration layout (§5.3.4): le16 cols, le16 rows, le32 max_nr_ports,
// le32 emerg_wr.
const CONFIG_EMERG_WR: u64 = 8;
const CONFIG_LEN: usize = 12;

const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE, QUEUE_SIZE];

/// The virtio-console device.
#[derive(Clone, Debug, Default)]
pub struct Console {
    acked_features: u64,
    input: VecDeque<u8>,
    output: Vec<u8>,
    /// `transmitq` stopped because the output was full.
    stalled: bool,
}

impl Console {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything the guest wrote since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.output)
    }

    /// Queues `bytes` for the guest; returns how many fitted under
    /// [`INPUT_LIMIT`] (the rest is the caller's to retry). Follow with
    /// `VirtioPci::kick(RECEIVEQ, mem)` to deliver them now.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(INPUT_LIMIT - self.input.len());
        self.input.extend(&bytes[..n]);
        n
    }

    /// Input bytes not yet in a guest buffer.
    pub fn pending_input(&self) -> usize {
        self.input.len()
    }

    /// Whether the guest has output waiting in `transmitq` that the device
    /// did not take because [`OUTPUT_LIMIT`] was reached: take the output,
    /// then kick [`TRANSMITQ`].
    pub fn transmit_stalled(&self) -> bool {
        self.stalled
    }

    /// Fills the guest's receive buffers from the pending input.
    fn receive(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory) -> Result<(), QueueError> {
        let mut chunk = [0u8; 256];
        while !self.input.is_empty() {
            let Some(chain) = queue.pop(mem)? else { break };
            let room = chain.writable_len() as usize;
            let mut written = 0usize;
            while written < room && !self.input.is_empty() {
                let n = (room - written).min(chunk.len()).min(self.input.len());
                for (dst, src) in chunk[..n].iter_mut().zip(self.input.drain(..n)) {
                    *dst = src;
                }
                // The chain's buffers are checked guest RAM, and n fits.
                written += chain.write_at(mem, written as u64, &chunk[..n])?;
            }
            queue.add_used(mem, chain.head_index(), written as u32)?;
        }
        Ok(())
    }

    /// Takes the guest's transmit buffers into the output.
    fn transmit(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory) -> Result<(), QueueError> {
        self.stalled = false;
        let mut chunk = [0u8; 256];
        loop {
            if self.output.len() >= OUTPUT_LIMIT {
                // Leave the rest in the ring; `pop` has not consumed it.
                self.stalled = queue.ready;
                return Ok(());
            }
            let Some(chain) = queue.pop(mem)? else { return Ok(()) };
            // One chain may be larger than the room left; what does not
            // fit under the limit is dropped (§5.3.6.1 lets the device
            // consume a buffer however it likes).
            let want = (chain.readable_len() as usize).min(OUTPUT_LIMIT - self.output.len());
            let mut done = 0usize;
            while done < want {
                let n = (want - done).min(chunk.len());
                let got = chain.read_at(mem, done as u64, &mut chunk[..n])?;
                self.output.extend_from_slice(&chunk[..got]);
                done += got;
                if got < n {
                    break;
                }
            }
            queue.add_used(mem, chain.head_index(), 0)?;
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES | feature(VIRTIO_CONSOLE_F_EMERG_WRITE)
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

    /// cols, rows and max_nr_ports read 0 (their features are not
    /// offered), as does emerg_wr (write-only).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&[0u8; CONFIG_LEN], offset, data);
    }

    /// A write covering emerg_wr's first byte puts that byte out
    /// (§5.3.6.2), whatever the features: Linux may use it before
    /// negotiation finishes.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let Some(index) = CONFIG_EMERG_WR.checked_sub(offset) else { return };
        if let Some(&byte) = usize::try_from(index).ok().and_then(|i| data.get(i))
            && self.output.len() < OUTPUT_LIMIT
        {
            self.output.push(byte);
        }
    }

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let Some(queue) = queues.get_mut(index) else { return Ok(false) };
        match index {
            RECEIVEQ => self.receive(queue, mem)?,
            TRANSMITQ => self.transmit(queue, mem)?,
            _ => return Ok(false),
        }
        Ok(queue.needs_notification(mem))
    }

    /// Forgets the negotiation; pending input and unread output stay (they
    /// belong to the VM's console, not to this driver instance).
    fn reset(&mut self) {
        self.acked_features = 0;
        self.stalled = false;
    }
}

#[cfg(test)]
mod tests;
