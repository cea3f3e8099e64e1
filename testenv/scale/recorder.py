"""A :class:`Recorder` that watches a namespace's ModelVersions and Jobs while the scale
workload runs.

It reads two watch streams. A watch delivers every change in the order etcd committed it, so
the number of active Jobs is known after every event, not sampled: a Job is active from its
creation until the Job controller decides its outcome (``SuccessCriteriaMet``, ``Complete``,
``FailureTarget`` or ``Failed``), which is also when the operator counts its ModelVersion as
finished. Jobs arrive in creation order, which is the order of admission.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from testenv.controlplane import ControlPlane
from testenv.scale.workload import MODELVERSION_LABEL

#: Job conditions after which the Job controller has decided the outcome.
JOB_DECIDED = ("SuccessCriteriaMet", "Complete", "FailureTarget", "Failed")
_WATCH_SECONDS = 60


def _decided(job: dict[str, Any]) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in JOB_DECIDED and cond.get("status") == "True":
            return str(cond["type"])
    return None


def _outcome(mv: dict[str, Any]) -> str | None:
    for cond in (mv.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Succeeded", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


@dataclass
class JobRecord:
    """One Job as the watch saw it."""

    name: str
    uid: str
    modelversion: str
    created: str  # metadata.creationTimestamp
    seen: float  # monotonic time of its ADDED event
    decided: float | None = None  # monotonic time its outcome was decided


@dataclass
class Recorder:
    """Watches ``namespace``'s ModelVersions and Jobs; use as a context manager."""

    cp: ControlPlane
    namespace: str
    mv_seen: dict[str, float] = field(default_factory=dict)
    mv_created: dict[str, str] = field(default_factory=dict)
    mv_status_at: dict[str, float] = field(default_factory=dict)
    mv_outcome: dict[str, str] = field(default_factory=dict)
    mv_outcome_at: dict[str, float] = field(default_factory=dict)
    mv_phases: dict[str, list[str]] = field(default_factory=dict)
    jobs: list[JobRecord] = field(default_factory=list)
    jobs_by_uid: dict[str, JobRecord] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)
    max_active: int = 0
    #: (monotonic time, active Jobs) after every Job event.
    active_series: list[tuple[float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _conns: list[http.client.HTTPSConnection] = field(default_factory=list)
    _ready: threading.Barrier = field(default_factory=lambda: threading.Barrier(3))

    def __enter__(self) -> Recorder:
        base = f"/apis/kubevision.dev/v1alpha1/namespaces/{self.namespace}/modelversions"
        jobs = f"/apis/batch/v1/namespaces/{self.namespace}/jobs"
        for path, handle in ((base, self._on_mv), (jobs, self._on_job)):
            thread = threading.Thread(target=self._loop, args=(path, handle), daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            self._ready.wait(timeout=30)
        except threading.BrokenBarrierError:
            self.__exit__()
            raise AssertionError(f"the recorder could not start: {self.errors}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)

    # --- the streams ---------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPSConnection:
        parts = urllib.parse.urlsplit(self.cp.server)
        context = ssl.create_default_context(cafile=str(self.cp.ca_cert))
        context.load_cert_chain(str(self.cp.admin_cert), str(self.cp.admin_key))
        assert parts.hostname is not None
        return http.client.HTTPSConnection(
            parts.hostname, parts.port, context=context, timeout=_WATCH_SECONDS + 15
        )

    def _get(self, path: str, tries: int = 30) -> Any:
        """GET ``path``; a 429 (the API server's watch cache of a new CRD still
        initialising: "storage is (re)initializing") is tried again a second later."""
        for _ in range(tries):
            conn = self._connection()
            try:
                conn.request("GET", path, headers={"Accept": "application/json"})
                response = conn.getresponse()
                raw = response.read()
            finally:
                conn.close()
            if response.status != 429:
                break
            time.sleep(1.0)
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {raw[:200]!r}")
        return json.loads(raw)

    def _loop(self, path: str, handle: Any) -> None:
        try:
            listing = self._get(path)
            version = listing["metadata"]["resourceVersion"]
            for item in listing.get("items", []):
                handle("ADDED", item)
        except (OSError, RuntimeError, ValueError) as exc:
            self.errors.append(f"list {path}: {exc}")
            self._ready.abort()
            return
        try:
            self._ready.wait(timeout=30)
        except threading.BrokenBarrierError:
            return
        while not self._stop.is_set():
            query = urllib.parse.urlencode(
                {
                    "watch": "1",
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(_WATCH_SECONDS),
                }
            )
            conn = self._connection()
            with self._lock:
                self._conns.append(conn)
            try:
                conn.request("GET", f"{path}?{query}", headers={"Accept": "application/json"})
                response = conn.getresponse()
                if response.status != 200:
                    raise RuntimeError(f"watch {path}: {response.status}")
                while line := response.readline():
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch {path}: {obj.get('message')}")
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        handle(event["type"], obj)
            except (OSError, RuntimeError, ValueError) as exc:
                if not self._stop.is_set():
                    self.errors.append(f"watch {path}: {exc}")
                    return
            finally:
                with self._lock:
                    self._conns.remove(conn)
                conn.close()

    def _on_mv(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = obj["metadata"]
        name = meta["name"]
        with self._lock:
            self.mv_seen.setdefault(name, now)
            self.mv_created[name] = meta.get("creationTimestamp", "")
            status = obj.get("status") or {}
            if status:
                self.mv_status_at.setdefault(name, now)
                phases = self.mv_phases.setdefault(name, [])
                if status.get("phase") and (not phases or phases[-1] != status["phase"]):
                    phases.append(status["phase"])
            outcome = _outcome(obj)
            if outcome and name not in self.mv_outcome:
                self.mv_outcome[name] = outcome
                self.mv_outcome_at[name] = now

    def _on_job(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = obj["metadata"]
        uid = meta["uid"]
        with self._lock:
            record = self.jobs_by_uid.get(uid)
            if record is None:
                record = JobRecord(
                    name=meta["name"],
                    uid=uid,
                    modelversion=(meta.get("labels") or {}).get(MODELVERSION_LABEL, ""),
                    created=meta.get("creationTimestamp", ""),
                    seen=now,
                )
                self.jobs.append(record)
                self.jobs_by_uid[uid] = record
                self.active.add(uid)
            if kind == "DELETED" or _decided(obj):
                if record.decided is None:
                    record.decided = now
                self.active.discard(uid)
            self.max_active = max(self.max_active, len(self.active))
            self.active_series.append((now, len(self.active)))

    # --- waiting -------------------------------------------------------------------------

    def wait_finished(self, count: int, timeout: float, progress: Any = None) -> None:
        """Wait until ``count`` ModelVersions have an outcome; fail with diagnostics after
        ``timeout`` seconds or when a watch broke, or when nothing moved for a minute."""
        deadline = time.monotonic() + timeout
        last_change, last = time.monotonic(), (-1, -1)
        while True:
            with self._lock:
                done = len(self.mv_outcome)
                jobs = len(self.jobs)
            if done >= count:
                return
            if (done, jobs) != last:
                last_change, last = time.monotonic(), (done, jobs)
            if self.errors:
                raise AssertionError(f"a watch failed: {self.errors}\n{self.diagnostics()}")
            now = time.monotonic()
            if now > deadline or now - last_change > 90:
                raise AssertionError(
                    f"{done}/{count} ModelVersions finished after {timeout - (deadline - now):.0f}"
                    f" s (stalled: {now - last_change > 90})\n{self.diagnostics()}"
                )
            if progress is not None:
                progress(done, jobs)
            time.sleep(0.5)

    def diagnostics(self) -> str:
        """What the recorder saw: counts, active Jobs, and a few unfinished ModelVersions."""
        with self._lock:
            unfinished = sorted(n for n in self.mv_seen if n not in self.mv_outcome)
            with_job = {j.modelversion for j in self.jobs}
            return (
                f"ModelVersions seen {len(self.mv_seen)}, with status {len(self.mv_status_at)},"
                f" finished {len(self.mv_outcome)}; Jobs {len(self.jobs)}, active now"
                f" {len(self.active)}, at most {self.max_active}; unfinished (first 10):"
                f" {[(n, n in with_job, self.mv_phases.get(n)) for n in unfinished[:10]]}"
            )
