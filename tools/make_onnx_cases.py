#!/usr/bin/env python3
"""Writes tests/data/onnx_ops/: small ONNX graphs using MatMul (+Add bias),
Reshape, Identity and Dropout, each with an equivalent Gemm/Flatten graph, an
input batch and onnxruntime's output for it; and graphs that onnxruntime reads
differently from a per-sample flatten + linear layer (or refuses), which rsp
must refuse. `cases.json` lists them with what onnxruntime did.

Used by tests/suite/onnx_ops.rs. Needs `pip install onnx onnxruntime numpy`
(recorded with onnx 1.23.2, onnxruntime 1.32.0, numpy 2.x; never needed by CI):

    python3 tools/make_onnx_cases.py
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "onnx_ops")
C, H, W, OUT_FEATURES, BATCH = 2, 3, 3, 4, 3
FEATURES = C * H * W

rng = np.random.default_rng(7)
conv_w = rng.standard_normal((C, C, 2, 2)).astype(np.float32)
conv_b = rng.standard_normal(C).astype(np.float32)
fc_w = rng.standard_normal((FEATURES, OUT_FEATURES)).astype(np.float32)  # MatMul's B: [K, out]
fc_b = rng.standard_normal(OUT_FEATURES).astype(np.float32)
x = rng.standard_normal((BATCH, C, H, W)).astype(np.float32)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def model(name, nodes, inits, batch="N", opset=13):
    """Conv (padding so H, W are kept) -> Relu -> `nodes` (from "r" to "y")."""
    head = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[0, 0, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
    ]
    graph = helper.make_graph(
        head + nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, C, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["y0", "y1"])],
        [init("cw", conv_w), init("cb", conv_b)] + inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def gemm_tail(src):
    return [
        helper.make_node("Flatten", [src], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1, name="gemm"),
    ], [init("gw", fc_w.T.copy()), init("gb", fc_b)]


def shape(values):
    return init("shape", np.array(values, dtype=np.int64))


CASES = {}

# The reference: Flatten + Gemm.
nodes, inits = gemm_tail("r")
CASES["flatten_gemm"] = ("ok", model("flatten_gemm", nodes, inits), None)

# Flatten + MatMul + Add with each bias shape ONNX broadcasts to [N, out].
for bias_name, bias in [("vector", fc_b), ("row", fc_b[None, :])]:
    nodes = [
        helper.make_node("Flatten", ["r"], ["f"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["f", "mw"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "mb"], ["y"], name="bias"),
    ]
    name = f"matmul_add_{bias_name}"
    CASES[name] = ("ok", model(name, nodes, [init("mw", fc_w), init("mb", bias)]), "flatten_gemm")

# Reshape [0, -1] and [-1, FEATURES] in place of Flatten; the bias added first (Add is commutative).
for name, target in [("reshape_copy_batch", [0, -1]), ("reshape_infer_batch", [-1, FEATURES])]:
    nodes = [
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="reshape"),
        helper.make_node("MatMul", ["f", "mw"], ["m"], name="matmul"),
        helper.make_node("Add", ["mb", "m"], ["y"], name="bias"),
    ]
    CASES[name] = ("ok", model(name, nodes, [shape(target), init("mw", fc_w), init("mb", fc_b)]), "flatten_gemm")

# Identity and Dropout (inference: identity) around the same graph.
nodes = [
    helper.make_node("Identity", ["r"], ["i"], name="identity"),
    helper.make_node("Dropout", ["i", "ratio"], ["d"], name="dropout"),
] + gemm_tail("d")[0]
CASES["identity_dropout"] = (
    "ok",
    model("identity_dropout", nodes, gemm_tail("d")[1] + [init("ratio", np.array(0.5, dtype=np.float32))]),
    "flatten_gemm",
)

# Misread before: a [out, 1] column "bias" broadcasts [N, out] + [out, 1] to [out, out] (N = 1) or fails.
nodes = [
    helper.make_node("Flatten", ["r"], ["f"], axis=1, name="flatten"),
    helper.make_node("MatMul", ["f", "mw"], ["m"], name="matmul"),
    helper.make_node("Add", ["m", "mb"], ["y"], name="bias"),
]
CASES["matmul_add_column"] = ("refused", model("matmul_add_column", nodes, [init("mw", fc_w), init("mb", fc_b[:, None])]), None)
# A bias of rank 3 makes the output 3-D.
CASES["matmul_add_rank3"] = (
    "refused",
    model("matmul_add_rank3", nodes, [init("mw", fc_w), init("mb", fc_b[None, None, :])]),
    None,
)
# Reshape [1, -1] with a symbolic batch merges the batch into one row.
nodes = [helper.make_node("Reshape", ["r", "shape"], ["f"], name="reshape")] + gemm_tail("f")[0][1:]
nodes[-1].input[0] = "f"
CASES["reshape_merge_batch"] = ("refused", model("reshape_merge_batch", nodes, [shape([1, -1])] + gemm_tail("f")[1]), None)
# Reshape [-1, FEATURES / 2] changes the batch size.
CASES["reshape_split_samples"] = (
    "refused",
    model("reshape_split_samples", nodes, [shape([-1, FEATURES // 2])] + gemm_tail("f")[1]),
    None,
)
# allowzero: the 0 is an empty dimension, not "copy".
allow = [helper.make_node("Reshape", ["r", "shape"], ["f"], allowzero=1, name="reshape")] + nodes[1:]
CASES["reshape_allowzero"] = (
    "refused",
    model("reshape_allowzero", allow, [shape([0, -1])] + gemm_tail("f")[1], opset=14),
    None,
)
# A MatMul output used twice: the Add may not fold into it.
nodes = [
    helper.make_node("Flatten", ["r"], ["f"], axis=1, name="flatten"),
    helper.make_node("MatMul", ["f", "mw"], ["m"], name="matmul"),
    helper.make_node("Add", ["m", "mb"], ["a"], name="bias"),
    helper.make_node("Add", ["a", "m"], ["y"], name="sum"),
]
CASES["matmul_output_reused"] = ("refused", model("matmul_output_reused", nodes, [init("mw", fc_w), init("mb", fc_b)]), None)


def main():
    os.makedirs(OUT, exist_ok=True)
    np.save(os.path.join(OUT, "input.npy"), x)
    manifest = []
    for name, (kind, m, equivalent) in CASES.items():
        onnx.checker.check_model(m)
        path = os.path.join(OUT, f"{name}.onnx")
        onnx.save(m, path)
        entry = {"name": name, "expect": kind}
        if equivalent:
            entry["equivalent"] = equivalent
        try:
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            y = sess.run(None, {"x": x if m.graph.input[0].type.tensor_type.shape.dim[0].dim_param else x[:1]})[0]
            entry["onnxruntime_shape"] = list(y.shape)
            if kind == "ok":
                np.save(os.path.join(OUT, f"{name}.ort.npy"), y)
        except Exception as e:  # onnxruntime refuses it: record the first line
            entry["onnxruntime_error"] = str(e).splitlines()[0].replace(path, f"{name}.onnx")[:200]
        manifest.append(entry)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(
            {"generator": "tools/make_onnx_cases.py", "onnx": onnx.__version__, "onnxruntime": ort.__version__,
             "batch": BATCH, "cases": manifest},
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
