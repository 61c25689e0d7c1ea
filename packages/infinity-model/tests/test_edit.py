"""Editing: held tokens follow the quantizer's residual step, masks on every grid, pipeline and CLI edits."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from bsq_tokenizer import BSQVAE, MultiScaleBSQ, VAEConfig, get_schedule, save_vae
from bsq_tokenizer.quantizer import codes_from_bits
from bsq_tokenizer.schedules import H_DIV_W_TEMPLATES, custom_schedule
from infinity_model.checkpoint import save_infinity
from infinity_model.cli import main
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.edit import keep_masks, outpaint_canvas, paste_back, regenerate_masks
from infinity_model.pipeline import InfinityPipeline
from infinity_model.sampler import EditSource, SamplerConfig, sample
from infinity_model.text import TextEncoder
from infinity_model.tiny import write_tiny_t5
from infinity_model.transformer import Infinity
from PIL import Image


def tiny_model(d_vae: int = 8, patchify: bool = False) -> Infinity:
    config = InfinityConfig(
        depth=2, embed_dim=64, num_heads=4, d_vae=d_vae, patchify=patchify, text_channels=32, text_maxlen=16,
        pool_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Infinity(config)
    model.init_weights(init_std=0.1, aln=0.5, aln_gamma=0.5, head_scale=1.0)  # logits far from 0
    return model.eval()


def tiny_vae() -> BSQVAE:
    torch.manual_seed(1)
    return BSQVAE(VAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1, 1, 1, 1), patch_size=16)).eval()


def random_text(lengths: list[int], seed: int = 0) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    return TextCondition(torch.randn(sum(lengths), 32, generator=g), torch.tensor(lengths))


FIVE = custom_schedule([(1, 1), (2, 2), (4, 4), (6, 6), (8, 8)])
SCHEDULE = custom_schedule([(1, 1), (2, 2), (3, 3), (4, 4)])  # 64x64 pixels
PLAIN = SamplerConfig(top_k=0, top_p=0)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def source(seed: int, d: int = 8, hw: tuple[int, int] = (8, 8)) -> torch.Tensor:
    return torch.randn(1, d, *hw, generator=torch.Generator().manual_seed(seed)) * 0.6


def masks(schedule, fill: bool) -> tuple[torch.Tensor, ...]:
    return tuple(torch.full((1, h, w), fill) for h, w in schedule.scales)


@pytest.mark.parametrize("candidates", [1, 3])
def test_full_keep_mask_returns_exactly_the_source_bits(model, candidates):
    z = source(0)
    src = MultiScaleBSQ(8).quantize(z, FIVE.scales)
    config = SamplerConfig(top_k=0, top_p=0, candidates=candidates)
    out = sample(model, random_text([3]), FIVE, config, seed=1, edit=EditSource(z, masks(FIVE, True)))
    assert all(torch.equal(a, b) for a, b in zip(out.bits, src.bits, strict=True))
    assert torch.equal(out.codes, src.codes)


def test_patchified_model_holds_the_stride8_grid_bits_exactly():
    model = tiny_model(d_vae=16, patchify=True)
    schedule = custom_schedule([(1, 1), (2, 2), (3, 3)])
    vae_scales = schedule.vae_scales(patchify=True)
    z = source(1, d=4, hw=vae_scales[-1])
    src = MultiScaleBSQ(4).quantize(z, vae_scales)
    keep = tuple(torch.ones(1, h, w, dtype=torch.bool) for h, w in vae_scales)
    out = sample(model, random_text([3]), schedule, PLAIN, seed=0, edit=EditSource(z, keep))
    assert all(torch.equal(a, b) for a, b in zip(out.bits, src.bits, strict=True))


def test_nothing_held_equals_plain_generation_with_that_seed(model):
    z = source(2)
    plain = sample(model, random_text([3, 4]), FIVE, PLAIN, seed=5)
    edited = sample(
        model, random_text([3, 4]), FIVE, PLAIN, seed=5,
        edit=EditSource(z.expand(2, -1, -1, -1), tuple(m.expand(2, -1, -1) for m in masks(FIVE, False))),
    )  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(plain.bits, edited.bits, strict=True))
    assert torch.equal(plain.codes, edited.codes) and torch.equal(plain.log_prob, edited.log_prob)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_kept_scales_equal_the_sources_and_the_rest_is_sampled(model, k):
    z = source(3)
    src = MultiScaleBSQ(8).quantize(z, FIVE.scales)
    keep = tuple(torch.full((1, h, w), i < k) for i, (h, w) in enumerate(FIVE.scales))
    out = sample(model, random_text([3]), FIVE, PLAIN, seed=0, edit=EditSource(z, keep))
    assert all(torch.equal(out.bits[i], src.bits[i]) for i in range(k))
    assert not all(torch.equal(out.bits[i], src.bits[i]) for i in range(k, len(FIVE.scales)))


@pytest.mark.parametrize("seed", range(4))
def test_held_region_converges_to_the_source_after_a_coarse_regeneration(model, seed):
    """The left half is regenerated at every scale (so the 1x1 and the middle columns too); in the right
    columns the edit's codes are as close to the source latent as the tokenizer's own reconstruction, while
    copying the source's stored bits there (naive VAR editing) about doubles the error."""
    z = source(10 + seed)
    src = MultiScaleBSQ(8).quantize(z, FIVE.scales)
    keep = []
    for h, w in FIVE.scales:
        mask = torch.ones(1, h, w, dtype=torch.bool)
        mask[:, :, : (w + 1) // 2] = False
        keep.append(mask)
    out = sample(model, random_text([3]), FIVE, PLAIN, seed=seed, edit=EditSource(z, tuple(keep)))
    assert not torch.equal(out.bits[0], src.bits[0])  # the coarse scale was regenerated
    naive = codes_from_bits(
        [torch.where(m[..., None], s, o) for m, s, o in zip(keep, src.bits, out.bits, strict=True)]
    )

    def error(codes: torch.Tensor) -> float:
        return float((codes[..., 5:] - z[..., 5:]).norm())

    assert error(out.codes) <= 1.1 * error(src.codes)
    assert error(naive) > 1.3 * error(src.codes)
    # and the regenerated half did change
    assert float((out.codes[..., :3] - src.codes[..., :3]).norm()) > error(src.codes)


def test_held_region_does_not_depend_on_what_was_sampled_in_the_mask(model):
    """Codes are composed on the finest grid: outside the region the last scale regenerates, the summed codes
    are the same whatever the mask's draws were (another seed), while inside they change. Summed plainly, the
    held tokens' corrections carry each draw back across the border (and cancel its colours)."""
    z = source(21)
    pixel = torch.zeros(128, 128, dtype=torch.bool)
    pixel[20:60, 70:110] = True  # a box of about 2.5 tokens of the 8x8 grid
    keep = tuple(m[None] for m in keep_masks(pixel, FIVE.scales))
    outside = keep[-1][0]
    runs = [sample(model, random_text([3]), FIVE, PLAIN, seed=s, edit=EditSource(z, keep)) for s in (0, 1)]
    a, b = (r.codes[0] for r in runs)
    assert torch.equal(a[:, outside], b[:, outside])
    assert not torch.equal(a[:, ~outside], b[:, ~outside])
    full = MultiScaleBSQ(8).quantize(z, FIVE.scales).codes[0]
    error = float((a[:, outside] - z[0][:, outside]).norm())
    assert error <= 1.2 * float((full[:, outside] - z[0][:, outside]).norm())


def test_edit_source_is_checked_against_the_schedule(model):
    z = source(0)
    with pytest.raises(ValueError, match=r"EditSource\.latent has shape"):
        sample(model, random_text([3]), FIVE, PLAIN, edit=EditSource(z[..., :4], masks(FIVE, True)))
    with pytest.raises(ValueError, match="5 scales"):
        sample(model, random_text([3]), FIVE, PLAIN, edit=EditSource(z, masks(FIVE, True)[:4]))
    bad = (torch.ones(1, 1, 1, dtype=torch.int64), *masks(FIVE, True)[1:])
    with pytest.raises(ValueError, match=r"keep\[0\] must be a bool"):
        sample(model, random_text([3]), FIVE, PLAIN, edit=EditSource(z, bad))


def _touched(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Brute force of the documented rule: token (i, j) covers [i*H/h, (i+1)*H/h) x [j*W/w, (j+1)*W/w)."""
    height, width = mask.shape
    out = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            y0, y1 = Fraction(i * height, h), Fraction((i + 1) * height, h)
            x0, x1 = Fraction(j * width, w), Fraction((j + 1) * width, w)
            rows = [p for p in range(height) if p < y1 and p + 1 > y0]
            cols = [p for p in range(width) if p < x1 and p + 1 > x0]
            out[i, j] = mask[np.ix_(rows, cols)].any()
    return out


@pytest.mark.parametrize("template", H_DIV_W_TEMPLATES)
def test_masks_map_to_every_templates_grids_as_documented(template):
    schedule = get_schedule(template, "0.06M")
    height, width = schedule.pixel_hw
    rng = np.random.default_rng(int(template * 1000))
    mask = np.zeros((height, width), dtype=bool)
    top, left = rng.integers(0, height - 20), rng.integers(0, width - 20)
    mask[top : top + 19, left : left + 7] = True  # a small box that cuts through token cells
    mask[rng.integers(0, height), rng.integers(0, width)] = True  # and a single pixel
    got = regenerate_masks(torch.from_numpy(mask), schedule.scales)
    for (h, w), regen in zip(schedule.scales, got, strict=True):
        assert np.array_equal(regen.numpy(), _touched(mask, h, w)), (template, h, w)
    # dilation by one token of the finest grid = the documented rule on the pixel mask grown by 16 px
    grown = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    for y, x in zip(ys, xs, strict=True):
        grown[max(0, y - 16) : y + 17, max(0, x - 16) : x + 17] = True
    dilated = regenerate_masks(torch.from_numpy(mask), schedule.scales, dilate=1)
    for (h, w), regen in zip(schedule.scales, dilated, strict=True):
        assert np.array_equal(regen.numpy(), _touched(grown, h, w)), (template, h, w)


def test_keep_masks_combine_the_mask_with_kept_scales():
    grids = [(1, 1), (2, 2), (4, 4)]
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[:8, :8] = True
    keep = keep_masks(mask, grids)
    assert [m.sum().item() for m in keep] == [0, 3, 15]
    assert [m.all().item() for m in keep_masks(None, grids)] == [True] * 3  # nothing masked: reconstruction
    assert [m.any().item() for m in keep_masks(None, grids, keep_scales=1)] == [True, False, False]
    assert [m.sum().item() for m in keep_masks(mask, grids, keep_scales=2)] == [1, 4, 15]
    with pytest.raises(ValueError, match="keep_scales"):
        keep_masks(None, grids, keep_scales=4)


# ------------------------------------------------------------------------------------------ pipeline, CLI
@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("edit")
    save_infinity(tiny_model(), root / "model")
    save_vae(tiny_vae(), root / "vae")
    write_tiny_t5(root / "t5", d_model=32)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8))
    img.save(root / "source.png")
    (root / "broken.png").write_bytes(b"not a png")
    return {"model": root / "model", "vae": root / "vae", "t5": root / "t5", "src": root / "source.png",
            "broken": root / "broken.png"}  # fmt: skip


@pytest.fixture(scope="module")
def pipe(parts) -> InfinityPipeline:
    return InfinityPipeline(tiny_model(), tiny_vae().eval(), TextEncoder.from_pretrained(parts["t5"]))


def _array(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def test_empty_mask_returns_the_tokenizers_reconstruction(pipe, parts):
    empty = Image.new("L", (96, 80), 0)
    out = pipe.edit(parts["src"], empty, "a red car", schedule=SCHEDULE, seed=3)
    from bsq_tokenizer import image_to_tensor
    from infinity_model.edit import fit_source
    from infinity_model.sampler import codes_to_uint8

    fitted = fit_source(Image.open(parts["src"]), SCHEDULE)
    assert fitted.size == (64, 64) and out[0].size == (64, 64)
    with torch.no_grad():
        codes = pipe.vae.encode_to_bits(image_to_tensor(fitted), SCHEDULE.scales).codes
        recon = codes_to_uint8(pipe.vae, codes)[0].numpy()
    assert np.array_equal(_array(out[0]), recon)


def test_full_mask_equals_plain_generation_with_that_seed(pipe, parts):
    full = Image.new("L", (96, 80), 255)
    edited = pipe.edit(parts["src"], full, ["a red car", "a dog"], schedule=SCHEDULE, seed=7, cfg=2.0)
    plain = pipe(["a red car", "a dog"], schedule=SCHEDULE, seed=7, cfg=2.0)
    assert all(np.array_equal(_array(a), _array(b)) for a, b in zip(edited, plain, strict=True))


def test_mask_of_another_size_is_resized_with_a_notice(pipe, parts, caplog):
    mask = Image.new("L", (48, 40), 0)
    mask.paste(255, (0, 0, 24, 40))  # the left half
    with caplog.at_level(logging.WARNING):
        out = pipe.edit(parts["src"], mask, "a red car", schedule=SCHEDULE, seed=0)
    assert "resizing the mask to the source" in caplog.text
    assert out[0].size == (64, 64)


def test_variation_keeps_the_first_scales_and_outpaint_fills_the_canvas(pipe, parts):
    var = pipe.edit(parts["src"], None, "a red car", keep_scales=2, schedule=SCHEDULE, seed=0)
    recon = pipe.edit(parts["src"], None, "a red car", schedule=SCHEDULE, seed=0)
    assert var[0].size == recon[0].size == (64, 64)
    assert not np.array_equal(_array(var[0]), _array(recon[0]))
    wide = custom_schedule([(1, 1), (1, 2), (2, 4), (3, 6)], template=0.5)  # 48x96 pixels
    canvas, mask = outpaint_canvas(Image.open(parts["src"]), wide)
    assert canvas.size == (96, 48) and mask[:, :19].all() and not mask[:, 20:76].any() and mask[:, 77:].all()
    out = pipe.outpaint(parts["src"], "a red car", ratio=0.5, schedule=wide, seed=0)
    assert out[0].size == (96, 48)


def test_paste_back_restores_the_original_size_and_leaves_the_cropped_border():
    original = Image.fromarray(np.full((80, 120, 3), 30, dtype=np.uint8))
    edited = Image.new("RGB", (64, 64), (200, 10, 10))
    out = np.asarray(paste_back(original, edited))
    assert out.shape == (80, 120, 3)
    assert (
        (out[:, 20:100] == (200, 10, 10)).all() and (out[:, :20] == 30).all() and (out[:, 100:] == 30).all()
    )


def test_cli_edit_writes_the_image_and_names_bad_files(parts, tmp_path, capsys):
    common = ["--model", str(parts["model"]), "--vae", str(parts["vae"]), "--text-encoder", str(parts["t5"]),
              "--scales", "1x1,2x2,3x3,4x4", "--device", "cpu"]  # fmt: skip
    mask = tmp_path / "mask.png"
    Image.new("L", (96, 80), 0).save(mask)
    out = tmp_path / "out.png"
    assert main(["edit", str(parts["src"]), "a red car", "--mask", str(mask), "-o", str(out), *common]) == 0
    assert Image.open(out).size == (64, 64)
    outp = tmp_path / "outpaint.png"
    assert (
        main(
            [
                "edit",
                str(parts["src"]),
                "a car",
                "--outpaint",
                "1.0",
                "--dilate",
                "1",
                "-o",
                str(outp),
                *common,
            ]
        )
        == 0
    )
    assert Image.open(outp).size == (64, 64)
    assert main(["edit", str(parts["broken"]), "a car", "--keep-scales", "1", *common]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert main(["edit", str(parts["src"]), "a car", "--mask", str(tmp_path / "missing.png"), *common]) == 2
    assert "mask" in capsys.readouterr().err
    assert main(["edit", str(parts["src"]), "a car", *common]) == 2
    assert (
        "infinity edit: error: pass --mask MASK.png, --outpaint RATIO or --keep-scales K"
        in capsys.readouterr().err
    )
