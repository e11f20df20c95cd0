//! Any bytes as a `layers`-format safetensors model: an error or a network,
//! never a panic; a network that loads attributes a small input finitely or errs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsp::Network;

fuzz_target!(|data: &[u8]| {
    if let Ok(net) = rsp::io::safetensors::from_bytes::<f32>(data, "fuzz.safetensors") {
        let shape = net
            .input_shape()
            .map(<[usize]>::to_vec)
            .unwrap_or_else(|| vec![3, 8, 8]);
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
    }
});
