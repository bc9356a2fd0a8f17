"""Start one worker: `python -m workers`. It consumes `cuda,auto` when it sees a GPU, `cpu,auto` otherwise.

Run one per GPU with CUDA_VISIBLE_DEVICES=<index> python -m workers. Extra arguments go to `celery worker`.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    import torch

    from db.migrate import upgrade
    from workers.celery_app import app
    from workers.settings import get_settings

    upgrade(get_settings().database_url)
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    options = {"--pool": "solo", "--concurrency": "1", "--queues": f"{kind},auto", "--loglevel": "INFO"}
    options["--hostname"] = f"optlab-{kind}-{os.getpid()}@%h"
    flags = [part for pair in options.items() for part in pair]
    app.worker_main(["worker", *flags, "--without-gossip", "--without-mingle", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
