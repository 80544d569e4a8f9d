// Batched dot products: out[i] = sum_j a[i, j] * b[i, j], f32 accumulation.
// The host binds a window of rows at a time (a tensor may exceed one storage
// binding); the *_off fields locate the window's first element in each binding.
// With VEC4 the arrays are read as vec4 (d % 4 == 0) and offsets count vec4s.

struct Params {
    rows: u32,      // rows in this window
    dv: u32,        // row length in loaded units (d, or d / 4 with VEC4)
    a_off: u32,
    b_off: u32,
    out_off: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
//#if VEC4
@group(0) @binding(1) var<storage, read> a: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<T>>;
fn prod(i: u32, j: u32) -> f32 {
    return dot(vec4<f32>(a[i]), vec4<f32>(b[j]));
}
//#else
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
fn prod(i: u32, j: u32) -> f32 {
    return f32(a[i]) * f32(b[j]);
}
//#endif
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

// Baseline: one invocation per row, straight from global memory. It keeps
// eight independent partial sums so that the f32 rounding error grows with
// d/8 rather than d (and the loads of one iteration do not wait on each other).
@compute @workgroup_size(64)
fn dot_naive(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * WG;
    if (row >= P.rows) {
        return;
    }
    let ia = P.a_off + row * P.dv;
    let ib = P.b_off + row * P.dv;
//#if VEC4
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 1u < P.dv; j += 2u) {
        acc0 = fma(vec4<f32>(a[ia + j]), vec4<f32>(b[ib + j]), acc0);
        acc1 = fma(vec4<f32>(a[ia + j + 1u]), vec4<f32>(b[ib + j + 1u]), acc1);
    }
    if (j < P.dv) {
        acc0 = fma(vec4<f32>(a[ia + j]), vec4<f32>(b[ib + j]), acc0);
    }
    let s = acc0 + acc1;
    out[P.out_off + row] = (s.x + s.y) + (s.z + s.w);
//#else
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 7u < P.dv; j += 8u) {
        acc0 = fma(vec4<f32>(f32(a[ia + j]), f32(a[ia + j + 1u]), f32(a[ia + j + 2u]), f32(a[ia + j + 3u])),
                   vec4<f32>(f32(b[ib + j]), f32(b[ib + j + 1u]), f32(b[ib + j + 2u]), f32(b[ib + j + 3u])), acc0);
        acc1 = fma(vec4<f32>(f32(a[ia + j + 4u]), f32(a[ia + j + 5u]), f32(a[ia + j + 6u]), f32(a[ia + j + 7u])),
                   vec4<f32>(f32(b[ib + j + 4u]), f32(b[ib + j + 5u]), f32(b[ib + j + 6u]), f32(b[ib + j + 7u])), acc1);
    }
    var tail = 0.0;
    for (; j < P.dv; j++) {
        tail += prod(ia + j, ib + j);
    }
    let s = acc0 + acc1;
    out[P.out_off + row] = ((s.x + s.y) + (s.z + s.w)) + tail;
//#endif
}

// Slots for per-subgroup (or per-invocation) partial sums.
var<workgroup> partial: array<f32, WG>;

// One workgroup per row: consecutive invocations read consecutive elements
// (coalesced), then the 64 partial sums are reduced.
@compute @workgroup_size(64)
fn dot_workgroup(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32,
//#if SUBGROUP
                 @builtin(subgroup_invocation_id) sid: u32,
                 @builtin(subgroup_id) sgid: u32,
                 @builtin(num_subgroups) nsg: u32,
//#endif
) {
    // Uniform across the workgroup, so the early return cannot split a barrier.
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let ia = P.a_off + row * P.dv;
    let ib = P.b_off + row * P.dv;
    var acc = 0.0;
    for (var j = lid; j < P.dv; j += WG) {
        acc += prod(ia + j, ib + j);
    }
//#if SUBGROUP
    // One barrier: subgroups reduce in registers, then one invocation adds the
    // per-subgroup sums (subgroup size is whatever the device runs; never assumed).
    acc = subgroupAdd(acc);
    if (sid == 0u) {
        partial[sgid] = acc;
    }
    workgroupBarrier();
    if (lid == 0u) {
        var s = 0.0;
        for (var i = 0u; i < nsg; i++) {
            s += partial[i];
        }
        out[P.out_off + row] = s;
    }
//#else
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[P.out_off + row] = partial[0];
    }
//#endif
}
