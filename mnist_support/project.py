"""The project copied into a throwaway git repo, and a directory served over HTTP."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve_directory(directory: Path, handler: type = QuietHandler) -> tuple[str, Callable]:
    """Serve `directory` over HTTP on 127.0.0.1; returns the base URL and a stop function."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return f"http://127.0.0.1:{server.server_port}/", stop


def copy_tree(dest: Path) -> None:
    """The project's files as git would commit them (tracked, and untracked but not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in listed.splitlines():
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def make_repo(
    dest: Path,
    env: Mapping[str, str],
    message: str = "baseline",
    params: Mapping[str, object] | None = None,
) -> None:
    """The project's files (`copy_tree`) in a fresh git repo, committed with `message`.

    Args:
        env: The git commands' environment (its author and committer among it).
        params: Dotted keys (`data.train_samples`) set in params.yaml before the commit.
    """
    copy_tree(dest)
    if params:
        import yaml

        values = yaml.safe_load((dest / "params.yaml").read_text())
        for key, value in params.items():
            section, _, name = key.rpartition(".")
            (values[section] if section else values)[name] = value
        (dest / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", message]):
        result = subprocess.run(cmd, cwd=dest, env=dict(env), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{cmd} exited {result.returncode}:\n{result.stderr[-3000:]}")
