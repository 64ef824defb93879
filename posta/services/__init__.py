"""Services: what a user action means, shared by the web layer, the CLI and jobs."""
