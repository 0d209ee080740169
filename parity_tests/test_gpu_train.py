"""benchmarks/gpu_train.py, the default recipe laid out for one GPU, checked on the CPU through the same code (the
device aside: no CUDA graph is captured there): its epochs are image for image convvit train's batches, its step at
learning rate 1 scaled by the rate is TorchBackend's step at that rate, its warm-up leaves no trace, the whole loop
trains as convvit train does, and the command writes its JSON and guards an existing one. The CUDA checks (the
device's augmentation against the CPU's, the graph against eager steps) skip where there is no CUDA device."""

import json

import pytest
import torch
from conftest import load_benchmark

from torch_vit.data import make_synthetic
from torch_vit.train import TorchBackend, _epoch_generator, augmenter, make_config, train

NO_CUDA = "no CUDA device on this machine: the graph and the device's augmentation run only on a GPU"

gt = load_benchmark("gpu_train")


def small(n_train=200, n_test=64, **overrides):
    """The default recipe on a small generated set: 3 full batches of 64 and a partial one of 8."""
    return make_config("default", **overrides), make_synthetic(n_train, n_test)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("epoch", [0, 3])
def test_epochs_are_convvit_trains_batches(epoch):
    cfg, data = small()
    aug = augmenter(cfg)
    draws = gt.epoch_draws(cfg, len(data.train_x), epoch, (32, 32))
    mine = gt.augment_epoch(data.train_x, draws, aug, chunk=50)  # chunks across batches
    g = _epoch_generator(cfg.seed, epoch)  # _train's draws, batch by batch
    perm = torch.randperm(len(data.train_x), generator=g)
    assert torch.equal(perm, draws[0])
    for start in range(0, len(perm), cfg.batch_size):
        idx = perm[start:start + cfg.batch_size]
        theirs = aug(data.train_x[idx], g)
        assert torch.equal(mine[start:start + len(idx)], theirs), f"epoch {epoch}, batch at {start}"


def test_step_at_rate_one_then_scaled_is_the_step_at_the_rate():
    cfg, data = small(muon_lr=0.02)  # AdamW's and Muon's rates apart, to see each group scaled by its own
    mine, theirs = TorchBackend(cfg, torch.device("cpu")), TorchBackend(cfg, torch.device("cpu"))
    loop = gt.DeviceLoop(mine, len(data.train_x), (3, 32, 32))
    x = augmenter(cfg)(data.train_x[:64], torch.Generator().manual_seed(1))
    y = data.train_y[:64]
    start = weights(theirs.model)
    for lr, muon_lr in ((0.004, 0.008), (0.01, 0.02), (0.007, 0.014)):
        loop._step(mine.model, x, y, torch.tensor([lr, muon_lr]))
        theirs.step(x, y, lr, muon_lr)
        a, b = weights(mine.model), weights(theirs.model)
        for name in a:  # float rounding apart (Adam's first steps would amplify it: hence one step at a time)
            assert torch.allclose(a[name], b[name], rtol=1e-6, atol=1e-8), \
                f"lr {lr}, {name}: largest difference {(a[name] - b[name]).abs().max():.3g}"
        mine.model.load_state_dict(b)  # the same weights, so the same gradients and optimiser state next step
    assert all(not torch.equal(a[n], start[n]) for n in a)


def test_warm_up_leaves_no_trace():
    cfg, data = small()
    aug = augmenter(cfg)
    x = gt.augment_epoch(data.train_x, gt.epoch_draws(cfg, 200, 0, (32, 32)), aug)
    lrs = [[0.01, 0.01]] * 4
    loops = []
    for warm in (False, True):
        run = TorchBackend(cfg, torch.device("cpu"))
        loop = gt.DeviceLoop(run, 200, (3, 32, 32))
        loop.start_epoch(x, data.train_y, lrs)
        if warm:
            loop.warm_up(steps=2)  # AdamW's and Muon's state made, weights moved, then undone
            assert int(loop.k) == 0 and float(loop.loss_sum) == 0
        loop.epoch()
        loops.append(loop)
    for name, w in weights(loops[0].run.model).items():
        assert torch.equal(w, weights(loops[1].run.model)[name]), name
    assert float(loops[0].loss_sum) == float(loops[1].loss_sum) > 0


def test_trains_as_convvit_train(tmp_path):
    cfg, data = small(n_train=256, n_test=100, epochs=2)
    result = gt.train(cfg, data, torch.device("cpu"), log=lambda *a: None)
    _, history = train(cfg, data, str(tmp_path / "run"), device="cpu", progress=False, log=lambda *a: None)
    assert len(result["history"]) == len(history) == 2
    for mine, theirs in zip(result["history"], history, strict=True):
        for key in ("train_loss", "test_loss"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4), (mine["epoch"], key)
        assert mine["train_acc"] == theirs["train_acc"] and mine["test_acc"] == theirs["test_acc"]


def test_fewer_full_batches_than_warm_up_steps():
    cfg, data = small(n_train=150, n_test=64, epochs=1)  # 2 full batches of 64 and one of 22: fewer than 3
    result = gt.train(cfg, data, torch.device("cpu"), log=lambda *a: None)
    assert result["steps_per_epoch"] == 3 and len(result["history"]) == 1


def test_command_writes_its_results_and_guards_them(tmp_path, capsys):
    out = tmp_path / "gpu_train.json"
    argv = ["--device", "cpu", "--data", "synthetic", "--epochs", "1", "--out", str(out)]
    gt.main(argv)
    written = json.loads(out.read_text())
    assert written["recipe"] == "default" and written["epochs"] == 1 and written["config"]["batch_size"] == 64
    assert written["machine"]["device"] == "cpu" and written["machine"]["torch"] == torch.__version__
    assert written["machine"]["gpu"] is None and written["goal"] is None and written["graph"] is False
    assert set(written["data"]) == {"source", "train", "test", "decode_s"} and written["data"]["decode_s"] >= 0
    assert (written["data"]["source"], written["data"]["train"], written["data"]["test"]) == ("synthetic", 2000, 500)
    assert written["steps_per_epoch"] == 32 and len(written["history"]) == 1
    row = written["history"][0]
    assert 0 < row["train_loss"] < 5 and 0 <= row["train_acc"] <= 1 and 0 <= row["test_acc"] <= 1
    assert written["test_acc"] == round(100 * row["test_acc"], 2) and written["test_acc"] > 20  # learns something
    split = written["split"]
    assert set(split) == {"data_to_device_s", "setup_s", "warm_up_s", "capture_s", "train_s", "eval_s", "rest_s"}
    # rest_s is the wall time less the parts timed: a part timed twice or outside the wall makes it negative
    assert split["train_s"] > 0 and split["eval_s"] > 0 and 0 <= split["rest_s"] < 0.5 * written["wall_s"]
    capsys.readouterr()
    before = out.read_text()
    with pytest.raises(SystemExit) as info:
        gt.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected a new file, it holds earlier results; --overwrite replaces it" in err[0]
    assert out.read_text() == before


@pytest.mark.parametrize("argv, says", [
    (["--device", "cpu", "--epochs", "0"], "--epochs: expected at least 1, got 0"),
    (["--device", "cpu", "--data", "imagefolder:/no/such/folder"], "imagefolder: expected a folder"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, says):
    with pytest.raises(SystemExit) as info:
        gt.main(argv + ["--out", str(tmp_path / "x.json")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "x.json").exists()


def test_recipe_with_other_augmentations_is_refused():
    with pytest.raises(ValueError, match="a resized crop and a flip only"):
        gt.check_recipe(make_config("seed"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal is for machines without")
def test_cuda_refused_in_one_line_without_cuda(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        gt.main(["--out", str(tmp_path / "x.json")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda: expected a CUDA device, this machine has none" in err[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_augmentation_and_graph():
    cfg, data = small(n_train=650, n_test=200, epochs=2)  # 10 full batches and a partial one of 10
    device = torch.device("cuda")
    aug = augmenter(cfg)
    draws = gt.epoch_draws(cfg, len(data.train_x), 0, (32, 32))
    assert gt.augment_matches_cpu(data.train_x.to(device), draws, aug, count=650) == 0
    on_device = gt.augment_epoch(data.train_x.to(device), draws, aug).cpu()
    on_cpu = gt.augment_epoch(data.train_x, draws, aug)
    # normalize's x / 255 is a product with 1/255 on CUDA, one float32 step from the CPU's quotient for some grey
    # levels; after (x - mean) / std that is at most 4.8e-7 (every level worked through on the CPU), 2 steps of
    # values near 2
    assert float((on_device - on_cpu).abs().max()) <= 1e-6
    graphed = gt.train(cfg, data, device, graph=True, log=lambda *a: None)
    eager = gt.train(cfg, data, device, graph=False, log=lambda *a: None)
    assert graphed["graph"] and not eager["graph"]
    for a, b in zip(graphed["history"], eager["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert abs(a["test_acc"] - b["test_acc"]) <= 0.02
