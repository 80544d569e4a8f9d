// Embedding lookup for a batch of token ids: out[r, j] = word[id_r, j] +
// pos[r mod seq, j] + types[type_r, j] (BERT's input embeddings, before their
// layer norm). One invocation per output element; an id or type id past its
// table gives a NaN row, so a bad id cannot pass unnoticed.

struct Params {
    /// Rows (batch · seq) and elements per row.
    rows: u32,
    h: u32,
    seq: u32,
    vocab: u32,
    /// Rows of the position and token-type tables.
    npos: u32,
    ntypes: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> word: array<T>;
@group(0) @binding(3) var<storage, read> pos: array<T>;
@group(0) @binding(4) var<storage, read> types: array<T>;
//#if TYPE_IDS
@group(0) @binding(5) var<storage, read> type_ids: array<u32>;
//#endif
@group(0) @binding(6) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn embedding(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= P.rows * P.h) {
        return;
    }
    let r = i / P.h;
    let j = i - r * P.h;
    let id = ids[r];
    let p = r % P.seq;
//#if TYPE_IDS
    let t = type_ids[r];
//#else
    let t = 0u;
//#endif
    if (id >= P.vocab || t >= P.ntypes || p >= P.npos) {
        out[i] = T(bitcast<f32>(0x7fc00000u));
        return;
    }
    out[i] = T(f32(word[id * P.h + j]) + f32(pos[p * P.h + j]) + f32(types[t * P.h + j]));
}
