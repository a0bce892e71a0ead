"""What every entry point shares: the task wrapper, resolvers, config checks, devices, resume, run records."""
