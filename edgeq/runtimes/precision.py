"""What each precision a backend declares (``Backend.precision``) means to the reports: its label, its colour in
the HTML scatter, and why an artifact of that precision may run slower than FP32. The reports read this table for
every row (``manifest`` / bench cells carry the backend's runtime and precision), so a backend with a new precision
adds one entry here and the reports follow (tests/test_runtimes.py checks every registered precision has one)."""

from __future__ import annotations

from dataclasses import dataclass

REFERENCE_PRECISION = "fp32"
"""Speed-ups and metric deltas compare against the FP32 artifact."""


@dataclass(frozen=True)
class PrecisionInfo:
    label: str
    """How reports name it (``INT8``)."""
    color: str
    """Its markers' colour in the HTML report's scatter."""
    slower_hint: str | None
    """Why it may run slower than FP32; None: integer kernels, explained from the CPU's INT8 instructions."""
    tier: bool = False
    """A precision tier beyond INT8 (docs/precision.md): exported when named or as ``-b tiers``, never by 'all'."""
    opt_in: bool = False
    """Exported only when named (needs CPU support not every machine has), never by 'all'."""


_FP16_HINT = ("FP16 saves size only: CPUs without native FP16 arithmetic (x86 without AVX512-FP16, ARM without "
              "asimdhp) convert to FP32 at run time")

PRECISIONS: dict[str, PrecisionInfo] = {
    "fp32": PrecisionInfo("FP32", "#1f77b4", None),
    "fp16": PrecisionInfo("FP16", "#2ca02c", _FP16_HINT),
    "bf16": PrecisionInfo("BF16", "#9467bd", _FP16_HINT, opt_in=True),
    "dynamic": PrecisionInfo("DYNAMIC", "#9467bd", None),
    "int8": PrecisionInfo("INT8", "#ff7f0e", None),
    "w8a16": PrecisionInfo("W8A16", "#9467bd",
                           "no CPU runtime here has int16 kernels: ORT computes FP32 between 16-bit Q/DQ, LiteRT runs "
                           "its 16x8 reference kernels — an accuracy tier for 16x8 accelerators (docs/precision.md)", tier=True),
    "w4": PrecisionInfo("W4", "#9467bd",
                        "INT4 weight-only saves size; ORT (accuracy level 0) and OpenVINO decompress the weights to "
                        "float, LiteRT's dynamic INT4 runs integer kernels whose thread pool is slow to wake on busy "
                        "cores (docs/precision.md)", tier=True),
}


def precision_info(precision: str) -> PrecisionInfo:
    """The entry for ``precision``; an unknown one is shown upper-cased, in the neutral colour, without a hint."""
    return PRECISIONS.get(precision) or PrecisionInfo(precision.upper(), "#9467bd", None)
