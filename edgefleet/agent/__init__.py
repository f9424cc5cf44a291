"""The device agent: identity, enrollment, heartbeats and convergence to desired state.

Written against injected ports (`Clock`, `Transport`, `Hardware`) so the simulator can run
thousands of agents in one process with simulated ones.
"""
