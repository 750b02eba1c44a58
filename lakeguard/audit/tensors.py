"""Tensors that the forward pass never reads: room for a hidden payload.

Data exfiltration by compression (Li, Ayache and Delingette) can ship a decoder and latent codes as
extra parameters of the exported model. Such tensors either do not belong to the architecture at all
(the loader reports them) or belong to it but never influence the output. The second kind is found
by poisoning one tensor at a time with NaN and checking whether the logits change.
"""

from __future__ import annotations

import torch
from torch import nn

from lakeguard.errors import ModelFileError


@torch.no_grad()
def find_unread_tensors(model: nn.Module, sample: torch.Tensor, *, device: torch.device) -> list[str]:
    """Return the names of floating-point state-dict tensors that do not affect ``model(sample)``.

    Args:
        model: the model in eval mode; it is restored unchanged.
        sample: a few inputs (N, C, H, W) in [0, 1].

    Integer buffers such as batch norm's ``num_batches_tracked`` are bookkeeping, not weights,
    and are not checked.
    """
    model.to(device).eval()
    sample = sample.to(device)
    if not torch.isfinite(model(sample)).all():
        raise ModelFileError("the model's output is not finite on training images; it cannot be audited")
    state = model.state_dict(keep_vars=True)
    unread = []
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        saved = tensor.detach().clone()
        tensor.data.fill_(float("nan"))
        try:
            output = model(sample)
        finally:
            tensor.data.copy_(saved)
        if torch.isfinite(output).all():
            unread.append(name)
    return unread
