"""Encrypted data-frames against Concrete ML 1.9's ``concrete.ml.pandas``, in one run.

Merge of two 100-row, 4-column frames (a key column and three value columns): merge time on the
server, encryption and decryption time, an encrypted frame's size on disk, evaluation-key size,
key generation. Concrete ML's side runs in a subprocess with its own interpreter
(``--cml-python``, default ``/tmp/cml/bin/python``). Its merge makes one circuit call per
(left row, right value column, right row), 30,000 calls for these frames, each the same cost:
it is timed on the first ``--cml-left-rows`` left rows against the full right frame, and the
full time is that × (100 / rows) -- written as such in the results.

    python -m benchmarks.dataframes      # writes benchmarks/results/dataframes.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import RESULTS, machine, markdown_table

N_ROWS = 100
TARGET_TIME_RATIO = 0.5


def frames(high: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two 100-row frames: a key ``id`` and three integer columns in [1, high]; 80 keys shared."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1, N_ROWS + 21))
    if high < N_ROWS + 20:  # Concrete ML: keys are 4-bit too, so they repeat
        ids = (ids - 1) % high + 1
    left = pd.DataFrame({"id": ids[:N_ROWS], **{c: rng.integers(1, high + 1, N_ROWS) for c in "abc"}})
    right = pd.DataFrame({"id": ids[20 : 20 + N_ROWS], **{c: rng.integers(1, high + 1, N_ROWS) for c in "def"}})
    return left, right


def ours() -> dict:
    from fhe_sklearn.pandas import ClientEngine, EncryptedDataFrame

    left, right = frames(high=60_000)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        engine = ClientEngine(keys_path=Path(tmp) / "keys")
        keygen = time.perf_counter() - start
        start = time.perf_counter()
        enc_left = engine.encrypt_from_pandas(left, keys=["id"])
        encrypt = time.perf_counter() - start
        enc_right = engine.encrypt_from_pandas(right, keys=["id"])
        frame_bytes = enc_left.save(Path(tmp) / "left.fhedf").stat().st_size
        row = {
            "library": "fhe_sklearn",
            "values": "ints < 2^16 (4 chunks of 4 bits)",
            "keygen_s": round(keygen, 2),
            "encrypt_s_per_frame": round(encrypt, 2),
            "frame_bytes_on_disk": frame_bytes,
            "evaluation_key_bytes": len(enc_left.info.evaluation_keys),
        }
        for how in ("left", "right", "inner", "outer"):
            start = time.perf_counter()
            merged = EncryptedDataFrame.load(Path(tmp) / "left.fhedf").merge(enc_right, how=how, on="id")
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            clear = engine.decrypt_to_pandas(merged)
            decrypt = time.perf_counter() - start
            expected = pd.merge(left, right, how=how, on="id")
            pd.testing.assert_frame_equal(clear, expected)
            row[f"merge_{how}_s"] = round(elapsed, 4)
            if how == "left":
                row["decrypt_merged_s"] = round(decrypt, 2)
                row["merged_bytes_on_disk"] = merged.save(Path(tmp) / "m.fhedf").stat().st_size
        row["merge_equals_pandas"] = True
        start = time.perf_counter()
        grouped = enc_left.merge(enc_right, how="inner", on="id").groupby("id").agg("sum")
        row["groupby_sum_s"] = round(time.perf_counter() - start, 2)
        inner = pd.merge(left, right, how="inner", on="id")
        pd.testing.assert_frame_equal(engine.decrypt_to_pandas(grouped), inner.groupby("id").agg("sum"))
    return row


def private(left_rows: int) -> dict:
    """Ours with ``key_matching="fhe"``: keys compared in FHE, as Concrete ML does (the server
    learns nothing about matches). Each left row costs the same (13 blocks of 8 right rows per
    right column): timed on ``left_rows`` left rows against the full right frame, scaled."""
    from fhe_sklearn.pandas import ClientEngine, EncryptedDataFrame

    left, right = frames(high=60_000)
    schema = {"id": {"min": 0, "max": 65_535}}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        engine = ClientEngine(keys_path=Path(tmp) / "keys", keygen=False)
        engine.keygen()._client_for("fhe")
        keygen = time.perf_counter() - start
        start = time.perf_counter()
        enc_left = engine.encrypt_from_pandas(left, keys="id", schema=schema, key_matching="fhe")
        encrypt = time.perf_counter() - start
        enc_right = engine.encrypt_from_pandas(right, keys="id", schema=schema, key_matching="fhe")
        frame_bytes = enc_left.save(Path(tmp) / "left.fhedf").stat().st_size
        part = engine.encrypt_from_pandas(left.head(left_rows), keys="id", schema=schema, key_matching="fhe")
        start = time.perf_counter()
        merged = part.merge(EncryptedDataFrame.load(enc_right.to_bytes()), how="left", on="id")
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        clear = engine.decrypt_to_pandas(merged)
        decrypt = time.perf_counter() - start
        pd.testing.assert_frame_equal(clear, pd.merge(left.head(left_rows), right, how="left", on="id"))
        merged_bytes = merged.save(Path(tmp) / "m.fhedf").stat().st_size
    keys = len(enc_left.info.evaluation_keys)
    row = _scaled_row(left_rows, keygen, encrypt, frame_bytes, keys, elapsed, decrypt, merged_bytes)
    return {
        "library": "fhe_sklearn, key_matching='fhe'",
        "values": "ints < 2^16 (6 chunks of 3 bits)",
        **row,
        "merge_equals_pandas": True,
    }


def _scaled_row(
    left_rows: int,
    keygen: float,
    encrypt: float,
    frame_bytes: int,
    keys: int,
    merge: float,
    decrypt: float,
    merged_bytes: int,
) -> dict:
    """The figures of an FHE merge timed on ``left_rows`` left rows, scaled to N_ROWS (each
    left row costs the same; a merged file holds the evaluation keys once, then its rows)."""
    scale = N_ROWS / left_rows
    return {
        "keygen_s": round(keygen, 2),
        "encrypt_s_per_frame": round(encrypt, 2),
        "frame_bytes_on_disk": frame_bytes,
        "evaluation_key_bytes": keys,
        "merge_left_s": round(merge * scale, 1),
        "merge_left_measured": f"{merge:.1f} s on {left_rows} x {N_ROWS} rows, x{scale:g}",
        "decrypt_merged_s": round(decrypt * scale, 2),
        "merged_bytes_on_disk": int(keys + (merged_bytes - keys) * scale),
    }


def cml_side(left_rows: int) -> dict:
    """Concrete ML 1.9 (run with its interpreter): left merge, timed on ``left_rows`` left rows."""
    from concrete.ml.pandas import ClientEngine, load_encrypted_dataframe

    left, right = frames(high=15)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        engine = ClientEngine(keys_path=Path(tmp) / "keys")
        keygen = time.perf_counter() - start
        start = time.perf_counter()
        enc_left = engine.encrypt_from_pandas(left)
        encrypt = time.perf_counter() - start
        enc_right = engine.encrypt_from_pandas(right)
        enc_left.save(Path(tmp) / "left")
        frame_bytes = (Path(tmp) / "left.zip").stat().st_size
        evk = len(engine.client.evaluation_keys.serialize())
        part = engine.encrypt_from_pandas(left.head(left_rows))
        start = time.perf_counter()
        merged = part.merge(enc_right, how="left", on="id")
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        engine.decrypt_to_pandas(merged)
        decrypt = time.perf_counter() - start
        merged.save(Path(tmp) / "merged")
        merged_bytes = (Path(tmp) / "merged.zip").stat().st_size
        load_encrypted_dataframe(Path(tmp) / "left.zip")
    return {
        "library": "Concrete ML 1.9",
        "values": "ints in [1, 15] (its limit)",
        **_scaled_row(left_rows, keygen, encrypt, frame_bytes, evk, elapsed, decrypt, merged_bytes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cml-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cml-left-rows", type=int, default=1)
    parser.add_argument("--private-left-rows", type=int, default=2)
    parser.add_argument("--cml-python", default="/tmp/cml/bin/python")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    if args.cml_side:
        print(json.dumps(cml_side(args.cml_left_rows)))
        sys.stdout.flush()
        os._exit(0)
    cml = subprocess.run(
        [args.cml_python, "-m", "benchmarks.dataframes", "--cml-side", "--cml-left-rows", str(args.cml_left_rows)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    if cml.returncode != 0:
        raise SystemExit(f"Concrete ML side failed:\n{cml.stderr[-3000:]}")
    theirs = json.loads(cml.stdout.strip().splitlines()[-1])
    mine, hidden = ours(), private(args.private_left_rows)
    ratios, checks = {}, {}
    for tag, row in (("", mine), ("private_", hidden)):
        ratios[f"{tag}merge_left_time_ratio"] = row["merge_left_s"] / theirs["merge_left_s"]
        ratios[f"{tag}frame_size_ratio"] = row["frame_bytes_on_disk"] / theirs["frame_bytes_on_disk"]
        ratios[f"{tag}evaluation_key_ratio"] = row["evaluation_key_bytes"] / theirs["evaluation_key_bytes"]
        name = "key_matching='fhe'" if tag else "tags"
        checks[f"{name}: merge time <= 0.5x"] = ratios[f"{tag}merge_left_time_ratio"] <= TARGET_TIME_RATIO
        checks[f"{name}: frame size <= Concrete ML"] = ratios[f"{tag}frame_size_ratio"] <= 1
        checks[f"{name}: evaluation keys <= Concrete ML"] = ratios[f"{tag}evaluation_key_ratio"] <= 1
    rows = [mine, hidden, theirs]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "rows": rows, "ratios": ratios, "checks": checks}
    (out / "dataframes.json").write_text(json.dumps(payload, indent=2))
    transposed = [
        {"metric": k, **{r["library"]: r.get(k) for r in rows}} for k in dict.fromkeys(k for r in rows for k in r)
    ]
    notes = (
        "Two 100-row frames (`id` + 3 integer columns, 80 shared keys), merged on `id`. "
        "fhe_sklearn (tags) matches rows on keyed tags of the key column and moves ciphertexts (no FHE "
        "operation in a merge; the server learns which keys are equal); fhe_sklearn "
        "(key_matching='fhe') and Concrete ML compare keys and select values in FHE (the server "
        "learns nothing about matches): ours one call per (left row, right column, block of 8 right "
        "rows), Concrete ML's one per (left row, right column, right row). Both FHE merges are timed "
        "on a few left rows and scaled linearly (each left row costs the same). Ratios: "
        + ", ".join(f"{k} = {v:.3g}" for k, v in ratios.items())
        + "; checks: "
        + ", ".join(f"{k}: {'pass' if v else 'FAIL'}" for k, v in checks.items())
    )
    table = markdown_table(transposed)
    (out / "dataframes.md").write_text(
        f"# Encrypted data-frames vs Concrete ML 1.9\n\nMachine: {machine()}\n\n{notes}\n\n{table}\n"
    )
    print(table)
    print(notes)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
