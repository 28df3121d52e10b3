"""The one exception a user's mistake raises: its message is a sentence saying what is wrong and what to do."""


class UserError(Exception):
    pass
