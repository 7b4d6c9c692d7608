//! Go build information in an ELF executable (the `.go.buildinfo` section the Go linker writes since Go 1.13, as
//! `go version -m` reads it) and the `GODEBUG` setting `madvdontneed` from a process environment.
//!
//! Two layouts of `.go.buildinfo` exist. Both start with the 14-byte magic `\xff Go buildinf:`, a pointer size
//! and a flags byte:
//! - Go ≥ 1.18 (flag bit 1 set): the version and the module information follow inline at offset 32, each as a
//!   uvarint length and the bytes.
//! - Go 1.13–1.17: two pointers at offset 16 give the virtual addresses of two Go string headers (data pointer,
//!   length), which are mapped to file offsets through the program headers (flag bit 0: big-endian).
//!
//! The module information is `path\t<main package>\nmod\t<module>\t<version>\t<sum>\n…build\tKEY=VALUE\n`,
//! framed by 16 sentinel bytes on each side. Go binaries built before 1.13 carry no build information; they are
//! recognised as Go by their `.note.go.buildid` or `.gopclntab` section and reported with an unknown version.
//!
//! The parser reads through [`ReadAt`] so that the caller decides where the bytes come from (a file via `pread`,
//! a byte slice in tests and under the fuzzer); it never reads more than a few bounded regions: the ELF header,
//! the section header table (at most [`MAX_SECTIONS`] entries), the section name table and the build info
//! (at most [`MAX_BUILDINFO`] bytes).

/// Random access to the executable's bytes. `read_at` fills as much of `buf` as exists at `offset` and returns
/// the count (less than `buf.len()` only at the end of the file).
pub trait ReadAt {
    type Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

impl ReadAt for &[u8] {
    type Error = std::convert::Infallible;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let Ok(start) = usize::try_from(offset) else { return Ok(0) };
        let Some(src) = self.get(start..) else { return Ok(0) };
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}

/// Section headers beyond this are not looked at (Go binaries have about 30).
pub const MAX_SECTIONS: usize = 4096;
/// Build information beyond this is not read (a large Kubernetes binary's is about 20 KiB).
pub const MAX_BUILDINFO: usize = 1 << 20;
const MAX_SHSTRTAB: usize = 1 << 16;
const MAGIC: &[u8; 14] = b"\xff Go buildinf:";

/// What the executable says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoBuild {
    /// `go1.19.8`; empty when the binary is Go but carries no build information (built before Go 1.13).
    pub version: String,
    /// Import path of the main package (`path` line); may be empty.
    pub path: String,
    /// Path of the main module (`mod` line); empty for binaries built outside module mode (e.g. Debian's).
    pub module: String,
    /// The `madvdontneed` value of the `DefaultGODEBUG` build setting (Go ≥ 1.21, `//go:debug` directives), if any.
    pub default_madvdontneed: Option<MadvDontNeed>,
}

/// Why no Go build information was returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error<E> {
    #[error("reading the executable: {0}")]
    Io(E),
    #[error("not an ELF file")]
    NotElf,
    #[error("not a Go executable")]
    NotGo,
    #[error("malformed ELF or Go build info: {0}")]
    Malformed(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct Elf {
    is64: bool,
    big_endian: bool,
}

impl Elf {
    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.big_endian { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }
    }
    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big_endian { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
    }
    fn u64(&self, b: &[u8]) -> u64 {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if self.big_endian { u64::from_be_bytes(a) } else { u64::from_le_bytes(a) }
    }
    /// An address-sized field.
    fn addr(&self, b: &[u8]) -> u64 {
        if self.is64 { self.u64(b) } else { u64::from(self.u32(b)) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Section {
    name: u32,
    offset: u64,
    size: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    writable: bool,
}

fn read_exact<R: ReadAt>(r: &mut R, offset: u64, len: usize) -> Result<Vec<u8>, Error<R::Error>> {
    let mut buf = vec![0; len];
    let n = r.read_at(offset, &mut buf).map_err(Error::Io)?;
    if n < len {
        return Err(Error::Malformed("a region lies beyond the end of the file"));
    }
    Ok(buf)
}

/// Reads the Go build information of an ELF executable.
pub fn read<R: ReadAt>(r: &mut R) -> Result<GoBuild, Error<R::Error>> {
    let mut ident = [0u8; 64];
    let n = r.read_at(0, &mut ident).map_err(Error::Io)?;
    if n < 52 || &ident[..4] != b"\x7fELF" {
        return Err(Error::NotElf);
    }
    let elf = match (ident[4], ident[5]) {
        (1, 1) => Elf { is64: false, big_endian: false },
        (1, 2) => Elf { is64: false, big_endian: true },
        (2, 1) => Elf { is64: true, big_endian: false },
        (2, 2) => Elf { is64: true, big_endian: true },
        _ => return Err(Error::NotElf),
    };
    if elf.is64 && n < 64 {
        return Err(Error::NotElf);
    }
    let h = &ident[..];
    let (phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx) = if elf.is64 {
        (
            elf.u64(&h[32..]),
            elf.u64(&h[40..]),
            elf.u16(&h[54..]),
            elf.u16(&h[56..]),
            elf.u16(&h[58..]),
            elf.u16(&h[60..]),
            elf.u16(&h[62..]),
        )
    } else {
        (
            u64::from(elf.u32(&h[28..])),
            u64::from(elf.u32(&h[32..])),
            elf.u16(&h[42..]),
            elf.u16(&h[44..]),
            elf.u16(&h[46..]),
            elf.u16(&h[48..]),
            elf.u16(&h[50..]),
        )
    };
    let segments = read_segments(r, elf, phoff, phentsize, phnum)?;
    let sections = read_sections(r, elf, shoff, shentsize, shnum)?;

    let mut is_go = false;
    let mut buildinfo: Option<Section> = None;
    if let Some(strtab) = sections.get(usize::from(shstrndx)).filter(|_| !sections.is_empty()) {
        let len = usize::try_from(strtab.size).unwrap_or(usize::MAX).min(MAX_SHSTRTAB);
        let names = read_exact(r, strtab.offset, len)?;
        for s in &sections {
            let name = usize::try_from(s.name).ok().and_then(|i| names.get(i..)).unwrap_or(&[]);
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            match name {
                b".go.buildinfo" => buildinfo = Some(*s),
                b".note.go.buildid" | b".gopclntab" | b".gosymtab" => is_go = true,
                _ => {}
            }
        }
    }
    // Where the build info is: its section, else (a binary without section headers) searched for at 16-byte
    // alignment in the first writable segment, as the Go tool does.
    let data = match buildinfo {
        Some(s) => {
            let len = usize::try_from(s.size).unwrap_or(usize::MAX).min(MAX_BUILDINFO);
            Some(read_exact(r, s.offset, len)?)
        }
        None if sections.is_empty() => match segments.iter().find(|s| s.writable) {
            Some(seg) => {
                let len = usize::try_from(seg.filesz).unwrap_or(usize::MAX).min(64 * 1024);
                let bytes = read_exact(r, seg.offset, len)?;
                (0..bytes.len().saturating_sub(32))
                    .step_by(16)
                    .find(|&i| bytes[i..].starts_with(MAGIC))
                    .map(|i| bytes[i..].to_vec())
            }
            None => None,
        },
        None => None,
    };
    let Some(data) = data else {
        return if is_go { Ok(GoBuild::default()) } else { Err(Error::NotGo) };
    };
    if data.len() < 32 || !data.starts_with(MAGIC) {
        return Err(Error::Malformed(".go.buildinfo does not start with the Go build info magic"));
    }
    let ptr_size = data[14];
    let flags = data[15];
    let (version, modinfo) = if flags & 2 != 0 {
        let (version, rest) = uvarint_string(&data[32..]).ok_or(Error::Malformed("inline version string"))?;
        let (modinfo, _) = uvarint_string(rest).unwrap_or((&[], &[]));
        (version.to_vec(), modinfo.to_vec())
    } else {
        let order = Elf { is64: ptr_size == 8, big_endian: flags & 1 != 0 };
        if ptr_size != 4 && ptr_size != 8 {
            return Err(Error::Malformed("pointer size is neither 4 nor 8"));
        }
        let p = usize::from(ptr_size);
        let version_at = order.addr(&data[16..]);
        let modinfo_at = order.addr(&data[16 + p..]);
        let version = read_go_string(r, order, &segments, version_at)?;
        let modinfo = read_go_string(r, order, &segments, modinfo_at).unwrap_or_default();
        (version, modinfo)
    };
    if !version.starts_with(b"go") || version.len() > 64 || !version.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Malformed("the version string is not a Go version"));
    }
    let mut build = GoBuild { version: String::from_utf8_lossy(&version).into_owned(), ..GoBuild::default() };
    parse_modinfo(strip_sentinels(&modinfo), &mut build);
    Ok(build)
}

fn read_segments<R: ReadAt>(
    r: &mut R,
    elf: Elf,
    phoff: u64,
    entsize: u16,
    num: u16,
) -> Result<Vec<Segment>, Error<R::Error>> {
    let want = if elf.is64 { 56 } else { 32 };
    if phoff == 0 || num == 0 {
        return Ok(Vec::new());
    }
    if usize::from(entsize) < want {
        return Err(Error::Malformed("program header entries are too small"));
    }
    let table = read_exact(r, phoff, usize::from(entsize) * usize::from(num))?;
    Ok(table
        .chunks_exact(usize::from(entsize))
        .filter(|e| elf.u32(e) == 1) // PT_LOAD
        .map(|e| {
            if elf.is64 {
                Segment {
                    offset: elf.u64(&e[8..]),
                    vaddr: elf.u64(&e[16..]),
                    filesz: elf.u64(&e[32..]),
                    writable: elf.u32(&e[4..]) & 2 != 0,
                }
            } else {
                Segment {
                    offset: u64::from(elf.u32(&e[4..])),
                    vaddr: u64::from(elf.u32(&e[8..])),
                    filesz: u64::from(elf.u32(&e[16..])),
                    writable: elf.u32(&e[24..]) & 2 != 0,
                }
            }
        })
        .collect())
}

fn read_sections<R: ReadAt>(
    r: &mut R,
    elf: Elf,
    shoff: u64,
    entsize: u16,
    num: u16,
) -> Result<Vec<Section>, Error<R::Error>> {
    let want = if elf.is64 { 64 } else { 40 };
    if shoff == 0 || num == 0 {
        return Ok(Vec::new());
    }
    if usize::from(entsize) < want {
        return Err(Error::Malformed("section header entries are too small"));
    }
    let num = usize::from(num).min(MAX_SECTIONS);
    let table = read_exact(r, shoff, usize::from(entsize) * num)?;
    Ok(table
        .chunks_exact(usize::from(entsize))
        .map(|e| {
            if elf.is64 {
                Section { name: elf.u32(e), offset: elf.u64(&e[24..]), size: elf.u64(&e[32..]) }
            } else {
                Section { name: elf.u32(e), offset: u64::from(elf.u32(&e[16..])), size: u64::from(elf.u32(&e[20..])) }
            }
        })
        .collect())
}

/// File offset of a virtual address, through the loadable segments.
fn file_offset(segments: &[Segment], vaddr: u64) -> Option<u64> {
    // Checked: a corrupt program header can put a segment's file offset anywhere (found by the gobuildinfo fuzzer).
    segments
        .iter()
        .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
        .and_then(|s| s.offset.checked_add(vaddr - s.vaddr))
}

/// Reads a Go string (header: data pointer, length) at virtual address `at` (the Go 1.13–1.17 layout).
fn read_go_string<R: ReadAt>(r: &mut R, order: Elf, segments: &[Segment], at: u64) -> Result<Vec<u8>, Error<R::Error>> {
    let p = if order.is64 { 8 } else { 4 };
    let header_at = file_offset(segments, at).ok_or(Error::Malformed("a string header lies outside every segment"))?;
    let header = read_exact(r, header_at, 2 * p)?;
    let data = order.addr(&header);
    let len = order.addr(&header[p..]);
    if len > MAX_BUILDINFO as u64 {
        return Err(Error::Malformed("a build info string is implausibly long"));
    }
    let data_at = file_offset(segments, data).ok_or(Error::Malformed("string data lies outside every segment"))?;
    read_exact(r, data_at, len as usize)
}

/// A uvarint-length-prefixed byte string and what follows it.
fn uvarint_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let start = i + 1;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            return Some((b.get(start..end)?, &b[end..]));
        }
    }
    None
}

/// Module information is framed by 16 sentinel bytes on each side (the last one preceded by a newline).
fn strip_sentinels(m: &[u8]) -> &[u8] {
    if m.len() >= 33 && m[m.len() - 17] == b'\n' { &m[16..m.len() - 16] } else { &[] }
}

fn parse_modinfo(m: &[u8], out: &mut GoBuild) {
    for line in m.split(|&b| b == b'\n') {
        let mut fields = line.split(|&b| b == b'\t');
        let (Some(kind), Some(value)) = (fields.next(), fields.next()) else { continue };
        let text = || String::from_utf8_lossy(value).into_owned();
        match kind {
            b"path" => out.path = text(),
            b"mod" => out.module = text(),
            b"build" => {
                if let Some(godebug) = value.strip_prefix(b"DefaultGODEBUG=") {
                    out.default_madvdontneed = godebug_madvdontneed(godebug);
                }
            }
            _ => {}
        }
    }
}

/// The `madvdontneed` runtime setting: `GODEBUG=madvdontneed=1` makes the Go runtime (1.12–1.15, where the
/// default is MADV_FREE) return memory with MADV_DONTNEED, so RSS falls as soon as memory is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MadvDontNeed {
    /// Set to a non-zero number: MADV_DONTNEED.
    On,
    /// Set to 0: MADV_FREE where the kernel has it.
    Off,
}

impl MadvDontNeed {
    pub fn label(self) -> &'static str {
        match self {
            MadvDontNeed::On => "1",
            MadvDontNeed::Off => "0",
        }
    }
}

/// The `madvdontneed` setting in a `GODEBUG` value (`key=value` pairs separated by commas). The last occurrence
/// wins, as in the Go runtime; a value that is not a decimal number is ignored, as the runtime ignores it.
pub fn godebug_madvdontneed(godebug: &[u8]) -> Option<MadvDontNeed> {
    godebug.rsplit(|&b| b == b',').find_map(|kv| {
        let value = kv.strip_prefix(b"madvdontneed=")?;
        if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(if value.iter().all(|&d| d == b'0') { MadvDontNeed::Off } else { MadvDontNeed::On })
    })
}

/// The `GODEBUG` variable of a process environment (`/proc/<pid>/environ`: `KEY=VALUE` entries separated by NUL
/// bytes). With duplicates, the first definition is the one the Go runtime reads (`gogetenv` stops at the first
/// match), so the first is returned.
pub fn environ_godebug(environ: &[u8]) -> Option<&[u8]> {
    environ.split(|&b| b == 0).find_map(|entry| entry.strip_prefix(b"GODEBUG="))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 little-endian executable with the given named sections (name, contents) and one writable
    /// PT_LOAD segment mapping the whole file at `BASE`.
    fn elf(sections: &[(&str, Vec<u8>)]) -> Vec<u8> {
        const BASE: u64 = 0x40_0000;
        let mut names = vec![0u8];
        let mut body = Vec::new();
        let data_start = 64 + 56; // ELF header + one program header
        let mut headers = vec![[0u64; 4]]; // SHN_UNDEF: (name, addr, offset, size)
        for (name, data) in sections {
            let off = data_start + body.len();
            headers.push([names.len() as u64, BASE + off as u64, off as u64, data.len() as u64]);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
            body.extend_from_slice(data);
            while body.len() % 16 != 0 {
                body.push(0);
            }
        }
        let strtab_off = data_start + body.len();
        let strtab_name = names.len() as u64;
        names.extend_from_slice(b".shstrtab\0");
        headers.push([strtab_name, 0, strtab_off as u64, names.len() as u64]);
        body.extend_from_slice(&names);
        while body.len() % 8 != 0 {
            body.push(0);
        }
        let shoff = data_start + body.len();
        let mut f = Vec::new();
        f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f.extend_from_slice(&62u16.to_le_bytes()); // x86-64
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&BASE.to_le_bytes()); // entry
        f.extend_from_slice(&64u64.to_le_bytes()); // phoff
        f.extend_from_slice(&(shoff as u64).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, 1, 64, headers.len() as u16, (headers.len() - 1) as u16] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        let total = (shoff + 64 * headers.len()) as u64;
        f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        f.extend_from_slice(&6u32.to_le_bytes()); // PF_R | PF_W
        for v in [0, BASE, BASE, total, total, 0x1000] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&body);
        for [name, addr, off, size] in headers {
            f.extend_from_slice(&(name as u32).to_le_bytes());
            f.extend_from_slice(&1u32.to_le_bytes()); // SHT_PROGBITS
            // sh_flags, sh_addr, sh_offset, sh_size, sh_link + sh_info, sh_addralign, sh_entsize
            for v in [0, addr, off, size, 0, 1, 0] {
                f.extend_from_slice(&v.to_le_bytes());
            }
        }
        f
    }

    fn sentinel_wrap(modinfo: &str) -> Vec<u8> {
        let mut m = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        m.extend_from_slice(modinfo.as_bytes());
        m.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        m
    }

    fn uvarint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// `.go.buildinfo` of Debian's node_exporter 1.5.0 (built with go1.19.8 outside module mode), read from
    /// `/usr/bin/prometheus-node-exporter` on this machine; the inline layout of Go ≥ 1.18.
    fn node_exporter_1_5_buildinfo() -> Vec<u8> {
        let mut d = b"\xff Go buildinf:\x08\x02".to_vec();
        d.resize(32, 0);
        let modinfo = sentinel_wrap(
            "path\tgithub.com/prometheus/node_exporter\nbuild\t-compiler=gc\nbuild\t-trimpath=true\n\
build\tCGO_ENABLED=1\nbuild\tGOARCH=amd64\nbuild\tGOOS=linux\nbuild\tGOAMD64=v1\n",
        );
        uvarint(8, &mut d);
        d.extend_from_slice(b"go1.19.8");
        uvarint(modinfo.len(), &mut d);
        d.extend_from_slice(&modinfo);
        d
    }

    #[test]
    fn inline_layout_of_go_1_18_and_later() {
        let f = elf(&[
            (".text", vec![0x90; 32]),
            (".note.go.buildid", vec![0; 16]),
            (".go.buildinfo", node_exporter_1_5_buildinfo()),
        ]);
        let b = read(&mut f.as_slice()).unwrap();
        assert_eq!(b.version, "go1.19.8");
        assert_eq!(b.path, "github.com/prometheus/node_exporter");
        assert_eq!(b.module, "");
        assert_eq!(b.default_madvdontneed, None);
    }

    #[test]
    fn module_and_default_godebug() {
        let mut d = b"\xff Go buildinf:\x08\x02".to_vec();
        d.resize(32, 0);
        let modinfo = sentinel_wrap(
            "path\texample.com/platform/cmd/api\nmod\texample.com/platform\tv1.4.0\th1:abc=\n\
dep\tgolang.org/x/sys\tv0.1.0\th1:def=\nbuild\tDefaultGODEBUG=madvdontneed=1,panicnil=1\nbuild\tGOOS=linux\n",
        );
        uvarint(9, &mut d);
        d.extend_from_slice(b"go1.21.13");
        uvarint(modinfo.len(), &mut d);
        d.extend_from_slice(&modinfo);
        let f = elf(&[(".go.buildinfo", d)]);
        let b = read(&mut f.as_slice()).unwrap();
        assert_eq!(
            b,
            GoBuild {
                version: "go1.21.13".into(),
                path: "example.com/platform/cmd/api".into(),
                module: "example.com/platform".into(),
                default_madvdontneed: Some(MadvDontNeed::On),
            }
        );
    }

    /// The Go 1.13–1.17 layout: pointers to string headers, resolved through the program headers.
    #[test]
    fn pointer_layout_of_go_1_13_to_1_17() {
        // The section sits right after the ELF and program headers: file offset 120, vaddr BASE + 120.
        let base = 0x40_0000u64 + 120;
        let modinfo = sentinel_wrap("path\texample.com/legacy\nmod\texample.com/legacy\t(devel)\t\n");
        let mut d = b"\xff Go buildinf:\x08\x00".to_vec();
        // Pointers to the two string headers at +32 and +48; headers point at the data from +64.
        d.extend_from_slice(&(base + 32).to_le_bytes());
        d.extend_from_slice(&(base + 48).to_le_bytes());
        d.extend_from_slice(&(base + 64).to_le_bytes());
        d.extend_from_slice(&8u64.to_le_bytes());
        d.extend_from_slice(&(base + 72).to_le_bytes());
        d.extend_from_slice(&(modinfo.len() as u64).to_le_bytes());
        assert_eq!(d.len(), 64);
        d.extend_from_slice(b"go1.15.6");
        d.extend_from_slice(&modinfo);
        let f = elf(&[(".go.buildinfo", d)]);
        let b = read(&mut f.as_slice()).unwrap();
        assert_eq!((b.version.as_str(), b.module.as_str()), ("go1.15.6", "example.com/legacy"));
    }

    #[test]
    fn go_before_1_13_non_go_and_garbage() {
        let old = elf(&[(".text", vec![0; 8]), (".gopclntab", vec![0; 8])]);
        assert_eq!(read(&mut old.as_slice()), Ok(GoBuild::default()));
        let c = elf(&[(".text", vec![0; 8]), (".data", vec![1; 8])]);
        assert_eq!(read(&mut c.as_slice()), Err(Error::NotGo));
        assert_eq!(read(&mut &b"#!/bin/sh\necho hi\n"[..]), Err(Error::NotElf));
        let mut bad = elf(&[(".go.buildinfo", b"\xff Go buildinf:\x08\x02".to_vec())]);
        assert!(matches!(read(&mut bad.as_slice()), Err(Error::Malformed(_))));
        // Truncated anywhere: an error, never a panic.
        let good = elf(&[(".go.buildinfo", node_exporter_1_5_buildinfo())]);
        for cut in 0..good.len() {
            let _ = read(&mut &good[..cut]);
        }
        bad.truncate(100);
        assert!(read(&mut bad.as_slice()).is_err());
    }

    /// This test binary is a real ELF executable built by rustc: not Go.
    #[test]
    fn a_real_rust_executable_is_not_go() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(read(&mut me.as_slice()), Err(Error::NotGo));
    }

    #[test]
    fn godebug_settings() {
        assert_eq!(godebug_madvdontneed(b"madvdontneed=1"), Some(MadvDontNeed::On));
        assert_eq!(godebug_madvdontneed(b"gctrace=1,madvdontneed=0"), Some(MadvDontNeed::Off));
        assert_eq!(godebug_madvdontneed(b"madvdontneed=0,madvdontneed=1"), Some(MadvDontNeed::On), "last wins");
        assert_eq!(godebug_madvdontneed(b"madvdontneed=2"), Some(MadvDontNeed::On));
        assert_eq!(godebug_madvdontneed(b"madvdontneed=true"), None, "the runtime ignores non-numbers");
        assert_eq!(godebug_madvdontneed(b"xmadvdontneed=1"), None);
        assert_eq!(godebug_madvdontneed(b""), None);
        let env = b"PATH=/usr/bin\0GODEBUG=gctrace=1,madvdontneed=1\0HOME=/\0GODEBUG=madvdontneed=0\0";
        assert_eq!(environ_godebug(env), Some(&b"gctrace=1,madvdontneed=1"[..]));
        assert_eq!(environ_godebug(b"PATH=/bin\0XGODEBUG=1\0"), None);
    }
}
