//! Decoding with a KV cache (`Gpt2::extend` over a `Gpt2Cache`): several
//! sequences of different lengths, chunked prefill then one token a step,
//! contiguous and paged caches; after every call each sequence's new logits
//! against the f64 reference forward over all its tokens so far (relative L2
//! 1e-5, the forward test's bound) and against the device's own full causal
//! forward (2e-5: two f32 results each within 1e-5). Bad input and caches
//! too small as typed errors that leave the cache as it was.
#![cfg(feature = "models")]

mod common;

use std::collections::HashMap;

use common::*;
use flashdot::models::{CacheLayout, Gpt2, Gpt2Cache, Gpt2Config};
use flashdot::reference::gpt2 as reference;
use flashdot::{verify, Error};
use rand::Rng;

const VOCAB: usize = 29;
const POSITIONS: usize = 24;

/// Width 15, 3 heads of 5, 2 blocks; init std 0.3 (peaked attention, so
/// that a key seen or missed changes the logits).
fn model() -> Gpt2 {
    let mut c = Gpt2Config::new(VOCAB, POSITIONS, 15, 2, 3);
    c.initializer_range = 0.3;
    Gpt2::random(&ctx(), &c, seed()).unwrap()
}

/// Runs `calls` (new tokens per sequence, per call) through `extend` and
/// checks every call's real rows.
fn decode_matches_full_forward(case: &str, layout: CacheLayout, prompts: &[usize], chunk: usize) {
    let m = model();
    let weights: HashMap<String, Vec<f32>> = m
        .tensors()
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.data))
        .collect();
    let mut r = rng(case);
    let batch = prompts.len();
    let mut cache = m.cache(batch, 20, layout).unwrap();
    let mut seqs: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let prompts: Vec<Vec<u32>> = prompts
        .iter()
        .map(|&n| (0..n).map(|_| r.random_range(0..VOCAB as u32)).collect())
        .collect();
    // Chunked prefill of each prompt, then 5 decode steps of one token each.
    let mut calls: Vec<Vec<Vec<u32>>> = Vec::new();
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    for start in (0..longest).step_by(chunk) {
        calls.push(
            prompts
                .iter()
                .map(|p| p[start.min(p.len())..(start + chunk).min(p.len())].to_vec())
                .collect(),
        );
    }
    for _ in 0..5 {
        calls.push(
            (0..batch)
                .map(|_| vec![r.random_range(0..VOCAB as u32)])
                .collect(),
        );
    }
    for (n, call) in calls.iter().enumerate() {
        let slices: Vec<&[u32]> = call.iter().map(Vec::as_slice).collect();
        let logits = m.extend(&mut cache, &slices).unwrap();
        let s = logits.shape()[1];
        let logits = logits.to_vec::<f32>().unwrap();
        for (b, new) in call.iter().enumerate() {
            let before = seqs[b].len();
            seqs[b].extend_from_slice(new);
            assert_eq!(cache.lens()[b] as usize, seqs[b].len());
            if new.is_empty() {
                continue;
            }
            let len = seqs[b].len();
            let got = &logits[b * s * VOCAB..][..new.len() * VOCAB];
            let f = reference::forward(&weights, m.config(), &seqs[b], 1, len);
            let want = &f.logits[before * VOCAB..len * VOCAB];
            let r = verify::compare(got, want);
            let full = m
                .forward(&seqs[b], 1, len)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let full: Vec<f64> = full[before * VOCAB..].iter().map(|&x| x as f64).collect();
            let r_full = verify::compare(got, &full);
            assert!(
                r.passes(1e-5) && r_full.passes(2e-5),
                "{case} call {n} sequence {b} (tokens {before}..{len}): against f64 {r}; \
                 against the full forward {r_full}"
            );
        }
    }
}

#[test]
fn decode_logits_equal_the_full_forward() {
    let paged = CacheLayout::Paged {
        page_size: 3,
        pages: 17,
    };
    for (name, layout) in [("contiguous", CacheLayout::Contiguous), ("paged", paged)] {
        decode_matches_full_forward(&format!("{name}, 1 sequence"), layout, &[7], 3);
        decode_matches_full_forward(&format!("{name}, 3 sequences"), layout, &[5, 1, 9], 4);
    }
}

fn unchanged(cache: &Gpt2Cache, lens: &[u32], free: Option<usize>) {
    assert_eq!(cache.lens(), lens);
    assert_eq!(cache.free_pages(), free);
}

#[test]
fn decode_bad_input_is_a_typed_error() {
    let m = model();
    let mut cache = m.cache(2, 10, CacheLayout::Contiguous).unwrap();
    m.extend(&mut cache, &[&[1, 2, 3], &[4]]).unwrap();
    let lens = cache.lens().to_vec();
    let e = m.extend(&mut cache, &[&[1]]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = m.extend(&mut cache, &[&[1], &[VOCAB as u32]]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("sequence 1"),
        "{e}"
    );
    // Three held + eight padded rows pass the capacity of 10.
    let e = m.extend(&mut cache, &[&[1], &[2; 8]]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("too small"),
        "{e}"
    );
    unchanged(&cache, &lens, None);

    // A prompt longer than the context.
    let mut full = m.cache(1, POSITIONS, CacheLayout::Contiguous).unwrap();
    let e = m.extend(&mut full, &[&[1; POSITIONS + 1]]).unwrap_err();
    assert!(
        matches!(e, Error::Shape { .. }) && e.to_string().contains("n_positions"),
        "{e}"
    );
    m.extend(&mut full, &[&[1; POSITIONS]]).unwrap();
    let e = m.extend(&mut full, &[&[1]]).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");

    // A pool without the pages a call needs: nothing taken. (The shorter
    // sequence's padding rows take pages too: 2 + 2 of the 4.)
    let layout = CacheLayout::Paged {
        page_size: 4,
        pages: 4,
    };
    let mut paged = m.cache(2, 12, layout).unwrap();
    m.extend(&mut paged, &[&[1; 5], &[2]]).unwrap();
    assert_eq!(paged.free_pages(), Some(0));
    let e = m.extend(&mut paged, &[&[1; 4], &[2; 4]]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("pool"),
        "{e}"
    );
    unchanged(&paged, &[5, 1], Some(0));
    paged.reset();
    unchanged(&paged, &[0, 0], Some(4));
    m.extend(&mut paged, &[&[1; 6], &[2; 6]]).unwrap();

    // Caches: of another model, empty, past the context, pages of 0 rows.
    let mut c = m.config().clone();
    c.n_layer = 1;
    let other = Gpt2::random(m.context(), &c, 1).unwrap();
    let e = other.extend(&mut cache, &[&[1], &[2]]).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    for (b, cap) in [(0, 4), (1, 0), (1, POSITIONS + 1)] {
        let e = m.cache(b, cap, CacheLayout::Contiguous).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
    let bad = CacheLayout::Paged {
        page_size: 0,
        pages: 4,
    };
    assert!(matches!(
        m.cache(1, 4, bad),
        Err(Error::InvalidArgument { .. })
    ));
    // No new tokens: empty logits, nothing changes.
    let l = m.extend(&mut cache, &[&[], &[]]).unwrap();
    assert_eq!(l.shape(), &[2, 0, VOCAB]);
    unchanged(&cache, &lens, None);
}
