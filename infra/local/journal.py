"""Durability of the local AWS: on AWS an object S3 accepted or an item DynamoDB acknowledged survives any
crash; moto keeps everything in memory, so the local stack's moto writes through this journal.

After every write it accepts (a PUT, copy, multipart completion or DELETE of an S3 object; a put, update or
delete of a DynamoDB item, batches and transactions included), moto appends the resulting state of that one
object or item to the journal and fsyncs it before it answers. State, not the operation, is journalled, so a
record replayed twice gives the same result (an ADD replayed would count twice). S3 bodies are content
addressed files under blobs/ (fsynced before their record), so a record stays small.

Files in the journal folder: `state.log` (the compacted live state, with the segment it covers up to),
`journal-NNNNNN.log` segments after it, `blobs/`, and `LOCK`, held by the one moto that writes the folder.
Each record is a frame (length, CRC32, JSON); a torn frame at the end of the last segment (a kill during the
write, never answered) ends the replay. Compaction, in the background once the segments hold more records
than the live state, rewrites only the live records (bodies stay where they are) and removes the blobs no
live record references (counted as records come and go), so it costs in proportion to the stack's size, at
most once per as many writes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

log = logging.getLogger("ivadas.local.journal")
_FRAME = struct.Struct("<II")  # payload length, CRC32 of the payload
STATE = "state.log"
#: A compaction runs once this many records (or as many as the live state holds, if more) were appended.
COMPACT_MIN_RECORDS = 20_000


def frame(record: dict) -> bytes:
    payload = json.dumps(record, separators=(",", ":"), default=str).encode()
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(path: Path) -> tuple[list[dict], bool]:
    """The records of one file and whether it ended in a torn or corrupt frame."""
    data = path.read_bytes()
    records, at = [], 0
    while at + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, at)
        payload = data[at + _FRAME.size : at + _FRAME.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            return records, True
        records.append(json.loads(payload))
        at += _FRAME.size + length
    return records, at != len(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def record_key(record: dict) -> tuple[str, str, str]:
    """What a record is the state of: (kind, bucket or table, key)."""
    return record["k"], record["c"], record["key"]


class Journal:
    """The write-through journal of one moto process (see the module docstring)."""

    def __init__(self, directory: Path, compact_min_records: int = COMPACT_MIN_RECORDS) -> None:
        self.dir = Path(directory)
        self.blobs = self.dir / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.dir / "LOCK", "a")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{self.dir} is in use by another moto process of the local stack") from None
        self._lock = threading.RLock()
        self.compact_min_records = compact_min_records
        self.live: dict[tuple[str, str, str], dict] = {}
        self.blob_refs: dict[str, int] = {}  # live records per blob (bodies are shared by content)
        self.unreferenced: set[str] = set()  # blobs whose last record went: removed at the next compaction
        self.torn = 0
        self.replayed_segments = 0
        self._load()
        self.appended = 0  # records appended since the last compaction
        self._compacting = False
        self._open_segment(self._last_segment() + 1)

    # --- files -----------------------------------------------------------------------------------------
    def _segments(self) -> list[tuple[int, Path]]:
        found = [(int(p.stem.split("-")[1]), p) for p in self.dir.glob("journal-*.log")]
        return sorted(found)

    def _last_segment(self) -> int:
        segments = self._segments()
        return max(segments[-1][0] if segments else 0, self.covered)

    def _open_segment(self, number: int) -> None:
        self.segment = number
        self._file = open(self.dir / f"journal-{number:06d}.log", "ab")  # noqa: SIM115 - kept open
        _fsync_dir(self.dir)

    def _load(self) -> None:
        """The live state: the compacted state, then every later segment in order (last record wins)."""
        self.covered = 0
        if (self.dir / STATE).exists():
            records, torn = read_frames(self.dir / STATE)
            if torn or not records or records[0].get("k") != "manifest":
                raise RuntimeError(f"{self.dir / STATE} is damaged")  # written whole, then renamed
            self.covered = int(records[0]["through_segment"])
            self._apply(records[1:])
        for number, path in self._segments():
            if number <= self.covered:  # compacted already; left by a stop between rename and removal
                path.unlink(missing_ok=True)
                continue
            records, torn = read_frames(path)
            self.torn += int(torn)
            self._apply(records)
            self.replayed_segments += 1

    def _apply(self, records: list[dict]) -> None:
        for rec in records:
            old = self.live.pop(record_key(rec), None) if rec.get("deleted") else None
            if not rec.get("deleted"):
                old = self.live.get(record_key(rec))
                self.live[record_key(rec)] = rec
                self._ref(rec.get("blob"), +1)
            if old is not None:
                self._ref(old.get("blob"), -1)

    def _ref(self, blob: str | None, delta: int) -> None:
        if blob is None:
            return
        count = self.blob_refs.get(blob, 0) + delta
        if count > 0:
            self.blob_refs[blob] = count
            self.unreferenced.discard(blob)
        else:
            self.blob_refs.pop(blob, None)
            self.unreferenced.add(blob)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest

    def _put_blob(self, body: bytes) -> str:
        digest = hashlib.sha256(body).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            with open(partial, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(path)
            _fsync_dir(path.parent)
        return digest

    # --- writing ---------------------------------------------------------------------------------------
    def append(self, record: dict) -> None:
        """Make one state record durable (called with the object's or item's state read under `locked`)."""
        with self._lock:
            self._file.write(frame(record))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._apply([record])
            self.appended += 1
            due = self.appended >= max(self.compact_min_records, len(self.live)) and not self._compacting
            if due:
                self._compacting = True
        if due:
            threading.Thread(target=self.compact, name="journal-compaction", daemon=True).start()

    def locked(self) -> threading.RLock:
        """Hold it while reading the state to journal and appending it, so records land in the order the
        states were read: the last record of a key is then always its latest state."""
        return self._lock

    def object_record(self, bucket: str, key: str, fake_key: object | None) -> dict:
        """The record of an S3 object's current state (moto's FakeKey, or None once it is gone)."""
        if fake_key is None:
            return {"k": "s3", "c": bucket, "key": key, "deleted": True}
        return {"k": "s3", "c": bucket, "key": key, "blob": self._put_blob(fake_key.value),
                "etag": fake_key.etag.strip('"'), "meta": dict(fake_key.metadata)}  # fmt: skip

    @staticmethod
    def item_record(table: str, key: dict, item: dict | None) -> dict:
        """The record of a DynamoDB item's current state (typed attributes, or None once deleted)."""
        canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
        if item is None:
            return {"k": "ddb", "c": table, "key": canonical, "deleted": True}
        return {"k": "ddb", "c": table, "key": canonical, "item": item}

    # --- compaction and restore ------------------------------------------------------------------------
    def compact(self) -> int:
        """Rewrite the live state into state.log, drop the segments it covers and unreferenced blobs."""
        try:
            with self._lock:
                through = self.segment
                self._file.close()
                self._open_segment(through + 1)
                records = list(self.live.values())
                self.appended = 0
            partial = self.dir / (STATE + ".partial")
            with open(partial, "wb") as out:
                out.write(frame({"k": "manifest", "through_segment": through}))
                for rec in records:
                    out.write(frame(rec))
                out.flush()
                os.fsync(out.fileno())
            partial.replace(self.dir / STATE)
            _fsync_dir(self.dir)
            for number, path in self._segments():
                if number <= through:
                    path.unlink(missing_ok=True)
            self._collect_blobs()
            return len(records)
        finally:
            self._compacting = False

    def _collect_blobs(self) -> None:
        """Remove the blobs no live record references. Under the lock, as an object's blob is written and
        recorded under it: a body being stored again is never removed between the two."""
        with self._lock:
            candidates = list(self.unreferenced)
        for blob in candidates:
            with self._lock:
                if blob not in self.blob_refs:
                    self.blob_path(blob).unlink(missing_ok=True)
                self.unreferenced.discard(blob)

    def restorable(self, buckets: set[str], tables: set[str]) -> list[dict]:
        """The live records of these buckets and tables; others (resources no longer provisioned) are dropped
        from the live state, so the next compaction forgets them."""
        with self._lock:
            for rec in list(self.live.values()):
                if rec["c"] not in (buckets if rec["k"] == "s3" else tables):
                    self._apply([{"k": rec["k"], "c": rec["c"], "key": rec["key"], "deleted": True}])
            return list(self.live.values())

    def status(self) -> dict:
        with self._lock:
            return {"live_records": len(self.live), "segment": self.segment, "covered": self.covered,
                    "appended_since_compaction": self.appended, "torn_frames": self.torn,
                    "replayed_segments": self.replayed_segments}  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._file.close()
