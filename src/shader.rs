//! The small, explicit template step applied to WGSL sources before compilation,
//! for what pipeline-overridable constants cannot express: the element type
//! (f32 / f16, which needs `enable f16;`) and code that only compiles with an
//! optional feature (subgroup operations).
//!
//! Sources use `//#if NAME`, `//#else` and `//#endif` lines (nestable); a block is
//! kept when `NAME` is among the defines. The preamble defines `T` as the storage
//! element type.

use crate::tensor::DType;

/// Expands `src` for storage type `dtype` with the given defines.
pub(crate) fn expand(src: &str, dtype: DType, defines: &[&str]) -> String {
    expand_full(src, dtype, defines, &[])
}

/// Like [`expand`], and also emits `const NAME: u32 = V;` for each of `consts`
/// (sizes of workgroup arrays must be constants) and unrolls
/// `//#for i < NAME` ... `//#endfor` blocks: the body is repeated for i in
/// 0..NAME with every `{i}` replaced by the index. Unrolled, named accumulators
/// stay in registers where a private array indexed in a loop may spill.
pub(crate) fn expand_full(
    src: &str,
    dtype: DType,
    defines: &[&str],
    consts: &[(&str, u32)],
) -> String {
    let mut out = String::with_capacity(src.len() + 128);
    let needs_f16 = dtype == DType::F16 || defines.contains(&"ENABLE_F16");
    if needs_f16 {
        out.push_str("enable f16;\n");
    }
    out.push_str(&format!("alias T = {};\n", dtype.wgsl()));
    for (name, v) in consts {
        out.push_str(&format!("const {name}: u32 = {v}u;\n"));
    }
    let mut kept = String::with_capacity(src.len());
    // Stack of (this block active, some branch already taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.iter().all(|s| s.0);
    for line in src.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("//#if ") {
            // `A || B`: on when any is defined.
            let on = name.split("||").any(|n| defines.contains(&n.trim()));
            stack.push((on, on));
        } else if t.starts_with("//#else") {
            let top = stack.last_mut().expect("//#else without //#if");
            top.0 = !top.1;
            top.1 = true;
        } else if t.starts_with("//#endif") {
            stack.pop().expect("//#endif without //#if");
        } else if active(&stack) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    assert!(stack.is_empty(), "unterminated //#if in WGSL source");
    // Loops are unrolled after the conditionals so that disabled code may use
    // bounds that are not defined for this specialisation.
    let mut body = unroll(&kept, consts);
    // `{NAME}` of a const pastes its value into identifiers (e.g. the last
    // register of an unrolled list).
    for (name, v) in consts {
        body = body.replace(&format!("{{{name}}}"), &v.to_string());
    }
    out.push_str(&body);
    out
}

fn unroll(src: &str, consts: &[(&str, u32)]) -> String {
    let mut out = String::new();
    let mut lines = src.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let Some(spec) = t.strip_prefix("//#for ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (var, bound) = spec.split_once('<').expect("//#for i < NAME");
        let name = var.trim().to_string();
        let var = format!("{{{name}}}");
        let bound = bound.trim();
        let n = consts
            .iter()
            .find(|c| c.0 == bound)
            .map(|c| c.1)
            .or_else(|| bound.parse().ok())
            .unwrap_or_else(|| panic!("//#for bound {bound} is not a const"));
        let mut body = Vec::new();
        let mut depth = 0;
        for l in lines.by_ref() {
            let lt = l.trim_start();
            if lt.starts_with("//#for ") {
                depth += 1;
            } else if lt.starts_with("//#endfor") {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            body.push(l);
        }
        // Nested loops are expanded recursively.
        let body = unroll(&body.join("\n"), consts);
        for i in 0..n {
            out.push_str(&affine(&body.replace(&var, &i.to_string()), &name, i));
        }
    }
    out
}

/// Replaces `{A<var>}` and `{A<var>+B}` (A, B decimal) by `A·i + B`: the index
/// of a vector's component group in unrolled code.
fn affine(src: &str, var: &str, i: u32) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let parsed = after.find('}').and_then(|close| {
            let inner = &after[..close];
            let (a, tail) = inner.split_once(var)?;
            let a: u32 = a.parse().ok()?;
            let b: u32 = match tail.strip_prefix('+') {
                Some(b) => b.parse().ok()?,
                None if tail.is_empty() => 0,
                None => return None,
            };
            Some((a * i + b, close))
        });
        match parsed {
            Some((v, close)) => {
                out.push_str(&v.to_string());
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_blocks() {
        let src = "a\n//#if X\nb\n//#else\nc\n//#endif\nd\n";
        assert_eq!(expand(src, DType::F32, &["X"]), "alias T = f32;\na\nb\nd\n");
        assert_eq!(
            expand(src, DType::F16, &[]),
            "enable f16;\nalias T = f16;\na\nc\nd\n"
        );
    }

    #[test]
    fn alternatives_and_pasted_consts() {
        let src = "//#if X || Y\nv{N}\n//#endif\n";
        let one = expand_full(src, DType::F32, &["Y"], &[("N", 3)]);
        assert_eq!(one, "alias T = f32;\nconst N: u32 = 3u;\nv3\n");
        let none = expand_full(src, DType::F32, &["Z"], &[("N", 3)]);
        assert_eq!(none, "alias T = f32;\nconst N: u32 = 3u;\n");
    }

    #[test]
    fn affine_indices_in_unrolled_loops() {
        let src = "//#for g < 2\nv{4g} v{4g+3} {x}\n//#endfor\n";
        assert_eq!(
            expand_full(src, DType::F32, &[], &[]),
            "alias T = f32;\nv0 v3 {x}\nv4 v7 {x}\n"
        );
    }

    #[test]
    fn unrolled_loops() {
        let src = "//#for i < N\nx{i}\n//#for j < 2\ny{i}{j}\n//#endfor\n//#endfor\n";
        assert_eq!(
            expand_full(src, DType::F32, &[], &[("N", 2)]),
            "alias T = f32;\nconst N: u32 = 2u;\nx0\ny00\ny01\nx1\ny10\ny11\n"
        );
    }
}
