//! Any bytes as an ONNX model: parsing and mapping onto a network give an
//! error or a network, never a panic; a network that loads attributes a small
//! input finitely or errs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsp::io::onnx::parse_onnx_bytes;
use rsp::Network;

fuzz_target!(|data: &[u8]| {
    let Ok(graph) = parse_onnx_bytes(data, "fuzz.onnx") else {
        return;
    };
    let Ok(net) = rsp::io::onnx::import::<f32>(&graph, "fuzz.onnx") else {
        return;
    };
    let Some(shape) = net.input_shape().map(<[usize]>::to_vec) else {
        return;
    };
    let small = net.check(&shape).is_ok_and(|shapes| {
        shapes
            .iter()
            .all(|s| s.iter().product::<usize>() <= 1 << 16)
    });
    if small && shape.iter().product::<usize>() <= 1 << 14 {
        let x = ndarray::Array4::from_elem((1, shape[0], shape[1], shape[2]), 0.25f32);
        if let Ok((pos, hostile)) = net.attribute(x.view(), 0) {
            assert!(pos.iter().chain(hostile.iter()).all(|v| v.is_finite()));
        }
    }
});
