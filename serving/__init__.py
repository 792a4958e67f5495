"""The prediction service.

NumPy's OpenBLAS starts a worker thread per core that spins while it waits for work. The
service's only BLAS calls are the out-of-distribution score's small matrix products
(a few photos x 1280 features), where that spinning cost more CPU than the int8 graph
itself (4.6 ms a request on two cores); the service's own threads already use every
core. So OpenBLAS gets one thread, unless the environment says otherwise. This runs
before NumPy is first imported by `python -m serving` or `uvicorn serving.app:app`.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
