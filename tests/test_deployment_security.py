"""Deployment files a user may receive are data, never code: tampered, swapped, truncated,
wrong-version or badly signed files are refused with a clear error."""

import base64
import json
import os
import pickle
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fhe_sklearn import LinearRegression, LogisticRegression
from fhe_sklearn.deployment import EvaluationKeyCache, FHEModelClient, FHEModelDev, FHEModelServer
from fhe_sklearn.deployment.artifacts import (
    ServerArtifact,
    client_digest,
    fingerprint,
    read_server_zip,
    server_digest,
)
from fhe_sklearn.deployment.wire import BATCH_MAGIC, pack, unpack

KEY = b"a signing key of 32 bytes.......!"


@pytest.fixture(scope="module")
def deployments(tmp_path_factory, scaled_cancer, scaled_diabetes):
    """Two compiled deployments, A (classifier) and B (regressor), and a signed copy of A."""
    root = tmp_path_factory.mktemp("deployments")
    X_c, _, y_c, _ = scaled_cancer
    X_r, _, y_r, _ = scaled_diabetes
    a = LogisticRegression().fit(X_c, y_c)
    a.compile(X_c)
    b = LinearRegression().fit(X_r, y_r)
    b.compile(X_r)
    FHEModelDev(root / "a", a).save()
    FHEModelDev(root / "b", b).save()
    FHEModelDev(root / "signed", a).save(signing_key=KEY)
    return root


@pytest.fixture
def copy(deployments, tmp_path):
    def copy(name):
        return Path(shutil.copytree(deployments / name, tmp_path / name))

    return copy


def _refingerprint(path):
    """What an attacker without the signing key can do: make both files self-consistent."""
    data = json.loads((path / "client.json").read_text())
    members, manifest = read_server_zip(path / "server.zip")
    client, server = client_digest(data["spec"], data["client_specs"]), server_digest(members)
    data.update(fingerprint=fingerprint(server, client), server_digest=server)
    manifest.update(fingerprint=data["fingerprint"], client_digest=client)
    (path / "client.json").write_text(json.dumps(data))
    ServerArtifact(members, manifest).write(path / "server.zip")


class _Touch:
    """A pickle payload: unpickling it creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickle_payload_in_client_file_is_refused(copy, tmp_path):
    path = copy("a")
    marker = tmp_path / "pwned_by_pickle"
    payload = base64.b64encode(pickle.dumps(_Touch(marker))).decode()
    data = json.loads((path / "client.json").read_text())
    attempts = [
        {"client_specs": payload},
        {"spec": {**data["spec"], "attributes": {"classes_": {"__object__": "fhe_sklearn.x", "state": payload}}}},
        {"spec": {**data["spec"], "attributes": {"classes_": {"py/reduce": [{"py/function": "os.system"}]}}}},
        {"spec": {**data["spec"], "attributes": {"sklearn_model_": payload}}},
        {"spec": {**data["spec"], "estimator": "pickle.loads"}},
    ]
    for attempt in attempts:
        (path / "client.json").write_text(json.dumps({**data, **attempt}))
        _refingerprint(path)
        with pytest.raises(ValueError):
            FHEModelClient(path)
    assert not marker.exists()
    pickle.loads(base64.b64decode(payload))  # the payload is live: loading it would have run it
    assert marker.exists()


def test_jsonpickle_payload_in_server_configuration_is_refused(copy, tmp_path):
    jsonpickle = pytest.importorskip("jsonpickle")
    path = copy("a")
    marker = tmp_path / "pwned_by_jsonpickle"
    members, manifest = read_server_zip(path / "server.zip")
    config = json.loads(members["configuration.json"])
    config["p_error"] = {"py/reduce": [{"py/function": "pathlib.Path.touch"}, {"py/tuple": [str(marker)]}]}
    members["configuration.json"] = json.dumps(config).encode()
    ServerArtifact(members, manifest).write(path / "server.zip")
    _refingerprint(path)
    for load in (lambda: FHEModelServer(path).load(), lambda: FHEModelClient(path)):
        with pytest.raises(ValueError, match="jsonpickle"):
            load()
    assert not marker.exists()
    jsonpickle.decode(json.dumps(config["p_error"]))  # concrete's Server.load would have run it
    assert marker.exists()


def test_unknown_configuration_key_is_refused(copy):
    path = copy("a")
    members, manifest = read_server_zip(path / "server.zip")
    members["configuration.json"] = json.dumps({**json.loads(members["configuration.json"]), "x": 1}).encode()
    ServerArtifact(members, manifest).write(path / "server.zip")
    _refingerprint(path)
    with pytest.raises(ValueError, match="must hold exactly"):
        FHEModelServer(path).load()


def test_swapped_server_zip_is_refused(copy):
    a, b = copy("a"), copy("b")
    shutil.copy(b / "server.zip", a / "server.zip")
    with pytest.raises(ValueError, match="different deployments"):
        FHEModelServer(a).load()
    with pytest.raises(ValueError, match="different deployments"):
        FHEModelClient(a)


def test_modified_files_are_refused(copy):
    path = copy("a")
    data = json.loads((path / "client.json").read_text())
    data["spec"]["attributes"]["classes_"]["data"] = [1, 0]  # swap the labels
    (path / "client.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="was modified"):
        FHEModelClient(path)
    path = copy("b")
    members, manifest = read_server_zip(path / "server.zip")
    members["circuit.mlir"] = members["circuit.mlir"].replace(b"func.func", b"func.func ")
    ServerArtifact(members, manifest).write(path / "server.zip")
    with pytest.raises(ValueError, match="was modified"):
        FHEModelServer(path).load()


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: b"not a zip at all",
        lambda raw: raw[:-30] + bytes(30),  # broken central directory
    ],
    ids=["truncated", "not-a-zip", "broken-directory"],
)
def test_damaged_server_zip_is_refused(copy, damage):
    path = copy("a")
    (path / "server.zip").write_bytes(damage((path / "server.zip").read_bytes()))
    with pytest.raises(ValueError, match="cannot read the server file"):
        FHEModelServer(path).load()


def test_unexpected_zip_members_are_refused(copy):
    import zipfile

    path = copy("a")
    with zipfile.ZipFile(path / "server.zip", "a") as archive:
        archive.writestr("../../evil.so", b"\x7fELF")
    with pytest.raises(ValueError, match=r"unexpected members \['../../evil.so'\]"):
        FHEModelServer(path).load()


def test_wrong_type_files_are_refused(copy):
    path = copy("a")
    for content in ("[1, 2]", '{"format": "fhe_sklearn.model"}', "not json", '{"a": NaN}'):
        (path / "client.json").write_text(content)
        with pytest.raises(ValueError, match="client"):
            FHEModelClient(path)


def test_signatures(copy):
    signed, unsigned = copy("signed"), copy("a")
    FHEModelServer(signed, verify_key=KEY).load()
    FHEModelClient(signed, verify_key=KEY)
    with pytest.raises(ValueError, match="bad signature"):
        FHEModelServer(signed, verify_key=b"another key of 16+ bytes").load()
    with pytest.raises(ValueError, match="not signed"):
        FHEModelServer(unsigned, verify_key=KEY).load()
    with pytest.raises(ValueError, match="not signed"):
        FHEModelClient(unsigned, verify_key=KEY)
    # an attacker can recompute fingerprints, not signatures
    data = json.loads((signed / "client.json").read_text())
    data["spec"]["attributes"]["classes_"]["data"] = [1, 0]
    (signed / "client.json").write_text(json.dumps(data))
    _refingerprint(signed)
    FHEModelClient(signed)  # self-consistent again: only a signature can tell
    with pytest.raises(ValueError, match="bad signature"):
        FHEModelClient(signed, verify_key=KEY)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        FHEModelServer(unsigned, verify_key=b"short")


def test_server_load_leaves_no_temporary_directory(copy, tmp_path, monkeypatch):
    path = copy("a")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for _ in range(3):
        FHEModelServer(path).load()
    assert list(scratch.iterdir()) == []


@pytest.mark.fhe_execute
def test_key_files_are_private(deployments, tmp_path):
    client = FHEModelClient(deployments / "b", key_dir=tmp_path / "keys")
    client.generate_private_and_evaluation_keys()
    assert any(p.name.startswith("secretKey") for p in (tmp_path / "keys").rglob("*"))
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for p in (tmp_path / "keys").rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p


def test_batch_framing():
    items = [b"", b"a", os.urandom(1000)]
    assert unpack(pack(items, BATCH_MAGIC), BATCH_MAGIC) == items
    framed = pack(items, BATCH_MAGIC)
    for bad in (framed[:-1], framed + b"x", framed[:10], BATCH_MAGIC + (2**31).to_bytes(4, "little")):
        with pytest.raises(ValueError, match="malformed encrypted batch"):
            unpack(bad, BATCH_MAGIC)


def test_key_cache_is_a_bounded_lru():
    cache = EvaluationKeyCache(max_bytes=100)
    loads = []

    def loader(name):
        return lambda: loads.append(name) or name

    assert cache.get_or_load("a", loader("a"), 40) == "a"
    assert cache.get_or_load("b", loader("b"), 40) == "b"
    assert cache.get_or_load("a", loader("a"), 40) == "a"  # hit: a becomes most recent
    cache.get_or_load("c", loader("c"), 40)  # evicts b, the least recently used
    assert loads == ["a", "b", "c"] and cache.nbytes == 80
    cache.get_or_load("b", loader("b"), 40)
    assert loads[-1] == "b" and len(cache) == 2
    cache.get_or_load("big", loader("big"), 1000)  # larger than the bound: not cached
    assert len(cache) == 2 and cache.nbytes <= 100
    with pytest.raises(TypeError, match="must be bytes"):
        cache.get(np.zeros(3))


def test_pickled_server_reloads_from_its_files(deployments):
    server = FHEModelServer(deployments / "a", key_cache_bytes=1000).load()
    clone = pickle.loads(pickle.dumps(server))
    assert clone.artifact.manifest == server.artifact.manifest and clone.key_cache.max_bytes == 1000
