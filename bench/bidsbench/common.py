"""What every part of the bids benchmark shares: the sizes of a run and small helpers."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

LIST_INDEX = "ix_tasks_client_email_created_at"


@dataclass(frozen=True)
class Sizes:
    label: str
    full: bool  # enforce the targets that need the full data size
    concurrency: int = 32
    withdraw_ops: int = 2000  # per timed round
    withdraw_rounds: int = 5  # per side, interleaved
    warmup_ops: int = 500  # per side
    path_ops: int = 2000  # request path: calls per timed round and side
    path_rounds: int = 5  # request path: interleaved rounds per RPC
    tasks: int = 1_000_000
    clients: int = 10_000
    deep_tasks: int = 60_000  # the one client paged deep
    deep_page: int = 1000
    page_size: int = 50
    index_samples: int = 200
    seq_samples: int = 9
    page_samples: int = 100

    def __post_init__(self) -> None:
        if self.deep_tasks < self.deep_page * self.page_size or self.deep_tasks >= self.tasks:
            raise ValueError("deep_tasks must fill deep_page pages and leave tasks for others")


FULL = Sizes("full", full=True)
QUICK = Sizes(
    "quick",
    full=False,
    withdraw_ops=400,
    withdraw_rounds=3,
    warmup_ops=200,
    path_ops=400,
    path_rounds=3,
    tasks=50_000,
    clients=500,
    deep_tasks=6_000,
    deep_page=100,
    index_samples=60,
    seq_samples=5,
    page_samples=30,
)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"
