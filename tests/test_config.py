"""varshift.config: every shipped composition is valid; bad, unknown and contradicting settings are refused
before training, naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from varshift.config import register_schema, schema_keys, to_plain, validate
from varshift.paths import CONF_PACKAGE, conf_options
from varshift.training.optim import lr_factor, milestone_epochs
from varshift.vocabulary import GROUP_SELECTORS, is_neutral


def options(group: str) -> list[str]:
    return conf_options(group)


@pytest.mark.parametrize("scale", options("scale"))
@pytest.mark.parametrize("recipe", options("recipe"))
def test_every_recipe_and_scale_composes_to_a_valid_config(recipe, scale):
    """(The presets' sweeps at every scale: tests/test_experiments.py.)"""
    register_schema()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = validate(to_plain(compose("config", overrides=[f"model={recipe}", f"scale={scale}"])))
    assert (cfg["model"]["name"], cfg["scale"]["name"]) == (recipe, scale)


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "uniform"])
def test_a_dropout_option_sets_only_the_kind(make_config, kind):
    assert make_config(f"dropout={kind}")["dropout"] == {"kind": kind, "rate": 0.5, "channelwise": False,
                                                         "position": "before_bn"}
    chosen = make_config(f"dropout={kind}", "dropout.rate=0.2", "dropout.position=head")["dropout"]
    assert (chosen["kind"], chosen["rate"], chosen["position"]) == (kind, 0.2, "head")


def test_no_dropout_has_no_rate_and_no_position(make_config):
    dropout = make_config("dropout=none")["dropout"]
    assert (dropout["kind"], dropout["rate"], dropout["position"]) == ("none", 0.0, "none")


@pytest.mark.parametrize("overrides,mode", [([], "disabled"), (["logger=wandb"], "online"),
                                            (["logger=wandb", "logger.wandb.mode=offline"], "offline")])
def test_wandb_is_off_unless_chosen_and_online_unless_told_offline(make_config, overrides, mode):
    assert make_config(*overrides)["logger"]["wandb"]["mode"] == mode


def test_the_demo_scale_decays_the_learning_rate_once_before_its_last_epoch(make_config):
    cfg = make_config("scale=demo")
    epochs = cfg["trainer"]["epochs"]
    assert milestone_epochs(cfg["optim"], epochs) == [epochs - 1]
    factor = lr_factor(cfg["optim"], epochs)
    assert [factor(epoch) for epoch in range(epochs)] == pytest.approx([1] * (epochs - 1) + [cfg["optim"]["gamma"]])


@pytest.mark.parametrize("overrides,computed", [
    (["optim.schedule=multistep", "trainer.epochs=3", "optim.milestones=[0.5,0.75]"],
     r"trainer.epochs=3 they fall on epochs \[2, 2\]"),
    (["optim.schedule=multistep", "trainer.epochs=1", "optim.milestones=[0.5]"],
     r"trainer.epochs=1 they fall on epochs \[0\]"),
    (["optim.schedule=multistep", "trainer.epochs=4", "optim.milestones=[0.9]"],
     r"trainer.epochs=4 they fall on epochs \[4\]"),
])
def test_milestones_that_collapse_or_leave_the_run_are_refused(make_config, overrides, computed):
    with pytest.raises(ValueError, match=r"config optim.milestones=.*" + computed + r".*strictly increasing"):
        make_config(*overrides)


def test_a_one_epoch_run_takes_no_milestones_or_another_schedule(make_config):
    for overrides in (["optim.milestones=[]"], ["optim.schedule=constant"], ["optim.schedule=cosine"]):
        make_config("trainer.epochs=1", "optim.schedule=multistep", "optim.milestones=[0.5]", *overrides)


@pytest.mark.parametrize("override,message", [
    ("+trainer.epoch=2", r"config trainer.epoch=2 is not allowed: trainer has no key 'epoch'; its keys: epochs, "
                         r"batch_size, test_batch_size"),
    ("+optim.lrr=0.01", r"config optim.lrr=0.01 is not allowed: optim has no key 'lrr'; its keys: lr, momentum"),
    ("+epochs=2", r"config epochs=2 is not allowed: the config has no key 'epochs'; its keys: experiment_name, seed"),
    ("+trainer.early_stopping.patiense=3", r"trainer.early_stopping has no key 'patiense'; its keys: patience"),
    ("+model.kwargs.widen_factor=2", r"model.kwargs.widen_factor=2 .*small_cnn has no parameter 'widen_factor'; "
                                     r"its parameters: channels, hidden, hidden_bn"),
])
def test_keys_the_schema_does_not_know_are_refused(make_config, override, message):
    with pytest.raises(ValueError, match=message):
        make_config(override)


@pytest.mark.parametrize("overrides,message", [
    (["dataset.num_classes=100"], r"dataset.num_classes=100 is not allowed: 10, fashion_mnist's own"),
    (["dataset.channels=3", "dataset.mean=[0.5,0.5,0.5]", "dataset.std=[0.5,0.5,0.5]"],
     r"dataset.channels=3 is not allowed: 1, fashion_mnist's own"),
    (["dataset.size=32"], r"dataset.size=32 is not allowed: 28, fashion_mnist's own"),
    (["dataset.mean=[0.5,0.5]"], r"mean \(0.5, 0.5\).*one value per channel \(1\)"),
    (["dropout=bernoulli", "dropout.position=none"],
     r"dropout.position='none' is not allowed: one of before_bn, before_conv, head with dropout.kind='bernoulli'; "
     r"use dropout=none"),
    (["dropout=none", "dropout.position=head"],
     r"dropout.position='head' is not allowed: none with dropout.kind='none'; pick a kind"),
    (["model=mlp", "model.kwargs.depth=1", "dropout.position=before_conv"],
     r"dropout.position='before_conv' is not allowed: model mlp .* no dropout slot at before_conv; "
     r"its slots: before_bn, head"),
    (["model=mlp", "model.kwargs.batchnorm=false"],
     r"model.kwargs.batchnorm=False is not allowed: model mlp has no BN layer"),
    (["model=mlp", "model.kwargs.image_size=32"],
     r"model.kwargs.image_size=32 is not allowed: 28, the side of fashion_mnist's images"),
    (["model.kwargs.channels=[]"], r"model.kwargs=.* is not allowed for model small_cnn: .*non-empty list"),
    (["trainer.batch_size=1"], r"trainer.batch_size=1 is not allowed: a whole number >= 2 \(BN cannot train"),
])
def test_contradicting_settings_and_ones_that_would_fail_after_training_are_refused(make_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(*overrides)


@pytest.mark.parametrize("key", ["optim.lr", "optim.momentum", "optim.weight_decay", "optim.l1", "optim.gamma",
                                 "dropout.rate", "dataset.val_split", "dataset.subset"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_infinite_and_nan_numbers_are_refused(make_config, key, value):
    with pytest.raises(ValueError, match=rf"config {key}={value} is not allowed: finite numbers only"):
        make_config(f"{key}={value}")


@pytest.mark.parametrize("override,message", [
    ("optim.milestones=[0.5,inf]", r"optim.milestones=\[0.5, inf\] is not allowed: finite"),
    ("model=densenet_bc100 model.kwargs.compression=nan", r"model.kwargs.compression=nan is not allowed: finite"),
])
def test_non_finite_numbers_in_lists_and_model_parameters_are_refused(make_config, override, message):
    with pytest.raises(ValueError, match=message):
        make_config(*override.split())


def test_a_test_batch_of_one_image_is_allowed(make_config):
    assert make_config("trainer.test_batch_size=1")["trainer"]["test_batch_size"] == 1


def test_sweep_folder_names_leave_out_exactly_the_group_selectors_and_the_neutral_keys():
    register_schema()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        hydra = compose("config", overrides=["trainer.progress=false", "seed=3"], return_hydra_config=True).hydra
    exclude_keys = list(hydra.job.config.override_dirname.exclude_keys)
    expected = [*GROUP_SELECTORS, *(key for key in schema_keys() if is_neutral(key))]
    assert "logger.wandb.project" in expected and "trainer.device" not in expected
    assert sorted(exclude_keys) == sorted(expected) and len(set(exclude_keys)) == len(exclude_keys)
