"""dwcp-autotuner: keeps the runtime parameters of distributed services tuned.

`operator/` is only the source root; the package is `dwcp_autotuner` (a top-level `operator`
package would shadow the standard-library module of that name).
"""

__version__ = "0.1.0"
