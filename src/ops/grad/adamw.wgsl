// One AdamW step in place (torch.optim.AdamW, amsgrad off), in the order of
// PyTorch's single-tensor implementation:
//   p = p · (1 − lr · wd)                      (decoupled weight decay)
//   m = m + (1 − β1) · (g − m)                 (torch.lerp)
//   v = v · β2 + (1 − β2) · g²
//   p = p − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + eps)
// The scalars are computed on the host in f64 and rounded to f32, as PyTorch
// passes Python floats to its f32 kernels. The gradient is T; parameters and
// moments are f32.

struct Params {
    n: u32,
    /// 1 − lr · wd.
    decay: f32,
    /// 1 − β1, β2, 1 − β2.
    w1: f32,
    beta2: f32,
    w2: f32,
    /// lr / (1 − β1^t) and √(1 − β2^t).
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> grad: array<T>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn adamw_step(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.n) {
        return;
    }
    let g = f32(grad[i]);
    let p = param[i] * P.decay;
    let mi = m[i] + P.w1 * (g - m[i]);
    let vi = v[i] * P.beta2 + P.w2 * (g * g);
    let denom = sqrt(vi) / P.bc2_sqrt + P.eps;
    m[i] = mi;
    v[i] = vi;
    param[i] = p - P.step_size * (mi / denom);
}
