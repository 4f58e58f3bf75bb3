// FP8 E4M3 linear layers, the `fp8_matmul` op (docs/quantization.md):
//   y[t, n] = (Σ_k e4m3(x[t, k] / s_x[t]) · w[n, k]) · s_x[t] · w_scale[n or 0] (+ bias[n])
// Two kernels here, launched by plugins/cuda/src/fp8_kernels.rs (the FP8-weight GEMV of decode
// and of the tiled fallback is gemv.cu's gemv_f8_*):
//   fp8_quant_<T>      one block per activation row: the row's scale (the static input_scale, or
//                      the dynamic per-token max(min(amax, ub) / 448, 1 / (448·512))) written to
//                      sx[row], then every element quantized as e4m3(x / s) (a true division,
//                      round to nearest even, saturating at ±448: plugin-api's f32_to_e4m3 bit for
//                      bit). Written as E4M3 codes (for cuBLASLt) or as the codes' exact bf16
//                      values (for the GEMV, which then unpacks x with one shift per element).
//   fp8_rescale_<T>    y = d · s_x[t] · w_scale[n] (+ bias) over cuBLASLt's GEMM output d (its
//                      unscaled f32 sum, or y itself when only a bias is left): per-token and
//                      per-channel scales as an outer product, rounded once to T, as vLLM's
//                      cutlass_scaled_mm epilogue applies them.

#define E4M3_MAX 448.0f
// e4m3_to_f32 (a code's exact value) is in common.cuh.

// One row's scale: the static one, or the dynamic per-token one (block-wide amax).
template <typename T>
__device__ float row_scale(const T* xr, int k, const float* input_scale, float ub, int has_ub, float* scratch) {
  if (input_scale != nullptr) return *input_scale;
  float amax = 0.0f;
  for (int e = threadIdx.x; e < k; e += blockDim.x) amax = fmaxf(amax, fabsf(to_float(xr[e])));
  amax = block_max(amax, scratch);
  if (has_ub) amax = fminf(amax, ub);
  return fmaxf(__fdiv_rn(amax, E4M3_MAX), __fdiv_rn(1.0f, 229376.0f));  // floor 1 / (448 · 512)
}

template <typename T>
__device__ void fp8_quant(const T* x, void* out, float* sx, const float* input_scale, int k, float ub, int has_ub,
                          int as_bf16) {
  __shared__ float scratch[32];
  pdl_enter();
  const i64 row = blockIdx.x;
  const T* xr = x + row * k;
  const float s = row_scale(xr, k, input_scale, ub, has_ub, scratch);
  if (threadIdx.x == 0) sx[row] = s;
  for (int e = threadIdx.x; e < k; e += blockDim.x) {
    const u8 q = f32_to_e4m3(__fdiv_rn(to_float(xr[e]), s));
    if (as_bf16) {
      reinterpret_cast<bf16*>(out)[row * k + e] = from_float<bf16>(e4m3_to_f32(q));
    } else {
      reinterpret_cast<u8*>(out)[row * k + e] = q;
    }
  }
}

__device__ __forceinline__ float scale_at(const float* s, int per_index, int i) {
  return s == nullptr ? 1.0f : s[per_index ? i : 0];
}

// The output of row group element: the scaled sum plus the bias.
template <typename T>
__device__ __forceinline__ float finish(float raw_sum, float sx, float ws, const void* bias, int bias_f32, int col) {
  float v = __fmul_rn(__fmul_rn(raw_sum, sx), ws);
  if (bias != nullptr) {
    v += bias_f32 ? reinterpret_cast<const float*>(bias)[col] : to_float(reinterpret_cast<const T*>(bias)[col]);
  }
  return v;
}

// y[t, n] = d[t, n] · sx[t or 0] · ws[n or 0] (+ bias[n]); a null sx or ws is 1. d is f32
// (`d_f32`) or T, and may be y itself (each element is read before it is written).
template <typename T>
__device__ void fp8_rescale(const void* d, int d_f32, T* y, const float* sx, int sx_per_row, const float* ws, int ws_per_row,
                            const void* bias, int bias_f32, int t, int n) {
  pdl_enter();
  const i64 total = (i64)t * n;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
    const int r = (int)(i / n), col = (int)(i % n);
    const float di = d_f32 ? reinterpret_cast<const float*>(d)[i] : to_float(reinterpret_cast<const T*>(d)[i]);
    const float v = finish<T>(di, scale_at(sx, sx_per_row, r), scale_at(ws, ws_per_row, col), bias,
                              bias_f32, col);
    y[i] = from_float<T>(v);
  }
}

#define FP8_QUANT(S, T)                                                                                         \
  extern "C" __global__ void fp8_quant_##S(const T* x, void* out, float* sx, const float* input_scale, int k, \
                                           float ub, int has_ub, int as_bf16) {                                 \
    fp8_quant<T>(x, out, sx, input_scale, k, ub, has_ub, as_bf16);                                              \
  }                                                                                                              \
  extern "C" __global__ void fp8_rescale_##S(const void* d, int d_f32, T* y, const float* sx, int sx_per_row,   \
                                             const float* ws, int ws_per_row, const void* bias, int bias_f32,   \
                                             int t, int n) {                                                    \
    fp8_rescale<T>(d, d_f32, y, sx, sx_per_row, ws, ws_per_row, bias, bias_f32, t, n);                          \
  }

FP8_QUANT(bf16, bf16)
FP8_QUANT(f16, f16)
