"""facegate: the face-recognition entrance and the MLOps loop behind it.

One installed import name, ``facegate``, so nothing generic (``components``, ``flows``, ``benchmarks``)
lands at the top of site-packages. The card's folders stay at the top of the repository; this package
links them in (``facegate.components`` is ``components/``, ``facegate.flows`` is ``flows/``,
``facegate.benchmarks`` is ``benchmarks/``), and holds the CLI adapter itself (``facegate.cli``).
See docs/decisions/installed-names.md.
"""
