"""Tiny models for the compress tests (written to files, loaded like user code)."""

RESIDUAL_NET = '''
import torch
from torch import nn


class ResNetTiny(nn.Module):
    """stem → residual block (add) → strided block with a 1x1 projection (add) → pool → linear."""

    input_shape = (1, 1, 8, 8)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.down = nn.Conv2d(16, 32, 1, stride=2)
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 10)
        for bn in (self.stem[1], self.bn1, self.bn2):  # non-trivial statistics so folding is really tested
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        x = torch.relu(self.down(x) + self.conv3(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Untraceable(nn.Module):
    """Data-dependent Python control flow: torch.fx cannot trace it."""

    input_shape = (1, 1, 8, 8)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body[1].running_mean.uniform_(-0.5, 0.5)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = self.body(x)
        if float(y.mean()) > 1e9:
            y = y * 2
        return self.fc(y.mean((2, 3)))


class WideMLP(nn.Module):
    input_shape = (1, 1, 8, 8)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))))
'''
