// paged_attention, prefill kernel (see attention.cuh): pa_prefill_<act>_<cache> for every float
// activation type and cache type (f32, bf16, f16, f8), for sequences with >= 2 new tokens.

#include "attention.cuh"

// ---------------------------------------------------------------------------------------------
// 1. Prefill.

// One block's work: 32 consecutive query rows rho0.. (row rho = token i * G + head g within the
// KV group) of sequence s (new tokens at packed q0.., first new position `start`), KV head
// `kvh`, keys restricted to [klo, khi] on top of each row's causal/window range. Positions from
// `start` on are the sequence's new tokens: their keys come from the k/v inputs.
struct PaTile {
  int s, q0, q_len, start, kvh, rho0, n_rows, klo, khi;
};

// Runs the tile. On return each warp's lanes hold, for the warp's 8 rows, the running max `m`,
// sum `l` and unnormalised accumulator `o[r][c]` (dims lane + 32c, meaningful where < D), and
// `valid` rows.
template <typename A, typename C>
__device__ void pa_run_tile(const A* q, const A* k, const A* v,
                            const C* k_cache, const C* v_cache, const int* block_tables, const PaGeom& g, const PaTile& tile,
                            const PaScales kvs, float* smem,
                            float (&m)[8], float (&l)[8], float (&o)[8][PA_MAX_DC], bool (&valid)[8], int (&pos)[8]) {
  const int D = g.D, DC = (D + 31) >> 5, DP = DC << 5;
  float* Qs = smem;                         // [32][D]
  float* Ks = Qs + PA_ROWS * D;             // [32][D+1]
  float* Vs = Ks + PA_KEYS * (D + 1);       // [32][DP], dims D.. zero
  float* Ps = Vs + PA_KEYS * DP;            // [32][32]
  int* slots = (int*)(Ps + PA_ROWS * PA_KEYS);  // [32] (cache element offset / D, or -1)
  int* toks = slots + PA_KEYS;                  // [32] (packed token of a new key, or -1)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  // Q rows (pre-scaled), zero for rows outside the tile.
  for (int idx = tid; idx < PA_ROWS * D; idx += PA_THREADS) {
    const int r = idx / D, d = idx - r * D, rho = tile.rho0 + r;
    float val = 0.0f;
    if (rho < tile.n_rows) {
      const int i = rho / g.G, h = tile.kvh * g.G + (rho - i * g.G), t = tile.q0 + i;
      if (t >= 0 && t < g.T) val = to_float(q[((long long)t * g.H + h) * D + d]) * g.scale;
    }
    Qs[idx] = val;
  }
  bool any_valid = false;
#pragma unroll
  for (int rr = 0; rr < 8; ++rr) {
    const int rho = tile.rho0 + warp * 8 + rr;
    const int i = rho / g.G, t = tile.q0 + i;
    valid[rr] = rho < tile.n_rows && t >= 0 && t < g.T && tile.start + i >= 0;
    pos[rr] = tile.start + i;
    any_valid |= valid[rr];
    m[rr] = NEG_INF;
    l[rr] = 0.0f;
#pragma unroll
    for (int c = 0; c < PA_MAX_DC; ++c) o[rr][c] = 0.0f;
  }

  for (int k0 = tile.klo; k0 <= tile.khi; k0 += PA_KEYS) {
    __syncthreads();  // the previous tile's K/V/slots (and, first time, Q) are done with
    if (tid < PA_KEYS) {
      const int p = k0 + tid;
      int sl = -1, tk = -1;
      if (p <= tile.khi && p >= tile.start) {
        tk = tile.q0 + (p - tile.start);
        if (tk < 0 || tk >= g.T) tk = -1;
      } else if (p <= tile.khi) {
        const long long at = pa_slot(block_tables, g, tile.s, p, tile.kvh);
        sl = at < 0 ? -1 : (int)(at / D);
      }
      slots[tid] = sl;
      toks[tid] = tk;
    }
    __syncthreads();
    for (int idx = tid; idx < PA_KEYS * DP; idx += PA_THREADS) {
      const int j = idx / DP, d = idx - j * DP, sl = slots[j], tk = toks[j];
      float kv = 0.0f, vv = 0.0f;
      if (d < D && sl >= 0) {
        const long long at = (long long)sl * D + d;
        kv = PaCodec<C>::dec(k_cache[at], kvs.k);
        vv = PaCodec<C>::dec(v_cache[at], kvs.v);
      } else if (d < D && tk >= 0) {
        const long long at = ((long long)tk * g.KVH + tile.kvh) * D + d;
        kv = pa_as_cached<C>(k[at], kvs.k);
        vv = pa_as_cached<C>(v[at], kvs.v);
      }
      if (d < D) Ks[j * (D + 1) + d] = kv;
      Vs[idx] = vv;  // the padding dims stay 0
    }
    __syncthreads();
    if (!any_valid) continue;  // warp-uniform: no rows in this warp

    // Scores: lane j = key k0 + j, rows warp*8 + rr.
    float sc[8];
#pragma unroll
    for (int rr = 0; rr < 8; ++rr) sc[rr] = 0.0f;
    const float* kj = Ks + lane * (D + 1);
    const float* qw = Qs + warp * 8 * D;
    for (int d = 0; d < D; ++d) {
      const float kd = kj[d];
#pragma unroll
      for (int rr = 0; rr < 8; ++rr) sc[rr] = fmaf(qw[rr * D + d], kd, sc[rr]);
    }
    const int p = k0 + lane;
    const bool key_ok = slots[lane] >= 0 || toks[lane] >= 0;
#pragma unroll
    for (int rr = 0; rr < 8; ++rr) {
      const bool ok = valid[rr] && key_ok && p <= pos[rr] && p >= pa_first_key(pos[rr], g.window);
      const float s = ok ? sc[rr] : NEG_INF;
      const float m_new = fmaxf(m[rr], warp_max(s));
      float w = 0.0f, alpha = 1.0f;
      if (m_new != NEG_INF) {
        alpha = m[rr] == NEG_INF ? 0.0f : expf(m[rr] - m_new);
        w = ok ? expf(s - m_new) : 0.0f;
      }
      l[rr] = l[rr] * alpha + warp_sum(w);
      m[rr] = m_new;
#pragma unroll
      for (int c = 0; c < PA_MAX_DC; ++c) o[rr][c] *= alpha;
      Ps[(warp * 8 + rr) * PA_KEYS + lane] = w;
    }
    __syncwarp();
    for (int j = 0; j < PA_KEYS; ++j) {
      const float* vj = Vs + j * DP;
#pragma unroll
      for (int c = 0; c < PA_MAX_DC; ++c) {
        if (c < DC) {
          const float vd = vj[lane + 32 * c];
#pragma unroll
          for (int rr = 0; rr < 8; ++rr) o[rr][c] = fmaf(Ps[(warp * 8 + rr) * PA_KEYS + j], vd, o[rr][c]);
        }
      }
    }
    __syncwarp();
  }
}

// The sequence and first row of prefill tile `tile` (sequences with >= 2 new tokens, each cut
// into ceil(q_len * G / 32) tiles in sequence order). Warp 0 computes it; the caller syncs.
__device__ void pa_find_tile(const int* query_start, int S, int G, int tile, int* out) {
  const int lane = threadIdx.x & 31;
  int base = 0, found_s = -1, found_rho0 = 0;
  for (int s0 = 0; s0 < S; s0 += 32) {
    const int s = s0 + lane;
    int n = 0;
    if (s < S) {
      const int ql = query_start[s + 1] - query_start[s];
      if (ql >= 2) n = (int)(((long long)ql * G + PA_ROWS - 1) / PA_ROWS);
    }
    int inc = n;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int up = __shfl_up_sync(0xffffffffu, inc, o);
      if (lane >= o) inc += up;
    }
    const int excl = base + inc - n;
    const unsigned hit = __ballot_sync(0xffffffffu, n > 0 && tile >= excl && tile < excl + n);
    const int total = __shfl_sync(0xffffffffu, inc, 31);
    if (hit) {
      const int src = __ffs(hit) - 1;
      const int src_excl = __shfl_sync(0xffffffffu, excl, src);
      found_s = s0 + src;
      found_rho0 = (tile - src_excl) * PA_ROWS;
      break;
    }
    base += total;
  }
  if (lane == 0) {
    out[0] = found_s;
    out[1] = found_rho0;
  }
}

// Prefill: grid (ceil(T * G / 32) + min(S, T / 2), KVH), block 128, dynamic shared
// pa_shared_floats(D) floats.
template <typename A, typename C>
__device__ void pa_prefill(const A* q, const A* k, const A* v, C* k_cache,
                           C* v_cache, const int* block_tables, const int* seq_lens,
                           const int* query_start, A* out, PaGeom g, const PaScales kvs) {
  extern __shared__ float smem[];
  __shared__ int found[2];
  if (threadIdx.x < 32) pa_find_tile(query_start, g.S, g.G, blockIdx.x, found);
  __syncthreads();
  const int s = found[0];
  if (s < 0) return;  // block-uniform
  PaTile tile;
  tile.s = s;
  tile.q0 = query_start[s];
  tile.q_len = query_start[s + 1] - tile.q0;
  tile.start = seq_lens[s] - tile.q_len;
  tile.kvh = blockIdx.y;
  tile.rho0 = found[1];
  tile.n_rows = tile.q_len * g.G;
  const int last_rho = min(tile.rho0 + PA_ROWS, tile.n_rows) - 1;
  tile.klo = pa_first_key(tile.start + tile.rho0 / g.G, g.window);
  tile.khi = tile.start + last_rho / g.G;
  if (tile.start < 0 || tile.q0 < 0 || tile.q0 + tile.q_len > g.T) return;
  // The new K/V of the tokens whose first row (head 0 of the group) is in this tile. Nothing in
  // this launch reads those slots back: new keys come from the inputs.
  for (int i = (tile.rho0 + g.G - 1) / g.G; i <= last_rho / g.G; ++i) {
    const long long at = pa_slot(block_tables, g, s, tile.start + i, tile.kvh);
    if (at >= 0)
      pa_store_row<A, C>(k, v, k_cache, v_cache, ((long long)(tile.q0 + i) * g.KVH + tile.kvh) * g.D, at, g.D, kvs);
  }
  float m[8], l[8], o[8][PA_MAX_DC];
  bool valid[8];
  int pos[8];
  pa_run_tile<A, C>(q, k, v, k_cache, v_cache, block_tables, g, tile, kvs, smem, m, l, o, valid, pos);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, DC = (g.D + 31) >> 5;
#pragma unroll
  for (int rr = 0; rr < 8; ++rr) {
    if (!valid[rr]) continue;
    const int rho = tile.rho0 + warp * 8 + rr;
    const int i = rho / g.G, h = tile.kvh * g.G + (rho - i * g.G);
    const float inv = l[rr] > 0.0f ? 1.0f / l[rr] : 0.0f;
    A* orow = out + ((long long)(tile.q0 + i) * g.H + h) * g.D;
#pragma unroll
    for (int c = 0; c < PA_MAX_DC; ++c)
      if (c < DC && lane + 32 * c < g.D) orow[lane + 32 * c] = from_float<A>(o[rr][c] * inv);
  }
}


// ---------------------------------------------------------------------------------------------
// Entry points: pa_prefill_<act>_<cache>.

#define PA_PREFILL_ENTRY(SA, TA, SC, TC)                                                                    \
  extern "C" __global__ void __launch_bounds__(PA_THREADS)                                                   \
      pa_prefill_##SA##_##SC(PA_KERNEL_PTRS(TA, TC), PA_GEOM_PARAMS) {                                       \
    pdl_enter();                                                                                            \
    pa_prefill<TA, TC>(q, k, v, k_cache, v_cache, block_tables, seq_lens, query_start, out, PA_GEOM,         \
                       pa_scales<TC>(k_scale, v_scale));                                                    \
  }

#define PA_FOR_CACHE(SA, TA)                                                                                \
  PA_PREFILL_ENTRY(SA, TA, f32, float) PA_PREFILL_ENTRY(SA, TA, bf16, bf16) PA_PREFILL_ENTRY(SA, TA, f16, f16) \
  PA_PREFILL_ENTRY(SA, TA, f8, e4m3_code)
RTLLM_FOR_FLOAT_TYPES(PA_FOR_CACHE)
