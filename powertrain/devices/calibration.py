"""Calibration anchors: published measurements the simulated boards must reproduce.

Each :class:`Anchor` names a published point (value, source, confidence), the tolerance the
simulator is held to, and how the simulated counterpart is computed: the noise-free steady
state (thermal fixed point included) of the nominal, smooth board - what the constants set -
and, for comparison, of unit 0 with its roughness (a published point is one real board, with
its own roughness).
``tests/test_calibration.py`` fails when an anchor drifts out of tolerance;
``bench/simulator.py`` prints the table into ``bench/results/simulator.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from powertrain.boards import BoardPhysics, get_board, get_space
from powertrain.devices.physics import (
    CLUSTER_CLOCK_SHARE,
    UnitVariation,
    evaluate,
    idle_power_w,
    steady_temperature_c,
)
from powertrain.devices.simulated import NoiseModel, SimulatedJetson
from powertrain.workloads import Workload


@dataclass(frozen=True)
class Anchor:
    """A published point, its tolerance band and how to compute the simulated counterpart."""

    name: str
    published: str  # the published figure as quoted
    low: float  # the simulated value must lie in [low, high]
    high: float
    unit: str
    source: str
    confidence: str
    simulate: Callable[[bool], float]  # rough=False: the nominal smooth board; True: unit 0
    note: str = ""


@dataclass(frozen=True)
class AnchorResult:
    """An anchor with its simulated values."""

    anchor: Anchor
    simulated: float  # the nominal smooth board
    unit0: float  # unit 0, roughness included

    @property
    def ok(self) -> bool:
        """Whether the nominal board's value lies inside the tolerance band."""
        return self.anchor.low <= self.simulated <= self.anchor.high


# ---------------------------------------------------------------------- helpers
def _truth(device: str, workload: str, modes: pd.DataFrame | list[dict[str, float]], rough: bool,
           tpc_fraction: float = 1.0) -> pd.DataFrame:
    dev = SimulatedJetson(device, unit=0, noise=NoiseModel.off(), rough=rough)
    return dev.true_performance(workload, pd.DataFrame(modes), tpc_fraction=tpc_fraction)


def _maxn(device: str) -> dict[str, float]:
    return dict(get_space(device).max_mode())


def fastest_under_cap(device: str, workload: str, cap_w: float, rough: bool, grid: str = "powertrain") -> pd.Series:
    """The fastest mode of ``grid`` whose true power is at most ``cap_w`` (time_ms, power_w)."""
    truth = _truth(device, workload, get_space(device).modes(grid), rough)
    under = truth[truth.power_w <= cap_w].reset_index(drop=True)
    return under.iloc[int(np.argmin(under.time_ms.to_numpy()))]


def gpu_rail_w(board: BoardPhysics, gpu_mhz: float, tpc_fraction: float, temp_c: float) -> float:
    """GPU dynamic + leakage power under a GPU stress test (activity 1): the rail minus idle SoC."""
    vg_rel = float(board.gpu_vf.volts(np.asarray(gpu_mhz))) / board.gpu_vf.v_max
    leak = 2.0 ** ((temp_c - 25.0) / board.leak_doubling_c)
    return float(board.gpu_dyn_w * tpc_fraction * (gpu_mhz / board.max_gpu_mhz) * vg_rel**2
                 + board.gpu_leak_w * tpc_fraction * vg_rel**2.5 * leak)


def cpu_rail_w(board: BoardPhysics, cores: int, cpu_mhz: float, temp_c: float) -> float:
    """CPU power under a CPU stress test (every online core busy): cores and their clusters."""
    vc_rel = float(board.cpu_vf.volts(np.asarray(cpu_mhz))) / board.cpu_vf.v_max
    leak = 2.0 ** ((temp_c - 25.0) / board.leak_doubling_c)
    clusters = float(board.clusters_online(np.asarray([cores], float))[0])
    return float((board.cpu_core_w * cores + board.cpu_cluster_w * clusters * CLUSTER_CLOCK_SHARE)
            * (cpu_mhz / board.max_cpu_mhz) * vc_rel**2
            + (board.cpu_idle_core_w * cores + board.cpu_cluster_w * clusters * (1 - CLUSTER_CLOCK_SHARE))
            * vc_rel**2.5 * leak)


def _gpu_ratio(board: BoardPhysics, gpu_mhz: float, tpcs: int, rough: bool) -> float:
    return _gpu_stress(board, gpu_mhz, tpcs) / _gpu_stress(board, board.max_gpu_mhz, board.gpu_tpcs)


def _cpu_ratio(board: BoardPhysics, cores: int, cpu_mhz: float, rough: bool) -> float:
    return _cpu_stress(board, cores, cpu_mhz) / _cpu_stress(board, sum(board.cpu_clusters), board.max_cpu_mhz)


def _stress_temp_c(board: BoardPhysics, rail_w: float) -> float:
    return float(steady_temperature_c(board, board.base_w + rail_w, 25.0))


def _gpu_stress(board: BoardPhysics, gpu_mhz: float, tpcs: int) -> float:
    """GPU rail at a clock and TPC count, at the temperature that rail heats the board to."""
    temp = 25.0
    for _ in range(5):
        rail = gpu_rail_w(board, gpu_mhz, tpcs / board.gpu_tpcs, temp)
        temp = _stress_temp_c(board, rail)
    return rail


def _cpu_stress(board: BoardPhysics, cores: int, cpu_mhz: float) -> float:
    temp = 25.0
    for _ in range(5):
        rail = cpu_rail_w(board, cores, cpu_mhz, temp)
        temp = _stress_temp_c(board, rail)
    return rail


# ResNet-50 inference, minibatch 16, synthetic input (dream-lab/pagoda's roofline batch-size
# experiment): a GPU-saturating job that pins the top of the board's power range.
RESNET50_INFERENCE = Workload(
    "resnet50-inference", "ResNet-50 (inference)", "synthetic", 16,
    dense_gflop=131.0, dense_gb=1.5, dense_efficiency=0.60, elem_gflop=2.0, elem_gb=1.5, kernels=180,
    loader_mcycles=5.0, loader_workers=0, framework_mcycles=3.0,
    description="4.1 GMAC/img x 2 x 16, forward only; input tensors made on the GPU",
)


def _inference_power_w(device: str, workload: Workload, rough: bool) -> float:
    board = get_board(device).physics
    m = _maxn(device)
    args = [np.array([m[k]], float) for k in ("cpu_cores", "cpu_mhz", "gpu_mhz", "mem_mhz")]
    unit = UnitVariation.for_unit(device, 0) if rough else UnitVariation()
    ev = evaluate(board, workload, *args, unit=unit)
    for _ in range(5):
        temp = steady_temperature_c(board, ev.power_w, 25.0, unit=unit)
        ev = evaluate(board, workload, *args, temp_c=temp, unit=unit)
    return float(ev.power_w[0])


_INFERENCE_BAND = ("an inference figure bounds training only loosely (training adds the backward pass and "
                   "the optimizer, so it usually draws more): band 0.8-1.3 x the inference figure")


def _at(device: str, workload: str, mode: dict[str, float], column: str, rough: bool) -> float:
    return float(_truth(device, workload, [mode], rough)[column].iloc[0])


# ---------------------------------------------------------------------- the anchors
def anchors() -> list[Anchor]:
    """Every calibration anchor (evaluated lazily by :func:`evaluate_anchors`)."""
    orin = get_board("orin-agx").physics
    maxn = _maxn("orin-agx")
    low_gpu = {**maxn, "gpu_mhz": get_space("orin-agx").knob("gpu_mhz").low}
    forum = "NVIDIA developer forum t/323456 (rail maxima under stress, p3701-0000)"
    # Preset clocks as the nvpmodel conf writes them (408/612/816 MHz; JetPack 6 table values).
    gpu_presets = {"MODE_50W": (816.0, 8, 18.4), "MODE_30W": (612.0, 4, 7.6), "MODE_15W": (408.0, 3, 5.2)}
    cpu_presets = {"MODE_50W": (12, 1497.6, 6.0), "MODE_30W": (8, 1728.0, 5.6), "MODE_15W": (4, 1113.6, 1.6)}
    out = [
        Anchor("AGX Orin idle board power (12 cores at 729.6 MHz, EMC 204 MHz, GPU gated)", "7.0 W",
               6.3, 7.7, "W", "tegrastats rail sum, AGX Orin JP5 (jetson-hw §3.2)", "high",
               lambda rough: idle_power_w(orin, 12, 729.6, 204.0, None)),
        Anchor("AGX Xavier idle board power (8 cores at 2265.6 MHz, EMC 2133 MHz, GPU idle at 1377 MHz)",
               "6.9 W", 6.2, 7.6, "W", "tegrastats rail sum, AGX Xavier JP4 (jetson-hw §3.2)", "high",
               lambda rough: idle_power_w(get_board("xavier-agx").physics, 8, 2265.6, 2133.0, 1377.0,
                                    temp_c=float(steady_temperature_c(get_board("xavier-agx").physics, 6.9, 25.0)))),
        Anchor("Orin Nano idle VDD_IN (6 cores at 729.6 MHz, EMC 665.6 MHz)", "3.7-4.8 W", 3.7, 4.8, "W",
               "tegrastats VDD_IN, Orin Nano (jetson-hw §3.2)", "high",
               lambda rough: idle_power_w(get_board("orin-nano").physics, 6, 729.6, 665.6, None)),
        Anchor("AGX Orin GPU rail under GPU stress at MAXN, minus idle SoC (dynamic + leakage)",
               "40.4 W - 2.39 W = 38.0 W", 36.1, 39.9, "W", forum, "medium",
               lambda rough: _gpu_stress(orin, 1300.5, 8),
               "the stress runs at activity 1; leakage at the temperature that power heats the board to"),
    ]
    top = 40.4 - 2.39
    for name, (mhz, tpcs, rail) in gpu_presets.items():
        ratio = (rail - 2.39) / top
        out.append(Anchor(
            f"AGX Orin GPU rail of {name} / MAXN ({mhz:g} MHz, {tpcs} TPCs)", f"{ratio:.3f}",
            ratio * 0.85, ratio * 1.15, "ratio", forum, "medium",
            partial(_gpu_ratio, orin, mhz, tpcs),
            "rails minus the 2.39 W idle SoC; sets the low end of the GPU V/f curve"))
    for name, (cores, mhz, rail) in cpu_presets.items():
        ratio = rail / 15.2
        out.append(Anchor(
            f"AGX Orin CPU rail of {name} / MAXN ({cores} cores at {mhz:g} MHz)", f"{ratio:.3f}",
            ratio * 0.8, ratio * 1.2, "ratio", forum, "medium",
            partial(_cpu_ratio, orin, cores, mhz),
            "the rail also carries the CV engines; +-20 %"))
    out += [
        Anchor("AGX Orin CPU rail under CPU stress at MAXN", "15.2 W", 13.7, 16.7, "W", forum, "medium",
               lambda rough: _cpu_stress(orin, 12, 2201.6)),
        Anchor("ResNet-50 inference, minibatch 16, MAXN: board power", "53.5 W", 48.0, 59.0, "W",
               "dream-lab/pagoda roofline_batch_size_expt notebook", "medium (inference)",
               lambda rough: _inference_power_w("orin-agx", RESNET50_INFERENCE, rough),
               "a GPU-saturating job: the top of the power range"),
        Anchor("MobileNetV3 training: fastest mode at or under 30 W (time)", "129 ms (186 s/epoch, 29.9 W)",
               110.0, 148.0, "ms", "PowerTrain summary (florist-notes/aicore_n notes/int6.MD)", "medium",
               lambda rough: float(fastest_under_cap("orin-agx", "mobilenetv3-gld23k", 30.0, rough).time_ms),
               "over the 4,368-mode PowerTrain grid; +-15 %"),
        Anchor("MobileNetV3 training: fastest mode at or under 33.5 W (time)", "116 ms at 33.5 W",
               99.0, 133.0, "ms", "PowerTrain summary (florist-notes/aicore_n notes/int6.MD)", "medium",
               lambda rough: float(fastest_under_cap("orin-agx", "mobilenetv3-gld23k", 33.5, rough).time_ms),
               "the NN's pick in the paper's 30 W case: a measured mode at 33.5 W; +-15 %"),
        Anchor("MobileNetV3 training: highest board power over the grid", ">= 33.5 W", 33.5, 45.0, "W",
               "PowerTrain summary (a measured mode reaches 33.5 W)", "medium",
               lambda rough: float(_truth("orin-agx", "mobilenetv3-gld23k",
                                          get_space("orin-agx").modes("powertrain"), rough).power_w.max())),
        Anchor("YOLOv8n training minibatch at MAXN", "~0.56 s incl. validation (200 epochs ~ 49 h)",
               0.40, 0.56, "s", "PowerTrain summary (int6.MD)", "low",
               lambda rough: _at("orin-agx", "yolov8n-coco", maxn, "time_ms", rough) / 1000.0,
               "49 h / 200 epochs / 1,563 minibatches = 0.56 s with validation; training alone is below"),
        Anchor("YOLOv8n training at MAXN: board power", "42.5 W (inference at MAXN)", 31.9, 55.3, "W",
               "dream-lab/pagoda notebook", "medium (inference)",
               lambda rough: _at("orin-agx", "yolov8n-coco", maxn, "power_w", rough),
               "training keeps the mosaic loader in the main thread (workers 0 in the harness), so the GPU "
               "waits for it for most of every step, unlike batched inference: band 0.75-1.3 x the "
               "inference figure"),
        Anchor("LSTM training at MAXN: board power", "29.5 W (inference at MAXN)", 23.6, 38.4, "W",
               "dream-lab/pagoda notebook", "medium (inference)",
               lambda rough: _at("orin-agx", "lstm-wikitext", maxn, "power_w", rough),
               "host-bound in both; " + _INFERENCE_BAND),
        Anchor("ResNet-18 training at MAXN: board power", "up to ~50-60 W", 40.0, 60.0, "W",
               "jetson-hw §4.4 (training at MAXN ~50-60 W; module cap 60 W)", "medium",
               lambda rough: _at("orin-agx", "resnet18-imagenet", maxn, "power_w", rough)),
        Anchor("ResNet-18 training minibatch at MAXN", "tens of ms", 50.0, 110.0, "ms",
               "jetson-hw §4.4 (50-80 ms for 87 GFLOP at 20-35 % of peak)", "low",
               lambda rough: _at("orin-agx", "resnet18-imagenet", maxn, "time_ms", rough),
               "the note counts MACs as FLOPs: 1.82 GMAC x 2 x 3 x 16 = 175 GFLOP, at 35-60 % of peak "
               "55-95 ms; band 50-110 ms"),
        Anchor("ResNet-18 at the lowest GPU clock / at MAXN (time)", "about 10x", 7.0, 13.0, "ratio",
               "SIGMETRICS: time ~ 1/f_GPU for large models; 1300.5/114.75 = 11.3", "medium",
               lambda rough: _at("orin-agx", "resnet18-imagenet", low_gpu, "time_ms", rough)
               / _at("orin-agx", "resnet18-imagenet", maxn, "time_ms", rough)),
        Anchor("AGX Xavier ResNet-18 training at MAXN: board power", "30-40 W", 30.0, 42.0, "W",
               "jetson-hw §4.4", "low (unverified)",
               lambda rough: _at("xavier-agx", "resnet18-imagenet", _maxn("xavier-agx"), "power_w", rough)),
        Anchor("Orin Nano ResNet-18 training at its top mode: board power", "~7-15 W", 7.0, 15.0, "W",
               "jetson-hw §4.4", "medium",
               lambda rough: _at("orin-nano", "resnet18-imagenet", _maxn("orin-nano"), "power_w", rough)),
    ]
    return out


def evaluate_anchors() -> list[AnchorResult]:
    """Every anchor with its simulated values (nominal board and unit 0)."""
    return [AnchorResult(a, float(a.simulate(False)), float(a.simulate(True))) for a in anchors()]


# ---------------------------------------------------------------------- roughness statistics
_DIRECTION = {"time_ms": -1.0, "power_w": 1.0}  # expected sign of the change as a knob rises


def wrong_way_steps(frame: pd.DataFrame, knobs: tuple[str, ...], column: str) -> pd.DataFrame:
    """Adjacent steps along each knob (others fixed) that go the wrong way.

    Time should fall and power rise as any knob rises. Per knob: the number of adjacent
    pairs, the share going the wrong way, and the size of wrong-way steps (relative change,
    median / 95th percentile / max).
    """
    rows = []
    sign = _DIRECTION[column]
    for knob in knobs:
        others = [k for k in knobs if k != knob]
        ordered = frame.sort_values([*others, knob])
        values = ordered[column].to_numpy(float)
        same_line = (ordered[others].to_numpy()[1:] == ordered[others].to_numpy()[:-1]).all(axis=1)
        change = values[1:] / values[:-1] - 1.0
        step = change[same_line]
        wrong = step * sign < 0
        sizes = np.abs(step[wrong])
        rows.append({"knob": knob, "pairs": int(step.size), "wrong_way_pct": 100.0 * float(wrong.mean()),
                     "median_pct": 100.0 * float(np.median(sizes)) if sizes.size else 0.0,
                     "p95_pct": 100.0 * float(np.percentile(sizes, 95)) if sizes.size else 0.0,
                     "max_pct": 100.0 * float(sizes.max()) if sizes.size else 0.0})
    return pd.DataFrame(rows)


def roughness_of(device: str, workload: str, unit: int = 0, grid: str = "full") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Noise-free truth of ``unit`` and of the smooth nominal model over ``grid``."""
    modes = get_space(device).modes(grid)
    rough = SimulatedJetson(device, unit=unit, noise=NoiseModel.off()).true_performance(workload, modes)
    smooth = SimulatedJetson(device, unit=unit, noise=NoiseModel.off(), rough=False).true_performance(
        workload, modes)
    return rough, smooth
