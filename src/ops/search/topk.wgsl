// Exact top-k inner-product search over a corpus held in chunks.
//
// scan: a workgroup scores QB queries against a slice of SL corpus rows of one
// chunk, keeps the (score, id) pairs in workgroup memory, sorts each query's SL
// pairs (bitonic network, best first) and writes only the best KP of them as
// candidates. The m × n score matrix never reaches device memory.
// select: reduces candidate lists the same way, SL entries per workgroup, until
// one list of KP remains per query.
//
// scan_lists (small k): each invocation scores RPL rows of a slice of 64·RPL,
// RB rows at a time (one query load feeds RB rows: on CPU adapters the query
// loads cost as much as the corpus loads), and keeps, per query, its own best
// L in registers (an insertion that runs only when a score beats the list's
// last); the 64 lists are the slice's candidates. No workgroup memory or
// barriers in the scan.
//
// Order: higher score first; equal scores by lower id; NaN after every number.
// METRIC_L2 ranks by 2·q·x − ‖x‖² (per-row squared norms, f32), so that the
// best is the nearest: the host turns it into ‖q‖² − that = ‖q − x‖². FILTER
// scores only rows whose id has its bit set in an allow bitmap, so that a
// filter keeping 1% of the corpus still yields k results where k exist.
// IVF (an inverted-file index's list scan): each workgroup takes one work
// item of a table — runs of list rows in the chunk (first storage row and
// length of each: the lists its queries probe) and up to QB queries of the
// batch, each with the candidate slot its results go to — so that one
// dispatch scans every probed list of a chunk for all of its queries, and a
// workgroup's candidate lists span all of its runs. Rows carry an order (their place in the order vectors were
// added, `order`), which candidates hold instead of the storage row: ties
// then break as the flat index breaks them, and the allow bitmap is over
// orders. The queries uniform holds the whole batch. Select with RAGGED
// reads each query's own list length (`lens`).
// Consts QB, SL (power of two, multiple of 64), KP (≤ SL), L, LM1 = L - 1,
// RPL (multiple of RB), RB, QN (vec4s of the dispatch's query block); STORE_F32 /
// STORE_F16 / STORE_I8 pick the corpus storage (f16 is read as packed u32
// words, so it needs no shader-f16 support).

struct Params {
    rows: u32,          // corpus rows in this chunk (scan) / list length (select)
    dv: u32,            // row length in groups of 8 values
    m: u32,             // queries in this dispatch
    q0: u32,            // first query (row of `queries`) of this dispatch
    id_base: u32,       // id of the chunk's first row
    slice_base: u32,    // first candidate slot of this chunk
    slots: u32,         // candidate slots per query in the output list
    lsh: u32,           // log2 of the corpus texture's rows per layer
}

@group(0) @binding(0) var<uniform> P: Params;

fn neg_inf() -> f32 { return bitcast<f32>(0xff800000u); }
const NO_ID: u32 = 0xffffffffu;

//#if KIND_SELECT_SERIAL
//#else
var<workgroup> ws: array<f32, QB * SL>;
var<workgroup> wid_: array<u32, QB * SL>;
//#endif

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Whether (sa, ia) ranks before (sb, ib). Padding (NO_ID) ranks after
// everything, real NaN scores included.
fn better(sa: f32, ia: u32, sb: f32, ib: u32) -> bool {
    if (ia == NO_ID || ib == NO_ID) {
        return ib == NO_ID && ia != NO_ID;
    }
    let na = is_nan(sa);
    let nb = is_nan(sb);
    if (na || nb) {
        return (!na) || (na && nb && ia < ib);
    }
    return sa > sb || (sa == sb && ia < ib);
}

// A u32 that orders pairs as `better` does (larger first; ties by id are the
// caller's): numbers by value (-0 as +0), then NaN (1), then padding (0).
fn order_key(s: f32, id: u32) -> u32 {
    if (id == NO_ID) {
        return 0u;
    }
    if (is_nan(s)) {
        return 1u;
    }
    let b = select(bitcast<u32>(s), 0u, s == 0.0);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// The score bits of an order key (NaN as the canonical NaN, padding as -inf).
fn key_bits(k: u32) -> u32 {
    if (k <= 1u) {
        return select(0xff800000u, 0x7fc00000u, k == 1u);
    }
    return select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u);
}

//#if KIND_SELECT_SERIAL
//#else
// Sorts each of the QB segments of SL pairs, best first.
fn sort_segments(lid: u32) {
    for (var size = 2u; size <= SL; size <<= 1u) {
        for (var stride = size / 2u; stride > 0u; stride >>= 1u) {
            for (var e = lid; e < QB * SL / 2u; e += 64u) {
                let seg = e / (SL / 2u);
                let p = e % (SL / 2u);
                let i = (p / stride) * 2u * stride + p % stride;
                let l = i + stride;
                let a = seg * SL + i;
                let b = seg * SL + l;
                // Segments of `size` alternate direction; the last merge is best-first.
                let first = (i & size) == 0u;
                let swap = select(better(ws[a], wid_[a], ws[b], wid_[b]),
                                  better(ws[b], wid_[b], ws[a], wid_[a]), first);
                if (swap) {
                    let ts = ws[a];
                    let ti = wid_[a];
                    ws[a] = ws[b];
                    wid_[a] = wid_[b];
                    ws[b] = ts;
                    wid_[b] = ti;
                }
            }
            workgroupBarrier();
        }
    }
}
//#endif

//#if KIND_SCAN || KIND_SCAN_LISTS
// The dispatch's queries (QN vec4s: up to QB rows of 2·dv vec4s). A uniform
// buffer, because every invocation reads the same query value at the same
// time: a broadcast, which uniform buffers serve best (on CPU adapters a
// storage load is a per-lane loop, a uniform load one scalar load).
@group(0) @binding(1) var<uniform> queries: array<vec4<f32>, QN>;
// The chunk's rows as a 2-D array texture of 16-byte (8-byte for int8) texels,
// row r at layer r >> lsh, line r & (2^lsh - 1). A texture rather than a
// storage buffer: texel fetches are cached and vectorised gathers everywhere
// (a storage load on a CPU adapter is a per-lane loop), and the chunk is not
// bounded by the storage binding limit. Rows are padded to groups of 8 values;
// row8(y, layer, c) is the c-th group of 8 of a row as two vec4s.
//#if STORE_F32
@group(0) @binding(2) var corpus: texture_2d_array<u32>;
fn row8(y: u32, layer: u32, c: u32) -> mat2x4<f32> {
    return mat2x4<f32>(bitcast<vec4<f32>>(textureLoad(corpus, vec2<u32>(2u * c, y), layer, 0)),
                       bitcast<vec4<f32>>(textureLoad(corpus, vec2<u32>(2u * c + 1u, y), layer, 0)));
}
//#endif
//#if STORE_F16
// Packed halves in u32 words: one texel per 8 values, and no need for
// shader-f16 support.
@group(0) @binding(2) var corpus: texture_2d_array<u32>;
fn row8(y: u32, layer: u32, c: u32) -> mat2x4<f32> {
    let w = textureLoad(corpus, vec2<u32>(c, y), layer, 0);
    return mat2x4<f32>(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
                       vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
}
//#endif
//#if STORE_I8
@group(0) @binding(2) var corpus: texture_2d_array<u32>;
fn row8(y: u32, layer: u32, c: u32) -> mat2x4<f32> {
    let w = textureLoad(corpus, vec2<u32>(c, y), layer, 0);
    return mat2x4<f32>(unpack4x8snorm(w.x), unpack4x8snorm(w.y));
}
// Per-row dequantisation factor (max |x| / 127 · 127).
@group(0) @binding(4) var<storage, read> row_scale: array<f32>;
//#endif
@group(0) @binding(3) var<storage, read_write> cand: array<vec2<u32>>;
//#if METRIC_L2
@group(0) @binding(5) var<storage, read> row_norm: array<f32>;
fn finish(s: f32, row: u32) -> f32 { return 2.0 * s - row_norm[row]; }
//#else
fn finish(s: f32, row: u32) -> f32 { return s; }
//#endif
//#if IVF
// Work items of WS words: the word where its runs start (pairs of first
// storage row and rows), runs, unused, queries, then per query its row in
// `queries` and its first candidate slot.
@group(0) @binding(7) var<storage, read> work: array<u32>;
@group(0) @binding(8) var<storage, read> order: array<u32>;
const WS: u32 = 4u + 2u * QB;
fn row_id(srow: u32) -> u32 { return order[srow]; }
// A work item's words are the same for the whole workgroup; read through a
// subgroup broadcast they are known to be, so the query loads they index are
// scalar loads (a software adapter otherwise gathers them lane by lane).
//#if SG
fn item(i: u32) -> u32 { return subgroupBroadcastFirst(work[i]); }
//#else
fn item(i: u32) -> u32 { return work[i]; }
//#endif
//#else
fn row_id(srow: u32) -> u32 { return P.id_base + srow; }
//#endif
//#if FILTER
// Bit `id` (the index-wide row, or the order of an IVF row) set: the row
// may be returned.
@group(0) @binding(6) var<storage, read> allow: array<u32>;
fn allowed(id: u32) -> bool { return (allow[id >> 5u] & (1u << (id & 31u))) != 0u; }
//#else
fn allowed(id: u32) -> bool { return true; }
//#endif
//#endif

//#if KIND_SCAN
@compute @workgroup_size(64)
fn scan(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
//#if IVF
    if (wg.x + wg.y * 65535u >= P.m) {
        return;
    }
    let wb = (P.q0 + wg.x + wg.y * 65535u) * WS;
    // One run of at most SL rows.
    let seg0 = item(item(wb));
    let nrows = item(item(wb) + 1u);
    let slice = 0u;
    let nq = item(wb + 3u);
//#for i < QB
    let qr{i} = item(wb + 4u + 2u * min({i}u, nq - 1u)) * 2u * P.dv;
//#endfor
//#else
    let slice = wg.x;
    let seg0 = 0u;
    let nrows = P.rows;
    let nq = P.m;
    // Queries past the end score a clamped query and are not written.
//#for i < QB
    let qr{i} = min({i}u, P.m - 1u) * 2u * P.dv;
//#endfor
//#endif
    let ymask = (1u << P.lsh) - 1u;
    for (var r = 0u; r < SL / 64u; r++) {
        let local = r * 64u + lid;
        let row = slice * SL + local;
        let rowc = seg0 + min(row, nrows - 1u);
        let y = rowc & ymask;
        let layer = rowc >> P.lsh;
//#for i < QB
        var acc{i} = 0.0;
//#endfor
        for (var c = 0u; c < P.dv; c++) {
            // One corpus load feeds QB queries; the query loads are the same
            // address across the workgroup (broadcasts).
            let x = row8(y, layer, c);
//#for i < QB
            acc{i} += dot(queries[qr{i} + 2u * c], x[0]) + dot(queries[qr{i} + 2u * c + 1u], x[1]);
//#endfor
        }
//#if STORE_I8
        let f = row_scale[rowc];
//#else
        let f = 1.0;
//#endif
        let id = row_id(rowc);
        let ok = row < nrows && allowed(id);
//#for i < QB
        ws[{i}u * SL + local] = select(neg_inf(), finish(acc{i} * f, rowc), ok);
        wid_[{i}u * SL + local] = select(NO_ID, id, ok);
//#endfor
    }
    workgroupBarrier();
    sort_segments(lid);
    for (var e = lid; e < QB * KP; e += 64u) {
        let qi = e / KP;
        let t = e % KP;
        if (qi < nq) {
            let src = qi * SL + t;
//#if IVF
            let o = work[wb + 5u + 2u * qi];
//#else
            let o = (P.q0 + qi) * P.slots + (P.slice_base + slice) * KP;
//#endif
            cand[o + t] = vec2<u32>(bitcast<u32>(ws[src]), wid_[src]);
        }
    }
}
//#endif

//#if KIND_SCAN_LISTS
@compute @workgroup_size(64)
fn scan_lists(@builtin(workgroup_id) wg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
//#if IVF
    if (wg.x + wg.y * 65535u >= P.m) {
        return;
    }
    let wb = (P.q0 + wg.x + wg.y * 65535u) * WS;
    let runs0 = item(wb);
    let nruns = item(wb + 1u);
    let nq = item(wb + 3u);
//#else
    // One run: the slice.
    let slice = wg.x;
    let nruns = 1u;
    let nq = P.m;
//#endif
    let ymask = (1u << P.lsh) - 1u;
//#for i < QB
//#if IVF
    let qr{i} = item(wb + 4u + 2u * min({i}u, nq - 1u)) * 2u * P.dv;
//#else
    let qr{i} = min({i}u, P.m - 1u) * 2u * P.dv;
//#endif
//#for j < L
    var ls{i}_{j} = neg_inf();
    var li{i}_{j} = NO_ID;
//#endfor
//#endfor
    for (var run = 0u; run < nruns; run++) {
//#if IVF
    let seg0 = item(runs0 + 2u * run);
    let nrows = item(runs0 + 2u * run + 1u);
//#else
    let seg0 = slice * RPL * 64u;
    let nrows = min(RPL * 64u, P.rows - seg0);
//#endif
    for (var r = 0u; r * 64u < nrows; r += RB) {
        // Invocations take consecutive rows so a workgroup reads a contiguous
        // span; each takes RB rows at once so one query load feeds RB rows.
//#for b < RB
        let grow{b} = (r + {b}u) * 64u + lid;
        let rowc{b} = seg0 + min(grow{b}, nrows - 1u);
        let y{b} = rowc{b} & ymask;
        let layer{b} = rowc{b} >> P.lsh;
//#for i < QB
        var acc{i}_{b} = 0.0;
//#endfor
//#endfor
        for (var c = 0u; c < P.dv; c++) {
//#for b < RB
            let x{b} = row8(y{b}, layer{b}, c);
//#endfor
//#for i < QB
            {
                let q0 = queries[qr{i} + 2u * c];
                let q1 = queries[qr{i} + 2u * c + 1u];
//#for b < RB
                acc{i}_{b} += dot(q0, x{b}[0]) + dot(q1, x{b}[1]);
//#endfor
            }
//#endfor
        }
        // Scores go through a small array so that the list update below is
        // emitted once per query, not once per (query, row): that keeps the
        // shader small enough to compile quickly.
//#for i < QB
        var sc{i}: array<f32, RB>;
//#for b < RB
        sc{i}[{b}] = acc{i}_{b};
//#endfor
//#endfor
        for (var b = 0u; b < RB; b++) {
            let lrow = (r + b) * 64u + lid;
            let row = seg0 + lrow;
            var id = NO_ID;
            if (lrow < nrows) {
                id = row_id(row);
            }
            if (id != NO_ID && allowed(id)) {
//#if STORE_I8
                let f = row_scale[row];
//#else
                let f = 1.0;
//#endif
//#for i < QB
                {
                    var s = finish(sc{i}[b] * f, row);
                    if (better(s, id, ls{i}_{LM1}, li{i}_{LM1})) {
                        // Bubble the new pair down the sorted list.
                        var t = id;
//#for j < L
                        if (better(s, t, ls{i}_{j}, li{i}_{j})) {
                            let ps = ls{i}_{j};
                            let pi = li{i}_{j};
                            ls{i}_{j} = s;
                            li{i}_{j} = t;
                            s = ps;
                            t = pi;
                        }
//#endfor
                    }
                }
//#endfor
            }
        }
    }
    }
//#if SG
    // Each group of 8 lanes merges its 8 lists into one (L rounds; each
    // takes the best head over the group by a butterfly over lanes g ^ 1,
    // g ^ 2, g ^ 4, and its lane pops it): 8x fewer candidates for the
    // select passes, which otherwise cost as much as the scan of a batch.
    // Lanes g ^ 1, 2, 4 are lid ^ 1, 2, 4: subgroups of a 1-D workgroup hold
    // consecutive local indices on the Vulkan, Metal and D3D12 drivers.
//#for i < QB
    {
//#if IVF
        let base = item(wb + 5u + 2u * min({i}u, nq - 1u)) + (lid / 8u) * L;
//#else
        let base = (P.q0 + {i}u) * P.slots + (P.slice_base + slice) * 8u * L + (lid / 8u) * L;
//#endif
        var ms = array<f32, L>(
//#for j < L
            ls{i}_{j},
//#endfor
        );
        var mi = array<u32, L>(
//#for j < L
            li{i}_{j},
//#endfor
        );
        for (var t = 0u; t < L; t++) {
            let key = order_key(ms[0], mi[0]);
            var kmax = max(key, subgroupShuffleXor(key, 1u));
            kmax = max(kmax, subgroupShuffleXor(kmax, 2u));
            kmax = max(kmax, subgroupShuffleXor(kmax, 4u));
            var idm = select(NO_ID, mi[0], key == kmax);
            idm = min(idm, subgroupShuffleXor(idm, 1u));
            idm = min(idm, subgroupShuffleXor(idm, 2u));
            idm = min(idm, subgroupShuffleXor(idm, 4u));
            if ({i}u < nq && (lid & 7u) == 0u) {
                cand[base + t] = vec2<u32>(key_bits(kmax), idm);
            }
            let pop = key == kmax && mi[0] == idm;
            for (var j = 0u; j + 1u < L; j++) {
                ms[j] = select(ms[j], ms[j + 1u], pop);
                mi[j] = select(mi[j], mi[j + 1u], pop);
            }
            ms[L - 1u] = select(ms[L - 1u], neg_inf(), pop);
            mi[L - 1u] = select(mi[L - 1u], NO_ID, pop);
        }
    }
//#endfor
//#else
//#for i < QB
    if ({i}u < nq) {
//#if IVF
        let o = item(wb + 5u + 2u * min({i}u, nq - 1u)) + lid * L;
//#else
        let o = (P.q0 + {i}u) * P.slots + (P.slice_base + slice) * 64u * L + lid * L;
//#endif
//#for j < L
        cand[o + {j}u] = vec2<u32>(bitcast<u32>(ls{i}_{j}), li{i}_{j});
//#endfor
    }
//#endfor
//#endif
}
//#endif

//#if KIND_SELECT
@group(0) @binding(1) var<storage, read> list_in: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> list_out: array<vec2<u32>>;
//#if RAGGED
// Each query's own list length (the rest of its P.rows slots is not written).
@group(0) @binding(3) var<storage, read> lens: array<u32>;
//#endif

// One workgroup per (chunk of SL entries, query): keep the chunk's best KP.
// P.rows is the input list length per query; P.slots the output's.
@compute @workgroup_size(64)
fn select_topk(@builtin(workgroup_id) wg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let chunk = wg.x;
    let q = wg.y;
    for (var e = lid; e < SL; e += 64u) {
        let i = chunk * SL + e;
        var v = vec2<u32>(0xff800000u, NO_ID);
//#if RAGGED
        let n = lens[q];
//#else
        let n = P.rows;
//#endif
        if (i < n) {
            v = list_in[q * P.rows + i];
        }
        ws[e] = bitcast<f32>(v.x);
        wid_[e] = v.y;
    }
    workgroupBarrier();
    sort_segments(lid);
    for (var t = lid; t < KP; t += 64u) {
        list_out[q * P.slots + chunk * KP + t] = vec2<u32>(bitcast<u32>(ws[t]), wid_[t]);
    }
}
//#endif

//#if KIND_SELECT_SERIAL
@group(0) @binding(1) var<storage, read> list_in: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> list_out: array<vec2<u32>>;
//#if RAGGED
@group(0) @binding(3) var<storage, read> lens: array<u32>;
//#endif

// One invocation per query: its list (P.rows slots a query; with RAGGED its
// own length) reduced to the best KP in registers, as the list scan keeps
// them. No workgroup memory and no barriers: on a software adapter a
// barrier switches between SIMD slices, and the sorting select's dozens of
// them cost more than reading a few thousand candidates in turn. P.m is the
// number of queries, P.slots the output's slots per query (KP).
@compute @workgroup_size(64)
fn select_serial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = gid.x;
    if (q >= P.m) {
        return;
    }
//#if RAGGED
    let n = lens[q];
//#else
    let n = P.rows;
//#endif
//#for j < KP
    var ls{j} = neg_inf();
    var li{j} = NO_ID;
//#endfor
    for (var e = 0u; e < n; e++) {
        let v = list_in[q * P.rows + e];
        var s = bitcast<f32>(v.x);
        var t = v.y;
        if (better(s, t, ls{KPM1}, li{KPM1})) {
//#for j < KP
            if (better(s, t, ls{j}, li{j})) {
                let ps = ls{j};
                let pi = li{j};
                ls{j} = s;
                li{j} = t;
                s = ps;
                t = pi;
            }
//#endfor
        }
    }
//#for j < KP
    list_out[q * P.slots + {j}u] = vec2<u32>(bitcast<u32>(ls{j}), li{j});
//#endfor
}
//#endif

//#if KIND_FINISH
// Device results: each query's best P.rows (= min(k, len)) list entries as
// scores and ids, padded to k = P.dv entries with score −∞ (+∞ for L2) and
// id −1. Ids are i64, written as (low, high) u32 pairs (WGSL has no 64-bit
// integers); L2 scores become ‖q‖² − (2·q·x − ‖x‖²). P.slots is the list's
// stride per query, P.q0 the first query of this batch in the outputs.
@group(0) @binding(1) var<storage, read> list_fin: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> id_table: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> out_scores: array<f32>;
@group(0) @binding(4) var<storage, read_write> out_ids: array<vec2<u32>>;
//#if METRIC_L2
@group(0) @binding(5) var<storage, read> qnorm: array<f32>;
//#endif

@compute @workgroup_size(64)
fn finish(@builtin(workgroup_id) wg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let q = wg.y;
    let t = wg.x * 64u + lid;
    if (t >= P.dv) {
        return;
    }
//#if METRIC_L2
    var score = bitcast<f32>(0x7f800000u);
//#else
    var score = neg_inf();
//#endif
    var id = vec2<u32>(NO_ID, NO_ID);
    if (t < P.rows) {
        let v = list_fin[q * P.slots + t];
        if (v.y != NO_ID) {
            id = id_table[v.y];
//#if METRIC_L2
            score = qnorm[P.q0 + q] - bitcast<f32>(v.x);
//#else
            score = bitcast<f32>(v.x);
//#endif
        }
    }
    let o = (P.q0 + q) * P.dv + t;
    out_scores[o] = score;
    out_ids[o] = id;
}
//#endif

//#if KIND_PACK
// Device rows into the index's storage, one invocation per row: P.rows f32
// rows of P.m values from row P.q0 of `src`, each written as P.dv groups of
// 8 stored values (zero padded) as the host encodes them: f32 bits, packed
// halves, or int8 codes of value / (max |x| / 127) with that max as the
// row's scale (NaN when the row has a NaN or ±∞). With METRIC_L2 also the
// squared norm of the stored (dequantised) row.
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;
//#if STORE_I8
@group(0) @binding(3) var<storage, read_write> scales_out: array<f32>;
//#endif
//#if METRIC_L2
@group(0) @binding(4) var<storage, read_write> norms_out: array<f32>;
//#endif

fn value(base: u32, j: u32) -> f32 {
    return select(0.0, src[base + j], j < P.m);
}

@compute @workgroup_size(64)
fn pack(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x + gid.y * 65535u * 64u;
    if (r >= P.rows) {
        return;
    }
    let base = (P.q0 + r) * P.m;
    var norm = 0.0;
//#if STORE_F32
    let words = P.dv * 8u;
    for (var j = 0u; j < words; j++) {
        let v = value(base, j);
        packed[r * words + j] = bitcast<u32>(v);
        norm += v * v;
    }
//#endif
//#if STORE_F16
    let words = P.dv * 4u;
    for (var j = 0u; j < words; j++) {
        let w = pack2x16float(vec2<f32>(value(base, 2u * j), value(base, 2u * j + 1u)));
        packed[r * words + j] = w;
        let h = unpack2x16float(w);
        norm += h.x * h.x + h.y * h.y;
    }
//#endif
//#if STORE_I8
    var amax = 0.0;
    var finite = true;
    for (var j = 0u; j < P.m; j++) {
        let a = abs(src[base + j]);
        finite = finite && (bitcast<u32>(a) < 0x7f800000u);
        amax = max(amax, a);
    }
    // Codes of value / s, s = max / 127 (1 for an all-zero or non-finite row).
    let s = select(1.0, amax / 127.0, finite && amax > 0.0);
    let words = P.dv * 2u;
    for (var j = 0u; j < words; j++) {
        var w = 0u;
        for (var b = 0u; b < 4u; b++) {
            // Halves away from zero, as the host rounds (WGSL's round()
            // rounds them to even).
            let x = value(base, 4u * j + b) / s;
            let q = clamp(sign(x) * floor(abs(x) + 0.5), -127.0, 127.0);
            w |= (bitcast<u32>(i32(q)) & 0xffu) << (8u * b);
            norm += (q * s) * (q * s);
        }
        packed[r * words + j] = w;
    }
    scales_out[r] = select(bitcast<f32>(0x7fc00000u), s * 127.0, finite);
//#endif
//#if METRIC_L2
    norms_out[r] = norm;
//#endif
}
//#endif
