// paged_attention, decode kernel (see attention.cuh): pa_decode<GT>_<act>_<cache> for every float
// activation type, cache type (f32, bf16, f16, f8) and GT (query heads per block) 1, 2, 4 or 8,
// for sequences with exactly one new token.

#include "attention.cuh"

// ---------------------------------------------------------------------------------------------
// 2. Decode.
//
// A lane owns 8 consecutive head dims of one key (one 16-byte load of a 16-bit cache, two of an
// f32 one, one 8-byte load of an FP8 one; D is a multiple of 8, so chunks stay aligned); FP8
// codes are decoded exactly, then times the layer's k_scale / v_scale; LPK = pow2ceil(D / 8) lanes
// hold a key (lanes past D / 8 idle: zero q and K/V, but in every shuffle), so a warp reads
// KPW = 32 / LPK keys per step (32 for D = 8, 16 for D = 16, 4 for D = 48, 1 for D > 128) and
// reduces each key's dot products over its LPK lanes with xor shuffles. Each of the block's 4
// warps keeps its own online-softmax state (m, l, acc for the GT heads) in registers, updated
// once per round of R steps; steps past the split's last key are skipped (warp-uniform: a split
// of 16 keys costs one step, not R). The warps then merge through shared memory. The splits of
// a row (a cluster) merge with no cluster-wide barrier after the PDL wait: rank 0 owns an
// mbarrier, initialised and published before the wait (one relaxed cluster barrier, whose
// arrive is long past when anyone waits on it); every other split pushes its merged (acc, m, l)
// into rank 0's shared memory with st.async, which counts the bytes on that mbarrier, and exits;
// rank 0 waits for the bytes, merges and writes the row's output. Scores use exp2 with q
// pre-scaled by scale * log2(e).

#define PD_WARPS 4
#define PD_MAX_CLUSTER 8  // the host's MAX_CLUSTER (plugins/cuda/src/attention_plan.rs)
#define PD_THREADS (PD_WARPS * 32)
#define PD_NONE (-1ll)  // a masked key
#define PD_NEW (-2ll)   // the row's new position (its K/V come from the inputs)

// A compile-time flag passed to a generic lambda.
template <bool B> struct PdFlag { static constexpr bool on = B; };

// 16 bytes of a cache row.
struct __align__(16) PdRaw {
  u32 x, y, z, w;
};

// 16-byte words per 8-element lane chunk of type C (an FP8 chunk, 8 bytes, fills half of one).
template <typename C> struct PdWords { static constexpr int N = sizeof(C) == 4 ? 2 : 1; };

// 8 bytes of an FP8 cache row.
struct __align__(8) PdRaw8 {
  u32 x, y;
};

// Loads the lane chunk (8 elements) at `p`: 16-byte loads; an FP8 chunk is one 8-byte load into
// the low half.
template <typename C>
__device__ __forceinline__ void pd_load_chunk(const C* p, PdRaw (&r)[PdWords<C>::N]) {
#pragma unroll
  for (int i = 0; i < PdWords<C>::N; ++i) r[i] = reinterpret_cast<const PdRaw*>(p)[i];
}
__device__ __forceinline__ void pd_load_chunk(const e4m3_code* p, PdRaw (&r)[1]) {
  const PdRaw8 h = *reinterpret_cast<const PdRaw8*>(p);
  r[0] = PdRaw{h.x, h.y, 0u, 0u};
}

__device__ __forceinline__ void pd_unpack_word(u32 w, float* x, float) {
  x[0] = __uint_as_float(w);
}
__device__ __forceinline__ void pd_unpack_word(u32 w, float* x, bf16) {
  x[0] = __uint_as_float(w << 16);
  x[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void pd_unpack_word(u32 w, float* x, f16) {
  f16 lo, hi;
  lo.bits = (u16)(w & 0xffffu);
  hi.bits = (u16)(w >> 16);
  x[0] = to_float(lo);
  x[1] = to_float(hi);
}

// The 8 floats of a lane chunk (an FP8 chunk: the codes' exact values, not yet scaled).
template <typename C>
__device__ __forceinline__ void pd_unpack(const PdRaw (&r)[PdWords<C>::N], float (&x)[8]) {
  constexpr int PER = sizeof(C) == 4 ? 1 : 2;  // elements per 32-bit word
#pragma unroll
  for (int i = 0; i < PdWords<C>::N; ++i) {
    pd_unpack_word(r[i].x, x + (4 * i + 0) * PER, C());
    pd_unpack_word(r[i].y, x + (4 * i + 1) * PER, C());
    pd_unpack_word(r[i].z, x + (4 * i + 2) * PER, C());
    pd_unpack_word(r[i].w, x + (4 * i + 3) * PER, C());
  }
}
template <>
__device__ __forceinline__ void pd_unpack<e4m3_code>(const PdRaw (&r)[1], float (&x)[8]) {
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    x[e] = e4m3_to_f32((r[0].x >> (8 * e)) & 0xffu);
    x[4 + e] = e4m3_to_f32((r[0].y >> (8 * e)) & 0xffu);
  }
}

// A lane chunk read from a cache of type C as the values it stands for: FP8 codes times the
// layer's scale `s` (float caches: unchanged, `s` unused).
template <typename C>
__device__ __forceinline__ void pd_decode(const PdRaw (&r)[PdWords<C>::N], float s, float (&x)[8]) {
  pd_unpack<C>(r, x);
  if (PaCodec<C>::SCALED) {
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = __fmul_rn(x[e], s);
  }
}

// 8 consecutive activations at `p` as floats: plain (coherent) 16-byte loads when `vec` (the
// tensor is 16-byte aligned, so every lane chunk is), else element by element.
template <typename A>
__device__ __forceinline__ void pd_load8(const A* p, bool vec, float (&x)[8]) {
  if (vec) {
    PdRaw r[PdWords<A>::N];
#pragma unroll
    for (int i = 0; i < PdWords<A>::N; ++i) r[i] = reinterpret_cast<const PdRaw*>(p)[i];
    pd_unpack<A>(r, x);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = to_float(p[e]);
  }
}

// 2^x with the MUFU instruction alone (flushes subnormal results to 0: weights under 2^-126 of
// the running max count as 0; exp2f's subnormal fix-ups would cost 4 more instructions each).
__device__ __forceinline__ float pd_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Sum (max) over the lpk lanes of a lane group: xor offsets lpk / 2 .. 1 (lpk .. 16 across the
// groups). Every level's shuffle runs and is kept only where it applies: no loop, no branch.
__device__ __forceinline__ float pd_group_sum(float x, int lpk) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, x, o);
    if (o < lpk) x += y;
  }
  return x;
}
__device__ __forceinline__ float pd_across_max(float x, int lpk) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, x, o);
    if (o >= lpk) x = fmaxf(x, y);
  }
  return x;
}

__device__ __forceinline__ u32 pd_bits(float x) { return __float_as_uint(x); }
__device__ __forceinline__ u32 pd_bits(bf16 x) { return x.bits; }
__device__ __forceinline__ u32 pd_bits(f16 x) { return x.bits; }
__device__ __forceinline__ u32 pd_bits(e4m3_code x) { return x.bits; }

// A lane chunk of a new token's row (8 activations), stored as the cache would store it (scale
// `s` for an FP8 cache).
template <typename A, typename C>
__device__ __forceinline__ void pd_pack_new(const A* src, bool vec, float s, PdRaw (&r)[PdWords<C>::N]) {
  constexpr int PER = 4 / (int)sizeof(C);  // elements per 32-bit word: 1, 2 or 4
  constexpr int WORDS = 4 * PdWords<C>::N;  // 32-bit words of the chunk's PdRaws (FP8: 2 used)
  float x[8];
  pd_load8<A>(src, vec, x);
  u32 w[WORDS];
#pragma unroll
  for (int i = 0; i < WORDS; ++i) w[i] = 0u;
#pragma unroll
  for (int i = 0; i < 8 / PER; ++i) {
#pragma unroll
    for (int j = 0; j < PER; ++j) w[i] |= pd_bits(PaCodec<C>::enc(x[i * PER + j], s)) << (8 * (int)sizeof(C) * j);
  }
#pragma unroll
  for (int i = 0; i < PdWords<C>::N; ++i) r[i] = PdRaw{w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]};
}

// Split-K merge plumbing (sm_90 clusters; never reached with one split elsewhere). Addresses are
// 32-bit shared-window addresses: this block's (`pd_smem`) or mapped into rank 0's (`pd_mapa`).
__device__ __forceinline__ u32 pd_smem(const void* p) {
  u32 a;
  asm volatile("{\n\t.reg .u64 t;\n\tcvta.to.shared.u64 t, %1;\n\tcvt.u32.u64 %0, t;\n\t}" : "=r"(a) : "l"(p));
  return a;
}

__device__ __forceinline__ u32 pd_mapa(u32 a, u32 rank) {
  u32 r = a;
#if __CUDA_ARCH__ >= 900
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(rank));
#endif
  return r;
}

// Rank 0's mbarrier: one arrival (this one, announcing `bytes`), then complete once the other
// splits' st.async bytes have all landed. The fence publishes the init to the cluster.
__device__ __forceinline__ void pd_bar_init(u32 bar, u32 bytes) {
#if __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(1u) : "memory");
  asm volatile("{\n\t.reg .b64 st;\n\tmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n\t}" ::"r"(bar),
               "r"(bytes)
               : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

// Waits (acquire, cluster scope) until rank 0's mbarrier completes its first phase.
__device__ __forceinline__ void pd_bar_wait(u32 bar) {
#if __CUDA_ARCH__ >= 900
  u32 done = 0;
  while (!done) {
    asm volatile(
        "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n\t"
        "selp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(done)
        : "r"(bar), "r"(0u)
        : "memory");
  }
#endif
}

// The cluster barrier that publishes the mbarrier: every thread arrives (relaxed) right after
// the init, and waits before its first push.
__device__ __forceinline__ void pd_cluster_arrive() {
#if __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void pd_cluster_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
#endif
}

// Stores 4 (or 2) floats at `dst` in rank 0's shared memory; their bytes complete on `bar`.
__device__ __forceinline__ void pd_push4(u32 dst, const float (&x)[4], u32 bar) {
#if __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];" ::"r"(dst),
               "r"(__float_as_uint(x[0])), "r"(__float_as_uint(x[1])), "r"(__float_as_uint(x[2])),
               "r"(__float_as_uint(x[3])), "r"(bar)
               : "memory");
#endif
}
__device__ __forceinline__ void pd_push2(u32 dst, float a, float b, u32 bar) {
#if __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.b32 [%0], {%1, %2}, [%3];" ::"r"(dst),
               "r"(__float_as_uint(a)), "r"(__float_as_uint(b)), "r"(bar)
               : "memory");
#endif
}

// Decode: grid (S * KVH * ceil(G / GT) * NS), clusters of NS blocks along x, block 128, dynamic
// shared memory (floats): per warp acc [GT][D], m [GT], l [GT]; with NS > 1 rank 0's receive
// area, acc [NS - 1][GT][D] and (m, l) [NS - 1][GT][2], then the mbarrier (8 bytes).
template <typename A, typename C, int GT, int R>
__device__ void pa_decode(const A* q, const A* k, const A* v, C* k_cache,
                          C* v_cache, const int* block_tables, const int* seq_lens,
                          const int* query_start, A* out, PaGeom g, int ns, const float* k_scale,
                          const float* v_scale) {
  extern __shared__ __align__(16) float pd_sm[];
  // Programmatic dependent launch: until pdl_wait() this block reads only what no kernel of
  // this step writes (the step's uploaded inputs: query_start, seq_lens, block tables; cache
  // rows of earlier positions), so the row's indices and its first round of cached K/V load
  // while the Q/K/V projection before this kernel finishes. q, the new token's k/v and every
  // global write come after the wait. Blocks that exit early wait first all the same: the kernel
  // after this one is ordered only after this one's completion, and this one may complete only
  // once every block has waited for the kernels before it (e.g. the prefill launch of the op).
  pdl_trigger();
  // The layer's cache scales are weights: no kernel of this step writes them.
  const PaScales kvs = pa_scales<C>(k_scale, v_scale);
  const int D = g.D, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int HT = (g.G + GT - 1) / GT;
  const int rank = ns > 1 ? (int)cluster_rank() : 0;
  const int item = blockIdx.x / ns;
  const int s = item / (g.KVH * HT);
  const int rem = item - s * (g.KVH * HT);
  const int kvh = rem / HT, ht = rem - kvh * HT;
  // Exits before the cluster barrier depend on the row only, so they are cluster-uniform.
  if (s >= g.S) {
    pdl_wait();
    return;
  }
  const int t = query_start[s], t_end = query_start[s + 1], pos = seq_lens[s] - 1;
  if (t_end - t != 1 || t < 0 || t >= g.T) {  // not a decode row
    pdl_wait();
    return;
  }
  float* w_acc = pd_sm;                        // [PD_WARPS][GT][D]
  float* w_m = w_acc + PD_WARPS * GT * D;      // [PD_WARPS][GT]
  float* w_l = w_m + PD_WARPS * GT;            // [PD_WARPS][GT]
  float* r_acc = w_l + PD_WARPS * GT;          // [ns - 1][GT][D] (rank 0)
  float* r_ml = r_acc + (ns - 1) * GT * D;     // [ns - 1][GT][2] (rank 0)
  const u32 bar = pd_smem(r_ml + (ns - 1) * GT * 2);
  if (ns > 1) {
    if (rank == 0 && tid == 0) pd_bar_init(bar, (u32)((ns - 1) * GT * (D + 2) * 4));
    pd_cluster_arrive();
  }
  const int first = pa_first_key(pos, g.window);
  const int len = pos >= 0 ? pos - first + 1 : 0;
  const int chunk = (((len + ns - 1) / ns) + 7) & ~7;
  const int klo = first + rank * chunk;
  const int khi = min(pos, klo + chunk - 1);  // empty when klo > khi
  const int h0 = kvh * g.G + ht * GT;
  const int nh = min(GT, g.G - ht * GT);
  const long long new_row = ((long long)t * g.KVH + kvh) * D;

  const int DC = D >> 3;  // 8-element chunks per key row
  const float inv_d = 1.0f / (float)D;
  int lpk = 1;
  while (lpk < DC) lpk <<= 1;
  const int kpw = 32 / lpk;
  const int gi = lane / lpk, li = lane - gi * lpk;
  const bool lane_on = li < DC;
  const int d0 = li * 8;
  constexpr int NW = PdWords<C>::N;

  float m[GT], l[GT], acc[GT][8];
#pragma unroll
  for (int j = 0; j < GT; ++j) {
    m[j] = NEG_INF;
    l[j] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[j][e] = 0.0f;
  }

  // Key p of a round: lane group gi of warp `warp`, step r. Its cache offset, or PD_NEW (the
  // new position: read from the inputs) or PD_NONE (masked). Step r of the warp covers keys
  // kb + (r * PD_WARPS + warp) * kpw + [0, kpw): it is live when its first key is <= khi.
  const int round_keys = PD_WARPS * kpw * R;
  const int* bt_row = block_tables + (long long)s * g.MB;
  const bool bs_pow2 = (g.BS & (g.BS - 1)) == 0;
  const int bs_shift = __ffs(g.BS) - 1;
  const bool vec_k = aligned16(k), vec_v = aligned16(v);
  long long at[R];
  auto locate = [&](int kb) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int p = kb + (r * PD_WARPS + warp) * kpw + gi;
      long long a = PD_NONE;
      if (p == pos && p <= khi) {
        a = PD_NEW;
      } else if (p <= khi) {
        const int lb = bs_pow2 ? p >> bs_shift : p / g.BS;
        const int off = p - lb * g.BS;
        const int blk = lb < g.MB ? bt_row[lb] : -1;
        // (blk * BS + off) * KVH + kvh < NB * BS * KVH, checked on the host to fit an int.
        if (blk >= 0 && blk < g.NB) a = (long long)((blk * g.BS + off) * g.KVH + kvh) * D;
      }
      at[r] = a;
    }
  };
  // Loads the round's K (or V) chunks; masked keys get zeros (V must be finite: weight 0).
  // Before pdl_wait (`fresh_ready` false) the new position's chunks are filled in after it
  // (16-byte loads where aligned); a later round reads them element by element (one lane group,
  // once).
  auto load = [&](const C* cache, const A* fresh, float s, PdRaw (&raw)[R][NW], bool fresh_ready) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (lane_on && at[r] >= 0) {
        pd_load_chunk(cache + at[r] + d0, raw[r]);
      } else if (lane_on && at[r] == PD_NEW) {
        if (fresh_ready) pd_pack_new<A, C>(fresh + new_row + d0, false, s, raw[r]);
      } else {
#pragma unroll
        for (int i = 0; i < NW; ++i) raw[r][i] = PdRaw{0u, 0u, 0u, 0u};
      }
    }
  };
  // Software pipeline: the next round's K loads go out once this round's scores are done, its
  // V loads once this round's V is consumed.
  PdRaw kr[R][NW], vr[R][NW];
  locate(klo);
  load(k_cache, k, kvs.k, kr, false);
  load(v_cache, v, kvs.v, vr, false);

  pdl_wait();
  // The split that owns the new position stores the token's K/V (head tile 0 only).
  if (ht == 0 && pos >= 0 && klo <= pos && pos <= khi) {
    const long long slot = pa_slot(block_tables, g, s, pos, kvh);
    if (slot >= 0) pa_store_row<A, C>(k, v, k_cache, v_cache, new_row, slot, D, kvs);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (lane_on && at[r] == PD_NEW) {
      pd_pack_new<A, C>(k + new_row + d0, vec_k, kvs.k, kr[r]);
      pd_pack_new<A, C>(v + new_row + d0, vec_v, kvs.v, vr[r]);
    }
  }
  float qf[GT][8];
  const float qscale = g.scale * PA_LOG2E;
  const bool vec_q = aligned16(q);
#pragma unroll
  for (int j = 0; j < GT; ++j) {
    if (lane_on && j < nh) {
      pd_load8<A>(q + ((long long)t * g.H + h0 + j) * D + d0, vec_q, qf[j]);
#pragma unroll
      for (int e = 0; e < 8; ++e) qf[j][e] *= qscale;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) qf[j][e] = 0.0f;
    }
  }

  // One round from key kb. FULL: every step of every warp is live, compiled without per-step
  // branches (the R steps' shuffle chains interleave); it loads the next round as it goes.
  // Otherwise (the split's last keys, fewer than a round) dead steps are skipped and nothing
  // follows.
  auto round = [&](int kb, auto full) {
    constexpr bool FULL = decltype(full)::on;
    bool live[R];
#pragma unroll
    for (int r = 0; r < R; ++r) live[r] = FULL || kb + (r * PD_WARPS + warp) * kpw <= khi;
    // Scores of the lane group's R keys for the GT heads (log2 domain).
    float sc[R][GT];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int j = 0; j < GT; ++j) sc[r][j] = NEG_INF;
      if (!live[r]) continue;
      float kf[8];
      pd_decode<C>(kr[r], kvs.k, kf);
      const bool ok = at[r] != PD_NONE;
#pragma unroll
      for (int j = 0; j < GT; ++j) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot = fmaf(qf[j][e], kf[e], dot);
        dot = pd_group_sum(dot, lpk);
        sc[r][j] = ok ? dot : NEG_INF;
      }
    }
    if (FULL) {
      locate(kb + round_keys);
      load(k_cache, k, kvs.k, kr, true);
    }
    // Online softmax, once per round: the warp's max, then weights and rescaled sums.
#pragma unroll
    for (int j = 0; j < GT; ++j) {
      float mx = sc[0][j];
#pragma unroll
      for (int r = 1; r < R; ++r) mx = fmaxf(mx, sc[r][j]);
      mx = pd_across_max(mx, lpk);
      const float mn = fmaxf(m[j], mx);
      const float base = mn == NEG_INF ? 0.0f : mn;  // nothing seen yet: every weight is 0
      const float alpha = pd_exp2(m[j] - base);
      m[j] = mn;
      float psum = 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        sc[r][j] = live[r] ? pd_exp2(sc[r][j] - base) : 0.0f;
        psum += sc[r][j];
      }
      l[j] = l[j] * alpha + psum;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[j][e] *= alpha;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (!live[r]) continue;
      float vf[8];
      pd_decode<C>(vr[r], kvs.v, vf);
#pragma unroll
      for (int j = 0; j < GT; ++j)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[j][e] = fmaf(sc[r][j], vf[e], acc[j][e]);
    }
    if (FULL) load(v_cache, v, kvs.v, vr, true);
  };
  int kb = klo;
  for (; kb + round_keys - kpw <= khi; kb += round_keys) round(kb, PdFlag<true>());
  if (kb <= khi) round(kb, PdFlag<false>());

  // Sum the warp's lane groups (m is warp-uniform), then merge the warps.
#pragma unroll
  for (int j = 0; j < GT; ++j) {
    for (int o = lpk; o < 32; o <<= 1) {
      l[j] += __shfl_xor_sync(0xffffffffu, l[j], o);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[j][e] += __shfl_xor_sync(0xffffffffu, acc[j][e], o);
    }
  }
  if (gi == 0 && lane_on) {
#pragma unroll
    for (int j = 0; j < GT; ++j) {
      PdRaw* dst = reinterpret_cast<PdRaw*>(w_acc + (warp * GT + j) * D + d0);
      dst[0] = PdRaw{__float_as_uint(acc[j][0]), __float_as_uint(acc[j][1]), __float_as_uint(acc[j][2]),
                     __float_as_uint(acc[j][3])};
      dst[1] = PdRaw{__float_as_uint(acc[j][4]), __float_as_uint(acc[j][5]), __float_as_uint(acc[j][6]),
                     __float_as_uint(acc[j][7])};
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < GT; ++j) {
      w_m[warp * GT + j] = m[j];
      w_l[warp * GT + j] = l[j];
    }
  }
  __syncthreads();
  // rank 0's receive area and mbarrier, mapped (only other ranks push).
  u32 to_acc = 0, to_ml = 0, to_bar = 0;
  if (ns > 1) {
    pd_cluster_wait();  // rank 0's mbarrier is initialised (everyone arrived before pdl_wait)
    if (rank != 0) {
      to_acc = pd_mapa(pd_smem(r_acc + (rank - 1) * GT * D), 0);
      to_ml = pd_mapa(pd_smem(r_ml + (rank - 1) * GT * 2), 0);
      to_bar = pd_mapa(bar, 0);
    }
  }
  // Four consecutive elements (of one head) per thread: this block's merge of its warps, then
  // either pushed to rank 0 or merged with the other splits' states and written out.
  bool waited = ns == 1;
  for (int qd = tid; qd < GT * D / 4; qd += PD_THREADS) {
    const int idx = qd * 4, j = (int)(((float)idx + 0.5f) * inv_d);  // idx / D, exactly
    float mx = NEG_INF;
#pragma unroll
    for (int w = 0; w < PD_WARPS; ++w) mx = fmaxf(mx, w_m[w * GT + j]);
    float sum = 0.0f, a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    {
      const float base = mx == NEG_INF ? 0.0f : mx;
#pragma unroll
      for (int w = 0; w < PD_WARPS; ++w) {
        const float f = pd_exp2(w_m[w * GT + j] - base);
        const PdRaw x = *reinterpret_cast<const PdRaw*>(w_acc + w * GT * D + idx);
        sum += w_l[w * GT + j] * f;
        a[0] += __uint_as_float(x.x) * f;
        a[1] += __uint_as_float(x.y) * f;
        a[2] += __uint_as_float(x.z) * f;
        a[3] += __uint_as_float(x.w) * f;
      }
    }
    if (rank != 0) {
      pd_push4(to_acc + idx * 4, a, to_bar);
      if (idx - j * D == 0) pd_push2(to_ml + j * 8, mx, sum, to_bar);
      continue;
    }
    if (!waited) {
      pd_bar_wait(bar);
      waited = true;
    }
    // Every other split's state of these elements, loaded at once, then combined in rank order.
    float mr[PD_MAX_CLUSTER - 1], lr[PD_MAX_CLUSTER - 1];
    PdRaw ar[PD_MAX_CLUSTER - 1];
#pragma unroll
    for (int r = 0; r < PD_MAX_CLUSTER - 1; ++r) {
      if (r < ns - 1) {
        mr[r] = r_ml[(r * GT + j) * 2];
        lr[r] = r_ml[(r * GT + j) * 2 + 1];
        ar[r] = *reinterpret_cast<const PdRaw*>(r_acc + r * GT * D + idx);
      }
    }
    float mall = mx;
#pragma unroll
    for (int r = 0; r < PD_MAX_CLUSTER - 1; ++r)
      if (r < ns - 1) mall = fmaxf(mall, mr[r]);
    const float base = mall == NEG_INF ? 0.0f : mall;
    const float f0 = pd_exp2(mx - base);
    sum *= f0;
#pragma unroll
    for (int e = 0; e < 4; ++e) a[e] *= f0;
#pragma unroll
    for (int r = 0; r < PD_MAX_CLUSTER - 1; ++r) {
      if (r < ns - 1) {
        const float f = pd_exp2(mr[r] - base);
        sum += lr[r] * f;
        a[0] += __uint_as_float(ar[r].x) * f;
        a[1] += __uint_as_float(ar[r].y) * f;
        a[2] += __uint_as_float(ar[r].z) * f;
        a[3] += __uint_as_float(ar[r].w) * f;
      }
    }
    if (j < nh) {
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      A* o = out + ((long long)t * g.H + h0) * D + idx;
#pragma unroll
      for (int e = 0; e < 4; ++e) o[e] = from_float<A>(a[e] * inv);
    }
  }
}


// ---------------------------------------------------------------------------------------------
// Entry points: pa_decode<GT>_<act>_<cache>.

#define PD_ENTRY(GT, R, SA, TA, SC, TC)                                                                       \
  extern "C" __global__ void __launch_bounds__(PD_THREADS)                                                   \
      pa_decode##GT##_##SA##_##SC(PA_KERNEL_PTRS(TA, TC), PA_GEOM_PARAMS, int ns) {                           \
    pa_decode<TA, TC, GT, R>(q, k, v, k_cache, v_cache, block_tables, seq_lens, query_start, out, PA_GEOM, ns, \
                             k_scale, v_scale);                                                             \
  }

#define PD_ENTRIES(SA, TA, SC, TC) \
  PD_ENTRY(1, 4, SA, TA, SC, TC) PD_ENTRY(2, 4, SA, TA, SC, TC) PD_ENTRY(4, 4, SA, TA, SC, TC) PD_ENTRY(8, 2, SA, TA, SC, TC)

#define PD_FOR_CACHE(SA, TA)                                                                 \
  PD_ENTRIES(SA, TA, f32, float) PD_ENTRIES(SA, TA, bf16, bf16) PD_ENTRIES(SA, TA, f16, f16) \
  PD_ENTRIES(SA, TA, f8, e4m3_code)
RTLLM_FOR_FLOAT_TYPES(PD_FOR_CACHE)
