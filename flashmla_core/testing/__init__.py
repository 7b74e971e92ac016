"""The conformance kit: checks any installed backend against the float64 oracle.

    flashmla conformance --backend NAME
    pytest --pyargs flashmla_core.testing --flashmla-backend NAME

The grid comes from the backend's own capability table (cases.py); inputs are adversarial
(inputs.py); the oracle is a separate naive float64 implementation (oracle.py).
"""
