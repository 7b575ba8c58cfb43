"""Ingest step: validate raw files and snapshot them per run with checksums."""

from __future__ import annotations

import hashlib
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.core.errors import PermanentError
from tasks.core.files import atomic_dir, read_json, sha256_file, write_json
from tasks.core.run import SNAPSHOT_MANIFEST as MANIFEST
from tasks.data.rows import TooManyBadRows, scan_rows
from tasks.spec import DataSource

log = logging.getLogger(__name__)


def ingest(source: DataSource, location: str, dest: Path,
           max_bad_fraction: float | None = None, decode: bool = True) -> dict[str, Any]:
    """Validate the raw files at ``location`` and snapshot them into ``dest``.

    The copy is validated (so what was checked is exactly what is kept), then the
    directory appears atomically with a manifest of SHA-256 checksums. The source files are
    never modified. Re-running for the same ``dest`` verifies and reuses the snapshot.

    With ``max_bad_fraction`` the copy's rows also go through the row checks
    preprocessing applies (:func:`tasks.data.rows.scan_rows`: labels, ranges, missing
    values...): data that preprocessing would refuse is refused here, naming the first
    bad row's file, line or record and field, and nothing is landed.

    Args:
        source: The use case's data source.
        location: Directory holding the raw files.
        dest: Snapshot directory for this run (``<root>/raw/<use case>/<run key>``).
        max_bad_fraction: The run's tolerance of bad rows (None: structure only).
        decode: Also run row checks that decode every file (media sources); the DAG
            leaves them to preprocessing, which decodes them right after.

    Returns:
        The manifest: files with checksums and sizes, validation facts (with the rows
        read and the bad ones), and a combined ``checksum`` identifying the snapshot.

    Raises:
        SourceError, IdxFormatError: The raw data is missing or malformed (message names
            the file).
        TooManyBadRows: More bad rows than ``max_bad_fraction`` tolerates.

    """
    dest = Path(dest)
    if (dest / MANIFEST).is_file():
        manifest = read_json(dest / MANIFEST)
        for entry in manifest["files"].values():
            if sha256_file(dest / entry["file"]) != entry["sha256"]:
                raise RuntimeError(f"{dest / entry['file']}: snapshot checksum changed on disk")
        log.info("snapshot %s already exists and verifies; reusing it", dest)
        return manifest

    files = source.files(location)
    with atomic_dir(dest) as tmp:
        copied: dict[str, str] = {}
        entries: dict[str, dict[str, Any]] = {}
        for key, src in sorted(files.items()):
            # Keys with folders (media sources: "<label>/<file>") keep them, so equal
            # file names in different label folders cannot collide in the snapshot.
            rel = Path(key) if "/" in key else Path(Path(src).name)
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            copied[key] = str(target)
            entries[key] = {
                "file": rel.as_posix(),
                "source": str(Path(src).resolve()),
                "sha256": sha256_file(target),
                "bytes": target.stat().st_size,
            }
        try:
            facts = source.validate(copied)
            if max_bad_fraction is not None:
                scan = scan_rows(source, copied, decode=decode)
                refused = scan.refusal(max_bad_fraction, "; nothing was landed")
                if refused:
                    raise TooManyBadRows(refused)
                if scan.rows:  # (an empty scan: checks left to preprocessing)
                    facts = {**facts, "rows": scan.rows, "bad_rows": scan.bad}
        except PermanentError as exc:
            raise _naming_sources(exc, copied, files) from None
        combined = hashlib.sha256(
            "".join(f"{k}:{v['sha256']}\n" for k, v in sorted(entries.items())).encode()
        ).hexdigest()
        manifest = {
            "location": str(Path(location).resolve()),
            "files": entries,
            "facts": facts,
            "checksum": combined,
            "created_at": datetime.now(UTC).isoformat(),
        }
        write_json(tmp / MANIFEST, manifest)
    log.info("snapshot %s: %d files, checksum %s, facts %s", dest, len(entries), combined, facts)
    return manifest


def _naming_sources(exc: PermanentError, copied: dict[str, str], files: dict[str, str]
                    ) -> PermanentError:
    """The same error, naming the user's files instead of their temporary copies."""
    text = str(exc)
    for key, copy in copied.items():
        text = text.replace(copy, str(Path(files[key]).resolve()))
    exc.args = (text,)
    if hasattr(exc, "path"):
        exc.path = next((str(Path(files[k]).resolve()) for k, c in copied.items()
                         if c == exc.path), exc.path)
    return exc


def snapshot_files(snapshot_dir: Path) -> dict[str, str]:
    """File keys of a snapshot mapped to their paths inside it."""
    manifest = read_json(Path(snapshot_dir) / MANIFEST)
    return {k: str(Path(snapshot_dir) / v["file"]) for k, v in manifest["files"].items()}


def snapshot_origins(snapshot_dir: Path) -> dict[str, str]:
    """Snapshot file paths mapped to the user's files they were copied from (for messages)."""
    manifest = read_json(Path(snapshot_dir) / MANIFEST)
    return {str(Path(snapshot_dir) / v["file"]): v["source"] for v in manifest["files"].values()}
