"""Real FAB archives for tests: a zip with the pyproject.toml a Flower app carries."""

from __future__ import annotations

import io
import zipfile

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "{version}"
dependencies = ["flwr[simulation]>=1.18.0", "numpy>=2.0.2"]

[tool.flwr.app]
publisher = "{publisher}"

[tool.flwr.app.components]
serverapp = "app.server_app:app"
clientapp = "app.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 3
"""


FIXED_DATE = (2024, 10, 1, 0, 0, 0)


def make_fab(name: str = "demo", version: str = "1.0.0", publisher: str = "tester") -> bytes:
    """A minimal, valid FAB for ``<publisher>/<name>`` at ``version``.

    Entries carry a fixed date (as the flwr CLI's builder does), so the same arguments always
    give the same bytes and the same hash.
    """
    buffer = io.BytesIO()
    pyproject = PYPROJECT.format(name=name, version=version, publisher=publisher)
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in (("pyproject.toml", pyproject), ("app/__init__.py", "")):
            archive.writestr(zipfile.ZipInfo(path, date_time=FIXED_DATE), text)
    return buffer.getvalue()
