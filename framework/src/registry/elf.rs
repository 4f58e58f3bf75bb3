//! A structural check of a plugin's ELF file before `dlopen` sees it. The dynamic loader maps
//! the segments the program headers name and touches them: a file cut short (a copy or
//! download that did not finish) makes that touch raise SIGBUS inside `dlopen`, which no error
//! handling can catch. So the headers are read first and every byte range they name (the
//! program header table and each segment's file bytes, the section header table and each
//! section's bytes) must lie inside the file; one that does not is reported as a truncated file.
//!
//! Out of reach here: a file truncated between this check and `dlopen`, or after it is loaded
//! (its code pages are mapped from the file, as for every shared library); and a file whose
//! headers are consistent but whose contents are corrupt (relocations, initializers) — the
//! dynamic loader trusts those, and a plugin's initializers run in-process by design.

/// Checks `bytes` (the whole file) as an ELF file whose header tables and their ranges fit.
pub(crate) fn check_elf(bytes: &[u8]) -> Result<(), String> {
    let size = bytes.len() as u64;
    if bytes.len() < 16 || &bytes[..4] != b"\x7fELF" {
        return Err(format!("not an ELF file ({size} bytes, no ELF magic)"));
    }
    let r = Reader { bytes, big_endian: bytes[5] == 2 };
    let wide = match bytes[4] {
        1 => false,
        2 => true,
        c => return Err(format!("unknown ELF class {c}")),
    };
    // (e_phoff, e_shoff, e_phentsize, e_phnum, e_shentsize, e_shnum) at their offsets.
    let header_len: u64 = if wide { 64 } else { 52 };
    if size < header_len {
        return Err(truncated("the ELF header", header_len, size));
    }
    let (phoff, shoff, at) = if wide { (r.u64(0x20), r.u64(0x28), 0x36) } else { (r.u32(0x1C), r.u32(0x20), 0x2A) };
    let (phentsize, phnum, shentsize, shnum) = (r.u16(at), r.u16(at + 2), r.u16(at + 4), r.u16(at + 6));

    let table = |what: &str, off: u64, entsize: u64, num: u64| -> Result<(), String> {
        let end = entsize.checked_mul(num).and_then(|n| n.checked_add(off)).ok_or(format!("{what} overflows"))?;
        if end > size {
            return Err(truncated(what, end, size));
        }
        Ok(())
    };
    let (ph_len, sh_len) = if wide { (56, 64) } else { (32, 40) };
    if phnum > 0 && phentsize < ph_len || shnum > 0 && shentsize < sh_len {
        return Err(format!("ELF header table entries are too small ({phentsize}, {shentsize} bytes)"));
    }
    table("the program header table", phoff, phentsize, phnum)?;
    table("the section header table", shoff, shentsize, shnum)?;
    for i in 0..phnum {
        let h = (phoff + i * phentsize) as usize;
        let (offset, filesz) = if wide { (r.u64(h + 8), r.u64(h + 32)) } else { (r.u32(h + 4), r.u32(h + 16)) };
        table(&format!("segment {i} (program header)"), offset, filesz, 1)?;
    }
    const SHT_NOBITS: u32 = 8;
    for i in 0..shnum {
        let h = (shoff + i * shentsize) as usize;
        if r.u32(h + 4) == u64::from(SHT_NOBITS) {
            continue;
        }
        let (offset, len) = if wide { (r.u64(h + 24), r.u64(h + 32)) } else { (r.u32(h + 16), r.u32(h + 20)) };
        table(&format!("section {i}"), offset, len, 1)?;
    }
    Ok(())
}

fn truncated(what: &str, end: u64, size: u64) -> String {
    format!("truncated ELF file: {what} ends at byte {end}, the file has {size} bytes")
}

/// Fixed-width reads at offsets the caller has checked to lie in the file.
struct Reader<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Reader<'_> {
    fn read<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut b = [0u8; N];
        if let Some(src) = self.bytes.get(at..at + N) {
            b.copy_from_slice(src);
        }
        if self.big_endian {
            b.reverse();
        }
        b
    }
    fn u16(&self, at: usize) -> u64 {
        u16::from_le_bytes(self.read(at)).into()
    }
    fn u32(&self, at: usize) -> u64 {
        u32::from_le_bytes(self.read(at)).into()
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.read(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running test binary: a real ELF file.
    fn real_elf() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn a_whole_file_passes_and_every_truncation_fails() {
        let bytes = real_elf();
        check_elf(&bytes).expect("the test binary is a consistent ELF file");
        for len in [0, 3, 20, 63, 64, 200, 4096, bytes.len() / 100, bytes.len() / 2, bytes.len() - 1] {
            let e = check_elf(&bytes[..len]).expect_err("a truncated file fails");
            assert!(e.contains("truncated ELF file") || e.contains("not an ELF file"), "{len}: {e}");
        }
    }

    #[test]
    fn headers_pointing_outside_the_file_fail() {
        let mut bytes = real_elf();
        // e_phoff (ELF64) far past the end.
        bytes[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = check_elf(&bytes).unwrap_err();
        assert!(e.contains("program header table overflows"), "{e}");
        assert!(check_elf(b"#!/bin/sh\necho not a library\n").unwrap_err().contains("not an ELF file"));
    }
}
