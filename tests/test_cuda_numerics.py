"""The CUDA numeric settings that every bench and evaluation applies, and that records carry.

No GPU is needed: the flags are process-wide switches of torch.backends that can be set and read on any machine.
"""

import pytest
import torch

from hmrepro.engine.evaluation.evaluate import set_eval_numerics
from hmrepro.engine.records import cuda_numerics, machine_fields
from hmrepro.engine.training.train import set_numerics


@pytest.fixture
def restore_backends():
    saved = cuda_numerics()
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved["tf32_matmul"]
    torch.backends.cudnn.allow_tf32 = saved["tf32_cudnn"]
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]


def test_evaluation_on_cuda_turns_tf32_off_and_autotuning_on(restore_backends):
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's defaults: cuDNN convolutions in TF32, no autotuning, and
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False  # not deterministic (an earlier in-process --deterministic run sets it)
    set_eval_numerics(torch.device("cuda"))
    assert cuda_numerics() == {
        "tf32_matmul": False,
        "tf32_cudnn": False,
        "cudnn_benchmark": True,
        "cudnn_deterministic": False,
    }


def test_training_defaults_on_cuda_keep_tf32_off_unless_asked(restore_backends):
    torch.backends.cudnn.allow_tf32 = True
    set_numerics(deterministic=False, tf32=False, device=torch.device("cuda"))
    assert cuda_numerics()["tf32_cudnn"] is False and cuda_numerics()["tf32_matmul"] is False
    set_numerics(deterministic=False, tf32=True, device=torch.device("cuda"))
    assert cuda_numerics()["tf32_cudnn"] is True and cuda_numerics()["tf32_matmul"] is True


def test_cpu_settings_leave_cuda_flags_alone_and_cpu_records_do_not_carry_them(restore_backends):
    torch.backends.cudnn.allow_tf32 = True
    set_eval_numerics(torch.device("cpu"))
    assert cuda_numerics()["tf32_cudnn"] is True
    assert "cuda_numerics" not in machine_fields(torch.device("cpu"))
