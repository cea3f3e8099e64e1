"""The kubevision operator: ModelVersions in, training Jobs out, status kept true.

One job per module, and imports run downwards only (pyproject's "Operator layers" contract;
docs/operator.md, Modules)::

    main > registry > runtime > scheduling | servers > reconcile > reports
      > kube | metrics | tls | render | status | viewstatus | queue
      > statustable > observe > jobstate | naming | settings

``render``, ``status``, ``viewstatus``, ``queue``, ``statustable``, ``observe``, ``jobstate``,
``naming`` and ``settings`` are pure: no Kubernetes client, no kopf, no HTTP, no clock, no
randomness. Each third-party client enters through one module: ``kubernetes`` through
``kube``, ``aiohttp`` through ``servers``, ``prometheus_client`` through ``metrics``; ``kopf``
is imported by ``registry`` and ``main`` alone.
"""
