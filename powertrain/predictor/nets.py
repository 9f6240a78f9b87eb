"""Batched MLP ensembles: many small networks trained as one tensor program.

Every network of a fit (ensemble members, cross-validation folds, candidate methods and
both targets) has the same shape, so they are stacked along a leading "net" axis and
trained together with batched matrix products. Each net has its own row weights (which rows
it trains on), learning rate, and L2 anchor (pull towards source weights, for fine-tuning),
so one run trains and cross-validates every candidate at once. Prediction is plain numpy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from powertrain.predictor.state import NetworkState

Layers = list[tuple[np.ndarray, np.ndarray]]  # per layer: weight (nets, in, out), bias (nets, out)


def init_layers(n_nets: int, n_in: int, hidden: Sequence[int], rng: np.random.Generator) -> Layers:
    """He-uniform initial weights for ``n_nets`` networks, zero biases."""
    dims = [n_in, *hidden, 1]
    layers: Layers = []
    for fan_in, fan_out in itertools.pairwise(dims):
        bound = math.sqrt(6.0 / fan_in)
        w = rng.uniform(-bound, bound, size=(n_nets, fan_in, fan_out))
        if fan_out == 1:
            w *= 0.1  # start near the mean prediction
        layers.append((w, np.zeros((n_nets, fan_out))))
    return layers


def _act(h: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.relu(h) if activation == "relu" else torch.nn.functional.silu(h)


def _forward(x: torch.Tensor, ws: list[torch.Tensor], bs: list[torch.Tensor],
             activation: str) -> torch.Tensor:
    h = x
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        h = torch.baddbmm(b.unsqueeze(1), h, w)
        if i < len(ws) - 1:
            h = _act(h, activation)
    return h.squeeze(-1)


@dataclass(frozen=True)
class TrainSpec:
    """How to train a stack of networks (all arrays have a leading net axis)."""

    lr: np.ndarray  # (nets,) Adam step size per net
    anchor: np.ndarray  # (nets,) strength of the L2 pull towards ``anchor_layers``
    weight_decay: np.ndarray  # (nets,) plain L2 on weights
    steps: int
    batch_size: int | None = None  # None: full batch
    checkpoints: tuple[int, ...] = ()
    activation: str = "relu"
    lr_decay: bool = True  # cosine decay to 10 % over ``steps``


def train(
    x: np.ndarray,
    y: np.ndarray,
    row_weight: np.ndarray,
    layers: Layers,
    spec: TrainSpec,
    *,
    anchor_layers: Layers | None = None,
    seed: int = 0,
) -> dict[int, Layers]:
    """Train the stack; returns the layers at each checkpoint (and at ``spec.steps``).

    ``x`` is ``(n, k)`` shared by all nets or ``(nets, n, k)``; ``y`` and ``row_weight`` are
    ``(nets, n)``: a net learns only from rows with positive weight (a fold's training rows).
    Runs on one intra-op thread: these matrices are too small to gain from more, one thread
    is immune to OpenMP spin-waiting on a busy machine, and results do not depend on the
    host's thread count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(x, y, row_weight, layers, spec, anchor_layers, seed)
    finally:
        torch.set_num_threads(previous)


def _train(x: np.ndarray, y: np.ndarray, row_weight: np.ndarray, layers: Layers, spec: TrainSpec,
           anchor_layers: Layers | None, seed: int) -> dict[int, Layers]:
    gen = torch.Generator().manual_seed(seed)
    n_nets = layers[0][0].shape[0]
    xt = torch.as_tensor(x, dtype=torch.float32)
    if xt.ndim == 2:
        xt = xt.unsqueeze(0).expand(n_nets, -1, -1)
    yt = torch.as_tensor(y, dtype=torch.float32)
    wt = torch.as_tensor(row_weight, dtype=torch.float32)
    ws = [torch.tensor(w, dtype=torch.float32, requires_grad=True) for w, _ in layers]
    bs = [torch.tensor(b, dtype=torch.float32, requires_grad=True) for _, b in layers]
    params = [*ws, *bs]
    anchors = None
    if anchor_layers is not None:
        anchors = [torch.tensor(w, dtype=torch.float32) for w, _ in anchor_layers] + [
            torch.tensor(b, dtype=torch.float32) for _, b in anchor_layers
        ]
    lr = torch.as_tensor(spec.lr, dtype=torch.float32)
    anchor = torch.as_tensor(spec.anchor, dtype=torch.float32)
    decay = torch.as_tensor(spec.weight_decay, dtype=torch.float32)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    n = xt.shape[1]
    denom_full = wt.sum(dim=1).clamp_min(1e-9)
    checkpoints = sorted({*spec.checkpoints, spec.steps})
    snapshots: dict[int, Layers] = {}
    for step in range(1, spec.steps + 1):
        if spec.batch_size is not None and spec.batch_size < n:
            idx = torch.randint(0, n, (spec.batch_size,), generator=gen)
            xb, yb, wb = xt[:, idx, :], yt[:, idx], wt[:, idx]
            denom = wb.sum(dim=1).clamp_min(1e-9)
        else:
            xb, yb, wb, denom = xt, yt, wt, denom_full
        pred = _forward(xb, ws, bs, spec.activation)
        per_net = ((pred - yb) ** 2 * wb).sum(dim=1) / denom
        loss = per_net.sum()
        for i, w in enumerate(ws):
            loss = loss + (decay * (w**2).sum(dim=(1, 2))).sum()
            if anchors is not None:
                loss = loss + (anchor * ((w - anchors[i]) ** 2).sum(dim=(1, 2))).sum()
        for p in params:
            p.grad = None
        loss.backward()  # type: ignore[no-untyped-call]
        scale = 1.0
        if spec.lr_decay:
            scale = 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / max(spec.steps, 1)))
        with torch.no_grad():
            bc1 = 1 - beta1**step
            bc2 = 1 - beta2**step
            for p, mi, vi in zip(params, m, v, strict=True):
                g = p.grad
                assert g is not None
                mi.mul_(beta1).add_(g, alpha=1 - beta1)
                vi.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                step_size = (lr * scale / bc1).view(-1, *([1] * (p.ndim - 1)))
                p.sub_(step_size * mi / ((vi / bc2).sqrt() + eps))
        if step in checkpoints:
            snapshots[step] = [(w.detach().numpy().astype(np.float64),
                                b.detach().numpy().astype(np.float64)) for w, b in zip(ws, bs, strict=True)]
    return snapshots


def forward_numpy(x: np.ndarray, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
                  activation: str) -> np.ndarray:
    """Outputs ``(nets, n)`` of a stack for shared inputs ``x`` of shape ``(n, k)``.

    float32 with in-place activations: this is the client's per-round hot path.
    """
    h: np.ndarray = x.astype(np.float32)[None, :, :]
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = np.matmul(h, w.astype(np.float32, copy=False))
        h += b.astype(np.float32, copy=False)[:, None, :]
        if i < last:
            if activation == "relu":
                np.maximum(h, 0.0, out=h)
            else:  # silu: h / (1 + exp(-h))
                s = np.negative(h)
                np.exp(s, out=s)
                s += 1.0
                np.divide(h, s, out=h)
    return h[..., 0].astype(np.float64)


def select(layers: Layers, nets: Sequence[int] | np.ndarray) -> Layers:
    """The sub-stack of the given net indices."""
    idx = np.asarray(nets)
    return [(w[idx], b[idx]) for w, b in layers]


def stack(*parts: Layers) -> Layers:
    """Concatenate stacks along the net axis."""
    return [(np.concatenate([p[i][0] for p in parts]), np.concatenate([p[i][1] for p in parts]))
            for i in range(len(parts[0]))]


def to_network_state(layers: Layers, activation: str) -> NetworkState:
    """Freeze a stack as a persisted ensemble (float32 precision, as stored)."""
    return NetworkState(tuple(w.astype(np.float32).astype(np.float64) for w, _ in layers),
                        tuple(b.astype(np.float32).astype(np.float64) for _, b in layers), activation)


def from_network_state(net: NetworkState) -> Layers:
    """A persisted ensemble as a trainable stack."""
    return [(np.array(w), np.array(b)) for w, b in zip(net.weights, net.biases, strict=True)]
