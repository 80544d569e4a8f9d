// The naive kernel's masked softmax, and the layout permute.

//#if KIND_SOFTMAX
// ---------------------------------------------------------------------------
// Naive path: masked softmax over materialised scores S [B, Hkv, G·Sq, Sk]
// (already scaled), in place, written as T to `pm`. One workgroup per row.
@group(0) @binding(1) var<storage, read> s_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> pm: array<T>;
//#if LSE
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;
//#endif
var<workgroup> red: array<f32, 64>;

// Score j of the row at s_in[base]: soft cap and ALiBi, then the bias (at bb).
fn naive_score(base: u32, bb: u32, hx: vec2<f32>, i: u32, j: u32) -> f32 {
    var s = ext_score(hx, i, j, s_in[base + j]);
//#if BIAS
    s += bias[bb + j];
//#endif
    return s;
}

fn reduce(x: f32, lid: u32, is_max: bool) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (is_max) { red[lid] = max(red[lid], red[lid + s]); } else { red[lid] += red[lid + s]; }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    let rows = P.b * P.hq * P.sq;
    if (r >= rows) {
        return;
    }
    // r enumerates (b, kv head, g, i) with the query head h = kv head·G + g.
    let i = r % P.sq;
    let bh = r / P.sq;
    let b = bh / P.hq;
    let h = bh % P.hq;
    let rend = key_end(b, i);
    let rs = key_start(b, i);
    let hx = head_ext(b, h);
    let base = r * P.sk;
    let bb = b * P.bias_sb + h * P.bias_sh + i * P.sk;
    var mx = NEG;
    for (var j = lid; j < rend; j += 64u) {
        if (visible(b, h, i, j, rs, rend)) {
            mx = max(mx, naive_score(base, bb, hx, i, j));
        }
    }
    mx = reduce(mx, lid, true);
    var sum = 0.0;
    for (var j = lid; j < rend; j += 64u) {
        if (visible(b, h, i, j, rs, rend)) {
            sum += exp(naive_score(base, bb, hx, i, j) - mx);
        }
    }
    sum = reduce(sum, lid, false);
    let f = fin(h, mx, sum);
    for (var j = lid; j < P.sk; j += 64u) {
        var p = 0.0;
        if (visible(b, h, i, j, rs, rend)) {
            p = exp(naive_score(base, bb, hx, i, j) - mx) * f.x;
        }
        pm[base + j] = T(p);
    }
//#if LSE
    if (lid == 0u) {
        lse[r] = f.y;
    }
//#endif
}
//#endif

//#if KIND_PERMUTE
// ---------------------------------------------------------------------------
// Naive path helper: [B, X, Y, D] -> [B, Y, X, D] (swaps the seq and head axes).
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(64)
fn permute(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    // P.b = B, P.hq = X, P.sq = Y, P.d = D.
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= P.b * P.hq * P.sq * P.d) {
        return;
    }
    let dd = idx % P.d;
    let y = (idx / P.d) % P.sq;
    let x = (idx / (P.d * P.sq)) % P.hq;
    let bb = idx / (P.d * P.sq * P.hq);
    dst[((bb * P.sq + y) * P.hq + x) * P.d + dd] = src[idx];
}
//#endif
