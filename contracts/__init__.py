"""What the pipeline, the service and monitoring agree on, in one small package.

- `imaging`: how a photograph becomes model input (PIL and NumPy only).
- `bundle`: the typed `model.json` of the exported bundle, with its checks.
- `drift`: how predictions are binned and compared with the bundle's reference (PSI).
- `classification`: the one implementation of accuracy, precision, recall and F1.
- `registry`: which promoted (MLflow-registered) model a bundle is, if any.

It imports none of `stages`, `serving` or `monitoring` (import-linter keeps it so), and no
torch: the service image carries it.
"""
