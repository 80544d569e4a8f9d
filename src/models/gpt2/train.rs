//! Training the model on flashdot's kernels ([`Gpt2Trainer`]): a forward
//! that keeps what the backward reads, the fused softmax cross-entropy, the
//! backward through every block ([`blocks`](super::blocks)' `backward`s),
//! and an AdamW step of every parameter, recorded as one submission a step.

use super::grads::{zeros_like, Scratch};
use super::{Gpt2, Gpt2Activations, NamedTensor};
use crate::error::{Error, Result};
use crate::ops::grad::{adamw_step, cross_entropy_into, AdamWOptions, CrossEntropyOptions};
use crate::Tensor;

/// Trains a [`Gpt2`] on batches of `batch` token sequences of `seq` tokens
/// (next-token prediction: the caller gives each position's target), with
/// AdamW (`torch.optim.AdamW`'s update; weight decay on the 2-D parameters
/// only, see [`decays`](Self::decays)). Holds the kept activations, the
/// gradients and both moments of every parameter on the device, made once.
///
/// ```no_run
/// # fn main() -> flashdot::Result<()> {
/// use flashdot::models::{Gpt2, Gpt2Config, Gpt2Trainer};
/// use flashdot::ops::grad::AdamWOptions;
/// let ctx = flashdot::Context::new()?;
/// let model = Gpt2::random(&ctx, &Gpt2Config::new(97, 64, 48, 2, 3), 1)?;
/// let mut trainer = Gpt2Trainer::new(model, 2, 4, AdamWOptions::default())?;
/// let ids = [5, 17, 3, 9, 4, 4, 8, 1];
/// let targets = [17, 3, 9, 2, 4, 8, 1, 0]; // the next tokens
/// let loss = trainer.step(&ids, &targets)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Gpt2Trainer {
    model: Gpt2,
    acts: Gpt2Activations,
    scratch: Scratch,
    /// A gradient per parameter, in load order.
    grads: Vec<Tensor>,
    /// AdamW's first and second moments, likewise.
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    steps: u64,
    opts: AdamWOptions,
    loss: CrossEntropyOptions,
}

const OP: &str = "Gpt2Trainer";

impl Gpt2Trainer {
    /// A trainer of `model` on `batch × seq` token batches, the moments at
    /// zero and the step count at 0.
    ///
    /// Errors: [`Error::InvalidArgument`] for `batch` or `seq` 0 or `opts`
    /// out of AdamW's range; [`Error::Shape`] for `seq` past `n_positions`;
    /// GPU errors ([`Error::TooLarge`] for a tensor past one buffer).
    pub fn new(model: Gpt2, batch: usize, seq: usize, opts: AdamWOptions) -> Result<Self> {
        if batch == 0 || seq == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                detail: format!("batch {batch} × seq {seq}: a step needs a token"),
            });
        }
        opts.validate()?;
        let ctx = model.context().clone();
        let acts = model.activations(batch, seq, true)?;
        let scratch = Scratch::new(&ctx, model.config(), batch, seq)?;
        let params = model.model.params();
        let zeros = || zeros_like(&ctx, params.iter().map(|p| &p.tensor));
        let (grads, m, v) = (zeros()?, zeros()?, zeros()?);
        Ok(Gpt2Trainer {
            model,
            acts,
            scratch,
            grads,
            m,
            v,
            steps: 0,
            opts,
            loss: CrossEntropyOptions::default(),
        })
    }

    /// Whether AdamW decays a parameter of this (checkpoint) shape: the
    /// 2-D ones (`wte`, `wpe` and the `Conv1D` weights), not biases nor
    /// layer norms (nanoGPT's and Hugging Face `Trainer`'s rule).
    pub fn decays(shape: &[usize]) -> bool {
        shape.len() == 2
    }

    /// One training step on token `ids` and their `targets` (each `batch ·
    /// seq` long, row-major `[batch, seq]`; a target of
    /// [`IGNORE_INDEX`](crate::ops::grad::IGNORE_INDEX) is left out of the
    /// loss): the forward, the mean cross-entropy, the backward and an AdamW
    /// step of every parameter, in one submission. Returns the loss of the
    /// parameters before the update (read back).
    ///
    /// Errors: as [`forward_loss`](Self::forward_loss) (nothing runs then);
    /// GPU errors.
    pub fn step(&mut self, ids: &[u32], targets: &[u32]) -> Result<f32> {
        let ctx = self.model.context().clone();
        let before = self.steps;
        let loss = ctx.record(|| {
            let loss = self.forward_loss(ids, targets)?;
            self.backward(ids)?;
            self.update()?;
            Ok(loss)
        });
        // A failed recording submits nothing: the step did not happen.
        let loss = loss.inspect_err(|_| self.steps = before)?;
        Ok(loss.to_vec::<f32>()?[0])
    }

    /// The forward over `ids` keeping every activation, and the loss
    /// against `targets` with its gradient (the first part of a
    /// [`step`](Self::step)): the mean loss `[1]` on the device.
    ///
    /// Errors: [`Error::Shape`] for `ids` or `targets` not `batch · seq`
    /// long; [`Error::InvalidArgument`] for an id past the vocabulary or a
    /// target past it that is not the ignore index (naming its position).
    pub fn forward_loss(&self, ids: &[u32], targets: &[u32]) -> Result<Tensor> {
        let rows = self.acts.batch() * self.acts.seq();
        if targets.len() != rows {
            return Err(Error::Shape {
                op: OP,
                detail: format!(
                    "{} targets for batch {} × seq {}",
                    targets.len(),
                    self.acts.batch(),
                    self.acts.seq()
                ),
            });
        }
        self.model.forward_into(ids, &self.acts)?;
        let logits = self.acts.logit_rows()?;
        let ce = cross_entropy_into(&logits, targets, &self.loss, &self.scratch.logits)?;
        Ok(ce.loss)
    }

    /// The backward of the last [`forward_loss`](Self::forward_loss) (whose
    /// `ids` these are) into every parameter's gradient.
    ///
    /// Errors: [`Error::Shape`] for `ids` not `batch · seq` long;
    /// [`Error::InvalidArgument`] for an id past the vocabulary; GPU errors.
    pub fn backward(&self, ids: &[u32]) -> Result<()> {
        let model = &self.model.model;
        model.backward(ids, &self.acts, &self.scratch, &self.grads)
    }

    /// One AdamW step of every parameter with the gradients of the last
    /// [`backward`](Self::backward) (step count + 1).
    ///
    /// Errors: GPU errors.
    pub fn update(&mut self) -> Result<()> {
        // Counted once every parameter's step is recorded.
        let t = self.steps + 1;
        let params = self.model.model.params();
        let decayed = self.opts;
        let flat = AdamWOptions {
            weight_decay: 0.0,
            ..self.opts
        };
        let moments = self.m.iter().zip(&self.v);
        for ((p, g), (m, v)) in params.iter().zip(&self.grads).zip(moments) {
            let opts = match Self::decays(p.tensor.shape()) {
                true => &decayed,
                false => &flat,
            };
            adamw_step(&p.tensor, g, m, v, t, opts)?;
        }
        self.steps = t;
        Ok(())
    }

    /// The gradients of the last backward in the checkpoint's names and
    /// layouts (`Conv1D` weights `[in, out]`), in load order (read back).
    ///
    /// Errors: readback errors.
    pub fn gradients(&self) -> Result<Vec<NamedTensor>> {
        let params = self.model.model.params();
        params
            .iter()
            .zip(&self.grads)
            .map(|(p, g)| p.host_of(g))
            .collect()
    }

    /// The model being trained.
    pub fn model(&self) -> &Gpt2 {
        &self.model
    }

    /// The trained model (its parameters are the trainer's).
    pub fn into_model(self) -> Gpt2 {
        self.model
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The optimizer's hyperparameters.
    pub fn options(&self) -> &AdamWOptions {
        &self.opts
    }

    /// Sets the learning rate of the next steps (a schedule's).
    ///
    /// Errors: [`Error::InvalidArgument`] for a negative or non-finite `lr`.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        let opts = AdamWOptions { lr, ..self.opts };
        opts.validate()?;
        self.opts = opts;
        Ok(())
    }
}
