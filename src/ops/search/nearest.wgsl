// Each point's nearest centroid (k-means assignment, an IVF add's lists):
// the matmul's register tiling with an argmin epilogue, as FAISS assigns by
// a GEMM and an argmin. A workgroup of WG invocations owns TM points and
// walks every centroid, WG·TN at a time: each invocation accumulates TM × TN
// dot products (its TN centroids strided by WG, so that consecutive
// invocations read consecutive rows), turns them into scores and keeps, per
// point, its best; the WG candidates of each point are reduced in workgroup
// memory once, at the end. The points × centroids score matrix never
// reaches memory.
//
// Score (lower is better): norms[c] − ALPHA·x·c — ‖c‖² − 2·x·c for squared
// L2 (the host adds ‖x‖²), −x·c for inner product (norms 0, alpha 1). Ties go
// to the lower centroid; a NaN score ranks after every number.
//
// TEXEL: points and centroids are vec4 textures (rows of DV4 texels,
// zero-padded; consts WSH, LSH as in matmul.wgsl): on CPU adapters a texel
// fetch is a vectorised gather where a storage load is a per-lane loop.
// Else storage arrays: points of `d` values a row, centroids padded to
// 4·dv4. SG: the TM point rows are fetched once per 8 lanes (lane l takes
// rows l, l + 8, ...) and handed round by subgroupBroadcast.

struct Params {
    n: u32,         // points in this dispatch
    k: u32,         // centroids
    d: u32,         // values per point row (storage points)
    dv4: u32,       // vec4s per row: ceil(d / 4)
    alpha: f32,     // 2 for squared L2, 1 for inner product
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
//#if TEXEL
@group(0) @binding(1) var tp: texture_2d_array<f32>;
@group(0) @binding(2) var tc: texture_2d_array<f32>;
fn texel(t: texture_2d_array<f32>, i: u32) -> vec4<f32> {
    let line = i >> WSH;
    return textureLoad(t, vec2<u32>(i & ((1u << WSH) - 1u), line & ((1u << LSH) - 1u)), line >> LSH, 0);
}
fn load_p(row: u32, q: u32) -> vec4<f32> { return texel(tp, row * P.dv4 + q); }
fn load_c(row: u32, q: u32) -> vec4<f32> { return texel(tc, row * P.dv4 + q); }
//#else
@group(0) @binding(1) var<storage, read> xp: array<f32>;
@group(0) @binding(2) var<storage, read> xc: array<vec4<f32>>;
fn load_p(row: u32, q: u32) -> vec4<f32> {
    // Values past the row's end are 0 (the centroids' padding is 0 too).
    let j = 4u * q;
    let e = row * P.d + j;
    var v = vec4<f32>(xp[e], 0.0, 0.0, 0.0);
    if (j + 1u < P.d) { v.y = xp[e + 1u]; }
    if (j + 2u < P.d) { v.z = xp[e + 2u]; }
    if (j + 3u < P.d) { v.w = xp[e + 3u]; }
    return v;
}
fn load_c(row: u32, q: u32) -> vec4<f32> { return xc[row * P.dv4 + q]; }
//#endif
@group(0) @binding(3) var<storage, read> norms: array<f32>;            // [k]
// [n, 2]: per point its centroid and its score's bits (one readback).
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

var<workgroup> red_s: array<f32, TM * WG>;
var<workgroup> red_c: array<u32, TM * WG>;

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Whether (s, c) ranks before (bs, bc): lower score, then lower centroid;
// NaN after every number.
fn before(s: f32, c: u32, bs: f32, bc: u32) -> bool {
    let na = is_nan(s);
    let nb = is_nan(bs);
    if (na || nb) {
        return (!na) || (nb && c < bc);
    }
    return s < bs || (s == bs && c < bc);
}

@compute @workgroup_size(WG)
fn nearest(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32,
//#if SG
           @builtin(subgroup_invocation_id) sid: u32,
//#endif
           ) {
    // Workgroups past the dispatch's x extent continue along y.
    let row0 = (wid.y * nwg.x + wid.x) * TM;
    if (row0 >= P.n) {
        return;
    }
    // Rows past the end load the last point's values and are not stored.
//#if SG
    let lane = sid & 7u;
//#for f < TMF
    let p{f} = min(row0 + {f}u * 8u + lane, P.n - 1u);
//#endfor
//#else
//#for i < TM
    let p{i} = min(row0 + {i}u, P.n - 1u);
//#endfor
//#endif
//#for i < TM
    var bs{i} = bitcast<f32>(0x7fc00000u);
    var bc{i} = 0u;
//#endfor
    for (var cbase = 0u; cbase < P.k; cbase += WG * TN) {
        // Past the last centroid: the last one again, which cannot displace
        // itself (same score, same number).
//#for j < TN
        let c{j} = min(cbase + {j}u * WG + lid, P.k - 1u);
//#endfor
//#for i < TM
//#for j < TN
        var acc{i}_{j} = 0.0;
//#endfor
//#endfor
        for (var q = 0u; q < P.dv4; q++) {
//#if SG
            var af: array<vec4<f32>, TMF>;
//#for f < TMF
            af[{f}] = load_p(p{f}, q);
//#endfor
//#endif
//#for j < TN
            let b{j} = load_c(c{j}, q);
//#endfor
//#for i < TM
//#if SG
            let a{i} = subgroupBroadcast(af[{i}u / 8u], {i}u % 8u);
//#else
            let a{i} = load_p(p{i}, q);
//#endif
//#for j < TN
            acc{i}_{j} = fma(a{i}.x, b{j}.x, fma(a{i}.y, b{j}.y, fma(a{i}.z, b{j}.z, fma(a{i}.w, b{j}.w, acc{i}_{j}))));
//#endfor
//#endfor
        }
//#for j < TN
        let nc{j} = norms[c{j}];
//#endfor
//#for i < TM
//#for j < TN
        {
            let s = nc{j} - P.alpha * acc{i}_{j};
            if (before(s, c{j}, bs{i}, bc{i})) {
                bs{i} = s;
                bc{i} = c{j};
            }
        }
//#endfor
//#endfor
    }
//#for i < TM
    red_s[{i}u * WG + lid] = bs{i};
    red_c[{i}u * WG + lid] = bc{i};
//#endfor
    workgroupBarrier();
    for (var r = lid; r < TM; r += WG) {
        var s = red_s[r * WG];
        var c = red_c[r * WG];
        for (var l = 1u; l < WG; l++) {
            let t = red_s[r * WG + l];
            let u = red_c[r * WG + l];
            if (before(t, u, s, c)) {
                s = t;
                c = u;
            }
        }
        if (row0 + r < P.n) {
            out[2u * (row0 + r)] = c;
            out[2u * (row0 + r) + 1u] = bitcast<u32>(s);
        }
    }
}
