"""The prediction core, free of HTTP: bytes -> decode pool -> micro-batcher -> ONNX Runtime.

`Engine` (engine.py) owns the life cycle (load, warm up, drain, supervise the batcher);
`Predictor` (predictor.py) runs requests through it under their deadlines.
"""
