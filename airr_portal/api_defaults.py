"""The REST framework's defaults as the portal sets them (`REST_FRAMEWORK` in settings): page size and JSON parsing.

They live apart from `api.py` because the framework imports them while its views module is still loading: a module
that imports `rest_framework.views` itself cannot hold them without an import cycle.
"""

from rest_framework import exceptions, parsers
from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    """Pages of at most a thousand: `?limit=` beyond that is read as a thousand, not passed to the database."""

    max_limit = 1000


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with a body nested too deep to read answered 400 like any other malformed JSON."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply") from None
