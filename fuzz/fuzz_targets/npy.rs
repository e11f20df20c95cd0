//! Any bytes as a `.npy` array in f32 and f64: an error or an array, never a
//! panic, and both readers agree on the shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsp::io::npy::parse_npy;

fuzz_target!(|data: &[u8]| {
    let a = parse_npy::<f32>(data, "fuzz.npy");
    let b = parse_npy::<f64>(data, "fuzz.npy");
    if let (Ok(a), Ok(b)) = (&a, &b) {
        assert_eq!(a.shape(), b.shape());
    }
});
