"""Quantization-aware training for ``edgeq export --qat --epochs N --train DATA`` (PyTorch sources only).

QAT fine-tunes the model with fake quantization inserted by the upstream quantizer, then lowers the trained graph
with the same tool chain the PTQ backends use. No quantization arithmetic lives here, and nothing about a runtime:
this module runs the training loop around torchao's PT2E API (``prepare_qat_pt2e`` → train → ``convert_pt2e``) with
the quantizer a runtime hands it; each runtime's adapter (``RuntimeAdapter.export_qat``) picks the quantizer and
lowers the trained graph:

- tflite-int8 (``edgeq/runtimes/tflite/_qat.py``, route ``litert-torch PT2E QAT``): litert-torch's quantizer,
  converted by ``litert_torch.convert`` like the PTQ route.
- onnx-qdq and openvino-int8 (``edgeq/runtimes/onnx/_qat.py``, ``edgeq/runtimes/openvino/_qat.py``, route
  ``torchao PT2E QAT → QDQ ONNX``): one training shared by both, exported as QuantizeLinear/DequantizeLinear pairs
  that ONNX Runtime runs and OpenVINO reads as FakeQuantize ops.
  NNCF's own PyTorch QAT was tried first: its fake-quantize ops JIT-compile a C++ extension with the system
  compiler on first use (> 60 s here, NNCF's load timeout), which a user's export must not depend on.

Training: cross-entropy on the labelled set (``.npz`` with x, y or ``sklearn-digits:train``, loaded by
``edgeq.compress.data``), Adam with a constant small learning rate (1e-4 by default; per-element step sizes keep
layers whose weights differ by orders of magnitude stable, where SGD diverged on the hard digits model of
tests/test_qat.py), seeded shuffling, dropout switched by torchao's ``move_exported_model_to_train/eval``.
BatchNorm is folded into its Conv/Linear first (frozen statistics). Observers first see the calibration set (so
training starts from the PTQ ranges), then keep tracking activations during training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from edgeq.errors import CalibrationError, UnsupportedConversion
from edgeq.types import EpochHook, QatSettings

__all__ = ["EpochHook", "QatSettings", "check_source", "prepare", "qat_backends", "settings_from_cli",
           "train_fake_quantized"]

def check_source(source: Any) -> None:
    """Refuse, in one line, sources QAT cannot train: anything but a single-input PyTorch model."""
    if source.framework != "torch":
        raise UnsupportedConversion(f"--qat needs a PyTorch model (file.py:Class or .pt2): {source.name} is a "
                                    f"{source.framework} model, which edgeq cannot fine-tune")
    if len(source.inputs) != 1:
        raise UnsupportedConversion(f"--qat trains single-input models on (x, y) data; {source.name} has "
                                    f"{len(source.inputs)} inputs")


def _training_data(source: Any, spec: str) -> Any:
    """The labelled set (cached on the source: the QAT routes share it), checked against the model input."""
    from edgeq.compress.data import load_labelled

    cache = source.__dict__.setdefault("_edgeq_qat_train", {})
    if spec not in cache:
        data = load_labelled(spec)
        expected = tuple(source.inputs[0].shape[1:])
        if tuple(data.x.shape[1:]) != expected:
            raise CalibrationError(f"training data {spec}: samples have shape {tuple(data.x.shape[1:])}, "
                                   f"input {source.inputs[0].name} needs {expected}")
        classes = int(source.reference({source.inputs[0].name: data.x[:1]})[0].shape[-1])
        if int(data.y.max()) >= classes or int(data.y.min()) < 0:
            raise CalibrationError(f"training labels {spec} span {int(data.y.min())}..{int(data.y.max())}, "
                                   f"but {source.name} outputs {classes} classes")
        cache[spec] = data
    return cache[spec]


def _export_for_training(module: Any, example: Any) -> tuple[Any, bool]:
    """``torch.export`` graph with a dynamic batch dimension (mini-batches); batch 1 if the model cannot. Strict
    (Dynamo) export first, as for PTQ (``_tflite.export_for_quantization``: litert-torch's add/mul/cat annotators
    need its ``source_fn_stack``)."""
    import torch

    from edgeq.runtimes.tflite._tflite import export_for_quantization

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    pair = torch.cat([example, example])
    for strict in (True, False):
        try:
            return torch.export.export(module, (pair,), dynamic_shapes=({0: batch},), strict=strict).module(), True
        except Exception:  # noqa: BLE001 - Dynamo or a hard-coded batch size: try the next way
            continue
    return export_for_quantization(module, (example,)), False


def _fold_batchnorm(module: Any) -> tuple[Any, list[str]]:
    """Fold every BatchNorm into its Conv/Linear (eval statistics; ``edgeq.compress.fuse``). QAT then trains the
    folded weights with frozen BN statistics: no BN in the graph, so no slow conv+BN QAT pattern rewriting and
    no noisy batch statistics from small mini-batches."""
    from edgeq.compress.fuse import fuse_sequential, fuse_with_fx

    module.eval()
    try:
        return fuse_with_fx(copy.deepcopy(module))
    except Exception:  # noqa: BLE001 - tracing fails on data-dependent control flow; fuse inside Sequentials
        return fuse_sequential(module)


def _logits(output: Any) -> Any:
    return output[0] if isinstance(output, (list, tuple)) else output


def train_fake_quantized(source: Any, quantizer: Any, calib: Any, settings: QatSettings, route: str
                         ) -> tuple[Any, dict[str, Any]]:
    """Insert ``quantizer``'s fake quantization (``prepare_qat_pt2e``) into a copy of the source model, observe
    the calibration set, train ``settings.epochs`` epochs; returns the trained graph in eval mode + a summary."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    data = _training_data(source, settings.train)
    module = copy.deepcopy(source.torch_module())  # the FP32 reference and the other backends keep the original
    if not getattr(module, "_edgeq_exported", False):  # a .pt2 program's module is already a flat graph
        module, _folded = _fold_batchnorm(module)
    (example,) = source.example_inputs()
    graph, batched = _export_for_training(module, example)
    batch_size = settings.batch_size if batched else 1
    graph = prepare_qat_pt2e(graph, quantizer)
    move_exported_model_to_eval(graph)
    # BatchNorm statistics stay frozen: folded away for Python sources; a .pt2 graph keeps its BN ops, which would
    # otherwise learn batch statistics (of single samples, when the graph has a fixed batch of 1) — such graphs
    # train in eval mode throughout (dropout off too).
    trains_in_train_mode = not any("batch_norm" in str(node.target) for node in graph.graph.nodes)
    with torch.no_grad():
        for feeds in calib:
            graph(*source.example_inputs(feeds))
    xs, ys = torch.from_numpy(data.x), torch.from_numpy(data.y)
    optimizer = torch.optim.Adam(graph.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    mean_loss = float("nan")
    for epoch in range(settings.epochs):
        if trains_in_train_mode:
            move_exported_model_to_train(graph)
        total, batches = 0.0, 0
        for index in torch.randperm(len(xs), generator=generator).split(batch_size):
            loss = torch.nn.functional.cross_entropy(_logits(graph(xs[index])), ys[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        mean_loss = total / max(batches, 1)
        if settings.on_epoch is not None:
            settings.on_epoch(route, epoch + 1, settings.epochs, mean_loss)
    move_exported_model_to_eval(graph)
    return graph, {"batch_size": batch_size, "final_loss": round(mean_loss, 6), "train_samples": len(xs)}


def qat_backends() -> list[str]:
    """The registered backends whose runtime adapter lowers a QAT-trained graph (registry order)."""
    from edgeq.backends import REGISTRY, adapter_for

    return [name for name in REGISTRY if adapter_for(name).supports_qat(name)]


def prepare(source: Any, options: Any, tick: Callable[[str, str, int], None], backends: list[str]) -> Any:
    """Check a ``--qat`` request against the loaded source and the backends (one-line refusals) and load the
    training data now; returns ``options`` whose QAT settings advance the bar ``qat <route>`` once per epoch."""
    import dataclasses

    from edgeq.errors import ConfigError

    settings: QatSettings = options.qat
    capable = qat_backends()
    if not set(backends) & set(capable):
        raise ConfigError(f"--qat applies to {', '.join(capable)}; none of them was requested (-b)")
    check_source(source)
    _training_data(source, settings.train)

    def on_epoch(route: str, epoch: int, epochs: int, loss: float) -> None:
        tick(f"qat {route}", f"QAT epoch {epoch}/{epochs} loss {loss:.3f}", epochs)

    return dataclasses.replace(options, qat=dataclasses.replace(settings, on_epoch=on_epoch))


def settings_from_cli(qat: bool, train: str | None, epochs: int, lr: float, seed: int,
                      max_drop: float | None = None) -> QatSettings | None:
    """``--qat --train DATA --epochs N --lr X`` → settings (None without --qat); one-line refusals otherwise."""
    from edgeq.errors import ConfigError

    if not qat:
        if train is not None:
            raise ConfigError("--train is only used by --qat; add --qat or drop --train")
        return None
    if train is None:
        raise ConfigError("--qat needs labelled training data: --train DATA (.npz with x and y, or sklearn-digits:train)")
    if max_drop is not None:
        raise ConfigError("--qat and --max-drop cannot be combined: QAT quantizes every layer it trains")
    if not 0.0 < lr <= 10.0:
        raise ConfigError(f"--lr {lr:g} must be in (0, 10]")
    return QatSettings(train=train, epochs=epochs, lr=lr, seed=seed)
