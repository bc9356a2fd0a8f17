"""A worker's report of itself, every few seconds from a thread beside the training: its device, what it is
doing, CPU and memory use (and the GPU's, through NVML, where there is one). The Workers page reads these rows;
an admin's drain request comes back in the answer, and the worker then stops consuming its queues (it finishes
the run it has)."""

from __future__ import annotations

import logging
import socket
import threading
import time

log = logging.getLogger(__name__)


def describe_device(kind: str) -> str:
    """What the worker trains on, in words: the GPU's name and memory, or the CPU's cores."""
    import os

    if kind == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    return f"CPU, {os.cpu_count()} cores"


def sample_stats(kind: str) -> dict[str, float]:
    """CPU and memory of this machine; the GPU's utilisation and memory where NVML answers."""
    import psutil

    stats: dict[str, float] = {
        "cpu_percent": float(psutil.cpu_percent(interval=None)),
        "memory_percent": float(psutil.virtual_memory().percent),
    }
    if kind == "cuda":
        try:
            import os

            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
            util, memory = pynvml.nvmlDeviceGetUtilizationRates(handle), pynvml.nvmlDeviceGetMemoryInfo(handle)
            stats.update(gpu_util_percent=float(util.gpu), gpu_memory_used=float(memory.used),
                         gpu_memory_total=float(memory.total))  # fmt: skip
        except Exception as exc:  # no NVML (a container without the driver's library): CPU figures only
            log.debug("NVML unavailable: %s", exc)
    return stats


class Reporter(threading.Thread):
    def __init__(self, name: str, celery_name: str, kind: str, queues: list[str], interval: float) -> None:
        super().__init__(name="optlab-reporter", daemon=True)
        self.worker, self.celery_name, self.kind, self.queues, self.interval = name, celery_name, kind, queues, interval
        self.device = describe_device(kind)
        self.run_id: int | None = None
        self.run_ids: list[int] = []  # every member of the pack it trains (run_id is the first)
        self.draining = False
        self.stopped = threading.Event()
        self.progress_at = time.monotonic()  # the training thread's last sign of life (a run begun, a flush)
        self.stalled = False

    def progressed(self) -> None:
        """Called by the training thread as it begins a run and at each flush."""
        self.progress_at = time.monotonic()
        self.stalled = False

    def _stalled(self) -> bool:
        """Whether the run in training has handed over nothing for `stall_s`: a step that never returns. Its runs
        then get no heartbeat, so the reconciler (any worker's) takes them for lost and requeues them to resume
        from their checkpoints elsewhere; if the step ever returns, its late flush is refused and it stops."""
        from workers.settings import get_settings
        from workers.tasks import get_store

        limit = get_settings().stall_s
        runs = list(self.run_ids) or ([self.run_id] if self.run_id is not None else [])
        if not runs or not limit or time.monotonic() - self.progress_at <= limit:
            return False
        if not self.stalled:
            self.stalled = True
            reason = (f"worker {self.worker} has handed over no metrics for {limit:g} s: a step that does not return "
                      "(a deadlocked data loader, a wedged GPU?); it stops heartbeating the run, so it goes back to "
                      "the queue as lost")  # fmt: skip
            get_store().note(runs, self.worker, reason)
            log.error("%s", reason)
        return True

    def report(self, state: str | None = None) -> bool:
        from workers.tasks import get_store

        stalled = self._stalled()
        drain = get_store().worker_heartbeat(
            self.worker, celery_name=self.celery_name, host=socket.gethostname(), kind=self.kind, device=self.device,
            state=state or ("stalled" if stalled else "training" if self.run_id else "idle"), run_id=self.run_id,
            stats=sample_stats(self.kind), run_ids=list(self.run_ids), beat=not stalled,
        )  # fmt: skip
        if drain and not self.draining:
            self.draining = True
            self._stop_consuming()
        elif not drain and self.draining:
            self.draining = False
            self._resume_consuming()
        return drain

    def _stop_consuming(self) -> None:
        from workers.celery_app import app

        for queue in self.queues:  # applied by the worker's own loop, between runs
            app.control.cancel_consumer(queue, destination=[self.celery_name])
        log.warning("draining: this worker finishes its run and takes no more")

    def _resume_consuming(self) -> None:
        from workers.celery_app import app

        for queue in self.queues:
            app.control.add_consumer(queue, destination=[self.celery_name])
        log.warning("no longer draining: this worker takes runs again")

    def run(self) -> None:
        from workers.reconciler import reconcile
        from workers.tasks import get_store

        while not self.stopped.wait(self.interval):
            try:
                self.report()
            except Exception:  # a database hiccup must not end the reports
                log.exception("worker report failed")
            try:
                reconcile(get_store())  # lost runs back to the queue, a message for every queue that needs one
            except Exception:
                log.exception("reconciling the queue failed")

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.report(state="stopped")
        except Exception:
            log.exception("last worker report failed")


reporter: Reporter | None = None


def start(celery_name: str, interval: float) -> Reporter:
    global reporter
    import torch

    from db.store import worker_name

    kind = "cuda" if torch.cuda.is_available() else "cpu"
    reporter = Reporter(worker_name(), celery_name, kind, [kind, "auto"], interval)
    reporter.report()
    reporter.start()
    return reporter


def stop() -> None:
    if reporter is not None:
        reporter.stop()
