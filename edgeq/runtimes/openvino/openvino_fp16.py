"""openvino-fp16: OpenVINO IR with weights compressed to FP16 (``save_model(compress_to_fp16=True)``).

Weights are stored as FP16 and decompressed to FP32 at load time on CPUs without native FP16 arithmetic, so
the artifact is half the size; compute precision is the device plugin's choice.
"""

from __future__ import annotations

from edgeq.runtimes.openvino.openvino_fp32 import OpenvinoFp32


class OpenvinoFp16(OpenvinoFp32):
    name = "openvino-fp16"
    precision = "fp16"
    compress_to_fp16 = True
