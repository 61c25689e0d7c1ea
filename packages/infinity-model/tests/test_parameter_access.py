"""Every parameter is used only while its own module runs (what DeepSpeed ZeRO-3's per-module gathering needs)."""

from __future__ import annotations

import torch
from bsq_tokenizer.schedules import custom_schedule
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.transformer import Infinity
from torch.overrides import TorchFunctionMode


class _OwnerCheck(TorchFunctionMode):
    def __init__(self, owners: dict[int, tuple[str, torch.nn.Module]], active: list[torch.nn.Module]) -> None:
        super().__init__()
        self.owners, self.active, self.violations = owners, active, set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in [*args, *kwargs.values()]:
            for t in value if isinstance(value, (list, tuple)) else [value]:
                owner = self.owners.get(id(t)) if isinstance(t, torch.Tensor) else None
                if owner is not None and owner[1] not in self.active:
                    self.violations.add(owner[0])
        return func(*args, **kwargs)


def test_every_parameter_is_used_only_inside_its_own_modules_forward() -> None:
    cfg = InfinityConfig(
        depth=2, embed_dim=64, num_heads=4, d_vae=8, text_channels=32, text_maxlen=16, pool_heads=4
    )
    model = Infinity(cfg).train()
    owners = {}
    for module_name, module in model.named_modules():
        for name, p in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            owners[id(p)] = (f"{module_name}.{name}".lstrip("."), module)
    active: list[torch.nn.Module] = []
    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(lambda m, a: active.append(m)))
        handles.append(module.register_forward_hook(lambda m, a, o: active.remove(m)))
    schedule = custom_schedule([(1, 1), (2, 2)])
    text = TextCondition(torch.randn(5, 32), torch.tensor([2, 3]))
    check = _OwnerCheck(owners, active)
    with check:
        logits = model(text, torch.randn(2, 4, 8), schedule, cond_drop=torch.tensor([True, False]))
    for h in handles:
        h.remove()
    assert logits.shape == (2, 5, 8, 2)
    assert sorted(check.violations) == []
