"""Offline monitoring of the deployed model: reports, history, drift statistics, traffic.

Reads the store the service writes (serving.store); the service never imports this
package, so the request path stays small. `python -m monitoring report --help`.
"""
