// Scaled-dot-product attention, O = softmax(Q·Kᵀ·scale + bias + mask)·V, per
// batch and query head; kv head = h / group (GQA / MQA). Scores, running max,
// running sum and accumulators are f32 whatever T is.
//
// Tensors are addressed through (batch, head, seq) strides in elements, so both
// [B, H, S, D] and [B, S, H, D] layouts run the same code; the last dim is
// contiguous. Template parameters: KIND_* selects the kernel; VEC reads vec4s
// (d and dv multiples of 4); BIAS, LSE; consts D4 / DV4 (vec4s per row of
// Q/K and V/O), BQ, BKV, SK; MASKS declares kv_len, bias and key_end().

struct Params {
    b: u32, hq: u32, hkv: u32, sq: u32,
    sk: u32, d: u32, dv: u32, group: u32,
    q_sb: u32, q_sh: u32, q_ss: u32, _p0: u32,
    k_sb: u32, k_sh: u32, k_ss: u32, _p1: u32,
    v_sb: u32, v_sh: u32, v_ss: u32, _p2: u32,
    o_sb: u32, o_sh: u32, o_ss: u32, _p3: u32,
    // bias strides (0 where broadcast); its rows are seq_k long.
    bias_sb: u32, bias_sh: u32, causal: u32, causal_off: i32,
    // lsh: log2 of the lines per layer of the K/V textures.
    scale: f32, nsplit: u32, chunk: u32, lsh: u32,
    // K/V texture addressing: texel strides (batch, head, seq) and log2 of
    // the texels per line.
    kt_sb: u32, kt_sh: u32, kt_ss: u32, wsh: u32,
    vt_sb: u32, vt_sh: u32, vt_ss: u32, _p4: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

// Initial running max: finite, so a fully masked chunk never computes inf - inf.
const NEG: f32 = -1.0e30;

//#if HAS_INPUTS
//#if VEC
@group(0) @binding(1) var<storage, read> q: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<T>>;
fn ld_q(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(q[base / 4u + c]); }
fn ld_k(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(k[base / 4u + c]); }
fn ld_v(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(v[base / 4u + c]); }
//#else
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<T>;
@group(0) @binding(3) var<storage, read> v: array<T>;
// Elements past the row length read as 0, so padded vec4 lanes add nothing.
fn ld_q(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < P.d) { r[i] = f32(q[base + 4u * c + i]); }
    }
    return r;
}
fn ld_k(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < P.d) { r[i] = f32(k[base + 4u * c + i]); }
    }
    return r;
}
fn ld_v(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < P.dv) { r[i] = f32(v[base + 4u * c + i]); }
    }
    return r;
}
//#endif
//#endif

//#if MASKS
// Masking inputs shared by the fused kernels and the naive path's softmax.
@group(0) @binding(5) var<storage, read> kvlen: array<u32>;
//#if BIAS
@group(0) @binding(6) var<storage, read> bias: array<f32>;
//#endif

// Exclusive end of the keys query `row` of batch `b` may see.
fn key_end(b: u32, row: u32) -> u32 {
    let kvend = min(P.sk, kvlen[b]);
    if (P.causal == 0u) {
        return kvend;
    }
    return u32(clamp(i32(row) + P.causal_off + 1, 0, i32(kvend)));
}
//#endif

//#if OUT_DIRECT
//#if OUT_F16
@group(0) @binding(4) var<storage, read_write> o: array<f16>;
fn st_o(i: u32, x: f32) { o[i] = f16(x); }
//#else
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
fn st_o(i: u32, x: f32) { o[i] = x; }
//#endif
//#if LSE
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;
//#endif
fn st_row(base: u32, c: u32, x: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < P.dv) { st_o(base + 4u * c + i, x[i]); }
    }
}
//#endif

//#if KIND_FLASH
// ---------------------------------------------------------------------------
// Flash attention. A workgroup owns BQ query rows of one (batch, head), one row
// per invocation: the row's Q (pre-scaled) and output accumulator live in
// registers as D4 / DV4 vec4s. K and V tiles of BKV keys are staged in workgroup
// memory and read by every row (the same address across the workgroup: a
// broadcast). Scores are handled SK keys at a time with the online softmax:
// m' = max(m, chunk max), rescale o and l by exp(m - m'), add exp(s - m')·v.
// Under causal masking the key loop stops at the workgroup's last visible key,
// so fully masked tiles are never loaded or computed.
var<workgroup> Ks: array<vec4<f32>, BKV * D4>;
var<workgroup> Vs: array<vec4<f32>, BKV * DV4>;

@compute @workgroup_size(BQ)
fn flash(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let b = bh / P.hq;
    let h = bh % P.hq;
    let hk = h / P.group;
    let row0 = wid.x * BQ;
    let row = row0 + lid;
    // Rows past the end compute on a clamped row and are not stored; they still
    // reach every barrier.
    let rowc = min(row, P.sq - 1u);
    let qb = b * P.q_sb + h * P.q_sh + rowc * P.q_ss;
//#for i < D4
    let q{i} = ld_q(qb, {i}u) * P.scale;
//#endfor
//#for i < DV4
    var o{i} = vec4<f32>(0.0);
//#endfor
    var m = NEG;
    var l = 0.0;
    let rend = key_end(b, rowc);
    // Key ends grow with the row, so the last row's end bounds the workgroup.
    let wend = key_end(b, min(row0 + BQ - 1u, P.sq - 1u));
    let kb = b * P.k_sb + hk * P.k_sh;
    let vb = b * P.v_sb + hk * P.v_sh;
//#if BIAS
    let bb = b * P.bias_sb + h * P.bias_sh + rowc * P.sk;
//#endif
    for (var t0 = 0u; t0 < wend; t0 += BKV) {
        for (var e = lid; e < BKV * D4; e += BQ) {
            let key = t0 + e / D4;
            var x = vec4<f32>(0.0);
            if (key < wend) { x = ld_k(kb + key * P.k_ss, e % D4); }
            Ks[e] = x;
        }
        for (var e = lid; e < BKV * DV4; e += BQ) {
            let key = t0 + e / DV4;
            var x = vec4<f32>(0.0);
            if (key < wend) { x = ld_v(vb + key * P.v_ss, e % DV4); }
            Vs[e] = x;
        }
        workgroupBarrier();
        let tn = min(BKV, wend - t0);
        for (var c0 = 0u; c0 < tn; c0 += SK) {
//#for j < SK
            let key{j} = t0 + c0 + {j}u;
            var s{j} = 0.0;
//#for i < D4
            s{j} += dot(q{i}, Ks[(c0 + {j}u) * D4 + {i}u]);
//#endfor
            let ok{j} = key{j} < rend;
//#if BIAS
            if (ok{j}) { s{j} += bias[bb + key{j}]; }
//#endif
//#endfor
            var cmax = NEG;
//#for j < SK
            if (ok{j}) { cmax = max(cmax, s{j}); }
//#endfor
            let mn = max(m, cmax);
            let corr = exp(m - mn);
            l *= corr;
//#for i < DV4
            o{i} *= corr;
//#endfor
//#for j < SK
            let p{j} = select(0.0, exp(s{j} - mn), ok{j});
            l += p{j};
//#for i < DV4
            o{i} = fma(vec4<f32>(p{j}), Vs[(c0 + {j}u) * DV4 + {i}u], o{i});
//#endfor
//#endfor
            m = mn;
        }
        workgroupBarrier();
    }
    if (row < P.sq) {
        // A row that saw no key (all masked) outputs zeros.
        let inv = select(0.0, 1.0 / l, l > 0.0);
        let ob = b * P.o_sb + h * P.o_sh + row * P.o_ss;
//#for i < DV4
        st_row(ob, {i}u, o{i} * inv);
//#endfor
//#if LSE
        lse[bh * P.sq + row] = select(bitcast<f32>(0xff800000u), m + log(l), l > 0.0);
//#endif
    }
}
//#endif

//#if KIND_BLOCKS
// ---------------------------------------------------------------------------
// Flash attention, blocked schedule (consts WG, HG, TM, KB, NV, TM4; head dims
// are run-time values so one pipeline serves every d and d_v ≤ 4·NV·HG):
// the two products as register-blocked GEMM tiles, for adapters where every
// load costs an instruction per lane (CPU adapters). A workgroup of WG
// invocations is WG / HG groups of HG; a group owns TM query rows of one
// (batch, head) and walks the keys in tiles of HG·KB:
// - S = Q·Kᵀ: invocation t of a group scores keys t, t+HG, ... (KB of them)
//   against the group's TM rows, so each K vector it loads feeds TM rows and
//   each Q vector (the same address across the group) feeds KB keys;
// - the tile's row maxima are exchanged through workgroup memory, so the
//   group's invocations hold the same running max m per row and each its
//   share of the sum l;
// - P (exp(s − m)) goes to workgroup memory, and for O += P·V invocation t owns
//   the V/O column groups t, t+HG, ... (NV of them): each V vector feeds TM rows
//   and each P value feeds NV column groups. Fewer invocations per group give
//   each more columns, so fewer P loads per FMA.
// Two barriers per tile; keys past the workgroup's causal limit are never
// visited.
// P tile as [group][key][row] vec4s: a key's TM values in TM / 4 loads.
var<workgroup> Pt: array<vec4<f32>, WG * KB * TM4>;
var<workgroup> Mx: array<f32, WG * TM>;

@compute @workgroup_size(WG)
fn flash_blocks(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let b = bh / P.hq;
    let h = bh % P.hq;
    let hk = h / P.group;
    let d4 = (P.d + 3u) / 4u;
    let dv4 = (P.dv + 3u) / 4u;
    let grp = lid / HG;
    let gl = lid % HG;
    let wrow0 = wid.x * TM * (WG / HG);
    let row0 = wrow0 + grp * TM;
    let kb = b * P.k_sb + hk * P.k_sh;
    let vb = b * P.v_sb + hk * P.v_sh;
//#for i < TM
    // Rows past the end run on a clamped row and are not stored.
    let rc{i} = min(row0 + {i}u, P.sq - 1u);
    let qb{i} = b * P.q_sb + h * P.q_sh + rc{i} * P.q_ss;
    let rend{i} = key_end(b, rc{i});
    var m{i} = NEG;
    var l{i} = 0.0;
//#for c < NV
    var o{i}_{c} = vec4<f32>(0.0);
//#endfor
//#endfor
    // Every group walks to the workgroup's last visible key (barriers need a
    // uniform trip count); its own masks zero the keys it may not see.
    let wend = key_end(b, min(wrow0 + TM * (WG / HG) - 1u, P.sq - 1u));
    for (var t0 = 0u; t0 < wend; t0 += HG * KB) {
//#for j < KB
        let key{j} = t0 + {j}u * HG + gl;
        let kr{j} = kb + min(key{j}, wend - 1u) * P.k_ss;
//#for i < TM
        var s{i}_{j} = 0.0;
//#endfor
//#endfor
        for (var c = 0u; c < d4; c++) {
//#for j < KB
            let k{j} = ld_k(kr{j}, c);
//#endfor
//#for i < TM
            {
                let qv = ld_q(qb{i}, c);
//#for j < KB
                s{i}_{j} += dot(qv, k{j});
//#endfor
            }
//#endfor
        }
//#for i < TM
        {
            var mx = NEG;
//#for j < KB
            if (key{j} < rend{i}) {
//#if BIAS
                s{i}_{j} = s{i}_{j} * P.scale + bias[b * P.bias_sb + h * P.bias_sh + rc{i} * P.sk + key{j}];
//#else
                s{i}_{j} *= P.scale;
//#endif
                mx = max(mx, s{i}_{j});
            }
//#endfor
            Mx[lid * TM + {i}u] = mx;
        }
//#endfor
        workgroupBarrier();
//#for i < TM
        {
            var tmax = m{i};
            for (var t = 0u; t < HG; t++) {
                tmax = max(tmax, Mx[(grp * HG + t) * TM + {i}u]);
            }
            let corr = exp(m{i} - tmax);
            m{i} = tmax;
            l{i} *= corr;
//#for c < NV
            o{i}_{c} *= corr;
//#endfor
//#for j < KB
            s{i}_{j} = select(0.0, exp(s{i}_{j} - tmax), key{j} < rend{i});
            l{i} += s{i}_{j};
//#endfor
        }
//#endfor
        let pg = grp * HG * KB;
//#for j < KB
//#for g < TM4
        Pt[(pg + {j}u * HG + gl) * TM4 + {g}u] = vec4<f32>(s{4g}_{j}, s{4g+1}_{j}, s{4g+2}_{j}, s{4g+3}_{j});
//#endfor
//#endfor
        workgroupBarrier();
        // Keys past the end have p = 0 and read a clamped V row.
        let tn = min(HG * KB, wend - t0);
        for (var kk = 0u; kk < tn; kk++) {
            let vr = vb + (t0 + kk) * P.v_ss;
//#for c < NV
            let v{c} = ld_v(vr, min(gl + {c}u * HG, dv4 - 1u));
//#endfor
//#for g < TM4
            {
                let p = Pt[(pg + kk) * TM4 + {g}u];
//#for c < NV
                o{4g}_{c} = fma(vec4<f32>(p.x), v{c}, o{4g}_{c});
                o{4g+1}_{c} = fma(vec4<f32>(p.y), v{c}, o{4g+1}_{c});
                o{4g+2}_{c} = fma(vec4<f32>(p.z), v{c}, o{4g+2}_{c});
                o{4g+3}_{c} = fma(vec4<f32>(p.w), v{c}, o{4g+3}_{c});
//#endfor
            }
//#endfor
        }
        // The next tile's Mx and Pt writes wait for this tile's reads.
        workgroupBarrier();
    }
    // Each invocation holds part of each row's sum l: add up the group's.
//#for i < TM
    Mx[lid * TM + {i}u] = l{i};
//#endfor
    workgroupBarrier();
//#for i < TM
    if (row0 + {i}u < P.sq) {
        var l = 0.0;
        for (var t = 0u; t < HG; t++) {
            l += Mx[(grp * HG + t) * TM + {i}u];
        }
        // A row that saw no key (all masked) outputs zeros.
        let inv = select(0.0, 1.0 / l, l > 0.0);
        let ob = b * P.o_sb + h * P.o_sh + (row0 + {i}u) * P.o_ss;
//#for c < NV
        if (gl + {c}u * HG < dv4) {
            st_row(ob, gl + {c}u * HG, o{i}_{c} * inv);
        }
//#endfor
//#if LSE
        if (gl == 0u) {
            lse[bh * P.sq + row0 + {i}u] = select(bitcast<f32>(0xff800000u), m{i} + log(l), l > 0.0);
        }
//#endif
    }
//#endfor
}
//#endif

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

//#if KIND_ROWS
// ---------------------------------------------------------------------------
// Flash attention, rows schedule (consts WG, TM, D4, DV4, KB): every
// invocation owns TM consecutive query rows of one (batch, head) (so under a
// causal mask its rows see nearly the same keys) and streams every key it may
// see itself, KB keys per online-softmax step, with
// its rows' Q and O in registers. K and V are read as texel fetches from the
// K/V textures (KV_TEX): no workgroup memory, no barrier. Each K or V texel
// feeds TM rows. Suits adapters where storage and workgroup loads cost a
// per-lane loop and a barrier a context switch (CPU adapters); texel fetches
// there are vectorised gathers. With SG (subgroups of at least 8 lanes, consts
// KF = ceil(D4 / 8), VF = ceil(DV4 / 8)) a subgroup's lanes fetch different
// texels of a key and broadcast them to each other.

@compute @workgroup_size(WG)
fn flash_rows(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_index) lid: u32,
//#if SG
              @builtin(subgroup_invocation_id) sid: u32,
//#endif
              ) {
    let bh = wid.y;
    let b = bh / P.hq;
    let h = bh % P.hq;
    let hk = h / P.group;
    let row0 = (wid.x * WG + lid) * TM;
    let ktb = b * P.kt_sb + hk * P.kt_sh;
    let vtb = b * P.vt_sb + hk * P.vt_sh;
    var kend = 0u;
//#for i < TM
    // Rows past the end run on a clamped row and are not stored.
    let rc{i} = min(row0 + {i}u, P.sq - 1u);
    let rend{i} = key_end(b, rc{i});
    kend = max(kend, rend{i});
    let qb{i} = b * P.q_sb + h * P.q_sh + rc{i} * P.q_ss;
//#for c < D4
    let q{i}_{c} = ld_q(qb{i}, {c}u) * P.scale;
//#endfor
    var m{i} = NEG;
    var l{i} = 0.0;
//#for c < DV4
    var o{i}_{c} = vec4<f32>(0.0);
//#endfor
//#endfor
//#if SG
    // A subgroup walks its lanes' keys together so that each K/V texel is
    // fetched once for 8 lanes and shared by subgroupBroadcast: lane g
    // fetches vec4s g, g + 8, ... of a key.
    kend = subgroupMax(kend);
    let lane = sid & 7u;
//#endif
    for (var j0 = 0u; j0 < kend; j0 += KB) {
//#for j < KB
        // Keys past the end read a clamped key and get p = 0.
        let kc{j} = min(j0 + {j}u, kend - 1u);
        let kt{j} = ktb + kc{j} * P.kt_ss;
        let vt{j} = vtb + kc{j} * P.vt_ss;
//#for i < TM
        var s{i}_{j} = 0.0;
//#endfor
//#if SG
        var kf{j}: array<vec4<f32>, KF>;
//#for f < KF
        kf{j}[{f}] = ld_kt(kt{j} + min({f}u * 8u + lane, D4 - 1u));
//#endfor
//#endif
//#for c < D4
        {
//#if SG
            let kv = subgroupBroadcast(kf{j}[{c}u / 8u], {c}u % 8u);
//#else
            let kv = ld_kt(kt{j} + {c}u);
//#endif
//#for i < TM
            s{i}_{j} += dot(q{i}_{c}, kv);
//#endfor
        }
//#endfor
//#endfor
//#for i < TM
        {
            var mx = m{i};
//#for j < KB
            let ok{i}_{j} = j0 + {j}u < rend{i};
//#if BIAS
            if (ok{i}_{j}) {
                s{i}_{j} += bias[b * P.bias_sb + h * P.bias_sh + rc{i} * P.sk + j0 + {j}u];
            }
//#endif
            mx = select(mx, max(mx, s{i}_{j}), ok{i}_{j});
//#endfor
            let corr = exp(m{i} - mx);
            m{i} = mx;
            l{i} *= corr;
//#for c < DV4
            o{i}_{c} *= corr;
//#endfor
            // The block's probabilities summed first: fewer roundings of the
            // large running sum.
            var lb = 0.0;
//#for j < KB
            s{i}_{j} = select(0.0, exp(s{i}_{j} - mx), ok{i}_{j});
            lb += s{i}_{j};
//#endfor
            l{i} += lb;
        }
//#endfor
//#for j < KB
//#if SG
        var vf{j}: array<vec4<f32>, VF>;
//#for f < VF
        vf{j}[{f}] = ld_vt(vt{j} + min({f}u * 8u + lane, DV4 - 1u));
//#endfor
//#endif
//#for c < DV4
        {
//#if SG
            let vv = subgroupBroadcast(vf{j}[{c}u / 8u], {c}u % 8u);
//#else
            let vv = ld_vt(vt{j} + {c}u);
//#endif
//#for i < TM
            o{i}_{c} = fma(vec4<f32>(s{i}_{j}), vv, o{i}_{c});
//#endfor
        }
//#endfor
//#endfor
    }
//#for i < TM
    if (row0 + {i}u < P.sq) {
        // A row that saw no key (all masked) outputs zeros.
        let inv = select(0.0, 1.0 / l{i}, l{i} > 0.0);
        let ob = b * P.o_sb + h * P.o_sh + rc{i} * P.o_ss;
//#for c < DV4
        st_row(ob, {c}u, o{i}_{c} * inv);
//#endfor
//#if LSE
        lse[bh * P.sq + rc{i}] = select(bitcast<f32>(0xff800000u), m{i} + log(l{i}), l{i} > 0.0);
//#endif
    }
//#endfor
}
//#endif

//#if KIND_KEYSPLIT
// ---------------------------------------------------------------------------
// Flash attention, key-split schedule (consts TM, D4, DV4; 64 invocations). A
// workgroup owns TM query rows of one (batch, head); its invocations split the
// keys (invocation t takes keys t, t+64, ...). The rows are the same for every
// invocation, so Q is loaded once as broadcasts and each K or V vector an
// invocation loads feeds TM rows. Each invocation runs the online softmax for
// each row over its keys; at the end the 64 partial (max, sum, output) per row
// are merged in workgroup memory with log-sum-exp weights. Keys past the last
// row's causal limit are never visited. Barriers happen only in the merge,
// which suits adapters where a barrier is a context switch (CPU adapters).
var<workgroup> red_ml: array<vec2<f32>, 64>;
var<workgroup> red_o: array<vec4<f32>, 64 * DV4>;

@compute @workgroup_size(64)
fn flash_keysplit(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let b = bh / P.hq;
    let h = bh % P.hq;
    let hk = h / P.group;
    let row0 = wid.x * TM;
//#for i < TM
    let rc{i} = min(row0 + {i}u, P.sq - 1u);
    let rend{i} = key_end(b, rc{i});
    var m{i} = NEG;
    var l{i} = 0.0;
//#for c < D4
    let q{i}_{c} = ld_q(b * P.q_sb + h * P.q_sh + rc{i} * P.q_ss, {c}u) * P.scale;
//#endfor
//#for c < DV4
    var o{i}_{c} = vec4<f32>(0.0);
//#endfor
//#endfor
    let wend = key_end(b, min(row0 + TM - 1u, P.sq - 1u));
    let kb = b * P.k_sb + hk * P.k_sh;
    let vb = b * P.v_sb + hk * P.v_sh;
    // Keys in chunks of KC per invocation (key0 + 64·c): one rescale of the
    // accumulators per chunk instead of per key.
    for (var key0 = lid; key0 < wend; key0 += 64u * KC) {
//#for c < KC
        let key{c} = key0 + {c}u * 64u;
        let kr{c} = kb + min(key{c}, wend - 1u) * P.k_ss;
//#for e < D4
        let k{c}_{e} = ld_k(kr{c}, {e}u);
//#endfor
//#for i < TM
        var s{i}_{c} = NEG;
        let ok{i}_{c} = key{c} < rend{i};
        if (ok{i}_{c}) {
            s{i}_{c} = 0.0;
//#for e < D4
            s{i}_{c} += dot(q{i}_{e}, k{c}_{e});
//#endfor
//#if BIAS
            s{i}_{c} += bias[b * P.bias_sb + h * P.bias_sh + rc{i} * P.sk + key{c}];
//#endif
        }
//#endfor
//#endfor
//#for i < TM
        {
            var cmax = m{i};
//#for c < KC
            if (ok{i}_{c}) { cmax = max(cmax, s{i}_{c}); }
//#endfor
            let corr = exp(m{i} - cmax);
            l{i} *= corr;
//#for e < DV4
            o{i}_{e} *= corr;
//#endfor
            m{i} = cmax;
        }
//#endfor
//#for c < KC
        {
            let vr = vb + min(key{c}, wend - 1u) * P.v_ss;
//#for e < DV4
            let v{e} = ld_v(vr, {e}u);
//#endfor
//#for i < TM
            {
                let p = select(0.0, exp(s{i}_{c} - m{i}), ok{i}_{c});
                l{i} += p;
//#for e < DV4
                o{i}_{e} = fma(vec4<f32>(p), v{e}, o{i}_{e});
//#endfor
            }
//#endfor
        }
//#endfor
    }
    // Merge the 64 partial softmaxes of each row.
//#for i < TM
    red_ml[lid] = vec2<f32>(m{i}, l{i});
//#for c < DV4
    red_o[lid * DV4 + {c}u] = o{i}_{c};
//#endfor
    workgroupBarrier();
    if (lid < DV4) {
        var mx = NEG;
        for (var t = 0u; t < 64u; t++) {
            if (red_ml[t].y > 0.0) { mx = max(mx, red_ml[t].x); }
        }
        var l = 0.0;
        var acc = vec4<f32>(0.0);
        for (var t = 0u; t < 64u; t++) {
            let ml = red_ml[t];
            if (ml.y > 0.0) {
                let w = exp(ml.x - mx);
                l += ml.y * w;
                acc = fma(vec4<f32>(w), red_o[t * DV4 + lid], acc);
            }
        }
        if (row0 + {i}u < P.sq) {
            let inv = select(0.0, 1.0 / l, l > 0.0);
            st_row(b * P.o_sb + h * P.o_sh + (row0 + {i}u) * P.o_ss, lid, acc * inv);
//#if LSE
            if (lid == 0u) {
                lse[bh * P.sq + row0 + {i}u] = select(bitcast<f32>(0xff800000u), mx + log(l), l > 0.0);
            }
//#endif
        }
    }
    workgroupBarrier();
//#endfor
}
//#endif

//#if KIND_SPLIT
// ---------------------------------------------------------------------------
// Split-KV (flash-decoding), first pass. For few query rows and many keys: one
// invocation per (row, key split), so a single query still fills the device.
// A workgroup's invocations share the row (Q loads are broadcasts) and take
// consecutive splits of `chunk` keys. Each writes its unnormalised output and
// (max, sum) for the merge pass.
@group(0) @binding(4) var<storage, read_write> part_o: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> part_ml: array<vec2<f32>>;

@compute @workgroup_size(64)
fn split_kv(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let split = wid.x * 64u + lid;
    let rbh = wid.y;
    if (split >= P.nsplit) {
        return;
    }
    let row = rbh % P.sq;
    let bh = rbh / P.sq;
    let b = bh / P.hq;
    let h = bh % P.hq;
    let hk = h / P.group;
    let qb = b * P.q_sb + h * P.q_sh + row * P.q_ss;
//#for i < D4
    let q{i} = ld_q(qb, {i}u) * P.scale;
//#endfor
//#for i < DV4
    var o{i} = vec4<f32>(0.0);
//#endfor
    var m = NEG;
    var l = 0.0;
    let rend = key_end(b, row);
    let k0 = split * P.chunk;
    let k1 = min(k0 + P.chunk, rend);
    let kb = b * P.k_sb + hk * P.k_sh;
    let vb = b * P.v_sb + hk * P.v_sh;
//#if BIAS
    let bb = b * P.bias_sb + h * P.bias_sh + row * P.sk;
//#endif
//#if KV_TEX
    // K/V as texels, KB keys per online-softmax step (one max and KB + 1
    // exponentials per step instead of two per key).
    let ktb = b * P.kt_sb + hk * P.kt_sh;
    let vtb = b * P.vt_sb + hk * P.vt_sh;
    for (var j0 = k0; j0 < k1; j0 += KB) {
//#for j < KB
        // Keys past the split's end read a clamped key and get p = 0.
        let kc{j} = min(j0 + {j}u, k1 - 1u);
        let kt{j} = ktb + kc{j} * P.kt_ss;
        let vt{j} = vtb + kc{j} * P.vt_ss;
        var s{j} = 0.0;
//#endfor
//#for c < D4
//#for j < KB
        s{j} += dot(q{c}, ld_kt(kt{j} + {c}u));
//#endfor
//#endfor
        var mx = m;
//#for j < KB
        let ok{j} = j0 + {j}u < k1;
//#if BIAS
        if (ok{j}) {
            s{j} += bias[bb + j0 + {j}u];
        }
//#endif
        mx = select(mx, max(mx, s{j}), ok{j});
//#endfor
        let corr = exp(m - mx);
        m = mx;
        var lb = 0.0;
//#for j < KB
        let p{j} = select(0.0, exp(s{j} - mx), ok{j});
        lb += p{j};
//#endfor
        l = l * corr + lb;
//#for c < DV4
        {
            var acc = o{c} * corr;
//#for j < KB
            acc = fma(vec4<f32>(p{j}), ld_vt(vt{j} + {c}u), acc);
//#endfor
            o{c} = acc;
        }
//#endfor
    }
//#else
    for (var key = k0; key < k1; key++) {
        var s = 0.0;
        let kr = kb + key * P.k_ss;
//#for i < D4
        s += dot(q{i}, ld_k(kr, {i}u));
//#endfor
//#if BIAS
        s += bias[bb + key];
//#endif
        let mn = max(m, s);
        let corr = exp(m - mn);
        let p = exp(s - mn);
        l = l * corr + p;
        let vr = vb + key * P.v_ss;
//#for i < DV4
        o{i} = fma(vec4<f32>(p), ld_v(vr, {i}u), o{i} * corr);
//#endfor
        m = mn;
    }
//#endif
    let slot = rbh * P.nsplit + split;
//#for i < DV4
    part_o[slot * DV4 + {i}u] = o{i};
//#endfor
    part_ml[slot] = vec2<f32>(m, l);
}
//#endif

//#if KIND_MERGE
// ---------------------------------------------------------------------------
// Split-KV second pass: one invocation per (row, vec4 of the output) merges the
// splits with log-sum-exp weights: M = max m_s, L = Σ l_s·e^(m_s−M),
// O = Σ o_s·e^(m_s−M) / L.
@group(0) @binding(1) var<storage, read> part_o: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> part_ml: array<vec2<f32>>;

@compute @workgroup_size(64)
fn merge(@builtin(global_invocation_id) gid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= P.b * P.hq * P.sq * DV4) {
        return;
    }
    let c = idx % DV4;
    let rbh = idx / DV4;
    let row = rbh % P.sq;
    let bh = rbh / P.sq;
    let b = bh / P.hq;
    let h = bh % P.hq;
    var mx = NEG;
    for (var s = 0u; s < P.nsplit; s++) {
        let ml = part_ml[rbh * P.nsplit + s];
        if (ml.y > 0.0) { mx = max(mx, ml.x); }
    }
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < P.nsplit; s++) {
        let slot = rbh * P.nsplit + s;
        let ml = part_ml[slot];
        if (ml.y > 0.0) {
            let w = exp(ml.x - mx);
            l += ml.y * w;
            acc = fma(vec4<f32>(w), part_o[slot * DV4 + c], acc);
        }
    }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    st_row(b * P.o_sb + h * P.o_sh + row * P.o_ss, c, acc * inv);
//#if LSE
    if (c == 0u) {
        lse[rbh] = select(bitcast<f32>(0xff800000u), mx + log(l), l > 0.0);
    }
//#endif
}
//#endif

//#if KIND_SOFTMAX
// ---------------------------------------------------------------------------
// Naive path: masked softmax over materialised scores S [B, Hkv, G·Sq, Sk]
// (already scaled), in place, written as T to `pm`. One workgroup per row.
@group(0) @binding(1) var<storage, read> s_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> pm: array<T>;
//#if LSE
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;
//#endif
var<workgroup> red: array<f32, 64>;

fn reduce(x: f32, lid: u32, is_max: bool) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (is_max) { red[lid] = max(red[lid], red[lid + s]); } else { red[lid] += red[lid + s]; }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    let rows = P.b * P.hq * P.sq;
    if (r >= rows) {
        return;
    }
    // r enumerates (b, kv head, g, i) with the query head h = kv head·G + g.
    let i = r % P.sq;
    let bh = r / P.sq;
    let b = bh / P.hq;
    let h = bh % P.hq;
    let rend = key_end(b, i);
    let base = r * P.sk;
//#if BIAS
    let bb = b * P.bias_sb + h * P.bias_sh + i * P.sk;
//#endif
    var mx = NEG;
    for (var j = lid; j < rend; j += 64u) {
        var s = s_in[base + j];
//#if BIAS
        s += bias[bb + j];
//#endif
        mx = max(mx, s);
    }
    mx = reduce(mx, lid, true);
    var sum = 0.0;
    for (var j = lid; j < rend; j += 64u) {
        var s = s_in[base + j];
//#if BIAS
        s += bias[bb + j];
//#endif
        sum += exp(s - mx);
    }
    sum = reduce(sum, lid, false);
    let inv = select(0.0, 1.0 / sum, sum > 0.0);
    for (var j = lid; j < P.sk; j += 64u) {
        var p = 0.0;
        if (j < rend) {
            var s = s_in[base + j];
//#if BIAS
            s += bias[bb + j];
//#endif
            p = exp(s - mx) * inv;
        }
        pm[base + j] = T(p);
    }
//#if LSE
    if (lid == 0u) {
        lse[r] = select(bitcast<f32>(0xff800000u), mx + log(sum), sum > 0.0);
    }
//#endif
}
//#endif

//#if KIND_PERMUTE
// ---------------------------------------------------------------------------
// Naive path helper: [B, X, Y, D] -> [B, Y, X, D] (swaps the seq and head axes).
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(64)
fn permute(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    // P.b = B, P.hq = X, P.sq = Y, P.d = D.
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= P.b * P.hq * P.sq * P.d) {
        return;
    }
    let dd = idx % P.d;
    let y = (idx / P.d) % P.sq;
    let x = (idx / (P.d * P.sq)) % P.hq;
    let bb = idx / (P.d * P.sq * P.hq);
    dst[((bb * P.sq + y) * P.hq + x) * P.d + dd] = src[idx];
}
//#endif
