"""The Keras (NHWC) twin of ``edgeq.examples.digits.DigitsCNN``, carrying the same trained weights.

Layer for layer the same network as the PyTorch example: conv(1→32)+BN+ReLU → conv(32→64)+BN+ReLU → maxpool →
conv(64→128)+BN+ReLU → global average pool → dense(128→10), weights read from ``digits_cnn.safetensors``
(no PyTorch needed): conv kernels (out, in, kh, kw) → (kh, kw, in, out), dense (out, in) → (in, out),
BatchNorm with PyTorch's epsilon 1e-5. Flatten order needs no permutation: the global pool leaves one value per
channel, so the NCHW and NHWC flattenings are the same 128-vector. Input: (1, 8, 8, 1), NHWC.

    python -m edgeq.examples.digits_keras out/digits_keras.keras   # writes the .keras file
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.examples.digits import WEIGHTS

INPUT_SHAPE = (8, 8, 1)
CONV_CHANNELS = ((0, 32), (3, 64), (7, 128))
"""(index in the PyTorch ``features`` Sequential, output channels) of each conv; its BatchNorm is at index + 1."""


def torch_weights(path: Path = WEIGHTS) -> dict[str, np.ndarray]:
    """The committed PyTorch state dict as numpy arrays (read with safetensors' numpy loader)."""
    from safetensors.numpy import load_file

    return load_file(str(path))


def build() -> Any:
    """The untrained Keras functional model (named layers, channels-last)."""
    import keras
    from keras import layers

    image = keras.Input(INPUT_SHAPE, name="image")
    x = image
    for block, (_index, channels) in enumerate(CONV_CHANNELS):
        x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        x = layers.BatchNormalization(epsilon=1e-5, name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        if block == 1:
            x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    logits = layers.Dense(10, name="logits")(x)
    return keras.Model(image, logits, name="digits_keras")


def load_pretrained(path: Path = WEIGHTS) -> Any:
    """The Keras twin with the PyTorch example's trained weights."""
    state = torch_weights(path)
    model = build()
    for block, (index, _channels) in enumerate(CONV_CHANNELS):
        model.get_layer(f"conv{block}").set_weights([state[f"features.{index}.weight"].transpose(2, 3, 1, 0)])
        bn = f"features.{index + 1}"
        model.get_layer(f"bn{block}").set_weights([state[f"{bn}.weight"], state[f"{bn}.bias"],
                                                   state[f"{bn}.running_mean"], state[f"{bn}.running_var"]])
    model.get_layer("logits").set_weights([state["classifier.weight"].T, state["classifier.bias"]])
    return model


def save(out: Path) -> Path:
    """Write the pretrained twin as a ``.keras`` file (the format ``edgeq export`` reads)."""
    out = Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"{out}: the file name must end in .keras")
    out.parent.mkdir(parents=True, exist_ok=True)
    load_pretrained().save(str(out))
    return out


if __name__ == "__main__":
    print(save(Path(sys.argv[1] if len(sys.argv) > 1 else "digits_keras.keras")))
