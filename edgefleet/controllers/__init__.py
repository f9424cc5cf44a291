"""Controller shells shared by the control plane and the lab: each loads through a store
port, lets the pure core decide, and applies through the port (SQL in the server, in
memory in the lab)."""
