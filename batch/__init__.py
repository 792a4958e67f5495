"""Batch scoring: `cats-dogs-batch` scores a folder, a list of paths or an S3 prefix with
the served bundle and writes one row per file (docs/batch.md).

It imports only the core (`contracts`: the image contract, the bundle) and ONNX Runtime,
not `serving.inference`: the service's engine is built for latency (an event loop, a
bounded decode pool, a micro-batching thread), a batch run for throughput over every
core (a process pool, each process decoding and running its own chunk).
"""
