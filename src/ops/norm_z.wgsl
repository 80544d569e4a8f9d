// The rows' input of the layer norm and its backward (concatenated before
// each one's own WGSL): z = x (+ residual), read in f32.
@group(0) @binding(1) var<storage, read> x: array<T>;
//#if RESIDUAL
@group(0) @binding(2) var<storage, read> res: array<T>;
//#endif

fn z(i: u32) -> f32 {
//#if RESIDUAL
    return f32(x[i]) + f32(res[i]);
//#else
    return f32(x[i]);
//#endif
}
