"""Built-in tasks benchmark: characterised workloads against the catalog, and transfer accuracy.

For each built-in task at its default size: characterise it (one counted training step on
meta tensors, ``powerfleet.tasks.characterize``), compare the counts with its catalog row,
simulate its MAXN minibatch on a noise-free AGX Orin, and measure how well the reference
predictor transfers to it: fit the reference on the simulator's ``resnet18-imagenet``
profile of the ``powertrain`` grid (4,368 modes, with noise, as ``bench/predictor.py``),
profile 50 space-filling modes of the characterised workload on a simulated AGX Orin (unit
1, with noise), transfer, and report time and power MAPE over the whole grid against the
grid's measured (noisy) profile and against the noise-free truth. Writes
``bench/results/tasks.md`` and ``bench/results/tasks_raw.csv``.

    .venv/bin/python bench/tasks.py              # 3 transfer seeds per task (~5 min on 2 cores)
    .venv/bin/python bench/tasks.py --seeds 1    # quicker
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from powerfleet.protocol.tasks import load_task  # noqa: E402
from powerfleet.tasks.characterize import characterize  # noqa: E402
from powertrain.boards import get_space  # noqa: E402
from powertrain.devices import SimulatedJetson  # noqa: E402
from powertrain.predictor import PowerTrainPredictor  # noqa: E402
from powertrain.predictor.baselines import mape  # noqa: E402
from powertrain.profiler import ProfileSettings, profile  # noqa: E402
from powertrain.sampling import sample_modes  # noqa: E402
from powertrain.workloads import Workload, get_workload  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEVICE, REF_WORKLOAD, GRID = "orin-agx", "resnet18-imagenet", "powertrain"
TASKS = [
    "powerfleet.tasks.vision:ResNet18",
    "powerfleet.tasks.vision:MobileNetV3Large",
    "powerfleet.tasks.detection:YoloDetector",
    "powerfleet.tasks.text:BertBase",
    "powerfleet.tasks.text:TiedLSTM",
    "powerfleet.tasks.vision:ViTS16",
    "powerfleet.tasks.speech:KeywordSpotting",
]


def maxn_ms_w(workload: Workload) -> tuple[float, float]:
    """Noise-free MAXN minibatch time and power on the reference board type (unit 0)."""
    dev = SimulatedJetson(DEVICE)
    mode = dev.space.preset("MAXN").mode
    row = dev.true_performance(workload, pd.DataFrame([mode]), tpc_fraction=dev.preset_tpc_fraction("MAXN")).iloc[0]
    return float(row.time_ms), float(row.power_w)


def _joined(values: pd.Series) -> str:
    return "/".join(sorted(set(values)))


def md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3, help="transfer seeds (sampled modes) per task")
    parser.add_argument("--out", type=Path, default=RESULTS / "tasks.md")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    grid = get_space(DEVICE).modes(GRID)
    knobs = list(get_space(DEVICE).knob_names)

    print("reference profile and fit ...", flush=True)
    ref_run = profile(SimulatedJetson(DEVICE, unit=0, seed=0), REF_WORKLOAD, grid)
    ref = PowerTrainPredictor().fit(ref_run.frame, device_type=DEVICE, workload=REF_WORKLOAD)

    counts, accuracy = [], []
    for reference in TASKS:
        task = load_task(reference)
        t0 = time.perf_counter()
        char = characterize(task, reference=reference, cache=False, real_step=False)
        char_s = time.perf_counter() - t0
        w, row = char.workload, get_workload(task.catalog_workload)  # type: ignore[attr-defined]
        t_ms, p_w = maxn_ms_w(w)
        t_cat, p_cat = maxn_ms_w(row)
        counts.append({
            "task": task.name, "dense GFLOP": w.dense_gflop, "catalog dense GFLOP": row.dense_gflop,
            "dense GB": w.dense_gb, "catalog dense GB": row.dense_gb,
            "elem GFLOP": w.elem_gflop, "catalog elem GFLOP": row.elem_gflop,
            "elem GB": w.elem_gb, "catalog elem GB": row.elem_gb,
            "total GFLOP vs catalog %": (w.total_gflop / row.total_gflop - 1) * 100,
            "total GB vs catalog %": (w.total_gb / row.total_gb - 1) * 100,
            "dense eff": w.dense_efficiency, "catalog eff": row.dense_efficiency,
            "launches": w.kernels, "catalog launches": row.kernels,
            "loader Mcycles": w.loader_mcycles, "catalog loader": row.loader_mcycles,
            "framework Mcycles": w.framework_mcycles, "catalog framework": row.framework_mcycles,
            "MAXN ms": t_ms, "catalog MAXN ms": t_cat, "MAXN W": p_w, "catalog MAXN W": p_cat,
            "characterise s": char_s,
        })
        print(f"  {task.name}: {w.total_gflop:.1f} GFLOP, {w.total_gb:.2f} GB, {w.kernels} launches, "
              f"MAXN {t_ms:.1f} ms ({char_s:.1f} s)", flush=True)

        target = SimulatedJetson(DEVICE, unit=1, seed=500)
        measured = profile(target, w, grid).frame  # the grid as a board would measure it
        truth = SimulatedJetson(DEVICE, unit=1).true_performance(w, grid)
        for seed in range(args.seeds):
            picked = sample_modes(grid, 50, strategy="spacefill", seed=seed)
            samples = profile(SimulatedJetson(DEVICE, unit=1, seed=1000 + seed), w, picked,
                              ProfileSettings()).frame
            model = ref.transfer(samples, seed=seed, device_type=DEVICE, workload=w.name)
            pred = model.predict(grid.loc[:, knobs])
            info = model.describe()["targets"]
            accuracy.append({
                "task": task.name, "seed": seed,
                "time MAPE vs measured %": mape(pred.time_ms, measured.time_ms),
                "power MAPE vs measured %": mape(pred.power_w, measured.power_w),
                "time MAPE vs truth %": mape(pred.time_ms, truth.time_ms),
                "power MAPE vs truth %": mape(pred.power_w, truth.power_w),
                "time method": info["time"]["method"], "power method": info["power"]["method"],
            })

    counts_df, acc_df = pd.DataFrame(counts), pd.DataFrame(accuracy)
    raw = acc_df.merge(counts_df, on="task")
    raw.to_csv(RESULTS / "tasks_raw.csv", index=False)
    mean_acc = acc_df.groupby("task", sort=False)[[c for c in acc_df.columns if "MAPE" in c]].mean().reset_index()
    methods = (acc_df.groupby("task", sort=False)[["time method", "power method"]]
               .agg(_joined).reset_index())
    table = counts_df[["task", "dense GFLOP", "dense GB", "elem GFLOP", "elem GB", "launches"]].copy()
    table["catalog GFLOP (dense/elem)"] = [f"{r.dense_gflop:g} / {r.elem_gflop:g}" for r in
                                           (get_workload(t) for t in counts_df.task)]
    table["catalog GB (dense/elem)"] = [f"{r.dense_gb:g} / {r.elem_gb:g}" for r in
                                        (get_workload(t) for t in counts_df.task)]
    table["catalog launches"] = counts_df["catalog launches"]
    table["MAXN ms (orin-agx)"] = counts_df["MAXN ms"]
    table = table.merge(mean_acc, on="task")
    report = [
        "# Built-in tasks benchmark", "",
        f"Generated by `bench/tasks.py --seeds {args.seeds}` on {time.strftime('%Y-%m-%d')} in "
        f"{(time.perf_counter() - started) / 60:.1f} min. Every built-in task at its default size, "
        "characterised from one counted training step (meta tensors); simulated AGX Orin. Transfer: "
        "the reference predictor (fitted on the noisy `resnet18-imagenet` profile of the "
        f"{len(grid):,}-mode `powertrain` grid) transferred with 50 space-filling modes of the task's "
        "characterised workload profiled on another unit with noise; MAPE over the whole grid "
        f"against its measured (noisy) profile and against the noise-free truth, mean of {args.seeds} "
        "seeds.", "",
        "## Counted per minibatch, simulated MAXN time, transfer accuracy (k = 50)", "",
        md_table(table), "",
        "## Against the catalog row", "",
        md_table(counts_df[["task", "total GFLOP vs catalog %", "total GB vs catalog %", "dense eff", "catalog eff",
                            "loader Mcycles", "catalog loader", "framework Mcycles", "catalog framework",
                            "MAXN ms", "catalog MAXN ms", "MAXN W", "catalog MAXN W", "characterise s"]]), "",
        "## Transfer methods chosen by cross-validation", "", md_table(methods), "",
        f"Mean over tasks: time MAPE {mean_acc['time MAPE vs measured %'].mean():.2f} % vs measured, "
        f"{mean_acc['time MAPE vs truth %'].mean():.2f} % vs truth; power MAPE "
        f"{mean_acc['power MAPE vs measured %'].mean():.2f} % vs measured, "
        f"{mean_acc['power MAPE vs truth %'].mean():.2f} % vs truth.", "",
    ]
    args.out.write_text("\n".join(report) + "\n")
    print(f"wrote {args.out} in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
