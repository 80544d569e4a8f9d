// Batched matrix multiplication with a fused epilogue:
//   C[z] = act(alpha * A[z] · B[z] + bias)
// A is [M, K] (or [K, M] with TRANS_A), B is [K, N] (or [N, K] with TRANS_B),
// C is [M, N]; the host passes per-batch base offsets of A and B so that any
// broadcast of the leading dimensions works. Accumulation is always f32.
//
// Template parameters (see src/shader.rs): T storage type of A, B and bias;
// OUT_F16 selects f16 output; TRANS_A / TRANS_B; BIAS; ACT_*; ALIGNED drops the
// bounds handling when the shape is a tile multiple.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
// (a_base, b_base) per output batch.
@group(0) @binding(3) var<storage, read> offs: array<u32>;
//#if OUT_F16
@group(0) @binding(4) var<storage, read_write> c: array<f16>;
fn store(i: u32, v: f32) { c[i] = f16(v); }
//#else
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
fn store(i: u32, v: f32) { c[i] = v; }
//#endif
//#if BIAS
@group(0) @binding(5) var<storage, read> bias: array<T>;
//#endif
//#if KIND_VEC4
// Read as vec4 along K (A, and B when transposed) or along N (B otherwise);
// the host only picks this kernel when those extents are multiples of 4.
//#if TEXEL
// A and B as the host's copies into 2-D array textures of vec4s (consts WSH,
// LSH: vec4 i at x = i mod 2^WSH, line (i >> WSH) mod 2^LSH, layer
// i >> (WSH + LSH)). On CPU adapters a texel fetch is a vectorised gather where
// a storage load is a per-lane loop.
@group(0) @binding(1) var ta: texture_2d_array<f32>;
@group(0) @binding(2) var tb: texture_2d_array<f32>;
fn texel(t: texture_2d_array<f32>, i: u32) -> vec4<f32> {
    let line = i >> WSH;
    return textureLoad(t, vec2<u32>(i & ((1u << WSH) - 1u), line & ((1u << LSH) - 1u)), line >> LSH, 0);
}
fn load_a(i: u32) -> vec4<f32> { return texel(ta, i); }
fn load_b(i: u32) -> vec4<f32> { return texel(tb, i); }
//#else
@group(0) @binding(1) var<storage, read> a: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<T>>;
fn load_a(i: u32) -> vec4<f32> { return vec4<f32>(a[i]); }
fn load_b(i: u32) -> vec4<f32> { return vec4<f32>(b[i]); }
//#endif
fn a_at(base: u32, i: u32, kk: u32) -> f32 {
    let e = base + i * P.k + kk;
    return load_a(e / 4u)[e % 4u];
}
fn b_at(base: u32, kk: u32, j: u32) -> f32 {
//#if TRANS_B
    let e = base + j * P.k + kk;
//#else
    let e = base + kk * P.n + j;
//#endif
    return load_b(e / 4u)[e % 4u];
}
//#else
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;

fn a_at(base: u32, i: u32, kk: u32) -> f32 {
//#if TRANS_A
    return f32(a[base + kk * P.m + i]);
//#else
    return f32(a[base + i * P.k + kk]);
//#endif
}

fn b_at(base: u32, kk: u32, j: u32) -> f32 {
//#if TRANS_B
    return f32(b[base + j * P.k + kk]);
//#else
    return f32(b[base + kk * P.n + j]);
//#endif
}
//#endif

// erf via Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, below f32 tolerance).
fn erf_approx(x: f32) -> f32 {
    let s = sign(x);
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
    return s * y;
}

fn epilogue(v: f32, col: u32) -> f32 {
    var x = P.alpha * v;
//#if BIAS
    x += f32(bias[col]);
//#endif
//#if ACT_RELU
    x = max(x, 0.0);
//#endif
//#if ACT_GELU_TANH
    // tanh's argument is clamped: some drivers compute tanh as a ratio of
    // exponentials that overflows to inf/inf for large inputs.
    let u = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0);
    x = 0.5 * x * (1.0 + tanh(u));
//#endif
//#if ACT_GELU_ERF
    x = 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
//#endif
//#if ACT_SILU
    x = x / (1.0 + exp(-x));
//#endif
    return x;
}

// ---------------------------------------------------------------------------
// Baseline: one output per invocation, straight from global memory.
@compute @workgroup_size(8, 8)
fn mm_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let i = gid.y;
    let z = gid.z;
    if (i >= P.m || j >= P.n) {
        return;
    }
    let ab = offs[2u * z];
    let bb = offs[2u * z + 1u];
    var acc = 0.0;
    for (var kk = 0u; kk < P.k; kk++) {
        acc += a_at(ab, i, kk) * b_at(bb, kk, j);
    }
    store(z * P.m * P.n + i * P.n + j, epilogue(acc, j));
}

//#if KIND_BROADCAST
// ---------------------------------------------------------------------------
// Broadcast-A register blocking without workgroup memory (consts WG, TM, TN).
// A workgroup owns TM rows and WG*TN columns. Every invocation of the workgroup
// reads the same A element at each k (a uniform load: one broadcast, not one load
// per invocation), and its own TN B elements, consecutive across invocations
// (coalesced). Each invocation holds TM*TN accumulators in registers. No
// barriers at all: on SIMD-on-CPU drivers a barrier splits the shader; on GPUs
// A's rows stay in L1 and broadcast.
@compute @workgroup_size(WG)
fn mm_broadcast(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let ab = offs[2u * z];
    let bb = offs[2u * z + 1u];
    let row0 = wid.y * TM;
    let cfirst = wid.x * (WG * TN) + lid;
//#if ALIGNED
//#for i < TM
    let r{i} = row0 + {i}u;
//#endfor
//#for j < TN
    let c{j} = cfirst + {j}u * WG;
//#endfor
//#else
    // Out-of-range rows/columns load a clamped, valid element and are not stored,
    // so the inner loop has no branches.
//#for i < TM
    let r{i} = min(row0 + {i}u, P.m - 1u);
//#endfor
//#for j < TN
    let c{j} = min(cfirst + {j}u * WG, P.n - 1u);
//#endfor
//#endif
//#for i < TM
//#for j < TN
    var acc{i}_{j} = 0.0;
//#endfor
//#endfor
    for (var kk = 0u; kk < P.k; kk++) {
//#for j < TN
        let b{j} = b_at(bb, kk, c{j});
//#endfor
//#for i < TM
        let a{i} = a_at(ab, r{i}, kk);
//#for j < TN
        acc{i}_{j} = fma(a{i}, b{j}, acc{i}_{j});
//#endfor
//#endfor
    }
    let cb = z * P.m * P.n;
//#for j < TN
    let col{j} = cfirst + {j}u * WG;
//#endfor
//#for i < TM
//#for j < TN
    if (row0 + {i}u < P.m && col{j} < P.n) {
        store(cb + (row0 + {i}u) * P.n + col{j}, epilogue(acc{i}_{j}, col{j}));
    }
//#endfor
//#endfor
}
//#endif

//#if KIND_SHARED
// ---------------------------------------------------------------------------
// Shared-memory tiling (consts WX, WY, TM, BK): a workgroup of WX*WY invocations
// computes a BM x BN = (WY*TM) x (WX*4) tile of C. Per BK-slice of K, A and B
// tiles are staged in workgroup memory (A transposed, so an invocation's TM rows
// at one k are contiguous); each invocation accumulates TM rows x 4 columns in
// vec4 registers, so every B vec4 read from workgroup memory feeds TM FMAs.
const BM: u32 = WY * TM;
const BN: u32 = WX * 4u;
const NT: u32 = WX * WY;
var<workgroup> As: array<f32, BK * BM>;   // [BK][BM]
var<workgroup> Bs: array<f32, BK * BN>;   // [BK][BN]

@compute @workgroup_size(WX, WY)
fn mm_shared(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(local_invocation_id) lid3: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let z = wid.z;
    let ab = offs[2u * z];
    let bb = offs[2u * z + 1u];
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let tx = lid3.x;
    let ty = lid3.y;
//#for i < TM
    var acc{i} = vec4<f32>(0.0);
//#endfor
    for (var k0 = 0u; k0 < P.k; k0 += BK) {
        // Cooperative loads; consecutive invocations take consecutive elements
        // along the operand's contiguous dimension.
        for (var e = lid; e < BK * BM; e += NT) {
//#if TRANS_A
            let kk = e / BM;
            let i = e % BM;
//#else
            let i = e / BK;
            let kk = e % BK;
//#endif
//#if ALIGNED
            As[kk * BM + i] = a_at(ab, row0 + i, k0 + kk);
//#else
            var v = 0.0;
            if (row0 + i < P.m && k0 + kk < P.k) {
                v = a_at(ab, row0 + i, k0 + kk);
            }
            As[kk * BM + i] = v;
//#endif
        }
        for (var e = lid; e < BK * BN; e += NT) {
//#if TRANS_B
            let j = e / BK;
            let kk = e % BK;
//#else
            let kk = e / BN;
            let j = e % BN;
//#endif
//#if ALIGNED
            Bs[kk * BN + j] = b_at(bb, k0 + kk, col0 + j);
//#else
            var v = 0.0;
            if (col0 + j < P.n && k0 + kk < P.k) {
                v = b_at(bb, k0 + kk, col0 + j);
            }
            Bs[kk * BN + j] = v;
//#endif
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let bo = kk * BN + tx * 4u;
            let bv = vec4<f32>(Bs[bo], Bs[bo + 1u], Bs[bo + 2u], Bs[bo + 3u]);
            let ao = kk * BM + ty * TM;
//#for i < TM
            acc{i} = fma(vec4<f32>(As[ao + {i}u]), bv, acc{i});
//#endfor
        }
        workgroupBarrier();
    }
    let cb = z * P.m * P.n;
    let cx = col0 + tx * 4u;
//#for i < TM
    {
        let row = row0 + ty * TM + {i}u;
        if (row < P.m) {
            for (var q = 0u; q < 4u; q++) {
                if (cx + q < P.n) {
                    store(cb + row * P.n + cx + q, epilogue(acc{i}[q], cx + q));
                }
            }
        }
    }
//#endfor
}
//#endif

//#if KIND_VEC4
// ---------------------------------------------------------------------------
// The broadcast scheme with vec4 loads (consts WG, TM, TN): per 4-step of K,
// each of the TM rows is one uniform vec4 load of A; B is read as vec4 too, so
// one load instruction feeds 4x the FMAs of the scalar kernel.
//  - B [K, N] (not transposed): an invocation owns TN groups of 4 adjacent
//    columns (vec4 accumulators), groups strided by WG across the workgroup.
//  - B [N, K] (transposed, the linear layer): an invocation owns TN columns and
//    loads each column's next 4 K-values as one vec4 (scalar accumulators).
//  - TEXEL: A and B are textures (above); with SG, the TM rows of A that all
//    invocations read are fetched once per 8 lanes (lane l takes rows l, l + 8,
//    ...: TMF each) and handed round by subgroupBroadcast.
@compute @workgroup_size(WG)
fn mm_vec4(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(local_invocation_index) lid: u32,
//#if SG
           @builtin(subgroup_invocation_id) sid: u32,
//#endif
           ) {
    let z = wid.z;
    let ab = offs[2u * z] / 4u;
    let bb = offs[2u * z + 1u] / 4u;
    // Row tiles run along x: consecutive workgroups share one strip of B,
    // which then stays in cache (drivers walk x fastest).
    let row0 = wid.x * TM;
    let kv = P.k / 4u;
    let gfirst = wid.y * (WG * TN) + lid;
//#if TRANS_B
    let ng = P.n;
//#else
    let ng = P.n / 4u;
//#endif
    // Clamped so that edge tiles load valid elements; they are not stored.
//#if SG
    let lane = sid & 7u;
//#for f < TMF
    let ra{f} = ab + min(row0 + {f}u * 8u + lane, P.m - 1u) * kv;
//#endfor
//#else
//#for i < TM
    let ra{i} = ab + min(row0 + {i}u, P.m - 1u) * kv;
//#endfor
//#endif
//#if ALIGNED
//#for j < TN
    let g{j} = gfirst + {j}u * WG;
//#endfor
//#else
//#for j < TN
    let g{j} = min(gfirst + {j}u * WG, ng - 1u);
//#endfor
//#endif
//#if TRANS_B
//#for j < TN
    let rb{j} = bb + g{j} * kv;
//#endfor
//#for i < TM
//#for j < TN
    var acc{i}_{j} = 0.0;
//#endfor
//#endfor
    for (var kk = 0u; kk < kv; kk++) {
//#if SG
        var af: array<vec4<f32>, TMF>;
//#for f < TMF
        af[{f}] = load_a(ra{f} + kk);
//#endfor
//#endif
//#for j < TN
        let b{j} = load_b(rb{j} + kk);
//#endfor
//#for i < TM
//#if SG
        let a{i} = subgroupBroadcast(af[{i}u / 8u], {i}u % 8u);
//#else
        let a{i} = load_a(ra{i} + kk);
//#endif
//#for j < TN
        acc{i}_{j} = fma(a{i}.x, b{j}.x, fma(a{i}.y, b{j}.y, fma(a{i}.z, b{j}.z, fma(a{i}.w, b{j}.w, acc{i}_{j}))));
//#endfor
//#endfor
    }
//#else
//#for i < TM
//#for j < TN
    var acc{i}_{j} = vec4<f32>(0.0);
//#endfor
//#endfor
    for (var kk = 0u; kk < kv; kk++) {
//#if SG
        var af: array<vec4<f32>, TMF>;
//#for f < TMF
        af[{f}] = load_a(ra{f} + kk);
//#endfor
//#endif
        let kb = bb + 4u * kk * ng;
//#for q < 4
//#for j < TN
        let b{q}_{j} = load_b(kb + {q}u * ng + g{j});
//#endfor
//#endfor
//#for i < TM
//#if SG
        let a{i} = subgroupBroadcast(af[{i}u / 8u], {i}u % 8u);
//#else
        let a{i} = load_a(ra{i} + kk);
//#endif
//#for j < TN
        acc{i}_{j} = fma(vec4<f32>(a{i}.w), b3_{j}, fma(vec4<f32>(a{i}.z), b2_{j}, fma(vec4<f32>(a{i}.y), b1_{j}, fma(vec4<f32>(a{i}.x), b0_{j}, acc{i}_{j}))));
//#endfor
//#endfor
    }
//#endif
    let cb = z * P.m * P.n;
//#for i < TM
    if (row0 + {i}u < P.m) {
        let rowc = cb + (row0 + {i}u) * P.n;
//#for j < TN
        {
            let gj = gfirst + {j}u * WG;
//#if TRANS_B
            if (gj < P.n) {
                store(rowc + gj, epilogue(acc{i}_{j}, gj));
            }
//#else
            if (gj < ng) {
                for (var q = 0u; q < 4u; q++) {
                    store(rowc + 4u * gj + q, epilogue(acc{i}_{j}[q], 4u * gj + q));
                }
            }
//#endif
        }
//#endfor
    }
//#endfor
}
//#endif
