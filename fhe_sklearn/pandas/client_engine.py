"""ClientEngine: the data owner's keys; encrypts pandas frames and decrypts results."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from . import _join_circuit as join
from ._aggregate import EncryptedAggregate
from ._circuit import ARITY, CELL, CLEAR, circuit_digest, clear_cell, from_cells, read_clear_cell, sum_circuit, to_cells
from ._encoding import KEY_KINDS, decode, decode_sums, encode, fit_encoding, tag_text
from ._frame_data import Column, KeyInfo
from ._private_merge import NEVER_KEY, NO_HITS, ZERO
from ._sealing import SECRETS_FILE, Secrets
from .dataframe import EncryptedDataFrame

KEYS_FILE = "fhe_keys"
DIGEST_FILE = "circuit.sha256"
#: the join circuit's keys (``key_matching="fhe"``), made on first use
JOIN_KEYS_FILE = "fhe_join_keys"
JOIN_DIGEST_FILE = "join_circuit.sha256"
MATCHINGS = ("tags", "fhe")


class _Layout(NamedTuple):
    """What a key matching's cells are: their circuit, its key files, the cell layout."""

    circuit: Callable[[], Any]
    digest: Callable[[], str]
    keys_file: str
    digest_file: str
    cell: int
    chunk_bits: int
    n_chunks: int
    cell_input: int


_CIRCUITS = {
    "tags": _Layout(sum_circuit, circuit_digest, KEYS_FILE, DIGEST_FILE, CELL, 4, 4, 0),
    "fhe": _Layout(
        join.join_circuit, join.join_digest, JOIN_KEYS_FILE, JOIN_DIGEST_FILE, join.CELL, 3, 6, join.CELL_INPUT
    ),
}


def default_keys_path() -> Path:
    """Per-user cache directory for data-frame keys (never a working directory or a repo)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fhe_sklearn" / "dataframe_keys"


class ClientEngine:
    """Keys of a data owner: encrypt DataFrames, decrypt encrypted frames and aggregates.

    Parameters
    ----------
    keys_path : str or Path, optional
        Directory of the keys (created with mode 0700): keys found there are loaded, else new
        ones are generated and saved. Default: :func:`default_keys_path`. Two owners whose
        frames are to be merged use copies of one directory (:meth:`share_keys`).
    keygen : bool
        Load or generate the keys now (else call :meth:`keygen`).
    fhe : {"execute", "disable"}
        ``"disable"``: the same frames, files and server operations with clear cells, for
        tests and dry runs (its frames cannot be mixed with encrypted ones).
    """

    def __init__(self, keys_path: str | Path | None = None, keygen: bool = True, fhe: str = "execute") -> None:
        if fhe not in ("execute", "disable"):
            raise ValueError(f"fhe must be 'execute' or 'disable', got {fhe!r}")
        self.keys_path = Path(keys_path).expanduser() if keys_path is not None else default_keys_path()
        self.fhe = fhe
        self._client = None
        self._clients: dict[str, Any] = {}
        self._codecs: dict[str, Any] = {}
        self._secrets: Secrets | None = None
        if keygen:
            self.keygen()

    def keygen(self) -> ClientEngine:
        """Load the keys under ``keys_path``, or generate and save them there."""
        path = self.keys_path
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if (path / SECRETS_FILE).exists():
            self._secrets = Secrets.load(path)
        else:
            self._secrets = Secrets.generate()
            self._secrets.save(path)
        if self.fhe == "disable":
            return self
        self._client = self._load_client("tags")
        return self

    def _load_client(self, matching: str) -> Any:
        """The FHE client of one circuit, its keys loaded from ``keys_path`` or made there."""
        from concrete import fhe

        layout = _CIRCUITS[matching]
        digest = layout.digest
        client = fhe.Client(layout.circuit().client.specs)
        keys_file, digest_file = self.keys_path / layout.keys_file, self.keys_path / layout.digest_file
        if keys_file.exists():
            written = digest_file.read_text().strip() if digest_file.exists() else None
            if written != digest():
                raise ValueError(
                    f"the keys in {self.keys_path} were made for another data-frame circuit (another "
                    "fhe_sklearn version): use a new keys_path"
                )
            client.keys.load(str(keys_file))
        else:
            # the join keys are made on first use, maybe by two owners apart after share_keys:
            # derived from the shared secrets, so that both make the same secret keys
            seed = self._ready().key_seed("join circuit") if matching == "fhe" else None
            client.keygen(True, secret_seed=seed)
            client.keys.save(str(keys_file))
            os.chmod(keys_file, 0o600)
            digest_file.write_text(digest() + "\n")
        return client

    def _client_for(self, matching: str) -> Any:
        """The FHE client of ``matching``'s circuit (None for clear engines)."""
        if self._client is None:
            return None
        if matching not in self._clients:
            self._clients[matching] = self._client if matching == "tags" else self._load_client(matching)
        return self._clients[matching]

    @property
    def key_id(self) -> str:
        """Public id of the key set, carried by every frame it encrypts."""
        return self._ready().key_id

    def share_keys(self, path: str | Path) -> Path:
        """Copy the key directory to ``path`` for a second data owner (see the trust model)."""
        self._ready()
        target = Path(path).expanduser()
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in (KEYS_FILE, DIGEST_FILE, JOIN_KEYS_FILE, JOIN_DIGEST_FILE, SECRETS_FILE):
            if (self.keys_path / name).exists():
                shutil.copy2(self.keys_path / name, target / name)
        return target

    def _ready(self) -> Secrets:
        if self._secrets is None:
            raise RuntimeError("no keys yet: call keygen() first")
        return self._secrets

    # -- encryption -----------------------------------------------------------------------
    def encrypt_from_pandas(
        self,
        df: pd.DataFrame,
        keys: list[str] | str | None = None,
        schema: dict | None = None,
        key_matching: str = "tags",
    ) -> EncryptedDataFrame:
        """Encrypt ``df``: every cell as its own ciphertext, ``keys`` columns also tagged.

        Parameters
        ----------
        df : DataFrame
            Columns of integers, bools, floats, strings or categoricals (unique string names).
        keys : list of str, optional
            Columns that merges (and, with tags, group-bys) may match on (integer, bool or string).
        schema : dict, optional
            Per column: ``{"min": ..., "max": ...}`` (integers, floats: the declared range; two
            owners use the same so their codes agree) or ``{"categories": [...]}`` (strings).
        key_matching : {"tags", "fhe"}
            ``"tags"``: key cells carry keyed tags; merges move ciphertexts without any FHE
            operation and group-bys work, but the server learns which key cells are equal.
            ``"fhe"``: no tags; a merge compares every pair of keys in FHE and the server
            learns nothing about which rows match (merges only; key values must be unique in
            each frame, and both owners must give key columns the same ``schema``).

        Raises
        ------
        ValueError
            Unsupported dtype, a value out of the declared range, a key column missing, or
            (``key_matching="fhe"``) a key column with repeated values.
        """
        secrets = self._ready()
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"encrypt_from_pandas takes a pandas DataFrame, got {type(df).__name__}")
        if key_matching not in MATCHINGS:
            raise ValueError(f"key_matching must be one of {list(MATCHINGS)}, got {key_matching!r}")
        names = list(df.columns)
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ValueError(f"column names must be unique strings, got {names}")
        keys = [keys] if isinstance(keys, str) else list(keys or [])
        missing = [k for k in keys if k not in names]
        if missing:
            raise ValueError(f"key columns {missing} are not in the frame (its columns: {names})")
        schema = dict(schema or {})
        unknown = [c for c in schema if c not in names]
        if unknown:
            raise ValueError(f"schema names columns {unknown} that are not in the frame")
        private = key_matching == "fhe"
        layout = _CIRCUITS[key_matching]
        client = self._client_for(key_matching)
        columns = []
        for name in names:
            series = df[name].reset_index(drop=True)
            encoding = fit_encoding(series, schema.get(name))
            codes, present = encode(series, encoding)
            cells = [
                self._encrypt_cell(cell, key_matching)
                for cell in to_cells(codes, present, layout.chunk_bits, layout.n_chunks)
            ]
            tags = fingerprint = None
            if name in keys:
                if encoding["kind"] not in KEY_KINDS:
                    why = "floats are not matched" if encoding["kind"] == "float" else "use its values as str"
                    raise ValueError(f"column {name!r} ({encoding['kind']}) cannot be a key: {why}")
                texts = [tag_text(v, encoding["kind"]) for v in series.astype(object)]
                if private:
                    needed = {"int": ("min", "max"), "str": ("categories",)}.get(encoding["kind"], ())
                    if not all(k in schema.get(name, {}) for k in needed):
                        declared = ", ".join(f"{k!r}: ..." for k in needed)
                        raise ValueError(
                            f"key column {name!r} needs a declared schema with key_matching='fhe' "
                            f"(schema={{{name!r}: {{{declared}}}}}, the same for both owners): a default "
                            "encoding follows the values, and the server would see which frames share them"
                        )
                    repeated = pd.Series(texts)[pd.Series(texts).duplicated()].unique()
                    if len(repeated):
                        raise ValueError(
                            f"key column {name!r} repeats values ({len(repeated)} of them, NaN counted as one "
                            "value): key_matching='fhe' needs unique keys in each frame, use 'tags' otherwise"
                        )
                    fingerprint = secrets.fingerprint(name, encoding)
                else:
                    tags = secrets.tags(name, texts)
            source = np.zeros(len(series), dtype=np.int16)
            column = Column(name, encoding["kind"], encoding["dtype"], [secrets.seal(encoding)], source, cells, tags)
            column.monotonic = tags is not None and bool(series.is_monotonic_increasing) and not series.hasnans
            column.fingerprint = fingerprint
            columns.append(column)
        if private:
            cell = np.zeros(join.CELL, dtype=np.int64)
            never = cell.copy()
            never[0] = join.NEVER
            zeros = [None] * 3
            zeros[ZERO], zeros[NEVER_KEY] = self._encrypt_cell(cell, "fhe"), self._encrypt_cell(never, "fhe")
            zeros[NO_HITS] = self._encrypt_cell(cell, "fhe", count=True)
        else:
            zeros = [self._encrypt_cell(np.zeros(CELL, dtype=np.int64)) for _ in range(ARITY - 1)]
        if client is None:
            info = KeyInfo(secrets.key_id, CLEAR, b"", zeros, key_matching)
        else:
            digest = layout.digest()
            info = KeyInfo(secrets.key_id, digest, client.evaluation_keys.serialize(), zeros, key_matching)
        return EncryptedDataFrame(info, columns)

    def _codec(self, matching: str = "tags") -> Any:
        """concrete's client circuit, made once: ``Client.encrypt`` / ``decrypt`` rebuild it per
        call, which costs more than encrypting one cell (input and output types are the same)."""
        if matching not in self._codecs:
            from concrete.compiler import ClientProgram

            client = self._client_for(matching)
            specs = client.specs.program_info
            program = ClientProgram.create_encrypted(specs, client.keys._keyset)
            self._codecs[matching] = program.get_client_circuit(specs.function_list()[0])
        return self._codecs[matching]

    def _encrypt_cell(self, cell: np.ndarray, matching: str = "tags", count: bool = False) -> bytes:
        """One cell (or, ``count``, the join circuit's zero match count) encrypted."""
        layout = _CIRCUITS[matching]
        cell = np.asarray(cell, dtype=np.int64)
        if (
            cell.shape != (layout.cell,) or cell.min() < 0 or cell.max() >= 2**layout.chunk_bits
        ):  # to_cells makes them so
            raise ValueError(f"internal error: bad cell {cell}")
        if self._client is None:
            return clear_cell(cell)
        from concrete.compiler import Value as RawValue
        from concrete.fhe import Value

        position = join.HITS_INPUT if count else layout.cell_input
        value = RawValue(int(cell[0])) if count else RawValue(cell)
        return Value(self._codec(matching).prepare_input(value, position)).serialize()

    # -- decryption -----------------------------------------------------------------------
    def _decrypt(self, blobs: list[bytes], matching: str = "tags", count: bool = False) -> np.ndarray:
        size = _CIRCUITS[matching].cell
        if not blobs:
            return np.zeros((0, size), dtype=np.int64)
        if self._client is None:
            cells = np.stack([read_clear_cell(b, size) for b in blobs])
            return cells[:, 0] // join.HITS_SCALE if count else cells
        from concrete import fhe

        codec = self._codec(matching)
        position = 0 if matching == "tags" else join.HITS_OUTPUT if count else join.CELL_OUTPUT
        try:
            values = np.stack(
                [np.asarray(codec.process_output(fhe.Value.deserialize(b)._inner, position).to_py_val()) for b in blobs]
            )
        except RuntimeError as err:
            raise ValueError(f"malformed ciphertext in the frame: {str(err)[:200]}") from None
        # a match count is held times HITS_SCALE
        return values // join.HITS_SCALE if count else values

    def _counts(self, blobs: list[bytes], matching: str) -> np.ndarray:
        """Decrypted match counts of a private merge: 0 or 1, as keys are unique."""
        counts = self._decrypt(blobs, matching, count=True).reshape(-1)
        if counts.size and (counts.min() < 0 or counts.max() > 1):
            raise ValueError(
                "a private merge matched a key more than once: a frame's keys were not unique "
                "(a file modified after its owner encrypted it?)"
            )
        return counts

    def _check(self, info: KeyInfo) -> Secrets:
        secrets = self._ready()
        if info.key_id != secrets.key_id:
            raise ValueError(
                f"this frame was encrypted under other keys (key set {info.key_id[:8]}…, "
                f"this engine holds {secrets.key_id[:8]}…)"
            )
        if (info.circuit == CLEAR) != (self._client is None):
            modes = ("clear (fhe='disable')", "encrypted") if info.circuit == CLEAR else ("encrypted", "clear")
            raise ValueError(f"this frame is {modes[0]}, this engine is {modes[1]}")
        if info.circuit != CLEAR and info.circuit != _CIRCUITS[info.matching].digest():
            raise ValueError("this frame was written for another data-frame circuit (another fhe_sklearn version)")
        return secrets

    def _decode_column(self, column: Column, secrets: Secrets, matching: str = "tags") -> pd.Series:
        encodings = [secrets.unseal(e, column.name) for e in column.encodings]
        rows = np.flatnonzero(column.source >= 0)
        layout = _CIRCUITS[matching]
        cells = self._decrypt([column.cells[r] for r in rows], matching)
        codes, present = from_cells(cells, layout.chunk_bits, layout.n_chunks)
        if column.hits is not None:  # picked by a private merge: unmatched rows are gaps
            counted = np.array([i for i, c in enumerate(column.hits) if c is not None], dtype=np.int64)
            counts = self._counts([column.hits[i] for i in counted], matching)
            gap = np.zeros(len(column.cells), dtype=bool)
            gap[counted] = counts == 0
            keep = ~gap[rows]
            rows, codes, present = rows[keep], codes[keep], present[keep]
        parts = []
        for e, encoding in enumerate(encodings):
            mine = column.source[rows] == e
            part = decode(codes[mine], present[mine].astype(bool), encoding)
            part.index = rows[mine]
            parts.append(part)
        values = parts[0] if len(parts) == 1 else pd.concat(parts).sort_index()
        # rows a join left empty: NaN, with the dtype promotion pandas.merge applies
        if len(rows) < len(column.cells):
            values = values.reindex(np.arange(len(column.cells)))
        return values

    @staticmethod
    def _dtype(values: pd.Series, column: Column, private: bool) -> pd.Series:
        """``values`` in the column's pandas dtype: a tagged column an earlier merge left gaps in
        already names pandas' promoted dtype; a private merge's rows are only known after
        decrypting, so NaN in an int or bool column promotes it then, as pandas.merge does."""
        dtype = column.dtype
        if private and values.isna().any():
            dtype = {"int": "float64", "bool": "object"}.get(column.kind, dtype)
        return values if str(values.dtype) == dtype else values.astype(dtype)

    def decrypt_to_pandas(self, encrypted: EncryptedDataFrame | EncryptedAggregate) -> pd.DataFrame | pd.Series:
        """The clear DataFrame of an encrypted frame (or the DataFrame / Series of an aggregate)."""
        if isinstance(encrypted, EncryptedAggregate):
            return self._decrypt_aggregate(encrypted)
        if not isinstance(encrypted, EncryptedDataFrame):
            raise TypeError(f"decrypt_to_pandas takes an encrypted frame, got {type(encrypted).__name__}")
        secrets = self._check(encrypted.info)
        matching = encrypted.info.matching
        keep = np.ones(len(encrypted), dtype=bool)
        if encrypted.row_filter is not None:  # a private merge's rows that pandas does not keep
            cells, wanted = encrypted.row_filter.cells, encrypted.row_filter.keep
            counted = [i for i, c in enumerate(cells) if c is not None]
            keep[counted] = self._counts([cells[i] for i in counted], matching) == wanted[counted]
        data = {}
        for column in encrypted._columns:
            series = self._decode_column(column, secrets, matching)[keep].reset_index(drop=True)
            data[column.name] = self._dtype(series, column, matching == "fhe")
        df = pd.DataFrame(data, index=pd.RangeIndex(int(keep.sum())))
        if encrypted.sort_on is not None:
            df = df.sort_values(encrypted.sort_on, kind="stable", na_position="last").reset_index(drop=True)
        return df

    def _decrypt_aggregate(self, result: EncryptedAggregate) -> pd.DataFrame | pd.Series:
        secrets = self._check(result.info)
        values = {}
        for item in result.items:
            encoding = secrets.unseal(item.encoding, item.column)
            column = []
            for partials in item.partials:
                total, count = from_cells(self._decrypt([blob for blob, _ in partials]))
                weights = np.array([w for _, w in partials], dtype=np.int64)
                value = decode_sums(int(total @ weights), int(count @ weights), encoding, item.func)
                column.append(float(value) if item.func == "sum" and item.dtype.startswith("float") else value)
            values[item.name] = column
        if result.key is None:
            return pd.Series({name: v[0] for name, v in values.items()})
        index = self._dtype(self._decode_column(result.key, secrets), result.key, False).reset_index(drop=True)
        df = pd.DataFrame({name: pd.Series(v) for name, v in values.items()})
        df.index = pd.Index(index, name=result.key.name)
        df = df[df.index.notna()]
        return df.sort_index(kind="stable")
