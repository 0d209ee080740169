"""The end of a run: test accuracy per class, the confusion matrix, the NumPy model's agreement with
torch on every test image, and the pictures (curves.png, confusion.png), each written atomically."""

import json
import os
import time

import numpy as np
import torch

from numpy_vit.io import atomic_write

from .augment import normalize
from .checkpoint import numpy_twin


def save_png(fig, path, dpi=120):
    """Save a matplotlib figure as a PNG, atomically (the folder is created if need be)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"), suffix=".png")


def plot_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    a.plot(epochs, [r["test_loss"] for r in history], "o-", label="test")
    a.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    b.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    b.plot(epochs, [100 * r["test_acc"] for r in history], "o-", label="test")
    if all("ema_test_acc" in r for r in history):  # --ema: the moving average too
        a.plot(epochs, [r["ema_test_loss"] for r in history], "o-", label="test (EMA)")
        b.plot(epochs, [100 * r["ema_test_acc"] for r in history], "o-", label="test (EMA)")
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    save_png(fig, path)
    plt.close(fig)


def plot_confusion(confusion, classes, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_class = confusion.diagonal() / confusion.sum(1).clip(min=1)
    fig, ax = plt.subplots(figsize=(1.0 * len(classes) + 3, 0.8 * len(classes) + 2))
    im = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(im, ax=ax, label="test images")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), [f"{c} ({100 * a:.1f}%)" for c, a in zip(classes, per_class)])
    ax.set(xlabel="predicted class", ylabel="true class (per-class accuracy)", title=title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    save_png(fig, path)
    plt.close(fig)


def numpy_agreement(model, x_uint8, mean, std, torch_pred, batch_size=500):
    """How many images the NumPy model (float32, the torch model's weights) puts in the same class as torch."""
    m = numpy_twin(model, np.float32)
    same = 0
    for i in range(0, len(x_uint8), batch_size):
        xb = normalize(x_uint8[i:i + batch_size], mean, std).contiguous().numpy()
        same += int((m.forward(xb).argmax(1) == torch_pred[i:i + batch_size].numpy()).sum())
    return same


def write_report(model, data, cfg, out, log=print):
    """Per-class accuracy, confusion matrix and NumPy agreement into report.json and confusion.png,
    from a float32 evaluation on the CPU (the precision the NumPy model is compared in)."""
    import dataclasses

    from .train import _write_atomic, predict

    model = model.cpu().float()
    logits = predict(model, data.test_x, dataclasses.replace(cfg, amp=False, dtype="float32"), torch.device("cpu"))
    pred = logits.argmax(1)
    k = len(data.classes)
    confusion = torch.bincount(data.test_y * k + pred, minlength=k * k).reshape(k, k).numpy()
    acc = float((pred == data.test_y).float().mean())
    started = time.perf_counter()
    same = numpy_agreement(model, data.test_x, cfg.mean, cfg.std, pred)
    report = dict(test_acc=acc, test_loss=float(torch.nn.functional.cross_entropy(logits, data.test_y)),
                  test_images=len(pred), data=data.source,
                  per_class_acc={c: float(confusion[i, i] / max(1, confusion[i].sum())) for i, c in enumerate(data.classes)},
                  confusion=confusion.tolist(), numpy_same_class=same,
                  numpy_check_seconds=time.perf_counter() - started)
    _write_atomic(os.path.join(out, "report.json"), json.dumps(report, indent=1) + "\n")
    plot_confusion(confusion, data.classes, os.path.join(out, "confusion.png"),
                   f"test accuracy {100 * acc:.2f}% ({data.source.split(':')[0]})")
    log(f"test accuracy {100 * acc:.2f}%; per class: "
        + ", ".join(f"{c} {100 * a:.1f}%" for c, a in report["per_class_acc"].items()))
    log(f"NumPy model (float32) gives torch's class on {same} of {len(pred)} test images")
    return report
