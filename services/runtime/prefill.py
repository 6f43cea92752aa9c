"""A prompt read in one ONNX Runtime call: the recurrent step graph's state path wrapped in an ONNX ``Scan``.

Why: a generation reads its prompt one token per scheduler tick, and a tick costs a whole Python round, more
beside other streams, so time to first token grows with the prompt. ``Scan`` runs the same nodes over the whole
prompt inside ONNX Runtime, with the same results, bit for bit, as stepping the graph (the figures:
bench/results/vm/FINDINGS.md). It is built at load time from the step graph the manifest lists and
checksums (so every shipped version gets it), and checked against that graph before it is used.
"""
from __future__ import annotations

import numpy as np


def scan_graph(step, token: str, states: list[tuple[str, str]]):
    """-> an ONNX model ``(tokens [T, N], *state inputs) -> state outputs`` (the same names as the step graph's):
    the step graph cut down to what its ``states`` outputs need (no logits), run once per row of ``tokens``.
    ``states`` pairs each state input with the output that feeds it on the next step."""
    import onnx
    from onnx import helper
    from onnx.utils import Extractor

    ins, outs = [i for i, _ in states], [o for _, o in states]
    body = Extractor(step).extract_model(ins + [token], outs).graph
    by_name = {v.name: v for v in body.input}
    body.ClearField("input")
    body.input.extend([by_name[n] for n in ins] + [by_name[token]])  # Scan's order: states, then scanned
    body.name = "prefill_step"
    graph_ins = {v.name: v for v in step.graph.input}
    graph_outs = {v.name: v for v in step.graph.output}
    tok = graph_ins[token].type.tensor_type
    batch = tok.shape.dim[0].dim_param or "N"
    tokens = helper.make_tensor_value_info("tokens", tok.elem_type, ["T", batch])
    node = helper.make_node("Scan", ins + ["tokens"], outs, body=body, num_scan_inputs=1, name="prefill")
    graph = helper.make_graph([node], "prefill", [tokens] + [graph_ins[n] for n in ins],
                              [graph_outs[n] for n in outs])
    model = helper.make_model(graph, opset_imports=step.opset_import, ir_version=step.ir_version)
    onnx.checker.check_model(model)
    return model


def check_against_steps(prefill, step, token: str, states: list[tuple[str, str]], vocab_size: int,
                        length: int = 9, tolerance: float = 1e-5) -> float:
    """Run a random prompt through both sessions; -> the largest state difference. Raises past ``tolerance``."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab_size, (length, 1)).astype(np.int64)
    feeds = {}
    for i, _ in states:
        meta = next(x for x in step.get_inputs() if x.name == i)
        shape = [1] + [d if isinstance(d, int) else 1 for d in meta.shape[1:]]
        feeds[i] = rng.normal(0, 0.5, shape).astype(np.float32)
    outs = [o for _, o in states]
    stepped = dict(feeds)
    for t in range(length):
        got = step.run(outs, {token: ids[t], **stepped})
        stepped = {i: v for (i, _), v in zip(states, got, strict=False)}
    scanned = prefill.run(outs, {"tokens": ids, **feeds})
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(stepped.values(), scanned, strict=False))
    if not worst <= tolerance:
        raise ValueError(f"prefill graph differs from the step graph by {worst:.3g} > {tolerance}")
    return worst
