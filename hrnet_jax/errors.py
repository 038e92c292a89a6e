"""The error family of bad user input (a missing file, a wrong config value, an unusable
checkpoint): the commands print its message as one line instead of a traceback."""


class UserError(Exception):
  """Something the user gave is unusable; the message names it and what was expected."""


class ConfigError(UserError, ValueError):
  """A config key or value is wrong; the message names the key."""


class Interrupted(Exception):
  """The user stopped a run (Ctrl-C); the message says where it stopped and what was kept."""


class ConversionError(UserError, ValueError):
  """A checkpoint does not fit an arch (the message lists every problem), or cannot be read or
  written (the message names the file)."""
