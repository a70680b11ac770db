//! Load plans for static x86-64 executables.
//!
//! The kernel starts init from `bin/init` in the boot archive, and init starts
//! every other server from `bin/<binary>`; both turn the ELF file into a
//! [`LoadPlan`] here first and then only copy bytes and map pages. The file
//! comes from the boot medium, so it is hostile: every header field is checked
//! once, here, and a plan exists only for a file that passed every check —
//! ELF64, little-endian, x86-64, `ET_EXEC`, every `PT_LOAD` segment inside the
//! file and inside user space, no two segments sharing a page, none both
//! writable and executable, and the entry point in an executable segment.
//!
//! Nothing here allocates; a plan holds at most [`MAX_SEGMENTS`] segments.
//! Segment file offsets need not be congruent to their addresses modulo the
//! page size, since the loader copies into fresh frames instead of mapping the
//! file ([`Segment::page_copies`] says which bytes go where).

use ::elf::abi::{
    EI_CLASS, ELFCLASS64, ELFMAGIC, EM_X86_64, ET_DYN, ET_EXEC, EV_CURRENT, PF_R, PF_W, PF_X, PT_DYNAMIC, PT_INTERP,
    PT_LOAD,
};
use ::elf::endian::LittleEndian;
use ::elf::file::Class;
use ::elf::{ElfBytes, ParseError};
use abi::{PAGE_SIZE, Rights, USER_MAX, USER_MIN};
use core::ops::Range;

/// Most `PT_LOAD` segments a plan holds (a linked Rust binary has 2–4).
pub const MAX_SEGMENTS: usize = 16;

/// Why a file is not a loadable executable. `segment` is the index of the
/// program header the problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// No ELF magic at the start.
    NotElf,
    /// ELF32 (or an unknown class); Alcove runs ELF64 only.
    Not64Bit,
    /// Big-endian (or an unknown byte order).
    NotLittleEndian,
    /// `e_ident[EI_VERSION]` or `e_version` is not `EV_CURRENT`.
    BadVersion,
    /// `e_machine` is not `EM_X86_64`.
    WrongMachine(u16),
    /// `e_type` is not `ET_EXEC` (a PIE is `ET_DYN`).
    NotExecutable(u16),
    /// The file header or the program header table is cut short or malformed.
    Malformed,
    /// A `PT_INTERP` or `PT_DYNAMIC` header: the file needs a dynamic linker.
    Dynamic { segment: usize },
    /// No non-empty `PT_LOAD` segment.
    NoSegments,
    /// More than [`MAX_SEGMENTS`] non-empty `PT_LOAD` segments.
    TooManySegments,
    /// `p_filesz > p_memsz`.
    FileSizeExceedsMemSize { segment: usize },
    /// `p_offset + p_filesz` lies beyond the end of the file (or overflows).
    OutsideFile { segment: usize },
    /// `[p_vaddr, p_vaddr + p_memsz)` is not inside `[USER_MIN, USER_MAX)`.
    OutsideUserSpace { segment: usize },
    /// Two segments share a page.
    Overlap { segment: usize, other: usize },
    /// A segment is both writable and executable (W^X).
    WritableAndExecutable { segment: usize },
    /// A segment grants no access at all.
    NoAccess { segment: usize },
    /// The entry point is not inside an executable segment.
    EntryNotExecutable { entry: u64 },
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ElfError::NotElf => write!(f, "not an ELF file"),
            ElfError::Not64Bit => write!(f, "not a 64-bit ELF file"),
            ElfError::NotLittleEndian => write!(f, "not a little-endian ELF file"),
            ElfError::BadVersion => write!(f, "unknown ELF version"),
            ElfError::WrongMachine(m) => write!(f, "machine {m} is not x86-64 ({EM_X86_64})"),
            ElfError::NotExecutable(ET_DYN) => {
                write!(f, "type ET_DYN (a position-independent executable) is not ET_EXEC; link it static")
            }
            ElfError::NotExecutable(t) => write!(f, "type {t} is not ET_EXEC"),
            ElfError::Malformed => write!(f, "file header or program header table malformed or cut short"),
            ElfError::Dynamic { segment } => write!(f, "program header {segment} asks for dynamic linking"),
            ElfError::NoSegments => write!(f, "no loadable segment"),
            ElfError::TooManySegments => write!(f, "more than {MAX_SEGMENTS} loadable segments"),
            ElfError::FileSizeExceedsMemSize { segment } => {
                write!(f, "segment {segment}: file size exceeds memory size")
            }
            ElfError::OutsideFile { segment } => write!(f, "segment {segment}: file range beyond the end of the file"),
            ElfError::OutsideUserSpace { segment } => write!(f, "segment {segment}: addresses outside user space"),
            ElfError::Overlap { segment, other } => write!(f, "segment {segment} shares a page with segment {other}"),
            ElfError::WritableAndExecutable { segment } => {
                write!(f, "segment {segment} is both writable and executable")
            }
            ElfError::NoAccess { segment } => {
                write!(f, "segment {segment} is neither readable, writable nor executable")
            }
            ElfError::EntryNotExecutable { entry } => {
                write!(f, "entry point {entry:#x} is not in an executable segment")
            }
        }
    }
}

fn from_parse_error(e: ParseError) -> ElfError {
    match e {
        ParseError::BadMagic(_) => ElfError::NotElf,
        ParseError::UnsupportedElfClass(_) => ElfError::Not64Bit,
        ParseError::UnsupportedElfEndianness(_) => ElfError::NotLittleEndian,
        ParseError::UnsupportedVersion(_) => ElfError::BadVersion,
        _ => ElfError::Malformed,
    }
}

/// One `PT_LOAD` segment, checked against the file and user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    vaddr: u64,
    memsz: u64,
    file_offset: u64,
    filesz: u64,
    rights: Rights,
}

/// One page of a segment: zero it, copy `file[src]` to `dst_offset` in it,
/// and map it at `page_vaddr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageCopy {
    /// The page's (page-aligned) virtual address.
    pub page_vaddr: u64,
    /// Where in the page the file bytes start.
    pub dst_offset: usize,
    /// The file bytes that go there; empty for a page of only zeroes (.bss).
    /// `dst_offset + src.len() <= PAGE_SIZE`.
    pub src: Range<usize>,
}

impl Segment {
    /// The virtual address of the segment's first byte.
    pub const fn vaddr(&self) -> u64 {
        self.vaddr
    }
    /// Bytes in memory (file bytes, then zeroes).
    pub const fn memsz(&self) -> u64 {
        self.memsz
    }
    /// Where the segment's file bytes start.
    pub const fn file_offset(&self) -> u64 {
        self.file_offset
    }
    /// Bytes taken from the file; the rest up to [`memsz`](Self::memsz) is zero.
    pub const fn filesz(&self) -> u64 {
        self.filesz
    }
    /// The rights to map the pages with: some of `READ`, `WRITE`, `EXECUTE`,
    /// never both `WRITE` and `EXECUTE`.
    pub const fn rights(&self) -> Rights {
        self.rights
    }
    /// The segment's bytes in the file (in bounds of the file it came from).
    pub const fn file_range(&self) -> Range<usize> {
        self.file_offset as usize..(self.file_offset + self.filesz) as usize
    }

    /// The page-aligned address range to map.
    pub const fn pages(&self) -> Range<u64> {
        page_down(self.vaddr)..page_up(self.vaddr + self.memsz)
    }

    /// How many pages [`pages`](Self::pages) covers.
    pub const fn page_count(&self) -> u64 {
        (self.pages().end - self.pages().start) / PAGE_SIZE
    }

    /// What goes into the page at `page_vaddr`: the offset in the page where
    /// file bytes start and the file range to copy there (empty when the page
    /// holds only zeroes). Every byte of the page outside that is zero.
    /// `None` when `page_vaddr` is not a page-aligned address in
    /// [`pages`](Self::pages).
    pub fn page_contents(&self, page_vaddr: u64) -> Option<(usize, Range<usize>)> {
        let pages = self.pages();
        if !page_vaddr.is_multiple_of(PAGE_SIZE) || !pages.contains(&page_vaddr) {
            return None;
        }
        let page_end = page_vaddr + PAGE_SIZE;
        let file_end = self.vaddr + self.filesz;
        let start = self.vaddr.max(page_vaddr);
        let end = file_end.min(page_end);
        let dst = (start - page_vaddr) as usize;
        if start >= end {
            return Some((dst, self.file_offset as usize..self.file_offset as usize));
        }
        let src = (self.file_offset + (start - self.vaddr)) as usize;
        Some((dst, src..src + (end - start) as usize))
    }

    /// Every page of the segment in address order, with what goes in it.
    pub fn page_copies(&self) -> impl Iterator<Item = PageCopy> + '_ {
        let pages = self.pages();
        (0..self.page_count()).filter_map(move |i| {
            let page_vaddr = pages.start + i * PAGE_SIZE;
            let (dst_offset, src) = self.page_contents(page_vaddr)?;
            Some(PageCopy { page_vaddr, dst_offset, src })
        })
    }
}

/// A checked executable: where to start and what to map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    entry: u64,
    segments: heapless::Vec<Segment, MAX_SEGMENTS>,
}

impl LoadPlan {
    /// The entry point; inside an executable segment.
    pub const fn entry(&self) -> u64 {
        self.entry
    }
    /// The segments in program-header order; no two share a page.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// Pages the image needs in all (for charging a budget up front).
    pub fn page_count(&self) -> u64 {
        self.segments.iter().map(Segment::page_count).sum()
    }
    /// The first page above every segment, where a heap or stack can go.
    pub fn image_end(&self) -> u64 {
        self.segments.iter().map(|s| s.pages().end).max().unwrap_or(USER_MIN)
    }
}

const fn page_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

/// Callers pass only addresses below `USER_MAX`, so this cannot overflow.
const fn page_up(x: u64) -> u64 {
    page_down(x + PAGE_SIZE - 1)
}

/// Checks an executable and returns how to load it.
pub fn load_plan(bytes: &[u8]) -> Result<LoadPlan, ElfError> {
    // An ELF32 header has another layout, so say so before parsing it as one.
    if bytes.get(..4) == Some(&ELFMAGIC[..]) && bytes.get(EI_CLASS).is_some_and(|&c| c != ELFCLASS64) {
        return Err(ElfError::Not64Bit);
    }
    let file = ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(from_parse_error)?;
    let ehdr = &file.ehdr;
    if ehdr.class != Class::ELF64 {
        return Err(ElfError::Not64Bit);
    }
    if ehdr.version != EV_CURRENT as u32 {
        return Err(ElfError::BadVersion);
    }
    if ehdr.e_machine != EM_X86_64 {
        return Err(ElfError::WrongMachine(ehdr.e_machine));
    }
    if ehdr.e_type != ET_EXEC {
        return Err(ElfError::NotExecutable(ehdr.e_type));
    }
    let table = file.segments().ok_or(ElfError::NoSegments)?;

    let mut segments: heapless::Vec<(usize, Segment), MAX_SEGMENTS> = heapless::Vec::new();
    for index in 0..table.len() {
        let ph = table.get(index).map_err(from_parse_error)?;
        match ph.p_type {
            PT_LOAD => {}
            PT_INTERP | PT_DYNAMIC => return Err(ElfError::Dynamic { segment: index }),
            _ => continue,
        }
        let segment = check_segment(index, &ph, bytes.len())?;
        if segment.memsz == 0 {
            continue;
        }
        for &(other, ref s) in &segments {
            let (a, b) = (s.pages(), segment.pages());
            if a.start < b.end && b.start < a.end {
                return Err(ElfError::Overlap { segment: index, other });
            }
        }
        segments.push((index, segment)).map_err(|_| ElfError::TooManySegments)?;
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    let entry = ehdr.e_entry;
    let runs_entry = |s: &Segment| s.rights.contains(Rights::EXECUTE) && s.vaddr <= entry && entry - s.vaddr < s.memsz;
    if !segments.iter().any(|(_, s)| runs_entry(s)) {
        return Err(ElfError::EntryNotExecutable { entry });
    }
    Ok(LoadPlan { entry, segments: segments.into_iter().map(|(_, s)| s).collect() })
}

fn check_segment(index: usize, ph: &::elf::segment::ProgramHeader, file_len: usize) -> Result<Segment, ElfError> {
    let segment = index;
    if ph.p_filesz > ph.p_memsz {
        return Err(ElfError::FileSizeExceedsMemSize { segment });
    }
    match ph.p_offset.checked_add(ph.p_filesz) {
        Some(end) if end <= file_len as u64 => {}
        _ => return Err(ElfError::OutsideFile { segment }),
    }
    match ph.p_vaddr.checked_add(ph.p_memsz) {
        Some(end) if ph.p_vaddr >= USER_MIN && end <= USER_MAX => {}
        _ => return Err(ElfError::OutsideUserSpace { segment }),
    }
    let mut rights = Rights::NONE;
    for (flag, right) in [(PF_R, Rights::READ), (PF_W, Rights::WRITE), (PF_X, Rights::EXECUTE)] {
        if ph.p_flags & flag != 0 {
            rights = rights | right;
        }
    }
    if rights.contains(Rights::WRITE | Rights::EXECUTE) {
        return Err(ElfError::WritableAndExecutable { segment });
    }
    if rights == Rights::NONE && ph.p_memsz != 0 {
        return Err(ElfError::NoAccess { segment });
    }
    Ok(Segment { vaddr: ph.p_vaddr, memsz: ph.p_memsz, file_offset: ph.p_offset, filesz: ph.p_filesz, rights })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// One program header for the builder.
    #[derive(Clone, Copy)]
    pub(crate) struct Ph {
        p_type: u32,
        flags: u32,
        offset: u64,
        vaddr: u64,
        filesz: u64,
        memsz: u64,
    }

    /// A hand-assembled ELF64 file: header, program headers, payload.
    pub(crate) struct Builder {
        class: u8,
        data: u8,
        e_type: u16,
        machine: u16,
        entry: u64,
        phs: Vec<Ph>,
        payload_len: usize,
    }

    const EHDR: usize = 64;
    const PHDR: usize = 56;
    const TEXT: u64 = 0x20_0000;
    const DATA: u64 = 0x40_1000;

    impl Builder {
        /// Text (R+X, 0x1800 bytes from file offset 0x1000) and data (R+W,
        /// 0x100 bytes of file then .bss to 0x3000).
        pub(crate) fn two_segments() -> Self {
            Builder {
                class: 2,
                data: 1,
                e_type: ET_EXEC,
                machine: EM_X86_64,
                entry: TEXT + 0x10,
                phs: vec![
                    Ph {
                        p_type: PT_LOAD,
                        flags: PF_R | PF_X,
                        offset: 0x1000,
                        vaddr: TEXT,
                        filesz: 0x1800,
                        memsz: 0x1800,
                    },
                    Ph {
                        p_type: PT_LOAD,
                        flags: PF_R | PF_W,
                        offset: 0x2800,
                        vaddr: DATA + 0x800,
                        filesz: 0x100,
                        memsz: 0x3000,
                    },
                ],
                payload_len: 0x2900,
            }
        }

        pub(crate) fn build(&self) -> Vec<u8> {
            let mut b = vec![0u8; self.payload_len.max(EHDR + PHDR * self.phs.len())];
            b[..4].copy_from_slice(b"\x7fELF");
            b[4] = self.class;
            b[5] = self.data;
            b[6] = 1; // EI_VERSION
            b[16..18].copy_from_slice(&self.e_type.to_le_bytes());
            b[18..20].copy_from_slice(&self.machine.to_le_bytes());
            b[20..24].copy_from_slice(&1u32.to_le_bytes());
            b[24..32].copy_from_slice(&self.entry.to_le_bytes());
            b[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
            b[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
            b[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
            b[56..58].copy_from_slice(&(self.phs.len() as u16).to_le_bytes());
            for (i, ph) in self.phs.iter().enumerate() {
                let at = EHDR + i * PHDR;
                let h = &mut b[at..at + PHDR];
                h[0..4].copy_from_slice(&ph.p_type.to_le_bytes());
                h[4..8].copy_from_slice(&ph.flags.to_le_bytes());
                h[8..16].copy_from_slice(&ph.offset.to_le_bytes());
                h[16..24].copy_from_slice(&ph.vaddr.to_le_bytes());
                h[24..32].copy_from_slice(&ph.vaddr.to_le_bytes());
                h[32..40].copy_from_slice(&ph.filesz.to_le_bytes());
                h[40..48].copy_from_slice(&ph.memsz.to_le_bytes());
                h[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
            }
            // Recognisable payload: byte i of the file is i mod 251.
            for (i, x) in b.iter_mut().enumerate().skip(0x1000) {
                *x = (i % 251) as u8;
            }
            b
        }
    }

    #[test]
    fn valid_two_segment_executable() {
        let bytes = Builder::two_segments().build();
        let plan = load_plan(&bytes).unwrap();
        assert_eq!(plan.entry(), TEXT + 0x10);
        let [text, data] = plan.segments() else { panic!("{plan:?}") };
        assert_eq!(text.rights(), Rights::READ | Rights::EXECUTE);
        assert_eq!(data.rights(), Rights::READ | Rights::WRITE);
        assert_eq!(text.pages(), TEXT..TEXT + 0x2000);
        assert_eq!(data.pages(), DATA..DATA + 0x4000);
        assert_eq!(plan.page_count(), 6);
        assert_eq!(plan.image_end(), DATA + 0x4000);
        assert_eq!(text.file_range(), 0x1000..0x2800);

        // Text: two pages straight from the file, the second one partial.
        assert_eq!(text.page_contents(TEXT), Some((0, 0x1000..0x2000)));
        assert_eq!(text.page_contents(TEXT + 0x1000), Some((0, 0x2000..0x2800)));
        assert_eq!(text.page_contents(TEXT + 0x2000), None);
        assert_eq!(text.page_contents(TEXT + 1), None);
        // Data starts mid-page; the pages after its file bytes are all zero.
        assert_eq!(data.page_contents(DATA), Some((0x800, 0x2800..0x2900)));
        assert_eq!(data.page_contents(DATA + 0x1000).map(|(_, r)| r.len()), Some(0));
        assert_eq!(data.page_copies().count(), 4);

        // Copying page by page rebuilds exactly the image the headers describe.
        for seg in plan.segments() {
            for p in seg.page_copies() {
                assert!(p.dst_offset + p.src.len() <= PAGE_SIZE as usize);
                for (k, &byte) in bytes[p.src.clone()].iter().enumerate() {
                    let va = p.page_vaddr + (p.dst_offset + k) as u64;
                    let file_at = seg.file_offset() + (va - seg.vaddr());
                    assert_eq!(byte, bytes[file_at as usize]);
                }
            }
        }
    }

    #[test]
    fn unaligned_file_offsets_are_copied_correctly() {
        let mut b = Builder::two_segments();
        b.phs[0].offset = 0x1234;
        b.phs[0].vaddr = TEXT + 0x10;
        b.phs[0].filesz = 0x1000;
        b.phs[0].memsz = 0x1000;
        b.entry = TEXT + 0x20;
        let bytes = b.build();
        let plan = load_plan(&bytes).unwrap();
        let text = plan.segments()[0];
        assert_eq!(text.pages(), TEXT..TEXT + 0x2000);
        assert_eq!(text.page_contents(TEXT), Some((0x10, 0x1234..0x1234 + 0xff0)));
        assert_eq!(text.page_contents(TEXT + 0x1000), Some((0, 0x2224..0x2234)));
    }

    #[test]
    fn truncated_at_every_length_is_an_error() {
        let bytes = Builder::two_segments().build();
        for cut in 0..bytes.len() {
            assert!(load_plan(&bytes[..cut]).is_err(), "cut at {cut} loaded");
        }
    }

    #[test]
    fn overlapping_segments_are_rejected() {
        let mut b = Builder::two_segments();
        b.phs[1].vaddr = TEXT + 0x1f00; // shares text's second page
        assert_eq!(load_plan(&b.build()), Err(ElfError::Overlap { segment: 1, other: 0 }));
        let mut b = Builder::two_segments();
        b.phs[1].vaddr = TEXT - 0x100;
        b.phs[1].memsz = 0x200; // ends in text's first page
        assert_eq!(load_plan(&b.build()), Err(ElfError::Overlap { segment: 1, other: 0 }));
    }

    #[test]
    fn writable_and_executable_is_rejected() {
        let mut b = Builder::two_segments();
        b.phs[1].flags = PF_R | PF_W | PF_X;
        assert_eq!(load_plan(&b.build()), Err(ElfError::WritableAndExecutable { segment: 1 }));
    }

    #[test]
    fn entry_outside_text_is_rejected() {
        for entry in [0, TEXT - 1, TEXT + 0x1800, DATA + 0x900, u64::MAX] {
            let mut b = Builder::two_segments();
            b.entry = entry;
            assert_eq!(load_plan(&b.build()), Err(ElfError::EntryNotExecutable { entry }));
        }
    }

    #[test]
    fn segments_outside_user_space_are_rejected() {
        for (vaddr, memsz) in [
            (0xffff_8000_0000_0000, 0x1000), // kernel half
            (USER_MAX - 0x1000, 0x2000),     // runs past the top
            (0, 0x1000),                     // the null page
            (u64::MAX - 0xfff, 0x2000),      // wraps
        ] {
            let mut b = Builder::two_segments();
            b.phs[1].vaddr = vaddr;
            b.phs[1].memsz = memsz;
            assert_eq!(load_plan(&b.build()), Err(ElfError::OutsideUserSpace { segment: 1 }), "{vaddr:#x}");
        }
        let mut b = Builder::two_segments();
        b.phs[1].vaddr = USER_MAX - 0x1000;
        b.phs[1].memsz = 0x1000;
        assert!(load_plan(&b.build()).is_ok(), "the last user page is loadable");
    }

    #[test]
    fn bad_sizes_are_rejected() {
        let mut b = Builder::two_segments();
        b.phs[1].filesz = 0x3001;
        assert_eq!(load_plan(&b.build()), Err(ElfError::FileSizeExceedsMemSize { segment: 1 }));
        let mut b = Builder::two_segments();
        b.phs[1].filesz = 0x101;
        assert_eq!(load_plan(&b.build()), Err(ElfError::OutsideFile { segment: 1 }));
        let mut b = Builder::two_segments();
        b.phs[1].offset = u64::MAX;
        assert_eq!(load_plan(&b.build()), Err(ElfError::OutsideFile { segment: 1 }));
    }

    #[test]
    fn wrong_class_machine_type_and_order_are_rejected() {
        let mut b = Builder::two_segments();
        b.machine = 3; // EM_386
        assert_eq!(load_plan(&b.build()), Err(ElfError::WrongMachine(3)));
        let mut b = Builder::two_segments();
        b.e_type = ET_DYN;
        assert_eq!(load_plan(&b.build()), Err(ElfError::NotExecutable(ET_DYN)));
        let mut b = Builder::two_segments();
        b.class = 1;
        assert_eq!(load_plan(&b.build()), Err(ElfError::Not64Bit));
        let mut b = Builder::two_segments();
        b.class = 7;
        assert_eq!(load_plan(&b.build()), Err(ElfError::Not64Bit));
        let mut b = Builder::two_segments();
        b.data = 2;
        assert_eq!(load_plan(&b.build()), Err(ElfError::NotLittleEndian));
        let mut bytes = Builder::two_segments().build();
        bytes[0] = b'#';
        assert_eq!(load_plan(&bytes), Err(ElfError::NotElf));
    }

    #[test]
    fn dynamic_and_degenerate_files_are_rejected() {
        let mut b = Builder::two_segments();
        b.phs.push(Ph { p_type: PT_INTERP, flags: PF_R, offset: 0x1000, vaddr: 0, filesz: 1, memsz: 1 });
        assert_eq!(load_plan(&b.build()), Err(ElfError::Dynamic { segment: 2 }));
        let mut b = Builder::two_segments();
        b.phs.clear();
        assert_eq!(load_plan(&b.build()), Err(ElfError::NoSegments));
        let mut b = Builder::two_segments();
        b.phs[1].flags = 0;
        assert_eq!(load_plan(&b.build()), Err(ElfError::NoAccess { segment: 1 }));
        // Other header types (PT_GNU_STACK, notes) and empty PT_LOADs are skipped.
        let mut b = Builder::two_segments();
        b.phs.push(Ph { p_type: 0x6474_e551, flags: PF_R | PF_W | PF_X, offset: 0, vaddr: 0, filesz: 0, memsz: 0 });
        b.phs.push(Ph { p_type: PT_LOAD, flags: PF_R, offset: 0, vaddr: TEXT, filesz: 0, memsz: 0 });
        assert_eq!(load_plan(&b.build()).unwrap().segments().len(), 2);
    }

    #[test]
    fn too_many_segments_are_rejected() {
        let seg =
            |i: u64| Ph { p_type: PT_LOAD, flags: PF_R, offset: 0x1000, vaddr: DATA + i * 0x1000, filesz: 0, memsz: 1 };
        let mut b = Builder::two_segments();
        b.phs.truncate(1);
        b.phs.extend((0..MAX_SEGMENTS as u64 - 1).map(seg));
        assert_eq!(load_plan(&b.build()).unwrap().segments().len(), MAX_SEGMENTS);
        b.phs.push(seg(MAX_SEGMENTS as u64));
        assert_eq!(load_plan(&b.build()), Err(ElfError::TooManySegments));
    }

    #[test]
    fn random_corruption_never_panics() {
        let good = Builder::two_segments().build();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            // Flip a few bytes, mostly in the headers where they matter.
            for _ in 0..1 + next() % 4 {
                let r = next();
                let at = if r % 4 == 0 { r as usize % bytes.len() } else { r as usize % (EHDR + 2 * PHDR) };
                bytes[at] = (r >> 32) as u8;
            }
            if let Ok(plan) = load_plan(&bytes) {
                accepted += 1;
                for s in plan.segments() {
                    assert!(!s.rights().contains(Rights::WRITE | Rights::EXECUTE));
                    assert!(s.pages().start >= USER_MIN && s.pages().end <= USER_MAX);
                    // A flipped size can make a segment terabytes long; the first pages suffice.
                    for p in s.page_copies().take(64) {
                        assert!(p.src.end <= bytes.len() && p.dst_offset + p.src.len() <= PAGE_SIZE as usize);
                    }
                }
            }
        }
        assert!(accepted > 0, "no mutation left a loadable file; the test is not exercising the checks");
    }
}
