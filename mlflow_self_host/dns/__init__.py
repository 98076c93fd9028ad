"""DNS: the CNAME for the domain, on Pi-hole v6 or dnsmasq, and its check."""
