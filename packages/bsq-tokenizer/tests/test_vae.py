"""The VAE reproduces the released state-dict layouts exactly and its encode/quantize/decode paths agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bsq_tokenizer import BSQVAE, VAE_PRESETS, VAEConfig
from bsq_tokenizer.quantizer import codes_from_bits, space_to_depth_bits
from bsq_tokenizer.schedules import custom_schedule, default_latent_schedule

FIXTURES = Path(__file__).parent / "fixtures"
TINY = VAEConfig(codebook_dim=16, ch=32, ch_mult=(1, 1, 2), patch_size=4)


def _read_manifest(name: str) -> tuple[list[tuple[str, list[int], str]], int]:
    rows, params = [], -1
    for line in (FIXTURES / f"vae_{name}.tsv").read_text().splitlines():
        if line.startswith("# total parameters"):
            params = int(line.rsplit(":", 1)[1])
        if line.startswith("#") or line.startswith("key\t") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, [int(v) for v in shape.strip("[]").split(",") if v.strip()], dtype))
    return rows, params


@pytest.mark.parametrize("preset", ["d16", "d24", "d32", "d32reg", "d64", "d14_patchify"])
def test_official_manifest_matches_our_state_dict(preset):
    rows, params = _read_manifest(preset)
    with torch.device("meta"):
        model = BSQVAE(VAEConfig.preset(preset))
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert ours == rows
    assert sum(p.numel() for p in model.parameters()) == params


def test_quantizer_is_one_module_under_two_names():
    model = BSQVAE(TINY)
    assert model.quantize is model.quantizer
    sd = model.state_dict()
    assert torch.equal(sd["quantizer.lfq.mask"], sd["quantize.lfq.mask"])
    assert list(sd)[-2:] == ["quantizer.lfq.mask", "quantize.lfq.mask"]


def test_presets_and_config_round_trip():
    assert set(VAE_PRESETS) == {"d16", "d24", "d32", "d32reg", "d64", "d14_patchify"}
    assert VAEConfig.preset("d32") == VAEConfig.preset("d32reg")
    patch = VAEConfig.preset("d14_patchify")
    assert (patch.patch_size, patch.ch_mult, patch.bits_per_token, patch.token_stride) == (
        8,
        (1, 2, 4, 4),
        56,
        16,
    )
    for cfg in [*VAE_PRESETS.values(), TINY]:
        assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(
        ValueError, match=r"unknown VAE preset 'd33'.*d16, d24, d32, d32reg, d64, d14_patchify"
    ):
        VAEConfig.preset("d33")
    with pytest.raises(ValueError, match="unknown VAEConfig fields"):
        VAEConfig.from_dict({"codebook_dim": 8, "bogus": 1})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"patch_size": 6}, "power of two"),
        ({"patch_size": 32}, "down-sampling levels"),
        ({"ch": 20}, "GroupNorm"),
        ({"codebook_dim": 0}, "codebook_dim"),
    ],
)
def test_invalid_configs_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        TINY.replace(**changes)


def _image(batch: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=gen) * 2 - 1


@torch.no_grad()
def test_encode_quantize_decode_shapes_and_consistency():
    torch.manual_seed(0)
    vae = BSQVAE(TINY).eval()
    img = _image(2, 32, 48)
    z = vae.encode(img)
    assert z.shape == (2, 16, 8, 12) and z.dtype == torch.float32
    scales = custom_schedule([(1, 1), (2, 3), (4, 6), (8, 12)], template=0.666).scales
    out = vae.encode_to_bits(img, scales)
    assert [tuple(b.shape) for b in out.bits] == [(2, h, w, 16) for h, w in scales]
    assert out.codes.shape == (2, 16, 8, 12)
    recon = vae.decode(out.codes)
    assert recon.shape == img.shape
    assert recon.min() >= -1 and recon.max() <= 1
    # Codes rebuilt from bits differ from the straight-through codes only at the ulp level.
    torch.testing.assert_close(codes_from_bits(out.bits), out.codes, rtol=0, atol=1e-6)
    torch.testing.assert_close(vae.decode_from_bits(out.bits, scales), recon, rtol=0, atol=1e-4)
    assert torch.equal(vae.decode_from_bits(out.bits), vae.decode(codes_from_bits(out.bits)))
    # The bits are the quantization of the encoder latent.
    assert torch.equal(vae.quantizer.quantize(z, scales).bits[0], out.bits[0])


@torch.no_grad()
def test_default_schedule_is_used_when_none_is_given():
    vae = BSQVAE(TINY).eval()
    out = vae.encode_to_bits(_image(1, 64, 64))
    assert out.scales == default_latent_schedule((16, 16))
    with pytest.raises(ValueError, match="no default scale schedule for a 5x5 latent"):
        vae.encode_to_bits(_image(1, 20, 20))


def test_forward_is_unclamped_and_passes_gradients_straight_through():
    torch.manual_seed(0)
    vae = BSQVAE(TINY)
    img = _image(1, 16, 16)
    recon, _out = vae(img, [(1, 1), (2, 2), (4, 4)])
    assert recon.shape == img.shape
    recon.square().mean().backward()
    grad = vae.encoder.conv_in.conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@torch.no_grad()
def test_bad_inputs_name_the_size_and_the_fix():
    vae = BSQVAE(TINY)
    with pytest.raises(
        ValueError, match=r"image size 30x33 \(HxW\) is not a multiple of the tokenizer stride 4.*32x32"
    ):
        vae.encode(_image(1, 30, 33))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        vae.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 16, h, w\)"):
        vae.decode(torch.zeros(1, 8, 4, 4))
    with pytest.raises(ValueError, match=r"bits\[1\]"):
        vae.decode_from_bits(
            [torch.zeros(1, 1, 1, 16, dtype=torch.long), torch.zeros(1, 2, 2, 8, dtype=torch.long)]
        )
    with pytest.raises(ValueError, match="but scales"):
        vae.decode_from_bits([torch.zeros(1, 2, 2, 16, dtype=torch.long)], [(1, 1)])
    with pytest.raises(ValueError, match="at least one"):
        vae.decode_from_bits([])


@torch.no_grad()
def test_patchified_tokenizer_uses_doubled_grids_and_56_bit_tokens():
    cfg = VAEConfig(codebook_dim=14, ch=32, ch_mult=(1, 1, 2), patch_size=4, patchify=True)
    vae = BSQVAE(cfg).eval()
    sched = custom_schedule([(1, 1), (2, 2), (4, 4)])  # transformer grid
    side = cfg.token_stride * 4  # the real 8B: 16 px per token (stride-8 VAE x 2x2 patch)
    img = _image(1, side, side)
    out = vae.encode_to_bits(img, sched.vae_scales(patchify=True))
    assert out.scales == ((2, 2), (4, 4), (8, 8))
    tokens = [space_to_depth_bits(b) for b in out.bits]
    assert [tuple(t.shape) for t in tokens] == [(1, h, w, 56) for h, w in sched.scales]


def test_vae_type_numbers_of_the_reference_loader():
    assert VAEConfig.from_vae_type(32) == VAEConfig.preset("d32")
    assert VAEConfig.from_vae_type(14) == VAEConfig.preset("d14_patchify")
    assert VAEConfig.from_vae_type(18).codebook_dim == 18
    with pytest.raises(ValueError, match=r"unknown vae_type 12; accepted: 14, 16.*presets: d16"):
        VAEConfig.from_vae_type(12)


def test_building_blocks_follow_the_spec_formulas():
    from bsq_tokenizer.vae import Downsample, Norm, ResnetBlock, Upsample

    torch.manual_seed(0)
    x = torch.randn(2, 48, 6, 6)
    assert Norm(48).norm.num_groups == 24 and Norm(64).norm.num_groups == 32
    assert Norm(48).norm.eps == 1e-6
    block = ResnetBlock(48, 64)
    n1, c1, n2, c2, sc = (
        block.norm1.norm,
        block.conv1.conv,
        block.norm2.norm,
        block.conv2.conv,
        block.nin_shortcut.conv,
    )

    def swish(t):
        return t * torch.sigmoid(t)

    h = c2(swish(n2(c1(swish(n1(x))))))
    torch.testing.assert_close(block(x), sc(x) + h, rtol=0, atol=0)
    assert ResnetBlock(48, 48).nin_shortcut is None
    down = Downsample(48)
    want = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (0, 1, 0, 1)), down.conv.conv.weight, down.conv.conv.bias, stride=2
    )
    torch.testing.assert_close(down(x), want, rtol=0, atol=0)
    assert down(x).shape == (2, 48, 3, 3)
    up = Upsample(48)
    rep = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    want = torch.nn.functional.conv2d(rep, up.conv.conv.weight, up.conv.conv.bias, padding=1)
    torch.testing.assert_close(up(x), want, rtol=0, atol=0)
    # 5-D inputs are folded into the batch (per frame).
    x5 = torch.randn(1, 48, 2, 4, 4)
    y5 = block(x5)
    torch.testing.assert_close(y5[:, :, 1], block(x5[:, :, 1]), rtol=1e-6, atol=1e-6)


def test_norm_groups_sets_every_groupnorm_and_survives_save_and_load(tmp_path):
    """A narrow model may fix its GroupNorm group count; the default stays the reference's 32-or-24 rule."""
    from bsq_tokenizer import load_vae, save_vae

    base = VAEConfig(codebook_dim=8, ch=24, ch_mult=(1, 2), num_res_blocks=1, patch_size=2)
    wide_groups = base.replace(norm_groups=4)
    counts = {m.num_groups for m in BSQVAE(base).modules() if isinstance(m, torch.nn.GroupNorm)}
    assert counts == {24}  # 24 and 48 channels: the reference rule gives 24 groups to both
    model = BSQVAE(wide_groups)
    assert {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)} == {4}
    # the weights have the same names and shapes either way, so the group count lives in the config
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in BSQVAE(base).state_dict().items()
    }
    assert load_vae(save_vae(model, tmp_path / "vae")).config.norm_groups == 4
    assert VAEConfig.from_json(base.to_json(tmp_path / "base.json")).norm_groups is None
    with pytest.raises(ValueError, match=r"channel count 24 .* divisible by norm_groups=5"):
        base.replace(norm_groups=5)
    with pytest.raises(ValueError, match="norm_groups must be None or >= 1"):
        base.replace(norm_groups=0)
