"""The control plane: ASGI app (operator and device APIs), services and background loops."""
