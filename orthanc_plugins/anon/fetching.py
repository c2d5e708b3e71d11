"""Reading a study's instances from raw ahead of the de-identification.

De-identification is CPU work in Python; reading from raw is waiting on the
network and on raw's disk. `prefetch_instances` keeps a few instances
arriving in threads of their own while the current one is de-identified, with
at most `prefetch` of them in memory, so neither waits for the other.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from orthanc_plugins.common.orthanc_api import OrthancApi

_DONE = object()


def prefetch_instances(
    make_client: Callable[[], OrthancApi],
    instance_ids: list[str],
    *,
    threads: int = 2,
    prefetch: int = 8,
) -> Iterator[tuple[str, bytes]]:
    """(raw instance ID, DICOM bytes) for every ID, in no particular order.

    The first error of a reader is raised here; stopping early (closing the
    generator) stops the readers.
    """
    todo: queue.SimpleQueue[str] = queue.SimpleQueue()
    for instance_id in instance_ids:
        todo.put(instance_id)
    done: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def read() -> None:
        client = make_client()
        try:
            while not stop.is_set():
                try:
                    instance_id = todo.get_nowait()
                except queue.Empty:
                    return
                _put_until_stopped(done, (instance_id, client.get(f"/instances/{instance_id}/file")), stop)
        except BaseException as exc:  # handed to the consumer, which raises it
            _put_until_stopped(done, exc, stop)
        finally:
            _put_until_stopped(done, _DONE, stop)

    readers = [threading.Thread(target=read, name="pixl-anon-fetch", daemon=True)
               for _ in range(max(1, min(threads, len(instance_ids))))]
    for reader in readers:
        reader.start()
    try:
        finished = 0
        while finished < len(readers):
            item = done.get()
            if item is _DONE:
                finished += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for reader in readers:
            reader.join()


def _put_until_stopped(done: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            done.put(item, timeout=0.2)
            return
        except queue.Full:
            continue
