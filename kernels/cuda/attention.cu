// paged_attention: causal (optionally sliding-window) GQA attention over a paged KV cache for a
// packed batch mixing prefill and decode sequences. Three phases, one launch each, every grid
// sized from the metas only (CUDA-graph safe); blocks whose work is empty exit early:
//   1. pa_write_cache: each new token's k/v row into its cache slot (block_tables[s][pos / BS]).
//   2. pa_prefill: sequences with >= 2 new tokens. One block per (tile of 32 query rows, KV
//      head); a query row is (token, query head of the KV group). K/V tiles of 32 keys go
//      through shared memory; online softmax with f32 accumulation; output written directly.
//   3. pa_decode (sequences with exactly 1 new token): one block per (sequence, KV head, tile of
//      32 of the group's heads, split of the key range); partial (max, sum, acc) per split into
//      the workspace, then pa_combine merges the splits into the output row.
// Invalid int inputs (out-of-range block ids, offsets) never read or write out of bounds: the
// affected rows/keys are skipped (their outputs are then unspecified).
//
// Types: A = activation (q, k, v, out), C = cache element. All math in f32.

#define PA_ROWS 32      // query rows per block (8 per warp)
#define PA_KEYS 32      // keys per shared K/V tile
#define PA_THREADS 128  // 4 warps
#define PA_MAX_DC 8     // head_dim / 32 at most (head_dim <= 256)

// Shared memory layout (floats) for head dim D: Q [32][D], K [32][D+1], V [32][D], P [32][32],
// key slots [32] (ints).
__device__ __forceinline__ int pa_shared_floats(int D) {
  return PA_ROWS * D + PA_KEYS * (D + 1) + PA_KEYS * D + PA_ROWS * PA_KEYS + PA_KEYS;
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

// ---------------------------------------------------------------------------------------------
// 1. Cache write: grid (T), block 128.

template <typename A, typename C>
__device__ void pa_write_cache(const A* __restrict__ k, const A* __restrict__ v, C* __restrict__ k_cache,
                               C* __restrict__ v_cache, const int* __restrict__ block_tables,
                               const int* __restrict__ seq_lens, const int* __restrict__ query_start, PaGeom g) {
  const int t = blockIdx.x;
  if (t >= g.T || g.S <= 0) return;
  // The sequence of token t: the number of query_start[1..=S] entries <= t.
  int lo = 0, hi = g.S;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (query_start[mid + 1] <= t) lo = mid + 1; else hi = mid;
  }
  const int s = lo;
  if (s >= g.S) return;
  const int q0 = query_start[s], q1 = query_start[s + 1];
  if (t < q0 || t >= q1) return;
  const int pos = seq_lens[s] - (q1 - q0) + (t - q0);
  const long long base = pa_slot(block_tables, g, s, pos, 0);
  if (base < 0) return;
  const int row = g.KVH * g.D;
  const A* kr = k + (long long)t * row;
  const A* vr = v + (long long)t * row;
  for (int i = threadIdx.x; i < row; i += blockDim.x) {
    k_cache[base + i] = from_float<C>(to_float(kr[i]));
    v_cache[base + i] = from_float<C>(to_float(vr[i]));
  }
}

// ---------------------------------------------------------------------------------------------
// The tile loop shared by prefill and decode blocks.

// One block's work: 32 consecutive query rows rho0.. (row rho = token i * G + head g within the
// KV group) of sequence s (new tokens at packed q0.., first new position `start`), KV head
// `kvh`, keys restricted to [klo, khi] on top of each row's causal/window range.
struct PaTile {
  int s, q0, q_len, start, kvh, rho0, n_rows, klo, khi;
};

// Runs the tile. On return each warp's lanes hold, for the warp's 8 rows, the running max `m`,
// sum `l` and unnormalised accumulator `o[r][c]` (dims lane + 32c), and `valid` rows.
template <typename A, typename C>
__device__ void pa_run_tile(const A* __restrict__ q, const C* __restrict__ k_cache, const C* __restrict__ v_cache,
                            const int* __restrict__ block_tables, const PaGeom& g, const PaTile& tile, float* smem,
                            float (&m)[8], float (&l)[8], float (&o)[8][PA_MAX_DC], bool (&valid)[8], int (&pos)[8]) {
  const int D = g.D, DC = D >> 5;
  float* Qs = smem;                         // [32][D]
  float* Ks = Qs + PA_ROWS * D;             // [32][D+1]
  float* Vs = Ks + PA_KEYS * (D + 1);       // [32][D]
  float* Ps = Vs + PA_KEYS * D;             // [32][32]
  int* slots = (int*)(Ps + PA_ROWS * PA_KEYS);  // [32] (element offset / D, or -1)
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
      const long long at = p <= tile.khi ? pa_slot(block_tables, g, tile.s, p, tile.kvh) : -1;
      slots[tid] = at < 0 ? -1 : (int)(at / D);
    }
    __syncthreads();
    for (int idx = tid; idx < PA_KEYS * D; idx += PA_THREADS) {
      const int j = idx / D, d = idx - j * D, sl = slots[j];
      float kv = 0.0f, vv = 0.0f;
      if (sl >= 0) {
        const long long at = (long long)sl * D + d;
        kv = to_float(k_cache[at]);
        vv = to_float(v_cache[at]);
      }
      Ks[j * (D + 1) + d] = kv;
      Vs[j * D + d] = vv;
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
    const bool key_ok = slots[lane] >= 0;
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
      const float* vj = Vs + j * D;
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
__device__ void pa_find_tile(const int* __restrict__ query_start, int S, int G, int tile, int* out) {
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

// ---------------------------------------------------------------------------------------------
// 2. Prefill: grid (ceil(T * G / 32) + S, KVH), block 128, dynamic shared pa_shared_floats(D).

template <typename A, typename C>
__device__ void pa_prefill(const A* __restrict__ q, const C* __restrict__ k_cache, const C* __restrict__ v_cache,
                           const int* __restrict__ block_tables, const int* __restrict__ seq_lens,
                           const int* __restrict__ query_start, A* __restrict__ out, PaGeom g) {
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
  if (tile.start < 0) return;
  float m[8], l[8], o[8][PA_MAX_DC];
  bool valid[8];
  int pos[8];
  pa_run_tile<A, C>(q, k_cache, v_cache, block_tables, g, tile, smem, m, l, o, valid, pos);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, DC = g.D >> 5;
#pragma unroll
  for (int rr = 0; rr < 8; ++rr) {
    if (!valid[rr]) continue;
    const int rho = tile.rho0 + warp * 8 + rr;
    const int i = rho / g.G, h = tile.kvh * g.G + (rho - i * g.G);
    const float inv = l[rr] > 0.0f ? 1.0f / l[rr] : 0.0f;
    A* orow = out + ((long long)(tile.q0 + i) * g.H + h) * g.D;
#pragma unroll
    for (int c = 0; c < PA_MAX_DC; ++c)
      if (c < DC) orow[lane + 32 * c] = from_float<A>(o[rr][c] * inv);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Decode: grid (S * KVH * ceil(G / 32), NSPLIT), block 128, dynamic shared as prefill.
// Workspace (f32): acc [S][H][NSPLIT][D], then m [S][H][NSPLIT], then l [S][H][NSPLIT].

template <typename A, typename C>
__device__ void pa_decode(const A* __restrict__ q, const C* __restrict__ k_cache, const C* __restrict__ v_cache,
                          const int* __restrict__ block_tables, const int* __restrict__ seq_lens,
                          const int* __restrict__ query_start, float* __restrict__ ws_acc, float* __restrict__ ws_m,
                          float* __restrict__ ws_l, PaGeom g, int nsplit) {
  extern __shared__ float smem[];
  const int gt_count = (g.G + PA_ROWS - 1) / PA_ROWS;
  const int s = blockIdx.x / (g.KVH * gt_count);
  const int rem = blockIdx.x - s * (g.KVH * gt_count);
  const int kvh = rem / gt_count, gt = rem - kvh * gt_count;
  const int sp = blockIdx.y;
  if (s >= g.S) return;
  const int q0 = query_start[s];
  if (query_start[s + 1] - q0 != 1) return;  // not a decode row: pa_combine skips it too
  const int pos = seq_lens[s] - 1;
  PaTile tile;
  tile.s = s;
  tile.q0 = q0;
  tile.q_len = 1;
  tile.start = pos;
  tile.kvh = kvh;
  tile.rho0 = gt * PA_ROWS;
  tile.n_rows = g.G;
  // This split's share of the row's keys [first, pos], in whole key tiles.
  const int first = pa_first_key(pos, g.window);
  const int len = pos - first + 1;
  int chunk = (len + nsplit - 1) / nsplit;
  chunk = (chunk + PA_KEYS - 1) / PA_KEYS * PA_KEYS;
  tile.klo = first + sp * chunk;
  tile.khi = min(pos, tile.klo + chunk - 1);
  if (pos < 0) tile.khi = tile.klo - 1;  // invalid row: nothing to attend
  float m[8], l[8], o[8][PA_MAX_DC];
  bool valid[8];
  int p8[8];
  pa_run_tile<A, C>(q, k_cache, v_cache, block_tables, g, tile, smem, m, l, o, valid, p8);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, DC = g.D >> 5;
#pragma unroll
  for (int rr = 0; rr < 8; ++rr) {
    const int gh = tile.rho0 + warp * 8 + rr;
    if (gh >= g.G) continue;
    const long long row = ((long long)s * g.H + kvh * g.G + gh) * nsplit + sp;
#pragma unroll
    for (int c = 0; c < PA_MAX_DC; ++c)
      if (c < DC) ws_acc[row * g.D + lane + 32 * c] = o[rr][c];
    if (lane == 0) {
      ws_m[row] = m[rr];
      ws_l[row] = l[rr];
    }
  }
}

// Merges the splits of decode rows: grid (S * H), block 128.
template <typename A>
__device__ void pa_combine(const int* __restrict__ query_start, const float* __restrict__ ws_acc,
                           const float* __restrict__ ws_m, const float* __restrict__ ws_l, A* __restrict__ out,
                           PaGeom g, int nsplit) {
  const int s = blockIdx.x / g.H, h = blockIdx.x - s * g.H;
  if (s >= g.S) return;
  const int t = query_start[s];
  if (query_start[s + 1] - t != 1 || t < 0 || t >= g.T) return;
  const long long row0 = ((long long)s * g.H + h) * nsplit;
  float mx = NEG_INF;
  for (int sp = 0; sp < nsplit; ++sp) mx = fmaxf(mx, ws_m[row0 + sp]);
  float total = 0.0f;
  if (mx != NEG_INF)
    for (int sp = 0; sp < nsplit; ++sp) {
      const float mi = ws_m[row0 + sp];
      if (mi != NEG_INF) total += ws_l[row0 + sp] * expf(mi - mx);
    }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  A* orow = out + ((long long)t * g.H + h) * g.D;
  for (int d = threadIdx.x; d < g.D; d += blockDim.x) {
    float acc = 0.0f;
    if (mx != NEG_INF)
      for (int sp = 0; sp < nsplit; ++sp) {
        const float mi = ws_m[row0 + sp];
        if (mi != NEG_INF) acc += ws_acc[(row0 + sp) * g.D + d] * expf(mi - mx);
      }
    orow[d] = from_float<A>(acc * inv);
  }
}

// ---------------------------------------------------------------------------------------------
// Entry points: <kernel>_<act>_<cache> for every pair of float types; pa_combine_<act>.

#define PA_GEOM_PARAMS \
  int T, int S, int MB, int NB, int BS, int H, int KVH, int D, int window, float scale
#define PA_GEOM PaGeom{T, S, MB, NB, BS, H, KVH, D, H / KVH, window, scale}

#define PA_ENTRIES(SA, TA, SC, TC)                                                                         \
  extern "C" __global__ void __launch_bounds__(PA_THREADS) pa_write_cache_##SA##_##SC(                      \
      const TA* k, const TA* v, TC* k_cache, TC* v_cache, const int* block_tables, const int* seq_lens,    \
      const int* query_start, PA_GEOM_PARAMS) {                                                            \
    pa_write_cache<TA, TC>(k, v, k_cache, v_cache, block_tables, seq_lens, query_start, PA_GEOM);           \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(PA_THREADS) pa_prefill_##SA##_##SC(                          \
      const TA* q, const TC* k_cache, const TC* v_cache, const int* block_tables, const int* seq_lens,     \
      const int* query_start, TA* out, PA_GEOM_PARAMS) {                                                   \
    pa_prefill<TA, TC>(q, k_cache, v_cache, block_tables, seq_lens, query_start, out, PA_GEOM);             \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(PA_THREADS) pa_decode_##SA##_##SC(                           \
      const TA* q, const TC* k_cache, const TC* v_cache, const int* block_tables, const int* seq_lens,     \
      const int* query_start, float* ws_acc, float* ws_m, float* ws_l, PA_GEOM_PARAMS, int nsplit) {       \
    pa_decode<TA, TC>(q, k_cache, v_cache, block_tables, seq_lens, query_start, ws_acc, ws_m, ws_l,         \
                      PA_GEOM, nsplit);                                                                    \
  }

#define PA_FOR_CACHE(SA, TA) PA_ENTRIES(SA, TA, f32, float) PA_ENTRIES(SA, TA, bf16, bf16) PA_ENTRIES(SA, TA, f16, f16)
RTLLM_FOR_FLOAT_TYPES(PA_FOR_CACHE)

#define PA_COMBINE(S, T_)                                                                                  \
  extern "C" __global__ void __launch_bounds__(PA_THREADS) pa_combine_##S(                                  \
      const int* query_start, const float* ws_acc, const float* ws_m, const float* ws_l, T_* out,           \
      int T, int S_, int MB, int NB, int BS, int H, int KVH, int D, int window, float scale, int nsplit) {  \
    pa_combine<T_>(query_start, ws_acc, ws_m, ws_l, out,                                                   \
                   PaGeom{T, S_, MB, NB, BS, H, KVH, D, H / KVH, window, scale}, nsplit);                  \
  }
RTLLM_FOR_FLOAT_TYPES(PA_COMBINE)
