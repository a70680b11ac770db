//! The console process: writes what it is sent through the kernel console.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
fn main(start: alcove_rt::Start) -> u64 {
    let info = start.server("console");
    let Some(slot) = info.serves("console") else {
        log::error!("no \"console\" endpoint was granted");
        return 1;
    };
    // Guest output may be any bytes: they go to the kernel console as they are.
    let mut server = console::Console::new(alloc::boxed::Box::new(|bytes: &[u8]| {
        for chunk in bytes.chunks(4096) {
            let _ = libipc::sys::debug_write(alcove_rt::start::SLOT_CONSOLE, chunk);
        }
    }));
    // Typed input: COM1's receiver, when the manifest grants its ports and
    // IRQ 4. The kernel keeps writing COM1 (polled), the receiver is ours.
    let com1 = info.ioports.iter().find(|&&(first, count, _)| first == COM1 && count >= 8).map(|&(_, _, s)| s);
    let irq = info.irqs.iter().find(|&&(line, _)| line == 4).map(|&(_, s)| s);
    let input = match (com1, irq) {
        (Some(ports), Some(irq)) if libipc::sys::io_port_enable(ports).is_ok() => Some(irq),
        _ => None,
    };
    if let Some(irq) = input {
        server = server.with_input(alloc::boxed::Box::new(move |room, put| {
            // Line status bit 0: a byte waits in the receiver buffer.
            let ready = || libipc::pio::inb(COM1 + 5) & 1 != 0;
            let mut taken = 0;
            loop {
                while taken < room && ready() {
                    put(libipc::pio::inb(COM1));
                    taken += 1;
                }
                if ready() {
                    // No room: the bytes wait in the UART (whose full
                    // FIFO holds back the serial line) and IRQ 4 stays
                    // masked until a read makes room and we come back.
                    return true;
                }
                let _ = libipc::sys::irq_ack(irq);
                // IRQ 4 is edge-triggered: a byte that came after the last
                // check and before the ack raised no new edge, and would
                // wait (with all typed after it) for an interrupt that
                // never comes. Look once more after the ack.
                if !ready() {
                    return false;
                }
            }
        }));
        // One reader for typed input (the operator shell), so a VMM
        // polling for its guest takes nothing typed at the shell.
        let names: alloc::vec::Vec<&str> =
            info.args.iter().filter_map(|a| a.strip_prefix("input=")).flat_map(|v| v.split(',')).collect();
        if !names.is_empty() {
            let badges: alloc::vec::Vec<u64> = info
                .clients
                .iter()
                .filter(|(ep, name, _)| ep == "console" && names.contains(&name.as_str()))
                .map(|&(_, _, badge)| badge)
                .collect();
            if badges.is_empty() {
                log::warn!("input={}: no such client of the console; the first to read gets typed input", names.join(","));
            }
            server = server.with_input_readers(&badges);
        }
    }
    // Who may read a VM's console output (`console.tail`): the manifest's
    // `tail=` names (apid, for `GET /vms/:uuid/console`); nobody without it.
    let tail: alloc::vec::Vec<&str> =
        info.args.iter().filter_map(|a| a.strip_prefix("tail=")).flat_map(|v| v.split(',')).collect();
    if !tail.is_empty() {
        let badges: alloc::vec::Vec<u64> = info
            .clients
            .iter()
            .filter(|(ep, name, _)| ep == "console" && tail.contains(&name.as_str()))
            .map(|&(_, _, badge)| badge)
            .collect();
        if badges.len() < tail.len() {
            log::warn!("tail={}: not every name is a client of the console", tail.join(","));
        }
        server = server.with_tailers(&badges);
    }
    // Who may feed a VM's console besides the reader (`feed=`: apid, for
    // `POST /vms/:uuid/console`).
    let feed: alloc::vec::Vec<&str> =
        info.args.iter().filter_map(|a| a.strip_prefix("feed=")).flat_map(|v| v.split(',')).collect();
    if !feed.is_empty() {
        let badges: alloc::vec::Vec<u64> = info
            .clients
            .iter()
            .filter(|(ep, name, _)| ep == "console" && feed.contains(&name.as_str()))
            .map(|&(_, _, badge)| badge)
            .collect();
        server = server.with_feeders(&badges);
    }
    alcove_rt::serve_forever_with(slot, server, |notification| {
        if let Some(irq) = input
            && libipc::sys::irq_bind(irq, notification, INPUT_BIT).is_ok()
        {
            // The receive FIFO on (interrupt at 14 bytes or after a pause):
            // without it each typed byte costs an interrupt, and a pasted
            // block trickles in at one byte per round trip.
            libipc::pio::outb(COM1 + 2, 0xc7);
            // Interrupt on received data; OUT2 gates the IRQ line.
            libipc::pio::outb(COM1 + 1, 0x01);
            libipc::pio::outb(COM1 + 4, libipc::pio::inb(COM1 + 4) | 0x08);
        }
    })
}

#[cfg(target_os = "none")]
const COM1: u16 = 0x3f8;
/// The notification bit for typed input (bit 0 is the lifecycle's).
#[cfg(target_os = "none")]
const INPUT_BIT: u64 = 1 << 2;

#[cfg(target_os = "none")]
alcove_rt::entry!(main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("console runs only on Alcove (build it for x86_64-unknown-none)");
}
