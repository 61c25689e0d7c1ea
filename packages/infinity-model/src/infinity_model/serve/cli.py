"""The ``infinity serve`` subcommand: load the model once, then serve the page and the API with uvicorn."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InfinityModelError
from ..generation import GenerationConfig
from .schema import ServeLimits

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..pipeline import InfinityPipeline

__all__ = ["add_serve_parser", "build_app", "describe_pipeline", "serve", "serve_limits"]

logger = logging.getLogger(__name__)


def add_serve_parser(
    sub: Any, add_model_options: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``infinity`` subcommands (the model options are those of ``generate``)."""
    parser = sub.add_parser(
        "serve",
        help="web page and HTTP API that draw images scale by scale (needs infinity-model[serve])",
        description="Serve a web page at / (Generate and Edit tabs) and the HTTP API /v1/images, /v1/images/stream, "
        "/v1/images/edits, /v1/images/edits/stream, /v1/model, /health. "
        "With none of --model/--vae/--text-encoder it serves the shipped default model.",
    )
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    # the budgets' defaults live in ServeLimits (one home); the flags only name them
    limits = ServeLimits
    parser.add_argument("--batch-size", type=int, default=limits.batch_size,
                        help="images per sampler call; queued requests with equal settings are merged "
                        "(default %(default)s; 1 turns micro-batching off)")  # fmt: skip
    parser.add_argument("--batch-rows", type=int, default=limits.batch_rows,
                        help="images x candidates per sampler call (default %(default)s)")  # fmt: skip
    parser.add_argument("--batch-wait-ms", type=float, default=limits.batch_wait * 1000,
                        help="under load, how long a call waits for more requests to share it (default %(default)g)")  # fmt: skip
    parser.add_argument("--max-queue", type=int, default=limits.max_queue,
                        help="requests that may wait; one more is answered 503 with Retry-After (default %(default)s)")  # fmt: skip
    parser.add_argument("--max-images", type=int, default=limits.max_images,
                        help="images per request (default %(default)s)")  # fmt: skip
    parser.add_argument("--max-candidates", type=int, default=limits.max_candidates,
                        help="candidates per image (default %(default)s)")  # fmt: skip
    parser.add_argument("--max-prompt-chars", type=int, default=limits.max_prompt_chars,
                        help="prompt length (default %(default)s)")  # fmt: skip
    parser.add_argument("--max-cfg", type=float, default=limits.max_cfg,
                        help="largest guidance scale (default %(default)g)")  # fmt: skip
    parser.add_argument("--max-tau", type=float, default=limits.max_tau,
                        help="largest temperature (default %(default)g)")  # fmt: skip
    parser.add_argument("--max-source-pixels", type=int, default=limits.max_source_pixels,
                        help="width x height of an uploaded edit source or mask (default %(default)s)")  # fmt: skip
    parser.add_argument("--max-edit-mb", type=float, default=limits.max_edit_body_bytes / 2**20,
                        help="size of an edit request's body in MiB, images included (default %(default)g)")  # fmt: skip
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


def serve_limits(args: argparse.Namespace) -> ServeLimits:
    """The :class:`ServeLimits` the ``infinity serve`` flags give (their defaults are its defaults)."""
    return ServeLimits(
        max_images=args.max_images,
        max_prompt_chars=args.max_prompt_chars,
        max_candidates=args.max_candidates,
        max_cfg=args.max_cfg,
        max_tau=args.max_tau,
        max_queue=args.max_queue,
        batch_size=args.batch_size,
        batch_rows=args.batch_rows,
        batch_wait=args.batch_wait_ms / 1000,
        max_source_pixels=args.max_source_pixels,
        max_edit_body_bytes=int(args.max_edit_mb * 2**20),
    )


def serve(args: argparse.Namespace) -> int:
    """Run ``infinity serve`` until interrupted; returns the exit status."""
    try:
        import uvicorn
    except ImportError:
        raise InfinityModelError(
            "needs the serve extra: pip install 'infinity-model[serve]' (Starlette and uvicorn)"
        ) from None
    from ..cli import load_pipeline, resolve_model

    limits = serve_limits(args)
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
