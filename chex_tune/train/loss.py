"""The training loss, chosen once per run: cross-entropy with label smoothing, or mixed with distillation from a
frozen teacher (the trained start, as loaded) when ``distill`` > 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from chex_tune.train.models import frozen_copy


class CrossEntropy:
    def __init__(self, label_smoothing: float):
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


class Distillation(CrossEntropy):
    """``(1 - weight) * cross-entropy + weight * T^2 * KL(teacher || student)`` at temperature ``T``."""

    def __init__(self, teacher: nn.Module, *, weight: float, temperature: float, label_smoothing: float):
        super().__init__(label_smoothing)
        self.teacher, self.weight, self.temperature = teacher, weight, temperature

    def __call__(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hard = super().__call__(logits, images, labels)
        with torch.no_grad():
            target = F.log_softmax(self.teacher(images).float() / self.temperature, dim=1)
        student = F.log_softmax(logits.float() / self.temperature, dim=1)
        soft = F.kl_div(student, target, log_target=True, reduction="batchmean") * self.temperature ** 2
        return (1 - self.weight) * hard + self.weight * soft


def run_loss(settings, start: nn.Module, device: torch.device, channels_last: bool) -> CrossEntropy:
    """The run's loss; with distillation its teacher is a frozen copy of ``start`` (taken before any pruning)."""
    settings.check_teacher()
    if settings.distill <= 0:
        return CrossEntropy(settings.label_smoothing)
    teacher = frozen_copy(start).to(device)
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return Distillation(teacher, weight=settings.distill, temperature=settings.distill_temperature,
                        label_smoothing=settings.label_smoothing)
