//! Bit fingerprints of every method's outputs (relevance, maps, logits, start
//! relevance, per-node traces, targets, hostile classes) on the golden cases
//! (f64 and f32, a batch of two) and on the digits model: run it on two
//! commits and diff the outputs to show that a refactor of the engine left
//! every bit unchanged (issue #11 asks the CPU backend to stay bit-identical).
//!
//! `cargo run --release --example fingerprint > after.txt`

use rsp::ndarray::{concatenate, Array4, ArrayD, Axis, IxDyn};
use rsp::{Float, HostileClasses, Method, Network, RspOptions, StartRule, Target};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// FNV-1a over the values' f64 bit patterns, and the number of values.
fn hash<T: Float>(values: impl Iterator<Item = T>) -> String {
    let (mut h, mut n) = (0xcbf2_9ce4_8422_2325u64, 0usize);
    for v in values {
        for byte in v.to_f64_exact().to_bits().to_le_bytes() {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        n += 1;
    }
    format!("{h:016x}/{n}")
}

fn optional<T: Float>(a: Option<&ArrayD<T>>) -> String {
    a.map_or_else(|| "-".into(), |a| hash(a.iter().copied()))
}

fn fingerprint<T: Float>(name: &str, net: &Network<T>, input: &Array4<T>) -> rsp::Result<()> {
    let mut methods = Method::ALL.to_vec();
    methods.push(Method::LrpEpsilon(0.0));
    methods.push(Method::Rsp(RspOptions { keep_layer_relevances: true, ..Default::default() }));
    methods.push(Method::Rsp(RspOptions {
        start: StartRule::Comparative(HostileClasses::TopK(2)),
        keep_layer_relevances: true,
        ..Default::default()
    }));
    for method in methods {
        let e = net.explain(input, Target::Predicted, &method)?;
        let traces: Vec<String> = e.layer_relevances.iter().flatten().map(|t| optional(t.as_ref())).collect();
        println!(
            "{name} {} {method:?}: relevance {} maps {} logits {} start {} targets {:?} hostile {:?} traces {}",
            T::NAME,
            optional(e.relevance.map(|r| r.into_dyn()).as_ref()),
            hash(e.heatmaps.iter().copied()),
            hash(e.logits.iter().copied()),
            optional(e.start_relevance.as_ref()),
            e.targets,
            e.hostile_classes,
            traces.join(",")
        );
    }
    Ok(())
}

/// The golden file's `input` tensor (float32) as f64.
fn golden_input(path: &str) -> Result<Array4<f64>, Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    let file = SafeTensors::deserialize(&bytes)?;
    let t = file.tensor("input")?;
    if t.dtype() != Dtype::F32 {
        return Err(format!("{path}: input is {:?}, not F32", t.dtype()).into());
    }
    let values: Vec<f64> =
        t.data().chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
    Ok(ArrayD::from_shape_vec(IxDyn(t.shape()), values)?.into_dimensionality()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = env!("CARGO_MANIFEST_DIR");
    for case in ["vgg_tiny", "vgg_tiny_bn", "avgpool_stride_rect", "resnet_basic_tiny", "resnet_bottleneck_tiny"] {
        let path = format!("{root}/tests/data/golden/{case}.safetensors");
        let x = golden_input(&path)?;
        // A batch of two: the golden input and a shifted copy.
        let shifted = x.mapv(|v| 0.8 * v - 0.05);
        let batch = concatenate(Axis(0), &[x.view(), shifted.view()])?;
        fingerprint(case, &Network::<f64>::load(&path)?, &batch)?;
        fingerprint(case, &Network::<f32>::load(&path)?, &batch.mapv(|v| v as f32))?;
    }
    let digits = Network::<f32>::load(format!("{root}/data/digits_vgg.safetensors"))?;
    let x = Array4::from_shape_fn((3, 3, 64, 64), |(n, c, i, j)| {
        ((n * 7 + c * 3 + i * 5 + j * 11) % 17) as f32 / 17.0 - 0.4
    });
    fingerprint("digits", &digits, &x)?;
    Ok(())
}
