"""`python -m cifar10.export`: the exported model, fed [0, 1] images, predicts as the checkpoint does."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from helpers_ckpt import read_test_split, tiny_run  # noqa: F401 (tiny_run is a fixture)

from cifar10.checkpoint import load_checkpoint
from cifar10.export import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def run_onnx(path, images: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def run_torchscript(path, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.jit.load(str(path))(images)


RUNNERS = {"onnx": run_onnx, "torchscript": run_torchscript}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_matches_the_checkpoint(tiny_run, tiny_archive, tmp_path, fmt):
    out = tmp_path / f"exported.{fmt}"
    assert main(["--ckpt", str(tiny_run.ckpt), "--format", fmt, "--out", str(out)]) == 0
    model, meta = load_checkpoint(tiny_run.ckpt)
    images = read_test_split(tiny_archive, tiny_run)[0][:37]  # a batch size the export never saw
    with torch.no_grad():
        expected = model(images)
    logits = RUNNERS[fmt](out, images.float() / 255)
    assert logits.shape == expected.shape
    assert torch.equal(logits.argmax(1), expected.argmax(1))
    assert torch.allclose(logits, expected, atol=1e-4, rtol=1e-4)


def test_class_names_travel_with_the_export(tiny_run, tmp_path):
    _, meta = load_checkpoint(tiny_run.ckpt)
    main(["--ckpt", str(tiny_run.ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["class_names"]) == meta.class_names and props["model"] == "lenet"
    main(["--ckpt", str(tiny_run.ckpt), "--format", "torchscript", "--out", str(tmp_path / "m.ts")])
    extra = {"class_names.json": ""}
    torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    assert json.loads(extra["class_names.json"]) == meta.class_names


def test_default_output_is_beside_the_checkpoint(tiny_run, tmp_path, capsys):
    ckpt = tmp_path / "best.ckpt"
    shutil.copy(tiny_run.ckpt, ckpt)
    assert main(["--ckpt", str(ckpt), "--format", "torchscript"]) == 0
    assert (tmp_path / "model.ts").is_file()
    assert str(tmp_path / "model.ts") in capsys.readouterr().out


def test_help_says_no_preprocessing_is_needed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[0, 1]" in text and "normalisation is built in" in text


def test_bad_format_or_checkpoint_exit_2(tmp_path, capsys):
    (tmp_path / "x.ckpt").write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    assert main(["--ckpt", str(tmp_path / "x.ckpt"), "--format", "tflite"]) == 2
    assert main(["--ckpt", str(tmp_path / "x.ckpt"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'tflite'" in err and "is not a checkpoint of this project" in err
