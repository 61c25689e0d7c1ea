"""The ``infinity serve`` subcommand: load the model once, then serve the page and the API with uvicorn."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..generation import GenerationConfig

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..pipeline import InfinityPipeline

__all__ = ["add_serve_parser", "build_app", "describe_pipeline", "serve"]

logger = logging.getLogger(__name__)


def add_serve_parser(
    sub: Any, add_model_options: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``infinity`` subcommands (the model options are those of ``generate``)."""
    parser = sub.add_parser(
        "serve",
        help="web page and HTTP API that draw images scale by scale (needs infinity-model[serve])",
        description="Serve a web page at / and the HTTP API /v1/images, /v1/images/stream, /v1/model, /health. "
        "With none of --model/--vae/--text-encoder it serves the shipped default model.",
    )
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="images per sampler call; queued requests with equal settings are merged "
                        "(default 16; 1 turns micro-batching off)")  # fmt: skip
    parser.add_argument("--batch-rows", type=int, default=64,
                        help="images x candidates per sampler call (default 64)")  # fmt: skip
    parser.add_argument("--batch-wait-ms", type=float, default=10.0,
                        help="under load, how long a call waits for more requests to share it (default 10)")  # fmt: skip
    parser.add_argument("--max-queue", type=int, default=64,
                        help="requests that may wait; one more is answered 503 with Retry-After (default 64)")  # fmt: skip
    parser.add_argument("--max-images", type=int, default=16, help="images per request (default 16)")
    parser.add_argument("--max-candidates", type=int, default=16, help="candidates per image (default 16)")
    parser.add_argument("--max-prompt-chars", type=int, default=1000, help="prompt length (default 1000)")
    parser.add_argument("--max-cfg", type=float, default=30.0, help="largest guidance scale (default 30)")
    parser.add_argument("--max-tau", type=float, default=10.0, help="largest temperature (default 10)")
    return parser


def describe_pipeline(pipe: InfinityPipeline, source: str) -> dict[str, Any]:
    """What ``GET /v1/model`` says about the loaded parts (no file paths beyond ``source``)."""
    from ..checkpoint import match_preset

    config = pipe.model.config
    vae_config = pipe.vae.config
    return {
        "model": {
            "source": source,
            "preset": match_preset(config),
            "depth": config.depth,
            "embed_dim": config.embed_dim,
            "num_heads": config.num_heads,
            "bits_per_token": config.d_vae,
            "max_scales": config.num_levels,
            "parameters": sum(p.numel() for p in pipe.model.parameters()),
        },
        "vae": {
            "codebook_dim": vae_config.codebook_dim,
            "stride": vae_config.patch_size,
            "parameters": sum(p.numel() for p in pipe.vae.parameters()),
        },
        "text_encoder": {"hidden_size": pipe.text_encoder.hidden_size},
        "device": str(pipe.device),
        "dtype": str(pipe.dtype).removeprefix("torch."),
    }


def build_app(
    pipe: InfinityPipeline,
    settings: GenerationConfig | Mapping[str, Any],
    limits: Any,
    model_args: list[str],
    source: str,
) -> Starlette:
    """The app for a loaded pipeline: sampling defaults from ``settings`` (the model folder's generation
    settings, or a mapping of some of them), budgets that fit the model."""
    from bsq_tokenizer import get_schedule
    from bsq_tokenizer.schedules import H_DIV_W_TEMPLATES

    from .app import create_app
    from .schema import available_pixel_budgets

    budgets = available_pixel_budgets(pipe.model.config.num_levels)
    info = describe_pipeline(pipe, source)
    info["sizes"] = {
        pn: {str(t): list(get_schedule(t, pn).pixel_hw) for t in H_DIV_W_TEMPLATES} for pn in budgets
    }
    info["scales"] = {pn: get_schedule(1.0, pn).num_scales for pn in budgets}
    info["ratios"] = list(H_DIV_W_TEMPLATES)
    defaults = settings if isinstance(settings, GenerationConfig) else GenerationConfig.from_dict(settings)
    if defaults.pn not in budgets:
        raise ValueError(f"default pixel budget {defaults.pn!r} does not fit the model; it draws {budgets}")
    return create_app(
        pipe, defaults=defaults, limits=limits, pixel_budgets=budgets, model_info=info, model_args=model_args
    )


def serve(args: argparse.Namespace) -> int:
    """Run ``infinity serve`` until interrupted; returns the exit status."""
    try:
        import uvicorn
    except ImportError:
        raise SystemExit(
            "infinity serve needs the serve extra: pip install 'infinity-model[serve]' (Starlette and uvicorn)"
        ) from None
    from ..cli import load_pipeline, resolve_model
    from .schema import ServeLimits

    limits = ServeLimits(
        max_images=args.max_images,
        max_prompt_chars=args.max_prompt_chars,
        max_candidates=args.max_candidates,
        max_cfg=args.max_cfg,
        max_tau=args.max_tau,
        max_queue=args.max_queue,
        batch_size=args.batch_size,
        batch_rows=args.batch_rows,
        batch_wait=args.batch_wait_ms / 1000,
    )
    model_args: list[str] = []
    for flag, value in (("--model", args.model), ("--vae", args.vae), ("--text-encoder", args.text_encoder)):
        if value is not None:
            model_args += [flag, str(value)]
    settings = resolve_model(args)
    source = "default model" if not model_args else str(args.model.name)
    pipe = load_pipeline(args, settings)
    app = build_app(pipe, settings, limits, model_args, source)
    print(f"infinity serve: http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0
