"""Write the tiny CPU assets of examples/tiny_cpu.toml: a generated shapes dataset, a random tiny T5 and VAE."""

import sys
from pathlib import Path

import torch
from bsq_tokenizer import BSQVAE, VAEConfig, save_vae
from infinity_data import ConvertConfig, convert_folder
from infinity_data.shapes import write_folder
from infinity_model.tiny import write_tiny_t5

root = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny")
write_folder(root / "images", count=64, seed=0, long_side=64, ratios=(1.0,))
convert_folder(root / "images", root / "shards", ConvertConfig())
write_tiny_t5(root / "t5", d_model=32)
torch.manual_seed(0)
save_vae(
    BSQVAE(VAEConfig.preset("d32").replace(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1)),
    root / "vae",
)
print(f"wrote {root}/shards, {root}/t5, {root}/vae")
