//! Plain-loop CPU implementations of every operation, accumulating in f64.
//! Obviously correct, not fast: the ground truth tests, examples and benches check against.

pub mod attention;
pub mod dot;
pub mod matmul;
pub mod search;
pub mod similarity;
