"""The operator's scale workload: manifests and settings (``workload``), a stand-in trainer
(``stub_trainer``), a watch-based ``recorder`` and the ``figures`` of a run. Shared by
``tests/integration/test_scale.py`` and ``benchmarks/operator_scale.py``; see docs/scale.md.

``stub_trainer.py`` runs as a script inside the trainer's container, with this folder first on
``sys.path``: no module here may share a name with a standard-library module.
"""
