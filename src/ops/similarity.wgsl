// Row-wise similarity kernels over [n, d] rows: L2 normalisation and cosine
// similarity of row pairs. One invocation per row: on CPU adapters per-row
// workgroups cost more than they save (see ops/dot.rs), and rows are short
// enough (d ~ 10^2..10^3) that one invocation streams a row quickly on GPUs.

struct Params {
    rows: u32,
    d: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

//#if KIND_NORMALIZE
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

// y[i] = x[i] / ‖x[i]‖; an all-zero row stays zero. Rows are scaled by
// their largest magnitude first, as BLAS nrm2 does, so that the squares of
// tiny (1e-30) or huge (1e30) values neither underflow nor overflow.
@compute @workgroup_size(64)
fn normalize(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= P.rows) {
        return;
    }
    let base = row * P.d;
    var amax = 0.0;
    for (var j = 0u; j < P.d; j++) {
        amax = max(amax, abs(f32(x[base + j])));
    }
    let s = select(1.0, amax, amax > 0.0);
    var ss = 0.0;
    for (var j = 0u; j < P.d; j++) {
        let v = f32(x[base + j]) / s;
        ss = fma(v, v, ss);
    }
    let inv = select(0.0, inverseSqrt(ss), ss > 0.0);
    for (var j = 0u; j < P.d; j++) {
        y[base + j] = T(f32(x[base + j]) / s * inv);
    }
}
//#endif

//#if KIND_COSINE
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// out[i] = a[i]·b[i] / (‖a[i]‖ ‖b[i]‖); 0 when either row is all zero. Each
// row is scaled by its largest magnitude first (as in normalize), so tiny or
// huge rows neither underflow nor overflow.
@compute @workgroup_size(64)
fn cosine(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= P.rows) {
        return;
    }
    let base = row * P.d;
    var amax = 0.0;
    var bmax = 0.0;
    for (var j = 0u; j < P.d; j++) {
        amax = max(amax, abs(f32(a[base + j])));
        bmax = max(bmax, abs(f32(b[base + j])));
    }
    let sa = select(1.0, amax, amax > 0.0);
    let sb = select(1.0, bmax, bmax > 0.0);
    var ab = 0.0;
    var aa = 0.0;
    var bb = 0.0;
    for (var j = 0u; j < P.d; j++) {
        let u = f32(a[base + j]) / sa;
        let v = f32(b[base + j]) / sb;
        ab = fma(u, v, ab);
        aa = fma(u, u, aa);
        bb = fma(v, v, bb);
    }
    let den = sqrt(aa) * sqrt(bb);
    out[row] = select(0.0, ab / den, den > 0.0);
}
//#endif
