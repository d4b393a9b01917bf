"""The cluster secret: precedence, generation with mode 0600, and refusing loose files."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from phoenix_cluster._transport.cookie import default_cookie_path, resolve_secret
from phoenix_cluster.errors import ConfigError

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_cookie(path: Path, text: str, file_mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(file_mode)
    return path


def test_precedence_argument_then_environment_then_file(tmp_path: Path) -> None:
    f = write_cookie(tmp_path / "cookie", "from-file\n")
    env = {"PHX_COOKIE": "from-env", "HOME": str(tmp_path)}
    assert resolve_secret("from-arg", str(f), env) == (b"from-arg", None)
    assert resolve_secret(None, str(f), env) == (b"from-env", None)
    assert resolve_secret(None, str(f), {"HOME": str(tmp_path)}) == (b"from-file", str(f))


@posix_only
def test_missing_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "cookie"
    secret, where = resolve_secret(None, str(path), {})
    assert where == str(path)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert len(secret) == 64 and int(secret, 16) >= 0  # 32 random bytes, hex
    assert path.read_text().strip().encode() == secret
    # The next node started with the same file gets the same secret.
    assert resolve_secret(None, str(path), {}) == (secret, str(path))
    other, _ = resolve_secret(None, str(tmp_path / "second"), {})
    assert other != secret


@posix_only
def test_default_path_is_under_home(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert default_cookie_path(env) == tmp_path / ".phoenix" / "cookie"
    secret, where = resolve_secret(None, None, env)
    assert where == str(tmp_path / ".phoenix" / "cookie")
    assert mode(Path(where)) == 0o600
    assert resolve_secret(None, None, env) == (secret, where)


@posix_only
@pytest.mark.parametrize("loose", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_cookie_file_accessible_by_others_is_refused(tmp_path: Path, loose: int) -> None:
    f = write_cookie(tmp_path / "cookie", "s3cr3t-value", loose)
    with pytest.raises(ConfigError, match=r"accessible by group or others") as info:
        resolve_secret(None, str(f), {})
    assert f"chmod 600 {f}" in str(info.value) and oct(loose)[2:] in str(info.value)
    assert info.value.key == "cookie_file"
    assert "s3cr3t-value" not in str(info.value)


@pytest.mark.parametrize("blank", ["", "  ", "\n"])
def test_empty_secrets_are_refused(tmp_path: Path, blank: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        resolve_secret(blank, None, {})
    with pytest.raises(ConfigError, match="empty"):
        resolve_secret(None, None, {"PHX_COOKIE": blank})
    f = write_cookie(tmp_path / "c", blank)
    with pytest.raises(ConfigError, match="empty"):
        resolve_secret(None, str(f), {})


UNPRIVILEGED_RESOLVE = """
import sys
from phoenix_cluster._transport.cookie import resolve_secret
from phoenix_cluster.errors import ConfigError
try:
    resolve_secret(None, sys.argv[1], {})
except ConfigError as exc:
    print(exc)
    sys.exit(3)
"""


def resolve_as_nobody(cookie: Path) -> subprocess.CompletedProcess[str]:
    """``resolve_secret`` for ``cookie`` in a process running as user ``nobody`` (root
    ignores directory modes, so the check is only real without root's privileges)."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed to drop root"
    return subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         UNPRIVILEGED_RESOLVE, str(cookie)],
        env={**os.environ, "HOME": "/nonexistent"}, capture_output=True, text=True,
        timeout=60, check=False)


@posix_only
def test_unwritable_location_is_a_config_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            with pytest.raises(ConfigError, match="cannot create cookie file"):
                resolve_secret(None, str(locked / "cookie"), {})
        finally:
            locked.chmod(0o700)
        return
    # As root: a directory nobody may write, in a directory everyone may enter (pytest's
    # tmp_path is private to root), and the check run as nobody.
    shared = Path(tempfile.mkdtemp(prefix="phx-cookie-"))
    try:
        shared.chmod(0o755)
        locked = shared / "locked"
        locked.mkdir(mode=0o555)
        done = resolve_as_nobody(locked / "cookie")
        assert done.returncode == 3, done.stdout + done.stderr
        assert done.stdout.startswith(f"cannot create cookie file {locked / 'cookie'}:"), done
        assert "Permission denied" in done.stdout
        assert not (locked / "cookie").exists()
    finally:
        shutil.rmtree(shared)


def test_without_create_a_missing_file_is_an_error_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    for named in (str(tmp_path / "named"), None):
        with pytest.raises(ConfigError, match="no cluster secret: set PHX_COOKIE"):
            resolve_secret(None, named, {"HOME": str(tmp_path)}, create=False)
    assert list(tmp_path.iterdir()) == []
    write_cookie(tmp_path / "named", "existing\n")
    assert resolve_secret(None, str(tmp_path / "named"), {}, create=False) == (
        b"existing", str(tmp_path / "named"))


async def test_a_client_node_never_writes_a_secret_file(tmp_path: Path) -> None:
    import phoenix_cluster as phx

    client = phx.Node(role="client", seeds=["127.0.0.1:1"], listen="127.0.0.1:0")
    with pytest.raises(ConfigError, match="no cluster secret"):
        await client.start()
    assert not default_cookie_path().exists()  # HOME is a fresh directory (conftest)
