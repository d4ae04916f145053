"""Configs: every shipped one loads; typos and wrong types fail with the key named."""

import json

import pytest
from conftest import REPO

from emorec.config import RunConfig, load_config
from emorec.errors import ConfigError
from emorec.launch.sweep_config import expand, load_sweep
from emorec.train.engine import fill_ds_config, read_ds_config

RUN_CONFIGS = sorted((REPO / "configs" / "runs").glob("*.yaml"))
DS_CONFIGS = sorted((REPO / "configs" / "deepspeed").glob("*.json"))
SWEEP_CONFIGS = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


def test_one_shipped_run_config_per_dataset_and_method():
    names = {p.stem for p in RUN_CONFIGS}
    for dataset in ("iemocap", "meld", "emorynlp", "dailydialog", "carer", "goemotions"):
        for method in ("lora", "ptuning"):
            assert f"{dataset}_{method}" in names


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_run_config_loads(path):
    cfg = load_config(str(path))
    assert isinstance(cfg, RunConfig)
    assert cfg.name == path.stem
    assert cfg.method.name in path.stem
    fill_ds_config(read_ds_config(cfg.train.deepspeed), cfg, world=8, bf16=True)


@pytest.mark.parametrize("path", SWEEP_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_sweep_config_expands(path):
    jobs = expand(load_sweep(str(path)))
    assert jobs and len({j.name for j in jobs}) == len(jobs)


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_autos_are_all_filled(path):
    cfg = load_config(str(RUN_CONFIGS[0]))
    filled = fill_ds_config(read_ds_config(str(path)), cfg, world=4, bf16=True)
    assert "auto" not in json.dumps(filled)
    assert filled["train_batch_size"] == cfg.train.micro_batch_size * cfg.train.grad_accum * 4
    assert filled["bf16"]["enabled"] is True
    assert filled["optimizer"]["params"]["lr"] == cfg.lr


def test_method_sets_the_recipe_learning_rate():
    base = ["data.dataset=meld", "data.path=x"]
    assert load_config(None, base + ["method.name=ptuning"]).lr == 2e-2
    assert load_config(None, base + ["method.name=lora"]).lr == 5e-4
    assert load_config(None, base + ["method.name=lora", "train.lr=1e-4"]).lr == 1e-4


def test_overrides_reach_nested_keys_with_yaml_types():
    cfg = load_config(str(RUN_CONFIGS[0]), ["method.lora.target_modules=[q_proj,v_proj]", "train.max_steps=7"])
    assert cfg.method.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.train.max_steps == 7


def test_sweep_grid_multiplies_jobs_and_names_them():
    sweep = load_sweep(str(REPO / "configs" / "quickstart.yaml"),
                       ["datasets=[meld]", "methods=[lora]", "grid={train.lr: [0.1, 0.2], seed: [1, 2]}"])
    jobs = expand(sweep)
    assert [j.name for j in jobs] == ["meld_lora_lr0.1_seed1", "meld_lora_lr0.1_seed2",
                                      "meld_lora_lr0.2_seed1", "meld_lora_lr0.2_seed2"]
    assert {j.lr for j in jobs} == {0.1, 0.2}
    assert all(j.output.endswith(j.name) for j in jobs)


def test_sweep_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown sweep key 'datasetz'"):
        load_sweep(str(REPO / "configs" / "quickstart.yaml"), ["datasetz=[meld]"])


def test_sweep_set_with_nested_keys_changes_only_those_keys():
    sweep = load_sweep(str(REPO / "configs" / "quickstart.yaml"),
                       ["datasets=[meld]", "methods=[lora]", "set.train.max_steps=4"])
    (job,) = expand(sweep)
    assert job.train.max_steps == 4
    assert job.train.micro_batch_size == 8 and job.train.grad_accum == 1


def test_per_dataset_keys_reach_only_that_datasets_jobs_and_come_after_per_method():
    sweep = load_sweep(str(REPO / "configs" / "quickstart.yaml"),
                       ["datasets=[carer, goemotions]", "per_dataset={goemotions: {train.micro_batch_size: 24}}"])
    jobs = {j.name: j for j in expand(sweep)}
    assert jobs["goemotions_lora"].train.micro_batch_size == 24
    assert jobs["goemotions_ptuning"].train.micro_batch_size == 24  # per_method sets 16 for ptuning
    assert jobs["carer_lora"].train.micro_batch_size == 8 and jobs["carer_ptuning"].train.micro_batch_size == 16
    assert jobs["goemotions_ptuning"].lr == jobs["carer_ptuning"].lr == 0.2


def test_per_dataset_method_entries_reach_only_that_methods_job():
    sweep = load_sweep(str(REPO / "configs" / "quickstart.yaml"),
                       ["datasets=[goemotions]", "per_dataset={goemotions: {seed: 7, lora: {train.lr: 0.03}}}"])
    jobs = {j.name: j for j in expand(sweep)}
    assert jobs["goemotions_lora"].lr == 0.03 and jobs["goemotions_ptuning"].lr == 0.2
    assert jobs["goemotions_lora"].seed == jobs["goemotions_ptuning"].seed == 7
    with pytest.raises(ConfigError, match="per_dataset entry 'ptuning' must map run keys"):
        expand(load_sweep(str(REPO / "configs" / "quickstart.yaml"), ["per_dataset={carer: {ptuning: 3}}"]))


def test_the_quickstart_gives_goemotions_lora_its_own_batch():
    jobs = {j.name: j for j in expand(load_sweep(str(REPO / "configs" / "quickstart.yaml"), ["datasets=[goemotions]"]))}
    assert jobs["goemotions_lora"].train.micro_batch_size == 32 and jobs["goemotions_lora"].method.lora.dropout == 0
    assert jobs["goemotions_ptuning"].train.micro_batch_size == 16


def test_per_dataset_typo_is_named_and_a_dataset_left_out_is_not_an_error():
    with pytest.raises(ConfigError, match="per_dataset names 'goemotion'.*expected one of: carer, goemotions"):
        expand(load_sweep(str(REPO / "configs" / "quickstart.yaml"),
                          ["datasets=[carer, goemotions]", "per_dataset={goemotion: {train.lr: 0.1}}"]))
    # The quickstart tunes goemotions; narrowing it to one other dataset keeps working.
    (lora,) = expand(load_sweep(str(REPO / "configs" / "quickstart.yaml"), ["datasets=[meld]", "methods=[lora]"]))
    assert lora.train.micro_batch_size == 8


def test_unknown_sweep_key_lists_sweep_keys():
    with pytest.raises(ConfigError) as e:
        load_sweep(str(REPO / "configs" / "quickstart.yaml"), ["max_concurrency=3"])
    assert "max_concurrent" in str(e.value) and "datasets" in str(e.value)


def test_compile_needs_packing():
    base = ["data.dataset=meld", "data.path=x", "train.compile=true"]
    with pytest.raises(ConfigError, match="train.compile needs train.packing: true"):
        load_config(None, base)
    assert load_config(None, base + ["train.packing=true"]).train.compile
