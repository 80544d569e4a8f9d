//! The id map (FAISS's `IndexIDMap`): the `u64` id of each storage row, the
//! row of each id, the id `add` gives next, the bookkeeping of removals, and
//! the ids on the device for results that stay there. It knows nothing of
//! how rows are stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::context::{Context, Tracked};
use crate::error::{Error, Result};

/// Largest id a vector can have: results carry ids as i64, −1 marking a
/// missing result.
pub const MAX_ID: u64 = i64::MAX as u64;

/// `n` ids from `next` on, none past [`MAX_ID`].
pub(crate) fn fresh_ids(next: u64, n: usize, op: &'static str) -> Result<Vec<u64>> {
    match next.checked_add(n as u64).filter(|&e| e <= MAX_ID + 1) {
        Some(end) => Ok((next..end).collect()),
        None => Err(Error::InvalidArgument {
            op,
            detail: format!("{n} more ids after {next} pass the largest id {MAX_ID}"),
        }),
    }
}

/// Ids of storage rows `0..len`, in storage order.
#[derive(Debug, Default)]
pub(crate) struct IdMap {
    /// The id of each stored row, in storage order.
    ids: Vec<u64>,
    /// Row of each id.
    rows_of: HashMap<u64, usize>,
    /// The id `add` gives next: one past the largest id ever stored.
    next_id: u64,
    /// `ids` on the device (i64 as two u32 per row) for device results;
    /// built on first use, dropped whenever the ids change.
    table: Mutex<Option<Arc<Tracked>>>,
}

impl IdMap {
    /// The ids, in storage order.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The storage row of `id`, if it is stored.
    pub fn row_of(&self, id: u64) -> Option<usize> {
        self.rows_of.get(&id).copied()
    }

    /// The id of storage row `row`.
    pub fn id_at(&self, row: usize) -> Option<u64> {
        self.ids.get(row).copied()
    }

    /// The id `add` gives next.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Ids for `n` new rows: `given` (checked: `n` of them, each at most
    /// [`MAX_ID`], none stored already or repeated), else the next free ones.
    /// Nothing is recorded until [`commit`](Self::commit).
    pub fn new_ids(&self, n: usize, given: Option<&[u64]>, op: &'static str) -> Result<Vec<u64>> {
        let Some(given) = given else {
            return fresh_ids(self.next_id, n, op);
        };
        if given.len() != n {
            return Err(Error::Shape {
                op,
                detail: format!("{n} vectors but {} ids", given.len()),
            });
        }
        let mut seen = HashSet::with_capacity(n);
        for &id in given {
            if id > MAX_ID {
                return Err(Error::InvalidArgument {
                    op,
                    detail: format!("id {id} is over {MAX_ID} (results carry ids as i64)"),
                });
            }
            if self.rows_of.contains_key(&id) || !seen.insert(id) {
                return Err(Error::InvalidArgument {
                    op,
                    detail: format!("id {id} is already in the index or repeated in the call"),
                });
            }
        }
        Ok(given.to_vec())
    }

    /// Records the ids of rows just appended, in order.
    pub fn commit(&mut self, ids: &[u64]) {
        self.forget_table();
        for &id in ids {
            self.rows_of.insert(id, self.ids.len());
            self.next_id = self.next_id.max(id + 1);
            self.ids.push(id);
        }
    }

    /// Sets the id `add` gives next (a loaded index continues where it
    /// stopped); at least one past every stored id, which the caller checked.
    pub fn set_next_id(&mut self, next: u64) {
        self.next_id = next;
    }

    /// The storage rows of those of `ids` that are stored: sorted, each once.
    pub fn rows_of_ids(&self, ids: &[u64]) -> Vec<usize> {
        let mut rows: Vec<usize> = ids.iter().filter_map(|&id| self.row_of(id)).collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// Drops the ids of storage rows `gone` (sorted, each once): the rows
    /// after them move up, as the store compacts them.
    pub fn remove_rows(&mut self, gone: &[usize]) {
        let mut g = gone.iter().peekable();
        let mut row = 0;
        self.ids.retain(|_| {
            let drop = g.next_if(|&&r| r == row).is_some();
            row += 1;
            !drop
        });
        self.rows_of = self
            .ids
            .iter()
            .enumerate()
            .map(|(r, &id)| (id, r))
            .collect();
        self.forget_table();
    }

    /// Removes every id; the next `add` starts again from id 0.
    pub fn clear(&mut self) {
        self.forget_table();
        self.ids.clear();
        self.rows_of.clear();
        self.next_id = 0;
    }

    /// A bitmap over storage rows (bit `r % 32` of word `r / 32`, at least
    /// one word) of the rows whose id `allow` accepts.
    pub fn bitmap(&self, allow: impl Fn(u64) -> bool) -> Vec<u32> {
        let mut bits = vec![0u32; self.ids.len().div_ceil(32).max(1)];
        for (r, &id) in self.ids.iter().enumerate() {
            if allow(id) {
                bits[r / 32] |= 1 << (r % 32);
            }
        }
        bits
    }

    /// The ids on the device, one i64 (two u32) per storage row: built on
    /// first use after a change, then shared by every device search.
    pub fn device_table(&self, ctx: &Context) -> Arc<Tracked> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table
            .get_or_insert_with(|| {
                Arc::new(ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("index id table"),
                    contents: bytemuck::cast_slice(&self.ids),
                    usage: wgpu::BufferUsages::STORAGE,
                }))
            })
            .clone()
    }

    /// The device id table no longer matches the ids.
    fn forget_table(&mut self) {
        *self.table.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
