// Skinny GEMMs of decode: y_s[M, N_s] = x[M, K] · W_s[N_s, K]ᵀ (+ bias[N_0]) for M <= 8 rows per
// tile and up to 4 weight segments s sharing x (one launch computes q/k/v or gate/up together).
// Memory bound: every weight byte is read exactly once, with 16-byte loads that bypass L1 (x
// stays there), f32 accumulation, warp-shuffle reductions. Each thread's first round of weight
// loads (and the rope rotation) is issued before waiting for the kernel before (programmatic
// dependent launch), so a small GEMV has its weights in registers by the time x is ready.
//   gemv_m<MAXM>_<T>     weights, x and y of one float dtype T
//   gemv_f8_m<MAXM>_<T>  FP8 E4M3 weights (the `fp8_matmul` family, docs/quantization.md): x is
//                        the bf16 values of the activations' E4M3 codes (fp8.cu's fp8_quant) with
//                        their row scales sx, each weight has a per-tensor or per-row scale; y
//                        of T. Codes are decoded with integer ops (e4m3_scaled, value · 2^-120),
//                        products are exact in f32, and each output is sum · 2^120 · sx · w_scale.
//   MAXM in {1, 2, 4, 8}: the most rows one tile handles; grid.y tiles cover M > MAXM rows (the
//   FP8 fallback for shapes cuBLASLt's FP8 GEMM does not take).
// Work split: the segments' rows are numbered globally (segment 0 first); a warp owns
// GEMV_ROWS consecutive global rows (a "row group") and one of `ks` interleaved slices of K;
// a block of GEMV_WARPS warps holds GEMV_WARPS / ks row groups. Each warp sums its slice per
// (row, token), the block adds the ks slices through shared memory and writes y.
// `vec` (chosen by the host: K a multiple of a weight chunk's elements and x, every W 16-byte
// aligned) selects the 16-byte path; otherwise every element is loaded on its own (any K).
// The bias (only with one segment) is T or f32 (`bias_f32`) and may be null; it is added after
// the scales.
// `mode` GEMV_PLAIN, or:
// GEMV_GATED (two segments of n0 rows: gate and up): row group i is {gate row i, up row i}, and
//   the block writes y0[mi, i] = silu(g) * u, with g and u rounded to T first (as the unfused
//   matmul + silu_mul would see them): the gate/up outputs never reach memory.
// GEMV_ROPE (q, k, v segments of whole heads): a row group of q or k is the two rows of one
//   rotary pair of one head (neox: i and i + rotary_dim / 2, interleaved: 2i and 2i + 1; past
//   rotary_dim, two pass-through rows), rotated at the token's position after rounding to T,
//   exactly as the `rope` kernel would; v's row groups are plain.

#define GEMV_WARPS 8
#define GEMV_ROWS 2
// 16-byte chunks per weight row each thread prefetches into L2 before waiting for the kernel
// before it (lanes 0, 8, 16, 24 of a warp: one 128-byte line per 8 lanes' chunks).
#define GEMV_PREFETCH 4

#define GEMV_PLAIN 0
#define GEMV_GATED 1
#define GEMV_ROPE 2

// The rotary embedding applied by GEMV_ROPE (the `rope` op's attributes; positions [m]).
struct RopeArgs {
  const int* positions;
  int head_dim, rotary_dim, interleaved, scaling;
  float theta, factor, low, high, old;
};

// Rows (of its segment) of rotary pair `p` of a q/k segment, and its frequency index (-1: a
// pass-through pair past rotary_dim).
__device__ __forceinline__ void rope_rows(const RopeArgs& ra, int p, int& a, int& b, int& freq) {
  const int half_d = ra.head_dim / 2, half_r = ra.rotary_dim / 2;
  const int h = p / half_d, j = p - h * half_d;
  if (j < half_r) {
    freq = j;
    a = h * ra.head_dim + (ra.interleaved ? 2 * j : j);
    b = ra.interleaved ? a + 1 : a + half_r;
  } else {
    freq = -1;
    a = h * ra.head_dim + ra.rotary_dim + 2 * (j - half_r);
    b = a + 1;
  }
}

struct __align__(16) U4 {
  u32 a, b, c, d;
};

// 16 bytes of weights, streamed: read-only path, not kept in L1 (x lives there).
__device__ __forceinline__ U4 ld_stream(const void* p) {
  U4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.a), "=r"(v.b), "=r"(v.c), "=r"(v.d)
      : "l"(p));
  return v;
}

// 16 bytes of activations: a plain (coherent, L1-cached) load. Not the non-coherent path and not
// an asm the compiler may move: the kernel before this one writes x while this one may already run
// (programmatic dependent launch), so these loads must stay after pdl_wait().
__device__ __forceinline__ U4 ld_cached(const void* p) { return *reinterpret_cast<const U4*>(p); }

template <typename T> __device__ __forceinline__ void unpack(const U4& v, float* f);

template <> __device__ __forceinline__ void unpack<float>(const U4& v, float* f) {
  f[0] = __uint_as_float(v.a);
  f[1] = __uint_as_float(v.b);
  f[2] = __uint_as_float(v.c);
  f[3] = __uint_as_float(v.d);
}

__device__ __forceinline__ void unpack_bf16x2(u32 w, float* f) {
  f[0] = __uint_as_float(w << 16);
  f[1] = __uint_as_float(w & 0xffff0000u);
}

template <> __device__ __forceinline__ void unpack<bf16>(const U4& v, float* f) {
  unpack_bf16x2(v.a, f);
  unpack_bf16x2(v.b, f + 2);
  unpack_bf16x2(v.c, f + 4);
  unpack_bf16x2(v.d, f + 6);
}

__device__ __forceinline__ void unpack_f16x2(u32 w, float* f) {
  f16 lo, hi;
  lo.bits = (u16)(w & 0xffffu);
  hi.bits = (u16)(w >> 16);
  f[0] = to_float(lo);
  f[1] = to_float(hi);
}

template <> __device__ __forceinline__ void unpack<f16>(const U4& v, float* f) {
  unpack_f16x2(v.a, f);
  unpack_f16x2(v.b, f + 2);
  unpack_f16x2(v.c, f + 4);
  unpack_f16x2(v.d, f + 6);
}

// An FP8 E4M3 weight element (its code).
struct e4m3 {
  u8 bits;
};

// A weight element as f32: float weights as themselves, E4M3 codes as value · 2^-120.
__device__ __forceinline__ float w_float(float v) { return v; }
__device__ __forceinline__ float w_float(bf16 v) { return to_float(v); }
__device__ __forceinline__ float w_float(f16 v) { return to_float(v); }
__device__ __forceinline__ float w_float(e4m3 v) { return e4m3_scaled(v.bits); }

template <> __device__ __forceinline__ void unpack<e4m3>(const U4& v, float* f) {
  const u32 words[4] = {v.a, v.b, v.c, v.d};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) f[4 * i + j] = e4m3_scaled(words[i] >> (8 * j));
  }
}

// The FP8 scales of a gemv_f8 launch (sx null: float weights, sums are the outputs): the row
// scales of x [m] and each segment's weight scale, [1] or one per row (bit s of per_row).
struct F8Scales {
  const float* sx;
  const float* ws[4];
  int per_row;
};

// Output `row` (of segment `sg`) for token `mi` from its f32 sum: the sum itself for float
// weights; for FP8, sum · 2^120 · sx[mi] · w_scale (in that order, as the reference does).
__device__ __forceinline__ float scaled(float sum, const F8Scales& sc, int mi, int sg, int row) {
  if (sc.sx == nullptr) return sum;
  const float ws = sc.ws[sg][((sc.per_row >> sg) & 1) ? row : 0];
  return __fmul_rn(__fmul_rn(__fmul_rn(sum, F8_UNBIAS), sc.sx[mi]), ws);
}

// Segment boundaries in global row numbers: rows [c0, c1) are segment 1, and so on (c0 = n0).
struct Segs {
  int c1, c2, c3, total;
};

__device__ __forceinline__ int seg_of(const Segs& s, int g) {
  return g < s.c1 ? 0 : g < s.c2 ? 1 : g < s.c3 ? 2 : 3;
}

__device__ __forceinline__ int seg_start(const Segs& s, int seg) {
  return seg == 0 ? 0 : seg == 1 ? s.c1 : seg == 2 ? s.c2 : s.c3;
}

template <typename P> __device__ __forceinline__ P pick(int seg, P p0, P p1, P p2, P p3) {
  return seg == 0 ? p0 : seg == 1 ? p1 : seg == 2 ? p2 : p3;
}

// Loads U chunks (16 bytes each) at chunk indices c, c + step, ..., of GEMV_ROWS weight rows
// (zeros for rows the warp does not own).
template <typename W, int U>
__device__ __forceinline__ void gemv_load(const W* const* wr, const bool* valid, int c, int step,
                                          U4 (*wv)[GEMV_ROWS]) {
  constexpr int P = 16 / sizeof(W);
#pragma unroll
  for (int u = 0; u < U; ++u) {
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; ++r) {
      if (valid[r]) {
        wv[u][r] = ld_stream(wr[r] + (i64)(c + u * step) * P);
      } else {
        wv[u][r] = U4{0u, 0u, 0u, 0u};
      }
    }
  }
}

// Accumulates loaded weight chunks `wv` (at chunk indices c, c + step, ...; P = 16 / sizeof(W)
// elements each, so XC = P · sizeof(X) / 16 x loads per chunk: 1 for float weights, 2 for E4M3
// against bf16 x) against every token's x. For one or two tokens the x chunks of XU chunks at
// a time are loaded together before any is used, and unconditionally (a second row past m
// re-reads row 0, unused; m >= 1), so their latencies overlap instead of queueing behind the
// FMAs (which a conditional load would make them do). More tokens load each x chunk where it
// is used (registers).
template <typename X, typename W, int MAXM, int U>
__device__ __forceinline__ void gemv_fma(const U4 (*wv)[GEMV_ROWS], const X* x, int m, i64 k, int c, int step,
                                         float (*acc)[GEMV_ROWS]) {
  constexpr int P = 16 / sizeof(W);
  constexpr int PX = 16 / sizeof(X);
  constexpr int XC = P / PX;
  constexpr bool HOIST = MAXM <= 2;
  constexpr int XU = MAXM == 1 || U == 1 ? U : 2;  // divides U (1, 2 or 4)
#pragma unroll
  for (int u0 = 0; u0 < U; u0 += XU) {
    U4 xv[XU][MAXM][XC];
    if constexpr (HOIST) {
#pragma unroll
      for (int uu = 0; uu < XU; ++uu) {
#pragma unroll
        for (int mi = 0; mi < MAXM; ++mi) {
#pragma unroll
          for (int j = 0; j < XC; ++j) {
            xv[uu][mi][j] = ld_cached(x + (mi < m ? mi * k : 0) + (i64)(c + (u0 + uu) * step) * P + j * PX);
          }
        }
      }
    }
#pragma unroll
    for (int uu = 0; uu < XU; ++uu) {
      float wf[GEMV_ROWS][P];
#pragma unroll
      for (int r = 0; r < GEMV_ROWS; ++r) unpack<W>(wv[u0 + uu][r], wf[r]);
#pragma unroll
      for (int mi = 0; mi < MAXM; ++mi) {
        if (mi < m) {
          float xf[P];
#pragma unroll
          for (int j = 0; j < XC; ++j) {
            if constexpr (HOIST) {
              unpack<X>(xv[uu][mi][j], xf + j * PX);
            } else {
              unpack<X>(ld_cached(x + mi * k + (i64)(c + (u0 + uu) * step) * P + j * PX), xf + j * PX);
            }
          }
#pragma unroll
          for (int r = 0; r < GEMV_ROWS; ++r) {
#pragma unroll
            for (int e = 0; e < P; ++e) acc[mi][r] = fmaf(wf[r][e], xf[e], acc[mi][r]);
          }
        }
      }
    }
  }
}

// U chunks at chunk indices c, c + step, ...: loaded, then accumulated.
template <typename X, typename W, int MAXM, int U>
__device__ __forceinline__ void gemv_chunks(const W* const* wr, const bool* valid, const X* x, int m, i64 k, int c,
                                            int step, float (*acc)[GEMV_ROWS]) {
  U4 wv[U][GEMV_ROWS];
  gemv_load<W, U>(wr, valid, c, step, wv);
  gemv_fma<X, W, MAXM, U>(wv, x, m, k, c, step, acc);
}

// The two rows of row group `gl` of the block for token `mi`, summed over the K slices.
template <int MAXM>
__device__ __forceinline__ void pair_sums(const float (*red)[MAXM * GEMV_ROWS], int gl, int ks, int mi, float& a,
                                          float& b) {
  a = 0.0f;
  b = 0.0f;
  for (int sl = 0; sl < ks; ++sl) {
    a += red[gl * ks + sl][mi * GEMV_ROWS];
    b += red[gl * ks + sl][mi * GEMV_ROWS + 1];
  }
}

// An output as the unfused matmul would have stored it and a fused epilogue reads it: scaled,
// rounded to Y.
template <typename Y>
__device__ __forceinline__ float stored(float sum, const F8Scales& sc, int mi, int sg, int row) {
  return to_float(from_float<Y>(scaled(sum, sc, mi, sg, row)));
}

// x [m, k] of X against weights of W (see the top of the file), outputs of Y.
template <typename X, typename W, typename Y, int MAXM>
__device__ void gemv(const X* x, const W* w0, const W* w1, const W* w2, const W* w3, Y* y0, Y* y1, Y* y2,
                     Y* y3, const void* bias, int bias_f32, int m, int k, int n0, int n1, int n2, int n3, int ks,
                     int vec, int mode, const RopeArgs& ra, const F8Scales& sc) {
  constexpr int P = 16 / sizeof(W);
  constexpr int R = GEMV_ROWS;
  constexpr int U = MAXM <= 2 ? 4 : 2;
  __shared__ float red[GEMV_WARPS][MAXM * R];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int groups_per_block = GEMV_WARPS / ks;
  const int group = blockIdx.x * groups_per_block + warp / ks;
  const int slice = warp % ks;
  const Segs s{n0, n0 + n1, n0 + n1 + n2, n0 + n1 + n2 + n3};

  const W* wr[R];
  bool valid[R];
  bool any = false;
  // GEMV_ROPE: this group's segment and its two rows there (rope_rows for q and k).
  int rope_seg = 0, rope_row[R] = {0, 0};
  if (mode == GEMV_ROPE && group * R < s.total) {
    rope_seg = seg_of(s, group * R);
    const int p = (group * R - seg_start(s, rope_seg)) / R;
    int freq;
    if (rope_seg < 2) {
      rope_rows(ra, p, rope_row[0], rope_row[1], freq);
    } else {
      rope_row[0] = 2 * p;
      rope_row[1] = 2 * p + 1;
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (mode == GEMV_GATED) {
      valid[r] = warp / ks < groups_per_block && group < n0;
      wr[r] = (r == 0 ? w0 : w1) + (valid[r] ? (i64)group * k : 0);
    } else if (mode == GEMV_ROPE) {
      valid[r] = warp / ks < groups_per_block && group * R < s.total;
      wr[r] = pick(rope_seg, w0, w1, w2, w3) + (valid[r] ? (i64)rope_row[r] * k : 0);
    } else {
      const int g = group * R + r;
      valid[r] = warp / ks < groups_per_block && g < s.total;
      const int sg = valid[r] ? seg_of(s, g) : 0;
      wr[r] = pick(sg, w0, w1, w2, w3) + (valid[r] ? (i64)(g - seg_start(s, sg)) * k : 0);
    }
    any = any || valid[r];
  }

  // Weights are never written by another kernel, and the positions are a step input (copied
  // from the host before the step's first kernel): while the kernel before this one finishes
  // (see pdl_trigger in common.cuh), load this thread's first U chunks of every row into
  // registers, start the next GEMV_PREFETCH chunks into L2, and work out the rope rotation.
  pdl_trigger();
  const int chunks = k / P, step = 32 * ks, c0 = slice * 32 + lane;
  const bool preloaded = any && vec && c0 + (U - 1) * step < chunks;
  U4 pre[U][R];
  if (preloaded) gemv_load<W, U>(wr, valid, c0, step, pre);
  if (any && vec && (lane & 7) == 0) {
    int c = c0 + U * step;
    for (int u = 0; u < GEMV_PREFETCH && c < chunks; ++u, c += step) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (valid[r]) prefetch_l2(wr[r] + (i64)c * P);
      }
    }
  }
  // GEMV_ROPE: the rotation (cos, sin) of this thread's epilogue item (row group gl, token mi;
  // see the epilogue), the identity for v and for pass-through pairs.
  float rope_c = 1.0f, rope_s = 0.0f;
  if (mode == GEMV_ROPE && threadIdx.x < groups_per_block * MAXM) {
    const int gl = threadIdx.x / MAXM, mi = threadIdx.x % MAXM;
    const int g = blockIdx.x * groups_per_block + gl;
    const int sg = g * R < s.total ? seg_of(s, g * R) : 3;
    if (mi < m && sg < 2) {
      int a, b, freq;
      rope_rows(ra, (g * R - seg_start(s, sg)) / R, a, b, freq);
      if (freq >= 0) {
        const float pos = (float)ra.positions[mi];
        const float angle = __fmul_rn(
            pos, rope_inv_freq(freq, ra.rotary_dim, ra.theta, ra.scaling, ra.factor, ra.low, ra.high, ra.old));
        double sd, cd;
        sincos((double)angle, &sd, &cd);
        rope_c = (float)cd;
        rope_s = (float)sd;
      }
    }
  }
  pdl_wait();

  float acc[MAXM][R];
#pragma unroll
  for (int mi = 0; mi < MAXM; ++mi) {
#pragma unroll
    for (int r = 0; r < R; ++r) acc[mi][r] = 0.0f;
  }

  if (any) {
    if (vec) {
      int c = c0;
      if (preloaded) {
        gemv_fma<X, W, MAXM, U>(pre, x, m, k, c, step, acc);
        c += U * step;
      }
      for (; c + (U - 1) * step < chunks; c += U * step) {
        gemv_chunks<X, W, MAXM, U>(wr, valid, x, m, k, c, step, acc);
      }
      for (; c < chunks; c += step) gemv_chunks<X, W, MAXM, 1>(wr, valid, x, m, k, c, step, acc);
    } else {
      for (int e = slice * 32 + lane; e < k; e += 32 * ks) {
        float wf[R];
#pragma unroll
        for (int r = 0; r < R; ++r) wf[r] = valid[r] ? w_float(wr[r][e]) : 0.0f;
#pragma unroll
        for (int mi = 0; mi < MAXM; ++mi) {
          if (mi < m) {
            const float xv = to_float(x[(i64)mi * k + e]);
#pragma unroll
            for (int r = 0; r < R; ++r) acc[mi][r] = fmaf(wf[r], xv, acc[mi][r]);
          }
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

  if (mode == GEMV_ROPE) {
    // One item per thread (groups_per_block * MAXM <= 64 <= blockDim.x), rotation set up above.
    const int t = threadIdx.x;
    const int gl = t / MAXM, mi = t % MAXM;
    const int g = blockIdx.x * groups_per_block + gl;
    if (t >= groups_per_block * MAXM || mi >= m || g * R >= s.total) return;
    const int sg = seg_of(s, g * R);
    const int p = (g * R - seg_start(s, sg)) / R;
    int a = 2 * p, b = 2 * p + 1, freq = -1;
    if (sg < 2) rope_rows(ra, p, a, b, freq);
    float x1, x2;
    pair_sums<MAXM>(red, gl, ks, mi, x1, x2);
    x1 = stored<Y>(x1, sc, mi, sg, a);
    x2 = stored<Y>(x2, sc, mi, sg, b);
    Y* y = pick(sg, y0, y1, y2, y3);
    const int n = sg == 0 ? n0 : sg == 1 ? n1 : sg == 2 ? n2 : n3;
    if (freq >= 0) {
      const float o1 = __fsub_rn(__fmul_rn(x1, rope_c), __fmul_rn(x2, rope_s));
      const float o2 = __fadd_rn(__fmul_rn(x2, rope_c), __fmul_rn(x1, rope_s));
      x1 = o1;
      x2 = o2;
    }
    y[(i64)mi * n + a] = from_float<Y>(x1);
    y[(i64)mi * n + b] = from_float<Y>(x2);
    return;
  }

  if (mode == GEMV_GATED) {
    for (int t = threadIdx.x; t < groups_per_block * MAXM; t += blockDim.x) {
      const int gl = t / MAXM, mi = t % MAXM;
      const int i = blockIdx.x * groups_per_block + gl;
      if (mi >= m || i >= n0) continue;
      float gate, up;
      pair_sums<MAXM>(red, gl, ks, mi, gate, up);
      gate = stored<Y>(gate, sc, mi, 0, i);
      up = stored<Y>(up, sc, mi, 1, i);
      y0[(i64)mi * n0 + i] = from_float<Y>(silu(gate) * up);
    }
    return;
  }

  const int outs = groups_per_block * R * MAXM;
  for (int t = threadIdx.x; t < outs; t += blockDim.x) {
    const int gl = t / (R * MAXM), rem = t % (R * MAXM);
    const int mi = rem / R, r = rem % R;
    const int g = (blockIdx.x * groups_per_block + gl) * R + r;
    if (mi >= m || g >= s.total) continue;
    float sum = 0.0f;
    for (int sl = 0; sl < ks; ++sl) sum += red[gl * ks + sl][rem];
    const int sg = seg_of(s, g);
    const int local = g - seg_start(s, sg);
    sum = scaled(sum, sc, mi, sg, local);
    if (bias != nullptr && sg == 0) {
      sum += bias_f32 ? reinterpret_cast<const float*>(bias)[local] : to_float(reinterpret_cast<const Y*>(bias)[local]);
    }
    Y* y = pick(sg, y0, y1, y2, y3);
    const int n = sg == 0 ? n0 : sg == 1 ? n1 : sg == 2 ? n2 : n3;
    y[(i64)mi * n + local] = from_float<Y>(sum);
  }
}

// Tile blockIdx.y of the rows: offsets x, y, the positions and the row scales by its first row
// and runs gemv on its (at most MAXM) rows.
template <typename X, typename W, typename Y, int MAXM>
__device__ __forceinline__ void gemv_tile(const X* x, const W* w0, const W* w1, const W* w2, const W* w3, Y* y0,
                                          Y* y1, Y* y2, Y* y3, const void* bias, int bias_f32, int m, int k, int n0,
                                          int n1, int n2, int n3, int ks, int vec, int mode, RopeArgs ra,
                                          F8Scales sc) {
  const int m0 = blockIdx.y * MAXM;
  const i64 r0 = m0;
  if (ra.positions != nullptr) ra.positions += m0;
  if (sc.sx != nullptr) sc.sx += m0;
  gemv<X, W, Y, MAXM>(x + r0 * k, w0, w1, w2, w3, y0 + r0 * n0, y1 + r0 * n1, y2 + r0 * n2, y3 + r0 * n3, bias,
                      bias_f32, min(MAXM, m - m0), k, n0, n1, n2, n3, ks, vec, mode, ra, sc);
}

// One entry point: x of X, weights of W, y of Y. The FP8 scales come last (null for float
// weights).
#define GEMV_ENTRY(NAME, MAXM, X, W, Y)                                                                            \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                                                     \
      NAME(const X* x, const W* w0, const W* w1, const W* w2, const W* w3, Y* y0, Y* y1, Y* y2, Y* y3,             \
           const void* bias, int bias_f32, int m, int k, int n0, int n1, int n2, int n3, int ks, int vec, int mode, \
           const int* positions, int head_dim, int rotary_dim, int interleaved, int scaling, float theta,           \
           float factor, float low, float high, float old, const float* sx, const float* ws0, const float* ws1,     \
           const float* ws2, const float* ws3, int per_row) {                                                       \
    const RopeArgs ra{positions, head_dim, rotary_dim, interleaved, scaling, theta, factor, low, high, old};         \
    const F8Scales sc{sx, {ws0, ws1, ws2, ws3}, per_row};                                                          \
    gemv_tile<X, W, Y, MAXM>(x, w0, w1, w2, w3, y0, y1, y2, y3, bias, bias_f32, m, k, n0, n1, n2, n3, ks, vec,     \
                             mode, ra, sc);                                                                         \
  }

#define GEMV_ALL_M(S, T)                                                                                           \
  GEMV_ENTRY(gemv_m1_##S, 1, T, T, T)                                                                               \
  GEMV_ENTRY(gemv_m2_##S, 2, T, T, T) GEMV_ENTRY(gemv_m4_##S, 4, T, T, T) GEMV_ENTRY(gemv_m8_##S, 8, T, T, T)
RTLLM_FOR_FLOAT_TYPES(GEMV_ALL_M)

#define GEMV_F8_ALL_M(S, T)                                                                                        \
  GEMV_ENTRY(gemv_f8_m1_##S, 1, bf16, e4m3, T)                                                                      \
  GEMV_ENTRY(gemv_f8_m2_##S, 2, bf16, e4m3, T)                                                                      \
  GEMV_ENTRY(gemv_f8_m4_##S, 4, bf16, e4m3, T) GEMV_ENTRY(gemv_f8_m8_##S, 8, bf16, e4m3, T)
GEMV_F8_ALL_M(bf16, bf16)
GEMV_F8_ALL_M(f16, f16)
