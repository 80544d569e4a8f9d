//! GPU operations, one module per kernel family. Each owns its params struct
//! (mirroring the WGSL struct), its variant enum, its shape checks and launcher.

pub mod attention;
pub mod dot;
pub mod embedding;
pub mod grad;
pub mod matmul;
pub mod norm;
pub mod pooling;
pub mod sample;
pub mod search;
pub mod similarity;
