"""Test-side writer of NVlabs network pickles, in their exact structure, without NVlabs' code.

NVlabs pickles hold `torch_utils.persistence._reconstruct_persistent_obj(meta)` calls (meta: type,
version, module_src text, class_name, state = the module's __dict__), `dnnlib.util.EasyDict`s and
torch tensors pickled by torch itself. To write those globals with the standard pickler, two inert
stand-in modules are registered in sys.modules only while `pickle.dump` runs.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import re
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch

FIR = torch.tensor([1.0, 3.0, 3.0, 1.0])
FIR2D = torch.outer(FIR, FIR) / 64.0
BUFFERS = ("w_avg", "resample_filter", "noise_const")
SOURCE = "# module source text (never executed by rescore)\n"


def _reconstruct_persistent_obj(meta):  # the stand-in NVlabs hook: never called by rescore
    raise AssertionError("rescore must not call the persistence hook")


class EasyDict(dict):
    """Pickles as dnnlib.util.EasyDict (NEWOBJ + SETITEMS), as NVlabs' kwargs do."""


EasyDict.__module__ = "dnnlib.util"
_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class Persistent:
    """Pickles as `_reconstruct_persistent_obj(meta)`, like NVlabs' persistent classes."""

    def __init__(self, class_name: str, state: dict, module_src: str = SOURCE) -> None:
        self.meta = dict(
            type="class", version=6, module_src=module_src, class_name=class_name, state=state
        )

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,), None)


@contextlib.contextmanager
def _stand_in_modules() -> Iterator[None]:
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    dnnlib_util = types.ModuleType("dnnlib.util")
    dnnlib_util.EasyDict = EasyDict
    added = {"torch_utils": types.ModuleType("torch_utils"), "dnnlib": types.ModuleType("dnnlib")}
    added |= {"torch_utils.persistence": persistence, "dnnlib.util": dnnlib_util}
    saved = {name: sys.modules.get(name) for name in added}
    sys.modules.update(added)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


def dumps(obj, protocol: int = 4) -> bytes:
    """pickle.dumps with the NVlabs globals resolvable (only while dumping)."""
    with _stand_in_modules():
        return pickle.dumps(obj, protocol=protocol)


def module_state(
    tensors: dict[str, torch.Tensor], children: dict, init_kwargs: dict | None = None, **attrs
) -> dict:
    """A torch.nn.Module __dict__ as NVlabs pickles it (hooks dicts, params, buffers, children)."""
    params = OrderedDict(
        (k, torch.nn.Parameter(v, requires_grad=False))
        for k, v in tensors.items()
        if k not in BUFFERS
    )
    buffers = OrderedDict((k, v) for k, v in tensors.items() if k in BUFFERS)
    state = {"training": False, "_parameters": params, "_buffers": buffers}
    state["_non_persistent_buffers_set"] = set()
    for hooks in ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks"):
        state[hooks] = OrderedDict()
    state["_modules"] = OrderedDict(children)
    state.update(attrs)
    state["_init_args"] = ()
    state["_init_kwargs"] = init_kwargs or {}
    return state


def stylegan2_shapes(
    *,
    z_dim: int,
    w_dim: int,
    c_dim: int,
    resolution: int,
    channel_base: int,
    channel_max: int,
    mapping_layers: int,
    architecture: str,
) -> dict[str, tuple]:
    """Keys and shapes of stylegan2-ada-pytorch's `networks.Generator` state dict."""
    shapes: dict[str, tuple] = {}
    blocks = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
    ch = {res: min(channel_base // res, channel_max) for res in blocks}
    for res in blocks:
        b = f"synthesis.b{res}"
        out = ch[res]
        if res == 4:
            shapes[f"{b}.const"] = (out, 4, 4)
        shapes[f"{b}.resample_filter"] = (4, 4)
        layers = [("conv1", out)] if res == 4 else [("conv0", ch[res // 2]), ("conv1", out)]
        for name, inc in layers:
            shapes |= {
                f"{b}.{name}.weight": (out, inc, 3, 3),
                f"{b}.{name}.noise_strength": (),
                f"{b}.{name}.bias": (out,),
                f"{b}.{name}.resample_filter": (4, 4),
                f"{b}.{name}.noise_const": (res, res),
                f"{b}.{name}.affine.weight": (inc, w_dim),
                f"{b}.{name}.affine.bias": (inc,),
            }
        if architecture == "skip" or res == resolution:
            shapes |= {
                f"{b}.torgb.weight": (3, out, 1, 1),
                f"{b}.torgb.bias": (3,),
                f"{b}.torgb.affine.weight": (out, w_dim),
                f"{b}.torgb.affine.bias": (out,),
            }
        if architecture == "resnet" and res > 4:
            shapes |= {
                f"{b}.skip.weight": (out, ch[res // 2], 1, 1),
                f"{b}.skip.resample_filter": (4, 4),
            }
    features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * mapping_layers
    if c_dim:
        shapes |= {"mapping.embed.weight": (w_dim, c_dim), "mapping.embed.bias": (w_dim,)}
    for i in range(mapping_layers):
        shapes |= {f"mapping.fc{i}.weight": (features[i + 1], features[i])}
        shapes |= {f"mapping.fc{i}.bias": (features[i + 1],)}
    shapes["mapping.w_avg"] = (w_dim,)
    return shapes


def seeded_state(shapes: dict[str, tuple], seed: int) -> tuple[dict, torch.Generator]:
    """The fixture recipe: sorted keys, N(0,1); biases and noise strengths x0.1; mapping fc /0.01;
    resample filters [1,3,3,1] (outer, sum 1). Returns the state and the generator (for z)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in sorted(shapes):
        if name.endswith("resample_filter"):
            state[name] = FIR2D.clone()
            continue
        values = torch.randn(shapes[name], generator=generator)
        if name.endswith("bias") or name.endswith("noise_strength"):
            values = values * 0.1
        if name.startswith("mapping.fc"):
            values = values / 0.01
        state[name] = values
    return state, generator


def _class_of(path: str) -> str:
    """NVlabs' class name of the module at `path` (networks.py / networks_stylegan2.py, and
    networks_stylegan3.py: `synthesis.input` and `synthesis.L<i>_<size>_<channels>`)."""
    last = path.rsplit(".", 1)[-1]
    if path in ("mapping", "synthesis"):
        return {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork"}[path]
    if path == "synthesis.input":
        return "SynthesisInput"
    if re.fullmatch(r"synthesis\.L\d+_\d+_\d+", path):
        return "SynthesisLayer"
    if last.startswith("b") and last[1:].isdigit():
        return "SynthesisBlock"
    return {
        "conv0": "SynthesisLayer",
        "conv1": "SynthesisLayer",
        "torgb": "ToRGBLayer",
        "skip": "Conv2dLayer",
    }.get(last, "FullyConnectedLayer")


def generator_record(
    state: dict[str, torch.Tensor], init_kwargs: dict, module_src: str = SOURCE
) -> Persistent:
    """Nest a flat NVlabs state dict into persistent records (Generator > synthesis, mapping)."""
    tree: dict = {}
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value

    def build(name: str, node: dict) -> Persistent:
        tensors = {k: v for k, v in node.items() if isinstance(v, torch.Tensor)}
        kids = {
            k: build(f"{name}.{k}" if name else k, v)
            for k, v in node.items()
            if isinstance(v, dict)
        }
        attrs = (
            {"weight_gain": np.float64(0.25), "in_size": np.asarray([4, 4])} if kids == {} else {}
        )
        return Persistent(_class_of(name), module_state(tensors, kids, **attrs), module_src)

    children = {k: build(k, tree[k]) for k in ("synthesis", "mapping")}
    kwargs = {k: (EasyDict(v) if isinstance(v, dict) else v) for k, v in init_kwargs.items()}
    return Persistent("Generator", module_state({}, children, kwargs), module_src)


def network_pickle(
    state: dict, init_kwargs: dict, *, protocol: int = 4, module_src: str = SOURCE
) -> bytes:
    """The bytes of an NVlabs network pickle whose G_ema has `state` and `init_kwargs`."""
    record = generator_record(state, init_kwargs, module_src)
    data = {"G": record, "D": None, "G_ema": record, "training_set_kwargs": EasyDict(resolution=32)}
    return dumps(data, protocol)
