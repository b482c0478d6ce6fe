"""The Q-network: a plain MLP, observation -> hidden layers (ReLU) -> one Q-value per action."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class QNetwork(nn.Module):
    """``Linear -> ReLU -> ... -> Linear`` mapping an observation to ``action_count`` Q-values."""

    def __init__(self, observation_size: int, action_count: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = observation_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, action_count))
        self.layers = nn.Sequential(*layers)
        self.observation_size = observation_size
        self.action_count = action_count

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.layers(obs)

    def numpy_forward(self) -> NumpyForward:
        """A numpy evaluator that shares this network's weights (zero copy).

        For acting on one observation at a time on CPU, numpy's per-call overhead is several times
        lower than torch's. The evaluator reads the live parameter storage, so it follows every
        in-place change (optimizer steps, ``load_state_dict``); it goes stale only if the parameter
        tensors themselves are replaced (e.g. ``.to(device)``), in which case build a new one.
        """
        return NumpyForward(self)


class NumpyForward:
    """Evaluates a :class:`QNetwork` on numpy arrays using views of its (CPU, float32) weights."""

    def __init__(self, network: QNetwork) -> None:
        linears = [m for m in network.layers if isinstance(m, nn.Linear)]
        self._layers = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in linears]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Q-values for one observation ``(observation_size,)`` or a batch ``(n, observation_size)``."""
        h = np.asarray(obs, dtype=np.float32)
        last = len(self._layers) - 1
        for i, (weight, bias) in enumerate(self._layers):
            h = h @ weight.T + bias
            if i < last:
                np.maximum(h, 0.0, out=h)
        return h
