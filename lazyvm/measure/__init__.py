"""Measurements of the host and what is fitted to them: this machine's own fork (host), the
calibration of its kernel costs (calibrate, with its isolated worker process, worker),
the least-squares fits (fit), and the published figures with their sources (published)."""
