//! Plain-loop CPU implementations of every operation, accumulating in f64.
//! Obviously correct, not fast: the ground truth tests, examples and benches check against.

pub mod attention;
#[cfg(feature = "models")]
pub mod bert;
pub mod dot;
pub mod embedding;
#[cfg(feature = "models")]
pub mod gpt2;
#[cfg(feature = "models")]
pub mod gpt2_train;
pub mod grad;
pub mod kmeans;
pub mod matmul;
pub mod norm;
pub mod pooling;
pub mod sample;
pub mod search;
pub mod similarity;
