// paged_attention (shared part): causal (optionally sliding-window) GQA attention over a paged KV cache for a
// packed batch mixing prefill and decode sequences. At most two launches, every grid sized from
// the metas only (CUDA-graph safe); blocks whose work is empty exit early. No workspace.
//   1. pa_prefill (only when T >= 2): sequences with >= 2 new tokens. One block per (tile of 32
//      query rows, KV head); a query row is (token, query head of the KV group). The block first
//      writes the new K/V rows of the tokens whose first row it holds into the cache; keys come
//      from the cache for cached positions and straight from the k/v inputs (rounded to the
//      cache dtype) for the sequence's new positions, so no block waits on another's writes.
//      K/V tiles of 32 keys go through shared memory; online softmax with f32 accumulation.
//      A lane owns dims lane + 32c of a row's output; V rows are zero-padded to a whole number
//      of 32 (DP), so head dims that are not a multiple of 32 leave the top lanes idle.
//   2. pa_decode<GT> (sequences with exactly 1 new token): one block per (sequence, KV head,
//      tile of GT query heads of the group, split). The splits of one row form a thread-block
//      cluster (sm_90): each pushes its partial softmax state into rank 0's shared memory
//      (st.async, counted on an mbarrier) and exits; rank 0 merges and writes the output, so
//      split-K needs no workspace, no combine pass and no cluster-wide barrier after the PDL
//      wait. The split owning the new position writes the token's K/V into the cache and reads
//      that key from the inputs.
// Invalid int inputs (out-of-range block ids, offsets) never read or write out of bounds: the
// affected rows/keys are skipped (their outputs are then unspecified).
//
// Types: A = activation (q, k, v, out), C = cache element (f32, bf16, f16, or e4m3_code: the FP8
// cache, which stores e4m3(x / scale) and reads code * scale with the layer's k_scale / v_scale,
// device scalars read by the kernels: nothing on the host, so launches stay graph-capturable).
// All math in f32.
//
// This header holds what both kernels share (geometry, cache slots, the K/V store, the entry
// points' parameter lists); attention_prefill.cu and attention_decode.cu include it.

#define PA_ROWS 32      // query rows per prefill block (8 per warp)
#define PA_KEYS 32      // keys per shared K/V tile
#define PA_THREADS 128  // 4 warps
#define PA_MAX_DC 8     // ceil(head_dim / 32) at most (head_dim <= 256)
#define PA_LOG2E 1.4426950408889634f

// Prefill shared memory (floats) for head dim D: Q [32][D], K [32][D+1], V [32][DP] (DP = D
// rounded up to 32, zero-padded), P [32][32], key slots [32] and new-token indices [32] (ints).
__device__ __forceinline__ int pa_shared_floats(int D) {
  return PA_ROWS * D + PA_KEYS * (D + 1) + PA_KEYS * ((D + 31) & ~31) + PA_ROWS * PA_KEYS + 2 * PA_KEYS;
}

// The batch geometry every attention kernel reads.
struct PaGeom {
  int T, S, MB, NB, BS, H, KVH, D, G, window;
  float scale;
};

// First key position a query at `pos` sees.
__device__ __forceinline__ int pa_first_key(int pos, int window) {
  if (window <= 0) return 0;
  int lo = pos + 1 - window;
  return lo > 0 ? lo : 0;
}

// Element offset of key position `p` of sequence `s`, KV head `kvh`, in a cache; -1 when the
// position or its block id is out of range.
__device__ __forceinline__ long long pa_slot(const int* block_tables, const PaGeom& g, int s, int p, int kvh) {
  if (p < 0) return -1;
  const int lb = p / g.BS;
  if (lb >= g.MB) return -1;
  const int blk = block_tables[(long long)s * g.MB + lb];
  if (blk < 0 || blk >= g.NB) return -1;
  return (((long long)blk * g.BS + (p % g.BS)) * g.KVH + kvh) * g.D;
}

// The cache's codec: a float cache stores values as they are (the scale is 1 and unused); the
// FP8 cache stores e4m3(x / s) (a true division, as plugin-api) and reads code * s.
template <typename C> struct PaCodec {
  static constexpr bool SCALED = false;
  static __device__ __forceinline__ C enc(float x, float) { return from_float<C>(x); }
  static __device__ __forceinline__ float dec(C c, float) { return to_float(c); }
};
template <> struct PaCodec<e4m3_code> {
  static constexpr bool SCALED = true;
  static __device__ __forceinline__ e4m3_code enc(float x, float s) { return from_float<e4m3_code>(__fdiv_rn(x, s)); }
  static __device__ __forceinline__ float dec(e4m3_code c, float s) { return __fmul_rn(to_float(c), s); }
};

// The layer's cache scales (1 for float caches, whose scale pointers are null and never read).
struct PaScales {
  float k, v;
};
template <typename C>
__device__ __forceinline__ PaScales pa_scales(const float* k_scale, const float* v_scale) {
  if (!PaCodec<C>::SCALED) return PaScales{1.0f, 1.0f};
  return PaScales{k_scale[0], v_scale[0]};
}

// A value as the cache stores it (encoded as C with scale s), back in f32.
template <typename C, typename A>
__device__ __forceinline__ float pa_as_cached(A x, float s) {
  return PaCodec<C>::dec(PaCodec<C>::enc(to_float(x), s), s);
}

// Copies new token row `src` (KV head slice of k and v, D elements) to cache offset `at`;
// threads of the block stride over the dims.
template <typename A, typename C>
__device__ __forceinline__ void pa_store_row(const A* k, const A* v, C* k_cache, C* v_cache,
                                             long long src, long long at, int D, PaScales kvs) {
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    k_cache[at + d] = PaCodec<C>::enc(to_float(k[src + d]), kvs.k);
    v_cache[at + d] = PaCodec<C>::enc(to_float(v[src + d]), kvs.v);
  }
}


// Entry points' parameters: pointers, then the geometry.
#define PA_GEOM_PARAMS \
  int T, int S, int MB, int NB, int BS, int H, int KVH, int D, int window, float scale
#define PA_GEOM PaGeom{T, S, MB, NB, BS, H, KVH, D, H / KVH, window, scale}
#define PA_KERNEL_PTRS(TA, TC)                                                                              \
  const TA *q, const TA *k, const TA *v, TC *k_cache, TC *v_cache, const int *block_tables, const int *seq_lens, \
      const int *query_start, TA *out, const float *k_scale, const float *v_scale
