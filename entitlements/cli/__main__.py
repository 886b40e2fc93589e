"""`python -m entitlements.cli`: the console script, for a checkout without it installed.
Guarded, so importing the module (as tests/unit/test_imports.py does) runs nothing."""

from entitlements.cli import main

if __name__ == "__main__":
    main()
