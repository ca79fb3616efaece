"""timm models by name, with a small-input stem for 28-32 px images.

timm's ImageNet stems shrink the input 4x (a stride-2 7x7 conv, then a stride-2 max-pool): a 28 px
Fashion-MNIST image leaves the stem at 7 px and the network has little left to work with. The
"small" stem is the usual CIFAR adaptation: the first conv becomes a stride-1 3x3 conv and stem
max-pools go, so the first stage sees the full image (at ~14x the MACs of the timm stem on ResNets).

Compact models built on the small stem are rebuilt by ``load_compact`` with ``build_small_stem``, the
builder their recipes name ``SMALL_STEM_BUILDER`` (``chex_tune.core.compact.BUILDER_REFERENCES`` finds it
by reference, so no caller has to import this module first).
"""

from __future__ import annotations

import copy
import difflib

import torch
from torch import nn

SMALL_STEM_BUILDER = "timm-small-stem"  # the name saved recipes hold (core.compact.BUILDER_REFERENCES)
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


def use_small_stem(model: nn.Module) -> nn.Module:
    """Make the first conv a stride-1 3x3 conv and drop max-pools before it reaches the first stage."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer: the small-input stem does not apply "
                         "(use stem 'timm')")
    name, first = convs[0]
    small = nn.Conv2d(first.in_channels, first.out_channels, 3, stride=1, padding=1, groups=first.groups,
                      bias=first.bias is not None)
    model.set_submodule(name, small)
    # Stem max-pools: those met before any conv outside the stem's top-level module (resnet's `maxpool`).
    stem_root = name.split(".")[0]
    for pool_name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d) and pool_name.split(".")[0] != stem_root:
            break
        if isinstance(module, nn.MaxPool2d):
            model.set_submodule(pool_name, nn.Identity())
    return model


def build_small_stem(model_name: str, **kwargs) -> nn.Module:
    """The ``SMALL_STEM_BUILDER`` builder: what ``load_compact`` calls for a recipe that names it."""
    return create_model(model_name, stem="small", **kwargs)


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
