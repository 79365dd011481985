"""Static int8 of an exported model: ONNX Runtime's ``quantize_static``, calibrated on the user's sample.

What is quantised follows what sentence-transformers / optimum do for transformer encoders:

- only the MatMul / Gemm nodes with a constant weight (the Linear layers); the attention's
  activation x activation products, LayerNorm, Softmax and GELU stay in float32;
- weights per output channel (symmetric int8), activations per tensor (asymmetric uint8, ranges
  from a MinMax pass over the calibration batches);
- ``reduce_range`` (7-bit weights), because on x86 CPUs without VNNI (AVX2 only) the u8 x s8
  multiply-add saturates at full range (ONNX Runtime's quantisation docs).

The file is QDQ-format (Quantize/DequantizeLinear around each quantised node), which ONNX Runtime
runs with its int8 kernels and OpenVINO reads as its own int8 ops, so both backends use one file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Settings of the quantisation, part of the int8 export's key.
SETTINGS = {
    "format": "QDQ",
    "per_channel": True,
    "reduce_range": True,
    "weights": "int8-symmetric",
    "activations": "uint8",
    "calibration": "minmax",
    "nodes": "MatMul/Gemm with a constant weight",
}


def weight_matmuls(model) -> list[str]:
    """Names of the MatMul/Gemm nodes one of whose inputs is a constant (a Linear layer's weight)."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and any(x in constants for x in n.input)
    ]


def quantize_int8(
    fp32_path: Path, out_path: Path, batches: Iterable[dict[str, np.ndarray]]
) -> None:
    """Write the static-int8 QDQ version of ``fp32_path`` to ``out_path``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, np.ndarray]]):
            self._feeds = iter(feeds)

        def get_next(self):
            return next(self._feeds, None)

    model = onnx.load(str(fp32_path))
    names = {i.name for i in model.graph.input}
    feeds = [{k: v for k, v in b.items() if k in names} for b in batches]
    nodes = weight_matmuls(model)
    if not nodes:
        raise ValueError("the graph has no MatMul/Gemm with a constant weight to quantise")
    quantize_static(
        str(fp32_path),
        str(out_path),
        Reader(feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_quantize=nodes,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"MatMulConstBOnly": True},
    )
    logger.debug("quantised %d MatMul/Gemm nodes of %s", len(nodes), fp32_path)
