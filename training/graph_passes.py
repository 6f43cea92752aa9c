"""Rewrites of an exported ONNX graph that leave what it computes unchanged (up to float rounding) and give
ONNX Runtime less to do per call. ``to_onnx`` applies them before the parity check, so an export's recorded
Keras parity is the rewritten graph's own; ``training/republish.py`` applies them to a version already
published.
"""
from __future__ import annotations

import numpy as np


def fold_embedding_projections(model, max_growth: float = 2.0) -> list[dict]:
    """``MatMul(Gather(E, ids), W)`` with constant E and W becomes ``Gather(E @ W, ids)``; returns what was folded.

    Why: a recurrent step graph multiplies the embedding of each row's token by the cell's input weights on
    every step (for the text generator: 64 x 1536 of its 448 x 1536 multiply-adds per row). The product for every
    vocabulary entry is a table computed once. Skipped where the table would take more than ``max_growth`` times
    the bytes of E and W (a large vocabulary: the translation decoder's 6,000 x 1,024 table would be 25 MB)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded = []
    for gather in list(graph.node):
        if gather.op_type != "Gather" or gather.input[0] not in inits or gather.output[0] in outputs:
            continue
        users = consumers.get(gather.output[0], [])
        axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
        if axis != 0 or len(users) != 1:
            continue
        matmul = users[0]
        if matmul.op_type != "MatMul" or matmul.input[0] != gather.output[0] or matmul.input[1] not in inits:
            continue
        emb, weight = (numpy_helper.to_array(inits[n]) for n in (gather.input[0], matmul.input[1]))
        if emb.ndim != 2 or weight.ndim != 2 or emb.dtype != weight.dtype or emb.shape[1] != weight.shape[0]:
            continue
        if emb.shape[0] * weight.shape[1] > max_growth * (emb.size + weight.size):
            continue
        table = (emb.astype(np.float64) @ weight.astype(np.float64)).astype(emb.dtype)
        name = f"{matmul.output[0]}/folded_embedding"
        graph.initializer.append(numpy_helper.from_array(table, name))
        at = list(graph.node).index(matmul)
        graph.node.insert(at, helper.make_node("Gather", [name, gather.input[1]], [matmul.output[0]], axis=0,
                                               name=f"{matmul.name or matmul.output[0]}/folded"))
        graph.node.remove(matmul)
        graph.node.remove(gather)
        for const in (gather.input[0], matmul.input[1]):
            if all(n in (gather, matmul) for n in consumers[const]):
                graph.initializer.remove(inits[const])
        folded.append({"pass": "fold_embedding_projection", "embedding": list(emb.shape),
                       "weights": list(weight.shape), "table": list(table.shape)})
    return folded


def share_transposed_constants(model) -> list[dict]:
    """A constant that is another constant transposed becomes a ``Transpose`` of it; returns what was shared.

    Why: a model with one embedding matrix for input and output (the translation Transformer) exports it twice,
    as the embedding and as the output layer's transposed weights (4 MB each at 8,000 x 128). ONNX Runtime folds
    a Transpose of a constant once, when it loads the graph, so the file holds the matrix once and a call does
    the same work."""
    from onnx import helper, numpy_helper

    graph = model.graph
    two_d = {i.name: i for i in graph.initializer if len(i.dims) == 2 and i.dims[0] != i.dims[1]}
    graph_inputs = {i.name for i in graph.input}
    by_shape: dict[tuple, list[str]] = {}
    for name, init in two_d.items():
        by_shape.setdefault(tuple(init.dims), []).append(name)
    shared, gone = [], set()
    for name, init in two_d.items():
        if name in gone or name in graph_inputs:
            continue
        for other in by_shape.get((init.dims[1], init.dims[0]), []):
            if other in gone or other in graph_inputs or other == name:
                continue
            a, b = numpy_helper.to_array(init), numpy_helper.to_array(two_d[other])
            if a.dtype == b.dtype and np.array_equal(a.T, b):
                graph.initializer.remove(two_d[other])
                graph.node.insert(0, helper.make_node("Transpose", [name], [other], perm=[1, 0],
                                                      name=f"{other}/shared_transpose"))
                gone.add(other)
                shared.append({"pass": "share_transposed_constant", "embedding": list(a.shape),
                               "weights": list(b.shape)})
    return shared


def apply_all(model) -> list[dict]:
    return fold_embedding_projections(model) + share_transposed_constants(model)
