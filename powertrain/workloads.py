"""Training workloads, described by what a board must do per minibatch of 16.

Each workload is characterised by measurable quantities (FLOPs and DRAM bytes of its
compute-bound and memory-bound kernel classes, kernel launches per step, data-loader and
framework CPU work), so the simulator can derive its time and power on any mode of any board
from first principles. The derivation of every number is in ``docs/simulator.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from powertrain.errors import UnknownNameError


@dataclass(frozen=True)
class Workload:
    """Per-minibatch work of one training job (minibatch size ``batch_size``)."""

    name: str
    model: str
    dataset: str
    batch_size: int
    dense_gflop: float  # FLOPs in compute-bound kernels (conv, GEMM, attention matmuls)
    dense_gb: float  # DRAM bytes moved by those kernels
    dense_efficiency: float  # achieved fraction of FP32 peak for those kernels
    elem_gflop: float  # FLOPs in memory-bound kernels (norms, activations, optimizer)
    elem_gb: float  # DRAM bytes moved by memory-bound kernels
    kernels: int  # CUDA kernel launches per training step
    loader_mcycles: float  # data-loader CPU work per minibatch (Mcycles on a Cortex-A78AE)
    loader_workers: int  # DataLoader worker processes (0 = loading in the main thread)
    framework_mcycles: float  # serial host work per step besides launches (Mcycles)
    description: str = ""

    @property
    def total_gflop(self) -> float:
        """All FLOPs of one training step."""
        return self.dense_gflop + self.elem_gflop

    @property
    def total_gb(self) -> float:
        """All DRAM traffic of one training step."""
        return self.dense_gb + self.elem_gb


_CATALOG: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            "resnet18-imagenet", "ResNet-18", "ImageNet val (224 px)", 16,
            dense_gflop=170.0, dense_gb=2.0, dense_efficiency=0.55,
            elem_gflop=5.0, elem_gb=3.5, kernels=650,
            loader_mcycles=380.0, loader_workers=4, framework_mcycles=6.0,
            description="PowerTrain reference workload; GPU compute-bound at high clocks",
        ),
        Workload(
            "mobilenetv3-gld23k", "MobileNetV3-Large", "GLD-23k", 16,
            dense_gflop=19.0, dense_gb=1.2, dense_efficiency=0.07,
            elem_gflop=2.0, elem_gb=5.0, kernels=2000,
            loader_mcycles=900.0, loader_workers=4, framework_mcycles=8.0,
            description="depthwise convs use the GPU poorly; loader- and launch-heavy",
        ),
        Workload(
            "yolov8n-coco", "YOLOv8n (imgsz 320)", "COCO minitrain 25k", 16,
            dense_gflop=105.0, dense_gb=2.5, dense_efficiency=0.25,
            elem_gflop=12.0, elem_gb=8.0, kernels=2600,
            loader_mcycles=650.0, loader_workers=0, framework_mcycles=25.0,
            description="mosaic augmentation in the main thread (workers 0): CPU and GPU in series",
        ),
        Workload(
            "bert-base-squad", "BERT-base (seq 128)", "SQuAD, pre-tokenised", 16,
            dense_gflop=1350.0, dense_gb=6.0, dense_efficiency=0.60,
            elem_gflop=15.0, elem_gb=6.0, kernels=1500,
            loader_mcycles=20.0, loader_workers=4, framework_mcycles=15.0,
            description="GEMM-bound; AdamW state traffic; negligible loading",
        ),
        Workload(
            "lstm-wikitext", "2-layer LSTM (256, tied)", "WikiText (seq 8)", 16,
            dense_gflop=6.5, dense_gb=0.12, dense_efficiency=0.40,
            elem_gflop=0.3, elem_gb=0.25, kernels=150,
            loader_mcycles=4.0, loader_workers=4, framework_mcycles=25.0,
            description="small latency-bound kernels and heavy host overhead; CPU clock matters most",
        ),
        Workload(
            "vit-s16-imagenet", "ViT-S/16", "ImageNet val (224 px)", 16,
            dense_gflop=440.0, dense_gb=3.0, dense_efficiency=0.60,
            elem_gflop=12.0, elem_gb=8.0, kernels=1100,
            loader_mcycles=380.0, loader_workers=4, framework_mcycles=8.0,
            description="GEMM-heavy with large softmax/LayerNorm traffic",
        ),
        Workload(
            "kws-dscnn-speechcommands", "DS-CNN keyword spotting", "Speech Commands v2", 16,
            dense_gflop=1.2, dense_gb=0.08, dense_efficiency=0.10,
            elem_gflop=0.2, elem_gb=0.15, kernels=220,
            loader_mcycles=250.0, loader_workers=4, framework_mcycles=5.0,
            description="MFCC extraction on the CPU dominates: a CPU-bound speech workload",
        ),
    ]
}

#: The PowerTrain reference workload.
REFERENCE_WORKLOAD = "resnet18-imagenet"


def workload_names() -> list[str]:
    """Names of every workload in the catalog."""
    return list(_CATALOG)


def get_workload(name: str) -> Workload:
    """The catalog entry ``name``; unknown names list the valid ones."""
    if name not in _CATALOG:
        raise UnknownNameError(
            f"workload {name!r} is not known; valid workloads: {', '.join(_CATALOG)}"
        )
    return _CATALOG[name]


def resolve_workload(workload: Workload | str) -> Workload:
    """A workload object as given (e.g. one characterised from a task), or the catalog entry
    of a name."""
    return workload if isinstance(workload, Workload) else get_workload(workload)
