"""LocalPG's optimiser: one parameter group per BSN layer, layer-wise learning rates, per-group gradient clipping.

Each BSN layer, the action head, the critic and the rest of the policy form a *gradient group*. Every
group has its own learning-rate multiplier (``hidden_lr_scale`` for the BSN layers, 1 for the others)
and its gradient norm is clipped on its own: a global norm would let the many hidden units' noisy
estimates shrink the action head's step, coupling layers that the local rule keeps independent.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["GroupGradientClipper", "gradient_groups", "layerwise_optimizer"]


def gradient_groups(policy: Any) -> list[list[torch.nn.Parameter]]:
    """The policy's gradient groups: one per BSN layer (bottom to top), the action head, the critic, the rest.

    Args:
        policy: a :class:`~policies.BinaryStochasticPolicy`. Empty groups are left out.
    """
    groups = [list(layer.parameters()) for layer in policy.bsn.layers]
    head = list(policy.action_net.parameters())
    if isinstance(getattr(policy, "log_std", None), torch.nn.Parameter):
        head.append(policy.log_std)
    groups.append(head)
    groups.append([*policy.mlp_extractor.value_body.parameters(), *policy.value_net.parameters()])
    seen = {id(p) for group in groups for p in group}
    rest = [p for p in policy.parameters() if id(p) not in seen]
    return [group for group in [*groups, rest] if group]


def layerwise_optimizer(
    policy: Any, groups: Sequence[list[torch.nn.Parameter]], layer_scales: Sequence[float], base_lr: float
) -> torch.optim.Optimizer:
    """The policy's optimizer class and kwargs, built with one parameter group per gradient group.

    Each group carries ``lr_scale`` (``layer_scales`` for the BSN layers, which come first in ``groups``;
    1 for the others): the learning rate of a group is ``lr_scale`` times the schedule's value. A fused
    kernel is used where the optimizer and device offer one (a small network's step is otherwise
    dominated by per-tensor dispatch), else ``foreach``.

    Args:
        policy: the policy (its ``optimizer_class`` and ``optimizer_kwargs``).
        groups: the gradient groups, BSN layers first (:func:`gradient_groups`).
        layer_scales: one learning-rate multiplier (> 0) per BSN layer.
        base_lr: the learning rate at the start of training (> 0).
    """
    scales = [*layer_scales, *[1.0] * (len(groups) - len(layer_scales))]
    param_groups = [
        {"params": params, "lr": base_lr * scale, "lr_scale": scale}
        for params, scale in zip(groups, scales, strict=True)
    ]
    kwargs = dict(policy.optimizer_kwargs)
    accepted = inspect.signature(policy.optimizer_class).parameters
    if "fused" in accepted and "foreach" not in kwargs and "fused" not in kwargs:
        try:
            return policy.optimizer_class(param_groups, lr=base_lr, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
            pass
    if "foreach" in accepted:
        kwargs.setdefault("foreach", True)
    return policy.optimizer_class(param_groups, lr=base_lr, **kwargs)


class GroupGradientClipper:
    """``clip_grad_norm_(group, max_norm)`` for every gradient group, in one multi-tensor pass.

    Same result as calling ``torch.nn.utils.clip_grad_norm_`` once per group (each group's norm is
    clipped separately, scale ``min(1, max_norm / (norm + 1e-6))``), with a fixed number of kernel
    launches instead of a few per group.

    Args:
        groups: the gradient groups (:func:`gradient_groups`).
    """

    def __init__(self, groups: Sequence[list[torch.nn.Parameter]]) -> None:
        self.groups = [list(group) for group in groups]
        # Cached: a fresh index tensor would be a host-to-device copy, a synchronisation, at every step on GPU.
        self._owners: dict[tuple[int, ...], torch.Tensor] = {}

    def clip(self, max_norm: float) -> None:
        """Scale the gradients of each group whose norm exceeds ``max_norm`` (> 0) down to that norm."""
        grads, owners = [], []
        for index, group in enumerate(self.groups):
            for parameter in group:
                if parameter.grad is not None:
                    grads.append(parameter.grad)
                    owners.append(index)
        if not grads:
            return
        norms = torch.stack(torch._foreach_norm(grads))
        owner = self._owners.get(tuple(owners))
        if owner is None or owner.device != norms.device:
            owner = self._owners[tuple(owners)] = torch.tensor(owners, device=norms.device)
        group_norms = torch.zeros(len(self.groups), device=norms.device, dtype=norms.dtype)
        group_norms = group_norms.index_add_(0, owner, norms.square()).sqrt()
        scales = (max_norm / (group_norms + 1e-6)).clamp(max=1.0)[owner]
        torch._foreach_mul_(grads, list(scales.to(grads[0].dtype).unbind()))
