//! Bad input gives a typed error with a clear message, never a panic or NaN.

use crate::common;

use common::data;
use ndarray::Array4;
use rsp::{Network, RspError, RspOptions, Target};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;

fn vgg_tiny() -> Network<f64> {
    rsp::io::safetensors::load(data("golden/vgg_tiny.safetensors")).unwrap()
}

fn input(shape: (usize, usize, usize, usize)) -> Array4<f64> {
    Array4::from_shape_fn(shape, |(n, c, i, j)| ((n + c * 3 + i * 5 + j * 7) % 11) as f64 / 11.0)
}

#[test]
fn wrong_channels_are_a_shape_error() {
    let err = vgg_tiny().attribute(input((1, 4, 32, 32)).view(), 0).unwrap_err();
    assert!(matches!(err, RspError::Shape { .. } | RspError::InvalidArgument(_)), "{err}");
    // The message names what was expected (3 channels, as the model's input channels) and what was found.
    let message = err.to_string();
    assert!(message.contains("N×3×H×W") && message.contains("input channels"), "{err}");
    assert!(message.contains("[1, 4, 32, 32]"), "{err}");
}

#[test]
fn an_input_too_small_for_the_network_is_an_error() {
    let err = vgg_tiny().attribute(input((1, 3, 4, 4)).view(), 0).unwrap_err();
    assert!(matches!(err, RspError::InvalidArgument(_)), "{err}");
}

#[test]
fn a_target_out_of_range_is_reported_with_the_class_count() {
    let err = vgg_tiny().attribute(input((1, 3, 32, 32)).view(), 10).unwrap_err();
    assert!(matches!(err, RspError::TargetOutOfRange { target: 10, classes: 10 }), "{err}");
}

#[test]
fn per_sample_targets_must_match_the_batch() {
    let err = vgg_tiny()
        .explain(input((2, 3, 32, 32)).view(), Target::PerSample(vec![1]), RspOptions::default())
        .unwrap_err();
    assert!(matches!(err, RspError::InvalidArgument(_)), "{err}");
}

#[test]
fn an_empty_batch_is_an_error() {
    let err = vgg_tiny().attribute(input((0, 3, 32, 32)).view(), 0).unwrap_err();
    assert!(matches!(err, RspError::InvalidArgument(_)), "{err}");
}

#[test]
fn nan_and_infinite_inputs_are_rejected() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut x = input((1, 3, 32, 32));
        x[[0, 1, 2, 3]] = bad;
        let err = vgg_tiny().attribute(x.view(), 0).unwrap_err();
        assert!(matches!(err, RspError::NonFinite { index, .. } if index == 32 * 32 + 2 * 32 + 3), "{err}");
    }
}

#[test]
fn a_start_layer_outside_the_network_is_an_error() {
    let opts = RspOptions { start_layer: Some(99), ..Default::default() };
    let err = vgg_tiny().explain(input((1, 3, 32, 32)).view(), 0, &opts).unwrap_err();
    assert!(matches!(err, RspError::InvalidArgument(_)), "{err}");
}

/// Rewrites the golden vgg_tiny file with edited tensors and metadata.
fn edited(edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>, &mut HashMap<String, String>)) -> Vec<u8> {
    edited_file("golden/vgg_tiny.safetensors", edit)
}

/// Rewrites a golden file with edited tensors and metadata.
fn edited_file(
    file: &str,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>, &mut HashMap<String, String>),
) -> Vec<u8> {
    let bytes = std::fs::read(data(file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = HashMap::new();
    for (name, t) in st.tensors() {
        if t.dtype() == Dtype::F32 {
            tensors.insert(name, (t.shape().to_vec(), t.data().to_vec()));
        }
    }
    edit(&mut tensors, &mut metadata);
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, (s, d))| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).unwrap())).collect();
    safetensors::serialize(views, Some(metadata)).unwrap()
}

fn load(bytes: &[u8]) -> RspError {
    rsp::io::safetensors::from_bytes::<f64>(bytes, "edited.safetensors").unwrap_err()
}

#[test]
fn an_unknown_layer_type_is_named() {
    let bytes = edited(|_, m| {
        let layers = m["layers"].replacen("\"relu\"", "\"gelu\"", 1);
        m.insert("layers".into(), layers);
    });
    let err = load(&bytes);
    assert!(matches!(err, RspError::Model(_)), "{err}");
    assert!(err.to_string().contains("layer 1") && err.to_string().contains("gelu"), "{err}");
}

#[test]
fn a_missing_weight_is_named() {
    let bytes = edited(|t, _| {
        t.remove("features.3.weight");
    });
    assert!(matches!(load(&bytes), RspError::MissingWeight(name) if name == "features.3.weight"));
}

#[test]
fn a_misshaped_weight_is_reported_with_both_shapes() {
    let bytes = edited(|t, _| {
        let (_, d) = t.remove("features.3.weight").unwrap();
        t.insert("features.3.weight".into(), (vec![16, 8, 9], d));
    });
    let err = load(&bytes);
    assert!(matches!(&err, RspError::Shape { found, .. } if found == &vec![16, 8, 9]), "{err}");
    assert!(err.to_string().contains("[16, 8, 3, 3]"), "{err}");
}

#[test]
fn non_finite_weights_are_rejected() {
    let bytes = edited(|t, _| {
        let (_, d) = t.get_mut("classifier.0.bias").unwrap();
        d[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    assert!(matches!(load(&bytes), RspError::NonFinite { tensor, index: 1 } if tensor.contains("classifier.0.bias")));
}

#[test]
fn a_file_without_architecture_or_a_broken_file_is_a_format_error() {
    let bytes = edited(|_, m| {
        m.remove("layers");
    });
    assert!(matches!(load(&bytes), RspError::Format { .. }));
    let real = std::fs::read(data("golden/vgg_tiny.safetensors")).unwrap();
    for cut in [0, 7, 8, 100, real.len() / 2, real.len() - 1] {
        assert!(matches!(load(&real[..cut]), RspError::Format { .. }), "cut at {cut}");
    }
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let err = Network::<f32>::load("no/such/model.safetensors").unwrap_err();
    assert!(matches!(&err, RspError::Io { path, .. } if path.contains("no/such/model")), "{err}");
}

/// Every field the `layers` format does not define is refused by name, and so
/// is every value that changes what a layer computes in a way this crate does
/// not implement; the plain values and the descriptive fields load, and give
/// the logits of the unedited file.
#[test]
fn layer_fields_outside_the_format_or_with_unsupported_values_are_refused_by_name() {
    let with = |file: &str, from: &str, to: &str| {
        edited_file(file, |_, m| {
            assert!(m["layers"].contains(from), "{from} in {file}");
            let layers = m["layers"].replacen(from, to, 1);
            m.insert("layers".into(), layers);
        })
    };
    let conv = "\"type\": \"conv2d\"";
    let bn = "\"type\": \"batchnorm2d\"";
    let avg = "\"type\": \"avgpool2d\"";
    let max = "\"type\": \"maxpool2d\"";
    let relu = "\"type\": \"relu\"";
    let (tiny, tiny_bn, avg_file) =
        ("golden/vgg_tiny.safetensors", "golden/vgg_tiny_bn.safetensors", "golden/avgpool_stride_rect.safetensors");
    let refused = [
        (tiny, conv, "\"stide\": 2", "`stide`"),
        (tiny, relu, "\"negative_slope\": 0.1", "`negative_slope`"),
        (tiny, max, "\"kernal\": 3", "`kernal`"),
        (tiny, conv, "\"padding_mode\": \"reflect\"", "padding_mode"),
        (tiny, conv, "\"padding_mode\": \"circular\"", "padding_mode"),
        (tiny, conv, "\"bias\": false", "bias"),
        (tiny, max, "\"return_indices\": true", "return_indices"),
        (avg_file, avg, "\"divisor_override\": 3", "divisor_override"),
        (tiny_bn, bn, "\"track_running_stats\": false", "track_running_stats"),
        (tiny_bn, bn, "\"affine\": false", "affine"),
        (tiny_bn, bn, "\"num_features\": 9", "num_features"),
        (tiny_bn, bn, "\"momentum\": \"fast\"", "momentum"),
        (tiny, relu, "\"inplace\": 1", "inplace"),
    ];
    for (file, at, field, named) in refused {
        let bytes = with(file, at, &format!("{at}, {field}"));
        let err = rsp::io::safetensors::from_bytes::<f64>(&bytes, file).unwrap_err();
        assert!(matches!(err, RspError::Model(_)), "{field}: {err}");
        let text = err.to_string();
        assert!(text.contains(named) && text.contains("layer "), "{field}: {text}");
    }
    let accepted = [
        (tiny, conv, "\"padding_mode\": \"zeros\", \"dilation\": 1, \"groups\": 1, \"bias\": true"),
        (tiny, relu, "\"inplace\": true, \"name\": \"features.1\", \"comment\": \"anything\""),
        (tiny, max, "\"return_indices\": false, \"ceil_mode\": false, \"dilation\": 1"),
        (avg_file, avg, "\"divisor_override\": null, \"ceil_mode\": false"),
        (tiny_bn, bn, "\"track_running_stats\": true, \"affine\": true, \"num_features\": 8, \"momentum\": 0.1"),
        (tiny_bn, bn, "\"momentum\": null"),
    ];
    for (file, at, fields) in accepted {
        let plain = rsp::io::safetensors::load::<f64>(data(file)).unwrap();
        let net = rsp::io::safetensors::from_bytes::<f64>(&with(file, at, &format!("{at}, {fields}")), file)
            .unwrap_or_else(|e| panic!("{fields}: {e}"));
        let shape = plain.input_shape().unwrap().to_vec();
        let x = input((1, shape[0], shape[1], shape[2]));
        assert_eq!(net.forward(x.view()).unwrap(), plain.forward(x.view()).unwrap(), "{fields}");
    }
}

#[test]
fn fields_that_change_a_layer_are_checked_and_harmless_extra_fields_ignored() {
    let with = |from: &str, to: &str| {
        edited(|_, m| {
            let layers = m["layers"].replacen(from, to, 1);
            m.insert("layers".into(), layers);
        })
    };
    let ceil = with("\"type\": \"maxpool2d\"", "\"type\": \"maxpool2d\", \"ceil_mode\": true");
    assert!(load(&ceil).to_string().contains("ceil_mode"), "{}", load(&ceil));
    let dilated = with("\"type\": \"conv2d\"", "\"type\": \"conv2d\", \"dilation\": 2");
    assert!(load(&dilated).to_string().contains("dilation"), "{}", load(&dilated));
    let grouped = with("\"type\": \"conv2d\"", "\"type\": \"conv2d\", \"groups\": 2");
    assert!(load(&grouped).to_string().contains("groups"));
    let plain = with("\"type\": \"conv2d\"", "\"type\": \"conv2d\", \"dilation\": 1, \"padding_mode\": \"zeros\"");
    assert!(rsp::io::safetensors::from_bytes::<f64>(&plain, "plain.safetensors").is_ok());
}

#[test]
fn class_names_must_match_the_logits() {
    let bytes = edited(|_, m| {
        m.insert("classes".into(), "[\"a\", \"b\"]".into());
    });
    let net = rsp::io::safetensors::from_bytes::<f64>(&bytes, "named.safetensors").unwrap();
    let err = net.attribute(input((1, 3, 32, 32)).view(), 0).unwrap_err();
    assert!(err.to_string().contains("names 2 classes but computes 10 logits"), "{err}");
}
