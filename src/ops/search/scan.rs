//! The scan (FAISS's GPU `Distance` + `L2Select`): queries against every row
//! of a [`ChunkStore`], fused — a workgroup scores a block of queries
//! against a slice of a chunk and keeps only each query's best candidates,
//! which select passes then reduce to `kp` per query; the m × n score matrix
//! is never written to device memory. Queries are read from a uniform
//! buffer, since every invocation reads the same query value at once.
//!
//! A [`Scanner`] sizes the query batches (one function: their candidate
//! lists fit one binding), runs the scan and select dispatches of a batch,
//! and either reads the final lists back (one readback, through
//! `Context::read_buffer`) as per-query (score, storage row) candidates or
//! finishes them on the device into score and id tensors. Candidates are
//! storage rows of the store: the caller maps them to ids.

use std::ops::Range;

use super::codec::Codec;
use super::plan::{slot, tensor_bind, SearchPlan, TopkParams, TopkSpec};
use super::store::ChunkStore;
use crate::context::{Bind, Context, Tracked, Wait};
use crate::error::Result;
use crate::ops::similarity::Metric;

const OP: &str = "search";

/// A scan's queries: host rows as [`Codec::queries`] pads them, or a device
/// tensor `[m, dim]` f32 as [`device_queries`] prepares it.
#[derive(Clone, Copy)]
pub(crate) enum Queries<'a> {
    Host(&'a [f32]),
    Device(&'a crate::Tensor),
}

/// Device queries as the scan reads them (normalised for cosine, else
/// contiguous) and, for L2, their squared norms `[m]`.
pub(crate) fn device_queries(
    codec: &Codec,
    queries: &crate::Tensor,
) -> Result<(crate::Tensor, Option<crate::Tensor>)> {
    let q = match codec.metric {
        Metric::Cosine => crate::ops::similarity::normalize(queries)?,
        _ => queries.contiguous()?,
    };
    let norms = match codec.l2() {
        true => Some(crate::ops::dot::dot(&q, &q)?),
        false => None,
    };
    Ok((q, norms))
}

/// A batch's final candidate lists on the device: per query `slots` (= kp)
/// entries of (score bits, storage row).
pub(crate) struct List {
    pub buffer: Tracked,
    pub slots: usize,
}

/// A batch's final candidates read back: per query `kp` (score, storage
/// row), best first. L2 scores rank as 2·q·x − ‖x‖² (the distance is ‖q‖²
/// minus the score); past a query's candidates (too few rows, or rows
/// outside the filter) the rows are at or past the store's length.
pub(crate) struct Candidates {
    kp: usize,
    scores: Vec<f32>,
    rows: Vec<u32>,
}

impl Candidates {
    /// Query `q`'s first `n` (score, storage row), best first.
    pub fn query(&self, q: usize, n: usize) -> impl Iterator<Item = (f32, u32)> + '_ {
        let span = q * self.kp..q * self.kp + n;
        self.scores[span.clone()]
            .iter()
            .copied()
            .zip(self.rows[span].iter().copied())
    }
}

/// Where the finish pass writes a batch's results (`[m, k]` scores, `[m, k,
/// 2]` u32 ids) and what it reads besides the list.
pub(crate) struct Finish<'a> {
    /// The caller, in errors.
    pub op: &'static str,
    /// Each storage row's id, an i64 as two u32.
    pub table: &'a wgpu::Buffer,
    /// L2: the queries' squared norms `[m]`.
    pub qnorm: Option<&'a crate::Tensor>,
    pub scores: &'a crate::Tensor,
    pub ids: &'a crate::Tensor,
    /// Results per query in the outputs (at least the scanner's k).
    pub k: usize,
}

/// The scan of one store for the top `k` of `m` queries.
pub(crate) struct Scanner<'a> {
    store: &'a ChunkStore,
    plan: SearchPlan,
    k: usize,
    /// Corpus slices over all chunks (each gives a query `slice_slots`
    /// candidates).
    slices: usize,
    /// Queries per batch.
    batch: usize,
    /// The allow bitmap over storage rows, on the device.
    allow: Option<Tracked>,
}

/// Scan dispatches (compute passes) one batch records at most.
///
/// wgpu keeps a finished encoder's command pool for later encoders, and its
/// Vulkan backend records every pass into a command buffer of its own (two,
/// with the barriers'), so one encoder of thousands of passes leaves a pool
/// that every later submission resets buffer by buffer: on lavapipe, after
/// one 20,000-pass encoder each two-pass submission took 9.4 ms instead of
/// 0.2 ms, for the rest of the process (an IVF add of 300,000 vectors made
/// every later one-query search ~6 ms slower). Batches of ≤ 512 passes keep
/// pools small and still amortise a batch's readback.
pub(crate) const MAX_BATCH_PASSES: usize = 512;

/// Queries per batch: few enough that a batch's candidate lists fit one
/// storage binding, and that its scan (a dispatch per chunk and block of
/// `plan.qb` queries) records at most [`MAX_BATCH_PASSES`] passes.
pub(crate) fn batch_size(
    max_binding: u64,
    plan: &SearchPlan,
    slices: usize,
    chunks: usize,
) -> usize {
    let per_query = (slices * plan.slice_slots() * 8) as u64;
    let blocks = (MAX_BATCH_PASSES / chunks.max(1)).max(1);
    ((max_binding / per_query.max(1)) as usize)
        .min(blocks * plan.qb as usize)
        .clamp(1, 65535)
}

/// Query blocks of `qb` rows, each at an aligned offset of one uniform
/// buffer (a scan dispatch binds one block); the last block is padded.
struct QueryBlocks {
    qb: usize,
    /// Row length in groups of 8 values.
    dv: usize,
    /// Bytes of one block.
    block: usize,
    /// Bytes from one block to the next.
    stride: usize,
    count: usize,
}

impl QueryBlocks {
    fn new(ctx: &Context, plan: &SearchPlan, dv: usize, m: usize) -> Self {
        let qb = plan.qb as usize;
        let block = qb * 8 * dv * 4;
        let align = ctx.profile().uniform_offset_alignment as usize;
        QueryBlocks {
            qb,
            dv,
            block,
            stride: block.next_multiple_of(align.max(16)),
            count: m.div_ceil(qb),
        }
    }

    /// The uniform buffer's contents: host rows in their blocks, else zeros
    /// (device rows are copied in on the device).
    fn host_bytes(&self, queries: &[f32]) -> Vec<u8> {
        let mut bytes = vec![0u8; self.count * self.stride];
        for (blk, rows) in queries.chunks(self.qb * 8 * self.dv).enumerate() {
            let b: &[u8] = bytemuck::cast_slice(rows);
            bytes[blk * self.stride..blk * self.stride + b.len()].copy_from_slice(b);
        }
        bytes
    }

    /// Copies rows `q` of `t` (`[m, dim]` f32) into their places in their
    /// blocks of `qbuf` (the padding stays 0).
    fn copy_device(&self, ctx: &Context, t: &crate::Tensor, q: Range<usize>, qbuf: &wgpu::Buffer) {
        let row = (t.shape()[1] * 4) as u64;
        let mut enc = ctx.encoder();
        for i in 0..q.len() {
            let src = t.offset() + (q.start + i) as u64 * row;
            let dst = ((i / self.qb) * self.stride + (i % self.qb) * 8 * self.dv * 4) as u64;
            enc.copy_buffer_to_buffer(t.buffer(), src, qbuf, dst, row);
        }
        ctx.submit(enc);
    }
}

impl<'a> Scanner<'a> {
    /// A scanner of `store` for the top `k` (1 to the store's length) of `m`
    /// queries, over the rows set in `allow` (a bitmap over storage rows,
    /// bit `r % 32` of word `r / 32`) if given.
    ///
    /// Errors: a query or `k` this adapter's limits cannot serve
    /// ([`Error::Unsupported`](crate::Error::Unsupported)).
    pub fn new(store: &'a ChunkStore, k: usize, m: usize, allow: Option<&[u32]>) -> Result<Self> {
        let ctx = store.context();
        let plan = SearchPlan::new(ctx.profile(), k, m, store.codec().padded())?;
        let slices = store
            .chunks()
            .iter()
            .map(|c| c.rows.div_ceil(plan.slice_rows()))
            .sum();
        let batch = batch_size(ctx.max_binding(), &plan, slices, store.chunks().len());
        let allow = allow.map(|bits| {
            ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("search allow bitmap"),
                contents: bytemuck::cast_slice(bits),
                usage: wgpu::BufferUsages::STORAGE,
            })
        });
        Ok(Scanner {
            store,
            plan,
            k,
            slices,
            batch,
            allow,
        })
    }

    /// The query batches of `m` queries, in order.
    pub fn batches(&self, m: usize) -> impl Iterator<Item = Range<usize>> {
        let batch = self.batch;
        (0..m).step_by(batch).map(move |q0| q0..m.min(q0 + batch))
    }

    /// The scan and select passes of the queries `q` of `queries` (one
    /// batch): each query's final candidate list.
    pub fn scan(&self, queries: Queries<'_>, q: Range<usize>) -> Result<List> {
        let ctx = self.store.context();
        let codec = self.store.codec();
        let dv = codec.padded() / 8;
        let filter = self.allow.is_some();
        let scan = ctx.pipeline(&self.plan.scan_spec(codec.storage, dv, codec.l2(), filter))?;
        let m = q.len();
        let blocks = QueryBlocks::new(ctx, &self.plan, dv, m);
        let qbytes = match queries {
            Queries::Host(rows) => blocks.host_bytes(&rows[q.start * dv * 8..q.end * dv * 8]),
            Queries::Device(_) => blocks.host_bytes(&[]),
        };
        ctx.scoped(OP, || {
            let qbuf = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("queries"),
                contents: &qbytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
            if let Queries::Device(t) = queries {
                blocks.copy_device(ctx, t, q.clone(), &qbuf);
            }
            let slots = self.slices * self.plan.slice_slots();
            let list = List {
                buffer: candidate_list(ctx, m * slots),
                slots,
            };
            let mut enc = ctx.encoder();
            self.dispatch_scan(&mut enc, &scan, &qbuf, &blocks, &list, m);
            let list = select_lists(ctx, &self.plan, &mut enc, list, None, m)?;
            ctx.submit(enc);
            Ok(list)
        })
    }

    /// One scan dispatch per chunk and query block, into `list`.
    fn dispatch_scan(
        &self,
        enc: &mut wgpu::CommandEncoder,
        scan: &wgpu::ComputePipeline,
        qbuf: &wgpu::Buffer,
        blocks: &QueryBlocks,
        list: &List,
        m: usize,
    ) {
        let ctx = self.store.context();
        let max = ctx.profile().max_workgroups_per_dim as usize;
        let qb = blocks.qb;
        let (mut slice_base, mut id_base) = (0, 0);
        for c in self.store.chunks() {
            let nsl = c.rows.div_ceil(self.plan.slice_rows());
            for blk in 0..blocks.count {
                let p = TopkParams {
                    rows: c.rows as u32,
                    dv: blocks.dv as u32,
                    m: qb.min(m - blk * qb) as u32,
                    q0: (blk * qb) as u32,
                    id_base: id_base as u32,
                    slice_base: slice_base as u32,
                    slots: list.slots as u32,
                    lsh: self.store.lsh(),
                };
                let ubuf = ctx.uniform(&p);
                let query_block = Bind::Buffer {
                    buffer: qbuf,
                    offset: (blk * blocks.stride) as u64,
                    size: blocks.block as u64,
                };
                let mut binds = vec![
                    (slot::QUERIES, query_block),
                    (slot::CORPUS, Bind::texture(&c.view)),
                    (slot::CANDIDATES, Bind::whole(&list.buffer)),
                ];
                let sides = [
                    (slot::ROW_SCALE, c.scales.as_deref()),
                    (slot::ROW_NORM, c.norms.as_deref()),
                    (slot::ALLOW, self.allow.as_deref()),
                ];
                binds.extend(
                    sides
                        .into_iter()
                        .filter_map(|(s, b)| Some((s, Bind::whole(b?)))),
                );
                // Slices over x (a chunk's slices fit the per-dimension
                // limit: ChunkStore::new).
                let gx = nsl.min(max) as u32;
                ctx.dispatch(enc, scan, &ubuf, &binds, (gx, 1, 1));
            }
            slice_base += nsl;
            id_base += c.rows;
        }
    }

    /// `list` of a batch of `m` queries read back.
    pub fn read(&self, list: &List, m: usize) -> Result<Candidates> {
        read_list(self.store.context(), list, m)
    }

    /// Writes `list`, the final lists of queries `q`, as device scores and
    /// ids into `out` (rows `q` of its tensors; L2: distances).
    pub fn finish(&self, list: &List, q: Range<usize>, out: &Finish<'_>) -> Result<()> {
        finish_list(
            self.store.context(),
            self.store.codec().l2(),
            self.k,
            list,
            q,
            out,
        )
    }
}

/// Reduces each query's list to KP: in one serial pass where the plan
/// allows it, else SL entries at a time until KP remain; `lens`: each
/// query's own list length (the first pass reads only those entries).
pub(crate) fn select_lists(
    ctx: &Context,
    plan: &SearchPlan,
    enc: &mut wgpu::CommandEncoder,
    mut list: List,
    lens: Option<&wgpu::Buffer>,
    m: usize,
) -> Result<List> {
    let ragged = lens.is_some();
    let serial = list.slots <= plan.serial_select;
    if !ragged && list.slots <= plan.kp {
        return Ok(list);
    }
    let pass = |enc: &mut wgpu::CommandEncoder, list: &List, spec: TopkSpec, first: bool| {
        let pipeline = ctx.pipeline(&spec)?;
        let chunks = if serial {
            1
        } else {
            list.slots.div_ceil(plan.sl)
        };
        let out_slots = chunks * plan.kp;
        let out = candidate_list(ctx, m * out_slots);
        let p = TopkParams {
            rows: list.slots as u32,
            m: m as u32,
            slots: out_slots as u32,
            ..Default::default()
        };
        let ubuf = ctx.uniform(&p);
        let mut binds = vec![
            (slot::LIST_IN, Bind::whole(&list.buffer)),
            (slot::LIST_OUT, Bind::whole(&out)),
        ];
        if let (true, Some(l)) = (first, lens) {
            binds.push((slot::LIST_LENS, Bind::whole(l)));
        }
        let grid = match serial {
            true => (m.div_ceil(64) as u32, 1, 1),
            false => (chunks as u32, m as u32, 1),
        };
        ctx.dispatch(enc, &pipeline, &ubuf, &binds, grid);
        Ok::<_, crate::Error>(List {
            buffer: out,
            slots: out_slots,
        })
    };
    if serial {
        let spec = TopkSpec::SelectSerial {
            kp: plan.kp as u32,
            ragged,
        };
        return pass(enc, &list, spec, true);
    }
    let mut first = true;
    while first && ragged || list.slots > plan.kp {
        let spec = plan.select_spec(first && ragged);
        list = pass(enc, &list, spec, first)?;
        first = false;
    }
    Ok(list)
}

/// `list` of a batch of `m` queries read back.
pub(crate) fn read_list(ctx: &Context, list: &List, m: usize) -> Result<Candidates> {
    let bytes = (m * list.slots * 8) as u64;
    let raw = pollster::block_on(ctx.read_buffer(OP, &list.buffer, 0, bytes, Wait::Here))?;
    let words: Vec<u32> = bytemuck::pod_collect_to_vec(&raw);
    Ok(Candidates {
        kp: list.slots,
        scores: words
            .iter()
            .step_by(2)
            .map(|&b| f32::from_bits(b))
            .collect(),
        rows: words.iter().skip(1).step_by(2).copied().collect(),
    })
}

/// Writes `list`, the final lists of queries `q` (`k` real entries each),
/// as device scores and ids into `out` (rows `q` of its tensors; L2:
/// distances).
pub(crate) fn finish_list(
    ctx: &Context,
    l2: bool,
    k: usize,
    list: &List,
    q: Range<usize>,
    out: &Finish<'_>,
) -> Result<()> {
    let finish = ctx.pipeline(&TopkSpec::Finish { l2 })?;
    ctx.scoped(out.op, || {
        let p = TopkParams {
            rows: k as u32,
            dv: out.k as u32,
            m: q.len() as u32,
            q0: q.start as u32,
            slots: list.slots as u32,
            ..Default::default()
        };
        let ubuf = ctx.uniform(&p);
        let mut binds = vec![
            (slot::LIST_FIN, Bind::whole(&list.buffer)),
            (slot::ID_TABLE, Bind::whole(out.table)),
            (slot::OUT_SCORES, tensor_bind(out.scores)),
            (slot::OUT_IDS, tensor_bind(out.ids)),
        ];
        if let Some(n) = out.qnorm {
            binds.push((slot::QNORM, tensor_bind(n)));
        }
        let mut enc = ctx.encoder();
        let groups = (out.k.div_ceil(64) as u32, q.len() as u32, 1);
        ctx.dispatch(&mut enc, &finish, &ubuf, &binds, groups);
        ctx.submit(enc);
        Ok(())
    })
}

/// A candidate list of `entries` (score bits, storage row) pairs.
pub(crate) fn candidate_list(ctx: &Context, entries: usize) -> Tracked {
    ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some("candidates"),
        size: (entries * 8).max(16) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}
