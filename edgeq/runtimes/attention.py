"""One attention rule for every graph type. Each runtime counts the evidence in its own graph (ONNX ``GraphProto``,
OpenVINO ``Model``, the FX graph litert-torch quantizes) and this module decides: a fused attention op, or a
Softmax beside at least two MatMuls whose operands are both activations (Q·Kᵀ and attention·V)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AttentionEvidence:
    """The op counts the attention decision reads."""

    fused_attention: int
    """Fused attention ops (ONNX Attention / MultiHeadAttention / GroupQueryAttention, OpenVINO
    ScaledDotProductAttention, torch scaled_dot_product_attention)."""
    softmax: int
    activation_matmuls: int
    """MatMuls whose two operands are both activations (neither a weight nor derived from weights only)."""

    @property
    def attention(self) -> bool:
        return self.fused_attention > 0 or (self.softmax > 0 and self.activation_matmuls >= 2)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
