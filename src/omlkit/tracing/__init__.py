"""One copy per host and tracing a suspect model back to the host (or hosts) it came from."""
