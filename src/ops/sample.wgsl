// Next-token sampling: a workgroup of 256 per output, which picks one token
// of its logits row (`picks` holds, per output, the row and the bits of its
// uniform u in [0, 1)).
//
// Every entry first finds the row's maximum m and its index, NaN above every
// number and equal values by the lower index (torch.argmax): the greedy
// token, and the token of any row holding a NaN.
//
// Sampling weighs token j by e_j = exp((x_j − m) / T) ∈ [0, 1] (softmax
// unnormalised: e = 1 at the maximum, so the total S ≥ 1), keeps the tokens
// with e ≥ τ*, τ* the largest value whose mass {e ≥ τ} is ≥ top_p · S (found
// by bisection over the bit patterns of non-negative f32, which order as the
// values do), and returns the first index whose running kept mass exceeds
// u · (kept mass). The scan: each invocation owns a contiguous chunk of
// indices; one invocation lays out the chunks' prefix in a fixed order and
// names the chunk whose span holds the goal; that invocation finds the
// index. Accumulates in f32.
//
// No early return in the sampling entry's divergent code: every barrier is
// in uniform control flow (lavapipe drops writes otherwise).

struct Params {
    outputs: u32,
    vocab: u32,
    inv_temperature: f32,
    top_p: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<T>;
@group(0) @binding(2) var<storage, read> picks: array<u32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;

const WG: u32 = 256u;
// No element: ranks below every element (an invocation past the vocab).
const NONE: u32 = 0xffffffffu;

fn is_nan(x: f32) -> bool {
    // By the bits: an adapter may fold x != x to false.
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Whether (av, ai) ranks above (bv, bi): a total order (NaN first, then by
// value, then the lower index), so any merge order finds the same winner.
fn above(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    if (bi == NONE) {
        return ai != NONE;
    }
    if (ai == NONE) {
        return false;
    }
    let an = is_nan(av);
    let bn = is_nan(bv);
    if (an != bn) {
        return an;
    }
    if (!an && av != bv) {
        return av > bv;
    }
    return ai < bi;
}

struct Best {
    v: f32,
    i: u32,
}

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

// The row's top (value, index); every invocation gets it.
fn row_max(lid: u32, base: u32) -> Best {
    var v = 0.0;
    var i = NONE;
    for (var j = lid; j < P.vocab; j += WG) {
        let x = f32(logits[base + j]);
        if (above(x, j, v, i)) {
            v = x;
            i = j;
        }
    }
    best_v[lid] = v;
    best_i[lid] = i;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (lid < off && above(best_v[lid + off], best_i[lid + off], best_v[lid], best_i[lid])) {
            best_v[lid] = best_v[lid + off];
            best_i[lid] = best_i[lid + off];
        }
        workgroupBarrier();
    }
    let b = Best(best_v[0], best_i[0]);
    workgroupBarrier();
    return b;
}

//#if GREEDY
@compute @workgroup_size(256)
fn sample_greedy(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let o = wid.x + wid.y * nwg.x;
    // Uniform over the workgroup: the barriers below stay uniform.
    if (o >= P.outputs) {
        return;
    }
    let best = row_max(lid, picks[2u * o] * P.vocab);
    if (lid == 0u) {
        tokens[o] = best.i;
    }
}
//#else
var<workgroup> red: array<f32, 256>;
var<workgroup> part: array<f32, 256>;
// The chosen chunk, the kept mass before it, and the goal u · M.
var<workgroup> chosen: u32;
var<workgroup> chosen_start: f32;
var<workgroup> chosen_goal: f32;

// Token weight e = exp((x − m) / T). The maximum's ties weigh 1 exactly, so
// a +inf maximum shares the mass among its ties (the limit of a large
// logit) and a row of −inf is all ties (uniform) instead of inf − inf = NaN;
// −inf below a finite maximum weighs 0.
fn weight(x: f32, m: f32) -> f32 {
    if (x == m) {
        return 1.0;
    }
    if (bitcast<u32>(x) == 0xff800000u || bitcast<u32>(m) == 0x7f800000u) {
        return 0.0;
    }
    // Past −110 exp underflows f32 to 0 anyway; the clamp keeps a huge
    // (x − m) / T from reaching exp as −inf.
    return exp(max((x - m) * P.inv_temperature, -110.0));
}

fn workgroup_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (lid < off) {
            red[lid] += red[lid + off];
        }
        workgroupBarrier();
    }
    let s = red[0];
    workgroupBarrier();
    return s;
}

// Kept: the weight is positive and its bits are at least the threshold's.
fn kept(e: f32, lo: u32) -> bool {
    return e > 0.0 && bitcast<u32>(e) >= lo;
}

@compute @workgroup_size(256)
fn sample(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let o = wid.x + wid.y * nwg.x;
    // Uniform over the workgroup: the barriers below stay uniform.
    if (o >= P.outputs) {
        return;
    }
    let base = picks[2u * o] * P.vocab;
    let u = bitcast<f32>(picks[2u * o + 1u]);
    let best = row_max(lid, base);
    let m = best.v;

    // The threshold's bits: 1 keeps every positive weight (top_p = 1).
    var lo = 1u;
    // A branch on a uniform: the bisection's barriers stay uniform.
    if (P.top_p < 1.0) {
        var s = 0.0;
        for (var j = lid; j < P.vocab; j += WG) {
            s += weight(f32(logits[base + j]), m);
        }
        let need = P.top_p * workgroup_sum(lid, s);
        // Invariant: mass(lo) ≥ need (lo = 0: all of S), mass(hi) < need
        // (no weight passes 1.0). The span 0x3f800001 < 2^30 closes to
        // hi = lo + 1 in 30 halvings: lo is then τ*'s bits, a weight's own
        // (the next weight above would keep the same set), so ties at τ*
        // are all kept. Summed in the same strided order as S, so any
        // τ at or below the least positive weight gives S exactly.
        lo = 0u;
        var hi = 0x3f800001u;
        for (var it = 0u; it < 30u; it++) {
            let mid = lo + (hi - lo) / 2u;
            var t = 0.0;
            for (var j = lid; j < P.vocab; j += WG) {
                let e = weight(f32(logits[base + j]), m);
                if (bitcast<u32>(e) >= mid) {
                    t += e;
                }
            }
            if (workgroup_sum(lid, t) >= need) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo = max(lo, 1u);
    }

    let chunk = (P.vocab + WG - 1u) / WG;
    let first = min(lid * chunk, P.vocab);
    let end = min(first + chunk, P.vocab);
    var c = 0.0;
    for (var j = first; j < end; j++) {
        let e = weight(f32(logits[base + j]), m);
        if (kept(e, lo)) {
            c += e;
        }
    }
    part[lid] = c;
    workgroupBarrier();
    if (lid == 0u) {
        // One serial prefix: its values never decrease, so the spans
        // [before_k, after_k) tile [0, M) and exactly one holds a goal
        // below M; u · M can round up to M, and then the last chunk with
        // mass is chosen (its last kept token).
        var total = 0.0;
        for (var k = 0u; k < WG; k++) {
            total += part[k];
        }
        let goal = u * total;
        var before = 0.0;
        var pick = NONE;
        var start = 0.0;
        var last = 0u;
        var last_start = 0.0;
        for (var k = 0u; k < WG; k++) {
            let after = before + part[k];
            if (part[k] > 0.0) {
                last = k;
                last_start = before;
            }
            if (pick == NONE && goal < after) {
                pick = k;
                start = before;
            }
            before = after;
        }
        if (pick == NONE) {
            pick = last;
            start = last_start;
        }
        chosen = pick;
        chosen_start = start;
        chosen_goal = goal;
    }
    workgroupBarrier();
    let pick = chosen;
    if (is_nan(m)) {
        if (lid == 0u) {
            tokens[o] = best.i;
        }
    } else if (lid == pick) {
        let start = chosen_start;
        let goal = chosen_goal;
        // Summed in the chunk's order from 0, as `part` was: at the chunk's
        // last kept token start + r is the span's end, past the goal.
        var r = 0.0;
        var tok = NONE;
        var last = first;
        for (var j = first; j < end; j++) {
            let e = weight(f32(logits[base + j]), m);
            if (kept(e, lo)) {
                r += e;
                last = j;
                if (tok == NONE && start + r > goal) {
                    tok = j;
                }
            }
        }
        tokens[o] = select(tok, last, tok == NONE);
    }
}
//#endif
