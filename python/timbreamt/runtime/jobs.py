"""A batch of files on one machine: each file transcribed and written in isolation, optionally by
several worker processes.

``transcribe_file`` turns every failure of one file into a ``FileResult`` with its one-line error, so a
bad file never stops the others. ``run_batch`` runs the files in this process (``jobs`` = 1) or in
``jobs`` worker processes (started with forkserver, or spawn where there is none: no fork of a process
holding onnxruntime threads), each loading the model once with its share of the threads. A worker that
dies (a crash in a native library, the kernel's OOM killer) fails only the file it held; a new worker
takes its place. Outputs do not depend on ``jobs``: the same model and options give the same bytes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import TimbreamtError, first_line

# a worker's process is polled this often (seconds) while waiting for results, to notice a crash
POLL_SECONDS = 0.2
# Fault injection for the isolation test only: a worker given a file of this name dies abruptly, as a
# crash in native code would. Unset in normal use.
CRASH_ENV = "TIMBREAMT_TEST_CRASH_ON"


@dataclass
class FileResult:
    """What happened to one input: ok with its figures and written files, or its one-line error."""

    path: str
    ok: bool
    error: str = ""
    duration: float = 0.0          # seconds of audio read
    n_notes: int = 0
    n_tracks: int = 0
    written: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0           # wall time of this file


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, as a container sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_job(jobs: int, cpus: int | None = None) -> int:
    """onnxruntime threads for each of ``jobs`` workers, so they do not oversubscribe the machine."""
    return max(1, (cpus or cpu_count()) // max(1, jobs))


def transcribe_file(transcriber, path: str | Path, paths: dict[str, Path], options: dict, overwrite: bool,
                    progress: Callable[[float], None] | None = None) -> FileResult:
    """Transcribe one file and write its outputs (runtime/outputs.py: as a set). Never raises for a
    problem of this file: the result carries the error."""
    from .outputs import write_outputs

    t0 = time.perf_counter()
    name = os.fsdecode(path)
    if os.environ.get(CRASH_ENV) and Path(name).name == os.environ[CRASH_ENV]:
        os.abort()
    try:
        result = transcriber.transcribe(path, progress=progress, **options)
        written = write_outputs(result, paths, overwrite=overwrite)
    except (TimbreamtError, ValueError, OSError, MemoryError) as exc:
        message = first_line(exc)
        if isinstance(exc, MemoryError):
            message = "out of memory"
        if not isinstance(exc, TimbreamtError) and name not in message:
            message = f"{name}: {message}"
        return FileResult(name, False, error=message, seconds=time.perf_counter() - t0)
    return FileResult(name, True, duration=result.duration, n_notes=result.n_notes, n_tracks=len(result.tracks),
                      written=[os.fsdecode(w) for w in written], warnings=list(result.warnings),
                      seconds=time.perf_counter() - t0)


def _worker(model: str, threads: int, options: dict, overwrite: bool, wid: int, tasks, results) -> None:
    from .transcriber import Transcriber

    try:
        transcriber = Transcriber(model, threads)
    except BaseException as exc:     # reported to the parent, which stops the batch
        results.put(("fatal", wid, -1, str(exc) or type(exc).__name__))
        return
    while True:
        task = tasks.get()
        if task is None:
            return
        index, path, paths = task
        results.put(("start", wid, index, None))
        results.put(("done", wid, index, transcribe_file(transcriber, path, paths, options, overwrite)))


def _context():
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_batch(tasks: Sequence[tuple[Path, dict[str, Path]]], model: str, options: dict, overwrite: bool = False,
              jobs: int = 1, threads: int = 2, on_result: Callable[[FileResult], None] | None = None,
              transcriber=None, progress_for: Callable[[Path], object] | None = None) -> list[FileResult]:
    """Transcribe ``tasks`` [(input, {format: output path})]; results in input order. ``on_result`` is
    called as each file finishes (in completion order). jobs = 1 uses ``transcriber`` (or loads one) in
    this process; ``progress_for(path)`` may give a context manager yielding a progress callback."""
    results: list[FileResult | None] = [None] * len(tasks)
    if jobs <= 1 or len(tasks) <= 1:
        from contextlib import nullcontext

        from .transcriber import Transcriber

        transcriber = transcriber or Transcriber(model, threads)
        for i, (path, paths) in enumerate(tasks):
            with (progress_for(path) if progress_for else nullcontext(None)) as progress:
                results[i] = transcribe_file(transcriber, path, paths, options, overwrite, progress)
            if on_result:
                on_result(results[i])
        return results  # type: ignore[return-value]
    return _run_workers(tasks, model, options, overwrite, min(jobs, len(tasks)), threads, on_result, results)


def _run_workers(tasks, model, options, overwrite, jobs, threads, on_result, results):
    ctx = _context()
    inbox = ctx.Queue()
    workers: dict[int, tuple] = {}          # wid -> (process, its task queue)
    holding: dict[int, int | None] = {}     # wid -> index of the file it holds
    todo = list(range(len(tasks)))[::-1]
    next_wid = 0

    def start_worker() -> int:
        nonlocal next_wid
        wid, next_wid = next_wid, next_wid + 1
        q = ctx.Queue()
        p = ctx.Process(target=_worker, args=(str(model), threads, options, overwrite, wid, q, inbox), daemon=True)
        p.start()
        workers[wid], holding[wid] = (p, q), None
        return wid

    def assign(wid: int) -> None:
        if todo:
            i = todo.pop()
            holding[wid] = i
            workers[wid][1].put((i, *tasks[i]))
        else:
            holding[wid] = None

    def record(i: int, res: FileResult) -> None:
        results[i] = res
        if on_result:
            on_result(res)

    def handle(msg) -> None:
        kind, wid, i, payload = msg
        if kind == "fatal":
            raise TimbreamtError(f"a worker could not load the model: {payload}")
        if kind == "done" and results[i] is None:
            record(i, payload)
            assign(wid)

    try:
        for _ in range(jobs):
            assign(start_worker())
        while any(r is None for r in results):
            try:
                handle(inbox.get(timeout=POLL_SECONDS))
                continue
            except queue.Empty:
                pass
            for wid, (proc, _) in list(workers.items()):
                if proc.is_alive():
                    continue
                try:            # what it said before dying counts
                    while True:
                        handle(inbox.get_nowait())
                except queue.Empty:
                    pass
                i = holding.pop(wid, None)
                del workers[wid]
                if i is not None and results[i] is None:
                    code = proc.exitcode
                    how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    record(i, FileResult(os.fsdecode(tasks[i][0]), False,
                                         error=f"{os.fsdecode(tasks[i][0])}: the worker process died ({how}) "
                                               "while transcribing it"))
                if todo:
                    assign(start_worker())
    finally:
        for proc, q in workers.values():
            try:
                q.put(None)
            except (OSError, ValueError):
                pass
        for proc, _ in workers.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    return results
