//! The small, explicit template step applied to WGSL sources before compilation,
//! for what pipeline-overridable constants cannot express: the element type
//! (f32 / f16, which needs `enable f16;`), code that only compiles with an
//! optional feature (subgroup operations), array sizes and unrolled loops.
//!
//! Sources use `//#if NAME`, `//#else` and `//#endif` lines (nestable; `A || B`
//! is on when either is); a block is kept when `NAME` is among the defines.
//! Defines are typed: each kernel family declares its own enum with
//! [`defines!`](crate::shader::defines), and a template line naming a define that the
//! family does not declare is an error, so a typo on either side cannot drop code
//! silently. The preamble defines `T` as the storage element type and
//! `const NAME: u32` for each constant. Malformed templates are errors, never
//! panics.

use std::fmt;

use crate::dtype::DType;

/// A family's typed preprocessor define (declared with [`defines!`](crate::shader::defines)).
pub(crate) trait Define: Copy + fmt::Debug + 'static {
    /// Every define of the family: what the template may name.
    const ALL: &'static [Self];
    /// The name the template's `//#if` lines use.
    fn name(self) -> &'static str;
}

/// Declares a family's defines: an enum whose variants map to template names.
macro_rules! defines {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vm])* $var),* }
        impl $crate::shader::Define for $name {
            const ALL: &'static [Self] = &[$($name::$var),*];
            fn name(self) -> &'static str {
                match self { $($name::$var => $s),* }
            }
        }
    };
}
pub(crate) use defines;

/// A uniform params struct mirrored from a WGSL `struct Params` (declared with
/// [`params!`](crate::shader::params)): its field names and byte offsets, which a test
/// compares with the WGSL struct as naga lays it out.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) trait Params: bytemuck::Pod {
    /// `(name, offset)` of every field, in order.
    const FIELDS: &'static [(&'static str, usize)];
}

/// Declares a `#[repr(C)]` params struct that mirrors a WGSL one field by field
/// (same names, same order; padding fields included).
macro_rules! params {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $($(#[$fm])* pub $f: $t),* }
        impl $crate::shader::Params for $name {
            const FIELDS: &'static [(&'static str, usize)] =
                &[$((stringify!($f), std::mem::offset_of!($name, $f))),*];
        }
    };
}
pub(crate) use params;

/// [`expand`] for a kernel spec: a template error becomes
/// [`Error::Template`](crate::error::Error::Template) naming the spec.
pub(crate) fn render<D: Define>(
    spec: &dyn fmt::Debug,
    src: &str,
    dtype: DType,
    enable_f16: bool,
    defines: &[D],
    consts: &[(&str, u32)],
) -> crate::error::Result<String> {
    expand(src, dtype, enable_f16, defines, consts).map_err(|e| crate::error::Error::Template {
        kernel: format!("{spec:?}"),
        detail: e.to_string(),
    })
}

/// What is wrong with a template (its line, 1-based, and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub line: usize,
    pub detail: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template line {}: {}", self.line, self.detail)
    }
}

fn err(line: usize, detail: impl Into<String>) -> TemplateError {
    TemplateError {
        line,
        detail: detail.into(),
    }
}

/// Expands `src` for storage type `dtype` with the given defines and constants:
/// emits `enable f16;` when `dtype` is f16 or `enable_f16` is set, `alias T`,
/// `const NAME: u32 = V;` for each of `consts` (sizes of workgroup arrays must be
/// constants), keeps the active `//#if` blocks, and unrolls `//#for i < NAME`
/// ... `//#endfor` blocks: the body is repeated for i in 0..NAME with every
/// `{i}` replaced by the index (and `{Ai+B}` by `A·i + B`). Unrolled, named
/// accumulators stay in registers where a private array indexed in a loop may
/// spill. `{NAME}` of a constant pastes its value.
pub(crate) fn expand<D: Define>(
    src: &str,
    dtype: DType,
    enable_f16: bool,
    defines: &[D],
    consts: &[(&str, u32)],
) -> Result<String, TemplateError> {
    let on: Vec<&str> = defines.iter().map(|d| d.name()).collect();
    let known = |n: &str| D::ALL.iter().any(|d| d.name() == n);
    let mut out = String::with_capacity(src.len() + 128);
    if dtype == DType::F16 || enable_f16 {
        out.push_str("enable f16;\n");
    }
    out.push_str(&format!("alias T = {};\n", dtype.wgsl()));
    for (name, v) in consts {
        out.push_str(&format!("const {name}: u32 = {v}u;\n"));
    }
    let mut kept = String::with_capacity(src.len());
    // Stack of (this block active, some branch already taken, opening line).
    let mut stack: Vec<(bool, bool, usize)> = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let no = i + 1;
        let t = line.trim_start();
        if let Some(names) = t.strip_prefix("//#if ") {
            let mut any = false;
            for n in names.split("||").map(str::trim) {
                if !known(n) {
                    return Err(err(
                        no,
                        format!(
                            "`//#if {n}` names no define of {}",
                            std::any::type_name::<D>()
                        ),
                    ));
                }
                any |= on.contains(&n);
            }
            stack.push((any, any, no));
        } else if t.starts_with("//#else") {
            let top = stack
                .last_mut()
                .ok_or_else(|| err(no, "//#else without //#if"))?;
            top.0 = !top.1;
            top.1 = true;
        } else if t.starts_with("//#endif") {
            stack
                .pop()
                .ok_or_else(|| err(no, "//#endif without //#if"))?;
        } else if t.starts_with("//#") && !t.starts_with("//#for ") && !t.starts_with("//#endfor") {
            return Err(err(no, format!("unknown directive `{t}`")));
        } else if stack.iter().all(|s| s.0) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if let Some(&(_, _, open)) = stack.last() {
        return Err(err(open, "//#if without //#endif"));
    }
    // Loops are unrolled after the conditionals so that disabled code may use
    // bounds that are not defined for this specialisation.
    let mut body = unroll(&kept, consts)?;
    for (name, v) in consts {
        body = body.replace(&format!("{{{name}}}"), &v.to_string());
    }
    out.push_str(&body);
    Ok(out)
}

fn unroll(src: &str, consts: &[(&str, u32)]) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut lines = src.lines().enumerate();
    while let Some((no, line)) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//#endfor") {
            return Err(err(
                no + 1,
                "//#endfor without //#for (after //#if expansion)",
            ));
        }
        let Some(spec) = t.strip_prefix("//#for ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (var, bound) = spec
            .split_once('<')
            .ok_or_else(|| err(no + 1, format!("`{t}`: expected `//#for i < NAME`")))?;
        let name = var.trim().to_string();
        let var = format!("{{{name}}}");
        let bound = bound.trim();
        let n = consts
            .iter()
            .find(|c| c.0 == bound)
            .map(|c| c.1)
            .or_else(|| bound.parse().ok())
            .ok_or_else(|| err(no + 1, format!("//#for bound `{bound}` is not a constant")))?;
        let mut body = Vec::new();
        let mut depth = 0;
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            let lt = l.trim_start();
            if lt.starts_with("//#for ") {
                depth += 1;
            } else if lt.starts_with("//#endfor") {
                if depth == 0 {
                    closed = true;
                    break;
                }
                depth -= 1;
            }
            body.push(l);
        }
        if !closed {
            return Err(err(no + 1, "//#for without //#endfor"));
        }
        // Nested loops are expanded recursively.
        let body = unroll(&body.join("\n"), consts)?;
        for i in 0..n {
            out.push_str(&affine(&body.replace(&var, &i.to_string()), &name, i));
        }
    }
    Ok(out)
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

    crate::shader::defines! {
        enum Test { X = "X", Y = "Y", Z = "Z" }
    }

    #[test]
    fn conditional_blocks() {
        let src = "a\n//#if X\nb\n//#else\nc\n//#endif\nd\n";
        let x = expand(src, DType::F32, false, &[Test::X], &[]).unwrap();
        assert_eq!(x, "alias T = f32;\na\nb\nd\n");
        let none = expand::<Test>(src, DType::F16, false, &[], &[]).unwrap();
        assert_eq!(none, "enable f16;\nalias T = f16;\na\nc\nd\n");
    }

    #[test]
    fn alternatives_and_pasted_consts() {
        let src = "//#if X || Y\nv{N}\n//#endif\n";
        let one = expand(src, DType::F32, false, &[Test::Y], &[("N", 3)]).unwrap();
        assert_eq!(one, "alias T = f32;\nconst N: u32 = 3u;\nv3\n");
        let none = expand(src, DType::F32, false, &[Test::Z], &[("N", 3)]).unwrap();
        assert_eq!(none, "alias T = f32;\nconst N: u32 = 3u;\n");
    }

    #[test]
    fn affine_indices_in_unrolled_loops() {
        let src = "//#for g < 2\nv{4g} v{4g+3} {x}\n//#endfor\n";
        let out = expand::<Test>(src, DType::F32, false, &[], &[]).unwrap();
        assert_eq!(out, "alias T = f32;\nv0 v3 {x}\nv4 v7 {x}\n");
    }

    #[test]
    fn unrolled_loops() {
        let src = "//#for i < N\nx{i}\n//#for j < 2\ny{i}{j}\n//#endfor\n//#endfor\n";
        let out = expand::<Test>(src, DType::F32, false, &[], &[("N", 2)]).unwrap();
        assert_eq!(
            out,
            "alias T = f32;\nconst N: u32 = 2u;\nx0\ny00\ny01\nx1\ny10\ny11\n"
        );
    }

    #[test]
    fn malformed_templates_are_errors() {
        let cases = [
            ("//#if X\na\n", 1, "without //#endif"),
            ("a\n//#else\n", 2, "//#else without"),
            ("//#endif\n", 1, "//#endif without"),
            ("//#if TYPO\n//#endif\n", 1, "names no define"),
            ("//#for i < M\nx\n//#endfor\n", 1, "not a constant"),
            ("//#for i\nx\n//#endfor\n", 1, "expected"),
            ("//#for i < 2\nx\n", 1, "without //#endfor"),
            ("//#iff X\n", 1, "unknown directive"),
        ];
        for (src, line, why) in cases {
            let e = expand(src, DType::F32, false, &[Test::X], &[]).unwrap_err();
            assert_eq!(e.line, line, "{src:?}: {e}");
            assert!(e.detail.contains(why), "{src:?}: {e}");
        }
    }
}
