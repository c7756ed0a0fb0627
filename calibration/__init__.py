"""Calibration and quantisation (FP16, calibrated INT8, weight-only INT8/INT4): see issue #5."""
