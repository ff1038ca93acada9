"""What only the CA holder does: tokens (hashed, expiring, counted), the overlay address
table, enrollment and revocation (holder.py), served over pinned HTTPS (server.py, tls.py)
with join attempts rate-limited."""
