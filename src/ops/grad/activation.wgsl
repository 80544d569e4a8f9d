// Elementwise activation, forward (out = act(x)) or backward
// (out = dy * act'(x), x the saved pre-activation). The forward is the
// matmul epilogue's (`ops/matmul/matmul.wgsl`): the same erf approximation
// and the same clamp of the tanh argument, so that `act(linear(x))` here
// and `linear(x, act)` there agree. Computes in f32.

struct Params {
    n: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
//#if BACKWARD
@group(0) @binding(2) var<storage, read> dy: array<T>;
//#endif
@group(0) @binding(3) var<storage, read_write> out: array<T>;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;

// erf via Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as the matmul
// epilogue computes it.
fn erf_approx(v: f32) -> f32 {
    let s = sign(v);
    let z = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
    return s * y;
}

fn act(v: f32) -> f32 {
    var r = v;
//#if ACT_RELU
    r = max(v, 0.0);
//#endif
//#if ACT_GELU_TANH
    // Clamped as in the epilogue: some drivers' tanh overflows to inf/inf.
    let u = clamp(SQRT_2_OVER_PI * (v + GELU_C * v * v * v), -15.0, 15.0);
    r = 0.5 * v * (1.0 + tanh(u));
//#endif
//#if ACT_GELU_ERF
    r = 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476));
//#endif
//#if ACT_SILU
    r = v / (1.0 + exp(-v));
//#endif
    return r;
}

// d act / dx at v (ReLU is handled by the caller: it selects, PyTorch's
// threshold_backward, so that a NaN input passes dy through).
fn act_grad(v: f32) -> f32 {
    var d = 1.0;
//#if ACT_GELU_TANH
    let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
    if (abs(u) >= 15.0) {
        // Where the forward clamps, tanh is ±1 in f32 and the second term
        // vanishes (computing it would make 0 · inf for huge |v|).
        d = select(0.0, 1.0, u > 0.0);
    } else {
        let t = tanh(u);
        d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
    }
//#endif
//#if ACT_GELU_ERF
    // Φ(v) + v φ(v).
    d = 0.5 * (1.0 + erf_approx(v * 0.7071067811865476)) + v * 0.3989422804014327 * exp(-0.5 * v * v);
//#endif
//#if ACT_SILU
    let s = 1.0 / (1.0 + exp(-v));
    d = s * (1.0 + v * (1.0 - s));
//#endif
    return d;
}

//#if BACKWARD
@compute @workgroup_size(256)
fn activation_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.n) {
        return;
    }
    let v = f32(x[i]);
    let g = f32(dy[i]);
//#if ACT_RELU
    out[i] = T(select(g, 0.0, v <= 0.0));
//#else
    out[i] = T(g * act_grad(v));
//#endif
}
//#else
@compute @workgroup_size(256)
fn activation(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.n) {
        return;
    }
    out[i] = T(act(f32(x[i])));
}
//#endif
