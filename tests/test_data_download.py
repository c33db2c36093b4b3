"""Download, md5 check and extraction through file:// URLs: atomic, verified, traversal-safe."""

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from cifar10.data.batches import read_split
from cifar10.data.download import ARCHIVE_NAME, BATCH_FILES, FOLDER_NAME, ensure_extracted
from cifar10.errors import UserError


def leftovers(data_dir):
    return sorted(p.name for p in data_dir.iterdir() if p.name.startswith(".") or p.name.endswith(".part"))


def test_download_verify_extract_read_round_trip(tiny_archive, tmp_path):
    data_dir = tmp_path / "data"
    folder = ensure_extracted(data_dir, tiny_archive.url, tiny_archive.md5)
    assert folder == data_dir / FOLDER_NAME
    assert (data_dir / ARCHIVE_NAME).read_bytes() == tiny_archive.path.read_bytes()
    assert leftovers(data_dir) == []
    images, labels = read_split(folder, "train")
    assert images.shape == (tiny_archive.n_train, 3, 32, 32) and len(read_split(folder, "test")[1]) == 100


def test_valid_batches_mean_nothing_is_downloaded(tiny_archive, tmp_path):
    ensure_extracted(tmp_path, tiny_archive.url, tiny_archive.md5)
    (tmp_path / ARCHIVE_NAME).unlink()
    ensure_extracted(tmp_path, "file:///nowhere/at/all.tar.gz", "0" * 32)  # would fail if it downloaded
    assert not (tmp_path / ARCHIVE_NAME).exists()


def test_wrong_md5_is_rejected_deleted_and_never_extracted(tiny_archive, tmp_path):
    with pytest.raises(UserError, match="md5") as err:
        ensure_extracted(tmp_path, tiny_archive.url, "0" * 32)
    assert tiny_archive.url in str(err.value) and "--data-md5" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no archive, no temp file, no folder


def test_unreachable_url_names_the_url_and_the_manual_way(tmp_path):
    url = (tmp_path / "missing.tar.gz").as_uri()
    with pytest.raises(UserError) as err:
        ensure_extracted(tmp_path / "data", url, "0" * 32)
    message = str(err.value)
    assert url in message and "--data-dir" in message and FOLDER_NAME in message
    assert leftovers(tmp_path / "data") == []


def test_leftover_temp_file_and_half_extracted_folder_are_not_taken_as_valid(tiny_archive, tmp_path):
    (tmp_path / f"{ARCHIVE_NAME}.999.part").write_bytes(tiny_archive.path.read_bytes()[:100])
    half = tmp_path / FOLDER_NAME
    half.mkdir()
    (half / "data_batch_1").write_bytes(b"partial")
    folder = ensure_extracted(tmp_path, tiny_archive.url, tiny_archive.md5)
    assert sorted(p.name for p in folder.iterdir()) == sorted(BATCH_FILES)
    assert len(read_split(folder, "train")[1]) == tiny_archive.n_train


def test_truncated_archive_in_place_is_reported_not_extracted(tiny_archive, tmp_path):
    (tmp_path / ARCHIVE_NAME).write_bytes(tiny_archive.path.read_bytes()[:1000])
    with pytest.raises(UserError, match="md5"):
        ensure_extracted(tmp_path, tiny_archive.url, tiny_archive.md5)
    assert not (tmp_path / FOLDER_NAME).exists()


def test_truncated_download_with_matching_md5_fails_extraction_cleanly(tiny_archive, tmp_path):
    truncated = tmp_path / "src" / ARCHIVE_NAME
    truncated.parent.mkdir()
    truncated.write_bytes(tiny_archive.path.read_bytes()[:-2000])
    from torchvision.datasets.utils import calculate_md5
    with pytest.raises(UserError, match="truncated or corrupt"):
        ensure_extracted(tmp_path / "data", truncated.as_uri(), calculate_md5(truncated))
    assert not (tmp_path / "data" / FOLDER_NAME).exists() and leftovers(tmp_path / "data") == []


def test_archive_cut_at_a_member_boundary_with_matching_md5_is_called_incomplete(tiny_archive, tmp_path):
    """A valid gzip of a tar cut after its first members: it extracts without error, yet is not CIFAR-10."""
    import gzip
    raw = gzip.decompress(tiny_archive.path.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        second = tar.getmembers()[1].offset  # where the second member's header starts
    cut = tmp_path / "src" / ARCHIVE_NAME
    cut.parent.mkdir()
    cut.write_bytes(gzip.compress(raw[:second] + bytes(1024)))  # end-of-archive blocks right after member 1
    from torchvision.datasets.utils import calculate_md5
    with pytest.raises(UserError, match="incomplete.*truncated, corrupt, or another archive"):
        ensure_extracted(tmp_path / "data", cut.as_uri(), calculate_md5(cut))
    assert not (tmp_path / "data" / FOLDER_NAME).exists()


def test_members_outside_the_folder_are_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(f"{FOLDER_NAME}/../../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    from torchvision.datasets.utils import calculate_md5
    with pytest.raises(UserError, match="outside"):
        ensure_extracted(tmp_path / "data", archive.as_uri(), calculate_md5(archive))
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data" / FOLDER_NAME).exists()


def test_data_dir_that_cannot_be_written(tiny_archive, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot be written.*--data-dir"):
        ensure_extracted(blocker / "data", tiny_archive.url, tiny_archive.md5)


def test_archive_placed_by_hand_is_used_without_downloading(tiny_archive, tmp_path):
    shutil.copy(tiny_archive.path, tmp_path / ARCHIVE_NAME)
    folder = ensure_extracted(tmp_path, "file:///nowhere/at/all.tar.gz", tiny_archive.md5)
    assert len(read_split(folder, "test")[1]) == tiny_archive.n_test


def _ended() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_leftovers_of_a_killed_download_and_extraction_are_removed_by_the_next_start(tiny_archive, tmp_path):
    data_dir, dead = tmp_path / "data", _ended()
    data_dir.mkdir()
    (data_dir / f"{ARCHIVE_NAME}.{dead}.part").write_bytes(b"x" * 1000)  # what SIGKILL mid-download leaves
    (data_dir / f".extract-{dead}" / FOLDER_NAME).mkdir(parents=True)
    (data_dir / f".extract-{dead}" / FOLDER_NAME / "data_batch_1").write_bytes(b"x" * 1000)
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (data_dir / f"{ARCHIVE_NAME}.{other.pid}.part").write_bytes(b"")  # a download still going on: left alone
        ensure_extracted(data_dir, tiny_archive.url, tiny_archive.md5)
    finally:
        other.kill()
        other.wait()
    assert leftovers(data_dir) == [f"{ARCHIVE_NAME}.{other.pid}.part"]


def test_sigterm_during_a_download_of_python_m_cifar10_ends_quietly_and_leaves_nothing(tiny_archive, tmp_path):
    """`python -m cifar10` stopped while the archive streams in (a FIFO as the source holds it there)."""
    source, data_dir, logs = tmp_path / "archive.tar.gz", tmp_path / "data", tmp_path / "logs"
    os.mkfifo(source)
    fit = subprocess.Popen([sys.executable, "-m", "cifar10", "--model", "lenet", "--accelerator", "cpu",
                            "--data-url", source.as_uri(), "--data-md5", tiny_archive.md5, "--data-dir", str(data_dir),
                            "--logdir", str(logs)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=os.environ | {"CIFAR10_ALLOW_SUBSET": "1"})
    writer = os.open(source, os.O_RDWR)  # both ends here: never blocks, and the fit's read waits for more
    try:
        os.write(writer, tiny_archive.path.read_bytes()[:50_000])  # less than a pipe holds
        while not list(data_dir.glob("*.part")):  # the download has begun
            assert fit.poll() is None, fit.stderr.read()
            time.sleep(0.1)
        fit.send_signal(signal.SIGTERM)
        _, err = fit.communicate(timeout=120)
    finally:
        os.close(writer)
    assert fit.returncode == 143 and "SIGTERM: stopped outside training" in err and "Traceback" not in err, err
    assert leftovers(data_dir) == [] and not logs.exists()
