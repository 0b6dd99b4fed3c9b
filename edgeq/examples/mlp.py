"""A digits MLP with large Linear layers (64→512→512→10): the low-rank example for ``edgeq compress``.

No weights are committed: ``train_mlp(path)`` trains it deterministically on the digits train split (seconds).
"""

from __future__ import annotations

from pathlib import Path


def _build():
    import torch
    from torch import nn

    class DigitsMLP(nn.Module):
        """Flatten(8×8) → Linear 64→512 → ReLU → Linear 512→512 → ReLU → Linear 512→10."""

        input_shape = (1, 1, 8, 8)

        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(64, 512)
            self.fc2 = nn.Linear(512, 512)
            self.fc3 = nn.Linear(512, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = torch.relu(self.fc1(torch.flatten(x, 1)))
            return self.fc3(torch.relu(self.fc2(hidden)))

    return DigitsMLP


def __getattr__(name: str):  # lazy, so importing this module does not import torch
    if name == "DigitsMLP":
        cls = _build()
        globals()["DigitsMLP"] = cls
        return cls
    raise AttributeError(name)


def train_mlp(path: Path, epochs: int = 30, seed: int = 0) -> float:
    """Train DigitsMLP on the digits train split, save safetensors to ``path``, return eval top-1."""
    import torch
    from safetensors.torch import save_file

    from edgeq.examples.digits import load_digits_split

    torch.manual_seed(seed)
    x, y = (torch.from_numpy(a) for a in load_digits_split("train"))
    x_eval, y_eval = (torch.from_numpy(a) for a in load_digits_split("eval"))
    model = __getattr__("DigitsMLP")()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_eval).argmax(1) == y_eval).float().mean())
    from edgeq.workdirs import atomic_path

    with atomic_path(path) as tmp:
        save_file(model.state_dict(), str(tmp))
    return accuracy
