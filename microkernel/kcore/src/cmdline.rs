//! The kernel command line: space-separated `key=value` words and bare flags,
//! as GRUB passes them after the kernel's path (`multiboot2 /boot/alcove
//! alcove.test=boot`).

/// A parsed view over the command line; borrows the bootloader's string.
#[derive(Clone, Copy, Debug)]
pub struct CmdLine<'a> {
    text: &'a str,
}

impl<'a> CmdLine<'a> {
    pub const fn new(text: &'a str) -> Self {
        Self { text }
    }

    /// The raw command line.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The words of the command line, in order.
    pub fn words(&self) -> impl Iterator<Item = &'a str> {
        self.text.split_ascii_whitespace()
    }

    /// The value of the last `key=value` word (later words override earlier
    /// ones, as on Linux); `None` when the key is absent or bare.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.words()
            .filter_map(|w| w.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .last()
    }

    /// Whether `key` appears as a bare flag or as `key=…`.
    pub fn has(&self, key: &str) -> bool {
        self.words().any(|w| w == key || w.split_once('=').is_some_and(|(k, _)| k == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_and_flags() {
        let c = CmdLine::new("/boot/alcove  alcove.test=boot quiet alcove.test=fault x=");
        assert_eq!(c.get("alcove.test"), Some("fault"));
        assert_eq!(c.get("x"), Some(""));
        assert_eq!(c.get("quiet"), None);
        assert!(c.has("quiet"));
        assert!(c.has("alcove.test"));
        assert!(!c.has("alcove"));
        assert_eq!(c.words().count(), 5);
    }

    #[test]
    fn empty_line() {
        let c = CmdLine::new("");
        assert_eq!(c.get("a"), None);
        assert!(!c.has("a"));
    }
}
