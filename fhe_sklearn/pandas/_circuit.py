"""The one FHE circuit of encrypted data-frames: the sum of 32 encrypted cells.

A cell is a vector of :data:`CELL` small integers: a presence bit (0 for NaN) and the cell's
16-bit code in four 4-bit chunks, least significant first. Merges move cells without touching
them; aggregates add them, padding a run with distinct encryptions of zero that each frame
carries (the same ciphertext added twice would add its noise twice, which the compiler does
not budget for). The sum has no table lookup, so it needs no bootstrapping key (the
evaluation keys are a few bytes) and every chunk sum stays exact: 32 × 15 fits the circuit's
9-bit encoding, and the client recombines the chunks (and adds partial sums) after decrypting.
Data-independent, so client and server compile the same circuit; its digest names it in files.
"""

from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache
from typing import Any

import numpy as np

CHUNK_BITS = 4
N_CHUNKS = 4
#: a cell: presence bit, then N_CHUNKS chunks of the code
CELL = 1 + N_CHUNKS
#: largest code a cell holds (65535 values, NaN apart)
MAX_CODE = 2 ** (CHUNK_BITS * N_CHUNKS) - 1
#: cells one circuit run adds
ARITY = 32


def _sum(**cells: Any) -> Any:
    values = list(cells.values())
    total = values[0]
    for cell in values[1:]:
        total = total + cell
    return total


# concrete reads the parameter names from the signature: name the ARITY cells
_sum.__signature__ = inspect.Signature(
    [inspect.Parameter(f"x{i}", inspect.Parameter.KEYWORD_ONLY) for i in range(ARITY)]
)


@lru_cache(maxsize=1)
def sum_circuit() -> Any:
    """The compiled sum circuit (compiled once per process, ~1.5 s)."""
    from concrete import fhe

    names = [f"x{i}" for i in range(ARITY)]
    compiler = fhe.Compiler(_sum, dict.fromkeys(names, "encrypted"))
    high = np.array([1] + [2**CHUNK_BITS - 1] * N_CHUNKS)
    inputset = [(high,) * ARITY, (np.zeros(CELL, dtype=np.int64),) * ARITY]
    configuration = fhe.Configuration(compress_input_ciphertexts=True, compress_evaluation_keys=True)
    return compiler.compile(inputset, configuration=configuration)


@lru_cache(maxsize=1)
def circuit_digest() -> str:
    """sha256 of the circuit's client specs: frames written for another circuit are refused."""
    return hashlib.sha256(sum_circuit().client.specs.serialize()).hexdigest()


#: the circuit digest of frames made with ``fhe="disable"``: cells hold clear integers
CLEAR = "0" * 64
_CLEAR_MAGIC = b"FHESKLC1"


def clear_cell(cell: np.ndarray) -> bytes:
    """A cell in the clear (``fhe="disable"``: the same files and server code, no encryption)."""
    return _CLEAR_MAGIC + np.asarray(cell, dtype="<i8").tobytes()


def read_clear_cell(blob: bytes, size: int = CELL) -> np.ndarray:
    """The ``size`` integers of a clear cell (ValueError if malformed)."""
    if not blob.startswith(_CLEAR_MAGIC) or len(blob) != len(_CLEAR_MAGIC) + 8 * size:
        raise ValueError("a cell of a clear (fhe='disable') frame is malformed")
    return np.frombuffer(blob[len(_CLEAR_MAGIC) :], dtype="<i8").astype(np.int64)


def to_cells(
    codes: np.ndarray, present: np.ndarray, chunk_bits: int = CHUNK_BITS, n_chunks: int = N_CHUNKS
) -> np.ndarray:
    """Codes (int, < 2**16) and presence flags as cells, shape (n, 1 + n_chunks)."""
    codes = np.where(present, codes, 0).astype(np.int64)
    shifts = chunk_bits * np.arange(n_chunks)
    chunks = (codes[:, None] >> shifts) & (2**chunk_bits - 1)
    return np.concatenate([present.astype(np.int64)[:, None], chunks], axis=1)


def from_cells(
    cells: np.ndarray, chunk_bits: int = CHUNK_BITS, n_chunks: int = N_CHUNKS
) -> tuple[np.ndarray, np.ndarray]:
    """(sum of codes, count of present cells) of decrypted cells or cell sums, shape (n, 1 + n_chunks)."""
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 1 + n_chunks)
    weights = 2 ** (chunk_bits * np.arange(n_chunks, dtype=np.int64))
    return cells[:, 1:] @ weights, cells[:, 0]
