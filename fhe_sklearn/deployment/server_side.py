"""The server side of a deployment: run the compiled model on ciphertexts.

It imports only ``concrete.compiler`` (concrete's runtime bindings), not ``concrete.fhe``,
which imports torch: loading and serving a model takes well under a second of imports.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from .artifacts import CLIENT_FILE, SERVER_FILE, ServerArtifact, _brief, read_client_file
from .key_cache import DEFAULT_MAX_BYTES, EvaluationKeyCache, deserialize_evaluation_keys
from .paths import deployment_path
from .signing import check_key
from .wire import BATCH_MAGIC, TUPLE_MAGIC, is_packed, pack, unpack


def compile_portable(artifact: ServerArtifact) -> tuple[Any, Any]:
    """Compile the archive's MLIR with its configuration; the server program and its circuit.

    The compiler's output directory is removed once the program is loaded.

    Raises
    ------
    ValueError
        If the MLIR does not compile, or compiles to other crypto parameters than the ones
        the client's keys are generated for (e.g. a concrete-python whose optimizer differs).
    """
    from concrete.compiler import Compiler, ServerProgram, lookup_runtime_lib

    options = _compilation_options(artifact.configuration)
    for from_func, from_pos, to_func, to_pos in artifact.composition:
        options.add_composition(from_func, from_pos, to_func, to_pos)
    output_dir = tempfile.mkdtemp(prefix="fhe_sklearn_server_")
    try:
        compiler = Compiler(
            output_dir,
            lookup_runtime_lib(),
            generate_shared_lib=True,
            generate_program_info=True,
            generate_compilation_feedback=True,
        )
        try:
            library = compiler.compile(artifact.members["circuit.mlir"].decode("utf-8"), options)
        except (RuntimeError, UnicodeDecodeError) as err:
            raise ValueError(f"server.zip: concrete could not compile its circuit ({_brief(err)})") from None
        program_info = json.loads(library.get_program_info().serialize())
        expected = json.loads(artifact.members["client.specs.json"])
        tfhers = expected.pop("tfhers_specs", None)
        if tfhers and any(any(v is not None for v in values) for f in tfhers.values() for values in f.values()):
            raise ValueError("server.zip: TFHE-rs interoperable circuits are not supported")
        if program_info != expected:
            raise ValueError(
                "server.zip: this concrete-python compiles the circuit to other crypto parameters than the "
                "saved ones, so the client's keys would not fit: save the deployment again with this version"
            )
        functions = library.get_program_info().function_list()
        if len(functions) != 1:
            raise ValueError(f"server.zip: expected one circuit, got {len(functions)}")
        program = ServerProgram(library, False)
        return program, program.get_server_circuit(functions[0])
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def _compilation_options(config: dict[str, Any]) -> Any:
    """concrete's compilation options from a checked plain configuration, set as
    ``concrete.fhe``'s ``Server.create`` sets them."""
    from concrete.compiler import Backend, CompilationOptions, OptimizerMultiParameterStrategy, OptimizerStrategy

    options = CompilationOptions(Backend.GPU if config["use_gpu"] else Backend.CPU)
    options.simulation(False)
    options.set_loop_parallelize(config["loop_parallelize"])
    options.set_dataflow_parallelize(config["dataflow_parallelize"])
    options.set_auto_parallelize(config["auto_parallelize"])
    options.set_compress_evaluation_keys(config["compress_evaluation_keys"])
    options.set_compress_input_ciphertexts(config["compress_input_ciphertexts"])
    options.set_enable_overflow_detection_in_simulation(config["detect_overflow_in_simulation"])
    options.set_composable(config["composable"])
    if config["auto_parallelize"] or config["dataflow_parallelize"]:
        from concrete.compiler import init_dfr

        init_dfr()
    p_error, global_p_error = config["p_error"], config["global_p_error"]
    if p_error is None and global_p_error is None:
        raise ValueError("server.zip: configuration.json sets neither p_error nor global_p_error")
    options.set_global_p_error(1.0 if global_p_error is None else global_p_error)
    options.set_p_error(1.0 if p_error is None else p_error)
    options.set_display_optimizer_choice(False)
    strategies = {"v0": "V0", "mono": "DAG_MONO", "multi": "DAG_MULTI"}
    options.set_optimizer_strategy(getattr(OptimizerStrategy, strategies[config["parameter_selection_strategy"]]))
    options.set_optimizer_multi_parameter_strategy(
        getattr(OptimizerMultiParameterStrategy, config["multi_parameter_strategy"].upper())
    )
    options.set_enable_tlu_fusing(config["enable_tlu_fusing"])
    options.set_print_tlu_fusing(False)
    options.set_security_level(config["security_level"])
    return options


class DeploymentServer:
    """A deployment's compiled model run on ciphertexts: what :class:`FHEModelServer` and
    every batch worker load (parameters as :class:`~fhe_sklearn.deployment.FHEModelServer`'s)."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        path_dir: str | Path | None = None,
        verify_key: Any = None,
        key_cache_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = deployment_path(path, path_dir)
        self.verify_key = verify_key if verify_key is None else check_key(verify_key)
        self.key_cache = EvaluationKeyCache(key_cache_bytes)
        # concrete's compiled server gave a wrong row now and then when two threads called it
        # at once (tests/test_batch.py): calls are serialized; processes or Dask scale out
        self._call_lock = threading.Lock()
        self.artifact: ServerArtifact | None = None
        self._circuit: Any = None

    # compiled programs and keys belong to one process: a pickled server (e.g. sent to a
    # Dask worker) is rebuilt from its files there, and loaded again if it was loaded
    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "verify_key": self.verify_key,
            "key_cache_bytes": self.key_cache.max_bytes,
            "loaded": self._circuit is not None,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], verify_key=state["verify_key"], key_cache_bytes=state["key_cache_bytes"])
        if state["loaded"]:
            self.load()

    def load(self) -> DeploymentServer:
        """Check the deployment's files and compile its circuit for this machine.

        Returns
        -------
        self : DeploymentServer

        Raises
        ------
        ValueError
            If ``server.zip`` is malformed, modified, of another format version, unsigned or
            badly signed (with ``verify_key``), or if ``client.json`` beside it comes from
            another deployment.
        """
        zip_path = self.path if self.path.suffix == ".zip" else self.path / SERVER_FILE
        artifact = ServerArtifact.read(zip_path, self.verify_key)
        client_path = zip_path.parent / CLIENT_FILE
        if client_path.exists():
            artifact.check_matches(read_client_file(client_path, self.verify_key))
        self._program, self._circuit = compile_portable(artifact)
        self.artifact = artifact
        return self

    @staticmethod
    def load_evaluation_keys(serialized: bytes) -> Any:
        """Deserialize a client's evaluation keys (uncached; :meth:`run` caches them itself).

        Parameters
        ----------
        serialized : bytes
            What ``FHEModelClient.get_serialized_evaluation_keys`` returned.

        Returns
        -------
        keys : concrete.compiler.ServerKeyset
            Accepted by :meth:`run` in place of the bytes.

        Raises
        ------
        ValueError
            If the bytes are not evaluation keys.
        """
        return deserialize_evaluation_keys(serialized)

    def evaluation_keys(self, keys: Any) -> Any:
        """concrete's server keyset from serialized keys (through the cache), a keyset, or
        ``concrete.fhe.EvaluationKeys``."""
        if isinstance(keys, (bytes, bytearray, memoryview)):
            return self.key_cache.get(keys)
        inner = getattr(keys, "server_keyset", keys)  # concrete.fhe.EvaluationKeys wraps it
        if type(inner).__name__ != "ServerKeyset":
            raise TypeError(f"evaluation keys must be bytes or loaded keys, got {type(keys).__name__}")
        return inner

    def run(self, encrypted_data: bytes | list[bytes], evaluation_keys: Any) -> bytes | list[bytes]:
        """Run the model on encrypted data.

        Parameters
        ----------
        encrypted_data : bytes or list of bytes
            One serialized row (``quantize_encrypt_serialize(X)[i]``), a list of them, or a
            whole batch serialized as one bytes object (``quantize_encrypt_serialize_batch``).
        evaluation_keys : bytes or loaded keys
            The client's serialized evaluation keys (deserialized once per key set and
            cached), or keys from :meth:`load_evaluation_keys`.

        Returns
        -------
        result : bytes or list of bytes
            Same form as ``encrypted_data``: one encrypted result, a list, or a batch.

        Raises
        ------
        TypeError
            If an argument has the wrong type.
        ValueError
            If a ciphertext or the keys are malformed or do not fit this model.
        """
        if self._circuit is None:
            raise RuntimeError("call load() first")
        if isinstance(encrypted_data, (list, tuple)):
            keys = self.evaluation_keys(evaluation_keys)
            return [self._run_row(row, keys, index) for index, row in enumerate(encrypted_data)]
        if not isinstance(encrypted_data, (bytes, bytearray)):
            raise TypeError(f"encrypted_data must be bytes or a list of bytes, got {type(encrypted_data).__name__}")
        keys = self.evaluation_keys(evaluation_keys)
        if is_packed(encrypted_data, BATCH_MAGIC):
            rows = unpack(bytes(encrypted_data), BATCH_MAGIC)
            return pack([self._run_row(row, keys, index) for index, row in enumerate(rows)], BATCH_MAGIC)
        return self._run_row(encrypted_data, keys)

    def _run_row(self, row: Any, keys: Any, index: int | None = None) -> bytes:
        from concrete.compiler import TransportValue

        where = "" if index is None else f" (row {index})"
        if not isinstance(row, (bytes, bytearray)):
            raise TypeError(f"each ciphertext must be bytes, got {type(row).__name__}{where}")
        values = unpack(bytes(row), TUPLE_MAGIC, "row") if is_packed(row, TUPLE_MAGIC) else [bytes(row)]
        try:
            arguments = [TransportValue.deserialize(v) for v in values]
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(f"malformed ciphertext{where} ({len(row)} bytes)") from None
        try:
            with self._call_lock:
                results = self._circuit.call(arguments, keys)
        except (RuntimeError, ValueError, TypeError) as err:
            raise ValueError(f"the ciphertext{where} does not fit this model: {_brief(err)}") from None
        if len(results) == 1:
            return results[0].serialize()
        return pack([r.serialize() for r in results], TUPLE_MAGIC)
