"""Import instantsoup as installed (``pip install .``); only when none is installed, fall back to the
in-place build of the source checkout this folder belongs to (``python setup.py build_ext --inplace``).
The benchmark scripts import this module first."""
import importlib.util
import os
import sys

if importlib.util.find_spec("instantsoup") is None:
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
