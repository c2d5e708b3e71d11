"""Entry module of the orthanc-anon Python plugin: the only anon module importing `orthanc`."""

import sys
from pathlib import Path

# Orthanc puts this script's folder first on sys.path, where our module names
# could shadow the standard library's; import the project as a package instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))

from orthanc_plugins.common.bootstrap import add_virtualenv_to_path  # noqa: E402

add_virtualenv_to_path()

import orthanc  # noqa: E402

from orthanc_plugins.common.plugin_support import install  # noqa: E402
from orthanc_plugins.anon.service import AnonService  # noqa: E402

service = install(orthanc, AnonService, "anon")
