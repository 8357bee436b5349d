"""The build context of a production container image for ``fhe-sklearn serve``:
``fhe-sklearn deploy DEPLOYMENT_DIR --out CONTEXT`` (then ``docker build CONTEXT``).

The context holds the deployment directory, a ``Dockerfile`` (python slim base, the library
pinned to this version with its ``server`` extra, a non-root user, a health check on ``/info``)
and ``entrypoint.sh``, which turns ``FHE_SKLEARN_*`` environment variables into ``serve``
options. The image writes only to its key directory (a volume) and ``/tmp``.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from .._version import __version__
from .artifacts import CLIENT_FILE, SERVER_FILE, read_client_file

#: environment variable → ``serve`` option; each is passed only when set and not empty
ENV_OPTIONS = {
    "FHE_SKLEARN_API_KEY_FILE": "--api-key-file",
    "FHE_SKLEARN_WORKERS": "--workers",
    "FHE_SKLEARN_MAX_QUEUE": "--max-queue",
    "FHE_SKLEARN_TIMEOUT": "--timeout",
    "FHE_SKLEARN_DESERIALIZE_TIMEOUT": "--deserialize-timeout",
    "FHE_SKLEARN_MAX_REQUEST_MB": "--max-request-mb",
    "FHE_SKLEARN_MAX_KEYS_MB": "--max-keys-mb",
    "FHE_SKLEARN_MAX_KEY_SETS": "--max-key-sets",
    "FHE_SKLEARN_KEY_QUOTA_GB": "--key-quota-gb",
    "FHE_SKLEARN_KEY_CACHE": "--key-cache",
    "FHE_SKLEARN_MAX_BATCH_MB": "--max-batch-mb",
    "FHE_SKLEARN_MAX_BATCH_ROWS": "--max-batch-rows",
    "FHE_SKLEARN_DASK_SCHEDULER": "--dask-scheduler",
}
#: the image's defaults (``ENV`` of the Dockerfile)
IMAGE_ENV = {
    "FHE_SKLEARN_DEPLOYMENT_DIR": "/app/deployment",
    "FHE_SKLEARN_KEY_DIR": "/var/lib/fhe-sklearn/keys",
    "FHE_SKLEARN_HOST": "0.0.0.0",
    "FHE_SKLEARN_PORT": "8000",
    "FHE_SKLEARN_WORKERS": "2",
    "HOME": "/var/lib/fhe-sklearn",
    "PYTHONUNBUFFERED": "1",
}
#: uid of the image's user (not root; above the range of system users)
IMAGE_UID = 10001

_ENTRYPOINT = """#!/bin/sh
# fhe-sklearn serve, configured by FHE_SKLEARN_* environment variables (see README:
# "Production deployment image"). Written by `fhe-sklearn deploy`.
set -eu
set -- serve "${{FHE_SKLEARN_DEPLOYMENT_DIR:?}}" \\
    --host "${{FHE_SKLEARN_HOST:-0.0.0.0}}" --port "${{FHE_SKLEARN_PORT:-8000}}" \\
    --key-dir "${{FHE_SKLEARN_KEY_DIR:?}}"
{options}
if [ "${{FHE_SKLEARN_DOCS:-0}}" = "1" ]; then set -- "$@" --docs; fi
exec python -m fhe_sklearn "$@"
"""

_HEALTHCHECK = (
    'python -c "import os, urllib.request; '
    "urllib.request.urlopen('http://127.0.0.1:%s/info' % os.environ.get('FHE_SKLEARN_PORT', '8000'), timeout=4)\""
)

_DOCKERFILE = """# Production image of one fhe_sklearn deployment, written by `fhe-sklearn deploy`:
#   docker build -t my-model CONTEXT
#   docker run -p 8000:8000 -v fhe-keys:/var/lib/fhe-sklearn/keys \\
#       -v $PWD/api_key:/run/secrets/fhe_api_key:ro -e FHE_SKLEARN_API_KEY_FILE=/run/secrets/fhe_api_key my-model
FROM python:{python}-slim

ARG FHE_SKLEARN_REQUIREMENT="fhe-sklearn[server]=={version}"
# a wheel of fhe_sklearn dropped into the context's wheels/ is used before any index
COPY wheels/ /tmp/wheels/
# concrete-python needs torch; the CPU build keeps the image small
RUN pip install --no-cache-dir --find-links /tmp/wheels --extra-index-url https://download.pytorch.org/whl/cpu \\
        "torch=={torch}" "$FHE_SKLEARN_REQUIREMENT" "concrete-python=={concrete}" \\
    && rm -rf /tmp/wheels \\
    && useradd --system --uid {uid} --user-group --home-dir /var/lib/fhe-sklearn --no-create-home fhe \\
    && mkdir -p /var/lib/fhe-sklearn/keys \\
    && chown -R {uid}:{uid} /var/lib/fhe-sklearn && chmod 0700 /var/lib/fhe-sklearn/keys

# root-owned (files 0644, directories 0755): readable, not writable, by the server's user
COPY deployment/ /app/deployment/
COPY --chmod=0555 entrypoint.sh /app/entrypoint.sh

{env}
USER {uid}:{uid}
VOLUME ["/var/lib/fhe-sklearn/keys"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD {healthcheck}
ENTRYPOINT ["/app/entrypoint.sh"]
"""


def entrypoint_script() -> str:
    """``entrypoint.sh``: the ``serve`` command from the environment."""
    lines = [f'if [ -n "${{{var}:-}}" ]; then set -- "$@" {option} "${var}"; fi' for var, option in ENV_OPTIONS.items()]
    return _ENTRYPOINT.format(options="\n".join(lines))


def dockerfile(python: str = "3.11") -> str:
    """The Dockerfile (versions pinned to this environment's)."""
    env = "\n".join(f'ENV {k}="{v}"' for k, v in IMAGE_ENV.items())
    return _DOCKERFILE.format(
        python=python,
        version=__version__,
        torch=_version_of("torch").split("+")[0],
        concrete=_version_of("concrete-python"),
        uid=IMAGE_UID,
        env=env,
        healthcheck=_HEALTHCHECK,
    )


def healthcheck_command() -> str:
    """The HEALTHCHECK's command (a shell command line)."""
    return _HEALTHCHECK


def _version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # pragma: no cover
        raise ValueError(f"{distribution} is not installed: the image pins the versions of this environment") from None


def write_image_context(deployment_dir: str | Path, out: str | Path, python: str = "3.11") -> Path:
    """Write the build context of an image serving ``deployment_dir`` into ``out`` (created;
    must not exist or be empty). Returns ``out``.

    Raises
    ------
    ValueError
        If ``deployment_dir`` is not a readable deployment (client.json checked, server.zip
        present) or ``out`` holds files.
    """
    source = Path(deployment_dir)
    read_client_file(source)  # format version and fingerprint
    if not (source / SERVER_FILE).is_file():
        raise ValueError(f"{source} has no {SERVER_FILE}: save the model with FHEModelDev first")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty directory")
    (out / "deployment").mkdir(parents=True, exist_ok=True)
    for name in (CLIENT_FILE, SERVER_FILE):
        shutil.copyfile(source / name, out / "deployment" / name)
    (out / "Dockerfile").write_text(dockerfile(python))
    script = out / "entrypoint.sh"
    script.write_text(entrypoint_script())
    script.chmod(0o755)
    (out / "wheels").mkdir()
    (out / "wheels" / "README").write_text("Put a wheel of fhe_sklearn here to install it instead of the index's.\n")
    (out / ".dockerignore").write_text("*\n!deployment/\n!entrypoint.sh\n!wheels/\n")
    return out
