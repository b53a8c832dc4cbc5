"""Read ahead in a background thread, so the model does not wait on I/O.

Reading rows (h5py / zarr reads, sparse-to-dense conversion) and the model's forward /
backward passes both release the GIL for most of their work, so one reader thread
overlaps the next batches' reads with the current step. Items come out in order and
reading draws no random numbers, so results do not depend on prefetching.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

from torch.utils.data import DataLoader

T = TypeVar("T")

_DONE = object()


def _read_ahead(source: Iterable, items: queue.Queue, stop: threading.Event) -> None:
    """The reader thread: put ``(True, item)`` for each item of ``source``, then ``(True,
    _DONE)``, or ``(False, error)``; return early once ``stop`` is set."""

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in source:
            if not put((True, item)):
                return
    except BaseException as err:  # noqa: BLE001 - re-raised by the consumer
        put((False, err))
        return
    put((True, _DONE))


class Prefetcher(Iterator[T]):
    """Iterate over ``iterable`` with up to ``depth`` items read ahead by a daemon thread.

    The thread starts on the first ``next()``. Exceptions raised while reading are
    re-raised by ``next()``; :meth:`close` (also called on garbage collection) stops the
    thread after the item it is reading.
    """

    def __init__(self, iterable: Iterable[T], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._source = iterable
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        if self._thread is None:
            # the thread holds no reference to this object, so that dropping the iterator
            # (e.g. a training ended by an error) stops it through __del__
            self._thread = threading.Thread(
                target=_read_ahead, args=(self._source, self._queue, self._stop),
                name="transmodal-prefetch", daemon=True,
            )
            self._thread.start()
        ok, item = self._queue.get()
        if not ok:
            self._finished = True
            raise item
        if item is _DONE:
            self._finished = True
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the reader thread (pending items are dropped)."""
        self._stop.set()
        self._finished = True
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            try:
                thread.join(timeout=5)
            except RuntimeError:  # Ctrl+C inside start(): not known to have started (it
                # stops at the event if it has); the interrupt, not this, goes on (it was
                # replaced by "cannot join thread before it is started", losing the epochs)
                pass

    def __del__(self) -> None:  # pragma: no cover - timing of garbage collection
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


class PrefetchLoader(DataLoader):
    """A ``DataLoader`` whose iterator reads ``prefetch`` items ahead in a background thread.

    With ``prefetch=0`` it is a plain ``DataLoader``. Lightning may re-create the loader
    (e.g. to insert a distributed sampler); ``prefetch`` is kept as an attribute of the same
    name, so the copy prefetches too.
    """

    def __init__(self, dataset, *args, prefetch: int = 2, **kwargs) -> None:
        super().__init__(dataset, *args, **kwargs)
        self.prefetch = int(prefetch)
        # held (not weakly: one dropped by the trainer after an error may still be reading
        # when close() runs) until they are done
        self._readers: list[Prefetcher] = []

    def __iter__(self):
        it = super().__iter__()
        if self.prefetch <= 0:
            return it
        reader = Prefetcher(it, self.prefetch)
        self._readers = [r for r in self._readers if not r._finished] + [reader]
        return reader

    def close(self) -> None:
        """Stop the reader threads of this loader's iterators (a training that ended, also
        by an error: their threads would otherwise keep the data's files open)."""
        for reader in self._readers:
            reader.close()
        self._readers = []


__all__ = ["PrefetchLoader", "Prefetcher"]
