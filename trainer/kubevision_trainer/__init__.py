"""kubevision's trainer: reads a TrainingPlan, trains a torchvision model, reports progress
and metrics, and writes checkpoints and records to object storage."""
