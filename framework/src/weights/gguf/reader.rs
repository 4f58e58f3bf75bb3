//! A bounds-checked little-endian cursor over a byte slice: every read checks the remaining
//! length first and reports what it was reading and at which offset.

use super::GgufError;

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n as u64,
                available: self.remaining() as u64,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes (invalid sequences are replaced).
    pub(crate) fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos as u64;
        let len = self.u64(what)?;
        let len = usize::try_from(len).ok().filter(|&l| l <= self.remaining()).ok_or_else(|| GgufError::Truncated {
            what: format!("{what} (string of {len} bytes)"),
            offset: at,
            needed: len,
            available: self.remaining() as u64,
        })?;
        Ok(String::from_utf8_lossy(self.take(len, what)?).into_owned())
    }

    /// A count of items that each take at least `min_item_bytes`: rejects counts that cannot
    /// fit in the rest of the input, so a bogus count never drives a huge allocation.
    pub(crate) fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize, GgufError> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        let fits = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > fits {
            return Err(GgufError::BadCount { what: what.to_string(), offset: at, count: n, max: fits });
        }
        Ok(n as usize)
    }
}
