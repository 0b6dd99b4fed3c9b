"""openvino-fp32/fp16/int8 backends on the tiny CNN (PyTorch and its ONNX form) and a tiny attention block."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from models import smooth_images

from edgeq.backends import get_backend
from edgeq.backends.options import validate_configs
from edgeq.errors import BackendError, BackendUnavailable, CalibrationError, ConfigError
from edgeq.models import load_model
from edgeq.types import ExportOptions

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def sources(tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny CNN as a PyTorch source and as an ONNX source (its own ONNX export, copied out)."""
    torch_source = load_model(f"{tiny_model_file}:TinyCNN")
    onnx_dir = tmp_path_factory.mktemp("ov_onnx")
    for sibling in torch_source.onnx_path().parent.iterdir():
        shutil.copy(sibling, onnx_dir / sibling.name)
    onnx_source = load_model(onnx_dir / "model.onnx")
    yield {"torch": torch_source, "onnx": onnx_source}
    torch_source.close()
    onnx_source.close()


@pytest.fixture(scope="module")
def calib() -> list[dict[str, np.ndarray]]:
    return _samples(16, seed=0)


@pytest.fixture(scope="module")
def holdout() -> list[dict[str, np.ndarray]]:
    return _samples(8, seed=1)


def _samples(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """The tiny CNN's inputs as batch-1 feeds (smooth random images: well-behaved activations for calibration)."""
    return [{"x": image[None]} for image in smooth_images(count, (3, 16, 16), seed)]


def _export(backend: str, source, calib, out: Path, **options):
    out.mkdir(parents=True, exist_ok=True)
    return get_backend(backend)().export(source, calib, out, ExportOptions(**options))


def _run(xml: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Through the runner, which pins the precision the IR records (never the plugin's CPU-dependent default)."""
    from edgeq.targets.runner import open_session

    session = open_session(str(xml), threads=1)
    return [session.run(sample)[0] for sample in feeds]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def exported(sources, calib, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every (backend, source kind) artifact, exported once for the module."""
    out = tmp_path_factory.mktemp("ov_out")
    exports = {}
    for backend in ("openvino-fp32", "openvino-fp16", "openvino-int8"):
        for kind in KINDS:
            route = {backend: {"route": "torch"}} if kind == "torch-direct" else {}
            exports[(backend, kind)] = _export(backend, _source(sources, kind), calib, out / f"{backend}-{kind}",
                                               configs=validate_configs(route))
    return exports


KINDS = ["torch", "torch-direct", "onnx"]
"""PyTorch source (default route), PyTorch source forced through convert_model(module), ONNX source."""
ROUTES = {"torch": "onnx", "torch-direct": "torch", "onnx": "onnx"}


def _source(sources: dict, kind: str):
    return sources["onnx" if kind == "onnx" else "torch"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", ["openvino-fp32", "openvino-fp16", "openvino-int8"])
def test_ir_files_names_and_static_shapes(exported, sources, backend: str, kind: str) -> None:
    import openvino as ov

    files = exported[(backend, kind)]
    assert files.main.name == "model.xml" and files.main.is_file() and files.main.with_suffix(".bin").is_file()
    assert files.recipe["route"] == ROUTES[kind]
    model = ov.Core().read_model(str(files.main))
    assert [(p.get_any_name(), tuple(p.get_shape())) for p in model.inputs] == [("x", (1, 3, 16, 16))]
    assert model.inputs[0].get_partial_shape().is_static
    assert [p.get_any_name() for p in model.outputs] == _source(sources, kind).output_names


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_and_fp16_match_reference(exported, sources, holdout, kind: str) -> None:
    source = _source(sources, kind)
    refs = [source.reference(sample)[0] for sample in holdout]
    for backend, rtol in (("openvino-fp32", 1e-5), ("openvino-fp16", 1e-2)):
        outputs = _run(exported[(backend, kind)].main, holdout)
        for ref, got in zip(refs, outputs):
            assert got.shape == ref.shape
            rel = np.abs(got - ref).max() / np.abs(ref).max()
            assert rel < rtol, (backend, rel)


def test_fp16_bin_is_half_of_fp32(exported) -> None:
    for kind in KINDS:
        fp32 = exported[("openvino-fp32", kind)].main.with_suffix(".bin").stat().st_size
        fp16 = exported[("openvino-fp16", kind)].main.with_suffix(".bin").stat().st_size
        assert 0.45 < fp16 / fp32 < 0.55, (kind, fp16, fp32)
        assert exported[("openvino-fp16", kind)].recipe["compress_to_fp16"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_int8_is_quantized_and_faithful(exported, sources, holdout, kind: str) -> None:
    import openvino as ov

    files = exported[("openvino-int8", kind)]
    model = ov.Core().read_model(str(files.main))
    types = [op.get_type_name() for op in model.get_ops()]
    weight_types = {op.get_element_type().get_type_name() for op in model.get_ops() if op.get_type_name() == "Constant"}
    assert types.count("FakeQuantize") >= 3, types  # input of both convs and the linear layer at least
    assert "i8" in weight_types  # weights are stored compressed as int8
    assert files.recipe["graph"] == "cnn" and files.recipe["preset"] == "performance"
    assert files.recipe["model_type"] is None and files.recipe["subset_size"] == 16
    source = _source(sources, kind)
    for sample, got in zip(holdout, _run(files.main, holdout)):
        assert _cosine(source.reference(sample)[0], got) > 0.98


def test_int8_calibration_methods(sources, calib, holdout, tmp_path: Path) -> None:
    source = sources["onnx"]
    with pytest.raises(BackendError, match="^calibration method 'entropy' is not supported by openvino-int8"):
        _export("openvino-int8", source, calib, tmp_path / "entropy", calib_method="entropy")
    files = _export("openvino-int8", source, calib, tmp_path / "mse", calib_method="mse")
    assert files.recipe["calibration"] == "mse" and "histogram" in str(files.recipe["activation_range"])
    for sample, got in zip(holdout, _run(files.main, holdout)):
        assert _cosine(source.reference(sample)[0], got) > 0.98


def test_int8_percentile_changes_ranges(sources, calib, tmp_path: Path) -> None:
    """A low percentile clips activation ranges: the FakeQuantize limits must shrink against minmax."""
    import openvino as ov

    def input_range(files) -> float:
        model = ov.Core().read_model(str(files.main))
        first = next(op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
        high = first.input_value(2).get_node().get_data()
        return float(np.abs(high).max())

    source = sources["onnx"]
    default = _export("openvino-int8", source, calib, tmp_path / "minmax")
    clipped = _export("openvino-int8", source, calib, tmp_path / "pct", calib_method="percentile",
                      configs=validate_configs({"openvino-int8": {"percentile": 99.0}}))
    assert clipped.recipe["calibration"] == "percentile"
    assert input_range(clipped) < 0.95 * input_range(default)


def test_missing_packages_make_backend_unavailable(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real_find_spec(name, *a))
    with pytest.raises(BackendUnavailable, match=r"openvino-int8 needs nncf: pip install 'edgeq\[openvino\]'"):
        get_backend("openvino-int8").check_available()
    get_backend("openvino-fp32").check_available()  # needs only openvino


def test_bad_route_and_empty_calibration_are_one_line_errors(sources, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"openvino-fp32.route: Input should be 'onnx' or 'torch' \(got 'tflite'\)"):
        _export("openvino-fp32", sources["torch"], None, tmp_path / "a",
                configs=validate_configs({"openvino-fp32": {"route": "tflite"}}))
    with pytest.raises(CalibrationError, match="needs calibration samples"):
        _export("openvino-int8", sources["torch"], [], tmp_path / "b")
