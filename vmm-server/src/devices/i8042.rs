//! The 8042 keyboard controller, as much as Linux needs: its probe must
//! find a controller (so no `i8042.noaux`/`nopnp` on the command line) and
//! its reset line must reboot the machine.
//!
//! Ports: 0x60 data, 0x64 status (read) and command (write). Commands and
//! the status/command-byte layout follow the IBM PC/AT Technical Reference
//! ("Keyboard Controller") as extended for PS/2 (aux port commands
//! 0xA7-0xA9, 0xD3, 0xD4). The controller answers its own commands (self
//! test 0xAA → 0x55, interface tests, command byte, output port, aux loop
//! 0xD3 that Linux's `i8042_check_aux` uses) and keeps its IRQ 1 / IRQ 12
//! outputs per the command byte. No keyboard or mouse is attached: bytes
//! sent to either device come back as 0xFE with the status timeout bit,
//! what a PS/2 controller reports when no device clocks the data in, so
//! Linux's atkbd and psmouse probes fail at once instead of waiting.
//!
//! A firmware-booted VM has a PS/2 keyboard attached ([`I8042::with_keyboard`]),
//! as QEMU's PC machines always do: it answers its commands as QEMU's
//! `ps2.c` keyboard does (ACK 0xFA, reset's 0xAA, the MF2 ID, echo, scan
//! code set) and never sends a key. OVMF's PS/2 keyboard driver waits a
//! full second for each ACK it does not get (polling the status port and
//! the PM timer all the while: some 390,000 exits per boot without it).
//!
//! Pulsing output port bit 0 low (command 0xFE, any 0xF0-0xFF with bit 0
//! clear, or 0xD1 with bit 0 clear) resets the CPU: the model raises
//! [`I8042::reset_requested`] and the VMM reboots the VM. It is Linux's
//! `reboot=k` path (`outb(0xfe, 0x64)`), the fallback when ACPI reset is
//! missing.

use alloc::collections::VecDeque;

use super::{PortIoDevice, PortRange, read_bytewise, write_bytewise};

pub const DATA_PORT: u16 = 0x60;
pub const STATUS_PORT: u16 = 0x64;
pub const I8042_PORTS: [PortRange; 2] = [PortRange::new(DATA_PORT, 1), PortRange::new(STATUS_PORT, 1)];
pub const KEYBOARD_IRQ: u8 = 1;
pub const AUX_IRQ: u8 = 12;

/// Bytes the output buffer holds before further ones are dropped (the chip
/// has one; devices and the controller's own answers queue behind it).
const OUTPUT_LIMIT: usize = 16;

// Status register.
const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_A2: u8 = 0x08;
const STATUS_UNLOCKED: u8 = 0x10;
const STATUS_AUX: u8 = 0x20;
const STATUS_TIMEOUT: u8 = 0x40;

// Command byte (controller RAM byte 0).
const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_TRANSLATE: u8 = 0x40;

// Output port.
const OUT_RESET: u8 = 0x01;
const OUT_A20: u8 = 0x02;
const OUT_KBD_OBF: u8 = 0x10;
const OUT_AUX_OBF: u8 = 0x20;

/// Answer of a device that is not there.
const NO_DEVICE: u8 = 0xFE;

#[derive(Clone, Copy, Debug)]
struct OutputByte {
    value: u8,
    aux: bool,
    timeout: bool,
}

/// The keyboard controller.
#[derive(Clone, Debug)]
pub struct I8042 {
    output: VecDeque<OutputByte>,
    /// What a read of 0x60 with nothing new returns: the last byte again.
    last_read: u8,
    command_byte: u8,
    /// A controller command waiting for its data byte (0x60-0x7F, 0xD1-0xD4).
    pending: Option<u8>,
    /// Status bit 3: the last write went to the command port.
    last_write_command: bool,
    system_flag: bool,
    /// Output port bits: reset line (bit 0, active low) and A20 (bit 1).
    output_port: u8,
    reset_requested: bool,
    /// The attached keyboard, if any.
    keyboard: Option<Keyboard>,
}

/// A PS/2 keyboard without keys: it only answers commands.
#[derive(Clone, Copy, Debug, Default)]
struct Keyboard {
    /// A command waiting for its argument byte (0xED LEDs, 0xF0 scan code
    /// set, 0xF3 typematic rate).
    awaiting: Option<u8>,
    /// The scan code set (1 to 3; 2 after reset).
    set: u8,
}

// Keyboard replies (QEMU hw/input/ps2.c).
const KBD_ACK: u8 = 0xFA;
const KBD_RESEND: u8 = 0xFE;
const KBD_BAT_OK: u8 = 0xAA;
const KBD_ECHO: u8 = 0xEE;

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// The controller as firmware leaves it: self test passed (system
    /// flag), keyboard interrupt and translation on, A20 enabled.
    pub fn new() -> Self {
        Self {
            output: VecDeque::new(),
            last_read: 0,
            command_byte: CTR_KBD_INT | CTR_SYS | CTR_TRANSLATE,
            pending: None,
            last_write_command: false,
            system_flag: true,
            output_port: OUT_RESET | OUT_A20,
            reset_requested: false,
            keyboard: None,
        }
    }

    /// The controller with a PS/2 keyboard on its first port (firmware
    /// VMs).
    pub fn with_keyboard() -> Self {
        Self { keyboard: Some(Keyboard { awaiting: None, set: 2 }), ..Self::new() }
    }

    /// A byte sent to the keyboard port: the keyboard's answer, or the
    /// controller's "no device" with the timeout bit.
    fn keyboard_byte(&mut self, value: u8) {
        let translated = self.command_byte & CTR_TRANSLATE != 0;
        let Some(kbd) = self.keyboard.as_mut() else {
            return self.push(NO_DEVICE, false, true);
        };
        let mut replies: [Option<u8>; 3] = [None; 3];
        match kbd.awaiting.take() {
            // The scan code set: 0 asks which (as the translated code
            // when the controller translates), 1-3 select.
            Some(0xF0) => match value {
                0 => {
                    let code = if translated { [0, 0x43, 0x41, 0x3F][usize::from(kbd.set)] } else { kbd.set };
                    replies = [Some(KBD_ACK), Some(code), None];
                }
                1..=3 => {
                    kbd.set = value;
                    replies[0] = Some(KBD_ACK);
                }
                _ => replies[0] = Some(KBD_RESEND),
            },
            // LEDs, typematic rate: taken.
            Some(_) => replies[0] = Some(KBD_ACK),
            None => match value {
                0xED | 0xF0 | 0xF3 => {
                    kbd.awaiting = Some(value);
                    replies[0] = Some(KBD_ACK);
                }
                KBD_ECHO => replies[0] = Some(KBD_ECHO),
                // Identify: an MF2 keyboard (0xAB 0x83; 0x41 translated).
                0xF2 => replies = [Some(KBD_ACK), Some(0xAB), Some(if translated { 0x41 } else { 0x83 })],
                // Enable, disable, defaults, the set-3 key modes.
                0xF4..=0xFD => replies[0] = Some(KBD_ACK),
                0xFF => {
                    kbd.set = 2;
                    replies = [Some(KBD_ACK), Some(KBD_BAT_OK), None];
                }
                _ => replies[0] = Some(KBD_RESEND),
            },
        }
        for r in replies.into_iter().flatten() {
            self.push(r, false, false);
        }
    }

    /// The guest pulsed the CPU reset line: the VMM should reboot the VM.
    pub fn reset_requested(&self) -> bool {
        self.reset_requested
    }

    /// The A20 gate (output port bit 1).
    pub fn a20_enabled(&self) -> bool {
        self.output_port & OUT_A20 != 0
    }

    /// IRQ 1: a keyboard-port byte waits and the command byte enables its
    /// interrupt.
    pub fn irq1_level(&self) -> bool {
        self.output.front().is_some_and(|b| !b.aux) && self.command_byte & CTR_KBD_INT != 0
    }

    /// IRQ 12: an aux-port byte waits and its interrupt is enabled.
    pub fn irq12_level(&self) -> bool {
        self.output.front().is_some_and(|b| b.aux) && self.command_byte & CTR_AUX_INT != 0
    }

    fn push(&mut self, value: u8, aux: bool, timeout: bool) {
        if self.output.len() < OUTPUT_LIMIT {
            self.output.push_back(OutputByte { value, aux, timeout });
        }
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        if let Some(head) = self.output.front() {
            status |= STATUS_OBF;
            if head.aux {
                status |= STATUS_AUX;
            }
            if head.timeout {
                status |= STATUS_TIMEOUT;
            }
        }
        if self.system_flag {
            status |= STATUS_SYS;
        }
        if self.last_write_command {
            status |= STATUS_A2;
        }
        // Input buffer full (bit 1) never: every write is taken at once.
        status
    }

    fn read_data(&mut self) -> u8 {
        if let Some(byte) = self.output.pop_front() {
            self.last_read = byte.value;
        }
        self.last_read
    }

    fn write_output_port(&mut self, value: u8) {
        if value & OUT_RESET == 0 {
            self.reset_requested = true;
        }
        self.output_port = (value & OUT_A20) | OUT_RESET;
    }

    fn command(&mut self, command: u8) {
        self.pending = None;
        match command {
            // Read controller RAM: byte 0 is the command byte.
            0x20 => self.push(self.command_byte, false, false),
            0x21..=0x3F => self.push(0, false, false),
            0x60..=0x7F | 0xD1..=0xD4 => self.pending = Some(command),
            0xA7 => self.command_byte |= CTR_AUX_DISABLE,
            0xA8 => self.command_byte &= !CTR_AUX_DISABLE,
            // Interface tests: 0x00 is "no error".
            0xA9 | 0xAB => self.push(0x00, false, false),
            0xAA => {
                self.system_flag = true;
                self.push(0x55, false, false);
            }
            0xAD => self.command_byte |= CTR_KBD_DISABLE,
            0xAE => self.command_byte &= !CTR_KBD_DISABLE,
            // Input port: bit 7 set is "keyboard not inhibited".
            0xC0 => self.push(0x80, false, false),
            0xD0 => {
                let mut port = self.output_port;
                if self.output.front().is_some_and(|b| !b.aux) {
                    port |= OUT_KBD_OBF;
                }
                if self.output.front().is_some_and(|b| b.aux) {
                    port |= OUT_AUX_OBF;
                }
                self.push(port, false, false);
            }
            0xDD => self.output_port &= !OUT_A20,
            0xDF => self.output_port |= OUT_A20,
            0xE0 => self.push(0x00, false, false),
            // Pulse output port bits 3:0 low where the command's are clear;
            // bit 0 is the reset line.
            0xF0..=0xFF if command & OUT_RESET == 0 => self.reset_requested = true,
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        match self.pending.take() {
            Some(0x60) => {
                self.command_byte = value;
                self.system_flag = value & CTR_SYS != 0;
            }
            Some(0x61..=0x7F) => {}
            Some(0xD1) => self.write_output_port(value),
            Some(0xD2) => self.push(value, false, false),
            Some(0xD3) => self.push(value, true, false),
            // To the mouse, which is not there.
            Some(0xD4) => self.push(NO_DEVICE, true, true),
            // To the keyboard (not there either, unless attached).
            _ => self.keyboard_byte(value),
        }
    }
}

impl PortIoDevice for I8042 {
    fn read(&mut self, port: u16, size: u8, _now_ns: u64) -> u32 {
        read_bytewise(port, size, |p| match p {
            DATA_PORT => self.read_data(),
            STATUS_PORT => self.status(),
            _ => 0xFF,
        })
    }

    fn write(&mut self, port: u16, size: u8, value: u32, _now_ns: u64) {
        write_bytewise(port, size, value, |p, v| match p {
            DATA_PORT => {
                self.last_write_command = false;
                self.data(v);
            }
            STATUS_PORT => {
                self.last_write_command = true;
                self.command(v);
            }
            _ => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::XorShift;

    fn status(k: &mut I8042) -> u8 {
        k.read(STATUS_PORT, 1, 0) as u8
    }

    fn command(k: &mut I8042, c: u8) {
        k.write(STATUS_PORT, 1, u32::from(c), 0);
    }

    fn data_out(k: &mut I8042, v: u8) {
        k.write(DATA_PORT, 1, u32::from(v), 0);
    }

    /// drivers/input/serio/i8042.c: __i8042_command's wait for OBF, then read.
    fn read_reply(k: &mut I8042) -> Option<u8> {
        (status(k) & STATUS_OBF != 0).then(|| k.read(DATA_PORT, 1, 0) as u8)
    }

    #[test]
    fn an_attached_keyboard_answers_as_qemus_and_a_missing_one_times_out() {
        // Without a keyboard: 0xFE with the timeout bit (Linux's atkbd gives up at once).
        let mut k = I8042::new();
        data_out(&mut k, 0xFF);
        assert_eq!(status(&mut k) & STATUS_TIMEOUT, STATUS_TIMEOUT);
        assert_eq!(read_reply(&mut k), Some(NO_DEVICE));
        let mut k = I8042::with_keyboard();
        let ask = |k: &mut I8042, bytes: &[u8]| -> alloc::vec::Vec<u8> {
            for &b in bytes {
                data_out(k, b);
            }
            assert_eq!(status(k) & STATUS_TIMEOUT, 0);
            core::iter::from_fn(|| read_reply(k)).collect()
        };
        // OVMF's Ps2KeyboardDxe: enable, reset, scan code set 2, LEDs, typematic.
        assert_eq!(ask(&mut k, &[0xF4]), [KBD_ACK]);
        assert_eq!(ask(&mut k, &[0xFF]), [KBD_ACK, KBD_BAT_OK]);
        assert_eq!(ask(&mut k, &[0xF0, 0x02]), [KBD_ACK, KBD_ACK]);
        assert_eq!(ask(&mut k, &[0xED, 0x07]), [KBD_ACK, KBD_ACK]);
        assert_eq!(ask(&mut k, &[0xF3, 0x20]), [KBD_ACK, KBD_ACK]);
        // Linux's atkbd: identify, echo, ask the scan code set (translated).
        assert_eq!(ask(&mut k, &[0xF2]), [KBD_ACK, 0xAB, 0x41]);
        assert_eq!(ask(&mut k, &[KBD_ECHO]), [KBD_ECHO]);
        assert_eq!(ask(&mut k, &[0xF0, 0x00]), [KBD_ACK, KBD_ACK, 0x41]);
        assert_eq!(ask(&mut k, &[0xF0, 0x09]), [KBD_ACK, KBD_RESEND]);
        assert_eq!(ask(&mut k, &[0x12]), [KBD_RESEND], "no such command");
        // Untranslated: the raw answers.
        command(&mut k, 0x60);
        data_out(&mut k, CTR_KBD_INT | CTR_SYS);
        assert_eq!(ask(&mut k, &[0xF2]), [KBD_ACK, 0xAB, 0x83]);
        assert_eq!(ask(&mut k, &[0xF0, 0x00]), [KBD_ACK, KBD_ACK, 0x02]);
        // The mouse is still absent.
        command(&mut k, 0xD4);
        data_out(&mut k, 0xFF);
        assert_eq!(status(&mut k) & (STATUS_TIMEOUT | STATUS_AUX), STATUS_TIMEOUT | STATUS_AUX);
    }

    #[test]
    fn self_test_and_interface_tests() {
        let mut k = I8042::new();
        assert_eq!(status(&mut k) & (STATUS_OBF | 0x02), 0, "empty, never busy");
        assert_eq!(read_reply(&mut k), None);
        command(&mut k, 0xAA);
        assert_eq!(status(&mut k) & (STATUS_OBF | STATUS_SYS | STATUS_A2), STATUS_OBF | STATUS_SYS | STATUS_A2);
        assert_eq!(read_reply(&mut k), Some(0x55));
        command(&mut k, 0xAB);
        assert_eq!(read_reply(&mut k), Some(0x00));
        command(&mut k, 0xA9);
        assert_eq!(read_reply(&mut k), Some(0x00));
        assert_eq!(k.read(DATA_PORT, 1, 0), 0x00, "stale byte on an empty buffer");
        assert!(!k.reset_requested());
    }

    #[test]
    fn command_byte_read_write_and_port_toggles() {
        let mut k = I8042::new();
        // i8042_controller_init: read CTR twice, then write it back.
        command(&mut k, 0x20);
        let ctr = read_reply(&mut k).unwrap();
        command(&mut k, 0x20);
        assert_eq!(read_reply(&mut k), Some(ctr));
        assert_eq!(ctr & CTR_TRANSLATE, CTR_TRANSLATE);
        let new = (ctr | CTR_KBD_DISABLE) & !CTR_KBD_INT;
        command(&mut k, 0x60);
        data_out(&mut k, new);
        assert_eq!(status(&mut k) & STATUS_A2, 0);
        command(&mut k, 0x20);
        assert_eq!(read_reply(&mut k), Some(new));
        // i8042_toggle_aux: 0xA7/0xA8 show in the command byte.
        command(&mut k, 0xA7);
        command(&mut k, 0x20);
        assert_eq!(read_reply(&mut k).unwrap() & CTR_AUX_DISABLE, CTR_AUX_DISABLE);
        command(&mut k, 0xA8);
        command(&mut k, 0x20);
        assert_eq!(read_reply(&mut k).unwrap() & CTR_AUX_DISABLE, 0);
        command(&mut k, 0xAE);
        command(&mut k, 0x20);
        assert_eq!(read_reply(&mut k).unwrap() & CTR_KBD_DISABLE, 0);
        // The system flag follows the command byte.
        command(&mut k, 0x60);
        data_out(&mut k, 0);
        assert_eq!(status(&mut k) & STATUS_SYS, 0);
    }

    #[test]
    fn aux_loop_and_irq12_as_check_aux_expects() {
        let mut k = I8042::new();
        command(&mut k, 0xD3);
        data_out(&mut k, 0x5A);
        assert_eq!(status(&mut k) & (STATUS_OBF | STATUS_AUX), STATUS_OBF | STATUS_AUX);
        assert!(!k.irq12_level(), "aux interrupt off in the command byte");
        assert_eq!(read_reply(&mut k), Some(0x5A));
        // The IRQ test: enable AUXINT, loop 0xA5, expect IRQ 12.
        command(&mut k, 0x60);
        data_out(&mut k, CTR_SYS | CTR_AUX_INT | CTR_KBD_INT);
        command(&mut k, 0xD3);
        data_out(&mut k, 0xA5);
        assert!(k.irq12_level());
        assert!(!k.irq1_level());
        assert_eq!(read_reply(&mut k), Some(0xA5));
        assert!(!k.irq12_level());
    }

    #[test]
    fn absent_devices_answer_with_a_timeout() {
        let mut k = I8042::new();
        // atkbd: ATKBD_CMD_GETID straight to the data port.
        data_out(&mut k, 0xF2);
        assert_eq!(status(&mut k) & (STATUS_OBF | STATUS_TIMEOUT | STATUS_AUX), STATUS_OBF | STATUS_TIMEOUT);
        assert!(k.irq1_level());
        assert_eq!(read_reply(&mut k), Some(NO_DEVICE));
        assert!(!k.irq1_level());
        assert_eq!(status(&mut k) & STATUS_TIMEOUT, 0);
        // psmouse: 0xD4 then the mouse command.
        command(&mut k, 0xD4);
        data_out(&mut k, 0xF2);
        assert_eq!(
            status(&mut k) & (STATUS_OBF | STATUS_TIMEOUT | STATUS_AUX),
            STATUS_OBF | STATUS_TIMEOUT | STATUS_AUX
        );
        assert_eq!(read_reply(&mut k), Some(NO_DEVICE));
        // 0xD2 writes the keyboard buffer as if typed.
        command(&mut k, 0xD2);
        data_out(&mut k, 0x1C);
        assert_eq!(status(&mut k) & (STATUS_TIMEOUT | STATUS_AUX), 0);
        assert_eq!(read_reply(&mut k), Some(0x1C));
    }

    #[test]
    fn reset_line_pulses() {
        // arch/x86/kernel/reboot.c: kb_wait() then outb(0xfe, 0x64).
        let mut k = I8042::new();
        assert_eq!(status(&mut k) & 0x02, 0);
        command(&mut k, 0xFE);
        assert!(k.reset_requested());
        let mut k = I8042::new();
        command(&mut k, 0xFF);
        command(&mut k, 0xF2); // bits 0, 2 and 3 clear: pulses the reset line
        assert!(k.reset_requested());
        let mut k = I8042::new();
        command(&mut k, 0xF1);
        command(&mut k, 0xFF);
        assert!(!k.reset_requested(), "bit 0 set: no pulse on the reset line");
        // Writing the output port: A20 off keeps running; reset bit clear resets.
        command(&mut k, 0xD1);
        data_out(&mut k, OUT_RESET);
        assert!(!k.a20_enabled());
        assert!(!k.reset_requested());
        command(&mut k, 0xD0);
        assert_eq!(read_reply(&mut k), Some(OUT_RESET));
        command(&mut k, 0xDF);
        assert!(k.a20_enabled());
        command(&mut k, 0xD1);
        data_out(&mut k, OUT_A20);
        assert!(k.reset_requested());
    }

    #[test]
    fn output_buffer_is_bounded() {
        let mut k = I8042::new();
        for _ in 0..100 {
            command(&mut k, 0xAA);
        }
        let mut n = 0;
        while read_reply(&mut k).is_some() {
            n += 1;
        }
        assert_eq!(n, OUTPUT_LIMIT);
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x8042_8042);
        let mut k = I8042::new();
        for _ in 0..200_000 {
            let port = [DATA_PORT, STATUS_PORT, 0x61, 0x62][rng.below(4) as usize];
            if rng.below(2) == 0 {
                k.read(port, rng.size(), rng.next());
            } else {
                k.write(port, rng.size(), rng.next() as u32, rng.next());
            }
            let _ = (k.irq1_level(), k.irq12_level(), k.reset_requested());
            assert!(k.output.len() <= OUTPUT_LIMIT);
        }
    }
}
