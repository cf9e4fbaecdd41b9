"""This machine's own fork(), measured on a real process, and a description of the host.

The code lives in :mod:`lazyvm.measure`, the one home of what every command measures;
these names stay here for the benchmarks and for scripts written against 0.1.0.
"""

from .measure import (PAGE_SIZE, LinuxMapping, machine_description, measure_linux,
                      measure_linux_fork)

__all__ = ["measure_linux_fork", "measure_linux", "LinuxMapping", "machine_description",
           "PAGE_SIZE"]
