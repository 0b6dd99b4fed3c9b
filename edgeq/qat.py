"""Quantization-aware training for ``edgeq export --qat --epochs N --train DATA`` (PyTorch sources only).

QAT fine-tunes the model with fake quantization inserted by the upstream quantizer, then lowers the trained graph
with the same tool chain the PTQ backends use. No quantization arithmetic lives here; this module only runs the
training loop around torchao's PT2E API (``prepare_qat_pt2e`` → train → ``convert_pt2e``):

- tflite-int8 (route ``litert-torch PT2E QAT``): litert-torch's ``PT2EQuantizer`` with
  ``get_symmetric_quantization_config(is_per_channel=True, is_qat=True)``, converted by ``litert_torch.convert``
  exactly like the PTQ route (``edgeq.backends._tflite``).
- onnx-qdq and openvino-int8 (route ``torchao PT2E QAT → QDQ ONNX``): one training shared by both. On x86 the
  quantizer is torchao's ``X86InductorQuantizer`` (u8 activations, s8 per-channel weights — ORT's U8S8); on a CPU
  without VNNI its weights get 7 bits (ORT's ``reduce_range``, so VPMADDUBSW cannot saturate; torchao's own
  ``reduce_range`` would shrink the activations instead). On ARM/other targets it is
  litert-torch's symmetric quantizer (s8 activations: ORT's S8S8). The converted graph is exported by
  ``torch.onnx.export`` as QuantizeLinear/DequantizeLinear pairs, which ONNX Runtime runs as is and OpenVINO's
  ``convert_model`` turns into FakeQuantize ops (INT8 kernels at run time).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.errors import CalibrationError, UnsupportedConversion

ROUTE_TFLITE = "litert-torch PT2E QAT"
ROUTE_QDQ = "torchao PT2E QAT -> torch.onnx QDQ"
QAT_BACKENDS = ("onnx-qdq", "openvino-int8", "tflite-int8")

EpochHook = Callable[[str, int, int, float], None]
"""``on_epoch(route, epoch, epochs, mean_loss)``, called after each finished epoch."""


@dataclass(frozen=True)
class QatSettings:
    """What ``--qat --epochs N --train DATA [--lr X]`` asks for."""

    train: str
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    on_epoch: EpochHook | None = field(default=None, compare=False, repr=False)

    def recipe(self, route: str, summary: dict[str, Any]) -> dict[str, Any]:
        """The manifest's ``recipe["qat"]`` of a QAT artifact."""
        return {"epochs": self.epochs, "lr": self.lr, "route": route, "train": self.train,
                "batch_size": summary.get("batch_size", self.batch_size), "optimizer": "adam",
                "final_loss": summary.get("final_loss")}


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

    from edgeq.backends._tflite import export_for_quantization

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


def export_tflite_int8(source: Any, calib: Any, out: Path, settings: QatSettings, backend: str
                       ) -> tuple[Path, dict[str, Any]]:
    """QAT with litert-torch's quantizer, lowered to a full-integer .tflite like the PTQ route."""
    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgeq.backends._tflite import litert_quantizer, lowering_errors, quiet, write_quantized

    quantizer = litert_quantizer(is_qat=True)
    # BN is folded before training (_fold_batchnorm), so litert-torch's QAT-only conv+BN annotators have nothing
    # to match; they also fail on torch 2.13 (they pass a plain function to torch.export.export).
    quantizer.STATIC_QAT_ONLY_OPS = []
    with quiet(), lowering_errors(backend):
        graph, summary = train_fake_quantized(source, quantizer, calib, settings, ROUTE_TFLITE)
        with torch.no_grad():
            converted = convert_pt2e(graph, fold_quantize=False)
            allow_exported_model_train_eval(converted)
            converted.eval()  # litert-torch reads .training (else warns "converted in training mode")
            write_quantized(converted, source.example_inputs(), quantizer, out)
    return out, settings.recipe(ROUTE_TFLITE, summary)


def _qdq_quantizer(target: str) -> tuple[Any, dict[str, Any]]:
    """The PT2E quantizer for a CPU target and what it means for the QDQ graph (for the manifest)."""
    if target.startswith("x86"):
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

        reduce_range = target == "x86-avx2"
        config = get_default_x86_inductor_quantization_config(is_qat=True)
        if reduce_range:  # ORT's reduce_range: 7-bit weights (torchao's own flag shrinks activations instead,
            # which starved the hard digits model of tests/test_qat.py: QAT eval top-1 0.25 vs 0.82 with 8 bits)
            import dataclasses

            config = dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=-64, quant_max=63))
        why = ("x86 without VNNI: 7-bit weights avoid VPMADDUBSW saturation" if reduce_range
               else "x86 VNNI: u8×s8 kernels")
        return X86InductorQuantizer().set_global(config), {
            "quantizer": "torchao X86InductorQuantizer", "activation_type": "QUInt8", "weight_type": "QInt8",
            "reduce_range": reduce_range, "reason": why}
    from edgeq.backends._tflite import litert_quantizer

    quantizer = litert_quantizer(is_qat=True)
    quantizer.STATIC_QAT_ONLY_OPS = []  # see export_tflite_int8
    return quantizer, {
        "quantizer": "litert-torch PT2EQuantizer (symmetric)", "activation_type": "QInt8", "weight_type": "QInt8",
        "reduce_range": False, "reason": "ARM/other: S8S8"}


def qdq_onnx(source: Any, calib: Any, options: Any) -> tuple[Path, dict[str, Any]]:
    """The QAT-trained QDQ ONNX for this machine's (or ``-O onnx-qdq.target``'s) CPU, trained once per
    source and shared by onnx-qdq and openvino-int8; returns the path and the recipe."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgeq.backends._tflite import quiet
    from edgeq.backends.onnx_qdq import OnnxQdq, detect_target
    from edgeq.models.torch_model import _quiet_exporter

    settings: QatSettings = options.qat
    target = str(OnnxQdq.config_of(options).target or detect_target())
    cache = source.__dict__.setdefault("_edgeq_qat_qdq", {})
    key = (settings, target)
    if key not in cache:
        quantizer, recipe = _qdq_quantizer(target)
        with quiet():
            graph, summary = train_fake_quantized(source, quantizer, calib, settings, ROUTE_QDQ)
        work = source.workdir / f"qat-qdq-{len(cache)}"
        work.mkdir(parents=True, exist_ok=True)
        path = work / "model.onnx"
        with torch.no_grad(), _quiet_exporter():
            converted = convert_pt2e(graph)
            torch.onnx.export(converted, source.example_inputs(), str(path), dynamo=True, opset_version=18,
                              input_names=[s.name for s in source.inputs], output_names=source.output_names,
                              verbose=False)
        recipe = {"format": "QDQ", "per_channel": True, "target": target, **recipe,
                  "qat": settings.recipe(ROUTE_QDQ, summary)}
        cache[key] = (path, recipe)
    return cache[key]


def export_onnx_qdq(source: Any, calib: Any, out_dir: Path, options: Any) -> Any:
    """onnx-qdq with ``--qat``: the QAT QDQ ONNX, saved like every ONNX artifact."""
    from edgeq.backends._onnx import load_full, save_onnx
    from edgeq.backends.base import ExportedFiles

    path, recipe = qdq_onnx(source, calib, options)
    main = save_onnx(load_full(path), out_dir / "model.onnx")
    note = f"QAT {options.qat.epochs} epoch(s), {recipe['activation_type']}/{recipe['weight_type']} per-channel: " \
           f"{recipe['reason']}"
    return ExportedFiles(main=main, recipe=recipe, notes=[note])


def export_openvino_int8(source: Any, calib: Any, out_dir: Path, options: Any) -> Any:
    """openvino-int8 with ``--qat``: OpenVINO's ONNX frontend reads the QAT QDQ graph as FakeQuantize ops."""
    import openvino as ov

    from edgeq.backends._openvino import _fix_inputs, _name_outputs, op_counts, save_ir
    from edgeq.backends.base import ExportedFiles
    from edgeq.errors import BackendError

    path, qdq_recipe = qdq_onnx(source, calib, options)
    model = ov.convert_model(str(path))
    _fix_inputs(model, source)
    _name_outputs(model, source.output_names)
    fake_quantize = op_counts(model)["FakeQuantize"]
    if fake_quantize == 0:
        raise BackendError(f"OpenVINO found no quantized ops in the QAT graph of {source.name}")
    main = save_ir(model, out_dir, compress_to_fp16=False)
    recipe = {"route": "QAT QDQ ONNX -> openvino.convert_model", "quantizer": qdq_recipe["quantizer"],
              "weights": "int8 symmetric per-channel", "activations": qdq_recipe["activation_type"],
              "reduce_range": qdq_recipe["reduce_range"], "fake_quantize_ops": fake_quantize,
              "qat": qdq_recipe["qat"]}
    return ExportedFiles(main=main, recipe=recipe,
                         notes=[f"QAT {options.qat.epochs} epoch(s); {fake_quantize} FakeQuantize ops from QDQ"])


def prepare(source: Any, options: Any, tick: Callable[[str, str, int], None], backends: list[str]) -> Any:
    """Check a ``--qat`` request against the loaded source and the backends (one-line refusals) and load the
    training data now; returns ``options`` whose QAT settings advance the bar ``qat <route>`` once per epoch."""
    import dataclasses

    from edgeq.errors import ConfigError

    settings: QatSettings = options.qat
    if not set(backends) & set(QAT_BACKENDS):
        raise ConfigError(f"--qat applies to {', '.join(QAT_BACKENDS)}; none of them was requested (-b)")
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
