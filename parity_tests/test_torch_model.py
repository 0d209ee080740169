"""torch_vit is the seed's model: its names, its parameter counts, its torchinfo figures."""

import numpy as np
import pytest
import torch
from torchinfo import summary

import numpy_vit as nv
import torch_vit
from torch_vit.train import TrainConfig

SEED_KEYS_SAMPLE = ["embedding.patch.weight", "embedding.pos_embedding", "transformer.layers.0.0.lnorm.weight",
                    "transformer.layers.0.0.fn.k.weight", "transformer.layers.0.1.fn.net.0.weight",
                    "transformer.layers.0.1.fn.net.2.bias", "norm.weight", "mlp_head.3.weight"]


def test_seed_parameter_counts():
    m = torch_vit.ViT(32, 2, 3, 32, 4, 8)
    count = lambda mod: sum(p.numel() for p in mod.parameters())
    assert count(m) == 59_818
    assert [count(block) for block in m.transformer.layers] == [12_704] * 4
    assert m.embedding.pos_embedding.shape == (1, 32, 16, 16) and m.embedding.pos_embedding.numel() == 8_192
    assert count(m.embedding.patch) == 416 and count(m.norm) == 64 and count(m.mlp_head) == 330


def test_seed_config_is_the_seed_model_and_what_train_builds_by_default():
    config = nv.seed_config()
    assert config == dict(image_size=32, patch_size=2, in_channels=3, embedding_dim=32, depth=4, head_channels=8)
    assert config is not nv.seed_config()  # a new dict each call: a caller may change its own
    seed = torch_vit.ViT(**config)
    assert seed.config == torch_vit.ViT(32, 2, 3, 32, 4, 8).config == nv.ViT(**config).config
    assert sum(p.numel() for p in seed.parameters()) == 59_818
    assert torch_vit.ViT(**TrainConfig().model_config()).config == seed.config  # what convvit train builds


def test_seed_torchinfo():
    stats = summary(torch_vit.ViT(32, 2, 3, 32, 4, 8), input_size=(1, 3, 32, 32), verbose=0)
    assert stats.total_params == 59_818
    assert round(stats.total_mult_adds / 1e6, 2) == 12.99


@pytest.mark.parity
def test_state_dict_names_match_numpy_in_order():
    t = torch_vit.ViT(32, 2, 3, 32, 4, 8)
    n = nv.ViT(32, 2, 3, 32, 4, 8)
    assert list(t.state_dict()) == list(n.state_dict())
    assert all(k in t.state_dict() for k in SEED_KEYS_SAMPLE)
    assert {k: tuple(v.shape) for k, v in t.state_dict().items()} == {k: v.shape for k, v in n.state_dict().items()}


@pytest.mark.parity
def test_numpy_init_follows_torch_init():
    """The same initialisation law on both sides: uniform(+-1/sqrt(fan_in)) for the convolutions
    and the head (torch's default), N(0, 1) for the positional map, LayerNorm ones and zeros."""
    torch.manual_seed(0)
    n = nv.ViT(32, 2, 3, 32, 4, 8, dtype=np.float64, rng=0).state_dict()
    t = {k: v.numpy() for k, v in torch_vit.ViT(32, 2, 3, 32, 4, 8).state_dict().items()}
    fan_in = {k: np.prod(n[k.replace(".bias", ".weight")].shape[1:]) for k in n}
    for k in n:
        if k.endswith("pos_embedding"):
            assert abs(n[k].std() - 1) < 0.05 and abs(t[k].std() - 1) < 0.05
        elif "norm" in k:
            expected = 1.0 if k.endswith("weight") else 0.0
            assert np.all(n[k] == expected) and np.all(t[k] == expected), k
        else:
            bound = 1 / np.sqrt(fan_in[k])
            for side in (n[k], t[k]):
                assert np.abs(side).max() <= bound and np.abs(side).max() >= (0.5 if side.size >= 10 else 0.05) * bound, k


@pytest.mark.parity
def test_seed_checkpoint_loads_strictly_both_ways(tmp_path):
    """A checkpoint of the seed's own model (a bare state dict) loads with strict=True, and a
    numpy_vit state dict loads into torch and back with no renaming."""
    seed_like = torch_vit.ViT(32, 2, 3, 32, 4, 8)
    torch.save(seed_like.state_dict(), tmp_path / "seed.pt")
    loaded, _ = torch_vit.load_checkpoint(str(tmp_path / "seed.pt"))
    for k, v in seed_like.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    n = nv.ViT(32, 2, 3, 32, 4, 8, rng=3)
    t = torch_vit.ViT(32, 2, 3, 32, 4, 8)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in n.state_dict().items()}, strict=True)
    back = nv.ViT(32, 2, 3, 32, 4, 8, rng=4).load_state_dict(t.state_dict())
    for k, v in n.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)


def test_non_square_and_bad_configs():
    m = torch_vit.ViT((32, 24), 4, 3, 16, 1, 4, num_classes=7)
    assert m(torch.zeros(2, 3, 32, 24)).shape == (2, 7)
    with pytest.raises(ValueError, match=r"image_size \(32, 30\) must be divisible by patch_size, got patch_size 4"):
        torch_vit.ViT((32, 30), 4, 3, 16, 1, 4)
    with pytest.raises(ValueError, match="embedding_dim 30 must be divisible by head_channels, got head_channels 8"):
        torch_vit.ViT(32, 2, 3, 30, 1, 8)
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 32, 24\), got \(2, 3, 32, 32\)"):
        m(torch.zeros(2, 3, 32, 32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_channels_layer_norm_is_the_seeds_transpose_form(dtype, memory_format):
    """torch_vit normalises the channels through a (B, H, W, C) permutation; the seed through
    transpose(1, -1), i.e. (B, W, H, C). Same map, forward and backward, in either memory layout."""
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(6).to(dtype)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(3, 6, 5, 4, dtype=dtype).contiguous(memory_format=memory_format).requires_grad_(True)
    dy = torch.randn(3, 6, 5, 4, dtype=dtype)
    ours = torch_vit.model.channels_layer_norm(norm, x)
    seed = norm(x.transpose(1, -1)).transpose(-1, 1)
    grads_ours = torch.autograd.grad(ours, [x, norm.weight, norm.bias], dy)
    grads_seed = torch.autograd.grad(seed, [x, norm.weight, norm.bias], dy)
    # the weight and bias gradients sum over the positions in another order: float32 rounding
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(ours, seed, **tol)
    for a, b in zip(grads_ours, grads_seed):
        torch.testing.assert_close(a, b, **tol)
