"""Whether the installed CRDs are the ones this operator was built with, checked once at start
(``runtime.Runtime.start``, before any reconcile acts; docs/crds.md, Upgrading the CRDs on a
cluster).

An operator newer than its CRDs runs without a word otherwise: the API server prunes every
field its schema lacks, from the specs users write (a ModelVersion's
``spec.training.earlyStopping``: the training runs without it) and from the status the
operator writes (``status.lastReport``). So, for each CRD of ``crdgen.RESOURCES``: is it
installed, does its ``kubevision.dev/schema-hash`` annotation equal the hash of the CRD this
operator generates (``crdgen.schema_hash``), and which of our field paths would its
``openAPIV3Schema`` prune (:func:`pruned_paths`; walked whatever the marker says).
:func:`message` makes one message of it for the log, the termination message and the
``CRDsCurrent`` condition (:func:`crd_condition`). Pure: the runtime reads the CRDs
(``kube.Kube.get_crd``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from kubevision_api import crdgen
from kubevision_api.meta import (
    CONDITION_MESSAGE_MAX,
    RELEASE_ANNOTATION,
    SCHEMA_HASH_ANNOTATION,
    Condition,
    remove_condition,
    set_condition,
)

#: The CRDs the operator needs, by name (``modelversions.kubevision.dev``), with the CRD it
#: generates for each.
CRD_NAMES: Final = tuple(crdgen.crd_name(model) for model in crdgen.RESOURCES)
#: What a user runs to install the CRDs of this release (docs/crds.md, docs/helm.md).
FIX_COMMAND: Final = "kubectl apply --server-side --force-conflicts -f helm/kubevision/crds/"
DOCS: Final = "docs/crds.md#upgrading-the-crds-on-a-cluster"
#: The condition of every ModelVersion and View the operator writes status for while its CRDs
#: differ (``settings.crd_mismatch: Condition``); absent once they are current.
CONDITION_TYPE: Final = "CRDsCurrent"
CONDITION_REASON: Final = "SchemaMismatch"


@dataclass(frozen=True)
class Finding:
    """What differs in one installed CRD.

    Attributes:
        crd: the CRD's name (``modelversions.kubevision.dev``).
        what: why it is not this operator's, in words ("is not installed", ...).
        pruned: field paths of ours that the installed schema lacks, spelled as in the API
            (``spec.training.earlyStopping``, list items ``[]``, map values ``{}``): the API
            server prunes them from every write.
    """

    crd: str
    what: str
    pruned: tuple[str, ...] = ()

    def line(self) -> str:
        """One line of the message: the CRD, what differs, the paths pruned."""
        if self.pruned:
            pruned = "the API server prunes " + ", ".join(self.pruned)
        else:
            pruned = "no field of this operator is pruned"
        return f"- {self.crd} {self.what}; {pruned}"


def _children(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """(path suffix, our node, their node or None) of each child of a schema node."""
    mine = ours.get("properties") or {}
    known = theirs.get("properties") or {}
    values = theirs.get("additionalProperties")
    for name, sub in mine.items():
        if name in known:
            yield f".{name}", sub, known[name]
        elif isinstance(values, Mapping):
            # Their map keeps any key: its values' schema applies.
            yield f".{name}", sub, values
        else:
            yield f".{name}", sub, None
    # A list (or map) of ours that is none of theirs is a type clash, not pruning.
    if isinstance(ours.get("items"), Mapping) and isinstance(theirs.get("items"), Mapping):
        yield "[]", ours["items"], theirs["items"]
    if isinstance(ours.get("additionalProperties"), Mapping) and isinstance(values, Mapping):
        yield "{}", ours["additionalProperties"], values


def pruned_paths(ours: Mapping[str, Any], theirs: Mapping[str, Any], path: str = "") -> list[str]:
    """The field paths that ``ours`` (a structural schema node) declares and ``theirs`` would
    prune, in our order. A missing field is reported once, not its sub-fields; nothing below
    ``x-kubernetes-preserve-unknown-fields: true`` or a map of anything
    (``additionalProperties: true``) is pruned."""
    if (
        theirs.get("x-kubernetes-preserve-unknown-fields")
        or theirs.get("additionalProperties") is True
    ):
        return []
    found = []
    for suffix, mine, known in _children(ours, theirs):
        sub = f"{path}{suffix}".lstrip(".")
        if known is None:
            found.append(sub)
        else:
            found += pruned_paths(mine, known, sub)
    return found


def _schema(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``openAPIV3Schema`` of the CRD's storage version (``{}`` when there is none)."""
    versions = (crd.get("spec") or {}).get("versions") or []
    for version in versions:
        if version.get("storage"):
            schema: Mapping[str, Any] = (version.get("schema") or {}).get("openAPIV3Schema") or {}
            return schema
    return {}


def check_crd(installed: Mapping[str, Any] | None, expected: Mapping[str, Any]) -> Finding | None:
    """What differs between the installed CRD (None: not installed) and the ``expected`` one
    (``crdgen.crd``); None when the installed one carries the expected marker and prunes
    nothing. The schemas are compared field by field whatever the marker says: a CRD edited
    by hand keeps the marker it was generated with."""
    name = str(expected["metadata"]["name"])
    if installed is None:
        return Finding(name, "is not installed", ())
    want = expected["metadata"]["annotations"][SCHEMA_HASH_ANNOTATION]
    annotations = (installed.get("metadata") or {}).get("annotations") or {}
    have = annotations.get(SCHEMA_HASH_ANNOTATION)
    pruned = tuple(pruned_paths(_schema(expected), _schema(installed)))
    if have == want:
        if not pruned:
            return None
        what = f"was edited after it was generated (its {SCHEMA_HASH_ANNOTATION} is ours)"
    elif have is None:
        what = f"was installed from an earlier release (no {SCHEMA_HASH_ANNOTATION} annotation)"
    else:
        release = annotations.get(RELEASE_ANNOTATION) or "an unknown release"
        what = f"was generated from another schema (release {release}, {have}; expected {want})"
    return Finding(name, what, pruned)


def check(installed: Mapping[str, Mapping[str, Any] | None]) -> list[Finding]:
    """The findings of every CRD in :data:`CRD_NAMES`; ``installed`` maps each name to the
    CRD the API server returned (None or absent: not installed)."""
    findings = []
    for model in crdgen.RESOURCES:
        expected = crdgen.crd(model)
        found = check_crd(installed.get(crdgen.crd_name(model)), expected)
        if found is not None:
            findings.append(found)
    return findings


def message(findings: list[Finding]) -> str | None:
    """The one message of the findings (None when there is none), e.g.::

        The installed kubevision CRDs differ from this operator's (kubevision 0.2.0):
        - modelversions.kubevision.dev was installed from an earlier release (no
          kubevision.dev/schema-hash annotation); the API server prunes
          spec.training.earlyStopping, status.lastReport
        Fix: kubectl apply --server-side --force-conflicts -f helm/kubevision/crds/ (the
        chart of this release; docs/crds.md#upgrading-the-crds-on-a-cluster)

    (each ``-`` item on one line)."""
    if not findings:
        return None
    release = crdgen.release()
    head = f"The installed kubevision CRDs differ from this operator's (kubevision {release}):"
    fix = f"Fix: {FIX_COMMAND} (the chart of this release; {DOCS})"
    return "\n".join([head, *(f.line() for f in findings), fix])


def crd_condition(
    conditions: list[Condition], schema_problem: str | None, generation: int, now: datetime
) -> list[Condition]:
    """``conditions`` with ``CRDsCurrent`` False (reason ``SchemaMismatch``, the message cut
    to a condition's limit) while ``schema_problem`` is set, and without it otherwise."""
    if schema_problem is None:
        return remove_condition(conditions, CONDITION_TYPE)
    text = schema_problem
    if len(text) > CONDITION_MESSAGE_MAX:
        text = text[: CONDITION_MESSAGE_MAX - 1] + "…"
    return set_condition(
        conditions,
        Condition(
            type=CONDITION_TYPE,
            status="False",
            reason=CONDITION_REASON,
            message=text,
            last_transition_time=now,
            observed_generation=generation,
        ),
    )
