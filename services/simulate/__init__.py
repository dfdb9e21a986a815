"""The demo: a reproducible month of the square posted through the HTTP API (`simulate`)."""
