//! Canonizers: rewrite a network into one that computes the same function but
//! whose layers suit a method's rules, as zennit's canonizers do before its
//! composites run. The original network is left as it is.
//!
//! [`merge_batch_norm`] folds every batch norm that directly follows a
//! convolution into that convolution (zennit's `SequentialMergeBatchNorm`),
//! keeping the network's function; [`merge_batch_norm_as_zennit`] leaves what
//! zennit 0.5.1 leaves (a near-identity batch norm), and zennit's LRP
//! composites ([`crate::attribution::ZennitComposite`]) run on that network.
//! RSP keeps batch norm as a layer of its own (it has its own rule there).

use crate::error::{Result, RspError};
use crate::float::Float;
use crate::layers::{BatchNorm2d, Conv2d, Layer};
use crate::network::{Network, Node, NodeOp, Source};
use ndarray::{Array1, Axis, Zip};

/// Folds each `BatchNorm2d` whose input is the output of a `Conv2d` read by
/// nothing else into that convolution, and drops the batch norm node:
/// with `s = γ / sqrt(σ² + ε)` per channel, `W' = W·s` (per output channel)
/// and `b' = (b − μ)·s + β` (`b = 0` for a convolution without bias). The
/// result computes the same function up to rounding (zennit's
/// `SequentialMergeBatchNorm`, with its order of operations). A batch norm
/// after anything else, or after a convolution whose output another node
/// also reads, stays as it is. Node indices shift down past each dropped node;
/// the start layer follows (a start layer on a dropped batch norm moves to its
/// convolution, whose output is now the same tensor).
///
/// ```
/// use rsp::backend::ConvGeometry;
/// use rsp::layers::{BatchNorm2d, Conv2d, Flatten, Linear, Relu};
/// use rsp::ndarray::{arr1, Array2, Array4};
/// let mut net = rsp::Network::<f64>::new();
/// net.push(Conv2d::new("c", Array4::from_elem((2, 1, 3, 3), 0.5), None, ConvGeometry::square(1, 1)).unwrap());
/// net.push(BatchNorm2d::new("bn", arr1(&[2.0, 1.0]), arr1(&[0.5, -1.0]), arr1(&[0.1, 0.2]), arr1(&[4.0, 1.0]), 0.0).unwrap());
/// net.push(Relu);
/// net.push(Flatten);
/// net.push(Linear::new("fc", Array2::from_elem((3, 2 * 4 * 4), 0.1), None).unwrap());
/// let folded = rsp::canonize::merge_batch_norm(&net).unwrap();
/// assert_eq!((net.len(), folded.len()), (5, 4));
/// let x = Array4::from_shape_fn((1, 1, 4, 4), |(_, _, i, j)| i as f64 - j as f64 * 0.5);
/// let (a, b) = (net.forward(&x).unwrap(), folded.forward(&x).unwrap());
/// assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-12));
/// ```
///
/// # Errors
/// [`RspError::Model`] if a node reads a node that does not come before it.
pub fn merge_batch_norm<T: Float>(net: &Network<T>) -> Result<Network<T>> {
    merge(net, Residue::None)
}

/// [`merge_batch_norm`] as zennit 0.5.1's `SequentialMergeBatchNorm` leaves
/// the network: the batch norm stays, set to `γ = 1, β = 0, μ = 0, σ² = 1`
/// but with its `ε`, so it still divides by `sqrt(1 + ε)` (a relative change
/// of 5e-6 per batch norm at ε = 1e-5, which reaches the LRP maps through the
/// biases and stabilisers of the layers after it). zennit's composites
/// ([`crate::Method::EpsilonPlusFlat`], [`crate::Method::EpsilonGammaBox`]) run
/// on this network to give zennit's numbers; node indices are unchanged.
///
/// ```
/// use rsp::backend::ConvGeometry;
/// use rsp::layers::{BatchNorm2d, Conv2d, Flatten};
/// use rsp::ndarray::{arr1, Array4};
/// let mut net = rsp::Network::<f64>::new();
/// net.push(Conv2d::new("c", Array4::from_elem((1, 1, 1, 1), 2.0), None, ConvGeometry::square(1, 0)).unwrap());
/// net.push(BatchNorm2d::new("bn", arr1(&[3.0]), arr1(&[1.0]), arr1(&[0.0]), arr1(&[1.0]), 0.25).unwrap());
/// net.push(Flatten);
/// let x = Array4::from_elem((1, 1, 1, 1), 1.0);
/// let y = net.forward(&x).unwrap()[[0, 0]]; // 3·2/sqrt(1.25) + 1
/// let exact = rsp::canonize::merge_batch_norm(&net).unwrap();
/// let zennit = rsp::canonize::merge_batch_norm_as_zennit(&net).unwrap();
/// assert_eq!((exact.len(), zennit.len()), (2, 3));
/// assert!((exact.forward(&x).unwrap()[[0, 0]] - y).abs() < 1e-15);
/// assert!((zennit.forward(&x).unwrap()[[0, 0]] - y / 1.25f64.sqrt()).abs() < 1e-15);
/// ```
///
/// # Errors
/// As [`merge_batch_norm`].
pub fn merge_batch_norm_as_zennit<T: Float>(net: &Network<T>) -> Result<Network<T>> {
    merge(net, Residue::AsZennit)
}

/// What a folded batch norm leaves behind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Residue {
    /// Nothing: the node is dropped.
    None,
    /// zennit's batch norm with identity statistics and its own ε.
    AsZennit,
}

fn merge<T: Float>(net: &Network<T>, residue: Residue) -> Result<Network<T>> {
    let nodes = net.nodes();
    let mut readers = vec![0usize; nodes.len()];
    for (k, node) in nodes.iter().enumerate() {
        for &s in node.inputs() {
            if let Source::Node(j) = s {
                if j >= k {
                    return Err(RspError::model(format!("node #{k} reads node #{j}, which does not come before it")));
                }
                readers[j] += 1;
            }
        }
    }
    // The convolution each foldable batch norm node reads, by the batch norm's index.
    let folds: Vec<Option<usize>> = nodes
        .iter()
        .map(|node| {
            let bn = node.layer()?.downcast_ref::<BatchNorm2d<T>>()?;
            let Source::Node(j) = node.inputs()[0] else { return None };
            let conv = nodes[j].layer()?.downcast_ref::<Conv2d<T>>()?;
            (readers[j] == 1 && conv.weight().dim().0 == bn.parameters().0.len()).then_some(j)
        })
        .collect();
    // Where each old node's output is in the new network.
    let mut moved: Vec<Source> = Vec::with_capacity(nodes.len());
    let mut kept: Vec<Node<T>> = Vec::with_capacity(nodes.len());
    let remap = |s: Source, moved: &[Source]| match s {
        Source::Input => Source::Input,
        Source::Node(j) => moved[j],
    };
    for (k, node) in nodes.iter().enumerate() {
        if let Some(j) = folds[k] {
            let Source::Node(new_conv) = moved[j] else { unreachable!("a convolution node maps to a node") };
            let bn = node.layer().and_then(|l| l.downcast_ref::<BatchNorm2d<T>>()).expect("checked above");
            let conv = kept[new_conv].layer().and_then(|l| l.downcast_ref::<Conv2d<T>>()).expect("checked above");
            kept[new_conv].op = NodeOp::Layer(Box::new(fold(conv, bn)?));
            if residue == Residue::AsZennit {
                let (gamma, .., eps) = bn.parameters();
                let c = gamma.len();
                let (ones, zeros) = (Array1::ones(c), Array1::zeros(c));
                let identity = BatchNorm2d::new(
                    node.layer().map_or("", |l| l.name()),
                    ones.clone(),
                    zeros.clone(),
                    zeros,
                    ones,
                    eps,
                )?;
                kept.push(Node { op: NodeOp::Layer(Box::new(identity)), inputs: vec![Source::Node(new_conv)] });
                moved.push(Source::Node(kept.len() - 1));
            } else {
                moved.push(Source::Node(new_conv));
            }
            continue;
        }
        let inputs = node.inputs().iter().map(|&s| remap(s, &moved)).collect();
        kept.push(Node { op: node.op().clone(), inputs });
        moved.push(Source::Node(kept.len() - 1));
    }
    let start = net.start_layer_setting().and_then(|s| match moved.get(s) {
        Some(Source::Node(k)) => Some(*k),
        _ => None,
    });
    Ok(net.with_nodes(kept, start))
}

/// The convolution `bn ∘ conv` (see [`merge_batch_norm`]).
fn fold<T: Float>(conv: &Conv2d<T>, bn: &BatchNorm2d<T>) -> Result<Conv2d<T>> {
    let (gamma, beta, mean, var, eps) = bn.parameters();
    let scale = Zip::from(gamma).and(var).map_collect(|&g, &v| g / (v + eps).sqrt());
    let mut weight = conv.weight().clone();
    for (mut w, &s) in weight.axis_iter_mut(Axis(0)).zip(&scale) {
        w.mapv_inplace(|v| v * s);
    }
    let bias = conv.bias().cloned().unwrap_or_else(|| Array1::zeros(scale.len()));
    let bias = Zip::from(&bias).and(mean).and(&scale).and(beta).map_collect(|&b, &m, &s, &be| (b - m) * s + be);
    Conv2d::new(conv.name(), weight, Some(bias), *conv.geometry())
}
