"""Every flag of every task, run as a user types it (`inv TASK --flag` in a subprocess, settings from MSH_*
and NOMAD_* variables), each asserting the effect the user would notice and the documented exit code."""
