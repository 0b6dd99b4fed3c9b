"""Typed backend options: ``-O BACKEND.KEY=VALUE``, ``--backend-config FILE.yaml`` (file:line one-line errors), the
dedicated flags writing into the same configs, the manifest's ``artifacts[].config`` and the generated docs table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeq.backends import get_backend
from edgeq.backends.options import (
    build_configs,
    flag_entries,
    options_markdown,
    parse_assignment,
    parse_options_text,
    validate_configs,
)
from edgeq.cli import main
from edgeq.errors import ConfigError
from edgeq.manifest import Manifest
from edgeq.types import ExportOptions

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("text", "value"), [
    ("onnx-qdq.percentile=99.99", 99.99),
    ("onnx-qdq.nodes_to_exclude=[Conv_3, Add_7]", ["Conv_3", "Add_7"]),
    ("onnx-qdq.per_channel=false", False),
    ("openvino-int8.preset=mixed", "mixed"),
    ("onnx-qdq.target=", None),
])
def test_option_values_are_yaml_scalars_or_lists(text: str, value: object) -> None:
    entry = parse_assignment(text)
    backend, key = text.split("=")[0].split(".")
    assert (entry.backend, entry.values) == (backend, {key: value})
    assert getattr(build_configs([entry])[backend], key) == value


@pytest.mark.parametrize(("text", "message"), [
    ("onnx-qdq", r"^-O onnx-qdq: expected BACKEND.KEY=VALUE"),
    ("onnx-qdq.percentil=99", r"^-O onnx-qdq.percentil=99: onnx-qdq: unknown key 'percentil'; allowed: fallback, "
                              r"target, .*percentile, nodes_to_exclude, int16_tensors, fidelity_floor$"),
    ("onnx-qdq.percentile=high", r"^-O onnx-qdq.percentile=high: onnx-qdq.percentile: Input should be a valid number"),
    ("onnx-qdq.percentile=20", r"^-O onnx-qdq.percentile=20: onnx-qdq.percentile: Input should be greater than 50"),
    ("openvino-int8.preset=fast", r"^-O openvino-int8.preset=fast: openvino-int8.preset: Input should be "
                                  r"'performance' or 'mixed' \(got 'fast'\)$"),
    ("onnx-fp32.threads=2", r"^-O onnx-fp32.threads=2: onnx-fp32: unknown key 'threads'; allowed: none"),
    ("onnx-qdqq.percentile=99", r"^-O onnx-qdqq.percentile=99: unknown backend 'onnx-qdqq'; choose from: onnx-fp32"),
    ("openvino-w8a16.preset=mixed", r"^-O openvino-w8a16.preset=mixed: openvino-w8a16 is not provided"),
    ("onnx-w4.group_size=100", r"^-O onnx-w4.group_size=100: onnx-w4.group_size: INT4 group size must be a power of "
                               r"two ≥ 16 \(or -1 per channel\), got 100$"),
])
def test_bad_option_is_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_configs([parse_assignment(text)])
    assert "\n" not in str(caught.value)


GOOD_FILE = """\
# backend options
onnx-qdq:
  per_channel: false
  nodes_to_exclude: [a, b]
openvino-int8: {preset: mixed, smooth_quant: true}
tflite-int8:
"""


def test_options_file_merges_under_flags_and_dash_o() -> None:
    configs = build_configs([*parse_options_text(GOOD_FILE, "opts.yaml"),
                             *flag_entries(fallback="tiered", tflite_route="onnx2tf", w4_ratio=0.5),
                             parse_assignment("onnx-qdq.nodes_to_exclude=[c]"),
                             parse_assignment("tflite-int8.fallback=fp32")])
    qdq, ov = configs["onnx-qdq"], configs["openvino-int8"]
    assert qdq.per_channel is False and qdq.nodes_to_exclude == ["c"] and qdq.fallback == "tiered"  # -O wins
    assert ov.preset == "mixed" and ov.smooth_quant is True and ov.fallback == "tiered"
    assert configs["tflite-int8"].route == "onnx2tf" and configs["tflite-int8"].fallback == "fp32"
    assert {configs[n].ratio for n in ("onnx-w4", "openvino-w4", "tflite-w4")} == {0.5}
    assert "openvino-fp32" not in configs and "onnx-fp32" not in configs  # untouched backends keep defaults
    assert ExportOptions(configs=configs).with_config("onnx-qdq", qdq.updated(per_channel=True)).configs[
        "onnx-qdq"].per_channel is True


@pytest.mark.parametrize(("text", "message"), [
    ("onnx-qdq:\n  per_channel: false\n  percentil: 99\n", r"^opts.yaml:3: onnx-qdq: unknown key 'percentil'; "
                                                          r"allowed: fallback, target, "),
    ("openvino-int8:\n  preset: mixed\n\n  smooth_quant: maybe\n", r"^opts.yaml:4: openvino-int8.smooth_quant: Input "
                                                                   r"should be a valid boolean"),
    ("onnx-qdq: {}\nonnx-qdqq:\n  percentile: 99\n", r"^opts.yaml:2: unknown backend 'onnx-qdqq'"),
    ("onnx-qdq: 3\n", r"^opts.yaml:1: onnx-qdq: expected a mapping of options \(key: value\), got int$"),
    ("- onnx-qdq\n", r"^opts.yaml:1: expected a mapping of backend name → options"),
    ("onnx-qdq:\n  percentile: [99\n", r"^opts.yaml:3: invalid YAML: "),
])
def test_bad_options_file_is_one_line_with_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_configs(parse_options_text(text, "opts.yaml"))
    assert "\n" not in str(caught.value)


def test_python_api_configs_are_validated() -> None:
    assert validate_configs({"onnx-qdq": {"percentile": 99.9}})["onnx-qdq"].percentile == 99.9
    with pytest.raises(ConfigError, match=r"^configs\['onnx-qdq'\]: onnx-qdq: unknown key 'bogus'"):
        validate_configs({"onnx-qdq": {"bogus": 1}})
    raw = ExportOptions(configs={"onnx-qdq": {"percentile": 10}})  # type: ignore[dict-item]  # read lazily
    with pytest.raises(ConfigError, match=r"^onnx-qdq.percentile: Input should be greater than 50"):
        get_backend("onnx-qdq").config_of(raw)
    assert get_backend("onnx-qdq").config_of(ExportOptions()).percentile == 99.999  # defaults when not given


def test_cli_options_reach_the_backend_and_the_manifest(tiny_model_file: Path, tiny_calib: Path,
                                                        tmp_path: Path) -> None:
    options = tmp_path / "opts.yaml"
    options.write_text("onnx-qdq:\n  per_channel: true\n  nodes_to_exclude: [node_Conv_0]\n")
    code = main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "16",
                 "--holdout-samples", "8", "-b", "onnx-fp32", "-b", "onnx-qdq", "--backend-config", str(options),
                 "-O", "onnx-qdq.per_channel=false", "--fallback", "tiered", "--out", str(tmp_path / "out")])
    assert code == 0
    manifest = Manifest.read(tmp_path / "out" / "tinycnn" / "manifest.json")
    qdq = manifest.artifact("onnx-qdq")
    assert qdq.config is not None and qdq.config["per_channel"] is False and qdq.config["fallback"] == "tiered"
    assert qdq.config["nodes_to_exclude"] == ["node_Conv_0"] and qdq.config["percentile"] == 99.999
    assert qdq.recipe["per_channel"] is False and qdq.recipe["nodes_to_exclude"] == ["node_Conv_0"]  # took effect
    assert "per-tensor minmax" in qdq.recipe["picked_by"]  # the given per_channel: only per-tensor trials
    assert "per-channel" not in qdq.recipe["picked_by"]
    assert manifest.artifact("onnx-fp32").config == {}  # a backend without options records an empty config
    document = json.loads((tmp_path / "out" / "tinycnn" / "manifest.json").read_text())
    del document["artifacts"][0]["config"]
    document["schema_version"] = "1.1"
    assert Manifest.model_validate_json(json.dumps(document)).artifacts[0].config is None  # 1.1 manifests still read


def test_cli_bad_option_file_exits_2_with_one_line(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    options = tmp_path / "opts.yaml"
    options.write_text("openvino-int8:\n  preset: mixed\n  ignored: [x]\n")
    code = main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "-b", "onnx-fp32",
                 "--backend-config", str(options), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"error: {options}:3: openvino-int8: unknown key 'ignored'; allowed: ") and "\n" not in err
    assert "ignored_scope" in err
    assert main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "-b", "onnx-fp32",
                 "-O", "onnx-qdq.per_channel=sometimes", "--out", str(tmp_path / "out")]) == 2
    assert "onnx-qdq.per_channel: Input should be a valid boolean" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_manifest_schema_and_options_listing_show_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["manifest-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "config" in schema["$defs"]["Artifact"]["properties"]
    assert "config" not in schema["$defs"]["Artifact"].get("required", [])
    assert main(["backends", "--options"]) == 0
    assert capsys.readouterr().out.strip() == options_markdown().strip()


def test_recipes_doc_has_the_generated_options_table() -> None:
    """docs/recipes.md carries options_markdown() verbatim: regenerate it when a backend's options change."""
    text = (REPO / "docs" / "recipes.md").read_text()
    start, end = "<!-- backend-options:start -->\n", "<!-- backend-options:end -->"
    assert start in text and end in text
    from edgeq.backends import REGISTRY

    built_in = [name for name, target in REGISTRY.items() if target.startswith("edgeq.")]  # not test plugins
    assert text.split(start)[1].split(end)[0].strip() == options_markdown(built_in).strip()
