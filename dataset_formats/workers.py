"""How batches run (:func:`run_batches`: in this process, or in worker processes), and how an
interrupted multi-process conversion stops.

``multiprocessing.Pool`` is not safe against an exception raised at an arbitrary point of the
thread that owns it, and Ctrl-C (or the CLI's SIGTERM handler) raises ``KeyboardInterrupt`` at an
arbitrary point. One such point hung conversions: a signal that lands inside ``Pool()`` after its
worker-handler thread has started but before the pool has registered its clean-up leaves a pool
nobody terminates. At exit multiprocessing kills the workers; the handler thread, still running,
sees them die and forks replacements, which block forever on the task queue holding the parent's
stdout and stderr (so a caller waiting for the output waits forever, though the parent has gone).

So while a pool exists SIGINT and SIGTERM are only recorded (:class:`InterruptsHeld`); the loop
that feeds the pool looks at the record between steps (at least every 0.1 s), stops the pool
completely, and only then hands the signal to the handler that was installed before, which
raises ``KeyboardInterrupt`` (Ctrl-C, the CLI's SIGTERM) or ends the process (default SIGTERM).
A second signal while the first is held acts at once, in case the clean-up itself is stuck.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from .errors import RecordError
from .pipeline import BatchProcessor, BatchResult, ConvertStats, _Prepared, error_from_entry, reject_entry
from .reading import RowBatch

#: How often (seconds) the parent looks for a held signal while it waits for a worker.
POLL_SECONDS = 0.1
#: How long stopping the pool may take before the workers still alive are killed.
STOP_SECONDS = 15.0


class _Interrupted(BaseException):
    """Raised inside a held block when a signal was recorded; turned back into the signal on exit."""


class InterruptsHeld:
    """A block in which SIGINT and SIGTERM are recorded instead of acting where they land.

    Only the main thread receives Python signal handlers, so elsewhere this does nothing. Signals
    that are ignored (``SIG_IGN``) or whose handler was not set from Python are left alone.
    On leaving the block the previous handlers come back, and a recorded signal is delivered to
    them (unless the block ends because its generator was closed: then the caller has already
    stopped for another reason).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptsHeld:  # noqa: PYI034 - Python 3.10 has no typing.Self
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self.SIGNALS:
            current = signal.getsignal(signum)
            if current is None or current == signal.SIG_IGN:
                continue
            self._previous[signum] = signal.signal(signum, self._record)
        return self

    def _record(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second signal: stop waiting for a clean stop
            raise KeyboardInterrupt
        self.received = signum

    def check(self) -> None:
        """Raise (to leave the block) if a signal has been recorded."""
        if self.received is not None:
            raise _Interrupted

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self.received is None or exc_type is GeneratorExit:
            return False
        signal.raise_signal(self.received)  # the previous handler runs now (and normally raises)
        raise KeyboardInterrupt  # a handler that returned: the work is stopped all the same


_WORKER: BatchProcessor | None = None


def _init_worker(processor: BatchProcessor) -> None:
    global _WORKER
    _WORKER = processor
    # A forked worker inherits the parent's handlers. Workers die on SIGTERM (how Pool.terminate
    # stops them) and leave Ctrl-C, which a terminal sends to the whole process group, to the parent.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_in_pool(
    processor: BatchProcessor, batches: Iterable[tuple[str, RowBatch]], num_proc: int
) -> Iterator[BatchResult]:
    """Process ``(path, rows)`` batches in ``num_proc`` worker processes; results in input order.

    At most ``2 * num_proc`` batches are in flight, so memory stays bounded on large inputs.
    SIGINT/SIGTERM stop the pool completely before they act (see the module docstring).
    """
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    # Each worker is one process; the tokenizer's own thread pool would only oversubscribe the CPUs.
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with InterruptsHeld() as held:
            others = set(multiprocessing.active_children())
            pool = context.Pool(num_proc, initializer=_init_worker, initargs=(processor,))
            try:
                pending: deque = deque()
                for item in batches:
                    held.check()
                    pending.append(pool.apply_async(_work, (item,)))
                    if len(pending) >= 2 * num_proc:
                        yield _next(pending, held)
                while pending:
                    yield _next(pending, held)
            finally:
                _stop(pool, others)
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _stop(pool: Any, others: set) -> None:
    """``pool.terminate()``, bounded in time.

    Its clean-up can block for good on a worker killed halfway through sending a result (the
    result thread waits for the rest of the message). After :data:`STOP_SECONDS` the pool's
    workers still alive (children that were not there before the pool) are killed and the
    stuck clean-up is left to its daemon thread, which ends with the interpreter.
    """
    stopper = threading.Thread(target=pool.terminate, name="convert-pool-stop", daemon=True)
    stopper.start()
    stopper.join(STOP_SECONDS)
    if stopper.is_alive():
        for child in set(multiprocessing.active_children()) - others:
            child.kill()
            child.join(5)


def _work(item: tuple[str, RowBatch]) -> BatchResult:
    assert _WORKER is not None
    path, rows = item
    try:
        return _WORKER.process(path, rows)
    except RecordError as exc:  # sent back as data: RecordError does not pickle with its fields
        entry = reject_entry(exc)
        entry["detail"] = exc.detail
        return BatchResult(None, ConvertStats(), [], error=entry)


def _next(pending: deque, held: InterruptsHeld) -> BatchResult:
    result = pending.popleft()
    while not result.ready():
        held.check()
        result.wait(POLL_SECONDS)
    held.check()
    done = result.get()
    if done.error is not None:
        raise error_from_entry(done.error)
    return done


# running batches -------------------------------------------------------------------------------


def run_batches(
    processor: BatchProcessor, batches: Iterable[tuple[str, RowBatch]], num_proc: int = 1
) -> Iterator[BatchResult]:
    """Process ``(path, rows)`` batches in order, in this process or in ``num_proc`` workers.

    With workers (:func:`run_in_pool`) at most ``2 * num_proc`` batches are in flight,
    so memory stays bounded on large inputs, and Ctrl-C or SIGTERM stop every worker before the
    interrupt reaches the caller.
    """
    if num_proc <= 1:
        yield from _run_overlapped(processor, batches)
        return
    yield from run_in_pool(processor, batches, num_proc)


def _run_overlapped(
    processor: BatchProcessor, batches: Iterable[tuple[str, RowBatch]]
) -> Iterator[BatchResult]:
    """One process: a helper thread reads, adapts and renders batch k+1 while batch k is tokenized.

    The fast tokenizer releases the GIL while it encodes, so the Python half of the next batch
    runs alongside it; results stay in input order.
    """
    source = iter(batches)

    def prepare_next() -> _Prepared | None:
        item = next(source, None)
        return None if item is None else processor.prepare(*item)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="convert-prepare") as pool:
        future = pool.submit(prepare_next)
        while True:
            prepared = future.result()
            if prepared is None:
                return
            future = pool.submit(prepare_next)
            yield processor.finish(prepared)
