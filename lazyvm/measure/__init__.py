"""Measurements of the host: real forks timed (host), the calibration of this machine's
kernel costs (calibrate) and the published figures with their citations (published)."""
