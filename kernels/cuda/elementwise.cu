// Elementwise kernels between the GEMMs of a decoder layer, each instantiated per float dtype
// (suffix f32 / bf16 / f16); all arithmetic is in f32 and every index is bounds-checked.
//   add_<T>            out = a + b over n elements
//   silu_mul_<T>       out[r, c] = silu(gate[r, c]) * up[r, c] (gate/up rows `in_stride` apart,
//                      so one fused [T, 2I] input works with up = gate + I)
//   gather_rows_<T>    out[s] = x[index[s]] (rows of h; an index outside 0..rows gives zeros);
//                      `embedding` is gather_rows(table, ids)
//   argmax_<T>         out[s] = first index of the max of row s (NaN never wins; 0 if none)
//   rope_<T>           rotary embedding, neox or interleaved, frequencies computed in the
//                      kernel exactly as plugins/elementwise/src/rope_freqs.rs does on the CPU
//   bias_add_<T>_<B>   y[r, c] += bias[c] (the GEMM's bias where cuBLASLt cannot fuse it)
// Row/column kernels use grid (rows, column chunks): each thread owns one group of
// Pack16<T>::N consecutive columns, moved with one 16-byte access when the tensors are aligned.

// ---- add ---------------------------------------------------------------------------------------

template <typename T>
__device__ void add(const T* a, const T* b, T* out, i64 n) {
  constexpr int N = Pack16<T>::N;
  const bool vec = aligned16(a) && aligned16(b) && aligned16(out);
  const i64 groups = (n + N - 1) / N;
  for (i64 g = (i64)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += (i64)gridDim.x * blockDim.x) {
    const i64 base = g * N;
    if (vec && base + N <= n) {
      const Pack16<T> x = reinterpret_cast<const Pack16<T>*>(a)[g];
      const Pack16<T> y = reinterpret_cast<const Pack16<T>*>(b)[g];
      Pack16<T> o;
#pragma unroll
      for (int j = 0; j < N; ++j) o.v[j] = from_float<T>(to_float(x.v[j]) + to_float(y.v[j]));
      reinterpret_cast<Pack16<T>*>(out)[g] = o;
    } else {
      for (i64 i = base; i < n && i < base + N; ++i) out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
    }
  }
}

// ---- silu_mul ----------------------------------------------------------------------------------

// silu(x) is in common.cuh (the GEMV's gated epilogue uses it too).

template <typename T>
__device__ void silu_mul(const T* gate, const T* up, T* out, int rows, int width, i64 in_stride) {
  constexpr int N = Pack16<T>::N;
  const int row = blockIdx.x;
  const i64 c0 = ((i64)blockIdx.y * blockDim.x + threadIdx.x) * N;
  if (row >= rows || c0 >= width) return;
  const T* g = gate + (i64)row * in_stride;
  const T* u = up + (i64)row * in_stride;
  T* o = out + (i64)row * width;
  const bool vec = (width % N) == 0 && (in_stride % N) == 0 && aligned16(gate) && aligned16(up) && aligned16(out);
  if (vec) {
    const Pack16<T> gv = *reinterpret_cast<const Pack16<T>*>(g + c0);
    const Pack16<T> uv = *reinterpret_cast<const Pack16<T>*>(u + c0);
    Pack16<T> ov;
#pragma unroll
    for (int j = 0; j < N; ++j) ov.v[j] = from_float<T>(silu(to_float(gv.v[j])) * to_float(uv.v[j]));
    *reinterpret_cast<Pack16<T>*>(o + c0) = ov;
  } else {
    for (i64 c = c0; c < width && c < c0 + N; ++c) o[c] = from_float<T>(silu(to_float(g[c])) * to_float(u[c]));
  }
}

// ---- gather_rows / embedding -------------------------------------------------------------------

template <typename T>
__device__ void gather_rows(const T* x, const int* index, T* out, int rows, int h, int count) {
  constexpr int N = Pack16<T>::N;
  const int s = blockIdx.x;
  const i64 c0 = ((i64)blockIdx.y * blockDim.x + threadIdx.x) * N;
  if (s >= count || c0 >= h) return;
  const int src = index[s];
  const bool valid = src >= 0 && src < rows;
  const T* xr = x + (valid ? (i64)src * h : 0);
  T* o = out + (i64)s * h;
  const bool vec = (h % N) == 0 && aligned16(x) && aligned16(out);
  if (vec) {
    Pack16<T> v;
    if (valid) {
      v = *reinterpret_cast<const Pack16<T>*>(xr + c0);
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) v.v[j] = from_float<T>(0.0f);
    }
    *reinterpret_cast<Pack16<T>*>(o + c0) = v;
  } else {
    for (i64 c = c0; c < h && c < c0 + N; ++c) o[c] = valid ? xr[c] : from_float<T>(0.0f);
  }
}

// ---- argmax ------------------------------------------------------------------------------------

#define NO_INDEX 0x7fffffff

// Whether candidate (bv, bi) beats (av, ai): numbers beat NaN (and the empty slot), a larger
// number wins, and among equals (or two NaNs) the smaller index wins. A strict total order on
// distinct indices, so every lane of a butterfly reduction ends with the same winner.
__device__ __forceinline__ bool arg_better(float bv, int bi, float av, int ai) {
  const bool bn = isnan(bv), an = isnan(av);
  if (bn != an) return an;
  if (!bn && bv != av) return bv > av;
  return bi < ai;
}

__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (arg_better(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
}

// One block per row; blockDim.x a multiple of 32, at most 1024.
template <typename T>
__device__ void argmax(const T* logits, int* out, int count, int v) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const int row = blockIdx.x;
  if (row >= count) return;
  const T* lr = logits + (i64)row * v;
  float best = __int_as_float(0x7fc00000);
  int bi = NO_INDEX;
  for (int i = threadIdx.x; i < v; i += blockDim.x) {
    const float x = to_float(lr[i]);
    if (arg_better(x, i, best, bi)) {
      best = x;
      bi = i;
    }
  }
  warp_argmax(best, bi);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  if (lane == 0) {
    sv[warp] = best;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    best = lane < warps ? sv[lane] : __int_as_float(0x7fc00000);
    bi = lane < warps ? si[lane] : NO_INDEX;
    warp_argmax(best, bi);
    if (lane == 0) out[row] = bi == NO_INDEX ? 0 : bi;
  }
}

// ---- rope --------------------------------------------------------------------------------------

// rope_inv_freq and the ROPE_SCALING_* kinds are in common.cuh (the GEMV's rope epilogue uses them).

// Grid (tokens, head groups of `heads_per_block`); dynamic shared memory 2 * rotary_dim / 2
// floats (cos, sin of each pair at this token's position). Each thread rotates whole pairs
// (reading both elements before writing either), so out may alias x.
template <typename T>
__device__ void rope(const T* x, const int* positions, T* out, int tokens, int heads, int head_dim, int rotary_dim,
                     int interleaved, int heads_per_block, float theta, int scaling, float factor, float low,
                     float high, float old) {
  extern __shared__ float trig[];
  const int half = rotary_dim / 2;
  float* cs = trig;
  float* sn = trig + half;
  const int row = blockIdx.x;
  const int h0 = blockIdx.y * heads_per_block;
  if (row >= tokens || h0 >= heads) return;
  const float pos = (float)positions[row];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = __fmul_rn(pos, rope_inv_freq(i, rotary_dim, theta, scaling, factor, low, high, old));
    double s, c;
    sincos((double)angle, &s, &c);
    cs[i] = (float)c;
    sn[i] = (float)s;
  }
  __syncthreads();
  const int nh = min(heads_per_block, heads - h0);
  const i64 base = (i64)row * heads * head_dim + (i64)h0 * head_dim;
  const T* xr = x + base;
  T* o = out + base;
  for (int e = threadIdx.x; e < nh * half; e += blockDim.x) {
    const int hl = e / half, i = e - hl * half;
    const int a = hl * head_dim + (interleaved ? 2 * i : i);
    const int b = interleaved ? a + 1 : a + half;
    const float x1 = to_float(xr[a]), x2 = to_float(xr[b]);
    o[a] = from_float<T>(__fsub_rn(__fmul_rn(x1, cs[i]), __fmul_rn(x2, sn[i])));
    o[b] = from_float<T>(__fadd_rn(__fmul_rn(x2, cs[i]), __fmul_rn(x1, sn[i])));
  }
  const int pass = head_dim - rotary_dim;
  for (int e = threadIdx.x; e < nh * pass; e += blockDim.x) {
    const int hl = e / pass;
    const int d = hl * head_dim + rotary_dim + (e - hl * pass);
    o[d] = xr[d];
  }
}

// ---- bias_add ----------------------------------------------------------------------------------

template <typename T, typename B>
__device__ void bias_add(T* y, const B* bias, int rows, int n) {
  const i64 total = (i64)rows * n;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
    y[i] = from_float<T>(to_float(y[i]) + to_float(bias[i % n]));
  }
}

// ---- entry points ------------------------------------------------------------------------------

#define ELEMENTWISE_ENTRIES(S, T)                                                                                \
  extern "C" __global__ void add_##S(const T* a, const T* b, T* out, i64 n) { pdl_enter(); add<T>(a, b, out, n); }            \
  extern "C" __global__ void silu_mul_##S(const T* gate, const T* up, T* out, int rows, int width,                \
                                          i64 in_stride) {                                                       \
    pdl_enter();                                                                                                 \
    silu_mul<T>(gate, up, out, rows, width, in_stride);                                                          \
  }                                                                                                              \
  extern "C" __global__ void gather_rows_##S(const T* x, const int* index, T* out, int rows, int h, int count) { \
    pdl_enter();                                                                                                 \
    gather_rows<T>(x, index, out, rows, h, count);                                                               \
  }                                                                                                              \
  extern "C" __global__ void argmax_##S(const T* logits, int* out, int count, int v) {                           \
    pdl_enter();                                                                                                 \
    argmax<T>(logits, out, count, v);                                                                            \
  }                                                                                                              \
  extern "C" __global__ void rope_##S(const T* x, const int* positions, T* out, int tokens, int heads,           \
                                      int head_dim, int rotary_dim, int interleaved, int heads_per_block,        \
                                      float theta, int scaling, float factor, float low, float high,             \
                                      float old) {                                                               \
    pdl_enter();                                                                                                 \
    rope<T>(x, positions, out, tokens, heads, head_dim, rotary_dim, interleaved, heads_per_block, theta,         \
            scaling, factor, low, high, old);                                                                    \
  }
RTLLM_FOR_FLOAT_TYPES(ELEMENTWISE_ENTRIES)

#define BIAS_ADD_ENTRY(S, T, BS, B)                                                                              \
  extern "C" __global__ void bias_add_##S##_##BS(T* y, const B* bias, int rows, int n) {                        \
    pdl_enter();                                                                                                 \
    bias_add<T, B>(y, bias, rows, n);                                                                            \
  }
BIAS_ADD_ENTRY(f32, float, f32, float)
BIAS_ADD_ENTRY(bf16, bf16, bf16, bf16)
BIAS_ADD_ENTRY(bf16, bf16, f32, float)
BIAS_ADD_ENTRY(f16, f16, f16, f16)
BIAS_ADD_ENTRY(f16, f16, f32, float)
