"""Quantized PyTorch modules and what acts on them: quantizers, quantized layers and attention,
the stock-model conversion, calibration, accounting, the distillation `Schedule`, and saving and
loading a binarized model (model_files). Builds on `bitbert.core` only."""
