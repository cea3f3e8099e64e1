"""Shared building blocks of the kubevision API: the camelCase base model, object metadata,
references and conditions (Kubernetes API conventions, ``metav1.Condition``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

GROUP: Final = "kubevision.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "kubevision.dev/v1alpha1"

#: Annotations of each generated CRD (``crdgen.crd``): the SHA-256 of its ``spec``, which the
#: operator compares with its own at start (``kubevision_operator.crdcheck``), and the release
#: that generated it (informational: only the hash is compared).
SCHEMA_HASH_ANNOTATION: Final = f"{GROUP}/schema-hash"
RELEASE_ANNOTATION: Final = f"{GROUP}/release"

#: RFC 1123 DNS label, the rule for names that become label values and object names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: RFC 1123 DNS subdomain (object names).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


# --------------------------------------------------------------------------------------------
# Schema metadata shared by the models and the CRD generator (crdgen.py). Each declaration has
# a Python twin here, so pydantic and the API server apply the same rule.
# --------------------------------------------------------------------------------------------


def field_error(field: str, message: str) -> PydanticCustomError:
    """A validation error about ``field``, a path relative to the model being validated
    (``concepts[2]``, ``dataset.format``). Raised from a model validator, pydantic's ``loc``
    stops at the model; ``ctx["field"]`` carries the rest, so the full path is the one the API
    server names for the same rule (``crdgen.error_paths`` joins the two)."""
    # The message is a template: braces in user values must not be read as placeholders.
    template = message.replace("{", "{{").replace("}", "}}")
    return PydanticCustomError("field_invalid", template, {"field": field})


def list_map(*keys: str) -> dict[str, Any]:
    """``json_schema_extra`` of a list of named sub-objects, unique by ``keys`` (wire names):
    ``x-kubernetes-list-type: map`` for the API server, and :class:`ApiModel`'s validator for
    pydantic."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


@functools.cache
def _list_maps(cls: type[BaseModel]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The list-map fields of ``cls``: (attribute name, key wire names)."""
    found = []
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("x-kubernetes-list-type") == "map":
            keys = extra["x-kubernetes-list-map-keys"]
            assert isinstance(keys, list)
            found.append((name, tuple(str(k) for k in keys)))
    return tuple(found)


def _noun(cls: type[Any]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()


@dataclass(frozen=True)
class Rule:
    """One CEL rule of an object (an ``x-kubernetes-validations`` entry).

    ``field_path`` (relative, e.g. ``.dataset.format``) makes the API server name that field
    in its error instead of the object; ``reason`` is one of the API server's field error
    types (FieldValueInvalid, FieldValueForbidden, FieldValueRequired, FieldValueDuplicate).
    """

    rule: str
    message: str | None = None
    message_expression: str | None = None
    field_path: str | None = None
    reason: str | None = None

    def schema(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry."""
        out = {"rule": self.rule}
        for key, value in (
            ("message", self.message),
            ("messageExpression", self.message_expression),
            ("fieldPath", self.field_path),
            ("reason", self.reason),
        ):
            if value is not None:
                out[key] = value
        return out


_MISSING: Final = object()


@dataclass(frozen=True)
class ObjectRules:
    """``json_schema_extra`` of a model: CEL rules checked on one object, and which of its
    fields are immutable once created.

    Immutability is declared, not written as CEL by hand, because it has two consumers: the
    CRD generator turns each immutable field into a transition rule *at this object's level*
    (a rule on the field itself does not run when the field is added or removed, so
    ``has()`` is compared too), and :meth:`changes` is the same check in Python (the unit
    tests, and the operator, use it).

    Attributes:
        rules: CEL rules, each with its pydantic twin written in the model's validator.
        immutable: wire names of immutable fields, or ``("*",)`` for every field.
        mutable: dotted wire paths that stay mutable inside immutable fields
            (``runPolicy.suspend``).
    """

    rules: tuple[Rule, ...] = ()
    immutable: tuple[str, ...] = ()
    mutable: tuple[str, ...] = ()
    immutable_message: str = "{path} is immutable"

    def __call__(self, schema: dict[str, Any], cls: type[Any]) -> None:
        """pydantic's hook: add the rules to the model's JSON schema."""
        rules = [r.schema() for r in self.rules]
        rules += [r.schema() for r in self.transition_rules(cls)]
        if rules:
            schema["x-kubernetes-validations"] = rules

    def immutable_paths(self, cls: type[BaseModel]) -> list[tuple[str, ...]]:
        """Wire paths of the immutable fields of ``cls``, split around the mutable ones."""
        return _split_paths(cls, self.immutable, tuple(p.split(".") for p in self.mutable))

    def transition_rules(self, cls: type[BaseModel]) -> list[Rule]:
        """One CEL transition rule per immutable path, reported at that path."""
        rules = []
        for path in self.immutable_paths(cls):
            dotted = ".".join(path)
            new_has = " && ".join(f"has(self.{'.'.join(path[: i + 1])})" for i in range(len(path)))
            if len(path) > 1:
                new_has = f"({new_has})"
            old_has = new_has.replace("self.", "oldSelf.")
            rule = (
                f"{new_has} == {old_has} && (!{new_has} || self.{dotted} == oldSelf.{dotted})"
                if not _required(cls, path)
                # Always present: the plain comparison, cheaper and easier to read.
                else f"self.{dotted} == oldSelf.{dotted}"
            )
            rules.append(
                Rule(
                    rule=rule,
                    message=self.immutable_message.format(path=dotted),
                    field_path="." + dotted,
                    reason="FieldValueForbidden",
                )
            )
        return rules

    def changes(
        self, cls: type[BaseModel], old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> list[str]:
        """Python twin of :meth:`transition_rules`: the immutable paths whose value (or
        presence) differs between two wire dicts of ``cls`` (``ApiModel.wire()``: defaults
        applied, ``None`` left out, as the API server stores them)."""
        changed = []
        for path in self.immutable_paths(cls):
            if _lookup(old, path) != _lookup(new, path):
                changed.append(".".join(path))
        return changed


def _wire_fields(cls: type[BaseModel]) -> dict[str, tuple[str, Any]]:
    """Wire name -> (attribute name, FieldInfo)."""
    return {(info.alias or name): (name, info) for name, info in cls.model_fields.items()}


def _split_paths(
    cls: type[BaseModel], names: tuple[str, ...], mutable: tuple[list[str], ...]
) -> list[tuple[str, ...]]:
    fields = _wire_fields(cls)
    chosen = list(fields) if names == ("*",) else list(names)
    paths: list[tuple[str, ...]] = []
    for wire in chosen:
        if wire not in fields:
            raise KeyError(f"{cls.__name__} has no field {wire!r}")
        inner = tuple(p[1:] for p in mutable if p[0] == wire)
        if not inner:
            paths.append((wire,))
            continue
        if [] in [list(p) for p in inner]:
            continue  # the whole field is mutable
        sub = fields[wire][1].annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            raise TypeError(f"{cls.__name__}.{wire}: mutable sub-fields need a model type")
        paths += [(wire, *p) for p in _split_paths(sub, ("*",), inner)]
    return paths


def _required(cls: type[BaseModel], path: tuple[str, ...]) -> bool:
    """Whether every field along ``path`` is required (so ``has()`` is always true)."""
    current: Any = cls
    for part in path:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return False
        _, info = _wire_fields(current)[part]
        if not info.is_required():
            return False
        current = info.annotation
    return True


def _lookup(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    current: Any = doc
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


@dataclass(frozen=True)
class PrinterColumn:
    """An ``additionalPrinterColumns`` entry; ``json_path`` must name a declared field."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Resource:
    """How a root model is served as a custom resource: names, printer columns, categories.
    Declared beside the root class (``crd: ClassVar[Resource]``); crdgen.py reads it."""

    plural: str
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("kubevision",)
    printer_columns: tuple[PrinterColumn, ...] = field(default=())


#: Object names become label values (63 characters at most), hence DNS labels; the API server
#: alone would accept any DNS subdomain. metadata is opaque to the schema (fieldPath cannot
#: point into it), so the rule lives at the root and its message names the field.
NAME_RULE: Final = Rule(
    rule=f"size(self.metadata.name) <= 63 && self.metadata.name.matches('{DNS_LABEL}')",
    message="metadata.name must be a DNS label: at most 63 lowercase letters, digits and '-'",
)


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python, unknown fields
    rejected (the same rule as the API server's ``fieldValidation=Strict``)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it travels to the API server: camelCase keys, ``None`` left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @model_validator(mode="after")
    def _unique_list_map_keys(self) -> ApiModel:
        # The pydantic twin of x-kubernetes-list-type: map (see list_map): the API server
        # rejects a second item with the same keys as "<list>[i]: Duplicate value".
        for name, keys in _list_maps(type(self)):
            seen: set[tuple[Any, ...]] = set()
            wire = _wire_fields(type(self))
            alias = next(w for w, (attr, _) in wire.items() if attr == name)
            for index, item in enumerate(getattr(self, name)):
                item_wire = _wire_fields(type(item))
                value = tuple(getattr(item, item_wire[k][0]) for k in keys)
                if value in seen:
                    shown = value[0] if len(value) == 1 else value
                    raise field_error(
                        f"{alias}[{index}]",
                        f"{alias}[{index}].{keys[0]}: duplicate {_noun(type(item))} {str(shown)!r}",
                    )
                seen.add(value)
        return self


class ObjectMeta(BaseModel):
    """The part of ``metadata`` that kubevision reads. Other metadata fields are kept as they
    are (the API server owns them), hence ``extra="allow"``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="Object name (DNS label)."
    )
    namespace: str = Field(default="default", description="Namespace of the object.")
    uid: str | None = Field(default=None, description="UID given by the API server.")
    generation: int | None = Field(default=None, description="Spec generation.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace, by name (``{field}Ref`` convention)."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the object."
    )


ConditionStatus = Literal["True", "False", "Unknown"]
#: The longest condition message the API server takes (``metav1.Condition``: 32768).
CONDITION_MESSAGE_MAX: Final = 32768


class Condition(ApiModel):
    """One observation of the object's state, keyed by ``type`` (``metav1.Condition``)."""

    type: str = Field(
        min_length=1, max_length=316, description="Type in CamelCase, e.g. ``Succeeded``."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="One CamelCase word that a program can branch on.",
    )
    message: str = Field(
        default="", max_length=CONDITION_MESSAGE_MAX, description="A sentence for people."
    )
    last_transition_time: datetime = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation that this condition describes."
    )


def transition_time(old: Condition | None, status: ConditionStatus, now: datetime) -> datetime:
    """A condition's ``lastTransitionTime``: ``old``'s while its status stays (it says since
    when, not when last written), else ``now`` (``meta.SetStatusCondition``'s rule)."""
    return old.last_transition_time if old is not None and old.status == status else now


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """``conditions`` with ``new`` in place of the condition of its type (appended when there
    is none), as ``meta.SetStatusCondition`` does, the old ``lastTransitionTime`` kept while
    the status stays (:func:`transition_time`)."""
    out, found = [], False
    for old in conditions:
        if old.type != new.type:
            out.append(old)
            continue
        found = True
        since = transition_time(old, new.status, new.last_transition_time)
        out.append(new.model_copy(update={"last_transition_time": since}))
    return out if found else [*out, new]


def remove_condition(conditions: list[Condition], ctype: str) -> list[Condition]:
    """``conditions`` without the condition of type ``ctype``."""
    return [c for c in conditions if c.type != ctype]
