"""Path set-up for Orthanc's embedded Python; imports nothing but the standard library,
because it runs before the project's dependencies are importable."""

import os
import site
import sys


def add_virtualenv_to_path() -> None:
    """Make the project's virtualenv importable inside Orthanc's embedded Python.

    Orthanc embeds Debian's Python with no virtualenv active. `site.addsitedir`
    (unlike PYTHONPATH) processes `.pth` files, so an editable install works.
    """
    site_packages = os.environ.get("PIXL_SITE_PACKAGES")
    if not site_packages:
        return
    before = list(sys.path)
    site.addsitedir(site_packages)
    added = [entry for entry in sys.path if entry not in before]
    sys.path[:] = added + before
