"""The small-input stem for timm CNNs on 28-32 px images, and the builder that saved recipes name for it.

timm's ImageNet stems shrink the input 4x (a stride-2 7x7 conv, then a stride-2 max-pool): a 28 px image
leaves the stem at 7 px. The "small" stem is the usual CIFAR adaptation: the first conv becomes a stride-1
3x3 conv and stem max-pools go. It lives in core because ``load_compact`` rebuilds such models from the
recipe's builder name ``SMALL_STEM_BUILDER`` in any process, with nothing above core imported
(``chex_tune.train.models`` builds training models with the same functions).
"""

from __future__ import annotations

from torch import nn

SMALL_STEM_BUILDER = "timm-small-stem"  # the name saved recipes hold: part of the file format


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
    """The ``SMALL_STEM_BUILDER`` builder: the timm model ``model_name`` with the small-input stem."""
    import timm

    return use_small_stem(timm.create_model(model_name, pretrained=False, **kwargs))
