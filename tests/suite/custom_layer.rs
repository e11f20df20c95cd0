//! A layer written outside the crate: it implements only what defines it
//! (kind, shape, forward, gradient, RSP rule, description); cloning and
//! downcasting come from the crate, and it says it is an activation, so the
//! automatic start layer can be its output.

use rsp::backend::{Backend, ConvGeometry};
use rsp::layers::{AdaptiveAvgPool2d, Conv2d, Flatten, Layer, LayerKind, Linear, MaxPool2d, Relu, RuleContext};
use rsp::ndarray::{Array1, Array2, Array4, ArrayD, ArrayViewD, Zip};
use rsp::{Method, Network, RspOptions};

/// max(x, 0), written by a user.
#[derive(Clone, Debug)]
struct MyRelu;

impl Layer<f64> for MyRelu {
    fn kind(&self) -> LayerKind {
        LayerKind::Custom
    }
    fn is_activation(&self) -> bool {
        true
    }
    fn output_shape(&self, input: &[usize]) -> rsp::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&self, _: &dyn Backend<f64>, x: ArrayViewD<f64>) -> rsp::Result<ArrayD<f64>> {
        Ok(x.mapv(|v| v.max(0.0)))
    }
    fn gradient(&self, _: &dyn Backend<f64>, x: ArrayViewD<f64>, g: ArrayViewD<f64>) -> rsp::Result<ArrayD<f64>> {
        let mut out = g.to_owned();
        Zip::from(&mut out).and(&x).for_each(|o, &v| {
            if v <= 0.0 {
                *o = 0.0
            }
        });
        Ok(out)
    }
    fn rsp_backward(
        &self,
        _: &dyn Backend<f64>,
        _: ArrayViewD<f64>,
        relevance: ArrayViewD<f64>,
        _: RuleContext,
    ) -> rsp::Result<ArrayD<f64>> {
        Ok(relevance.to_owned())
    }
    fn describe(&self) -> String {
        "my-relu".into()
    }
}

/// conv → activation → conv → activation → max pool → classifier, with either activation.
fn network(activation: impl Fn() -> Box<dyn Layer<f64>>) -> Network<f64> {
    let w = |shape: (usize, usize, usize, usize), seed: usize| {
        Array4::from_shape_fn(shape, |(o, c, u, v)| (((o * 7 + c * 5 + u * 3 + v + seed) % 11) as f64 - 5.0) * 0.07)
    };
    let mut net = Network::new();
    net.push(
        Conv2d::new("c0", w((6, 3, 3, 3), 1), Some(Array1::from_elem(6, 0.01)), ConvGeometry::square(1, 1)).unwrap(),
    );
    net.push_boxed(activation(), net.last());
    net.push(Conv2d::new("c1", w((6, 6, 3, 3), 2), None, ConvGeometry::square(1, 1)).unwrap());
    net.push_boxed(activation(), net.last());
    net.push(MaxPool2d::new((2, 2), (2, 2), [0; 4]));
    net.push(AdaptiveAvgPool2d::new((2, 2)));
    net.push(Flatten);
    net.push(
        Linear::new("fc", Array2::from_shape_fn((4, 24), |(i, j)| ((i * 5 + j) % 7) as f64 * 0.1 - 0.3), None).unwrap(),
    );
    net
}

#[test]
fn a_custom_activation_is_chosen_as_the_start_layer_and_gives_the_builtin_result() {
    let custom = network(|| Box::new(MyRelu));
    let builtin = network(|| Box::new(Relu));
    // The automatic start layer is the last activation before the pooling: node 3.
    assert_eq!(custom.default_start_layer().unwrap(), 3);
    assert_eq!(builtin.default_start_layer().unwrap(), 3);

    let x =
        Array4::from_shape_fn((2, 3, 8, 8), |(n, c, i, j)| (((n + c * 3 + i * 5 + j * 7) % 13) as f64) / 13.0 - 0.2);
    for method in [Method::Rsp(RspOptions::SINGLE_CLASS), Method::Rsp(RspOptions::COMPARATIVE), Method::Gradient] {
        let a = custom.explain(&x, [1, 2], &method).unwrap();
        let b = builtin.explain(&x, [1, 2], &method).unwrap();
        // The same function, so the same numbers bit for bit (an independent implementation of ReLU).
        assert_eq!(a.relevance, b.relevance, "{method}");
        assert_eq!(a.logits, b.logits, "{method}");
    }
    // RSP conserves the start relevance through the custom layer.
    let e = custom.explain(&x, 1, RspOptions::default()).unwrap();
    let (r, s) = (e.relevance.unwrap(), e.start_relevance.unwrap());
    assert!((r.sum() - s.sum()).abs() < 1e-12 * s.sum().abs().max(1.0));
}

#[test]
fn custom_layers_clone_and_downcast_without_boilerplate() {
    let net = network(|| Box::new(MyRelu));
    let copy = net.clone();
    let layer = copy.nodes()[1].layer().unwrap();
    assert_eq!(layer.describe(), "my-relu");
    assert!(layer.downcast_ref::<MyRelu>().is_some());
    assert!(layer.downcast_ref::<Relu>().is_none());
    let boxed: Box<dyn Layer<f64>> = Box::new(MyRelu);
    assert_eq!(boxed.clone().describe(), "my-relu");
}
