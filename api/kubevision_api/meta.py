"""Shared building blocks of the kubevision API: the camelCase base model, object metadata,
references and conditions (Kubernetes API conventions, ``metav1.Condition``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP: Final = "kubevision.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "kubevision.dev/v1alpha1"

#: RFC 1123 DNS label, the rule for names that become label values and object names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: RFC 1123 DNS subdomain (object names).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


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
    message: str = Field(default="", max_length=32768, description="A sentence for people.")
    last_transition_time: datetime = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation that this condition describes."
    )
