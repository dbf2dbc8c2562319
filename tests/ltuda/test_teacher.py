import copy

import pytest
import torch
from torch import nn

from sparseseg.ltuda.network import UNet2D
from sparseseg.ltuda.teacher import ema_decay, update_teacher


def test_decay_ramps_up_to_the_final_value():
    values = [ema_decay(s, 0.999) for s in range(0, 20000, 50)]
    assert values[0] == pytest.approx(0.1)
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == 0.999
    # After 400 steps the teacher averages about the last 40 steps, not all 400 of them.
    assert 1 / (1 - ema_decay(400, 0.999)) < 50


def test_update_averages_weights_and_batchnorm_statistics_alike():
    student = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()
    student(torch.randn(4, 1, 6, 6) * 3 + 5)  # moves the student's running statistics
    old = {k: v.clone() for k, v in teacher.state_dict().items()}
    update_teacher(teacher, student, 0.75)
    for key, value in teacher.state_dict().items():
        if value.is_floating_point():
            expected = 0.75 * old[key] + 0.25 * student.state_dict()[key]
            torch.testing.assert_close(value, expected, msg=key)
        else:
            assert torch.equal(value, student.state_dict()[key])


def test_frozen_teacher_keeps_its_own_statistics():
    # decay 1: the teacher does not follow the student, so its predictions must not change
    # (copying the student's batch-norm statistics would change them).
    torch.manual_seed(0)
    student = UNet2D(out_channels=2, base_channels=4, depth=2)
    teacher = copy.deepcopy(student).eval()
    x = torch.randn(2, 1, 16, 16)
    before = teacher(x)[0]
    student.train()
    for _ in range(3):
        student(torch.randn(4, 1, 16, 16) * 2 + 1)
    update_teacher(teacher, student, 1.0)
    torch.testing.assert_close(teacher(x)[0], before)
