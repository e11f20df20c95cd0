//! Hostile inputs to the `.npy`, image and scenes readers (issue 9): each is a
//! typed error with a message that names the real problem, never a panic,
//! also in debug builds where integer overflow panics.

use rsp::eval::benchmark::{evaluate, EvalOptions};
use rsp::eval::dataset::Scenes;
use rsp::image_io::{load_image, Normalization};
use rsp::io::npy::parse_npy;
use rsp::{Method, Network, RspError};
use std::collections::HashMap;
use std::path::PathBuf;

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A version-1 `.npy` file with the given header dictionary and data.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut text = dict.as_bytes().to_vec();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(b' ');
    }
    text.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

fn format_reason(r: Result<ndarray::ArrayD<f32>, RspError>) -> String {
    match r {
        Err(RspError::Format { reason, .. }) => reason,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn npy_shapes_past_the_address_space_are_refused_even_with_a_zero_dimension() {
    // The element count is 0, so the data check alone passes; ndarray-npy
    // would then panic on the shape's overflow.
    let max = u64::MAX;
    for shape in [format!("(1, 0, {max}, {max})"), format!("(0, {})", u64::MAX / 2), format!("({}, 0)", isize::MAX)] {
        let bytes = npy(&format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"), &[]);
        let reason = format_reason(parse_npy::<f32>(&bytes, "huge.npy"));
        assert!(reason.contains("overflows the address space"), "{shape}: {reason}");
    }
    // A zero-size array whose other dimensions fit is a valid empty array.
    let empty = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3, 1000000), }", &[]);
    assert_eq!(parse_npy::<f32>(&empty, "empty.npy").unwrap().shape(), &[0, 3, 1_000_000]);
}

#[test]
fn npy_messages_name_the_real_problem() {
    // f16: the dtype, not "more data than the file holds".
    let half = npy("{'descr': '<f2', 'fortran_order': False, 'shape': (1, 3, 2, 2), }", &[0; 24]);
    let reason = format_reason(parse_npy::<f32>(&half, "half.npy"));
    assert!(reason.contains("dtype '<f2' is not supported"), "{reason}");
    let ints = npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", &[0; 16]);
    assert!(format_reason(parse_npy::<f32>(&ints, "i.npy")).contains("dtype '<i8' is not supported"));

    // Bytes after the data: say so, not "incorrect descriptor".
    let mut data = vec![0u8; 16];
    data.extend_from_slice(b"junk");
    let trailing = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", &data);
    let reason = format_reason(parse_npy::<f32>(&trailing, "t.npy"));
    assert!(reason.contains("4 bytes follow the 16 bytes of data"), "{reason}");

    // Too little data is measured in the file's own dtype (8 bytes for f64).
    let short = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", &[0; 16]);
    let reason = format_reason(parse_npy::<f32>(&short, "s.npy"));
    assert!(reason.contains("(32 bytes of data), more data than"), "{reason}");

    // Rank is capped (the message quotes the rank, not a megabyte of shape).
    let dims = vec!["1"; 40].join(", ");
    let deep = npy(&format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}"), &[0; 4]);
    let reason = format_reason(parse_npy::<f32>(&deep, "r.npy"));
    assert!(reason.contains("rank 40, more than the limit of 32"), "{reason}");
}

#[test]
fn npy_finite_values_beyond_f32_are_an_overflow_not_a_non_finite_input() {
    let values = [1.0f64, -2.5, 1e300];
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", &data);
    let reason = format_reason(parse_npy::<f32>(&bytes, "big.npy"));
    assert!(reason.contains("value 1e300 at flat index 2 overflows f32"), "{reason}");
    // Read as f64 the same file is fine, and exact.
    assert_eq!(parse_npy::<f64>(&bytes, "big.npy").unwrap().as_slice().unwrap(), &values);
    // The largest f32 itself still converts.
    let edge: Vec<u8> = [f64::from(f32::MAX)].iter().flat_map(|v| v.to_le_bytes()).collect();
    let edge = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", &edge);
    assert_eq!(parse_npy::<f32>(&edge, "edge.npy").unwrap()[[0]], f32::MAX);
}

#[test]
fn npy_big_endian_floats_are_read_by_value() {
    // numpy writes '>f4' for `astype('>f4')`; the bytes are hand-made here.
    let data: Vec<u8> = [1.5f32, -3.0].iter().flat_map(|v| v.to_be_bytes()).collect();
    let bytes = npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", &data);
    assert_eq!(parse_npy::<f64>(&bytes, "be.npy").unwrap().as_slice().unwrap(), &[1.5, -3.0]);
}

#[test]
fn npy_write_errors_are_io_errors() {
    let x = ndarray::ArrayD::<f32>::zeros(vec![1, 2]);
    // Outputs are written to a temporary file and renamed into place, so a
    // special file such as /dev/full is refused rather than replaced.
    if std::path::Path::new("/dev/full").exists() {
        let err = rsp::io::npy::write_npy(std::path::Path::new("/dev/full"), &x).unwrap_err();
        assert!(err.to_string().contains("/dev/full: it exists and is not a regular file"), "{err}");
        assert!(!std::fs::metadata("/dev/full").unwrap().is_file(), "/dev/full was replaced");
    }
    // A directory that does not exist is an I/O error naming the path.
    let missing = std::env::temp_dir().join("rsp-no-such-dir-for-npy").join("x.npy");
    let err = rsp::io::npy::write_npy(&missing, &x).unwrap_err();
    assert!(matches!(err, RspError::Io { .. }), "{err}");
    assert!(err.to_string().contains("rsp-no-such-dir-for-npy"), "{err}");
}

/// A 32×24 image with a gradient, saved in `format` and cut at `fraction` of its length.
fn truncated_image(dir: &std::path::Path, ext: &str, keep: f64) -> (PathBuf, PathBuf) {
    let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 128]));
    let whole = dir.join(format!("whole.{ext}"));
    img.save(&whole).unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.join(format!("cut.{ext}"));
    std::fs::write(&cut, &bytes[..(bytes.len() as f64 * keep) as usize]).unwrap();
    (whole, cut)
}

#[test]
fn truncated_images_are_format_errors() {
    let scratch_dir = crate::common::scratch("reader-errors-images");
    let dir = scratch_dir.path().to_path_buf();
    for ext in ["png", "jpg"] {
        for keep in [0.5, 0.8, 0.95] {
            let (whole, cut) = truncated_image(&dir, ext, keep);
            assert_eq!(load_image(&whole, None, &Normalization::None).unwrap().shape(), &[1, 3, 24, 32]);
            match load_image(&cut, None, &Normalization::None) {
                Err(RspError::Format { path, reason }) => {
                    assert!(path.ends_with(&format!("cut.{ext}")));
                    assert!(reason.contains("truncated"), "{ext} at {keep}: {reason}");
                }
                other => panic!("{ext} cut at {keep}: expected a format error, got {other:?}"),
            }
        }
    }
    // A JPEG with bytes appended after its end marker is still an image.
    let (whole, _) = truncated_image(&dir, "jpg", 1.0);
    let mut bytes = std::fs::read(&whole).unwrap();
    bytes.extend_from_slice(b"trailer");
    let padded = dir.join("padded.jpg");
    std::fs::write(&padded, bytes).unwrap();
    assert!(load_image(&padded, None, &Normalization::None).is_ok());
}

// ------------------------------------------------------------------ scenes

type TensorSpec = (&'static str, safetensors::Dtype, Vec<usize>, Vec<u8>);

fn scenes_file(tensors: &[TensorSpec]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (name.to_string(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap())
        })
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()
}

fn bytes_of<T: Copy, const N: usize>(v: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| to(x)).collect()
}

/// One 4×4 scene with two slots; `masks` gives each slot's 16 mask bytes.
fn two_slots(boxes: [i32; 10], masks: [u8; 2]) -> Vec<TensorSpec> {
    use safetensors::Dtype;
    let mut mask_bytes = vec![masks[0]; 16];
    mask_bytes.extend(vec![masks[1]; 16]);
    vec![
        ("input", Dtype::F32, vec![1, 3, 4, 4], bytes_of(&[0.5f32; 48], f32::to_le_bytes)),
        ("labels", Dtype::F32, vec![1, 3], bytes_of(&[0.0f32, 1.0, 1.0], f32::to_le_bytes)),
        ("boxes", Dtype::I32, vec![1, 2, 5], bytes_of(&boxes, i32::to_le_bytes)),
        ("masks", Dtype::U8, vec![1, 2, 4, 4], mask_bytes),
    ]
}

fn scenes_reason(bytes: &[u8]) -> String {
    match Scenes::from_bytes(bytes, "scenes") {
        Err(RspError::Format { reason, .. }) => reason,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn scenes_that_the_metrics_cannot_score_are_refused() {
    let good = scenes_file(&two_slots([1, 0, 0, 2, 2, 2, 2, 2, 4, 4], [1, 1]));
    assert_eq!(Scenes::from_bytes(&good, "good").unwrap().objects(0).len(), 2);

    let cases = [
        ([1, 0, 0, 2, 2, 1, 2, 2, 4, 4], [1, 1], "two objects of class 1"),
        ([1, 0, 0, 0, 2, -1, 0, 0, 0, 0], [1, 1], "0 ≤ y0 < y1"),
        ([1, 1, 3, 4, 3, -1, 0, 0, 0, 0], [1, 1], "0 ≤ x0 < x1"),
        ([1, 0, 0, 2, 2, 2, 2, 2, 4, 4], [1, 0], "slot 1: the object (class 2) has an empty mask"),
    ];
    for (boxes, masks, words) in cases {
        let reason = scenes_reason(&scenes_file(&two_slots(boxes, masks)));
        assert!(reason.contains(words), "{boxes:?}: {reason}");
    }
    // An unused slot may have an empty box and mask.
    let one = scenes_file(&two_slots([1, 0, 0, 2, 2, -1, 0, 0, 0, 0], [1, 0]));
    assert_eq!(Scenes::from_bytes(&one, "one").unwrap().objects(0).len(), 1);
}

#[test]
fn evaluating_scenes_without_objects_is_an_error_not_nan() {
    let empty = Scenes::from_bytes(&scenes_file(&two_slots([-1, 0, 0, 0, 0, -1, 0, 0, 0, 0], [0, 0])), "e").unwrap();
    let net = Network::<f32>::load(repo("data/digits_vgg.safetensors")).unwrap();
    let err = evaluate(&net, &empty, &Method::default(), &EvalOptions::default()).unwrap_err();
    assert!(
        matches!(&err, RspError::InvalidArgument(m) if m.contains("hold no objects")),
        "expected an invalid-argument error, got {err}"
    );
    let err = rsp::eval::benchmark::model_sensitivity(&net, &empty, &Method::default(), 0, &EvalOptions::default());
    assert!(matches!(err, Err(RspError::InvalidArgument(_))));
}

#[test]
fn scenes_offsets_past_the_end_are_refused_before_the_safetensors_crate_sums_them() {
    // Offsets whose sum with the header length passes 2^64: the crate's
    // own arithmetic overflows (a panic in debug builds) unless checked first.
    let max = u64::MAX;
    for offsets in [format!("[0, {max}]"), format!("[{}, {max}]", max - 3), format!("[{max}, {max}]")] {
        let header = format!(r#"{{"input":{{"dtype":"F32","shape":[1],"data_offsets":{offsets}}}}}"#);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let reason = scenes_reason(&bytes);
        assert!(reason.contains("data offsets beyond the file"), "{offsets}: {reason}");
    }
}

// -------------------------------------------------------------------- onnx

fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A ModelProto (opset 13) whose graph is `graph`, encoded by hand.
fn onnx_model(graph: &[u8]) -> Vec<u8> {
    let mut m = vec![0x42, 2, 0x10, 13]; // opset_import { version: 13 }
    m.push(0x3A); // graph
    m.extend(varint(graph.len()));
    m.extend_from_slice(graph);
    m
}

#[test]
fn onnx_files_that_would_expand_in_memory_are_refused_before_decoding() {
    // 5 million empty initializers (10 MB): decoding would take ~3.3 GB.
    let empty = onnx_model(&[0x2A, 0x00].repeat(5_000_000));
    let err = rsp::io::onnx::parse_onnx_bytes(&empty, "empty.onnx").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RspError::Format { .. }), "{text}");
    assert!(text.contains("decoding its 10000009 bytes would need about"), "{text}");
    assert!(text.contains("4 × the file size + 256 MiB"), "{text}");

    // One tensor of 40 million packed int64 zeros: 40 MB on the wire, 320 MB as i64 (+ growth).
    let n = 40_000_000;
    let mut tensor = vec![0x3A];
    tensor.extend(varint(n));
    tensor.extend(std::iter::repeat_n(0u8, n));
    let mut graph = vec![0x2A];
    graph.extend(varint(tensor.len()));
    graph.extend(tensor);
    let err = rsp::io::onnx::parse_onnx_bytes(&onnx_model(&graph), "ints.onnx").unwrap_err();
    assert!(err.to_string().contains("would need about"), "{err}");

    // The same structure at a small count is decoded (and then refused for what it is).
    let few = onnx_model(&[0x2A, 0x00].repeat(10));
    let err = rsp::io::onnx::parse_onnx_bytes(&few, "few.onnx").unwrap_err();
    assert!(err.to_string().contains("an initializer has no name"), "{err}");
}
