"""The coordinator's nodes reached through a Flower ``Grid`` (simulation or deployment)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from coordinator.rounds import Replies
from powerfleet.protocol import messages as protocol
from powerfleet.protocol.messages import NodeInfo, NodeQuery, TrainTask
from powertrain.errors import PowerfleetError

log = logging.getLogger("powerfleet.coordinator")
QUERY_TIMEOUT_S = 120.0
TTL_MARGIN_S = 60.0
#: How often replies are pulled from the SuperLink (Flower's own send_and_receive waits 3 s
#: between pulls, which a round pays once per exchange).
PULL_INTERVAL_S = 0.25


class FlowerBackend:
    """Query and train messages over a Flower grid; error replies become failure reasons."""

    real_training = True

    def __init__(self, grid: Grid, query_timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self.grid = grid
        self.query_timeout_s = query_timeout_s
        self.refusals: dict[int, str] = {}  # node id -> why it refused its latest query
        #: queries sent ahead by :meth:`announce`: the query, and its message id per node
        self._announced: tuple[NodeQuery | None, dict[int, str]] = (None, {})

    def _exchange(self, messages: Iterable[Message], timeout_s: float, sent: Iterable[str] = ()) -> list[Message]:
        """Push ``messages`` and pull their replies (and those of the messages ``sent`` before)
        every :data:`PULL_INTERVAL_S` until all are in or ``timeout_s`` has passed (what
        ``Grid.send_and_receive`` does, without its 3 s naps)."""
        waiting = set(self.grid.push_messages(messages)) | set(sent)
        deadline = time.monotonic() + timeout_s
        replies: list[Message] = []
        while waiting:
            got = list(self.grid.pull_messages(waiting))
            replies.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(PULL_INTERVAL_S)
        return replies

    def node_ids(self) -> list[int]:
        """The SuperNodes the SuperLink sees online."""
        return list(self.grid.get_node_ids())

    def _query_message(self, query: NodeQuery, node_id: int) -> Message:
        return Message(protocol.query_to_records(query), dst_node_id=node_id, message_type=MessageType.QUERY,
                       ttl=self.query_timeout_s + TTL_MARGIN_S, group_id=f"query-{query.round}")

    def announce(self, query: NodeQuery) -> None:
        """Send ``query`` now to the nodes connected, without waiting: they answer while the
        coordinator starts up (loads the task, opens the store), and :meth:`query` collects the
        answers instead of asking again. Saves a node a message's start-up before round 1."""
        ids = self.node_ids()
        self._announced = (query, dict(zip(ids, self.grid.push_messages(
            [self._query_message(query, n) for n in ids]), strict=True)))

    def query(self, query: NodeQuery, node_ids: Sequence[int]) -> list[NodeInfo]:
        """Ask ``node_ids`` who they are (once per node and run; an announced query is not sent again)."""
        announced, sent = self._announced
        ahead = {n: sent.pop(n) for n in node_ids if announced == query and n in sent}
        messages = [self._query_message(query, n) for n in node_ids if n not in ahead]
        infos = []
        for reply in self._exchange(messages, self.query_timeout_s, ahead.values()):
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.refusals[node] = _error_summary(reply.error.reason)
                log.warning("node %s failed the query: %s", node, self.refusals[node])
                continue
            self.refusals.pop(node, None)
            try:
                infos.append(protocol.info_from_records(reply.content, node))
            except PowerfleetError as exc:
                log.warning("node %s sent a malformed query reply: %s", node, exc)
        return infos

    def train(self, tasks: Mapping[int, TrainTask], weights: Mapping[str, np.ndarray], timeout_s: float) -> Replies:
        """Send every task, wait up to ``timeout_s``, decode what came back."""
        messages = [Message(protocol.task_to_records(task, weights), dst_node_id=n,
                            message_type=MessageType.TRAIN, ttl=timeout_s + TTL_MARGIN_S,
                            group_id=f"round-{task.round}") for n, task in tasks.items()]
        out: Replies = {}
        for reply in self._exchange(messages, timeout_s):
            node = reply.metadata.src_node_id
            if reply.has_error():
                out[node] = _error_summary(reply.error.reason)
                continue
            try:
                out[node] = protocol.result_from_records(reply.content, node)
            except (PowerfleetError, KeyError, ValueError) as exc:
                out[node] = f"malformed reply: {exc}"
        return out


def _error_summary(text: str | None) -> str:
    """The exception line of an error reply: Flower sends the node's whole traceback, whose
    last non-empty line names the exception and its message."""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "error"
