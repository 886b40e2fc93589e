"""`python -m entitlements.cli`: the console script, for a checkout without it installed."""

from entitlements.cli import main

main()
