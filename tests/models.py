"""The tiny models the tests use, in one place (no downloads, no committed weights).

PyTorch models are *sources* (strings): tests write them to a file with :func:`write_model` and load them the way
users give theirs (``path/to/file.py:Class``). ONNX graphs are built with ``onnx.helper`` by the functions at the end.
Calibration-style inputs come from :func:`smooth_images`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_model(directory: Path, source: str, filename: str = "models.py") -> Path:
    """Write a model source into ``directory/filename`` (created) and return the file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(source)
    return path


def smooth_images(count: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """``count`` images of ``shape`` (C, H, W), float32: 4×-upsampled noise plus a little fine noise — well-behaved
    activations for calibration (H and W multiples of 4)."""
    rng = np.random.default_rng(seed)
    channels, height, width = shape
    base = rng.standard_normal((count, channels, height // 4, width // 4)).astype(np.float32)
    images = np.repeat(np.repeat(base, 4, axis=2), 4, axis=3) + 0.1 * rng.standard_normal((count, *shape))
    return images.astype(np.float32)


# --- PyTorch sources ----------------------------------------------------------------------------------------------
# The tiny CNN most export tests use (conftest's ``tiny_model_file``); NotAModule is for the bad-input tests.
TINY_CNN = '''
import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv+BN+ReLU ×2, global pool, linear: a well-behaved classifier for quantization tests."""

    input_shape = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class NotAModule:
    pass
'''


# The compress tests' nets: a residual CNN, a net torch.fx cannot trace and a wide MLP.
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


# tflite-int8's narrow-stem choice.
RESIDUAL_STEM = '''
import torch
from torch import nn


class ResidualStem(nn.Module):
    """A heavy 3-channel stem (2 M MACs) and one residual block: the shapes that were slow in TFLite INT8."""

    input_shape = (1, 3, 96, 96)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(self.conv(y) + y)
        return self.head(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))
'''


TRANSFORMERS = '''
import torch
from torch import nn


class TinyEncoder(nn.Module):
    """One nn.TransformerEncoderLayer: in eval/no-grad PyTorch takes its fused fast path unless told not to."""

    input_shape = (1, 8, 16)
    width, heads, hidden, norm_first = 16, 2, 32, False

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.TransformerEncoderLayer(self.width, self.heads, self.hidden, dropout=0.0, batch_first=True,
                                                norm_first=self.norm_first)

    def forward(self, x):
        return self.layer(x)


class Block(TinyEncoder):
    """One pre-norm transformer encoder layer on (1, 16, 64) float tokens."""

    input_shape = (1, 16, 64)
    width, heads, hidden, norm_first = 64, 4, 128, True
'''

# Digits input (1, 1, 8, 8), ResNet-18-sized weights: 11.6 M parameters, 46 MB in FP32 (ResNet-18: 11.7 M, 45 MB)
WIDE = '''
import torch
from torch import nn


class Wide(nn.Module):
    input_shape = (1, 1, 8, 8)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(1, 64, 3, padding=1)
        self.hidden = nn.Linear(64 * 8 * 8, 2816)
        self.head = nn.Linear(2816, 10)

    def forward(self, x):
        return self.head(torch.relu(self.hidden(torch.relu(self.stem(x)).flatten(1))))
'''


# The onnx-qdq / openvino-int8 recipe tests (tests/test_recipes.py): a CNN and three attention blocks.
RECIPE_MODELS = '''
import torch
from torch import nn


class SmallCnn(nn.Module):
    input_shape = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, image):
        return self.head(self.body(image).mean((2, 3)))


class SmallAttention(nn.Module):
    """One attention block with a residual Add into a LayerNorm."""

    input_shape = (1, 8, 32)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.qkv = nn.Linear(32, 96)
        self.proj = nn.Linear(32, 32)
        self.norm = nn.LayerNorm(32)

    def forward(self, tokens):
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        return self.norm(tokens + self.proj(torch.softmax(q @ k.transpose(-1, -2) / 32 ** 0.5, dim=-1) @ v))


class SmallCausal(SmallAttention):
    """Causal self-attention: future positions filled with finfo.min before Softmax (as Hugging Face models do)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("future", torch.triu(torch.ones(8, 8, dtype=torch.bool), diagonal=1))

    def forward(self, tokens):
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        scores = (q @ k.transpose(-1, -2) / 32 ** 0.5).masked_fill(self.future, torch.finfo(torch.float32).min)
        return self.proj(torch.softmax(scores, dim=-1) @ v)
'''


# Token-id inputs (int64) with an attention mask, two outputs.
TOKEN_MODEL = '''
import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 8)
        self.proj = nn.Linear(8, 4)

    def forward(self, input_ids, attention_mask):
        hidden = self.proj(self.embed(input_ids))
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0), hidden.amax(1)
'''


# --- ONNX graphs (onnx.helper) ------------------------------------------------------------------------------------
# conv_bn, shape_range, outlier_mlp and static_reshape_add reproduce what broke tflite-int8 on real ONNX models
# (issue 16); tiny_classifier is the bench tests' FP32 artifact.
TINY_ONNX_SHAPE = (1, 3, 8, 8)
TINY_ONNX_CLASSES = 5


def save_graph(nodes, inputs, outputs, initializers, path: Path, opset: int) -> Path:
    """A checked opset-``opset`` (IR 8) model of one graph named after the file, saved to ``path``."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_bn(path: Path) -> Path:
    """Conv → BatchNormalization → Relu → Conv at opset 12, weights named like PaddlePaddle's (``conv2d_0.w_0``):
    torchao's BN folding failed with ``KeyError: "attribute 'conv2d_0_w_0' already exists"``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, values: np.ndarray):
        return numpy_helper.from_array(values.astype(np.float32), name)

    initializers = [init("conv2d_0.w_0", rng.normal(size=(8, 3, 3, 3)) * 0.3),
                    init("bn_scale", rng.uniform(0.5, 1.5, 8)), init("bn_bias", rng.normal(size=8) * 0.1),
                    init("bn_mean", rng.normal(size=8) * 0.1), init("bn_var", rng.uniform(0.5, 1.5, 8)),
                    init("conv2d_1.w_0", rng.normal(size=(8, 8, 3, 3)) * 0.3)]
    nodes = [helper.make_node("Conv", ["x", "conv2d_0.w_0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c0", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["b0"]),
             helper.make_node("Relu", ["b0"], ["r0"]),
             helper.make_node("Conv", ["r0", "conv2d_1.w_0"], ["y"], pads=[1, 1, 1, 1])]
    return save_graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], initializers, path, 12)


def shape_range(path: Path, width: int = 100) -> Path:
    """Shape → Gather → Cast → Range(0, width, 1) added to the input, as YOLOv8's anchor grid: torch.export failed
    with ``GuardOnDataDependentSymNode: Could not guard on data-dependent expression zuf2 > 0.0``."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = [numpy_helper.from_array(np.array(1, np.int64), "axis1"),
                    numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                    numpy_helper.from_array(np.array(1.0, np.float32), "step")]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Gather", ["shape", "axis1"], ["n"]),
             helper.make_node("Cast", ["n"], ["n_float"], to=TensorProto.FLOAT),
             helper.make_node("Range", ["zero", "n_float", "step"], ["grid"]),
             helper.make_node("Add", ["x", "grid"], ["y"])]
    return save_graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], initializers, path, 17)


def outlier_mlp(path: Path, outlier: float = 400.0, channel: int = 5) -> Path:
    """A digits MLP (Reshape → MatMul → Add → Relu → Mul → MatMul → Add) trained for a few seconds, then one hidden
    channel scaled by ``outlier`` and the next layer's matching weights by 1/``outlier``: FP32 is unchanged, but
    per-tensor INT8 activations crush every other channel (issue 16: tflite-int8 "3 layers to float", drop 0.84 →
    0.84)."""
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from edgeq.examples.digits import load_digits_split

    x, y = load_digits_split("train")
    torch.manual_seed(0)
    first, second = torch.nn.Linear(64, 32), torch.nn.Linear(32, 10)
    optimizer = torch.optim.Adam([*first.parameters(), *second.parameters()], 1e-2)
    features, labels = torch.tensor(x.reshape(len(x), 64)), torch.tensor(y)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(second(torch.relu(first(features))), labels).backward()
        optimizer.step()
    w1, b1 = first.weight.detach().numpy().T, first.bias.detach().numpy()
    w2, b2 = second.weight.detach().numpy().T.copy(), second.bias.detach().numpy()
    scale = np.ones(32, np.float32)
    scale[channel] = outlier
    w2[channel] /= outlier
    initializers = [numpy_helper.from_array(a.astype(np.float32), n)
                    for a, n in ((w1, "w1"), (b1, "b1"), (scale, "s"), (w2, "w2"), (b2, "b2"))]
    initializers.append(numpy_helper.from_array(np.array([1, 64], np.int64), "flat"))
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "w1"], ["h0"], name="matmul"),
             helper.make_node("Add", ["h0", "b1"], ["h1"], name="add"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
             helper.make_node("Mul", ["h2", "s"], ["h3"], name="mul"),
             helper.make_node("MatMul", ["h3", "w2"], ["o0"], name="matmul_1"),
             helper.make_node("Add", ["o0", "b2"], ["logits"], name="add_1")]
    return save_graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                 [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], initializers, path, 17)


def static_reshape_add(path: Path) -> Path:
    """x + Reshape(offset, [1, C, 1, 1]) with a constant offset, as PP-OCR's mobile classifier's SE blocks: the
    Reshape of a static tensor stayed in the graph and its target was read with ``.tolist()`` (``Could not extract
    specialized integer from data-dependent expression u0``)."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = [numpy_helper.from_array(np.array([0.5, -1.5, 2.0], np.float32), "offset"),
                    numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "target")]
    nodes = [helper.make_node("Reshape", ["offset", "target"], ["offset4d"]),
             helper.make_node("Add", ["x", "offset4d"], ["y"])]
    return save_graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], initializers, path, 13)


def tiny_classifier(path: Path) -> Path:
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm on (1, 3, 8, 8) → (1, 5) logits, opset 17: the bench tests'
    FP32 artifact (tests/bench_artifacts.py)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "conv_w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "conv_b"),
        numpy_helper.from_array(rng.standard_normal((TINY_ONNX_CLASSES, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(TINY_ONNX_CLASSES).astype(np.float32) * 0.1, "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(TINY_ONNX_SHAPE))],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, TINY_ONNX_CLASSES])], weights,
                      path, 17)


def two_outputs(path: Path) -> Path:
    """Conv(3→4, 3×3, pad 1) → Relu → Flatten → Gemm(256→5) on (1, 3, 8, 8), opset 13, two outputs: logits and the
    Relu's features (the runner tests)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "conv_w"),
               numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "conv_b"),
               numpy_helper.from_array(rng.standard_normal((5, 256)).astype(np.float32) * 0.1, "gemm_w"),
               numpy_helper.from_array(rng.standard_normal(5).astype(np.float32) * 0.1, "gemm_b")]
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["features"]),
             helper.make_node("Flatten", ["features"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "gemm_w", "gemm_b"], ["logits"], transB=1)]
    return save_graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5]),
                       helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, 8, 8])], weights, path, 13)


# --- TFLite -------------------------------------------------------------------------------------------------------
def tflite_full_integer(model, calibration: np.ndarray) -> bytes:
    """A Keras model converted by the TFLite converter to full-integer INT8 with int8 input and output, calibrated on
    ``calibration`` (one batch-1 sample per row)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample] for sample in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()
