"""Training: losses, the training loop and its run folders, task data and evaluation, distillation,
fine-tuning, augmentation and pretraining, the papers' recipes. Builds on core, quant and tasks."""
