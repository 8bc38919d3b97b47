"""Discovery: who is out there. mDNS announcements are hints; trust comes from their signature.

`txt` is the pure part (the signed announcement and its DNS-SD TXT record); `mdns` is the one
adapter that touches zeroconf. Liveness is not discovery's job: leases and health probes own it.
"""
