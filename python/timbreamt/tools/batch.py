"""Transcribe a whole collection on Ray: one machine (Ray started in-process) or a cluster (``address``).

Design (why it is built this way):
- Ray core actors, not Ray Data: each worker is an actor holding one loaded model per model asked for,
  with ``num_cpus`` = its onnxruntime threads, so the CPUs a cluster schedules are the threads that run
  (no oversubscription). The driver keeps at most ``in_flight`` files queued per worker (one running, the
  next waiting), so memory stays bounded however large the collection and files finish in any order.
- The driver owns every write: workers return the Transcription (a few KB), the driver writes the outputs
  and the results manifest. So outputs need no shared storage; only the inputs must be readable by every
  worker at the same path (shared storage or a mounted bucket). The model graphs travel in the object store.
- Results manifest (JSON Lines, one record per file as it finishes, fsync'd): the batch's log and its
  resume state. A re-run skips a file whose last ``done`` record matches its size, mtime and options and
  whose outputs all exist; failed files are tried again. Outputs are written to a staging folder, the
  record is appended, then they are renamed into place. The record is the commit point: a re-run first
  finishes the renames of a batch killed between the two (`recover_staged`), so a batch killed at any point
  loses no result, redoes no recorded file and leaves no half-written output.
- Workers that die (killed, out of memory) are restarted by Ray and their file retried ``retries`` times;
  a file that still fails, or fails to decode, is recorded with a one-line error and the others go on.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ModelError, OutputError, TimbreamtError
from .batch_inputs import BatchError, Job, check_collisions, output_paths_for

RESULTS_NAME = "results.jsonl"
STAGING_NAME = ".timbreamt-staging"
DEFAULT_IN_FLIGHT = 2            # files queued per worker: one running, one ready to start when it ends
DEFAULT_RETRIES = 2              # re-runs of a file whose worker died (not of a file that fails to decode)
DEFAULT_THREADS = 1              # onnxruntime threads (= Ray CPUs) per worker: more workers beat more threads
CONNECT_TIMEOUT = 5.0            # seconds to wait for a cluster's address to answer before giving up
ERROR_CHARS = 300                # a manifest error is one line, at most this long
MIB = 1024 * 1024


def one_line(exc: BaseException | str) -> str:
    """The first non-empty line of an error, at most ERROR_CHARS long (the manifest holds one line)."""
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "") if text else ""
    if not isinstance(exc, str) and not isinstance(exc, TimbreamtError):
        line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line[:ERROR_CHARS] or "unknown error"


# ------------------------------------------------------------------------------------------------
# the worker (a Ray actor; plain class so it can be tested and used without Ray)

def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0      # Linux: KiB


class BatchWorker:
    """Holds loaded models (one Transcriber per model asked for) and transcribes one file per call.

    A model arrives with the call that first needs it: (spec, file name, graph bytes or a Ray object ref
    of them). On Ray the bytes live in the object store, so a worker on any node fetches them, and a
    restarted worker fetches them again; the graph is written to a private folder under its own name (a
    model's name comes from its file), so results equal `timbreamt transcribe`'s.
    """

    def __init__(self, threads: int) -> None:
        import tempfile
        import weakref

        self.threads = int(threads)
        self.folder = Path(tempfile.mkdtemp(prefix="timbreamt-models-"))
        weakref.finalize(self, shutil.rmtree, str(self.folder), True)
        self.loaded: dict = {}
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def _transcriber(self, model: tuple):
        from ..runtime.transcriber import Transcriber

        spec, filename, data = model
        if spec not in self.loaded:
            if not isinstance(data, bytes):
                import ray

                data = ray.get(data)
            path = self.folder / str(len(self.loaded)) / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self.loaded[spec] = Transcriber(path, threads=self.threads)
        return self.loaded[spec]

    def ready(self, model: tuple) -> str:
        """Load a model (a bad graph stops the batch here, with the model's own error)."""
        self._transcriber(model)
        return self.name

    def transcribe(self, path: str, options: dict, model: tuple) -> dict:
        """-> {'status': 'done'|'failed', 'result': Transcription|None, 'error', 'seconds', 'size',
        'mtime_ns', 'worker', 'worker_rss_mib'}. Never raises for a bad file: the error is returned."""
        t0 = time.perf_counter()
        out: dict = {"status": "failed", "result": None, "error": None, "worker": self.name}
        try:
            st = os.stat(path)
            out.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        except OSError:
            pass                      # the transcriber names the problem (no such file, ...)
        try:
            transcriber = self._transcriber(model)
            instruments = options.get("instruments", "auto")
            if instruments == "auto" and not transcriber.model.has_embedding:
                instruments = None    # as `timbreamt transcribe`: a note-only model gives one track
            out["result"] = transcriber.transcribe(
                path, instruments=instruments, onset_threshold=options.get("onset_threshold"),
                frame_threshold=options.get("frame_threshold"), min_note_ms=options.get("min_note_ms"),
                melodia=options.get("melodia"))
            out["status"] = "done"
        except Exception as exc:      # noqa: BLE001 - one file's failure, whatever it is, is a manifest line
            out["error"] = one_line(exc)
        out["seconds"] = round(time.perf_counter() - t0, 4)
        out["worker_rss_mib"] = round(_peak_rss_mib(), 1)
        return out


# ------------------------------------------------------------------------------------------------
# the results manifest

def read_results(path: Path) -> list[dict]:
    """Records of a results manifest, oldest first. A torn last line (a batch killed mid-write) is cut
    off the file so the next record starts on a line of its own."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    records = []
    for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise BatchError(f"{path}:{i}: not a results record (not JSON); move the file away to start afresh") from None
        if isinstance(rec, dict) and "path" in rec and "status" in rec:
            records.append(rec)
    return records


class ResultsLog:
    """Appends one JSON record a line, flushed and fsync'd, so a killed batch keeps every finished file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# ------------------------------------------------------------------------------------------------
# planning: what to run, what to skip

def resolve_model(spec: str) -> tuple[str, bytes]:
    """A model name (basicamt, septimbre) or a path -> (file name, graph bytes)."""
    from ..runtime.model import MODEL_NAMES, default_model_path

    path = default_model_path(spec) if spec in MODEL_NAMES else Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    return path.name, path.read_bytes()


def effective_options(job: Job, defaults: dict) -> dict:
    """The job's options over the batch's defaults; every name present (None: the model's default)."""
    opts = {"model": "septimbre", "instruments": "auto", "onset_threshold": None, "frame_threshold": None,
            "min_note_ms": None, "melodia": None}
    opts.update({k: v for k, v in defaults.items() if v is not None})
    opts.update(job.options)
    return opts


def fingerprint(options: dict, model_sha256: str) -> str:
    """What must be equal for an earlier result to stand: the options and the graph's bytes."""
    key = json.dumps({**options, "model": model_sha256}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Planned:
    job: Job
    options: dict
    fingerprint: str
    outputs: dict[str, Path]
    size: int | None
    mtime_ns: int | None
    may_replace: set[Path]          # outputs an earlier done record of this input wrote (ours to replace)


@dataclass
class BatchSummary:
    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    startup_seconds: float = 0.0     # Ray and the workers (models loaded) ready
    workers: int = 0
    worker_peak_rss_mib: dict[str, float] = field(default_factory=dict)
    results: Path | None = None
    first_finish: float | None = None   # perf_counter of the first and last file finished (steady rate)
    last_finish: float | None = None

    def steady_files_per_second(self) -> float | None:
        """Files per second between the first and the last file finished (start-up excluded)."""
        if self.done + self.failed < 2 or self.first_finish is None or self.last_finish == self.first_finish:
            return None
        return (self.done + self.failed - 1) / (self.last_finish - self.first_finish)


def plan(jobs: list[Job], out_dir: Path, formats: list[str], defaults: dict, model_sha: dict[str, str],
         records: list[dict], overwrite: bool) -> tuple[list[Planned], list[tuple[Planned, str]], int]:
    """Split jobs into (to run, to fail now with an error, number skipped as already done)."""
    last_done: dict[str, dict] = {}
    for rec in records:
        if rec.get("status") == "done":
            last_done[rec["path"]] = rec
    todo, refused, skipped = [], [], 0
    for job in jobs:
        opts = effective_options(job, defaults)
        fp = fingerprint(opts, model_sha[str(opts["model"])])
        outputs = output_paths_for(job, out_dir, formats)
        try:
            st = job.path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = None                   # the worker reports the problem (or can read it there)
        prev = last_done.get(str(job.path))
        ours = {out_dir / p for p in prev.get("outputs", [])} if prev else set()
        p = Planned(job, opts, fp, outputs, size, mtime, ours)
        if (prev and not overwrite and size is not None and prev.get("size") == size
                and prev.get("mtime_ns") == mtime and prev.get("fingerprint") == fp
                and all(o.is_file() and o in ours for o in outputs.values())):
            skipped += 1
            continue
        clash = [o for o in outputs.values() if o.exists() and o not in ours]
        if clash and not overwrite:
            refused.append((p, f"{clash[0]} exists (use --overwrite to replace it)"))
            continue
        todo.append(p)
    return todo, refused, skipped


def _record(p: Planned, out_dir: Path, status: str, error: str | None, reply: dict | None = None) -> dict:
    reply = reply or {}
    result = reply.get("result")
    return {
        "path": str(p.job.path), "rel": str(p.job.rel), "status": status,
        "duration": round(result.duration, 3) if result is not None else None,
        "notes": result.n_notes if result is not None else None,
        "tracks": len(result.tracks) if result is not None else None,
        "seconds": reply.get("seconds"), "error": error,
        "outputs": [str(o.relative_to(out_dir)) for o in p.outputs.values()] if status == "done" else [],
        "warnings": list(result.warnings) if result is not None else [],
        "size": reply.get("size", p.size), "mtime_ns": reply.get("mtime_ns", p.mtime_ns),
        "options": p.options, "fingerprint": p.fingerprint,
        "worker": reply.get("worker"), "worker_rss_mib": reply.get("worker_rss_mib"),
        "finished": round(time.time(), 3),
    }


def staged_path(staging: Path, output: Path) -> Path:
    """Where an output waits before its rename: one flat folder, named from the output's own path so that a
    re-run finds it again (`recover_staged`)."""
    return staging / f"{hashlib.sha256(str(output).encode()).hexdigest()[:20]}{output.suffix}"


def recover_staged(records: list[dict], out_dir: Path, staging: Path) -> int:
    """Finish the renames of a batch killed after appending a file's done record but before moving all its
    outputs into place. Returns the number of outputs moved."""
    last_done = {rec["path"]: rec for rec in records if rec.get("status") == "done"}
    moved = 0
    for rec in last_done.values():
        for rel in rec.get("outputs", []):
            out = out_dir / rel
            staged = staged_path(staging, out)
            if not out.exists() and staged.is_file():
                out.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, out)
                moved += 1
    return moved


def _finish_done(p: Planned, reply: dict, out_dir: Path, staging: Path, log: ResultsLog) -> dict:
    """Write the outputs (staged), append the record, then move the outputs into place."""
    from ..runtime.outputs import write_outputs

    staged = {f: staged_path(staging, o) for f, o in p.outputs.items()}
    try:
        write_outputs(reply["result"], staged, overwrite=True)
        for o in p.outputs.values():
            if o.parent.exists() and not o.parent.is_dir():
                raise OutputError(f"{o.parent} is not a folder")
            o.parent.mkdir(parents=True, exist_ok=True)
    except (TimbreamtError, OSError) as exc:
        rec = _record(p, out_dir, "failed", one_line(exc), reply)
        log.append(rec)
        for s in staged.values():
            s.unlink(missing_ok=True)
        return rec
    rec = _record(p, out_dir, "done", None, reply)
    log.append(rec)
    for f, o in p.outputs.items():
        os.replace(staged[f], o)
    return rec


# ------------------------------------------------------------------------------------------------
# Ray

def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """A HOST:PORT that nothing listens on: fail in seconds (Ray itself retries for minutes)."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise BatchError(f"cannot reach the Ray cluster at {address}: {one_line(exc)}") from None


def _start_ray(address: str | None, num_cpus: int | None):
    """Connect to a cluster, or start Ray in this process. Returns the ray module."""
    import logging

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")     # no network calls from a batch
    try:
        import ray
    except ImportError:
        raise BatchError("batch needs Ray: pip install 'timbreamt[cluster]' (ray[data]==2.60.0)") from None
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # "local": a new instance here, never the last `ray start` cluster of this machine that
            # ray.init() would otherwise join (or hang on, when it has gone)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    except Exception as exc:      # noqa: BLE001 - Ray raises many kinds; the user needs one line
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise BatchError(f"cannot start or reach {where}: {one_line(exc)}") from None
    return ray


def _ray_error(ray, exc: BaseException, retries: int) -> str:
    if isinstance(exc, ray.exceptions.RayActorError):
        return f"worker died while transcribing this file ({retries} retries): {one_line(exc)}"
    if isinstance(exc, ray.exceptions.RayTaskError):
        return one_line(exc.cause) if getattr(exc, "cause", None) is not None else one_line(exc)
    return one_line(exc)


def run_batch(jobs: list[Job], out_dir: str | Path, formats: list[str], defaults: dict | None = None,
              workers: int | None = None, threads: int = DEFAULT_THREADS, address: str | None = None,
              overwrite: bool = False, results: str | Path | None = None, retries: int = DEFAULT_RETRIES,
              in_flight: int = DEFAULT_IN_FLIGHT, progress: bool = True,
              on_record: Callable[[dict], None] | None = None) -> BatchSummary:
    """Transcribe ``jobs`` on a pool of Ray actors; write outputs under ``out_dir`` and one record a file
    to the results manifest (``out_dir/results.jsonl`` unless ``results``).

    defaults: the batch's options (OPTION_NAMES of batch_inputs; a job's own options win).
    workers: actors (default: the cluster's CPUs // threads); threads: onnxruntime threads and Ray CPUs
    per actor. address: an existing cluster ('auto', 'host:port', 'ray://...'), else Ray starts here.
    on_record: called on the driver with each record appended (tests, progress hooks).
    Raises BatchError/ModelError before any file is run when the batch cannot start.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir).expanduser().resolve()
    defaults = dict(defaults or {})
    if threads < 1 or (workers is not None and workers < 1) or in_flight < 1 or retries < 0:
        raise BatchError("workers, threads and in-flight files must be >= 1, retries >= 0")
    check_collisions(jobs, out_dir, formats)
    results_path = Path(results).expanduser().resolve() if results else out_dir / RESULTS_NAME
    specs = sorted({str(effective_options(j, defaults)["model"]) for j in jobs})
    models = {s: resolve_model(s) for s in specs}
    model_sha = {s: hashlib.sha256(data).hexdigest() for s, (_, data) in models.items()}
    records = read_results(results_path)
    staging = out_dir / STAGING_NAME
    recover_staged(records, out_dir, staging)
    todo, refused, skipped = plan(jobs, out_dir, formats, defaults, model_sha, records, overwrite)
    summary = BatchSummary(total=len(jobs), skipped=skipped, results=results_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)       # what is left was never recorded: it is redone
    log = ResultsLog(results_path)

    def note(rec: dict) -> None:
        if rec["status"] == "done":
            summary.done += 1
            summary.audio_seconds += rec["duration"] or 0.0
        else:
            summary.failed += 1
        if rec.get("worker") and rec.get("worker_rss_mib") is not None:
            w = rec["worker"]
            summary.worker_peak_rss_mib[w] = max(summary.worker_peak_rss_mib.get(w, 0.0), rec["worker_rss_mib"])
        if on_record:
            on_record(rec)

    try:
        for p, error in refused:
            rec = _record(p, out_dir, "failed", error)
            log.append(rec)
            note(rec)
        if todo:
            _run_pool(todo, models, out_dir, staging, log, note, summary, workers, threads, address, retries,
                      in_flight, progress, defaults)
    finally:
        log.close()
        shutil.rmtree(staging, ignore_errors=True)
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _run_pool(todo: list[Planned], models: dict, out_dir: Path, staging: Path, log: ResultsLog,
              note: Callable[[dict], None], summary: BatchSummary, workers: int | None, threads: int,
              address: str | None, retries: int, in_flight: int, progress: bool, defaults: dict) -> None:
    from tqdm import tqdm

    t0 = time.perf_counter()
    ray = _start_ray(address, None)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        n_workers = workers or max(1, cpus // threads)
        n_workers = min(n_workers, len(todo))
        if n_workers * threads > cpus:
            raise BatchError(f"{n_workers} workers x {threads} threads need {n_workers * threads} CPUs; "
                             f"the Ray cluster has {cpus}")
        actor_cls = ray.remote(BatchWorker).options(num_cpus=threads, max_restarts=-1, max_task_retries=retries)
        # the graphs go to the object store once; each call carries the ref of its model (held here for
        # the whole batch), which a worker fetches the first time it needs that model
        shipped = {spec: (spec, name, ray.put(data)) for spec, (name, data) in models.items()}
        actors = [actor_cls.remote(threads) for _ in range(n_workers)]
        default_spec = str(effective_options(Job(Path("."), Path(".")), defaults)["model"])
        first_spec = str(todo[0].options["model"]) if default_spec not in models else default_spec
        try:
            ray.get([a.ready.remote(shipped[first_spec]) for a in actors])
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, TimbreamtError):
                raise cause from None
            raise BatchError(f"the workers could not start: {_ray_error(ray, exc, retries)}") from None
        summary.workers = n_workers
        summary.startup_seconds = time.perf_counter() - t0

        queue = iter(todo)
        pending: dict = {}                     # object ref -> (planned, actor)

        def submit(actor) -> None:
            p = next(queue, None)
            if p is not None:
                ref = actor.transcribe.remote(str(p.job.path), p.options, shipped[str(p.options["model"])])
                pending[ref] = (p, actor)

        for actor in actors:
            for _ in range(in_flight):
                submit(actor)
        bar = tqdm(total=len(todo), unit="file", desc="batch", disable=not progress or not sys.stderr.isatty(),
                   dynamic_ncols=True)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                p, actor = pending.pop(ref)
                try:
                    reply = ray.get(ref)
                except Exception as exc:           # noqa: BLE001 - the worker died or Ray lost the result
                    reply = {"status": "failed", "error": _ray_error(ray, exc, retries)}
                submit(actor)                      # keep the worker busy while the outputs are written
                if reply["status"] == "done":
                    rec = _finish_done(p, reply, out_dir, staging, log)
                else:
                    rec = _record(p, out_dir, "failed", reply["error"], reply)
                    log.append(rec)
                now = time.perf_counter()
                summary.first_finish = summary.first_finish or now
                summary.last_finish = now
                note(rec)
                if rec["status"] != "done":
                    where = "" if str(p.job.path) in rec["error"] else f"{p.job.path}: "
                    bar.write(f"timbreamt: failed: {where}{rec['error']}", file=sys.stderr)
                bar.update(1)
                bar.set_postfix_str(f"{summary.audio_seconds / 3600:.3f} h audio, {summary.failed} failed")
        finally:
            bar.close()
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------------------------------
# measurement (not a test): batch vs one sequential `timbreamt transcribe` process, same files, same run

def make_collection(folder: Path, n_files: int, seconds: float, sources: Iterable[Path]) -> list[Path]:
    """``n_files`` files of ``seconds`` each, cut from the sources looped at different offsets (so no
    two files are the same), in two sub-folders."""
    import numpy as np
    import soundfile as sf

    sources = list(sources)
    signals = [sf.read(str(s), dtype="float32", always_2d=True) for s in sources]
    paths = []
    for k in range(n_files):
        data, sr = signals[k % len(signals)]
        n = int(seconds * sr)
        offset = (k * 9173) % len(data)
        reps = int(np.ceil((n + offset) / len(data)))
        clip = np.concatenate([data] * reps)[offset:offset + n]
        path = folder / f"part{k % 2}" / f"clip_{k:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), clip, sr)
        paths.append(path)
    return paths


def _rss_now_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


class _IdleProbe:
    def rss(self) -> float:
        return _rss_now_mib()


def ray_worker_baseline(model: str = "septimbre") -> dict:
    """RSS of a Ray worker process before any work: an idle actor, and a BatchWorker with its model
    loaded (what Ray itself adds to a worker's memory, against a plain process)."""
    ray = _start_ray(None, 2)
    try:
        idle = ray.remote(_IdleProbe).options(num_cpus=1).remote()
        idle_mib = ray.get(idle.rss.remote())
        name, data = resolve_model(model)
        worker = ray.remote(BatchWorker).options(num_cpus=1).remote(1)
        ray.get(worker.ready.remote((model, name, data)))
        loaded_mib = ray.get(worker.__ray_call__.remote(lambda self: _rss_now_mib()))
    finally:
        ray.shutdown()
    import subprocess

    code = ("import sys; from timbreamt.runtime.transcriber import Transcriber; "
            "from timbreamt.tools.batch import _rss_now_mib; Transcriber(sys.argv[1], threads=1); print(_rss_now_mib())")
    plain = float(subprocess.run([sys.executable, "-c", code, model], capture_output=True, text=True,
                                 check=True).stdout.split()[-1])
    return {"ray_idle_worker_rss_mib": round(idle_mib, 1), "ray_worker_model_loaded_rss_mib": round(loaded_mib, 1),
            "plain_process_model_loaded_rss_mib": round(plain, 1)}


def measure(n_files: int = 40, seconds: float = 30.0, workers: int = 2, rounds: int = 2,
            model: str = "septimbre", work_dir: str | Path | None = None) -> dict:
    """Throughput and memory of `timbreamt batch` against one sequential `timbreamt transcribe` process
    on the same files, back to back, ``rounds`` times (alternating, so drift hits both).

    Sequential: `timbreamt transcribe` on all files in one process (2 onnxruntime threads, its default;
    and again with 1 thread, reported beside it).
    Batch: `timbreamt batch` with ``workers`` workers of 1 thread each, Ray started in-process; its
    wall time includes starting Ray and the workers, reported separately too. Memory: peak RSS of
    `timbreamt transcribe` on one file (the single-file figure) against each batch worker's peak RSS
    (from the results manifest). Returns the figures; prints one line per run.
    """
    import resource
    import subprocess
    import tempfile

    from .paths import REFERENCE_DIR

    exe = str(Path(sys.executable).with_name("timbreamt"))
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="timbreamt-batch-bench-"))
    files = make_collection(work / "in", n_files, seconds, sorted(REFERENCE_DIR.glob("*.wav")))

    cpu: dict[str, float] = {}

    def run(cmd: list[str]) -> tuple[float, float, str]:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-500:]}")
        cpu["last"] = usage.ru_utime + usage.ru_stime          # the process itself (the batch's driver)
        return wall, usage.ru_maxrss / 1024.0, out

    _, single_rss, _ = run([exe, "transcribe", str(files[0]), "-o", str(work / "single"), "--model", model,
                            "--overwrite", "--quiet"])
    baseline = ray_worker_baseline(model)
    load = os.getloadavg()
    rows = []
    for r in range(rounds):
        seq_out = work / f"seq{r}"
        seq_wall, seq_rss, text = run([exe, "transcribe", *map(str, files), "-o", str(seq_out), "--model", model,
                                       "--overwrite", "--quiet"])
        seq_file_s = [float(line.rsplit("[", 1)[1].split(" s")[0]) for line in text.splitlines() if "[" in line]
        # the same sequential process with 1 onnxruntime thread: on a loaded machine onnxruntime's
        # second (spinning) thread can cost more than it gains, which flatters the ratio above
        seq1_wall, _, _ = run([exe, "transcribe", *map(str, files), "-o", str(work / f"seq1t{r}"), "--model", model,
                               "--overwrite", "--quiet", "--threads", "1"])
        bat_out = work / f"batch{r}"
        bat_wall, _, _ = run([exe, "batch", str(work / "in"), "-o", str(bat_out), "--model", model,
                              "--workers", str(workers), "--threads", "1", "--quiet"])
        recs = [json.loads(line) for line in (bat_out / RESULTS_NAME).read_text().splitlines()]
        assert len(recs) == n_files and all(r_["status"] == "done" for r_ in recs), "batch left files undone"
        finished = sorted(r_["finished"] for r_ in recs)
        peak = {}
        for r_ in recs:
            peak[r_["worker"]] = max(peak.get(r_["worker"], 0.0), r_["worker_rss_mib"])
        row = {
            "sequential_s": round(seq_wall, 2), "batch_s": round(bat_wall, 2),
            "ratio_end_to_end": round(seq_wall / bat_wall, 3),
            "sequential_1_thread_s": round(seq1_wall, 2), "ratio_end_to_end_vs_1_thread": round(seq1_wall / bat_wall, 3),
            # steady state: files finished per second once running (Ray/worker start-up and the sequential
            # process's own start-up excluded on both sides)
            "sequential_files_per_s_steady": round((n_files - 1) / sum(seq_file_s[1:]), 3),
            "batch_files_per_s_steady": round((n_files - 1) / (finished[-1] - finished[0]), 3),
            "sequential_peak_rss_mib": round(seq_rss, 1), "worker_peak_rss_mib": sorted(peak.values()),
            "batch_driver_cpu_s": round(cpu["last"], 2),
            "batch_worker_busy_s": round(sum(r_["seconds"] for r_ in recs), 2),
        }
        row["ratio_steady"] = round(row["batch_files_per_s_steady"] / row["sequential_files_per_s_steady"], 3)
        rows.append(row)
        print(json.dumps({"round": r + 1, **row}), flush=True)
    return {"files": n_files, "seconds_each": seconds, "workers": workers, "model": model,
            "single_file_peak_rss_mib": round(single_rss, 1), **baseline, "load_before": [round(x, 2) for x in load],
            "load_after": [round(x, 2) for x in os.getloadavg()], "rounds": rows,
            "own_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}


if __name__ == "__main__":       # python -m timbreamt.tools.batch [n_files seconds workers rounds]
    args = [float(a) for a in sys.argv[1:]]
    keys = ("n_files", "seconds", "workers", "rounds")
    kw = {k: (int(v) if k != "seconds" else v) for k, v in zip(keys, args)}
    print(json.dumps(measure(**kw), indent=1))
