"""The model store: registered versions loaded for serving, kept in sync with the registry.

:func:`load_version` turns one MLflow registry version into a :class:`Served` (a concrete
``tf.function`` traced once); :class:`ModelStore` holds every ``champion`` plus a small LRU
of versions asked for by number, and a background thread polls the registry and swaps in a
moved champion without locking readers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks import tracking
from tasks.core.config import Settings, settings
from tasks.core.run import EVALUATION_ARTIFACT
from tasks.features.schema import KEY as SCHEMA_KEY
from tasks.features.schema import InputSchema
from tasks.serving.signature import Signature, example_batch, signature_of
from tasks.tracking import CHAMPION
from tasks.tracking.challenger import CHALLENGER

log = logging.getLogger(__name__)


class NotFound(LookupError):
    """Unknown model or version (HTTP 404); the message goes back to the client."""


@dataclass
class Served:
    """One loaded model version and its compiled predict function.

    Attributes:
        name: Registered model name.
        version: Registry version (a string, as in the URL).
        signature: What requests are validated against.
        predict: ``np.ndarray -> np.ndarray`` for a validated batch.
        run_id: MLflow run the version came from.
        class_names: Class labels from the run's evaluation report, if any.
        schema: A tabular model's named inputs, limits and answer form (else None).
        input_checks: Schema warnings counted per field over the version's requests.
        label_map: Detectors: ``detection_classes`` id (as text) -> class name.

    """

    name: str
    version: str
    signature: Signature
    predict: Any
    run_id: str | None = None
    class_names: list[str] = field(default_factory=list)
    schema: InputSchema | None = None
    input_checks: InputChecks = field(default_factory=lambda: InputChecks())
    label_map: dict[str, str] = field(default_factory=dict)

    def __call__(self, batch: Any) -> Any:
        return self.predict(batch)


class InputChecks:
    """Counts of schema warnings per field (missing, out of range, unseen category)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.instances = 0
        self.refused = 0
        self.fields: dict[str, dict[str, int]] = {}

    def add(self, counts: dict[str, dict[str, int]], instances: int,
            refused: bool = False) -> None:
        """Fold one request's counts in (``refused``: a strict-mode 400)."""
        with self._lock:
            self.instances += instances
            self.refused += int(refused)
            for name, kinds in counts.items():
                mine = self.fields.setdefault(name, {})
                for kind, n in kinds.items():
                    mine[kind] = mine.get(kind, 0) + n

    def snapshot(self) -> dict[str, Any]:
        """``{"instances", "refused_requests", "fields": {field: {kind: count}}}``.

        Counted since the version was loaded by this server.
        """
        with self._lock:
            return {"instances": self.instances, "refused_requests": self.refused,
                    "fields": {k: dict(v) for k, v in sorted(self.fields.items())}}



def _text(value: np.ndarray) -> Any:
    """String outputs come back as object arrays of bytes: answer them as UTF-8 text."""
    if value.dtype != object:
        return value
    return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b,
                        otypes=[object])(value).tolist()


def load_version(name: str, version: str, s: Settings | None = None) -> Served:
    """Load one registered version into a concrete ``tf.function`` (traced once, here).

    Raises:
        NotFound: The registry has no such version.

    """
    import mlflow
    import tensorflow as tf
    from mlflow.exceptions import MlflowException

    from tasks.tracking.loader import load_registered

    try:
        loaded = load_registered(name, str(version), s)
    except MlflowException as exc:
        raise NotFound(f"model {name!r} has no version {version}") from exc
    sig = signature_of(loaded.model)

    def predict(batch: np.ndarray) -> Any:
        out = loaded.predict(batch)
        if isinstance(out, dict):
            return {k: _text(v) for k, v in out.items()}
        return _text(out)

    schema = (InputSchema.from_dict(loaded.metadata[SCHEMA_KEY])
              if SCHEMA_KEY in loaded.metadata else None)
    try:
        predict(example_batch(sig))  # first call allocates; keep that off the first request
    except tf.errors.InvalidArgumentError:
        # A model that parses its string input (e.g. WAV bytes) refuses the empty
        # warm-up value; the allocation happened all the same.
        if sig.input_dtype != "string":
            raise
    class_names: list[str] = list(schema.class_names) if schema is not None else []
    label_map: dict[str, str] = {}
    if loaded.run_id and not class_names:
        try:
            report = mlflow.artifacts.load_dict(f"runs:/{loaded.run_id}/{EVALUATION_ARTIFACT}")
            class_names = [str(c) for c in report.get("class_names", [])]
            label_map = {str(k): str(v) for k, v in (report.get("label_map") or {}).items()}
        except Exception:  # models logged outside the pipeline have no evaluation report
            class_names = []
    return Served(name, str(version), sig, predict, loaded.run_id, class_names, schema,
                  label_map=label_map)


class ModelStore:
    """The served champions, plus versions loaded on demand, kept in sync with the registry.

    Readers never lock: the champion table is replaced as a whole (copy on write), so a
    request sees either the old or the new version, and an old version stays alive until
    the requests using it finish.
    """

    def __init__(self, s: Settings | None = None, poll_seconds: float | None = None,
                 max_versions: int = 8, loader: Any = load_version,
                 models: Collection[str] | None = None) -> None:
        self._s = s or settings()
        self._only = frozenset(models) if models else None
        self.poll_seconds = (self._s.serve_poll_seconds if poll_seconds is None
                             else float(poll_seconds))
        self._loader = loader
        self._max_versions = max_versions
        self._champions: dict[str, Served] = {}
        self._challengers: dict[str, Served] = {}
        # Told about loads and swaps (tasks.serving.metrics.ServingMetrics), if set.
        self.observer: Any = None
        self._versions: OrderedDict[tuple[str, str], Served] = OrderedDict()
        self._loading: dict[str, str] = {}
        self._failed: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()

    # -- reads (request path) -------------------------------------------------------------

    def get(self, name: str) -> Served | None:
        """The champion served for ``name``, if any."""
        return self._champions.get(name)

    def challenger(self, name: str) -> Served | None:
        """The ``challenger`` of ``name`` shadow-scored beside its champion, if any."""
        return self._challengers.get(name)

    def names(self) -> list[str]:
        """Names of all served models."""
        return sorted(self._champions)

    def cached_version(self, name: str, version: str) -> Served | None:
        """A version already in memory (champion or cached), without touching the registry."""
        champ = self._champions.get(name)
        if champ is not None and champ.version == version:
            return champ
        with self._lock:
            served = self._versions.get((name, version))
            if served is not None:
                self._versions.move_to_end((name, version))
            return served

    def loaded_versions(self, name: str) -> list[Served]:
        """Champion first, then other versions of ``name`` in memory."""
        champ = self._champions.get(name)
        with self._lock:
            others = [v for (n, _), v in self._versions.items()
                      if n == name and (champ is None or v.version != champ.version)]
        return ([champ] if champ else []) + sorted(others, key=lambda v: int(v.version))

    def loading(self, name: str) -> str | None:
        """Version of ``name`` being loaded by the poller right now, if any."""
        return self._loading.get(name)

    # -- loading --------------------------------------------------------------------------

    def _remember(self, served: Served) -> None:
        with self._lock:
            self._versions[(served.name, served.version)] = served
            self._versions.move_to_end((served.name, served.version))
            while len(self._versions) > self._max_versions:
                self._versions.popitem(last=False)

    def get_version(self, name: str, version: str) -> Served:
        """A specific version, loaded on first use (blocking: call off the event loop).

        Raises:
            NotFound: No such model version in the registry.

        """
        served = self.cached_version(name, version)
        if served is not None:
            return served
        # One on-demand load at a time: concurrent first requests load a version once, and
        # requests for arbitrary version numbers cannot pile up loads.
        with self._load_lock:
            served = self.cached_version(name, version)
            if served is None:
                served = self._load(name, version, "-")
                self._remember(served)
        return served

    def _load(self, name: str, version: str, alias: str) -> Served:
        started = time.monotonic()
        try:
            served = self._loader(name, version, self._s)
        except Exception:
            if self.observer is not None:
                self.observer.loaded(name, version, alias, time.monotonic() - started, False)
            raise
        if self.observer is not None:
            self.observer.loaded(name, version, alias, time.monotonic() - started, True)
        return served

    def _swapped(self, name: str, alias: str, version: str | None) -> None:
        if self.observer is not None:
            self.observer.swapped(name, alias, version)

    def sync(self) -> dict[str, str]:
        """One registry poll: load and swap in every champion (and challenger) that moved.

        Returns:
            Model name -> version served after the poll.

        """
        client = tracking.configure(self._s)
        wanted: dict[str, str] = {}
        challengers: dict[str, str] = {}
        token = None
        while True:
            page = client.search_registered_models(max_results=100, page_token=token)
            for rm in page:
                if self._only is not None and rm.name not in self._only:
                    continue
                aliases = rm.aliases or {}
                version = aliases.get(CHAMPION)
                if version is not None:
                    wanted[rm.name] = str(version)
                    if aliases.get(CHALLENGER) not in (None, version):
                        challengers[rm.name] = str(aliases[CHALLENGER])
            token = page.token
            if not token:
                break
        for name, version in sorted(wanted.items()):
            current = self._champions.get(name)
            if current is not None and current.version == version:
                continue
            failed_at = self._failed.get((name, version))
            if failed_at is not None and time.monotonic() - failed_at < 60:
                continue  # a broken version is retried once a minute, not every poll
            self._loading[name] = version
            try:
                # A promoted challenger is in memory already: the swap is instant.
                shadow = self._challengers.get(name)
                served = (shadow if shadow is not None and shadow.version == version
                          else None) or self.cached_version(name, version) or self._load(
                              name, version, CHAMPION)
            except Exception:  # one broken model must not take the others down
                log.exception("cannot load %s version %s; still serving %s", name, version,
                              current.version if current else "nothing")
                self._failed[(name, version)] = time.monotonic()
                continue
            finally:
                self._loading.pop(name, None)
            if current is not None:
                self._remember(current)  # the demoted version stays warm for a rollback
            self._champions = {**self._champions, name: served}
            self._swapped(name, CHAMPION, version)
            log.info("serving %s version %s (was %s)", name, version,
                     current.version if current else "none")
        self._sync_challengers(challengers)
        return {n: s.version for n, s in self._champions.items()}

    def _sync_challengers(self, wanted: dict[str, str]) -> None:
        """Load moved challengers (off the request path); drop the ones whose alias went."""
        current, kept = self._challengers, {}
        for name, version in sorted(wanted.items()):
            have = current.get(name)
            if have is not None and have.version == version:
                kept[name] = have
                continue
            failed_at = self._failed.get((name, version))
            if failed_at is not None and time.monotonic() - failed_at < 60:
                continue
            try:
                kept[name] = self.cached_version(name, version) or self._load(
                    name, version, CHALLENGER)
            except Exception:  # the champion keeps serving without a shadow
                log.exception("cannot load %s challenger version %s; no shadow scoring",
                              name, version)
                self._failed[(name, version)] = time.monotonic()
                continue
            self._swapped(name, CHALLENGER, version)
            log.info("shadow-scoring %s challenger version %s", name, version)
        for name in sorted(set(current) - set(kept)):
            self._swapped(name, CHALLENGER, None)
        self._challengers = kept

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # registry unreachable: keep serving what is loaded
                log.exception("registry poll failed; serving %s", self.names())
            finally:
                self.ready.set()
            self._stop.wait(self.poll_seconds)

    def start(self) -> None:
        """Start polling the registry in a daemon thread (the first poll loads everything)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="registry-poll",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Stop polling (waits for a load in progress to finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
