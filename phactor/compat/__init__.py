"""Drop-in migration from the `posthog` package: change one import line.

    from phactor.compat import Posthog           # was: from posthog import Posthog
    import phactor.compat.posthog as posthog     # was: import posthog

`Posthog` takes posthog's constructor options and has posthog's methods, backed by one named
phactor instance (`.instance`). See docs/migrating-from-posthog.md for the option table, the
defaults that differ and what is not covered.
"""

from phactor.compat.client import FeatureFlagResult, Posthog

#: posthog's other name of the client class.
Client = Posthog

__all__ = ["Client", "FeatureFlagResult", "Posthog"]
