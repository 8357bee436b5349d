"""Private-key merges (``key_matching="fhe"``): keys compared in FHE, results equal pandas.

Breadth on clear cells (``fhe="disable"``: the join circuit's function on integers, the same
planning, files and decryption); one small case encrypts for real.
"""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhe_sklearn.pandas import ClientEngine, load

HOWS = ["left", "right", "inner", "outer"]
FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
INT_SCHEMA = {"k": {"min": 0, "max": 65_000}}
STR_SCHEMA = {"k": {"categories": ["a", "b", "c", "d"]}}


@pytest.fixture(scope="module")
def clear_engine(tmp_path_factory):
    return ClientEngine(tmp_path_factory.mktemp("clear_keys"), fhe="disable")


@st.composite
def unique_key_pairs(draw):
    """Frames with unique keys (NaN at most once a side), a few of them shared; more than one
    join-circuit block (8 rows) on some draws."""
    str_keys = draw(st.booleans())
    pool = ["a", "b", "c", "d", None] if str_keys else list(range(0, 65_001, 5_000))
    frames = []
    for value, extra in (("v", "s"), ("v", "f")):
        keys = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))
        n = len(keys)
        data = {"k": pd.Series(keys, dtype="str" if str_keys else "int64")}
        data[value] = draw(st.lists(st.integers(-100, 60_000), min_size=n, max_size=n))
        if extra == "s":  # object dtype: a picked None stays None, a gap becomes NaN
            data["s"] = pd.Series(
                draw(st.lists(st.sampled_from(["x", "yy", None]), min_size=n, max_size=n)), dtype=object
            )
        else:
            data["f"] = draw(
                st.lists(st.one_of(st.integers(-40, 40).map(lambda q: q / 4), st.just(np.nan)), min_size=n, max_size=n)
            )
            data["b"] = draw(st.lists(st.booleans(), min_size=n, max_size=n))
            data["t"] = pd.Series(draw(st.lists(st.sampled_from(["u", None]), min_size=n, max_size=n)), dtype=object)
        frames.append(pd.DataFrame(data))
    return (*frames, STR_SCHEMA if str_keys else INT_SCHEMA)


def _assert_equal(got, expected):
    pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=1e-3)


@FAST
@given(case=unique_key_pairs())
def test_every_private_merge_equals_pandas(clear_engine, case):
    left, right, schema = case
    enc_left = clear_engine.encrypt_from_pandas(left, keys="k", schema=schema, key_matching="fhe")
    enc_right = clear_engine.encrypt_from_pandas(right, keys="k", schema=schema, key_matching="fhe")
    for how in HOWS:
        merged = enc_left.merge(enc_right, how=how, on="k")
        expected = pd.merge(left, right, how=how, on="k")
        _assert_equal(clear_engine.decrypt_to_pandas(load(merged.to_bytes())), expected)
        # the server's layout hides the matches: its shape depends only on the frames' shapes
        rows = {"left": len(left), "inner": len(left), "right": len(right), "outer": len(left) + len(right)}
        assert merged.shape == (rows[how], expected.shape[1])
        got = clear_engine.decrypt_to_pandas(merged)  # bools stay bools, None stays None (not 1.0, NaN)
        for name in got:
            assert [type(v) for v in got[name]] == [type(v) for v in expected[name]], name


def test_private_keys_bad_inputs(clear_engine):
    frame = pd.DataFrame({"k": [1, 2, 3], "v": [3, 4, 5]})
    private = clear_engine.encrypt_from_pandas(frame, keys="k", schema=INT_SCHEMA, key_matching="fhe")
    assert private.key_matching == "fhe" and private.key_columns == ["k"]
    with pytest.raises(ValueError, match=r"repeats values .*needs unique keys"):
        clear_engine.encrypt_from_pandas(pd.DataFrame({"k": [1, 1]}), keys="k", schema=INT_SCHEMA, key_matching="fhe")
    with pytest.raises(ValueError, match="key_matching must be one of"):
        clear_engine.encrypt_from_pandas(frame, keys="k", key_matching="hash")
    shifted = clear_engine.encrypt_from_pandas(frame, keys="k", schema={"k": {"min": 1, "max": 9}}, key_matching="fhe")
    with pytest.raises(ValueError, match="encoded differently in the two frames"):
        private.merge(shifted, on="k")
    tagged = clear_engine.encrypt_from_pandas(frame, keys="k")
    with pytest.raises(ValueError, match="matched by fhe, the other's by tags"):
        private.merge(tagged, on="k")
    with pytest.raises(ValueError, match=r"private key .*cannot group"):
        private.groupby("k")
    with pytest.raises(ValueError, match="aggregates run on frames encrypted with key_matching='tags'"):
        private.sum()
    for how in ("left", "inner"):  # pandas' dtypes after a merge are the client's to settle
        with pytest.raises(ValueError, match=r"result is final .* decrypt it before merging again"):
            private.merge(private, how=how, on="k").merge(private, on="k")
    with pytest.raises(ValueError, match=r"key column 'k' needs a declared schema .*'min': ..., 'max': ..."):
        clear_engine.encrypt_from_pandas(frame, keys="k", key_matching="fhe")
    with pytest.raises(ValueError, match=r"needs a declared schema .*'categories': ..."):
        clear_engine.encrypt_from_pandas(frame.astype({"k": str}), keys="k", key_matching="fhe")


@pytest.mark.fhe_execute
def test_encrypted_private_merge_equals_pandas(tmp_path):
    """Real ciphertexts: an outer merge (both passes of the circuit) of two owners' frames, a
    file round trip; a frame of another key set is refused."""
    engine = ClientEngine(tmp_path / "keys")
    # shared before the join keys exist: each owner makes them, from the shared secrets
    owner_b = ClientEngine(engine.share_keys(tmp_path / "b_keys"))
    schema = {"id": {"min": 0, "max": 65_535}}
    left = pd.DataFrame({"id": [300, 7, 65_535], "age": [31, 45, 22]})
    right = pd.DataFrame({"id": [65_535, 9, 300], "city": ["Oslo", "Rome", None]})
    enc_left = engine.encrypt_from_pandas(left, keys="id", schema=schema, key_matching="fhe")
    enc_right = owner_b.encrypt_from_pandas(right, keys="id", schema=schema, key_matching="fhe")
    assert len(enc_left.info.evaluation_keys) < 26_000_000  # one 4-bit parameter set
    outer = load(enc_left.merge(enc_right, how="outer", on="id").to_bytes())
    _assert_equal(engine.decrypt_to_pandas(outer), pd.merge(left, right, how="outer", on="id"))
    stranger = ClientEngine(tmp_path / "other_keys")
    with pytest.raises(ValueError, match="encrypted under different keys"):
        enc_left.merge(stranger.encrypt_from_pandas(right, keys="id", schema=schema, key_matching="fhe"), on="id")
