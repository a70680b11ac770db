//! An import's progress line drawn as imgadm draws it: over itself on a
//! terminal (the operator's console), one plain line each elsewhere.

use alloc::format;
use alloc::string::String;

/// Draws an import's progress lines as imgadm does: on a terminal each
/// line over the last (`\r`, blanks over what a longer line left), one
/// line in the end; otherwise each new line on a line of its own (a log
/// or a pipe gets plain lines, no carriage returns).
#[derive(Debug, Clone, Default)]
pub struct ProgressDrawer {
    tty: bool,
    last: String,
}

impl ProgressDrawer {
    /// `tty`: whether the output is a terminal.
    pub fn new(tty: bool) -> Self {
        ProgressDrawer { tty, last: String::new() }
    }

    /// What to write for `line` now (nothing for an empty line or the one
    /// drawn last).
    pub fn draw(&mut self, line: &str) -> String {
        if line.is_empty() || line == self.last {
            return String::new();
        }
        let out = if self.tty {
            let blanks = self.last.chars().count().saturating_sub(line.chars().count());
            let mut s = format!("\r{line}");
            s.extend(core::iter::repeat_n(' ', blanks));
            s
        } else {
            format!("{line}\n")
        };
        self.last = String::from(line);
        out
    }

    /// The end of the progress: on a terminal, the newline after the line
    /// drawn (if any).
    pub fn finish(&mut self) -> String {
        let drawn = !core::mem::take(&mut self.last).is_empty();
        if self.tty && drawn { String::from("\n") } else { String::new() }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use alloc::format;
    use alloc::string::String;

    /// On a terminal each progress line is drawn over the last (blanks over
    /// what a longer one left) and one newline ends them; elsewhere each is a
    /// plain line. Repeats and empty lines draw nothing.
    #[test]
    fn progress_lines_are_drawn_in_place_on_a_terminal_and_plain_otherwise() {
        use crate::progress::ProgressDrawer;
        let lines = ["Downloading image 0b7b3b7e [>   ]   0%  0.0MiB of 10.0MiB", "Downloading image 0b7b3b7e [=>  ]  42%  4.2MiB of 10.0MiB", "short"];
        let mut t = ProgressDrawer::new(true);
        let mut screen = String::new();
        for l in [lines[0], lines[0], "", lines[1], lines[2]] {
            screen.push_str(&t.draw(l));
        }
        screen.push_str(&t.finish());
        let blanks = " ".repeat(lines[1].len() - 5);
        assert_eq!(screen, format!("\r{}\r{}\rshort{blanks}\n", lines[0], lines[1]));
        // What a terminal shows in the end: the last line alone.
        let last_drawn = screen.trim_end().rsplit('\r').next().unwrap();
        assert_eq!(last_drawn.trim_end(), "short");
        // Nothing drawn: no newline either.
        assert_eq!(ProgressDrawer::new(true).finish(), "");
        let mut p = ProgressDrawer::new(false);
        let mut log = String::new();
        for l in [lines[0], lines[0], "", lines[1], lines[2]] {
            log.push_str(&p.draw(l));
        }
        log.push_str(&p.finish());
        assert_eq!(log, format!("{}\n{}\nshort\n", lines[0], lines[1]));
        assert!(!log.contains('\r'));
    }

}
