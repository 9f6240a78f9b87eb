"""The analytic engine: a fleet without Flower and without training, for scheduling studies.

It runs the same coordinator, selection policy and mode-choice code as the Flower engine,
but a node's round is evaluated from the simulator's *steady-state* physics with the window
noise of a simulated board (no per-minibatch warm-up, thermal dynamics or throttling), and
vectorised per device type, so rounds of thousands of clients take well under a second. A
node that bootstraps profiles on its own simulated board, with the same code as a Flower
node (``powertrain.profiler.profile_within``).
Nodes that share a device type, policy, cap, deadline and work make the same predicted
choice, so that choice is made once per group; the ``oracle`` uses the nominal unit's truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from client import policies
from client.runtime import JOIN_WARMUP_MINIBATCHES, build_result, predictor_table, profile_share
from coordinator.fleet import FleetSpec
from coordinator.rounds import Replies
from powerfleet.protocol.enums import ChoiceKind, Policy
from powerfleet.protocol.messages import NodeInfo, NodeQuery, TrainTask
from powerfleet.protocol.tasks import cached_task
from powerfleet.tasks.characterize import workload_for
from powertrain.boards import BoardPhysics, get_board
from powertrain.devices.physics import UnitVariation, evaluate, steady_temperature_c
from powertrain.devices.simulated import NoiseModel, SimulatedJetson
from powertrain.optimize import ModeTable
from powertrain.workloads import REFERENCE_WORKLOAD, Workload

#: The window noise of a simulated board: the analytic nodes draw the same per-window noise.
NOISE = NoiseModel()
MAX_OBSERVATIONS_PER_TYPE = 64  # round samples handed to the store per device type and round
_EMPTY = pd.DataFrame()


@dataclass
class _Node:
    node_id: int
    device_type: str
    unit: int
    predictor_id: str = ""


class AnalyticBackend:
    """Vectorised steady-state nodes (see the module docstring)."""

    real_training = False

    def __init__(self, fleet: FleetSpec, seed: int = 0) -> None:
        self.refusals: dict[int, str] = {}  # modelled nodes never refuse a query
        self.fleet = fleet
        self.rng = np.random.default_rng([seed, 777])
        self.nodes = {n.index + 1: _Node(n.index + 1, n.device_type, n.unit) for n in fleet.nodes}
        self.templates = {t: SimulatedJetson(t) for t in fleet.device_types}
        self.variation: dict[str, tuple[np.ndarray, UnitVariation]] = {}
        for t in fleet.device_types:
            ids = np.array([i for i, n in self.nodes.items() if n.device_type == t])
            units = [UnitVariation.for_unit(t, self.nodes[int(i)].unit) for i in ids]
            self.variation[t] = (ids, UnitVariation.stacked(units))
        self.tables: dict[tuple[str, str], ModeTable] = {}
        self.boards: dict[int, SimulatedJetson] = {}
        self._verified: dict[tuple[bytes, str], str] = {}

    def node_ids(self) -> list[int]:
        """Every node of the fleet is connected."""
        return list(self.nodes)

    def query(self, query: NodeQuery, node_ids: Sequence[int]) -> list[NodeInfo]:
        """Every node is available; idle power from the physics of its type."""
        idle = {t: d.idle_power_w() for t, d in self.templates.items()}
        return [NodeInfo(node_id=n.node_id, device_type=n.device_type, unit=n.unit,
                         device_spec=f"sim:{n.device_type}?unit={n.unit}", partition_id=n.node_id - 1,
                         predictor_id=n.predictor_id, available=True, idle_power_w=idle[n.device_type])
                for n in (self.nodes[i] for i in node_ids)]

    def _table(self, task: TrainTask, node: _Node) -> ModeTable | None:
        if task.predictor_bytes:
            key = (task.predictor_bytes, node.device_type)  # the same bytes object for a whole round
            if key not in self._verified:
                pid, table = predictor_table(task.predictor_bytes, self.templates[node.device_type])
                self.tables[(pid, node.device_type)] = table
                self._verified = {key: pid}
            node.predictor_id = self._verified[key]
        return self.tables.get((node.predictor_id, node.device_type))

    @staticmethod
    def _workload(task: TrainTask) -> Workload:
        """What the boards are charged for one minibatch of the task."""
        return workload_for(cached_task(task.task), task.cost_as)

    def _board(self, node: _Node, seed: int) -> SimulatedJetson:
        """The node's own simulated board for in-round profiling (kept across rounds; warmed once,
        as a node warms its framework when it joins)."""
        if node.node_id not in self.boards:
            board = SimulatedJetson(node.device_type, unit=node.unit, seed=seed)
            board.run(REFERENCE_WORKLOAD, JOIN_WARMUP_MINIBATCHES)
            self.boards[node.node_id] = board
        return self.boards[node.node_id]

    def train(self, tasks: Mapping[int, TrainTask], weights: Mapping[str, np.ndarray], timeout_s: float) -> Replies:
        """Plan per group, evaluate every node's mode at once per device type."""
        out: Replies = {}
        plans: dict[int, policies.Plan] = {}
        group_plan: dict[tuple[object, ...], policies.Plan] = {}
        for node_id, task in tasks.items():
            node = self.nodes[node_id]
            table = self._table(task, node)
            key = (node.device_type, task.policy, task.work_minibatches, task.power_cap_w, task.deadline_s,
                   task.objective, task.margin_z, task.margin_log, node.predictor_id)
            if task.work_minibatches == 0:  # bootstrap: profiling only
                plans[node_id] = policies.Plan(self.templates[node.device_type].space.max_mode(), 0, 0.0, 0.0,
                                               ChoiceKind.PROFILING, "profiling only")
                continue
            if task.policy == Policy.RANDOM or key not in group_plan:
                rng = np.random.default_rng([task.seed, task.round, node_id])
                group_plan[key] = policies.plan(
                    task.policy, self.templates[node.device_type], work=task.work_minibatches,
                    deadline_s=task.deadline_s, power_cap_w=task.power_cap_w, objective=task.objective,
                    margin_z=task.margin_z, table=table, rng=rng, workload=self._workload(task),
                    margin_log=task.margin_log)
            plans[node_id] = group_plan[key]
        for dtype in {self.nodes[n].device_type for n in plans}:
            self._evaluate_type(dtype, {n: p for n, p in plans.items() if self.nodes[n].device_type == dtype},
                                tasks, out)
        return out

    def _evaluate_type(self, dtype: str, plans: Mapping[int, policies.Plan], tasks: Mapping[int, TrainTask],
                       out: Replies) -> None:
        ids, variation = self.variation[dtype]
        index = {int(n): i for i, n in enumerate(ids)}
        node_ids = list(plans)
        rows = np.array([index[n] for n in node_ids])
        template = self.templates[dtype]
        knobs = template.space.knob_names
        board = get_board(dtype).physics
        lead = tasks[node_ids[0]]
        workload = workload_for(cached_task(lead.task), lead.cost_as)  # what the boards are charged
        modes = np.array([[plans[n].mode[k] for k in knobs] for n in node_ids])
        tpc = np.array([self._tpc(template, plans[n]) for n in node_ids])
        unit = variation.take(rows)  # carries each node's unit id: its roughness
        t_mb, p_true = _steady(board, workload, modes, tpc, unit)
        n = len(node_ids)
        maxn_mode = template.space.max_mode()
        maxn_t, maxn_p = _steady(board, workload, np.tile([maxn_mode[k] for k in knobs], (n, 1)), np.ones(n), unit)
        t_noisy = t_mb * np.exp(self.rng.normal(0.0, NOISE.time_window_sigma, n))
        observed: list[dict[str, float | str]] = []
        for j, node_id in enumerate(node_ids):
            task, plan = tasks[node_id], plans[node_id]
            time_s, energy, profiled, samples = 0.05, 0.0, 0, _EMPTY
            true_power = float(p_true[j])
            if task.profile_modes:  # the node's own board profiles, exactly as a Flower node does
                dev = self._board(self.nodes[node_id], task.seed)
                run = profile_share(dev, workload, task)
                time_s, energy, profiled = run.device_seconds, run.energy_j, run.total_minibatches
                samples = run.frame.drop(columns="windows").assign(workload=task.workload, source="profile",
                                                                    device_unit=self.nodes[node_id].unit)
                tried = run.tried if run.tried is not None else run.frame
                if len(tried):  # every mode profiling ran, abandoned ones included
                    _, pp = _steady(board, workload, tried.loc[:, list(knobs)].to_numpy(float),
                                    np.ones(len(tried)), unit.repeat(j, len(tried)))
                    true_power = float(pp.max())
                else:
                    true_power = energy / max(time_s, 1e-9)
            work = plan.work if task.work_minibatches > 0 else 0
            window_s = work * float(t_noisy[j])
            p_seen = float(p_true[j]) * (1.0 + float(self.rng.normal(0.0, NOISE.power_window_sigma(window_s))))
            time_s += window_s
            energy += window_s * p_seen
            if work and plan.preset is None and len(observed) < MAX_OBSERVATIONS_PER_TYPE:
                observed.append({**plan.mode, "time_ms": float(t_noisy[j]) * 1000.0, "power_w": p_seen,
                                 "device": dtype, "workload": lead.workload, "source": "round",
                                 "device_unit": self.nodes[node_id].unit})
            res = build_result(
                node_id=node_id, device_type=dtype, unit=self.nodes[node_id].unit, task=task, decision=plan,
                work=work, profiled=profiled, time_s=time_s, energy_j=energy, true_power_w=true_power,
                train_loss=float("nan"), samples=samples, predictor_id=self.nodes[node_id].predictor_id,
                num_examples=0,  # no training here: nothing to aggregate
                maxn=(float(maxn_t[j]) * 1000.0, float(maxn_p[j])))
            out[node_id] = (res, {})
        if observed:  # the round's observations ride on one result of the type
            first = node_ids[0]
            reply = out[first]
            if isinstance(reply, str):  # set just above for every planned node
                raise TypeError(f"node {first} has no result to carry the observations")
            res0, w0 = reply
            extra = pd.DataFrame(observed)
            merged = pd.concat([res0.samples, extra], ignore_index=True) if len(res0.samples) else extra
            out[first] = (replace(res0, samples=merged), w0)

    @staticmethod
    def _tpc(template: SimulatedJetson, plan: policies.Plan) -> float:
        return 1.0 if plan.preset is None else template.preset_tpc_fraction(plan.preset)


def _steady(board: BoardPhysics, workload: Workload, modes: np.ndarray, tpc: np.ndarray,
            unit: UnitVariation) -> tuple[np.ndarray, np.ndarray]:
    """Steady-state time (s) and power (W) with the leakage-temperature fixed point."""
    temp = np.full(len(modes), 25.0)
    ev = evaluate(board, workload, modes[:, 0], modes[:, 1], modes[:, 2], modes[:, 3], tpc_fraction=tpc,
                  temp_c=temp, unit=unit)
    for _ in range(3):
        temp = steady_temperature_c(board, ev.power_w, 25.0, "max", unit)
        ev = evaluate(board, workload, modes[:, 0], modes[:, 1], modes[:, 2], modes[:, 3], tpc_fraction=tpc,
                      temp_c=temp, unit=unit)
    return ev.time_s, ev.power_w
