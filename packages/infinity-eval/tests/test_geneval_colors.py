"""GenEval colour classifier: templates and averaging, CLIP preprocessing, OpenAI checkpoint loading."""

import numpy as np
import pytest
import torch
from infinity_eval.geneval import (
    COLORS,
    ZeroShotColorClassifier,
    clip_color_classifier,
    clip_preprocess,
    load_openai_clip_state_dict,
)
from PIL import Image


def test_zero_shot_classifier_averages_normalised_templates_and_takes_the_argmax():
    seen_texts = []

    def encode_text(texts):
        seen_texts.extend(texts)
        out = torch.zeros(len(texts), len(COLORS))
        for i, t in enumerate(texts):
            c = next(c for c in COLORS if f" {c} " in f" {t} " or f" {c}-colored " in f" {t} ")
            # unnormalised, template-dependent scale: only directions may matter
            out[i, COLORS.index(c)] = 1.0 + i % 3
            out[i, -1] += 0.1
        return out

    def encode_image(pixels):
        # dominant channel of the (normalised) crop -> red / green / blue direction
        idx = pixels.mean(dim=(2, 3)).argmax(dim=1)
        out = torch.zeros(len(pixels), len(COLORS))
        out[
            torch.arange(len(pixels)), torch.tensor([COLORS.index(c) for c in ("red", "green", "blue")])[idx]
        ] = 5.0
        return out

    clf = ZeroShotColorClassifier(encode_image, encode_text, batch_size=2)
    crops = [Image.new("RGB", (30, 20), c) for c in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    assert clf(crops, "car") == ["red", "green", "blue"]
    assert seen_texts[:3] == [
        "a photo of a red car",
        "a photo of a red-colored car",
        "a photo of a red object",
    ]
    assert len(seen_texts) == 3 * len(COLORS)
    vectors = clf.class_vectors("car")
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(len(COLORS)))


def test_clip_preprocess_resizes_the_short_side_and_centre_crops():
    img = Image.new("RGB", (448, 300), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 60, 300))  # a black band on the left edge is cropped away
    x = clip_preprocess(img)
    assert x.shape == (3, 224, 224)
    white = (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor(
        [0.26862954, 0.26130258, 0.27577711]
    )
    torch.testing.assert_close(x[:, 112, 0], white, atol=1e-5, rtol=0)


hps = pytest.importorskip("infinity_eval.hps")
pytest.importorskip("regex")


def _tiny_clip():
    from infinity_eval._clip_tokenizer import CLIPBPETokenizer

    tokenizer = CLIPBPETokenizer([("r", "e"), ("re", "d</w>")], fix_text=False)
    cfg = hps.OpenCLIPConfig(
        embed_dim=16, image_size=28, patch_size=14, vision_width=32, vision_layers=1, vision_head_width=16,
        vocab_size=tokenizer.vocab_size, text_width=24, text_heads=2, text_layers=1, quick_gelu=True,
    )  # fmt: skip
    # The model's constructor allocates without initialising: fill it from a seeded generator.
    return hps.OpenCLIP(cfg).init_random_(torch.Generator().manual_seed(0)), tokenizer


def test_openai_checkpoint_loads_strictly_without_its_scalar_entries(tmp_path):
    model, _ = _tiny_clip()
    state = {k: v.half() for k, v in model.state_dict().items()}  # OpenAI ships fp16
    state.update(
        input_resolution=torch.tensor(28), context_length=torch.tensor(77), vocab_size=torch.tensor(9)
    )
    torch.save(state, tmp_path / "ViT-L-14.pt")
    loaded = load_openai_clip_state_dict(tmp_path / "ViT-L-14.pt")
    fresh, _ = _tiny_clip()
    fresh.load_state_dict(loaded, strict=True)
    assert all(v.dtype == torch.float32 for v in loaded.values())
    torch.testing.assert_close(fresh.visual.proj, model.visual.proj.half().float())


def test_colour_classifier_on_the_torch_clip_matches_a_manual_zero_shot_computation():
    model, tokenizer = _tiny_clip()
    model.eval()
    crops = [
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 30, 3), dtype=np.uint8))
        for i in range(3)
    ]

    def preprocess(img):
        return clip_preprocess(img, size=28)

    clf = clip_color_classifier(model, tokenizer)
    clf._preprocess = preprocess
    got = clf(crops, "cat")
    with torch.no_grad():
        vecs = []
        for c in COLORS:
            t = [f"a photo of a {c} cat", f"a photo of a {c}-colored cat", f"a photo of a {c} object"]
            e = torch.nn.functional.normalize(model.encode_text(tokenizer(t)), dim=-1).mean(0)
            vecs.append(torch.nn.functional.normalize(e, dim=-1))
        img = torch.nn.functional.normalize(
            model.encode_image(torch.stack([preprocess(c) for c in crops])), dim=-1
        )
        expected = [COLORS[i] for i in (img @ torch.stack(vecs).T).argmax(-1).tolist()]
    assert got == expected
