"""ClientEngine: the data owner's keys; encrypts pandas frames and decrypts results."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._aggregate import EncryptedAggregate
from ._circuit import ARITY, CELL, CLEAR, circuit_digest, clear_cell, from_cells, read_clear_cell, sum_circuit, to_cells
from ._encoding import KEY_KINDS, decode, decode_sums, encode, fit_encoding, tag_text
from ._frame_data import Column, KeyInfo
from ._sealing import SECRETS_FILE, Secrets
from .dataframe import EncryptedDataFrame

KEYS_FILE = "fhe_keys"
DIGEST_FILE = "circuit.sha256"


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
        self._circuit = None
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
        from concrete import fhe

        circuit = sum_circuit()
        client = fhe.Client(circuit.client.specs)
        keys_file, digest_file = path / KEYS_FILE, path / DIGEST_FILE
        if keys_file.exists():
            written = digest_file.read_text().strip() if digest_file.exists() else None
            if written != circuit_digest():
                raise ValueError(
                    f"the keys in {path} were made for another data-frame circuit (another fhe_sklearn "
                    "version): use a new keys_path"
                )
            client.keys.load(str(keys_file))
        else:
            client.keygen(True)
            client.keys.save(str(keys_file))
            os.chmod(keys_file, 0o600)
            digest_file.write_text(circuit_digest() + "\n")
        self._client = client
        return self

    @property
    def key_id(self) -> str:
        """Public id of the key set, carried by every frame it encrypts."""
        return self._ready().key_id

    def share_keys(self, path: str | Path) -> Path:
        """Copy the key directory to ``path`` for a second data owner (see the trust model)."""
        self._ready()
        target = Path(path).expanduser()
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in (KEYS_FILE, DIGEST_FILE, SECRETS_FILE):
            if (self.keys_path / name).exists():
                shutil.copy2(self.keys_path / name, target / name)
        return target

    def _ready(self) -> Secrets:
        if self._secrets is None:
            raise RuntimeError("no keys yet: call keygen() first")
        return self._secrets

    # -- encryption -----------------------------------------------------------------------
    def encrypt_from_pandas(
        self, df: pd.DataFrame, keys: list[str] | str | None = None, schema: dict | None = None
    ) -> EncryptedDataFrame:
        """Encrypt ``df``: every cell as its own ciphertext, ``keys`` columns also tagged.

        Parameters
        ----------
        df : DataFrame
            Columns of integers, bools, floats, strings or categoricals (unique string names).
        keys : list of str, optional
            Columns that merges and group-bys may match on (integer, bool, string or
            categorical). The server learns which of their cells are equal.
        schema : dict, optional
            Per column: ``{"min": ..., "max": ...}`` (integers, floats: the declared range; two
            owners use the same so their codes agree) or ``{"categories": [...]}`` (strings).

        Raises
        ------
        ValueError
            Unsupported dtype, a value out of the declared range, a key column missing.
        """
        secrets = self._ready()
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"encrypt_from_pandas takes a pandas DataFrame, got {type(df).__name__}")
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
        client = self._client
        columns = []
        for name in names:
            series = df[name].reset_index(drop=True)
            encoding = fit_encoding(series, schema.get(name))
            codes, present = encode(series, encoding)
            cells = [self._encrypt_cell(cell) for cell in to_cells(codes, present)]
            tags = None
            if name in keys:
                if encoding["kind"] not in KEY_KINDS:
                    why = "floats are not matched" if encoding["kind"] == "float" else "use its values as str"
                    raise ValueError(f"column {name!r} ({encoding['kind']}) cannot be a key: {why}")
                tags = secrets.tags(name, [tag_text(v, encoding["kind"]) for v in series.astype(object)])
            source = np.zeros(len(series), dtype=np.int16)
            column = Column(name, encoding["kind"], encoding["dtype"], [secrets.seal(encoding)], source, cells, tags)
            column.monotonic = tags is not None and bool(series.is_monotonic_increasing) and not series.hasnans
            columns.append(column)
        zeros = [self._encrypt_cell(np.zeros(CELL, dtype=np.int64)) for _ in range(ARITY - 1)]
        if client is None:
            info = KeyInfo(secrets.key_id, CLEAR, b"", zeros)
        else:
            info = KeyInfo(secrets.key_id, circuit_digest(), client.evaluation_keys.serialize(), zeros)
        return EncryptedDataFrame(info, columns)

    def _codec(self) -> Any:
        """concrete's client circuit, made once: ``Client.encrypt`` / ``decrypt`` rebuild it per
        call, which costs more than encrypting one cell (input and output types are the same)."""
        if self._circuit is None:
            from concrete.compiler import ClientProgram

            specs = self._client.specs.program_info
            program = ClientProgram.create_encrypted(specs, self._client.keys._keyset)
            self._circuit = program.get_client_circuit(specs.function_list()[0])
        return self._circuit

    def _encrypt_cell(self, cell: np.ndarray) -> bytes:
        if self._client is None:
            return clear_cell(cell)
        from concrete.compiler import Value as RawValue
        from concrete.fhe import Value

        cell = np.asarray(cell, dtype=np.int64)
        if cell.shape != (CELL,) or cell.min() < 0 or cell.max() > 15:  # to_cells makes them so
            raise ValueError(f"internal error: bad cell {cell}")
        return Value(self._codec().prepare_input(RawValue(cell), 0)).serialize()

    # -- decryption -----------------------------------------------------------------------
    def _decrypt(self, blobs: list[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, CELL), dtype=np.int64)
        if self._client is None:
            return np.stack([read_clear_cell(b) for b in blobs])
        from concrete import fhe

        codec = self._codec()
        try:
            return np.stack(
                [np.asarray(codec.process_output(fhe.Value.deserialize(b)._inner, 0).to_py_val()) for b in blobs]
            )
        except RuntimeError as err:
            raise ValueError(f"malformed ciphertext in the frame: {str(err)[:200]}") from None

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
        if info.circuit != CLEAR and info.circuit != circuit_digest():
            raise ValueError("this frame was written for another data-frame circuit (another fhe_sklearn version)")
        return secrets

    def _decode_column(self, column: Column, secrets: Secrets) -> pd.Series:
        encodings = [secrets.unseal(e, column.name) for e in column.encodings]
        rows = np.flatnonzero(column.source >= 0)
        codes, present = from_cells(self._decrypt([column.cells[r] for r in rows]))
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
        # a column an earlier merge left gaps in keeps pandas' promoted dtype
        return values if str(values.dtype) == column.dtype else values.astype(column.dtype)

    def decrypt_to_pandas(self, encrypted: EncryptedDataFrame | EncryptedAggregate) -> pd.DataFrame | pd.Series:
        """The clear DataFrame of an encrypted frame (or the DataFrame / Series of an aggregate)."""
        if isinstance(encrypted, EncryptedAggregate):
            return self._decrypt_aggregate(encrypted)
        if not isinstance(encrypted, EncryptedDataFrame):
            raise TypeError(f"decrypt_to_pandas takes an encrypted frame, got {type(encrypted).__name__}")
        secrets = self._check(encrypted.info)
        data = {}
        for column in encrypted._columns:
            series = self._decode_column(column, secrets)
            data[column.name] = series.reset_index(drop=True)
        df = pd.DataFrame(data, index=pd.RangeIndex(len(encrypted)))
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
        index = self._decode_column(result.key, secrets).reset_index(drop=True)
        df = pd.DataFrame({name: pd.Series(v) for name, v in values.items()})
        df.index = pd.Index(index, name=result.key.name)
        df = df[df.index.notna()]
        return df.sort_index(kind="stable")
