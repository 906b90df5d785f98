//! Decoders for ggml's block formats, and repacking into MLX affine quantisation.
//!
//! Block layouts (from ggml's `ggml-common.h`; all fields little-endian, `half` = IEEE f16):
//!
//! | type | elements | bytes | layout |
//! | --- | --- | --- | --- |
//! | Q4_0 | 32 | 18 | `d: half, qs: [u8; 16]`; `x = d * (q - 8)`, q = low nibbles (values 0..16) then high nibbles (16..32) |
//! | Q4_1 | 32 | 20 | `d: half, m: half, qs: [u8; 16]`; `x = d * q + m` |
//! | Q5_0 | 32 | 22 | `d: half, qh: u32, qs: [u8; 16]`; 5th bit of value j is bit j of qh; `x = d * (q - 16)` |
//! | Q5_1 | 32 | 24 | `d: half, m: half, qh: u32, qs: [u8; 16]`; `x = d * q + m` |
//! | Q8_0 | 32 | 34 | `d: half, qs: [i8; 32]`; `x = d * q` |
//! | Q4_K | 256 | 144 | `d: half, dmin: half, scales: [u8; 12], qs: [u8; 128]`; eight sub-blocks of 32 with 6-bit scale `sc` and min `m`: `x = d*sc * q - dmin*m` |
//! | Q5_K | 256 | 176 | `d, dmin, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; as Q4_K with a 5th bit from qh |
//! | Q6_K | 256 | 210 | `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: half`; sixteen sub-blocks of 16: `x = d * sc * (q - 32)` |
//! | Q2_K | 256 | 84 | `scales: [u8; 16], qs: [u8; 64], d: half, dmin: half`; sixteen sub-blocks of 16, 2-bit q: `x = d*(sc & 15) * q - dmin*(sc >> 4)` |
//! | Q3_K | 256 | 110 | `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: half`; sixteen sub-blocks of 16 with 6-bit signed scales: `x = d*(sc - 32) * (q - 4*!h)` |
//! | IQ4_NL | 32 | 18 | `d: half, qs: [u8; 16]`; `x = d * IQ4_VALUES[q]` (a fixed non-linear table) |
//! | IQ4_XS | 256 | 136 | `d: half, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128]`; eight sub-blocks of 32 with 6-bit scales: `x = d*(sc - 32) * IQ4_VALUES[q]` |
//! | MXFP4 | 32 | 17 | `e: u8, qs: [u8; 16]`; OCP microscaling: `x = 2^(e-127) * e2m1(q)` |
//!
//! For the 2-, 3- and 4-bit "low" types the low nibble (or 2-bit field) of each byte holds the
//! earlier element, as in the other types; the exact element order is in each decoder below.
//!
//! MLX affine quantisation (verified against `mlx.core.quantize`/`dequantize`/`quantized_matmul`
//! 0.32.2, see docs/gguf.md): `w = scale * q + bias` per group of `group_size` consecutive
//! elements of a row; the unsigned `q` of a row form one little-endian bit stream — value `i`
//! occupies bits `[bits*i, bits*(i+1))` — stored as u32 words, for every width (3, 5 and 6 bits
//! straddle word boundaries). Scales and biases are `[rows, cols / group_size]`.

use half::{bf16, f16};
use std::ops::Range;

use super::types::{GgmlType, QK_K};
use crate::{Error, Result};

/// A tensor's decoded contents. `shape` is outermost-first (a Hugging Face `[out, in]`
/// matrix is `[out, in]`); quantisation groups run along the last (input) dimension.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Plain values, to be cast to bf16/f16/f32 by the caller.
    Float { shape: Vec<usize>, values: Vec<f32> },
    /// MLX affine quantisation: `w = scales[g] * q + biases[g]`, with `q` packed into
    /// `weights` (`rows * cols * bits / 32` words) and `scales`/`biases` shaped
    /// `[rows, cols / group_size]`.
    Affine { shape: Vec<usize>, bits: u32, group_size: usize, weights: Vec<u32>, scales: Vec<f32>, biases: Vec<f32> },
}

impl TensorData {
    pub fn shape(&self) -> &[usize] {
        match self {
            TensorData::Float { shape, .. } | TensorData::Affine { shape, .. } => shape,
        }
    }

    /// Number of logical elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as floats (for affine data: `scale * q + bias`, computed in f32).
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            TensorData::Float { values, .. } => values.clone(),
            TensorData::Affine { bits, group_size, weights, scales, biases, .. } => {
                let q = unpack_bits(weights, *bits, self.len());
                q.iter()
                    .enumerate()
                    .map(|(i, &q)| {
                        let g = i / group_size;
                        scales[g] * q as f32 + biases[g]
                    })
                    .collect()
            }
        }
    }

    /// Turn affine data into float data; float data is returned unchanged.
    pub fn into_float(self) -> TensorData {
        match self {
            TensorData::Float { .. } => self,
            TensorData::Affine { .. } => {
                let values = self.dequantize();
                TensorData::Float { shape: self.shape().to_vec(), values }
            }
        }
    }

    /// Reorder whole rows (the outermost dimension): output row `r` is input row `src[r]`.
    /// Works on packed data too, since quantisation groups never cross rows.
    pub fn permute_rows(&mut self, src: &[usize]) -> Result<()> {
        let rows = *self.shape().first().unwrap_or(&0);
        if src.len() != rows {
            return Err(Error::Gguf(format!("row permutation of length {} for {rows} rows", src.len())));
        }
        fn apply<T: Copy>(data: &mut Vec<T>, rows: usize, src: &[usize]) {
            let row = data.len() / rows.max(1);
            let mut out = Vec::with_capacity(data.len());
            for &s in src {
                out.extend_from_slice(&data[s * row..(s + 1) * row]);
            }
            *data = out;
        }
        match self {
            TensorData::Float { values, .. } => apply(values, rows, src),
            TensorData::Affine { weights, scales, biases, .. } => {
                apply(weights, rows, src);
                apply(scales, rows, src);
                apply(biases, rows, src);
            }
        }
        Ok(())
    }

    /// Zero rows appended up to `rows` rows (the outermost dimension); affine
    /// rows get zero quants, scales and biases, so they dequantise to 0.
    pub fn pad_rows(&mut self, rows: usize) {
        let have = *self.shape().first().unwrap_or(&0);
        if rows <= have {
            return;
        }
        let per_row: usize = self.shape()[1..].iter().product();
        match self {
            TensorData::Float { shape, values } => {
                values.resize(rows * per_row, 0.0);
                shape[0] = rows;
            }
            TensorData::Affine { shape, bits, group_size, weights, scales, biases } => {
                weights.resize(rows * per_row * *bits as usize / 32, 0);
                scales.resize(rows * per_row / *group_size, 0.0);
                biases.resize(rows * per_row / *group_size, 0.0);
                shape[0] = rows;
            }
        }
    }

    /// Add a constant to every element (exact for affine data: it moves the biases).
    pub fn add_scalar(&mut self, c: f32) {
        match self {
            TensorData::Float { values, .. } => values.iter_mut().for_each(|v| *v += c),
            TensorData::Affine { biases, .. } => biases.iter_mut().for_each(|b| *b += c),
        }
    }
}

/// Pack unsigned `bits`-wide values into MLX's little-endian u32 bit stream.
/// `q.len() * bits` must be a multiple of 32.
pub fn pack_bits(q: &[u8], bits: u32) -> Vec<u32> {
    debug_assert!((q.len() * bits as usize).is_multiple_of(32));
    let mut out = Vec::with_capacity(q.len() * bits as usize / 32);
    let mut acc: u64 = 0;
    let mut n: u32 = 0;
    for &v in q {
        acc |= (v as u64) << n;
        n += bits;
        if n >= 32 {
            out.push(acc as u32);
            acc >>= 32;
            n -= 32;
        }
    }
    out
}

/// Inverse of `pack_bits`: the first `count` values of the stream.
pub fn unpack_bits(words: &[u32], bits: u32, count: usize) -> Vec<u8> {
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(count);
    let mut acc: u64 = 0;
    let mut n: u32 = 0;
    let mut it = words.iter();
    while out.len() < count {
        if n < bits {
            acc |= (*it.next().expect("bit stream too short") as u64) << n;
            n += 32;
        }
        out.push((acc & mask) as u8);
        acc >>= bits;
        n -= bits;
    }
    out
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block's 12 scale bytes:
/// sub-blocks 0-3 keep theirs in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins);
/// sub-blocks 4-7 put the low 4 bits in the nibbles of bytes 8-11 and the high 2 bits in the
/// top bits of bytes 0-3 (scales) and 4-7 (mins).
pub fn k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        let sc = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4);
        let m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        (sc, m)
    }
}

/// IQ4_NL's and IQ4_XS's 16 levels (ggml's `kvalues_iq4nl`).
pub const IQ4_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// The e2m1 (FP4) values of the 16 codes, doubled so they are integers (ggml's `kvalues_mxfp4`);
/// the block scale is halved to match.
pub const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half of an E8M0 scale, `2^(e-128)`, as f32 (ggml's `ggml_e8m0_to_fp32_half`): exact, with
/// subnormal results for e < 2.
pub fn e8m0_half(e: u8) -> f32 {
    f32::from_bits(if e < 2 { 0x0020_0000u32 << e } else { (e as u32 - 1) << 23 })
}

/// Low nibbles of a 16-byte run are elements 0..16, high nibbles 16..32 (IQ4_NL, IQ4_XS, MXFP4).
fn nibbles32(qs: &[u8], table: &[i8; 16], scale: f32, y: &mut Vec<f32>) {
    y.extend(qs.iter().map(|&q| scale * table[(q & 0x0F) as usize] as f32));
    y.extend(qs.iter().map(|&q| scale * table[(q >> 4) as usize] as f32));
}

fn check_len(ty: GgmlType, bytes: &[u8], n: usize) -> Result<()> {
    let (block, size) = ty.block();
    if !n.is_multiple_of(block) || bytes.len() != n / block * size {
        return Err(Error::Gguf(format!("{ty}: {n} elements need {} bytes in blocks of {block}, got {}", n.div_ceil(block) * size, bytes.len())));
    }
    Ok(())
}

fn unsupported(ty: GgmlType) -> Error {
    let names: Vec<&str> = GgmlType::DECODABLE.iter().map(|t| t.name()).collect();
    Error::Gguf(format!("tensor type {ty} is not supported (supported: {})", names.join(", ")))
}

/// Decode `n` elements of type `ty` to f32, following ggml's reference dequantisation.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    if !ty.is_decodable() {
        return Err(unsupported(ty));
    }
    check_len(ty, bytes, n)?;
    let (_, bsize) = ty.block();
    let mut y = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => y.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()))),
        GgmlType::F16 => y.extend(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::BF16 => y.extend(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::Q4_0 => {
            for b in bytes.chunks_exact(bsize) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                y.extend(qs.iter().map(|&q| ((q & 0x0F) as i32 - 8) as f32 * d));
                y.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        GgmlType::Q4_1 => {
            for b in bytes.chunks_exact(bsize) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                y.extend(qs.iter().map(|&q| (q & 0x0F) as f32 * d + m));
                y.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        GgmlType::Q5_0 => {
            for b in bytes.chunks_exact(bsize) {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes(b[2..6].try_into().unwrap());
                let qs = &b[6..22];
                for (j, &q) in qs.iter().enumerate() {
                    let hi = (((qh >> j) & 1) << 4) as u8;
                    y.push((((q & 0x0F) | hi) as i32 - 16) as f32 * d);
                }
                for (j, &q) in qs.iter().enumerate() {
                    let hi = (((qh >> (j + 16)) & 1) << 4) as u8;
                    y.push((((q >> 4) | hi) as i32 - 16) as f32 * d);
                }
            }
        }
        GgmlType::Q5_1 => {
            for b in bytes.chunks_exact(bsize) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qh = u32::from_le_bytes(b[4..8].try_into().unwrap());
                let qs = &b[8..24];
                for (j, &q) in qs.iter().enumerate() {
                    let hi = (((qh >> j) & 1) << 4) as u8;
                    y.push(((q & 0x0F) | hi) as f32 * d + m);
                }
                for (j, &q) in qs.iter().enumerate() {
                    let hi = (((qh >> (j + 16)) & 1) << 4) as u8;
                    y.push(((q >> 4) | hi) as f32 * d + m);
                }
            }
        }
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(bsize) {
                let d = f16_at(b, 0);
                y.extend(b[2..34].iter().map(|&q| (q as i8) as f32 * d));
            }
        }
        GgmlType::Q4_K => {
            for b in bytes.chunks_exact(bsize) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let qs = &b[16..144];
                for c in 0..4 {
                    let q = &qs[32 * c..32 * c + 32];
                    let (sc1, m1) = k_scale_min(scales, 2 * c);
                    let (sc2, m2) = k_scale_min(scales, 2 * c + 1);
                    let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
                    let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
                    y.extend(q.iter().map(|&v| d1 * (v & 0x0F) as f32 - min1));
                    y.extend(q.iter().map(|&v| d2 * (v >> 4) as f32 - min2));
                }
            }
        }
        GgmlType::Q5_K => {
            for b in bytes.chunks_exact(bsize) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let qh = &b[16..48];
                let ql = &b[48..176];
                for c in 0..4 {
                    let q = &ql[32 * c..32 * c + 32];
                    let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
                    let (sc1, m1) = k_scale_min(scales, 2 * c);
                    let (sc2, m2) = k_scale_min(scales, 2 * c + 1);
                    let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
                    let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
                    for l in 0..32 {
                        let hi = if qh[l] & u1 != 0 { 16 } else { 0 };
                        y.push(d1 * ((q[l] & 0x0F) + hi) as f32 - min1);
                    }
                    for l in 0..32 {
                        let hi = if qh[l] & u2 != 0 { 16 } else { 0 };
                        y.push(d2 * ((q[l] >> 4) + hi) as f32 - min2);
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for b in bytes.chunks_exact(bsize) {
                let d = f16_at(b, 208);
                let mut out = [0f32; QK_K];
                for half in 0..2 {
                    let ql = &b[64 * half..64 * half + 64];
                    let qh = &b[128 + 32 * half..128 + 32 * half + 32];
                    let sc = &b[192 + 8 * half..192 + 8 * half + 8];
                    let y = &mut out[128 * half..128 * half + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
                y.extend_from_slice(&out);
            }
        }
        GgmlType::Q2_K => {
            for b in bytes.chunks_exact(bsize) {
                let (scales, qs) = (&b[0..16], &b[16..80]);
                let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
                // Element e: byte 32*(e/128) + e%32 of qs, bits 2*((e%128)/32); sub-block e/16.
                y.extend((0..QK_K).map(|e| {
                    let q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
                    let sc = scales[e / 16];
                    d * (sc & 0x0F) as f32 * q as f32 - dmin * (sc >> 4) as f32
                }));
            }
        }
        GgmlType::Q3_K => {
            for b in bytes.chunks_exact(bsize) {
                let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
                let d = f16_at(b, 108);
                // Sixteen 6-bit scales: low 4 bits in the nibbles of bytes 0-7, high 2 bits in bytes 8-11.
                let scale: [f32; 16] = std::array::from_fn(|j| {
                    let lo = (sc[j % 8] >> (4 * (j / 8))) & 0x0F;
                    let hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
                    d * ((lo | (hi << 4)) as i32 - 32) as f32
                });
                // Element e: 2 low bits as Q2_K's, the third from bit e/32 of hmask[e%32]; a clear bit subtracts 4.
                y.extend((0..QK_K).map(|e| {
                    let lo = ((qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32;
                    let h = (hmask[e % 32] >> (e / 32)) & 1;
                    scale[e / 16] * (lo - if h == 0 { 4 } else { 0 }) as f32
                }));
            }
        }
        GgmlType::IQ4_NL => {
            for b in bytes.chunks_exact(bsize) {
                nibbles32(&b[2..18], &IQ4_VALUES, f16_at(b, 0), &mut y);
            }
        }
        GgmlType::IQ4_XS => {
            for b in bytes.chunks_exact(bsize) {
                let d = f16_at(b, 0);
                let scales_h = u16::from_le_bytes([b[2], b[3]]);
                let (scales_l, qs) = (&b[4..8], &b[8..136]);
                for ib in 0..8 {
                    let ls = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) | ((((scales_h >> (2 * ib)) & 3) as u8) << 4);
                    nibbles32(&qs[16 * ib..16 * ib + 16], &IQ4_VALUES, d * (ls as i32 - 32) as f32, &mut y);
                }
            }
        }
        GgmlType::MXFP4 => {
            for b in bytes.chunks_exact(bsize) {
                nibbles32(&b[1..17], &MXFP4_VALUES, e8m0_half(b[0]), &mut y);
            }
        }
        _ => return Err(unsupported(ty)),
    }
    debug_assert_eq!(y.len(), n);
    Ok(y)
}

/// How gomlx hands over a tensor of each type (see docs/gguf.md for the reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Float values (F32/F16/BF16 as they are; Q6_K, Q2_K, Q3_K, IQ4_NL, IQ4_XS and MXFP4
    /// dequantised exactly in f32).
    Float,
    /// Repacked losslessly into MLX affine quantisation with this many bits, groups of 32.
    Affine { bits: u32 },
}

/// The handling of a type, or an error naming it when gomlx cannot decode it.
pub fn handling(ty: GgmlType) -> Result<Handling> {
    Ok(match ty {
        GgmlType::F32
        | GgmlType::F16
        | GgmlType::BF16
        | GgmlType::Q6_K
        | GgmlType::Q2_K
        | GgmlType::Q3_K
        | GgmlType::IQ4_NL
        | GgmlType::IQ4_XS
        | GgmlType::MXFP4 => Handling::Float,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => Handling::Affine { bits: 4 },
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => Handling::Affine { bits: 5 },
        GgmlType::Q8_0 => Handling::Affine { bits: 8 },
        _ => return Err(unsupported(ty)),
    })
}

/// Group size of every repacked type: ggml's blocks and k-quant sub-blocks hold 32 values.
pub const AFFINE_GROUP: usize = 32;

/// Split the blocks of an affine-repackable type into unsigned quants (one byte each, in
/// element order) and one (scale, bias) per group of 32, such that `x = scale * q + bias`
/// reproduces ggml's value exactly.
fn affine_groups(ty: GgmlType, bytes: &[u8], q: &mut Vec<u8>, s: &mut Vec<f32>, m: &mut Vec<f32>) -> Result<()> {
    let (_, bsize) = ty.block();
    match ty {
        GgmlType::Q4_0 => {
            for b in bytes.chunks_exact(bsize) {
                let d = f16_at(b, 0);
                q.extend(b[2..18].iter().map(|&v| v & 0x0F));
                q.extend(b[2..18].iter().map(|&v| v >> 4));
                s.push(d);
                m.push(-8.0 * d);
            }
        }
        GgmlType::Q4_1 => {
            for b in bytes.chunks_exact(bsize) {
                q.extend(b[4..20].iter().map(|&v| v & 0x0F));
                q.extend(b[4..20].iter().map(|&v| v >> 4));
                s.push(f16_at(b, 0));
                m.push(f16_at(b, 2));
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let o = if ty == GgmlType::Q5_0 { 2 } else { 4 };
            for b in bytes.chunks_exact(bsize) {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
                let qs = &b[o + 4..o + 20];
                q.extend(qs.iter().enumerate().map(|(j, &v)| (v & 0x0F) | ((((qh >> j) & 1) << 4) as u8)));
                q.extend(qs.iter().enumerate().map(|(j, &v)| (v >> 4) | ((((qh >> (j + 16)) & 1) << 4) as u8)));
                s.push(d);
                m.push(if ty == GgmlType::Q5_0 { -16.0 * d } else { f16_at(b, 2) });
            }
        }
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(bsize) {
                let d = f16_at(b, 0);
                q.extend(b[2..34].iter().map(|&v| (v as i8 as i32 + 128) as u8));
                s.push(d);
                m.push(-128.0 * d);
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            for b in bytes.chunks_exact(bsize) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let (qh, ql): (Option<&[u8]>, &[u8]) = if ty == GgmlType::Q4_K { (None, &b[16..144]) } else { (Some(&b[16..48]), &b[48..176]) };
                for c in 0..4 {
                    let v = &ql[32 * c..32 * c + 32];
                    for (sub, shift) in [(2 * c, 0u32), (2 * c + 1, 4u32)] {
                        let bit = 1u8 << sub; // Q5_K: bit `sub` of qh[l] is the 5th bit
                        q.extend((0..32).map(|l| {
                            let lo = (v[l] >> shift) & 0x0F;
                            match qh {
                                Some(qh) if qh[l] & bit != 0 => lo | 16,
                                _ => lo,
                            }
                        }));
                        let (sc, mn) = k_scale_min(scales, sub);
                        s.push(d * sc as f32);
                        m.push(-(dmin * mn as f32));
                    }
                }
            }
        }
        _ => return Err(unsupported(ty)),
    }
    Ok(())
}

/// Decode a tensor's bytes into `TensorData` following `handling(ty)`. `shape` is
/// outermost-first (`TensorInfo::shape()`).
pub fn decode(ty: GgmlType, bytes: &[u8], shape: &[usize]) -> Result<TensorData> {
    let n: usize = shape.iter().product();
    check_len(ty, bytes, n)?;
    match handling(ty)? {
        Handling::Float => Ok(TensorData::Float { shape: shape.to_vec(), values: dequantize(ty, bytes, n)? }),
        Handling::Affine { bits } => {
            let mut q = Vec::with_capacity(n);
            let mut scales = Vec::with_capacity(n / AFFINE_GROUP);
            let mut biases = Vec::with_capacity(n / AFFINE_GROUP);
            affine_groups(ty, bytes, &mut q, &mut scales, &mut biases)?;
            debug_assert_eq!(q.len(), n);
            Ok(TensorData::Affine { shape: shape.to_vec(), bits, group_size: AFFINE_GROUP, weights: pack_bits(&q, bits), scales, biases })
        }
    }
}

/// The byte ranges of a tensor's data (type `ty`, `shape` outermost-first) that
/// hold entries `start..start + len` of `axis`. ggml's blocks run along the last
/// axis, so entries of axis 0 (whole rows, or whole matrices of a stack) are one
/// contiguous range; entries of the last axis are a range in each row, and must
/// then start and end on block boundaries.
pub fn window(ty: GgmlType, shape: &[usize], axis: usize, start: usize, len: usize) -> Result<Vec<Range<usize>>> {
    let (block, bsize) = ty.block();
    let (Some(&cols), Some(&dim)) = (shape.last(), shape.get(axis)) else {
        return Err(Error::Gguf(format!("no axis {axis} in shape {shape:?}")));
    };
    if start + len > dim {
        return Err(Error::Gguf(format!("entries {start}..{} of axis {axis} are past its {dim}", start + len)));
    }
    if !cols.is_multiple_of(block) {
        return Err(Error::Gguf(format!("{ty}: rows of {cols} values are not whole blocks of {block}")));
    }
    let row = cols / block * bsize;
    if axis + 1 == shape.len() {
        if !start.is_multiple_of(block) || !len.is_multiple_of(block) {
            return Err(Error::Gguf(format!("columns {start}..{} would cut its {ty} blocks of {block} values", start + len)));
        }
        let (from, to) = (start / block * bsize, (start + len) / block * bsize);
        let rows: usize = shape[..axis].iter().product();
        return Ok((0..rows).map(|r| r * row + from..r * row + to).collect());
    }
    if axis != 0 {
        return Err(Error::Gguf(format!("a part of axis {axis} of shape {shape:?}: only the first or the last axis")));
    }
    let entry = shape[1..shape.len() - 1].iter().product::<usize>() * row;
    let rows = start * entry..(start + len) * entry;
    Ok(vec![rows])
}

/// `decode` of only entries `start..start + len` of `axis` (0 or the last; see
/// `window`), from only the bytes that hold them; with the number of bytes read.
pub fn decode_window(ty: GgmlType, bytes: &[u8], shape: &[usize], axis: usize, start: usize, len: usize) -> Result<(TensorData, usize)> {
    check_len(ty, bytes, shape.iter().product())?;
    let ranges = window(ty, shape, axis, start, len)?;
    let read = ranges.iter().map(|r| r.len()).sum();
    let mut part = shape.to_vec();
    part[axis] = len;
    let data = match ranges.as_slice() {
        [one] => decode(ty, &bytes[one.clone()], &part)?,
        _ => decode(ty, &ranges.iter().flat_map(|r| &bytes[r.clone()]).copied().collect::<Vec<u8>>(), &part)?,
    };
    Ok((data, read))
}
