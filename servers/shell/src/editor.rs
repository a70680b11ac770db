//! Line editing on a plain serial terminal: the bytes the operator types go
//! in one at a time, what the terminal should show comes out (echo, erase
//! sequences), and a finished line is handed back. The cursor stays at the
//! end of the line (no mid-line editing); what it does:
//!
//! | key | effect |
//! |---|---|
//! | printable, UTF-8 | appended and echoed (up to [`MAX_LINE`] bytes) |
//! | Enter (CR or LF; CR LF counts once) | the line is done |
//! | Backspace (DEL or ^H) | the last character goes |
//! | ^U | the whole line goes |
//! | ^W | the last word (and the spaces after it) goes |
//! | ^C | the line is dropped, `^C` shown |
//! | ↑ / ↓ (ESC [ A / B, ESC O A / B) | the previous / next line of the [`History`] |
//! | other control characters, other escape sequences | ignored |
//!
//! A line longer than [`MAX_LINE`] is not cut short silently: the rest is
//! not echoed, and Enter hands back [`Input::TooLong`] instead of a line.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest line kept, in bytes.
pub const MAX_LINE: usize = 4096;
/// Lines the history keeps; older ones go.
pub const HISTORY_LINES: usize = 64;

/// What a typed byte completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Enter: the line (may be empty).
    Line(String),
    /// Enter after a line longer than [`MAX_LINE`]: how many bytes it had.
    TooLong(usize),
    /// ^C: the line was dropped.
    Cancelled,
}

/// The lines entered before, newest last, and where ↑/↓ have got to.
#[derive(Default)]
pub struct History {
    lines: VecDeque<String>,
    /// Index into `lines` while browsing; `None` at the line being typed.
    at: Option<usize>,
    /// The line being typed when browsing began (↓ past the newest gives
    /// it back).
    draft: String,
}

impl History {
    /// Remembers `line` (not an empty one, nor a repeat of the last).
    pub fn push(&mut self, line: &str) {
        self.at = None;
        if line.trim().is_empty() || self.lines.back().is_some_and(|l| l == line) {
            return;
        }
        if self.lines.len() == HISTORY_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.into());
    }

    /// The line before the one shown (`current` is what is typed now).
    fn up(&mut self, current: &str) -> Option<&str> {
        let i = match self.at {
            None if self.lines.is_empty() => return None,
            None => {
                self.draft = current.into();
                self.lines.len() - 1
            }
            Some(0) => return None,
            Some(i) => i - 1,
        };
        self.at = Some(i);
        Some(&self.lines[i])
    }

    /// The line after the one shown, or the draft past the newest.
    fn down(&mut self) -> Option<&str> {
        let i = self.at?;
        if i + 1 < self.lines.len() {
            self.at = Some(i + 1);
            Some(&self.lines[i + 1])
        } else {
            self.at = None;
            Some(&self.draft)
        }
    }

    /// How many lines are kept.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// ESC seen.
    Esc,
    /// ESC [ or ESC O seen: parameters until a final byte.
    Sequence,
}

/// The line being typed.
pub struct Editor {
    line: Vec<u8>,
    /// Bytes typed past [`MAX_LINE`] on this line.
    overflow: usize,
    escape: Escape,
    /// The last byte was CR (an LF right after it ends nothing).
    after_cr: bool,
    pub history: History,
}

impl Default for Editor {
    fn default() -> Self {
        Self::new()
    }
}

impl Editor {
    pub fn new() -> Self {
        Self { line: Vec::new(), overflow: 0, escape: Escape::None, after_cr: false, history: History::default() }
    }

    /// What has been typed on the current line.
    pub fn current(&self) -> &[u8] {
        &self.line
    }

    /// Takes one typed byte; what the terminal should show goes to `echo`.
    pub fn feed(&mut self, b: u8, echo: &mut Vec<u8>) -> Option<Input> {
        let after_cr = core::mem::replace(&mut self.after_cr, b == b'\r');
        match self.escape {
            Escape::Esc => {
                self.escape = if b == b'[' || b == b'O' { Escape::Sequence } else { Escape::None };
                return None;
            }
            Escape::Sequence => {
                // Parameter and intermediate bytes, then one final byte.
                if (0x40..=0x7e).contains(&b) {
                    self.escape = Escape::None;
                    match b {
                        b'A' => {
                            let current = String::from_utf8_lossy(&self.line).into_owned();
                            if let Some(l) = self.history.up(&current).map(String::from) {
                                self.replace(&l, echo);
                            }
                        }
                        b'B' => {
                            if let Some(l) = self.history.down().map(String::from) {
                                self.replace(&l, echo);
                            }
                        }
                        _ => {}
                    }
                } else if !(0x20..=0x3f).contains(&b) {
                    self.escape = Escape::None; // not a sequence after all
                }
                return None;
            }
            Escape::None => {}
        }
        match b {
            b'\n' if after_cr => None,
            b'\r' | b'\n' => {
                // The kernel's console sends LF as CR LF.
                echo.push(b'\n');
                let overflow = core::mem::take(&mut self.overflow);
                let line = core::mem::take(&mut self.line);
                if overflow > 0 {
                    self.history.at = None;
                    return Some(Input::TooLong(line.len() + overflow));
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                self.history.push(&line);
                Some(Input::Line(line))
            }
            0x7f | 0x08 => {
                if self.overflow > 0 {
                    self.overflow -= 1;
                } else {
                    self.erase_chars(1, echo);
                }
                None
            }
            0x15 => {
                // ^U
                self.overflow = 0;
                let n = self.chars();
                self.erase_chars(n, echo);
                None
            }
            0x17 => {
                // ^W: the spaces before the cursor, then the word.
                self.overflow = 0;
                let trailing = self.line.iter().rev().take_while(|&&c| c == b' ').count();
                let word = self.line[..self.line.len() - trailing].iter().rev().take_while(|&&c| c != b' ').count();
                let keep = self.line.len() - trailing - word;
                let n = chars_in(&self.line[keep..]);
                self.erase_chars(n, echo);
                None
            }
            0x03 => {
                // ^C
                echo.extend_from_slice(b"^C\n");
                self.line.clear();
                self.overflow = 0;
                self.history.at = None;
                Some(Input::Cancelled)
            }
            0x1b => {
                self.escape = Escape::Esc;
                None
            }
            b'\t' => self.append(b' ', echo),
            0x00..=0x1f => None,
            _ => self.append(b, echo),
        }
    }

    fn append(&mut self, b: u8, echo: &mut Vec<u8>) -> Option<Input> {
        if self.overflow > 0 || self.line.len() >= MAX_LINE {
            if self.overflow == 0 {
                echo.push(0x07); // the bell, once: the rest is not kept
            }
            self.overflow = self.overflow.saturating_add(1);
        } else {
            self.line.push(b);
            echo.push(b);
        }
        None
    }

    /// Characters (UTF-8 sequences) on the line.
    fn chars(&self) -> usize {
        chars_in(&self.line)
    }

    /// Removes the last `n` characters and erases them on the terminal.
    fn erase_chars(&mut self, n: usize, echo: &mut Vec<u8>) {
        for _ in 0..n {
            // A character is its lead byte and the continuation bytes after it.
            let Some(lead) = self.line.iter().rposition(|&c| c & 0xc0 != 0x80) else {
                self.line.clear();
                break;
            };
            self.line.truncate(lead);
            echo.extend_from_slice(b"\x08 \x08");
        }
    }

    /// Shows `text` in place of the current line.
    fn replace(&mut self, text: &str, echo: &mut Vec<u8>) {
        let n = self.chars();
        self.erase_chars(n, echo);
        self.overflow = 0;
        let bytes = &text.as_bytes()[..text.len().min(MAX_LINE)];
        self.line.extend_from_slice(bytes);
        echo.extend_from_slice(bytes);
    }
}

fn chars_in(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&c| c & 0xc0 != 0x80).count()
}
