"""Build instantsoup._C (and the test-only instantsoup._C_test) from csrc/ against OpenBLAS.

The kernels (csrc/*.c without Python objects) are one static library linked into both extensions;
the runtime extension adds the boundary (module.c, boundary.c, py_*.c), the test extension the
bindings of single kernels for the NumPy-oracle tests (csrc/testing/*.c). Symbols are hidden
(-fvisibility=hidden): each extension exports only its PyInit function.

Build switches (environment variables):
  INSTANTSOUP_BLAS=scipy-openblas  (default) OpenBLAS from the scipy-openblas32 wheel, prefixed symbols
  INSTANTSOUP_BLAS=system          a system OpenBLAS found by pkg-config (package name from
                                   INSTANTSOUP_BLAS_PC, default "openblas")
  INSTANTSOUP_NATIVE=1             add -march=native (local builds only; never for wheels)
  INSTANTSOUP_SANITIZE=1           build with AddressSanitizer + UBSan (tests run with libasan preloaded)
  INSTANTSOUP_DEBUG=1              -O0 -g
"""
import glob
import os
import shlex
import subprocess
import sysconfig

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _pkg_config(pkg, what):
    try:
        out = subprocess.check_output(["pkg-config", what, pkg], text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(
            f"INSTANTSOUP_BLAS=system: pkg-config could not find {pkg!r} ({e}). "
            "Install OpenBLAS development files (e.g. Debian's libopenblas-dev) or unset INSTANTSOUP_BLAS."
        ) from e
    return shlex.split(out)


def blas_config():
    mode = os.environ.get("INSTANTSOUP_BLAS", "scipy-openblas").strip().lower()
    if mode == "system":
        pc = os.environ.get("INSTANTSOUP_BLAS_PC", "openblas")
        cflags = _pkg_config(pc, "--cflags")
        libs = _pkg_config(pc, "--libs")
        return dict(macros=[("ISP_BLAS_SYSTEM", "1")], cflags=cflags, ldflags=libs, include_dirs=[])
    if mode not in ("scipy-openblas", "scipy_openblas", "scipy-openblas32"):
        raise RuntimeError(f"INSTANTSOUP_BLAS must be 'scipy-openblas' or 'system', got {mode!r}")
    import scipy_openblas32 as sob

    libdir = sob.get_lib_dir()
    # The extension records libscipy_openblas.so as NEEDED. At run time instantsoup imports
    # scipy_openblas32 first (which loads the library RTLD_GLOBAL); the $ORIGIN rpath is a second
    # route when both packages sit in the same site-packages.
    return dict(
        macros=[("ISP_BLAS_SCIPY_OPENBLAS", "1")],
        cflags=[],
        ldflags=[f"-L{libdir}", f"-l{sob.get_library()}", "-Wl,-rpath,$ORIGIN/../scipy_openblas32/lib"],
        include_dirs=[sob.get_include_dir()],
    )


blas = blas_config()
cflags = ["-std=c11", "-Wall", "-Wextra", "-fopenmp", "-fno-strict-aliasing", "-fno-trapping-math", "-fno-math-errno"]
ldflags = ["-fopenmp"]
if _flag("INSTANTSOUP_DEBUG"):
    cflags += ["-O0", "-g"]
else:
    cflags += ["-O3", "-ffp-contract=off"]
if _flag("INSTANTSOUP_NATIVE"):
    cflags += ["-march=native"]
if _flag("INSTANTSOUP_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    cflags += san + ["-g", "-O1"]
    ldflags += san

cc = sysconfig.get_config_var("CC") or "cc"
macros = blas["macros"] + [
    ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
    ("ISP_CFLAGS", '"' + " ".join(cflags).replace('"', "") + '"'),
]

BOUNDARY = ("csrc/module.c", "csrc/boundary.c")
kernels = sorted(f for f in glob.glob("csrc/*.c") if f not in BOUNDARY and not os.path.basename(f).startswith("py_"))
include_dirs = ["csrc", np.get_include()] + blas["include_dirs"]
cflags += ["-fvisibility=hidden"]
kernel_lib = ("isp_kernels", dict(sources=kernels, include_dirs=include_dirs, macros=macros,
                                  cflags=cflags + blas["cflags"]))


def extension(name, sources):
    # the kernel sources are dependencies too: a changed kernel relinks both extensions
    return Extension(name, sources=sources, depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/*.inc")) + kernels, include_dirs=include_dirs,
                     define_macros=macros, extra_compile_args=cflags + blas["cflags"],
                     extra_link_args=ldflags + blas["ldflags"])


runtime = extension("instantsoup._C", list(BOUNDARY) + sorted(glob.glob("csrc/py_*.c")))
testing = extension("instantsoup._C_test", ["csrc/boundary.c"] + sorted(glob.glob("csrc/testing/*.c")))

class BuildExt(build_ext):
    """build_ext that builds the kernel library first (`setup.py build_ext --inplace` alone too);
    build_ext links every extension against the libraries of build_clib."""

    def run(self):
        self.run_command("build_clib")
        super().run()


setup(libraries=[kernel_lib], ext_modules=[runtime, testing], cmdclass={"build_ext": BuildExt})
