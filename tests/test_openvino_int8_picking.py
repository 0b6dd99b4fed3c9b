"""openvino-int8 on a tiny stateful LSTM (the Silero VAD bug) and the recipe trials picked by calibration fidelity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.backends import get_backend
from edgeq.backends.options import validate_configs
from edgeq.models import load_model
from edgeq.runtimes._picking import closeness
from edgeq.types import ExportOptions

pytest.importorskip("openvino")
pytest.importorskip("nncf")

TINY_LSTM = '''
import torch
from torch import nn


class TinyVad(nn.Module):
    """Silero-VAD-shaped: features -> ReLU -> LSTM whose (h, c) come in and go out as one state tensor."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Linear(16, 32)
        self.lstm = nn.LSTM(32, 32, batch_first=True)
        self.head = nn.Linear(32, 1)

    def forward(self, x, state):
        y, (h, c) = self.lstm(torch.relu(self.features(x)), (state[0:1], state[1:2]))
        return torch.sigmoid(self.head(y[:, -1])), torch.cat([h, c], 0)
'''


@pytest.fixture(scope="module")
def lstm_source(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("ov_lstm") / "tiny_vad.py"
    path.write_text(TINY_LSTM)
    source = load_model(f"{path}:TinyVad", input_shapes=["x=1x1x16", "state=2x1x32"])
    yield source
    source.close()


def _stream(source, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Samples as a VAD sees them: each state is the FP32 model's next state from the previous chunk."""
    rng = np.random.default_rng(seed)
    state = np.zeros((2, 1, 32), np.float32)
    samples = []
    for _ in range(count):
        sample = {"x": rng.standard_normal((1, 1, 16)).astype(np.float32), "state": state}
        samples.append(sample)
        state = np.asarray(source.reference(sample)[1], np.float32)
    return samples


def _export(source, calib, out: Path, **config):
    out.mkdir(parents=True, exist_ok=True)
    options = ExportOptions(configs=validate_configs({"openvino-int8": config}))
    return get_backend("openvino-int8")().export(source, calib, out, options)


def _saved_ir_closeness(source, xml: Path, samples) -> tuple[float, float]:
    """The saved IR as users run it (edgeq's runner, precision pinned) vs the FP32 source, every output."""
    from edgeq.targets.runner import open_session

    session = open_session(str(xml), threads=1)
    return closeness([source.reference(s) for s in samples], [session.run(s) for s in samples])


def test_lstm_state_survives_the_saved_ir(lstm_source, tmp_path: Path) -> None:
    """NNCF's INT8 LSTM inputs make the CPU plugin's INT8 RNN kernel compute a wrong state from the saved IR (0.53
    worst-sample cosine here, 0.09 on Silero VAD); edgeq keeps recurrent ops float and the state stays faithful."""
    import nncf
    import openvino as ov

    calib, holdout = _stream(lstm_source, 32, seed=0), _stream(lstm_source, 16, seed=1)
    files = _export(lstm_source, calib, tmp_path / "edgeq")
    edgeq_worst, _ = _saved_ir_closeness(lstm_source, files.main, holdout)
    assert edgeq_worst > 0.98, edgeq_worst
    assert files.recipe["recurrent_float"] == ["LSTMSequence"]
    assert any("LSTMSequence kept float" in note for note in files.notes)
    # NNCF's plain default on the same FP32 IR, saved the same way: what users got before (the CPU plugin's bug).
    plain = nncf.quantize(ov.convert_model(str(lstm_source.onnx_path())), nncf.Dataset(calib), subset_size=32)
    ov.save_model(plain, str(tmp_path / "plain.xml"), compress_to_fp16=False)
    plain_worst, _ = _saved_ir_closeness(lstm_source, tmp_path / "plain.xml", holdout)
    assert edgeq_worst >= plain_worst, (edgeq_worst, plain_worst)


def test_trial_split_holds_back_the_last_samples() -> None:
    from edgeq.runtimes._picking import TRIAL_SUBSET, trial_split

    samples = [{"x": np.full((1,), i, np.float32)} for i in range(300)]
    fit, held_back = trial_split(samples)
    assert len(held_back) == 16 and [int(s["x"][0]) for s in held_back] == list(range(284, 300))
    assert len(fit) == TRIAL_SUBSET and [int(s["x"][0]) for s in fit] == list(range(TRIAL_SUBSET))
    assert [int(s["x"][0]) for s in fit] == [int(s["x"][0]) for s in fit]  # re-iterable
    fit, held_back = trial_split(samples[:16])  # the zoo's --quick: 12 calibrate the trials, 4 score them
    assert len(fit) == 12 and len(held_back) == 4
    assert trial_split(samples[:7]) is None  # too few to hold any back


def test_closeness_is_the_worst_output_of_the_worst_sample() -> None:
    reference = [[np.array([1.0, 0.0]), np.array([0.0, 1.0])], [[1.0, 1.0], [2.0, 0.0]]]
    same = closeness(reference, reference)
    assert same == pytest.approx((1.0, 1.0))
    flipped = [[np.array([1.0, 0.0]), np.array([0.0, -1.0])], reference[1]]  # output 1 of sample 0 reversed
    worst, mean = closeness(reference, flipped)
    assert worst < 0.0 and mean == pytest.approx((worst + 1.0) / 2)


def test_an_alternative_must_cut_the_default_error_by_a_quarter() -> None:
    from edgeq.runtimes._picking import best

    assert best({"default": (0.9660, 0.9836), "histogram": (0.9711, 0.9889)}) == "default"  # 15 % less error: noise
    assert best({"default": (0.9964, 0.9975), "histogram": (0.9980, 0.9994), "other": (0.9961, 0.9999)}) == "histogram"
    assert best({"default": (0.8271, 0.9563), "a": (0.95, 0.99), "b": (0.96, 0.985)}) == "b"
    assert best({"default": (1.0, 1.0), "a": (1.0, 1.0)}) == "default"


def test_trials_are_scored_as_saved_irs_and_the_best_is_kept(lstm_source, tmp_path: Path) -> None:
    calib = _stream(lstm_source, 24, seed=0)
    files = _export(lstm_source, calib, tmp_path / "picked")
    scores = files.recipe["trial_scores"]
    assert list(scores) == ["default", "histogram ranges", "global min/max ranges, full bias correction"]
    error = {label: (1 - worst, 1 - mean) for label, (worst, mean) in scores.items()}
    clear = [label for label in scores if tuple(scores[label]) > tuple(scores["default"])
             and all(e <= 0.75 * d for e, d in zip(error[label], error["default"]))]
    assert files.recipe["trial"] == (max(clear, key=lambda label: tuple(scores[label])) if clear else "default")
    assert files.recipe["subset_size"] == 24  # the winner is calibrated on every sample
    assert "held-back calibration samples" in files.recipe["picked_by"] and files.recipe["picked_by"] in files.notes
    if files.recipe["trial"] == "histogram ranges":
        assert files.recipe["calibration"] == "mse"
    fixed = _export(lstm_source, calib, tmp_path / "fixed", preset="performance")  # the user fixed the recipe
    assert "trial" not in fixed.recipe and "trial_scores" not in fixed.recipe
    few = _export(lstm_source, calib[:6], tmp_path / "few")  # too few samples to hold any back: one quantization
    assert "trial" not in few.recipe


def test_fidelity_floor_keeps_the_costly_quantizers_reader_float(tmp_path: Path) -> None:
    """Below the floor (0.99 held-back worst cosine) openvino-int8 ranks the activation FakeQuantize ops by the
    damage each alone does at the output and keeps the ops reading the worst one float (NNCF ignored scope): here
    the 1x1 conv reading a tensor with one channel at ~400 beside three at ~1 (one int8 scale erases the three)."""
    from test_export_onnx import _wide_conv_output_model

    from edgeq.cli import main
    from edgeq.manifest import Manifest

    model = _wide_conv_output_model(tmp_path / "wide.onnx")
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((40, 3, 8, 8)).astype(np.float32))
    results = {}
    for floor in ("0.99", "0"):
        out = tmp_path / f"floor-{floor}"
        assert main(["export", str(model), "--calib", str(calib), "-b", "openvino-int8", "-O",
                     f"openvino-int8.fidelity_floor={floor}", "--out", str(out)]) == 0
        results[floor] = Manifest.read(out / "wide" / "manifest.json").artifact("openvino-int8")
    floored, plain = results["0.99"], results["0"]
    assert floored.status == "ok" and plain.status == "ok", (floored.error, plain.error)
    assert plain.verification.cosine_min < 0.95 and "fidelity_floor" not in plain.recipe
    assert "float" in floored.recipe["fidelity_floor"] and floored.recipe["ignored_scope"], floored.recipe
    assert floored.verification.cosine_min > 0.99
