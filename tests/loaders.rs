//! The demo's vector-file loader (`examples/common/vectors.rs`) on bad bytes:
//! every truncation of a small valid `.npy` and `.fvecs` file, random byte
//! flips and lying headers return errors (or, for flips that keep the file
//! valid, the right number of values), never a panic or a huge allocation.

mod common;

#[path = "../examples/common/vectors.rs"]
mod vectors;

use common::rng;
use rand::Rng;

fn npy(shape: &str, data: &[f32]) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    for v in data {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

fn fvecs(rows: &[&[f32]]) -> Vec<u8> {
    let mut b = Vec::new();
    for r in rows {
        b.extend_from_slice(&(r.len() as i32).to_le_bytes());
        for v in *r {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b
}

#[test]
fn valid_files_load() {
    let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let (v, d) = vectors::parse("x.npy", &npy("(3, 4)", &data)).unwrap();
    assert_eq!((v, d), (data.clone(), 4));
    let (v, d) = vectors::parse("x.fvecs", &fvecs(&[&data[..4], &data[4..8], &data[8..]])).unwrap();
    assert_eq!((v, d), (data, 4));
}

#[test]
fn truncations_flips_and_lying_headers_are_errors() {
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    let files = [
        ("x.npy", npy("(3, 4)", &data)),
        ("x.fvecs", fvecs(&[&data[..4], &data[4..8], &data[8..]])),
    ];
    for (name, bytes) in &files {
        for cut in 0..bytes.len() {
            // A truncated file may still be a valid smaller .fvecs (whole
            // records): then it must hold whole rows.
            if let Ok((v, d)) = vectors::parse(name, &bytes[..cut]) {
                assert!(
                    d > 0 && v.len() % d == 0 && v.len() <= data.len(),
                    "{name} cut at {cut}"
                );
            }
        }
        let mut rng = rng(&format!("flips {name}"));
        for _ in 0..2000 {
            let mut b = bytes.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            if let Ok((v, d)) = vectors::parse(name, &b) {
                assert!(
                    d > 0 && v.len() % d == 0 && v.len() * 4 <= b.len(),
                    "{name}: {b:?}"
                );
            }
        }
    }
    for shape in [
        "()",
        "(0, 4)",
        "(3, 0)",
        "(4,)",
        "(1000000000000, 1000000000000)",
        "(3, 5)",
        "(2, 2, 3)",
    ] {
        let e = vectors::parse("x.npy", &npy(shape, &data)).unwrap_err();
        assert!(e.starts_with(".npy"), "shape {shape}: {e}");
    }
    let e = vectors::parse("x.fvecs", &fvecs(&[&data[..4], &data[4..7], &data[7..]])).unwrap_err();
    assert!(e.starts_with(".fvecs"), "{e}");
    let mut neg = fvecs(&[&data[..4]]);
    neg[..4].copy_from_slice(&(-4i32).to_le_bytes());
    assert!(vectors::parse("x.fvecs", &neg).is_err());
    assert!(vectors::parse("x.csv", b"1,2,3").is_err());
}
