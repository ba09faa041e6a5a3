"""Benchmark drivers: accuracy and speed on the full data, each result a JSON-able dict.

``lfw`` (LFW View 2 verification), ``identify`` (LFW open-set identification) and ``detect`` (the
detector's held-out mAP, speed, face AP beside dlib HOG) are run by the CLI's ``facegate bench ...``
through the Prefect flows in ``flows/bench.py`` and ``flows/detect.py``, which log them to MLflow.
``gallery_scaling`` (search cost as the gallery grows) runs from ``facegate bench gallery`` or as
``python -m facegate.benchmarks.gallery_scaling``; ``dlib_port_speed.py`` runs standalone. Each prints JSON.
"""

import facegate.components  # noqa: F401,E402  (first: its thread settings must precede torch's import)
