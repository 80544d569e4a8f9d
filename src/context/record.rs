//! Recording: the ops a thread runs inside [`Context::record`] are encoded as
//! usual but submitted together, in order, as one submission when the scope
//! ends, instead of one submission each.

use std::thread::ThreadId;

use super::Context;
use crate::error::{Error, Result};

/// The command buffers each recording thread has recorded on a context.
pub(crate) type Recordings = std::collections::HashMap<ThreadId, Vec<wgpu::CommandBuffer>>;

impl Context {
    /// Runs `f` with every flashdot op it calls on this thread recorded
    /// rather than submitted, then submits all of them in one submission (one
    /// `queue.submit`, in call order) and returns `f`'s result. Other threads'
    /// ops on the context are not captured (they may record their own).
    ///
    /// Results are readable after `record` returns: a readback inside the
    /// scope (`Tensor::to_vec`, a host search, the autotuner's timing, a
    /// `synchronize`) is [`Error::InvalidArgument`]. Host writes
    /// (`Tensor::write`) inside the scope are recorded in order with the ops.
    /// A nested `record` joins the outer one.
    ///
    /// Errors: `f`'s error (then nothing recorded is submitted);
    /// [`Error::Gpu`] if the submission fails.
    pub fn record<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let me = std::thread::current().id();
        {
            let mut rec = self.lock_recording();
            if rec.contains_key(&me) {
                drop(rec);
                return f();
            }
            rec.insert(me, Vec::new());
        }
        // Ends the recording when dropped: on return as on unwind (a closure
        // that panics must not leave its thread recording for good).
        let scope = Scope {
            ctx: self,
            me,
            hold: self.hold_params(),
        };
        let out = f();
        let buffers = self
            .lock_recording()
            .get_mut(&me)
            .map(std::mem::take)
            .unwrap_or_default();
        let submitted = match &out {
            Ok(_) => self.scoped("Context::record", || {
                self.queue_submit(buffers);
                Ok(())
            }),
            Err(_) => Ok(()),
        };
        drop(scope);
        let out = out?;
        submitted?;
        self.start_background_compiles();
        Ok(out)
    }

    fn lock_recording(&self) -> std::sync::MutexGuard<'_, Recordings> {
        self.inner
            .recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this thread is inside [`Context::record`] on this context.
    pub(crate) fn is_recording(&self) -> bool {
        let me = std::thread::current().id();
        self.lock_recording().contains_key(&me)
    }

    /// Fails inside a recording: `what` needs the recorded work to have run.
    pub(crate) fn not_recording(&self, what: &'static str) -> Result<()> {
        if self.is_recording() {
            return Err(Error::InvalidArgument {
                op: what,
                detail: "inside Context::record, which runs the recorded work when it ends: \
                         read results (or time, tune, synchronize) after the recording"
                    .into(),
            });
        }
        Ok(())
    }

    /// Keeps `enc` for the recording of this thread, if there is one;
    /// returns it otherwise.
    pub(super) fn take_for_recording(
        &self,
        enc: wgpu::CommandEncoder,
    ) -> Option<wgpu::CommandEncoder> {
        let me = std::thread::current().id();
        let mut rec = self.lock_recording();
        match rec.get_mut(&me) {
            Some(buffers) => {
                buffers.push(enc.finish());
                None
            }
            None => Some(enc),
        }
    }
}

/// One thread's recording on a context, ended when dropped.
struct Scope<'a> {
    ctx: &'a Context,
    me: ThreadId,
    /// The arena hold of [`Context::hold_params`]: the recording's parameter
    /// regions stay untouched until its work is submitted.
    hold: u64,
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        // Only now may the arena reuse the recording's parameter regions, and
        // only now do this thread's ops submit on their own again.
        self.ctx.release_params(self.hold);
        self.ctx.lock_recording().remove(&self.me);
    }
}

impl Context {
    /// Submits an app's own encoder in order with flashdot's work: inside
    /// [`Context::record`] it joins the recording (submitted when the scope
    /// ends, after the ops recorded before it); otherwise it is submitted now
    /// and its submission index returned.
    pub fn submit_encoder(&self, enc: wgpu::CommandEncoder) -> Option<wgpu::SubmissionIndex> {
        self.submit_raw(enc)
    }
}
