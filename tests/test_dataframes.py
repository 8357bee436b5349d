"""fhe_sklearn.pandas: decrypted merges and aggregates equal pandas; bad input gets clear errors.

Breadth runs on clear cells (``fhe="disable"``: the same tags, encodings, files and server code,
without encryption); a few cases encrypt for real (``fhe_execute``).
"""

import zipfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhe_sklearn.pandas import ClientEngine, EncryptedDataFrame

HOWS = ["left", "right", "inner", "outer"]
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def clear_engine(tmp_path_factory):
    return ClientEngine(tmp_path_factory.mktemp("clear_keys"), fhe="disable")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return ClientEngine(tmp_path_factory.mktemp("keys"))


def _frame(draw, n, key_values, value_name):
    keys = draw(st.lists(st.sampled_from(key_values), min_size=n, max_size=n))
    # string keys as pandas' str dtype even when all are None (else object: a schema mismatch)
    data = {
        "k": pd.Series(keys, dtype="str" if isinstance(key_values[0], str) else "int64"),
        value_name: draw(st.lists(st.integers(-100, 60_000), min_size=n, max_size=n)),
    }
    return data


@st.composite
def frame_pairs(draw):
    str_keys = draw(st.booleans())
    key_values = ["a", "b", "c", None] if str_keys else [0, 1, 2, 3, 65_000]
    n_left, n_right = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    left = _frame(draw, n_left, key_values, "v")
    left["s"] = draw(st.lists(st.sampled_from(["x", "yy", None]), min_size=n_left, max_size=n_left))
    right = _frame(draw, n_right, key_values, "v")
    quarters = st.one_of(st.integers(-40, 40).map(lambda q: q / 4), st.just(np.nan))
    right["f"] = draw(st.lists(quarters, min_size=n_right, max_size=n_right))
    right["b"] = draw(st.lists(st.booleans(), min_size=n_right, max_size=n_right))
    return pd.DataFrame(left), pd.DataFrame(right)


def _assert_equal(got, expected):
    pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=1e-3)


@FAST
@given(pair=frame_pairs())
def test_every_merge_equals_pandas(clear_engine, pair):
    left, right = pair
    enc_left = clear_engine.encrypt_from_pandas(left, keys=["k"])
    enc_right = clear_engine.encrypt_from_pandas(right, keys="k")
    for how in HOWS:
        merged = enc_left.merge(enc_right, how=how, on="k")
        assert merged.shape == pd.merge(left, right, how=how, on="k").shape
        _assert_equal(clear_engine.decrypt_to_pandas(merged), pd.merge(left, right, how=how, on="k"))
    # merged again: pandas' dtypes (gaps promote) and row order (sortedness) carry over
    third = right.rename(columns={"v": "w", "f": "g", "b": "c"}).sort_values("k", ignore_index=True)
    enc_third = clear_engine.encrypt_from_pandas(third, keys="k")
    for first, second in [("left", "inner"), ("inner", "right"), ("right", "left")]:
        twice = enc_left.merge(enc_right, how=first, on="k").merge(enc_third, how=second, on="k")
        expected = pd.merge(pd.merge(left, right, how=first, on="k"), third, how=second, on="k")
        _assert_equal(clear_engine.decrypt_to_pandas(twice), expected)


@FAST
@given(pair=frame_pairs())
def test_groupby_and_column_aggregates_equal_pandas(clear_engine, pair):
    left, right = pair
    frame = pd.merge(left, right, how="left", on="k")
    encrypted = clear_engine.encrypt_from_pandas(left, keys="k").merge(
        clear_engine.encrypt_from_pandas(right, keys="k"), how="left", on="k"
    )
    spec = {"v_x": "sum", "v_y": "sum", "f": "mean", "s": "count"}
    _assert_equal(clear_engine.decrypt_to_pandas(encrypted.groupby("k").agg(spec)), frame.groupby("k").agg(spec))
    by_right = clear_engine.encrypt_from_pandas(right, keys="k").groupby("k")[["v", "b", "f"]]
    for func in ("sum", "count", "mean"):
        _assert_equal(clear_engine.decrypt_to_pandas(by_right.agg(func)), right.groupby("k")[["v", "b", "f"]].agg(func))
    for func in ("sum", "count", "mean"):
        got = clear_engine.decrypt_to_pandas(encrypted.agg(func, ["v_x", "f"]))
        pd.testing.assert_series_equal(got, getattr(frame[["v_x", "f"]], func)(), check_dtype=False, atol=1e-3)


def test_group_sums_past_one_circuit_run(clear_engine):
    """80 rows in one group: three partial sums, added by the client; a cell a merge copied
    to 80 rows is summed once and weighted (the same ciphertext twice in a run doubles its noise)."""
    frame = pd.DataFrame({"k": [1] * 80 + [2], "amount": np.arange(81) * 800})
    encrypted = clear_engine.encrypt_from_pandas(frame, keys="k")
    result = encrypted.groupby("k").agg("sum")
    assert [len(p) for p in result.items[0].partials] == [3, 1]
    _assert_equal(clear_engine.decrypt_to_pandas(result), frame.groupby("k").agg("sum"))
    one = pd.DataFrame({"k": [1, 2], "x": [7, 9]})
    merged = clear_engine.encrypt_from_pandas(one, keys="k").merge(encrypted, on="k")
    result = merged.groupby("k").agg({"x": "sum", "amount": "sum"})
    assert result.items[0].partials[0][0][1] == 80
    assert [len(p) for p in result.items[1].partials] == [3, 1]
    expected = pd.merge(one, frame, on="k").groupby("k").agg({"x": "sum", "amount": "sum"})
    _assert_equal(clear_engine.decrypt_to_pandas(result), expected)


def test_categoricals_and_schema(clear_engine):
    left = pd.DataFrame(
        {"k": [1, 2, 1], "c": pd.Categorical(["lo", "hi", None], categories=["lo", "hi"], ordered=True)}
    )
    right = pd.DataFrame({"k": [1, 3], "s": ["x", "y"], "m": [5.5, 6.0]})
    schema = {"m": {"min": 0.0, "max": 10.0}, "s": {"categories": ["y", "x", "z"]}}
    enc = clear_engine.encrypt_from_pandas(right, keys="k", schema=schema)
    merged = clear_engine.encrypt_from_pandas(left, keys="k").merge(enc, how="outer", on="k")
    _assert_equal(clear_engine.decrypt_to_pandas(merged), pd.merge(left, right, how="outer", on="k"))
    with pytest.raises(ValueError, match="cannot be a key: use its values as str"):
        clear_engine.encrypt_from_pandas(left, keys="c")


def test_bad_inputs_get_clear_errors(clear_engine, tmp_path):
    frame = pd.DataFrame({"k": [1, 2], "v": [3, 4], "f": [0.5, 1.5]})
    enc = clear_engine.encrypt_from_pandas(frame, keys="k")
    other = clear_engine.encrypt_from_pandas(frame.rename(columns={"k": "j"}), keys="j")
    with pytest.raises(ValueError, match="right frame has no column 'k'"):
        enc.merge(other, on="k")
    with pytest.raises(ValueError, match="not encrypted as a key column"):
        enc.merge(enc, on="v")
    with pytest.raises(ValueError, match="how must be one of"):
        enc.merge(enc, how="cross", on="k")
    strings = clear_engine.encrypt_from_pandas(frame.astype({"k": str}), keys="k")
    with pytest.raises(ValueError, match="schema mismatch: key column 'k' is int64 on the left and str"):
        enc.merge(strings, on="k")
    with pytest.raises(ValueError, match="spans 70001 integers"):
        clear_engine.encrypt_from_pandas(pd.DataFrame({"v": [0, 70_000]}))
    with pytest.raises(ValueError, match=r"column 'v' holds values in \[3, 4\], out of its declared range \[0, 3\]"):
        clear_engine.encrypt_from_pandas(frame, schema={"v": {"min": 0, "max": 3}})
    with pytest.raises(ValueError, match=r"column 'f' holds values in \[0.5, 1.5\], out of its declared range"):
        clear_engine.encrypt_from_pandas(frame, schema={"f": {"min": 1.0, "max": 2.0}})
    with pytest.raises(ValueError, match="key columns \\['id'\\] are not in the frame"):
        clear_engine.encrypt_from_pandas(frame, keys=["id"])
    with pytest.raises(ValueError, match="floats are not matched"):
        clear_engine.encrypt_from_pandas(frame, keys=["f"])
    with pytest.raises(ValueError, match="dtype datetime64"):
        clear_engine.encrypt_from_pandas(pd.DataFrame({"t": pd.to_datetime(["2024-01-01"])}))
    with pytest.raises(ValueError, match="cannot sum column 's'"):
        clear_engine.encrypt_from_pandas(pd.DataFrame({"s": ["a"]})).sum()
    path = enc.save(tmp_path / "frame.fhedf", signing_key=b"0123456789abcdef")
    assert clear_engine.decrypt_to_pandas(EncryptedDataFrame.load(path, verify_key=b"0123456789abcdef")).equals(frame)
    with pytest.raises(ValueError, match="bad signature"):
        EncryptedDataFrame.load(path, verify_key=b"another key of 16+ bytes")
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["cells.bin"] = members["cells.bin"][:-1] + bytes([members["cells.bin"][-1] ^ 1])
    tampered = tmp_path / "tampered.fhedf"
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ValueError, match="was modified after it was saved"):
        EncryptedDataFrame.load(tampered)
    (tmp_path / "junk.fhedf").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="cannot read the encrypted frame"):
        EncryptedDataFrame.load(tmp_path / "junk.fhedf")


@pytest.mark.fhe_execute
def test_encrypted_merge_groupby_two_clients_and_other_keys(engine, tmp_path):
    """Two owners sharing keys; real ciphertexts through merge, file, group-by and decryption."""
    owner_b = ClientEngine(engine.share_keys(tmp_path / "b_keys"))
    assert owner_b.key_id == engine.key_id
    left = pd.DataFrame({"id": [7, 300, 300, 65_000], "age": [31, 45, 22, 60], "city": ["Oslo", None, "Rome", "Oslo"]})
    right = pd.DataFrame({"id": [300, 65_000, 9], "cents": [1_999, 65_535, 0], "score": [0.5, np.nan, 2.25]})
    enc_left = engine.encrypt_from_pandas(left, keys=["id"])
    path = owner_b.encrypt_from_pandas(right, keys=["id"]).save(tmp_path / "b.fhedf")
    merged = enc_left.merge(EncryptedDataFrame.load(path), how="outer", on="id")
    _assert_equal(owner_b.decrypt_to_pandas(merged), pd.merge(left, right, how="outer", on="id"))
    inner = pd.merge(left, right, how="inner", on="id")
    grouped = enc_left.merge(EncryptedDataFrame.load(path), how="inner", on="id").groupby("id")
    spec = {"age": "sum", "cents": "sum", "score": "mean", "city": "count"}
    _assert_equal(engine.decrypt_to_pandas(grouped.agg(spec)), inner.groupby("id").agg(spec))
    stranger = ClientEngine(tmp_path / "other_keys")
    with pytest.raises(ValueError, match="encrypted under other keys"):
        stranger.decrypt_to_pandas(merged)
    with pytest.raises(ValueError, match="encrypted under different keys"):
        enc_left.merge(stranger.encrypt_from_pandas(right, keys="id"), on="id")


@pytest.mark.fhe_execute
def test_cli_merges_encrypted_frames_without_keys(tmp_path, capsys):
    """A data owner encrypts CSVs, a server merges the files, the owner decrypts: no Python."""
    from fhe_sklearn.cli import main

    left = pd.DataFrame({"id": [1, 2, 2, 4], "age": [30, 41, 22, 65]})
    right = pd.DataFrame({"id": [2, 4, 9], "city": ["Oslo", "Rome", "Lima"]})
    left.to_csv(tmp_path / "left.csv", index=False)
    right.to_csv(tmp_path / "right.csv", index=False)
    keys = ["--keys-dir", str(tmp_path / "keys")]
    for name in ("left", "right"):
        main(["encrypt-frame", str(tmp_path / f"{name}.csv"), "--key", "id", *keys, "--output", str(tmp_path / name)])
    files = [str(tmp_path / "left"), str(tmp_path / "right")]
    main(["merge-frames", *files, "--how", "inner", "--on", "id", "--output", str(tmp_path / "merged")])
    main(["decrypt-frame", str(tmp_path / "merged"), *keys, "--output", str(tmp_path / "out.csv")])
    expected = pd.merge(left, right, how="inner", on="id")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out.csv"), expected)
    spec = ["--agg", "age=sum", "--agg", "city=count"]
    main(["groupby-frame", str(tmp_path / "merged"), "--by", "id", *spec, "--output", str(tmp_path / "grouped")])
    main(["decrypt-frame", str(tmp_path / "grouped"), *keys, "--output", str(tmp_path / "grouped.csv")])
    grouped = expected.groupby("id").agg({"age": "sum", "city": "count"})
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "grouped.csv", index_col="id"), grouped)
    with pytest.raises(ValueError, match="holds an EncryptedAggregate, not an EncryptedDataFrame"):
        EncryptedDataFrame.load(tmp_path / "grouped")
    with pytest.raises(SystemExit, match="cannot merge: the right frame has no column 'age'"):
        main(["merge-frames", str(tmp_path / "left"), str(tmp_path / "right"), "--on", "age", "--output", "x"])
    # keys compared in FHE: unique keys, the same declared range on both sides
    left.drop_duplicates("id").to_csv(tmp_path / "left.csv", index=False)
    private = ["--key", "id", "--key-matching", "fhe", "--range", "id=0:100", *keys]
    for name in ("left", "right"):
        main(["encrypt-frame", str(tmp_path / f"{name}.csv"), *private, "--output", str(tmp_path / f"p{name}")])
    files = [str(tmp_path / "pleft"), str(tmp_path / "pright")]
    main(["merge-frames", *files, "--how", "inner", "--on", "id", "--output", str(tmp_path / "pmerged")])
    main(["decrypt-frame", str(tmp_path / "pmerged"), *keys, "--output", str(tmp_path / "p.csv")])
    expected = pd.merge(left.drop_duplicates("id"), right, how="inner", on="id")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "p.csv"), expected)
