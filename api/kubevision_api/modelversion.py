"""The ModelVersion resource: one trained network for a View."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Final, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from kubevision_api import architectures
from kubevision_api.export import ExportSpec
from kubevision_api.meta import (
    API_VERSION,
    NAME_RULE,
    ApiModel,
    LocalObjectReference,
    ObjectMeta,
    ObjectRules,
    PrinterColumn,
    Resource,
    Rule,
    field_error,
)
from kubevision_api.status import ModelVersionStatus

QUANTITY = r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"


class Optimizer(StrEnum):
    """``torch.optim`` optimizers."""

    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


class LrPolicy(StrEnum):
    """Learning-rate schedules after warmup."""

    CONSTANT = "constant"
    STEP = "step"
    COSINE = "cosine"
    ONECYCLE = "onecycle"


class MixedPrecision(StrEnum):
    """Autocast dtype on CUDA; the CPU always trains in float32."""

    BF16 = "bf16"
    FP16 = "fp16"
    NONE = "none"


class LrSchedule(ApiModel):
    """Learning-rate schedule, stepped per batch."""

    policy: LrPolicy = Field(
        default=LrPolicy.COSINE, description="constant, step, cosine, onecycle."
    )
    warmup_epochs: int = Field(
        default=0, ge=0, le=1000, description="Linear warmup from 1% of learningRate, in epochs."
    )
    step_epochs: int = Field(
        default=10, ge=1, le=10000, description="policy=step: epochs between decays."
    )
    gamma: float = Field(default=0.1, gt=0, le=1, description="policy=step: decay factor.")


class EarlyStopping(ApiModel):
    """Stop when the selection metric has not improved by ``minDelta`` for ``patience``
    epochs."""

    patience: int = Field(default=0, ge=0, le=10000, description="Epochs; 0 turns it off.")
    min_delta: float = Field(default=0.0, ge=0, le=1, description="Smallest improvement.")


class TrainingOptions(ApiModel):
    """Optimisation options. Defaults follow torchvision's classification reference recipe
    (SGD, momentum 0.9, weight decay 1e-4) with a cosine schedule."""

    epochs: int = Field(default=10, ge=1, le=10000, description="Passes over the training set.")
    batch_size: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Images per batch: the global batch, split evenly over the training "
        "processes (it must divide by spec.resources' world size); the recipe means the same "
        "on one GPU or many.",
    )
    optimizer: Optimizer = Field(default=Optimizer.SGD, description="sgd, adam or adamw.")
    learning_rate: float = Field(default=0.01, gt=0, le=10, description="Peak learning rate.")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum (beta1 for Adam).")
    weight_decay: float = Field(default=1e-4, ge=0, le=1, description="L2 weight decay.")
    lr_schedule: LrSchedule = Field(default_factory=LrSchedule)
    mixed_precision: MixedPrecision = Field(
        default=MixedPrecision.BF16,
        description="Autocast on CUDA: bf16 (fp16 where bf16 is unsupported), fp16 or none.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of weights and batches.")
    sync_batch_norm: bool = Field(
        default=False,
        description="Several processes: turn BatchNorm layers into SyncBatchNorm, which "
        "normalises over the global batch (torchvision's references, --sync-bn). It costs "
        "one all-reduce per BatchNorm layer in every forward pass; it matters when each "
        "process's share of the batch is small (under ~16 images, e.g. detection), where "
        "per-process statistics are noisy. Without it, each process normalises its own share.",
    )
    compile: bool = Field(
        default=False,
        description="Compile the model with torch.compile (TorchInductor kernels fused for "
        "this model and input size). The first training and validation steps are slower while "
        "it compiles (tens of seconds to minutes, once per process); later steps may run "
        "faster. Checkpoints hold the plain model's weights either way. Off by default until "
        "measured (docs/performance.md).",
    )
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    data_loader_workers: int = Field(
        default=2, ge=0, le=64, description="DataLoader worker processes (0: main process)."
    )


class ResizeMode(StrEnum):
    """How images reach the network's input size."""

    SQUASH = "squash"
    CROP = "crop"
    LETTERBOX = "letterbox"


class ImageResizer(ApiModel):
    """Input size and resizing. squash stretches to width x height; crop resizes the short
    side then centre-crops; letterbox keeps the aspect ratio and pads with black. Boxes follow
    the image. Sizes in 16-px steps, as the seed's platform documents."""

    mode: ResizeMode = Field(default=ResizeMode.SQUASH, description="squash, crop or letterbox.")
    width: int = Field(default=224, ge=16, le=4096, multiple_of=16, description="Pixels.")
    height: int = Field(default=224, ge=16, le=4096, multiple_of=16, description="Pixels.")


class Balancing(ApiModel):
    """Oversampling of under-represented concepts in the training split."""

    enabled: bool = Field(default=False, description="Oversample rare concepts.")
    max_expansion_ratio: float = Field(
        default=2.0,
        ge=1,
        le=100,
        description="Upper bound on (training images after balancing) / (before).",
    )


#: What the API server (and pydantic) say when the validation and test splits leave no image
#: to train on.
SPLIT_FRACTIONS_MESSAGE: Final = (
    "spec.datasetSplit.validationFraction + spec.datasetSplit.testFraction must be under 1: "
    "the rest of the images is the training split"
)


class DatasetSplit(ApiModel):
    """Train/validation/test split. An image's side depends only on (seed, image path), so
    adding images never moves an existing one, and adding a test split never moves a
    validation image."""

    model_config = ConfigDict(
        json_schema_extra=ObjectRules(
            rules=(
                # In an object both fields hold a value (structural defaults, applied before
                # validation); the API server also checks the rule on datasetSplit's own
                # default, {}, where they are absent: hence has().
                Rule(
                    rule="!has(self.validationFraction) || !has(self.testFraction) || "
                    "self.validationFraction + self.testFraction < 1.0",
                    message=SPLIT_FRACTIONS_MESSAGE,
                    field_path=".testFraction",
                ),
            )
        )
    )

    validation_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of images in the validation split."
    )
    test_fraction: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="Share of images in the held-out test split, scored once with the best "
        "checkpoint (chosen on validation) and reported apart; 0: no test split. "
        "validationFraction + testFraction must be under 1.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the split.")
    stratified: bool = Field(
        default=True,
        description="Guarantee every concept with 2+ training or validation images one "
        "validation and one training image; test images are never moved.",
    )
    balancing: Balancing = Field(default_factory=Balancing)

    @model_validator(mode="after")
    def _fractions_leave_training_images(self) -> DatasetSplit:
        # The pydantic twin of the CEL rule above.
        if self.validation_fraction + self.test_fraction >= 1:
            raise field_error(
                "testFraction",
                f"{SPLIT_FRACTIONS_MESSAGE}; got {self.validation_fraction} + {self.test_fraction}",
            )
        return self


class AugmentationName(StrEnum):
    """Augmentations, each a ``torchvision.transforms.v2`` operation (box-aware)."""

    HORIZONTAL_FLIP = "HorizontalFlip"
    VERTICAL_FLIP = "VerticalFlip"
    ROTATE90 = "Rotate90"
    BRIGHTNESS = "Brightness"
    CONTRAST = "Contrast"
    SATURATION = "Saturation"
    HUE = "Hue"
    GRAYSCALE = "Grayscale"
    GAUSSIAN_BLUR = "GaussianBlur"
    ZOOM_OUT = "ZoomOut"


class Augmentation(ApiModel):
    """One augmentation, applied with its own probability, drawn anew each time an image is
    read."""

    name: AugmentationName = Field(description="Operation name.")
    probability: float = Field(default=0.5, ge=0, le=1, description="Chance to apply it.")
    magnitude: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description=(
            "Strength: jitter factor for Brightness/Contrast/Saturation, hue shift for Hue "
            "(at most 0.5 used), sigma/4 for GaussianBlur, max zoom-out-1 for ZoomOut; "
            "unused by flips, Rotate90, Grayscale."
        ),
    )


def default_augmentations() -> list[Augmentation]:
    """The platform's documented defaults: horizontal flip 0.5, vertical flip 0.5, 90° rotation
    0.5, brightness 0.2 (docs/decisions.md, Resources and the plan)."""
    return [
        Augmentation(name=AugmentationName.HORIZONTAL_FLIP, probability=0.5),
        Augmentation(name=AugmentationName.VERTICAL_FLIP, probability=0.5),
        Augmentation(name=AugmentationName.ROTATE90, probability=0.5),
        Augmentation(name=AugmentationName.BRIGHTNESS, probability=1.0, magnitude=0.2),
    ]


class PretrainedWeights(ApiModel):
    """Initial weights: a kubevision checkpoint or a plain state dict. Tensors whose name and
    shape match are loaded; the others keep their initialisation (partial loads)."""

    uri: str = Field(min_length=1, max_length=2048, description="fsspec URI of the file.")
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret with AWS_* keys (as for the dataset) for reading the file.",
    )


#: CEL of the training processes per Pod, ``Resources.processes()``, for rules on the spec.
#: gpus and nodes always hold a value (structural defaults, applied before validation);
#: processesPerNode has none, hence has().
_PROCESSES_CEL: Final = (
    "(self.resources.gpus > 0 ? self.resources.gpus : "
    "(has(self.resources.processesPerNode) ? self.resources.processesPerNode : 1))"
)
_WORLD_SIZE_CEL: Final = f"(self.resources.nodes * {_PROCESSES_CEL})"


#: What the API server says when the global batch does not divide: a static message, as a
#: messageExpression that prints the numbers costs too much for the CRD's CEL budget (the
#: estimated size of string(int) is unbounded, and each concatenation multiplies it).
BATCH_SIZE_MESSAGE: Final = (
    "spec.training.batchSize must divide by the world size of spec.resources (nodes x "
    "processes per Pod: gpus, or processesPerNode when gpus is 0): the global batch is split "
    "evenly over the training processes"
)


def batch_size_message(batch_size: int, nodes: int, processes: int) -> str:
    """:data:`BATCH_SIZE_MESSAGE` with the numbers of this spec (pydantic's message, local
    mode's too)."""
    return (
        f"{BATCH_SIZE_MESSAGE}; {batch_size} does not divide by "
        f"{nodes} x {processes} = {nodes * processes}"
    )


#: spec.training.batchSize is the global batch: it must divide by the world size. On the spec
#: (it reads two sub-objects), reported at the batch size.
BATCH_SIZE_RULE: Final = Rule(
    rule=f"self.training.batchSize % {_WORLD_SIZE_CEL} == 0",
    message=BATCH_SIZE_MESSAGE,
    field_path=".training.batchSize",
)

#: processesPerNode is for CPU training: with GPUs each Pod runs one process per GPU (NCCL
#: gives each process its own device), so a second way to say the same number is refused.
PROCESSES_PER_NODE_MESSAGE: Final = (
    "spec.resources.processesPerNode is for CPU training (gpus: 0); with GPUs each Pod runs "
    "one process per GPU: leave it unset"
)


class Resources(ApiModel):
    """Compute of each training Pod, and how many Pods train together (docs/distributed.md).
    World size = nodes x processes per Pod (one per GPU, or ``processesPerNode`` on the
    CPU)."""

    model_config = ConfigDict(
        json_schema_extra=ObjectRules(
            rules=(
                Rule(
                    rule="!has(self.processesPerNode) || self.gpus == 0",
                    message=PROCESSES_PER_NODE_MESSAGE,
                    field_path=".processesPerNode",
                    reason="FieldValueForbidden",
                ),
            )
        )
    )

    gpus: int = Field(
        default=1,
        ge=0,
        le=8,
        description="GPUs per Pod (0-8); the trainer runs one process per GPU.",
    )
    nodes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Pods that train together, one per node (1-64); more than one renders an "
        "Indexed Job and a headless Service.",
    )
    processes_per_node: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="CPU training (gpus: 0): training processes per Pod (gloo); default 1. "
        "Refused with GPUs: each Pod runs one process per GPU.",
    )
    cpu: str = Field(
        default="4", max_length=32, pattern=QUANTITY, description="CPU request and limit per Pod."
    )
    memory: str = Field(
        default="16Gi",
        max_length=32,
        pattern=QUANTITY,
        description="Memory request and limit per Pod.",
    )

    def processes(self) -> int:
        """Training processes per Pod: ``gpus`` when there are GPUs, else
        ``processesPerNode`` (default 1)."""
        if self.gpus:
            return self.gpus
        return self.processes_per_node or 1

    def world_size(self) -> int:
        """Training processes in all: ``nodes`` x :meth:`processes`."""
        return self.nodes * self.processes()

    @model_validator(mode="after")
    def _processes_on_cpu_only(self) -> Resources:
        # The pydantic twin of the CEL rule above.
        if self.processes_per_node is not None and self.gpus != 0:
            raise field_error("processesPerNode", PROCESSES_PER_NODE_MESSAGE)
        return self


class Toleration(ApiModel):
    """A Pod toleration (``core/v1.Toleration``)."""

    # Bounds: a label key is at most 317 characters and a value 63; they also keep the cost
    # of the spec's CEL immutability rules within the API server's budget.
    key: str | None = Field(
        default=None, max_length=317, description="Taint key; empty with Exists: every taint."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (the default)."
    )
    value: str | None = Field(
        default=None, max_length=63, description="Taint value, for operator Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty: every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, description="NoExecute: how long the Pod stays bound after the taint."
    )


class Output(ApiModel):
    """Where checkpoints and records go."""

    uri: str | None = Field(
        default=None,
        max_length=2048,
        description="fsspec URI; default <operator base URI>/<namespace>/<name>/<uid>/.",
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret with AWS_* keys (as for the dataset) for writing the output.",
    )


class RunPolicy(ApiModel):
    """How the training Job runs."""

    backoff_limit: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Retries: of the Pod with one Pod; of the whole gang (every Pod, from "
        "last.pt) with several, a preempted Pod's included (docs/distributed.md).",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Wall-clock limit of the Job. Mutable."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the finished Job after this time."
    )
    suspend: bool = Field(default=False, description="Stop the training (resumable). Mutable.")
    queue_name: str | None = Field(
        default=None, max_length=63, description="Kueue LocalQueue (kueue.x-k8s.io/queue-name)."
    )


class ModelVersionSpec(ApiModel):
    """Desired state of a ModelVersion. Immutable except runPolicy.suspend and
    runPolicy.activeDeadlineSeconds: a trained version is a fact."""

    # Every field, present or future, is immutable unless listed here; crdgen turns this into
    # one CEL transition rule per field, and ObjectRules.changes() is the same check in Python.
    model_config = ConfigDict(
        json_schema_extra=ObjectRules(
            rules=(BATCH_SIZE_RULE,),
            immutable=("*",),
            mutable=("runPolicy.suspend", "runPolicy.activeDeadlineSeconds"),
            immutable_message=(
                "spec.{path} is immutable: a trained version is a fact; create a new "
                "ModelVersion to train again"
            ),
        )
    )

    view_ref: LocalObjectReference = Field(description="The View, in the same namespace.")
    architecture: str = Field(
        description="torchvision model name that fits the View's task.",
        json_schema_extra={"enum": list(architectures.ALL_ARCHITECTURES)},
    )
    pretrained_weights: PretrainedWeights | None = Field(
        default=None, description="Initial weights; none: train from scratch."
    )
    training: TrainingOptions = Field(default_factory=TrainingOptions)
    image_resizer: ImageResizer = Field(default_factory=ImageResizer)
    dataset_split: DatasetSplit = Field(default_factory=DatasetSplit)
    augmentation: list[Augmentation] = Field(
        default_factory=default_augmentations,
        max_length=32,
        description=(
            "Augmentations, applied in order. Default: HorizontalFlip 0.5, VerticalFlip 0.5, "
            "Rotate90 0.5, Brightness 0.2; an empty list turns augmentation off."
        ),
    )
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Node labels the training Pod needs."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description="Tolerations of the training Pod."
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, description="PriorityClass of the training Pod."
    )
    image: str | None = Field(default=None, max_length=1024, description="Trainer image override.")
    output: Output = Field(default_factory=Output)
    export: ExportSpec = Field(
        default_factory=ExportSpec,
        description="The serving bundle under <output>/export/ (docs/serving.md).",
    )
    run_policy: RunPolicy = Field(default_factory=RunPolicy)

    @field_validator("architecture")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in architectures.ALL_ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {value!r}; known: "
                + ", ".join(architectures.ALL_ARCHITECTURES)
            )
        return value

    @model_validator(mode="after")
    def _batch_divides(self) -> ModelVersionSpec:
        # The pydantic twin of BATCH_SIZE_RULE: local mode refuses what the API server does.
        batch, resources = self.training.batch_size, self.resources
        if batch % resources.world_size():
            raise field_error(
                "training.batchSize",
                batch_size_message(batch, resources.nodes, resources.processes()),
            )
        return self


#: A multi-Pod training's Pods are named <job>-<index> (hostnames: DNS labels of at most 63
#: characters), and the Job is kv-<name>: "kv-" and "-63" leave 57 characters to the name.
GANG_NAME_MAX: Final = 57
GANG_NAME_MESSAGE: Final = (
    f"metadata.name must have at most {GANG_NAME_MAX} characters when spec.resources.nodes > 1: "
    "the Pods' hostnames kv-<name>-<index> are DNS labels"
)
#: metadata is opaque to the schema (no fieldPath into it): on the root, as NAME_RULE.
GANG_NAME_RULE: Final = Rule(
    rule=f"self.spec.resources.nodes <= 1 || size(self.metadata.name) <= {GANG_NAME_MAX}",
    message=GANG_NAME_MESSAGE,
)


class ModelVersion(ApiModel):
    """One trained network for a View (``kubevision.dev/v1alpha1``, kind ``ModelVersion``)."""

    model_config = ConfigDict(json_schema_extra=ObjectRules(rules=(NAME_RULE, GANG_NAME_RULE)))
    crd: ClassVar[Resource] = Resource(
        plural="modelversions",
        short_names=("mv",),
        # Each column reads a status field kept for it; never conditions[-1:], whose order
        # means nothing (conditions are a map keyed by type).
        printer_columns=(
            PrinterColumn("View", ".spec.viewRef.name", description="The View trained for."),
            PrinterColumn("Phase", ".status.phase", description="Derived from the conditions."),
            PrinterColumn("Step", ".status.currentStep", description="The step running now."),
            PrinterColumn("Progress", ".status.progress.display", description="Epochs done."),
            PrinterColumn(
                "Best", ".status.metrics.best.value", "number", "Best validation metric."
            ),
            # The indicator is the same for every ModelVersion of a View (it follows the
            # task): shown with -o wide only, to keep the default table narrow.
            PrinterColumn(
                "Indicator",
                ".status.evaluation.indicator",
                description="The task's first indicator: accuracy, mAP or meanOptimalLRP.",
                priority=1,
            ),
            PrinterColumn(
                "Score",
                ".status.evaluation.value",
                "number",
                "The first indicator's value on the validation split (meanOptimalLRP: lower "
                "is better).",
            ),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    api_version: Literal["kubevision.dev/v1alpha1"] = Field(
        default=API_VERSION, description="kubevision.dev/v1alpha1"
    )
    kind: Literal["ModelVersion"] = Field(default="ModelVersion", description="ModelVersion")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ModelVersionSpec = Field(
        description="Desired state; immutable except runPolicy.suspend and "
        "runPolicy.activeDeadlineSeconds."
    )
    status: ModelVersionStatus | None = Field(
        default=None, description="Observed state, written by the operator alone."
    )

    @model_validator(mode="after")
    def _gang_name_fits(self) -> ModelVersion:
        # The pydantic twin of GANG_NAME_RULE.
        if self.spec.resources.nodes > 1 and len(self.metadata.name) > GANG_NAME_MAX:
            raise field_error("metadata.name", GANG_NAME_MESSAGE)
        return self
