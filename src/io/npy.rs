//! `.npy` tensors (float32 or float64) for the CLI and scripts, via `ndarray-npy`.
//!
//! The file is read into memory once and its header checked against its real
//! size, so a header that claims more data than the file holds is an error,
//! never a huge allocation. Headers are limited to
//! [`crate::limits::MAX_NPY_HEADER_BYTES`] bytes and
//! [`crate::limits::MAX_NPY_HEADER_DEPTH`] nested brackets.

use crate::error::{Result, RspError};
use crate::float::Float;
use crate::limits::{MAX_NPY_HEADER_BYTES, MAX_NPY_HEADER_DEPTH, MAX_NPY_RANK};
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

/// Parses `.npy` bytes (float32 or float64, either byte order) as `T`.
///
/// Everything `ndarray-npy` would trust is checked first: the header's size
/// and nesting, the dtype, the rank (at most [`MAX_NPY_RANK`]), that the
/// shape's size in bytes is addressable, and that the data fill the rest of
/// the file exactly. Reading float64 data as `f32` refuses a finite value
/// beyond `f32`'s range rather than turning it into infinity.
///
/// ```
/// // An f16 array: the message names the dtype.
/// let mut b = b"\x93NUMPY\x01\x00".to_vec();
/// let dict = "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }";
/// b.extend_from_slice(&(dict.len() as u16 + 1).to_le_bytes());
/// b.extend_from_slice(dict.as_bytes());
/// b.extend_from_slice(b"\n\0\0\0\0");
/// let err = rsp::io::npy::parse_npy::<f32>(&b, "half.npy").unwrap_err();
/// assert!(err.to_string().contains("dtype '<f2' is not supported"), "{err}");
/// ```
pub fn parse_npy<T: Float>(bytes: &[u8], origin: &str) -> Result<ArrayD<T>> {
    check_header_size(bytes).map_err(|reason| RspError::format(origin, format!("bad .npy header ({reason})")))?;
    let mut rest = bytes;
    let header =
        Header::from_reader(&mut rest).map_err(|e| RspError::format(origin, format!("bad .npy header ({e})")))?;
    // The descriptor as numpy prints it, e.g. `'<f4'`.
    let descr = header.type_descriptor.to_string();
    let width: usize = match descr.as_str() {
        "'<f4'" | "'>f4'" => 4,
        "'<f8'" | "'>f8'" => 8,
        _ => {
            return Err(RspError::format(
                origin,
                format!("dtype {descr} is not supported (only float32 or float64: '<f4', '<f8')"),
            ))
        }
    };
    let shape = &header.shape;
    if shape.len() > MAX_NPY_RANK {
        return Err(RspError::format(
            origin,
            format!("the header declares rank {}, more than the limit of {MAX_NPY_RANK}", shape.len()),
        ));
    }
    // ndarray refuses (by panicking, in ndarray-npy) shapes whose nonzero
    // dimensions multiply past isize::MAX bytes, even when one dimension is 0.
    let addressable = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(width, |acc, &d| acc.checked_mul(d))
        .filter(|&b| isize::try_from(b).is_ok());
    if addressable.is_none() {
        return Err(RspError::format(
            origin,
            format!("the header declares shape {shape:?}, whose size overflows the address space"),
        ));
    }
    let need = shape.iter().try_fold(width, |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX);
    if need > rest.len() {
        return Err(RspError::format(
            origin,
            format!(
                "the header declares shape {shape:?} ({need} bytes of data), more data than the file's {} bytes hold",
                bytes.len()
            ),
        ));
    }
    if need < rest.len() {
        return Err(RspError::format(
            origin,
            format!("{} bytes follow the {need} bytes of data the header declares", rest.len() - need),
        ));
    }
    let bad = |e: ndarray_npy::ReadNpyError| RspError::format(origin, format!("bad .npy data ({e})"));
    if width == 4 {
        return Ok(ArrayD::<f32>::read_npy(bytes).map_err(bad)?.mapv(|v| T::of(f64::from(v))));
    }
    let a = ArrayD::<f64>::read_npy(bytes).map_err(bad)?;
    if let Some((index, v)) = a.iter().enumerate().find(|(_, v)| v.is_finite() && !T::of(**v).is_finite()) {
        return Err(RspError::format(
            origin,
            format!("value {v:e} at flat index {index} overflows {} (read the file as f64)", T::NAME),
        ));
    }
    Ok(a.mapv(T::of))
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
        // A failed write (disk full, a closed pipe) stays an I/O error, not a malformed file.
        result.map_err(|e| match e {
            ndarray_npy::WriteNpyError::Io(source) => source,
            other => std::io::Error::other(other),
        })
    })
}
