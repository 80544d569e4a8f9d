// Softmax cross-entropy, fused with its gradient, for logits [rows, classes]
// and one target class per row (a target ≥ classes marks an ignored row: the
// host maps the ignore index to u32::MAX after checking every other target).
// Per row, numerically stable through the running maximum m:
//   s = Σ exp(x_j − m), loss = log(s) + m − x_t,
//   dlogits_j = (exp(x_j − m) / s − [j = t]) · scale,
// scale = 1 / (rows not ignored), the mean reduction's factor. An ignored
// row has loss 0 and a zero gradient. The per-row losses go to `losses`
// (unscaled, PyTorch's reduction="none"); the LOSS_SUM entry adds them in a
// fixed order in one workgroup and scales the sum: the mean (no atomics).
// One pass keeps (m, s) online (s is rescaled when the maximum grows), a
// second writes the gradient. NaN logits make the row's loss and gradient
// NaN. Accumulates in f32.

struct Params {
    rows: u32,
    classes: u32,
    scale: f32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
//#if LOSS_SUM
@group(0) @binding(4) var<storage, read> losses: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn loss_sum(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var r = lid; r < P.rows; r += 64u) {
        s += losses[r];
    }
    red[lid] = s;
    workgroupBarrier();
    for (var off = 32u; off > 0u; off >>= 1u) {
        if (lid < off) {
            red[lid] += red[lid + off];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        loss[0] = red[0] * P.scale;
    }
}
//#else
@group(0) @binding(1) var<storage, read> logits: array<T>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<T>;
@group(0) @binding(4) var<storage, read_write> losses: array<f32>;

// The lowest finite f32: the running maximum's start (−inf would make
// exp(−inf − (−inf)) = NaN for a row of −inf logits).
const LOWEST: f32 = -3.4028234663852886e38;

// (m, s) after one more logit v.
fn online(ms: vec2<f32>, v: f32) -> vec2<f32> {
    if (v > ms.x) {
        return vec2<f32>(v, ms.y * exp(ms.x - v) + 1.0);
    }
    return vec2<f32>(ms.x, ms.y + exp(v - ms.x));
}

// The row's loss from its (m, s) and target, and its gradient.
// An ignored row reads no logits: zeros and a loss of 0. The branch is per
// element, not an early return: with a return for ignored rows, lavapipe
// (Mesa 22.3.6) left most of a kept row beside one unwritten (the Rows
// schedule, in tests/grad/loss.rs).
fn finish(row: u32, t: u32, ms: vec2<f32>, first: u32, stride: u32) {
    let base = row * P.classes;
    let kept = t < P.classes;
    let inv = 1.0 / ms.y;
    for (var j = first; j < P.classes; j += stride) {
        var g = 0.0;
        if (kept) {
            let p = exp(f32(logits[base + j]) - ms.x) * inv;
            g = (p - select(0.0, 1.0, j == t)) * P.scale;
        }
        dlogits[base + j] = T(g);
    }
    if (first == 0u) {
        var l = 0.0;
        if (kept) {
            l = log(ms.y) + ms.x - f32(logits[base + t]);
        }
        losses[row] = l;
    }
}

//#if ROWS
// An invocation per row, no barriers (CPU adapters).
@compute @workgroup_size(64)
fn cross_entropy_rows(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= P.rows) {
        return;
    }
    let t = targets[row];
    var ms = vec2<f32>(LOWEST, 0.0);
    if (t < P.classes) {
        for (var j = 0u; j < P.classes; j++) {
            ms = online(ms, f32(logits[row * P.classes + j]));
        }
    }
    finish(row, t, ms, 0u, 1u);
}
//#else
// A workgroup of 64 per row: each invocation keeps (m, s) over a strided
// slice, a tree in workgroup memory merges them (GPUs).
var<workgroup> red: array<vec2<f32>, 64>;

fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

@compute @workgroup_size(64)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let t = targets[row];
    // An ignored row reads no logits (its loop is empty).
    let n = select(0u, P.classes, t < P.classes);
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var j = lid; j < n; j += 64u) {
        ms = online(ms, f32(logits[row * P.classes + j]));
    }
    red[lid] = ms;
    workgroupBarrier();
    for (var off = 32u; off > 0u; off >>= 1u) {
        if (lid < off) {
            red[lid] = merge(red[lid], red[lid + off]);
        }
        workgroupBarrier();
    }
    ms = red[0];
    finish(row, t, ms, lid, 64u);
}
//#endif
//#endif
