// K and V as textures of vec4 texels: the pack pass and the texel loads.

//#if KIND_PACK
// ---------------------------------------------------------------------------
// K (PACK_K) or V as contiguous f32 vec4 rows (const W4 per key, zero-padded)
// when they cannot be copied into their texture as they are (a head dim not a
// multiple of 4): key j of (batch b, kv head hk) at vec4 ((b·hkv + hk)·seq_k +
// j)·W4. A buffer then a copy rather than a storage texture: lavapipe's
// timestamps stop bracketing later passes after storage-texture writes.
@group(0) @binding(8) var<storage, read_write> packed: array<vec4<f32>>;

@compute @workgroup_size(64)
fn pack(@builtin(global_invocation_id) g: vec3<u32>) {
    let bh = g.y;
    let key = g.x / W4;
    let c = g.x % W4;
    if (key >= P.sk) {
        return;
    }
    let b = bh / P.hkv;
    let hk = bh % P.hkv;
//#if PACK_K
    let x = ld_k(b * P.k_sb + hk * P.k_sh + key * P.k_ss, c);
//#else
    let x = ld_v(b * P.v_sb + hk * P.v_sh + key * P.v_ss, c);
//#endif
    packed[(bh * P.sk + key) * W4 + c] = x;
}
//#endif

//#if KV_TEX
// K and V as textures of vec4 texels (rows schedule, texel split-KV): the
// tensor's vec4s in order (its buffer copied as it is, or as `pack` wrote it),
// 2^wsh per line, 2^lsh lines per layer. Texel t of key j, vec4 c of (batch b,
// kv head hk): t = b·kt_sb + hk·kt_sh + j·kt_ss + c.
@group(0) @binding(9) var ktex: texture_2d_array<f32>;
@group(0) @binding(10) var vtex: texture_2d_array<f32>;

fn texel_at(t: u32) -> vec3<u32> {
    let line = t >> P.wsh;
    return vec3<u32>(t & ((1u << P.wsh) - 1u), line & ((1u << P.lsh) - 1u), line >> P.lsh);
}

fn ld_kt(t: u32) -> vec4<f32> {
    let a = texel_at(t);
    return textureLoad(ktex, a.xy, a.z, 0);
}

fn ld_vt(t: u32) -> vec4<f32> {
    let a = texel_at(t);
    return textureLoad(vtex, a.xy, a.z, 0);
}
//#endif

