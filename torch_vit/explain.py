"""``convvit gradcam`` and ``convvit attention``: what a trained model looks at, and how its channel
attention behaves, computed by the NumPy model and checked against torch (and pytorch-grad-cam)."""

import os

import numpy as np
import torch

import numpy_vit

from .attention import attention_maps, check_against_torch, entropy, plot_attention, plot_positional_similarity
from .augment import normalize
from .checkpoint import numpy_twin
from .gradcam import METHODS, find_images, torch_grad_cam
from .report import save_png


def _panel(ax, image, cam, zero, title):
    from pytorch_grad_cam.utils.image import show_cam_on_image

    ax.imshow(show_cam_on_image(image, cam, use_rgb=True))
    if zero:
        ax.text(0.5, 0.5, "map is all zero:\nevery channel's\nevidence negative", transform=ax.transAxes,
                ha="center", va="center", fontsize=7, color="white", backgroundcolor="black")
    ax.set_title(title, fontsize=8)


def plot_gradcam(rows, classes, path, method, layer):
    """One figure: per image, the image as it is, then for the true class and for the predicted
    class the heat map and its overlay; a shared colour bar (0 to 1, min-max scaled as pytorch-grad-cam does)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 5, figsize=(11, 2.1 * len(rows) + 0.6), squeeze=False,
                             layout="constrained")  # rows packed under the title, beside the colour bar
    im = None
    for ax_row, r in zip(axes, rows):
        ax_row[0].imshow(r["image"])
        ax_row[0].set_title(f"#{r['index']}: true {classes[r['label']]}\npredicted {classes[r['pred']]} "
                            f"({100 * r['confidence']:.0f}%)", fontsize=8)
        for k, (which, cls) in enumerate((("true", r["label"]), ("pred", r["pred"]))):
            im = ax_row[1 + 2 * k].imshow(r[f"cam_{which}"], cmap="jet", vmin=0, vmax=1)
            ax_row[1 + 2 * k].set_title(f"{method} for {classes[cls]}", fontsize=8)
            _panel(ax_row[2 + 2 * k], r["image"], r[f"cam_{which}"], r[f"zero_{which}"],
                   f"overlay, {classes[cls]}" + (" (true)" if which == "true" else " (predicted)"))
        for ax in ax_row:
            ax.axis("off")
    fig.suptitle(f"{method} at {layer}; heat 0 to 1 per map", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.6, label="relevance (scaled per map)")
    save_png(fig, path)
    plt.close(fig)


def gradcam(model, data, cfg, out, n=10, correct=False, indices=None, per_class=None, layer=None, method="gradcam",
            log=print):
    """Find the images, compute the CAMs for the true and the predicted class with pytorch-grad-cam
    and (for gradcam) with numpy_vit.grad_cam, write the grid and one PNG per image; return the rows."""
    if method not in METHODS:
        raise ValueError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    model = model.cpu().float().eval()
    found = find_images(model, data.test_x, data.test_y, n=n, correct=correct, indices=indices,
                        per_class=per_class, mean=cfg.mean, std=cfg.std)
    if len(found.indices) == 0:
        raise ValueError("gradcam: no test image fits the request (none misclassified?)")
    idx = torch.from_numpy(found.indices)
    x = normalize(data.test_x[idx], cfg.mean, cfg.std)
    images = data.test_x[idx].permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0  # as they are
    np_model = numpy_twin(model) if method == "gradcam" else None
    rows = [dict(index=int(i), label=int(l), pred=int(p), confidence=float(c), image=img)
            for i, l, p, c, img in zip(found.indices, found.labels, found.predicted, found.confidence, images)]
    worst = 0.0
    for which, targets in (("true", found.labels), ("pred", found.predicted)):
        cams, extras = torch_grad_cam(model, x, [int(t) for t in targets], layer=layer, method=method, return_raw=True)
        if np_model is not None:
            np_cams = numpy_vit.grad_cam(np_model, x.numpy(), np.asarray(targets), layer=layer)
            worst = max(worst, float(np.abs(np_cams - cams).max()))
        for r, cam, zero in zip(rows, cams, extras["zero"]):
            r[f"cam_{which}"], r[f"zero_{which}"] = cam, bool(zero)
    layer_name = extras["layer"]
    os.makedirs(out, exist_ok=True)
    plot_gradcam(rows, data.classes, os.path.join(out, "gradcam.png"), method, layer_name)
    for r in rows:
        plot_gradcam([r], data.classes, os.path.join(out, f"gradcam_{r['index']}.png"), method, layer_name)
    zeros = sum(r["zero_true"] for r in rows)
    log(f"{method} at {layer_name} on {len(rows)} {'correctly classified' if correct else 'misclassified'} "
        f"test images: {', '.join(str(r['index']) for r in rows)}; {zeros} of them with an all-zero map for the true class")
    if np_model is not None:
        log(f"numpy_vit.grad_cam against pytorch-grad-cam: largest difference {worst:.2e} (bound 1e-5)")
        if worst > 1e-5:
            raise RuntimeError(f"numpy_vit.grad_cam differs from pytorch-grad-cam by {worst:.2e} > 1e-5")
    return rows


def attention(model, data, cfg, out, index, log=print):
    """The channel-attention matrices of test image ``index`` (NumPy, checked against torch), their
    entropy per block and head, and the positional-map similarity picture."""
    if not 0 <= index < len(data.test_x):
        raise ValueError(f"--index: expected 0 to {len(data.test_x) - 1}, got {index}")
    model = model.cpu().float().eval()
    np_model = numpy_twin(model)
    image = normalize(data.test_x[index:index + 1], cfg.mean, cfg.std).numpy()
    maps = attention_maps(np_model, image)
    diff = check_against_torch(np_model, model, image)
    os.makedirs(out, exist_ok=True)
    label = data.classes[int(data.test_y[index])]
    plot_attention(maps, os.path.join(out, f"attention_{index}.png"), f"test image {index} ({label})")
    plot_positional_similarity(model.embedding.pos_embedding.detach(), os.path.join(out, "positional.png"))
    hc = maps[0].shape[-1]
    log(f"test image {index} ({label}): channel attention per block, mean column entropy per head "
        f"(nats; uniform = log {hc} = {np.log(hc):.2f}, one-hot = 0)")
    for b, m in enumerate(maps):
        log(f"  block {b}: " + "  ".join(f"head {h} {e:.2f}" for h, e in enumerate(entropy(m))))
    log(f"NumPy attention against torch: largest difference {diff:.2e}")
    return maps
