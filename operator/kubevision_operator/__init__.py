"""The kubevision operator: ModelVersions in, training Jobs out, status kept true.

Layers (STYLE.md): ``handlers > kube > render | status > observe > settings``. The modules
below ``kube`` are pure: no Kubernetes client, no clock, no randomness.
"""
