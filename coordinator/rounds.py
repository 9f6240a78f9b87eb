"""The coordinator's round protocol, independent of Flower (see ``docs/architecture.md``).

Per round: query the nodes; select who works and how much (deadline-aware by default); send
each a task with the round config and - if it lacks the current version - the predictor
artifact; collect the results; aggregate FedAvg over on-time updates weighted by examples
actually trained; evaluate; record; and feed observed (mode, time, power) samples to the
store, which re-transfers a predictor whose rolling error drifts.

A (device type, workload) without a predictor is bootstrapped through the fleet, inside the
deadline (``coordinator/bootstrap.py``): the boards of that type profile modes a fleet could
choose, as many as fit each round, and their profiled minibatches are the round's training
work. Only ``powertrain`` uses predictors; the baseline policies model fleets without
them and never profile. Margins are calibrated per device type (``coordinator/margins.py``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import pandas as pd

from coordinator.aggregation import Aggregator
from coordinator.bootstrap import Bootstrap, ProfileShare
from coordinator.config import RunConfig
from coordinator.fleet import FleetSpec, check_cap_above_idle
from coordinator.interrupt import RunInterrupted
from coordinator.margins import MarginCalibrator
from coordinator.records import ClientRecord, RoundRecord, describe_round, summarize
from coordinator.reference import make_reference_source
from coordinator.selection import SelectionInput, Skip, make_selection
from coordinator.store import builder
from coordinator.store.base import LockHandle, ModelStore
from coordinator.store.errors import ArtifactNotFoundError, CorruptArtifactError, LockTimeoutError
from powerfleet.protocol.enums import ClientStatus, WorkKind
from powerfleet.protocol.messages import NodeInfo, NodeQuery, TrainResult, TrainTask
from powerfleet.protocol.tasks import cached_task, get_weights, seeded_model, set_weights
from powerfleet.tasks.characterize import workload_key
from powertrain.boards import get_space
from powertrain.errors import PowerfleetError
from powertrain.optimize import ModeTable
from powertrain.predictor import PowerTrainPredictor

log = logging.getLogger("powerfleet.coordinator")


#: A node's reply: its result and updated weights, or why it failed.
Reply = tuple[TrainResult, dict[str, np.ndarray]] | str
#: Replies per node id; a node that is absent did not reply in time.
Replies = dict[int, Reply]


class FleetBackend(Protocol):
    """How the coordinator reaches its nodes (Flower grid, or the analytic engine)."""

    real_training: bool  # False: nodes only model time and energy, no weights come back
    refusals: dict[int, str]  # node id -> why it refused its latest query (e.g. a task it cannot run)

    def node_ids(self) -> list[int]:
        """The nodes connected now (no message is sent)."""

    def query(self, query: NodeQuery, node_ids: Sequence[int]) -> list[NodeInfo]:
        """Describe ``node_ids`` (asked once per node: train replies keep the description current)."""

    def train(self, tasks: Mapping[int, TrainTask], weights: Mapping[str, np.ndarray], timeout_s: float) -> Replies:
        """Results per node; a string is why a node failed; absent nodes did not reply in time."""


@dataclass
class PairPredictor:
    """The predictor in force for one device type, ready to ship and to use."""

    device_type: str
    artifact_id: str
    artifact: bytes
    version: int
    table: ModeTable


@dataclass
class RunReport:
    """Everything a run produced."""

    config: RunConfig
    rounds: list[RoundRecord]
    clients: list[ClientRecord]
    summary: dict[str, object]
    predictors: dict[str, dict[str, object]]
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # the final global model (empty: no training)


RoundCallback = Callable[[RoundRecord], None]


def node_query(cfg: RunConfig, fleet: FleetSpec | None, rnd: int) -> NodeQuery:
    """What a node is asked when it is first seen (before round ``rnd``; 0 before the first)."""
    specs = tuple(n.device_spec for n in fleet.nodes) if fleet else ()
    return NodeQuery(round=rnd, task=cfg.task, cost_as=cfg.cost_as, fleet=specs)


class FleetCoordinator:
    """Runs ``config.num_server_rounds`` rounds over ``backend`` (see the module docstring)."""

    def __init__(self, config: RunConfig, store: ModelStore, backend: FleetBackend, *,
                 fleet: FleetSpec | None = None, on_round: RoundCallback | None = None) -> None:
        self.cfg = config
        self.store = store
        self.backend = backend
        self.fleet = fleet
        self.on_round = on_round
        self.selection = make_selection(config.selection)
        self.reference = make_reference_source(config.reference_source, config.seed)
        self.rng = np.random.default_rng([config.seed, 4242])
        self.predictors: dict[str, PairPredictor] = {}
        self.bootstraps: dict[str, Bootstrap] = {}
        self.build_notes: dict[str, str] = {}
        self.build_settings = builder.BuildSettings(k=config.transfer_samples, sampling_seed=config.seed)
        self.margins = MarginCalibrator(deadline_miss_target=config.deadline_miss_target,
                                        cap_violation_target=config.cap_violation_target)
        self.rounds: list[RoundRecord] = []
        self.clients: list[ClientRecord] = []
        self.nodes: dict[int, NodeInfo] = {}  # every node seen, as it last described itself
        self.stopped_by = ""  # the signal that ended the run early (see run())
        self.claims: dict[str, LockHandle] = {}  # bootstrap locks held, by device type (see _ensure)
        self.task = cached_task(config.task)
        #: the store key of the work: the task's fingerprint, or the catalog workload it is charged as
        self.workload = workload_key(self.task, config.cost_as)
        self.aggregator = Aggregator(config.strategy, proximal_mu=config.proximal_mu, server_lr=config.server_lr)
        self.model = seeded_model(self.task, config.seed)
        self.weights = get_weights(self.model) if backend.real_training else {}
        self._test = self.task.test_data(config.seed) if backend.real_training else None

    # ------------------------------------------------------------------ setup
    def _connected(self, rnd: int) -> tuple[list[NodeInfo], list[NodeInfo]]:
        """(connected, gone): nodes connected now - new ones are asked who they are, once - and
        nodes seen before that have left. Sorted by what the nodes are (Flower's ids are random),
        so runs repeat for a seed."""
        ids = set(self.backend.node_ids())
        new = sorted(ids - self.nodes.keys())
        if new:
            for info in self.backend.query(node_query(self.cfg, self.fleet, rnd), new):
                self.nodes[info.node_id] = info
        order = lambda i: (i.device_type, i.unit, i.partition_id, i.node_id)  # noqa: E731
        connected = sorted((i for n, i in self.nodes.items() if n in ids), key=order)
        gone = sorted((i for n, i in self.nodes.items() if n not in ids), key=order)
        return connected, gone

    def wait_for_nodes(self) -> list[NodeInfo]:
        """Wait until ``min-available-nodes`` are connected and described, or fail with one line."""
        deadline = time.monotonic() + self.cfg.node_wait_timeout_s
        while True:
            connected, _ = self._connected(0)
            if self.backend.refusals:  # the task or cost-as this node cannot run: waiting will not help
                node, reason = min(self.backend.refusals.items())
                raise PowerfleetError(f"node {node} refused the run: {reason}")
            if len(connected) >= self.cfg.min_available_nodes:
                return connected
            if time.monotonic() >= deadline:
                raise PowerfleetError(
                    f"only {len(connected)} node(s) connected within node-wait-timeout-s="
                    f"{self.cfg.node_wait_timeout_s:g}; min-available-nodes={self.cfg.min_available_nodes}: "
                    "are the SuperNodes running and registered?")
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))

    def cap_of(self, info: NodeInfo) -> float:
        """A board's power cap: its fleet group's (a simulated node is the fleet board at its
        partition id), else the run's ``power-cap-w``."""
        if self.fleet is not None and 0 <= info.partition_id < len(self.fleet.nodes):
            node = self.fleet.nodes[info.partition_id]
            if node.device_type == info.device_type and node.unit == info.unit:
                return self.fleet.cap_of(node, self.cfg.power_cap_w)
        return self.cfg.power_cap_w

    def check_caps(self, infos: list[NodeInfo]) -> None:
        """Refuse a run whose cap is below a board's idle power (before any round)."""
        for info in infos:
            check_cap_above_idle(info.device_type, self.cap_of(info), info.idle_power_w or None)

    def prepare(self, infos: list[NodeInfo]) -> None:
        """Load or plan a predictor for every device type present (``powertrain`` only: the
        baselines model fleets without predictors)."""
        if not self.cfg.policy.uses_predictor:
            return
        for dtype in dict.fromkeys(i.device_type for i in infos):
            self._ensure(dtype)

    def _ensure(self, dtype: str) -> None:
        """Install the pair's predictor, or start a bootstrap that profiles at least one mode:
        a pair with no valid latest is rebuilt from its stored samples when they suffice.

        A bootstrap holds the pair's store lock ``bootstrap:<type>:<workload>`` until it has
        stored its predictor, so two runs sharing a store never profile the same pair twice:
        the second waits (one log line) and installs what the first built; if the first dies,
        its lock expires and the second bootstraps."""
        deadline = time.monotonic() + self.build_settings.wait_timeout_s
        waiting = False
        while True:
            plan = builder.plan_or_rebuild(self.store, dtype, self.workload, self.build_settings)
            if plan.prerequisite or plan.rule == builder.RULE_REFERENCE_FIT:
                # The reference is profiled once, on a full grid - not inside FL rounds.
                self._build_reference()
                plan = builder.plan_or_rebuild(self.store, dtype, self.workload, self.build_settings)
            if plan.hit is None and plan.needs_boards:
                claim = self.store.acquire_lock(bootstrap_lock(dtype, self.workload),
                                                ttl_s=self.build_settings.lock_ttl_s)
                if claim is None:  # another run is bootstrapping this pair: wait for its predictor
                    if not waiting:
                        log.warning("another run is bootstrapping %s/%s in %s; waiting for its predictor", dtype,
                                 self.workload, self.store.url)
                        waiting = True
                    if time.monotonic() > deadline:
                        raise LockTimeoutError(f"waited {self.build_settings.wait_timeout_s:.0f} s for another "
                                               f"run's bootstrap of {dtype}/{self.workload} in {self.store.url}")
                    time.sleep(0.25)
                    continue
                # under the claim, plan again: the other run may have stored it just now
                plan = builder.plan_or_rebuild(self.store, dtype, self.workload, self.build_settings)
                if plan.hit is not None:
                    claim.release()
                else:
                    self.claims[dtype] = claim
            break
        if plan.hit is not None:
            self._install(dtype, plan.hit.meta.version)
            how = "; ".join(plan.notes) if plan.notes else f"reused {plan.hit.meta.label} from the store"
            self.build_notes[dtype] = how + (" (built by another run meanwhile)" if waiting else "")
        else:
            if not plan.needs_boards:  # plan_or_rebuild never returns this; refuse to loop doing nothing
                raise PowerfleetError(f"no way to a predictor for {dtype}/{self.workload}: rule {plan.rule} "
                                      "with nothing to profile")
            self.bootstraps[dtype] = Bootstrap.start(plan)
            src = plan.source.meta.label if plan.source else "-"
            self.build_notes[dtype] = (f"bootstrap in rounds: rule {plan.rule} from {src}, {len(plan.modes)} modes to "
                                       "profile within the deadline")
            log.info("bootstrapping %s/%s: %s", dtype, self.workload, self.build_notes[dtype])

    def release_claims(self) -> None:
        """Release the bootstrap locks this run holds (its bootstraps end with it)."""
        for claim in self.claims.values():
            claim.release()
        self.claims.clear()

    def _build_reference(self) -> None:
        ref_type, ref_workload = self.build_settings.reference_pair
        collector = self.reference.collector(ref_type, ref_workload, self.store.url)
        log.info("building the reference %s/%s (reference source %s)", ref_type, ref_workload, self.reference.name)
        builder.get_or_build(self.store, ref_type, ref_workload, collector, settings=self.build_settings)

    def _install(self, dtype: str, version: int | None = None) -> None:
        try:
            meta, artifact = self.store.get_artifact(dtype, self.workload, version)
            stored = self.store.get(dtype, self.workload, meta.version)
        except (CorruptArtifactError, ArtifactNotFoundError) as exc:  # refused or lost: rebuild, then use it
            log.warning("%s/%s v%s cannot be used (%s); rebuilding", dtype, self.workload, version, exc)
            current = builder.current_predictor(self.store, dtype, self.workload, self.build_settings)
            meta, artifact = self.store.get_artifact(dtype, self.workload, current.meta.version)
            stored = current
        space = get_space(dtype)
        modes = space.modes("full")
        table = ModeTable(modes, PowerTrainPredictor.from_state(stored.state).predict(modes), space.knob_names)
        self.predictors[dtype] = PairPredictor(dtype, meta.artifact_id, artifact, meta.version, table)
        self.margins.reset(dtype, stored.state)

    # ------------------------------------------------------------------ rounds
    def run(self) -> RunReport:
        """Run every round and return the report; a stop signal (:class:`RunInterrupted`, raised
        inside :func:`coordinator.interrupt.raise_on_signals`) ends the run with a report of the
        finished rounds, marked incomplete (the round it interrupted is not recorded)."""
        try:
            infos = self.wait_for_nodes()
            self.check_caps(infos)
            self.prepare(infos)
            for rnd in range(1, self.cfg.num_server_rounds + 1):
                record = self.run_round(rnd)
                if self.on_round is not None:
                    self.on_round(record)
        except RunInterrupted as exc:
            self.stopped_by = exc.signal_name
            log.info("stopped by %s after %d of %d rounds", exc.signal_name, len(self.rounds),
                     self.cfg.num_server_rounds)
        finally:
            self.release_claims()
        return self.report()

    def run_round(self, rnd: int) -> RoundRecord:
        """One round (see the module docstring)."""
        started = time.perf_counter()
        healed = self.store.heal()
        if healed.changed or healed.notes:
            log.warning("store: %s", "; ".join(healed.notes) or f"re-published {healed.republished} artifacts")
        infos, gone = self._connected(rnd)
        for info in infos:
            if (self.cfg.policy.uses_predictor and info.device_type not in self.predictors
                    and info.device_type not in self.bootstraps):
                check_cap_above_idle(info.device_type, self.cap_of(info), info.idle_power_w or None)
                self._ensure(info.device_type)  # a board type that joined mid-run
        available = [i for i in infos if i.available]
        unavailable = [i for i in infos if not i.available]
        info_of = {i.node_id: i for i in (*infos, *gone)}
        tables = {d: p.table for d, p in self.predictors.items()}
        caps = {i.node_id: self.cap_of(i) for i in infos}
        boot_nodes = [i for i in available if i.device_type in self.bootstraps]
        normal = [i for i in available if i.device_type not in self.bootstraps]
        margins = {d: m for d in tables if (m := self._margins(d)) is not None}
        chosen, skipped = self.selection.select(SelectionInput(
            normal, tables, caps, self.cfg.deadline_s, self.cfg.local_minibatches, self.cfg.min_minibatches,
            self.cfg.margin_z, self.cfg.fraction, margins), self.rng)
        tasks: dict[int, TrainTask] = {}
        why: dict[int, tuple[WorkKind, str]] = {}
        for a in chosen:
            tasks[a.node_id] = self._task(rnd, info_of[a.node_id], a.work)
            why[a.node_id] = (a.kind, a.reason)
        for dtype, boot in self.bootstraps.items():
            nodes = [i for i in boot_nodes if i.device_type == dtype]
            lists = boot.assign(nodes, caps, deadline_s=self.cfg.deadline_s,
                                local_minibatches=self.cfg.local_minibatches, objective=self.cfg.objective,
                                seed=self.cfg.seed + rnd)
            for info in nodes:
                if info.node_id not in lists:
                    skipped.append(Skip(info.node_id, "bootstrap: no mode left to profile under its cap"))
                    continue
                share = lists[info.node_id]
                tasks[info.node_id] = self._task(rnd, info, 0, share)
                why[info.node_id] = (WorkKind.BOOTSTRAP, f"bootstrap: up to {len(share.modes)} modes in "
                                                         f"{share.budget_s:.1f} s")
        bootstrap_round = bool(boot_nodes)
        timeout = self.cfg.round_timeout_s
        replies = self.backend.train(tasks, self.weights, timeout) if tasks else {}
        records, updates = self._collect(rnd, tasks, replies, info_of, why, bootstrap_round)
        records += [ClientRecord(round=rnd, node_id=s.node_id, device_type=info_of[s.node_id].device_type,
                                 unit=info_of[s.node_id].unit, status=ClientStatus.SKIPPED,
                                 bootstrap=bootstrap_round, reason=s.reason) for s in skipped]
        records += [ClientRecord(round=rnd, node_id=i.node_id, device_type=i.device_type, unit=i.unit,
                                 status=ClientStatus.DROPPED, bootstrap=bootstrap_round,
                                 reason="unavailable") for i in unavailable]
        records += [ClientRecord(round=rnd, node_id=i.node_id, device_type=i.device_type, unit=i.unit,
                                 status=ClientStatus.DROPPED, bootstrap=bootstrap_round,
                                 reason="not connected") for i in gone]
        for node_id in tasks:  # what a node holds now, for the next round's task
            reply = replies.get(node_id)
            if reply is None or isinstance(reply, str):
                self.nodes.pop(node_id, None)  # a failed node is asked again who it is if it comes back
            elif node_id in self.nodes:
                self.nodes[node_id] = replace(self.nodes[node_id], predictor_id=reply[0].predictor_id)
        self._aggregate(rnd, updates)
        notes = "; ".join([*healed.notes, self._learn(rnd, replies)]).strip("; ")
        loss, acc = (math.nan, math.nan)
        if self._test is not None:  # centralized evaluation of the global model on the task's test data
            metrics = self.task.evaluate(self.model, self._test)
            loss, acc = float(metrics.get("loss", math.nan)), float(metrics.get("accuracy", math.nan))
        record, records = self._round_record(rnd, bootstrap_round, records, time.perf_counter() - started, acc, loss,
                                             notes)
        fed_acc, fed_loss, fed_examples = federated_evaluation(replies)
        record = replace(record, federated_accuracy=fed_acc, federated_loss=fed_loss, federated_examples=fed_examples)
        self.rounds.append(record)
        self.clients.extend(records)
        log.info("%s", describe_round(record, records, self.cfg.num_server_rounds))
        return record

    def _margins(self, dtype: str) -> tuple[float, float] | None:
        """The type's calibrated margins (None: margin = z, or no residuals yet)."""
        return self.margins.margins(dtype) if self.cfg.margin == "conformal" else None

    def _task(self, rnd: int, info: NodeInfo, work: int, share: ProfileShare | None = None) -> TrainTask:
        pred = self.predictors.get(info.device_type)
        send = pred is not None and info.predictor_id != pred.artifact_id
        return TrainTask(
            round=rnd, task=self.cfg.task, workload=self.workload, cost_as=self.cfg.cost_as, work_minibatches=work,
            update_minibatches=self.cfg.local_minibatches if share else 0,
            proximal_mu=self.aggregator.proximal_mu, min_minibatches=self.cfg.min_minibatches,
            deadline_s=self.cfg.deadline_s, power_cap_w=self.cap_of(info), objective=self.cfg.objective,
            policy=self.cfg.policy, margin_z=self.cfg.margin_z, seed=self.cfg.seed, lr=self.cfg.lr,
            predictor_id=pred.artifact_id if pred else "", predictor_bytes=pred.artifact if send and pred else b"",
            profile_modes={str(k): v.astype(float).tolist() for k, v in share.modes.items()} if share else {},
            profile_time_ms=tuple(share.time_ms) if share else (),
            profile_power_w=tuple(share.power_w) if share else (),
            profile_budget_s=share.budget_s if share else 0.0,
            profile_minibatches=self.cfg.profile_minibatches,
            margin_log=self._margins(info.device_type) if pred is not None else None,
        )

    def _collect(self, rnd: int, tasks: Mapping[int, TrainTask], replies: Mapping[int, Reply],
                 info_of: Mapping[int, NodeInfo], why: Mapping[int, tuple[WorkKind, str]],
                 bootstrap_round: bool) -> tuple[list[ClientRecord], list[tuple[int, dict[str, np.ndarray]]]]:
        records: list[ClientRecord] = []
        updates: list[tuple[int, dict[str, np.ndarray]]] = []
        for node_id, task in tasks.items():
            info = info_of[node_id]
            boot = bool(task.profile_modes)
            reply = replies.get(node_id)
            kind, reason = why[node_id]
            dropped = ClientRecord(
                round=rnd, node_id=node_id, device_type=info.device_type, unit=info.unit,
                status=ClientStatus.DROPPED, bootstrap=bootstrap_round, work_kind=kind,
                reason=reply if isinstance(reply, str) else "no reply before the round timeout", policy=task.policy,
                power_cap_w=task.power_cap_w, deadline_s=task.deadline_s, work_assigned=task.work_minibatches)
            if reply is None or isinstance(reply, str):
                log.info("round %d: node %s (%s unit %s) failed: %s", rnd, node_id, info.device_type, info.unit,
                         dropped.reason)  # one line per failure (a simulated dropout included)
                records.append(dropped)
                continue
            res, weights = reply
            if res.work_done <= 0:  # a reply with no training and no profiling is never counted on time
                records.append(replace(dropped, reason="replied without doing any work"))
                continue
            if res.deadline_met and res.num_examples > 0 and weights:  # bootstrap nodes too: no exemption
                updates.append((res.num_examples, weights))
            records.append(replace(
                dropped, status=ClientStatus.ON_TIME if res.deadline_met else ClientStatus.LATE, reason=reason,
                mode=",".join(f"{k}={v:g}" for k, v in res.mode.items()), work_planned=res.work_planned,
                work_done=res.work_done, time_s=res.time_s, energy_j=res.energy_j, mean_power_w=res.mean_power_w,
                pred_time_s=res.pred_time_s, pred_power_w=res.pred_power_w, pred_energy_j=res.pred_energy_j,
                true_power_w=res.true_power_w, profiling_minibatches=res.profiling_minibatches,
                choice_kind=res.choice_kind, choice=res.choice, idle_power_w=info.idle_power_w,
                maxn_time_ms=res.maxn_time_ms, maxn_power_w=res.maxn_power_w,
                profiled_modes=int((res.samples["source"] == "profile").sum()) if boot and len(res.samples) else 0))
        return records, updates

    def _aggregate(self, rnd: int, updates: list[tuple[int, dict[str, np.ndarray]]]) -> None:
        """The run's Flower strategy over the on-time updates, weighted by ``num-examples``."""
        if not updates or not self.backend.real_training:
            return
        self.weights = self.aggregator.aggregate(rnd, self.weights, updates)
        set_weights(self.model, self.weights)

    def _learn(self, rnd: int, replies: Mapping[int, Reply]) -> str:
        """Finish bootstraps with the round's profiles; refine predictors with its observations."""
        notes: list[str] = []
        by_type: dict[str, list[pd.DataFrame]] = {}
        for reply in replies.values():
            if isinstance(reply, str) or not len(reply[0].samples):
                continue
            by_type.setdefault(reply[0].device_type, []).append(reply[0].samples)
        for dtype in list(self.bootstraps):  # every bootstrap round counts, whether or not profiles came back
            frames = by_type.pop(dtype, [])
            got = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
            boot = self.bootstraps[dtype]
            boot.add(got[got["source"] == "profile"] if len(got) else got)
            if boot.ready():
                have = boot.have()
                result = builder.complete(self.store, boot.plan, have, settings=self.build_settings)
                self._install(dtype, result.meta.version)
                del self.bootstraps[dtype]
                if (claim := self.claims.pop(dtype, None)) is not None:
                    claim.release()
                notes.append(f"{dtype}: built {result.meta.label} ({result.rule}) from {boot.distinct()} modes "
                             f"profiled in {boot.rounds} round(s)")
        for dtype, frames in by_type.items():
            samples = pd.concat(frames, ignore_index=True)
            observed = samples[samples["source"] == "round"]
            if len(observed) and dtype in self.predictors:
                knobs = list(get_space(dtype).knob_names)
                self.margins.observe(dtype, self.predictors[dtype].table, observed)
                res = builder.refine(self.store, dtype, self.workload,
                                     observed.loc[:, [*knobs, "time_ms", "power_w"]],
                                     threshold_pct=self.cfg.refine_threshold_pct, settings=self.build_settings)
                if res.refined:
                    self._install(dtype, res.meta.version)
                    notes.append(f"{dtype}: refined to {res.meta.label} (rolling error {res.error_pct:.1f}%)")
        return "; ".join(notes)

    def _round_record(self, rnd: int, bootstrap: bool, records: list[ClientRecord], wall_s: float,
                      acc: float, loss: float, notes: str) -> tuple[RoundRecord, list[ClientRecord]]:
        """The round's record, and the client records with what waiting for its close cost.

        The round closes when its last reply arrives, or at the deadline if one is late; a
        selected board that finished earlier waits at idle power until then. The MAXN figures
        are the same client-rounds on a fleet without predictors - everything at maximum, the
        full local work, then idle until that round's close - from the boards' ground truth.
        """
        replied = [c for c in records if c.status.replied]
        close = min(max((c.time_s for c in replied), default=0.0), self.cfg.deadline_s)
        maxn_t = {c.node_id: self.cfg.local_minibatches * c.maxn_time_ms / 1000.0 for c in replied}
        maxn_close = min(max(maxn_t.values(), default=0.0), self.cfg.deadline_s)
        records = [replace(c, idle_energy_j=c.idle_power_w * max(close - c.time_s, 0.0),
                           maxn_energy_j=maxn_t[c.node_id] * c.maxn_power_w
                           + c.idle_power_w * max(maxn_close - maxn_t[c.node_id], 0.0))
                   if c.status.replied else c for c in records]
        replied = [c for c in records if c.status.replied]
        energy = float(sum(c.energy_j for c in replied))
        busy = float(sum(c.time_s for c in replied))
        by_type_e: dict[str, float] = {}
        by_type_d: dict[str, float] = {}
        for c in replied:
            by_type_e[c.device_type] = by_type_e.get(c.device_type, 0.0) + c.energy_j
            by_type_d[c.device_type] = max(by_type_d.get(c.device_type, 0.0), c.time_s)
        versions = ",".join(f"{d}=v{p.version}" for d, p in sorted(self.predictors.items()))
        record = RoundRecord(
            round=rnd, bootstrap=bootstrap, selected=sum(c.status != ClientStatus.SKIPPED for c in records),
            completed=sum(c.status == ClientStatus.ON_TIME for c in records),
            on_time=sum(c.status == ClientStatus.ON_TIME for c in records),
            late=sum(c.status == ClientStatus.LATE for c in records),
            dropped=sum(c.status == ClientStatus.DROPPED for c in records),
            skipped=sum(c.status == ClientStatus.SKIPPED for c in records), energy_j=energy,
            idle_energy_j=float(sum(c.idle_energy_j for c in replied)),
            maxn_energy_j=float(sum(c.maxn_energy_j for c in replied)),
            mean_power_w=energy / busy if busy > 0 else math.nan, duration_s=close, wall_s=wall_s,
            accuracy=acc, loss=loss, profiling_minibatches=sum(c.profiling_minibatches for c in records),
            predictor_versions=versions, energy_by_type_j=by_type_e, duration_by_type_s=by_type_d, notes=notes,
        )
        return record, records

    def report(self) -> RunReport:
        """The run's records and summary (``complete``: every round ran; ``stopped_by``: the signal
        that ended it early, else None)."""
        recorded = {r.round for r in self.rounds}  # an interrupted round's clients are not reported
        clients = [c for c in self.clients if c.round in recorded]
        summary = summarize(self.cfg.policy, self.rounds, clients, self.summary_extra(),
                            target_accuracy=self.cfg.target_accuracy)
        summary.update(run_status(self.cfg, len(self.rounds), self.stopped_by))
        return RunReport(self.cfg, list(self.rounds), clients, summary, self.predictor_info(), dict(self.weights))

    def predictor_info(self) -> dict[str, dict[str, object]]:
        """The predictors in force, per device type, as the report shows them."""
        predictors: dict[str, dict[str, object]] = {}
        for d, p in self.predictors.items():
            m = self._margins(d)
            cv, seen = self.margins.counts(d)
            predictors[d] = {"version": p.version, "artifact_id": p.artifact_id, "how": self.build_notes.get(d, ""),
                             "margin": self.cfg.margin, "margin_time_pct": math.expm1(m[0]) * 100 if m else math.nan,
                             "margin_power_pct": math.expm1(m[1]) * 100 if m else math.nan,
                             "residuals_cv": cv, "residuals_rounds": seen}
        return predictors

    def summary_extra(self) -> dict[str, object]:
        """What the summary adds to :func:`coordinator.records.summarize`: the task, and the
        federated evaluation of the last model the nodes evaluated - the one they received in the
        last round that has one, i.e. before that round's training (the final model is evaluated
        centrally, ``final_accuracy``: a wave of its own would cost every node a message)."""
        last = next((r for r in reversed(self.rounds) if r.federated_examples), None)
        return {"task": self.cfg.task, "workload": self.workload, "cost_as": self.cfg.cost_as,
                "strategy": self.cfg.strategy,
                "federated_accuracy_before_last_round": last.federated_accuracy if last else math.nan,
                "federated_loss_before_last_round": last.federated_loss if last else math.nan,
                "federated_examples_before_last_round": last.federated_examples if last else 0}


def federated_evaluation(replies: Replies) -> tuple[float, float, int]:
    """The round's federated evaluation (accuracy, loss, examples), weighted by examples: the nodes
    that replied evaluated the model they received on their own held-out data before training
    (on time or late alike)."""
    results = [r[0] for r in replies.values() if not isinstance(r, str) and r[0].received_examples > 0]
    examples = sum(r.received_examples for r in results)
    if not examples:
        return math.nan, math.nan, 0
    return (sum(r.received_accuracy * r.received_examples for r in results) / examples,
            sum(r.received_loss * r.received_examples for r in results) / examples, examples)


def bootstrap_lock(device_type: str, workload: str) -> str:
    """The store lock a run holds while it bootstraps a pair in its rounds."""
    return f"bootstrap:{device_type}:{workload}"


def run_status(cfg: RunConfig, rounds: int, stopped_by: str) -> dict[str, object]:
    """``complete`` (every configured round ran, no signal stopped the run) and ``stopped_by``."""
    return {"complete": not stopped_by and rounds == cfg.num_server_rounds, "stopped_by": stopped_by or None}
