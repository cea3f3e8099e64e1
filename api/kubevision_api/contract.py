"""The training Job's interface: everything the operator and the trainer must agree on besides
the TrainingPlan. The operator renders the Job from these names (``render.py``) and reads its
outcome back (``observe.py``); the trainer reads the same names (``main.py``, ``storage.py``,
``report/``). Each literal lives here once: ``tests/api/test_contract.py`` fails when one is
spelt anywhere else in the packages.

The pieces:
- paths inside the trainer container (plan, termination log, image cache, status token);
- the container's name and every environment variable the operator sets for it;
- the status endpoint's token audience and report URL path;
- the trainer's step names;
- :class:`Outcome`: each way a trainer run ends, with its termination reason and exit code, and
  the one function that writes the termination line (:func:`termination_line`) and the one that
  reads it (:func:`parse_termination`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from kubevision_api.meta import API_VERSION, GROUP

# --- the container -----------------------------------------------------------------------------

#: Name of the trainer container in the Job's Pod template; Pod and container statuses are
#: read back by this name (a service mesh may add others).
CONTAINER: Final = "trainer"
#: Folder of the plan ConfigMap's volume, and the plan's key in it.
PLAN_DIR: Final = "/etc/kubevision"
PLAN_FILE: Final = "plan.json"
PLAN_PATH: Final = f"{PLAN_DIR}/{PLAN_FILE}"
#: The container's ``terminationMessagePath``: the trainer's last error, in one line.
TERMINATION_LOG: Final = "/dev/termination-log"
#: Kubernetes keeps at most 4096 bytes of a termination message (``TerminationMessagePath``).
MAX_TERMINATION_BYTES: Final = 4096
#: The image cache's emptyDir in the Job; the trainer reads it from :data:`ENV_CACHE_DIR`.
CACHE_DIR: Final = "/var/cache/kubevision"

#: The trainer's command line in the Job: ``kubevision trainer --plan ... --termination-log ...``
#: (the CLI's ``trainer`` subcommand parses these flags).
TRAINER_SUBCOMMAND: Final = "trainer"
PLAN_FLAG: Final = "--plan"
TERMINATION_LOG_FLAG: Final = "--termination-log"


def trainer_command() -> list[str]:
    """The trainer container's command. The termination log is named although it is the
    default, so that whatever runs the container (a kubelet, or the tests' node agent) can map
    the path."""
    return [
        "kubevision",
        TRAINER_SUBCOMMAND,
        PLAN_FLAG,
        PLAN_PATH,
        TERMINATION_LOG_FLAG,
        TERMINATION_LOG,
    ]


# --- environment variables ----------------------------------------------------------------------

#: Prefix of every kubevision variable; the trainer's and the operator's settings read it.
ENV_PREFIX: Final = "KUBEVISION_"
#: The local image cache (trainer settings ``cache_dir``).
ENV_CACHE_DIR: Final = f"{ENV_PREFIX}CACHE_DIR"
#: Where the status token file is, when whatever runs the container moved it from the plan's
#: ``statusEndpoint.tokenPath`` (a test node agent mounts volumes elsewhere).
ENV_STATUS_TOKEN_PATH: Final = f"{ENV_PREFIX}STATUS_TOKEN_PATH"


class StorageRole(StrEnum):
    """What the trainer reads or writes a URI for. Each role may use credentials of its own
    Secret (``View.spec.dataset.credentialsSecretRef``, ``spec.output.credentialsSecretRef``,
    ``spec.pretrainedWeights.credentialsSecretRef``)."""

    DATASET = "DATASET"
    OUTPUT = "OUTPUT"
    WEIGHTS = "WEIGHTS"


#: The keys read from a credentials Secret, with whether each is optional: the first two are
#: required, so a Secret without them shows as the Pod's CreateContainerConfigError instead of
#: an anonymous S3 request. They are botocore's own variable names.
AWS_KEYS: Final = (
    ("AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", False),
    ("AWS_ENDPOINT_URL_S3", True),
    ("AWS_REGION", True),
)
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3, AWS_REGION = (
    key for key, _ in AWS_KEYS
)


def role_variable(role: StorageRole, key: str) -> str:
    """The variable that carries ``key`` (one of :data:`AWS_KEYS`) for ``role`` when the role's
    Secret differs from the one behind the plain ``AWS_*`` variables, e.g.
    ``KUBEVISION_OUTPUT_AWS_ACCESS_KEY_ID``. The plain variables hold the first Secret named
    among dataset, output and weights (in that order), so a training with one Secret works with
    any S3 client; a role without variables of its own uses the plain ones."""
    return f"{ENV_PREFIX}{role.value}_{key}"


# --- distributed training ------------------------------------------------------------------------

#: ``torch.distributed.run`` (torchrun) reads its options from ``PET_<OPTION>`` variables when
#: its flags are absent; Kubeflow Trainer sets the same ones. The operator sets them on every
#: trainer container; the trainer starts torchrun when the world has more than one process.
ENV_NNODES: Final = "PET_NNODES"
ENV_NPROC_PER_NODE: Final = "PET_NPROC_PER_NODE"
#: The Pod's index in the Indexed Job (its completion index) is its node rank.
ENV_NODE_RANK: Final = "PET_NODE_RANK"
#: DNS name of the Pod of index 0 (``<job>-0.<service>.<namespace>.svc``) and the port its
#: torchrun agent serves the rendezvous store on.
ENV_MASTER_ADDR: Final = "PET_MASTER_ADDR"
ENV_MASTER_PORT: Final = "PET_MASTER_PORT"
#: The rendezvous port in the Pods of a multi-Pod training (torchrun's default).
MASTER_PORT: Final = 29500
#: The gang attempt (1, 2, ...) of a multi-Pod training: the operator recreates the whole
#: Indexed Job for each attempt (docs/distributed.md).
ENV_ATTEMPT: Final = f"{ENV_PREFIX}ATTEMPT"


# --- the status endpoint -----------------------------------------------------------------------

#: Audience of the projected ServiceAccount token that the trainer presents, and that the
#: operator's TokenReview requires: the API group's name.
TOKEN_AUDIENCE: Final = GROUP
#: Where the projected token is mounted in the container (the plan's default).
TOKEN_PATH: Final = f"/var/run/secrets/{GROUP}/token"
#: The report URL's path under the endpoint's URL (aiohttp route syntax).
REPORT_PATH: Final = (
    "/" + API_VERSION.split("/")[1] + "/namespaces/{namespace}/modelversions/{name}/report"
)


def report_path(namespace: str, name: str) -> str:
    """The path a trainer POSTs its reports on ModelVersion ``namespace/name`` to."""
    return REPORT_PATH.format(namespace=namespace, name=name)


# --- steps -------------------------------------------------------------------------------------


class StepName(StrEnum):
    """Named steps of the progress bar, in order. Scheduling is the operator's (the Pod waits
    for a node); the trainer reports the others."""

    SCHEDULING = "Scheduling"
    LOADING_DATASET = "LoadingDataset"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    EXPORTING = "Exporting"


# --- outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ending:
    reason: str
    exit_code: int
    retry: bool


class Outcome(Enum):
    """How a trainer run ends: the reason word that starts its termination line (the operator
    puts it on the ``Failed`` condition), its exit code, and whether another attempt can help.
    The Job's pod failure policy fails the Job at once on the exit code of an outcome that no
    retry can mend (:func:`no_retry_exit_codes`)."""

    SUCCEEDED = _Ending("Succeeded", 0, retry=False)
    #: Bad input: dataset, annotations, images, weights, or an output written for another plan.
    INVALID_INPUT = _Ending("InvalidInput", 2, retry=False)
    #: The training could not go on (e.g. the loss diverged).
    TRAINING_FAILED = _Ending("TrainingFailed", 1, retry=True)
    #: SIGTERM (preemption, deletion, suspend): ``last.pt`` holds the position; 128 + SIGTERM.
    PREEMPTED = _Ending("Preempted", 143, retry=True)
    #: The storage pre-flight failed: a role's endpoint, bucket or identity cannot do what the
    #: run needs (the message names the URI, the endpoint, the Secret and the S3 error code).
    STORAGE_CHECK_FAILED = _Ending("StorageCheckFailed", 3, retry=False)
    #: A storage call failed later on (the store went away, throttled, refused).
    STORAGE_ERROR = _Ending("StorageError", 1, retry=True)
    #: A checkpoint could not be stored after its retries; the previous one is intact.
    CHECKPOINT_UPLOAD_FAILED = _Ending("CheckpointUploadFailed", 1, retry=True)
    #: The loss or a validation metric became NaN or infinite; the last finite ``last.pt`` is
    #: kept. Training again from it with the same recipe diverges the same way.
    NON_FINITE_LOSS = _Ending("NonFiniteLoss", 4, retry=False)
    #: The Exporting step could not write the model in a format (the message names the format
    #: and the architecture); ``best.pt`` and ``evaluation.json`` are kept. The same checkpoint
    #: fails the same way.
    EXPORT_FAILED = _Ending("ExportFailed", 5, retry=False)
    #: Anything else the trainer caught (CUDA out of memory).
    ERROR = _Ending("Error", 1, retry=True)

    @property
    def reason(self) -> str:
        """The CamelCase reason word."""
        return self.value.reason

    @property
    def exit_code(self) -> int:
        """The trainer's exit code."""
        return self.value.exit_code

    @property
    def retry(self) -> bool:
        """Whether another attempt of the Job may end otherwise."""
        return self.value.retry

    @classmethod
    def from_reason(cls, reason: str) -> Outcome | None:
        """The outcome whose reason is ``reason``, or None."""
        return _BY_REASON.get(reason)


_BY_REASON: Final = {outcome.reason: outcome for outcome in Outcome}
_LINE = re.compile(r"^(?P<reason>[A-Z][A-Za-z]*): (?P<message>.+)$")


def no_retry_exit_codes() -> list[int]:
    """Exit codes of the failures that no retry can mend, sorted (the Job's ``FailJob`` rule)."""
    return sorted({o.exit_code for o in Outcome if o.exit_code != 0 and not o.retry})


def termination_line(outcome: Outcome, message: str) -> str:
    """The one line the trainer writes to its termination log: ``"<Reason>: <message>"``, line
    breaks turned into spaces, cut to :data:`MAX_TERMINATION_BYTES` bytes of UTF-8 (Kubernetes
    keeps no more) without splitting a character."""
    text = f"{outcome.reason}: " + " ".join(message.split())
    data = text.encode()
    if len(data) <= MAX_TERMINATION_BYTES:
        return text
    cut = data[: MAX_TERMINATION_BYTES - 3].decode(errors="ignore")
    return cut + "..."


def parse_termination(text: str) -> tuple[Outcome, str] | None:
    """The outcome and message of a termination message written by :func:`termination_line`,
    or None when ``text`` is something else (a crash's log tail, an unknown reason)."""
    match = _LINE.match(text.strip())
    if match is None:
        return None
    outcome = Outcome.from_reason(match["reason"])
    if outcome is None:
        return None
    return outcome, match["message"]
