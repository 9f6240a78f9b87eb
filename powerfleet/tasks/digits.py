"""``Digits``: a small CNN on generated digit images - quick to train on a laptop.

Nothing is downloaded: ``make_dataset`` renders the ten digits from a 5x7 bitmap font into
16x16 images with random scale, shear, rotation, translation, stroke thickness, occluding
scratches and pixel noise - a real (if small) image-classification task whose accuracy
climbs over federated rounds. ``partition`` splits the training set non-IID across nodes
(Dirichlet label skew, :func:`powerfleet.tasks.data.partition`), as federated data usually is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import TensorDataset

from powerfleet.protocol.tasks import Task
from powerfleet.tasks.data import cached_arrays, check_partitioner, partition, partition_indices
from powertrain.errors import check_range

IMAGE_PX = 16
CLASSES = 10
BATCH_SIZE = 16
PIXEL_MEAN = 0.26  # of make_dataset images (measured on seed 0: mean 0.257, std 0.321)
PIXEL_STD = 0.32

# 5x7 bitmap font of the digits 0-9 (rows top to bottom, '#' = ink).
_FONT = {
    0: [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    1: ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    2: [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    3: ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."],
    4: ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    5: ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    6: ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
    7: ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    8: [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    9: [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
}


@dataclass(frozen=True)
class Dataset:
    """Images ``(n, 1, 16, 16)`` float32 in [0, 1] and integer labels ``(n,)``."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.size)

    def subset(self, index: np.ndarray) -> Dataset:
        """The rows ``index``."""
        return Dataset(self.x[index], self.y[index])


def _glyph_ink(digit: int, rng: np.random.Generator, *, scale: float, angle: float, shear: float,
               shift: float, thick: float) -> np.ndarray:
    """One digit's soft ink on the image grid, after an affine distortion."""
    glyph = np.array([[c == "#" for c in row] for row in _FONT[digit]], dtype=float)  # (7, 5)
    cos, sin = math.cos(angle), math.sin(angle)
    inv = np.array([[cos, sin], [-sin, cos]]) @ np.array([[1.0, -shear], [0.0, 1.0]]) / scale
    ys, xs = np.mgrid[0:IMAGE_PX, 0:IMAGE_PX].astype(float)
    centre = IMAGE_PX / 2 - 0.5 + rng.uniform(-shift, shift, size=2)
    gy, gx = inv @ np.stack([ys.ravel() - centre[0], xs.ravel() - centre[1]])
    gy, gx = gy + 3.0, gx + 2.0  # glyph centre
    cells = np.argwhere(glyph > 0).astype(float)
    d = np.sqrt((gy[:, None] - cells[None, :, 0]) ** 2 + (gx[:, None] - cells[None, :, 1]) ** 2).min(axis=1)
    ink: np.ndarray = np.clip(1.0 - (d - thick) / 0.45, 0.0, 1.0).reshape(IMAGE_PX, IMAGE_PX)
    return ink


def _render(digit: int, rng: np.random.Generator, difficulty: float = 0.0) -> np.ndarray:
    """One noisy image of ``digit``; ``difficulty`` (0..1) widens the distortions, raises the
    noise and overlays a faint second digit as clutter."""
    if difficulty > 0:
        img = _glyph_ink(digit, rng, scale=rng.uniform(1.4, 2.1), angle=rng.uniform(-0.3 - 0.4 * difficulty,
                                                                                    0.3 + 0.4 * difficulty),
                         shear=rng.uniform(-0.35 - 0.3 * difficulty, 0.35 + 0.3 * difficulty),
                         shift=1.5 + 1.5 * difficulty, thick=rng.uniform(0.3, 0.75))
        if rng.random() < difficulty:  # a fainter distractor digit, shifted: clutter the model must ignore
            other = _glyph_ink(int(rng.integers(0, CLASSES)), rng, scale=rng.uniform(1.2, 1.8),
                               angle=rng.uniform(-0.6, 0.6), shear=0.0, shift=5.0, thick=rng.uniform(0.3, 0.6))
            img = np.maximum(img, other * rng.uniform(0.3, 0.6))
        noisy: np.ndarray = np.clip(img * rng.uniform(0.5, 1.0) + rng.normal(0.0, 0.12 + 0.13 * difficulty,
                                                                              size=img.shape), 0.0, 1.0)
        return noisy
    glyph = np.array([[c == "#" for c in row] for row in _FONT[digit]], dtype=float)  # (7, 5)
    scale = rng.uniform(1.55, 2.05)
    angle = rng.uniform(-0.3, 0.3)
    shear = rng.uniform(-0.35, 0.35)
    cos, sin = math.cos(angle), math.sin(angle)
    # inverse map: image pixel -> glyph coordinate
    inv = np.array([[cos, sin], [-sin, cos]]) @ np.array([[1.0, -shear], [0.0, 1.0]]) / scale
    ys, xs = np.mgrid[0:IMAGE_PX, 0:IMAGE_PX].astype(float)
    centre = IMAGE_PX / 2 - 0.5 + rng.uniform(-1.5, 1.5, size=2)
    pts = np.stack([ys.ravel() - centre[0], xs.ravel() - centre[1]])
    gy, gx = inv @ pts
    gy, gx = gy + 3.0, gx + 2.0  # glyph centre
    thick = rng.uniform(0.35, 0.75)
    # soft ink: distance to the nearest inked cell centre
    cells = np.argwhere(glyph > 0).astype(float)
    d = np.sqrt((gy[:, None] - cells[None, :, 0]) ** 2 + (gx[:, None] - cells[None, :, 1]) ** 2).min(axis=1)
    img = np.clip(1.0 - (d - thick) / 0.45, 0.0, 1.0).reshape(IMAGE_PX, IMAGE_PX)
    if rng.random() < 0.3:  # a scratch across the image
        r0, c0 = rng.integers(0, IMAGE_PX, size=2)
        length = rng.integers(4, 10)
        dr, dc = rng.choice([-1, 0, 1], size=2)
        for i in range(int(length)):
            r, c = r0 + dr * i, c0 + dc * i
            if 0 <= r < IMAGE_PX and 0 <= c < IMAGE_PX:
                img[r, c] = rng.uniform(0.5, 1.0)
    img = img * rng.uniform(0.6, 1.0) + rng.normal(0.0, 0.12, size=img.shape)
    out: np.ndarray = np.clip(img, 0.0, 1.0)
    return out


#: Bump when what ``make_dataset`` renders changes: it names the cached copies.
RENDER_VERSION = 1


@lru_cache(maxsize=4)
def make_dataset(seed: int = 0, n_train: int = 6000, n_test: int = 1000,
                 difficulty: float = 0.0) -> tuple[Dataset, Dataset]:
    """Deterministic train and test sets for ``seed`` (cached per process, and on disk: each
    Flower message runs in a fresh process, and rendering takes about a second)."""
    n = n_train + n_test

    def render() -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, 271828])
        labels = rng.integers(0, CLASSES, size=n)
        images = np.stack([_render(int(d), rng, difficulty) for d in labels]).astype(np.float32)[:, None]
        return {"x": images, "y": labels.astype(np.int64)}

    def valid(a: dict[str, np.ndarray]) -> bool:
        x, y = a.get("x"), a.get("y")
        return (x is not None and y is not None and x.shape == (n, 1, IMAGE_PX, IMAGE_PX) and x.dtype == np.float32
                and y.shape == (n,) and y.dtype == np.int64 and bool(np.isfinite(x).all())
                and bool(((y >= 0) & (y < CLASSES)).all()))

    key = f"digits-r{RENDER_VERSION}-seed{seed}-n{n_train}+{n_test}-d{difficulty!r}"
    arrays = cached_arrays(key, render, valid)
    images, labels = arrays["x"], arrays["y"]
    train = Dataset(images[:n_train], labels[:n_train])
    test = Dataset(images[n_train:], labels[n_train:])
    return train, test


def node_data(partition_id: int, num_partitions: int, seed: int, alpha: float = 0.5) -> Dataset:
    """The training partition of one node."""
    train, _ = make_dataset(seed)
    return train.subset(partition(train.y, num_partitions, alpha, seed)[partition_id % num_partitions])


class Net(nn.Module):
    """Small CNN: two conv blocks and two dense layers (about 30 k parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 48), nn.ReLU(), nn.Linear(48, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (inputs standardised with the data set's pixel mean and spread, which
        lets federated averaging leave the chance-level plateau within a couple of rounds)."""
        out: torch.Tensor = self.head(self.features((x - PIXEL_MEAN) / PIXEL_STD))
        return out


def new_model(seed: int = 0) -> Net:
    """A freshly initialised model (identical for a seed)."""
    torch.manual_seed(seed)
    return Net()


class Trainer:
    """SGD over a node's data, one minibatch per call: the ``step`` a device runs per minibatch."""

    def __init__(self, model: Net, data: Dataset, *, lr: float = 0.05, seed: int = 0) -> None:
        self.model = model
        self.data = data
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        self.loss_fn = nn.CrossEntropyLoss()
        self._batches = self._iterate(np.random.default_rng(seed))
        self.losses: list[float] = []
        self.examples = 0

    def _iterate(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        while True:
            order = rng.permutation(len(self.data))
            for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
                yield order[start:start + BATCH_SIZE]

    def step(self, _index: int) -> None:
        """Train on the next minibatch."""
        idx = next(self._batches)
        x = torch.from_numpy(self.data.x[idx])
        y = torch.from_numpy(self.data.y[idx])
        self.model.train()
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.losses.append(float(loss.detach()))
        self.examples += int(y.numel())


def evaluate(model: Net, data: Dataset) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy on ``data``."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x))
        y = torch.from_numpy(data.y)
        loss = float(nn.functional.cross_entropy(logits, y))
        acc = float((logits.argmax(dim=1) == y).float().mean())
    return loss, acc


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Model parameters as numpy arrays (for Flower's ArrayRecord)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Load numpy weights into ``model``."""
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})


class Digits(Task):
    """Generated 16 px digits, a two-block CNN, Dirichlet label-skewed partitions.

    Options: ``alpha`` (Dirichlet concentration of the label skew; smaller is more skewed),
    ``partitioner`` (``dirichlet`` or ``iid``), ``n_train`` and ``n_test`` (examples generated).
    """

    name = "digits-cnn"
    batch_size = BATCH_SIZE
    input_shape = (1, IMAGE_PX, IMAGE_PX)
    description = "small CNN on generated 16 px digits (non-IID Dirichlet partitions)"

    def __init__(self, *, alpha: float = 0.5, n_train: int = 6000, n_test: int = 1000,
                 partitioner: str = "dirichlet", difficulty: float = 0.0) -> None:
        super().__init__()
        self.difficulty = float(check_range("difficulty", difficulty, low=0, high=1))
        self.alpha = float(alpha)
        self.partitioner = check_partitioner(str(partitioner))
        self.n_train = int(n_train)
        self.n_test = int(n_test)

    def build_model(self) -> nn.Module:
        """The CNN (about 30 k parameters)."""
        return Net()

    def train_data(self, partition_id: int, num_partitions: int, seed: int) -> TorchDataset[tuple[torch.Tensor, ...]]:
        """A Dirichlet label-skewed (or IID) share of the generated training set."""
        train, _ = make_dataset(seed, self.n_train, self.n_test, self.difficulty)
        part = train.subset(partition_indices(train.y, partition_id, num_partitions, partitioner=self.partitioner,
                                              alpha=self.alpha, seed=seed, min_size=BATCH_SIZE))
        return TensorDataset(torch.from_numpy(part.x), torch.from_numpy(part.y))

    def test_data(self, seed: int) -> TorchDataset[tuple[torch.Tensor, ...]]:
        """The generated test set."""
        _, test = make_dataset(seed, self.n_train, self.n_test, self.difficulty)
        return TensorDataset(torch.from_numpy(test.x), torch.from_numpy(test.y))
