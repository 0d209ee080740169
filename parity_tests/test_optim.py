"""numpy_vit.optim against torch: AdamW, SGD with momentum, global-norm clipping and the schedule,
step by step on the same parameters and gradients (float64, to rounding)."""

import numpy as np
import pytest
import torch

from numpy_vit.optim import SGD, AdamW, clip_grad_norm, piecewise_linear

pytestmark = pytest.mark.parity


def _pair(seed, shapes=((4, 3), (5,), (2, 2, 1, 1))):
    rng = np.random.default_rng(seed)
    arrays = {f"p{i}": rng.standard_normal(s) for i, s in enumerate(shapes)}
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in arrays.values()]
    return rng, arrays, tensors


def _grads(rng, arrays, tensors, tiny=False):
    grads = {k: rng.standard_normal(a.shape) * (1e-9 if tiny else 1.0) for k, a in arrays.items()}
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    return grads


def _assert_same(arrays, tensors, what):
    for (name, a), t in zip(arrays.items(), tensors):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-14, atol=1e-15, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("weight_decay, betas", [(0.01, (0.9, 0.999)), (0.1, (0.8, 0.99)), (0.0, (0.9, 0.999))])
def test_adamw_matches_torch_for_20_steps(weight_decay, betas):
    rng, arrays, tensors = _pair(0)
    mine = AdamW(arrays, lr=0.01, betas=betas, weight_decay=weight_decay)
    theirs = torch.optim.AdamW(tensors, lr=0.01, betas=betas, weight_decay=weight_decay)
    for step in range(20):
        lr = 0.01 * (step + 1) / 20
        mine.lr = lr
        theirs.param_groups[0]["lr"] = lr
        mine.step(_grads(rng, arrays, tensors, tiny=step % 5 == 0))
        theirs.step()
        _assert_same(arrays, tensors, f"AdamW step {step}")


def test_adamw_skip_decay_matches_a_torch_param_group_without_decay():
    """convvit train --no-decay: the skipped parameters follow torch's second group (weight_decay 0)."""
    rng, arrays, tensors = _pair(5)
    mine = AdamW(arrays, lr=0.01, weight_decay=0.1, skip_decay={"p1"})
    theirs = torch.optim.AdamW([{"params": [tensors[0], tensors[2]]}, {"params": [tensors[1]], "weight_decay": 0.0}],
                               lr=0.01, weight_decay=0.1)
    decayed = AdamW({k: a.copy() for k, a in arrays.items()}, lr=0.01, weight_decay=0.1)
    for step in range(20):
        grads = _grads(rng, arrays, tensors)
        mine.step({k: g.copy() for k, g in grads.items()})
        decayed.step(grads)
        theirs.step()
        _assert_same(arrays, tensors, f"AdamW skip_decay step {step}")
    assert not np.allclose(decayed.params["p1"], arrays["p1"], rtol=1e-6, atol=0)  # the skip made a difference
    np.testing.assert_array_equal(decayed.params["p0"], arrays["p0"])


def test_adamw_skip_decay_of_an_unknown_name_is_refused():
    with pytest.raises(ValueError, match="skip_decay names parameters it was not given: q"):
        AdamW({"p": np.zeros(2)}, skip_decay={"q"})


@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
                                dict(momentum=0.5, dampening=0.1, weight_decay=0.01), dict()])
def test_sgd_matches_torch_for_10_steps(kw):
    rng, arrays, tensors = _pair(1)
    mine = SGD(arrays, lr=0.05, **kw)
    theirs = torch.optim.SGD(tensors, lr=0.05, **kw)
    for step in range(10):
        mine.step(_grads(rng, arrays, tensors))
        theirs.step()
        _assert_same(arrays, tensors, f"SGD {kw} step {step}")


@pytest.mark.parametrize("max_norm", [0.5, 1.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    rng, arrays, tensors = _pair(2)
    grads = _grads(rng, arrays, tensors)
    total = clip_grad_norm(grads, max_norm)
    total_t = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    assert abs(total - total_t.item()) <= 1e-14 * total
    for g, t in zip(grads.values(), tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-15, atol=0)


def test_seed_schedule():
    """The seed's printed learning rates: epoch 0 ends at 0.001, epoch 9 at 0.01, epoch 19 at 0.0005."""
    pts, vals = [0, 10, 20, 25], [0, 0.01, 0.0005, 0]
    assert piecewise_linear(1.0, pts, vals) == pytest.approx(0.001)
    assert piecewise_linear(10.0, pts, vals) == pytest.approx(0.01)
    assert piecewise_linear(11.0, pts, vals) == pytest.approx(0.00905)
    assert piecewise_linear(20.0, pts, vals) == pytest.approx(0.0005)
    assert piecewise_linear(25.0, pts, vals) == 0.0


def test_sgd_rejects_nesterov_without_momentum():
    with pytest.raises(ValueError, match="nesterov needs momentum > 0 and dampening 0"):
        SGD({"a": np.zeros(2)}, nesterov=True)


def test_recipe_schedules():
    """--recipe seed: the seed's points for 25 epochs; default: warm-up to epoch 2, knee at 19 of 24;
    a run shorter than the fixed warm-up warms up over the whole run and still ends at 0."""
    from torch_vit.train import make_config

    assert make_config("seed").schedule() == ([0, 10, 20, 25], [0, 0.01, 0.01 * 0.05, 0])
    default = make_config("default")
    assert default.schedule()[0] == [0, 2.0, 19, 24]
    assert default.lr_at(2.0) == pytest.approx(0.01) and default.lr_at(24.0) == 0.0
    short = make_config("default", epochs=1)
    assert short.schedule()[0] == [0, 1, 1, 1]
    assert short.lr_at(0.5) == pytest.approx(0.005) and short.lr_at(1.0) == 0.0
