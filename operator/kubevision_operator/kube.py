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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
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
    """An API call failed; the message names the object. ``status`` is the HTTP status, or
    None when no answer came (a timeout, a lost connection)."""

    def __init__(self, what: str, exc: Exception) -> None:
        self.status: int | None = None
        if isinstance(exc, ApiException):
            self.status = exc.status
            reason = exc.reason
            # The API's Status object says more than the HTTP reason, when there is one.
            with contextlib.suppress(ValueError, AttributeError):
                reason = json.loads(exc.body or "{}").get("message", reason)
            super().__init__(f"{what}: {exc.status} {reason}")
        else:
            super().__init__(f"{what}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class RequestPolicy:
    """Bounds of every API request (``settings.api_*``).

    Attributes:
        connect_timeout, read_timeout: seconds (urllib3's per-request timeouts): a connection
            that a load balancer silently dropped fails after ``read_timeout`` instead of
            holding its reconcile forever.
        attempts: tries of a request that is safe to repeat, the first included.
        backoff: seconds before the second try, doubled before each later one.
    """

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    attempts: int = 3
    backoff: float = 0.5


#: Answers worth another try: throttled (API priority and fairness), or the server's trouble.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: No answer: a timeout, a reset or refused connection (urllib3 wraps most in HTTPError).
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


def _decode(response: Any) -> Obj:
    """The JSON body of a response made with ``_preload_content=False``: read here, so that
    the read timeout and its errors belong to the request."""
    data: Obj = json.loads(response.data)
    return data


#: ``on_request(verb, resource)``: called once per API request (``resource`` with its
#: subresource, e.g. ``modelversions/status``); the operator counts them in a metric.
RequestHook = Callable[[str, str], None]


def _ignore(verb: str, resource: str) -> None:
    return None


class Kube:
    """The operator's API calls, each bounded by ``policy``'s timeouts and, where repeating it
    is safe, retried with backoff.

    Args:
        api: a configured ``kubernetes.client.ApiClient``; None: one with the configuration
            of :func:`load_config`.
        on_request: told of each request made (verb, resource), before it is made.
        policy: timeouts and tries.
        sleep: waits between tries (injectable for tests).
    """

    def __init__(
        self,
        api: client.ApiClient | None = None,
        on_request: RequestHook = _ignore,
        policy: RequestPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        api = api if api is not None else client.ApiClient()
        self.on_request = on_request
        self.policy = policy or RequestPolicy()
        self._sleep = sleep
        #: resourceVersion of each object after the operator's last status patch.
        self._written: dict[tuple[str, str, str], str] = {}
        self._cache_lock = threading.Lock()
        # Typed as Any: bodies go out as plain dicts, which the client accepts and its
        # stubs do not describe.
        self.core: Any = client.CoreV1Api(api)
        self.batch: Any = client.BatchV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)
        self.authn: Any = client.AuthenticationV1Api(api)
        self.apiext: Any = client.ApiextensionsV1Api(api)

    def _call(
        self,
        verb: str,
        resource: str,
        what: str,
        method: Callable[..., Any],
        *args: Any,
        missing_ok: bool = False,
        retry: bool = True,
        **kwargs: Any,
    ) -> Obj | None:
        """One API request: ``method(*args, **kwargs)`` with the policy's timeouts, its body
        decoded. Retried (when ``retry``) after a timeout, a lost connection, 429 or 5xx.

        Returns:
            The decoded body; None for 404 when ``missing_ok``.

        Raises:
            KubeError: the API answered otherwise, or no answer came after the last try.
        """
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        attempts = self.policy.attempts if retry else 1
        delay = self.policy.backoff
        for attempt in range(1, attempts + 1):
            self.on_request(verb, resource)
            try:
                response = method(*args, _request_timeout=timeout, _preload_content=False, **kwargs)
                return _decode(response)
            except ApiException as exc:
                if exc.status == 404 and missing_ok:
                    return None
                if exc.status not in _RETRY_STATUSES or attempt == attempts:
                    raise KubeError(what, exc) from exc
                failure: Exception = exc
            except _TRANSPORT_ERRORS as exc:
                if attempt == attempts:
                    raise KubeError(what, exc) from exc
                failure = exc
            log.warning("%s: %s (try %d of %d)", what, KubeError(what, failure), attempt, attempts)
            self._sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    # --- kubevision resources --------------------------------------------------------------

    def _get_custom(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self._call(
            "get",
            plural,
            f"{plural} {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            missing_ok=True,
        )

    def own_status_write(self, plural: str, obj: Obj) -> bool:
        """Whether ``obj`` (from a watch event) is exactly what the operator's last write of
        it (a status patch, the completion annotation) left: an echo of its own write, with
        nothing new to reconcile."""
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

    def list_objects(self, plural: str, namespace: str | None, label_selector: str | None) -> Obj:
        """One list of ``plural`` (``modelversions``, ``views``, ``jobs``, ``pods``) in
        ``namespace`` (None: every namespace), as the API returns it (``items`` and the list's
        ``metadata.resourceVersion``). The reconcile reads from the watches' caches; this is
        for their resync.

        Raises:
            KubeError: the list failed; KeyError: another plural.
        """
        what = f"{plural} in {namespace or 'all namespaces'}"
        call: Callable[..., Any]
        args: tuple[str, ...]
        if plural in ("modelversions", "views"):
            if namespace:
                call = self.custom.list_namespaced_custom_object
                args = (GROUP, VERSION, namespace, plural)
            else:
                call, args = self.custom.list_cluster_custom_object, (GROUP, VERSION, plural)
        elif plural == "jobs":
            if namespace:
                call, args = self.batch.list_namespaced_job, (namespace,)
            else:
                call, args = self.batch.list_job_for_all_namespaces, ()
        elif plural == "pods":
            if namespace:
                call, args = self.core.list_namespaced_pod, (namespace,)
            else:
                call, args = self.core.list_pod_for_all_namespaces, ()
        else:
            raise KeyError(plural)
        if label_selector:
            found = self._call("list", plural, what, call, *args, label_selector=label_selector)
        else:
            found = self._call("list", plural, what, call, *args)
        return found or {}

    def patch_status(self, plural: str, namespace: str, name: str, status: Obj) -> Obj | None:
        """Merge-patch ``status`` through the status subresource (the same patch twice is the
        same status: safe to repeat); None if the object is gone."""
        obj = self._call(
            "patch",
            f"{plural}/status",
            f"{plural} {namespace}/{name} status",
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": status},
            missing_ok=True,
        )
        return self._own_write(plural, namespace, name, obj)

    def annotate_modelversion(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> Obj | None:
        """Merge-patch annotations onto a ModelVersion (metadata: the status subresource
        cannot write them, and ``metadata.generation`` does not change); None if it is gone
        or the write is forbidden (logged: RBAC without ``patch`` on modelversions)."""
        try:
            obj = self._call(
                "patch",
                "modelversions",
                f"modelversions {namespace}/{name} annotations",
                self.custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "modelversions",
                name,
                {"metadata": {"annotations": annotations}},
                missing_ok=True,
            )
        except KubeError as exc:
            if exc.status != 403:
                raise
            log.warning("%s (the chart's Role grants it: upgrade the chart)", exc)
            return None
        return self._own_write("modelversions", namespace, name, obj)

    def _own_write(self, plural: str, namespace: str, name: str, obj: Obj | None) -> Obj | None:
        """Remember the resourceVersion a write of the operator's left
        (:meth:`own_status_write`); returns ``obj``."""
        if obj is None:
            return None
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            with self._cache_lock:
                self._written[(plural, namespace, name)] = str(version)
        return obj

    # --- children --------------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> Obj | None:
        """The Job, or None."""
        return self._call(
            "get",
            "jobs",
            f"Job {namespace}/{name}",
            self.batch.read_namespaced_job,
            name,
            namespace,
            missing_ok=True,
        )

    def create_job(self, namespace: str, body: Obj) -> tuple[Obj, bool]:
        """Create the Job, or adopt the one that exists (a repeated create after a lost answer
        finds its own Job): returns (job, created)."""
        name = body["metadata"]["name"]
        what = f"Job {namespace}/{name}"
        try:
            job = self._call(
                "create", "jobs", what, self.batch.create_namespaced_job, namespace, body
            )
        except KubeError as exc:
            if exc.status != 409:
                raise
            existing = self.get_job(namespace, name)
            if existing is None:
                raise
            return existing, False
        assert job is not None
        return job, True

    def patch_job(self, namespace: str, name: str, patch: Obj) -> Obj | None:
        """Merge-patch the Job (``spec.suspend``, ``activeDeadlineSeconds``); None if gone."""
        return self._call(
            "patch",
            "jobs",
            f"Job {namespace}/{name}",
            self.batch.patch_namespaced_job,
            name,
            namespace,
            patch,
            missing_ok=True,
        )

    def delete_job(self, namespace: str, name: str, *, foreground: bool = False) -> bool:
        """Delete the Job and its Pods: in the background, or (``foreground``) with the Job
        kept, marked for deletion, until its Pods are gone (a gang restart: the next attempt's
        Job, of the same name, cannot exist before the old Pods have ended). False when it was
        gone already."""
        result = self._call(
            "delete",
            "jobs",
            f"Job {namespace}/{name}",
            self.batch.delete_namespaced_job,
            name,
            namespace,
            body={"propagationPolicy": "Foreground" if foreground else "Background"},
            missing_ok=True,
        )
        return result is not None

    def delete_pod(self, namespace: str, name: str) -> bool:
        """Delete the Pod (gracefully); False when it was gone already."""
        result = self._call(
            "delete",
            "pods",
            f"Pod {namespace}/{name}",
            self.core.delete_namespaced_pod,
            name,
            namespace,
            missing_ok=True,
        )
        return result is not None

    def get_pod(self, namespace: str, name: str) -> Obj | None:
        """The Pod, or None."""
        return self._call(
            "get",
            "pods",
            f"Pod {namespace}/{name}",
            self.core.read_namespaced_pod,
            name,
            namespace,
            missing_ok=True,
        )

    def create_configmap(self, namespace: str, body: Obj) -> bool:
        """Create the ConfigMap; False when it exists already (it is immutable: the plan)."""
        what = f"ConfigMap {namespace}/{body['metadata']['name']}"
        try:
            self._call(
                "create",
                "configmaps",
                what,
                self.core.create_namespaced_config_map,
                namespace,
                body,
            )
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def get_service(self, namespace: str, name: str) -> Obj | None:
        """The Service, or None."""
        return self._call(
            "get",
            "services",
            f"Service {namespace}/{name}",
            self.core.read_namespaced_service,
            name,
            namespace,
            missing_ok=True,
        )

    def create_service(self, namespace: str, body: Obj) -> bool:
        """Create the Service; False when it exists already (a multi-Pod training's headless
        Service outlives each attempt's Job)."""
        what = f"Service {namespace}/{body['metadata']['name']}"
        try:
            self._call(
                "create", "services", what, self.core.create_namespaced_service, namespace, body
            )
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def delete_service(self, namespace: str, name: str) -> bool:
        """Delete the Service; False when it was gone already."""
        result = self._call(
            "delete",
            "services",
            f"Service {namespace}/{name}",
            self.core.delete_namespaced_service,
            name,
            namespace,
            missing_ok=True,
        )
        return result is not None

    # --- CustomResourceDefinitions ---------------------------------------------------------

    def get_crd(self, name: str) -> Obj | None:
        """The CustomResourceDefinition ``name`` (``modelversions.kubevision.dev``) as
        installed, or None if it is not (the start-up check, ``crdcheck``)."""
        return self._call(
            "get",
            "customresourcedefinitions",
            f"CustomResourceDefinition {name}",
            self.apiext.read_custom_resource_definition,
            name,
            missing_ok=True,
        )

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
        review = self._call(
            "create", "tokenreviews", "TokenReview", self.authn.create_token_review, body
        )
        status = (review or {}).get("status", {})
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
        effort, and a repeated post would be a second event)."""
        namespace = body["metadata"]["namespace"]
        try:
            self._call(
                "create",
                "events",
                "Event",
                self.core.create_namespaced_event,
                namespace,
                body,
                retry=False,
            )
        except KubeError as exc:
            log.warning("could not post an event: %s", exc)

    # --- secrets ---------------------------------------------------------------------------

    def ensure_secret(
        self, namespace: str, name: str, make: Callable[[], dict[str, bytes]]
    ) -> dict[str, bytes]:
        """The data of Secret ``namespace/name``, created from ``make()`` if absent (a race
        with another replica is settled by reading the winner's Secret)."""
        what = f"Secret {namespace}/{name}"
        for _ in range(2):
            secret = self._call(
                "get",
                "secrets",
                what,
                self.core.read_namespaced_secret,
                name,
                namespace,
                missing_ok=True,
            )
            if secret is not None:
                return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            data = make()
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": "Opaque",
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }
            try:
                self._call(
                    "create", "secrets", what, self.core.create_namespaced_secret, namespace, body
                )
            except KubeError as exc:
                if exc.status != 409:
                    raise
                continue
            # Created: what it holds is what was sent (no second read on a first start).
            return data
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
