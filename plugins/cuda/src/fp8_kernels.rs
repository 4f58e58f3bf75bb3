//! Launchers of the FP8 kernels for the `fp8_matmul` family: the activation quantizer of
//! kernels/cuda/fp8.cu (static or dynamic per-token scale, E4M3 codes or their bf16 values), the
//! FP8-weight GEMV (gemv.cu's gemv_f8, through gemv.rs: decode, with the plain, gated or rope
//! epilogue, and the tiled fallback for shapes cuBLASLt's FP8 GEMM does not take) and the
//! outer-product rescale after cuBLASLt. Callers check shapes and dtypes; this file owns grids
//! and arguments.

use crate::devargs::{grid_dim, suffix, to_i32, MAX_GRID_X, THREADS};
use crate::gemv::{self, Epilogue, Fp8Scales, Gemv, Problem};
use crate::runtime::{self, device_attribute, Dims, Function, KernelArgs, KernelSource};
use cudarc::driver::sys::CUdevice_attribute;
use rtllm_plugin_api::{DType, PluginError};
use std::ffi::c_void;

static SRC: KernelSource = crate::kernel_source!("fp8.cu");

/// A per-tensor ([1]) or per-row/per-channel scale vector on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub ptr: u64,
    pub per_index: bool,
}

/// One weight of a GEMV launch: codes [n, K], its scale, its output [M, n].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub w: u64,
    pub ws: Scale,
    pub y: u64,
    pub n: usize,
}

/// A bias [N] on the device: of the activation dtype, or f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bias {
    pub ptr: u64,
    pub f32: bool,
}

/// The FP8 kernels of one activation dtype (bf16 or f16), loaded in the current context.
pub struct Fp8Kernels {
    dtype: DType,
    quant: Function,
    rescale: Function,
    gemv: Gemv,
    sms: usize,
}

fn args_bias(args: KernelArgs, bias: Option<Bias>) -> KernelArgs {
    args.u64(bias.map_or(0, |b| b.ptr)).i32(bias.is_some_and(|b| b.f32) as i32)
}

impl Fp8Kernels {
    /// Loads (compiling on first use) the kernels for activations of `dtype`.
    pub fn new(op: &str, dtype: DType) -> Result<Fp8Kernels, PluginError> {
        if !matches!(dtype, DType::BF16 | DType::F16) {
            return Err(PluginError::new(format!("{op}: the CUDA FP8 kernels take bf16 or f16 x, got {dtype}")));
        }
        let s = suffix(op, dtype)?;
        let gemv = Gemv::fp8(op, dtype)?;
        let sms = device_attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        Ok(Fp8Kernels {
            dtype,
            quant: runtime::function(&SRC, &format!("fp8_quant_{s}"))?,
            rescale: runtime::function(&SRC, &format!("fp8_rescale_{s}"))?,
            gemv,
            sms: sms.max(1) as usize,
        })
    }

    /// Quantizes x [t, k] row by row into `out` (E4M3 codes, or their bf16 values when
    /// `as_bf16`), writing each row's scale to `sx` [t]: `input_scale` (f32 [1]) when given, else
    /// the dynamic per-token scale with amax capped at `ub`.
    ///
    /// # Safety
    /// x must be a device tensor [t, k] of the kernels' dtype, `out` hold t·k codes (or bf16),
    /// `sx` t floats, `input_scale` (when given) one float; nothing aliases.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn quantize(
        &self,
        op: &str,
        stream: *mut c_void,
        x: u64,
        out: u64,
        sx: u64,
        input_scale: Option<u64>,
        (t, k): (usize, usize),
        ub: Option<f32>,
        as_bf16: bool,
    ) -> Result<(), PluginError> {
        let args = KernelArgs::new()
            .u64(x)
            .u64(out)
            .u64(sx)
            .u64(input_scale.unwrap_or(0))
            .i32(to_i32(op, "K", k)?)
            .f32(ub.unwrap_or(0.0))
            .i32(ub.is_some() as i32)
            .i32(as_bf16 as i32);
        let dims = Dims::linear(grid_dim(op, "rows", t, MAX_GRID_X)?, THREADS);
        // SAFETY: fp8_quant_<T>(x, out, sx, input_scale, k, ub, has_ub, as_bf16), one block per
        // row of the tensors the caller guarantees.
        unsafe { runtime::launch(self.quant, dims, stream, &args) }
    }

    /// y_s [m, n_s] = (xq · w_sᵀ) · sx[row] · ws_s (+ bias on a single segment) from bf16-valued
    /// quantized activations, for 1 to 4 weights sharing x in one launch (tiles of 8 rows for any
    /// m), through `epilogue` (gated: gate and up, one output at the first segment's y; rope:
    /// q, k, v).
    ///
    /// # Safety
    /// xq a device [m, k] bf16 buffer, sx [m] f32, each segment's w [n, k] E4M3, ws f32 [1] or
    /// [n], y [m, n] of the kernels' dtype (not aliasing the inputs), bias [n_0]; the epilogue's
    /// positions [m] i32.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemv(
        &self,
        op: &str,
        stream: *mut c_void,
        (xq, sx): (u64, u64),
        segs: &[Segment],
        bias: Option<Bias>,
        (m, k): (usize, usize),
        epilogue: Epilogue,
    ) -> Result<(), PluginError> {
        if segs.is_empty() || segs.len() > gemv::MAX_SEGMENTS {
            return Err(PluginError::new(format!("{op}: the FP8 GEMV takes 1 to 4 weights, got {}", segs.len())));
        }
        let mut scales = Fp8Scales { sx, ..Fp8Scales::default() };
        let mut parts = [gemv::Segment { w: 0, y: 0, n: 0 }; gemv::MAX_SEGMENTS];
        for (i, s) in segs.iter().enumerate() {
            scales.ws[i] = s.ws.ptr;
            scales.per_row[i] = s.ws.per_index;
            parts[i] = gemv::Segment { w: s.w, y: s.y, n: s.n };
        }
        let bias = bias.map(|b| gemv::Bias { ptr: b.ptr, dtype: if b.f32 { DType::F32 } else { self.dtype } });
        let p = Problem { x: xq, m, k, segs: &parts[..segs.len()], bias, epilogue, fp8: Some(scales) };
        // SAFETY: the caller's tensors as documented; gemv.rs checks the epilogue against the
        // segments.
        unsafe { self.gemv.launch(op, stream, &p) }
    }

    /// y [t, n] = d · sx · ws (+ bias), d [t, n] f32 (`d_f32`) or of y's dtype (may be y
    /// itself); absent scales are 1.
    ///
    /// # Safety
    /// Device buffers of those shapes; sx and ws of one element or one per row / column.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rescale(
        &self,
        op: &str,
        stream: *mut c_void,
        (d, d_f32): (u64, bool),
        y: u64,
        sx: Option<Scale>,
        ws: Option<Scale>,
        bias: Option<Bias>,
        (t, n): (usize, usize),
    ) -> Result<(), PluginError> {
        let total = t.saturating_mul(n);
        if total == 0 {
            return Ok(());
        }
        let sx = sx.unwrap_or(Scale { ptr: 0, per_index: false });
        let ws = ws.unwrap_or(Scale { ptr: 0, per_index: false });
        let args = KernelArgs::new().u64(d).i32(d_f32 as i32).u64(y).u64(sx.ptr).i32(sx.per_index as i32).u64(ws.ptr);
        let args = args_bias(args.i32(ws.per_index as i32), bias).i32(to_i32(op, "T", t)?).i32(to_i32(op, "N", n)?);
        let blocks = total.div_ceil(THREADS as usize).min(self.sms * 16);
        let dims = Dims::linear(grid_dim(op, "outputs", blocks, MAX_GRID_X)?, THREADS);
        // SAFETY: fp8_rescale_<T>(d, d_f32, y, sx, sx_per_row, ws, ws_per_row, bias, bias_f32, t, n),
        // a grid-stride loop over the t·n outputs the caller guarantees.
        unsafe { runtime::launch(self.rescale, dims, stream, &args) }
    }
}
