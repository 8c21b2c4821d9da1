"""Stage 1, download: fetch the configured dataset into data/raw/<name>/ and verify every
file (`dvc repro download`, or `python -m pipeline.data.download`).

Sources are tried in order: the dataset's mirror variable if set (`data.mirror_env`, e.g.
$MNIST_MIRROR: an http(s):// or file:// URL, or a local path), then `data.sources`. A source
ending in `.npz` is Keras' mnist.npz; any other is a base holding the four IDX .gz files. IDX
files are identified by the sha256 of their decompressed content, so any faithful mirror
passes whatever compressor it used. Files are fetched into a temporary directory that
replaces data/raw/<name>/ only once all of them are verified; `checksums.json` beside them
records what was verified, and from where.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from pipeline.cli import run_stage
from pipeline.data.idx import (
    IDX_FILES,
    MANIFEST,
    NPZ_FILE,
    accepts,
    content_sha256,
    expected_checksums,
    file_sha256,
    read_manifest,
)
from pipeline.errors import ChecksumError, DownloadError
from pipeline.io import atomic_dir, write_json
from pipeline.paths import Paths

_CHUNK = 1 << 20  # bytes read at a time


def sources(data: DictConfig) -> list[str]:
    """The sources to try, in order: the dataset's mirror variable first when it is set."""
    mirror = os.environ.get(data.mirror_env, "").strip()
    return ([mirror] if mirror else []) + list(data.sources)


def is_downloaded(cfg: DictConfig, paths: Paths) -> bool:
    """True when `paths.raw` holds files verified against this config's checksums."""
    manifest = read_manifest(paths.of(cfg.data.name).raw) or {}
    return accepts(cfg.data, manifest.get("sha256"))


def download(cfg: DictConfig, paths: Paths) -> Path:
    """Fetch and verify the dataset into `paths.raw`, trying each source in turn.

    Returns:
        The directory holding the verified files.

    Raises:
        DownloadError: no source delivered; the message lists each source and why.
    """
    paths = paths.of(cfg.data.name)
    reasons = []
    for source in sources(cfg.data):
        try:
            with atomic_dir(paths.raw) as tmp:
                verified = _fetch_source(source, cfg.data, tmp)
                write_json(tmp / MANIFEST, {"source": source, "sha256": verified})
            return paths.raw
        except DownloadError as err:
            print(f"download: {source} failed: {err}", file=sys.stderr)
            reasons.append(f"{source}: {err}")
    tried = "; ".join(reasons) or "no source configured"
    raise DownloadError(
        f"could not download {cfg.data.name} from any source ({tried}). Set "
        f"{cfg.data.mirror_env} to a directory or URL holding the four IDX .gz files"
        + (" or mnist.npz" if cfg.data.npz_sha256 else "")
    )


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _local_path(source: str) -> Path:
    if source.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(source).path))
    return Path(source)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if "://" in base else str(Path(base) / name)


def _fetch_source(source: str, data: DictConfig, dest: Path) -> dict[str, str]:
    """Fetch and verify one source's files into `dest`; the checksums verified."""
    expected = expected_checksums(data, npz=source.endswith(".npz"))
    if source.endswith(".npz"):
        target = dest / NPZ_FILE
        _fetch(source, target, data)
        _verify(target, file_sha256(target), data.npz_sha256, "sha256")
        return expected
    for name in IDX_FILES.values():
        target = dest / name
        _fetch(_join(source, name), target, data)
        _verify_idx(target, data.idx_sha256[name])
    return expected


def _verify_idx(path: Path, expected: str) -> None:
    """Check the sha256 of a gzip-compressed IDX file's content."""
    try:
        actual = content_sha256(path)
    except ValueError as err:
        raise ChecksumError(
            f"{err}; sha256 of the file is {file_sha256(path)}, expected content sha256 {expected}"
        ) from None
    _verify(path, actual, expected, "sha256 of content")


def _verify(path: Path, actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise ChecksumError(f"{path.name}: {what} is {actual}, expected {expected}")


def _fetch(url: str, target: Path, data: DictConfig) -> None:
    """Copy one file from a path or URL."""
    if _is_url(url):
        return _fetch_http(url, target, data)
    path = _local_path(url)
    if not path.is_file():
        raise DownloadError(f"{path.name}: no such file in {path.parent}")
    shutil.copyfile(path, target)


def _fetch_http(url: str, target: Path, data: DictConfig) -> None:
    """Download over HTTP, retrying transient failures with backoff.

    A dropped connection resumes from the bytes already received when the server honours
    HTTP Range requests (206), and starts over when it does not (200).
    """
    done, reason = 0, ""
    for attempt in range(1, data.retries + 1):
        headers = {"Range": f"bytes={done}-"} if done else {}
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=data.timeout) as response:
                if response.status != 206:
                    done = 0  # a full response: start the file over
                total = done + response.length if response.length is not None else None
                with open(target, "ab" if done else "wb") as f:
                    done = _copy_with_progress(response, f, target.name, done, total)
                if response.length:  # announced but never sent: the connection dropped
                    raise ConnectionError(f"connection lost after {done} of {total} bytes")
            return
        except urllib.error.HTTPError as err:
            reason = f"HTTP {err.code} for {url}"
            if err.code < 500:  # a missing file stays missing: no point retrying
                raise DownloadError(reason) from None
        except (urllib.error.URLError, OSError) as err:
            reason = f"{getattr(err, 'reason', None) or err} for {url}"
        if attempt < data.retries:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
    attempts = f"{data.retries} attempt{'s' if data.retries > 1 else ''}"
    raise DownloadError(f"{reason} (after {attempts})")


def _copy_with_progress(response, f, name: str, done: int, total: int | None) -> int:
    """Append the response body to `f`: tqdm's progress bar on a terminal, one line at the
    end elsewhere (a log)."""
    tty = sys.stderr.isatty()
    bar = tqdm(total=total, initial=done, desc=name, unit="B", unit_scale=True, disable=not tty)
    with bar:
        while chunk := response.read(_CHUNK):
            f.write(chunk)
            done += len(chunk)
            bar.update(len(chunk))
    if not tty:
        print(f"{name:28} {done / 1e6:6.1f} MB", file=sys.stderr)
    return done


def main() -> None:
    """Download and verify the configured dataset into data/raw/<name>/."""
    run_stage(lambda cfg: download(cfg, Paths.project()), main.__doc__)


if __name__ == "__main__":
    main()
