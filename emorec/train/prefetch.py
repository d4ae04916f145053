"""Overlap of host work with device work: the next micro-batch is built and copied while the current one runs."""

from __future__ import annotations

import torch

from emorec.model.packed_lm import to_device


class Prefetcher:
    """Micro-batch k+1 built and on its way to the device while the device still runs micro-batch k:
    call `get(k)` for the batch to run, and `prefetch(k + 1)` once its backward is queued."""

    def __init__(self, make_batch, order, device: torch.device, model: torch.nn.Module):
        self.make_batch, self.order, self.device, self.model = make_batch, order, device, model
        self._ready: tuple[int, dict, dict] | None = None

    def prefetch(self, k: int) -> None:
        host = self.make_batch(self.order.indices(k))
        self._ready = (k, host, to_device(host, self.device, self.model))

    def get(self, k: int) -> tuple[dict, dict]:
        """(the batch as built on the host, the same on the device)"""
        if self._ready is None or self._ready[0] != k:
            self.prefetch(k)
        _, host, on_device = self._ready
        self._ready = None
        return host, on_device
