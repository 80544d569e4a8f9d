// Appending new K or V rows to a KV cache on the device.

//#if KIND_APPEND
// ---------------------------------------------------------------------------
// Row t of sequence b of the new rows (P.sq of them, strides q_*) goes to key
// aux[b] + t of the cache (strides k_*, through the block table when PAGED);
// P.d elements a row. One invocation per element.
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(8) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(64)
fn append(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= P.b * P.sq * P.hkv * P.d) {
        return;
    }
    let e = idx % P.d;
    let r = idx / P.d;
    let hk = r % P.hkv;
    let t = (r / P.hkv) % P.sq;
    let b = r / (P.hkv * P.sq);
    let l = kv_loc(b, aux[b] + t);
    dst[k_at(l, hk) + e] = src[b * P.q_sb + hk * P.q_sh + t * P.q_ss + e];
}
//#endif
