//! cuBLASLt plumbing for the CUDA `matmul`: loading libcublasLt at run time, one handle per
//! CUDA context (created lazily, kept for the process), RAII descriptors, the row-major →
//! column-major layout of y = x·Wᵀ, and matmul plans (descriptors + the heuristic's algorithm)
//! cached per (context, M, N, K, dtype, bias mode, pointer alignments).

use crate::runtime::{self, err};
use cudarc::cublaslt::sys as lt;
use rtllm_plugin_api::{DType, PluginError};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// Workspace the matmul asks the host for (cuBLASLt's recommendation for Hopper).
pub const WORKSPACE_BYTES: usize = 32 << 20;

pub(crate) fn check(what: &str, status: lt::cublasStatus_t) -> Result<(), PluginError> {
    status.result().map_err(|e| err(format_args!("cuBLASLt {what}"), e))
}

/// Whether libcublasLt can be loaded in this process.
pub fn present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the library.
    *PRESENT.get_or_init(|| unsafe { lt::is_culib_present() })
}

fn require() -> Result<(), PluginError> {
    if present() {
        Ok(())
    } else {
        Err(PluginError::new(
            "cuBLASLt is not available: libcublasLt could not be loaded (add its directory to LD_LIBRARY_PATH)",
        ))
    }
}

#[derive(Clone, Copy)]
struct Handle(lt::cublasLtHandle_t);
// SAFETY: a cuBLASLt handle may be used from any thread; cuBLASLt calls on it are thread-safe.
unsafe impl Send for Handle {}

/// The cuBLASLt handle of the current CUDA context (created on first use).
pub fn handle() -> Result<lt::cublasLtHandle_t, PluginError> {
    let ctx = runtime::current_context()? as usize;
    require()?;
    static HANDLES: OnceLock<Mutex<HashMap<usize, Handle>>> = OnceLock::new();
    let mut map =
        HANDLES.get_or_init(Default::default).lock().map_err(|_| PluginError::new("cuBLASLt handles poisoned"))?;
    if let Some(h) = map.get(&ctx) {
        return Ok(h.0);
    }
    let mut h = std::ptr::null_mut();
    // SAFETY: writes one handle; the library is loaded (checked above).
    check("create handle", unsafe { lt::cublasLtCreate(&mut h) })?;
    map.insert(ctx, Handle(h));
    Ok(h)
}

/// The cuBLASLt data type of a float dtype.
pub fn data_type(dtype: DType) -> Result<lt::cudaDataType, PluginError> {
    match dtype {
        DType::F32 => Ok(lt::cudaDataType::CUDA_R_32F),
        DType::BF16 => Ok(lt::cudaDataType::CUDA_R_16BF),
        DType::F16 => Ok(lt::cudaDataType::CUDA_R_16F),
        other => Err(PluginError::new(format!("matmul: cuBLASLt path takes f32, bf16 or f16, got {other}"))),
    }
}

/// One column-major matrix: rows, cols, leading dimension (elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ColMajor {
    pub rows: u64,
    pub cols: u64,
    pub ld: i64,
}

/// y = x·Wᵀ in cuBLASLt terms, D = op(A)·op(B) with every matrix column-major.
///
/// A row-major [R, C] buffer is the column-major [C, R] matrix (its transpose) with ld = C. So:
/// - x [T, K] row-major  = Xᵀ, column-major [K, T], ld K  → B, op(B) = N: op(B) = Xᵀ [K, T]
/// - W [N, K] row-major  = Wᵀ, column-major [K, N], ld K  → A, op(A) = T: op(A) = W  [N, K]
/// - y [T, N] row-major  = Yᵀ, column-major [N, T], ld N  → D (and C, with beta = 0)
///
/// and D = op(A)·op(B) = W·Xᵀ = (x·Wᵀ)ᵀ = Yᵀ, which is y in row-major. cuBLASLt's m, n, k are
/// N, T, K; the bias epilogue adds a vector of D's rows (length m = N) to every column (token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearLayout {
    pub a: ColMajor,
    pub b: ColMajor,
    pub d: ColMajor,
    pub trans_a: bool,
    pub trans_b: bool,
}

pub fn linear_layout(t: usize, k: usize, n: usize) -> LinearLayout {
    let (t, k, n) = (t as u64, k as u64, n as u64);
    LinearLayout {
        a: ColMajor { rows: k, cols: n, ld: k as i64 },
        b: ColMajor { rows: k, cols: t, ld: k as i64 },
        d: ColMajor { rows: n, cols: t, ld: n as i64 },
        trans_a: true,
        trans_b: false,
    }
}

/// The largest power of two (at most 256) dividing a device address: cuBLASLt's heuristics
/// must be told when operands are less aligned than its default 256 bytes.
pub fn alignment(ptr: u64) -> u32 {
    if ptr == 0 {
        256
    } else {
        1u32 << ptr.trailing_zeros().min(8)
    }
}

pub(crate) struct Desc(pub(crate) lt::cublasLtMatmulDesc_t);
impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulDescCreate, destroyed once.
        unsafe { lt::cublasLtMatmulDescDestroy(self.0) };
    }
}

pub(crate) struct Layout(pub(crate) lt::cublasLtMatrixLayout_t);
impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatrixLayoutCreate, destroyed once.
        unsafe { lt::cublasLtMatrixLayoutDestroy(self.0) };
    }
}

pub(crate) struct Pref(pub(crate) lt::cublasLtMatmulPreference_t);
impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulPreferenceCreate, destroyed once.
        unsafe { lt::cublasLtMatmulPreferenceDestroy(self.0) };
    }
}

pub(crate) fn layout(dtype: lt::cudaDataType, m: ColMajor) -> Result<Layout, PluginError> {
    let mut l = std::ptr::null_mut();
    // SAFETY: writes one descriptor.
    check("matrix layout", unsafe { lt::cublasLtMatrixLayoutCreate(&mut l, dtype, m.rows, m.cols, m.ld) })?;
    Ok(Layout(l))
}

pub(crate) fn set_desc<T>(d: &Desc, attr: lt::cublasLtMatmulDescAttributes_t, v: &T) -> Result<(), PluginError> {
    // SAFETY: `v` is a plain value of the size the attribute expects.
    let s = unsafe { lt::cublasLtMatmulDescSetAttribute(d.0, attr, v as *const T as *const c_void, size_of::<T>()) };
    check("set matmul attribute", s)
}

pub(crate) fn set_pref<T>(p: &Pref, attr: lt::cublasLtMatmulPreferenceAttributes_t, v: &T) -> Result<(), PluginError> {
    // SAFETY: as in `set_desc`.
    let s =
        unsafe { lt::cublasLtMatmulPreferenceSetAttribute(p.0, attr, v as *const T as *const c_void, size_of::<T>()) };
    check("set preference", s)
}

/// Everything that selects a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlanKey {
    pub context: usize,
    pub t: usize,
    pub k: usize,
    pub n: usize,
    pub dtype: DType,
    /// The bias dtype when the bias is to be fused into the epilogue.
    pub fused_bias: Option<DType>,
    /// Alignments of W, x, y and the bias.
    pub align: [u32; 4],
}

/// Descriptors and the algorithm of one matmul shape.
pub struct Plan {
    desc: Desc,
    a: Layout,
    b: Layout,
    d: Layout,
    algo: lt::cublasLtMatmulAlgo_t,
    /// Workspace the algorithm needs.
    pub workspace: usize,
    /// Whether the bias is added by the epilogue (else the caller adds it).
    pub fused_bias: bool,
}

// SAFETY: the descriptors are only used under the plan's mutex.
unsafe impl Send for Plan {}

fn build(h: lt::cublasLtHandle_t, key: &PlanKey, fuse: bool) -> Result<Option<Plan>, PluginError> {
    use lt::cublasLtMatmulDescAttributes_t as D;
    use lt::cublasLtMatmulPreferenceAttributes_t as P;
    let ty = data_type(key.dtype)?;
    let mut raw = std::ptr::null_mut();
    // SAFETY: writes one descriptor.
    check("matmul descriptor", unsafe {
        lt::cublasLtMatmulDescCreate(
            &mut raw,
            lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            lt::cudaDataType::CUDA_R_32F,
        )
    })?;
    let desc = Desc(raw);
    let lay = linear_layout(key.t, key.k, key.n);
    // cublasOperation_t: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 (an int).
    set_desc(&desc, D::CUBLASLT_MATMUL_DESC_TRANSA, &(lay.trans_a as i32))?;
    set_desc(&desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &(lay.trans_b as i32))?;
    if let (true, Some(bias)) = (fuse, key.fused_bias) {
        set_desc(&desc, D::CUBLASLT_MATMUL_DESC_EPILOGUE, &(lt::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS as u32))?;
        set_desc(&desc, D::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &(data_type(bias)? as i32))?;
    }
    let (a, b, d) = (layout(ty, lay.a)?, layout(ty, lay.b)?, layout(ty, lay.d)?);
    let mut raw = std::ptr::null_mut();
    // SAFETY: writes one descriptor.
    check("preference", unsafe { lt::cublasLtMatmulPreferenceCreate(&mut raw) })?;
    let pref = Pref(raw);
    set_pref(&pref, P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &(WORKSPACE_BYTES as u64))?;
    set_pref(&pref, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align[0])?;
    set_pref(&pref, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align[1])?;
    set_pref(&pref, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align[2])?;
    set_pref(&pref, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align[2])?;
    // SAFETY: zeroed plain data, filled by the call below.
    let mut result: lt::cublasLtMatmulHeuristicResult_t = unsafe { std::mem::zeroed() };
    let mut count = 0i32;
    // SAFETY: live descriptors; room for one result.
    let status = unsafe {
        lt::cublasLtMatmulAlgoGetHeuristic(h, desc.0, a.0, b.0, d.0, d.0, pref.0, 1, &mut result, &mut count)
    };
    let ok = status == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS
        && count > 0
        && result.state == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS;
    if !ok {
        if fuse && key.fused_bias.is_some() {
            return Ok(None);
        }
        return Err(PluginError::new(format!(
            "matmul: cuBLASLt has no algorithm for {} x[{}, {}]·w[{}, {}]ᵀ ({status:?}, {count} results)",
            key.dtype, key.t, key.k, key.n, key.k
        )));
    }
    Ok(Some(Plan {
        desc,
        a,
        b,
        d,
        algo: result.algo,
        workspace: result.workspaceSize,
        fused_bias: fuse && key.fused_bias.is_some(),
    }))
}

/// The plan for `key` (built with the heuristic on first use, then cached for the process).
/// A bias that cuBLASLt cannot fuse for this shape gives a plan with `fused_bias == false`.
pub fn plan(key: PlanKey) -> Result<Arc<Mutex<Plan>>, PluginError> {
    static PLANS: OnceLock<Mutex<HashMap<PlanKey, Arc<Mutex<Plan>>>>> = OnceLock::new();
    let mut plans =
        PLANS.get_or_init(Default::default).lock().map_err(|_| PluginError::new("matmul plans poisoned"))?;
    if let Some(p) = plans.get(&key) {
        return Ok(p.clone());
    }
    let h = handle()?;
    // A fused bias that cuBLASLt refuses (an attribute error or no algorithm) falls back to a
    // plan without the epilogue; the caller then adds the bias itself.
    let built = match (build(h, &key, true), key.fused_bias.is_some()) {
        (Ok(Some(p)), _) => p,
        (Err(e), false) => return Err(e),
        _ => build(h, &key, false)?.ok_or_else(|| PluginError::new("matmul: cuBLASLt found no algorithm"))?,
    };
    let p = Arc::new(Mutex::new(built));
    plans.insert(key, p.clone());
    Ok(p)
}

/// Device pointers and the stream of one matmul.
pub struct Operands {
    pub w: u64,
    pub x: u64,
    pub y: u64,
    pub bias: Option<u64>,
    pub workspace: *mut u8,
    pub workspace_bytes: usize,
    pub stream: *mut c_void,
}

impl Plan {
    /// Enqueues y = x·Wᵀ (+ the bias when fused) on the stream. Never synchronizes.
    ///
    /// # Safety
    /// The pointers must be device tensors of the plan's shapes and dtypes, and the workspace a
    /// device buffer of `workspace_bytes` that nothing else uses until the matmul is done.
    pub unsafe fn run(&self, h: lt::cublasLtHandle_t, ops: &Operands) -> Result<(), PluginError> {
        if self.workspace > ops.workspace_bytes || (self.workspace > 0 && ops.workspace.is_null()) {
            return Err(PluginError::new(format!(
                "matmul: cuBLASLt needs {} bytes of workspace, the launch has {}",
                self.workspace, ops.workspace_bytes
            )));
        }
        if let (true, Some(bias)) = (self.fused_bias, ops.bias) {
            set_desc(&self.desc, lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)?;
        }
        let operands = LtOperands { a: ops.w, b: ops.x, d: ops.y, workspace: ops.workspace as u64 };
        let bytes = ops.workspace_bytes.min(WORKSPACE_BYTES);
        lt_matmul("matmul", h, (&self.desc, &self.a, &self.b, &self.d), &self.algo, operands, bytes, ops.stream)
    }
}

/// Device addresses of one cuBLASLt call: A, B, D (also C, with beta = 0) and the workspace.
pub(crate) struct LtOperands {
    pub a: u64,
    pub b: u64,
    pub d: u64,
    pub workspace: u64,
}

/// D = alpha · op(A)·op(B) with alpha 1 and beta 0 (C is D), the descriptors of a plan.
///
/// # Safety
/// The operands must be device buffers of the layouts' shapes and types, the workspace
/// `workspace_bytes` long and unused by anything else until the call is done.
pub(crate) unsafe fn lt_matmul(
    what: &str,
    h: lt::cublasLtHandle_t,
    (desc, a, b, d): (&Desc, &Layout, &Layout, &Layout),
    algo: &lt::cublasLtMatmulAlgo_t,
    ops: LtOperands,
    workspace_bytes: usize,
    stream: *mut c_void,
) -> Result<(), PluginError> {
    let (alpha, beta) = (1.0f32, 0.0f32);
    let y = ops.d as *mut c_void;
    // SAFETY: the caller's buffers; alpha and beta live across the call (the host pointer mode).
    let s = unsafe {
        lt::cublasLtMatmul(
            h,
            desc.0,
            &alpha as *const f32 as *const c_void,
            ops.a as *const c_void,
            a.0,
            ops.b as *const c_void,
            b.0,
            &beta as *const f32 as *const c_void,
            y,
            d.0,
            y,
            d.0,
            algo,
            ops.workspace as *mut c_void,
            workspace_bytes,
            stream as lt::cudaStream_t,
        )
    };
    check(what, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_transposed_problem() {
        let l = linear_layout(33, 2048, 8192);
        // op(A) = Aᵀ is [N, K]; op(B) = B is [K, T]; D is [N, T]: shapes chain.
        let op_a = if l.trans_a { (l.a.cols, l.a.rows) } else { (l.a.rows, l.a.cols) };
        let op_b = if l.trans_b { (l.b.cols, l.b.rows) } else { (l.b.rows, l.b.cols) };
        assert_eq!(op_a, (8192, 2048));
        assert_eq!(op_b, (2048, 33));
        assert_eq!((l.d.rows, l.d.cols), (op_a.0, op_b.1));
        // Leading dims are the row-major row lengths: K for x and W, N for y.
        assert_eq!((l.a.ld, l.b.ld, l.d.ld), (2048, 2048, 8192));
        // Every column-major matrix fits its leading dimension.
        for m in [l.a, l.b, l.d] {
            assert!(m.ld as u64 >= m.rows);
        }
    }

    #[test]
    fn alignments() {
        assert_eq!(alignment(0x7f00_0000_0000), 256);
        assert_eq!(alignment(0x7f00_0000_0002), 2);
        assert_eq!(alignment(0x7f00_0000_0010), 16);
        assert_eq!(alignment(0), 256);
    }

    #[test]
    fn data_types() {
        assert_eq!(data_type(DType::BF16).unwrap(), lt::cudaDataType::CUDA_R_16BF);
        assert!(data_type(DType::Q4_K).is_err());
    }
}
