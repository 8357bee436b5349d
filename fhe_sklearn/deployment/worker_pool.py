"""Worker processes that deserialize and run ciphertexts for the HTTP server.

concrete's deserializers hold the GIL and can spin for tens of seconds on a crafted input
(while printing megabytes of native stack trace): running them in the server's process would
stall every other request. Each worker loads the compiled model once, keeps the evaluation keys
it last used in memory, and is killed and replaced when a task overruns its time limit or the
worker dies.

Messages on the worker's pipe are raw bytes (a tag, then a payload), never pickles: a worker
handles untrusted input, so the server must not unpickle what it sends back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import multiprocessing
import os
import signal
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from .wire import TUPLE_MAGIC, is_packed, unpack

logger = logging.getLogger("fhe_sklearn.server")

READY, DESERIALIZED, RESULT, ERROR = b"R", b"D", b"O", b"E"
STARTUP_TIMEOUT = 300.0
MAX_MESSAGE = 500


class TaskError(Exception):
    """A task failed; ``status`` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class _Answered(TaskError):
    """A task error reported by a worker that is still healthy."""


def _die_with_parent() -> None:
    # Linux: the kernel kills the worker when the thread that started it ends (a thread of the
    # event loop's executor, which lives as long as the server), even mid-task
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _error(kind: str, message: str) -> bytes:
    return ERROR + json.dumps({"kind": kind, "message": message[:MAX_MESSAGE]}).encode()


def worker_main(conn: Any, deployment_dir: str, key_cache: int) -> None:
    """Body of a worker process: load the model, then serve tasks from ``conn``."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    # concrete writes native stack traces on malformed input: keep them out of the server log
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    from concrete import fhe

    from .fhe_model import FHEModelServer

    try:
        server = FHEModelServer(deployment_dir).load()
    except Exception as err:  # reported to the server, which refuses to start
        conn.send_bytes(_error("model", f"{type(err).__name__}: {err}"))
        os._exit(1)
    conn.send_bytes(READY)
    cache: OrderedDict[str, Any] = OrderedDict()

    def evaluation_keys(key_id: str, path: str) -> Any:
        if key_id in cache:
            cache.move_to_end(key_id)
            return cache[key_id]
        keys = FHEModelServer.load_evaluation_keys(Path(path).read_bytes())
        cache[key_id] = keys
        while len(cache) > key_cache:
            cache.popitem(last=False)
        return keys

    while True:
        try:
            task = json.loads(conn.recv_bytes())
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)
        if task["op"] == "keys":
            try:
                FHEModelServer.load_evaluation_keys(Path(task["path"]).read_bytes())
            except (ValueError, OSError) as err:
                conn.send_bytes(_error("keys", str(err)))
            else:
                conn.send_bytes(RESULT)
            continue
        try:  # each value of a several-input row (e.g. a training step) on its own
            for part in unpack(payload, TUPLE_MAGIC, "row") if is_packed(payload, TUPLE_MAGIC) else [payload]:
                fhe.Value.deserialize(part)
        except (RuntimeError, ValueError) as err:
            conn.send_bytes(_error("ciphertext", f"malformed ciphertext: {err}"))
            continue
        conn.send_bytes(DESERIALIZED)
        try:
            result = server.run(payload, evaluation_keys(task["key_id"], task["path"]))
        except (ValueError, OSError) as err:
            conn.send_bytes(_error("run", str(err)))
        except Exception as err:
            conn.send_bytes(_error("internal", type(err).__name__))
        else:
            conn.send_bytes(RESULT + result)


class _Worker:
    def __init__(self, context: Any, deployment_dir: str, key_cache: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child, deployment_dir, key_cache), daemon=True)
        self.process.start()
        child.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


async def _receive(conn: Any, timeout: float) -> bytes | None:
    """The next message from a worker; None on timeout; EOFError if the worker died."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, timeout)
    except asyncio.TimeoutError:
        return None
    finally:
        loop.remove_reader(fd)
    return conn.recv_bytes()


class WorkerPool:
    """A fixed number of worker processes with a bounded queue in front.

    Parameters
    ----------
    deployment_dir : str or Path
        Each worker loads its ``server.zip`` once.
    n_workers : int
        Ciphertexts processed at once.
    max_queue : int
        Requests waiting for a worker beyond those; more are refused (:class:`TaskError` 503
        with a ``retry_after`` estimate).
    timeout : float
        Seconds a task (key loading + execution) may take before its worker is killed.
    deserialize_timeout : float
        Seconds to deserialize one ciphertext (a valid one takes milliseconds) or one key
        upload (at least one second per 10 MB); longer means malformed.
    key_cache : int
        Evaluation key sets each worker keeps deserialized in memory.
    """

    def __init__(
        self,
        deployment_dir: str | Path,
        n_workers: int = 2,
        max_queue: int = 16,
        timeout: float = 600.0,
        deserialize_timeout: float = 10.0,
        key_cache: int = 2,
    ) -> None:
        if n_workers < 1 or max_queue < 0 or key_cache < 1 or timeout <= 0 or deserialize_timeout <= 0:
            raise ValueError("n_workers and key_cache must be >= 1, max_queue >= 0 and the timeouts > 0")
        self.deployment_dir = str(deployment_dir)
        self.n_workers, self.max_queue = n_workers, max_queue
        self.timeout, self.deserialize_timeout, self.key_cache = timeout, deserialize_timeout, key_cache
        self._context = multiprocessing.get_context("spawn")  # never fork a process running concrete
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._pending = 0
        self._mean_seconds = 1.0
        self._closed = False

    @property
    def alive(self) -> int:
        """Worker processes currently running."""
        return sum(worker.process.is_alive() for worker in self._workers)

    @property
    def pending(self) -> int:
        """Requests queued or running."""
        return self._pending

    async def _spawn(self) -> _Worker:
        worker = await asyncio.to_thread(_Worker, self._context, self.deployment_dir, self.key_cache)
        try:
            message = await _receive(worker.conn, STARTUP_TIMEOUT)
        except EOFError:
            message = _error("model", f"the worker exited with status {worker.process.exitcode}")
        if message != READY:
            await asyncio.to_thread(worker.kill)
            detail = "timed out" if message is None else json.loads(message[1:])["message"]
            raise RuntimeError(f"a worker could not load the model in {self.deployment_dir}: {detail}")
        self._workers.add(worker)
        return worker

    async def start(self) -> None:
        """Start the workers; raises RuntimeError if they cannot load the model."""
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.n_workers)))
        for worker in workers:
            self._idle.put_nowait(worker)

    async def close(self) -> None:
        """Stop accepting work and kill every worker process."""
        self._closed = True
        for worker in list(self._workers):
            await asyncio.to_thread(worker.kill)
        self._workers.clear()

    async def _replace(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        await asyncio.to_thread(worker.kill)
        while not self._closed:
            try:
                self._idle.put_nowait(await self._spawn())
                return
            except RuntimeError:
                logger.exception("cannot restart a worker; retrying in 5 s")
                await asyncio.sleep(5)

    def _admit(self) -> None:
        if self._pending >= self.n_workers + self.max_queue:
            waves = math.ceil((self._pending + 1) / self.n_workers)
            retry_after = max(1, min(600, math.ceil(waves * self._mean_seconds)))
            raise TaskError(503, f"the server is busy ({self._pending} requests in progress)", retry_after)

    async def _task(self, header: dict, payload: bytes, deserialize_timeout: float) -> bytes:
        self._admit()
        self._pending += 1
        try:
            worker = await self._idle.get()
            started = time.monotonic()
            healthy = False
            try:
                result = await self._exchange(worker, header, payload, deserialize_timeout)
                healthy = True
            except _Answered:
                healthy = True  # the worker reported the error itself: it is idle again
                raise
            finally:
                if healthy:
                    self._idle.put_nowait(worker)
                    self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.monotonic() - started)
                else:  # timed out, crashed or cancelled midway: its state is unknown
                    asyncio.get_running_loop().create_task(self._replace(worker))
            return result
        finally:
            self._pending -= 1

    async def _exchange(self, worker: _Worker, header: dict, payload: bytes, deserialize_timeout: float) -> bytes:
        """Send one task and read its answer."""
        try:
            worker.conn.send_bytes(json.dumps(header).encode())
            worker.conn.send_bytes(payload)
        except OSError:  # the worker died while idle (e.g. out of memory)
            logger.warning("a worker was found dead", extra={"exitcode": worker.process.exitcode})
            raise TaskError(503, "a worker is restarting", retry_after=5) from None
        what = "evaluation keys" if header["op"] == "keys" else "ciphertext"
        timeout = deserialize_timeout
        while True:
            try:
                message = await _receive(worker.conn, timeout)
            except (EOFError, OSError):
                logger.warning("a worker died during a task", extra={"exitcode": worker.process.exitcode})
                if timeout == deserialize_timeout:
                    raise TaskError(400, f"malformed {what}: the worker deserializing it crashed") from None
                raise TaskError(500, "internal server error") from None
            if message is None:
                logger.warning("a task overran its time limit; its worker is replaced", extra={"op": header["op"]})
                if timeout == deserialize_timeout:
                    raise TaskError(400, f"malformed {what}: not deserialized within {deserialize_timeout:g} s")
                raise TaskError(504, f"the execution exceeded the server's {self.timeout:g}-second limit")
            if message == DESERIALIZED:
                timeout = self.timeout
                continue
            break
        if message[:1] == RESULT:
            return message[1:]
        error = json.loads(message[1:])
        raise _Answered(500 if error["kind"] == "internal" else 400, error["message"])

    async def check_keys(self, path: Path) -> None:
        """Deserialize uploaded evaluation keys in a worker; TaskError 400 if malformed.

        Keys take longer than ciphertexts (6.4 s for 628 MB of tree-model keys on a busy
        2-core machine): the time limit grows by one second per 10 MB.
        """
        timeout = max(self.deserialize_timeout, path.stat().st_size / (10 * 2**20))
        await self._run_task({"op": "keys", "path": str(path)}, b"", timeout)

    async def run(self, key_id: str, keys_path: Path, ciphertext: bytes) -> bytes:
        """The serialized encrypted result of one serialized ciphertext."""
        header = {"op": "run", "key_id": key_id, "path": str(keys_path)}
        return await self._run_task(header, ciphertext, self.deserialize_timeout)

    async def _run_task(self, header: dict, payload: bytes, deserialize_timeout: float) -> bytes:
        try:
            return await self._task(header, payload, deserialize_timeout)
        except _Answered as err:
            raise TaskError(err.status, err.message) from None
