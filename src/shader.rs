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
    let mut out = String::with_capacity(src.len() + 128);
    if dtype == DType::F16 {
        out.push_str("enable f16;\n");
    }
    out.push_str(&format!("alias T = {};\n", dtype.wgsl()));
    // Stack of (this block active, some branch already taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.iter().all(|s| s.0);
    for line in src.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("//#if ") {
            let on = defines.contains(&name.trim());
            stack.push((on, on));
        } else if t.starts_with("//#else") {
            let top = stack.last_mut().expect("//#else without //#if");
            top.0 = !top.1;
            top.1 = true;
        } else if t.starts_with("//#endif") {
            stack.pop().expect("//#endif without //#if");
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(stack.is_empty(), "unterminated //#if in WGSL source");
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
}
