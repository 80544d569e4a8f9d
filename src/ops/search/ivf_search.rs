//! [`IvfIndex`]'s searches: the batch quantised on the coarse quantiser
//! (one readback of the probes), then the probed lists scanned by a
//! [`ListScanner`] and the results read back (or finished on the device).

use super::flat::{check_tensor, device_outputs, pad_rows, push_found};
use super::ivf::{check_nprobe, IvfIndex, IvfSearchParams};
use super::lists::{queries_per_list, ListScanner, Lists};
use super::plan::ivf_group;
use super::scan::{device_queries, Finish, Queries};
use super::{check_k, pad_score, DeviceSearchResult, SearchResult};
use crate::error::Result;

/// A search's queries as the caller gave them.
#[derive(Clone, Copy)]
enum Input<'a> {
    Host(&'a [f32]),
    Device(&'a crate::Tensor),
}

impl IvfIndex {
    /// The `k` best vectors for each of `queries` (`[m, dim]` row-major f32)
    /// among the index's `nprobe` lists nearest each query: `[m, k]` scores
    /// and ids, best first, padded with id −1 and score −∞ (+∞ for L2) as
    /// [`FlatIndex::search`](super::FlatIndex::search); ties go to the vector added first.
    ///
    /// Errors: untrained or `k` over [`MAX_K`](super::MAX_K)
    /// ([`Error::InvalidArgument`](crate::Error::InvalidArgument)); queries not of `dim` ([`Error::Shape`](crate::Error::Shape)).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        self.search_with(queries, k, IvfSearchParams::default())
    }

    /// [`search`](Self::search) with per-call parameters.
    ///
    /// Errors: as [`search`](Self::search); `nprobe` not in `1..=nlist`.
    pub fn search_with(
        &self,
        queries: &[f32],
        k: usize,
        params: IvfSearchParams,
    ) -> Result<SearchResult> {
        self.search_impl(Input::Host(queries), k, params, None)
    }

    /// [`search_with`](Self::search_with) over only the vectors whose id
    /// `allow` accepts, applied inside the list scan (a bitmap the kernel
    /// reads, as [`FlatIndex::search_filtered`](super::FlatIndex::search_filtered)); the quantiser is not
    /// filtered.
    pub fn search_filtered(
        &self,
        queries: &[f32],
        k: usize,
        params: IvfSearchParams,
        allow: impl Fn(u64) -> bool,
    ) -> Result<SearchResult> {
        let bits = self.ids.bitmap(allow);
        self.search_impl(Input::Host(queries), k, params, Some(&bits))
    }

    /// [`search_with`](Self::search_with) for queries that are a device
    /// tensor `[m, dim]` f32: quantised and scanned on the device (the
    /// probes and the results are read back; an L2 index also reads the
    /// query norms).
    ///
    /// Errors: [`Error::DType`](crate::Error::DType) unless f32, [`Error::Shape`](crate::Error::Shape) unless
    /// `[m, dim]`, [`Error::InvalidArgument`](crate::Error::InvalidArgument) for another context; as
    /// [`search_with`](Self::search_with).
    pub fn search_tensor(
        &self,
        queries: &crate::Tensor,
        k: usize,
        params: IvfSearchParams,
    ) -> Result<SearchResult> {
        check_tensor(
            &self.ctx,
            self.dim,
            "IvfIndex::search_tensor",
            "queries",
            "m",
            queries,
        )?;
        self.search_impl(Input::Device(queries), k, params, None)
    }

    /// [`search_tensor`](Self::search_tensor) with the results left on the
    /// device, as [`FlatIndex::search_device`](super::FlatIndex::search_device) leaves them: `[m, k]` f32
    /// scores and `[m, k, 2]` u32 ids (i64 halves); only the probes cross to
    /// the host.
    ///
    /// Errors: as [`search_tensor`](Self::search_tensor); outputs over one
    /// storage binding ([`Error::TooLarge`](crate::Error::TooLarge)).
    pub fn search_device(
        &self,
        queries: &crate::Tensor,
        k: usize,
        params: IvfSearchParams,
    ) -> Result<DeviceSearchResult> {
        const SD: &str = "IvfIndex::search_device";
        check_tensor(&self.ctx, self.dim, SD, "queries", "m", queries)?;
        let q = self.quantizer(SD)?;
        check_k(SD, k)?;
        let nprobe = params.nprobe.unwrap_or(self.opts.nprobe);
        check_nprobe(nprobe, self.nlist())?;
        let m = queries.shape()[0];
        let out = device_outputs(&self.ctx, SD, m, k)?;
        let pad_rows = |rows: std::ops::Range<usize>| -> Result<()> {
            let n = rows.len() * k;
            let pad = vec![pad_score(self.opts.metric); n];
            let (s, i) = (&out.scores, &out.ids);
            let at = (rows.start * k) as u64;
            let sb = bytemuck::cast_slice(&pad);
            self.ctx
                .write_buffer_ordered(SD, s.buffer(), s.offset() + at * 4, &[sb])?;
            let ib = vec![0xffu8; n * 8];
            self.ctx
                .write_buffer_ordered(SD, i.buffer(), i.offset() + at * 8, &[&ib])
        };
        let kk = k.min(self.len());
        if m == 0 || k == 0 {
            return Ok(out);
        }
        if kk == 0 {
            pad_rows(0..m)?;
            return Ok(out);
        }
        let probes = q.search_tensor(queries, nprobe)?.ids;
        let (qt, qnorm) = device_queries(self.store.codec(), queries)?;
        let scanner = self.scanner(kk, &probes, params, None)?;
        let table = self.ids.device_table(&self.ctx);
        let finish = Finish {
            op: SD,
            table: &table,
            qnorm: qnorm.as_ref(),
            scores: &out.scores,
            ids: &out.ids,
            k,
        };
        for batch in scanner.batches(&probes, nprobe)? {
            match scanner.scan(Queries::Device(&qt), &probes, nprobe, batch.clone())? {
                Some(list) => scanner.finish(&list, batch, &finish)?,
                None => pad_rows(batch)?,
            }
        }
        Ok(out)
    }

    /// The list scanner of a search for the top `kk` over `probes`.
    fn scanner(
        &self,
        kk: usize,
        probes: &[i64],
        params: IvfSearchParams,
        allow: Option<&[u32]>,
    ) -> Result<ListScanner<'_>> {
        let per_list = queries_per_list(probes);
        let group = ivf_group(self.ctx.profile(), params.group_queries, per_list);
        let lists = Lists {
            store: &self.store,
            starts: &self.starts,
            orders: &self.orders,
        };
        ListScanner::new(lists, kk, group, allow)
    }

    fn search_impl(
        &self,
        input: Input<'_>,
        k: usize,
        params: IvfSearchParams,
        allow: Option<&[u32]>,
    ) -> Result<SearchResult> {
        const S: &str = "IvfIndex::search";
        let q = self.quantizer(S)?;
        check_k(S, k)?;
        let nprobe = params.nprobe.unwrap_or(self.opts.nprobe);
        check_nprobe(nprobe, self.nlist())?;
        let m = match input {
            Input::Host(qs) => self.rows(S, "queries", qs)?,
            Input::Device(t) => t.shape()[0],
        };
        let mut res = SearchResult {
            m,
            k,
            scores: Vec::with_capacity(m * k),
            ids: Vec::with_capacity(m * k),
        };
        let kk = k.min(self.len());
        if m == 0 || kk == 0 || allow.is_some_and(|a| a.iter().all(|&w| w == 0)) {
            pad_rows(&mut res, m, self.opts.metric);
            return Ok(res);
        }
        let codec = self.store.codec();
        let (probes, host, qnorm, device) = match input {
            Input::Host(qs) => {
                let probes = q.search(qs, nprobe)?.ids;
                let (rows, norms) = codec.queries(qs);
                (probes, rows, norms, None)
            }
            Input::Device(t) => {
                let probes = q.search_tensor(t, nprobe)?.ids;
                let (qt, norms) = device_queries(codec, t)?;
                let norms = norms.map(|n| n.to_vec::<f32>()).transpose()?;
                (probes, Vec::new(), norms.unwrap_or_default(), Some(qt))
            }
        };
        let scanner = self.scanner(kk, &probes, params, allow)?;
        for batch in scanner.batches(&probes, nprobe)? {
            let queries = match &device {
                Some(t) => Queries::Device(t),
                None => Queries::Host(&host),
            };
            match scanner.scan(queries, &probes, nprobe, batch.clone())? {
                Some(list) => {
                    let found = scanner.read(&list, batch.len())?;
                    push_found(
                        &mut res,
                        &found,
                        batch,
                        kk,
                        &qnorm,
                        &self.ids,
                        self.opts.metric,
                    );
                }
                None => pad_rows(&mut res, batch.end, self.opts.metric),
            }
        }
        Ok(res)
    }
}
