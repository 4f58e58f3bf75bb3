// FP8 E4M3 linear layers, the `fp8_matmul` op (docs/quantization.md):
//   y[t, n] = (Σ_k e4m3(x[t, k] / s_x[t]) · w[n, k]) · s_x[t] · w_scale[n or 0] (+ bias[n])
// Three kernels, launched by plugins/cuda/src/fp8_kernels.rs:
//   fp8_quant_<T>      one block per activation row: the row's scale (the static input_scale, or
//                      the dynamic per-token max(min(amax, ub) / 448, 1 / (448·512))) written to
//                      sx[row], then every element quantized as e4m3(x / s) (a true division,
//                      round to nearest even, saturating at ±448: plugin-api's f32_to_e4m3 bit for
//                      bit). Written as E4M3 codes (for cuBLASLt) or as the codes' exact bf16
//                      values (for the GEMV, which then unpacks x with one shift per element).
//   fp8_gemv_m<M>_<T>  y (of 1 to 4 weights sharing x) for up to M rows per grid.y tile (decode: one tile; any other shape the
//                      cuBLASLt path cannot take: as many tiles as needed). A warp owns F8_ROWS
//                      weight rows and one of `ks` interleaved K slices; 16 weight bytes per 16-byte
//                      load, bypassing L1. Weights are decoded with integer ops only: the code's
//                      bits placed in an f32 are the value times 2^-120 (E4M3 subnormals become f32
//                      subnormals, still exact: no flush to zero is compiled), the 2^120 is applied
//                      once per output. E4M3 products are exact in f32; sums are f32.
//   fp8_rescale_<T>    y = d · s_x[t] · w_scale[n] (+ bias) over the unscaled bf16 GEMM output d
//                      (cuBLASLt's, which may be y itself): per-token and per-channel scales as an
//                      outer product, as vLLM's cutlass_scaled_mm epilogue applies them.

#define F8_WARPS 8
#define F8_ROWS 2
#define E4M3_MAX 448.0f
// F8_UNBIAS (2^120, between a code's bits placed in an f32 and its value) and e4m3_to_f32 are in
// common.cuh.

struct __align__(16) U4F {
  u32 a, b, c, d;
};

// 16 weight bytes, streamed: read-only path, not kept in L1 (x lives there).
__device__ __forceinline__ U4F ld_stream_f(const void* p) {
  U4F v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.a), "=r"(v.b), "=r"(v.c), "=r"(v.d)
      : "l"(p));
  return v;
}

// Byte i of a word of four codes as value · 2^-120 (see the top of the file).
template <int I> __device__ __forceinline__ float e4m3_raw(u32 w) {
  const u32 b = w >> (8 * I);
  return __uint_as_float(((b & 0x80u) << 24) | ((b & 0x7fu) << 20));
}

__device__ __forceinline__ void decode16(const U4F& v, float* f) {
  const u32 words[4] = {v.a, v.b, v.c, v.d};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[4 * i] = e4m3_raw<0>(words[i]);
    f[4 * i + 1] = e4m3_raw<1>(words[i]);
    f[4 * i + 2] = e4m3_raw<2>(words[i]);
    f[4 * i + 3] = e4m3_raw<3>(words[i]);
  }
}

__device__ __forceinline__ void bf16x8(const U4F& v, float* f) {
  const u32 words[4] = {v.a, v.b, v.c, v.d};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(words[i] << 16);
    f[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}

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

// Up to 4 weights sharing x (q/k/v or gate/up of fp8_grouped_matmul; one for fp8_matmul):
// rows are numbered globally, segment 0 first; each has its codes, scale and output.
struct F8Segs {
  const u8* w[4];
  const float* ws[4];
  void* y[4];
  int end[4];  // exclusive global row end of each segment
  int per_row;  // bit s: ws[s] has one scale per row
};

__device__ __forceinline__ int f8_seg(const F8Segs& s, int g) {
  return g < s.end[0] ? 0 : g < s.end[1] ? 1 : g < s.end[2] ? 2 : 3;
}

__device__ __forceinline__ int f8_start(const F8Segs& s, int seg) { return seg == 0 ? 0 : s.end[seg - 1]; }

// xq: [m, k] bf16 values of E4M3 codes; sx [m]; each segment's w [n_s, k] codes, ws [1] or
// [n_s], y [m, n_s]; the bias [n_0] only with one segment.
template <typename T, int MAXM>
__device__ void fp8_gemv(const bf16* xq, const float* sx, const F8Segs& s, const void* bias, int bias_f32, int m,
                         int k, int ks, int vec) {
  constexpr int R = F8_ROWS;
  __shared__ float red[F8_WARPS][MAXM * R];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int groups_per_block = F8_WARPS / ks;
  const int group = blockIdx.x * groups_per_block + warp / ks;
  const int slice = warp % ks;
  const int m0 = blockIdx.y * MAXM;
  const int mt = min(MAXM, m - m0);
  const int total = s.end[3];
  const u8* wr[R];
  bool valid[R];
  bool any = false;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int g = group * R + r;
    valid[r] = warp / ks < groups_per_block && g < total;
    const int sg = valid[r] ? f8_seg(s, g) : 0;
    wr[r] = s.w[sg] + (valid[r] ? (i64)(g - f8_start(s, sg)) * k : 0);
    any = any || valid[r];
  }
  pdl_trigger();
  pdl_wait();

  float acc[MAXM][R];
#pragma unroll
  for (int mi = 0; mi < MAXM; ++mi) {
#pragma unroll
    for (int r = 0; r < R; ++r) acc[mi][r] = 0.0f;
  }
  const bf16* xt = xq + (i64)m0 * k;
  if (any && vec) {
    const int chunks = k / 16;
#pragma unroll 2
    for (int c = slice * 32 + lane; c < chunks; c += 32 * ks) {
      float wf[R][16];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const U4F v = valid[r] ? ld_stream_f(wr[r] + (i64)c * 16) : U4F{0u, 0u, 0u, 0u};
        decode16(v, wf[r]);
      }
#pragma unroll
      for (int mi = 0; mi < MAXM; ++mi) {
        if (mi < mt) {
          const bf16* xp = xt + (i64)mi * k + (i64)c * 16;
          float xf[16];
          bf16x8(*reinterpret_cast<const U4F*>(xp), xf);
          bf16x8(*reinterpret_cast<const U4F*>(xp + 8), xf + 8);
#pragma unroll
          for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int e = 0; e < 16; ++e) acc[mi][r] = fmaf(wf[r][e], xf[e], acc[mi][r]);
          }
        }
      }
    }
  } else if (any) {
    for (int e = slice * 32 + lane; e < k; e += 32 * ks) {
      float wf[R];
#pragma unroll
      for (int r = 0; r < R; ++r) wf[r] = valid[r] ? e4m3_raw<0>(wr[r][e]) : 0.0f;
#pragma unroll
      for (int mi = 0; mi < MAXM; ++mi) {
        if (mi < mt) {
          const float xv = to_float(xt[(i64)mi * k + e]);
#pragma unroll
          for (int r = 0; r < R; ++r) acc[mi][r] = fmaf(wf[r], xv, acc[mi][r]);
        }
      }
    }
  }

#pragma unroll
  for (int mi = 0; mi < MAXM; ++mi) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[mi][r]);
      if (lane == 0) red[warp][mi * R + r] = v;
    }
  }
  __syncthreads();

  const int outs = groups_per_block * R * MAXM;
  for (int t = threadIdx.x; t < outs; t += blockDim.x) {
    const int gl = t / (R * MAXM), rem = t % (R * MAXM);
    const int mi = rem / R, r = rem % R;
    const int g = (blockIdx.x * groups_per_block + gl) * R + r;
    if (mi >= mt || g >= total) continue;
    const int sg = f8_seg(s, g), row = g - f8_start(s, sg);
    const int n = s.end[sg] - f8_start(s, sg);
    float sum = 0.0f;
    for (int sl = 0; sl < ks; ++sl) sum += red[gl * ks + sl][rem];
    const float raw = __fmul_rn(sum, F8_UNBIAS);
    const float ws = scale_at(s.ws[sg], (s.per_row >> sg) & 1, row);
    const float v = finish<T>(raw, sx[m0 + mi], ws, sg == 0 ? bias : nullptr, bias_f32, row);
    reinterpret_cast<T*>(s.y[sg])[(i64)(m0 + mi) * n + row] = from_float<T>(v);
  }
}

// y[t, n] = d[t, n] · sx[t or 0] · ws[n or 0] (+ bias[n]); a null sx or ws is 1. d is bf16
// (`d_bf16`) or T, and may be y itself (each element is read before it is written).
template <typename T>
__device__ void fp8_rescale(const void* d, int d_bf16, T* y, const float* sx, int sx_per_row, const float* ws, int ws_per_row,
                            const void* bias, int bias_f32, int t, int n) {
  pdl_enter();
  const i64 total = (i64)t * n;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
    const int r = (int)(i / n), col = (int)(i % n);
    const float di = d_bf16 ? to_float(reinterpret_cast<const bf16*>(d)[i]) : to_float(reinterpret_cast<const T*>(d)[i]);
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
  extern "C" __global__ void fp8_rescale_##S(const void* d, int d_bf16, T* y, const float* sx, int sx_per_row,  \
                                             const float* ws, int ws_per_row, const void* bias, int bias_f32,   \
                                             int t, int n) {                                                    \
    fp8_rescale<T>(d, d_bf16, y, sx, sx_per_row, ws, ws_per_row, bias, bias_f32, t, n);                         \
  }

#define FP8_GEMV(MAXM, S, T)                                                                                     \
  extern "C" __global__ void __launch_bounds__(F8_WARPS * 32)                                                   \
      fp8_gemv_m##MAXM##_##S(const bf16* xq, const float* sx, const u8* w0, const u8* w1, const u8* w2,         \
                             const u8* w3, const float* ws0, const float* ws1, const float* ws2, const float* ws3,  \
                             int per_row, T* y0, T* y1, T* y2, T* y3, int n0, int n1, int n2, int n3,           \
                             const void* bias, int bias_f32, int m, int k, int ks, int vec) {                   \
    const F8Segs s{{w0, w1, w2, w3}, {ws0, ws1, ws2, ws3}, {y0, y1, y2, y3},                                     \
                   {n0, n0 + n1, n0 + n1 + n2, n0 + n1 + n2 + n3}, per_row};                                     \
    fp8_gemv<T, MAXM>(xq, sx, s, bias, bias_f32, m, k, ks, vec);                                                 \
  }

#define FP8_ALL(S, T) FP8_QUANT(S, T) FP8_GEMV(1, S, T) FP8_GEMV(2, S, T) FP8_GEMV(4, S, T) FP8_GEMV(8, S, T)
FP8_ALL(bf16, bf16)
FP8_ALL(f16, f16)
