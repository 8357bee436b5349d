"""Guard: no key, ciphertext or compiler artifact is ever tracked by git."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: concrete keyset files, our key stores, and concrete's debug dumps
FORBIDDEN = re.compile(
    r"(^|/)(secretKey_\d+|ksKey_\d+|pbsKey_\d+|fpksKey_\d+)$"
    r"|(^|/)\.artifacts/"
    r"|\.evaluation_keys$|\.(keyset|ciphertext)$"
    r"|(^|/)(client|server)_keys/"
)


def forbidden_tracked_files(repo: Path) -> list[str]:
    """Tracked paths of ``repo`` that look like keys, ciphertexts or compiler artifacts."""
    listed = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout
    return [path for path in listed.splitlines() if FORBIDDEN.search(path)]


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_no_key_or_artifact_is_tracked():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert forbidden_tracked_files(ROOT) == []


@needs_git
@pytest.mark.parametrize(
    "planted",
    ["client_keys/123/secretKey_0", "keys/17/pbsKey_1", ".artifacts/mlir.txt", "srv/abc.evaluation_keys"],
)
def test_the_guard_catches_a_planted_key(tmp_path, planted):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "README.md").write_text("clean\n")
    file = tmp_path / planted
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"\x00secret")
    subprocess.run(["git", "add", "-f", "."], cwd=tmp_path, check=True)
    assert forbidden_tracked_files(tmp_path) == [planted]
