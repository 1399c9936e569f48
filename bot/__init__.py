"""bot: the python-telegram-bot process that answers as the owner (issue #4)."""
