"""A VAE moved to channels_last (NHWC) encodes and decodes like the NCHW default, within the stated tolerance.

channels_last is the caller's choice (``vae.to(memory_format=torch.channels_last)``, ``benchmarks/tokenizer.py
--channels-last``): about 1.16x faster in fp32 on CPU (``benchmarks/floor.py``), but the convolution kernels
sum in another order, so it is not bit-identical to NCHW (the layout of the reference, which the fp32 default
reproduces exactly) and it stays off by default.
"""

from __future__ import annotations

import copy

import torch
from bsq_tokenizer import BSQVAE, VAEConfig

TINY = VAEConfig(codebook_dim=16, ch=32, ch_mult=(1, 1, 2), patch_size=4)


@torch.no_grad()
def test_channels_last_vae_matches_nchw_within_1e_4_and_the_default_stays_nchw():
    torch.manual_seed(0)
    vae = BSQVAE(TINY).eval()
    assert all(p.is_contiguous() for p in vae.parameters())  # the default layout is the reference's NCHW
    nhwc = copy.deepcopy(vae).to(memory_format=torch.channels_last)
    img = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    img_nhwc = img.contiguous(memory_format=torch.channels_last)

    latent, latent_nhwc = vae.encode(img), nhwc.encode(img_nhwc)
    assert latent_nhwc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(latent_nhwc, latent, rtol=0, atol=1e-4)

    scales = [(1, 1), (2, 3), (4, 6), (8, 12)]
    bits, bits_nhwc = vae.encode_to_bits(img, scales).bits, nhwc.encode_to_bits(img_nhwc, scales).bits
    agree = torch.cat([(a == b).flatten() for a, b in zip(bits, bits_nhwc, strict=True)]).float().mean()
    assert agree > 0.99  # a latent within an ulp of a bit's threshold may flip; almost none do

    codes = torch.randint(0, 2, (1, 16, 8, 12), generator=torch.Generator().manual_seed(2)).float() * 2 - 1
    torch.testing.assert_close(nhwc.decode(codes), vae.decode(codes), rtol=0, atol=1e-4)
