//! cuBLASLt FP8 E4M3 GEMM plans for `fp8_matmul`: D[T, N] (bf16 or f16) = xq[T, K] · W[N, K]ᵀ
//! with both operands E4M3, f32 accumulation, and optionally cuBLASLt's per-tensor A/B scale
//! pointers (w_scale, input_scale) applied in the epilogue. The layout is blaslt.rs's
//! `linear_layout`, which is the TN form FP8 requires (op(A) = T on the weight, op(B) = N on the
//! activations). cuBLASLt also needs K and N multiples of 16 and 16-byte aligned operands:
//! [`fits`] says when, and fp8_matmul.rs takes its GEMV kernel otherwise.

use crate::blaslt::{
    check, layout, linear_layout, lt_matmul, set_desc, set_pref, Desc, Layout, LtOperands, Pref, WORKSPACE_BYTES,
};
use cudarc::cublaslt::sys as lt;
use rtllm_plugin_api::{DType, PluginError};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether cuBLASLt's FP8 GEMM takes this problem: K and N multiples of 16 (so every leading
/// dimension is a multiple of 16 bytes) and the weight, activation and output pointers 16-byte
/// aligned.
pub fn fits(k: usize, n: usize, ptrs: &[u64]) -> bool {
    k % 16 == 0 && n % 16 == 0 && k > 0 && ptrs.iter().all(|p| p % 16 == 0)
}

/// Everything that selects an FP8 plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fp8PlanKey {
    pub context: usize,
    pub t: usize,
    pub k: usize,
    pub n: usize,
    /// D's dtype (bf16 or f16).
    pub out: DType,
    /// Whether the per-tensor A/B scale pointers are set (else D is the unscaled sum).
    pub scaled: bool,
}

/// Descriptors and the algorithm of one FP8 GEMM shape.
pub struct Fp8Plan {
    desc: Desc,
    a: Layout,
    b: Layout,
    d: Layout,
    algo: lt::cublasLtMatmulAlgo_t,
    workspace: usize,
    scaled: bool,
}

// SAFETY: the descriptors are only used under the plan's mutex.
unsafe impl Send for Fp8Plan {}

fn out_type(d: DType) -> Result<lt::cudaDataType, PluginError> {
    match d {
        DType::BF16 => Ok(lt::cudaDataType::CUDA_R_16BF),
        DType::F16 => Ok(lt::cudaDataType::CUDA_R_16F),
        DType::F32 => Ok(lt::cudaDataType::CUDA_R_32F),
        other => Err(PluginError::new(format!("fp8_matmul: cuBLASLt FP8 writes bf16, f16 or f32, got {other}"))),
    }
}

fn build(h: lt::cublasLtHandle_t, key: &Fp8PlanKey) -> Result<Option<Fp8Plan>, PluginError> {
    use lt::cublasLtMatmulDescAttributes_t as D;
    use lt::cublasLtMatmulPreferenceAttributes_t as P;
    let mut raw = std::ptr::null_mut();
    // SAFETY: writes one descriptor.
    check("FP8 matmul descriptor", unsafe {
        lt::cublasLtMatmulDescCreate(
            &mut raw,
            lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            lt::cudaDataType::CUDA_R_32F,
        )
    })?;
    let desc = Desc(raw);
    let lay = linear_layout(key.t, key.k, key.n);
    set_desc(&desc, D::CUBLASLT_MATMUL_DESC_TRANSA, &(lay.trans_a as i32))?;
    set_desc(&desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &(lay.trans_b as i32))?;
    if key.scaled {
        // Placeholders: the pointers of each launch are set in `run` (the plan is shared).
        let null: u64 = 0;
        set_desc(&desc, D::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &null)?;
        set_desc(&desc, D::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &null)?;
    }
    let f8 = lt::cudaDataType::CUDA_R_8F_E4M3;
    let (a, b, d) = (layout(f8, lay.a)?, layout(f8, lay.b)?, layout(out_type(key.out)?, lay.d)?);
    let mut raw = std::ptr::null_mut();
    // SAFETY: writes one descriptor.
    check("preference", unsafe { lt::cublasLtMatmulPreferenceCreate(&mut raw) })?;
    let pref = Pref(raw);
    set_pref(&pref, P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &(WORKSPACE_BYTES as u64))?;
    for attr in [
        P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
        P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
        P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
    ] {
        set_pref(&pref, attr, &16u32)?;
    }
    // SAFETY: zeroed plain data, filled by the call below.
    let mut result: lt::cublasLtMatmulHeuristicResult_t = unsafe { std::mem::zeroed() };
    let mut count = 0i32;
    // SAFETY: live descriptors; room for one result.
    let status = unsafe {
        lt::cublasLtMatmulAlgoGetHeuristic(h, desc.0, a.0, b.0, d.0, d.0, pref.0, 1, &mut result, &mut count)
    };
    if status != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS
        || count == 0
        || result.state != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS
    {
        return Ok(None);
    }
    Ok(Some(Fp8Plan { desc, a, b, d, algo: result.algo, workspace: result.workspaceSize, scaled: key.scaled }))
}

/// The plan for `key`, built on first use and cached for the process; `None` (also cached)
/// when cuBLASLt has no FP8 algorithm for it, and the caller takes its fallback.
pub fn plan(key: Fp8PlanKey) -> Result<Option<Arc<Mutex<Fp8Plan>>>, PluginError> {
    type Plans = HashMap<Fp8PlanKey, Option<Arc<Mutex<Fp8Plan>>>>;
    static PLANS: OnceLock<Mutex<Plans>> = OnceLock::new();
    let mut plans =
        PLANS.get_or_init(Default::default).lock().map_err(|_| PluginError::new("fp8_matmul plans poisoned"))?;
    if let Some(p) = plans.get(&key) {
        return Ok(p.clone());
    }
    let built = build(crate::blaslt::handle()?, &key)?.map(|p| Arc::new(Mutex::new(p)));
    plans.insert(key, built.clone());
    Ok(built)
}

/// Device pointers and the stream of one FP8 GEMM.
pub struct Fp8Operands {
    /// W [N, K] codes.
    pub w: u64,
    /// xq [T, K] codes.
    pub xq: u64,
    /// D [T, N].
    pub d: u64,
    /// f32 [1] scales of W and xq (only for a scaled plan).
    pub w_scale: u64,
    pub x_scale: u64,
    pub workspace: u64,
    pub workspace_bytes: usize,
    pub stream: *mut c_void,
}

impl Fp8Plan {
    /// Enqueues D = (xq · Wᵀ) (· w_scale · x_scale when scaled). Never synchronizes.
    ///
    /// # Safety
    /// The pointers must be device buffers of the plan's shapes (and the scales f32 [1]), the
    /// workspace a device buffer of `workspace_bytes` nothing else uses until the GEMM is done.
    pub unsafe fn run(&self, h: lt::cublasLtHandle_t, ops: &Fp8Operands) -> Result<(), PluginError> {
        use lt::cublasLtMatmulDescAttributes_t as D;
        if self.workspace > ops.workspace_bytes || (self.workspace > 0 && ops.workspace == 0) {
            return Err(PluginError::new(format!(
                "fp8_matmul: cuBLASLt needs {} bytes of workspace, the launch has {}",
                self.workspace, ops.workspace_bytes
            )));
        }
        if self.scaled {
            set_desc(&self.desc, D::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ops.w_scale)?;
            set_desc(&self.desc, D::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &ops.x_scale)?;
        }
        let operands = LtOperands { a: ops.w, b: ops.xq, d: ops.d, workspace: ops.workspace };
        let bytes = ops.workspace_bytes.min(WORKSPACE_BYTES);
        // SAFETY: the caller's buffers, of this plan's layouts.
        unsafe {
            lt_matmul("FP8 matmul", h, (&self.desc, &self.a, &self.b, &self.d), &self.algo, operands, bytes, ops.stream)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_cublaslt_fp8_takes() {
        assert!(fits(4096, 14336, &[0x1000, 0x2010]));
        assert!(!fits(4100, 4096, &[0x1000]), "K not a multiple of 16");
        assert!(!fits(4096, 4104, &[0x1000]), "N not a multiple of 16");
        assert!(!fits(4096, 4096, &[0x1000, 0x1008]), "misaligned pointer");
        assert!(!fits(0, 16, &[]));
        assert!(out_type(DType::F32).is_ok(), "the unscaled sum");
        assert!(out_type(DType::I8).is_err());
    }
}
