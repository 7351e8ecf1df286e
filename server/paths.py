"""Where the project's own files live, independent of the working directory.

templates/, static/ and migrations/ sit at the top of the repository, and the wheel ships them inside the
package (server/templates, server/static, server/migrations). The copy inside the package wins, so an
installed wheel uses its own and a checkout (editable install, or the source tree on sys.path) the top-level
one.
"""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _project_dir(name: str) -> Path:
    packaged = _PACKAGE_DIR / name
    return packaged if packaged.is_dir() else _PACKAGE_DIR.parent / name


TEMPLATES_DIR = _project_dir("templates")
STATIC_DIR = _project_dir("static")
VENDOR_DIR = STATIC_DIR / "vendor"
MIGRATIONS_DIR = _project_dir("migrations")
