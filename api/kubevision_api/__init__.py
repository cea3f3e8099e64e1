"""kubevision's API: View and ModelVersion models, the TrainingPlan and its pure ``resolve()``.
Free of torch and Kubernetes imports: the operator and the trainer both import it."""

from kubevision_api.contract import StepName
from kubevision_api.errors import InputError
from kubevision_api.meta import API_VERSION, GROUP, VERSION, Condition, ObjectMeta
from kubevision_api.modelversion import (
    ModelVersion,
    ModelVersionSpec,
)
from kubevision_api.plan import PlanDefaults, PlanError, TrainingPlan, resolve
from kubevision_api.progress import TrainerReport
from kubevision_api.status import ModelVersionStatus, StepState
from kubevision_api.view import DatasetFormat, Task, View, ViewSpec, model_id

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "DatasetFormat",
    "InputError",
    "ModelVersion",
    "ModelVersionSpec",
    "ModelVersionStatus",
    "ObjectMeta",
    "PlanDefaults",
    "PlanError",
    "StepName",
    "StepState",
    "Task",
    "TrainerReport",
    "TrainingPlan",
    "View",
    "ViewSpec",
    "model_id",
    "resolve",
]
