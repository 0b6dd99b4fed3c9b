"""A digits classifier with one deliberately quantization-sensitive layer (for ``--max-drop`` tests and benches).

``SensitiveDigitsNet``: conv(1→16)+ReLU → conv(16→32) ("mid", no activation) → conv 1×1 (32→32)+ReLU ("mix")
→ 2×2 average pool → linear(128→10). After a few seconds of training, ``add_outliers`` multiplies a few output
channels of ``mid`` by a large factor and divides the matching input channels of ``mix`` by the same factor: the FP32
function is unchanged, but the activation between the two layers now has a per-tensor range set by the outlier
channels, so per-tensor INT8 activation quantization crushes every other channel. Returning ``mid``/``mix`` to
float repairs it.

Build the weights (≈ 5 s): ``python -m edgeq.examples.sensitive OUT.safetensors``; export with
``edgeq export edgeq/examples/sensitive.py:SensitiveDigitsNet --weights OUT.safetensors ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

OUTLIER_CHANNELS = (3, 17)
OUTLIER_SCALE = 400.0


def _build():
    import torch
    from torch import nn

    class SensitiveDigitsNet(nn.Module):
        """Small digits CNN; ``mid``'s output is the activation that ``add_outliers`` makes sensitive."""

        input_shape = (1, 1, 8, 8)

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 16, 3, padding=1)
            self.mid = nn.Conv2d(16, 32, 3, padding=1)
            self.mix = nn.Conv2d(32, 32, 1)
            self.head = nn.Linear(32 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.mix(self.mid(torch.relu(self.stem(x))))
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(y), 2), 1))

    return SensitiveDigitsNet


def __getattr__(name: str):  # lazy, so importing this module does not import torch
    if name == "SensitiveDigitsNet":
        cls = _build()
        globals()["SensitiveDigitsNet"] = cls
        return cls
    raise AttributeError(name)


def add_outliers(model, channels: tuple[int, ...] = OUTLIER_CHANNELS, scale: float = OUTLIER_SCALE) -> None:
    """Scale ``mid``'s output channels by ``scale`` and ``mix``'s matching input channels by 1/scale (FP32-neutral)."""
    import torch

    with torch.no_grad():
        for c in channels:
            model.mid.weight[c] *= scale
            model.mid.bias[c] *= scale
            model.mix.weight[:, c] /= scale


def train(out: Path, epochs: int = 12, seed: int = 0) -> float:
    """Train on the digits ``train`` split, add the outliers, save weights atomically; eval top-1 (FP32)."""
    import torch

    from edgeq.examples.digits import load_digits_split
    from edgeq.examples.train_digits import save_weights

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, y = load_digits_split("train")
        x_eval, y_eval = load_digits_split("eval")
        model = __getattr__("SensitiveDigitsNet")()
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(xs), generator=gen).split(64):
                loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        add_outliers(model)
        with torch.no_grad():
            accuracy = float((model(torch.from_numpy(x_eval)).argmax(1).numpy() == y_eval).mean())
    finally:
        torch.set_num_threads(threads)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, out)
    return accuracy


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "sensitive_digits.safetensors")
    acc = train(target)
    print(f"eval top-1 (FP32, with outliers): {acc:.4f}; weights saved to {target}")
