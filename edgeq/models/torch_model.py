"""PyTorch input: ``file.py:ClassName`` + ``--weights`` (safetensors or a weights-only state dict), or a ``.pt2``."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.digest import sha256_file
from edgeq.errors import ModelError, first_line
from edgeq.models.base import ModelSource
from edgeq.models.shapes import guess_layout, shape_for
from edgeq.types import Feeds, TensorSpec


def _import_file(path: Path):
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    module_name = f"edgeq_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise ModelError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def load_state_dict(weights: Path) -> dict[str, Any]:
    """Tensors from ``.safetensors`` or a ``.pt``/``.pth`` state dict, never unpickling arbitrary objects."""
    import torch

    if not weights.is_file():
        raise ModelError(f"weights file not found: {weights}")
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(weights))
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many types
        raise ModelError(f"cannot read weights {weights}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from None
    for key in ("state_dict", "model_state_dict", "model", "net"):  # training checkpoints wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if isinstance(state, dict) and state and all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module."):]: v for k, v in state.items()}  # saved from DataParallel / DDP
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{weights} is not a state dict of tensors (save model.state_dict(), not the model)")
    return state


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings (missing torchvision ops, deprecations) that say nothing about the user's model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _infer_input_dtypes(net: Any, inputs: list[TensorSpec]) -> list[TensorSpec]:
    """float32 inputs unless the module says otherwise: an ``input_dtypes`` attribute ({name: "int64"}), or int64
    for the inputs that float zeros cannot feed (token ids into ``nn.Embedding``: "Expected tensor ... Long")."""
    import torch

    declared = dict(getattr(net, "input_dtypes", None) or {})
    inputs = [TensorSpec(s.name, s.shape, str(declared.get(s.name, s.dtype))) for s in inputs]
    if declared or not any(isinstance(m, torch.nn.Embedding) for m in net.modules()):
        return inputs

    def runs(specs: list[TensorSpec]) -> bool:
        try:
            with torch.no_grad():
                net(*(torch.zeros(s.shape, dtype=getattr(torch, s.dtype)) for s in specs))
            return True
        except (RuntimeError, TypeError, IndexError):
            return False

    if runs(inputs):
        return inputs
    every = [TensorSpec(s.name, s.shape, "int64") for s in inputs]
    if runs(every):  # token ids and their attention mask: what tokenizers give
        return every
    for index in range(len(inputs)):  # one input at a time to int64, keeping each change that helps
        trial = [TensorSpec(s.name, s.shape, "int64") if i <= index else s for i, s in enumerate(inputs)]
        if runs(trial):
            return trial
    return [TensorSpec(s.name, s.shape, "int64") for s in inputs]


class TorchSource(ModelSource):
    """An eager ``nn.Module`` in eval mode with concrete example inputs."""

    framework = "torch"

    def __init__(self, path: Path, name: str, module: Any, inputs: list[TensorSpec], weights: Path | None):
        output_names = ["output"]
        super().__init__(path, name, inputs, output_names, guess_layout(inputs))
        self.module = module
        if not getattr(module, "_edgeq_exported", False):
            module.eval()  # a torch.export program's module is already in inference form and refuses .eval()
        self.weights = weights
        outputs = self._forward(self.example_inputs())
        self.output_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]

    @classmethod
    def from_spec(cls, spec: str, weights: Path | None, input_shapes: dict[str, tuple[int, ...]]) -> TorchSource:
        """``path/to/file.py:ClassName`` → instantiated module with weights loaded."""
        import torch

        file_part, _, class_name = spec.rpartition(":")
        path = Path(file_part)
        module = _import_file(path)
        klass = getattr(module, class_name, None)
        if not (inspect.isclass(klass) and issubclass(klass, torch.nn.Module)):
            found = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, torch.nn.Module)
                     and v.__module__ == module.__name__]
            raise ModelError(f"no torch.nn.Module class {class_name!r} in {path}; found: {', '.join(found) or 'none'}")
        try:
            net = klass()
        except TypeError as exc:
            raise ModelError(f"{class_name}() needs arguments ({exc}); give it defaults") from None
        except Exception as exc:  # noqa: BLE001 - user code may raise anything
            raise ModelError(f"{class_name}() in {path} raised {type(exc).__name__}: {first_line(exc, 160)}") from None
        if weights is not None:
            state = load_state_dict(weights)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                first = str(exc).splitlines()
                raise ModelError(f"weights {weights.name} do not fit {class_name}: {' '.join(first[1:3]).strip()[:200]}") from None
        params = [p for p in inspect.signature(net.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        default_shape = getattr(net, "input_shape", None)
        inputs = []
        for index, param in enumerate(params):
            shape = shape_for(param.name, index, input_shapes)
            if shape is None and index == 0 and default_shape is not None:
                shape = tuple(default_shape)
            if shape is None:
                if param.default is not inspect.Parameter.empty:
                    continue
                raise ModelError(f"PyTorch input {param.name!r} needs a shape: --input-shape {param.name}=1x3x224x224")
            inputs.append(TensorSpec(param.name, tuple(shape), "float32"))
        inputs = _infer_input_dtypes(net, inputs)
        return cls(path, class_name.lower() if weights is None else weights.stem, net, inputs, weights)

    @classmethod
    def from_exported_program(cls, path: Path, trust_model: bool = False) -> TorchSource:
        """A ``torch.export`` ``.pt2`` archive; input shapes come from its example inputs. Unless ``trust_model``,
        nothing but tensors is unpickled from it (edgeq/models/safety.py)."""
        import pickle

        import torch

        from edgeq.models.safety import TRUST_HINT, quiet_logging, torch_loads_tensors_only

        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        guard = contextlib.nullcontext() if trust_model else torch_loads_tensors_only()
        try:
            with quiet_logging(), guard:
                program = torch.export.load(str(path))
        except pickle.UnpicklingError as exc:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            what = f" ({found.group(1)})" if found else ""
            raise ModelError(f"{path} holds pickled Python objects{what}, not only tensors, and edgeq does not "
                             f"unpickle them; {TRUST_HINT}") from None
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{path} is not a readable torch.export program: {type(exc).__name__}") from None
        examples = program.example_inputs
        if examples is None:
            raise ModelError(f"{path} carries no example inputs; re-export with torch.export.export(model, args)")
        args, _kwargs = examples
        if not isinstance(args, (tuple, list)) or not all(isinstance(a, torch.Tensor) for a in args):
            raise ModelError(f"{path}: its example inputs are not tensors; re-export with torch.export.export(model, "
                             "args) where args is a tuple of tensors")
        names = [spec.arg.name for spec in program.graph_signature.input_specs
                 if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT]
        inputs = [TensorSpec(n, tuple(a.shape), str(a.dtype).removeprefix("torch.")) for n, a in zip(names, args)]
        module = program.module()
        module._edgeq_exported = True
        return cls(path, path.stem, module, inputs, None)

    def sha256(self) -> str:
        return sha256_file(self.weights) if self.weights else super().sha256()

    @staticmethod
    def _no_grad():
        import torch

        return torch.no_grad()

    def _forward(self, args: tuple[Any, ...]) -> list[Any]:
        """The module's outputs without gradients; an exception from the user's forward becomes one line."""
        try:
            with self._no_grad():
                return self._call(args)
        except Exception as exc:  # noqa: BLE001 - user code may raise anything
            raise ModelError(f"{self.name}.forward raised {type(exc).__name__}: {first_line(exc, 160)}") from None

    def _call(self, args: tuple[Any, ...]) -> list[Any]:
        out = self.module(*args)
        if isinstance(out, dict):
            out = list(out.values())
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def torch_module(self) -> Any:
        return self.module

    def _to_onnx(self, out_dir: Path) -> Path:

        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / "model.onnx"
        with _quiet_exporter():
            self._export_onnx(out)
        return out

    def _export_onnx(self, out: Path) -> None:
        import torch

        try:
            torch.onnx.export(
                self.module, self.example_inputs(), str(out), dynamo=True, opset_version=18,
                input_names=[s.name for s in self.inputs], output_names=self.output_names, verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - exporter errors are long; keep the first line
            raise ModelError(f"torch.onnx.export failed for {self.name}: {str(exc).splitlines()[0][:200]}") from None

    def reference(self, feeds: Feeds) -> list[np.ndarray]:
        return [t.detach().numpy() for t in self._forward(self.example_inputs(feeds))]
