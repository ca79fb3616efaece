"""What a user's model and example inputs must be for the engine, checked up front and said at the user's call site.

A wrong input shape, a failing layer or a forward that returns something other than one tensor would otherwise
fail deep inside the engine, or leave the model dense after one easily missed warning. ``warn`` points a
warning at the first line outside chex_tune, however deep the call.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping

import torch
from torch import nn


def first_input(example_inputs):
    return example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # .../chex_tune/


def warn(message: str) -> None:
    """``warnings.warn`` pointing at the first caller outside chex_tune: the user's line, however deep the call."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


@torch.no_grad()
def check_forward(model: nn.Module, example_inputs) -> None:
    """Run the model once in eval mode; a wrong input shape, a failing layer or an output other than one
    tensor is a ValueError that says what to change (the engine would otherwise fail deep inside, or train
    the model dense)."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    stack: list[str] = []
    first_conv: list[tuple[str, nn.Module, tuple]] = []  # the first convolution called, and its input's shape
    names = {m: n for n, m in model.named_modules()}

    def enter(module, args):
        stack.append(names[module])
        if not first_conv and isinstance(module, nn.modules.conv._ConvNd) and args and torch.is_tensor(args[0]):
            first_conv.append((names[module], module, tuple(args[0].shape)))

    def leave(*_):  # returns None: a hook's return value would replace the output
        stack.pop()

    handles = [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        output = model(*inputs)
    except Exception as exc:
        _check_input_shape(first_conv, example_inputs, exc)
        where = stack[-1] if stack else "<model>"
        layer = model.get_submodule(where) if stack and where else model
        raise ValueError(f"the model cannot run on the example inputs: it fails in {where or '<model>'} "
                         f"({type(layer).__name__}): {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    _check_input_shape(first_conv, example_inputs)
    _check_output(model, output)


def _check_input_shape(first_conv: list, example_inputs, cause: Exception | None = None) -> None:
    """The example input must reach the first convolution as a batch (N, in_channels, ...)."""
    if not first_conv:
        return
    name, conv, received = first_conv[0]
    dims = len(conv.kernel_size) + 2
    given = tuple(first_input(example_inputs).shape) if torch.is_tensor(first_input(example_inputs)) else received
    expected = f"(N, {conv.in_channels}{', H, W' if dims == 4 else ', ...'})"
    where = f"the model's first convolution {name} ({type(conv).__name__}, in_channels={conv.in_channels})"
    if len(received) != dims:
        unbatched = len(given) == dims - 1 and given[0] == conv.in_channels
        hint = f"; add the batch dimension: x.unsqueeze(0) has shape {(1, *given)}" if unbatched else ""
        raise ValueError(f"example input of shape {given}: {where} takes a {dims}-D batch {expected}, "
                         f"got {len(received)}-D{hint}") from cause
    if received[1] != conv.in_channels:
        raise ValueError(f"example input of shape {given}: {where} takes {conv.in_channels} channels in "
                         f"dimension 1 {expected}, got {received[1]}") from cause


def _check_output(model: nn.Module, output) -> None:
    if torch.is_tensor(output):
        return
    kind, index = type(output).__name__, "0"
    if isinstance(output, Mapping):
        kind, index = f"{kind} with keys {list(output)[:5]}", repr(next(iter(output), "logits"))
    elif isinstance(output, (tuple, list)):
        kind = f"{kind} of {len(output)} items"
    raise ValueError(
        f"{type(model).__name__}'s forward returns a {kind}, not a tensor: ChannelExplorer checks that masking "
        "equals removing channels by comparing the model's outputs, so it needs one tensor (the logits). Give it "
        f"a wrapper module whose forward returns that tensor (self.net = your model; forward(x) returns "
        f"self.net(x)[{index}]): the wrapper shares your model's parameters, so training your model trains the "
        "explored one, and compact() returns a compact wrapper")
