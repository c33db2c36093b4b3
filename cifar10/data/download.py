"""Fetch the CIFAR-10 archive and extract it, md5-verified and atomic at every step.

The archive is downloaded to a temporary file, checked, then renamed; it is extracted into a
temporary folder that is renamed into place only once complete, so neither a partial download nor
a half-extracted folder is ever taken as valid. Both temporaries carry the pid of their process: they
are removed on any exit of it that Python sees (errors, Ctrl-C, SIGTERM), and the ones a killed process
left are removed by the next start (the pid no longer runs).
"""

import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from torchvision.datasets.utils import calculate_md5
from tqdm import tqdm

from cifar10.errors import UserError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
BATCH_FILES = ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
# the temporaries of a download and an extraction, with the pid of the process that made them
LEFTOVER = re.compile(rf"{re.escape(ARCHIVE_NAME)}\.(\d+)\.part|\.extract-(\d+)")


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def remove_leftovers(data_dir: Path) -> None:
    """Remove partial downloads and extractions of processes that no longer run (killed mid-way)."""
    for entry in data_dir.iterdir() if data_dir.is_dir() else ():
        match = LEFTOVER.fullmatch(entry.name)
        if match and not running(int(match.group(1) or match.group(2))):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def has_batches(folder: Path) -> bool:
    """True when every batch file of the python release is present (contents are checked on reading)."""
    return all((folder / name).is_file() for name in BATCH_FILES)


def ensure_extracted(data_dir: str | Path, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5) -> Path:
    """Return `data_dir/cifar-10-batches-py`, downloading and extracting the archive only when needed."""
    data_dir = Path(data_dir).expanduser()
    folder = data_dir / FOLDER_NAME
    if has_batches(folder):
        return folder
    make_writable_dir(data_dir)
    remove_leftovers(data_dir)
    archive = data_dir / ARCHIVE_NAME
    if archive.is_file():
        check_existing_archive(archive, md5)
    else:
        download_archive(url, md5, archive)
    extract_archive(archive, data_dir)
    return folder


def make_writable_dir(data_dir: Path) -> None:
    probe = data_dir / f".write-test-{os.getpid()}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserError(f"The data folder {data_dir} cannot be written ({err.strerror or err}). CIFAR-10 is "
                        "downloaded and extracted there: pass --data-dir with a folder you can write to.") from None


def check_existing_archive(archive: Path, md5: str) -> None:
    """An archive placed by hand is verified too, but left in place for the user to inspect."""
    actual = calculate_md5(archive)
    if actual != md5:
        raise UserError(f"The archive {archive} has md5 {actual}, expected {md5}. Delete it so it is downloaded "
                        "again, or pass the md5 of your copy with --data-md5.")


def download_archive(url: str, md5: str, archive: Path) -> None:
    """Download `url` to a temporary file beside `archive`, verify its md5, then rename it to `archive`."""
    partial = archive.with_name(f"{archive.name}.{os.getpid()}.part")
    try:
        try:
            fetch(url, partial)
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise UserError(
                f"Could not download CIFAR-10 from {url} ({getattr(err, 'reason', None) or err}). Check the network "
                f"and the URL (--data-url), or place the archive by hand: copy {ARCHIVE_NAME} (or the extracted "
                f"{FOLDER_NAME} folder) into {archive.parent} and pass --data-dir {archive.parent}.") from None
        actual = calculate_md5(partial)
        if actual != md5:
            raise UserError(f"The archive downloaded from {url} has md5 {actual}, expected {md5}; it was deleted and "
                            "nothing was extracted. Retry, or if this is a different copy on purpose, pass its md5 "
                            "with --data-md5.")
        partial.replace(archive)
    finally:  # on any exit, Ctrl-C and a signal's SystemExit included (after the rename there is nothing to remove)
        partial.unlink(missing_ok=True)


def fetch(url: str, dest: Path) -> None:
    """Stream `url` into `dest` with a progress bar (torchvision's download_url cannot read file:// URLs)."""
    request = urllib.request.Request(url, headers={"User-Agent": "cifar10"})
    with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as out, \
            tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                 desc=f"downloading {url}") as progress:
        while chunk := response.read(1 << 20):
            out.write(chunk)
            progress.update(len(chunk))


def safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The regular files under cifar-10-batches-py/; anything that could escape the folder is refused."""
    members = []
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts or (parts and parts[0] != FOLDER_NAME):
            raise UserError(f"The archive {tar.name} holds {member.name!r}, outside {FOLDER_NAME}/; it was not "
                            "extracted. Use the official CIFAR-10 python archive.")
        if member.isfile():
            members.append(member)
    return members


def extract_archive(archive: Path, data_dir: Path) -> None:
    """Extract into a temporary folder, then rename the complete cifar-10-batches-py into place."""
    staging = data_dir / f".extract-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, members=safe_members(tar), filter="data")
        extracted = staging / FOLDER_NAME
        if not has_batches(extracted):
            missing = [name for name in BATCH_FILES if not (extracted / name).is_file()]
            raise UserError(f"The archive {archive} is incomplete: it lacks {', '.join(missing)} under "
                            f"{FOLDER_NAME}/, so it is truncated, corrupt, or another archive (its md5 matched the "
                            "one given, so the copy itself was made that way). Nothing was extracted. Delete it and "
                            "use the official CIFAR-10 python archive, with its md5.")
        target = data_dir / FOLDER_NAME
        if target.exists():  # incomplete leftover: replaced by the complete folder
            shutil.rmtree(target)
        extracted.rename(target)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise UserError(f"The archive {archive} could not be extracted ({err}). It is truncated or corrupt: delete "
                        "it and download it again.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
