// Elementwise sums of gradients: out = a + b, or (ACCUMULATE) out += b,
// where two branches of a network (a residual and its block) send
// gradients to one tensor. Adds in f32, one rounding to T.

struct Params {
    n: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
//#if ACCUMULATE
//#else
@group(0) @binding(1) var<storage, read> a: array<T>;
//#endif
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

//#if ACCUMULATE
@compute @workgroup_size(256)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.n) {
        return;
    }
    out[i] = T(f32(out[i]) + f32(b[i]));
}
//#else
@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.n) {
        return;
    }
    out[i] = T(f32(a[i]) + f32(b[i]));
}
//#endif
