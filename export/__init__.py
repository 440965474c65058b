"""rescore.export: compiled scoring passes.

    onnx.py      torch -> ONNX (`export_onnx`, `export_graph`), JSON sidecars
    graphs.py    where a session finds its graphs: the export cache or user-exported files
    cache.py     cache keys (model digest, `EngineKey`) and the TensorRT engine cache
    ort.py       ONNX Runtime session (CPU / CUDA EP)
    tensorrt.py  ONNX -> TensorRT engine -> session
    session.py   the `ScoringSession` protocol and the torch reference session
    backends.py  `open_session`: the one place that picks a backend

Importing this package imports nothing heavy; each module imports what it needs.
"""
