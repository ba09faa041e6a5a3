"""Benchmark drivers: accuracy and speed on the full data, each result a JSON-able dict.

``lfw`` (LFW View 2 verification), ``identify`` (LFW open-set identification) and ``detect`` (the
detector's held-out mAP, speed, face AP beside dlib HOG) are run by the CLI's ``facegate bench ...``
through the Prefect flows in ``flows/bench.py`` and ``flows/detect.py``, which log them to MLflow.
The scripts beside them (``gallery_scaling.py``, ``dlib_port_speed.py``) run standalone and print JSON.
"""
