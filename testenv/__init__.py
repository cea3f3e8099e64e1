"""kubevision's test environment: what the integration tests, ``scripts/dev-cluster`` and
``benchmarks/`` start and drive.

- ``controlplane``: a real Kubernetes control plane (etcd, kube-apiserver, controller manager,
  scheduler) built from Go and run on loopback; docs/control-plane.md.
- ``nodeagent``: a kubelet that runs the Pods bound to its Node as local processes;
  docs/node-agent.md.
- ``operator_helpers``: the real operator as a process, and waiting for what it writes.
- ``scale``: the operator's scale workload and its stand-in trainer; docs/scale.md.
- ``fixtures``: the pytest fixtures ``control_plane`` and ``node_agent``.

It is installed with the project (it needs the ``dev`` extra); no product package imports it
(an import-linter contract in pyproject.toml).
"""
