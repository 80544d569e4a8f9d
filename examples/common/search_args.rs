//! The search examples' `--storage` and `--metric` flags.

use clap::ValueEnum;
use flashdot::ops::search::Storage;
use flashdot::ops::similarity::Metric;

/// An index's storage.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StorageArg {
    F32,
    F16,
    Int8,
}

impl From<StorageArg> for Storage {
    fn from(s: StorageArg) -> Storage {
        match s {
            StorageArg::F32 => Storage::F32,
            StorageArg::F16 => Storage::F16,
            StorageArg::Int8 => Storage::Int8,
        }
    }
}

/// An index's metric.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MetricArg {
    Ip,
    Cosine,
    L2,
}

impl From<MetricArg> for Metric {
    fn from(m: MetricArg) -> Metric {
        match m {
            MetricArg::Ip => Metric::InnerProduct,
            MetricArg::Cosine => Metric::Cosine,
            MetricArg::L2 => Metric::L2,
        }
    }
}
