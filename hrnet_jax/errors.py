"""The error family of bad user input (a missing file, a wrong config value, an unusable
checkpoint): the commands print its message as one line instead of a traceback."""


class UserError(Exception):
  """Something the user gave is unusable; the message names it and what was expected."""


class ConfigError(UserError, ValueError):
  """A config key or value is wrong; the message names the key."""
