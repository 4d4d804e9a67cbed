"""The training memory check: a batch that cannot fit the free memory stops before the first iteration."""

from __future__ import annotations

import pytest
from engine_helpers import tiny_config

from hmrepro.engine.training import memory
from hmrepro.engine.training.memory import BatchTooLarge, check_batch_fits

GIB = 1024.0


def fits(per_sample_gib: float, free_gib: float | None, bsz: int, world_size: int = 1, device: str = "cpu"):
    return check_batch_fits(
        per_sample_gib * GIB,
        None if free_gib is None else free_gib * GIB,
        bsz=bsz,
        world_size=world_size,
        device_type=device,
        img_size=64,
        how="measured",
    )


def test_a_batch_that_fits_passes_silently():
    assert fits(4.0, 17.0, bsz=4) is None


def test_a_batch_too_large_for_one_process_is_one_line_naming_the_size_that_fits():
    with pytest.raises(BatchTooLarge) as err:
        fits(4.0, 17.4, bsz=64)
    text = str(err.value)
    assert "\n" not in text
    assert "--bsz 64 needs about 256.0 GiB" in text and "17.4 GiB are free" in text and "--bsz 4 fits" in text


def test_not_even_one_sample_fitting_says_so():
    with pytest.raises(BatchTooLarge, match="not even --bsz 1 fits"):
        fits(4.0, 3.0, bsz=2)


def test_ddp_on_a_cpu_warns_per_process_times_processes():
    warning = fits(4.0, 17.0, bsz=8, world_size=2)  # 4 per process x 2 processes x 4 GiB = 32 GiB on one machine
    assert warning is not None and "4 per process x 2 processes" in warning and "--bsz 4 fits" in warning


def test_ddp_on_gpus_counts_one_process_per_device():
    assert fits(4.0, 17.0, bsz=8, world_size=2, device="cuda") is None  # 4 per GPU x 4 GiB = 16 GiB each
    assert "--bsz 8 fits" in fits(4.0, 17.0, bsz=16, world_size=2, device="cuda")


def test_unknown_free_memory_says_nothing():
    assert fits(4.0, None, bsz=1024) is None


def test_the_cpu_free_memory_is_read_from_meminfo():
    free = memory.free_memory_mib("cpu")
    assert free is None or free > 0


def test_training_stops_before_its_first_iteration_when_the_batch_cannot_fit(synthetic_root, tmp_path, monkeypatch):
    """The per-sample memory is the one measured at set-up; only the free memory is made small."""
    from hmrepro.engine.training import train as train_module

    monkeypatch.setattr(train_module, "free_memory_mib", lambda device: 1e-3)
    steps = []
    monkeypatch.setattr(train_module, "train_step", lambda *a, **k: steps.append(1))
    out = tmp_path / "run"
    with pytest.raises(BatchTooLarge, match=r"--bsz 8 needs about .* GiB for training at 64 px"):
        train_module.train(tiny_config("hsnet", synthetic_root, out, epochs=1), progress=False)
    assert steps == []


@pytest.mark.slow  # a training
def test_the_check_can_be_switched_off(synthetic_root, tmp_path, monkeypatch):
    from hmrepro.engine.training import train as train_module

    monkeypatch.setattr(train_module, "free_memory_mib", lambda device: 1e-3)
    out = tmp_path / "run"
    config = tiny_config("hsnet", synthetic_root, out, epochs=1, epoch_iterations=1, val_episodes=2)
    train_module.train(config, progress=False, memory_check=False)
    assert (out / "best_model.pt").is_file()
