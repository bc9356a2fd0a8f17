"""Where workers keep each unfinished run's training state (workers/training.py's `Trainer.state_dict`, as bytes).

A directory every worker can read (the shared volume; `OPTLAB_CHECKPOINT_DIR`, default data/checkpoints), written
atomically: a temporary file in the same directory, fsync, rename over the old one, fsync the directory. A reader
sees the old checkpoint or the new one, never half of one, whatever kills the writer. A URL (`s3://bucket/ckpt`,
`gs://...`, anything fsspec has a filesystem for, once its package is installed) puts the file in an object store
instead, where one PUT replaces an object atomically.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class CheckpointStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.remote = "://" in root and not root.startswith("file://")
        if not self.remote:
            self.dir = Path(root.removeprefix("file://"))

    def _name(self, run_id: int) -> str:
        return f"run-{run_id}.pt"

    def save(self, run_id: int, blob: bytes) -> None:
        if self.remote:
            import fsspec

            with fsspec.open(f"{self.root.rstrip('/')}/{self._name(run_id)}", "wb") as out:
                out.write(blob)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self._name(run_id)}.", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.dir / self._name(run_id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        directory = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    def load(self, run_id: int) -> bytes | None:
        if self.remote:
            import fsspec

            try:
                with fsspec.open(f"{self.root.rstrip('/')}/{self._name(run_id)}", "rb") as source:
                    return bytes(source.read())
            except FileNotFoundError:
                return None
        try:
            return (self.dir / self._name(run_id)).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, run_id: int) -> None:
        if self.remote:
            import fsspec

            fs, path = fsspec.core.url_to_fs(f"{self.root.rstrip('/')}/{self._name(run_id)}")
            with contextlib.suppress(FileNotFoundError):
                fs.rm(path)
            return
        with contextlib.suppress(FileNotFoundError):
            (self.dir / self._name(run_id)).unlink()


def get_checkpoints() -> CheckpointStore:
    from workers.settings import get_settings

    return CheckpointStore(get_settings().checkpoint_dir)
