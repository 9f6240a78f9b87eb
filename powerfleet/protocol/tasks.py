"""The training task interface: what a federated-learning experiment brings to powerfleet.

A :class:`Task`, in the spirit of the ``task.py`` of Flower's app template, gives its model,
its train data for one partition and its test data, one training step and an evaluation,
plus metadata (name, batch size, the shape of one input). Users select a task by reference:

* ``package.module:ClassName`` (importable), or ``path/to/file.py:ClassName`` (a file of the
  user's own, outside this package);
* options after ``?`` are passed to the class as keyword arguments, numbers converted:
  ``powerfleet.tasks.vision:ResNet18?image_px=64&width=2``.

What runs defines the workload: :func:`fingerprint` digests the task's name, model
structure, parameter shapes, batch size and input shape, and keys its predictors in the
store and labels its profile samples, so two different models never share a predictor and
the same task on the same board type always does.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from powertrain.errors import InvalidParameterError, PowerfleetError

_T = TypeVar("_T")
Batch = Any  # what the task's DataLoader yields (usually an ``(inputs, targets)`` pair of tensors)
OptionValue = str | int | float | bool
#: Store names allow letters, digits and ``. _ + -``; a fingerprint is ``<name>+<10 hex digits>``.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


class TaskError(PowerfleetError):
    """A task reference that does not load, or a task that does not behave (one line, no traceback)."""


@dataclass(frozen=True)
class TaskInfo:
    """A task's metadata: what it is called and what one training minibatch looks like."""

    name: str  # e.g. "resnet18-imagenet"; letters, digits and . _ -
    batch_size: int
    input_shape: tuple[int, ...]  # one example, e.g. (3, 224, 224); token ids: (sequence length,)
    description: str = ""
    options: Mapping[str, OptionValue] = field(default_factory=dict)  # as passed in the reference


class Task(abc.ABC):
    """A federated-learning task (see the module docstring).

    Subclasses set :attr:`name`, :attr:`batch_size` and :attr:`input_shape` (class attributes
    or in ``__init__``, which receives the reference's options as keyword arguments) and
    implement :meth:`build_model`, :meth:`train_data` and :meth:`test_data`. The defaults
    train with SGD and cross-entropy and evaluate loss and accuracy; override what differs.
    """

    name: ClassVar[str] = ""
    batch_size: ClassVar[int] = 16
    input_shape: ClassVar[tuple[int, ...]] = ()
    description: ClassVar[str] = ""

    def __init__(self, **options: OptionValue) -> None:
        if options:
            raise InvalidParameterError(
                f"task {type(self).__name__} takes no options; got {', '.join(sorted(options))}")
        self.options: dict[str, OptionValue] = {}

    # ------------------------------------------------------------------ what a task must give
    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (the caller seeds torch first, so it repeats for a seed)."""

    @abc.abstractmethod
    def train_data(self, partition_id: int, num_partitions: int, seed: int) -> Dataset[Any]:
        """The training examples of one partition of ``num_partitions`` (federated data is split)."""

    @abc.abstractmethod
    def test_data(self, seed: int) -> Dataset[Any]:
        """Held-out examples the global model is evaluated on."""

    # ------------------------------------------------------------------ defaults to override
    def info(self) -> TaskInfo:
        """Name, batch size, input shape, description and options."""
        return TaskInfo(self.name, int(self.batch_size), tuple(int(d) for d in self.input_shape),
                        self.description, dict(self.options))

    def make_optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        """The local optimizer (default SGD with momentum 0.9)."""
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        """The training loss of one batch (default cross-entropy)."""
        loss: torch.Tensor = nn.functional.cross_entropy(output, target)
        return loss

    def train_step(self, model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer) -> float:
        """One minibatch of training; returns its loss. This is the step boards time and profile."""
        inputs, targets = batch
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model(inputs), targets)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return float(loss.detach())

    def evaluate(self, model: nn.Module, data: Dataset[Any]) -> dict[str, float]:
        """Metrics of ``model`` on ``data`` (default ``loss`` and ``accuracy``)."""
        model.eval()
        total_loss, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for inputs, targets in DataLoader(data, batch_size=256):
                out = model(inputs)
                total_loss += float(nn.functional.cross_entropy(out, targets, reduction="sum"))
                correct += int((out.argmax(dim=1) == targets).sum())
                count += int(targets.numel())
        return {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1)}

    def local_test_data(self, partition_id: int, num_partitions: int, seed: int) -> Dataset[Any]:
        """A node's own held-out examples, for federated evaluation (default: an even share of
        :meth:`test_data`)."""
        data = self.test_data(seed)
        n = len(data)  # type: ignore[arg-type]
        parts = max(num_partitions, 1)
        order = np.random.default_rng([seed, 2718]).permutation(n)
        return Subset(data, np.array_split(order, parts)[partition_id % parts].tolist())

    def loader(self, data: Dataset[Any], seed: int) -> DataLoader[Any]:
        """How minibatches are drawn for training (shuffled, full batches only)."""
        generator = torch.Generator().manual_seed(int(seed) % (2**63))
        return DataLoader(data, batch_size=int(self.batch_size), shuffle=True, drop_last=True, generator=generator)


# ---------------------------------------------------------------- training loop pieces
class Trainer:
    """A task's model and optimizer over one partition, one minibatch per call: the ``step`` a
    device runs per minibatch (real training on every backend).

    ``proximal_mu`` adds FedProx's pull towards the starting (global) weights to every
    optimizer step, whatever the task's own step does; ``update_after`` keeps a copy of the
    weights after that many steps (:meth:`update`), so a node that trains longer - profiling
    modes for a new predictor - sends back no heavier an update than a normal one.
    """

    def __init__(self, task: Task, model: nn.Module, data: Dataset[Any], *, lr: float, seed: int,
                 proximal_mu: float = 0.0, update_after: int = 0) -> None:
        self.task = task
        self.model = model
        self.data = data
        self.seed = seed
        self.optimizer = task.make_optimizer(model, lr)
        self.losses: list[float] = []
        self.examples = 0
        self.steps = 0
        self.update_after = int(update_after)
        self._snapshot: dict[str, np.ndarray] | None = None
        self._epoch = 0
        self._batches = self._iterate()
        if proximal_mu > 0:
            anchor = [p.detach().clone() for p in model.parameters()]
            params = list(model.parameters())

            def pull(_optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
                with torch.no_grad():
                    for p, p0 in zip(params, anchor, strict=True):
                        if p.grad is not None:
                            p.grad.add_(p - p0, alpha=proximal_mu)

            self.optimizer.register_step_pre_hook(pull)

    def _iterate(self) -> Iterator[Batch]:
        while True:
            empty = True
            for batch in self.task.loader(self.data, self.seed * 1_000_003 + self._epoch):
                empty = False
                yield batch
            if empty:
                raise TaskError(f"task {self.task.name}: a partition of {len(self.data)} examples "  # type: ignore[arg-type]
                                f"holds no full minibatch of {self.task.batch_size}")
            self._epoch += 1

    def step(self, _index: int) -> None:
        """Train on the next minibatch."""
        batch = next(self._batches)
        loss = self.task.train_step(self.model, batch, self.optimizer)
        if not math.isfinite(loss):
            raise TaskError(f"task {self.task.name}: training loss is {loss}; check the learning rate and data")
        self.losses.append(loss)
        self.steps += 1
        if self.update_after and self.steps == self.update_after:
            self._snapshot = get_weights(self.model)
        if not self.update_after or self.steps <= self.update_after:
            self.examples += int(self.task.batch_size)

    def update(self) -> dict[str, np.ndarray]:
        """The weights to send back: after ``update_after`` steps if it ran that many, else now."""
        return self._snapshot if self._snapshot is not None else get_weights(self.model)


def seeded_model(task: Task, seed: int) -> nn.Module:
    """The task's model initialised from ``seed`` (identical on every node for a seed)."""
    torch.manual_seed(int(seed))
    return task.build_model()


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Model state as numpy arrays (for Flower's ArrayRecord)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Load numpy arrays into ``model`` (names and shapes must match)."""
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})


# ---------------------------------------------------------------- identity
def fingerprint(task: Task, model: nn.Module | None = None) -> str:
    """``<name>+<digest>``: the workload identity of what runs (see the module docstring)."""
    info = task.info()
    net = model if model is not None else seeded_model(task, 0)
    h = hashlib.sha256()
    h.update(f"{info.name}|{info.batch_size}|{info.input_shape}".encode())
    h.update(_structure(net).encode())
    for name, tensor in net.state_dict().items():
        h.update(f"|{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
    return f"{info.name}+{h.hexdigest()[:10]}"


def split_fingerprint(workload: str) -> tuple[str, str]:
    """(name, digest) of a fingerprint; a catalog workload name has no digest (``""``)."""
    name, _, digest = workload.partition("+")
    return name, digest


def _structure(model: nn.Module) -> str:
    """Module tree with each module's class and configuration (``extra_repr``), no weights."""
    return ";".join(f"{name}={type(m).__module__}.{type(m).__qualname__}({m.extra_repr()})"
                    for name, m in model.named_modules())


# ---------------------------------------------------------------- loading by reference
def parse_task_reference(reference: str) -> tuple[str, str, dict[str, OptionValue]]:
    """``module:Class?k=v`` -> (module or file, class name, options); no import happens."""
    text = reference.strip()
    target, _, query = text.partition("?")
    module, sep, cls = target.rpartition(":")
    if not sep or not module or not cls.isidentifier():
        raise TaskError(f"task {reference!r} must look like package.module:ClassName or path/file.py:ClassName")
    options: dict[str, OptionValue] = {k: _option_value(v) for k, v in parse_qsl(query, keep_blank_values=True)}
    return module, cls, options


@functools.lru_cache(maxsize=8)
def cached_task(reference: str) -> Task:
    """:func:`load_task`, once per reference and process (tasks keep their generated data)."""
    return load_task(reference)


def load_task(reference: str) -> Task:
    """Import and build the task a reference names; every failure is one :class:`TaskError` line."""
    module_name, cls_name, options = parse_task_reference(reference)
    module = _import(module_name, reference)
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise TaskError(f"task {reference!r}: {module_name} has no {cls_name}")
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskError(f"task {reference!r}: {cls_name} is not a powerfleet Task "
                        "(subclass powerfleet.protocol.tasks.Task)")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise TaskError(f"task {reference!r}: {cls_name} does not implement {', '.join(missing)} "
                        "(required by powerfleet.protocol.tasks.Task)")
    try:
        task = cls(**options)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"task {reference!r}: options {dict(options)} are not accepted: {exc}") from None
    task.options = dict(options)
    info = task.info()
    if not _NAME_RE.match(info.name):
        raise TaskError(f"task {reference!r}: name {info.name!r} must be 1-100 letters, digits or . _ -")
    if info.batch_size < 1 or not info.input_shape or any(d < 1 for d in info.input_shape):
        raise TaskError(f"task {reference!r}: batch_size {info.batch_size} and input_shape {info.input_shape} "
                        "must be positive")
    return task


def _import(module_name: str, reference: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise TaskError(f"task {reference!r}: file {path} not found")
        name = f"powerfleet_user_task_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TaskError(f"task {reference!r}: {path} is not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user's file may fail in any way: one line, not a traceback
            del sys.modules[name]
            raise TaskError(f"task {reference!r}: {path} does not import: {type(exc).__name__}: {exc}") from None
        return module
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise TaskError(f"task {reference!r}: module {module_name} does not import: "
                        f"{type(exc).__name__}: {exc}") from None


def _option_value(text: str) -> OptionValue:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def check_task(task: Task, seed: int = 0) -> str:
    """Build the model, run one real training step and evaluate a few test examples; returns
    the fingerprint. Run before anything starts or is stored.

    Refuses, with one line each, data that cannot be had (an unreachable dataset), a model
    whose output does not fit the loss, a batch whose inputs do not match ``input_shape``, a
    non-finite loss, data without a full minibatch, or an evaluation that fails or is not finite.
    """
    info = task.info()
    model = guarded(info.name, "building the model", lambda: seeded_model(task, seed))
    data = guarded(info.name, "train_data", lambda: task.train_data(0, 1, seed))
    try:
        batch = next(iter(task.loader(data, seed)))
    except StopIteration:
        raise TaskError(f"task {info.name}: its training data holds no full minibatch of {info.batch_size}") \
            from None
    inputs = batch[0] if isinstance(batch, tuple | list) else batch
    if isinstance(inputs, torch.Tensor) and tuple(inputs.shape[1:]) != info.input_shape:
        raise TaskError(f"task {info.name}: a batch's inputs have shape {tuple(inputs.shape[1:])}; "
                        f"input_shape says {info.input_shape}")
    trainer = Trainer(task, model, data, lr=0.01, seed=seed)
    guarded(info.name, "one training step", lambda: trainer.step(0))
    test = guarded(info.name, "test_data", lambda: task.test_data(seed))
    few = Subset(test, range(min(len(test), int(info.batch_size))))  # type: ignore[arg-type]
    metrics = guarded(info.name, "evaluate", lambda: task.evaluate(model, few))
    bad = {k: v for k, v in metrics.items() if not math.isfinite(float(v))}
    if bad:
        raise TaskError(f"task {info.name}: evaluate returned non-finite {bad}")
    return fingerprint(task, model)


def guarded(name: str, what: str, call: Callable[[], _T]) -> _T:
    """``call()``, a piece of task ``name``'s own code; a failure other than a :class:`TaskError`
    becomes one naming ``what`` (a user's task may fail in any way: one line, not a traceback)."""
    try:
        return call()
    except TaskError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TaskError(f"task {name}: {what} failed: {type(exc).__name__}: {first[:300]}") from None
