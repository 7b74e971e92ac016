"""flashmla-vendor-template: a minimal third-party flashmla backend (dense MLA decode only).

flashmla finds it through the entry point declared in pyproject.toml:

    [project.entry-points."flashmla.backends"]
    vendor_template = "flashmla_vendor_template:backend"

i.e. this module's `backend` attribute. Keep this module cheap to import: flashmla imports it
lazily, on the first op call or `flashmla.backends()`, and any exception raised here is shown as
a load failure of this backend (it never breaks `import flashmla`).
"""
from .backend import VendorTemplateBackend

__version__ = "0.1.0"

backend = VendorTemplateBackend()

__all__ = ["VendorTemplateBackend", "backend"]
