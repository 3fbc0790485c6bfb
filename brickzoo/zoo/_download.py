"""Downloads of prebuilt zoo entries: the cache folder, one verified file at a time, complete folders only.

Every file is streamed into a temporary file next to its destination while its sha256 is
computed, checked (length, then hash) and only then renamed into place. A whole entry is
assembled in a temporary folder that is renamed into the cache when every file is there and
verified (:func:`staged_folder`), so the cache never holds anything half-downloaded: an
entry folder in the cache is complete or absent.

The cache is ``$BRICKZOO_HOME`` when set, otherwise ``<torch.hub.get_dir()>/brickzoo``
(``~/.cache/torch/hub/brickzoo`` by default, moved by ``$TORCH_HOME``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from brickzoo.errors import DownloadError, WeightsError, WeightsNotFoundError

ENV_HOME = "BRICKZOO_HOME"
DEFAULT_TIMEOUT = 30.0  # seconds without a byte from the server before giving up
URL_SCHEMES = ("https", "http", "file")
_CHUNK = 1 << 16
_LOOPBACK_NAMES = ("localhost",)


def brickzoo_home() -> Path:
    """The folder brickzoo caches downloads in: ``$BRICKZOO_HOME``, else ``<torch.hub.get_dir()>/brickzoo``.

    Example:
        >>> import os
        >>> os.environ["BRICKZOO_HOME"] = "/tmp/my_brickzoo_cache"
        >>> str(brickzoo_home())
        '/tmp/my_brickzoo_cache'
        >>> del os.environ["BRICKZOO_HOME"]
    """
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    return Path(torch.hub.get_dir()) / "brickzoo"


def is_url(text: str) -> bool:
    """Whether ``text`` is an URL brickzoo can download from (``https://``, ``http://``, ``file://``).

    >>> is_url("https://example.org/zoo/shapes/"), is_url("file:///tmp/entry"), is_url("runs/shapes")
    (True, True, False)
    """
    return urllib.parse.urlsplit(str(text)).scheme.lower() in URL_SCHEMES


def check_url(url: str) -> None:
    """Refuse URLs that cannot be trusted to deliver what they name.

    ``https://`` and ``file://`` are accepted; plain ``http://`` only for this machine
    (``127.0.0.1``, ``::1``, ``localhost``), where a test or a local mirror serves files.

    Raises:
        WeightsError: another scheme, or ``http://`` to another host.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise WeightsError(f"cannot download {url!r}: expected an https://, file:// or http://127.0.0.1 URL")
    if scheme == "http" and not _is_loopback(parts.hostname or ""):
        raise WeightsError(
            f"cannot download {url}: plain http:// is accepted only for this machine (127.0.0.1, localhost); "
            "use https://"
        )


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file, as 64 lowercase hex digits, read in chunks.

    >>> import tempfile, pathlib
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = file.write_bytes(b"abc")
    >>> sha256_of(file)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_copy_hint(url: str) -> str:
    """What to do when ``url`` cannot be reached: fetch the entry elsewhere and pass its folder."""
    return (
        f"to use a local copy instead, download the entry elsewhere (its card.json and every file the card "
        f"lists, keeping their relative paths, e.g. from {url}) and pass that folder: "
        "load_pretrained('/path/to/entry') or --weights /path/to/entry"
    )


def download_file(
    url: str,
    destination: str | Path,
    sha256: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> str:
    """Download ``url`` to ``destination`` through a temporary file, checking its length and sha256.

    The bytes go to a temporary file in the destination's folder while their hash is
    computed. The file is renamed to ``destination`` only when the server sent every byte it
    announced and the hash is ``sha256`` (when given); otherwise the temporary file is
    deleted and nothing is left.

    Args:
        url: ``https://``, ``file://`` or ``http://127.0.0.1`` (see :func:`check_url`).
        destination: the file to write (its folder is created).
        sha256: the expected hash (64 hex digits); None accepts any content.
        timeout: seconds to wait for the connection and for each block of data; a server
            that stalls longer raises instead of hanging.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The sha256 of the downloaded file.

    Raises:
        WeightsError: the hash or the length differs (naming the URL, the expected and the
            got hash), the connection dropped or timed out, or the host is unreachable (naming
            the URL and how to use a local copy).
        WeightsNotFoundError: the server answered 404, or a ``file://`` URL names no file.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.txt").write_bytes(b"abc")
        >>> digest = download_file((folder / "a.txt").as_uri(), folder / "copy.txt", progress=False)
        >>> (folder / "copy.txt").read_bytes(), digest == sha256_of(folder / "a.txt")
        (b'abc', True)
    """
    check_url(url)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            got = _stream(url, handle, timeout, progress, destination.name)
        if sha256 is not None and got != sha256.lower():
            raise WeightsError(
                f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {got}; "
                "the download was deleted (the file on the server is not the one its card describes)"
            )
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a cache or an entry may be shared
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
    return got


def _stream(url: str, handle: object, timeout: float, progress: bool, label: str) -> str:
    """Copy the body at ``url`` into ``handle`` (an open binary file); return its sha256."""
    digest = hashlib.sha256()
    received, expected = 0, None
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "brickzoo"})
        with urllib.request.urlopen(request, timeout=timeout) as response:  # schemes checked by check_url
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            with tqdm(total=expected, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    handle.write(chunk)  # type: ignore[attr-defined]
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        error = WeightsNotFoundError if exc.code == 404 else WeightsError
        raise error(f"cannot download {url}: the server answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _unreachable(url, exc, timeout, received) from exc
    if expected is not None and received != expected:
        raise DownloadError(
            f"cannot download {url}: the connection dropped after {received} of {expected} bytes; "
            "nothing was kept. " + local_copy_hint(url)
        )
    return digest.hexdigest()


def _unreachable(url: str, exc: BaseException, timeout: float, received: int) -> WeightsError:
    """The error for a download that failed on the way: which URL, why, and how to use a local copy."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return WeightsNotFoundError(f"cannot download {url}: no such file ({reason})")
    if isinstance(reason, (socket.timeout, TimeoutError)):
        why = f"no answer within the timeout of {timeout:g} s"
    elif received:
        why = f"the connection broke after {received} bytes ({type(exc).__name__}: {reason})"
    else:
        why = f"{type(exc).__name__}: {reason}"
    return DownloadError(f"cannot download {url}: {why}. " + local_copy_hint(url))


def join_url(base: str, relative: str) -> str:
    """``relative`` (a ``/``-separated path) under the folder URL ``base``, each part percent-quoted.

    >>> join_url("https://example.org/zoo/shapes/", "weights/segment/decode.safetensors")
    'https://example.org/zoo/shapes/weights/segment/decode.safetensors'
    """
    folder = base if base.endswith("/") else base + "/"
    return folder + "/".join(urllib.parse.quote(part) for part in relative.split("/"))


@contextlib.contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Assemble a folder in a temporary sibling and rename it to ``target`` when the block succeeds.

    If the block raises (a checksum error, a dropped connection, Ctrl-C), the temporary
    folder and everything in it is deleted and ``target`` is left as it was. If another
    process created ``target`` meanwhile, its folder is kept and ours deleted.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "entry"
        >>> with staged_folder(target) as tmp:
        ...     _ = (tmp / "card.json").write_text("{}")
        >>> sorted(p.name for p in target.iterdir())
        ['card.json']
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        for folder in (tmp, *(p for p in tmp.rglob("*") if p.is_dir())):
            os.chmod(folder, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # a failure other than "someone else finished first"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
