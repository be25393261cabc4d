"""Resumable, multi-process sharded runs: the engine under the `caption` and `generate` stages.

A stage's work is a fixed *plan*: its items, in a fixed order, cut into shards of `shard_size`.
The plan depends only on the inputs and settings, never on the number of processes or on when a
run was killed, so every run writes byte-identical shard files. Output layout:

    plan.json         settings + a digest of the inputs, written before any shard
    shards/<name>     one file per shard, published atomically (temp file, fsync, os.replace)
    manifest.json     what is complete (contents only); rewritten by the main process at the end of each run

A shard file exists only once it is complete, so the manifest is derived from the files on disk
and resuming means skipping the shards that exist: nothing is lost or written twice, and a kill
at any moment leaves at most a `*.tmp` file that the next run overwrites. Pending shards are dealt
round-robin to the processes of `accelerate launch`; each process writes only its own shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ditcompress.errors import UserError
from ditcompress.utils.seeds import seed_for  # noqa: F401 (part of this module's API)
from ditcompress.utils.logging import get_logger

log = get_logger(__name__)

PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
SHARDS_DIR = "shards"
BARRIER_TIMEOUT = timedelta(hours=24)


# ---- ids and seeds --------------------------------------------------------------------------
def check_id(item_id: object) -> str | None:
    """Why `item_id` cannot key a sample (webdataset key rules), or None if it can."""
    if not isinstance(item_id, str) or not item_id:
        return "empty id"
    if item_id != item_id.strip() or any(c in item_id for c in "\\\n\r\t\0"):
        return "id has surrounding whitespace or a control character"
    parts = item_id.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "id has an empty, '.' or '..' path component"
    if "." in parts[-1]:
        # webdataset splits a member name into key and extension at the first dot of its basename
        return "id has a '.' in its last component"
    return None


def digest_lines(lines: Iterable[str]) -> str:
    """sha256 of newline-terminated lines (identity of a plan's inputs)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


# ---- the plan -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """One unit of work and of output: a fixed run of item ids."""

    index: int
    ids: tuple[str, ...]

    @property
    def stem(self) -> str:
        """File name without extension, e.g. `shard-00007`."""
        return f"shard-{self.index:05d}"


def plan_shards(ids: list[str], shard_size: int) -> list[Shard]:
    """Consecutive runs of `shard_size` ids (the last one shorter)."""
    return [Shard(i, tuple(ids[s : s + shard_size])) for i, s in enumerate(range(0, len(ids), shard_size))]


# ---- processes ------------------------------------------------------------------------------
class Process(Protocol):
    """What a sharded run needs from `accelerate.PartialState`."""

    process_index: int
    num_processes: int
    is_main_process: bool
    device: Any

    def wait_for_everyone(self) -> None: ...


def current_process() -> Process:
    """accelerate's `PartialState`: rank, world size and device of this process.

    accelerate only builds the gloo process group for CPU-only workers when asked with cpu=True,
    so a CPU machine (or ACCELERATE_USE_CPU=1) passes it; GPU workers get NCCL as usual. The
    timeout is long because a process that finished its shards waits at the final barrier while
    others finish theirs (one Flux shard can take an hour); the launcher ends every process if
    one of them fails, so nobody waits for a dead peer.
    """
    import torch
    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=use_cpu or not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)


@dataclass
class LocalProcess:
    """Process `process_index` of `num_processes` without a process group (tests, one-off jobs)."""

    process_index: int = 0
    num_processes: int = 1
    device: Any = "cpu"

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    def wait_for_everyone(self) -> None:
        """Nothing to wait for."""


# ---- atomic files ---------------------------------------------------------------------------
def publish(tmp: Path, final: Path) -> None:
    """Make a fully written file visible under its final name (atomic on POSIX)."""
    os.replace(tmp, final)


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """Write `path` through `<path>.tmp`; it appears only complete, or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name says it is complete
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    publish(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write pretty JSON."""
    with atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


# ---- webdataset tar shards ------------------------------------------------------------------
def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append a file with fixed metadata, so equal contents give byte-identical tars."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def split_member(name: str) -> tuple[str, str]:
    """(key, extension) of a tar member by the webdataset rule: the basename's first dot."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def tar_index(path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """key -> {extension: (data offset, size)} for every regular file of a tar (headers only)."""
    samples: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.isfile():
                key, ext = split_member(member.name)
                samples.setdefault(key, {})[ext] = (member.offset_data, member.size)
    return samples


def read_range(path: Path, offset: int, size: int) -> bytes:
    """`size` bytes of a file from `offset` (one tar member, without parsing the tar)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


# ---- a run ----------------------------------------------------------------------------------
def _changed(old: dict, new: dict) -> str:
    """'key: old -> new' for every setting that differs."""
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


class ShardedRun:
    """One execution of a stage over a shard plan in `out_dir`, shared by all processes."""

    def __init__(self, out_dir: str | Path, stage: str, settings: dict, shards: list[Shard], suffix: str,
                 inputs_digest: str, process: Process, restart_if_changed: bool = False):
        self.out_dir = Path(out_dir)
        self.shards_dir = self.out_dir / SHARDS_DIR
        self.stage, self.settings, self.shards, self.suffix = stage, settings, shards, suffix
        self.process = process
        self.plan = {"stage": stage, "settings": settings, "num_items": sum(len(s.ids) for s in shards),
                     "num_shards": len(shards), "inputs_digest": inputs_digest}
        self.done_at_start: set[int] = set()
        # True: a previous run with other settings or inputs is deleted instead of being an error
        # (what a DVC stage wants: its output must follow params.yaml, resume only the same run)
        self.restart_if_changed = restart_if_changed

    def path(self, shard: Shard) -> Path:
        """Final file of a shard."""
        return self.shards_dir / f"{shard.stem}{self.suffix}"

    def complete(self) -> list[Shard]:
        """Shards whose file exists (= complete), in plan order."""
        names = {p.name for p in self.shards_dir.iterdir()} if self.shards_dir.is_dir() else set()
        return [s for s in self.shards if self.path(s).name in names]

    def start(self) -> list[Shard]:
        """Check the plan against a previous run, record it, and return this process's pending shards."""
        if self.restart_if_changed:
            stale = self._stale_reason()
            self.process.wait_for_everyone()  # every process has looked before anything is deleted
            if stale and self.process.is_main_process:
                log.warning("%s: %s; deleting it and starting over", self.out_dir, stale)
                shutil.rmtree(self.out_dir)
            self.process.wait_for_everyone()
        done = self.complete()  # every process scans before the barrier, i.e. before anyone writes
        self._check_previous_plan(has_shards=bool(done))
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        if self.process.is_main_process and not (self.out_dir / PLAN_FILE).is_file():
            write_json(self.out_dir / PLAN_FILE, self.plan)
        self.process.wait_for_everyone()
        self.done_at_start = {s.index for s in done}
        pending = [s for s in self.shards if s.index not in self.done_at_start]
        return pending[self.process.process_index :: self.process.num_processes]

    def _stale_reason(self) -> str | None:
        """Why the output folder holds a different run (None if empty or the same run)."""
        try:
            self._check_previous_plan(has_shards=bool(self.complete()))
        except UserError as exc:
            return str(exc).split("; delete")[0]
        return None

    def _check_previous_plan(self, has_shards: bool) -> None:
        """A resumed run must have the same settings and inputs, else its shards would mix."""
        plan_path = self.out_dir / PLAN_FILE
        if not plan_path.is_file():
            if has_shards:
                raise UserError(f"{self.shards_dir}: holds shards but no {PLAN_FILE}; delete the folder to start over")
            return
        old = json.loads(plan_path.read_text())
        hint = f"{self.out_dir} was started with different {{}}; delete it (or use another folder) to start over"
        if old.get("settings") != self.settings:
            raise UserError(hint.format(f"settings ({_changed(old.get('settings') or {}, self.settings)})"))
        if old.get("inputs_digest") != self.plan["inputs_digest"]:
            counts = f"{old.get('num_items')} -> {self.plan['num_items']} items"
            raise UserError(hint.format(f"inputs ({counts}, or changed ids/text)"))

    def finish(self, summarize: Callable[[list[Shard]], dict] | None = None) -> dict | None:
        """Wait for all processes; the main one writes the manifest and returns it with this run's
        `new_items`, the others None.

        `summarize(complete_shards)` adds stage-specific entries (counts, indexes). The manifest
        holds what the output contains, never how this run made it, so a resumed output is
        byte-identical to an uninterrupted one (its DVC hash does not depend on the run's history).
        """
        self.process.wait_for_everyone()
        if not self.process.is_main_process:
            return None
        done = self.complete()
        extra = summarize(done) if summarize is not None else {}
        manifest = {
            **{k: self.plan[k] for k in ("stage", "num_items", "num_shards")},
            "complete": len(done) == len(self.shards),
            "complete_shards": len(done),
            "complete_items": sum(len(s.ids) for s in done),
            "shards": [self.path(s).name for s in done],
            **extra,
            "settings": self.settings,
        }
        write_json(self.out_dir / MANIFEST_FILE, manifest)
        return {**manifest, "new_items": sum(len(s.ids) for s in done if s.index not in self.done_at_start)}


def read_complete_plan(out_dir: str | Path, stage: str) -> dict:
    """The plan of a finished stage output; a clear error if it is missing or incomplete."""
    out_dir = Path(out_dir)
    plan_path, manifest_path = out_dir / PLAN_FILE, out_dir / MANIFEST_FILE
    if not plan_path.is_file():
        raise UserError(f"{out_dir}: no {PLAN_FILE}; run the {stage} stage first")
    plan = json.loads(plan_path.read_text())
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if not manifest.get("complete") or manifest.get("num_shards") != plan.get("num_shards"):
        raise UserError(f"{out_dir}: the {stage} stage has not finished "
                        f"({manifest.get('complete_shards', 0)}/{plan.get('num_shards')} shards); rerun it to resume")
    return plan
