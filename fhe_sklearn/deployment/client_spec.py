"""ClientSpec: exactly what a client needs to use a deployed model, as plain JSON.

A client quantizes its inputs, encrypts them, decrypts the circuit's outputs, de-quantizes
and post-processes them (sigmoid, link function, averaging, argmax...). It needs the input
quantizers, the output de-quantization, the feature count and names, and the few fitted
values the estimator's post-processing reads — never the model's weights, thresholds (except
those a ``quantization="splits"`` input quantizer is made of) or leaf values.

Each estimator family declares what its client may see in a class-level allow-list,
``_client_attributes = {"classes_": np.ndarray, "link_": str, ...}``, merged along the class
hierarchy. The spec is written as JSON through a fixed schema (checked types, bounded sizes)
and read back without rebuilding any object the schema does not name: the client model is
the estimator class constructed with only those values, its ``quantized_module_`` a
:class:`ClientModule` (quantizers, no ops). A bare compiled ``QuantizedModule`` (no
estimator) deploys as a spec with ``estimator=None``: quantize inputs, de-quantize outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: JSON dtype names of arrays the schema accepts ("str": numpy unicode, "object_str":
#: object array of str, as scikit-learn keeps string labels)
_DTYPES = {
    "bool": np.bool_,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
    "str": np.str_,
    "object_str": object,
}
MAX_ARRAY_SIZE = 2**20
MAX_STRING = 1024
MAX_TENSORS = 64
MAX_FEATURES = 2**20
#: parts the client adds up into one output: digit planes (a 16-bit sum has at most 16) or
#: one score per tree of an ensemble
MAX_OUTPUT_BLOCKS = 1024
_SCALARS = (bool, int, float, str)


def encode_array(value: Any, what: str) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}`` of a numeric, boolean or string array."""
    array = np.asarray(value)
    if array.dtype == object:
        if not all(isinstance(v, str) for v in array.ravel()):
            raise ValueError(f"{what}: object arrays may hold str only")
        dtype = "object_str"
    elif array.dtype.kind == "U":
        dtype = "str"
    else:
        dtype = array.dtype.name
    if dtype not in _DTYPES:
        raise ValueError(f"{what}: arrays of dtype {array.dtype} cannot be part of a client spec")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: NaN or infinite values")
    return {"dtype": dtype, "shape": list(array.shape), "data": array.ravel().tolist()}


def decode_array(data: Any, what: str) -> np.ndarray:
    """Inverse of :func:`encode_array`, checking every field.

    Raises
    ------
    ValueError
        On any other structure, dtype, element type, size or shape.
    """
    if not isinstance(data, dict) or set(data) != {"dtype", "shape", "data"}:
        raise ValueError(f"{what}: expected an array record {{dtype, shape, data}}")
    dtype, shape, flat = data["dtype"], data["shape"], data["data"]
    if dtype not in _DTYPES:
        raise ValueError(f"{what}: unknown dtype {str(dtype)[:40]!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > 4
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_ARRAY_SIZE for n in shape)
    ):
        raise ValueError(f"{what}: invalid shape")
    if not isinstance(flat, list) or len(flat) != int(np.prod(shape, dtype=np.int64)) or len(flat) > MAX_ARRAY_SIZE:
        raise ValueError(f"{what}: data does not match the shape, or more than {MAX_ARRAY_SIZE} values")
    kind = "str" if dtype in ("str", "object_str") else ("bool" if dtype == "bool" else "number")
    for v in flat:
        if kind == "str":
            ok = isinstance(v, str) and len(v) <= MAX_STRING
        elif kind == "bool":
            ok = isinstance(v, bool)
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
        if not ok:
            raise ValueError(f"{what}: element {str(v)[:40]!r} does not fit dtype {dtype}")
    try:
        if dtype == "object_str":
            array = np.empty(len(flat), dtype=object)
            array[:] = flat
            return array.reshape(shape)
        return np.asarray(flat, dtype=_DTYPES[dtype]).reshape(shape)
    except (OverflowError, ValueError) as err:
        raise ValueError(f"{what}: {err}") from None


def _encode_value(value: Any, expected: type, what: str) -> Any:
    if expected is np.ndarray:
        return encode_array(value, what)
    if isinstance(value, np.generic):
        value = value.item()
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{what} must be {expected.__name__}, got {type(value).__name__}")
    if expected is str and len(value) > MAX_STRING:
        raise ValueError(f"{what}: string longer than {MAX_STRING}")
    if expected is float and not np.isfinite(value):
        raise ValueError(f"{what}: NaN or infinite")
    return value


def _decode_value(value: Any, expected: type, what: str) -> Any:
    if expected is np.ndarray:
        return decode_array(value, what)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return _encode_value(value, expected, what)  # same checks on the way in


def client_attributes(cls: type) -> dict[str, type]:
    """The allow-list of a class: its ``_client_attributes`` merged along the hierarchy."""
    allowed: dict[str, type] = {}
    for klass in reversed(cls.__mro__):
        allowed.update(vars(klass).get("_client_attributes", {}))
    return allowed


def _public_estimators() -> dict[str, str]:
    import fhe_sklearn

    return {name: module for name, module in fhe_sklearn._LAZY.items() if name[0].isupper()}


#: optional field of an input quantizer: the client sends each feature's integer as unary
#: digits (fhe_sklearn.quantization.unary), as tree circuits read them
UNARY_DIGITS = "unary_digits"
#: the client sends the rank of each compared feature among its thresholds
#: (fhe_sklearn.quantization.rank), with those features and thresholds
THRESHOLD_RANK = "threshold_rank"
#: (fhe_sklearn.quantization.norm), the codes then their squared norm (k-NN)
SQUARED_NORM = "squared_norm"


# -- quantizers ------------------------------------------------------------------------------
def _quantizer_to_json(quantizer: Any, what: str) -> dict[str, Any]:
    from ..quantization.bins import ThresholdBinQuantizer
    from ..quantization.lattice import LatticeQuantizer
    from ..quantization.norm import SquaredNormEncoder
    from ..quantization.quantizers import UniformQuantizer
    from ..quantization.rank import ThresholdRankQuantizer
    from ..quantization.unary import UnaryDigitQuantizer

    if isinstance(quantizer, SquaredNormEncoder):  # k-NN: the codes, then their squared norm
        return {**_quantizer_to_json(quantizer.base, what), "encoding": SQUARED_NORM}
    if isinstance(quantizer, UnaryDigitQuantizer):  # trees: the base grid, sent as unary digits
        return {**_quantizer_to_json(quantizer.base, what), "encoding": UNARY_DIGITS, "digits": quantizer.n_digits}
    if isinstance(quantizer, ThresholdRankQuantizer):  # trees: ranks among the thresholds
        return {
            **_quantizer_to_json(quantizer.base, what),
            "encoding": THRESHOLD_RANK,
            "features": [int(f) for f in quantizer.features],
            "cuts": [encode_array(c.astype(np.int64), f"{what} cuts") for c in quantizer.cuts],
        }
    options = quantizer.options
    if isinstance(quantizer, ThresholdBinQuantizer):
        return {
            "kind": "bins",
            "n_bits": options.n_bits,
            "strict": bool(quantizer.strict),
            "thresholds": [encode_array(t.astype(np.float64), f"{what} thresholds") for t in quantizer.thresholds],
        }
    if isinstance(quantizer, UniformQuantizer):
        is_lattice = isinstance(quantizer, LatticeQuantizer)
        lattice = {"column_max": encode_array(quantizer.column_max, f"{what} column_max")} if is_lattice else {}
        return {
            **lattice,
            "kind": "uniform",
            "n_bits": options.n_bits,
            "is_signed": bool(options.is_signed),
            "is_symmetric": bool(options.is_symmetric),
            "qmin": options.qmin,
            "qmax": options.qmax,
            "scale": encode_array(np.asarray(quantizer.scale, dtype=np.float64), f"{what} scale"),
            "zero_point": encode_array(np.asarray(quantizer.zero_point, dtype=np.int64), f"{what} zero_point"),
        }
    raise ValueError(f"{what}: a {type(quantizer).__name__} cannot be deployed (uniform or bin quantizers only)")


def _check_quantizer(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object")
    if "encoding" in data:
        encoding = data["encoding"]
        if encoding == SQUARED_NORM:
            return {**_check_quantizer({k: v for k, v in data.items() if k != "encoding"}, what), "encoding": encoding}
        if encoding == THRESHOLD_RANK:
            features, cuts = data.get("features"), data.get("cuts")
            if (
                not isinstance(features, list)
                or not 0 < len(features) <= MAX_FEATURES
                or not all(type(f) is int and 0 <= f < MAX_FEATURES for f in features)
                or not isinstance(cuts, list)
                or len(cuts) != len(features)
            ):
                raise ValueError(f"{what}: threshold ranks need one list of cuts per compared feature")
            decoded = [decode_array(c, f"{what} cuts") for c in cuts]
            if any(c.ndim != 1 or c.dtype != np.int64 for c in decoded):
                raise ValueError(f"{what}: cuts must be 1-D int64 arrays")
            rest = {k: v for k, v in data.items() if k not in ("encoding", "features", "cuts")}
            return {**_check_quantizer(rest, what), "encoding": encoding, "features": features, "cuts": decoded}
        if encoding != UNARY_DIGITS:
            raise ValueError(f"{what}: unknown input encoding {str(encoding)[:40]!r}")
        digits = data.get("digits", 2)  # specs written before 3-digit encodings have none
        if type(digits) is not int or digits not in (2, 3):
            raise ValueError(f"{what}: unary digits must be 2 or 3, got {str(digits)[:40]!r}")
        checked = _check_quantizer({k: v for k, v in data.items() if k not in ("encoding", "digits")}, what)
        return {**checked, "encoding": encoding, "digits": digits}
    name, shape = data.get("name"), data.get("shape")
    if not isinstance(name, str) or len(name) > MAX_STRING:
        raise ValueError(f"{what}: invalid name")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 4
        or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_FEATURES for d in shape)
    ):
        raise ValueError(f"{what}: shape must be 1 to 4 positive integers (one sample's shape)")
    kind = data.get("kind")
    n_bits = data.get("n_bits")
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 16:
        raise ValueError(f"{what}: n_bits must be an integer in [1, 16]")
    if kind == "bins":
        _expect_keys(data, {"name", "shape", "kind", "n_bits", "strict", "thresholds"}, what)
        if not isinstance(data["strict"], bool) or not isinstance(data["thresholds"], list):
            raise ValueError(f"{what}: invalid strict or thresholds")
        if not 0 < len(data["thresholds"]) <= MAX_FEATURES:
            raise ValueError(f"{what}: invalid number of features")
        checked = [decode_array(t, f"{what} thresholds") for t in data["thresholds"]]
        if any(t.ndim != 1 or t.dtype != np.float64 for t in checked):
            raise ValueError(f"{what}: thresholds must be 1-D float64 arrays")
        return {**data, "thresholds": checked}
    if kind == "uniform":
        _expect_keys(
            data,
            {"name", "shape", "kind", "n_bits", "is_signed", "is_symmetric", "qmin", "qmax", "scale", "zero_point"}
            | ({"column_max"} if "column_max" in data else set()),
            what,
        )
        if not isinstance(data["is_signed"], bool) or not isinstance(data["is_symmetric"], bool):
            raise ValueError(f"{what}: is_signed and is_symmetric must be booleans")
        scale = decode_array(data["scale"], f"{what} scale")
        zero_point = decode_array(data["zero_point"], f"{what} zero_point")
        if scale.dtype != np.float64 or zero_point.dtype != np.int64 or scale.ndim > 1 or zero_point.ndim > 1:
            raise ValueError(f"{what}: scale must be float64 and zero_point int64, scalars or 1-D")
        if np.any(scale <= 0):
            raise ValueError(f"{what}: scale must be positive")
        checked = {**data, "scale": scale, "zero_point": zero_point}
        if "column_max" in data:
            column_max = decode_array(data["column_max"], f"{what} column_max")
            if column_max.dtype != np.int64 or column_max.shape != scale.shape:
                raise ValueError(f"{what}: column_max must be int64, of the scale's shape")
            if data["is_signed"] or "encoding" in data or np.any((column_max < 0) | (column_max > data["qmax"])):
                raise ValueError(f"{what}: column_max must lie in [0, qmax] of an unsigned grid without encoding")
            checked["column_max"] = column_max
        return checked
    raise ValueError(f"{what}: unknown quantizer kind {str(kind)[:40]!r}")


def _check_output(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object")
    _expect_keys(data, {"name", "scale", "zero_point", "lo", "hi"} | ({"blocks"} & set(data)), what)
    if not isinstance(data["name"], str) or len(data["name"]) > MAX_STRING:
        raise ValueError(f"{what}: invalid name")
    checked = {k: decode_array(data[k], f"{what} {k}") for k in ("scale", "zero_point", "lo", "hi")}
    if checked["scale"].dtype != np.float64 or any(checked[k].dtype != np.int64 for k in ("zero_point", "lo", "hi")):
        raise ValueError(f"{what}: scale must be float64, zero_point/lo/hi int64")
    if "blocks" in data:
        blocks = data["blocks"]
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 < blocks <= MAX_OUTPUT_BLOCKS:
            raise ValueError(f"{what}: blocks must be an integer in [2, {MAX_OUTPUT_BLOCKS}]")
        checked["blocks"] = blocks
    return {"name": data["name"], **checked}


def _expect_keys(data: dict, keys: set[str], what: str) -> None:
    if set(data) != keys:
        raise ValueError(f"{what}: expected the fields {sorted(keys)}, got {sorted(map(str, data))[:20]}")


# -- the spec -------------------------------------------------------------------------------
@dataclass
class ClientSpec:
    """What a client needs: input quantizers, output de-quantization, post-processing state.

    Parameters
    ----------
    estimator : str or None
        Public fhe_sklearn estimator class whose post-processing the client runs; None for a
        bare ``QuantizedModule`` (de-quantized outputs are the result).
    n_features_in : int
        Features of each row (of the first input).
    feature_names : list of str or None
        Column names the model was fitted with (DataFrames are checked against them).
    inputs : list of dict
        One quantizer per circuit input (``"kind"``: ``"uniform"`` with scale, zero point,
        n_bits, qmin/qmax; or ``"bins"`` with the split points per feature; ``"encoding":
        "unary_digits"`` and ``"digits"`` (2 or 3; 2 if absent) when the client sends each
        integer as unary digits, as for trees).
    outputs : list of dict
        One de-quantization per circuit output: scale, zero point, integer range lo/hi.
    attributes : dict
        The estimator's client-side state, as allowed by its ``_client_attributes``.
    post_processing : str or None
        A bare module's ``post_processing`` (e.g. the final softmax of an imported network),
        which the client applies after de-quantizing; None for estimators, which post-process
        themselves. Written only when set, so older specs read as None.
    """

    estimator: str | None
    n_features_in: int
    feature_names: list[str] | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    attributes: dict[str, Any] = field(default_factory=dict)
    post_processing: str | None = None

    # -- from a model --------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Any) -> ClientSpec:
        """The spec of a fitted fhe_sklearn estimator or of a calibrated ``QuantizedModule``.

        Raises
        ------
        ValueError
            If the model is not one this library can deploy, or an allowed attribute has an
            unexpected type.
        """
        from ..quantization import QuantizedModule

        if isinstance(model, QuantizedModule):
            module, estimator, attributes, names = model, None, {}, None
        else:
            estimator = type(model).__name__
            if _public_estimators().get(estimator) is None or not _is_same_class(model, estimator):
                raise ValueError(
                    f"cannot deploy a {type(model).__module__}.{type(model).__qualname__}: deployment takes "
                    "fhe_sklearn's estimators or a QuantizedModule"
                )
            module = getattr(model, "quantized_module_", None)
            if module is None:
                raise ValueError(f"this {estimator} is not fitted")
            allowed = client_attributes(type(model))
            attributes = {
                name: _encode_value(getattr(model, name), kind, f"{estimator}.{name}")
                for name, kind in allowed.items()
                if getattr(model, name, None) is not None
            }
            names = getattr(model, "feature_names_in_", None)
            names = None if names is None else [str(n) for n in names]
        if module.input_shapes is None:
            raise ValueError("the model's QuantizedModule is not calibrated")
        inputs = [
            {"name": str(n), "shape": [int(d) for d in shape], **_quantizer_to_json(q, f"input {n}")}
            for n, shape, q in zip(module.input_names, module.input_shapes, module.input_quantizers)
        ]
        outs = [
            {
                "name": str(n),
                **{k: v if k == "blocks" else encode_array(v, f"output {n} {k}") for k, v in s.to_dict().items()},
            }
            for n, s in zip(module.output_names, module.output_specs)
        ]
        n_features = int(np.prod(module.input_shapes[0]))
        post = module.post_processing if estimator is None else None
        spec = cls(estimator, n_features, names, inputs, outs, attributes, post)
        return cls.from_json(spec.to_json())  # the saved form is the checked one

    # -- JSON ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The plain-JSON form (arrays as ``{"dtype", "shape", "data"}``)."""

        def plain(record: dict) -> dict:
            out = {}
            for key, value in record.items():
                if isinstance(value, np.ndarray):
                    value = encode_array(value, key)
                elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
                    value = [encode_array(v, key) for v in value]
                out[key] = value
            return out

        data = {
            "estimator": self.estimator,
            "n_features_in": self.n_features_in,
            "feature_names": self.feature_names,
            "inputs": [plain(q) for q in self.inputs],
            "outputs": [plain(o) for o in self.outputs],
            "attributes": {
                k: (encode_array(v, k) if isinstance(v, np.ndarray) else v) for k, v in self.attributes.items()
            },
        }
        if self.post_processing is not None:
            data["post_processing"] = self.post_processing
        return data

    @classmethod
    def from_json(cls, data: Any) -> ClientSpec:
        """Read and check the JSON form: only the schema's fields, types and sizes.

        Raises
        ------
        ValueError
            On anything else: unknown fields or estimator, wrong types, oversized arrays.
        """
        if not isinstance(data, dict):
            raise ValueError("client spec: expected an object")
        keys = {"estimator", "n_features_in", "feature_names", "inputs", "outputs", "attributes"}
        _expect_keys(data, keys | ({"post_processing"} & set(data)), "client spec")
        estimator = data["estimator"]
        if estimator is not None and (not isinstance(estimator, str) or estimator not in _public_estimators()):
            raise ValueError(f"client spec: unknown estimator {str(estimator)[:60]!r}")
        from ..quantization.module import POST_PROCESSING

        post = data.get("post_processing")
        if post is not None and (estimator is not None or post not in POST_PROCESSING):
            raise ValueError(
                f"client spec: post_processing {str(post)[:40]!r} is not one of {list(POST_PROCESSING)} "
                "or belongs to an estimator (only a bare module carries one)"
            )
        n = data["n_features_in"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_FEATURES:
            raise ValueError("client spec: n_features_in must be a positive integer")
        names = data["feature_names"]
        if names is not None and (
            not isinstance(names, list)
            or len(names) != n
            or not all(isinstance(s, str) and len(s) <= MAX_STRING for s in names)
        ):
            raise ValueError("client spec: feature_names must be n_features_in strings")
        for key in ("inputs", "outputs"):
            if not isinstance(data[key], list) or not 1 <= len(data[key]) <= MAX_TENSORS:
                raise ValueError(f"client spec: {key} must be a list of 1 to {MAX_TENSORS} entries")
        inputs = [_check_quantizer(q, f"client spec input {i}") for i, q in enumerate(data["inputs"])]
        outputs = [_check_output(o, f"client spec output {i}") for i, o in enumerate(data["outputs"])]
        attributes = data["attributes"]
        if not isinstance(attributes, dict):
            raise ValueError("client spec: attributes must be an object")
        if estimator is None and attributes:
            raise ValueError("client spec: a bare QuantizedModule has no estimator attributes")
        allowed = _allowed_for(estimator) if attributes else {}
        unexpected = sorted(set(attributes) - set(allowed))
        if unexpected:
            raise ValueError(f"client spec: {estimator} does not allow the client attributes {unexpected[:10]}")
        decoded = {k: _decode_value(v, allowed[k], f"client spec {k}") for k, v in attributes.items()}
        return cls(estimator, n, names, inputs, outputs, decoded, post)

    # -- the client model ----------------------------------------------------------------
    def build_model(self) -> Any:
        """The client-only model: the estimator class with only the spec's values (no float
        model, ops or weights), or a :class:`ClientModule` for a bare ``QuantizedModule``."""
        module = ClientModule(self)
        if self.estimator is None:
            return module
        cls = _estimator_class(self.estimator)
        params = cls().get_params(deep=False)
        model = cls(**{k: v for k, v in self.attributes.items() if k in params})
        for name, value in self.attributes.items():
            if name not in params:
                setattr(model, name, value)
        model.n_features_in_ = self.n_features_in
        if self.feature_names is not None:
            model.feature_names_in_ = np.asarray(self.feature_names, dtype=object)
        model.quantized_module_ = module
        return model


def _estimator_class(name: str) -> type:
    import fhe_sklearn

    return getattr(fhe_sklearn, name)


def _is_same_class(model: Any, name: str) -> bool:
    return type(model) is _estimator_class(name)


def _allowed_for(estimator: str) -> dict[str, type]:
    return client_attributes(_estimator_class(estimator))


class ClientModule:
    """The client's view of a compiled ``QuantizedModule``: quantizers only, no ops.

    Same ``quantize_input`` / ``dequantize_output`` contract as ``QuantizedModule`` (a tuple
    for several inputs or outputs), with its ``input_quantizers`` / ``output_specs`` lists
    and the single-input / single-output shortcuts ``input_quantizer`` / ``output_spec``.
    """

    def __init__(self, spec: ClientSpec) -> None:
        from ..quantization import QuantizationOptions, TensorSpec, UniformQuantizer
        from ..quantization.bins import ThresholdBinQuantizer
        from ..quantization.lattice import LatticeQuantizer
        from ..quantization.norm import SquaredNormEncoder
        from ..quantization.rank import ThresholdRankQuantizer
        from ..quantization.unary import UnaryDigitQuantizer

        self.n_features_in = spec.n_features_in
        self.input_names = [q["name"] for q in spec.inputs]
        self.input_shapes = [tuple(q["shape"]) for q in spec.inputs]
        self.output_names = [o["name"] for o in spec.outputs]
        self.input_quantizers = []
        for q in spec.inputs:
            if q["kind"] == "bins":
                quantizer = ThresholdBinQuantizer(list(q["thresholds"]), strict=q["strict"])
            else:
                options = QuantizationOptions(q["n_bits"], q["is_signed"], q["is_symmetric"])
                if "column_max" in q:
                    quantizer = LatticeQuantizer(options, q["scale"], q["zero_point"], q["column_max"])
                else:
                    quantizer = UniformQuantizer(options, scale=q["scale"], zero_point=q["zero_point"])
                if (options.qmin, options.qmax) != (q["qmin"], q["qmax"]):
                    raise ValueError(f"client spec input {q['name']}: qmin/qmax do not match its options")
            if quantizer.options.n_bits != q["n_bits"]:
                raise ValueError(f"client spec input {q['name']}: n_bits does not match its quantizer")
            if q.get("encoding") == UNARY_DIGITS:
                if quantizer.options.qmin != 0:
                    raise ValueError(f"client spec input {q['name']}: unary digits need an unsigned grid")
                quantizer = UnaryDigitQuantizer(quantizer, n_digits=q.get("digits", 2))
            elif q.get("encoding") == THRESHOLD_RANK:
                if quantizer.options.qmin != 0 or max(q["features"]) >= int(np.prod(q["shape"])):
                    raise ValueError(f"client spec input {q['name']}: threshold ranks of an unknown feature")
                quantizer = ThresholdRankQuantizer(quantizer, q["features"], list(q["cuts"]))
            elif q.get("encoding") == SQUARED_NORM:
                if quantizer.options.qmin != 0 or len(q["shape"]) != 1:
                    raise ValueError(f"client spec input {q['name']}: a squared norm needs unsigned codes of a row")
                quantizer = SquaredNormEncoder(quantizer, q["shape"][0])
            self.input_quantizers.append(quantizer)
        self.output_specs = [
            TensorSpec(o["scale"], o["zero_point"], o["lo"], o["hi"], o.get("blocks", 1)) for o in spec.outputs
        ]
        self.post_processing = spec.post_processing

    @property
    def input_quantizer(self) -> Any:
        """The quantizer of the only input."""
        return self.input_quantizers[0]

    @property
    def output_spec(self) -> Any:
        """The de-quantization of the only output."""
        return self.output_specs[0]

    @staticmethod
    def _select(values: list[Any]) -> Any:
        return values[0] if len(values) == 1 else tuple(values)

    def quantize_input(self, *x: Any) -> Any:
        """Float rows of each input → integers (a tuple for several inputs)."""
        if len(x) != len(self.input_quantizers):
            raise ValueError(
                f"the model takes {len(self.input_quantizers)} input(s) ({self.input_names}), got {len(x)}"
            )
        out = []
        for name, shape, values, quantizer in zip(self.input_names, self.input_shapes, x, self.input_quantizers):
            values = np.asarray(values, dtype=np.float64)
            if values.ndim != 1 + len(shape) or values.shape[1:] != shape:
                expected = ", ".join(["n_samples", *map(str, shape)])
                raise ValueError(f"expected input {name!r} of shape ({expected}), got {values.shape}")
            out.append(quantizer.quant(values))
        return self._select(out)

    def dequantize_output(self, *y_q: Any) -> Any:
        """Integer outputs → floats (a tuple for several outputs)."""
        if len(y_q) != len(self.output_specs):
            raise ValueError(f"the model has {len(self.output_specs)} output(s), got {len(y_q)}")
        return self._select(
            [s.dequant(np.asarray(q, dtype=np.int64)).astype(np.float64) for q, s in zip(y_q, self.output_specs)]
        )

    def output_from_dequantized(self, y: Any) -> Any:
        """The de-quantized outputs after the module's ``post_processing`` (if any)."""
        from ..quantization.module import apply_post_processing

        return apply_post_processing(y, self.post_processing)
