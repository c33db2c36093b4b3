"""Bad input to the fit CLI: one clear paragraph on stderr, exit code 2, no traceback."""

import os
import subprocess
import sys

import pytest
import torch

from cifar10.fit import main
from cifar10.models import model_names


def assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: "), err
    for needle in needles:
        assert needle in message, message


def test_unknown_model_lists_the_models_in_a_subprocess():
    done = subprocess.run([sys.executable, "-m", "cifar10.fit", "--model", "alexnet"], capture_output=True,
                          text=True, env=os.environ | {"CIFAR10_ALLOW_SUBSET": "1"}, timeout=120)
    assert_clean_error(done.returncode, done.stderr, "alexnet", *model_names())


@pytest.mark.parametrize("argv, needles", [
    (["--precision", "8"], ["--precision", "bf16-mixed"]),
    (["--accelerator", "tpu"], ["--accelerator", "gpu"]),
    (["--val-size", "many"], ["--val-size", "many"]),
    (["--recipe", "fancy"], ["--recipe", "tutorial"]),
])
def test_bad_flag_values(argv, needles, capsys):
    assert_clean_error(main(argv), capsys.readouterr().err, *needles)


def test_resume_last_without_an_earlier_run(tmp_path, capsys):
    code = main(["--model", "lenet", "--ckpt-path", "last", "--logdir", str(tmp_path)])
    assert_clean_error(code, capsys.readouterr().err, "no unfinished run", "lenet")


def test_missing_checkpoint_file(tmp_path, capsys):
    code = main(["--model", "lenet", "--ckpt-path", str(tmp_path / "nope.ckpt")])
    assert_clean_error(code, capsys.readouterr().err, "nope.ckpt", "does not exist")


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    run_dir = tmp_path / "lenet" / "version_0" / "checkpoints"
    run_dir.mkdir(parents=True)
    torch.save({"cifar10": {"model": "mlp", "format": 1}, "state_dict": {}, "hyper_parameters": {}},
               run_dir / "last.ckpt")
    code = main(["--model", "lenet", "--ckpt-path", "last", "--logdir", str(tmp_path)])
    assert_clean_error(code, capsys.readouterr().err, "'mlp'", "--model mlp")


def test_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    assert_clean_error(main(["--ckpt-path", str(bogus)]), capsys.readouterr().err, "not a checkpoint")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_gpu_requested_without_cuda(tmp_path, capsys):
    code = main(["--model", "lenet", "--accelerator", "gpu", "--data-dir", str(tmp_path)])
    assert_clean_error(code, capsys.readouterr().err, "CUDA", "--accelerator cpu")


@pytest.mark.parametrize("argv, needle", [
    (["--accelerator", "cpu", "--devices", "0"], "--devices 0"),  # rejected before Lightning sees it
    (["--accelerator", "cpu", "--strategy", "nonsense"], "nonsense"),  # ValueError
])
def test_settings_lightning_rejects(argv, needle, tmp_path, capsys):
    code = main(["--model", "lenet", "--data-dir", str(tmp_path / "data"), "--logdir", str(tmp_path), *argv])
    assert_clean_error(code, capsys.readouterr().err, needle)
    assert not list(tmp_path.glob("lenet/version_*")), "no empty run folder is left behind"


def test_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 3\n")
    assert_clean_error(main(["--config", str(config)]), capsys.readouterr().err, "epochs", "max_epochs")


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)) + "strategy: *i\n"


@pytest.mark.parametrize("content, needles", [
    ("lr: 0.1\ncomment: caf\xe9\n".encode("latin-1"), ["not UTF-8", "0xe9"]),
    (b"strategy: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", ["nests a mapping or a list too deep"]),
    (b"strategy: {name: ddp}\n", ["nests a mapping or a list too deep (line 1)"]),
    (ALIAS_BOMB.encode(), ["alias"]),  # refused at its first alias, before anything is expanded
    (b"x: &name cpu\naccelerator: *name\n", ["alias"]),
    (b"lr: 0.1\n" + b"#" * (1 << 20) + b"\n", ["larger than"]),
    (b"- lr\n- 0.1\n", ["must be a mapping"]),
])
def test_a_config_that_is_not_a_small_flat_yaml_mapping(content, needles, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes(content)
    assert_clean_error(main(["--config", str(config)]), capsys.readouterr().err, *needles)


def test_a_config_that_is_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    config = tmp_path / "run.yaml"
    os.mkfifo(config)
    done = subprocess.run([sys.executable, "-m", "cifar10.fit", "--config", str(config)], capture_output=True,
                          text=True, env=os.environ | {"CIFAR10_ALLOW_SUBSET": "1"}, timeout=120)  # it used to hang
    assert_clean_error(done.returncode, done.stderr, "not a regular file")
