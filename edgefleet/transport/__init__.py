"""Transports between agent and control plane: the `Transport` port and its adapters."""
