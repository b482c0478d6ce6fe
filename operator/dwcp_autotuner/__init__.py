"""dwcp-autotuner: keeps the runtime parameters of distributed services tuned.

`operator/` is only the source root; the package is `dwcp_autotuner` (a top-level `operator`
package would shadow the standard-library module of that name).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dwcp-autotuner")  # pyproject.toml is the one place the version is written
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
