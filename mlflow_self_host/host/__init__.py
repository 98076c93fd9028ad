"""The Nomad client host over SSH (Fabric): configure-host."""
