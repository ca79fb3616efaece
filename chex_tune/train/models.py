"""timm models by name, with a small-input stem for 28-32 px images.

timm's ImageNet stems shrink the input 4x (a stride-2 7x7 conv, then a stride-2 max-pool): a 28 px
Fashion-MNIST image leaves the stem at 7 px and the network has little left to work with. The
"small" stem is the usual CIFAR adaptation: the first conv becomes a stride-1 3x3 conv and stem
max-pools go, so the first stage sees the full image (at ~14x the MACs of the timm stem on ResNets).

The stem itself and ``build_small_stem``, the builder that compact models' recipes name
``SMALL_STEM_BUILDER``, live in ``chex_tune.core.stems``: ``load_compact`` rebuilds those models with
nothing above core imported.
"""

from __future__ import annotations

import copy
import difflib

import torch
from torch import nn

from chex_tune.core.stems import SMALL_STEM_BUILDER, use_small_stem

SMALL_INPUT_MAX_PX = 64  # stem "auto" picks the small stem up to this input size


def resolve_stem(stem: str, image_size: int) -> str:
    """"small" or "timm" for the stem setting ("auto", "small" or "timm") at this input size."""
    if stem == "auto":
        return "small" if image_size <= SMALL_INPUT_MAX_PX else "timm"
    if stem not in ("small", "timm"):
        raise ValueError(f"unknown stem {stem!r}; choose one of: auto, small, timm")
    return stem


def create_timm_model(name: str, *, pretrained: bool = False, **kwargs) -> nn.Module:
    """timm.create_model with an error that suggests the closest names when ``name`` is unknown."""
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; closest names: {', '.join(close)}" if close else "; see timm.list_models()"
        raise ValueError(f"unknown timm model {name!r}{hint}")
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (RuntimeError, OSError) as exc:
        if not pretrained:
            raise
        # Nothing is downloaded at run time: pretrained weights must already be in the local cache.
        raise ValueError(f"pretrained weights for {name!r} are not in the local timm/Hugging Face cache "
                         f"and cannot be downloaded here ({type(exc).__name__}: {exc}); drop --pretrained") from exc


def create_model(name: str, *, num_classes: int, in_chans: int, stem: str = "timm",
                 pretrained: bool = False) -> nn.Module:
    """A timm model for ``num_classes`` classes and ``in_chans`` channels; ``stem`` is "small" or "timm"."""
    model = create_timm_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    return use_small_stem(model) if stem == "small" else model


def model_recipe(name: str, *, num_classes: int, in_chans: int, stem: str) -> dict:
    """How ``load_compact`` rebuilds the dense model: builder, model_name, model_kwargs."""
    return {"builder": SMALL_STEM_BUILDER if stem == "small" else "timm", "model_name": name,
            "model_kwargs": {"num_classes": num_classes, "in_chans": in_chans}}


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy that never trains: eval mode (BatchNorm uses its running statistics), no gradients."""
    teacher = copy.deepcopy(model).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@torch.no_grad()
def init_norm_scales(model: nn.Module, value: float) -> None:
    """Start every BatchNorm scale (gamma) at ``value`` (the CHEX paper uses 0.5)."""
    for layer in model.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.weight is not None:
            layer.weight.fill_(value)
