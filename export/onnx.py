"""Stage 1 of the compiled path: torch modules -> ONNX files, each with a JSON sidecar.

    export_graph(module, example, ...)      one module -> one checked ONNX file + sidecar
    export_onnx(generator, predictors, ..)  every part a backend may need, in one directory:
        mapping     z [B, Z]        -> w [B, D]
        synthesis   wp [B, L, D]    -> images [B, 3, H, W]
        predictor_i images          -> scores_i [B, S_i]   (preprocessing included)
        fused       wp [B, L, D]    -> scores [B, S]       (images stay inside the graph)

Graphs come from torch 2.13's exporter (`torch.onnx.export(dynamo=True)`, built on
`torch.export`), with a dynamic batch axis named `batch`, checked with `onnx.checker`. The exporter
emits opset 18 natively; torch 2.13 cannot down-convert these graphs to 17 (its converter fails on
Reduce ops), so 18 is the lowest opset offered. Weights beyond 2 GB go to external data beside the
file. The sidecar ``<part>.json`` records the input/output names and shapes, semantic names, the
digest of the weights and of the checkpoints they came from, the opset and the versions that made
the file, and the ONNX nodes that must stay float32 under reduced precision (`fp32_nodes`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from rescore.models.base import Generator, Predictor
from rescore.models.checkpoints import sha256_file
from rescore.models.errors import RescoreError
from rescore.models.fused import ScoringPass
from rescore.models.resize import PilBilinearResize

from .cache import model_digest, rescore_version

SIDECAR_FORMAT = "rescore.onnx-graph"
SIDECAR_VERSION = 1
MIN_OPSET = 18
BATCH_AXIS = "batch"
PARTS = ("mapping", "synthesis", "predictors", "fused")
OPTIONAL_PARTS = ("staged",)  # one graph per synthesis stage + the scorer (`staged.py`), on request
STAGED_GRAPH = re.compile(r"stage_\d+|scorer")  # the ``staged`` part's files
# Modules whose arithmetic is exact only in float32 (see rescore.models.resize): their nodes are
# listed in the sidecar so reduced-precision builds keep them in float32.
FLOAT32_MODULES: tuple[type[nn.Module], ...] = (PilBilinearResize,)
_LARGE_WEIGHTS = 2 * 1024**3  # protobuf's limit: beyond it weights must be external data

log = logging.getLogger(__name__)


class ExportError(RescoreError):
    """A model could not be exported or an exported file does not fit its use."""


@dataclass(frozen=True)
class ExportSettings:
    """How graphs are exported (part of every cache key).

    opset: ONNX opset (>= 18). optimize: run the exporter's graph optimizer (constant folding,
    fusions; slower export, leaner file). external_data: None decides by size (> 2 GB), True or
    False forces it.
    """

    opset: int = MIN_OPSET
    optimize: bool = True
    external_data: bool | None = None

    def __post_init__(self) -> None:
        if self.opset < MIN_OPSET:
            raise ExportError(
                f"opset {self.opset} is not supported: torch {torch.__version__}'s exporter emits "
                f"opset {MIN_OPSET} and cannot convert these graphs down; use --opset {MIN_OPSET}"
            )


@dataclass(frozen=True)
class ExportedGraph:
    """One exported file and its sidecar metadata (see `read_sidecar`)."""

    path: Path
    meta: dict[str, Any]

    @property
    def input_name(self) -> str:
        return self.meta["inputs"][0]["name"]

    @property
    def output_name(self) -> str:
        return self.meta["outputs"][0]["name"]

    @property
    def input_names(self) -> list[str]:
        return [entry["name"] for entry in self.meta["inputs"]]

    @property
    def output_names(self) -> list[str]:
        return [entry["name"] for entry in self.meta["outputs"]]


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` wrote: one `ExportedGraph` per part name."""

    directory: Path
    graphs: dict[str, ExportedGraph]


class MappingGraph(nn.Module):
    """The generator's mapping network as a module of its own: z [B, Z] -> w [B, D]."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator.map(z)  # [B, D]


class SynthesisGraph(nn.Module):
    """The generator's synthesis network: wp [B, L, D] -> images [B, 3, H, W]."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, wp: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesize(wp)  # [B, 3, H, W]


def export_graph(
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    path: Path,
    *,
    input_name: str | Sequence[str],
    output_name: str | Sequence[str],
    settings: ExportSettings = ExportSettings(),
    meta: dict[str, Any] | None = None,
) -> ExportedGraph:
    """Export `module` to `path` with a dynamic batch axis (shared by every input); check it.

    One tensor in and one out, or (staged graphs) a tuple of example inputs and a name per input
    and per output. Examples must have a batch of at least 2 (torch.export specializes a batch
    of 1). `meta` is merged into the sidecar (semantic names, digests). The file is written
    under a temporary name and renamed, so a reader never sees half a file.
    """
    examples = example if isinstance(example, tuple) else (example,)
    input_names = [input_name] if isinstance(input_name, str) else list(input_name)
    output_names = [output_name] if isinstance(output_name, str) else list(output_name)
    if examples[0].shape[0] < 2:
        raise ExportError("export needs an example batch of at least 2 to keep the batch dynamic")
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with _quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(
                module,
                examples,
                input_names=input_names,
                output_names=output_names,
                opset_version=settings.opset,
                dynamic_shapes=_batch_axes(module, len(examples), batch),
                dynamo=True,
                optimize=settings.optimize,
                verbose=False,
            )
        except Exception as error:  # the exporter raises many types; all mean the same here
            raise ExportError(
                f"torch.onnx.export failed for {type(module).__name__} ({_summary(error)}); "
                f"rewrite the failing operation in an export-friendly form or use --backend torch"
            ) from error
        external = settings.external_data
        if external is None:
            external = _weight_bytes(module) > _LARGE_WEIGHTS
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
            staged = Path(scratch) / path.name
            program.save(staged, external_data=external)
            proto = _check(staged, settings.opset)
            data_files = _external_files(proto)
            for name in data_files:  # data first: the .onnx appearing means the part is complete
                os.replace(Path(scratch) / name, path.parent / name)
            os.replace(staged, path)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "file": path.name,
        "external_data": sorted(data_files),
        "inputs": [_value_info(v) for v in proto.graph.input],
        "outputs": [_value_info(v) for v in proto.graph.output],
        "opset": _default_opset(proto),
        "onnx_sha256": file_digest(path, sorted(data_files)),
        "fp32_nodes": float32_nodes(proto),
        "settings": asdict(settings),
        "rescore_version": rescore_version(),
        "torch_version": torch.__version__,
        **(meta or {}),
    }
    _write_json(sidecar_path(path), sidecar)
    return ExportedGraph(path, sidecar)


def export_part(
    part: str,
    generator: Generator,
    predictors: Sequence[Predictor],
    directory: Path,
    *,
    settings: ExportSettings = ExportSettings(),
    meta: dict[str, Any] | None = None,
) -> list[ExportedGraph]:
    """Export one part of `PARTS` into `directory` (``predictors`` gives one file per predictor)."""
    directory = Path(directory)
    example = _example_codes(generator)  # [2, L, D]
    common = dict(meta or {})
    if part == "mapping":
        z = torch.randn(2, int(generator.z_dim), generator=torch.Generator().manual_seed(0))
        return [
            export_graph(
                MappingGraph(generator),
                z,
                directory / "mapping.onnx",
                input_name="z",
                output_name="w",
                settings=settings,
                meta=common,
            )
        ]
    if part == "synthesis":
        return [
            export_graph(
                SynthesisGraph(generator),
                example,
                directory / "synthesis.onnx",
                input_name="wp",
                output_name="images",
                settings=settings,
                meta=common,
            )
        ]
    if part == "predictors":
        readers = feature_readers(predictors)
        if len(readers) == len(predictors):
            raise ExportError(
                f"predictor(s) {', '.join(readers.values())} read generator features, not images, "
                f"so they cannot be exported alone; export them inside the fused pass "
                f"(--part fused)"
            )
        for description in readers.values():
            log.warning(
                "predictor %s reads generator features: exported only inside the fused pass "
                "(fused.onnx)",
                description,
            )
        with torch.no_grad():
            images = generator.synthesize(example)  # [2, 3, H, W]: realistic example inputs
        return [
            export_graph(
                predictor,
                images,
                directory / f"predictor_{index}.onnx",
                input_name="images",
                output_name="scores",
                settings=settings,
                meta={**common, "semantic_names": list(predictor.semantic_names)},
            )
            for index, predictor in enumerate(predictors)
            if index not in readers
        ]
    if part == "staged" or STAGED_GRAPH.fullmatch(part):
        from .staged import export_staged

        only = None if part == "staged" else part
        return export_staged(
            generator, predictors, directory, settings=settings, meta=common, only=only
        )
    if part == "fused":
        scoring_pass = ScoringPass(generator, predictors)
        return [
            export_graph(
                scoring_pass,
                example,
                directory / "fused.onnx",
                input_name="wp",
                output_name="scores",
                settings=settings,
                meta={**common, "semantic_names": list(scoring_pass.semantic_names)},
            )
        ]
    raise ExportError(f"unknown export part '{part}'; choose from {', '.join(PARTS)}")


def feature_readers(predictors: Sequence[Predictor]) -> dict[int, str]:
    """Index -> description of the predictors that read generator features (`reads_features`,
    LinearGAN): they run only inside the fused pass, which hands them the features."""
    return {
        index: f"{index} ({type(predictor).__name__})"
        for index, predictor in enumerate(predictors)
        if getattr(predictor, "reads_features", None)
    }


def export_onnx(
    generator: Generator,
    predictors: Sequence[Predictor],
    out_dir: Path | str,
    *,
    settings: ExportSettings = ExportSettings(),
    parts: Sequence[str] | None = None,
    sources: dict[str, Any] | None = None,
) -> ExportResult:
    """Export the mapping, synthesis, each predictor and the fused pass to `out_dir`.

    `parts` None: every part that applies (``predictors`` is left out, saying so, when every
    predictor reads generator features). `sources` (e.g. `ModelSpec.identity()`: names and
    checkpoint SHA-256s) is recorded in every sidecar beside the digest of the weights themselves.
    Returns the files written, by part name (``mapping``, ``synthesis``, ``predictor_0``, ...,
    ``fused``).
    """
    if parts is None:
        parts = PARTS
        readers = feature_readers(predictors)
        if len(readers) == len(predictors):
            parts = tuple(p for p in PARTS if p != "predictors")
            log.warning(
                "predictor(s) %s read generator features: exported only inside the fused pass "
                "(fused.onnx)",
                ", ".join(readers.values()),
            )
    unknown = [p for p in parts if p not in PARTS + OPTIONAL_PARTS]
    if unknown:
        raise ExportError(
            f"unknown export part(s) {', '.join(unknown)}; choose from {PARTS + OPTIONAL_PARTS}"
        )
    meta = {"model_digest": model_digest(generator, predictors), "sources": sources}
    graphs: dict[str, ExportedGraph] = {}
    for part in parts:
        for graph in export_part(
            part, generator, predictors, Path(out_dir), settings=settings, meta=meta
        ):
            graphs[graph.path.stem] = graph
    return ExportResult(Path(out_dir), graphs)


def _batch_axes(module: nn.Module, count: int, batch: Any) -> tuple:
    """torch.export's dynamic shapes: axis 0 of every input is the batch (a forward taking
    ``*inputs`` gets them as one nested tuple)."""
    axes = tuple({0: batch} for _ in range(count))
    kinds = [p.kind for p in inspect.signature(module.forward).parameters.values()]
    return (axes,) if kinds == [inspect.Parameter.VAR_POSITIONAL] else axes


def read_sidecar(path: Path) -> ExportedGraph:
    """Read ``<file>.json`` beside an exported ``<file>.onnx``; clear errors for bad files."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        raise ExportError(
            f"{path} or its sidecar {side.name} is missing; export it with `rescore export`"
        )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"sidecar {side} is not valid JSON ({error}); export again") from error
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise ExportError(f"{side} is not a rescore ONNX sidecar; export again")
    if meta.get("format_version") != SIDECAR_VERSION:
        raise ExportError(
            f"{side} has sidecar format {meta.get('format_version')}, this rescore reads "
            f"{SIDECAR_VERSION}; export again with this version"
        )
    _check_sidecar(path, side, meta)
    return ExportedGraph(path, meta)


# part file stem -> (input name, output name) that `export_part` writes
_PART_IO = {
    "mapping": ("z", "w"),
    "synthesis": ("wp", "images"),
    "fused": ("wp", "scores"),
    "scorer": ("images", "scores"),
}


def _check_sidecar(path: Path, side: Path, meta: dict[str, Any]) -> None:
    """Refuse sidecars with missing keys, another part's graph, or unsafe external data names."""
    fix = "export again with `rescore export`"
    missing = [
        key
        for key, kind in (
            ("file", str),
            ("external_data", list),
            ("inputs", list),
            ("outputs", list),
            ("onnx_sha256", str),
        )
        if not isinstance(meta.get(key), kind)
    ]
    if missing:
        raise ExportError(f"sidecar {side} lacks {', '.join(missing)}; {fix}")
    if meta["file"] != path.name:
        raise ExportError(
            f"sidecar {side} describes {meta['file']}, not {path.name} (files swapped?); {fix}"
        )
    stem = path.stem
    many = re.fullmatch(r"stage_\d+", stem) is not None  # a stage hands on several tensors
    for entries in (meta["inputs"], meta["outputs"]):
        named = all(isinstance(e, dict) and "name" in e for e in entries)
        if not named or not (len(entries) >= 1 if many else len(entries) == 1):
            raise ExportError(f"sidecar {side} must list one input and one output; {fix}")
    expected = _PART_IO.get(stem, ("images", "scores") if stem.startswith("predictor_") else None)
    names = (meta["inputs"][0]["name"], meta["outputs"][0]["name"])
    if expected is not None and names != expected:
        raise ExportError(
            f"{path.name} takes {names[0]} -> {names[1]}, expected {expected[0]} -> "
            f"{expected[1]} for the {stem} part (another part's graph?); {fix}"
        )
    for name in meta["external_data"]:
        external_data_path(path, name)


def external_data_path(path: Path, name: object) -> Path:
    """The external data file `name` of graph `path`: a plain file name in the graph's own
    directory. Anything else (``../../etc/passwd``, absolute paths, sub-directories) is refused,
    so a sidecar can never make rescore read or hash files elsewhere."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or Path(name).name != name
        or "/" in name
        or "\\" in name
    ):
        raise ExportError(
            f"sidecar of {path} names external data {name!r} outside the graph's directory; "
            f"external data must be a file beside the graph (export again)"
        )
    return Path(path).parent / name


def sidecar_path(path: Path) -> Path:
    """``dir/fused.onnx`` -> ``dir/fused.json``."""
    return Path(path).with_suffix(".json")


def file_digest(path: Path, external_data: Sequence[str] = ()) -> str:
    """SHA-256 of an ONNX file and, in sorted order, of its external data files."""
    path = Path(path)
    digest = hashlib.sha256(sha256_file(path).encode())
    for name in sorted(external_data):
        data = external_data_path(path, name)
        digest.update(sha256_file(data).encode() if data.is_file() else b"missing")
    return digest.hexdigest()


def float32_nodes(proto: Any, module_types: Sequence[type[nn.Module]] = FLOAT32_MODULES) -> list:
    """Names of the ONNX nodes exported from inside a module of `module_types`.

    Read from the exporter's per-node metadata (``pkg.torch.onnx.class_hierarchy``).
    """
    wanted = {f"{t.__module__}.{t.__qualname__}" for t in module_types}
    names = []
    for node in proto.graph.node:
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.class_hierarchy" and any(
                w in prop.value for w in wanted
            ):
                names.append(node.name)
                break
    return names


def _check(path: Path, opset: int) -> Any:
    """onnx.checker on the saved file (by path, so external data is fine); return the proto."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the exported graph fails onnx.checker: {error}") from error
    proto = onnx.load(str(path), load_external_data=False)
    if _default_opset(proto) != opset:
        raise ExportError(
            f"the exporter wrote opset {_default_opset(proto)} instead of {opset}; "
            f"use --opset {_default_opset(proto)}"
        )
    return proto


def _default_opset(proto: Any) -> int:
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _external_files(proto: Any) -> set[str]:
    """File names of the external data the initializers point to."""
    files = set()
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                files.add(entry.value)
    return files


def _value_info(value: Any) -> dict[str, Any]:
    """{'name', 'shape' (ints and axis names), 'dtype'} of a graph input or output."""
    tensor = value.type.tensor_type
    shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return {"name": value.name, "shape": shape, "dtype": dtype}


def _example_codes(generator: Generator) -> torch.Tensor:
    """Seeded codes wp [2, L, D] near the model's typical range (w_avg + unit noise)."""
    noise = torch.randn(
        2,
        int(generator.num_layers),
        int(generator.w_dim),
        generator=torch.Generator().manual_seed(0),
    )
    w_avg = generator.average_w().detach().float().cpu().view(1, 1, -1)
    device = next(iter(_tensors(generator)), torch.empty(0)).device
    return (w_avg + noise).to(device)  # [2, L, D]


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def _weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(module))


def _summary(error: BaseException) -> str:
    """The exporter's own one-line diagnosis (its '<class ...>: ...' summary lines), unstyled."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error.__cause__ or error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("<class")]
    summary = causes[0] if causes else (lines[0] if lines else type(error).__name__)
    return summary if len(summary) <= 400 else summary[:397] + "..."


def _write_json(path: Path, value: dict[str, Any]) -> None:
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(staged, path)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress chatter and its libraries' info logs and warnings."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # Modules that cache constant tensors as plain attributes (the resize matrices) get
            # them baked into the graph as constants, which is what we want.
            warnings.filterwarnings("ignore", message=".*assigned during export")
            # Graphs with several batched inputs (staged graphs) share one batch axis; said once.
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
