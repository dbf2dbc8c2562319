"""Run a benchmark's independent runs one after another or side by side in processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_jobs(fn: Callable[..., T], calls: Sequence[tuple[tuple, dict[str, Any]]],
             jobs: int) -> list[T]:
    """``[fn(*args, **kwargs) for args, kwargs in calls]``, ``jobs`` at a time.

    With ``jobs`` > 1 (and more than one call) each call runs in its own freshly spawned
    process, so two 1-thread runs side by side on 2 cores get a core each; results keep the
    order of ``calls``.
    """
    if jobs > 1 and len(calls) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [pool.submit(fn, *args, **kwargs) for args, kwargs in calls]
            return [f.result() for f in futures]
    return [fn(*args, **kwargs) for args, kwargs in calls]
