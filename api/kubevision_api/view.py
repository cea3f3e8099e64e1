"""The View resource: one vision task over a dataset. Its concepts define the model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from kubevision_api.meta import (
    API_VERSION,
    NAME_RULE,
    ApiModel,
    Condition,
    LocalObjectReference,
    ObjectMeta,
    ObjectRules,
    PrinterColumn,
    Resource,
    Rule,
    field_error,
    list_map,
)

CONCEPT_NAME = r"^[A-Za-z0-9]([A-Za-z0-9 _.:-]*[A-Za-z0-9])?$"


class Task(StrEnum):
    """The vision task of a View. Lowercase values, as in the product's vocabulary
    (docs/decisions.md explains why they are not CamelCase)."""

    CLASSIFICATION = "classification"
    TAGGING = "tagging"
    DETECTION = "detection"


class DatasetFormat(StrEnum):
    """Annotation formats that the trainer reads (docs/decisions.md, Resources and the plan)."""

    COCO = "coco"
    IMAGEFOLDER = "imagefolder"
    TAGS_CSV = "tags-csv"
    TAGS_JSONL = "tags-jsonl"


class BoxPolicy(StrEnum):
    """What the trainer does with a detection box that is not wholly inside its image."""

    CLIP = "clip"
    STRICT = "strict"


class BoxFrame(StrEnum):
    """The image a detection box was drawn on: the upright image (EXIF orientation applied,
    as browsers and most annotation tools show it) or the pixels as stored in the file."""

    UPRIGHT = "upright"
    STORED = "stored"


#: Default of ``spec.dataset.maxImagePixels``: above the largest common camera sensors
#: (102 MP medium format, 108 MP phones), below the 150-200 MP modes that a 224-px training
#: has no use for; see docs/decisions.md for the memory this bounds.
DEFAULT_MAX_IMAGE_PIXELS = 120_000_000

#: Which formats carry which tasks.
FORMAT_TASKS: dict[DatasetFormat, frozenset[Task]] = {
    DatasetFormat.COCO: frozenset(Task),
    DatasetFormat.IMAGEFOLDER: frozenset({Task.CLASSIFICATION}),
    DatasetFormat.TAGS_CSV: frozenset({Task.CLASSIFICATION, Task.TAGGING}),
    DatasetFormat.TAGS_JSONL: frozenset({Task.CLASSIFICATION, Task.TAGGING}),
}


class Concept(ApiModel):
    """One concept (class) of the View."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=CONCEPT_NAME,
        description="Concept name, unique in the View; matched by name against the dataset.",
    )
    description: str | None = Field(default=None, max_length=1024, description="Free text.")


class DatasetSource(ApiModel):
    """Where the images and annotations are."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        description=(
            "fsspec URI. For imagefolder the root folder (one sub-folder per concept); for the "
            "other formats the annotation file, image paths being relative to its folder. "
            "s3:// and file:// are tested; local mode also takes a path relative to the manifest."
        ),
    )
    format: DatasetFormat = Field(description="coco, imagefolder, tags-csv or tags-jsonl.")
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Secret whose keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 and "
            "AWS_REGION reach the trainer as environment variables, for reading the dataset."
        ),
    )
    allow_empty_concepts: bool = Field(
        default=False,
        description=(
            "Train even when a concept has no training or no validation image (they are listed "
            "in the ModelVersion's status.dataset). By default such a run fails before "
            "training, naming the concept and the nearest names found in the data."
        ),
    )
    box_policy: BoxPolicy = Field(
        default=BoxPolicy.CLIP,
        description=(
            "Detection boxes not wholly inside their image. clip: clip boxes that overlap the "
            "image, drop those outside it or without area after clipping, and count both in "
            "status.dataset.boxes; strict: refuse the dataset instead (1 px of overhang is "
            "clipped). Malformed boxes (negative size, not numbers) are refused either way."
        ),
    )
    box_frame: BoxFrame = Field(
        default=BoxFrame.UPRIGHT,
        description=(
            "The image the boxes and the declared width/height refer to when the file has an "
            "EXIF orientation: upright (as browsers show it) or stored (the pixels as saved). "
            "A declared size that is not the size of that image is refused."
        ),
    )
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        le=2**40,
        description=(
            "Largest image, in pixels (width x height as stored), that the trainer decodes; a "
            "larger one is refused before decoding (a decompression bomb guard)."
        ),
    )


def _format_tasks_cel() -> str:
    # FORMAT_TASKS as a CEL map literal, so the table is written once.
    entries = ", ".join(
        f"'{fmt.value}': [{', '.join(repr(t.value) for t in Task if t in tasks)}]"
        for fmt, tasks in FORMAT_TASKS.items()
    )
    return "{" + entries + "}"


class ViewSpec(ApiModel):
    """Desired state of a View."""

    # Each rule's pydantic twin is in _check below; the unit and integration tests run one
    # table of bad manifests through both.
    model_config = ConfigDict(
        json_schema_extra=ObjectRules(
            rules=(
                Rule(
                    rule=f"self.task in {_format_tasks_cel()}[self.dataset.format]",
                    # The same words as _check's message.
                    message_expression=(
                        '"dataset.format: \'" + self.dataset.format + "\' cannot carry a " '
                        '+ self.task + " task"'
                    ),
                    field_path=".dataset.format",
                ),
                Rule(
                    rule="self.task != 'classification' || size(self.concepts) >= 2",
                    message="concepts: a classification View needs at least 2 concepts",
                    field_path=".concepts",
                ),
            ),
            immutable=("task",),
            immutable_message=(
                "spec.{path} is immutable: the task defines the model; create a new View instead"
            ),
        )
    )

    task: Task = Field(description="classification, tagging or detection. Immutable.")
    concepts: list[Concept] = Field(
        min_length=1,
        max_length=1000,
        description="Concepts of the task, unique by name. Changing them makes a new model.",
        json_schema_extra=list_map("name"),
    )
    dataset: DatasetSource = Field(description="The images and their annotations.")

    @model_validator(mode="after")
    def _check(self) -> ViewSpec:
        # Duplicate concept names are refused by ApiModel's list-map check.
        if self.task not in FORMAT_TASKS[self.dataset.format]:
            raise field_error(
                "dataset.format",
                f"dataset.format: {self.dataset.format.value!r} cannot carry a "
                f"{self.task.value} task",
            )
        if self.task is Task.CLASSIFICATION and len(self.concepts) < 2:
            raise field_error(
                "concepts", "concepts: a classification View needs at least 2 concepts"
            )
        return self

    def concept_names(self) -> list[str]:
        """Concept names in class-index order: sorted by name (docs/decisions.md, Resources
        and the plan)."""
        return sorted(c.name for c in self.concepts)


class ModelSummary(ApiModel):
    """One ModelVersion of a model in the View's models library."""

    model_version: str = Field(max_length=253, description="ModelVersion name.")
    phase: str | None = Field(default=None, max_length=64, description="Its phase.")
    best: float | None = Field(default=None, description="Its best validation metric.")
    indicator: str | None = Field(
        default=None,
        max_length=64,
        description="Its task's first indicator (status.evaluation.indicator): accuracy, mAP "
        "or meanOptimalLRP (docs/metrics.md); absent until the evaluation is written.",
    )
    value: float | None = Field(
        default=None,
        description="The first indicator's value on the validation split "
        "(status.evaluation.value); meanOptimalLRP is lower-better, the others higher-better.",
    )


class ModelEntry(ApiModel):
    """One model (a set of concepts) seen for this View."""

    model: str = Field(max_length=64, description="Model id.")
    concept_count: int = Field(ge=0, description="Number of concepts of that model.")
    model_versions: list[ModelSummary] = Field(
        default_factory=list,
        max_length=1000,
        description="ModelVersions of that model.",
        json_schema_extra=list_map("modelVersion"),
    )


class ViewStatus(ApiModel):
    """Observed state of a View."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation that this status describes."
    )
    model: str | None = Field(
        default=None, max_length=64, description="Model id of the current concepts."
    )
    concept_count: int | None = Field(default=None, ge=0, description="Number of concepts.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description="Observations of the View's state, one per type (Ready, ...).",
        json_schema_extra=list_map("type"),
    )
    models: list[ModelEntry] = Field(
        default_factory=list,
        max_length=1000,
        description="Models library: every model id seen for this View.",
        json_schema_extra=list_map("model"),
    )


class View(ApiModel):
    """A vision task over a dataset (``kubevision.dev/v1alpha1``, kind ``View``)."""

    model_config = ConfigDict(json_schema_extra=ObjectRules(rules=(NAME_RULE,)))
    crd: ClassVar[Resource] = Resource(
        plural="views",
        # "vw": no built-in resource uses it ("view" alone would shadow nothing either, but
        # short names are for typing less).
        short_names=("vw",),
        printer_columns=(
            PrinterColumn("Task", ".spec.task", description="The vision task."),
            PrinterColumn("Concepts", ".status.conceptCount", "integer", "Number of concepts."),
            PrinterColumn("Model", ".status.model", description="Model id of the concepts."),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    api_version: Literal["kubevision.dev/v1alpha1"] = Field(
        default=API_VERSION, description="kubevision.dev/v1alpha1"
    )
    kind: Literal["View"] = Field(default="View", description="View")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ViewSpec = Field(description="Desired state: task, concepts and dataset.")
    status: ViewStatus | None = Field(
        default=None, description="Observed state, written by the operator."
    )


def model_id(task: Task, concept_names: Iterable[str]) -> str:
    """The model id of a task and a set of concepts: ``m`` + the first 12 hex digits of
    sha256 of ``json.dumps([task, sorted(names)], separators=(",", ":"))`` (docs/decisions.md,
    Resources and the plan). Adding or removing a concept changes it; the dataset does not
    enter it."""
    payload = json.dumps([task.value, sorted(concept_names)], separators=(",", ":"))
    return "m" + hashlib.sha256(payload.encode()).hexdigest()[:12]
