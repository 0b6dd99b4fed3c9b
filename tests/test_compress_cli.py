"""``edgeq compress`` end to end on tiny models, bad recipes as one-line errors, and the digits acceptance runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from cli_checks import fails_in_one_line  # noqa: E402
from models import RESIDUAL_NET  # noqa: E402

from edgeq.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICK = {"max_batches": 2, "batch_size": 16}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compress_cli")
    (root / "nets.py").write_text(RESIDUAL_NET)
    rng = np.random.default_rng(0)
    for name, n in (("train", 64), ("eval", 32)):
        x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
        np.savez(root / f"{name}.npz", x=x, y=(x.mean((1, 2, 3)) > 0).astype(np.int64))
    return {"root": root, "model": root / "nets.py", "train": root / "train.npz", "eval": root / "eval.npz"}


def write_recipe(path: Path, steps: list, **extra) -> Path:
    path.write_text(yaml.safe_dump({"threads": 1, **extra, "steps": steps}))
    return path


def compress_args(setup: dict[str, Path], recipe: Path, out: Path, *more: str) -> list[str]:
    return ["compress", f"{setup['model']}:ResNetTiny", "--recipe", str(recipe), "--train", str(setup["train"]),
            "--eval", str(setup["eval"]), "--out", str(out), *more]




@pytest.mark.parametrize(("steps", "expect"), [
    ([{"step": "quantize"}], "step 1: unknown step 'quantize'; choose from fuse, prune, finetune, distill, lowrank"),
    ([{"step": "fuse"}, {"step": "prune", "ratio": 1.0}], "step 2 (prune): ratio: input should be less than 1"),
    ([{"step": "prune", "ratio": -0.1}], "ratio: input should be greater than or equal to 0"),
    ([{"step": "prune"}], "step 1 (prune): ratio: field required"),
    ([{"step": "prune", "ratio": 0.5, "method": "random"}], "method: input should be 'structured' or 'unstructured'"),
    ([{"step": "finetune", "epochs": 1, "learning_rate": 0.1}], "learning_rate: extra inputs are not permitted"),
    ([{"step": "lowrank", "energy": 0.9, "param_ratio": 0.5}], "give exactly one of energy or param_ratio"),
    ([], "'steps' must be a non-empty list"),
    (["fuse"], "step 1 must be a mapping with a 'step' key"),
])
def test_bad_recipes_are_one_line(capsys, setup, tmp_path, steps, expect):
    recipe = write_recipe(tmp_path / "bad.yaml", steps)
    fails_in_one_line(capsys, compress_args(setup, recipe, tmp_path / "out"), expect)


def test_missing_train_set_for_a_training_step(capsys, setup, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", [{"step": "fuse"}, {"step": "distill", "epochs": 1}])
    args = ["compress", f"{setup['model']}:ResNetTiny", "--recipe", str(recipe), "--out", str(tmp_path / "o")]
    fails_in_one_line(capsys, args, "recipe step 2 (distill) trains: give a training set with --train")


def test_other_bad_inputs(capsys, setup, tmp_path):
    fails_in_one_line(capsys, compress_args(setup, tmp_path / "none.yaml", tmp_path / "o"), "recipe not found")
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [fuse\n")
    fails_in_one_line(capsys, compress_args(setup, broken, tmp_path / "o"), "not valid YAML")
    recipe = write_recipe(tmp_path / "ok.yaml", [{"step": "fuse"}])
    args = compress_args(setup, recipe, tmp_path / "o")
    fails_in_one_line(capsys, [*args[:5], str(tmp_path / "missing.npz"), *args[6:]], "data file not found")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 1, 6, 6), np.float32), y=np.zeros(4, np.int64))
    fails_in_one_line(capsys, [*args[:5], str(wrong), *args[6:]], "has samples of shape (1, 6, 6); the model takes (1, 8, 8)")
    recipe = write_recipe(tmp_path / "ign.yaml", [{"step": "prune", "ratio": 0.5, "ignore": ["nope"]}])
    fails_in_one_line(capsys, compress_args(setup, recipe, tmp_path / "o2"), "prune.ignore names unknown modules nope")


def test_compress_end_to_end_then_resume(capsys, setup, tmp_path):
    from edgeq.models import load_model

    steps = [{"step": "fuse"}, {"step": "prune", "ratio": 0.5}, {"step": "finetune", "epochs": 2, **QUICK},
             {"step": "distill", "epochs": 1, **QUICK}, {"step": "lowrank", "layers": "conv", "param_ratio": 0.5}]
    recipe = write_recipe(tmp_path / "r.yaml", steps)
    out = tmp_path / "out"
    assert main(compress_args(setup, recipe, out)) == 0
    report = json.loads((out / "compress-report.json").read_text())
    names = [row["step"] for row in report["steps"]]
    assert names == ["original", "1. fuse", "2. prune", "3. finetune", "4. distill", "5. lowrank"]
    original, pruned = report["steps"][0], report["steps"][2]
    assert pruned["macs"] < 0.4 * original["macs"] and pruned["params"] < 0.4 * original["params"]
    assert report["steps"][1]["details"]["max_abs_error"] < 1e-4
    assert all(0 <= row["top1"] <= 1 for row in report["steps"])
    assert report["artifacts"]["pt2"]["max_abs_error"] < 1e-5
    assert report["artifacts"]["py"]["max_abs_error"] < 1e-5
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step03-finetune.pt", "step04-distill.pt"]
    source = load_model(f"{out}/model.py:CompressedModel", out / "model.safetensors")
    assert source.inputs[0].shape == (1, 1, 8, 8)
    text = capsys.readouterr().out
    assert "edgeq compress" in text and "5. lowrank" in text

    assert main([*compress_args(setup, recipe, out), "--resume"]) == 0
    resumed = json.loads((out / "compress-report.json").read_text())
    assert resumed["steps"][3]["details"]["resumed_from_epoch"] == 2
    assert resumed["steps"][-1]["top1"] == report["steps"][-1]["top1"]
    assert resumed["steps"][-1]["params"] == report["steps"][-1]["params"]

    changed = write_recipe(tmp_path / "r2.yaml", [*steps[:3], {"step": "finetune", "epochs": 5, **QUICK}])
    fails_in_one_line(capsys, [*compress_args(setup, changed, out), "--resume"], "was made with a different recipe")


@pytest.mark.slow
def test_digits_acceptance_prune_recipe(tmp_path):
    """recipes/digits-prune.yaml: top-1 within 1 point of the original, MACs down ≥ 40% (about 30 s)."""
    out = tmp_path / "digits"
    code = main(["compress", f"{REPO}/edgeq/examples/digits.py:DigitsCNN", "--weights",
                 f"{REPO}/edgeq/examples/digits_cnn.safetensors", "--recipe", f"{REPO}/recipes/digits-prune.yaml",
                 "--train", "sklearn-digits:train", "--eval", "sklearn-digits:eval", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "compress-report.json").read_text())["summary"]
    assert summary["macs_ratio"] <= 0.6
    assert summary["top1_delta"] >= -0.01


@pytest.mark.slow
def test_mlp_lowrank_acceptance(tmp_path):
    """recipes/mlp-lowrank.yaml: params down ≥ 40%, top-1 within 1 point after fine-tuning (about 20 s)."""
    import torch

    from edgeq.examples.mlp import train_mlp

    torch.set_num_threads(1)
    weights = tmp_path / "mlp.safetensors"
    assert train_mlp(weights) > 0.95
    out = tmp_path / "mlp"
    code = main(["compress", f"{REPO}/edgeq/examples/mlp.py:DigitsMLP", "--weights", str(weights), "--recipe",
                 f"{REPO}/recipes/mlp-lowrank.yaml", "--train", "sklearn-digits:train", "--eval", "sklearn-digits:eval",
                 "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "compress-report.json").read_text())["summary"]
    assert summary["params_ratio"] <= 0.6
    assert summary["top1_delta"] >= -0.01
