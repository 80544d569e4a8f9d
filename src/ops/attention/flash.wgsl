// Flash attention schedules (the fused kernels): tiles, blocks, rows, key-split.

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
    let hx = head_ext(b, h);
    let rend = key_end(b, rowc);
    let rsta = key_start(b, rowc);
    // Key ends and starts grow with the row, so the last row's end and the
    // first row's start bound the workgroup.
    let wend = key_end(b, min(row0 + BQ - 1u, P.sq - 1u));
    let wsta = key_start(b, row0);
//#if BIAS
    let bb = b * P.bias_sb + h * P.bias_sh + rowc * P.sk;
//#endif
    for (var t0 = skip_gap(0u, wsta); t0 < wend; t0 = skip_gap(t0 + BKV, wsta)) {
        for (var e = lid; e < BKV * D4; e += BQ) {
            let key = t0 + e / D4;
            var x = vec4<f32>(0.0);
            if (key < wend) { x = ld_k(k_at(kv_loc(b, key), hk), e % D4); }
            Ks[e] = x;
        }
        for (var e = lid; e < BKV * DV4; e += BQ) {
            let key = t0 + e / DV4;
            var x = vec4<f32>(0.0);
            if (key < wend) { x = ld_v(v_at(kv_loc(b, key), hk), e % DV4); }
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
            let ok{j} = visible(b, h, rowc, key{j}, rsta, rend);
            s{j} = ext_score(hx, rowc, key{j}, s{j});
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
        let f = fin(h, m, l);
        let ob = b * P.o_sb + h * P.o_sh + row * P.o_ss;
//#for i < DV4
        st_row(ob, {i}u, o{i} * f.x);
//#endfor
//#if LSE
        lse[bh * P.sq + row] = f.y;
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
    let hx = head_ext(b, h);
//#for i < TM
    // Rows past the end run on a clamped row and are not stored.
    let rc{i} = min(row0 + {i}u, P.sq - 1u);
    let qb{i} = b * P.q_sb + h * P.q_sh + rc{i} * P.q_ss;
    let rend{i} = key_end(b, rc{i});
    let rs{i} = key_start(b, rc{i});
    var m{i} = NEG;
    var l{i} = 0.0;
//#for c < NV
    var o{i}_{c} = vec4<f32>(0.0);
//#endfor
//#endfor
    // Every group walks to the workgroup's last visible key (barriers need a
    // uniform trip count); its own masks zero the keys it may not see.
    let wend = key_end(b, min(wrow0 + TM * (WG / HG) - 1u, P.sq - 1u));
    let wsta = key_start(b, min(wrow0, P.sq - 1u));
    for (var t0 = skip_gap(0u, wsta); t0 < wend; t0 = skip_gap(t0 + HG * KB, wsta)) {
//#for j < KB
        let key{j} = t0 + {j}u * HG + gl;
        let kr{j} = k_at(kv_loc(b, min(key{j}, wend - 1u)), hk);
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
            // A key the row may not see gets the MASKED score (its exp is 0).
            if (visible(b, h, rc{i}, key{j}, rs{i}, rend{i})) {
                s{i}_{j} = ext_score(hx, rc{i}, key{j}, s{i}_{j} * P.scale);
//#if BIAS
                s{i}_{j} += bias[b * P.bias_sb + h * P.bias_sh + rc{i} * P.sk + key{j}];
//#endif
                mx = max(mx, s{i}_{j});
            } else {
                s{i}_{j} = MASKED;
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
            s{i}_{j} = select(0.0, exp(s{i}_{j} - tmax), !(s{i}_{j} <= MASKED));
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
            let vr = v_at(kv_loc(b, t0 + kk), hk);
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
        let f = fin(h, m{i}, l);
        let ob = b * P.o_sb + h * P.o_sh + (row0 + {i}u) * P.o_ss;
//#for c < NV
        if (gl + {c}u * HG < dv4) {
            st_row(ob, gl + {c}u * HG, o{i}_{c} * f.x);
        }
//#endfor
//#if LSE
        if (gl == 0u) {
            lse[bh * P.sq + row0 + {i}u] = f.y;
        }
//#endif
    }
//#endfor
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
    let hx = head_ext(b, h);
    var kend = 0u;
//#for i < TM
    // Rows past the end run on a clamped row and are not stored.
    let rc{i} = min(row0 + {i}u, P.sq - 1u);
    let rend{i} = key_end(b, rc{i});
    let rs{i} = key_start(b, rc{i});
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
    let kst = subgroupMin(rs0);
    let lane = sid & 7u;
//#else
    let kst = rs0;
//#endif
    for (var j0 = skip_gap(0u, kst); j0 < kend; j0 = skip_gap(j0 + KB, kst)) {
        let kl = kv_loc(b, j0);
//#for j < KB
        // Keys past the end read a clamped key and get p = 0.
        let kl{j} = kv_loc_from(b, j0, kl, min(j0 + {j}u, kend - 1u));
        let kt{j} = kt_at(kl{j}, hk);
        let vt{j} = vt_at(kl{j}, hk);
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
            let ok{i}_{j} = visible(b, h, rc{i}, j0 + {j}u, rs{i}, rend{i});
            s{i}_{j} = ext_score(hx, rc{i}, j0 + {j}u, s{i}_{j});
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
        let f = fin(h, m{i}, l{i});
        let ob = b * P.o_sb + h * P.o_sh + rc{i} * P.o_ss;
//#for c < DV4
        st_row(ob, {c}u, o{i}_{c} * f.x);
//#endfor
//#if LSE
        lse[bh * P.sq + rc{i}] = f.y;
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
    let rs{i} = key_start(b, rc{i});
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
    let wsta = key_start(b, row0);
    let hx = head_ext(b, h);
    // Keys in chunks of KC per invocation (key0 + 64·c): one rescale of the
    // accumulators per chunk instead of per key.
    for (var kbase = skip_gap(0u, wsta); kbase < wend; kbase = skip_gap(kbase + 64u * KC, wsta)) {
        let kfirst = kbase + lid;
//#for c < KC
        let key{c} = kfirst + {c}u * 64u;
        let kl{c} = kv_loc(b, min(key{c}, wend - 1u));
        let kr{c} = k_at(kl{c}, hk);
//#for e < D4
        let k{c}_{e} = ld_k(kr{c}, {e}u);
//#endfor
//#for i < TM
        var s{i}_{c} = NEG;
        let ok{i}_{c} = visible(b, h, rc{i}, key{c}, rs{i}, rend{i});
        if (ok{i}_{c}) {
            s{i}_{c} = 0.0;
//#for e < D4
            s{i}_{c} += dot(q{i}_{e}, k{c}_{e});
//#endfor
            s{i}_{c} = ext_score(hx, rc{i}, key{c}, s{i}_{c});
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
            let vr = v_at(kl{c}, hk);
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
            if (!(red_ml[t].y <= 0.0)) { mx = max(mx, red_ml[t].x); }
        }
        var l = 0.0;
        var acc = vec4<f32>(0.0);
        for (var t = 0u; t < 64u; t++) {
            let ml = red_ml[t];
            // A partial that saw a key (l > 0) or a NaN score (l NaN) joins:
            // NaN propagates as in the one-pass kernels.
            if (!(ml.y <= 0.0)) {
                let w = exp(ml.x - mx);
                l += ml.y * w;
                acc = fma(vec4<f32>(w), red_o[t * DV4 + lid], acc);
            }
        }
        if (row0 + {i}u < P.sq) {
            let f = fin(h, mx, l);
            st_row(b * P.o_sb + h * P.o_sh + (row0 + {i}u) * P.o_ss, lid, acc * f.x);
//#if LSE
            if (lid == 0u) {
                lse[bh * P.sq + row0 + {i}u] = f.y;
            }
//#endif
        }
    }
    workgroupBarrier();
//#endfor
}
//#endif

