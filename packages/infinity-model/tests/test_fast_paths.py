"""The speed options on the shipped default model: bf16 autocast on CPU and cfg_off_last through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from infinity_model import InfinityPipeline
from infinity_model.default_model import load_default_model
from PIL import Image

PROMPT = "a photo of a red circle above a blue square"


@pytest.fixture(scope="module")
def pipes() -> tuple[InfinityPipeline, InfinityPipeline]:
    dm = load_default_model()
    fp32 = InfinityPipeline.from_pretrained(dm.model, dm.vae, dm.text_encoder, device="cpu")
    bf16 = InfinityPipeline.from_pretrained(
        dm.model, dm.vae, dm.text_encoder, device="cpu", dtype=torch.bfloat16
    )
    return fp32, bf16


def _output_dtypes(pipe: InfinityPipeline) -> list[torch.dtype]:
    """Output dtypes of the first block's qkv projection and the decoder's first convolution, while sampling."""
    seen: list[torch.dtype] = []
    qkv = pipe.model.block_list[0].sa.mat_qkv
    conv = next(m for m in pipe.vae.decoder.modules() if isinstance(m, torch.nn.Conv2d))
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype)) for m in (qkv, conv)]
    try:
        pipe(PROMPT, pn="0.016M", cfg=2.0, tau=0.5, top_k=0, top_p=0.0, seed=0)
    finally:
        for h in handles:
            h.remove()
    return sorted(set(seen), key=str)


def test_bf16_on_cpu_runs_transformer_and_decoder_in_bf16_and_fp32_stays_fp32(pipes):
    fp32, bf16 = pipes
    assert _output_dtypes(fp32) == [torch.float32]
    assert _output_dtypes(bf16) == [torch.bfloat16]


@pytest.mark.slow
def test_cli_dtype_bfloat16_and_cfg_off_last_give_the_pipelines_images(pipes, tmp_path: Path):
    from infinity_model.cli import main

    fp32, bf16 = pipes
    settings = {"pn": "0.016M", "cfg": 2.0, "tau": 0.5, "top_k": 0, "top_p": 0.0, "candidates": 1, "seed": 0}
    cli = ["generate", PROMPT, "--cfg", "2", "--tau", "0.5", "--candidates", "1", "--device", "cpu"]
    fast = tmp_path / "fast.png"
    assert main([*cli, "--dtype", "bfloat16", "--cfg-off-last", "1", "-o", str(fast)]) == 0
    assert Image.open(fast).tobytes() == bf16(PROMPT, cfg_off_last=1, **settings)[0].tobytes()
    plain = tmp_path / "plain.png"
    assert main([*cli, "--dtype", "float32", "-o", str(plain)]) == 0
    reference = fp32(PROMPT, **settings)[0]
    assert Image.open(plain).tobytes() == reference.tobytes() != Image.open(fast).tobytes()
