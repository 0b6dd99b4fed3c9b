"""Benchmark models defined in the repo (no downloads). Random init is deterministic (seeded).

Each is importable by the CLI as ``bench/models.py:ClassName`` (the class attribute ``input_shape`` gives the
input shape). Every parameter and buffer comes from a fixed-seed generator, so two instances in any process
are identical (an edgeq export and a peer's recipe quantize the very same network).

Random weights with identity BatchNorm/LayerNorm would be unrealistically friendly to INT8 (all channels alike).
Trained networks are not: folded BN scales differ by orders of magnitude between channels (the reason for
per-channel weights, e.g. MobileNet depthwise layers) and BERT's LayerNorm outputs have a few outlier
dimensions (the reason for SmoothQuant / transformer recipes). So the models get, deterministically:
log-normal BN gammas and beta offsets with running statistics measured on seeded N(0,1) inputs (BN then
normalizes like a trained net), and LayerNorm gains with two outlier dimensions in BertMini.
"""

from __future__ import annotations

import torch
from torch import nn


def _seeded(module: nn.Module, seed: int = 0, stats_input: tuple[int, ...] | None = None) -> None:
    """Deterministic weights, biases and norm parameters; BN running stats from seeded inputs of ``stats_input``."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen)

    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() > 1:
                param.copy_(randn(*param.shape) * (2.0 / param[0].numel()) ** 0.5)
            elif name.endswith("bias"):
                param.copy_(0.02 * randn(*param.shape))
        for sub in module.modules():
            if isinstance(sub, nn.BatchNorm2d):
                sub.weight.copy_(torch.exp(0.7 * randn(sub.num_features)))
                sub.bias.copy_(0.1 * randn(sub.num_features))
            elif isinstance(sub, nn.LayerNorm):
                sub.weight.copy_(1.0 + 0.1 * randn(*sub.weight.shape))
        if stats_input is not None:
            norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
            for bn in norms:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over the stats batches
            module.train()
            module(randn(4, *stats_input[1:]))
            for bn in norms:
                bn.momentum = 0.1
    module.eval()


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + identity)


class ResNet18(nn.Module):
    """ResNet-18 topology (11.7 M parameters), 224×224 RGB, 1000 classes."""

    input_shape = (1, 3, 224, 224)

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)
        _seeded(self, stats_input=self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 topology (3.5 M parameters; depthwise convs, ReLU6), 224×224 RGB."""

    input_shape = (1, 3, 224, 224)

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
        cin = 32
        for expand, cout, repeats, stride in settings:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)
        _seeded(self, stats_input=self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class BertMini(nn.Module):
    """BERT-mini-shaped encoder: 4 layers, hidden 256, 4 heads, seq 128, on float token embeddings;
    returns the last hidden state.

    LayerNorm dimensions 7 and 100 carry 12× gains (the outlier dimensions trained BERTs show).
    """

    input_shape = (1, 128, 256)

    def __init__(self, layers: int = 4, hidden: int = 256, heads: int = 4):
        super().__init__()
        layer = nn.TransformerEncoderLayer(hidden, heads, hidden * 4, dropout=0.0, batch_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        _seeded(self)
        with torch.no_grad():  # outlier LayerNorm dimensions, as in trained BERTs
            for norm in (m for m in self.modules() if isinstance(m, nn.LayerNorm)):
                norm.weight[[7, 100]] *= 12.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # last hidden state, (1, seq, hidden)
