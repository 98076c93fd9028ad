"""`inv dns`: the CNAME for the domain; the servers (Pi-hole v6, dnsmasq), the record and the check
are adapters/dns/."""
