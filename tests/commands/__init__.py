"""Tests of the command line (agmc_onnx/commands/)."""
