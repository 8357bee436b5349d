"""Every public callable of the package has a docstring.

Walks every module of ``fhe_sklearn`` (private modules included: their public names are
reached from public classes), and checks module-level functions, classes, and the public
methods and properties of every class, inherited ones at the class that defines them. A
method overriding a documented one may leave its docstring out: ``help()`` and pydoc show the
overridden method's, as ``inspect.getdoc`` does.
"""

import importlib
import inspect
import pkgutil

import fhe_sklearn

SKIPPED_MODULES = {"fhe_sklearn.__main__"}


def _modules():
    names = [fhe_sklearn.__name__]
    names += [m.name for m in pkgutil.walk_packages(fhe_sklearn.__path__, prefix="fhe_sklearn.")]
    return [importlib.import_module(n) for n in sorted(names) if n not in SKIPPED_MODULES]


def _is_public(name):
    return not name.startswith("_")


def _own(obj):
    return (getattr(obj, "__module__", None) or "").startswith("fhe_sklearn")


def _undocumented():
    missing, seen = set(), set()
    classes = []
    for module in _modules():
        for name, obj in vars(module).items():
            if not _is_public(name) or not _own(obj) or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not (obj.__doc__ or "").strip():
                missing.add(f"{obj.__module__}.{obj.__qualname__}")
            if inspect.isclass(obj):
                classes.append(obj)
    for cls in classes:
        for klass in cls.__mro__:
            if not _own(klass) or klass in seen:
                continue
            seen.add(klass)
            for name, member in vars(klass).items():
                if not _is_public(name):
                    continue
                function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                if not (inspect.isfunction(function) or isinstance(member, property)):
                    continue
                # an override without a docstring of its own shows the overridden one (as pydoc)
                if not inspect.getdoc(getattr(klass, name)):
                    missing.add(f"{klass.__module__}.{klass.__qualname__}.{name}")
    return sorted(missing)


def test_every_public_callable_has_a_docstring():
    missing = _undocumented()
    assert not missing, f"{len(missing)} public callables without a docstring:\n" + "\n".join(missing)


def test_the_walk_reaches_the_api():
    # guards the walk itself: it must see estimators, their inherited mixin methods and properties
    modules = {m.__name__ for m in _modules()}
    assert {"fhe_sklearn.deployment", "fhe_sklearn.quantization.quantizers", "fhe_sklearn.search_parameters"} <= modules

    class Undocumented(fhe_sklearn.LogisticRegression):
        def new_public_method(self):
            pass

    Undocumented.__module__, Undocumented.__qualname__ = "fhe_sklearn.linear_model", "Undocumented"
    fhe_sklearn.linear_model.Undocumented = Undocumented
    try:
        missing = _undocumented()
    finally:
        del fhe_sklearn.linear_model.Undocumented
    assert "fhe_sklearn.linear_model.Undocumented" in missing
    assert "fhe_sklearn.linear_model.Undocumented.new_public_method" in missing
