"""Deployment: the packed 1-bit file (packing), the bitwise kernels and CPU engine, the shipped
model, benchmarks against ONNX Runtime and the popcount peak. Builds on core and quant; the engine
itself runs without torch."""
