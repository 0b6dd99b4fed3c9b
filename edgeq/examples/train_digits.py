"""Train the bundled DigitsCNN deterministically and save ``digits_cnn.safetensors``.

Run: ``python -m edgeq.examples.train_digits`` (about 20 s on 2 cores). Result recorded when the committed weights
were made: see the printed eval top-1 (also asserted ≥ 97% by tests/test_example.py).
"""

from __future__ import annotations

import os
import tempfile


def train(epochs: int = 30, seed: int = 0) -> float:
    import torch
    from safetensors.torch import save_file

    from edgeq.examples.digits import WEIGHTS, DigitsCNN, load_digits_split

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x, y = load_digits_split("train")
    x_eval, y_eval = load_digits_split("eval")
    model = DigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xs), generator=gen).split(64):
            batch = xs[idx]
            shift = torch.randint(-1, 2, (2,), generator=gen)  # tiny translation augmentation
            batch = torch.roll(batch, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(batch), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_eval)).argmax(1).numpy() == y_eval).mean())
    fd, tmp = tempfile.mkstemp(dir=WEIGHTS.parent, suffix=".safetensors")
    os.close(fd)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, WEIGHTS)
    return accuracy


if __name__ == "__main__":
    acc = train()
    print(f"eval top-1: {acc:.4f} ({int(round(acc * 300))}/300); weights: saved")
