"""Each compress step on tiny models: real torch, real torch-pruning, no mocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from models import RESIDUAL_NET  # noqa: E402

from edgeq.compress.base import StepContext  # noqa: E402
from edgeq.compress.data import LabelledData  # noqa: E402
from edgeq.compress.recipe import parse_recipe  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compress_models") / "nets.py"
    path.write_text(RESIDUAL_NET)
    return path


def load(models_file: Path, name: str):
    from edgeq.models import load_model

    return load_model(f"{models_file}:{name}").torch_module()


def data(n: int = 96, seed: int = 0) -> LabelledData:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].sum((1, 2)) > 0).astype(np.int64) + 2 * (x[:, 0, 4:].sum((1, 2)) > 0).astype(np.int64)
    return LabelledData(x, y, "synthetic")


def context(model, tmp_path: Path, step_index: int = 1, resume: bool = False) -> StepContext:
    import copy

    return StepContext(example_inputs=(torch.zeros(1, 1, 8, 8),), teacher=copy.deepcopy(model).eval(), train=data(),
                       eval=data(64, seed=1), out_dir=tmp_path, resume=resume, step_index=step_index,
                       log=lambda _m: None, show_progress=False)


def step(config: dict):
    return parse_recipe({"steps": [config]}).build()[0]


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_fuse_folds_all_bn_via_fx_and_matches(models_file, tmp_path):
    model = load(models_file, "ResNetTiny")
    x = torch.from_numpy(data().x)
    before = outputs(model, x)
    ctx = context(model, tmp_path)
    fused = step({"step": "fuse"}).run(model, ctx)
    assert ctx.details["route"] == "torch.fx"
    assert len(ctx.details["fused"]) == 3  # stem conv+bn, conv1+bn1, conv2+bn2 (bn2 feeds an add: still foldable)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert ctx.details["max_abs_error"] < 1e-4
    assert torch.allclose(outputs(fused, x), before, atol=1e-4)


def test_fuse_falls_back_to_sequential_when_untraceable(models_file, tmp_path):
    model = load(models_file, "Untraceable")
    x = torch.from_numpy(data().x)
    before = outputs(model, x)
    ctx = context(model, tmp_path)
    fused = step({"step": "fuse"}).run(model, ctx)
    assert ctx.details["route"].startswith("named_modules")
    assert ctx.details["fused"] == ["body.0+body.1"]
    assert isinstance(fused.body[1], torch.nn.Identity)
    assert torch.allclose(outputs(fused, x), before, atol=1e-4)


@pytest.mark.parametrize("criterion", ["l1", "l2", "activation"])
def test_structured_prune_removes_channels_across_residuals(models_file, tmp_path, criterion):
    from edgeq.compress.measure import count_macs, count_params

    model = load(models_file, "ResNetTiny")
    example = (torch.zeros(1, 1, 8, 8),)
    params, macs = count_params(model)[0], count_macs(model, example)
    ctx = context(model, tmp_path)
    pruned = step({"step": "prune", "method": "structured", "ratio": 0.5, "criterion": criterion}).run(model, ctx)
    # the residual add ties stem/conv2 outputs; the strided add ties down/conv3: both sides shrink together
    assert pruned.stem[0].out_channels == pruned.conv2.out_channels == pruned.conv1.in_channels == 8
    assert pruned.bn2.num_features == 8
    assert pruned.down.out_channels == pruned.conv3.out_channels == pruned.fc.in_features == 16
    assert pruned.fc.out_features == 10  # the output layer is never pruned
    assert outputs(pruned, torch.from_numpy(data().x)).shape == (96, 10)
    assert count_params(pruned)[0] < 0.4 * params
    assert count_macs(pruned, example) < 0.4 * macs


def test_structured_prune_keeps_the_strongest_channels(models_file, tmp_path):
    model = load(models_file, "WideMLP")
    with torch.no_grad():
        model.fc1.weight[:64] *= 100  # make the first 64 hidden units dominant in L1 norm
    kept_rows = model.fc1.weight[:64].detach().clone()
    pruned = step({"step": "prune", "ratio": 0.5}).run(model, context(model, tmp_path))
    assert pruned.fc1.out_features == 64
    assert torch.equal(pruned.fc1.weight.detach(), kept_rows)


def test_unstructured_prune_is_permanent_and_dense(models_file, tmp_path):
    from edgeq.compress.measure import count_params, weight_bytes

    model = load(models_file, "WideMLP")
    size_before, zlib_before = weight_bytes(model)
    ctx = context(model, tmp_path)
    pruned = step({"step": "prune", "method": "unstructured", "ratio": 0.8, "scope": "global"}).run(model, ctx)
    assert not any(name.endswith("_orig") or name.endswith("_mask") for name, _ in pruned.named_parameters())
    assert not list(pruned.named_buffers())
    assert 0.79 < ctx.details["weight_sparsity"] < 0.81
    total, nonzero = count_params(pruned)
    size_after, zlib_after = weight_bytes(pruned)
    assert size_after == size_before  # dense tensors: the same bytes on disk
    assert zlib_after < 0.5 * zlib_before  # but they compress
    assert nonzero < 0.25 * total


def test_iterative_prune_with_finetune_checkpoints(models_file, tmp_path):
    model = load(models_file, "ResNetTiny")
    config = {"step": "prune", "ratio": 0.5, "iterations": 2,
              "finetune": {"epochs": 1, "max_batches": 2, "batch_size": 16}}
    ctx = context(model, tmp_path, step_index=3)
    pruned = step(config).run(model, ctx)
    assert pruned.conv1.out_channels == 8
    assert len(ctx.details["finetune"]) == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step03-prune-it0.pt", "step03-prune-it1.pt"]


def test_finetune_checkpoints_each_epoch_and_resumes(models_file, tmp_path):
    from edgeq.compress.train import TrainConfig, train_model

    def cfg(epochs: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, max_batches=2, batch_size=16, lr=0.05, schedule="constant")

    interrupted = load(models_file, "WideMLP")
    train_model(interrupted, context(interrupted, tmp_path), cfg(2), "loop")  # as if stopped after epoch 2 of 3
    assert torch.load(tmp_path / "checkpoints" / "loop.pt", weights_only=True)["epoch"] == 2
    resumed = load(models_file, "WideMLP")  # fresh weights: everything must come from the checkpoint
    summary = train_model(resumed, context(resumed, tmp_path, resume=True), cfg(3), "loop")
    assert summary["resumed_from_epoch"] == 2
    straight = load(models_file, "WideMLP")
    train_model(straight, context(straight, tmp_path / "other"), cfg(3), "loop")
    for name, tensor in straight.state_dict().items():  # same batches, same optimizer state: same weights
        assert torch.allclose(resumed.state_dict()[name], tensor, atol=1e-6), name
    finished = load(models_file, "WideMLP")
    again = train_model(finished, context(finished, tmp_path, resume=True), cfg(3), "loop")
    assert again["resumed_from_epoch"] == 3  # a finished loop is loaded, not run again
    assert torch.equal(finished.fc1.weight, resumed.fc1.weight)


def test_distillation_loss_matches_formula():
    from edgeq.compress.distill import distillation_loss

    torch.manual_seed(0)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    temp, alpha = 3.0, 0.3
    p_t, p_s = torch.softmax(t / temp, 1), torch.softmax(s / temp, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    ce = -torch.log_softmax(s, 1)[torch.arange(5), y].mean()
    expected = alpha * ce + (1 - alpha) * temp ** 2 * kl
    assert torch.allclose(distillation_loss(s, t, y, temp, alpha), expected, atol=1e-6)
    assert float(distillation_loss(t, t, y, temp, 0.0)) == pytest.approx(0.0, abs=1e-6)


def test_distill_moves_student_towards_teacher(models_file, tmp_path):
    teacher = load(models_file, "WideMLP")
    student = load(models_file, "WideMLP")
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(0.3)
    ctx = context(teacher, tmp_path)
    x = torch.from_numpy(ctx.train.x)
    gap_before = float((outputs(student, x) - outputs(teacher, x)).abs().mean())
    trained = step({"step": "distill", "epochs": 3, "alpha": 0.0, "lr": 0.02, "batch_size": 16}).run(student, ctx)
    assert float((outputs(trained, x) - outputs(teacher, x)).abs().mean()) < gap_before


def test_lowrank_linear_exact_at_full_energy_and_smaller_by_ratio(models_file, tmp_path):
    from edgeq.compress.measure import count_params

    model = load(models_file, "WideMLP")
    x = torch.from_numpy(data().x)
    before = outputs(model, x)
    exact = step({"step": "lowrank", "energy": 1.0, "min_params": 0}).run(load(models_file, "WideMLP"), context(model, tmp_path))
    # full energy keeps every singular value: replaced only if smaller, so nothing changes numerically
    assert torch.allclose(outputs(exact, x), before, atol=1e-4)
    ctx = context(model, tmp_path)
    small = step({"step": "lowrank", "param_ratio": 0.3, "layers": "linear"}).run(model, ctx)
    assert isinstance(small.fc2, torch.nn.Sequential)
    assert small.fc2[0].out_features == ctx.details["factorised"]["fc2"]["rank"] == int(0.3 * 128 * 128 / 256)
    assert count_params(small)[0] < 0.5 * count_params(load(models_file, "WideMLP"))[0]


def test_lowrank_conv_factorisation_is_the_truncated_svd(models_file, tmp_path):
    model = load(models_file, "ResNetTiny")
    weight = model.conv3.weight.detach().clone()
    ctx = context(model, tmp_path)
    out = step({"step": "lowrank", "layers": "conv", "param_ratio": 0.5, "min_params": 1000}).run(model, ctx)
    first, second = out.conv3
    rank = ctx.details["factorised"]["conv3"]["rank"]
    assert rank == int(0.5 * 32 * 144 / (32 + 144))
    assert (first.in_channels, first.out_channels, first.kernel_size, first.stride) == (16, rank, (3, 3), (2, 2))
    assert (second.in_channels, second.kernel_size, second.out_channels) == (rank, (1, 1), 32)
    rebuilt = second.weight.detach().reshape(32, rank) @ first.weight.detach().reshape(rank, -1)
    sigma = torch.linalg.svdvals(weight.reshape(32, -1).double())
    error = float(torch.linalg.norm(rebuilt.double() - weight.reshape(32, -1).double()))
    assert error == pytest.approx(float(sigma[rank:].pow(2).sum().sqrt()), rel=1e-3)  # Eckart–Young optimum
    assert outputs(out, torch.from_numpy(data().x)).shape == (96, 10)


def test_save_compressed_writes_loadable_pt2_and_module(models_file, tmp_path):
    from edgeq.compress.artifact import save_compressed
    from edgeq.models import load_model

    model = load(models_file, "ResNetTiny")
    model = step({"step": "prune", "ratio": 0.5}).run(model, context(model, tmp_path))
    probe = [{"x": data().x[i:i + 1]} for i in range(3)]
    result = save_compressed(model, (torch.zeros(1, 1, 8, 8),), tmp_path / "out", probe, ["x"])
    assert result["pt2"]["max_abs_error"] < 1e-5
    assert result["py"]["max_abs_error"] < 1e-5
    source = load_model(result["py"]["spec"], result["py"]["weights"])
    assert source.torch_module().conv1.out_channels == 8
    program = torch.export.load(str(tmp_path / "out" / "model.pt2"))
    assert torch.allclose(program.module()(torch.from_numpy(probe[0]["x"])), outputs(model, torch.from_numpy(probe[0]["x"])))
