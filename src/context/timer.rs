//! The GPU timer: timestamp queries around every compute pass recorded while it
//! runs, summed on stop.

use super::Context;
use crate::error::Result;

/// Timestamp queries written around every compute pass while a GPU timer runs.
pub(crate) struct GpuTimer {
    pub(super) queries: wgpu::QuerySet,
    pub(super) used: u32,
}

/// Compute passes one GPU timer can measure.
pub(super) const TIMER_PASSES: u32 = 1024;

impl Context {
    /// Starts timing on the GPU: until [`Context::stop_gpu_timer`], every compute
    /// pass flashdot records on this context (from any thread) gets timestamp
    /// queries. Returns `false`, and times nothing, when the adapter lacks
    /// `TIMESTAMP_QUERY`.
    pub fn start_gpu_timer(&self) -> Result<bool> {
        if !self.info().has_timestamps() {
            return Ok(false);
        }
        let queries = self.scoped("gpu timer", || {
            Ok(self
                .inner
                .device
                .create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("gpu timer"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * TIMER_PASSES,
                }))
        })?;
        *self.inner.timer.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(GpuTimer { queries, used: 0 });
        Ok(true)
    }

    /// Stops the GPU timer and returns the summed execution time of the passes
    /// it measured (waiting for them to finish). `None` if no timer was running
    /// or more than 1024 passes were recorded (their sum would be incomplete).
    pub fn stop_gpu_timer(&self) -> Result<Option<std::time::Duration>> {
        let Some(t) = self
            .inner
            .timer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(None);
        };
        if t.used == 0 || t.used >= 2 * TIMER_PASSES {
            return Ok((t.used == 0).then_some(std::time::Duration::ZERO));
        }
        let bytes = t.used as u64 * 8;
        let resolve = self.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gpu timer"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.scoped("gpu timer", || {
            let mut enc = self.encoder();
            enc.resolve_query_set(&t.queries, 0..t.used, &resolve, 0);
            self.submit(enc);
            Ok(())
        })?;
        let raw = pollster::block_on(self.read_buffer(
            "gpu timer",
            &resolve,
            0,
            bytes,
            super::Wait::Here,
        ))?;
        let ticks: Vec<u64> = raw
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
            .collect();
        let period = self.inner.queue.get_timestamp_period() as f64;
        let ns: f64 = ticks
            .chunks_exact(2)
            .map(|p| p[1].saturating_sub(p[0]) as f64 * period)
            .sum();
        Ok(Some(std::time::Duration::from_nanos(ns as u64)))
    }
}
