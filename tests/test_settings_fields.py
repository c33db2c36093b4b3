"""Each setting is one field of its section: the flags, defaults and value checks come from the fields, a recipe
may set only their names, and checkpoints are read back into the model section."""

import subprocess
import sys
from dataclasses import dataclass, fields

import pytest

import cifar10.models as models
from cifar10.models import registry
import cifar10.fit_settings as fit_settings
import cifar10.settings as settings
from cifar10.checkpoint import build_model
from cifar10.errors import UserError
from cifar10.evaluate import build_parser as evaluate_parser
from cifar10.models import create_model, register
from cifar10.models.base import ClassifierModule
from cifar10.recipes import Recipe, ours
from cifar10.fit_settings import build_parser, given_settings
from cifar10.settings import RECIPE, DataSettings, ModelSettings, check_values, defaults, flag_of, setting


def flags_by_dest(parser) -> dict:
    return {action.dest: action for action in parser.flags}


@pytest.mark.parametrize("section", [ModelSettings, DataSettings, settings.TrainerSettings, settings.RunSettings])
def test_every_field_has_its_flag_with_its_help(section):
    flags = flags_by_dest(build_parser())
    for f in fields(section):
        if not f.metadata["cli"]:  # betas: only recipes set them
            assert flag_of(f) not in flags
            continue
        action = flags[flag_of(f)]
        assert action.option_strings[0] == "--" + flag_of(f).replace("_", "-")
        assert action.help == settings.resolved_now(f.metadata["help"])
        assert flag_of(f) in defaults() or f.name == "config"


def test_config_accepts_every_model_and_data_setting(tmp_path):
    values = {flag_of(f): settings.default_of(f) for section in (ModelSettings, DataSettings) for f in fields(section)
              if f.metadata["cli"] and settings.default_of(f) is not None}
    config = tmp_path / "all.yaml"
    config.write_text("".join(f"{key}: {str(value).lower() if isinstance(value, bool) else value}\n"
                              for key, value in values.items()))
    given = given_settings(["--config", str(config)])
    assert {key: given[key] for key in values} == values


def test_a_new_field_is_a_flag_a_default_and_a_check(monkeypatch):
    @dataclass(frozen=True)
    class WithDropout(ModelSettings):
        dropout: float = setting(0.0, group=RECIPE, type=float, metavar="F", help="dropout before the head",
                                 check=lambda v: 0 <= v < 1, why="must be in [0, 1)")

    monkeypatch.setitem(settings.SECTIONS, "model", WithDropout)
    parser = build_parser()
    action = flags_by_dest(parser)["dropout"]
    assert action.help == "dropout before the head" and action.option_strings == ["--dropout"]
    assert "--dropout F" in parser.format_help()
    assert defaults()["dropout"] == 0.0
    assert vars(parser.parse_args(["--dropout", "0.25"])) == {"dropout": 0.25}
    with pytest.raises(UserError, match=r"--dropout 1\.5 must be in \[0, 1\)"):
        check_values(defaults() | {"dropout": 1.5})
    assert settings.plain_values(WithDropout(dropout=0.25))["dropout"] == 0.25  # what a model saves


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_a_recipe_with_an_unknown_key_is_refused_when_the_model_registers(scratch_registry):
    with pytest.raises(UserError, match=r"tutorial recipe of model 'typo' .* sets 'learning_rate', which a recipe "
                       r"cannot set: it sets only some of .*\blr\b.*batch_size"):
        register("typo", published="x", tutorial=Recipe(learning_rate=0.1), default=ours())(
            type("Typo", (ClassifierModule,), {}))
    assert "typo" not in models.model_names()


def test_a_recipe_with_a_bad_value_is_refused_when_the_model_registers(scratch_registry):
    with pytest.raises(UserError, match=r"default recipe of model 'bad' .*--lr -1 must be a finite number above 0"):
        register("bad", published="x", tutorial=Recipe(), default=ours(lr=-1))(type("Bad", (ClassifierModule,), {}))
    with pytest.raises(UserError, match="--augment sparkles must be one of"):
        register("bad", published="x", tutorial=Recipe(augment="sparkles"), default=ours())(
            type("Bad", (ClassifierModule,), {}))


def test_a_recipe_holds_only_what_it_sets():
    assert Recipe(lr=0.05, betas=(0.9, 0.99)).as_settings() == {"lr": 0.05, "betas": [0.9, 0.99]}
    assert ours().as_settings() == {"nesterov": True, "schedule": "onecycle"}
    assert fit_settings.recipe_settings("mlp", "default")["optimizer"] == "sgd"  # not set: the field's default


def test_evaluate_has_fits_data_flags():
    fit_flags, evaluate_flags = flags_by_dest(build_parser()), {a.dest: a for a in evaluate_parser()._actions}
    for dest in ("data_url", "data_md5"):
        assert (evaluate_flags[dest].option_strings, evaluate_flags[dest].help) == \
            (fit_flags[dest].option_strings, fit_flags[dest].help)
    assert evaluate_flags["data_dir"].option_strings == ["--data-dir"]
    assert "checkpoint was trained on" in evaluate_flags["data_dir"].help  # evaluate's own default, said


def test_importing_settings_loads_no_models_checkpoints_or_torch():
    code = "import sys, cifar10.settings; print(sorted(m for m in sys.modules if m.startswith(('cifar10.', 'torch'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == str(["cifar10.console", "cifar10.errors", "cifar10.settings"])


def old_checkpoint(**hparams_changes) -> dict:
    model = create_model("mlp", tta="flip")
    hparams = dict(model.hparams)
    for key, value in hparams_changes.items():
        if value is None:
            del hparams[key]
        else:
            hparams[key] = value
    return {"cifar10": {"model": "mlp", "format": 2}, "hyper_parameters": hparams, "state_dict": model.state_dict()}


def test_a_checkpoint_without_a_newer_setting_gets_its_default():
    model, _ = build_model(old_checkpoint(bias_lr_scale=None, channels_last=None))
    assert model.settings == ModelSettings(tta="flip", channels_last=False)
    assert model.hparams.bias_lr_scale == 1.0


def test_a_checkpoint_with_a_setting_this_version_lacks_is_refused_naming_its_format():
    with pytest.raises(UserError, match=r"format 2.* does not have: dropout\. Use the cifar10 version"):
        build_model(old_checkpoint(dropout=0.5), "old.ckpt")
