"""Identity and trust: device keys, signed requests, API and enrollment tokens, roles, and
the hash-chained audit trail."""
