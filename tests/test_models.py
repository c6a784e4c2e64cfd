"""The three nets: sizes, output shapes, and checkpoint loading in every accepted format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdtune.augment import normalize
from kdtune.errors import KdtuneError
from kdtune.models import (
    ARCHS,
    PublicInput,
    Teacher,
    build_model,
    count_parameters,
    describe_models,
    load_checkpoint,
    weights_digest,
)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("teacher").eval()


def test_teacher_has_exactly_the_public_parameter_count(teacher: torch.nn.Module) -> None:
    assert count_parameters(teacher) == 4_091_698


def test_student_parameter_counts() -> None:
    # Counted from the layer lists (conv3x3 without bias + BN, heads with bias).
    assert count_parameters(build_model("med")) == 657_817
    assert count_parameters(build_model("tiny")) == 111_769


def test_teacher_keys_have_the_public_checkpoint_prefixes(teacher: torch.nn.Module) -> None:
    keys = list(teacher.state_dict())
    assert {k.split(".")[0] for k in keys} == {
        "model",
        "cpm",
        "initial_stage",
        "refinement_stages",
    }
    assert {k.split(".")[1] for k in keys if k.startswith("refinement_stages.")} == {"0"}
    for key in (
        "model.0.0.weight",
        "model.7.0.weight",
        "cpm.align.0.bias",
        "cpm.trunk.2.2.weight",
        "cpm.conv.0.weight",
        "initial_stage.heatmaps.1.0.weight",
        "refinement_stages.0.trunk.4.trunk.1.1.running_var",
        "refinement_stages.0.pafs.1.0.bias",
    ):
        assert key in keys, key
    assert teacher.state_dict()["initial_stage.heatmaps.0.0.weight"].shape == (512, 128, 1, 1)
    assert teacher.state_dict()["refinement_stages.0.trunk.0.initial.0.weight"].shape == (
        128,
        185,
        1,
        1,
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_output_shapes_at_128(arch: str, teacher: torch.nn.Module) -> None:
    model = teacher if arch == "teacher" else build_model(arch).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
    assert len(out) == (2 if arch == "teacher" else 1)
    for heat, paf in out:
        assert heat.shape == (2, 19, 16, 16)
        assert paf.shape == (2, 38, 16, 16)


def test_teacher_at_368_gives_46(teacher: torch.nn.Module) -> None:
    with torch.no_grad():
        out = teacher(torch.randn(1, 3, 368, 368))
    assert [tuple(t.shape) for stage in out for t in stage] == [
        (1, 19, 46, 46),
        (1, 38, 46, 46),
    ] * 2


def test_teacher_stage_count_follows_refinement_stages() -> None:
    model = Teacher(num_refinement_stages=2).eval()
    with torch.no_grad():
        assert len(model(torch.randn(1, 3, 64, 64))) == 3


@pytest.mark.parametrize("arch", ["med", "tiny"])
def test_fresh_outputs_are_small_and_finite(arch: str) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        heat, paf = build_model(arch).eval()(torch.randn(2, 3, 128, 128))[0]
    for t in (heat, paf):
        assert torch.isfinite(t).all()
        assert 0 < t.abs().max() < 1.0


def test_channels_last_and_bf16_autocast_run() -> None:
    torch.manual_seed(0)
    model = build_model("tiny").to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.randn(2, 3, 128, 128).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        heat, paf = model(x)[0]
    assert heat.dtype == torch.bfloat16
    assert heat.shape == (2, 19, 16, 16) and paf.shape == (2, 38, 16, 16)
    (heat.float().sum() + paf.float().sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_arch_is_rejected() -> None:
    with pytest.raises(KdtuneError, match="'huge'"):
        build_model("huge")


def test_describe_models_lists_every_arch() -> None:
    rows = describe_models()
    assert [r["name"] for r in rows] == list(ARCHS)
    assert [r["params"] for r in rows] == [4_091_698, 657_817, 111_769]
    assert all(r["role"] and r["description"] for r in rows)


# ----------------------------------------------------------------------------- checkpoints


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_public_format_teacher_checkpoint_loads(tmp_path: Path, teacher: torch.nn.Module) -> None:
    path = tmp_path / "checkpoint_iter_370000.pth"
    torch.save({"state_dict": teacher.state_dict(), "optimizer": {}, "iter": 370000}, path)
    loaded = load_checkpoint(path, "teacher")
    assert isinstance(loaded, PublicInput)  # fed what the public checkpoint was trained on
    _assert_same_weights(loaded.net, teacher)
    assert not loaded.training


def test_public_teacher_is_fed_bgr_minus_128_over_256(
    tmp_path: Path, teacher: torch.nn.Module
) -> None:
    path = tmp_path / "checkpoint_iter_370000.pth"
    torch.save({"state_dict": teacher.state_dict(), "iter": 370000}, path)
    loaded = load_checkpoint(path, "teacher")
    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator())
    with torch.no_grad():
        got = loaded(normalize(pixels))[-1]  # what every kdtune consumer feeds a net
        want = teacher((pixels.flip(1).float() - 128) / 256)[-1]  # the public recipe: BGR
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    # a teacher kdtune saved itself keeps kdtune's input
    own = tmp_path / "own.pt"
    torch.save({"arch": "teacher", "model": teacher.state_dict()}, own)
    assert isinstance(load_checkpoint(own, "teacher"), Teacher)
    assert weights_digest(load_checkpoint(own, "teacher")) != weights_digest(loaded)


def test_raw_state_dict_with_module_prefix_loads(tmp_path: Path) -> None:
    model = build_model("tiny")
    path = tmp_path / "raw.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    _assert_same_weights(load_checkpoint(path, "tiny"), model)


def test_kdtune_training_checkpoint_loads(tmp_path: Path) -> None:
    model = build_model("med")
    path = tmp_path / "last.pth"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": torch.optim.Adam(model.parameters()).state_dict(),
            "epoch": 3,
            "arch": "med",
            "config": {"level": "first", "lr": 0.002},
            "rng": {"torch": torch.get_rng_state()},
        },
        path,
    )
    _assert_same_weights(load_checkpoint(path, "med"), model)


def test_med_weights_loaded_as_tiny_fail_clearly(tmp_path: Path) -> None:
    path = tmp_path / "med.pth"
    torch.save(build_model("med").state_dict(), path)
    with pytest.raises(KdtuneError) as info:
        load_checkpoint(path, "tiny")
    msg = str(info.value)
    assert "\n" not in msg
    assert "'tiny'" in msg and "med.pth" in msg
    assert "unexpected keys" in msg  # med has an 8th backbone layer and a 3rd CPM layer
    assert "shape mismatches" in msg and "backbone.0.0.weight [32, 3, 3, 3] vs [16, 3, 3, 3]" in msg


def test_kdtune_checkpoint_of_another_arch_is_named(tmp_path: Path) -> None:
    path = tmp_path / "med.pth"
    torch.save({"model": build_model("med").state_dict(), "arch": "med"}, path)
    with pytest.raises(KdtuneError, match="holds a 'med' model, not 'tiny'"):
        load_checkpoint(path, "tiny")


def test_missing_keys_are_counted_and_listed(tmp_path: Path) -> None:
    state = build_model("tiny").state_dict()
    dropped = list(state)[:5]
    for k in dropped:
        del state[k]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(KdtuneError, match=r"5 missing keys \(backbone\.0\.0\.weight, .*, \.\.\.\)"):
        load_checkpoint(path, "tiny")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KdtuneError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pth", "tiny")


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(KdtuneError, match="not a readable checkpoint") as info:
        load_checkpoint(path, "tiny")
    assert "\n" not in str(info.value)


def test_file_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "dict.pth"
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, path)
    with pytest.raises(KdtuneError, match="no state_dict of tensors"):
        load_checkpoint(path, "tiny")


def test_non_weights_only_objects_are_refused(tmp_path: Path) -> None:
    # np.random.get_state() holds an ndarray: weights_only loading refuses it. kdtune's own
    # checkpoints must keep RNG state as tensors / plain data (e.g. bit_generator.state).
    import numpy as np

    path = tmp_path / "np.pth"
    torch.save({"model": build_model("tiny").state_dict(), "rng": np.random.get_state()}, path)
    with pytest.raises(KdtuneError, match="refused by weights_only loading") as info:
        load_checkpoint(path, "tiny")
    assert "\x1b" not in str(info.value)
    ok = tmp_path / "ok.pth"
    rng = {"numpy": np.random.default_rng(0).bit_generator.state, "torch": torch.get_rng_state()}
    torch.save({"model": build_model("tiny").state_dict(), "rng": rng}, ok)
    assert count_parameters(load_checkpoint(ok, "tiny")) == 111_769


def test_the_model_recipe_names_the_files_and_names_a_new_model_touches() -> None:
    """ARCHITECTURE.md's "A model." recipe is true: every name it asks to edit is defined in
    the file it names, the model names have one home that the API hands on, and every named
    model is built and described."""
    import re

    import kdtune.api
    import kdtune.config
    from kdtune.models import ARCH_INFO

    root = Path(__file__).resolve().parents[1]
    text = (root / "ARCHITECTURE.md").read_text()
    recipe = text[text.index("**A model.**") :].split("\n\n")[0]
    # each "`NAME` ... in `FILE.py`" clause: the names before a file are defined in that file
    clauses = re.findall(r"((?:`\w+`[^`]*?)+)in\s+`([\w/]+\.py)`", recipe)
    named: dict[str, set[str]] = {}
    for names, file in clauses:
        named.setdefault(file, set()).update(re.findall(r"`(\w+)`", names))
    assert named == {
        "config.py": {"ARCHS", "STUDENT_OF", "TEACHER_OF"},
        "models.py": {"build_model", "ARCH_INFO"},
    }, recipe
    for file, names in named.items():
        source = (root / "kdtune" / file).read_text()
        for name in names:
            assert re.search(rf"^(def {name}\(|{name}\b.*=)", source, re.M), (name, file)
    assert "tests/test_models.py" in recipe and "api.ARCHS" in recipe
    assert kdtune.api.ARCHS is kdtune.config.ARCHS == ARCHS
    assert set(ARCH_INFO) == set(ARCHS)
    assert set(kdtune.config.STUDENT_OF.values()) <= set(ARCHS)
    for arch in ARCHS:
        assert build_model(arch) is not None
