//! ggml block decoders on hand-built blocks, MLX affine repacking, and MLX's bit packing.
#![allow(clippy::needless_range_loop, clippy::excessive_precision)]

use gomlx::models::gguf::quants::{decode, dequantize, pack_bits, unpack_bits, TensorData};
use gomlx::models::gguf::GgmlType;

fn h(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

fn same(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(x == y, "element {i}: {x} != {y}");
    }
}

/// Decoded values equal `expect`, and the affine repacking dequantises to the same floats.
fn check(ty: GgmlType, block: &[u8], expect: &[f32], bits: Option<u32>) {
    same(&dequantize(ty, block, expect.len()).unwrap(), expect);
    let d = decode(ty, block, &[1, expect.len()]).unwrap();
    match (&d, bits) {
        (TensorData::Affine { bits: b, group_size, scales, .. }, Some(bits)) => {
            assert_eq!(*b, bits);
            assert_eq!(*group_size, 32);
            assert_eq!(scales.len(), expect.len() / 32);
        }
        (TensorData::Float { .. }, None) => {}
        _ => panic!("{ty}: unexpected representation {d:?}"),
    }
    same(&d.dequantize(), expect);
}

#[test]
fn q4_0() {
    // d = 0.5; qs[j] = j (low nibble, values 0..16) | (15 - j) << 4 (high nibble, values 16..32).
    let mut b = h(0.5).to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut e: Vec<f32> = (0..16).map(|j| (j as f32 - 8.0) * 0.5).collect();
    e.extend((0..16).map(|j| ((15 - j) as f32 - 8.0) * 0.5));
    assert_eq!(e[0], -4.0);
    assert_eq!(e[16], 3.5);
    check(GgmlType::Q4_0, &b, &e, Some(4));
}

#[test]
fn q4_1() {
    // d = 0.25, m = -1; same nibbles: x = 0.25 q - 1.
    let mut b = h(0.25).to_vec();
    b.extend(h(-1.0));
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut e: Vec<f32> = (0..16).map(|j| j as f32 * 0.25 - 1.0).collect();
    e.extend((0..16).map(|j| (15 - j) as f32 * 0.25 - 1.0));
    assert_eq!(e[31], -1.0);
    check(GgmlType::Q4_1, &b, &e, Some(4));
}

/// qh with bit k set when k % 3 == 0.
fn qh_pattern() -> u32 {
    (0..32).filter(|k| k % 3 == 0).fold(0u32, |a, k| a | (1 << k))
}

#[test]
fn q5_0() {
    // d = 2; 5th bit of value k is bit k of qh; x = 2 (q - 16).
    let qh = qh_pattern();
    let mut b = h(2.0).to_vec();
    b.extend(qh.to_le_bytes());
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let hi = |k: usize| if k.is_multiple_of(3) { 16 } else { 0 };
    let mut e: Vec<f32> = (0..16).map(|j| ((j + hi(j)) as f32 - 16.0) * 2.0).collect();
    e.extend((0..16).map(|j| (((15 - j) + hi(j + 16)) as f32 - 16.0) * 2.0));
    assert_eq!(e[0], 0.0); // q = 0 | 16
    assert_eq!(e[1], -30.0); // q = 1
    check(GgmlType::Q5_0, &b, &e, Some(5));
}

#[test]
fn q5_1() {
    let qh = qh_pattern();
    let mut b = h(0.5).to_vec();
    b.extend(h(0.125));
    b.extend(qh.to_le_bytes());
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let hi = |k: usize| if k.is_multiple_of(3) { 16 } else { 0 };
    let mut e: Vec<f32> = (0..16).map(|j| (j + hi(j)) as f32 * 0.5 + 0.125).collect();
    e.extend((0..16).map(|j| ((15 - j) + hi(j + 16)) as f32 * 0.5 + 0.125));
    check(GgmlType::Q5_1, &b, &e, Some(5));
}

#[test]
fn q8_0() {
    // d = 1/16; qs = -128, -120, ..., 120.
    let mut b = h(0.0625).to_vec();
    b.extend((0..32).map(|i| (i * 8 - 128) as i8 as u8));
    let e: Vec<f32> = (0..32).map(|i| (i * 8 - 128) as f32 * 0.0625).collect();
    assert_eq!(e[0], -8.0);
    check(GgmlType::Q8_0, &b, &e, Some(8));
}

// Six-bit scales and mins of the eight 32-element sub-blocks; values above 15 exercise the
// high bits that sub-blocks 4-7 keep in bytes 0-7.
const SC: [u8; 8] = [1, 2, 3, 4, 17, 33, 50, 63];
const MN: [u8; 8] = [0, 5, 10, 63, 16, 31, 47, 62];

fn k_scales() -> Vec<u8> {
    let mut s = vec![0u8; 12];
    for j in 0..4 {
        s[j] = SC[j] | ((SC[j + 4] >> 4) << 6);
        s[j + 4] = MN[j] | ((MN[j + 4] >> 4) << 6);
        s[j + 8] = (SC[j + 4] & 0x0F) | ((MN[j + 4] & 0x0F) << 4);
    }
    s
}

#[test]
fn k_scale_packing() {
    let s = k_scales();
    for j in 0..8 {
        assert_eq!(gomlx::models::gguf::quants::k_scale_min(&s, j), (SC[j], MN[j]));
    }
}

#[test]
fn q4_k() {
    let (d, dmin) = (0.5f32, 0.25f32);
    let mut b = h(d).to_vec();
    b.extend(h(dmin));
    b.extend(k_scales());
    // 4 chunks of 32 bytes: low nibble -> sub-block 2c, high nibble -> sub-block 2c+1.
    for _c in 0..4 {
        b.extend((0..32u8).map(|l| (l % 16) | ((15 - l % 16) << 4)));
    }
    assert_eq!(b.len(), 144);
    let mut e = Vec::new();
    for c in 0..4 {
        for (sub, high) in [(2 * c, false), (2 * c + 1, true)] {
            for l in 0..32u32 {
                let q = if high { 15 - l % 16 } else { l % 16 };
                e.push(d * SC[sub] as f32 * q as f32 - dmin * MN[sub] as f32);
            }
        }
    }
    // Sub-block 7, l = 0: q = 15, 0.5*63*15 - 0.25*62.
    assert_eq!(e[224], 0.5 * 63.0 * 15.0 - 0.25 * 62.0);
    check(GgmlType::Q4_K, &b, &e, Some(4));
}

#[test]
fn q5_k() {
    let (d, dmin) = (0.125f32, 1.5f32);
    let qh: Vec<u8> = (0..32u32).map(|l| (l * 37 + 11) as u8).collect();
    let mut b = h(d).to_vec();
    b.extend(h(dmin));
    b.extend(k_scales());
    b.extend(&qh);
    for _c in 0..4 {
        b.extend((0..32u8).map(|l| (l % 16) | ((15 - l % 16) << 4)));
    }
    assert_eq!(b.len(), 176);
    let mut e = Vec::new();
    for c in 0..4 {
        for (sub, high) in [(2 * c, false), (2 * c + 1, true)] {
            for l in 0..32usize {
                // Bit `sub` of qh[l] is the 5th bit of element l of sub-block `sub`.
                let lo = if high { 15 - l % 16 } else { l % 16 };
                let q = lo + if (qh[l] >> sub) & 1 == 1 { 16 } else { 0 };
                e.push(d * SC[sub] as f32 * q as f32 - dmin * MN[sub] as f32);
            }
        }
    }
    check(GgmlType::Q5_K, &b, &e, Some(5));
}

#[test]
fn q6_k() {
    // ql[128], qh[64], scales[16] (int8), d. Element 128h + 32k + l (k = 0..4, l = 0..32) has
    // low 4 bits from ql[64h + l + 32(k%2)] (low nibble for k < 2, high for k >= 2), high 2 bits
    // from qh[32h + l] bits 2k..2k+2, scale scales[8h + l/16 + 2k]; x = d * scale * (q - 32).
    let d = 0.5f32;
    let ql: Vec<u8> = (0..128u32).map(|i| (i * 7 + 3) as u8).collect();
    let qh: Vec<u8> = (0..64u32).map(|i| (i * 29 + 5) as u8).collect();
    let sc: Vec<i8> = (0..16).map(|i| (i as i8 - 8) * 3).collect();
    let mut b = ql.clone();
    b.extend(&qh);
    b.extend(sc.iter().map(|&s| s as u8));
    b.extend(h(d));
    assert_eq!(b.len(), 210);
    let mut e = vec![0f32; 256];
    for hh in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let byte = ql[64 * hh + l + 32 * (k % 2)];
                let lo = if k < 2 { byte & 0x0F } else { byte >> 4 };
                let hi = (qh[32 * hh + l] >> (2 * k)) & 3;
                let q = (lo | (hi << 4)) as i32 - 32;
                let s = sc[8 * hh + l / 16 + 2 * k];
                e[128 * hh + 32 * k + l] = d * s as f32 * q as f32;
            }
        }
    }
    check(GgmlType::Q6_K, &b, &e, None);
}

#[test]
fn floats() {
    let b: Vec<u8> = [1.0f32, -2.5, 3.25e-3].iter().flat_map(|v| v.to_le_bytes()).collect();
    check(GgmlType::F32, &b, &[1.0, -2.5, 3.25e-3], None);
    // f16: 0x3C00 = 1, 0xC000 = -2, 0x3555 = 0.333251953125, 0x7BFF = 65504.
    let b: Vec<u8> = [0x3C00u16, 0xC000, 0x3555, 0x7BFF].iter().flat_map(|v| v.to_le_bytes()).collect();
    check(GgmlType::F16, &b, &[1.0, -2.0, 0.333251953125, 65504.0], None);
    // bf16: 0x3F80 = 1, 0x4049 = 3.140625, 0xC2F7 = -123.5.
    let b: Vec<u8> = [0x3F80u16, 0x4049, 0xC2F7].iter().flat_map(|v| v.to_le_bytes()).collect();
    check(GgmlType::BF16, &b, &[1.0, 3.140625, -123.5], None);
}

/// A multi-row tensor of random-looking blocks: repacking is lossless and row operations on
/// packed data match the same operations on floats.
#[test]
fn affine_rows_match_floats() {
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        let (block, size) = ty.block();
        let (rows, cols) = (6usize, 2 * block.max(64));
        let nblocks = rows * cols / block;
        let mut state = 0x1234_5678u32;
        let mut bytes = Vec::with_capacity(nblocks * size);
        for _ in 0..nblocks * size {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            bytes.push((state >> 24) as u8);
        }
        // Keep the f16 scales finite and modest: overwrite them with small values.
        for blk in bytes.chunks_exact_mut(size) {
            let offs: &[usize] = match ty {
                GgmlType::Q6_K => &[208],
                GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
                _ => &[0, 2],
            };
            for (k, &o) in offs.iter().enumerate() {
                let v = 0.01 * (1.0 + (blk[o + 1] % 7) as f32) * if k == 1 { -1.0 } else { 1.0 };
                blk[o..o + 2].copy_from_slice(&h(v));
            }
        }
        let direct = dequantize(ty, &bytes, rows * cols).unwrap();
        let mut d = decode(ty, &bytes, &[rows, cols]).unwrap();
        same(&d.dequantize(), &direct);
        let perm = [3, 0, 5, 1, 4, 2];
        d.permute_rows(&perm).unwrap();
        d.add_scalar(-1.0);
        let expect: Vec<f32> = perm.iter().flat_map(|&r| direct[r * cols..(r + 1) * cols].iter().map(|v| v - 1.0)).collect();
        let got = d.dequantize();
        for (i, (x, y)) in got.iter().zip(&expect).enumerate() {
            // Affine: s*q + (b - 1) vs (s*q + b) - 1 may round differently in the last bit.
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{ty} element {i}: {x} vs {y}");
        }
    }
}

/// MLX 0.32.2 packs `bits`-wide values into one little-endian bit stream of u32 words. These
/// words are what `mlx.core.quantize` returned for a 32-element row (group 32), and `q` the
/// values it encodes (`(w - bias) / scale`).
#[test]
fn mlx_bit_packing() {
    let cases: &[(u32, &[u32], &[u8])] = &[
        (3, &[241348359, 2936955567, 1655639650], &[7, 0, 4, 7, 2, 5, 0, 3, 6, 1, 4, 7, 2, 5, 0, 3, 6, 1, 4, 7, 2, 5, 0, 3, 6, 1, 4, 7, 2, 5, 0, 3]),
        (
            4,
            &[2958750735, 953318422, 2958750878, 953318422],
            &[15, 0, 4, 15, 10, 5, 0, 11, 6, 1, 12, 7, 2, 13, 8, 3, 14, 9, 4, 15, 10, 5, 0, 11, 6, 1, 12, 7, 2, 13, 8, 3],
        ),
        (
            5,
            &[178769951, 598882008, 2435751482, 643574703, 437988336],
            &[31, 0, 20, 15, 10, 5, 0, 27, 22, 17, 12, 7, 2, 29, 24, 19, 14, 9, 4, 31, 26, 21, 16, 11, 6, 1, 28, 23, 18, 13, 8, 3],
        ),
        (
            6,
            &[1790918719, 3293998601, 3482272284, 1518226030, 3225824517, 2391503583],
            &[63, 0, 52, 47, 42, 37, 32, 27, 22, 17, 12, 7, 2, 61, 56, 51, 46, 41, 36, 31, 26, 21, 16, 11, 6, 1, 60, 55, 50, 45, 40, 35],
        ),
        (
            8,
            &[4025745663, 3688949226, 3352089046, 3015228866, 2678368686, 2341508506, 2004648326, 1667788146],
            &[
                255, 0, 244, 239, 234, 229, 224, 219, 214, 209, 204, 199, 194, 189, 184, 179, 174, 169, 164, 159, 154, 149, 144, 139, 134, 129, 124, 119, 114,
                109, 104, 99,
            ],
        ),
    ];
    for &(bits, words, q) in cases {
        assert_eq!(pack_bits(q, bits), words, "{bits} bits");
        assert_eq!(unpack_bits(words, bits, 32), q, "{bits} bits");
    }
    // 4 bits, spelled out: value i sits at bits [4i, 4i+4).
    assert_eq!(pack_bits(&[1, 2, 3, 4, 5, 6, 7, 8], 4), vec![0x8765_4321]);
}

#[test]
fn unsupported_types_are_named() {
    let e = dequantize(GgmlType::IQ2_XXS, &[0; 66], 256).unwrap_err().to_string();
    assert!(e.contains("IQ2_XXS") && e.contains("not supported"), "{e}");
    let e = decode(GgmlType::IQ3_S, &[0; 110], &[1, 256]).unwrap_err().to_string();
    assert!(e.contains("IQ3_S") && e.contains("Q3_K") && e.contains("MXFP4"), "{e}");
}

/// Q2_K, Q3_K, IQ4_NL, IQ4_XS and MXFP4 on pseudo-random blocks equal gguf-py's reference decoders
/// (tests/fixtures/gguf/quants_reference.json, scripts/gguf-oracle/make_quant_references.py), bit for bit.
#[test]
fn low_bit_types_match_gguf_py() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf/quants_reference.json");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let types = r["types"].as_object().unwrap();
    assert_eq!(types.len(), 5);
    for (name, case) in types {
        let ty = GgmlType::DECODABLE.iter().copied().find(|t| t.name() == name).unwrap_or_else(|| panic!("{name} is not decodable"));
        let hex = case["bytes"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let expect: Vec<f32> = case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(expect.len(), case["elements"].as_u64().unwrap() as usize);
        assert!(expect.iter().any(|v| *v != 0.0), "{name}: an all-zero reference");
        let n = expect.len();
        for (i, (x, y)) in dequantize(ty, &bytes, n).unwrap().iter().zip(&expect).enumerate() {
            assert!(x.to_bits() == y.to_bits(), "{name} element {i}: {x} != {y} (gguf-py)");
        }
        let (block, _) = ty.block();
        let d = decode(ty, &bytes, &[n / block, block]).unwrap();
        assert!(matches!(d, TensorData::Float { .. }), "{name}: dequantised to float");
        same(&d.dequantize(), &expect);
    }
}

#[test]
fn q2_k() {
    // Sub-block j: scale nibble j (d = 0.5) and min nibble 1 (dmin = 0.25); all four 2-bit
    // fields of qs byte k are k % 4, so element e (byte 32*(e/128) + e%32) has q = (e % 32) % 4.
    let mut b: Vec<u8> = (0..16u8).map(|j| j | (1 << 4)).collect();
    b.extend((0..64u8).map(|k| (k % 4) | ((k % 4) << 2) | ((k % 4) << 4) | ((k % 4) << 6)));
    b.extend(h(0.5));
    b.extend(h(0.25));
    let e: Vec<f32> = (0..256).map(|e| 0.5 * (e / 16) as f32 * ((e % 32) % 4) as f32 - 0.25).collect();
    assert_eq!(e[16 * 3 + 3], 0.5 * 3.0 * 3.0 - 0.25);
    check(GgmlType::Q2_K, &b, &e, None);
}

#[test]
fn q3_k() {
    // hmask: bit e/32 of byte e%32 set for even e/32 (no offset), clear for odd (-4).
    // qs: every 2-bit field = 2. Scales: all sixteen 6-bit values 33 (low nibble 1, high bits 2) so
    // sc - 32 = 1; d = 0.5. Element e: 0.5 * (2 - (e/32 odd ? 4 : 0)).
    let mut b = vec![0x55u8; 32];
    b.extend(std::iter::repeat_n(0xAAu8, 64));
    b.extend(std::iter::repeat_n(0x11u8, 8));
    b.extend(std::iter::repeat_n(0xAAu8, 4));
    b.extend(h(0.5));
    let e: Vec<f32> = (0..256).map(|e| 0.5 * if (e / 32) % 2 == 0 { 2.0 } else { -2.0 }).collect();
    check(GgmlType::Q3_K, &b, &e, None);
}

#[test]
fn iq4_nl() {
    // qs[j] = j | (15 - j) << 4, d = 2: elements 0..16 are 2 * table[j], 16..32 are 2 * table[15 - j].
    let table = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
    let mut b = h(2.0).to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut e: Vec<f32> = (0..16).map(|j| 2.0 * table[j] as f32).collect();
    e.extend((0..16).map(|j| 2.0 * table[15 - j] as f32));
    assert_eq!((e[0], e[16]), (-254.0, 226.0));
    check(GgmlType::IQ4_NL, &b, &e, None);
}

#[test]
fn iq4_xs() {
    // Sub-block ib gets the 6-bit scale 32 + ib (low nibble in scales_l, high 2 bits in scales_h),
    // so d * (ls - 32) = 0.5 * ib; all codes 8 (table value 1) except low nibble 0 in sub-block 7 (-127).
    let ls: Vec<u16> = (0..8).map(|ib| 32 + ib).collect();
    let sh: u16 = (0..8).fold(0, |a, ib| a | ((ls[ib] >> 4) & 3) << (2 * ib));
    let mut b = h(0.5).to_vec();
    b.extend(sh.to_le_bytes());
    b.extend((0..4).map(|i| (ls[2 * i] & 15) as u8 | (((ls[2 * i + 1] & 15) as u8) << 4)));
    for ib in 0..8 {
        b.extend(std::iter::repeat_n(if ib == 7 { 0x80u8 } else { 0x88 }, 16));
    }
    let e: Vec<f32> = (0..256).map(|e| 0.5 * (e / 32) as f32 * if e / 32 == 7 && e % 32 < 16 { -127.0 } else { 1.0 }).collect();
    assert_eq!(e[7 * 32], -444.5);
    check(GgmlType::IQ4_XS, &b, &e, None);
}

#[test]
fn mxfp4() {
    // e = 128: scale 2; the codes 0..16 in the low nibbles, 15..0 in the high nibbles. FP4 (e2m1)
    // values: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives.
    let fp4 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];
    let mut b = vec![128u8];
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut e: Vec<f32> = (0..16).map(|j| 2.0 * fp4[j]).collect();
    e.extend((0..16).map(|j| 2.0 * fp4[15 - j]));
    assert_eq!((e[7], e[16]), (12.0, -12.0));
    check(GgmlType::MXFP4, &b, &e, None);
    // The smallest exponents are subnormal halves: e = 0 gives 2^-128, e = 1 gives 2^-127.
    assert_eq!(gomlx::models::gguf::quants::e8m0_half(0), 2f32.powi(-128));
    assert_eq!(gomlx::models::gguf::quants::e8m0_half(1), 2f32.powi(-127));
    assert_eq!(gomlx::models::gguf::quants::e8m0_half(127), 0.5);
}

#[test]
fn the_bytes_of_a_part_of_a_tensor() {
    use gomlx::models::gguf::quants::window;
    // Q4_K rows of 512 values: two blocks of 144 bytes, 288 bytes a row.
    assert_eq!(window(GgmlType::Q4_K, &[3, 512], 0, 1, 2).unwrap(), vec![288..864]);
    assert_eq!(window(GgmlType::Q4_K, &[3, 512], 1, 256, 256).unwrap(), vec![144..288, 432..576, 720..864]);
    // A stack of experts [4, 2, 64] in Q8_0 (two 34-byte blocks a row): experts 2..4.
    assert_eq!(window(GgmlType::Q8_0, &[4, 2, 64], 0, 2, 2).unwrap(), vec![272..544]);
    // F16 columns 3..5 of 2 rows of 8; a vector's entries 2..6 of F32.
    assert_eq!(window(GgmlType::F16, &[2, 8], 1, 3, 2).unwrap(), vec![6..10, 22..26]);
    assert_eq!(window(GgmlType::F32, &[8], 0, 2, 4).unwrap(), vec![8..24]);
    let e = window(GgmlType::Q4_K, &[3, 512], 1, 128, 256).unwrap_err().to_string();
    assert!(e.contains("columns 128..384 would cut its Q4_K blocks of 256 values"), "{e}");
    let e = window(GgmlType::Q8_0, &[3, 64], 0, 2, 2).unwrap_err().to_string();
    assert!(e.contains("entries 2..4 of axis 0 are past its 3"), "{e}");
    let e = window(GgmlType::F32, &[2, 3, 4], 1, 0, 1).unwrap_err().to_string();
    assert!(e.contains("only the first or the last axis"), "{e}");
}
