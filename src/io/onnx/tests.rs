//! Unit tests of the ONNX reader on models built message by message, so
//! every malformed case is exact and needs no fixture file.

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use super::*;

fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn zeros(name: &str, dims: &[i64]) -> TensorProto {
    let n: i64 = dims.iter().product();
    f32_tensor(name, dims, &vec![0.0; n as usize])
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(ty as i32), ..Default::default() }
}
fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { ints: v.to_vec(), ..attr(name, AttributeType::Ints) }
}
fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { i: Some(v), ..attr(name, AttributeType::Int) }
}
fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { f: Some(v), ..attr(name, AttributeType::Float) }
}
fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto { s: Some(v.as_bytes().to_vec()), ..attr(name, AttributeType::String) }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                None => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// X[N,1,4,4] -> Conv(3x3, pad 1) -> Relu -> Flatten -> Gemm -> Y.
fn base() -> ModelProto {
    let graph = GraphProto {
        node: vec![
            node(
                "Conv",
                "conv",
                &["X", "W", "B"],
                &["c"],
                vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
            ),
            node("Relu", "relu", &["c"], &["r"], vec![]),
            node("Flatten", "flat", &["r"], &["f"], vec![]),
            node("Gemm", "fc", &["f", "W2", "B2"], &["Y"], vec![int("transB", 1)]),
        ],
        initializer: vec![zeros("W", &[2, 1, 3, 3]), zeros("B", &[2]), zeros("W2", &[3, 32]), zeros("B2", &[3])],
        input: vec![value_info("X", &[None, Some(1), Some(4), Some(4)])],
        output: vec![value_info("Y", &[None, Some(3)])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn graph_mut(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

fn parse(m: &ModelProto) -> Result<OnnxGraph> {
    parse_onnx_bytes(&m.encode_to_vec(), "<test>")
}

/// Parses a model that must be rejected, returning the error message.
fn reject(m: &ModelProto) -> String {
    match parse(m) {
        Ok(g) => panic!("expected an error, parsed {g:?}"),
        Err(e) => e.to_string(),
    }
}

/// Base model whose first node is replaced by a one-input `op` on X.
fn with_first(op: NodeProto) -> ModelProto {
    let mut m = base();
    let g = graph_mut(&mut m);
    g.node[0] = op;
    m
}

#[test]
fn base_model_parses_with_defaults() {
    let g = parse(&base()).unwrap();
    assert_eq!(g.opset, 17);
    let ops: Vec<_> = g.nodes.iter().map(|n| n.op.op_type()).collect();
    assert_eq!(ops, ["Conv", "Relu", "Flatten", "Gemm"]);
    assert_eq!(g.nodes[0].op, OnnxOp::Conv { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] });
    assert_eq!(g.nodes[2].op, OnnxOp::Flatten { axis: 1 });
    assert_eq!(g.nodes[3].op, OnnxOp::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true });
    assert_eq!(g.input, OnnxValueInfo { name: "X".into(), dims: vec![None, Some(1), Some(4), Some(4)] });
    assert_eq!(g.output, "Y");
    assert_eq!(g.initializers["W"].shape(), [2, 1, 3, 3]);
    assert_eq!(g.initializers.len(), 4);
}

#[test]
fn conv_kernel_shape_is_inferred_from_the_weight() {
    let m = with_first(node("Conv", "conv", &["X", "W", "B"], &["c"], vec![ints("strides", &[2, 1])]));
    let g = parse(&m).unwrap();
    assert_eq!(g.nodes[0].op, OnnxOp::Conv { kernel_shape: [3, 3], strides: [2, 1], pads: [0; 4] });
}

#[test]
fn conv_without_bias_has_two_inputs_and_trailing_empty_names_are_dropped() {
    let m = with_first(node("Conv", "conv", &["X", "W", ""], &["c"], vec![]));
    let g = parse(&m).unwrap();
    assert_eq!(g.nodes[0].inputs, ["X", "W"]);
}

#[test]
fn pooling_and_batchnorm_defaults() {
    let mut m = base();
    let g = graph_mut(&mut m);
    g.node[1] = node("MaxPool", "mp", &["c"], &["m"], vec![ints("kernel_shape", &[2, 2])]);
    g.node.insert(2, node("AveragePool", "ap", &["m"], &["a"], vec![ints("kernel_shape", &[1, 2])]));
    g.node.insert(3, node("BatchNormalization", "bn", &["a", "s", "b", "mu", "var"], &["r"], vec![]));
    for n in ["s", "b", "mu", "var"] {
        g.initializer.push(zeros(n, &[2]));
    }
    let g = parse(&m).unwrap();
    assert_eq!(g.nodes[1].op, OnnxOp::MaxPool { kernel_shape: [2, 2], strides: [1, 1], pads: [0; 4] });
    assert_eq!(
        g.nodes[2].op,
        OnnxOp::AveragePool { kernel_shape: [1, 2], strides: [1, 1], pads: [0; 4], count_include_pad: false }
    );
    assert_eq!(g.nodes[3].op, OnnxOp::BatchNormalization { epsilon: f64::from(1e-5_f32) });
}

#[test]
fn explicit_attributes_are_read() {
    let mut m = base();
    let g = graph_mut(&mut m);
    g.node[1] = node(
        "AveragePool",
        "ap",
        &["c"],
        &["r"],
        vec![
            ints("kernel_shape", &[3, 2]),
            ints("strides", &[2, 3]),
            ints("pads", &[1, 0, 0, 1]),
            int("count_include_pad", 1),
            string("auto_pad", "NOTSET"),
        ],
    );
    g.node[2] = node("Flatten", "flat", &["r"], &["f"], vec![int("axis", -3)]);
    g.node[3] = node(
        "Gemm",
        "fc",
        &["f", "W2"],
        &["Y"],
        vec![float("alpha", 0.5), float("beta", 2.0), int("transA", 1), int("transB", 0)],
    );
    let g = parse(&m).unwrap();
    assert_eq!(
        g.nodes[1].op,
        OnnxOp::AveragePool { kernel_shape: [3, 2], strides: [2, 3], pads: [1, 0, 0, 1], count_include_pad: true }
    );
    assert_eq!(g.nodes[2].op, OnnxOp::Flatten { axis: -3 });
    assert_eq!(g.nodes[3].op, OnnxOp::Gemm { alpha: 0.5, beta: 2.0, trans_a: true, trans_b: false });
}

#[test]
fn auto_pad_valid_is_exact_and_same_is_rejected() {
    let m = with_first(node("Conv", "conv", &["X", "W"], &["c"], vec![string("auto_pad", "VALID")]));
    assert!(matches!(parse(&m).unwrap().nodes[0].op, OnnxOp::Conv { pads: [0, 0, 0, 0], .. }));
    let m = with_first(node("Conv", "conv", &["X", "W"], &["c"], vec![string("auto_pad", "SAME_UPPER")]));
    let e = reject(&m);
    assert!(e.contains("auto_pad SAME_UPPER") && e.contains("node 'conv' (Conv)"), "{e}");
}

#[test]
fn unsupported_attribute_values_are_errors() {
    let cases = [
        (node("Conv", "c", &["X", "W"], &["c"], vec![int("group", 2)]), "group=2"),
        (node("Conv", "c", &["X", "W"], &["c"], vec![ints("dilations", &[2, 2])]), "dilations"),
        (node("Conv", "c", &["X", "W"], &["c"], vec![ints("kernel_shape", &[5, 5])]), "does not match"),
        (node("Conv", "c", &["X", "W"], &["c"], vec![ints("kernel_shape", &[3, 3, 3])]), "only 2-D"),
        (node("Conv", "c", &["X", "W"], &["c"], vec![ints("strides", &[0, 1])]), "strides value 0"),
        (node("Conv", "c", &["X", "W"], &["c"], vec![ints("pads", &[-1, 0, 0, 0])]), "negative"),
        (node("Conv", "c", &["X", "W"], &["c"], vec![float("pads", 1.0)]), "should be INTS, found FLOAT"),
        (node("Conv", "c", &["X", "W"], &["c"], vec![int("group", 1), int("group", 1)]), "given twice"),
        (node("MaxPool", "c", &["X"], &["c"], vec![ints("kernel_shape", &[2, 2]), int("ceil_mode", 1)]), "ceil_mode=1"),
        (node("MaxPool", "c", &["X"], &["c"], vec![]), "kernel_shape is missing"),
        (node("MaxPool", "c", &["X"], &["c", "idx"], vec![ints("kernel_shape", &[2, 2])]), "2 outputs"),
        (
            node("AveragePool", "c", &["X"], &["c"], vec![ints("kernel_shape", &[2, 2]), ints("dilations", &[1, 2])]),
            "dilations",
        ),
        (node("BatchNormalization", "c", &["X", "W"], &["c"], vec![]), "expected 5"),
        (node("Relu", "c", &["X", "X"], &["c"], vec![]), "has 2 inputs"),
        (node("Dropout", "c", &["X", "r", "t"], &["c"], vec![]), "has 3 inputs"),
        (node("Dropout", "c", &["X"], &["c", "mask"], vec![]), "2 outputs"),
        (node("Relu", "c", &["", "X"], &["c"], vec![]), "optional input #0 is omitted"),
    ];
    for (n, want) in cases {
        let e = reject(&with_first(n));
        assert!(e.contains(want), "expected `{want}` in: {e}");
    }
}

#[test]
fn batchnorm_training_mode_is_rejected() {
    let mut m = with_first(node(
        "BatchNormalization",
        "bn",
        &["X", "s", "b", "mu", "var"],
        &["c"],
        vec![int("training_mode", 1)],
    ));
    for n in ["s", "b", "mu", "var"] {
        graph_mut(&mut m).initializer.push(zeros(n, &[1]));
    }
    assert!(reject(&m).contains("training_mode=1"));
}

#[test]
fn unknown_op_names_node_and_op() {
    let e = reject(&with_first(node("LRN", "/lrn/LRN", &["X"], &["c"], vec![])));
    assert!(e.contains("/lrn/LRN") && e.contains("'LRN' is not supported"), "{e}");
    let mut n = node("Relu", "custom", &["X"], &["c"], vec![]);
    n.domain = Some("com.example".into());
    assert!(reject(&with_first(n)).contains("domain 'com.example'"));
}

#[test]
fn unsorted_nodes_are_sorted_and_sorted_ones_keep_their_order() {
    let mut m = base();
    graph_mut(&mut m).node.reverse();
    let g = parse(&m).unwrap();
    let names: Vec<_> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["conv", "relu", "flat", "fc"]);
}

#[test]
fn cycle_is_an_error() {
    let mut m = base();
    // relu now also reads the Flatten output, which depends on relu.
    graph_mut(&mut m).node[1] = node("Add", "add", &["c", "f"], &["r"], vec![]);
    let e = reject(&m);
    assert!(e.contains("cycle"), "{e}");
    // A node reading its own output.
    let mut m = base();
    graph_mut(&mut m).node[1] = node("Add", "self", &["c", "r"], &["r"], vec![]);
    assert!(reject(&m).contains("cycle"));
}

#[test]
fn undefined_and_duplicate_values_are_errors() {
    let mut m = base();
    graph_mut(&mut m).node[1].input[0] = "nowhere".into();
    assert!(reject(&m).contains("input 'nowhere' is not defined"));

    let mut m = base();
    graph_mut(&mut m).node[2].output[0] = "r".into();
    assert!(reject(&m).contains("produced twice"));

    let mut m = base();
    graph_mut(&mut m).node[1].output[0] = "W2".into();
    assert!(reject(&m).contains("redefines"));

    let mut m = base();
    graph_mut(&mut m).output[0].name = Some("missing".into());
    assert!(reject(&m).contains("'missing' is not produced"));

    let mut m = base();
    let dup = zeros("W", &[2, 1, 3, 3]);
    graph_mut(&mut m).initializer.push(dup);
    assert!(reject(&m).contains("defined twice"));
}

#[test]
fn graph_inputs_and_outputs_are_counted() {
    // Initializers listed as inputs (older exporters) are fine.
    let mut m = base();
    graph_mut(&mut m).input.push(value_info("W", &[Some(2), Some(1), Some(3), Some(3)]));
    assert!(parse(&m).is_ok());

    let mut m = base();
    graph_mut(&mut m).input.push(value_info("X2", &[Some(1)]));
    assert!(reject(&m).contains("2 inputs that are not initializers"));

    let mut m = base();
    graph_mut(&mut m).output.push(value_info("c", &[]));
    assert!(reject(&m).contains("2 outputs"));

    let mut m = base();
    graph_mut(&mut m).output.clear();
    assert!(reject(&m).contains("0 outputs"));
}

#[test]
fn model_level_errors() {
    assert!(parse_onnx_bytes(&[], "<empty>").unwrap_err().to_string().contains("no default"));
    let mut m = base();
    m.opset_import.clear();
    assert!(reject(&m).contains("no default"));
    let mut m = base();
    m.opset_import[0].version = Some(6);
    assert!(reject(&m).contains("opset 6"));
    let mut m = base();
    m.graph = None;
    assert!(reject(&m).contains("no graph"));
}

#[test]
fn huge_declared_shape_with_tiny_data_is_rejected_without_allocating() {
    let mut m = base();
    graph_mut(&mut m).initializer[0] = f32_tensor("W", &[1 << 15, 1 << 15], &[1.0; 4]);
    let e = reject(&m);
    assert!(e.contains("declares shape") && e.contains("holds 4"), "{e}");

    let mut m = base();
    graph_mut(&mut m).initializer[0] = f32_tensor("W", &[1 << 40, 1 << 40], &[1.0; 4]);
    assert!(reject(&m).contains("more than 2147483648 elements"));

    let mut m = base();
    graph_mut(&mut m).initializer[0] = f32_tensor("W", &[i64::MAX, i64::MAX, 2], &[]);
    assert!(reject(&m).contains("more than"));

    let mut m = base();
    graph_mut(&mut m).initializer[0] = f32_tensor("W", &[-1, -4], &[1.0; 4]);
    assert!(reject(&m).contains("negative dimension"));

    let mut m = base();
    graph_mut(&mut m).initializer[0] = f32_tensor("W", &[1; 9], &[1.0]);
    assert!(reject(&m).contains("rank 9"));
}

#[test]
fn external_data_is_rejected() {
    let mut m = base();
    let t = &mut graph_mut(&mut m).initializer[0];
    t.raw_data = None;
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some("weights.bin".into()) }];
    let e = reject(&m);
    assert!(e.contains("initializer 'W'") && e.contains("external data file"), "{e}");
}

#[test]
fn int32_and_other_weight_types_are_rejected() {
    let mut m = base();
    let t = &mut graph_mut(&mut m).initializer[0];
    t.data_type = Some(DataType::Int32 as i32);
    t.raw_data = None;
    t.int32_data = vec![0; 18];
    let e = reject(&m);
    assert!(e.contains("INT32") && e.contains("initializer 'W'"), "{e}");

    let mut m = base();
    graph_mut(&mut m).initializer[0].data_type = Some(999);
    assert!(reject(&m).contains("unknown element type code 999"));

    let mut m = base();
    graph_mut(&mut m).initializer[0].data_type = None;
    assert!(reject(&m).contains("UNDEFINED"));
}

#[test]
fn raw_data_must_match_exactly() {
    let mut m = base();
    graph_mut(&mut m).initializer[1].raw_data = Some(vec![0; 9]);
    assert!(reject(&m).contains("not a multiple of 4"));

    let mut m = base();
    graph_mut(&mut m).initializer[1].float_data = vec![1.0, 2.0];
    assert!(reject(&m).contains("both raw_data and typed data"));

    let mut m = base();
    let b = &mut graph_mut(&mut m).initializer[1];
    b.raw_data = None;
    b.float_data = vec![1.0];
    assert!(reject(&m).contains("holds 1 float_data"));
}

#[test]
fn typed_data_fields_float_double_and_int64() {
    let mut m = base();
    let g = graph_mut(&mut m);
    g.initializer[1] = TensorProto {
        name: Some("B".into()),
        dims: vec![2],
        data_type: Some(DataType::Float as i32),
        float_data: vec![1.5, -2.0],
        ..Default::default()
    };
    g.initializer[3] = TensorProto {
        name: Some("B2".into()),
        dims: vec![3],
        data_type: Some(DataType::Double as i32),
        raw_data: Some([0.1_f64, 0.2, 0.3].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    };
    g.initializer.push(TensorProto {
        name: Some("D".into()),
        dims: vec![1, 2],
        data_type: Some(DataType::Double as i32),
        double_data: vec![1e300, -0.25],
        ..Default::default()
    });
    g.initializer.push(TensorProto {
        name: Some("shape_raw".into()),
        dims: vec![2],
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some([-1_i64, 32].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    });
    g.initializer.push(TensorProto {
        name: Some("shape".into()),
        dims: vec![2],
        data_type: Some(DataType::Int64 as i32),
        int64_data: vec![0, 32],
        ..Default::default()
    });
    let g = parse(&m).unwrap();
    assert_eq!(g.initializers["B"].as_slice().unwrap(), [1.5, -2.0]);
    assert_eq!(g.initializers["B2"].as_slice().unwrap(), [0.1, 0.2, 0.3]);
    assert_eq!(g.initializers["D"].shape(), [1, 2]);
    assert_eq!(g.initializers["D"].as_slice().unwrap(), [1e300, -0.25]);
    assert_eq!(g.int_initializers["shape_raw"].as_slice().unwrap(), [-1, 32]);
    assert_eq!(g.int_initializers["shape"].as_slice().unwrap(), [0, 32]);
}

#[test]
fn constant_feeds_reshape() {
    let mut m = base();
    let g = graph_mut(&mut m);
    let shape = TensorProto {
        dims: vec![2],
        data_type: Some(DataType::Int64 as i32),
        int64_data: vec![-1, 32],
        ..Default::default()
    };
    let value = AttributeProto { t: Some(Box::new(shape)), ..attr("value", AttributeType::Tensor) };
    g.node[2] = node("Reshape", "reshape", &["r", "shape"], &["f"], vec![]);
    g.node.push(node("Constant", "const", &[], &["shape"], vec![value]));
    let g = parse(&m).unwrap();
    let ops: Vec<_> = g.nodes.iter().map(|n| n.op.op_type()).collect();
    // The Constant moves before its consumer; otherwise file order is kept.
    assert_eq!(ops, ["Conv", "Relu", "Constant", "Reshape", "Gemm"]);
    assert_eq!(g.nodes[2].op, OnnxOp::Constant { value: OnnxTensor::Int(ndarray::arr1(&[-1, 32]).into_dyn()) });
    assert_eq!(g.nodes[3].op, OnnxOp::Reshape { allow_zero: false });
}

#[test]
fn constant_scalar_and_list_forms() {
    let cases = [
        (float("value_float", 2.5), OnnxTensor::Float(ndarray::arr0(2.5).into_dyn())),
        (
            AttributeProto { floats: vec![1.0, 2.0], ..attr("value_floats", AttributeType::Floats) },
            OnnxTensor::Float(ndarray::arr1(&[1.0, 2.0]).into_dyn()),
        ),
        (int("value_int", 7), OnnxTensor::Int(ndarray::arr0(7).into_dyn())),
        (ints("value_ints", &[3, 4]), OnnxTensor::Int(ndarray::arr1(&[3, 4]).into_dyn())),
    ];
    for (a, want) in cases {
        let mut m = base();
        graph_mut(&mut m).node.push(node("Constant", "k", &[], &["k"], vec![a]));
        let g = parse(&m).unwrap();
        let k = g.nodes.iter().find(|n| n.name == "k").unwrap();
        assert_eq!(k.op, OnnxOp::Constant { value: want });
    }
    let mut m = base();
    graph_mut(&mut m).node.push(node("Constant", "k", &[], &["k"], vec![string("value_string", "x")]));
    assert!(reject(&m).contains("'value_string' is not supported"));
    let mut m = base();
    graph_mut(&mut m).node.push(node("Constant", "k", &[], &["k"], vec![]));
    assert!(reject(&m).contains("exactly one value attribute"));
}

#[test]
fn too_many_nodes_is_rejected() {
    let mut m = base();
    let g = graph_mut(&mut m);
    g.node.truncate(1);
    g.output[0].name = Some("c".into());
    g.node.extend((0..MAX_NODES).map(|_| node("Identity", "", &["c"], &["c"], vec![])));
    assert!(reject(&m).contains("more than the limit of 100000"));
}

#[test]
fn nested_messages_beyond_the_recursion_limit_are_rejected() {
    // A Constant whose attribute holds a graph holding a node holding a
    // graph ..., 200 deep: the decoder must refuse, not overflow the stack.
    let mut inner = GraphProto::default();
    for _ in 0..200 {
        let a = AttributeProto { g: Some(Box::new(inner)), ..attr("g", AttributeType::Graph) };
        inner = GraphProto { node: vec![node("If", "", &[], &["o"], vec![a])], ..Default::default() };
    }
    let mut m = base();
    graph_mut(&mut m).node.push(node(
        "Constant",
        "deep",
        &[],
        &["k"],
        vec![AttributeProto { g: Some(Box::new(inner)), ..attr("value", AttributeType::Graph) }],
    ));
    let e = reject(&m);
    assert!(e.contains("not a valid ONNX protobuf"), "{e}");
}

#[test]
fn graph_input_must_be_a_float_tensor_with_a_shape() {
    let mut m = base();
    if let Some(type_proto::Value::TensorType(t)) =
        graph_mut(&mut m).input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(DataType::Uint8 as i32);
    }
    assert!(reject(&m).contains("element type UINT8"));

    let mut m = base();
    graph_mut(&mut m).input[0].r#type = None;
    assert!(reject(&m).contains("is not a tensor"));

    let mut m = base();
    graph_mut(&mut m).input[0] = value_info("X", &[Some(-3)]);
    assert!(reject(&m).contains("negative dimension"));
}

#[test]
fn decoding_bound_is_about_the_file_size_for_real_models() {
    for path in ["data/digits_vgg.onnx", "tests/data/golden/onnx/vgg16_narrow_224.onnx"] {
        let bytes = std::fs::read(path).unwrap();
        let need = super::budget::decoded_size(&bytes).unwrap();
        let len = bytes.len() as u64;
        // The raw weights are counted once; the graph's structs add little.
        assert!(need >= len && need <= len + len / 4, "{path}: {need} bytes estimated for a {len}-byte file");
    }
}

#[test]
fn decoding_bound_counts_every_empty_sub_message_and_packed_varint() {
    let mut m = base();
    let g = graph_mut(&mut m);
    let tensors = 1000;
    g.initializer.extend((0..tensors).map(|_| TensorProto::default()));
    let bytes = m.encode_to_vec();
    let need = super::budget::decoded_size(&bytes).unwrap();
    let each = std::mem::size_of::<TensorProto>() as u64;
    assert!(need >= tensors * each, "{need} < {tensors} × {each}");
    // 2 bytes on the wire each: far beyond the stated factor, so a file made
    // only of them is refused (beyond the fixed allowance).
    assert!(need > 100 * bytes.len() as u64);

    // A packed int64 run: each 1-byte zero decodes to 8 bytes.
    let mut m = base();
    let mut t =
        TensorProto { name: Some("ints".into()), data_type: Some(DataType::Int64 as i32), ..Default::default() };
    t.int64_data = vec![0; 100_000];
    t.dims = vec![100_000];
    graph_mut(&mut m).initializer.push(t);
    let bytes = m.encode_to_vec();
    assert!(super::budget::decoded_size(&bytes).unwrap() >= 8 * 100_000);
}
