"""Celery tasks: thin. Load the run, call the training loop, map its outcome to the run's status."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from celery import signals

from db.store import Flush, RunInfo, Store, merge_flushes, worker_name
from models.tasks import TASKS
from workers import reporter
from workers.celery_app import TRAIN_TASK, app, send_ticket
from workers.checkpoints import CheckpointStore, get_checkpoints
from workers.early_stopping import EarlyStopping, decide
from workers.settings import get_settings
from workers.spec import parse_spec

log = logging.getLogger(__name__)
shutting_down = threading.Event()


class PackGate:
    """What a pack's members have recorded, so that one is judged at a checkpoint only against mates there too.

    Pack-mates train in lockstep but record on their own threads: without the gate, a member judged at step 40
    could find its mates' step 40 not yet in the database, judge against nobody, and move on to a later checkpoint.
    A mate that has ended (diverged, stopped, finished) is not waited for."""

    def __init__(self, run_ids: Sequence[int]) -> None:
        self._lock = threading.Lock()
        self._recorded = dict.fromkeys(run_ids, 0)
        self._live = set(run_ids)

    def recorded(self, run_id: int, step: int) -> None:
        with self._lock:
            self._recorded[run_id] = max(self._recorded.get(run_id, 0), step)

    def ended(self, run_id: int) -> None:
        with self._lock:
            self._live.discard(run_id)

    def ready(self, run_id: int, step: int) -> bool:
        """Has every live mate of `run_id` recorded `step`?"""
        with self._lock:
            return all(self._recorded[r] >= step for r in self._live if r != run_id)


class SweepJudge:
    """Applies a sweep's early-stopping rule to one of its runs at each checkpoint the run has passed.

    With a `gate` (a pack member), a checkpoint waits for the next call until every live pack-mate has recorded it."""

    def __init__(
        self, store: Store, run_id: int, sweep_id: int, config: EarlyStopping, steps: int, gate: PackGate | None = None
    ) -> None:
        self.store, self.run_id, self.sweep_id, self.config, self.gate = store, run_id, sweep_id, config, gate
        self._pending = list(config.checkpoints(steps))

    def __call__(self, progress: int) -> str | None:
        """The reason to stop, once `progress` has passed a checkpoint whose rule says so; else None."""
        while self._pending and self._pending[0] <= progress:
            lo, hi = self.config.window(self._pending[0])
            if self.gate is not None and not self.gate.ready(self.run_id, hi):
                break  # judged at a later call, once the mates are there
            step = self._pending.pop(0)
            means = self.store.window_means(self.sweep_id, self.config.metric, lo, hi)
            own = means.pop(self.run_id, None)
            if own is None:
                continue
            reason = decide(self.config, step, own, list(means.values()))
            if reason:
                return reason
        return None


class _Writer:
    """One background thread that writes what its sinks are handed, in the order handed, so training never waits
    on the database. Rows queued by the time the thread gets to them go in one transaction (`Store.record_many`),
    whichever sinks they came from: a pack's members share one writer, and a pack's flush handed over `together`
    is one transaction. A checkpoint is saved after every row handed before it is in the database, so it never
    runs ahead of the metrics. The thread ends when its last sink closes."""

    def __init__(self, store: Store, worker: str | None, name: str) -> None:
        self.store, self.worker = store, worker
        self.error: BaseException | None = None
        self.sinks = 0  # opened and not yet closed
        self._queue: queue.Queue[list[tuple[str, StoreSink, Any]]] = queue.Queue()
        self._held: list[tuple[str, StoreSink, Any]] | None = None
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._started = False

    def put(self, kind: str, sink: StoreSink, payload: Any = None) -> None:
        if not self._started:
            self._started = True
            self._thread.start()
        if self._held is not None:
            self._held.append((kind, sink, payload))
        else:
            self._queue.put([(kind, sink, payload)])

    @contextmanager
    def together(self) -> Iterator[None]:
        """What the sinks are handed inside reaches the thread at once (a pack's flush: one transaction)."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held:
                self._queue.put(held)

    def _drain(self) -> None:
        while self.sinks:
            items = self._queue.get()
            while not self._queue.empty():  # fold in what was queued meanwhile
                items += self._queue.get_nowait()
            rows: dict[StoreSink, list[Flush]] = {}
            for kind, sink, payload in items:
                if kind == "rows":
                    rows.setdefault(sink, []).append(payload)
                    continue
                self._write(rows)  # what was handed before it is in the database first
                rows = {}
                if kind == "checkpoint" and self.error is None:
                    sink._save(payload)
                elif kind == "end" and sink.gate is not None:
                    sink.gate.ended(sink.run_id)
                elif kind == "close":
                    self.sinks -= 1
                    sink._closed.set()
            self._write(rows)

    def _write(self, rows: dict[StoreSink, list[Flush]]) -> None:
        from workers.training import last_step

        if not rows or self.error is not None:
            return
        try:
            merged = {sink: merge_flushes(flushes) for sink, flushes in rows.items()}
            stop = self.store.record_many({sink.run_id: flush for sink, flush in merged.items()}, self.worker)
            reached = {sink: last_step(flush) for sink, flush in merged.items()}
            for sink, step in reached.items():
                sink.cancel_requested = stop[sink.run_id] or sink.cancel_requested
                if sink.gate is not None and step is not None:
                    sink.gate.recorded(sink.run_id, step)
            for sink, step in reached.items():  # judged once every mate written with it is in the database
                if sink.judge is not None and step is not None and sink.stop_reason is None:
                    sink.stop_reason = sink.judge(step)
        except BaseException as exc:  # surfaced in the training thread; later rows are dropped
            self.error = exc


class StoreSink:
    """A run's metrics, checkpoints and stop signals, written by a `_Writer` thread: its own, or its pack's.

    The write's answer (did someone press cancel? did the sweep's early-stopping rule say stop? does this worker
    still hold the run?) is what `should_stop` reports at the next flush. A failed write is raised in the training
    thread at the next `write`, or by `close`, which waits for everything handed before it.
    """

    def __init__(
        self, store: Store, run_id: int, judge: SweepJudge | None = None, worker: str | None = None,
        checkpoints: CheckpointStore | None = None, gate: PackGate | None = None, writer: _Writer | None = None,
    ) -> None:  # fmt: skip
        self.store, self.run_id, self.judge, self.worker, self.checkpoints = store, run_id, judge, worker, checkpoints
        self.gate = gate
        self.writer = writer if writer is not None else _Writer(store, worker, f"metrics-run-{run_id}")
        self.writer.sinks += 1
        self.cancel_requested = False
        self.stop_reason: str | None = None
        self.checkpointed: int | None = None  # the step of the last checkpoint saved
        self._closed = threading.Event()

    def _save(self, blob: bytes) -> None:
        from workers.training import load_state

        try:
            assert self.checkpoints is not None
            self.checkpoints.save(self.run_id, blob)
            self.checkpointed = checkpoint_step(load_state(blob))
        except Exception:  # the run goes on; it is only less resumable until the next checkpoint
            log.exception("run %s: saving its checkpoint failed", self.run_id)

    def _raise(self) -> None:
        if self.writer.error is not None:
            raise self.writer.error

    def write(self, rows: Flush) -> None:
        self._raise()
        if reporter.reporter is not None:
            reporter.reporter.progressed()  # the training thread is alive (see Reporter._stalled)
        self.writer.put("rows", self, rows)

    def save_checkpoint(self, step: int, blob: bytes) -> None:
        if self.checkpoints is not None:
            self.writer.put("checkpoint", self, blob)

    def together(self) -> AbstractContextManager[None]:
        """Hand a pack's flush to its writer as one (workers/packed.py)."""
        return self.writer.together()

    def end(self) -> None:
        """The member ended (a pack tells each member's sink): mates stop waiting for it once its rows are in."""
        self.writer.put("end", self)

    def should_stop(self) -> bool:
        return self.cancel_requested or self.stop_reason is not None or shutting_down.is_set()

    def close(self) -> None:
        """Wait until every written row (and checkpoint) is saved."""
        if not self._closed.is_set():
            self.writer.put("close", self)
            self._closed.wait()
        if self.gate is not None:
            self.gate.ended(self.run_id)
        self._raise()


def get_store() -> Store:
    return Store.from_url(get_settings().database_url)


def _judge(
    store: Store, sweep_id: int | None, run_id: int, steps: int, gate: PackGate | None = None
) -> SweepJudge | None:
    sweep = store.get_sweep(sweep_id) if sweep_id is not None else None
    if sweep is None:
        return None
    config = EarlyStopping.model_validate(sweep.spec.get("early_stopping") or {})
    return SweepJudge(store, run_id, sweep.id, config, steps, gate) if config.rule != "none" else None


@app.task(name=TRAIN_TASK, bind=True, max_retries=None)
def train(self: Any, run_id: int) -> str:
    """A message is a ticket, not an order to train `run_id`: the worker claims the run fair share says goes next
    in the ticket's queue (db.store.Store.dispatch_order), trains it, and goes on claiming (from any queue it
    consumes) until nothing waits that it may take. So the database decides the order, a worker never idles while
    runs it could train wait, and a lost, duplicated or redelivered message does no harm: each run is claimed once,
    atomically. The reconciler (workers/reconciler.py) sends a ticket where queued runs have none in flight."""
    from workers import training

    store, me = get_store(), worker_name()
    row = store.get_run(run_id)
    first = row.queue if row is not None else (self.request.delivery_info or {}).get("routing_key") or "auto"
    if _draining():  # hand the ticket on to another worker
        send_ticket(first, run_id)
        return "drained"
    device = training.resolve_device("cpu" if first == "cpu" else "auto")
    queues = [first] + [q for q in (reporter.reporter.queues if reporter.reporter else []) if q != first]
    done: list[str] = []
    while not shutting_down.is_set() and not _draining():
        claimed = None
        for name in queues:
            if name == "cuda" and device.type != "cuda":
                continue
            claimed, _blocked = store.claim_next(name, me, str(device))
            if claimed is not None:
                break
        if claimed is None:
            break  # nothing this worker may take now (owners at their limit wait for the reconciler's next ticket)
        if claimed.pack_id is not None:
            members = store.pack_held(claimed.pack_id, me)  # claimed with it, in one statement
            cap = _pack_cap(claimed, device)
            for extra in members[cap:]:  # more than this worker's memory holds: another worker takes them
                store.hand_back(extra.id, me, f"worker {me} has memory for {cap} members of pack {claimed.pack_id}")
            done.extend(f"{r}:{status}" for r, status in train_pack(store, members[:cap], me).items())
        else:
            done.append(f"{claimed.id}:{train_one(store, claimed, me)}")
    return " ".join(done) or "skipped: nothing waits that this worker may take"


def _draining() -> bool:
    return reporter.reporter is not None and reporter.reporter.draining


def _pack_cap(row: RunInfo, device: Any) -> int:
    """How many members of `row`'s pack this worker takes: the setting, and half the memory it has free."""
    from workers.packed import memory_cap

    try:
        return max(1, min(get_settings().pack_size, memory_cap(parse_spec(row.spec), device)))
    except Exception:  # an invalid spec fails in train_pack, with its reason
        return get_settings().pack_size


def checkpoint_step(state: dict[str, Any]) -> int:
    """The step a checkpoint was taken at: a run alone's, or a pack member's (workers/packed.py)."""
    return int(state["counters"]["step"]) if "counters" in state else int(state["step"])


def _resume_point(run_id: int, checkpoints: CheckpointStore, packed: bool = False) -> tuple[bytes | None, int]:
    """The run's checkpoint and its step, or (None, 0) to start afresh: none, unreadable, or of the other kind (a
    run alone resumes from workers/training.py's checkpoints, a pack's member from workers/packed.py's)."""
    from workers import training

    blob = checkpoints.load(run_id)
    if blob is None:
        return None, 0
    try:
        state = training.load_state(blob)
        if ("counters" in state) == packed:
            log.warning("run %s: its checkpoint is of a run %s; starting from step 0", run_id,
                        "alone" if packed else "in a pack")  # fmt: skip
            return None, 0
        return blob, checkpoint_step(state)
    except Exception:
        log.exception("run %s: its checkpoint is unreadable; starting it again from step 0", run_id)
        return None, 0


def train_one(store: Store, row: RunInfo, me: str) -> str:
    """Train one claimed run, from its checkpoint if an earlier worker left one, and record how it ended."""
    from workers import training

    run_id, checkpoints = row.id, get_checkpoints()
    try:
        spec = parse_spec(row.spec)
        torch_device = training.resolve_device(spec.device)
    except Exception as exc:
        store.finish(run_id, "failed", f"{type(exc).__name__}: {exc}", worker=me)
        return "failed"
    blob, start = _resume_point(run_id, checkpoints)
    store.begin_attempt(run_id, start, me)
    sink = StoreSink(store, run_id, _judge(store, row.sweep_id, run_id, spec.steps), me, checkpoints)
    if reporter.reporter is not None:
        reporter.reporter.progressed()
        reporter.reporter.run_id = run_id
    try:
        try:
            outcome = training.run(spec, sink, torch_device, resume=blob)
        finally:
            sink.close()  # every metric (and the last checkpoint) is saved before the status changes
            if reporter.reporter is not None:
                reporter.reporter.run_id = None
    except Exception as exc:
        log.exception("run %s failed", run_id)
        if store.finish(run_id, "failed", f"{type(exc).__name__}: {exc}", worker=me):
            checkpoints.delete(run_id)
        return "failed"
    return _conclude(store, run_id, me, outcome, sink, checkpoints)


def _conclude(store: Store, run_id: int, me: str, outcome: Any, sink: StoreSink, checkpoints: CheckpointStore) -> str:
    """Record how a run this worker trained ended: completed, diverged, cancelled, stopped early, or handed back."""
    now = store.get_run(run_id)
    if now is None or now.worker != me or now.status != "running":  # deleted, or taken for lost and moved on
        return "lost"
    if outcome.status == "cancelled" and sink.stop_reason and not sink.cancel_requested:
        status, message = "stopped", f"stopped early at step {outcome.steps}: {sink.stop_reason}"
    elif outcome.status == "cancelled" and not sink.cancel_requested:  # this worker is shutting down
        where = f"its checkpoint at step {sink.checkpointed}" if sink.checkpointed else "step 0 (no checkpoint)"
        store.hand_back(run_id, me, f"worker {me} shut down at step {outcome.steps}; the next resumes from {where}")
        return "handed back"
    else:
        status, message = outcome.status, outcome.message
    if store.finish(run_id, status, message or None, worker=me):
        checkpoints.delete(run_id)
    return status


def train_pack(store: Store, members: Sequence[RunInfo], me: str) -> dict[int, str]:
    """Train claimed members of one pack together (workers/packed.py), each resuming from its own checkpoint.

    Members whose checkpoints are at different steps cannot share a step counter: the largest group that can (the
    furthest on a tie) trains now, the others go straight back to the queue and train as a pack of their own.
    Each member keeps its own sink (metrics, early stopping, cancel, checkpoints) and ends on its own."""
    from workers import training
    from workers.packed import run_pack

    checkpoints, results = get_checkpoints(), {}
    ready: list[tuple[RunInfo, Any, bytes | None, int]] = []
    for row in members:
        try:
            spec = parse_spec(row.spec)
            training.resolve_device(spec.device)
        except Exception as exc:
            store.finish(row.id, "failed", f"{type(exc).__name__}: {exc}", worker=me)
            results[row.id] = "failed"
            continue
        blob, start = _resume_point(row.id, checkpoints, packed=True)
        ready.append((row, spec, blob, start))
    if not ready:
        return results
    by_step: dict[int, list[tuple[RunInfo, Any, bytes | None, int]]] = {}
    for item in ready:
        by_step.setdefault(item[3], []).append(item)
    step, group = max(by_step.items(), key=lambda kv: (len(kv[1]), kv[0]))
    for other_step, others in by_step.items():
        if other_step != step:
            for row, *_ in others:
                store.hand_back(row.id, me, f"its checkpoint (step {other_step}) is not at its pack's (step {step}); "
                                "it trains with the members at its step")  # fmt: skip
                results[row.id] = "handed back"
    rows = [row for row, *_ in group]
    specs = [spec for _, spec, _, _ in group]
    for row in rows:
        store.begin_attempt(row.id, step, me)
    gate, writer = PackGate([row.id for row in rows]), _Writer(store, me, f"metrics-pack-{rows[0].pack_id}")
    sinks = [
        StoreSink(store, row.id, _judge(store, row.sweep_id, row.id, spec.steps, gate), me, checkpoints, gate, writer)
        for row, spec in zip(rows, specs, strict=True)
    ]
    if reporter.reporter is not None:
        reporter.reporter.progressed()
        reporter.reporter.run_id, reporter.reporter.run_ids = rows[0].id, [r.id for r in rows]
    resume = [blob for *_, blob, _ in group] if step else None
    try:
        try:
            outcomes = run_pack(specs, sinks, training.resolve_device(specs[0].device), resume=resume)  # type: ignore[arg-type]
        finally:
            errors = []
            for sink in sinks:
                try:
                    sink.close()
                except Exception as exc:
                    errors.append(exc)
            if reporter.reporter is not None:
                reporter.reporter.run_id, reporter.reporter.run_ids = None, []
            if errors:
                raise errors[0]
    except Exception as exc:
        log.exception("pack %s failed", rows[0].pack_id)
        for row in rows:
            if store.finish(row.id, "failed", f"{type(exc).__name__}: {exc}", worker=me):
                checkpoints.delete(row.id)
            results[row.id] = "failed"
        return results
    for row, outcome, sink in zip(rows, outcomes, sinks, strict=True):
        results[row.id] = _conclude(store, row.id, me, outcome, sink, checkpoints)
    return results


@signals.worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    shutting_down.set()
    reporter.stop()


@signals.worker_ready.connect
def _start_reporting(sender: Any = None, **_: Any) -> None:
    """Report this worker every few seconds (device, state, run, CPU/GPU use) for the Workers page."""
    reporter.start(getattr(sender, "hostname", "") or "", get_settings().worker_report_s)


@signals.worker_init.connect
def _warm_up(**_: Any) -> None:
    """Pay for lazy imports before the first run, not during it: the first optimizer step imports torch._dynamo
    (~1 s), and the first task imports scikit-learn (~1 s). A two-step run on a tiny task warms every path the
    loop takes, so a user's first run shows its first points as fast as any later one."""
    import torch

    from workers import training

    warm = parse_spec({"task": {"name": "moons-mlp", "n_samples": 50}, "optimizer": "adamw", "steps": 2,
                       "eval_every": 1, "batch": {"size": 8}})  # fmt: skip
    training.run(warm, training.ListSink(), torch.device("cpu"))
    TASKS["digits-mlp"].build(seed=0, **TASKS["digits-mlp"].defaults)  # reads sklearn's digits once
    from workers.reconciler import reconcile

    reconcile(get_store())  # runs lost while no worker ran go back to the queue now, not at the first report
