//! Host buffers aligned for SIMD: the activation arena, the workspace, the KV pools and
//! converted weights all live in these.

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

const ALIGN: usize = 64;

/// A zero-initialised, 64-byte-aligned host buffer. Its memory comes from `alloc_zeroed` at the
/// allocator's natural alignment (calloc, which leaves a fresh mapping's pages untouched; a
/// 64-byte-aligned `alloc_zeroed` is malloc + memset and would touch them all), aligned up
/// inside, so a large buffer (a KV pool) takes resident pages only as they are first written.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Bytes from the allocation's start to `ptr`.
    offset: usize,
}

// SAFETY: AlignedBuf owns its allocation like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// The allocation: `len` rounded up to the alignment, plus room to align the start, at the
    /// allocator's minimum alignment (so `alloc_zeroed` is a calloc).
    fn try_layout(len: usize) -> Option<Layout> {
        // `from_size_align` checks that the size fits isize.
        len.max(1)
            .div_ceil(ALIGN)
            .checked_mul(ALIGN)
            .and_then(|n| n.checked_add(ALIGN))
            .and_then(|n| Layout::from_size_align(n, 16).ok())
    }

    fn layout(len: usize) -> Layout {
        Self::try_layout(len).unwrap_or_else(|| handle_alloc_error(Layout::new::<u8>()))
    }

    /// `len` zeroed bytes; aborts if the allocator has none (as `Vec` does).
    pub fn zeroed(len: usize) -> AlignedBuf {
        Self::try_zeroed(len).unwrap_or_else(|| handle_alloc_error(Self::layout(len)))
    }

    /// `len` zeroed bytes, or `None` if the size is impossible or the allocator has none.
    pub fn try_zeroed(len: usize) -> Option<AlignedBuf> {
        let layout = Self::try_layout(len)?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        if raw.is_null() {
            return None;
        }
        let offset = raw.align_offset(ALIGN);
        // SAFETY: offset < ALIGN, and the allocation holds ALIGN bytes past the rounded length.
        let ptr = NonNull::new(unsafe { raw.add(offset) })?;
        Some(AlignedBuf { ptr, len, offset })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the allocation holds at least `len` zero-initialised bytes.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.len) }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(bytes.len());
        b.as_bytes_mut().copy_from_slice(bytes);
        b
    }

    /// The buffer viewed as f32s (its length rounded down).
    pub fn as_f32(&self) -> &[f32] {
        // SAFETY: 64-byte alignment satisfies f32's; the bytes are initialised.
        unsafe { std::slice::from_raw_parts(self.as_ptr() as *const f32, self.len / 4) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, `offset` bytes before `ptr`.
        unsafe { dealloc(self.ptr.as_ptr().sub(self.offset), Self::layout(self.len)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_aligned_and_writable() {
        for len in [0, 1, 63, 64, 65, 1 << 20] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert!(b.as_bytes().iter().all(|&x| x == 0));
            if len > 0 {
                b.as_bytes_mut()[len - 1] = 7;
                assert_eq!(b.as_bytes()[len - 1], 7);
            }
        }
        assert_eq!(AlignedBuf::from_bytes(&[1, 2, 3]).as_bytes(), &[1, 2, 3]);
    }
}
