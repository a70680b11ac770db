//! Splitting a command line into words, as a POSIX shell quotes them:
//! blanks separate words; `'...'` is literal; `"..."` keeps blanks and
//! takes `\"`, `\\`, `\$` and `` \` `` as escapes (any other backslash
//! stays); a backslash outside quotes makes the next character literal;
//! `#` at the start of a word begins a comment. One redirection is known:
//! `<<< WORD` (bash's here-string) makes WORD the command's standard input,
//! which is how a payload reaches `vmadm create` or `vmadm update UUID`.
//! An unquoted `|` separates the commands of a pipeline (the shell runs one:
//! `zfs send ... | zfs receive ...`).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub words: Vec<String>,
    /// The words of the commands after each unquoted `|`, in order (empty:
    /// no pipeline).
    pub piped: Vec<Vec<String>>,
    /// What `<<< WORD` gave as standard input (with a newline added, as
    /// bash does).
    pub stdin: Option<String>,
}

/// Why a line could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A quote (`'` or `"`) opened and never closed.
    UnterminatedQuote(char),
    /// The line ends in a backslash.
    TrailingBackslash,
    /// `<<<` with no word after it.
    MissingHereString,
    /// More than one `<<<`.
    TwoHereStrings,
    /// A `|` with no command before or after it.
    EmptyPipe,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnterminatedQuote('\'') => f.write_str("unterminated single quote"),
            ParseError::UnterminatedQuote(_) => f.write_str("unterminated double quote"),
            ParseError::TrailingBackslash => f.write_str("the line ends in a backslash"),
            ParseError::MissingHereString => f.write_str("`<<<` needs a word after it"),
            ParseError::TwoHereStrings => f.write_str("more than one `<<<`"),
            ParseError::EmptyPipe => f.write_str("near unexpected token `|'"),
        }
    }
}

/// A word and whether any of it was quoted (a quoted `<<<` is a word).
struct Word {
    text: String,
    quoted: bool,
}

/// Splits `line` into words.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let mut words: Vec<Word> = Vec::new();
    // The words of the commands before each `|`.
    let mut stages: Vec<Vec<Word>> = Vec::new();
    let mut chars = line.chars().peekable();
    let mut current: Option<Word> = None;
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = current.take() {
                    words.push(w);
                }
            }
            '#' if current.is_none() => break,
            '|' => {
                if let Some(w) = current.take() {
                    words.push(w);
                }
                if words.is_empty() {
                    return Err(ParseError::EmptyPipe);
                }
                stages.push(core::mem::take(&mut words));
            }
            '\'' => {
                let w = current.get_or_insert_with(|| Word { text: String::new(), quoted: true });
                w.quoted = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.text.push(c),
                        None => return Err(ParseError::UnterminatedQuote('\'')),
                    }
                }
            }
            '"' => {
                let w = current.get_or_insert_with(|| Word { text: String::new(), quoted: true });
                w.quoted = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.peek() {
                            Some(&e @ ('"' | '\\' | '$' | '`')) => {
                                chars.next();
                                w.text.push(e);
                            }
                            _ => w.text.push('\\'),
                        },
                        Some(c) => w.text.push(c),
                        None => return Err(ParseError::UnterminatedQuote('"')),
                    }
                }
            }
            '\\' => {
                let w = current.get_or_insert_with(|| Word { text: String::new(), quoted: true });
                w.quoted = true;
                match chars.next() {
                    Some(c) => w.text.push(c),
                    None => return Err(ParseError::TrailingBackslash),
                }
            }
            c => current.get_or_insert_with(|| Word { text: String::new(), quoted: false }).text.push(c),
        }
    }
    if let Some(w) = current.take() {
        words.push(w);
    }
    if !stages.is_empty() && words.is_empty() {
        return Err(ParseError::EmptyPipe);
    }
    stages.push(words);
    let mut cmd = Command::default();
    let piped = stages.len() > 1;
    for (n, stage) in stages.into_iter().enumerate() {
        let mut out = Vec::new();
        let mut it = stage.into_iter();
        while let Some(w) = it.next() {
            if !w.quoted && w.text == "<<<" {
                let Some(input) = it.next() else { return Err(ParseError::MissingHereString) };
                if cmd.stdin.is_some() {
                    return Err(ParseError::TwoHereStrings);
                }
                let mut text = input.text;
                text.push('\n');
                cmd.stdin = Some(text);
            } else {
                out.push(w.text);
            }
        }
        if piped && out.is_empty() {
            // `a | <<< x`: a stage of nothing but a redirection.
            return Err(ParseError::EmptyPipe);
        }
        if n == 0 {
            cmd.words = out;
        } else {
            cmd.piped.push(out);
        }
    }
    Ok(cmd)
}
