"""Services own transactions: load from the store, decide with the core, save, audit."""
