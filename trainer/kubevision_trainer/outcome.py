"""Which ``contract.Outcome`` an error of a run means: the one place where the trainer's
exceptions, and those of the libraries it calls (botocore, fsspec, torch), become a reason and
one line. The Job's entry point writes that line to its termination log; local mode prints it.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from kubevision_api.contract import Outcome
from kubevision_api.errors import InputError
from kubevision_trainer import distributed, engine, preflight, storage, upload
from kubevision_trainer.export.errors import ExportError

#: Every error a run can end with (``except HANDLED``), most specific first in :func:`classify`.
HANDLED = (
    InputError,
    ExportError,
    engine.PreemptedError,
    engine.TrainingError,
    OSError,
    RuntimeError,
    BotoCoreError,
    ClientError,
)


def classify(exc: BaseException) -> tuple[Outcome, str]:
    """The outcome of a run that raised ``exc``, and its message in one line.

    - a storage pre-flight failure: ``StorageCheckFailed`` (no retry can mend it);
    - bad input: ``InvalidInput``; a SIGTERM: ``Preempted``;
    - a NaN or infinite loss or metric: ``NonFiniteLoss``; another training failure:
      ``TrainingFailed``;
    - a model the Exporting step cannot write in a format: ``ExportFailed`` (names the
      format and the architecture);
    - a checkpoint upload that failed after its retries: ``CheckpointUploadFailed``;
    - any other storage error, wrapped (``storage.StorageError``) or raw from botocore:
      ``StorageError``;
    - anything else (CUDA out of memory, an OS error): ``Error``, with the exception's class;
    - another rank's failure at a step all ranks take together: that rank's outcome and line.
    """
    if isinstance(exc, distributed.PeerFailedError):
        return exc.outcome, exc.message
    if isinstance(exc, preflight.PreflightError):
        return Outcome.STORAGE_CHECK_FAILED, str(exc)
    if isinstance(exc, InputError):
        return Outcome.INVALID_INPUT, str(exc)
    if isinstance(exc, engine.PreemptedError):
        return Outcome.PREEMPTED, str(exc)
    if isinstance(exc, engine.NonFiniteError):
        return Outcome.NON_FINITE_LOSS, str(exc)
    if isinstance(exc, engine.TrainingError):
        return Outcome.TRAINING_FAILED, str(exc)
    if isinstance(exc, ExportError):
        return Outcome.EXPORT_FAILED, str(exc)
    if isinstance(exc, upload.UploadError):
        return Outcome.CHECKPOINT_UPLOAD_FAILED, str(exc)
    if isinstance(exc, storage.StorageError):
        return Outcome.STORAGE_ERROR, str(exc)
    if isinstance(exc, (BotoCoreError, ClientError)):
        return Outcome.STORAGE_ERROR, f"{storage.error_code(exc)}: {exc}"
    return Outcome.ERROR, f"{type(exc).__name__}: {exc}"
