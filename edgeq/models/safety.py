"""No code from a model file runs without ``--trust-model`` (docs/security.md has the rule per format).

- ``.pt2``: torch.export.load unpickles sample inputs, constants and some weights, and falls back to
  ``weights_only=False`` (arbitrary objects, i.e. arbitrary code) when the safe unpickler refuses. Unless trusted,
  every unpickling during the load is forced to ``weights_only=True`` and plain ``pickle`` / torchbind object
  loading is refused, so a program made of tensors loads and anything else fails in one line.
- Keras ``.keras`` / ``.h5``: Keras' own ``safe_mode`` (refuses ``Lambda`` layers' Python bytecode).
- SavedModel: graphs can hold ops that touch the file system or call back into Python; their functions are
  scanned before TensorFlow loads (and later runs) them.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeq.errors import ModelError

TRUST_HINT = "re-run with --trust-model only if you trust whoever made this file"

SAVED_MODEL_RISKY_OPS = frozenset({
    # file system
    "WriteFile", "ReadFile", "MatchingFiles", "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2",
    "RestoreSlice", "MergeV2Checkpoints", "ShardedFilename",
    # call back into Python
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
    # readers and writers of files
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary",
    "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
    "WriteRawProtoSummary", "FlushSummaryWriter", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3",
    "LoadAndRemapMatrix", "Unbatch", "DatasetToTFRecord", "SaveDataset", "SaveDatasetV2", "LoadDataset",
})
"""Ops a SavedModel's serving graph has no business running: file access, Python callbacks, summary/debug
writers. The checkpoint save/restore functions TensorFlow itself adds (``*_traced_save*`` /
``*_traced_restore*``) are the only place SaveV2/RestoreV2 are allowed."""


class _RefusingPickle:
    """Stands in for the ``pickle`` module inside torch's .pt2 reader: plain pickles may carry code."""

    def __getattr__(self, name: str) -> Any:
        return getattr(pickle, name)

    @staticmethod
    def loads(*_args: Any, **_kwargs: Any) -> Any:
        raise pickle.UnpicklingError("plain pickled objects are not loaded without --trust-model")

    load = loads


@contextlib.contextmanager
def torch_loads_tensors_only() -> Iterator[None]:
    """While active, ``torch.load`` only unpickles tensors and plain containers (``weights_only=True`` is forced,
    so torch.export's ``weights_only=False`` fallback fails instead of running code), and the other unpicklers
    torch.export uses (plain ``pickle``, torchbind objects) refuse. Torch's own log of the refusal is silenced."""
    import torch
    from torch.export.pt2_archive import _package

    real_load, real_pickle = torch.load, _package.pickle
    real_obj_load = getattr(torch._C, "_pickle_load_obj", None)

    def tensors_only(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise pickle.UnpicklingError("torchbind objects are not loaded without --trust-model")

    torch.load, _package.pickle = tensors_only, _RefusingPickle()
    if real_obj_load is not None:
        torch._C._pickle_load_obj = refuse
    try:
        yield
    finally:
        torch.load, _package.pickle = real_load, real_pickle
        if real_obj_load is not None:
            torch._C._pickle_load_obj = real_obj_load


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Keep library log records (e.g. torch.export's deserialization traceback) off the terminal."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def saved_model_risky_ops(path: Path) -> list[str]:
    """Risky op types (``SAVED_MODEL_RISKY_OPS``) in a SavedModel's graph and functions, outside TensorFlow's own
    checkpoint save/restore functions; raises ModelError when saved_model.pb cannot be parsed."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    except (DecodeError, OSError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable SavedModel ({type(exc).__name__})") from None
    found: set[str] = set()
    for meta in proto.meta_graphs:
        found.update(node.op for node in meta.graph_def.node if node.op in SAVED_MODEL_RISKY_OPS
                     and node.op not in ("SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename"))
        for function in meta.graph_def.library.function:
            name = function.signature.name
            if "_traced_save" in name or "_traced_restore" in name:
                continue
            found.update(node.op for node in function.node_def if node.op in SAVED_MODEL_RISKY_OPS)
    return sorted(found)


def check_saved_model(path: Path, trust_model: bool) -> None:
    """Refuse, in one line, a SavedModel whose graph can touch files or run Python, unless trusted."""
    risky = saved_model_risky_ops(path)
    if risky and not trust_model:
        raise ModelError(f"SavedModel {path} contains ops with side effects ({', '.join(risky)}): edgeq would run "
                         f"them with the FP32 reference; {TRUST_HINT}")
