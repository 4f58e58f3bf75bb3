//! The tensors a launch gets, as they cross the ABI: [`InputView`] (read-only; writable only
//! for an input the op declares it updates in place) and [`OutputView`] (writable). Both carry
//! a concrete [`TensorMeta`], the data's address and the memory it lives in.
//!
//! Safety model: a view's fields are private, so the only ways to make one are the `unsafe`
//! constructors (the host, over memory it owns) and the safe ones over borrowed slices, whose
//! lifetime the view keeps. Views are not `Clone`, and every mutable element view borrows its
//! view mutably, so safe kernel code cannot hold two `&mut` to one view's memory, nor a `&mut`
//! to an input that is not declared in place (such as read-only mapped weights). The host
//! hands each output, and each in-place input, to one view only (see [`OutputView::new`]).

use crate::{context::DeviceKind, dtype::Element, error::PluginError, tensor::TensorMeta};
use abi_stable::StableAbi;
use std::marker::PhantomData;

/// What both views offer: the metadata and where the memory is.
pub trait TensorView {
    fn meta(&self) -> &TensorMeta;
    fn device(&self) -> DeviceKind;

    /// The concrete shape (a launch never gets symbolic dims; this errors if it does).
    fn shape(&self) -> Result<Vec<usize>, PluginError> {
        self.meta().concrete_shape()
    }

    /// Elements (0 if unknown).
    fn numel(&self) -> usize {
        self.meta().numel().unwrap_or(0)
    }

    /// Size of dim `i` (0 for a symbolic or missing dim, which a launch never receives).
    fn dim(&self, i: usize) -> usize {
        self.meta().dims.get(i).and_then(|d| d.known()).unwrap_or(0)
    }
}

/// A read-only input of a launch, or (for an input the op declares in `OpDecl::in_place`) an
/// input the kernel may also write.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct InputView<'a> {
    meta: TensorMeta,
    data: *mut u8,
    device: DeviceKind,
    writable: bool,
    _data: PhantomData<&'a u8>,
}

/// A writable output of a launch.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct OutputView<'a> {
    meta: TensorMeta,
    data: *mut u8,
    device: DeviceKind,
    _data: PhantomData<&'a mut u8>,
}

// SAFETY: a view is a described address; the host guarantees the memory stays valid and (for
// writable views) exclusive for the launch, whichever thread the kernel uses it on.
unsafe impl Send for InputView<'_> {}
unsafe impl Sync for InputView<'_> {}
unsafe impl Send for OutputView<'_> {}
unsafe impl Sync for OutputView<'_> {}

impl TensorView for InputView<'_> {
    fn meta(&self) -> &TensorMeta {
        &self.meta
    }
    fn device(&self) -> DeviceKind {
        self.device
    }
}

impl TensorView for OutputView<'_> {
    fn meta(&self) -> &TensorMeta {
        &self.meta
    }
    fn device(&self) -> DeviceKind {
        self.device
    }
}

/// Bytes a host view of `meta` covers, after the checks every host view makes.
fn host_bytes(meta: &TensorMeta, data: *const u8, device: DeviceKind) -> Result<usize, PluginError> {
    if device != DeviceKind::Cpu {
        return Err(PluginError::new(format!("tensor {meta} is on {device}, a host view needs CPU memory")));
    }
    if !meta.is_contiguous() {
        return Err(PluginError::new(format!("tensor {meta} is not contiguous")));
    }
    let n = meta
        .byte_size()
        .ok_or_else(|| PluginError::new(format!("tensor {meta} has an unknown, partial-block or overflowing size")))?;
    if data.is_null() && n > 0 {
        return Err(PluginError::new(format!("tensor {meta} has a null data pointer")));
    }
    Ok(n)
}

/// Elements of `T` a host view of `meta` covers, after the dtype and alignment checks.
fn host_elems<T: Element>(meta: &TensorMeta, data: *const u8, device: DeviceKind) -> Result<usize, PluginError> {
    if meta.dtype != T::DTYPE {
        return Err(PluginError::new(format!("tensor {meta} viewed as {}", T::DTYPE)));
    }
    host_bytes(meta, data, device)?;
    if (data as usize) % std::mem::align_of::<T>() != 0 {
        return Err(PluginError::new(format!("tensor {meta} is misaligned for {}", T::DTYPE)));
    }
    meta.numel().ok_or_else(|| PluginError::new(format!("tensor {meta} has an unknown element count")))
}

/// Checks that `len` bytes of borrowed memory hold a tensor of `meta`.
fn check_borrowed(meta: &TensorMeta, len: usize) -> Result<(), PluginError> {
    let need = meta.byte_size().ok_or_else(|| PluginError::new(format!("tensor {meta} has no whole byte size")))?;
    if need > len {
        return Err(PluginError::new(format!("tensor {meta} needs {need} bytes, the buffer holds {len}")));
    }
    if !meta.is_contiguous() {
        return Err(PluginError::new(format!("tensor {meta} is not contiguous")));
    }
    Ok(())
}

/// The device address of a view: the view must be in `device` memory, of `dtype`, contiguous,
/// and non-null unless empty.
fn device_addr(
    meta: &TensorMeta,
    data: *const u8,
    on: DeviceKind,
    device: DeviceKind,
    dtype: crate::DType,
) -> Result<u64, PluginError> {
    if on != device {
        return Err(PluginError::new(format!("tensor {meta} is in {on} memory, not {device}")));
    }
    if meta.dtype != dtype {
        return Err(PluginError::new(format!("tensor {meta} is not {dtype}")));
    }
    if !meta.is_contiguous() {
        return Err(PluginError::new(format!("tensor {meta} is not contiguous")));
    }
    if data.is_null() && meta.numel().unwrap_or(0) > 0 {
        return Err(PluginError::new(format!("tensor {meta} has a null address")));
    }
    Ok(data as usize as u64)
}

impl<'a> InputView<'a> {
    /// A read-only view of `meta` at `data` in `device` memory.
    ///
    /// # Safety
    /// `data` must address at least `meta.byte_size()` bytes that stay valid and unchanged for
    /// `'a` (no one writes them while the view is used).
    pub unsafe fn new(meta: TensorMeta, data: *const u8, device: DeviceKind) -> InputView<'a> {
        InputView { meta, data: data as *mut u8, device, writable: false, _data: PhantomData }
    }

    /// A view of an input the op declares it updates in place: the kernel may write it.
    ///
    /// # Safety
    /// As [`OutputView::new`]: `data` must address at least `meta.byte_size()` writable bytes,
    /// valid for `'a`, that no other view or reference reaches while this one is used.
    pub unsafe fn new_in_place(meta: TensorMeta, data: *mut u8, device: DeviceKind) -> InputView<'a> {
        InputView { meta, data, device, writable: true, _data: PhantomData }
    }

    /// A host view of borrowed elements (tests, tools). `meta` must fit in `data`.
    pub fn from_slice<T: Element>(meta: TensorMeta, data: &'a [T]) -> Result<InputView<'a>, PluginError> {
        Self::from_bytes(meta, bytemuck::cast_slice(data))
    }

    /// A host view of borrowed bytes (quantized tensors). `meta` must fit in `data`.
    pub fn from_bytes(meta: TensorMeta, data: &'a [u8]) -> Result<InputView<'a>, PluginError> {
        check_borrowed(&meta, data.len())?;
        // SAFETY: the bytes are borrowed immutably for 'a and hold the tensor (checked).
        Ok(unsafe { InputView::new(meta, data.as_ptr(), DeviceKind::Cpu) })
    }

    /// A writable host view of borrowed elements, as the host passes an in-place input.
    pub fn from_slice_mut<T: Element>(meta: TensorMeta, data: &'a mut [T]) -> Result<InputView<'a>, PluginError> {
        Self::from_bytes_mut(meta, bytemuck::cast_slice_mut(data))
    }

    /// A writable host view of borrowed bytes, as the host passes an in-place input.
    pub fn from_bytes_mut(meta: TensorMeta, bytes: &'a mut [u8]) -> Result<InputView<'a>, PluginError> {
        check_borrowed(&meta, bytes.len())?;
        // SAFETY: the bytes are borrowed mutably (exclusively) for 'a and hold the tensor.
        Ok(unsafe { InputView::new_in_place(meta, bytes.as_mut_ptr(), DeviceKind::Cpu) })
    }

    /// Whether the host passed this input writable (the op declares it updated in place).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The elements, in host memory.
    pub fn slice<T: Element>(&self) -> Result<&[T], PluginError> {
        let n = host_elems::<T>(&self.meta, self.data, self.device)?;
        if n == 0 {
            return Ok(&[]);
        }
        // SAFETY: the constructor's contract: `data` covers the tensor for 'a; no `&mut` to it
        // can exist while `&self` is borrowed (see `slice_mut`).
        Ok(unsafe { std::slice::from_raw_parts(self.data as *const T, n) })
    }

    /// The raw bytes, in host memory (for quantized tensors).
    pub fn bytes(&self) -> Result<&[u8], PluginError> {
        let n = host_bytes(&self.meta, self.data, self.device)?;
        if n == 0 {
            return Ok(&[]);
        }
        // SAFETY: as in `slice`.
        Ok(unsafe { std::slice::from_raw_parts(self.data as *const u8, n) })
    }

    /// The elements, writable: only for an input the op declares it updates in place.
    pub fn slice_mut<T: Element>(&mut self) -> Result<&mut [T], PluginError> {
        self.check_writable()?;
        let n = host_elems::<T>(&self.meta, self.data, self.device)?;
        if n == 0 {
            return Ok(&mut []);
        }
        // SAFETY: a writable input was made by `new_in_place`, whose contract makes the memory
        // exclusive to this view; `&mut self` makes this the only live slice of it.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.data as *mut T, n) })
    }

    /// The device address, checked to be on `device` with `dtype` (for device kernels).
    pub fn device_ptr(&self, device: DeviceKind, dtype: crate::DType) -> Result<u64, PluginError> {
        device_addr(&self.meta, self.data, self.device, device, dtype)
    }

    /// The device address of an input the kernel writes: only for a declared in-place input.
    pub fn device_ptr_mut(&mut self, device: DeviceKind, dtype: crate::DType) -> Result<u64, PluginError> {
        self.check_writable()?;
        device_addr(&self.meta, self.data, self.device, device, dtype)
    }

    /// The address, unchecked (reading through it is `unsafe` and the caller's proof).
    pub fn as_ptr(&self) -> *const u8 {
        self.data
    }

    fn check_writable(&self) -> Result<(), PluginError> {
        if self.writable {
            return Ok(());
        }
        Err(PluginError::new(format!(
            "input {} is read-only: an op that writes an input declares it in place (Op::IN_PLACE)",
            self.meta
        )))
    }
}

impl<'a> OutputView<'a> {
    /// A writable view of `meta` at `data` in `device` memory.
    ///
    /// # Safety
    /// `data` must address at least `meta.byte_size()` writable bytes that stay valid for `'a`,
    /// and no other view or reference may reach them while this one is used (the host gives
    /// each output its own memory, disjoint from every input).
    pub unsafe fn new(meta: TensorMeta, data: *mut u8, device: DeviceKind) -> OutputView<'a> {
        OutputView { meta, data, device, _data: PhantomData }
    }

    /// A host view of borrowed elements (tests, tools). `meta` must fit in `data`.
    pub fn from_slice<T: Element>(meta: TensorMeta, data: &'a mut [T]) -> Result<OutputView<'a>, PluginError> {
        Self::from_bytes(meta, bytemuck::cast_slice_mut(data))
    }

    /// A host view of borrowed bytes. `meta` must fit in `data`.
    pub fn from_bytes(meta: TensorMeta, data: &'a mut [u8]) -> Result<OutputView<'a>, PluginError> {
        check_borrowed(&meta, data.len())?;
        // SAFETY: the bytes are borrowed mutably (exclusively) for 'a and hold the tensor.
        Ok(unsafe { OutputView::new(meta, data.as_mut_ptr(), DeviceKind::Cpu) })
    }

    /// The elements written so far, in host memory.
    pub fn slice<T: Element>(&self) -> Result<&[T], PluginError> {
        let n = host_elems::<T>(&self.meta, self.data, self.device)?;
        if n == 0 {
            return Ok(&[]);
        }
        // SAFETY: the constructor makes the memory this view's alone for 'a; `&self` excludes
        // a live `&mut` from `slice_mut`.
        Ok(unsafe { std::slice::from_raw_parts(self.data as *const T, n) })
    }

    /// The elements to write, in host memory.
    pub fn slice_mut<T: Element>(&mut self) -> Result<&mut [T], PluginError> {
        let n = host_elems::<T>(&self.meta, self.data, self.device)?;
        if n == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as in `slice`, and `&mut self` makes this the only live slice.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.data as *mut T, n) })
    }

    /// The raw bytes to write, in host memory (for quantized outputs).
    pub fn bytes_mut(&mut self) -> Result<&mut [u8], PluginError> {
        let n = host_bytes(&self.meta, self.data, self.device)?;
        if n == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as in `slice_mut`.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.data, n) })
    }

    /// The device address, checked to be on `device` with `dtype` (for device kernels).
    pub fn device_ptr(&mut self, device: DeviceKind, dtype: crate::DType) -> Result<u64, PluginError> {
        device_addr(&self.meta, self.data, self.device, device, dtype)
    }

    /// The address, unchecked (writing through it is `unsafe` and the caller's proof).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn views_check_dtype_and_size() {
        let data = [1.0f32, 2.0, 3.0];
        let v = InputView::from_slice(TensorMeta::of(DType::F32, &[3]), &data).unwrap();
        assert_eq!(v.slice::<f32>().unwrap(), &[1.0, 2.0, 3.0]);
        assert!(v.slice::<i32>().is_err());
        let e = InputView::from_slice(TensorMeta::of(DType::F32, &[4]), &data).unwrap_err();
        assert!(e.message().contains("needs 16 bytes"), "{e}");
    }

    #[test]
    fn inputs_are_read_only_unless_in_place() {
        let data = [1.0f32; 4];
        let mut v = InputView::from_slice(TensorMeta::of(DType::F32, &[4]), &data).unwrap();
        let e = v.slice_mut::<f32>().unwrap_err();
        assert!(e.message().contains("read-only"), "{e}");
        assert!(v.device_ptr_mut(DeviceKind::Cpu, DType::F32).is_err());
        let mut cache = [0.0f32; 4];
        let mut w = InputView::from_slice_mut(TensorMeta::of(DType::F32, &[4]), &mut cache).unwrap();
        w.slice_mut::<f32>().unwrap()[2] = 5.0;
        assert_eq!(w.slice::<f32>().unwrap()[2], 5.0);
        drop(w);
        assert_eq!(cache[2], 5.0);
    }

    #[test]
    fn outputs_write_through_and_refuse_device_views() {
        let mut y = [0i32; 2];
        let mut out = OutputView::from_slice(TensorMeta::of(DType::I32, &[2]), &mut y).unwrap();
        out.slice_mut::<i32>().unwrap().copy_from_slice(&[7, 8]);
        assert!(out.device_ptr(DeviceKind::Cuda, DType::I32).unwrap_err().message().contains("not cuda"));
        drop(out);
        assert_eq!(y, [7, 8]);
        // SAFETY: a device view is never dereferenced here.
        let dev = unsafe { InputView::new(TensorMeta::of(DType::F32, &[2]), 0x1000 as *const u8, DeviceKind::Cuda) };
        assert!(dev.slice::<f32>().unwrap_err().message().contains("needs CPU memory"));
        assert_eq!(dev.device_ptr(DeviceKind::Cuda, DType::F32).unwrap(), 0x1000);
        assert!(dev.device_ptr(DeviceKind::Cuda, DType::BF16).is_err());
    }

    #[test]
    fn overflowing_sizes_are_no_view() {
        let huge = TensorMeta::of(DType::F32, &[usize::MAX, 2]);
        let data = [0f32; 1];
        assert!(InputView::from_slice(huge.clone(), &data).is_err());
        // SAFETY: never dereferenced: the size check refuses it first.
        let v = unsafe { InputView::new(huge, data.as_ptr() as *const u8, DeviceKind::Cpu) };
        assert!(v.slice::<f32>().is_err(), "an overflowing tensor is no view");
    }
}
