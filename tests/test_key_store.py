import os
import stat

import pytest

from fhe_sklearn.deployment.key_store import KeyStore, KeyStoreFull


def _upload(store: KeyStore, data: bytes):
    path = store.new_upload()
    path.write_bytes(data)
    return path


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_commit_authenticate_and_reload(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o755)
    store = KeyStore(directory)
    assert _mode(directory) == 0o700  # narrowed
    key_id, token = store.commit(_upload(store, b"k" * 100))
    assert len(key_id) == 32 and len(token) >= 43  # 128-bit id, 256-bit token
    assert store.authenticate(key_id, token).size == 100
    wrong = [(key_id, token + "x"), (key_id, None), (key_id, ""), ("0" * 32, token), ("..", token)]
    assert all(store.authenticate(*credentials) is None for credentials in wrong)
    meta = (directory / key_id / "meta.json").read_text()
    assert token not in meta and store.authenticate(key_id, token).token_sha256 in meta
    assert sorted(p.name for p in directory.iterdir()) == [key_id]

    reloaded = KeyStore(directory)  # a restart keeps key sets and tokens
    assert reloaded.authenticate(key_id, token) is not None and reloaded.total_bytes == 100


def test_interrupted_upload_leaves_no_key_set(tmp_path):
    store = KeyStore(tmp_path)
    half = _upload(store, b"half written")  # the server died before commit
    (tmp_path / "not-a-key-set").mkdir()
    restarted = KeyStore(tmp_path)
    assert len(restarted) == 0 and not half.parent.exists()
    assert (tmp_path / "not-a-key-set").exists()  # unknown entries are left alone
    # a key set directory without its metadata is not a key set
    (tmp_path / ("a" * 32)).mkdir()
    (tmp_path / ("a" * 32) / "evaluation_keys").write_bytes(b"x")
    assert len(KeyStore(tmp_path)) == 0


def test_least_recently_used_eviction_and_quota(tmp_path):
    store = KeyStore(tmp_path, max_key_sets=2, quota_bytes=1000)
    first = store.commit(_upload(store, b"a" * 100))
    second = store.commit(_upload(store, b"b" * 100))
    store.touch(store.authenticate(*first))  # first is now the most recently used
    third = store.commit(_upload(store, b"c" * 100))  # count limit: evicts second
    assert store.authenticate(*second) is None and not (tmp_path / second[0]).exists()
    assert store.authenticate(*first) and store.authenticate(*third)

    store.commit(_upload(store, b"d" * 850))  # quota: evicts first, the least recently used
    assert store.authenticate(*first) is None and store.authenticate(*third) and store.total_bytes == 950
    fifth = store.commit(_upload(store, b"d" * 950))  # evicts both others
    assert len(store) == 1 and store.authenticate(*fifth) and store.total_bytes == 950

    with pytest.raises(KeyStoreFull, match="quota of 1000 bytes"):
        store.commit(_upload(store, b"e" * 1001))  # larger than the whole quota
    store.authenticate(*fifth).in_use = 1  # a request is using it: not evictable
    with pytest.raises(KeyStoreFull, match="every key set is in use"):
        store.commit(_upload(store, b"f" * 200))
    assert store.authenticate(*fifth) is not None


def test_files_are_private(tmp_path):
    store = KeyStore(tmp_path / "keys")
    path = store.new_upload()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as the server writes uploads
    os.write(fd, b"keys")
    os.close(fd)
    key_id, _ = store.commit(path)
    assert _mode(tmp_path / "keys" / key_id) == 0o700
    assert {_mode(p) for p in (tmp_path / "keys" / key_id).iterdir()} == {0o600}
