"""flashmla's Hopper (sm_90a) backend. Registered through the entry point `sm90`."""
from .backend import SM90Backend

backend = SM90Backend()
__all__ = ["SM90Backend", "backend"]
