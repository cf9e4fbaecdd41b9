"""Build the compiled core: one extension module per .pyx of lazyvm/core.

Compiler directives are set once here.  LAZYVM_DEBUG=1 in the environment rebuilds the
core with bounds checking, wraparound checks and C assertions on, for test runs
(`.ci/run` does this), and defines the LAZYVM_DEBUG macro (lazyvm.core.DEBUG_BUILD);
the default build is the fast one.
"""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("LAZYVM_DEBUG", "") not in ("", "0")

# In dependency order: each module cimports only modules listed before it.
MODULES = ("defs", "state", "frames", "rmap", "swap", "accounting", "thp", "fork", "fault",
           "zap", "reclaim", "trace", "inspection", "api", "check")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    macros.append(("LAZYVM_DEBUG", "1"))
else:
    macros.append(("NDEBUG", "1"))
extra = ["-O3"] if not DEBUG else ["-O1", "-g"]

exts = [
    Extension(f"lazyvm.core.{name}", [f"lazyvm/core/{name}.pyx"],
              include_dirs=[np.get_include()], define_macros=macros, extra_compile_args=extra)
    for name in MODULES
]

# thirteen small modules: Cython and the C compiler run them on every core
jobs = os.cpu_count() or 1
setup(ext_modules=cythonize(exts, compiler_directives=directives, nthreads=jobs),
      options={"build_ext": {"parallel": jobs}})
