"""``resources: auto``: parsed, settled from what Ray sees (GPUs shared evenly, else the CPU
fallback a CPU space file has), said in one line; bad values refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kdtune.errors import KdtuneError
from kdtune.space import load_space, parse_space
from kdtune.space.parse import Resources
from kdtune.tune.driver import check_resources, trial_resources

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


def _space(resources: object, device: str | None = None, concurrent: int = 4) -> str:
    raw: dict[str, object] = {
        "level": "second",
        "budget": {"num_samples": 4, "max_epochs": 3, "max_concurrent": concurrent},
        "resources": resources,
        "search": {"weighting": {"fixed": {"alpha": {"low": 0.0, "high": 1.0}}}},
    }
    if device:
        raw["train"] = {"device": device}
    return yaml.safe_dump(raw)


def test_auto_settles_from_what_ray_sees(capsys: pytest.CaptureFixture[str]) -> None:
    space = parse_space(_space("auto"), file="s.yaml")
    assert space.resources == Resources(auto=True)
    # no GPU: the fallback is exactly what a CPU space file asks ({cpu: 1, gpu: 0})
    cpu_only = trial_resources(space, {"CPU": 2.0})
    assert (cpu_only.cpu, cpu_only.gpu, cpu_only.auto) == (1.0, 0.0, False)
    assert capsys.readouterr().err.strip() == (
        "resources: auto: no GPU visible to Ray: each trial gets 1 CPU, no GPU"
    )
    one_gpu = trial_resources(space, {"CPU": 16.0, "GPU": 1.0})
    assert (one_gpu.cpu, one_gpu.gpu) == (4.0, 0.25)  # four trials at once share it
    assert "gets 0.25 GPU and 4 CPU(s) and trains on cuda" in capsys.readouterr().err
    many = trial_resources(space, {"CPU": 64.0, "GPU": 8.0})
    assert (many.cpu, many.gpu) == (16.0, 1.0)  # never more than one GPU per trial
    check_resources(many, {"CPU": 64.0, "GPU": 8.0})
    on_cpu = trial_resources(parse_space(_space("auto", "cpu"), file="s.yaml"), {"GPU": 1.0})
    assert (on_cpu.cpu, on_cpu.gpu) == (1.0, 0.0)
    assert "train.device is cpu" in capsys.readouterr().err


def test_a_fixed_mapping_is_used_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    space = parse_space(_space({"cpu": 2, "gpu": 0.5}), file="s.yaml")
    assert trial_resources(space, {"CPU": 8.0, "GPU": 1.0}) == Resources(2.0, 0.5)
    assert capsys.readouterr().err == ""


@given(
    gpus=st.integers(1, 64),
    cpus=st.integers(1, 256),
    concurrent=st.integers(1, 100),
)
def test_auto_shares_never_ask_for_more_than_there_is(
    gpus: int, cpus: int, concurrent: int
) -> None:
    got, line = Resources(auto=True).settle({"CPU": cpus, "GPU": gpus}, concurrent)
    assert 0 < got.gpu <= 1 and concurrent * got.gpu <= gpus + 1e-9
    assert got.cpu >= 1 and (got.cpu * concurrent <= cpus or got.cpu == 1)
    assert line.startswith("resources: auto: ")


@pytest.mark.parametrize("bad", ["gpu", 1, ["auto"], "AUTO"])
def test_bad_resources_are_one_line(bad: object) -> None:
    with pytest.raises(KdtuneError, match=r"resources: auto, or a mapping") as err:
        parse_space(_space(bad), file="s.yaml")
    assert "\n" not in str(err.value)


def test_the_quickstart_keeps_its_cpu_behaviour() -> None:
    space = load_space(SPACES / "quickstart.yaml")
    assert trial_resources(space, {"CPU": 2.0}, say=False) == Resources(1.0, 0.0)


def test_the_gpu_preset_is_auto_on_full_data() -> None:
    space = load_space(SPACES / "gpu.yaml")
    assert space.resources.auto
    config = space.trial_config()
    assert config["max_train_images"] is None and config["max_val_images"] is None
    assert config["amp"] and config["device"] == "auto"
    assert space.budget.max_epochs >= 40
