"""The file of an encrypted frame (or aggregate): a zip of ``frame.json``, ``cells.bin`` and ``evaluation_keys.bin``.

``frame.json`` (plain JSON) holds the format and its version, the key-set id, the circuit
digest, per column its name, kind, dtype, sealed encodings, per-row encoding index, cell sizes
and key tags; ``cells.bin`` the serialized ciphertexts back to back. A sha256 digest over all of
it is stored and checked on load (a modified file is refused), and optionally an HMAC-SHA256
of the digest with a key shared by whoever writes and reads the files. No pickle, no path from
the archive used, nothing extracted to disk.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ._circuit import ARITY
from ._encoding import KINDS
from ._frame_data import AggregateItem, Column, KeyInfo, RowFilter
from ._sealing import TAG_BYTES

FORMAT = "fhe_sklearn.encrypted_dataframe"
#: version of the layout; any fhe_sklearn writing the same version reads it. 2: frames with
#: private keys (``key_matching="fhe"``); frames with tags are still written as version 1
FORMAT_VERSION = 2
READS = (1, 2)
MEMBERS = ("frame.json", "cells.bin", "evaluation_keys.bin")
MAX_JSON_BYTES = 256 * 2**20
MAX_BYTES = 4 * 2**30
MAX_CELL_BYTES = 2**20
MIN_KEY_BYTES = 16


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _digest(manifest: dict, cells: bytes, keys: bytes) -> str:
    body = {k: v for k, v in manifest.items() if k not in ("digest", "signature")}
    h = hashlib.sha256(b"fhe_sklearn.pandas.frame\0" + _canonical(body))
    h.update(hashlib.sha256(cells).digest() + hashlib.sha256(keys).digest())
    return h.hexdigest()


def _mac(key: Any, digest: str) -> str:
    key = key.encode() if isinstance(key, str) else key
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a signing or verify key must be bytes or str of at least {MIN_KEY_BYTES} bytes")
    return hmac.new(bytes(key), f"fhe_sklearn.pandas.frame\0{digest}".encode(), hashlib.sha256).hexdigest()


def _column_record(c: Column, blobs: list[bytes], pool: dict[bytes, int] | None = None) -> dict:
    blobs += [b for b in c.cells if b is not None]
    return {
        "name": c.name,
        "kind": c.kind,
        "dtype": c.dtype,
        "encodings": c.encodings,
        "source": c.source.tolist(),
        "sizes": [-1 if b is None else len(b) for b in c.cells],
        "tags": None if c.tags is None else [None if t is None else t.hex() for t in c.tags],
        "monotonic": c.monotonic,
        "fingerprint": c.fingerprint,
        "hits": None if c.hits is None else _pooled(c.hits, pool),
    }


def _pooled(cells: list[bytes | None], pool: dict[bytes, int]) -> list[int]:
    """Indices of optional cells in ``pool`` (-1: none), added to it: a private merge's match
    counts are shared by all the columns it picked and its row filter, and stored once."""
    return [-1 if b is None else pool.setdefault(b, len(pool)) for b in cells]


@dataclass
class FrameFile:
    """What a frame or aggregate file holds, checked: ``kind`` ``"frame"`` (``columns``,
    ``sort_on``) or ``"aggregate"`` (``items``, ``key``)."""

    kind: str
    info: KeyInfo
    columns: list[Column] = field(default_factory=list)
    sort_on: str | None = None
    row_filter: RowFilter | None = None
    items: list[AggregateItem] = field(default_factory=list)
    key: Column | None = None


#: the class each kind of file loads as, for messages
CLASS_OF_KIND = {"frame": "EncryptedDataFrame", "aggregate": "EncryptedAggregate"}


def save_frame(frame: Any, path: Path | io.BytesIO, signing_key: Any = None) -> Path | io.BytesIO:
    """Write an EncryptedDataFrame or EncryptedAggregate to ``path`` or a buffer."""
    blobs: list[bytes] = []
    if frame.file_kind == "aggregate":
        body = {"kind": "aggregate", "key": None if frame.key is None else _column_record(frame.key, blobs)}
        items = []
        for item in frame.items:
            blobs += [blob for group in item.partials for blob, _ in group]
            record = {k: getattr(item, k) for k in ("name", "func", "column", "kind", "encoding", "dtype")}
            items.append({**record, "partials": [[[len(b), w] for b, w in group] for group in item.partials]})
        body.update(items=items, zeros=[])
    else:
        body = {"kind": "frame", "sort_on": frame.sort_on}
        pool: dict[bytes, int] = {}
        body["columns"] = [_column_record(c, blobs, pool) for c in frame._columns]
        body["row_filter"] = None
        if frame.row_filter is not None:
            cells = _pooled(frame.row_filter.cells, pool)
            body["row_filter"] = {"cells": cells, "keep": frame.row_filter.keep.astype(int).tolist()}
        body["counts"] = [len(b) for b in pool]
        blobs += list(pool)
        blobs += frame.info.zeros
        body["zeros"] = [len(z) for z in frame.info.zeros]
    try:
        concrete = metadata.version("concrete-python")
    except metadata.PackageNotFoundError:  # pragma: no cover
        concrete = "unknown"
    manifest = {
        "format": FORMAT,
        "format_version": 1 if frame.info.matching == "tags" else FORMAT_VERSION,
        "versions": {"fhe_sklearn": __version__, "concrete-python": concrete},
        "key_id": frame.info.key_id,
        "circuit": frame.info.circuit,
        "key_matching": frame.info.matching,
        **body,
    }
    cells = b"".join(blobs)
    manifest["digest"] = _digest(manifest, cells, frame.info.evaluation_keys)
    manifest["signature"] = None if signing_key is None else _mac(signing_key, manifest["digest"])
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("frame.json", json.dumps(manifest))
        archive.writestr("cells.bin", cells)
        archive.writestr("evaluation_keys.bin", frame.info.evaluation_keys)
    return path


def read_frame_file(source: str | Path | bytes, verify_key: Any = None, kind: str | None = None) -> FrameFile:
    """The checked contents of a frame or aggregate file (a path, or the file's bytes), of
    ``kind`` if given; ValueError naming what is wrong."""
    contents = load_frame(source if isinstance(source, bytes) else Path(source).expanduser(), verify_key)
    if kind is not None and contents.kind != kind:
        raise ValueError(
            f"this file holds an {CLASS_OF_KIND[contents.kind]}, not an {CLASS_OF_KIND[kind]}: "
            "use fhe_sklearn.pandas.load"
        )
    return contents


def load_frame(source: Path | bytes, verify_key: Any = None) -> FrameFile:
    """Read and check a frame or aggregate file (or its bytes); ValueError naming what is wrong."""
    path = source if isinstance(source, Path) else "the encrypted frame"
    members = _read_members(source)
    try:
        manifest = json.loads(members["frame.json"], parse_constant=_refuse)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: frame.json is not valid JSON ({str(err)[:100]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an encrypted data-frame file")
    if manifest.get("format_version") not in READS:
        written = (
            manifest.get("versions", {}).get("fhe_sklearn") if isinstance(manifest.get("versions"), dict) else None
        )
        raise ValueError(
            f"{path} has format version {manifest.get('format_version')!r} (written by fhe_sklearn {written!r}); "
            f"this fhe_sklearn {__version__} reads versions {list(READS)}"
        )
    cells, keys = members["cells.bin"], members["evaluation_keys.bin"]
    try:
        expected = _digest(manifest, cells, keys)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: malformed frame.json") from None
    if not hmac.compare_digest(str(manifest.get("digest")), expected):
        raise ValueError(f"{path} was modified after it was saved (its digest does not match its content)")
    if verify_key is not None:
        signature = manifest.get("signature")
        if signature is None:
            raise ValueError(f"{path} is not signed, but a verify_key was given: refusing it")
        if not hmac.compare_digest(str(signature), _mac(verify_key, manifest["digest"])):
            raise ValueError(f"{path}: bad signature (modified, or signed with another key)")
    try:
        take = _Reader(cells)
        matching = manifest.get("key_matching", "tags")  # files of before private keys: tags
        if (matching, manifest["format_version"]) not in (("tags", 1), ("fhe", 2)):
            raise ValueError(f"key_matching {matching!r} in a version {manifest['format_version']} file")
        if manifest["kind"] == "aggregate":
            key = None if manifest["key"] is None else _column(manifest["key"], take, matching)
            items = []
            for r in manifest["items"]:
                if r["func"] not in ("sum", "count", "mean") or r["kind"] not in KINDS:
                    raise ValueError("bad aggregate record")
                partials = [[(take(size), _weight(w)) for size, w in group] for group in r["partials"]]
                fields = [str(r[k]) for k in ("name", "func", "column", "kind", "encoding", "dtype")]
                items.append(AggregateItem(*fields, partials))
            groups = {len(item.partials) for item in items} | ({len(key.cells)} if key is not None else {1})
            if len(groups) != 1:
                raise ValueError("aggregates of different group counts")
        elif manifest["kind"] == "frame":
            columns = [_column(r, take, matching) for r in manifest["columns"]]
            counts = [take(size) for size in manifest.get("counts", [])]
            row_filter = _row_filter(manifest.get("row_filter"), counts, len(columns[0].cells) if columns else 0)
            for column in columns:
                column.hits = None if column.hits is None else _unpool(column.hits, counts)
            if matching == "tags" and (counts or row_filter is not None):
                raise ValueError("match counts in a frame with tags")
            expected = ARITY - 1 if matching == "tags" else 3
            if len(manifest["zeros"]) != expected:
                raise ValueError(f"{len(manifest['zeros'])} zero cells, expected {expected}")
        else:
            raise ValueError(f"unknown kind {manifest['kind']!r}")
        zeros = [take(size) for size in manifest["zeros"]]
        take.finish()
        info = KeyInfo(_hex(manifest["key_id"], 32), _hex(manifest["circuit"], 64), keys, zeros, matching)
        if manifest["kind"] == "aggregate":
            return FrameFile("aggregate", info, items=items, key=key)
        sort_on = manifest["sort_on"]
        if sort_on is not None and sort_on not in [c.name for c in columns]:
            raise ValueError("sort_on names no column")
        return FrameFile("frame", info, columns=columns, sort_on=sort_on, row_filter=row_filter)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{path}: malformed frame.json ({str(err)[:200]})") from None


class _Reader:
    """Slices cells.bin in order, checking each size."""

    def __init__(self, cells: bytes) -> None:
        self.cells, self.offset = cells, 0

    def __call__(self, size: int) -> bytes:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_CELL_BYTES:
            raise ValueError("bad cell size")
        if self.offset + size > len(self.cells):
            raise ValueError("cell sizes do not match cells.bin")
        self.offset += size
        return self.cells[self.offset - size : self.offset]

    def finish(self) -> None:
        if self.offset != len(self.cells):
            raise ValueError("cells.bin holds more bytes than the cells")


def _weight(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("bad partial-sum weight")
    return value


def _column(c: dict, take: _Reader, matching: str) -> Column:
    if c["kind"] not in KINDS or not isinstance(c["name"], str) or not isinstance(c["dtype"], str):
        raise ValueError("bad column record")
    sizes, encodings = c["sizes"], c["encodings"]
    if not isinstance(encodings, list) or not all(isinstance(e, str) for e in encodings) or not encodings:
        raise ValueError(f"column {c['name']!r}: bad encodings")
    source = np.asarray(c["source"], dtype=np.int16)
    if source.shape != (len(sizes),) or source.min(initial=0) < -1 or source.max(initial=0) >= len(encodings):
        raise ValueError(f"column {c['name']!r}: bad encoding indices")
    row_cells = [None if s == -1 else take(s) for s in sizes]
    if any((x is None) != (e < 0) for x, e in zip(row_cells, source)):
        raise ValueError(f"column {c['name']!r}: empty cells and encoding indices disagree")
    tags = c["tags"]
    if tags is not None:
        if len(tags) != len(sizes):
            raise ValueError(f"column {c['name']!r}: {len(tags)} tags for {len(sizes)} rows")
        tags = [None if t is None else bytes.fromhex(_hex(t, 2 * TAG_BYTES)) for t in tags]
    if not isinstance(c["monotonic"], bool):
        raise ValueError(f"column {c['name']!r}: bad monotonic flag")
    fingerprint = c.get("fingerprint")
    if fingerprint is not None:
        fingerprint = _hex(fingerprint, 64)
    hits = c.get("hits")
    if hits is not None and (not isinstance(hits, list) or len(hits) != len(sizes)):
        raise ValueError(f"column {c['name']!r}: bad match counts")
    if (tags is not None and matching != "tags") or ((fingerprint or hits) is not None and matching != "fhe"):
        raise ValueError(f"column {c['name']!r}: tags, fingerprints or match counts of another key matching")
    column = Column(c["name"], c["kind"], c["dtype"], encodings, source, row_cells, tags, c["monotonic"], fingerprint)
    column.hits = hits  # pool indices until the counts are read
    return column


def _unpool(indices: list[Any], counts: list[bytes]) -> list[bytes | None]:
    if not all(type(i) is int and -1 <= i < len(counts) for i in indices):
        raise ValueError("bad match-count index")
    return [None if i == -1 else counts[i] for i in indices]


def _row_filter(record: Any, counts: list[bytes], rows: int) -> RowFilter | None:
    if record is None:
        return None
    cells, keep = record["cells"], record["keep"]
    if not isinstance(cells, list) or len(cells) != rows or not isinstance(keep, list) or len(keep) != rows:
        raise ValueError("bad row filter")
    if not all(type(k) is int and k in (0, 1) for k in keep):
        raise ValueError("bad row filter")
    return RowFilter(_unpool(cells, counts), np.asarray(keep, dtype=np.int64))


def _hex(value: Any, length: int) -> str:
    if not isinstance(value, str) or len(value) != length or any(ch not in "0123456789abcdef" for ch in value):
        raise ValueError(f"expected {length} hex digits")
    return value


def _read_members(source: Path | bytes) -> dict[str, bytes]:
    try:
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        if size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        with zipfile.ZipFile(source if isinstance(source, Path) else io.BytesIO(source)) as archive:
            names = [i.filename for i in archive.infolist()]
            if sorted(names) != sorted(MEMBERS):
                raise ValueError(f"members {sorted(names)[:6]}, expected {list(MEMBERS)}")
            members = {}
            for info in archive.infolist():
                limit = MAX_JSON_BYTES if info.filename == "frame.json" else MAX_BYTES
                if info.file_size > limit:
                    raise ValueError(f"member {info.filename} is too large")
                with archive.open(info) as member:
                    members[info.filename] = member.read(limit + 1)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as err:
        raise ValueError(
            f"cannot read the encrypted frame {source if isinstance(source, Path) else ''}: {str(err)[:200]}"
        ) from None
    return members


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def frame_bytes(frame: Any, signing_key: Any = None) -> bytes:
    """The bytes of a frame's file (HTTP bodies)."""
    return save_frame(frame, io.BytesIO(), signing_key).getvalue()
