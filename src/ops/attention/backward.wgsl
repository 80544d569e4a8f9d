// Attention backward: FlashAttention-2's algorithm without float atomics.
//
// With P_ij = exp(s_ij − lse_i) recomputed from the forward's log-sum-exp,
// dP_ij = dO_i·v_j and D_i = rowsum(dO_i ∘ O_i):
//   dS_ij = P_ij (dP_ij − D_i)            (the bias's gradient)
//   dq_i  = scale · Σ_j dS_ij c_ij k_j    (c_ij: the soft cap's 1 − tanh²)
//   dk_j  = scale · Σ_i dS_ij c_ij q_i,   dv_j = Σ_i P_ij dO_i
// FlashAttention-2 adds dq atomically from the key-block kernel; WGSL has no
// float atomics, so dq has a kernel of its own (query rows resident, keys
// streamed) beside the dk/dv kernel (keys resident, query rows streamed),
// each recomputing S and dP: 14·d FLOPs per (query, key) against the
// forward's 4·d, and no score matrix in device memory.
//
// Kernels: bwd_prep (D and the LSE as one vec2 per row), bwd_q, bwd_kv,
// bwd_bias (the bias gradient summed over its broadcast dimensions) and
// bwd_ds (the naive path's dS from materialised S, P and dP). BWD_TEX reads
// the streamed side as texel fetches (bwd_q: the K/V textures; bwd_kv: Q
// and dO as textures, addressed through the kt_*/vt_* params), else from
// the storage buffers; with SG (texels, subgroups of at least 8 lanes) a
// subgroup walks one range and its lanes fetch different texels of each
// streamed row and broadcast them (consts KF = ceil(D4 / 8), VF =
// ceil(DV4 / 8)). Both compute kernels are barrier-free and use no
// workgroup memory; consts WG, TM (resident rows or keys per invocation),
// KB (streamed keys or rows per step), D4, DV4.

//#if KIND_BWD_PREP
// ---------------------------------------------------------------------------
// One invocation per query row: D = dO·O, stored beside the row's LSE.
@group(0) @binding(1) var<storage, read> o_in: array<T>;
@group(0) @binding(2) var<storage, read> lse_in: array<f32>;
@group(0) @binding(12) var<storage, read> dout: array<T>;
@group(0) @binding(7) var<storage, read_write> stats: array<vec2<f32>>;

@compute @workgroup_size(64)
fn bwd_prep(@builtin(global_invocation_id) g: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = g.x + g.y * nwg.x * 64u;
    if (r >= P.b * P.hq * P.sq) {
        return;
    }
    let i = r % P.sq;
    let bh = r / P.sq;
    let base = (bh / P.hq) * P.o_sb + (bh % P.hq) * P.o_sh + i * P.o_ss;
    var acc = 0.0;
    for (var t = 0u; t < P.dv; t++) {
        acc += f32(dout[base + t]) * f32(o_in[base + t]);
    }
    stats[r] = vec2<f32>(lse_in[r], acc);
}
//#endif

//#if KIND_BWD_Q || KIND_BWD_KV
//#if VEC
@group(0) @binding(12) var<storage, read> dout: array<vec4<T>>;
fn ld_do(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(dout[base / 4u + c]); }
//#else
@group(0) @binding(12) var<storage, read> dout: array<T>;
fn ld_do(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < P.dv) { r[i] = f32(dout[base + 4u * c + i]); }
    }
    return r;
}
//#endif
// (lse, D) of each query row, [batch · heads_q · seq_q].
@group(0) @binding(7) var<storage, read> stats: array<vec2<f32>>;
// dq, or dk with dv at binding 13.
@group(0) @binding(4) var<storage, read_write> g0: array<T>;
//#if KIND_BWD_KV
@group(0) @binding(13) var<storage, read_write> g1: array<T>;
//#endif
//#if DBIAS
// dS of every (batch, query head, row, key), [b, hq, sq, sk], zeroed first.
@group(0) @binding(14) var<storage, read_write> dbias: array<f32>;
//#endif

// The first n elements of x into g0 (g1) at row offset base, vec4 c.
fn st_g0(base: u32, c: u32, n: u32, x: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < n) { g0[base + 4u * c + i] = T(x[i]); }
    }
}
//#if KIND_BWD_KV
fn st_g1(base: u32, c: u32, n: u32, x: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < n) { g1[base + 4u * c + i] = T(x[i]); }
    }
}
//#endif

// A scaled score s of query `row` and key j: (the score as the forward
// computes it before the bias, the soft cap's derivative 1 − tanh² there).
fn bwd_score(hx: vec2<f32>, row: u32, j: u32, s: f32) -> vec2<f32> {
    let c = capped(s);
    var dc = 1.0;
//#if SOFTCAP
    let t = c / P.softcap;
    dc = 1.0 - t * t;
//#endif
    return vec2<f32>(c - alibi(hx, row, j), dc);
}

// Whether an LSE is a number (a row with a NaN score adds nothing to dk and
// dv; its own dq is NaN). By its bits: an adapter may fold x == x.
fn is_num(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) <= 0x7f800000u;
}
//#endif

//#if KIND_BWD_Q
// ---------------------------------------------------------------------------
// dq: every invocation owns TM consecutive query rows of one (batch, head)
// with their q, dO and dq in registers and streams the keys its rows may
// see, KB a step; each K or V vec4 it loads feeds TM rows. With BIAS_GRAD
// (DBIAS) it also writes each visible dS_ij.
@compute @workgroup_size(WG)
fn bwd_q(@builtin(workgroup_id) wid: vec3<u32>,
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
    let hx = head_ext(b, h);
    var kend = 0u;
//#for i < TM
    // Rows past the end run on a clamped row and are not stored.
    let rc{i} = min(row0 + {i}u, P.sq - 1u);
    let rend{i} = key_end(b, rc{i});
    let rs{i} = key_start(b, rc{i});
    kend = max(kend, rend{i});
    let st{i} = stats[bh * P.sq + rc{i}];
    let qb{i} = b * P.q_sb + h * P.q_sh + rc{i} * P.q_ss;
    let ob{i} = b * P.o_sb + h * P.o_sh + rc{i} * P.o_ss;
//#for c < D4
    let q{i}_{c} = ld_q(qb{i}, {c}u);
    var dq{i}_{c} = vec4<f32>(0.0);
//#endfor
//#for c < DV4
    let do{i}_{c} = ld_do(ob{i}, {c}u);
//#endfor
//#endfor
//#if SG
    // A subgroup walks its lanes' keys together so that each K/V texel is
    // fetched once for 8 lanes and shared by subgroupBroadcast: lane g
    // fetches vec4s g, g + 8, ... of a key.
    kend = subgroupMax(kend);
    let kst = subgroupMin(rs0);
    let lane = sid & 7u;
//#else
    let kst = rs0;
//#endif
    for (var j0 = skip_gap(0u, kst); j0 < kend; j0 = skip_gap(j0 + KB, kst)) {
//#for j < KB
        // Keys past the end read a clamped key and get p = 0.
        let kl{j} = kv_loc(b, min(j0 + {j}u, kend - 1u));
//#if BWD_TEX
        let kt{j} = kt_at(kl{j}, hk);
        let vt{j} = vt_at(kl{j}, hk);
//#else
        let kt{j} = k_at(kl{j}, hk);
        let vt{j} = v_at(kl{j}, hk);
//#endif
//#for i < TM
        var s{i}_{j} = 0.0;
        var dp{i}_{j} = 0.0;
//#endfor
//#if SG
        var kf{j}: array<vec4<f32>, KF>;
//#for f < KF
        kf{j}[{f}] = ld_kt(kt{j} + min({f}u * 8u + lane, D4 - 1u));
//#endfor
        var vf{j}: array<vec4<f32>, VF>;
//#for f < VF
        vf{j}[{f}] = ld_vt(vt{j} + min({f}u * 8u + lane, DV4 - 1u));
//#endfor
//#endif
//#for c < D4
//#if SG
        let k{j}_{c} = subgroupBroadcast(kf{j}[{c}u / 8u], {c}u % 8u);
//#else
//#if BWD_TEX
        let k{j}_{c} = ld_kt(kt{j} + {c}u);
//#else
        let k{j}_{c} = ld_k(kt{j}, {c}u);
//#endif
//#endif
//#for i < TM
        s{i}_{j} += dot(q{i}_{c}, k{j}_{c});
//#endfor
//#endfor
//#for c < DV4
        {
//#if SG
            let vv = subgroupBroadcast(vf{j}[{c}u / 8u], {c}u % 8u);
//#else
//#if BWD_TEX
            let vv = ld_vt(vt{j} + {c}u);
//#else
            let vv = ld_v(vt{j}, {c}u);
//#endif
//#endif
//#for i < TM
            dp{i}_{j} += dot(do{i}_{c}, vv);
//#endfor
        }
//#endfor
//#endfor
//#for i < TM
//#for j < KB
        {
            let key = j0 + {j}u;
            let ok = visible(b, h, rc{i}, key, rs{i}, rend{i});
            let sc = bwd_score(hx, rc{i}, key, s{i}_{j} * P.scale);
            var x = sc.x;
//#if BIAS
            if (ok) { x += bias[b * P.bias_sb + h * P.bias_sh + rc{i} * P.sk + key]; }
//#endif
            let p = select(0.0, exp(x - st{i}.x), ok);
            let ds = p * (dp{i}_{j} - st{i}.y);
//#if DBIAS
            if (ok && row0 + {i}u < P.sq) { dbias[(bh * P.sq + rc{i}) * P.sk + key] = ds; }
//#endif
            s{i}_{j} = ds * sc.y;
        }
//#endfor
//#endfor
        // Each accumulator takes the step's KB updates in a row: one load and
        // one store of it a step where registers spill.
//#for i < TM
//#for c < D4
//#for j < KB
        dq{i}_{c} = fma(vec4<f32>(s{i}_{j}), k{j}_{c}, dq{i}_{c});
//#endfor
//#endfor
//#endfor
    }
//#for i < TM
    if (row0 + {i}u < P.sq) {
//#for c < D4
        st_g0(qb{i}, {c}u, P.d, dq{i}_{c} * P.scale);
//#endfor
    }
//#endfor
}
//#endif

//#if KIND_BWD_KV
// ---------------------------------------------------------------------------
// dk and dv: every invocation owns TM consecutive keys of one (batch, kv
// head) with their k, v, dk and dv in registers and streams, for each query
// head of the kv head's group in turn (GQA sums in registers), the query
// rows that may see its keys, KB rows a step; each q or dO vec4 it loads
// feeds TM keys.

// Query rows [x, y) that may see a key in [j0, j1] of sequence b: causal
// and right-window rows start at the first key's diagonal, a left window
// ends them at the last key's (unless the keys include sink tokens).
// Windows past seq_q + seq_k are unbounded (and their sums stay in i32).
fn row_range(b: u32, j0: u32, j1: u32) -> vec2<u32> {
    if (j0 >= kv_end(b)) {
        return vec2<u32>(0u, 0u);
    }
    let dg = diag(b);
    let far = i32(P.sq + P.sk);
    var lo = 0;
    var hi = i32(P.sq);
    if (P.causal != 0u) {
        lo = max(lo, i32(j0) - dg);
    }
//#if EXT
    if (P.win_r >= 0) {
        lo = max(lo, i32(j0) - dg - min(P.win_r, far));
    }
    if (P.win_l >= 0 && j0 >= P.sink_tok) {
        hi = min(hi, i32(j1) + min(P.win_l, far) - dg + 1);
    }
//#endif
    lo = clamp(lo, 0, i32(P.sq));
    return vec2<u32>(u32(lo), u32(clamp(hi, lo, i32(P.sq))));
}

@compute @workgroup_size(WG)
fn bwd_kv(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(local_invocation_index) lid: u32,
//#if SG
          @builtin(subgroup_invocation_id) sid: u32,
//#endif
          ) {
    let bh = wid.y;
    let b = bh / P.hkv;
    let hk = bh % P.hkv;
    let key0 = (wid.x * WG + lid) * TM;
//#for t < TM
    // Keys past the end run on a clamped key and are not stored.
    let kc{t} = min(key0 + {t}u, P.sk - 1u);
    let live{t} = key0 + {t}u < P.sk;
    let kl{t} = kv_loc(b, kc{t});
    let kb{t} = k_at(kl{t}, hk);
    let vb{t} = v_at(kl{t}, hk);
//#for c < D4
    let k{t}_{c} = ld_k(kb{t}, {c}u);
    var dk{t}_{c} = vec4<f32>(0.0);
//#endfor
//#for c < DV4
    let v{t}_{c} = ld_v(vb{t}, {c}u);
    var dv{t}_{c} = vec4<f32>(0.0);
//#endfor
//#endfor
    var rr = row_range(b, key0, min(key0 + TM - 1u, P.sk - 1u));
//#if SG
    // A subgroup walks the union of its lanes' rows so that each Q/dO texel
    // is fetched once for 8 lanes and shared by subgroupBroadcast (a lane
    // with no rows leaves the union's start alone).
    rr = vec2<u32>(subgroupMin(select(rr.x, P.sq, rr.x >= rr.y)), subgroupMax(rr.y));
    let lane = sid & 7u;
//#endif
    for (var g = 0u; g < P.group; g++) {
        let h = hk * P.group + g;
        let hx = head_ext(b, h);
        let bq = b * P.hq + h;
        for (var i0 = rr.x; i0 < rr.y; i0 += KB) {
//#for i < KB
            // Rows past the range read a clamped row and add nothing.
            let r{i} = min(i0 + {i}u, rr.y - 1u);
            let st{i} = stats[bq * P.sq + r{i}];
            let use{i} = i0 + {i}u < rr.y && is_num(st{i}.x);
            let rs{i} = key_start(b, r{i});
            let re{i} = key_end(b, r{i});
//#if BWD_TEX
            let qt{i} = b * P.kt_sb + h * P.kt_sh + r{i} * P.kt_ss;
            let ot{i} = b * P.vt_sb + h * P.vt_sh + r{i} * P.vt_ss;
//#else
            let qt{i} = b * P.q_sb + h * P.q_sh + r{i} * P.q_ss;
            let ot{i} = b * P.o_sb + h * P.o_sh + r{i} * P.o_ss;
//#endif
//#for t < TM
            var s{i}_{t} = 0.0;
            var dp{i}_{t} = 0.0;
//#endfor
//#if SG
            var qf{i}: array<vec4<f32>, KF>;
//#for f < KF
            qf{i}[{f}] = ld_kt(qt{i} + min({f}u * 8u + lane, D4 - 1u));
//#endfor
            var of{i}: array<vec4<f32>, VF>;
//#for f < VF
            of{i}[{f}] = ld_vt(ot{i} + min({f}u * 8u + lane, DV4 - 1u));
//#endfor
//#endif
//#for c < D4
//#if SG
            let q{i}_{c} = subgroupBroadcast(qf{i}[{c}u / 8u], {c}u % 8u);
//#else
//#if BWD_TEX
            let q{i}_{c} = ld_kt(qt{i} + {c}u);
//#else
            let q{i}_{c} = ld_q(qt{i}, {c}u);
//#endif
//#endif
//#for t < TM
            s{i}_{t} += dot(q{i}_{c}, k{t}_{c});
//#endfor
//#endfor
//#for c < DV4
//#if SG
            let do{i}_{c} = subgroupBroadcast(of{i}[{c}u / 8u], {c}u % 8u);
//#else
//#if BWD_TEX
            let do{i}_{c} = ld_vt(ot{i} + {c}u);
//#else
            let do{i}_{c} = ld_do(ot{i}, {c}u);
//#endif
//#endif
//#for t < TM
            dp{i}_{t} += dot(do{i}_{c}, v{t}_{c});
//#endfor
//#endfor
//#for t < TM
            {
                let ok = use{i} && live{t} && visible(b, h, r{i}, kc{t}, rs{i}, re{i});
                let sc = bwd_score(hx, r{i}, kc{t}, s{i}_{t} * P.scale);
                var x = sc.x;
//#if BIAS
                if (ok) { x += bias[b * P.bias_sb + h * P.bias_sh + r{i} * P.sk + kc{t}]; }
//#endif
                let p = select(0.0, exp(x - st{i}.x), ok);
                s{i}_{t} = select(0.0, p * (dp{i}_{t} - st{i}.y) * sc.y, ok);
                dp{i}_{t} = p;
            }
//#endfor
            // A row that adds nothing (past the range, or a NaN row) must
            // not add 0·NaN either.
//#for c < D4
            let qu{i}_{c} = select(vec4<f32>(0.0), q{i}_{c}, use{i});
//#endfor
//#for c < DV4
            let du{i}_{c} = select(vec4<f32>(0.0), do{i}_{c}, use{i});
//#endfor
//#endfor
            // Each accumulator takes the step's KB updates in a row.
//#for t < TM
//#for c < D4
//#for i < KB
            dk{t}_{c} = fma(vec4<f32>(s{i}_{t}), qu{i}_{c}, dk{t}_{c});
//#endfor
//#endfor
//#for c < DV4
//#for i < KB
            dv{t}_{c} = fma(vec4<f32>(dp{i}_{t}), du{i}_{c}, dv{t}_{c});
//#endfor
//#endfor
//#endfor
        }
    }
//#for t < TM
    if (live{t}) {
//#for c < D4
        st_g0(kb{t}, {c}u, P.d, dk{t}_{c} * P.scale);
//#endfor
//#for c < DV4
        st_g1(vb{t}, {c}u, P.dv, dv{t}_{c});
//#endfor
    }
//#endfor
}
//#endif

//#if KIND_BWD_BIAS
// ---------------------------------------------------------------------------
// The bias gradient in the bias's own shape [b|1, hq|1, sq, sk]: dS of every
// (batch, head) it is broadcast over, summed in a fixed order (bias_sb = 0:
// broadcast over batches; bias_sh = 0: over heads).
@group(0) @binding(1) var<storage, read> ds_full: array<f32>;
@group(0) @binding(14) var<storage, read_write> dbias: array<f32>;

@compute @workgroup_size(64)
fn bwd_bias(@builtin(global_invocation_id) g: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = g.x + g.y * nwg.x * 64u;
    let plane = P.sq * P.sk;
    let nb = select(P.b, 1u, P.bias_sb == 0u);
    let nh = select(P.hq, 1u, P.bias_sh == 0u);
    if (e >= nb * nh * plane) {
        return;
    }
    let ij = e % plane;
    let hh = (e / plane) % nh;
    let bb = e / plane / nh;
    var acc = 0.0;
    for (var x = 0u; x < P.b; x++) {
        for (var y = 0u; y < P.hq; y++) {
            if ((nb == 1u || x == bb) && (nh == 1u || y == hh)) {
                acc += ds_full[(x * P.hq + y) * plane + ij];
            }
        }
    }
    dbias[e] = acc;
}
//#endif

//#if KIND_BWD_DS
// ---------------------------------------------------------------------------
// Naive path: dS from materialised scores S (scaled, f32), probabilities P
// and dP = dO·Vᵀ (f32), all [B, Hkv, G·Sq, Sk] (the [b, hq, sq, sk] order).
// One workgroup per row: D = Σ_j P·dP, then dS_ij = P_ij (dP_ij − D) times
// the soft cap's derivative, over P in place (DBIAS: also as f32).
@group(0) @binding(1) var<storage, read> s_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> pm: array<T>;
@group(0) @binding(4) var<storage, read> dp_in: array<f32>;
//#if DBIAS
@group(0) @binding(14) var<storage, read_write> dbias: array<f32>;
//#endif
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn bwd_ds(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= P.b * P.hq * P.sq) {
        return;
    }
    let base = r * P.sk;
    var acc = 0.0;
    for (var j = lid; j < P.sk; j += 64u) {
        acc += f32(pm[base + j]) * dp_in[base + j];
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let dd = red[0];
    for (var j = lid; j < P.sk; j += 64u) {
        var dc = 1.0;
//#if SOFTCAP
        let t = capped(s_in[base + j]) / P.softcap;
        dc = 1.0 - t * t;
//#endif
        let p = f32(pm[base + j]);
        let ds = p * (dp_in[base + j] - dd);
//#if DBIAS
        dbias[base + j] = ds;
//#endif
        pm[base + j] = T(ds * dc);
    }
}
//#endif
