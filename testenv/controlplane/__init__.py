"""A real Kubernetes control plane for kubevision's integration tests and development.

``etcd``, ``kube-apiserver``, ``kube-controller-manager`` and ``kube-scheduler`` are built from
the Go module in ``hack/controlplane`` (one ``go build``, cached outside the checkout and keyed by
a hash of the module files), given a throw-away PKI and service-account signing key, and run on
free loopback ports. Two entry points share :func:`start`: the pytest fixture ``control_plane``
(``testenv.fixtures``) and ``scripts/dev-cluster`` (``python -m testenv.controlplane``). See
docs/control-plane.md.

Modules, one job each: ``build`` (versions and the cached binaries), ``pki`` (CA, certificates,
kubeconfigs), ``processes`` (start options, readiness polling, stopping by PID), ``plane`` (a
running control plane and its clients), ``launch`` (starting one), ``devcluster`` (the command
line).
"""

from testenv.controlplane.build import ensure_binaries, pinned_versions
from testenv.controlplane.launch import start
from testenv.controlplane.plane import KUBEVISION_AUDIENCE, SERVICE_ACCOUNT_ISSUER, ControlPlane
from testenv.controlplane.processes import ControlPlaneError

__all__ = [
    "KUBEVISION_AUDIENCE",
    "SERVICE_ACCOUNT_ISSUER",
    "ControlPlane",
    "ControlPlaneError",
    "ensure_binaries",
    "pinned_versions",
    "start",
]
