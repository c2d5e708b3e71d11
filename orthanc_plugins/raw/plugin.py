"""Entry module of the orthanc-raw Python plugin: the only raw module importing `orthanc`."""

import sys
from pathlib import Path

# Orthanc puts this script's folder first on sys.path, where our module names
# could shadow the standard library's; import the project as a package instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))

from orthanc_plugins.common.bootstrap import add_virtualenv_to_path

add_virtualenv_to_path()

import orthanc

from orthanc_plugins.common.plugin_support import install
from orthanc_plugins.raw.service import RawService

service = install(orthanc, RawService, "raw")
