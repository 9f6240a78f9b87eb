"""Characterisation: a task's simulated cost (:class:`powertrain.workloads.Workload`) derived
from one real training step, with torch's own instruments.

One step of the task's own ``train_step`` (forward, loss, backward, optimizer step) runs on
``meta`` tensors - the model built under ``torch.device("meta")``, a real minibatch from the
task's loader moved there - so every aten kernel is dispatched with its true shapes but no
arithmetic is done (a BERT-base step counts in well under a second on this CPU; a step meta
tensors cannot run - data-dependent shapes - is counted on real CPU tensors instead). Two
modes watch it:

* :class:`torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of the compute-bound
  kernel classes - convolution, matmul/linear, attention - forward and backward (with one
  correction: torch 2.13 overcounts the weight gradient of grouped convolutions by the group
  count, :func:`conv_backward_flop`);
* :class:`KernelCounter`, a ``TorchDispatchMode``, sees every aten op: it counts kernel
  launches (view and allocation ops launch none; a ``_foreach_`` op launches as CUDA's
  multi-tensor apply does), the bytes each kernel reads and writes, the elementwise FLOPs,
  and a per-kernel efficiency estimate for the compute-bound ones.

The counted step is the second one (the first creates the optimizer state). Around it: the
data loader's CPU work per minibatch is timed here (fetching and collating minibatches in
this process) and converted to Cortex-A78AE cycles; the framework's serial host work is
estimated from the step's ``nn.Module`` calls and parameter tensors (host time is not
measurable on meta tensors: their kernels are Python shape functions, not launches). A real
step on the CPU checks the loss is finite where it is affordable. Every constant is
documented in ``docs/simulator.md`` ("Characterising a task"). Results are cached per task
fingerprint and options.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from powerfleet.protocol.tasks import Task, TaskError, fingerprint, guarded, seeded_model
from powertrain.outputs import OutputError, atomic_output, user_cache_dir
from powertrain.workloads import Workload, get_workload

aten = torch.ops.aten

#: Bump when the counting rules change: cached characterisations of older versions are redone.
VERSION = 1
#: Cortex-A78AE Mcycles per CPU-second of this host [EST]: an x86 server core at ~3 GHz retires
#: about 1.5x the instructions per cycle of an A78AE, so one host second ~ 4.5 G A78AE cycles.
HOST_SECOND_A78_MCYCLES = 4500.0
#: Achievable fraction of FP32 peak per compute-bound kernel type [EST] (cuDNN implicit-GEMM
#: convolutions, cuBLAS GEMMs, fused attention, depthwise convolutions - which are memory-
#: and latency-bound in cuDNN).
TYPE_EFFICIENCY = {"conv": 0.60, "linear": 0.65, "attention": 0.55, "depthwise": 0.30}
#: A kernel of this many FLOPs reaches half its type's efficiency [EST]: ~10 us of work at the
#: AGX Orin's achievable rate, as long as launch ramp-up and the tail wave of a small grid.
HALF_EFFICIENCY_FLOP = 25e6
#: The reference board's ridge point [DERIVED]: AGX Orin FP32 peak x arch efficiency over
#: achievable DRAM bandwidth, 4.53 TFLOP/s / 153.6 GB/s. A kernel of lower arithmetic
#: intensity is memory-bound at that ratio, and its efficiency is scaled down by intensity/ridge.
RIDGE_FLOP_PER_BYTE = 29.5
#: Bounds of the derived dense efficiency.
EFFICIENCY_RANGE = (0.03, 0.70)
#: FLOPs per output element of memory-bound kernels; anything else counts 1 [EST].
ELEM_FLOP_PER_ELEMENT = {
    "native_batch_norm": 8, "native_batch_norm_backward": 10, "cudnn_batch_norm": 8,
    "cudnn_batch_norm_backward": 10, "native_layer_norm": 8, "native_layer_norm_backward": 10,
    "_softmax": 5, "_log_softmax": 5, "_safe_softmax": 5, "_softmax_backward_data": 4,
    "_log_softmax_backward_data": 4, "gelu": 8, "gelu_backward": 10, "silu": 5, "silu_backward": 6,
    "hardswish": 4, "hardswish_backward": 4, "hardsigmoid": 3, "sigmoid": 4, "tanh": 4,
    "_foreach_addcdiv_": 3, "_foreach_addcmul_": 3, "_foreach_lerp_": 3, "_foreach_sqrt": 2,
}
#: Memory-bound kernels that read their inputs more than once [EST]: training-mode batch norm
#: makes a statistics pass and a normalising pass over its input (and its backward a reduction
#: pass and an elementwise pass over input and gradient).
READ_PASSES = {"native_batch_norm": 2, "cudnn_batch_norm": 2, "native_batch_norm_backward": 2,
               "cudnn_batch_norm_backward": 2, "_native_batch_norm_legit": 2,
               "_native_batch_norm_legit_functional": 2}
#: Most tensors one CUDA multi-tensor-apply launch takes, by the number of tensor lists
#: (ATen's MultiTensorApply.cuh ``depth_to_max_tensors``); a launch also covers at most
#: 320 blocks of 65,536 elements.
FOREACH_TENSORS_PER_LAUNCH = {1: 110, 2: 64, 3: 48, 4: 36, 5: 30}
FOREACH_ELEMENTS_PER_LAUNCH = 320 * 65536
#: A real CPU step is run to check the loss when the step counts at most this many GFLOP
#: (a few seconds on two cores); larger steps are checked on meta tensors only.
REAL_STEP_MAX_GFLOP = 20.0
#: Minibatches whose loading is timed (after one untimed).
LOADER_MINIBATCHES = 5
#: Serial host work per step besides launches, Cortex-A78AE Mcycles [EST]: ~0.9 ms fixed
#: (zero_grad, autograd engine start, loss read-back), ~14 us of Python per module call,
#: ~4.5 us per parameter tensor (AccumulateGrad node, optimizer lists).
FRAMEWORK_STEP_MCYCLES = 2.0
FRAMEWORK_MODULE_MCYCLES = 0.03
FRAMEWORK_PARAM_MCYCLES = 0.01

_DENSE_KINDS = {
    aten.convolution: "conv", aten.convolution_backward: "conv", aten._convolution: "conv",
    aten.mm: "linear", aten.addmm: "linear", aten.bmm: "attention", aten.baddbmm: "attention",
    aten._scaled_dot_product_efficient_attention: "attention",
    aten._scaled_dot_product_flash_attention: "attention",
    aten._scaled_dot_product_cudnn_attention: "attention",
    aten._scaled_dot_product_efficient_attention_backward: "attention",
    aten._scaled_dot_product_flash_attention_backward: "attention",
    aten._scaled_dot_product_cudnn_attention_backward: "attention",
}
#: Ops that launch no kernel besides views: allocation, metadata, aliasing.
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "unsafe_split",
              "unsafe_split_with_sizes", "_unsafe_view", "lift_fresh", "set_", "resize_", "is_same_size",
              "_to_copy_meta", "sym_size", "sym_stride", "sym_numel", "_has_compatible_shallow_copy_type"}


def conv_backward_flop(grad_out_shape: list[int], x_shape: list[int], w_shape: list[int], _bias: Any,
                       _stride: Any, _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any,
                       _groups: int, output_mask: list[bool], out_shape: Any = None, **_: Any) -> int:
    """FLOPs of a convolution's backward: each requested gradient (input, weight) costs as much
    as the forward. (torch's own formula counts the weight gradient of a grouped convolution as
    if it were dense - ``groups`` times too many for a depthwise convolution.)"""
    forward: int = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


# ---------------------------------------------------------------- the counting mode
@dataclass
class KernelClass:
    """Totals of one kernel class."""

    flop: float = 0.0
    bytes: float = 0.0
    kernels: int = 0
    #: sum over kernels of flop / efficiency (the time-weight of the dense efficiency)
    flop_over_eff: float = 0.0


def _tensors(tree: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(tree)
    out: dict[int, torch.Tensor] = {}
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            out[id(leaf)] = leaf
    return list(out.values())


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches in ``t``: its elements, counting broadcast (stride-0) ones once."""
    if t.numel() == 0:
        return 0
    span = 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride(), strict=True) if s > 0)
    return int(min(t.numel(), span) * t.element_size())


def _foreach_launches(args: tuple[Any, ...]) -> int:
    lists = [a for a in args if isinstance(a, list | tuple) and a and isinstance(a[0], torch.Tensor)]
    if not lists:
        return 1
    n = len(lists[0])
    per_launch = FOREACH_TENSORS_PER_LAUNCH.get(len(lists), 30)
    elements = sum(t.numel() for t in lists[0])
    return int(max(1, math.ceil(n / per_launch), math.ceil(elements / FOREACH_ELEMENTS_PER_LAUNCH)))


class KernelCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts launches, bytes and FLOPs of every aten kernel of a training step, per class.

    ``device`` is where the model runs: ops whose tensors are all elsewhere (the CPU step
    counters of Adam while the model is on ``meta``) are host work and launch nothing. On meta
    tensors a ``.item()`` returns 1.0, so a task's ``float(loss)`` works while counting.
    """

    def __init__(self, flop_registry: Mapping[Any, Callable[..., int]], device: torch.device) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.flop_registry = flop_registry
        self.device = device
        self.classes: dict[str, KernelClass] = {}
        self.phase_kernels: dict[str, int] = {"forward": 0, "backward": 0, "optimizer": 0}
        self.in_optimizer = False
        self.aten_ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default and args[0].device.type == "meta":
            out: Any = 1.0  # the read-back a real step makes (counted like one)
        else:
            out = func(*args, **kwargs)
        self.aten_ops += 1
        packet = func._overloadpacket
        name = packet.__name__
        if func.is_view or name in _NO_KERNEL or func.namespace != "aten":
            return out
        inputs = _tensors((args, kwargs))
        outputs = _tensors(out)
        if not any(t.device == self.device for t in inputs + outputs):
            return out  # host-side scalar work
        read = READ_PASSES.get(name, 1) * sum(tensor_bytes(t) for t in inputs)
        written = sum(tensor_bytes(t) for t in outputs)
        if not outputs and name.endswith("_") and args and isinstance(args[0], list | tuple):
            written = sum(tensor_bytes(t) for t in args[0] if isinstance(t, torch.Tensor))  # in-place foreach
        launches = _foreach_launches(args) if name.startswith("_foreach_") else 1
        kind = _DENSE_KINDS.get(packet)
        if kind is not None and packet in self.flop_registry:
            flop = float(self.flop_registry[packet](*args, **kwargs, out_val=out))
            if kind == "conv":
                weight = args[2] if packet is aten.convolution_backward else args[1]
                if weight.dim() > 2 and weight.shape[1] == 1 and weight.shape[0] > 1:
                    kind = "depthwise"
            eff = kernel_efficiency(kind, flop, read + written)
            cls = self.classes.setdefault("depthwise conv" if kind == "depthwise" else kind, KernelClass())
            cls.flop_over_eff += flop / eff
        else:
            elements = max([t.numel() for t in outputs + inputs] or [0])
            flop = float(elements * ELEM_FLOP_PER_ELEMENT.get(name, 1))
            cls = self.classes.setdefault("optimizer" if self.in_optimizer else _elem_kind(name), KernelClass())
        cls.flop += flop
        cls.bytes += read + written
        cls.kernels += launches
        phase = "optimizer" if self.in_optimizer else (
            "backward" if torch._C._current_graph_task_id() != -1 else "forward")
        self.phase_kernels[phase] += launches
        return out


def _elem_kind(name: str) -> str:
    if "norm" in name:
        return "normalization"
    if "softmax" in name:
        return "softmax"
    return "elementwise"


def kernel_efficiency(kind: str, flop: float, nbytes: float) -> float:
    """Achievable fraction of FP32 peak of one compute-bound kernel (see the module constants):
    its type's efficiency, scaled by its size and, when memory-bound, by its arithmetic intensity."""
    size = flop / (flop + HALF_EFFICIENCY_FLOP)
    intensity = min(1.0, flop / max(nbytes, 1.0) / RIDGE_FLOP_PER_BYTE)
    return max(TYPE_EFFICIENCY[kind] * size * intensity, 1e-3)


DENSE_CLASSES = ("conv", "depthwise conv", "linear", "attention")


# ---------------------------------------------------------------- the result
@dataclass(frozen=True)
class Characterization:
    """A task's derived workload and what it was derived from."""

    workload: Workload
    fingerprint: str
    reference: str
    classes: dict[str, dict[str, float]]  # per kernel class: gflop, gb, kernels
    phase_kernels: dict[str, int]  # launches in forward, backward, optimizer
    params: int
    loader_ms: float  # CPU time of loading one minibatch here
    module_calls: int  # nn.Module calls of one step (framework work)
    aten_ops: int  # aten ops dispatched in one step, views included
    loss_checked: bool  # a real step ran and its loss was finite
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the cache and ``powerfleet characterize --json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Characterization:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["workload"] = Workload(**fields["workload"])
        return cls(**fields)


# ---------------------------------------------------------------- characterise
def characterize(task: Task, *, reference: str = "", seed: int = 0, real_step: bool | None = None,
                 cache: bool = True, cache_dir: Path | None = None) -> Characterization:
    """Derive ``task``'s :class:`Workload` from one counted training step (module docstring).

    ``real_step``: run one real CPU step to check the loss (None: when the step counts at
    most :data:`REAL_STEP_MAX_GFLOP`). Every failure of the task is one :class:`TaskError`.
    Cached per fingerprint and options under ``cache_dir`` (default: the user cache).
    """
    info = task.info()
    with torch.device("meta"):
        meta_model = guarded(info.name, "building the model", task.build_model)
    digest = fingerprint(task, meta_model)
    key = _cache_key(digest, dict(info.options), real_step)
    path = (cache_dir or default_cache_dir()) / f"{key}.json"
    if cache and path.is_file():
        try:
            cached = Characterization.from_dict(json.loads(path.read_text()))
            if cached.version == VERSION:
                return cached
        except (ValueError, TypeError, KeyError):
            pass  # a stale or damaged entry is recomputed
    data = guarded(info.name, "making its training data", lambda: task.train_data(0, 1, seed))
    loader = _loader(task, data, seed)
    batch = _first_batch(task, data, seed)
    meta_batch = tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, batch)

    counted_on = "meta"
    try:
        counter, fc_total, module_calls = _count_step(task, meta_model, meta_batch, torch.device("meta"))
    except TaskError:  # e.g. data-dependent shapes (boolean masks) that meta tensors cannot give: count for real
        counted_on = "cpu"
        real_model = guarded(info.name, "building the model", lambda: seeded_model(task, seed))
        counter, fc_total, module_calls = _count_step(task, real_model, batch, torch.device("cpu"))
    counted = sum(c.flop for name, c in counter.classes.items() if name in DENSE_CLASSES)
    if abs(counted - fc_total) > 1e-6 * max(fc_total, 1.0):
        raise AssertionError(f"kernel counter saw {counted} dense FLOPs, FlopCounterMode {fc_total}")
    classes = {name: {"gflop": c.flop / 1e9, "gb": c.bytes / 1e9, "kernels": c.kernels}
               for name, c in sorted(counter.classes.items())}
    dense = [counter.classes[n] for n in DENSE_CLASSES if n in counter.classes]
    elem = [c for n, c in counter.classes.items() if n not in DENSE_CLASSES]
    dense_flop = sum(c.flop for c in dense)
    # time-weighted (harmonic) mean: what the class as a whole achieves
    efficiency = dense_flop / sum(c.flop_over_eff for c in dense) if dense_flop else EFFICIENCY_RANGE[0]
    efficiency = min(max(efficiency, EFFICIENCY_RANGE[0]), EFFICIENCY_RANGE[1])
    kernels = sum(c.kernels for c in counter.classes.values())

    loader_s = measure_loader_s(loader)
    param_tensors = sum(1 for _ in meta_model.parameters())

    total_gflop = (dense_flop + sum(c.flop for c in elem)) / 1e9
    checked = False
    if real_step or (real_step is None and total_gflop <= REAL_STEP_MAX_GFLOP):
        _real_step(task, batch, seed)
        checked = True
    workload = Workload(
        name=digest, model=type(meta_model).__name__, dataset=info.description or info.name,
        batch_size=info.batch_size,
        dense_gflop=dense_flop / 1e9, dense_gb=sum(c.bytes for c in dense) / 1e9,
        dense_efficiency=round(efficiency, 4),
        elem_gflop=sum(c.flop for c in elem) / 1e9, elem_gb=sum(c.bytes for c in elem) / 1e9,
        kernels=int(kernels),
        loader_mcycles=loader_s * HOST_SECOND_A78_MCYCLES, loader_workers=int(loader.num_workers),
        framework_mcycles=round(framework_mcycles(module_calls, param_tensors), 3),
        description=f"characterised from one training step of {reference or info.name}",
    )
    result = Characterization(
        workload=workload, fingerprint=digest, reference=reference or info.name, classes=classes,
        phase_kernels=dict(counter.phase_kernels), params=sum(p.numel() for p in meta_model.parameters()),
        loader_ms=loader_s * 1e3, module_calls=module_calls, aten_ops=counter.aten_ops, loss_checked=checked,
        extra={"counted_on": counted_on})
    if cache:  # every process of a node may characterise at once: each writes its own temporary file
        with contextlib.suppress(OSError, OutputError):  # an unwritable cache only costs the recount
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path, what="characterisation cache") as tmp:
                tmp.write_text(json.dumps(result.to_dict(), indent=1))
    return result


def workload_for(task: Task, cost_as: str = "") -> Workload:
    """What a simulated board is charged per minibatch: the catalog row ``cost_as`` when asked
    for explicitly, else the task's own characterised training step."""
    if cost_as:
        return get_workload(cost_as)
    return characterize(task).workload


def workload_key(task: Task, cost_as: str = "") -> str:
    """The store key of the work: ``cost_as`` (its cost is what the boards ran), else the task's
    fingerprint (what runs defines the workload)."""
    return cost_as or fingerprint(task)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/powerfleet/characterize``, else ``~/.cache/powerfleet/characterize``."""
    return user_cache_dir("characterize")


def _cache_key(digest: str, options: Mapping[str, Any], real_step: bool | None) -> str:
    import hashlib

    text = json.dumps({"v": VERSION, "fp": digest, "opts": {k: str(v) for k, v in sorted(options.items())},
                       "real": real_step, "a78": HOST_SECOND_A78_MCYCLES})
    return f"{digest}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _first_batch(task: Task, data: Any, seed: int) -> Any:
    """One minibatch from the task's loader (fetched in this process), its inputs checked."""
    info = task.info()
    loader = _loader(task, data, seed)

    def fetch() -> Any:
        if loader.batch_sampler is None:
            return next(iter(loader))
        return loader.collate_fn([loader.dataset[i] for i in next(iter(loader.batch_sampler))])

    try:
        batch = guarded(info.name, "loading a minibatch", fetch)
    except StopIteration:
        raise TaskError(f"task {info.name}: its training data holds no full minibatch of {info.batch_size}") \
            from None
    inputs = batch[0] if isinstance(batch, tuple | list) else batch
    if isinstance(inputs, torch.Tensor) and tuple(inputs.shape[1:]) != info.input_shape:
        raise TaskError(f"task {info.name}: a batch's inputs have shape {tuple(inputs.shape[1:])}; "
                        f"input_shape says {info.input_shape}")
    return batch


def _loader(task: Task, data: Any, seed: int) -> torch.utils.data.DataLoader[Any]:
    """The task's loader; its workers are never started here, so torch's warning about more
    workers than this host's cores is beside the point."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        loader: torch.utils.data.DataLoader[Any] = guarded(task.info().name, "making its loader",
                                                          lambda: task.loader(data, seed))
    return loader


def _count_step(task: Task, model: torch.nn.Module, batch: Any,
                device: torch.device) -> tuple[KernelCounter, float, int]:
    """Counts of one steady-state training step of ``model`` (already on ``device``): a first,
    uncounted step creates the optimizer state (momentum buffers, Adam moments), as every step
    but the first of a round finds it. Also returns the ``nn.Module`` calls of the counted step."""
    name = task.info().name
    optimizer = guarded(name, "making its optimizer", lambda: task.make_optimizer(model, 0.01))
    prefer_foreach(optimizer)
    with _ScalarOnMeta():  # type: ignore[no-untyped-call]
        guarded(name, "one training step", lambda: task.train_step(model, batch, optimizer))
    flop_counter = FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: conv_backward_flop})
    counter = KernelCounter(flop_counter.flop_registry, device)
    pre = optimizer.register_step_pre_hook(lambda *_: setattr(counter, "in_optimizer", True))
    post = optimizer.register_step_post_hook(lambda *_: setattr(counter, "in_optimizer", False))
    calls = [0]

    def count_call(*_: Any) -> None:
        calls[0] += 1

    hook = torch.nn.modules.module.register_module_forward_pre_hook(count_call)
    try:
        with flop_counter, counter:
            guarded(name, "one training step", lambda: task.train_step(model, batch, optimizer))
    finally:
        pre.remove()
        post.remove()
        hook.remove()
    return counter, float(flop_counter.get_total_flops()), calls[0]


def prefer_foreach(optimizer: torch.optim.Optimizer) -> None:
    """Let an optimizer whose ``foreach`` is unset use its foreach implementation, as it does on
    CUDA (on CPU and meta torch defaults to the per-parameter loop, which launches far more)."""
    for group in optimizer.param_groups:
        if "foreach" in group and group["foreach"] is None and not group.get("fused"):
            group["foreach"] = True


def measure_loader_s(loader: torch.utils.data.DataLoader[Any]) -> float:
    """CPU seconds this process spends fetching and collating one minibatch (the work each loader
    worker does per minibatch), median of :data:`LOADER_MINIBATCHES` after one untimed."""
    sampler = loader.batch_sampler
    if sampler is None:
        return 0.0
    dataset, collate = loader.dataset, loader.collate_fn
    times = []
    for i, indices in enumerate(_take(iter(sampler), LOADER_MINIBATCHES + 1)):
        start = time.process_time()
        collate([dataset[j] for j in indices])
        if i:
            times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2] if times else 0.0


def _take(it: Iterator[Any], n: int) -> Iterator[Any]:
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


class _ScalarOnMeta(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Only lets ``.item()`` of a meta tensor return 1.0 (uncounted steps)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func is aten._local_scalar_dense.default and args[0].device.type == "meta":
            return 1.0
        return func(*args, **(kwargs or {}))


def framework_mcycles(module_calls: int, param_tensors: int) -> float:
    """Serial host work of one step besides kernel launches, in Cortex-A78AE Mcycles [EST]: a
    fixed part (zero_grad, starting the autograd engine, the loss read-back), Python work per
    ``nn.Module`` call (``__call__``, hooks, forward's own code) and per parameter tensor
    (gradient accumulation nodes, optimizer bookkeeping)."""
    return FRAMEWORK_STEP_MCYCLES + FRAMEWORK_MODULE_MCYCLES * module_calls + FRAMEWORK_PARAM_MCYCLES * param_tensors


def _real_step(task: Task, batch: Any, seed: int) -> float:
    """One real CPU step of the task's own ``train_step``; a non-finite loss is a :class:`TaskError`."""
    name = task.info().name
    model = guarded(name, "building the model", lambda: seeded_model(task, seed))
    optimizer = guarded(name, "making its optimizer", lambda: task.make_optimizer(model, 0.01))
    loss = float(guarded(name, "one training step", lambda: task.train_step(model, batch, optimizer)))
    if not math.isfinite(loss):
        raise TaskError(f"task {name}: training loss is {loss}; check the learning rate and data")
    return loss
