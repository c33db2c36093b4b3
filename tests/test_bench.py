"""The benchmarks run end to end on the tiny archive and print their JSON line; speedrun needs a GPU."""

import json
import math

import pytest
import torch

from cifar10.bench.__main__ import main
from cifar10.bench.speedrun import write_airbench_data
from cifar10.data import CIFAR10DataModule


@pytest.fixture
def data_dir(tiny_archive, tmp_path):
    dm = CIFAR10DataModule.from_keywords(data_dir=tmp_path / "data", url=tiny_archive.url, md5=tiny_archive.md5, val_size=0)
    dm.prepare_data()
    return str(tmp_path / "data")


def last_json_line(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("preset", ["crop-flip", "heavy"])
def test_data_benchmark_prints_both_pipelines_and_the_speedup(data_dir, capsys, preset):
    assert main(["data", "--preset", preset, "--data-dir", data_dir, "--batch-size", "32", "--batches", "2",
                 "--repeats", "1", "--workers", "0"]) == 0
    result = last_json_line(capsys)
    assert result["preset"] == preset and result["ours_images_per_s"] > 0 and result["torchvision_images_per_s"] > 0
    speedup = result["ours_images_per_s"] / result["torchvision_images_per_s"]
    assert result["speedup"] == pytest.approx(speedup, abs=0.051, rel=0.01)  # printed to one decimal


def test_loop_benchmark_trains_the_same_model_on_both_sides(data_dir, capsys):
    # mlp's tutorial recipe: no augmentation, no dropout, no schedule, so both sides do the very same steps
    assert main(["loop", "--model", "mlp", "--recipe", "tutorial", "--data-dir", data_dir, "--batch-size", "50",
                 "--batches", "3", "--repeats", "1", "--accelerator", "cpu"]) == 0
    result = last_json_line(capsys)
    assert result["batches"] == 3 and result["lightning_s"] > 0 and result["plain_s"] > 0
    assert result["overhead"] + 1 == pytest.approx(result["lightning_s"] / result["plain_s"], rel=0.01)
    assert len(result["overhead_rounds"]) == 1 and result["overhead_median"] == result["overhead_rounds"][0]
    assert result["overhead_median"] == pytest.approx(result["overhead"], abs=1e-3)  # one round: its times are the best
    assert result["lightning_train_loss"] == pytest.approx(result["plain_train_loss"], abs=1e-3)
    assert result["lightning_train_acc"] == pytest.approx(result["plain_train_acc"], abs=1e-3)


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_layout_benchmark_times_both_memory_layouts_per_model(capsys, precision):
    assert main(["layout", "--models", "mlp", "lenet", "--batch-size", "8", "--steps", "1", "--repeats", "2",
                 "--accelerator", "cpu", "--precision", precision]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["model"] for r in lines] == ["mlp", "lenet"] and all(r["batch_size"] == 8 for r in lines)
    assert all(r["precision"] == precision for r in lines)
    for r in lines:
        assert r["contiguous_s"] > 0 and r["channels_last_s"] > 0
        assert r["speedup"] == pytest.approx(r["contiguous_s"] / r["channels_last_s"], abs=0.051, rel=0.01)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_speedrun_benchmark_without_a_gpu_says_so(data_dir, capsys):
    assert main(["speedrun", "--data-dir", data_dir]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--accelerator cpu --steps" in err


@pytest.mark.slow
def test_speedrun_benchmark_on_the_cpu_times_the_first_steps_of_both(data_dir, capsys, monkeypatch):
    """Ours and airbench94's own training, side by side on the CPU, 2 steps each (batches of 100 here)."""
    pytest.importorskip("airbench", reason="airbench is in the dev extra: make install")
    import airbench
    from airbench.lib_airbench94 import hyp
    monkeypatch.setitem(hyp["opt"], "batch_size", 100)
    steps = []  # airbench trains ceil(batches an epoch x epochs) steps: 3 batches of 100 an epoch here
    train94 = airbench.train94
    deterministic = []  # whether each airbench run had deterministic algorithms on (our Trainer turns them on)
    monkeypatch.setattr(airbench, "train94", lambda loader, epochs, **kw: steps.append(math.ceil(len(loader) * epochs))
                        or deterministic.append(torch.are_deterministic_algorithms_enabled())
                        or train94(loader, epochs=epochs, **kw))
    assert main(["speedrun", "--accelerator", "cpu", "--steps", "2", "--seeds", "1", "--compare", "airbench",
                 "--data-dir", data_dir, "--fit-args", "--batch-size 100"]) == 0
    result = last_json_line(capsys)
    assert result["device"].startswith("cpu") and result["steps"] == 2 and steps == [2, 2]  # warm-up, seed 0
    assert deterministic == [False, False]  # airbench with its own (default) algorithms
    assert torch.are_deterministic_algorithms_enabled()  # and ours with deterministic ones, as before
    assert "acc" not in result["ours"]  # after 2 steps accuracy means nothing: ours is not tested
    assert len(result["airbench94"]["acc"]) == 1 and 0 <= result["airbench94"]["acc"][0] <= 1
    for side in ("ours", "airbench94"):
        assert all(s > 0 for s in result[side]["train_s"])
    assert result["time_ratio"] == pytest.approx(result["ours"]["mean_train_s"] / result["airbench94"]["mean_train_s"],
                                                 rel=0.01)


def test_airbench_gets_the_same_images_in_its_own_layout(tiny_archive, tmp_path):
    dm = CIFAR10DataModule.from_keywords(data_dir=tmp_path / "data", url=tiny_archive.url, md5=tiny_archive.md5, val_size=50)
    dm.prepare_data()
    dm.setup("fit")
    write_airbench_data(dm, tmp_path / "airbench")
    train = torch.load(tmp_path / "airbench" / "train.pt", weights_only=True)
    test = torch.load(tmp_path / "airbench" / "test.pt", weights_only=True)
    assert train["images"].shape == (tiny_archive.n_train, 32, 32, 3) and train["images"].dtype == torch.uint8
    assert torch.equal(test["images"], dm.test_images.permute(0, 2, 3, 1))
    assert torch.equal(test["labels"], dm.test_labels) and train["classes"] == list(dm.class_names)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loop_benchmark_on_the_gpu(data_dir, capsys):
    assert main(["loop", "--model", "lenet", "--data-dir", data_dir, "--batches", "3", "--repeats", "1",
                 "--accelerator", "gpu"]) == 0
    assert last_json_line(capsys)["device"].startswith("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_speedrun_benchmark_on_the_gpu(data_dir, capsys):
    assert main(["speedrun", "--data-dir", data_dir, "--seeds", "2", "--fit-args", "--max-epochs 2"]) == 0
    ours = last_json_line(capsys)["ours"]
    assert len(ours["acc"]) == 2 and 0 <= ours["mean_acc"] <= 1 and ours["mean_train_s"] > 0


def test_airbench_trains_on_the_cpu_in_32_bit_on_our_images(data_dir, capsys, monkeypatch):
    """airbench94's own training, its CUDA calls pointed at the CPU (batches of 100: 3 steps an epoch here)."""
    pytest.importorskip("airbench", reason="airbench is in the dev extra: make install")
    from airbench.lib_airbench94 import hyp
    monkeypatch.setitem(hyp["opt"], "batch_size", 100)
    assert main(["airbench-cpu", "--data-dir", data_dir, "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["epochs"] == 2 and result["wall_s"] > 0
    assert 0 <= result["acc"] <= 1 and 0 <= result["acc_tta"] <= 1
    rows = [line for line in out.splitlines() if line.startswith("|") and "epoch" not in line]
    assert [row.split("|")[2].strip() for row in rows] == ["0", "1", "eval"]  # airbench's own per-epoch table


@pytest.fixture
def peer_folder(data_dir, tmp_path):
    from cifar10.bench.speedrun import prepare_airbench_data
    prepare_airbench_data(data_dir, tmp_path / "peer" / "cifar10")
    return tmp_path / "peer"


@pytest.mark.slow
def test_airbench94_muon_itself_trains_on_the_cpu_in_float32(peer_folder, monkeypatch):
    """The peer script's own main, once, 8 epochs of 3 batches of 100 here; its Newton-Schulz step in float32."""
    from cifar10.bench import airbench_muon
    dtypes = []
    float32_step = airbench_muon.float32_newton_schulz

    def spy(peer):
        step = float32_step(peer)  # taken before the script's own step is patched
        return lambda G, steps=3, eps=1e-7: dtypes.append(G.dtype) or step(G, steps, eps)

    monkeypatch.setattr(airbench_muon, "float32_newton_schulz", spy)
    done = airbench_muon.airbench94_muon(peer_folder, 0, batch_size=100)
    assert [row["epoch"] for row in done["epochs"]] == list(range(8)) and done["steps"] == 24
    assert 0 <= done["acc"] <= 1 and 0 <= done["acc_tta"] <= 1 and done["train_s"] > 0
    assert len(dtypes) == 24 * 6 and set(dtypes) == {torch.float32}  # six conv filters a step, all float32


def test_airbench_cpu_without_the_peer_script_says_where_it_is_kept(data_dir, tmp_path, capsys):
    assert main(["airbench-cpu", "--peer", "airbench94_muon", "--data-dir", data_dir,
                 "--peer-script", str(tmp_path / "missing.py")]) == 2
    assert "../shared/peers/airbench94_muon" in capsys.readouterr().err


@pytest.mark.slow
def test_speedrun_muon_beside_airbench94_muon_on_the_cpu(data_dir, capsys, monkeypatch):
    """The first 8 steps of speedrun-muon beside 8 epochs of one batch of airbench94_muon (batches of 100 here)."""
    import functools

    from cifar10.bench import airbench_muon
    monkeypatch.setattr(airbench_muon, "airbench94_muon", functools.partial(airbench_muon.airbench94_muon,
                                                                            batch_size=100))
    assert main(["speedrun", "--accelerator", "cpu", "--steps", "8", "--seeds", "1", "--compare", "airbench94_muon",
                 "--data-dir", data_dir, "--fit-args", "--batch-size 100"]) == 0
    result = last_json_line(capsys)
    assert result["model"] == "speedrun-muon" and result["ours"]["steps"] == [8]
    assert result["airbench94_muon"]["steps"] == [8]  # 8 epochs of ceil(8 / 8) batch
    ours, theirs = result["ours"], result["airbench94_muon"]
    assert result["step_ratio"] == pytest.approx((ours["mean_train_s"] / 8) / (theirs["mean_train_s"] / 8), rel=0.01)
