//! Checksums of files and bytes (the engine cache's keys and manifests): a 128-bit
//! multiply-rotate hash over 1 MiB chunks hashed in parallel and combined in order; files are
//! streamed through a bounded buffer rather than read whole or mapped.

use rayon::prelude::*;
use std::io::Read;
use std::path::Path;

/// A 128-bit checksum (hex) of `bytes`: a word-wise multiply-rotate hash over 1 MiB chunks in
/// parallel, combined in order. Detects corruption; not cryptographic.
pub fn checksum(bytes: &[u8]) -> String {
    let mut state = Checksum::new(bytes.len() as u64);
    state.update(bytes);
    state.finish()
}

/// Bytes hashed per parallel part.
const CHUNK: usize = 1 << 20;
/// Bytes read per block by [`checksum_file`] (a whole number of chunks).
const BLOCK: usize = 16 * CHUNK;

/// [`checksum`] fed in pieces, each a whole number of [`CHUNK`]s but the last.
struct Checksum {
    a: u64,
    b: u64,
}

impl Checksum {
    fn new(len: u64) -> Checksum {
        Checksum { a: 0x243F_6A88_85A3_08D3u64 ^ len, b: 0x1319_8A2E_0370_7344u64 }
    }

    fn update(&mut self, bytes: &[u8]) {
        let parts: Vec<(u64, u64)> = bytes.par_chunks(CHUNK).map(hash_chunk).collect();
        for (x, y) in parts {
            self.a = mix(self.a ^ x);
            self.b = mix(self.b ^ y).rotate_left(17);
        }
    }

    fn finish(&self) -> String {
        format!("{:016x}{:016x}", self.a, self.b)
    }
}

/// The [`checksum`] of a regular file and its size, streamed through a bounded buffer with
/// `read` (never mapped: a file truncated meanwhile is an error, not SIGBUS); a file whose
/// size changes while it is read is an error.
pub fn checksum_file(path: &Path) -> std::io::Result<(u64, String)> {
    let (mut file, size) = crate::input_file::open_regular(path)?;
    let mut state = Checksum::new(size);
    let mut buf = vec![0u8; BLOCK];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(BLOCK, |l| l.min(BLOCK));
        file.read_exact(&mut buf[..n])
            .map_err(|e| std::io::Error::new(e.kind(), format!("the file changed size while it was read ({e})")))?;
        state.update(&buf[..n]);
        left -= n as u64;
    }
    if file.read(&mut [0u8; 1])? != 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the file grew while it was read"));
    }
    Ok((size, state.finish()))
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Little-endian word `i` of a 32-byte group.
fn word(group: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&group[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

fn hash_chunk(chunk: &[u8]) -> (u64, u64) {
    const K: [u64; 4] = [0x9E37_79B9_7F4A_7C15, 0xC2B2_AE3D_27D4_EB4F, 0x1656_67B1_9E37_79F9, 0x27D4_EB2F_1656_67C5];
    let mut h = [1u64, 2, 3, 4];
    let mut groups = chunk.chunks_exact(32);
    for g in &mut groups {
        for i in 0..4 {
            h[i] = (h[i] ^ word(g, i)).wrapping_mul(K[i]).rotate_left(31);
        }
    }
    let mut tail = [0u8; 32];
    let rest = groups.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    for i in 0..4 {
        h[i] = mix(h[i] ^ word(&tail, i) ^ rest.len() as u64);
    }
    (mix(h[0] ^ h[1].rotate_left(23)), mix(h[2] ^ h[3].rotate_left(41)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_sees_every_byte() {
        let mut data: Vec<u8> = (0..3_000_001u32).map(|i| (i * 7 % 251) as u8).collect();
        let a = checksum(&data);
        assert_eq!(a, checksum(&data));
        data[2_500_000] ^= 1;
        assert_ne!(a, checksum(&data));
        data[2_500_000] ^= 1;
        data.pop();
        assert_ne!(a, checksum(&data));
    }

    #[test]
    fn file_checksums_match_in_memory_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        for len in [0usize, 1, 31, CHUNK, BLOCK + 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 253) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            assert_eq!(checksum_file(&path).unwrap(), (len as u64, checksum(&data)), "{len} bytes");
        }
    }
}
