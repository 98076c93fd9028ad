"""The DNS servers (Pi-hole v6, dnsmasq), the CNAME record they hold, and the DNS check.
"""
