"""The routes, one module per group: operations, checks, changes, auditors, commands."""
