// Flash-decoding: the split pass and the log-sum-exp merge.

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
    let rs = key_start(b, row);
    let hx = head_ext(b, h);
    let k0 = split * P.chunk;
    let k1 = min(k0 + P.chunk, rend);
//#if BIAS
    let bb = b * P.bias_sb + h * P.bias_sh + row * P.sk;
//#endif
//#if KV_TEX
    // K/V as texels, KB keys per online-softmax step (one max and KB + 1
    // exponentials per step instead of two per key).
    for (var j0 = skip_gap(k0, rs); j0 < k1; j0 = skip_gap(j0 + KB, rs)) {
        let kl = kv_loc(b, j0);
//#for j < KB
        // Keys past the split's end read a clamped key and get p = 0.
        let kl{j} = kv_loc_from(b, j0, kl, min(j0 + {j}u, k1 - 1u));
        let kt{j} = kt_at(kl{j}, hk);
        let vt{j} = vt_at(kl{j}, hk);
        var s{j} = 0.0;
//#endfor
//#for c < D4
//#for j < KB
        s{j} += dot(q{c}, ld_kt(kt{j} + {c}u));
//#endfor
//#endfor
        var mx = m;
//#for j < KB
        let ok{j} = visible(b, h, row, j0 + {j}u, rs, k1);
        s{j} = ext_score(hx, row, j0 + {j}u, s{j});
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
    for (var key = skip_gap(k0, rs); key < k1; key = skip_gap(key + 1u, rs)) {
        if (!visible(b, h, row, key, rs, k1)) {
            continue;
        }
        let kl = kv_loc(b, key);
        var s = 0.0;
        let kr = k_at(kl, hk);
//#for i < D4
        s += dot(q{i}, ld_k(kr, {i}u));
//#endfor
        s = ext_score(hx, row, key, s);
//#if BIAS
        s += bias[bb + key];
//#endif
        let mn = max(m, s);
        let corr = exp(m - mn);
        let p = exp(s - mn);
        l = l * corr + p;
        let vr = v_at(kl, hk);
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
        if (!(ml.y <= 0.0)) { mx = max(mx, ml.x); }
    }
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < P.nsplit; s++) {
        let slot = rbh * P.nsplit + s;
        let ml = part_ml[slot];
        // Partials that saw a key, or a NaN score (l NaN, which propagates).
        if (!(ml.y <= 0.0)) {
            let w = exp(ml.x - mx);
            l += ml.y * w;
            acc = fma(vec4<f32>(w), part_o[slot * DV4 + c], acc);
        }
    }
    let f = fin(h, mx, l);
    st_row(b * P.o_sb + h * P.o_sh + row * P.o_ss, c, acc * f.x);
//#if LSE
    if (c == 0u) {
        lse[rbh] = f.y;
    }
//#endif
}
//#endif

