"""Where a compiled session finds its ONNX graphs: the export cache, or files a user exported.

    GraphFiles.cached(generator, predictors, cache_dir)   export on first use, keyed by the models
    GraphFiles.given(directory, generator, predictors)   files from `rescore export`, checked

Either way `graph(name)` returns a checked `ExportedGraph`: its sidecar must name the same models
(weights digest) and the file must still hash to what the sidecar recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from rescore.models.base import Generator, Predictor

from .cache import CorruptCacheError, discard_graph, graph_cache_key, model_digest
from .onnx import (
    STAGED_GRAPH,
    ExportedGraph,
    ExportError,
    ExportSettings,
    export_part,
    file_digest,
    read_sidecar,
)

log = logging.getLogger(__name__)

GRAPH_NAMES = ("mapping", "synthesis", "fused")


class GraphFiles:
    """The mapping, synthesis and fused graphs of one set of models, in one directory."""

    def __init__(
        self,
        directory: Path,
        digest: str,
        export: Callable[[str], object] | None,
        staged: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.model_digest = digest
        self._export = export
        # older exports' prefix/suffix files are ignored: only stage_0 marks the staged part
        self.staged = staged or (self.directory / "stage_0.onnx").is_file()

    @classmethod
    def cached(
        cls,
        generator: Generator,
        predictors: Sequence[Predictor],
        cache_dir: Path,
        settings: ExportSettings | None = None,
    ) -> GraphFiles:
        """Graphs under ``cache_dir/onnx/<key>/``, exported there the first time one is needed."""
        settings = settings or ExportSettings()
        digest = model_digest(generator, predictors)
        key = graph_cache_key(digest, asdict(settings))
        directory = Path(cache_dir) / "onnx" / key[:32]
        meta = {"model_digest": digest, "sources": None}

        def export(part: str) -> object:
            log.info("exporting the %s graph to %s (first use of these models)", part, directory)
            return export_part(part, generator, predictors, directory, settings=settings, meta=meta)

        return cls(directory, digest, export, staged=can_stage(generator, predictors))

    @classmethod
    def given(
        cls, directory: Path, generator: Generator, predictors: Sequence[Predictor]
    ) -> GraphFiles:
        """Graphs a user exported to `directory` (``rescore export``); never re-exported."""
        if not Path(directory).is_dir():
            raise ExportError(f"ONNX directory {directory} does not exist; run `rescore export`")
        return cls(Path(directory), model_digest(generator, predictors), None)

    def graph(self, name: str) -> ExportedGraph:
        """The checked graph `name` (one of `GRAPH_NAMES`, or a staged graph: ``stage_<e>``,
        ``scorer``), exporting it first if cached."""
        staged = STAGED_GRAPH.fullmatch(name) is not None
        part = "staged" if staged else name  # a user exports them together
        if not staged and name not in GRAPH_NAMES:
            raise ExportError(f"unknown graph '{name}'; choose from {', '.join(GRAPH_NAMES)}")
        path = self.directory / f"{name}.onnx"
        if not (path.is_file() and path.with_suffix(".json").is_file()):
            if self._export is None:
                raise ExportError(
                    f"{self.directory} holds no {name}.onnx; export it with "
                    f"`rescore export --part {part}` or drop --onnx-dir"
                )
            self._export(name)
        if self._export is None:
            return self._checked(path)
        try:  # a cache entry: a corrupt or foreign one is simply rebuilt
            return self._checked(path)
        except (ExportError, CorruptCacheError) as error:
            log.warning("cached %s graph is unusable (%s); exporting it again", name, error)
            discard_graph(path)
            self._export(name)
            return self._checked(path)

    def _checked(self, path: Path) -> ExportedGraph:
        """The graph at `path` if its sidecar names these models and its bytes are intact."""
        graph = read_sidecar(path)
        if graph.meta.get("model_digest") != self.model_digest:
            raise ExportError(
                f"{path} was exported from other weights or model settings than the ones loaded "
                f"now; export again with `rescore export` or drop --onnx-dir"
            )
        if file_digest(path, graph.meta.get("external_data", ())) != graph.meta["onnx_sha256"]:
            raise CorruptCacheError(
                f"{path} no longer matches the digest its sidecar recorded (truncated or "
                f"altered); export it again with `rescore export` or drop --onnx-dir"
            )
        return graph


def can_stage(generator: Generator, predictors: Sequence[Predictor]) -> bool:
    """Whether the ``staged`` graphs can be exported: synthesis has stages and every predictor
    reads images (not generator features)."""
    from .prefix import synthesis_stages

    reads_features = any(getattr(p, "reads_features", None) for p in predictors)
    return not reads_features and synthesis_stages(generator) is not None
