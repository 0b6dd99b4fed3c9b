"""openvino-bf16: the FP32 OpenVINO IR, compiled with ``INFERENCE_PRECISION_HINT = bf16``.

OpenVINO's CPU plugin computes BF16 on AVX512-BF16 and AMX CPUs (and picks it by default there); edgeq pins f32 for
``openvino-fp32`` and offers BF16 as this explicit row, so both are measured side by side, never one in place of the
other. The IR records ``edgeq/inference_precision = bf16``; the runner refuses it in one line on a CPU without
``avx512_bf16``/``amx_bf16`` (where OpenVINO would emulate it or run f32 under a bf16 name). Opt-in: not in ``all``.
"""

from __future__ import annotations

import platform

from edgeq.errors import BackendUnavailable
from edgeq.runtimes.openvino.openvino_fp32 import OpenvinoFp32


class OpenvinoBf16(OpenvinoFp32):
    name = "openvino-bf16"
    precision = "bf16"
    compress_to_fp16 = False

    @classmethod
    def check_available(cls, cpu: tuple[str, set[str]] | None = None) -> None:
        """Refuse (one line) on a CPU without BF16 arithmetic; ``cpu`` = (machine, flags) pins the CPU (tests)."""
        super().check_available()
        from edgeq.targets.runner import RunnerError, choose_precision

        machine, flags = cpu or (platform.machine(), None)
        try:
            choose_precision("bf16", cls.runtime, machine, flags)
        except RunnerError as exc:
            raise BackendUnavailable(f"backend {cls.name}: {exc}") from None
