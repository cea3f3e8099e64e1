"""Every Kubernetes API call of the operator, with the official client: the one module of the
operator that imports ``kubernetes`` (pyproject's import contracts), the client's
configuration included (:func:`load_config`). Objects travel as plain dicts in the API's own
camelCase (``_preload_content=False``), as the renderers make them. API failures are
translated once, here, into ``KubeError`` naming kind, namespace and name."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config import incluster_config

from kubevision_api.meta import GROUP, VERSION

log = logging.getLogger(__name__)

Obj = dict[str, Any]
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
#: Where Kubernetes mounts the Pod's ServiceAccount token and the cluster CA.
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Environment variable that moves that folder (a test node agent mounts volumes elsewhere).
SERVICEACCOUNT_DIR_ENV = "KUBEVISION_SERVICEACCOUNT_DIR"


def serviceaccount_dir() -> Path:
    """The folder of the in-cluster ``token`` and ``ca.crt``: ``$KUBEVISION_SERVICEACCOUNT_DIR``
    or the standard path."""
    return Path(os.environ.get(SERVICEACCOUNT_DIR_ENV) or SERVICEACCOUNT_DIR)


def load_config() -> None:
    """Configure the kubernetes client: in-cluster (the ServiceAccount token and CA in
    :func:`serviceaccount_dir`, ``KUBERNETES_SERVICE_HOST``/``PORT``), else the kubeconfig."""
    folder = serviceaccount_dir()
    token, cert = str(folder / "token"), str(folder / "ca.crt")
    # kopf logs in with these same credentials (the registry's login, client_credentials).
    try:
        incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
            token_filename=token, cert_filename=cert
        ).load_and_set()
        log.info("kubevision operator: in-cluster configuration from %s", folder)
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Caller:
    """Who holds a token, as TokenReview says: a ServiceAccount, and the Pod a bound token
    was issued for (trainers' reports carry such a token)."""

    namespace: str
    service_account: str
    pod_name: str | None
    pod_uid: str | None


class KubeError(RuntimeError):
    """An API call failed; the message names the object."""

    def __init__(self, what: str, exc: ApiException) -> None:
        reason = exc.reason
        # The API's Status object says more than the HTTP reason, when there is one.
        with contextlib.suppress(ValueError, AttributeError):
            reason = json.loads(exc.body or "{}").get("message", reason)
        super().__init__(f"{what}: {exc.status} {reason}")
        self.status = exc.status


def _data(response: Any) -> Obj:
    data: Obj = json.loads(response.data)
    return data


#: ``on_request(verb, resource)``: called once per API request (``resource`` with its
#: subresource, e.g. ``modelversions/status``); the operator counts them in a metric.
RequestHook = Callable[[str, str], None]


def _ignore(verb: str, resource: str) -> None:
    return None


class Kube:
    """The operator's API calls.

    Args:
        api: a configured ``kubernetes.client.ApiClient``; None: one with the configuration
            of :func:`load_config`.
        on_request: told of each request made (verb, resource), before it is made.
    """

    def __init__(
        self, api: client.ApiClient | None = None, on_request: RequestHook = _ignore
    ) -> None:
        api = api if api is not None else client.ApiClient()
        self.on_request = on_request
        #: Views as the last watch event showed them (fed by the handlers); get_view reads
        #: the API only for a View no event has shown yet.
        self._views: dict[tuple[str, str], Obj] = {}
        #: resourceVersion of each object after the operator's last status patch.
        self._written: dict[tuple[str, str, str], str] = {}
        self._cache_lock = threading.Lock()
        # Typed as Any: bodies go out as plain dicts, which the client accepts and its
        # stubs do not describe.
        self.core: Any = client.CoreV1Api(api)
        self.batch: Any = client.BatchV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)
        self.authn: Any = client.AuthenticationV1Api(api)

    # --- kubevision resources --------------------------------------------------------------

    def _get_custom(self, plural: str, namespace: str, name: str) -> Obj | None:
        self.on_request("get", plural)
        try:
            obj: Obj = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"{plural} {namespace}/{name}", exc) from exc
        return obj

    def get_view(self, namespace: str, name: str) -> Obj | None:
        """The View, or None if it does not exist: from the watch's cache when an event has
        shown it (an informer's view: as fresh as the watch), else from the API."""
        with self._cache_lock:
            cached = self._views.get((namespace, name))
        if cached is not None:
            return cached
        return self._get_custom("views", namespace, name)

    def view_seen(self, obj: Obj) -> None:
        """A watch event showed this View (as it is now)."""
        meta = obj["metadata"]
        with self._cache_lock:
            self._views[(meta["namespace"], meta["name"])] = obj

    def view_gone(self, namespace: str, name: str) -> None:
        """A watch event showed the View deleted."""
        with self._cache_lock:
            self._views.pop((namespace, name), None)

    def own_status_write(self, plural: str, obj: Obj) -> bool:
        """Whether ``obj`` (from a watch event) is exactly what the operator's last status
        patch of it left: an echo of its own write, with nothing new to reconcile."""
        meta = obj.get("metadata") or {}
        key = (plural, str(meta.get("namespace")), str(meta.get("name")))
        with self._cache_lock:
            written = self._written.get(key)
        return written is not None and written == meta.get("resourceVersion")

    def forget_writes(self, plural: str, namespace: str, name: str) -> None:
        """The object was deleted: drop what :meth:`own_status_write` remembers of it."""
        with self._cache_lock:
            self._written.pop((plural, namespace, name), None)

    def get_modelversion(self, namespace: str, name: str) -> Obj | None:
        """The ModelVersion, or None if it does not exist."""
        return self._get_custom("modelversions", namespace, name)

    def list_modelversions(self, namespace: str | None = None) -> list[Obj]:
        """ModelVersions of one namespace, or of the cluster."""
        self.on_request("list", "modelversions")
        try:
            if namespace:
                result = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "modelversions"
                )
            else:
                result = self.custom.list_cluster_custom_object(GROUP, VERSION, "modelversions")
        except ApiException as exc:
            raise KubeError(f"modelversions in {namespace or 'all namespaces'}", exc) from exc
        items: list[Obj] = result.get("items", [])
        return items

    def patch_status(self, plural: str, namespace: str, name: str, status: Obj) -> Obj | None:
        """Merge-patch ``status`` through the status subresource; None if the object is gone."""
        self.on_request("patch", f"{plural}/status")
        try:
            obj: Obj = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status}
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"{plural} {namespace}/{name} status", exc) from exc
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            with self._cache_lock:
                self._written[(plural, namespace, name)] = str(version)
        return obj

    # --- children --------------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> Obj | None:
        """The Job, or None."""
        self.on_request("get", "jobs")
        try:
            return _data(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"Job {namespace}/{name}", exc) from exc

    def create_job(self, namespace: str, body: Obj) -> tuple[Obj, bool]:
        """Create the Job, or adopt the one that exists: returns (job, created)."""
        name = body["metadata"]["name"]
        self.on_request("create", "jobs")
        try:
            job = _data(self.batch.create_namespaced_job(namespace, body, _preload_content=False))
        except ApiException as exc:
            if exc.status != 409:
                raise KubeError(f"Job {namespace}/{name}", exc) from exc
            existing = self.get_job(namespace, name)
            if existing is None:
                raise KubeError(f"Job {namespace}/{name}", exc) from exc
            return existing, False
        return job, True

    def patch_job(self, namespace: str, name: str, patch: Obj) -> Obj | None:
        """Merge-patch the Job (``spec.suspend``, ``activeDeadlineSeconds``); None if gone."""
        self.on_request("patch", "jobs")
        try:
            return _data(
                self.batch.patch_namespaced_job(name, namespace, patch, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"Job {namespace}/{name}", exc) from exc

    def list_pods(self, namespace: str, label_selector: str) -> list[Obj]:
        """Pods of one namespace matching the selector."""
        self.on_request("list", "pods")
        try:
            response = self.core.list_namespaced_pod(
                namespace, label_selector=label_selector, _preload_content=False
            )
        except ApiException as exc:
            raise KubeError(f"Pods {namespace}/{label_selector}", exc) from exc
        items: list[Obj] = _data(response).get("items", [])
        return items

    def get_pod(self, namespace: str, name: str) -> Obj | None:
        """The Pod, or None."""
        self.on_request("get", "pods")
        try:
            return _data(self.core.read_namespaced_pod(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"Pod {namespace}/{name}", exc) from exc

    def create_configmap(self, namespace: str, body: Obj) -> bool:
        """Create the ConfigMap; False when it exists already (it is immutable: the plan)."""
        self.on_request("create", "configmaps")
        try:
            self.core.create_namespaced_config_map(namespace, body, _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise KubeError(f"ConfigMap {namespace}/{body['metadata']['name']}", exc) from exc
        return True

    # --- authentication --------------------------------------------------------------------

    def token_review(self, token: str, audience: str) -> Caller | None:
        """Who holds ``token``, if the API server accepts it for ``audience`` and it was
        issued to a ServiceAccount; None otherwise. A token bound to a Pod names the Pod, and
        stops being accepted when the Pod is deleted."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        self.on_request("create", "tokenreviews")
        try:
            review = _data(self.authn.create_token_review(body, _preload_content=False))
        except ApiException as exc:
            raise KubeError("TokenReview", exc) from exc
        status = review.get("status", {})
        if not status.get("authenticated") or audience not in status.get("audiences", []):
            return None
        user = status.get("user", {})
        parts = str(user.get("username", "")).split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            return None
        extra = user.get("extra", {})
        pod_name = (extra.get(POD_NAME_EXTRA) or [None])[0]
        pod_uid = (extra.get(POD_UID_EXTRA) or [None])[0]
        return Caller(parts[2], parts[3], pod_name, pod_uid)

    # --- events ----------------------------------------------------------------------------

    def post_event(self, body: Obj) -> None:
        """Post an Event (``render.render_event``); a failure is logged only (events are best
        effort)."""
        self.on_request("create", "events")
        try:
            self.core.create_namespaced_event(
                body["metadata"]["namespace"], body, _preload_content=False
            )
        except ApiException as exc:
            log.warning("could not post an event: %s", KubeError("Event", exc))

    # --- secrets ---------------------------------------------------------------------------

    def ensure_secret(
        self, namespace: str, name: str, make: Callable[[], dict[str, bytes]]
    ) -> dict[str, bytes]:
        """The data of Secret ``namespace/name``, created from ``make()`` if absent (a race
        with another replica is settled by reading the winner's Secret)."""
        for _ in range(2):
            self.on_request("get", "secrets")
            try:
                secret = _data(
                    self.core.read_namespaced_secret(name, namespace, _preload_content=False)
                )
                return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            except ApiException as exc:
                if exc.status != 404:
                    raise KubeError(f"Secret {namespace}/{name}", exc) from exc
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": "Opaque",
                "data": {k: base64.b64encode(v).decode() for k, v in make().items()},
            }
            self.on_request("create", "secrets")
            try:
                self.core.create_namespaced_secret(namespace, body, _preload_content=False)
            except ApiException as exc:
                if exc.status != 409:
                    raise KubeError(f"Secret {namespace}/{name}", exc) from exc
        raise RuntimeError(f"Secret {namespace}/{name} could not be read or created")


def client_credentials() -> dict[str, Any]:
    """The credentials of the configured kubernetes client (:func:`load_config`), as the
    fields of ``kopf.ConnectionInfo``: kopf then watches with the operator's own identity,
    whether in-cluster (the token is re-read when it rotates) or from a kubeconfig."""
    cfg: Any = client.Configuration.get_default_copy()
    # auth_settings() runs the client's refresh hook (in-cluster tokens rotate) and knows the
    # key's name, which differs between client versions ("authorization", "BearerToken").
    auth = next(
        (
            str(item["value"])
            for item in cfg.auth_settings().values()
            if item.get("key") == "authorization" and item.get("value")
        ),
        "",
    )
    return {
        "server": cfg.host,
        "ca_path": cfg.ssl_ca_cert,
        "insecure": not cfg.verify_ssl,
        # The in-cluster loader writes "bearer <token>", kubeconfig tokens "Bearer <token>".
        "token": auth[7:] if auth.lower().startswith("bearer ") else None,
        "certificate_path": cfg.cert_file,
        "private_key_path": cfg.key_file,
        "username": cfg.username or None,
        "password": cfg.password or None,
    }
