"""TensorFlow / Keras input: a ``.keras`` / ``.h5`` Keras model or a TF SavedModel directory.

Every source is turned into three forms, each made once and cached in the source's workdir:
- ``tf_function()``: a ``tf.function`` with a static batch-1 input signature (the FP32 reference runs it);
- ``saved_model_dir()``: a SavedModel with that static signature (``serving_default``), what
  ``tf.lite.TFLiteConverter.from_saved_model`` and ``openvino.convert_model`` read — the route Keras 3
  documents (``model.export``);
  ``from_concrete_functions`` on a Keras 3 model leaves resource-variable reads in the .tflite, which
  breaks INT8 calibration (checked with TF 2.21 / Keras 3.15);
- ``onnx_path()``: FP32 ONNX by ``tf2onnx.convert.from_function`` (tf2onnx 1.17 works with TF 2.21 + Keras 3;
  its ``from_keras`` works too but needs a Keras model, ``from_function`` also serves SavedModels).
Keras image models are channels-last: a 4-D input is NHWC unless the model's layers say ``channels_first``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import BackendUnavailable, ModelError, first_line
from edgeq.models.base import ModelSource
from edgeq.models.shapes import shape_for
from edgeq.types import Feeds, Layout, TensorSpec

ONNX_OPSET = 17
SIGNATURE = "serving_default"


@contextlib.contextmanager
def quiet_tf() -> Iterator[None]:
    """Keep TF / Keras / absl / tf2onnx chatter (warnings, "Saved artifact at …" on stdout) off the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    names = ("absl", "tensorflow", "tf2onnx", "keras")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _fixed_shape(name: str, index: int, dims: list[int | None], given_shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Batch-1 concrete shape: ``--input-shape`` if given (must fit), else dynamic batch → 1; other dynamic
    dims need ``--input-shape``."""
    given = shape_for(name, index, given_shapes)
    if given is not None:
        if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given)):
            shown = "x".join("?" if d is None else str(d) for d in dims)
            raise ModelError(f"--input-shape {name}={'x'.join(map(str, given))} does not fit the model's {shown}")
        return tuple(int(g) for g in given)
    if not dims or any(d is None for d in dims[1:]):
        shown = "x".join("?" if d is None else str(d) for d in dims) or "unknown rank"
        raise ModelError(f"input {name!r} has dynamic dims ({shown}): pass --input-shape {name}=1x...")
    return tuple([1 if dims[0] is None else int(dims[0]), *(int(d) for d in dims[1:])])


def _safe_name(name: str, index: int, taken: set[str]) -> str:
    """A TF-op-safe, unique input name (Keras names are usually fine already)."""
    clean = re.sub(r"[^A-Za-z0-9_.\-]", "_", name.split(":")[0]) or f"input_{index}"
    if not clean[0].isalpha():
        clean = f"input_{clean}"
    while clean in taken:
        clean = f"{clean}_{index}"
    taken.add(clean)
    return clean


def _channels_first(model: Any) -> bool:
    """True when any layer of a Keras model declares ``data_format="channels_first"``."""
    with contextlib.suppress(Exception):
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if getattr(layer, "data_format", None) == "channels_first":
                return True
    return False


def _layout(inputs: list[TensorSpec], channels_first: bool) -> Layout:
    if not inputs or len(inputs[0].shape) != 4:
        return "other"
    return "NCHW" if channels_first else "NHWC"


def import_tf_quietly() -> None:
    """Import TensorFlow and Keras with their start-up lines (oneDNN, CPU features, absl) kept off the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with contextlib.redirect_stderr(io.StringIO()), quiet_tf(), _native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 → /dev/null (C++ log lines written before absl is set up ignore the log level)."""
    saved = os.dup(2)
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(sink)


def _load_keras(path: Path, trust_model: bool = False) -> Any:
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a readable .keras model (not a zip archive)")
    import_tf_quietly()
    import keras

    try:
        with quiet_tf():
            return keras.saving.load_model(str(path), compile=False, safe_mode=not trust_model)
    except Exception as exc:  # noqa: BLE001 - corrupt archives raise many types
        if "safe_mode" in str(exc):
            from edgeq.models.safety import TRUST_HINT

            raise ModelError(f"{path} has a Lambda layer (Python bytecode) that Keras' safe mode refuses to load; "
                             f"{TRUST_HINT}") from None
        raise ModelError(f"{path} is not a readable Keras model ({type(exc).__name__}: {first_line(exc, 160)})") from None


def _load_saved_model(path: Path, trust_model: bool = False) -> Any:
    from edgeq.models.safety import check_saved_model

    import_tf_quietly()
    check_saved_model(path, trust_model)
    import tensorflow as tf

    try:
        with quiet_tf():
            loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001
        loaded = _load_signatures_only(path)  # e.g. saved with its optimizer: '_UserObject' … no attribute 'add_slot'
        if loaded is None:
            raise ModelError(f"{path} is not a readable SavedModel ({type(exc).__name__}: {first_line(exc, 160)})") \
                from None
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if not signatures:
        raise ModelError(f"SavedModel {path} has no serving signature; export it with a signature "
                         "(model.export(...) or tf.saved_model.save(..., signatures=...))")
    if SIGNATURE not in signatures and len(signatures) > 1:
        raise ModelError(f"SavedModel {path} has several signatures and no {SIGNATURE!r}: {', '.join(signatures)}")
    return loaded, signatures.get(SIGNATURE) or next(iter(signatures.values()))


def _load_signatures_only(path: Path) -> Any:
    """The serving signature of a SavedModel without reviving its object graph (None if that fails too).

    ``tf.saved_model.load`` revives every saved object; a model saved with its optimizer (slot variables) fails there
    ("'_UserObject' object has no attribute 'add_slot'"; TF's own TFLiteConverter fails the same way). TF1's loader
    reads only the MetaGraph and restores the variables by name; the signature's graph is then frozen (variables →
    constants), so no variable handle reaches the converters as an extra input (tf2onnx) or an unknown op.
    """
    import tensorflow as tf

    try:
        with quiet_tf():
            graph = tf.Graph()
            with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
                meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
                defs = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
                signature = defs.get(SIGNATURE) or next(iter(defs.values()))
                outputs = {key: info.name for key, info in signature.outputs.items()}
                frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                    session, graph.as_graph_def(), sorted({name.split(":")[0] for name in outputs.values()}))
            return _GraphSignature(frozen, signature)
    except Exception:  # noqa: BLE001 - the caller reports the first error, which says more
        return None


class _GraphSignature:
    """A frozen TF1 signature called like a TF2 one: keyword inputs → dict of outputs."""

    def __init__(self, graph_def: Any, signature: Any):
        import tensorflow as tf

        self._keys = sorted(signature.inputs)
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        tensor = wrapped.graph.get_tensor_by_name
        self._function = wrapped.prune(feeds=[tensor(signature.inputs[k].name) for k in self._keys],
                                       fetches={k: tensor(v.name) for k, v in signature.outputs.items()})
        self.structured_input_signature = ((), {
            k: tf.TensorSpec(tf.TensorShape(signature.inputs[k].tensor_shape), tf.as_dtype(signature.inputs[k].dtype),
                             name=k) for k in self._keys})
        self.structured_outputs = {k: None for k in signature.outputs}
        self.signatures = {SIGNATURE: self}

    def __call__(self, **feeds: Any) -> Any:
        return self._function(*(feeds[key] for key in self._keys))


class KerasSource(ModelSource):
    """A Keras model (``.keras`` / ``.h5``) or a SavedModel's serving signature, with batch-1 input specs."""

    framework = "keras"

    def __init__(self, path: Path, name: str, inputs: list[TensorSpec], output_names: list[str], layout: Layout,
                 keras_model: Any = None, saved_model: Any = None, signature: Any = None,
                 signature_keys: list[str] | None = None):
        super().__init__(path, name, inputs, output_names, layout)
        self._keras = keras_model
        self._saved_model = saved_model
        self._signature = signature
        self._signature_keys = signature_keys or [spec.name for spec in inputs]
        self._function: Any = None
        self._saved_dir: Path | None = None

    @classmethod
    def load(cls, path: Path, input_shapes: dict[str, tuple[int, ...]], trust_model: bool = False) -> KerasSource:
        """Load a ``.keras`` / ``.h5`` file or a SavedModel directory; one-line ModelError when unreadable."""
        if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
            raise ModelError("TensorFlow/Keras input support is not installed: pip install 'edgeq[tf]'")
        if path.is_dir():
            return cls._from_saved_model(path, input_shapes, trust_model)
        model = _load_keras(path, trust_model)
        keras_inputs = list(getattr(model, "inputs", None) or [])
        if not keras_inputs:
            raise ModelError(f"{path.name}: the Keras model has no defined inputs (a subclassed model that was never "
                             "built); save a functional or Sequential model")
        taken: set[str] = set()
        inputs = []
        for index, tensor in enumerate(keras_inputs):
            name = _safe_name(str(getattr(tensor, "name", "") or f"input_{index}"), index, taken)
            dims = [None if d is None else int(d) for d in tensor.shape]
            inputs.append(TensorSpec(name, _fixed_shape(name, index, dims, input_shapes), str(tensor.dtype)))
        outputs = [str(n) for n in getattr(model, "output_names", None) or []]
        if len(outputs) != len(model.outputs):
            outputs = ["output"] if len(model.outputs) == 1 else [f"output_{i}" for i in range(len(model.outputs))]
        return cls(path, path.stem, inputs, outputs, _layout(inputs, _channels_first(model)), keras_model=model)

    @classmethod
    def _from_saved_model(cls, path: Path, input_shapes: dict[str, tuple[int, ...]],
                          trust_model: bool = False) -> KerasSource:
        loaded, signature = _load_saved_model(path, trust_model)
        _args, kwargs = signature.structured_input_signature
        if not kwargs:
            raise ModelError(f"SavedModel {path}: the serving signature has no named inputs")
        keys = sorted(kwargs)
        taken: set[str] = set()
        inputs = []
        for index, key in enumerate(keys):
            spec = kwargs[key]
            name = _safe_name(key, index, taken)
            dims = None if spec.shape.rank is None else [None if d is None else int(d) for d in spec.shape.as_list()]
            if dims is None:
                raise ModelError(f"SavedModel input {key!r} has unknown rank; cannot fix its shape")
            inputs.append(TensorSpec(name, _fixed_shape(name, index, dims, input_shapes), spec.dtype.name))
        outputs = sorted(signature.structured_outputs) if isinstance(signature.structured_outputs, dict) else ["output"]
        return cls(path, path.resolve().name, inputs, outputs, _layout(inputs, False), saved_model=loaded,
                   signature=signature, signature_keys=keys)

    def sha256(self) -> str:
        if self.path.is_dir():
            digest = hashlib.sha256()
            for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
                digest.update(str(file.relative_to(self.path)).encode() + b"\0")
                digest.update(hashlib.sha256(file.read_bytes()).digest())
            return digest.hexdigest()
        return super().sha256()

    # --- TensorFlow forms -------------------------------------------------------------------------------
    def input_signature(self) -> list[Any]:
        """``tf.TensorSpec`` per input (batch-1, named), in ``inputs`` order."""
        import tensorflow as tf

        return [tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=spec.name) for spec in self.inputs]

    def _outputs(self, *tensors: Any) -> list[Any]:
        """Run the model on tensors (``inputs`` order) and return its outputs in ``output_names`` order."""
        if self._keras is not None:
            args = tensors[0] if len(tensors) == 1 else list(tensors)
            out = self._keras(args, training=False)
        else:
            out = self._signature(**dict(zip(self._signature_keys, tensors)))
        if isinstance(out, dict):
            return [out[name] for name in self.output_names]
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def tf_function(self) -> Any:
        """The model as a ``tf.function`` with the static batch-1 input signature (traced once)."""
        if self._function is None:
            import tensorflow as tf

            self._function = tf.function(self._outputs, input_signature=self.input_signature(), autograph=False)
        return self._function

    def saved_model_dir(self) -> Path:
        """A SavedModel with a static batch-1 ``serving_default`` signature (made once; what TFLite converts)."""
        if self._saved_dir is None:
            import tensorflow as tf

            out = self.workdir / "saved_model"
            try:
                with quiet_tf():
                    if self._keras is not None:
                        signature = self.input_signature()
                        self._keras.export(str(out), format="tf_saved_model", verbose=False,
                                           input_signature=signature if len(signature) == 1 else [signature])
                    else:
                        module = tf.Module()
                        module.loaded = self._saved_model
                        fixed = tf.function(lambda **feeds: dict(zip(self.output_names, self._outputs(
                            *(feeds[s.name] for s in self.inputs)))),
                            input_signature=None, autograph=False)
                        concrete = fixed.get_concrete_function(**{s.name: t for s, t in zip(self.inputs, self.input_signature())})
                        tf.saved_model.save(module, str(out), signatures={SIGNATURE: concrete})
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"cannot write a static-shape SavedModel of {self.name}: {first_line(exc)}") from None
            self._saved_dir = out
        return self._saved_dir

    def keras_model(self) -> Any:
        """The Keras model (``.keras`` / ``.h5``), or the object ``tf.saved_model.load`` gave (SavedModel)."""
        return self._keras if self._keras is not None else self._saved_model

    def reference(self, feeds: Feeds) -> list[np.ndarray]:
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(np.asarray(feeds[spec.name], dtype=spec.dtype)) for spec in self.inputs]
        with quiet_tf():
            return [np.asarray(t) for t in self.tf_function()(*tensors)]

    def _to_onnx(self, out_dir: Path) -> Path:
        """tf2onnx on the batch-1 ``tf.function``; graph outputs renamed to ``output_names``."""
        import onnx

        try:
            import tf2onnx
        except ImportError:
            raise BackendUnavailable("converting a Keras model to ONNX needs tf2onnx: pip install 'edgeq[tf]'") from None
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            with quiet_tf():
                tf2onnx.logging.set_level(logging.ERROR)
                proto, _ = tf2onnx.convert.from_function(self.tf_function(), input_signature=self.input_signature(),
                                                         opset=ONNX_OPSET)
        except Exception as exc:  # noqa: BLE001 - converter errors are long; keep the first line
            raise ModelError(f"tf2onnx could not convert {self.name}: {first_line(exc)}") from None
        _rename_outputs(proto, self.output_names)
        out = out_dir / "model.onnx"
        large = proto.ByteSize() > 1_500_000_000
        onnx.save(proto, str(out), save_as_external_data=large, location="model.onnx.data" if large else None)
        return out


def _rename_outputs(proto: Any, names: list[str]) -> None:
    """Give the ONNX graph outputs the source's output names (tf2onnx names them ``Identity:0`` …)."""
    outputs = list(proto.graph.output)
    if len(outputs) != len(names):
        return
    mapping = {o.name: n for o, n in zip(outputs, names) if o.name != n}
    if not mapping:
        return
    for node in proto.graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for value in outputs:
        value.name = mapping.get(value.name, value.name)
