"""The files of a deployment directory, their versions, fingerprint and signature.

``client.json`` (plain JSON) holds the :class:`~fhe_sklearn.deployment.ClientSpec`, concrete's
client specs and the deployment record; ``server.zip`` holds concrete's portable (MLIR) server
and ``fhe_sklearn.json``, the same record seen from the server. Both carry one fingerprint,
``sha256(server digest ‖ client digest)``, so each file can check the other, and optionally an
HMAC-SHA256 signature of that fingerprint with a key the model owner shares with whoever loads
the files (see :mod:`~fhe_sklearn.deployment.signing`).

Everything here is read with ``json.loads`` and checked against an allow-list before use:
no pickle or jsonpickle decoding, no file extracted to disk, no path from the archive used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from .._version import __version__
from .signing import sign, verify

CLIENT_FILE = "client.json"
SERVER_FILE = "server.zip"
MANIFEST_FILE = "fhe_sklearn.json"
CLIENT_FORMAT = "fhe_sklearn.client"
SERVER_FORMAT = "fhe_sklearn.server"
#: version of the deployment layout; client and server accept any fhe_sklearn and
#: concrete-python version writing the same one (1: fhe_sklearn 0.1's native server.zip)
FORMAT_VERSION = 2

#: members of concrete's portable server archive and their size limits (bytes)
CONCRETE_MEMBERS = {
    "circuit.mlir": 64 * 2**20,
    "is_simulated": 16,
    "configuration.json": 2**16,
    "composition_rules.json": 2**16,
    "client.specs.json": 16 * 2**20,
}
MAX_MANIFEST_BYTES = 2**16
MAX_CLIENT_FILE_BYTES = 64 * 2**20
_HEX64 = frozenset("0123456789abcdef")


def versions() -> dict[str, Any]:
    """The versions record written into both files."""
    try:
        concrete = metadata.version("concrete-python")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source build of concrete
        concrete = "unknown"
    return {"fhe_sklearn": __version__, "format": FORMAT_VERSION, "concrete-python": concrete}


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value (sorted keys, no spaces, no NaN): what digests hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def server_digest(members: dict[str, bytes]) -> str:
    """sha256 over concrete's members of ``server.zip`` (name, size and content of each)."""
    h = hashlib.sha256(b"fhe_sklearn.server\0")
    for name in sorted(members):
        h.update(f"{name}\0{len(members[name])}\0".encode())
        h.update(members[name])
    return h.hexdigest()


def client_digest(spec: dict, client_specs: str) -> str:
    """sha256 over what the client uses: the ClientSpec and concrete's client specs."""
    return hashlib.sha256(
        b"fhe_sklearn.client\0" + canonical_json({"spec": spec, "client_specs": client_specs})
    ).hexdigest()


def fingerprint(server: str, client: str) -> str:
    """The fingerprint both files carry."""
    return hashlib.sha256(f"fhe_sklearn.deployment\0{FORMAT_VERSION}\0{server}\0{client}".encode()).hexdigest()


# -- checks shared by both files ------------------------------------------------------------
def _check_record(data: Any, expected_format: str, what: str) -> dict:
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise ValueError(f"{what} is not a fhe_sklearn {expected_format.rpartition('.')[2]} file")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        written = data.get("versions", {}).get("fhe_sklearn") if isinstance(data.get("versions"), dict) else None
        written = written or data.get("library_version")
        raise ValueError(
            f"{what} has deployment format version {version!r} (written by fhe_sklearn {written!r}); "
            f"this fhe_sklearn {__version__} reads format version {FORMAT_VERSION}: save the model again "
            "with FHEModelDev"
        )
    record = data.get("versions")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), (str, int)) for k in versions()):
        raise ValueError(f"{what} has no valid 'versions' record")
    for key in ("fingerprint",):
        _check_hex(data.get(key), f"{what}: {key}")
    return data


def _check_hex(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX64:
        raise ValueError(f"{what} must be a sha256 hex digest")
    return value


def check_signature(data: dict, verify_key: Any, what: str) -> None:
    """Refuse ``data`` unless its signature of its fingerprint verifies with ``verify_key``."""
    if verify_key is None:
        return
    signature = data.get("signature")
    if signature is None:
        raise ValueError(f"{what} is not signed, but a verify_key was given: refusing it")
    if not verify(verify_key, data["fingerprint"], signature):
        raise ValueError(f"{what}: bad signature (the files were modified or signed with another key)")


# -- client.json ----------------------------------------------------------------------------
def client_record(spec: dict, client_specs: bytes, server: str, signing_key: Any = None) -> dict:
    """The content of ``client.json``."""
    encoded = base64.b64encode(client_specs).decode("ascii")
    fp = fingerprint(server, client_digest(spec, encoded))
    return {
        "format": CLIENT_FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "fingerprint": fp,
        "server_digest": server,
        "signature": sign(signing_key, fp),
        "client_specs": encoded,
        "spec": spec,
    }


def read_client_file(path: str | Path, verify_key: Any = None) -> dict:
    """``client.json`` of a deployment directory (or its path), checked for format version,
    fingerprint and, with ``verify_key``, signature.

    The ClientSpec in ``"spec"`` is validated by :meth:`ClientSpec.from_json` when a client
    loads it. For a summary, the returned dict also has ``"model": {"class": ...}`` and
    ``"input_shape"`` (derived, not read from the file).

    Raises
    ------
    ValueError
        Unreadable, not a client file, another format version, modified, or badly signed.
    """
    file = Path(path) / CLIENT_FILE if Path(path).is_dir() else Path(path)
    try:
        with open(file, "rb") as f:
            raw = f.read(MAX_CLIENT_FILE_BYTES + 1)
        if len(raw) > MAX_CLIENT_FILE_BYTES:
            raise ValueError(f"larger than {MAX_CLIENT_FILE_BYTES} bytes")
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the client file {file}: {_brief(err)}") from None
    _check_record(data, CLIENT_FORMAT, str(file))
    spec, encoded = data.get("spec"), data.get("client_specs")
    if not isinstance(spec, dict) or not isinstance(encoded, str):
        raise ValueError(f"{file} has no client spec")
    server = _check_hex(data.get("server_digest"), f"{file}: server_digest")
    try:
        if data["fingerprint"] != fingerprint(server, client_digest(spec, encoded)):
            raise ValueError(f"{file} was modified after it was saved (its fingerprint does not match its content)")
    except (TypeError, ValueError) as err:
        raise ValueError(_brief(err)) from None
    check_signature(data, verify_key, str(file))
    estimator = spec.get("estimator")
    n_features = spec.get("n_features_in")
    return {**data, "model": {"class": estimator or "QuantizedModule"}, "input_shape": [1, n_features]}


def client_specs_bytes(data: dict) -> bytes:
    """concrete's client specs from a checked ``client.json`` record."""
    try:
        return base64.b64decode(data["client_specs"], validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"client.json: malformed client specs ({_brief(err)})") from None


# -- server.zip -----------------------------------------------------------------------------
class ServerArtifact:
    """A checked ``server.zip``: concrete's members (in memory) and the manifest.

    Parameters
    ----------
    members : dict of str to bytes
        concrete's portable server: MLIR, plain-JSON configuration, client specs.
    manifest : dict
        The deployment record (format, versions, fingerprint, client digest, signature).
    """

    def __init__(self, members: dict[str, bytes], manifest: dict) -> None:
        self.members = members
        self.manifest = manifest
        self.digest = server_digest(members)
        #: the checked plain configuration (set by :meth:`read`)
        self.configuration: dict[str, Any] | None = None
        #: composition wires (from function, output, to function, input): an encrypted
        #: training step's weights output feeds its weights input
        self.composition: list[tuple[str, int, str, int]] = []

    @classmethod
    def read(cls, path: str | Path, verify_key: Any = None) -> ServerArtifact:
        """Read and check ``server.zip``; see :func:`read_server_zip` for the checks."""
        members, manifest = read_server_zip(path)
        artifact = cls(members, manifest)
        _check_record(manifest, SERVER_FORMAT, str(path))
        client = _check_hex(manifest.get("client_digest"), f"{path}: client_digest")
        if manifest["fingerprint"] != fingerprint(artifact.digest, client):
            raise ValueError(f"{path} was modified after it was saved (its fingerprint does not match its content)")
        check_signature(manifest, verify_key, str(path))
        artifact.configuration = check_configuration(members["configuration.json"], str(path))
        if members["is_simulated"] != b"0":
            raise ValueError(f"{path} holds a simulation-only circuit, which cannot run on ciphertexts")
        artifact.composition = check_composition(members["composition_rules.json"], str(path))
        return artifact

    def check_matches(self, client_data: dict) -> None:
        """Refuse a ``client.json`` that was not saved with this ``server.zip``."""
        if client_data["fingerprint"] != self.manifest["fingerprint"] or client_data["server_digest"] != self.digest:
            raise ValueError(
                "client.json and server.zip come from different deployments (their fingerprints differ): "
                "keep the two files FHEModelDev.save wrote together"
            )

    def write(self, path: str | Path) -> None:
        """Write the archive (concrete's members, then the manifest)."""
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(self.members):
                archive.writestr(name, self.members[name])
            archive.writestr(MANIFEST_FILE, json.dumps(self.manifest, indent=1))


def server_manifest(members: dict[str, bytes], client: str, signing_key: Any = None) -> dict:
    """The record stored as ``fhe_sklearn.json`` in ``server.zip``."""
    fp = fingerprint(server_digest(members), client)
    return {
        "format": SERVER_FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "fingerprint": fp,
        "client_digest": client,
        "signature": sign(signing_key, fp),
    }


def read_server_zip(path: str | Path) -> tuple[dict[str, bytes], dict]:
    """concrete's members and the manifest of ``server.zip``, read into memory.

    The archive must hold exactly the expected members (plain names, no directory, no link),
    each within its size limit and with a correct CRC; nothing is extracted to disk.
    """
    path = Path(path)
    limits = {**CONCRETE_MEMBERS, MANIFEST_FILE: MAX_MANIFEST_BYTES}
    max_bytes = sum(limits.values()) + 2**20
    try:
        if path.stat().st_size > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        with open(path, "rb") as f:
            raw = f.read(max_bytes)
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if sorted(names) != sorted(limits):
                unexpected = sorted(set(names) - set(limits))[:5]
                missing = sorted(set(limits) - set(names))
                duplicated = len(names) != len(set(names))
                raise ValueError(
                    f"unexpected members {unexpected}, missing {missing}"
                    + (", duplicated members" if duplicated else "")
                    + " (a fhe_sklearn server.zip holds concrete's portable MLIR server and fhe_sklearn.json)"
                )
            members = {}
            for info in infos:
                if info.file_size > limits[info.filename]:
                    raise ValueError(f"member {info.filename} is larger than {limits[info.filename]} bytes")
                with archive.open(info) as member:
                    content = member.read(limits[info.filename] + 1)
                if len(content) > limits[info.filename]:
                    raise ValueError(f"member {info.filename} is larger than {limits[info.filename]} bytes")
                members[info.filename] = content
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as err:
        raise ValueError(f"cannot read the server file {path}: {_brief(err)}") from None
    manifest_bytes = members.pop(MANIFEST_FILE)
    try:
        manifest = json.loads(manifest_bytes, parse_constant=_refuse_constant)
        json.loads(members["composition_rules.json"], parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the server file {path}: malformed JSON ({_brief(err)})") from None
    return members, manifest


# -- concrete's configuration.json ----------------------------------------------------------
#: the compilation options the portable server is compiled with (what concrete's
#: ``Server.create`` reads), each with its accepted values
CONFIGURATION_KEYS: dict[str, Any] = {
    "p_error": (float, type(None)),
    "global_p_error": (float, type(None)),
    "parameter_selection_strategy": {"v0", "mono", "multi"},
    "multi_parameter_strategy": {"precision", "precision_and_norm2"},
    "loop_parallelize": bool,
    "dataflow_parallelize": bool,
    "auto_parallelize": bool,
    "compress_evaluation_keys": bool,
    "compress_input_ciphertexts": bool,
    "detect_overflow_in_simulation": bool,
    "composable": bool,
    "enable_tlu_fusing": bool,
    "use_gpu": bool,
    "security_level": {128, 132},
}


def plain_configuration(configuration: Any) -> dict[str, Any]:
    """The plain-JSON form of a ``concrete.fhe.Configuration`` (enums as their values).

    Raises
    ------
    ValueError
        If the configuration uses range or keyset restrictions (not saved portably).
    """
    for name in ("range_restriction", "keyset_restriction"):
        if getattr(configuration, name, None) is not None:
            raise ValueError(f"a circuit compiled with {name} cannot be saved as a portable deployment")
    plain = {}
    for name in CONFIGURATION_KEYS:
        value = getattr(configuration, name)
        plain[name] = value.value if hasattr(value, "value") else value
    if isinstance(plain["security_level"], bool) or not isinstance(plain["security_level"], int):
        plain["security_level"] = int(plain["security_level"])
    return plain


def check_configuration(raw: bytes, what: str) -> dict[str, Any]:
    """Parse ``configuration.json`` as plain JSON with exactly the known keys and types.

    concrete writes it with jsonpickle, whose ``py/...`` tags rebuild arbitrary objects when
    decoded; fhe_sklearn writes and accepts only :data:`CONFIGURATION_KEYS` with plain values.
    """
    try:
        config = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{what}: configuration.json is not valid JSON ({_brief(err)})") from None
    if _has_jsonpickle_tag(config):
        raise ValueError(f"{what}: configuration.json carries jsonpickle object tags ('py/...'): refusing it")
    if not isinstance(config, dict) or set(config) != set(CONFIGURATION_KEYS):
        keys = sorted(config)[:20] if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{what}: configuration.json must hold exactly {sorted(CONFIGURATION_KEYS)}, got {keys}")
    for name, accepted in CONFIGURATION_KEYS.items():
        value = config[name]
        if isinstance(accepted, set):
            ok = not isinstance(value, bool) and isinstance(value, (str, int)) and value in accepted
        elif accepted is bool:
            ok = isinstance(value, bool)
        else:
            ok = (value is None or (isinstance(value, float) and 0 < value <= 1)) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"{what}: configuration.json has an invalid {name}: {str(value)[:80]!r}")
    return config


def check_composition(raw: bytes, what: str) -> list[tuple[str, int, str, int]]:
    """concrete's ``composition_rules.json``: None, or a list of ``[[function, output],
    [function, input]]`` wires (at most 64), names of at most 64 characters."""
    try:
        rules = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{what}: composition_rules.json is not valid JSON ({_brief(err)})") from None
    if rules is None:
        return []
    wires = []

    def clause(value: Any) -> tuple[str, int]:
        ok = isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and 0 < len(value[0]) <= 64
        if not (ok and isinstance(value[1], int) and not isinstance(value[1], bool) and 0 <= value[1] < 64):
            raise ValueError(f"{what}: malformed composition rule {str(value)[:80]!r}")
        return value[0], value[1]

    if not isinstance(rules, list) or len(rules) > 64:
        raise ValueError(f"{what}: composition_rules.json must be a list of at most 64 wires")
    for rule in rules:
        if not isinstance(rule, list) or len(rule) != 2:
            raise ValueError(f"{what}: malformed composition rule {str(rule)[:80]!r}")
        wires.append((*clause(rule[0]), *clause(rule[1])))
    return wires


def _has_jsonpickle_tag(value: Any) -> bool:
    if isinstance(value, dict):
        return any(str(k).startswith("py/") or _has_jsonpickle_tag(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_jsonpickle_tag(v) for v in value)
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _brief(err: BaseException, limit: int = 200) -> str:
    """An exception's message, cut short: messages may echo the bytes they failed on."""
    text = str(err)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
