//! `.npy` tensors (float32 or float64) for the CLI and scripts, via `ndarray-npy`.
//!
//! The file is read into memory once and its header checked against its real
//! size, so a header that claims more data than the file holds is an error,
//! never a huge allocation. Headers are limited to
//! [`MAX_NPY_HEADER_BYTES`](crate::limits::MAX_NPY_HEADER_BYTES) bytes and
//! [`MAX_NPY_HEADER_DEPTH`](crate::limits::MAX_NPY_HEADER_DEPTH) nested brackets.

use crate::error::{Result, RspError};
use crate::float::Float;
use crate::limits::{MAX_NPY_HEADER_BYTES, MAX_NPY_HEADER_DEPTH};
use ndarray::ArrayD;
use ndarray_npy::npy::header::Header;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use std::path::Path;

/// Reads a float32 or float64 `.npy` array as `T`.
///
/// ```
/// let dir = std::env::temp_dir().join("rsp-doc-npy");
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("x.npy");
/// let x = ndarray::Array2::<f64>::eye(2).into_dyn();
/// rsp::io::npy::write_npy(&path, &x).unwrap();
/// let back: ndarray::ArrayD<f32> = rsp::io::npy::read_npy(&path).unwrap();
/// assert_eq!(back[[1, 1]], 1.0);
/// ```
pub fn read_npy<T: Float>(path: &Path) -> Result<ArrayD<T>> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| RspError::Io { path: shown.clone(), source })?;
    parse_npy(&bytes, &shown)
}

/// Parses `.npy` bytes (float32 or float64, little-endian) as `T`.
pub fn parse_npy<T: Float>(bytes: &[u8], origin: &str) -> Result<ArrayD<T>> {
    check_header_size(bytes).map_err(|reason| RspError::format(origin, format!("bad .npy header ({reason})")))?;
    // Check the header's claim against the bytes present before anything is allocated.
    let mut rest = bytes;
    let header =
        Header::from_reader(&mut rest).map_err(|e| RspError::format(origin, format!("bad .npy header ({e})")))?;
    let elements = header.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let fits = elements.and_then(|n| n.checked_mul(4)).is_some_and(|need| need <= rest.len());
    if !fits {
        return Err(RspError::format(
            origin,
            format!(
                "the header declares shape {:?}, more data than the file's {} bytes hold",
                header.shape,
                bytes.len()
            ),
        ));
    }
    if let Ok(a) = ArrayD::<f32>::read_npy(bytes) {
        return Ok(a.mapv(|v| T::of(v as f64)));
    }
    match ArrayD::<f64>::read_npy(bytes) {
        Ok(a) => Ok(a.mapv(T::of)),
        Err(e) => Err(RspError::format(origin, format!("not a little-endian float32 or float64 .npy array ({e})"))),
    }
}

/// Checks the header length field against the file and the header's bracket
/// nesting before the header is read: `ndarray-npy` allocates the declared
/// length up front (up to 4 GiB) and parses nested brackets recursively.
fn check_header_size(bytes: &[u8]) -> std::result::Result<(), String> {
    let (len, start) = match bytes.get(6) {
        Some(1) => (bytes.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize), 10),
        Some(2 | 3) => (bytes.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize), 12),
        _ => return Ok(()), // not a header ndarray-npy reads past; it reports it
    };
    let Some(len) = len else { return Ok(()) };
    let available = bytes.len().saturating_sub(start);
    if len > available || len > MAX_NPY_HEADER_BYTES {
        return Err(format!("the header declares {len} bytes; the file holds {available} after the prefix and the limit is {MAX_NPY_HEADER_BYTES}"));
    }
    let mut depth = 0usize;
    for &c in &bytes[start..start + len] {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NPY_HEADER_DEPTH {
            return Err(format!("brackets nest deeper than {MAX_NPY_HEADER_DEPTH} levels"));
        }
    }
    Ok(())
}

/// Writes `x` as a `.npy` array of `T` (float32 or float64), atomically (see
/// [`write_atomic`](crate::io::atomic::write_atomic): a failed write leaves the
/// previous file intact).
pub fn write_npy<T: Float>(path: &Path, x: &ArrayD<T>) -> Result<()> {
    crate::io::atomic::write_atomic(path, |w| {
        let result = if T::NAME == "f32" {
            x.mapv(|v| v.to_f64_exact() as f32).write_npy(w)
        } else {
            x.mapv(|v| v.to_f64_exact()).write_npy(w)
        };
        result.map_err(std::io::Error::other)
    })
}
