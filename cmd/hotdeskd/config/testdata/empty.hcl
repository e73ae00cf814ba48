# Nothing set: every default applies.
