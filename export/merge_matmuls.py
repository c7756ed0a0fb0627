"""Merge the constant-weight MatMuls that read the same activation (attention q/k/v, MLP gate/up)
into one MatMul on the concatenated weights followed by a Split.

At decode time every projection is a matrix-vector product whose cost is streaming its weights;
three narrow GEMVs (Qwen2: 896 → 896, 128, 128) pay three dispatches and three thread
synchronisations for one pass over the input, and the narrow ones use the cores poorly. One
wide GEMV reads the same bytes once per step. The graph's outputs are unchanged (the Split
yields the original tensor names), so biases, rotary and everything downstream stay as they were.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def merge_shared_input_matmuls(model) -> int:
    """Rewrite ``model`` (an onnx ModelProto, weights loaded) in place; returns the MatMuls merged away."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    uses = defaultdict(int)  # how many node inputs read each name: a weight read elsewhere stays
    for node in graph.node:
        for name in node.input:
            uses[name] += 1
    groups: dict[str, list] = defaultdict(list)
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2:
            groups[node.input[0]].append(node)
    merged_away = 0
    new_nodes, replaced = {}, set()
    for activation, nodes in groups.items():
        arrays = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        if len(nodes) < 2 or len({(a.shape[0], a.dtype) for a in arrays}) != 1:
            continue
        first = nodes[0].name or nodes[0].output[0]
        w_name, sizes_name, out_name = f"{first}_merged_weight", f"{first}_merged_sizes", f"{first}_merged_output"
        graph.initializer.append(numpy_helper.from_array(np.concatenate(arrays, axis=1), w_name))
        graph.initializer.append(numpy_helper.from_array(np.array([a.shape[1] for a in arrays], np.int64), sizes_name))
        new_nodes[id(nodes[0])] = [
            helper.make_node("MatMul", [activation, w_name], [out_name], name=f"{first}_merged"),
            helper.make_node("Split", [out_name, sizes_name], [n.output[0] for n in nodes], name=f"{first}_split", axis=-1),
        ]
        replaced.update(id(n) for n in nodes)
        for n in nodes:
            uses[n.input[1]] -= 1
        merged_away += len(nodes) - 1
    if not merged_away:
        return 0
    order = []  # the merged pair takes the first MatMul's place: its input exists there, its outputs are needed no earlier
    for node in graph.node:
        if id(node) in new_nodes:
            order += new_nodes[id(node)]
        elif id(node) not in replaced:
            order.append(node)
    del graph.node[:]
    graph.node.extend(order)
    unused = [init for init in graph.initializer if init.name in weights and uses[init.name] == 0]
    for init in unused:
        graph.initializer.remove(init)
    return merged_away
