// The centroid update of k-means (no float atomics): each workgroup owns a
// cluster and 64 of its dimensions and sums the rows assigned to that
// cluster, which the host has grouped by cluster (`order`, CSR `offsets`),
// in the order they appear there; the mean is written, or zeros for an
// empty cluster (the host splits it).

struct Params {
    k: u32,         // clusters
    d: u32,         // values per row
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> data: array<f32>;      // [n, d]
@group(0) @binding(2) var<storage, read> order: array<u32>;     // [n] rows by cluster
@group(0) @binding(3) var<storage, read> offsets: array<u32>;   // [k + 1]
@group(0) @binding(4) var<storage, read_write> means: array<f32>; // [k, d]

@compute @workgroup_size(64)
fn centroid_means(@builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = wg.x * 64u + lid.x;
    if (j >= P.d) {
        return;
    }
    // Clusters past the dispatch's y extent are taken in strides of it.
    for (var c = wg.y; c < P.k; c += nwg.y) {
        let a = offsets[c];
        let b = offsets[c + 1u];
        // Four partial sums: the rounding error grows with count / 4.
        var s = vec4<f32>(0.0);
        var i = a;
        for (; i + 4u <= b; i += 4u) {
            s += vec4<f32>(data[order[i] * P.d + j], data[order[i + 1u] * P.d + j],
                           data[order[i + 2u] * P.d + j], data[order[i + 3u] * P.d + j]);
        }
        for (; i < b; i += 1u) {
            s.x += data[order[i] * P.d + j];
        }
        var mean = 0.0;
        if (b > a) {
            mean = ((s.x + s.y) + (s.z + s.w)) / f32(b - a);
        }
        means[c * P.d + j] = mean;
    }
}
