"""Export a torch module to ONNX with its model card and check that both agree."""
from __future__ import annotations

import os
from typing import Any, Dict, Sequence

import numpy as np
import torch

from ...plugin.core.model_card import read_card, write_card


def export_with_card(module: torch.nn.Module, example_inputs: Dict[str, torch.Tensor],
                     output_names: Sequence[str], card: Dict[str, Any], path: str,
                     tolerance: float = 1e-4, opset: int = 17) -> float:
    """Write ``path`` (ONNX + card), run it on ``example_inputs`` with onnxruntime and return
    the max abs difference to torch. Raises if it exceeds ``tolerance``.

    Batch, height and width are dynamic axes; inputs are passed in ``example_inputs`` order.
    """
    import onnxruntime as ort

    module = module.eval().cpu()
    names = list(example_inputs)
    args = tuple(example_inputs[n].cpu() for n in names)
    dynamic = {n: {0: "batch", 2: "height", 3: "width"} for n in names if example_inputs[n].dim() == 4}
    dynamic.update({n: {0: "batch", 2: "height", 3: "width"} for n in output_names})
    for n in names:
        if example_inputs[n].dim() == 1:
            dynamic[n] = {0: "batch"}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.onnx"
    with torch.no_grad():
        torch.onnx.export(module, args, tmp, input_names=names, output_names=list(output_names),
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
        expected = module(*args)
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    write_card(tmp, card)
    session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    got = session.run(list(output_names), {n: example_inputs[n].cpu().numpy() for n in names})
    diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    if diff > tolerance:
        os.remove(tmp)
        raise RuntimeError(f"ONNX and torch disagree: max abs diff {diff:.3g} > {tolerance}")
    os.replace(tmp, path)
    read_card(path)
    return diff
