//! The inverted-file list scan (FAISS's GPU `IVFFlatScan`): after the coarse
//! quantiser has ranked each query's `nprobe` lists, one dispatch per chunk
//! scans every probed list of that chunk for every query that probes it,
//! with the fused top-k of the flat scan (`topk.wgsl` with `IVF`), and the
//! select passes reduce each query's candidates to `kp`; one readback (or
//! the finish pass) per batch.
//!
//! Work items come from a table the host builds from the probes: a run of
//! one list's rows within one chunk (the list's rows are contiguous: an
//! [`IvfIndex`](super::IvfIndex) lays its store out list by list), a slice of
//! that run, and up to `qb` queries that probe the list, each with where its
//! candidates go. Queries that probe the same list share a work item, so a
//! list's rows are read once for all of them ("grouped by list"); each
//! query's candidates are packed one work item after another, so the first
//! select pass reads each query's own length (`RAGGED`).

use std::ops::Range;

use super::plan::{ivf_batch, slot, Scan, SearchPlan, TopkParams};
use super::scan::{
    candidate_list, finish_list, read_list, select_lists, Candidates, Finish, List, Queries,
};
use super::store::ChunkStore;
use crate::context::{Bind, Tracked};
use crate::error::{Error, Result};

const OP: &str = "IvfIndex::search";

/// An IVF store: list `l` is storage rows `starts[l]..starts[l + 1]`;
/// `orders[c]` holds the order of each row of chunk `c` (what candidates
/// carry, and what the allow bitmap is over).
pub(crate) struct Lists<'a> {
    pub store: &'a ChunkStore,
    pub starts: &'a [usize],
    pub orders: &'a [Tracked],
}

/// Rows of one list within one chunk.
#[derive(Debug, Clone, Copy)]
struct Run {
    chunk: usize,
    /// First row in the chunk.
    local: usize,
    rows: usize,
}

/// A work item: runs of one chunk and the queries (of the batch) that scan
/// them.
#[derive(Debug, Clone)]
struct Item {
    runs: Vec<Run>,
    queries: Vec<u32>,
}

/// The work of one batch of queries.
struct Work {
    /// Work items of `4 + 2·qb` words, in chunk order, then their runs.
    words: Vec<u32>,
    /// Per chunk: its first work item and how many.
    per_chunk: Vec<(usize, usize)>,
    /// Each query's candidate slots.
    lens: Vec<u32>,
    /// Slots from one query's candidates to the next's.
    stride: usize,
}

/// The scan of an IVF store's probed lists for the top `k` of a query batch.
pub(crate) struct ListScanner<'a> {
    lists: Lists<'a>,
    plan: SearchPlan,
    k: usize,
    /// Queries the uniform block holds.
    cap: usize,
    allow: Option<Tracked>,
}

impl<'a> ListScanner<'a> {
    /// A scanner of `lists` for the top `k` (at least 1), work items of up
    /// to `group` queries (1: one query per item), over the rows whose order
    /// is set in `allow` if given.
    ///
    /// Errors: a query or `k` this adapter cannot serve
    /// ([`Error::Unsupported`]).
    pub fn new(lists: Lists<'a>, k: usize, group: usize, allow: Option<&[u32]>) -> Result<Self> {
        let ctx = lists.store.context();
        let dp = lists.store.codec().padded();
        let plan = SearchPlan::new(ctx.profile(), k, group.max(1), dp)?;
        let cap = ivf_batch(ctx.profile(), dp);
        let allow = allow.map(|bits| {
            ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("ivf allow bitmap"),
                contents: bytemuck::cast_slice(bits),
                usage: wgpu::BufferUsages::STORAGE,
            })
        });
        Ok(ListScanner {
            lists,
            plan,
            k,
            cap,
            allow,
        })
    }

    /// Rows one work item scans at most: a list-scan slice, or one sort
    /// slice.
    fn item_rows(&self) -> usize {
        match self.plan.scan {
            Scan::Lists { .. } => self.plan.slice_rows(),
            Scan::Sort => self.plan.sl,
        }
    }

    /// List `l`'s rows as runs within one chunk of at most
    /// [`item_rows`](Self::item_rows) each.
    fn pieces(&self, l: usize) -> Vec<Run> {
        let per = self.lists.store.per;
        let most = self.item_rows();
        let (mut r, end) = (self.lists.starts[l], self.lists.starts[l + 1]);
        let mut v = Vec::new();
        while r < end {
            let (chunk, local) = (r / per, r % per);
            let rows = (end - r).min(per - local).min(most);
            v.push(Run { chunk, local, rows });
            r += rows;
        }
        v
    }

    /// The query batches of `probes` (`[m, nprobe]` list numbers, −1 for
    /// none): consecutive queries, as many as the uniform block holds and
    /// whose candidates (at most a work item per run of each probed list)
    /// fit one storage binding.
    pub fn batches(&self, probes: &[i64], nprobe: usize) -> Result<Vec<Range<usize>>> {
        let ctx = self.lists.store.context();
        let max = ctx.max_binding() as usize / 8;
        let nl = self.lists.starts.len() - 1;
        let ss = self.plan.slice_slots();
        let slots: Vec<usize> = (0..nl).map(|l| self.pieces(l).len() * ss).collect();
        let mut out = Vec::new();
        let (mut start, mut widest) = (0, 0);
        for (q, p) in probes.chunks_exact(nprobe).enumerate() {
            let need: usize = p
                .iter()
                .filter(|&&l| l >= 0)
                .map(|&l| slots[l as usize])
                .sum();
            if need > max {
                return Err(Error::TooLarge {
                    op: OP,
                    what: format!("one query's candidates over {nprobe} lists"),
                    size: (need * 8) as u64,
                    limit: ctx.max_binding(),
                    kind: crate::Limit::StorageBinding,
                });
            }
            let w = widest.max(need);
            if q > start && (q - start + 1 > self.cap || (q - start + 1) * w > max) {
                out.push(start..q);
                start = q;
                widest = need;
            } else {
                widest = w;
            }
        }
        let m = probes.len() / nprobe.max(1);
        if m > start {
            out.push(start..m);
        }
        Ok(out)
    }

    /// The work table of the queries `batch` of `probes`: grouped, one item
    /// per (list, up to `qb` of its queries, runs of it up to an item's
    /// rows); else one item per (query, chunk, its probed runs there up to
    /// an item's rows).
    fn work(&self, probes: &[i64], nprobe: usize, batch: Range<usize>) -> Work {
        let m = batch.len();
        let mine = &probes[batch.start * nprobe..batch.end * nprobe];
        let nchunks = self.lists.store.chunks().len();
        let mut items: Vec<Vec<Item>> = vec![Vec::new(); nchunks];
        if self.plan.qb > 1 {
            let nl = self.lists.starts.len() - 1;
            let mut queries: Vec<Vec<u32>> = vec![Vec::new(); nl];
            for (j, p) in mine.chunks_exact(nprobe).enumerate() {
                for &l in p.iter().filter(|&&l| l >= 0) {
                    queries[l as usize].push(j as u32);
                }
            }
            for (l, qs) in queries.iter().enumerate() {
                if qs.is_empty() {
                    continue;
                }
                for runs in self.pack(self.pieces(l)) {
                    for g in qs.chunks(self.plan.qb as usize) {
                        items[runs[0].chunk].push(Item {
                            runs: runs.clone(),
                            queries: g.to_vec(),
                        });
                    }
                }
            }
        } else {
            for (j, p) in mine.chunks_exact(nprobe).enumerate() {
                let mut runs: Vec<Run> = p
                    .iter()
                    .filter(|&&l| l >= 0)
                    .flat_map(|&l| self.pieces(l as usize))
                    .collect();
                runs.sort_by_key(|r| r.chunk);
                for runs in self.pack(runs) {
                    items[runs[0].chunk].push(Item {
                        runs,
                        queries: vec![j as u32],
                    });
                }
            }
        }
        self.table(items, m)
    }

    /// `runs` (in chunk order) packed into work items: consecutive runs of
    /// one chunk up to an item's rows (one run an item for the sort scan).
    fn pack(&self, runs: Vec<Run>) -> Vec<Vec<Run>> {
        let most = match self.plan.scan {
            Scan::Lists { .. } => self.item_rows(),
            Scan::Sort => 0,
        };
        let mut out: Vec<Vec<Run>> = Vec::new();
        let mut rows = 0;
        for r in runs {
            match out.last_mut() {
                Some(last) if last[0].chunk == r.chunk && rows + r.rows <= most => {
                    rows += r.rows;
                    last.push(r);
                }
                _ => {
                    rows = r.rows;
                    out.push(vec![r]);
                }
            }
        }
        out
    }

    /// The words of `items` (per chunk) for `m` queries: the items, then
    /// their runs; each query's candidates packed item after item.
    fn table(&self, items: Vec<Vec<Item>>, m: usize) -> Work {
        let qb = self.plan.qb as usize;
        let ss = self.plan.slice_slots();
        let ws = 4 + 2 * qb;
        let mut lens = vec![0u32; m];
        for it in items.iter().flatten() {
            for &j in &it.queries {
                lens[j as usize] += ss as u32;
            }
        }
        let stride = lens.iter().copied().max().unwrap_or(0) as usize;
        let count: usize = items.iter().map(Vec::len).sum();
        let mut words = Vec::with_capacity(count * ws);
        let mut runs = Vec::new();
        let mut per_chunk = Vec::with_capacity(items.len());
        let mut cursor = vec![0usize; m];
        for chunk in &items {
            per_chunk.push((words.len() / ws, chunk.len()));
            for it in chunk {
                let at = count * ws + runs.len();
                words.extend([at as u32, it.runs.len() as u32, 0, it.queries.len() as u32]);
                for &j in &it.queries {
                    let j = j as usize;
                    words.extend([j as u32, (j * stride + cursor[j]) as u32]);
                    cursor[j] += ss;
                }
                words.resize(words.len() + 2 * (qb - it.queries.len()), 0);
                runs.extend(it.runs.iter().flat_map(|r| [r.local as u32, r.rows as u32]));
            }
        }
        words.extend(runs);
        Work {
            words,
            per_chunk,
            lens,
            stride,
        }
    }

    /// The scan and select passes of the queries `batch` of `queries` (rows
    /// as [`Codec::queries`](super::codec::Codec::queries) pads them, or a
    /// prepared device tensor) over their `probes`: each query's final
    /// candidate list, or `None` when no probed list holds a row.
    pub fn scan(
        &self,
        queries: Queries<'_>,
        probes: &[i64],
        nprobe: usize,
        batch: Range<usize>,
    ) -> Result<Option<List>> {
        let store = self.lists.store;
        let ctx = store.context();
        let codec = store.codec();
        let dp = codec.padded();
        let m = batch.len();
        let work = self.work(probes, nprobe, batch.clone());
        if work.stride == 0 {
            return Ok(None);
        }
        let filter = self.allow.is_some();
        let spec = self
            .plan
            .scan_spec(codec.storage, dp / 8, codec.l2(), filter)
            .ivf(
                self.cap,
                self.lists.store.len() / (self.lists.starts.len() - 1),
            );
        let scan = ctx.pipeline(&spec)?;
        let mut qbytes = vec![0u8; self.cap * dp * 4];
        if let Queries::Host(rows) = queries {
            let b: &[u8] = bytemuck::cast_slice(&rows[batch.start * dp..batch.end * dp]);
            qbytes[..b.len()].copy_from_slice(b);
        }
        ctx.scoped(OP, || {
            let qbuf = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("ivf queries"),
                contents: &qbytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
            let mut enc = ctx.encoder();
            if let Queries::Device(t) = queries {
                let row = (t.shape()[1] * 4) as u64;
                for j in 0..m {
                    let src = t.offset() + (batch.start + j) as u64 * row;
                    enc.copy_buffer_to_buffer(t.buffer(), src, &qbuf, (j * dp * 4) as u64, row);
                }
            }
            let wbuf = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("ivf work"),
                contents: bytemuck::cast_slice(&work.words),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let cand = candidate_list(ctx, m * work.stride);
            self.dispatch_scan(&mut enc, &scan, &qbuf, &wbuf, &cand, &work);
            let lens = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("ivf candidate lengths"),
                contents: bytemuck::cast_slice(&work.lens),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let cand = List {
                buffer: cand,
                slots: work.stride,
            };
            let list = select_lists(ctx, &self.plan, &mut enc, cand, Some(&lens), m)?;
            ctx.submit(enc);
            Ok(Some(list))
        })
    }

    /// One scan dispatch per chunk that holds probed rows.
    fn dispatch_scan(
        &self,
        enc: &mut wgpu::CommandEncoder,
        scan: &wgpu::ComputePipeline,
        qbuf: &wgpu::Buffer,
        wbuf: &wgpu::Buffer,
        cand: &wgpu::Buffer,
        work: &Work,
    ) {
        let store = self.lists.store;
        let ctx = store.context();
        let dv = store.codec().padded() / 8;
        for (c, &(first, count)) in work.per_chunk.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let chunk = &store.chunks()[c];
            let p = TopkParams {
                dv: dv as u32,
                m: count as u32,
                q0: first as u32,
                lsh: store.lsh(),
                ..Default::default()
            };
            let ubuf = ctx.uniform(&p);
            let mut binds = vec![
                (slot::QUERIES, Bind::whole(qbuf)),
                (slot::CORPUS, Bind::texture(&chunk.view)),
                (slot::CANDIDATES, Bind::whole(cand)),
                (slot::WORK, Bind::whole(wbuf)),
                (slot::ORDER, Bind::whole(&self.lists.orders[c])),
            ];
            let sides = [
                (slot::ROW_SCALE, chunk.scales.as_deref()),
                (slot::ROW_NORM, chunk.norms.as_deref()),
                (slot::ALLOW, self.allow.as_deref()),
            ];
            binds.extend(
                sides
                    .into_iter()
                    .filter_map(|(s, b)| Some((s, Bind::whole(b?)))),
            );
            let gx = count.min(65535);
            let grid = (gx as u32, count.div_ceil(gx) as u32, 1);
            ctx.dispatch(enc, scan, &ubuf, &binds, grid);
        }
    }

    /// `list` of a batch of `m` queries read back: candidates carry orders.
    pub fn read(&self, list: &List, m: usize) -> Result<Candidates> {
        read_list(self.lists.store.context(), list, m)
    }

    /// `list`, the final lists of queries `q`, as device scores and ids in
    /// `out` (its table maps orders to ids).
    pub fn finish(&self, list: &List, q: Range<usize>, out: &Finish<'_>) -> Result<()> {
        let l2 = self.lists.store.codec().l2();
        finish_list(self.lists.store.context(), l2, self.k, list, q, out)
    }
}

/// The mean number of queries per probed list of `probes` (`[m, nprobe]`).
pub(crate) fn queries_per_list(probes: &[i64]) -> usize {
    let mut lists: Vec<i64> = probes.iter().copied().filter(|&l| l >= 0).collect();
    let total = lists.len();
    lists.sort_unstable();
    lists.dedup();
    total.div_ceil(lists.len().max(1))
}
